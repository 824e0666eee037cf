//! Unpacking a SquashFS image into a directory, for SIF base images (`library`, `oras`) and
//! for `kiln-worker run`. Kiln writes SquashFS but has no reader of its own yet; this runs
//! `unsquashfs` (squashfs-tools ≥ 4.5.1, which refuses entries that climb out of the
//! destination, CVE-2021-40153/41072) as the worker's user: every file lands owned by the worker,
//! the sandbox's root, and devices, which an unprivileged user cannot create, are skipped.

use std::path::Path;
use std::process::Stdio;

use super::error::BuildError;

/// Unpacks `squashfs` over the existing directory `dest` (files there are replaced).
pub async fn unsquash(squashfs: &Path, dest: &Path) -> Result<(), BuildError> {
    let output = tokio::process::Command::new("unsquashfs")
        .args([
            "-no-progress",
            "-no-xattrs",
            "-force",
            "-ignore-errors",
            "-quiet",
            "-dest",
        ])
        .arg(dest)
        .arg(squashfs)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| BuildError::Io {
            what: "run unsquashfs on",
            path: squashfs.to_owned(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(BuildError::Bootstrap {
            message: format!(
                "the SquashFS image {} could not be unpacked: {}",
                squashfs.display(),
                last.trim()
            ),
            is_user_fault: true,
        });
    }
    Ok(())
}
