//! Startup cost of a sandbox, against util-linux `unshare` as the reference: both run
//! `/bin/true` in a busybox rootfs N times, in new user, mount and pid namespaces with the full
//! subordinate id map and a fresh `/proc`. Kiln's sandbox also mounts `/dev`, devpts, two tmpfs
//! and the host's `resolv.conf`/`hosts`, and `pivot_root`s where `unshare --root` chroots.
//!
//! Run: `cargo bench -p kiln-worker --bench sandbox_startup [-- RUNS]`, as root (the sandbox
//! then drops to `kiln-build`, see tests/setup/build-user.sh) or as a user with subordinate ids.
//! Prints milliseconds per run and the ratio; it asserts nothing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_worker::sandbox::{BuildUser, Outcome, Sandbox, SandboxCommand, SandboxConfig};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let runs: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let run_as = if nix::unistd::getuid().is_root() {
        BuildUser::from_name("kiln-build")?
    } else {
        None
    };
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let rootfs = dir.path().join("rootfs");
    for sub in ["bin", "proc", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(sub))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))?;
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/true"))?;
    if let Some(user) = &run_as {
        let owner = format!("{}:{}", user.uid, user.gid);
        anyhow::ensure!(
            Command::new("chown")
                .args(["-R", "-h", &owner])
                .arg(&rootfs)
                .status()?
                .success()
        );
    }

    let kiln = time_kiln(&rootfs, run_as.clone(), runs)?;
    let reference = time_unshare(&rootfs, run_as.as_ref(), runs)?;
    let per_run = |d: Duration| d.as_secs_f64() * 1000.0 / f64::from(runs);
    println!("sandbox startup, {runs} runs of /bin/true");
    println!("  kiln sandbox      {:8.2} ms/run", per_run(kiln));
    println!("  unshare (ref)     {:8.2} ms/run", per_run(reference));
    println!(
        "  ratio kiln/ref    {:8.2}",
        kiln.as_secs_f64() / reference.as_secs_f64()
    );
    Ok(())
}

fn time_kiln(rootfs: &Path, run_as: Option<BuildUser>, runs: u32) -> anyhow::Result<Duration> {
    let sandbox = Sandbox::new(SandboxConfig {
        helper_exe: env!("CARGO_BIN_EXE_kiln-worker").into(),
        run_as,
        ..SandboxConfig::default()
    })?;
    let command = SandboxCommand {
        rootfs: rootfs.to_owned(),
        argv: vec!["/bin/true".into()],
        env: Vec::new(),
        cwd: "/".into(),
        is_read_only: false,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let cancel = CancellationToken::new();
    let started = Instant::now();
    for _ in 0..runs {
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        drop(receiver);
        let report = runtime.block_on(sandbox.run(&command, sender, &cancel))?;
        anyhow::ensure!(report.outcome == Outcome::Exited(0), "{}", report.outcome);
    }
    Ok(started.elapsed())
}

fn time_unshare(rootfs: &Path, run_as: Option<&BuildUser>, runs: u32) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for _ in 0..runs {
        let mut command = match run_as {
            Some(user) => {
                // setpriv, not runuser: no PAM session, the cheapest way to drop to the user.
                let mut c = Command::new("setpriv");
                c.args([
                    "--reuid",
                    &user.uid.to_string(),
                    "--regid",
                    &user.gid.to_string(),
                ]);
                c.args(["--clear-groups", "--", "unshare"]);
                c
            }
            None => Command::new("unshare"),
        };
        let status = command
            .args([
                "--user",
                "--map-auto",
                "--map-root-user",
                "--mount",
                "--pid",
            ])
            .args(["--fork", "--mount-proc"])
            .arg(format!("--root={}", rootfs.display()))
            .arg("/bin/true")
            .status()?;
        anyhow::ensure!(status.success(), "unshare failed: {status}");
    }
    Ok(started.elapsed())
}
