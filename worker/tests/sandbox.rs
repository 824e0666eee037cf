//! End-to-end tests of the sandbox: real namespaces, real `newuidmap`, a busybox rootfs.
//!
//! As root (CI), the sandbox drops to the build user made by `tests/setup/build-user.sh`
//! (`kiln-build`), as a root worker would; as another user, it runs as that user, who then needs
//! subordinate ids. Every test also checks that no process of its sandbox is left.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_worker::sandbox::{
    BuildUser, Limits, Outcome, OutputLine, RunReport, Sandbox, SandboxCommand, SandboxConfig,
    SandboxError, Stream,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The build user the tests run sandboxes as.
const BUILD_USER: &str = "kiln-build";

/// Set when `a_non_root_worker_runs_sandboxes_as_its_own_user` re-executes this test binary as
/// the build user: the inherited descriptor of the `kiln-worker` binary.
const HELPER_FD_VAR: &str = "KILN_TEST_SANDBOX_HELPER_FD";

/// A busybox rootfs in a fresh temporary directory, owned by the build user.
struct Rootfs {
    dir: tempfile::TempDir,
    path: PathBuf,
}

/// The user to drop to when the tests run as root.
fn run_as() -> Option<BuildUser> {
    if !nix::unistd::getuid().is_root() {
        return None;
    }
    let user = BuildUser::from_name(BUILD_USER).expect("look up the build user");
    Some(user.unwrap_or_else(|| {
        panic!("no user {BUILD_USER}: run tests/setup/build-user.sh first (as root)")
    }))
}

/// Builds the rootfs: `/bin/busybox` from the host's busybox-static and a symlink per applet.
fn busybox_rootfs() -> Rootfs {
    let dir = tempfile::tempdir().expect("temp dir");
    // The build user must be able to reach the rootfs through its parent.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = dir.path().join("rootfs");
    for sub in ["bin", "etc", "root"] {
        std::fs::create_dir_all(path.join(sub)).unwrap();
    }
    // Copied by a child process: were this process to hold the copy open for writing, a fork
    // by another test thread would inherit the descriptor, and running busybox in the sandbox
    // could then fail with ETXTBSY until that child execs.
    let status = Command::new("cp")
        .arg("/bin/busybox")
        .arg(path.join("bin/busybox"))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "copy /bin/busybox (Debian package busybox-static)"
    );
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", path.join("bin").join(applet)).unwrap();
        }
    }
    give_to_build_user(&path);
    Rootfs { dir, path }
}

/// Gives `path` and everything below it to the build user, the sandbox's root.
fn give_to_build_user(path: &Path) {
    if let Some(user) = run_as() {
        let status = Command::new("chown")
            .args(["-R", "-h", &format!("{}:{}", user.uid, user.gid)])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// A configuration for tests: the built `kiln-worker` as helper, small limits, a short timeout.
fn config() -> SandboxConfig {
    SandboxConfig {
        helper_exe: match std::env::var(HELPER_FD_VAR) {
            Ok(fd) => format!("/proc/self/fd/{fd}").into(),
            Err(_) => env!("CARGO_BIN_EXE_kiln-worker").into(),
        },
        run_as: run_as(),
        limits: Limits {
            // RLIMIT_NPROC also counts every process of the build user on the host, other
            // tests' sandboxes included: leave room for the fork bomb's 128 and theirs.
            max_processes: 1024,
            max_data_bytes: Some(512 << 20),
            ..Limits::default()
        },
        wall_timeout: Duration::from_secs(60),
        tmp_size_bytes: 64 << 20,
        ..SandboxConfig::default()
    }
}

/// `/bin/sh -e -c SCRIPT` in `rootfs`.
fn shell(rootfs: &Rootfs, script: &str) -> SandboxCommand {
    SandboxCommand {
        rootfs: rootfs.path.clone(),
        argv: ["/bin/sh", "-e", "-c", script].map(String::from).to_vec(),
        env: vec![("PATH".into(), "/bin".into())],
        cwd: "/".into(),
        is_read_only: false,
    }
}

/// Runs `command` and collects its output; asserts that nothing of the sandbox is left.
async fn run_with(
    config: SandboxConfig,
    command: &SandboxCommand,
    cancel: &CancellationToken,
) -> (Result<RunReport, SandboxError>, Vec<OutputLine>) {
    let sandbox = Sandbox::new(config).expect("sandbox configuration");
    let (sender, mut receiver) = mpsc::channel(1024);
    let collector = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Some(line) = receiver.recv().await {
            lines.push(line);
        }
        lines
    });
    let result = sandbox.run(command, sender, cancel).await;
    let lines = tokio::time::timeout(Duration::from_secs(10), collector)
        .await
        .expect("the output ends with the run")
        .unwrap();
    if let Ok(report) = &result {
        let namespace = report.pid_namespace.as_ref().expect("a pid namespace");
        let left = namespace.processes(Path::new("/proc")).unwrap();
        assert!(left.is_empty(), "processes left behind: {left:?}");
    }
    (result, lines)
}

async fn run(config: SandboxConfig, command: &SandboxCommand) -> (RunReport, Vec<OutputLine>) {
    let (result, lines) = run_with(config, command, &CancellationToken::new()).await;
    match result {
        Ok(report) => (report, lines),
        Err(error) => panic!("run failed: {error:?}; output: {lines:#?}"),
    }
}

/// The texts of the lines of `stream`.
fn texts(lines: &[OutputLine], stream: Stream) -> Vec<&str> {
    lines
        .iter()
        .filter(|l| l.stream == stream)
        .map(|l| l.text.as_str())
        .collect()
}

#[tokio::test]
async fn output_is_streamed_line_by_line_with_stream_names() {
    let rootfs = busybox_rootfs();
    let (report, lines) = run(
        config(),
        &shell(
            &rootfs,
            "echo one; echo two >&2; echo three; printf 'no newline'",
        ),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Exited(0));
    assert_eq!(
        texts(&lines, Stream::Stdout),
        ["one", "three", "no newline"]
    );
    assert_eq!(texts(&lines, Stream::Stderr), ["two"]);
    assert!(lines.iter().all(|l| !l.is_truncated));
    assert_eq!(Stream::Stderr.name(), "stderr");
}

#[tokio::test]
async fn the_exit_code_is_propagated_and_sh_e_stops_at_the_first_failure() {
    let rootfs = busybox_rootfs();
    let (report, _) = run(config(), &shell(&rootfs, "exit 3")).await;
    assert_eq!(report.outcome, Outcome::Exited(3));
    assert_eq!(report.outcome.to_string(), "the script exited with code 3");
    let (report, lines) = run(config(), &shell(&rootfs, "false; echo unreachable")).await;
    assert_eq!(report.outcome, Outcome::Exited(1));
    assert!(texts(&lines, Stream::Stdout).is_empty());
}

#[tokio::test]
async fn root_inside_owns_the_full_id_map() {
    let rootfs = busybox_rootfs();
    let script = "id -u; id -g; touch /owned; chown 1000:42 /owned; stat -c %u:%g /owned; \
                  chown 65536:65536 /owned; echo max ok";
    let (report, lines) = run(config(), &shell(&rootfs, script)).await;
    assert_eq!(report.outcome, Outcome::Exited(0), "{lines:#?}");
    assert_eq!(
        texts(&lines, Stream::Stdout),
        ["0", "0", "1000:42", "max ok"]
    );
    // Seen from the host, inner 65536 is the last subordinate id.
    let meta = std::fs::metadata(rootfs.path.join("owned")).unwrap();
    let sandbox = Sandbox::new(config()).unwrap();
    assert_eq!(Some(meta.uid()), sandbox.uid_map().host_id(65536));
    assert_eq!(Some(meta.gid()), sandbox.gid_map().host_id(65536));
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap();
    let user = sandbox.build_user();
    let range =
        kiln_worker::sandbox::find_subordinate_range(&subuid, &user.name, user.uid, 65536).unwrap();
    assert_eq!(meta.uid(), range.start + 65535);
}

#[tokio::test]
async fn proc_shows_only_the_sandbox_and_devices_work() {
    let rootfs = busybox_rootfs();
    let host_pid = std::process::id();
    let script = format!(
        "cat /proc/1/comm; ls /proc | grep -c '^[0-9]'; \
         if [ -e /proc/{host_pid} ] && [ {host_pid} -gt 10 ]; then echo host pid visible; fi; \
         if readlink /proc/1/exe || cat /proc/1/environ; then echo init exposed; fi; \
         echo x > /dev/null; head -c 5 /dev/urandom | wc -c; ls /dev/pts/ptmx; \
         touch /tmp/t /dev/shm/s; echo devices ok"
    );
    let (report, lines) = run(config(), &shell(&rootfs, &script)).await;
    assert_eq!(report.outcome, Outcome::Exited(0), "{lines:#?}");
    let out = texts(&lines, Stream::Stdout);
    assert_eq!(out[0], "kiln-init");
    // pid 1 (init), the shell, ls and grep: nothing of the host.
    let count: u32 = out[1].parse().unwrap();
    assert!(count <= 4, "{count} processes visible");
    assert_eq!(out[2..], ["5", "/dev/pts/ptmx", "devices ok"]);
}

#[tokio::test]
async fn host_paths_are_out_of_reach() {
    let rootfs = busybox_rootfs();
    let marker = format!("kiln-sandbox-escape-{}", std::process::id());
    let script = format!(
        "echo escaped > /etc/{marker}; \
         if echo 3 > /proc/sys/vm/drop_caches; then echo wrote host sysctl; fi; \
         if echo 1 > /proc/sysrq-trigger; then echo wrote sysrq; fi; \
         if mount -o remount,rw /etc/hosts 2>/dev/null; then echo remounted hosts; fi; \
         cat /etc/hosts > /dev/null; echo done"
    );
    let (report, lines) = run(config(), &shell(&rootfs, &script)).await;
    assert_eq!(report.outcome, Outcome::Exited(0), "{lines:#?}");
    assert_eq!(texts(&lines, Stream::Stdout), ["done"]);
    // The write landed in the rootfs, never in the host's /etc.
    assert!(!Path::new("/etc").join(&marker).exists());
    assert_eq!(
        std::fs::read_to_string(rootfs.path.join("etc").join(&marker)).unwrap(),
        "escaped\n"
    );
}

/// Replaces the rootfs's `/etc` by a symlink to `points_to`, owned by the build user.
fn replace_etc_by_symlink(rootfs: &Rootfs, points_to: &Path) {
    let etc = rootfs.path.join("etc");
    std::fs::remove_dir(&etc).unwrap();
    std::os::unix::fs::symlink(points_to, &etc).unwrap();
    give_to_build_user(&rootfs.path);
}

#[tokio::test]
async fn mount_points_behind_symlinks_resolve_inside_the_rootfs() {
    let rootfs = busybox_rootfs();
    std::fs::create_dir_all(rootfs.path.join("data/etc")).unwrap();
    replace_etc_by_symlink(&rootfs, Path::new("/data/etc"));
    let (report, lines) = run(config(), &shell(&rootfs, "cat /etc/hosts")).await;
    assert_eq!(report.outcome, Outcome::Exited(0), "{lines:#?}");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert_eq!(
        texts(&lines, Stream::Stdout),
        hosts.lines().collect::<Vec<_>>()
    );
    // The mount point was created where the symlink leads inside the rootfs.
    assert!(rootfs.path.join("data/etc/hosts").exists());
}

#[tokio::test]
async fn a_symlink_to_a_host_directory_gets_no_mount_and_the_host_is_untouched() {
    let rootfs = busybox_rootfs();
    // A hostile image whose /etc points at a host directory by absolute path.
    let outside = rootfs.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    replace_etc_by_symlink(&rootfs, &outside);
    let (report, lines) = run(config(), &shell(&rootfs, "test ! -e /etc/hosts")).await;
    assert_eq!(report.outcome, Outcome::Exited(0), "{lines:#?}");
    assert_eq!(report.warnings.len(), 2, "{:?}", report.warnings);
    assert!(
        report.warnings[1].starts_with("skipped: make /etc/hosts a mount point"),
        "{:?}",
        report.warnings
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing was created in the host directory"
    );
}

#[tokio::test]
async fn a_fork_bomb_is_stopped_by_the_process_limit_and_leaves_nothing() {
    let rootfs = busybox_rootfs();
    let mut config = config();
    config.limits.max_processes = 128;
    let script = "i=0; while :; do sleep 1000 & i=$((i+1)); echo $i; done";
    let (report, lines) = run(config, &shell(&rootfs, script)).await;
    assert!(
        matches!(report.outcome, Outcome::Exited(code) if code != 0),
        "{:?}",
        report.outcome
    );
    let started: u32 = texts(&lines, Stream::Stdout)
        .last()
        .map_or(0, |n| n.parse().unwrap());
    assert!(started < 128, "{started} processes started");
    let errors = texts(&lines, Stream::Stderr).join("\n");
    assert!(errors.contains("can't fork"), "{errors}");
}

#[tokio::test]
async fn a_memory_hog_is_stopped_by_the_data_limit() {
    let rootfs = busybox_rootfs();
    let mut config = config();
    config.limits.max_data_bytes = Some(128 << 20);
    let started = Instant::now();
    let (report, lines) = run(config, &shell(&rootfs, "x=a; while :; do x=$x$x; done")).await;
    assert!(
        matches!(report.outcome, Outcome::Exited(code) if code != 0),
        "{:?}",
        report.outcome
    );
    let errors = texts(&lines, Stream::Stderr).join("\n");
    assert!(errors.contains("out of memory"), "{errors}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn the_cpu_limit_kills_with_sigxcpu() {
    let rootfs = busybox_rootfs();
    let mut config = config();
    config.limits.max_cpu_seconds = Some(1);
    let (report, _) = run(config, &shell(&rootfs, "while :; do :; done")).await;
    assert_eq!(report.outcome, Outcome::Signaled(libc::SIGXCPU));
    assert_eq!(
        report.outcome.to_string(),
        "the script was killed by SIGXCPU: it reached its CPU time limit"
    );
}

#[tokio::test]
async fn an_endless_loop_is_killed_at_the_wall_timeout_with_its_children() {
    let rootfs = busybox_rootfs();
    let mut config = config();
    config.wall_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let (report, _) = run(
        config,
        &shell(
            &rootfs,
            "sleep 1000 & (while :; do :; done) & while :; do :; done",
        ),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(report.outcome, Outcome::TimedOut(Duration::from_secs(2)));
    assert!(
        report
            .outcome
            .to_string()
            .contains("wall-clock limit of 2 s"),
        "{}",
        report.outcome
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[tokio::test]
async fn cancel_kills_the_sandbox_within_two_seconds() {
    let rootfs = busybox_rootfs();
    let sandbox = Sandbox::new(config()).unwrap();
    let command = shell(
        &rootfs,
        "sleep 1000 & trap '' TERM INT HUP; echo started; while :; do sleep 1; done",
    );
    let cancel = CancellationToken::new();
    let (sender, mut receiver) = mpsc::channel(16);
    let run = sandbox.run(&command, sender, &cancel);
    let canceller = async {
        let line = tokio::time::timeout(Duration::from_secs(30), receiver.recv())
            .await
            .expect("the script starts");
        assert_eq!(line.map(|l| l.text).as_deref(), Some("started"));
        cancel.cancel();
        let cancelled_at = Instant::now();
        while receiver.recv().await.is_some() {}
        cancelled_at
    };
    let (report, cancelled_at) = tokio::join!(run, canceller);
    let took = cancelled_at.elapsed();
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert!(took < Duration::from_secs(2), "cancel took {took:?}");
    let left = report
        .pid_namespace
        .unwrap()
        .processes(Path::new("/proc"))
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// The interface names in a `/proc/net/dev` listing.
fn interfaces(listing: &str) -> Vec<String> {
    let mut names: Vec<String> = listing
        .lines()
        .skip(2)
        .filter(|l| l.contains(':'))
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn network_off_leaves_only_a_working_loopback() {
    let rootfs = busybox_rootfs();
    let mut config = config();
    config.is_network_enabled = false;
    let script = "cat /proc/net/dev; ip -o link show lo | grep -q UP && echo lo up; \
                  test -e /etc/resolv.conf || echo no resolv.conf";
    let (report, lines) = run(config, &shell(&rootfs, script)).await;
    assert_eq!(report.outcome, Outcome::Exited(0), "{lines:#?}");
    let out = texts(&lines, Stream::Stdout).join("\n");
    assert_eq!(interfaces(&out), ["lo"], "{out}");
    assert!(out.contains("lo up"), "{out}");
    assert!(out.contains("no resolv.conf"), "{out}");
}

#[tokio::test]
async fn network_on_shares_the_host_interfaces_and_resolver() {
    let rootfs = busybox_rootfs();
    let (report, lines) = run(
        config(),
        &shell(&rootfs, "cat /proc/net/dev; echo ---; cat /etc/resolv.conf"),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Exited(0), "{lines:#?}");
    let out = texts(&lines, Stream::Stdout).join("\n");
    let (dev, resolv) = out.split_once("\n---").unwrap();
    let host = std::fs::read_to_string("/proc/net/dev").unwrap();
    assert_eq!(interfaces(dev), interfaces(&host));
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap();
    assert_eq!(resolv.trim(), host_resolv.trim());
}

#[tokio::test]
async fn a_read_only_rootfs_refuses_writes_but_tmp_works() {
    let rootfs = busybox_rootfs();
    let mut command = shell(
        &rootfs,
        "if touch /written 2>/dev/null; then echo wrote; fi; touch /tmp/ok; echo done",
    );
    command.is_read_only = true;
    let (report, lines) = run(config(), &command).await;
    assert_eq!(report.outcome, Outcome::Exited(0), "{lines:#?}");
    assert_eq!(texts(&lines, Stream::Stdout), ["done"]);
    assert!(!rootfs.path.join("written").exists());
}

#[tokio::test]
async fn a_missing_program_is_a_setup_error_naming_it() {
    let rootfs = busybox_rootfs();
    let mut command = shell(&rootfs, "");
    command.argv = vec!["/bin/no-such-shell".into()];
    let (result, _) = run_with(config(), &command, &CancellationToken::new()).await;
    match result {
        Err(SandboxError::Setup { step, source }) => {
            assert_eq!(step, "execute /bin/no-such-shell");
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("expected a setup error, got {other:?}"),
    }
    command.argv = vec!["bin/sh".into()];
    let (result, _) = run_with(config(), &command, &CancellationToken::new()).await;
    assert!(matches!(result, Err(SandboxError::RelativeCommand(_))));
}

#[tokio::test]
async fn a_long_line_is_cut_at_the_bound() {
    let rootfs = busybox_rootfs();
    let mut config = config();
    config.max_line_bytes = 100;
    let (report, lines) = run(
        config,
        &shell(
            &rootfs,
            "head -c 1000000 /dev/zero | tr '\\0' a; echo; echo after",
        ),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Exited(0));
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[0].text, "a".repeat(100));
    assert!(lines[0].is_truncated);
    assert_eq!(lines[1].text, "after");
    assert!(!lines[1].is_truncated);
}

#[tokio::test]
async fn a_non_root_worker_runs_sandboxes_as_its_own_user() {
    if let Some(user) = run_as() {
        // As root: run this same test as the build user, a real rootless worker. The binaries
        // are passed as inherited descriptors (dup clears close-on-exec), so the build user
        // needs no access to the target directory.
        let open = |path: &Path| nix::unistd::dup(std::fs::File::open(path).unwrap()).unwrap();
        let test_binary = open(&std::env::current_exe().unwrap());
        let helper = open(Path::new(env!("CARGO_BIN_EXE_kiln-worker")));
        let output = Command::new("setpriv")
            .args([
                "--reuid",
                &user.uid.to_string(),
                "--regid",
                &user.gid.to_string(),
            ])
            .args(["--clear-groups", "--"])
            .arg(format!("/proc/self/fd/{}", test_binary.as_raw_fd()))
            .args([
                "--exact",
                "a_non_root_worker_runs_sandboxes_as_its_own_user",
            ])
            .env(HELPER_FD_VAR, helper.as_raw_fd().to_string())
            .current_dir("/")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{stderr}"
        );
        return;
    }
    let me = nix::unistd::getuid().as_raw();
    let rootfs = busybox_rootfs();
    let (report, lines) = run(config(), &shell(&rootfs, "id -u; cat /proc/self/uid_map")).await;
    assert_eq!(report.outcome, Outcome::Exited(0), "{lines:#?}");
    let out = texts(&lines, Stream::Stdout);
    assert_eq!(out[0], "0");
    let map: Vec<Vec<&str>> = out[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(map[0], ["0", &me.to_string(), "1"]);
    assert_eq!((map[1][0], map[1][2]), ("1", "65536"));
}

/// The debootstrap minbase made by tests/setup/debootstrap.sh (run.sh runs it first).
const DEBIAN_MINBASE: &str = "/var/cache/kiln-tests/debian-minbase";

/// Copies `from` to `to` giving every entry the host owner the sandbox maps its ids to, as a
/// root worker extracting layers would.
fn copy_shifted(from: &Path, to: &Path, sandbox: &Sandbox) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success(), "cp -a {}", from.display());
    let mut stack = vec![to.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let uid = sandbox.uid_map().host_id(meta.uid()).unwrap();
        let gid = sandbox.gid_map().host_id(meta.gid()).unwrap();
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).unwrap();
        if meta.is_dir() {
            // lchown clears set-id bits; directories' modes are kept by cp and not set-id here.
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if meta.mode() & 0o6000 != 0 {
            std::fs::set_permissions(
                &path,
                std::os::unix::fs::PermissionsExt::from_mode(meta.mode() & 0o7777),
            )
            .unwrap();
        }
    }
}

#[tokio::test]
async fn debian_runs_apt_useradd_and_su_with_the_full_map() {
    let minbase = Path::new(DEBIAN_MINBASE);
    assert!(
        minbase.join("bin/sh").exists(),
        "{DEBIAN_MINBASE} is missing: run tests/setup/debootstrap.sh"
    );
    let sandbox = Sandbox::new(config()).unwrap();
    if run_as().is_none() {
        // A non-root user cannot give files away; the root run covers this test.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let rootfs = dir.path().join("rootfs");
    copy_shifted(minbase, &rootfs, &sandbox);
    // apt drops to _apt (uid 42) for downloads, useradd writes /etc/shadow, su switches to
    // uid 1000: each needs ids beyond a single-id map.
    // The seccomp deny-list refuses keyctl (perl-base is in minbase; busybox cannot make raw
    // syscalls): without it, KEYCTL_GET_KEYRING_ID on the session keyring returns an id.
    let script = format!(
        "apt-get update -qq && \
         apt-get install -y -qq --no-install-recommends hello >/dev/null && \
         hello && useradd -m alice && su alice -s /bin/sh -c 'id -u; touch ~/mine' && \
         stat -c %U /home/alice/mine && \
         perl -e 'print syscall({}, 0, -3, 0) == -1 ? \"$!\\n\" : \"allowed\\n\"'",
        libc::SYS_keyctl
    );
    let command = SandboxCommand {
        rootfs: rootfs.clone(),
        argv: ["/bin/sh", "-e", "-c", &script].map(String::from).to_vec(),
        env: vec![
            ("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            ("DEBIAN_FRONTEND".into(), "noninteractive".into()),
            ("LANG".into(), "C".into()),
        ],
        cwd: "/".into(),
        is_read_only: false,
    };
    let mut config = config();
    config.wall_timeout = Duration::from_secs(600);
    let (report, lines) = run(config, &command).await;
    assert_eq!(report.outcome, Outcome::Exited(0), "{lines:#?}");
    assert_eq!(
        texts(&lines, Stream::Stdout),
        ["Hello, world!", "1000", "alice", "Operation not permitted"]
    );
    // From the host, alice's file belongs to the subordinate id of inner uid 1000.
    let meta = std::fs::metadata(rootfs.join("home/alice/mine")).unwrap();
    assert_eq!(Some(meta.uid()), sandbox.uid_map().host_id(1000));
}

#[tokio::test]
async fn open_file_and_file_size_limits_apply_inside() {
    let rootfs = busybox_rootfs();
    let mut config = config();
    config.limits.max_open_files = 512;
    config.limits.max_file_size_bytes = 1 << 20;
    // ulimit -f counts 512-byte blocks (POSIX); head dies of SIGXFSZ (25) at the limit.
    let script = "ulimit -n; ulimit -u; ulimit -f; \
                  head -c 3000000 /dev/zero > /tmp/big || echo \"head exited $?\"; \
                  wc -c < /tmp/big";
    let (report, lines) = run(config, &shell(&rootfs, script)).await;
    assert_eq!(report.outcome, Outcome::Exited(0), "{lines:#?}");
    assert_eq!(
        texts(&lines, Stream::Stdout),
        ["512", "1024", "2048", "head exited 153", "1048576"]
    );
}
