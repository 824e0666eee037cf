//! The worker's side of a sandboxed run: starts the helper, writes the id maps, streams the
//! output, enforces the wall timeout and cancellation, and checks that nothing is left behind.

use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{Result, SandboxError};
use super::id_map::{IdMap, read_full_map, write_map};
use super::limits::Limits;
use super::message::{
    AsyncChannel, Channel, ExitStatus, FromHelper, HelperSpec, TaskSpec, ToHelper,
};
use super::output::{OutputLine, Stream, forward_lines};
use super::rootfs::RootfsSpec;

/// Most setup warnings kept from one run; the init sends a handful at most.
const MAX_WARNINGS: usize = 16;

/// The hidden subcommand of `kiln-worker` that runs the helper.
pub const HELPER_SUBCOMMAND: &str = "sandbox-init";

/// How long the helper gets to kill the sandbox and report before it is killed itself.
const KILL_GRACE: Duration = Duration::from_millis(1000);

/// How long the output pipes may stay open after the helper ended. They close when the last
/// sandboxed process dies, which the helper has waited for; this bounds the wait if it was
/// killed before that.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// The unprivileged user that owns build trees and runs sandboxes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildUser {
    /// Login name, as in `/etc/subuid`.
    pub name: String,
    /// Host uid; the sandbox's uid 0.
    pub uid: u32,
    /// Host gid; the sandbox's gid 0.
    pub gid: u32,
}

impl BuildUser {
    /// Looks the user up by name in the user database.
    pub fn from_name(name: &str) -> Result<Option<Self>> {
        let user =
            nix::unistd::User::from_name(name).map_err(|e| SandboxError::LookUpUserName {
                name: name.to_owned(),
                source: e.into(),
            })?;
        Ok(user.map(|u| Self {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }))
    }

    /// The user this process runs as (real uid and gid).
    pub fn current() -> Result<Self> {
        let uid = nix::unistd::getuid();
        let lookup = |source| SandboxError::LookUpUser {
            uid: uid.as_raw(),
            source,
        };
        let user = nix::unistd::User::from_uid(uid)
            .map_err(|e| lookup(e.into()))?
            .ok_or_else(|| lookup(std::io::Error::from(std::io::ErrorKind::NotFound)))?;
        Ok(Self {
            name: user.name,
            uid: uid.as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        })
    }
}

/// Host files the sandbox binds in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFiles {
    /// Directory of the device nodes `null`, `zero`, `full`, `random`, `urandom`, `tty`.
    /// Default `/dev`.
    pub dev_dir: PathBuf,
    /// Bound on `/etc/resolv.conf` when the network is on and the file exists. Default
    /// `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// Bound on `/etc/hosts` when it exists. Default `/etc/hosts`.
    pub hosts: PathBuf,
}

impl Default for HostFiles {
    fn default() -> Self {
        Self {
            dev_dir: "/dev".into(),
            resolv_conf: "/etc/resolv.conf".into(),
            hosts: "/etc/hosts".into(),
        }
    }
}

/// How the worker runs sandboxes; one per worker, from its configuration.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    // How the helper is started.
    /// The binary started as `BINARY sandbox-init`. Default `/proc/self/exe`, the worker itself;
    /// tests pass the built `kiln-worker`. It is opened once by [`Sandbox::new`] and executed
    /// through that descriptor, so the build user needs to be able to execute the file but not
    /// to reach its directory. It must not be writable by the build user: the init runs it,
    /// and a sandboxed root that could write it would own the next sandbox (CVE-2019-5736,
    /// runc).
    pub helper_exe: PathBuf,
    /// The build user to drop to before unsharing, when the worker runs as root. `None` runs
    /// the sandbox as the worker's own user, the normal rootless deployment.
    pub run_as: Option<BuildUser>,
    /// The setuid uid mapper. Default `/usr/bin/newuidmap`.
    pub newuidmap: PathBuf,
    /// The setuid gid mapper. Default `/usr/bin/newgidmap`.
    pub newgidmap: PathBuf,
    /// Default `/etc/subuid`.
    pub subuid_file: PathBuf,
    /// Default `/etc/subgid`.
    pub subgid_file: PathBuf,
    /// The host's procfs, scanned for processes left behind. Default `/proc`.
    pub proc_dir: PathBuf,
    /// Host files bound into the sandbox.
    pub host_files: HostFiles,

    // What each sandbox gets.
    /// Whether scripts share the host's network (builds run apt and pip). Off, they get a new
    /// network namespace with only a loopback interface. Default on.
    pub is_network_enabled: bool,
    /// Resource limits of each script.
    pub limits: Limits,
    /// Wall-clock limit of one script, setup included; beyond it the whole sandbox is killed.
    /// Default 2 h.
    pub wall_timeout: Duration,
    /// Size of the tmpfs on `/tmp`, in bytes. Default 2 GiB.
    pub tmp_size_bytes: u64,
    /// Longest output line passed on, in bytes; longer ones are cut. Default 16 KiB.
    pub max_line_bytes: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            helper_exe: "/proc/self/exe".into(),
            run_as: None,
            newuidmap: "/usr/bin/newuidmap".into(),
            newgidmap: "/usr/bin/newgidmap".into(),
            subuid_file: "/etc/subuid".into(),
            subgid_file: "/etc/subgid".into(),
            proc_dir: "/proc".into(),
            host_files: HostFiles::default(),
            is_network_enabled: true,
            limits: Limits::default(),
            wall_timeout: Duration::from_secs(2 * 3600),
            tmp_size_bytes: 2 << 30,
            max_line_bytes: 16 * 1024,
        }
    }
}

/// One script to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxCommand {
    /// Host path of the rootfs. It and everything in it must be owned by the build user or its
    /// subordinate ids (as layers extracted by the build user are), and its parents must be
    /// searchable by the build user.
    pub rootfs: PathBuf,
    /// The program, an absolute path inside the rootfs (no `PATH` search), and its arguments;
    /// for `%post`, `["/bin/sh", "-e", "/.post.script"]` (deffile.md 8.2).
    pub argv: Vec<String>,
    /// The whole environment of the script (deffile.md 8.3); nothing is inherited.
    pub env: Vec<(String, String)>,
    /// Working directory inside the rootfs.
    pub cwd: PathBuf,
    /// Whether the rootfs is mounted read-only (`%test`, `run`).
    pub is_read_only: bool,
}

/// How a sandboxed script ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The script exited with this code.
    Exited(i32),
    /// The script was killed by this signal (`SIGXCPU` at the CPU limit, `SIGXFSZ` at the file
    /// size limit, `SIGKILL` from inside).
    Signaled(i32),
    /// The wall timeout passed; the sandbox was killed.
    TimedOut(Duration),
    /// The run was cancelled; the sandbox was killed.
    Cancelled,
}

impl Outcome {
    /// Whether the script exited with code 0.
    pub fn is_success(&self) -> bool {
        *self == Self::Exited(0)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Exited(0) => write!(f, "the script succeeded"),
            Self::Exited(code) => write!(f, "the script exited with code {code}"),
            Self::Signaled(number) => {
                let signal = Signal::try_from(number).ok();
                let name = signal.map_or_else(|| format!("signal {number}"), |s| s.to_string());
                write!(f, "the script was killed by {name}")?;
                match signal {
                    Some(Signal::SIGXCPU) => write!(f, ": it reached its CPU time limit"),
                    Some(Signal::SIGXFSZ) => write!(f, ": it reached the file size limit"),
                    _ => Ok(()),
                }
            }
            Self::TimedOut(limit) => write!(
                f,
                "the script ran past the wall-clock limit of {} s and was killed with every \
                 process of its sandbox",
                limit.as_secs_f64()
            ),
            Self::Cancelled => write!(
                f,
                "the build was cancelled: the script was killed with every process of its sandbox"
            ),
        }
    }
}

/// The sandbox's pid namespace, held open so that its inode number (its identity in
/// `/proc/PID/ns/pid`) is not reused while someone looks for its processes.
#[derive(Debug)]
pub struct PidNamespace {
    _file: File,
    inode: u64,
}

impl PidNamespace {
    /// The namespace's inode number.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// The processes of the namespace still alive, by host pid; empty after every run.
    pub fn processes(&self, proc_dir: &Path) -> Result<Vec<i32>> {
        processes_in_pid_namespace(proc_dir, self.inode).map_err(|source| SandboxError::ScanProc {
            path: proc_dir.to_owned(),
            source,
        })
    }
}

/// What a run produced besides the output lines.
#[derive(Debug)]
pub struct RunReport {
    /// How the script ended.
    pub outcome: Outcome,
    /// The sandbox's pid namespace (none if the run was cancelled before it existed).
    pub pid_namespace: Option<PidNamespace>,
    /// Optional setup steps that were skipped, for the build log.
    pub warnings: Vec<String>,
}

/// Runs scripts in sandboxes; one per worker.
#[derive(Debug)]
pub struct Sandbox {
    config: SandboxConfig,
    /// The helper binary, open for the life of the worker.
    helper_exe: File,
    user: BuildUser,
    uid_map: IdMap,
    gid_map: IdMap,
}

impl Sandbox {
    /// Checks the configuration: finds the build user (`run_as` or the current user) and its
    /// subordinate ranges. Fails if the user has no range of 65536 ids.
    pub fn new(config: SandboxConfig) -> Result<Self> {
        let user = match &config.run_as {
            Some(user) => user.clone(),
            None => BuildUser::current()?,
        };
        let uid_map = read_full_map(&config.subuid_file, &user.name, user.uid)?;
        let gid_map = read_full_map(&config.subgid_file, &user.name, user.gid)?;
        let helper_exe =
            File::open(&config.helper_exe).map_err(|source| SandboxError::SpawnHelper {
                path: config.helper_exe.clone(),
                source,
            })?;
        Ok(Self {
            config,
            helper_exe,
            user,
            uid_map,
            gid_map,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The build user: the sandbox's root.
    pub fn build_user(&self) -> &BuildUser {
        &self.user
    }

    /// The sandbox's uid map (inner 0 → the build user, 1..=65536 → its subordinate uids).
    pub fn uid_map(&self) -> &IdMap {
        &self.uid_map
    }

    /// The sandbox's gid map.
    pub fn gid_map(&self) -> &IdMap {
        &self.gid_map
    }

    /// Runs `command` in a new sandbox, sending each output line to `output` as it arrives.
    /// Returns once every process of the sandbox is gone: when the script ends, at the wall
    /// timeout, or within about a second of `cancel` being cancelled. A failing script is an
    /// `Ok` [`Outcome`]; `Err` means the sandbox could not be set up or supervised. Sends to
    /// `output` are awaited: a slow receiver slows the script down (its pipe fills up) but
    /// loses no line; a dropped receiver loses the lines and slows nothing.
    pub async fn run(
        &self,
        command: &SandboxCommand,
        output: mpsc::Sender<OutputLine>,
        cancel: &CancellationToken,
    ) -> Result<RunReport> {
        let deadline = Instant::now() + self.config.wall_timeout;
        let program = command.argv.first().cloned().unwrap_or_default();
        if !program.starts_with('/') {
            return Err(SandboxError::RelativeCommand(program));
        }
        let pipe_error = |what| move |source| SandboxError::CreatePipe { what, source };
        let (stdout_read, stdout_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
            .map_err(|e| pipe_error("stdout pipe")(e.into()))?;
        let (stderr_read, stderr_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
            .map_err(|e| pipe_error("stderr pipe")(e.into()))?;

        let (mut helper, helper_pid, channel) = self.spawn_helper()?;
        let channel_error = |what: &str| {
            let what = what.to_owned();
            move |source| SandboxError::Channel { what, source }
        };
        channel
            .send(
                &ToHelper::Start(Box::new(self.helper_spec(command))),
                &[stdout_write.as_fd(), stderr_write.as_fd()],
            )
            .await
            .map_err(channel_error("send the spec"))?;
        drop((stdout_write, stderr_write));
        let max = self.config.max_line_bytes;
        // Aborted if this future is dropped or returns early; awaited below otherwise.
        let mut readers = AbortOnDrop([
            tokio::spawn(forward_lines(
                stdout_read,
                Stream::Stdout,
                max,
                output.clone(),
            )),
            tokio::spawn(forward_lines(stderr_read, Stream::Stderr, max, output)),
        ]);

        let mut stopped: Option<Outcome> = None;
        let mut escalate_at: Option<Instant> = None;
        let mut pid_namespace = None;
        let mut warnings = Vec::new();
        let mut failure = None;
        let mut status = None;
        loop {
            tokio::select! {
                message = channel.recv::<FromHelper>() => {
                    match message.map_err(channel_error("receive a report"))? {
                        Some((FromHelper::Unshared, _)) => {
                            self.write_maps(helper_pid).await?;
                            channel.send(&ToHelper::Mapped, &[]).await
                                .map_err(channel_error("send Mapped"))?;
                        }
                        Some((FromHelper::InitStarted, _)) => {
                            pid_namespace = self.open_pid_namespace(helper_pid)?;
                        }
                        Some((FromHelper::Warning(text), _)) => {
                            if warnings.len() < MAX_WARNINGS {
                                tracing::warn!(warning = %text, "sandbox setup");
                                warnings.push(text);
                            }
                        }
                        Some((FromHelper::Failed(step), _)) => {
                            failure.get_or_insert(step);
                        }
                        Some((FromHelper::Finished(end), _)) => {
                            status = Some(end);
                            break;
                        }
                        // Only a task sends it; a script's helper never does.
                        Some((FromHelper::TaskDone(_), _)) | None => break,
                    }
                }
                () = tokio::time::sleep_until(deadline), if stopped.is_none() => {
                    stopped = Some(Outcome::TimedOut(self.config.wall_timeout));
                    escalate_at = Some(Instant::now() + KILL_GRACE);
                    // A send error means the helper is gone already: the loop sees the end.
                    let _ = channel.send(&ToHelper::Kill, &[]).await;
                }
                () = cancel.cancelled(), if stopped.is_none() => {
                    stopped = Some(Outcome::Cancelled);
                    escalate_at = Some(Instant::now() + KILL_GRACE);
                    let _ = channel.send(&ToHelper::Kill, &[]).await;
                }
                () = sleep_until_some(escalate_at), if escalate_at.is_some() => {
                    // The helper did not answer: kill it; the init dies of PR_SET_PDEATHSIG.
                    tracing::warn!(pid = helper_pid, "sandbox helper unresponsive, killing it");
                    let _ = helper.start_kill();
                    escalate_at = None;
                }
            }
        }
        let helper_status = helper.wait().await.map_err(SandboxError::WaitHelper)?;
        for reader in &mut readers.0 {
            match tokio::time::timeout(OUTPUT_DRAIN, reader).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => tracing::warn!(%error, "reading sandbox output"),
                Ok(Err(error)) => tracing::warn!(%error, "sandbox output task"),
                Err(_) => tracing::warn!("sandbox output still open after the sandbox ended"),
            }
        }
        if let Some(namespace) = &pid_namespace {
            self.check_nothing_left(namespace).await?;
        }
        let outcome = match (stopped, failure, status) {
            (Some(outcome), _, _) => outcome,
            (None, Some(step), _) => {
                return Err(SandboxError::Setup {
                    step: step.step,
                    source: std::io::Error::from_raw_os_error(step.errno),
                });
            }
            (None, None, Some(ExitStatus::Code(code))) => Outcome::Exited(code),
            (None, None, Some(ExitStatus::Signal(signal))) => Outcome::Signaled(signal),
            (None, None, None) => {
                return Err(SandboxError::HelperDied {
                    status: helper_status,
                });
            }
        };
        Ok(RunReport {
            outcome,
            pid_namespace,
            warnings,
        })
    }

    /// Starts the helper (`kiln-worker sandbox-init`) with the control channel as its stdin.
    fn spawn_helper(&self) -> Result<(tokio::process::Child, u32, AsyncChannel)> {
        let (worker_end, helper_end) =
            Channel::pair().map_err(|source| SandboxError::CreatePipe {
                what: "control channel",
                source,
            })?;
        // The child execs the file it inherits (close-on-exec fds are still open during
        // execve's lookup, and an ELF binary needs no path afterwards).
        let helper_path = format!("/proc/self/fd/{}", self.helper_exe.as_raw_fd());
        let mut helper = tokio::process::Command::new(helper_path);
        helper
            .arg0("kiln-worker")
            .arg(HELPER_SUBCOMMAND)
            .stdin(Stdio::from(helper_end.into_fd()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .env_clear()
            .current_dir("/")
            // If the caller's future is dropped, the helper dies and the init follows it.
            .kill_on_drop(true);
        if let Some(user) = &self.config.run_as {
            // std drops the supplementary groups too when a root parent sets a uid.
            helper.uid(user.uid).gid(user.gid);
        }
        let helper = helper.spawn().map_err(|source| SandboxError::SpawnHelper {
            path: self.config.helper_exe.clone(),
            source,
        })?;
        let helper_pid = helper.id().unwrap_or_default();
        let channel = AsyncChannel::new(worker_end).map_err(|source| SandboxError::CreatePipe {
            what: "control channel",
            source,
        })?;
        Ok((helper, helper_pid, channel))
    }

    /// Runs task `name` of the worker binary's [`super::TaskHandler`] as root of a new user
    /// namespace with the sandbox's id maps, and returns its output. Inside, the task sees
    /// files with the ids a sandboxed script gave them and may read, own and remove every one
    /// of them: what the worker, outside, cannot do with a file `%post` made `0600` for another
    /// user. The task is the worker's own code, so it gets no mounts, limits or timeout; `input`
    /// and the output travel in one message each (at most about 100 KiB; pass bulk data in
    /// files). Cancelling kills the helper and returns [`SandboxError::Task`].
    pub async fn run_task(
        &self,
        name: &str,
        input: &str,
        cancel: &CancellationToken,
    ) -> Result<String> {
        let (mut helper, helper_pid, channel) = self.spawn_helper()?;
        let channel_error = |what: &str| {
            let what = what.to_owned();
            move |source| SandboxError::Channel { what, source }
        };
        let task_error = |message: String| SandboxError::Task {
            name: name.to_owned(),
            message,
        };
        channel
            .send(
                &ToHelper::Task(TaskSpec {
                    name: name.to_owned(),
                    input: input.to_owned(),
                }),
                &[],
            )
            .await
            .map_err(channel_error("send the task"))?;
        let mut result = None;
        let mut failure = None;
        loop {
            tokio::select! {
                message = channel.recv::<FromHelper>() => {
                    match message.map_err(channel_error("receive a report"))? {
                        Some((FromHelper::Unshared, _)) => {
                            self.write_maps(helper_pid).await?;
                            channel.send(&ToHelper::Mapped, &[]).await
                                .map_err(channel_error("send Mapped"))?;
                        }
                        Some((FromHelper::TaskDone(done), _)) => {
                            result = Some(done);
                            break;
                        }
                        Some((FromHelper::Failed(step), _)) => {
                            failure.get_or_insert(step);
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
                () = cancel.cancelled() => {
                    let _ = helper.start_kill();
                    let _ = helper.wait().await;
                    return Err(task_error("cancelled".into()));
                }
            }
        }
        let status = helper.wait().await.map_err(SandboxError::WaitHelper)?;
        match (result, failure) {
            (Some(Ok(output)), _) => Ok(output),
            (Some(Err(message)), _) => Err(task_error(message)),
            (None, Some(step)) => Err(SandboxError::Setup {
                step: step.step,
                source: std::io::Error::from_raw_os_error(step.errno),
            }),
            (None, None) => Err(SandboxError::HelperDied { status }),
        }
    }

    /// The helper's part of the configuration for `command`.
    fn helper_spec(&self, command: &SandboxCommand) -> HelperSpec {
        let host = &self.config.host_files;
        let existing = |path: &Path| path.exists().then(|| path.to_owned());
        HelperSpec {
            rootfs: RootfsSpec {
                root: command.rootfs.clone(),
                is_read_only: command.is_read_only,
                host_dev: host.dev_dir.clone(),
                resolv_conf: existing(&host.resolv_conf).filter(|_| self.config.is_network_enabled),
                hosts: existing(&host.hosts),
                tmp_size_bytes: self.config.tmp_size_bytes,
            },
            argv: command.argv.clone(),
            env: command
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            cwd: command.cwd.clone(),
            is_network_isolated: !self.config.is_network_enabled,
            limits: self.config.limits.clone(),
        }
    }

    /// Opens the helper's new pid namespace (`pid_for_children`, set by its unshare). The
    /// helper is our unreaped child, so its pid cannot be reused meanwhile. `None` when the
    /// helper already exited: it does so only after its init ended, and a pid namespace dies
    /// with its init, so nothing of the sandbox can be left (a fast script, a loaded machine).
    fn open_pid_namespace(&self, helper_pid: u32) -> Result<Option<PidNamespace>> {
        let path = self
            .config
            .proc_dir
            .join(helper_pid.to_string())
            .join("ns/pid_for_children");
        let scan_error = |source| SandboxError::ScanProc {
            path: path.clone(),
            source,
        };
        let file = match File::open(&path) {
            Ok(file) => file,
            // A zombie has no namespaces left to show.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(scan_error(error)),
        };
        let inode = file.metadata().map_err(scan_error)?.ino();
        Ok(Some(PidNamespace { _file: file, inode }))
    }

    /// Writes the helper's uid and gid maps.
    async fn write_maps(&self, helper_pid: u32) -> Result<()> {
        let run_as = self
            .config
            .run_as
            .as_ref()
            .map(|_| (self.user.uid, self.user.gid));
        write_map(&self.config.newuidmap, helper_pid, &self.uid_map, run_as).await?;
        write_map(&self.config.newgidmap, helper_pid, &self.gid_map, run_as).await
    }

    /// Fails if a process of the sandbox is still alive. The kernel empties a pid namespace
    /// before its init's exit completes, so this only waits (briefly) after the helper itself
    /// had to be killed and the init's end is in flight.
    async fn check_nothing_left(&self, namespace: &PidNamespace) -> Result<()> {
        let give_up = Instant::now() + KILL_GRACE;
        loop {
            let pids = namespace.processes(&self.config.proc_dir)?;
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() >= give_up {
                return Err(SandboxError::ProcessesLeft { pids });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Tasks aborted when dropped (a dropped `JoinHandle` would detach them, STYLE.md 4.1).
struct AbortOnDrop<T>([tokio::task::JoinHandle<T>; 2]);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Sleeps until `at`, or forever if it is `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The host pids of the processes in the pid namespace with inode `namespace`, read from
/// `/proc/PID/ns/pid`. Processes that vanish or that this user may not inspect are skipped:
/// the worker may inspect every process of its own sandboxes (it owns their user namespace).
pub fn processes_in_pid_namespace(proc_dir: &Path, namespace: u64) -> std::io::Result<Vec<i32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(proc_dir)? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Ok(meta) = std::fs::metadata(entry.path().join("ns/pid"))
            && meta.ino() == namespace
        {
            pids.push(pid);
        }
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_as_sentences() {
        assert_eq!(Outcome::Exited(0).to_string(), "the script succeeded");
        assert_eq!(
            Outcome::Exited(2).to_string(),
            "the script exited with code 2"
        );
        assert_eq!(
            Outcome::Signaled(libc::SIGXCPU).to_string(),
            "the script was killed by SIGXCPU: it reached its CPU time limit"
        );
        assert_eq!(
            Outcome::TimedOut(Duration::from_millis(1500)).to_string(),
            "the script ran past the wall-clock limit of 1.5 s and was killed with every process \
             of its sandbox"
        );
        assert!(!Outcome::Cancelled.is_success());
    }

    #[test]
    fn finds_this_process_in_its_own_pid_namespace_only() {
        let own = std::fs::metadata("/proc/self/ns/pid").unwrap().ino();
        let me = std::process::id() as i32;
        assert!(
            processes_in_pid_namespace(Path::new("/proc"), own)
                .unwrap()
                .contains(&me)
        );
        assert!(
            processes_in_pid_namespace(Path::new("/proc"), 1)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_user_without_subordinate_ids_is_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let subuid = dir.path().join("subuid");
        std::fs::write(&subuid, "").unwrap();
        let config = SandboxConfig {
            run_as: Some(BuildUser {
                name: "nobody-here".into(),
                uid: 4242,
                gid: 4242,
            }),
            subuid_file: subuid,
            ..SandboxConfig::default()
        };
        assert!(matches!(
            Sandbox::new(config),
            Err(SandboxError::NoSubordinateRange { .. })
        ));
    }
}
