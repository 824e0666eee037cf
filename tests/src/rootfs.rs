//! Packs a host directory tree (the debootstrap base) into a [`Layer`], keeping what an image
//! needs: owners, modes with setuid bits, symlinks, hard links (by inode), fifos and devices.
//! Times are dropped (mtime 0) so the layer depends only on the tree's content.
//!
//! `dev/`, `proc/` and `sys/` are packed empty: a container gets them from its runtime, and a
//! debootstrap tree holds host device nodes there that an image must not carry.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::error::{Result, SupportError, io_error};
use crate::layer::{Entry, EntryKind, FileData, Layer};

/// Top-level directories whose contents are left out.
const RUNTIME_DIRS: &[&str] = &["dev", "proc", "sys"];

/// The layer holding every file under `root`, which is not itself an entry.
///
/// Errors: [`SupportError::Io`] when the tree cannot be read, [`SupportError::Unsupported`] for
/// a socket (it cannot be represented in tar).
pub fn rootfs_layer(root: &Path) -> Result<Layer> {
    let mut found = Vec::new();
    let walk = walkdir::WalkDir::new(root).min_depth(1).follow_links(false);
    let mut walk = walk.into_iter();
    while let Some(item) = walk.next() {
        let item = item.map_err(|error| {
            let path = error.path().unwrap_or(root).to_owned();
            io_error("walk", path)(error.into())
        })?;
        let relative = item.path().strip_prefix(root).unwrap_or(item.path());
        if item.depth() == 1
            && item.file_type().is_dir()
            && RUNTIME_DIRS.iter().any(|d| relative == Path::new(d))
        {
            walk.skip_current_dir();
        }
        let meta = item
            .path()
            .symlink_metadata()
            .map_err(io_error("stat", item.path()))?;
        found.push((relative.as_os_str().as_encoded_bytes().to_vec(), item, meta));
    }
    // Hard links must name an entry written before them, so decide them in archive order.
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let mut first_link: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut entries = Vec::with_capacity(found.len());
    for (relative, item, meta) in found {
        let path = item.path();
        let file_type = meta.file_type();
        let kind = if file_type.is_dir() {
            EntryKind::Directory
        } else if file_type.is_symlink() {
            let target = fs::read_link(path).map_err(io_error("read link", path))?;
            EntryKind::Symlink(target.into_os_string().into_encoded_bytes())
        } else if file_type.is_file() {
            let inode = (meta.dev(), meta.ino());
            match first_link.get(&inode) {
                Some(target) => EntryKind::HardLink(target.clone()),
                None => {
                    if meta.nlink() > 1 {
                        first_link.insert(inode, relative.clone());
                    }
                    EntryKind::File(FileData::Host(path.to_owned()))
                }
            }
        } else if file_type.is_fifo() {
            EntryKind::Fifo
        } else if file_type.is_char_device() || file_type.is_block_device() {
            let rdev = meta.rdev();
            let (major, minor) = (libc::major(rdev), libc::minor(rdev));
            if file_type.is_char_device() {
                EntryKind::CharDevice { major, minor }
            } else {
                EntryKind::BlockDevice { major, minor }
            }
        } else {
            return Err(SupportError::Unsupported {
                path: path.to_owned(),
                reason: "sockets have no tar representation",
            });
        };
        let mut entry = Entry::new(relative, kind, meta.mode() & 0o7777);
        entry.uid = u64::from(meta.uid());
        entry.gid = u64::from(meta.gid());
        entries.push(entry);
    }
    Ok(Layer::new(entries))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    #[test]
    fn packs_links_modes_and_skips_runtime_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("dev/pts")).unwrap();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::write(root.join("usr/bin/tool"), "x").unwrap();
        fs::set_permissions(
            root.join("usr/bin/tool"),
            fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool2")).unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        let layer = rootfs_layer(root).unwrap();
        let summary: Vec<_> = layer
            .entries()
            .iter()
            .map(|e| {
                (
                    String::from_utf8_lossy(&e.path).into_owned(),
                    e.mode,
                    &e.kind,
                )
            })
            .map(|(p, m, k)| match k {
                EntryKind::HardLink(t) => format!("{p} {m:o} link {}", String::from_utf8_lossy(t)),
                EntryKind::Symlink(t) => format!("{p} symlink {}", String::from_utf8_lossy(t)),
                EntryKind::Directory => format!("{p}/"),
                _ => format!("{p} {m:o}"),
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                "bin symlink usr/bin",
                "dev/",
                "usr/",
                "usr/bin/",
                "usr/bin/tool 4755",
                "usr/bin/tool2 4755 link usr/bin/tool",
            ]
        );
    }
}
