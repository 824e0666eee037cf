//! Layer application speed against GNU tar, the reference for extracting a tar changeset.
//!
//! `cargo run --release -p kiln-worker --example bench_layers -- [ROOTFS]` packs ROOTFS
//! (default: the Debian minbase tree the test suite bootstraps) into a gzip layer, applies it
//! with [`LayerApplier`] in both ownership modes and extracts it with `tar -xzf`, and prints
//! wall times and the ratio to tar (below 1 is faster). A timing, not a test: it never fails
//! on speed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiln_worker::pipeline::layer::{ApplyOptions, LayerApplier, OwnershipMode};

const DEFAULT_ROOTFS: &str = "/var/cache/kiln-tests/debian-minbase";
/// Runs per tool; the best is kept, as the machine is shared.
const RUNS: usize = 3;

fn main() -> anyhow::Result<()> {
    let source = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| DEFAULT_ROOTFS.to_owned()),
    );
    if !source.is_dir() {
        bail!("{} is not a directory", source.display());
    }
    let work = tempfile::tempdir().context("failed to create a work directory")?;
    let layer = work.path().join("layer.tar.gz");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&source)
        .args(["--numeric-owner", "-czf"])
        .arg(&layer)
        .arg(".")
        .status()
        .context("failed to run tar")?;
    if !status.success() {
        bail!("tar could not pack {}", source.display());
    }
    let size = std::fs::metadata(&layer)?.len();
    println!(
        "layer: {} ({:.1} MiB gzip)",
        source.display(),
        size as f64 / (1 << 20) as f64
    );

    let tar = best_of(work.path(), |dest| {
        let ok = Command::new("tar")
            .args(["--numeric-owner", "-xzf"])
            .arg(&layer)
            .arg("-C")
            .arg(dest)
            .status()?
            .success();
        if !ok {
            bail!("tar -x failed");
        }
        Ok(())
    })?;
    println!("{:<22} {:>8.2} s", "tar -xzf", tar.as_secs_f64());
    for (label, mode) in [
        ("kiln (record owners)", OwnershipMode::Record),
        ("kiln (apply owners)", OwnershipMode::Apply),
    ] {
        if mode == OwnershipMode::Apply && !nix::unistd::Uid::effective().is_root() {
            println!("{label:<22} skipped (needs root)");
            continue;
        }
        let ours = best_of(work.path(), |dest| {
            let mut applier = LayerApplier::open(dest, ApplyOptions::new(mode))?;
            applier.apply_blob(std::fs::File::open(&layer)?)?;
            Ok(())
        })?;
        println!(
            "{label:<22} {:>8.2} s   ratio to tar {:.2}",
            ours.as_secs_f64(),
            ours.as_secs_f64() / tar.as_secs_f64()
        );
    }
    Ok(())
}

/// Best wall time of [`RUNS`] runs, each into a fresh directory under `work`.
fn best_of(
    work: &Path,
    mut run: impl FnMut(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..RUNS {
        let dest = tempfile::tempdir_in(work)?;
        let start = Instant::now();
        run(dest.path())?;
        best = best.min(start.elapsed());
    }
    Ok(best)
}
