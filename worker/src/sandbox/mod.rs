//! The rootless sandbox: runs one script of a build (`%post`, `%test`, a runscript) inside the
//! build's rootfs, in new user, mount and pid namespaces, and streams its output line by line.
//!
//! This is the only module of Kiln that touches namespaces, mounts, id maps, rlimits and process
//! spawning, and the only one with `unsafe` (STYLE.md 2.6). A `%post` line is born on the pipe of
//! a sandboxed child here and leaves as an [`OutputLine`] for the events publisher.
//!
//! Processes, from the worker down (never `fork` the multi-threaded tokio worker: the child of a
//! multi-threaded `fork` may only call async-signal-safe functions, and `unshare(CLONE_NEWUSER)`
//! refuses a multi-threaded caller, see unshare(2)):
//! - the worker ([`Sandbox::run`]) re-executes its own binary as `kiln-worker sandbox-init`, the
//!   *helper*, dropping to the build user first when it runs as root ([`SandboxConfig::run_as`]).
//!   They talk over a typed message channel on a `SOCK_SEQPACKET` socket (`message`);
//! - the helper (`init`) unshares the user, mount, pid, ipc and uts namespaces (and the network
//!   one when the network is off), and waits while the worker writes its uid and gid maps with the
//!   setuid `newuidmap`/`newgidmap` (`id_map`): inner 0 is the build user, inner 1..=65536 its
//!   subordinate range, so `apt`, `useradd` and `chown` work inside;
//! - the helper forks the *init*, pid 1 of the new pid namespace, which mounts the rootfs
//!   (`rootfs`: a fresh `/proc`, `/dev` from host nodes, devpts, `/dev/shm`, tmpfs `/tmp`, the
//!   host's `resolv.conf` and `hosts`), `pivot_root`s into it and forks the script;
//! - the script gets rlimits (`limits`), `PR_SET_NO_NEW_PRIVS`, a seccomp deny-list
//!   (`seccomp`), a new session, stdin from
//!   `/dev/null`, stdout and stderr on the worker's pipes (`output`), and is executed.
//!
//! When the script exits, the init exits and the kernel kills every process left in the pid
//! namespace (pid_namespaces(7)). The wall timeout and cancellation ask the helper to `SIGKILL`
//! the init, with the same effect; if the helper does not answer, the worker kills the helper and
//! the init follows through `PR_SET_PDEATHSIG`. After each run the worker checks that no process
//! of the namespace is left.
//!
//! A worker running as root (CI does) still runs sandboxes rootless: it starts the helper and
//! `newuidmap`/`newgidmap` as [`SandboxConfig::run_as`], an ordinary user with subordinate ids
//! (tests/setup/build-user.sh). Mapping the sandbox's root to host root instead would exempt it
//! from `RLIMIT_NPROC` (the kernel skips the check for real root, kernel/fork.c) and let it
//! write every host file it can reach.
//!
//! Containment without cgroups (none are delegated on our hosts, environment.md): rlimits bound
//! processes, open files, file size, CPU time and memory; the pid namespace hides host processes;
//! the user namespace maps the build's root to an unprivileged host user, so host files it does
//! not own stay read-only. With the network on, the script shares the host's network namespace,
//! loopback services included: deployments must firewall the build user (anchors.md 6.2).
//!
//! Running a `%post` (the pipeline writes the script into the rootfs first, deffile.md 8.3):
//!
//! ```no_run
//! # async fn post(rootfs: std::path::PathBuf) -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_worker::sandbox::{OutputLine, Sandbox, SandboxCommand, SandboxConfig};
//! let sandbox = Sandbox::new(SandboxConfig::default())?; // once per worker
//! let command = SandboxCommand {
//!     rootfs,
//!     argv: ["/bin/sh", "-e", "/.post.script"].map(String::from).to_vec(),
//!     env: vec![("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into())],
//!     cwd: "/".into(),
//!     is_read_only: false,
//! };
//! let (lines, mut received) = tokio::sync::mpsc::channel::<OutputLine>(256);
//! let cancel = tokio_util::sync::CancellationToken::new(); // a child of the build's token
//! let printer = tokio::spawn(async move {
//!     while let Some(line) = received.recv().await {
//!         println!("{}: {}", line.stream.name(), line.text);
//!     }
//! });
//! let report = sandbox.run(&command, lines, &cancel).await?;
//! printer.await?;
//! if !report.outcome.is_success() {
//!     eprintln!("%post failed: {}", report.outcome);
//! }
//! # Ok(())
//! # }
//! ```

mod error;
mod id_map;
mod init;
mod limits;
mod message;
mod net;
mod output;
mod process;
mod rootfs;
mod seccomp;
mod syscall;

pub use error::SandboxError;
pub use id_map::{IdMap, IdMapEntry, SubordinateRange, find_subordinate_range};
pub use init::{TaskHandler, helper_main};
pub use limits::Limits;
pub use output::{OutputLine, Stream};
pub use process::{
    BuildUser, HELPER_SUBCOMMAND, HostFiles, Outcome, PidNamespace, RunReport, Sandbox,
    SandboxCommand, SandboxConfig, processes_in_pid_namespace,
};
