//! What layer application could not put on disk, kept for the image writer.
//!
//! Three things from a layer may not land on the rootfs as they are: device nodes (never
//! created: an unprivileged worker cannot `mknod` them, and a build has no use for them on
//! disk), extended attributes (`security.capability` needs privileges the worker lacks), and,
//! in [`OwnershipMode::Record`](super::OwnershipMode::Record), owners and permission bits. The
//! records hold them keyed by the entry's physical path relative to the rootfs, `usr/bin/ping`
//! (the root itself is the empty path), and follow later layers: a whiteout or a replacing
//! entry drops the records below it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Owner and permission bits of an entry as the layer declared them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntryMeta {
    /// Numeric owner, as in the tar header (or its PAX `uid`).
    pub uid: u64,
    /// Numeric group, as in the tar header (or its PAX `gid`).
    pub gid: u64,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
}

/// Character or block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeviceKind {
    /// `S_IFCHR`.
    Char,
    /// `S_IFBLK`.
    Block,
}

/// A device node the layer declared; nothing exists on disk at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceNode {
    /// Character or block.
    pub kind: DeviceKind,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

/// One extended attribute, from a PAX `SCHILY.xattr.<name>` record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Xattr {
    /// Attribute name with its namespace, `security.capability`.
    pub name: OsString,
    /// Raw value.
    pub value: Vec<u8>,
}

/// Everything recorded about one path.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntryRecord {
    /// Owner and mode from the layer: set for every entry in record mode, and for device
    /// nodes in either mode.
    pub meta: Option<EntryMeta>,
    /// Set when the entry is a device node (which is not on disk).
    pub device: Option<DeviceNode>,
    /// Extended attributes from the layer (never written to disk).
    pub xattrs: Vec<Xattr>,
}

impl EntryRecord {
    fn is_empty(&self) -> bool {
        self.meta.is_none() && self.device.is_none() && self.xattrs.is_empty()
    }
}

/// Records for a whole rootfs, across layers. Serialized as a list of `[path bytes, record]`
/// pairs: paths need not be UTF-8.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeRecords {
    entries: BTreeMap<PathBuf, EntryRecord>,
}

impl serde::Serialize for TreeRecords {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use std::os::unix::ffi::OsStrExt;
        s.collect_seq(
            self.entries
                .iter()
                .map(|(path, record)| (path.as_os_str().as_bytes(), record)),
        )
    }
}

impl<'de> serde::Deserialize<'de> for TreeRecords {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use std::os::unix::ffi::OsStringExt;
        let pairs = Vec::<(Vec<u8>, EntryRecord)>::deserialize(d)?;
        Ok(Self {
            entries: pairs
                .into_iter()
                .map(|(path, record)| (PathBuf::from(OsString::from_vec(path)), record))
                .collect(),
        })
    }
}

impl TreeRecords {
    /// The record for a physical path relative to the rootfs, if any.
    pub fn get(&self, path: &Path) -> Option<&EntryRecord> {
        self.entries.get(path)
    }

    /// All records in path order (a directory before its contents).
    pub fn iter(&self) -> impl Iterator<Item = (&Path, &EntryRecord)> {
        self.entries.iter().map(|(p, r)| (p.as_path(), r))
    }

    /// Device nodes, in path order.
    pub fn devices(&self) -> impl Iterator<Item = (&Path, &DeviceNode, Option<&EntryMeta>)> {
        self.entries
            .iter()
            .filter_map(|(p, r)| r.device.as_ref().map(|d| (p.as_path(), d, r.meta.as_ref())))
    }

    /// Number of paths with a record.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Replaces the record of `path`; an empty record removes it.
    pub(super) fn set(&mut self, path: PathBuf, record: EntryRecord) {
        if record.is_empty() {
            self.entries.remove(&path);
        } else {
            self.entries.insert(path, record);
        }
    }

    /// Drops the record of `path` and of everything below it.
    pub(super) fn remove_tree(&mut self, path: &Path) {
        self.retain_below(path, true, &|_| false);
    }

    /// Drops records strictly below `path` (and of `path` itself when `including_self`) for
    /// which `keep` is false.
    pub(super) fn retain_below(
        &mut self,
        path: &Path,
        including_self: bool,
        keep: &dyn Fn(&Path) -> bool,
    ) {
        // `PathBuf` orders component by component, so `path` and its descendants are one
        // contiguous run starting at `path`.
        let doomed: Vec<PathBuf> = self
            .entries
            .range(path.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(path))
            .filter(|(p, _)| (including_self || p.as_path() != path) && !keep(p))
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            self.entries.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(mode: u32) -> EntryRecord {
        EntryRecord {
            meta: Some(EntryMeta {
                uid: 1,
                gid: 2,
                mode,
            }),
            ..EntryRecord::default()
        }
    }

    #[test]
    fn remove_tree_takes_descendants_but_not_siblings_with_a_common_prefix() {
        let mut r = TreeRecords::default();
        for p in ["a", "a/b", "a/b/c", "a/b0", "a/b.d", "ab"] {
            r.set(PathBuf::from(p), meta(0o644));
        }
        r.remove_tree(Path::new("a/b"));
        let left: Vec<_> = r
            .iter()
            .map(|(p, _)| p.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(left, ["a", "a/b.d", "a/b0", "ab"]);
    }

    #[test]
    fn an_empty_record_is_not_stored() {
        let mut r = TreeRecords::default();
        r.set(PathBuf::from("x"), meta(0o600));
        r.set(PathBuf::from("x"), EntryRecord::default());
        assert!(r.is_empty());
    }
}
