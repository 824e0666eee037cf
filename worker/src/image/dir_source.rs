//! Source 1: a directory tree on disk, typically the rootfs after `%post`.
//!
//! The walk never follows symlinks (a symlink is stored as one) and never leaves the tree.
//! When `%post` ran in a user namespace and the tree is read from outside it, files carry host
//! ids (inner 0 → the worker's uid, inner 1.. → the subordinate range 100000..); an [`IdMap`]
//! maps them back to the ids the image must show. Hard links (same device and inode) become one
//! image inode; xattrs the worker can read (`security.capability`, `user.*`) are kept.

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::image::tree::{Content, MAX_NAME_BYTES, Meta, Node, NodeId, NodeKind, Tree};
use crate::image::{ImageError, Result};

/// One range of an id map: inner ids `inner..inner+count` are host ids `host..host+count`, the
/// same three numbers as a line of `/proc/PID/uid_map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First id inside the namespace (in the image).
    pub inner: u32,
    /// First id on the host (on disk).
    pub host: u32,
    /// Number of ids.
    pub count: u32,
}

/// Maps host ids to image ids. An empty map is the identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    /// The ranges; they must not overlap on the host side.
    pub ranges: Vec<IdRange>,
}

impl IdMap {
    /// Parses `INNER:HOST:COUNT`, appending the range.
    pub fn push_spec(&mut self, spec: &str) -> Result<()> {
        let bad = || ImageError::BadIdMap(spec.to_owned());
        let parts: Vec<u32> = spec
            .split(':')
            .map(|p| p.parse().map_err(|_| bad()))
            .collect::<Result<_>>()?;
        let [inner, host, count] = parts[..] else {
            return Err(bad());
        };
        if count == 0
            || inner.checked_add(count - 1).is_none()
            || host.checked_add(count - 1).is_none()
        {
            return Err(bad());
        }
        self.ranges.push(IdRange { inner, host, count });
        Ok(())
    }

    /// The image id of host id `id`, or `None` when no range covers it.
    pub fn to_inner(&self, id: u32) -> Option<u32> {
        if self.ranges.is_empty() {
            return Some(id);
        }
        self.ranges
            .iter()
            .find(|r| id >= r.host && id - r.host < r.count)
            .map(|r| r.inner + (id - r.host))
    }
}

/// Reads the tree under `root` into an image [`Tree`], mapping owners through `uids` and
/// `gids`. The root directory's own metadata becomes the image root's.
///
/// Errors: an unreadable entry, a name SquashFS cannot store, an owner outside the maps.
pub fn read_dir_tree(root: &Path, uids: &IdMap, gids: &IdMap) -> Result<Tree> {
    let md = fs::symlink_metadata(root).map_err(|source| ImageError::ReadTree {
        path: root.to_owned(),
        source,
    })?;
    if !md.is_dir() {
        return Err(ImageError::ReadTree {
            path: root.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let mut walker = Walker {
        uids,
        gids,
        hard_links: HashMap::new(),
    };
    let mut tree = Tree::new(walker.meta(root, &md)?);
    // Explicit stack: a deep tree must not overflow the thread's stack.
    let mut stack: Vec<(PathBuf, NodeId)> = vec![(root.to_owned(), Tree::ROOT)];
    while let Some((dir, dir_id)) = stack.pop() {
        let read_err = |source| ImageError::ReadTree {
            path: dir.clone(),
            source,
        };
        for entry in fs::read_dir(&dir).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let name = entry.file_name().as_bytes().to_vec();
            if name.len() > MAX_NAME_BYTES {
                return Err(ImageError::BadName(
                    String::from_utf8_lossy(&name).into_owned(),
                ));
            }
            let path = entry.path();
            let md = fs::symlink_metadata(&path).map_err(|source| ImageError::ReadTree {
                path: path.clone(),
                source,
            })?;
            let id = walker.node(&mut tree, &path, &md)?;
            if md.is_dir() {
                stack.push((path, id));
            }
            tree.link(dir_id, name, id)?;
        }
    }
    Ok(tree)
}

struct Walker<'a> {
    uids: &'a IdMap,
    gids: &'a IdMap,
    /// Nodes of files with more than one name, by (device, inode).
    hard_links: HashMap<(u64, u64), NodeId>,
}

impl Walker<'_> {
    fn meta(&self, path: &Path, md: &fs::Metadata) -> Result<Meta> {
        let uid = self.uids.to_inner(md.uid()).ok_or(ImageError::UnmappedId {
            path: path.to_owned(),
            kind: "uid",
            id: md.uid(),
        })?;
        let gid = self.gids.to_inner(md.gid()).ok_or(ImageError::UnmappedId {
            path: path.to_owned(),
            kind: "gid",
            id: md.gid(),
        })?;
        let mut xattrs = Vec::new();
        // Filesystems without xattr support answer ENOTSUP: that is "no xattrs".
        if let Ok(names) = xattr::list(path) {
            for name in names {
                if let Ok(Some(value)) = xattr::get(path, &name) {
                    xattrs.push((name.as_bytes().to_vec(), value));
                }
            }
        }
        xattrs.sort();
        Ok(Meta {
            mode: (md.mode() & 0o7777) as u16,
            uid,
            gid,
            mtime: md.mtime().clamp(0, u32::MAX as i64) as u32,
            xattrs,
        })
    }

    fn node(&mut self, tree: &mut Tree, path: &Path, md: &fs::Metadata) -> Result<NodeId> {
        let ft = md.file_type();
        if !ft.is_dir()
            && md.nlink() > 1
            && let Some(&id) = self.hard_links.get(&(md.dev(), md.ino()))
        {
            return Ok(id);
        }
        let kind = if ft.is_dir() {
            NodeKind::Dir(Default::default())
        } else if ft.is_file() {
            NodeKind::File {
                size: md.len(),
                content: Content::Path(path.to_owned()),
                hash: None,
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(|source| ImageError::ReadTree {
                path: path.to_owned(),
                source,
            })?;
            NodeKind::Symlink(target.as_os_str().as_bytes().to_vec())
        } else if ft.is_char_device() {
            NodeKind::CharDevice {
                major: libc::major(md.rdev()),
                minor: libc::minor(md.rdev()),
            }
        } else if ft.is_block_device() {
            NodeKind::BlockDevice {
                major: libc::major(md.rdev()),
                minor: libc::minor(md.rdev()),
            }
        } else if ft.is_fifo() {
            NodeKind::Fifo
        } else {
            NodeKind::Socket
        };
        let id = tree.add(Node {
            meta: self.meta(path, md)?,
            kind,
        });
        if !ft.is_dir() && md.nlink() > 1 {
            self.hard_links.insert((md.dev(), md.ino()), id);
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_map_maps_ranges_and_rejects_the_rest() {
        let mut m = IdMap::default();
        m.push_spec("0:1000:1").unwrap();
        m.push_spec("1:100000:65536").unwrap();
        assert_eq!(m.to_inner(1000), Some(0));
        assert_eq!(m.to_inner(100000), Some(1));
        assert_eq!(m.to_inner(100999), Some(1000));
        assert_eq!(m.to_inner(0), None);
        assert_eq!(m.to_inner(165536), None);
        assert!(IdMap::default().to_inner(5) == Some(5));
        for bad in ["1:2", "a:1:1", "0:0:0", "4294967295:0:2"] {
            assert!(m.clone().push_spec(bad).is_err(), "{bad}");
        }
    }
}
