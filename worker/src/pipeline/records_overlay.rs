//! Puts back, into the image model of a built tree, what a rootless layer application could
//! only record (`layer::TreeRecords`): the layers' owners and modes, device nodes and extended
//! attributes.
//!
//! On disk, a file from a layer is owned by the worker (the image's root) with owner `rw`
//! (and `x` on directories) added. A recorded owner is put back when the file is still owned
//! by root in the image, and a recorded mode when the mode on disk is still the recorded one
//! with those bits added: what `%post` changed itself (a `chown`, a `chmod`) is left as it is.
//! A file `%post` replaced keeps the record of the one it replaced if it is owned by root with
//! the same mode, which gives the same result for the common case of an edited config file.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::image::ImageError;
use crate::image::tree::{Meta, Node, NodeId, NodeKind, Tree};
use crate::pipeline::layer::{DeviceKind, TreeRecords};

/// Bits record mode adds so that the worker can work on the tree.
const ADDED_FILE_BITS: u16 = 0o600;
const ADDED_DIR_BITS: u16 = 0o700;

/// The node at `path` (physical, relative to the root), never following a symlink.
fn lookup(tree: &Tree, path: &Path) -> Option<NodeId> {
    let mut node = Tree::ROOT;
    for part in path.iter() {
        node = *tree.entries(node)?.get(part.as_bytes())?;
    }
    Some(node)
}

/// Applies `records` to `tree`; returns how many entries changed.
///
/// # Errors
/// Only if the tree is inconsistent (a parent that is not a directory).
pub fn apply_records(tree: &mut Tree, records: &TreeRecords) -> Result<usize, ImageError> {
    let mut changed = 0;
    for (path, record) in records.iter() {
        match lookup(tree, path) {
            Some(id) => {
                let node = &mut tree.nodes[id];
                let added = if node.is_dir() {
                    ADDED_DIR_BITS
                } else {
                    ADDED_FILE_BITS
                };
                let mut touched = false;
                if let Some(meta) = &record.meta {
                    if node.meta.uid == 0
                        && node.meta.gid == 0
                        && let (Ok(uid), Ok(gid)) =
                            (u32::try_from(meta.uid), u32::try_from(meta.gid))
                    {
                        node.meta.uid = uid;
                        node.meta.gid = gid;
                        touched = true;
                    }
                    let recorded = (meta.mode & 0o7777) as u16;
                    if !matches!(node.kind, NodeKind::Symlink(_))
                        && node.meta.mode == recorded | added
                    {
                        node.meta.mode = recorded;
                        touched = true;
                    }
                }
                if !record.xattrs.is_empty() && node.meta.xattrs.is_empty() {
                    let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = record
                        .xattrs
                        .iter()
                        .map(|x| (x.name.as_bytes().to_vec(), x.value.clone()))
                        .collect();
                    xattrs.sort();
                    node.meta.xattrs = xattrs;
                    touched = true;
                }
                changed += usize::from(touched);
            }
            None => {
                let Some(device) = &record.device else {
                    continue;
                };
                let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                    continue;
                };
                let Some(dir) = lookup(tree, parent).filter(|&d| tree.nodes[d].is_dir()) else {
                    continue;
                };
                let meta = match &record.meta {
                    Some(m) => Meta {
                        mode: (m.mode & 0o7777) as u16,
                        uid: u32::try_from(m.uid).unwrap_or(0),
                        gid: u32::try_from(m.gid).unwrap_or(0),
                        mtime: 0,
                        xattrs: Vec::new(),
                    },
                    None => Meta {
                        mode: 0o644,
                        ..Meta::implicit_dir()
                    },
                };
                let kind = match device.kind {
                    DeviceKind::Char => NodeKind::CharDevice {
                        major: device.major,
                        minor: device.minor,
                    },
                    DeviceKind::Block => NodeKind::BlockDevice {
                        major: device.major,
                        minor: device.minor,
                    },
                };
                let id = tree.add(Node { meta, kind });
                tree.link(dir, name.as_bytes().to_vec(), id)?;
                changed += 1;
            }
        }
    }
    Ok(changed)
}
