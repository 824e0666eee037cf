//! A whole `docker` bootstrap against what SingularityCE runs for it: containers/image (here
//! `skopeo copy` into an OCI layout) followed by umoci's layer unpacking (`umoci raw unpack`).
//!
//! `cargo run --release -p kiln-worker --example bench_pull -- [REFERENCE]` pulls REFERENCE
//! (default `$KILN_TEST_DEBIAN`, the debootstrap image `tests/run.sh` pushes; a plain-HTTP
//! registry on 127.0.0.1) with an empty cache each run, and prints wall times and the ratio
//! (below 1 is faster). A timing, not a test: it never fails on speed.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiln_worker::pipeline::cache::{CacheOptions, LayerCache};
use kiln_worker::pipeline::docker::{Platform, PullOptions, bootstrap, docker_reference};
use kiln_worker::pipeline::layer::{ApplyOptions, OwnershipMode};
use kiln_worker::pipeline::progress::NoProgress;

/// Runs per tool; the best is kept, as the machine is shared.
const RUNS: usize = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let reference = match std::env::args().nth(1) {
        Some(r) => r,
        None => std::env::var("KILN_TEST_DEBIAN")
            .context("give a reference or set KILN_TEST_DEBIAN (tests/run.sh does)")?,
    };
    let work = tempfile::tempdir().context("failed to create a work directory")?;
    println!("image: {reference}");

    let mut reference_tools = Duration::MAX;
    for run in 0..RUNS {
        let dir = work.path().join(format!("ref-{run}"));
        std::fs::create_dir_all(&dir)?;
        let layout = format!("oci:{}:img", dir.join("layout").display());
        let start = Instant::now();
        command(
            Command::new("skopeo")
                .args(["copy", "--quiet", "--src-tls-verify=false"])
                .arg(format!("docker://{reference}"))
                .arg(&layout),
        )?;
        command(
            Command::new("umoci")
                .args(["raw", "unpack", "--rootless", "--image"])
                .arg(format!("{}:img", dir.join("layout").display()))
                .arg(dir.join("rootfs")),
        )?;
        reference_tools = reference_tools.min(start.elapsed());
        remove_tree(&dir);
    }
    println!(
        "{:<30} {:>8.2} s",
        "skopeo copy + umoci unpack",
        reference_tools.as_secs_f64()
    );

    let parsed = docker_reference(&reference, None, None)?;
    let options = PullOptions::new(Platform::from_arch("amd64")?);
    let mut ours = Duration::MAX;
    for run in 0..RUNS {
        let dir = work.path().join(format!("kiln-{run}"));
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs)?;
        let cache = LayerCache::open(&CacheOptions::new(dir.join("cache"), 8 << 30))?;
        let start = Instant::now();
        bootstrap(
            &parsed,
            &options,
            &cache,
            rootfs,
            ApplyOptions::new(OwnershipMode::Record),
            Arc::new(NoProgress),
        )
        .await?;
        ours = ours.min(start.elapsed());
        remove_tree(&dir);
    }
    println!(
        "{:<30} {:>8.2} s   ratio {:.2}",
        "kiln docker bootstrap",
        ours.as_secs_f64(),
        ours.as_secs_f64() / reference_tools.as_secs_f64()
    );
    Ok(())
}

fn command(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Removes a run's files; rootless extraction leaves owner-writable trees, so this succeeds.
fn remove_tree(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
