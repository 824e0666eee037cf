//! Source 2: OCI layer tarballs applied in order straight into the image model; nothing is
//! extracted to disk.
//!
//! Each layer is read once, front to back: headers become nodes, and a regular file becomes a
//! region of the layer's decompressed stream (hashed on the way past, for duplicate detection)
//! that the writer streams later. The OCI image-spec rules apply: `.wh.NAME` deletes `NAME` from
//! lower layers, `.wh..wh..opq` empties a directory of its lower-layer entries, a hard link
//! names an entry already in the image.
//!
//! Layers are untrusted. Names follow [`super::changeset`]'s rules, the same as the on-disk
//! applier's: resolved lexically with `..` stopping at the root. Symlinks met in the middle of a
//! path are resolved inside the image root (an absolute target or too many `..` stop at the
//! root, like `securejoin`/umoci), so no entry lands outside the root; the final component is
//! never followed. Nothing here touches the host filesystem except reading the blob.

use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use crate::image::blob::open_blob;
use crate::image::changeset::{Change, classify, logical_components};
use crate::image::tree::{
    Content, MAX_NAME_BYTES, MAX_SYMLINK_BYTES, Meta, Node, NodeId, NodeKind, Tree,
};
use crate::image::{ImageError, Result};

/// Entries one layer may hold: bounds the model's memory (a few hundred bytes per node).
pub const MAX_LAYER_ENTRIES: usize = 4_000_000;
/// Symlinks followed while resolving one path, Linux's `MAXSYMLINKS`.
const MAX_SYMLINK_HOPS: u32 = 40;

/// Applies the layer blob at `blob` (gzip, zstd or plain tar) on top of `tree`.
///
/// On error the tree is partly modified and must be discarded.
pub fn apply_layer(tree: &mut Tree, blob: &Path) -> Result<()> {
    let blob_index = tree.blobs.len();
    tree.blobs.push(blob.to_owned());
    let read_err = |source| ImageError::ReadLayer {
        path: blob.to_owned(),
        source,
    };
    let mut archive = tar::Archive::new(open_blob(blob)?);
    let mut applier = Applier {
        tree,
        layer: blob,
        blob_index,
        touched: HashSet::new(),
    };
    for (count, entry) in archive.entries().map_err(read_err)?.enumerate() {
        if count >= MAX_LAYER_ENTRIES {
            return Err(ImageError::TooManyEntries {
                layer: blob.to_owned(),
                limit: MAX_LAYER_ENTRIES,
            });
        }
        applier.apply(&mut entry.map_err(read_err)?)?;
    }
    Ok(())
}

struct Applier<'a> {
    tree: &'a mut Tree,
    layer: &'a Path,
    blob_index: usize,
    /// (directory, name) pairs this layer created or replaced: whiteouts and opaque markers only
    /// hide entries of lower layers.
    touched: HashSet<(NodeId, Vec<u8>)>,
}

impl Applier<'_> {
    fn unsafe_path(&self, raw: &[u8]) -> ImageError {
        ImageError::UnsafePath {
            layer: self.layer.to_owned(),
            path: String::from_utf8_lossy(raw).into_owned(),
        }
    }

    fn read_err(&self, source: std::io::Error) -> ImageError {
        ImageError::ReadLayer {
            path: self.layer.to_owned(),
            source,
        }
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader) {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let (comps, _) = logical_components(&raw);
        let lossy = || String::from_utf8_lossy(&raw).into_owned();
        let meta = self.meta(entry)?;
        let (parent_comps, name) = match classify(&comps) {
            // "./" itself: only a directory entry makes sense; it sets the root's metadata.
            Change::Root if kind.is_dir() => {
                self.tree.nodes[Tree::ROOT].meta = meta;
                return Ok(());
            }
            Change::Root => return Err(self.unsafe_path(&raw)),
            Change::AufsMeta => return Ok(()),
            Change::Opaque { parent } => {
                if let Some(parent) = self.resolve_dir(parent, false, &raw)? {
                    let touched = &self.touched;
                    if let Some(entries) = self.tree.entries_mut(parent) {
                        entries.retain(|n, _| touched.contains(&(parent, n.clone())));
                    }
                }
                return Ok(());
            }
            Change::Whiteout { parent, hidden } => {
                if let Some(parent) = self.resolve_dir(parent, false, &raw)?
                    && !self.touched.contains(&(parent, hidden.to_vec()))
                    && let Some(entries) = self.tree.entries_mut(parent)
                {
                    entries.remove(hidden);
                }
                return Ok(());
            }
            Change::Entry { parent, leaf } => (parent, leaf.to_vec()),
        };
        if name.len() > MAX_NAME_BYTES {
            return Err(ImageError::BadName(lossy()));
        }

        let parent = self.resolve_dir(parent_comps, true, &raw)?.ok_or_else(|| {
            ImageError::ParentNotADirectory {
                layer: self.layer.to_owned(),
                path: lossy(),
            }
        })?;
        let existing = self
            .tree
            .entries(parent)
            .and_then(|e| e.get(&name))
            .copied();
        let node = match kind {
            tar::EntryType::Directory => {
                if let Some(id) = existing.filter(|&id| self.tree.nodes[id].is_dir()) {
                    // An existing directory keeps its entries and takes the new metadata.
                    self.tree.nodes[id].meta = meta;
                    self.touched.insert((parent, name));
                    return Ok(());
                }
                Node {
                    meta,
                    kind: NodeKind::Dir(Default::default()),
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let offset = entry.raw_file_position();
                let size = entry.size();
                let hash = self.hash_data(entry, size)?;
                Node {
                    meta,
                    kind: NodeKind::File {
                        size,
                        content: Content::Layer {
                            blob: self.blob_index,
                            offset,
                        },
                        hash: Some(hash),
                    },
                }
            }
            tar::EntryType::Link => {
                let target_raw = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target = self.lookup(&target_raw)?;
                let Some(target) = target.filter(|&t| !self.tree.nodes[t].is_dir()) else {
                    return Err(ImageError::BadHardLink {
                        layer: self.layer.to_owned(),
                        path: lossy(),
                        target: String::from_utf8_lossy(&target_raw).into_owned(),
                    });
                };
                self.tree.link(parent, name.clone(), target)?;
                self.touched.insert((parent, name));
                return Ok(());
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if target.len() > MAX_SYMLINK_BYTES {
                    return Err(ImageError::SymlinkTooLong(lossy()));
                }
                // Linux gives every symlink mode 0777 whatever the header says, and so does any
                // extraction of the layer.
                Node {
                    meta: Meta {
                        mode: 0o777,
                        ..meta
                    },
                    kind: NodeKind::Symlink(target),
                }
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                let header = entry.header();
                let major = header
                    .device_major()
                    .map_err(|e| self.read_err(e))?
                    .unwrap_or(0);
                let minor = header
                    .device_minor()
                    .map_err(|e| self.read_err(e))?
                    .unwrap_or(0);
                let kind = if kind == tar::EntryType::Char {
                    NodeKind::CharDevice { major, minor }
                } else {
                    NodeKind::BlockDevice { major, minor }
                };
                Node { meta, kind }
            }
            tar::EntryType::Fifo => Node {
                meta,
                kind: NodeKind::Fifo,
            },
            other => {
                return Err(ImageError::UnsupportedEntry {
                    layer: self.layer.to_owned(),
                    path: lossy(),
                    kind: other.as_byte() as char,
                });
            }
        };
        let id = self.tree.add(node);
        self.tree.link(parent, name.clone(), id)?;
        self.touched.insert((parent, name));
        Ok(())
    }

    /// Reads a file's data once, hashing it; the writer reads it again from the blob.
    fn hash_data<R: Read>(&self, entry: &mut tar::Entry<'_, R>, size: u64) -> Result<u128> {
        let mut h = Xxh3::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = 0u64;
        loop {
            let n = entry.read(&mut buf).map_err(|e| self.read_err(e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            seen += n as u64;
        }
        if seen != size {
            return Err(self.read_err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "layer ends inside a file",
            )));
        }
        Ok(h.digest128())
    }

    /// Owner, mode, time and xattrs of an entry: the ustar header, overridden by PAX records.
    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<Meta> {
        let header = entry.header();
        let mode = header.mode().map_err(|e| self.read_err(e))?;
        let mut uid = header.uid().map_err(|e| self.read_err(e))?;
        let mut gid = header.gid().map_err(|e| self.read_err(e))?;
        let mut mtime = header.mtime().map_err(|e| self.read_err(e))? as i64;
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(|e| self.read_err(e))? {
            for ext in pax {
                let ext = ext.map_err(|e| self.read_err(e))?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                let number = || {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.split('.').next()?.parse::<i64>().ok())
                };
                match key {
                    b"uid" => uid = number().unwrap_or(uid as i64) as u64,
                    b"gid" => gid = number().unwrap_or(gid as i64) as u64,
                    b"mtime" => mtime = number().unwrap_or(mtime),
                    _ => {
                        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                            xattrs.push((name.to_vec(), value.to_vec()));
                        }
                    }
                }
            }
        }
        xattrs.sort();
        let id = |v: u64| {
            u32::try_from(v).map_err(|_| {
                self.read_err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "id over 32 bits",
                ))
            })
        };
        Ok(Meta {
            mode: (mode & 0o7777) as u16,
            uid: id(uid)?,
            gid: id(gid)?,
            mtime: mtime.clamp(0, u32::MAX as i64) as u32,
            xattrs,
        })
    }

    /// The node a hard link target names: intermediate symlinks resolved inside the root, the
    /// last component not followed.
    fn lookup(&mut self, raw: &[u8]) -> Result<Option<NodeId>> {
        let (comps, _) = logical_components(raw);
        let Some((name, parent)) = comps.split_last() else {
            return Ok(None);
        };
        let Some(dir) = self.resolve_dir(parent, false, raw)? else {
            return Ok(None);
        };
        Ok(self.tree.entries(dir).and_then(|e| e.get(*name)).copied())
    }

    /// Walks `comps` from the root to a directory, following symlinks inside the root. With
    /// `create`, missing directories are made (as tar does for a file whose parents are not in
    /// the archive); without, a missing one gives `None`. A component that is neither a
    /// directory nor a symlink gives `None`.
    fn resolve_dir(&mut self, comps: &[&[u8]], create: bool, raw: &[u8]) -> Result<Option<NodeId>> {
        let mut queue: VecDeque<Vec<u8>> = comps.iter().map(|c| c.to_vec()).collect();
        let mut path: Vec<NodeId> = vec![Tree::ROOT];
        let mut hops = 0;
        while let Some(c) = queue.pop_front() {
            let cur = *path.last().unwrap_or(&Tree::ROOT);
            match &c[..] {
                b"" | b"." => continue,
                b".." => {
                    // Clamped at the root: a symlink cannot climb out.
                    if path.len() > 1 {
                        path.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let child = self.tree.entries(cur).and_then(|e| e.get(&c)).copied();
            match child {
                None if create => {
                    let id = self.tree.add(Node {
                        meta: Meta::implicit_dir(),
                        kind: NodeKind::Dir(Default::default()),
                    });
                    self.tree.link(cur, c.clone(), id)?;
                    self.touched.insert((cur, c));
                    path.push(id);
                }
                None => return Ok(None),
                Some(id) => match &self.tree.nodes[id].kind {
                    NodeKind::Dir(_) => path.push(id),
                    NodeKind::Symlink(target) => {
                        hops += 1;
                        if hops > MAX_SYMLINK_HOPS {
                            return Err(ImageError::SymlinkLoop {
                                layer: self.layer.to_owned(),
                                path: String::from_utf8_lossy(raw).into_owned(),
                            });
                        }
                        if target.starts_with(b"/") {
                            path.truncate(1);
                        }
                        for part in target.split(|&b| b == b'/').rev() {
                            queue.push_front(part.to_vec());
                        }
                    }
                    _ => return Ok(None),
                },
            }
        }
        Ok(path.last().copied())
    }
}
