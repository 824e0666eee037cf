//! Layer application: OCI/Docker layer tarballs applied, in order, onto a rootfs directory.
//!
//! This sits between the bootstrap agent (which hands over verified blobs from the layer
//! cache) and everything that later reads the rootfs (`%files`, `%post` in the sandbox, the
//! image writer). It follows the OCI image-spec changeset rules (`layer.md`):
//!
//! - `.wh.<name>` removes `<name>` as lower layers left it; `.wh..wh..opq` empties its directory
//!   of everything lower layers put there, wherever the marker sits in the archive (what the
//!   current layer wrote is kept, as umoci's `upperPaths` does); whiteout files never appear;
//! - an entry replaces what is at its path, except that a directory over a directory keeps the
//!   contents and takes the new owner and mode;
//! - hard links must name an entry already inside the rootfs;
//! - device nodes are recorded, never created; FIFOs are created.
//!
//! Safety: every path is walked inside the rootfs without following a symlink out of it
//! ([`rootfs`]); `..` in entry and hard-link names is resolved lexically and stops at the
//! rootfs, as umoci does; an entry that would replace the rootfs itself (the `.` symlink of
//! CVE-2021-29136) is refused. The total of extracted bytes and of entries across all layers of
//! an image is bounded.
//!
//! Ownership: running as root, or as root of a user namespace with the full id map (the
//! sandbox's mode, where extracted files keep their inner ids), use [`OwnershipMode::Apply`].
//! A plain unprivileged process cannot `chown`, so [`OwnershipMode::Record`] leaves files owned by
//! the worker, keeps them readable and writable by it, and records the layer's owners and modes
//! in [`TreeRecords`] for the image writer. The applier holds no state outside the rootfs and its
//! records, so the sandbox can run it in a helper process inside the mapped namespace.

mod compression;
mod records;
mod rootfs;

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, futimens, mkdirat, mknodat,
    utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};
use tar::EntryType;

use crate::image::changeset::{self, Change};
use compression::LimitedReader;
pub use compression::{Compression, decompress};
pub use records::{DeviceKind, DeviceNode, EntryMeta, EntryRecord, TreeRecords, Xattr};
use rootfs::{Missing, ResolveError, ResolvedDir, RootDir, is_type, stat_at};

/// Allowance per entry for tar headers and padding when bounding the decompressed stream: a
/// header block, a PAX record and padding, with room for long names (bytes).
const STREAM_OVERHEAD_PER_ENTRY: u64 = 4096;
/// Copy buffer for file contents (bytes).
const COPY_BUFFER: usize = 128 * 1024;

/// Who ends up owning extracted files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnershipMode {
    /// `chown` every entry to the layer's ids and set its exact mode. Needs root, or root of a
    /// user namespace whose map covers every id the layers use.
    Apply,
    /// Leave entries owned by the calling user, with owner read/write (and search on
    /// directories) added so the tree stays workable, and record the layer's owner and mode of
    /// every entry in [`TreeRecords`].
    Record,
}

/// Bounds and modes for one image's layers.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    /// Whether owners are applied on disk or recorded.
    pub ownership: OwnershipMode,
    /// Upper bound on file content plus extended attributes across all layers (bytes).
    /// Default 32 GiB.
    pub max_bytes: u64,
    /// Upper bound on tar entries across all layers, whiteouts included. Default 4 million.
    pub max_entries: u64,
}

impl ApplyOptions {
    /// Default bounds with the given ownership mode.
    pub fn new(ownership: OwnershipMode) -> Self {
        Self {
            ownership,
            max_bytes: 32 << 30,
            max_entries: 4_000_000,
        }
    }
}

/// Ways applying a layer fails. `entry` is the name as the archive spells it.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The rootfs directory could not be opened.
    #[error("failed to open rootfs {path}")]
    OpenRoot {
        /// The rootfs path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The layer stream could not be read or is not a valid tar archive.
    #[error("failed to read layer archive")]
    ReadArchive(#[source] io::Error),
    /// A header field could not be parsed.
    #[error("invalid tar header for layer entry {entry}")]
    Header {
        /// Entry name.
        entry: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A non-directory entry names the rootfs itself.
    #[error("layer entry {entry} would replace the rootfs itself")]
    ReplaceRoot {
        /// Entry name.
        entry: String,
    },
    /// A whiteout names nothing (`.wh.` or `.wh..`).
    #[error("layer entry {entry} is not a valid whiteout")]
    BadWhiteout {
        /// Entry name.
        entry: String,
    },
    /// A parent of the entry is not a directory.
    #[error("parent {parent} of layer entry {entry} is not a directory")]
    NotADirectory {
        /// Entry name.
        entry: String,
        /// Physical path of the offending component, relative to the rootfs.
        parent: PathBuf,
    },
    /// Resolving the entry's parent followed too many symlinks.
    #[error("too many levels of symbolic links under layer entry {entry}")]
    SymlinkLoop {
        /// Entry name.
        entry: String,
    },
    /// A hard link names a target that does not exist.
    #[error("hard link {entry} points to {target}, which does not exist")]
    LinkTargetMissing {
        /// Entry name.
        entry: String,
        /// Link target as the archive spells it.
        target: String,
    },
    /// A hard link names a directory.
    #[error("hard link {entry} points to directory {target}")]
    LinkToDirectory {
        /// Entry name.
        entry: String,
        /// Link target as the archive spells it.
        target: String,
    },
    /// A link entry has no target.
    #[error("link entry {entry} has no target")]
    NoLinkTarget {
        /// Entry name.
        entry: String,
    },
    /// An entry type this applier does not handle.
    #[error("layer entry {entry} has unsupported type {kind:?}")]
    Unsupported {
        /// Entry name.
        entry: String,
        /// The tar type byte.
        kind: u8,
    },
    /// An owner id does not fit the kernel's 32-bit ids.
    #[error("layer entry {entry} has owner {uid}:{gid}, beyond 32-bit ids")]
    IdRange {
        /// Entry name.
        entry: String,
        /// Owner.
        uid: u64,
        /// Group.
        gid: u64,
    },
    /// Setting an owner failed (in apply mode), typically because the process is neither root
    /// nor in a user namespace mapping that id.
    #[error("failed to set owner {uid}:{gid} on {entry}")]
    Chown {
        /// Entry name.
        entry: String,
        /// Owner.
        uid: u64,
        /// Group.
        gid: u64,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// A file-system operation failed.
    #[error("failed to {op} {entry}")]
    Fs {
        /// What was attempted.
        op: &'static str,
        /// Entry name.
        entry: String,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// Writing file contents failed.
    #[error("failed to write {entry}")]
    Write {
        /// Entry name.
        entry: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The layers hold more content than [`ApplyOptions::max_bytes`].
    #[error("layers exceed the size bound of {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: u64,
    },
    /// The layers hold more entries than [`ApplyOptions::max_entries`].
    #[error("layers exceed the bound of {limit} entries")]
    TooManyEntries {
        /// The bound.
        limit: u64,
    },
}

/// Shorthand for results of this module.
pub type Result<T> = std::result::Result<T, LayerError>;

/// What one layer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerStats {
    /// How the blob was compressed (`None` for [`LayerApplier::apply_tar`]).
    pub compression: Compression,
    /// Tar entries read, whiteouts included.
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Whiteout and opaque markers applied.
    pub whiteouts: u64,
    /// Entries whose names climbed above the rootfs with `..` and were kept inside it.
    pub contained: u64,
}

/// Applies an image's layers, in order, onto one rootfs directory.
#[derive(Debug)]
pub struct LayerApplier {
    // Constant for the applier's life.
    root: RootDir,
    options: ApplyOptions,
    // Accumulated across layers.
    records: TreeRecords,
    total_bytes: u64,
    total_entries: u64,
}

/// State of the layer being applied.
#[derive(Debug)]
struct LayerPass {
    /// Physical paths this layer wrote, with all their ancestors: what an opaque marker keeps.
    upper: HashSet<PathBuf>,
    /// Directory mtimes, set once the layer is done, since adding children changes them.
    dir_times: Vec<(PathBuf, u64)>,
    stats: LayerStats,
}

impl LayerPass {
    fn mark_upper(&mut self, path: &Path) {
        for ancestor in path.ancestors() {
            if !self.upper.insert(ancestor.to_path_buf()) {
                break;
            }
        }
    }
}

/// Header fields every entry kind needs.
struct EntryInfo {
    name: String,
    uid: u64,
    gid: u64,
    mode: u32,
    mtime: u64,
    xattrs: Vec<Xattr>,
}

impl LayerApplier {
    /// Opens the rootfs directory (it must exist).
    ///
    /// # Errors
    /// [`LayerError::OpenRoot`] if it cannot be opened as a directory.
    pub fn open(rootfs: &Path, options: ApplyOptions) -> Result<Self> {
        let root = RootDir::open(rootfs).map_err(|source| LayerError::OpenRoot {
            path: rootfs.to_path_buf(),
            source,
        })?;
        Ok(Self {
            root,
            options,
            records: TreeRecords::default(),
            total_bytes: 0,
            total_entries: 0,
        })
    }

    /// Applies a layer blob as stored in a registry: gzip, zstd or plain tar.
    ///
    /// # Errors
    /// Any [`LayerError`]; the rootfs is then partly written and should be discarded.
    pub fn apply_blob(&mut self, blob: impl Read + Send) -> Result<LayerStats> {
        compression::with_decompressed(
            blob,
            |compression, tar| {
                let mut stats = self.apply_tar(tar)?;
                stats.compression = compression;
                Ok(stats)
            },
            LayerError::ReadArchive,
        )
    }

    /// Applies an uncompressed tar stream.
    ///
    /// # Errors
    /// Any [`LayerError`]; the rootfs is then partly written and should be discarded.
    pub fn apply_tar(&mut self, tar: impl Read) -> Result<LayerStats> {
        let stream_limit = (self.options.max_bytes.saturating_sub(self.total_bytes))
            .saturating_add(
                (self.options.max_entries.saturating_sub(self.total_entries))
                    .saturating_mul(STREAM_OVERHEAD_PER_ENTRY),
            );
        let mut archive = tar::Archive::new(LimitedReader::new(tar, stream_limit));
        let mut pass = LayerPass {
            upper: HashSet::new(),
            dir_times: Vec::new(),
            stats: LayerStats {
                compression: Compression::None,
                entries: 0,
                bytes: 0,
                whiteouts: 0,
                contained: 0,
            },
        };
        let entries = archive.entries().map_err(|e| self.stream_error(e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.stream_error(e))?;
            self.apply_entry(&mut entry, &mut pass)?;
        }
        self.set_dir_times(&pass.dir_times);
        Ok(pass.stats)
    }

    /// What could not be put on disk, across all layers applied so far.
    pub fn records(&self) -> &TreeRecords {
        &self.records
    }

    /// Ends application and hands over the records.
    pub fn into_records(self) -> TreeRecords {
        self.records
    }

    /// Bytes of content and entries applied so far, across layers.
    pub fn totals(&self) -> (u64, u64) {
        (self.total_bytes, self.total_entries)
    }

    fn stream_error(&self, e: io::Error) -> LayerError {
        if e.kind() == io::ErrorKind::FileTooLarge {
            LayerError::TooLarge {
                limit: self.options.max_bytes,
            }
        } else {
            LayerError::ReadArchive(e)
        }
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        pass: &mut LayerPass,
    ) -> Result<()> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let raw_path = entry
            .path()
            .map_err(|source| LayerError::Header {
                entry: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                source,
            })?
            .into_owned();
        let name = raw_path.display().to_string();
        self.count_entry()?;
        pass.stats.entries += 1;
        let (comps, climbed) = changeset::logical_components(raw_path.as_os_str().as_bytes());
        if climbed {
            pass.stats.contained += 1;
        }
        let info = read_info(entry, name)?;
        self.count_bytes(info.xattrs.iter().map(|x| x.value.len() as u64).sum())?;
        let owned = |c: &[&[u8]]| -> Vec<OsString> {
            c.iter().map(|c| OsStr::from_bytes(c).to_owned()).collect()
        };
        let (parent, leaf) = match changeset::classify(&comps) {
            Change::Root => return self.apply_root(kind, &info, pass),
            Change::AufsMeta => return Ok(()),
            Change::Opaque { parent } => {
                pass.stats.whiteouts += 1;
                return self.opaque(&owned(parent), &info.name, pass);
            }
            Change::Whiteout { parent, hidden } => {
                pass.stats.whiteouts += 1;
                return self.whiteout(&owned(parent), OsStr::from_bytes(hidden), &info.name, pass);
            }
            Change::Entry { parent, leaf } => (owned(parent), OsStr::from_bytes(leaf).to_owned()),
        };
        let (parent, leaf) = (parent.as_slice(), &leaf);
        let dir = self.resolve_parent(parent, &info.name, pass)?;
        let phys = dir.physical.join(leaf);
        match kind {
            EntryType::Directory => self.make_dir(&dir, leaf, &phys, &info, pass)?,
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.make_file(&dir, leaf, &phys, &info, entry, pass)?;
            }
            EntryType::Symlink => {
                let target = link_target(entry, &info.name)?;
                self.create_replacing(&dir, leaf, &phys, &info.name, "create symlink", || {
                    symlinkat(target.as_os_str(), dir.fd.as_fd(), leaf.as_os_str())
                })?;
                self.finish_entry(&dir, leaf, &phys, &info, EntryShape::Symlink)?;
            }
            EntryType::Link => {
                let target = link_target(entry, &info.name)?;
                self.make_hard_link(&dir, leaf, &phys, &target, &info)?;
            }
            EntryType::Char | EntryType::Block => {
                self.replace_existing(&dir, leaf, &phys, false, &info.name)?;
                let header = entry.header();
                let number = |v: io::Result<Option<u32>>| {
                    v.map(Option::unwrap_or_default)
                        .map_err(|source| LayerError::Header {
                            entry: info.name.clone(),
                            source,
                        })
                };
                let device = DeviceNode {
                    kind: if kind == EntryType::Char {
                        DeviceKind::Char
                    } else {
                        DeviceKind::Block
                    },
                    major: number(header.device_major())?,
                    minor: number(header.device_minor())?,
                };
                self.records.set(
                    phys.clone(),
                    EntryRecord {
                        meta: Some(info.meta()),
                        device: Some(device),
                        xattrs: info.xattrs.clone(),
                    },
                );
            }
            EntryType::Fifo => {
                self.create_replacing(&dir, leaf, &phys, &info.name, "create fifo", || {
                    let mode = Mode::from_bits_truncate(0o600);
                    mknodat(dir.fd.as_fd(), leaf.as_os_str(), SFlag::S_IFIFO, mode, 0)
                })?;
                self.finish_entry(&dir, leaf, &phys, &info, EntryShape::Other)?;
            }
            other => {
                return Err(LayerError::Unsupported {
                    entry: info.name,
                    kind: other.as_byte(),
                });
            }
        }
        pass.mark_upper(&phys);
        Ok(())
    }

    fn count_entry(&mut self) -> Result<()> {
        self.total_entries += 1;
        if self.total_entries > self.options.max_entries {
            return Err(LayerError::TooManyEntries {
                limit: self.options.max_entries,
            });
        }
        Ok(())
    }

    fn count_bytes(&mut self, n: u64) -> Result<()> {
        self.total_bytes = self.total_bytes.saturating_add(n);
        if self.total_bytes > self.options.max_bytes {
            return Err(LayerError::TooLarge {
                limit: self.options.max_bytes,
            });
        }
        Ok(())
    }

    /// An entry for the root itself (`./`): only a directory may take its metadata.
    fn apply_root(
        &mut self,
        kind: EntryType,
        info: &EntryInfo,
        pass: &mut LayerPass,
    ) -> Result<()> {
        if kind != EntryType::Directory {
            return Err(LayerError::ReplaceRoot {
                entry: info.name.clone(),
            });
        }
        let root = self.root.fd();
        match self.options.ownership {
            OwnershipMode::Apply => {
                let (uid, gid) = ids(info)?;
                fchown(root, Some(uid), Some(gid)).map_err(|source| LayerError::Chown {
                    entry: info.name.clone(),
                    uid: info.uid,
                    gid: info.gid,
                    source,
                })?;
                fchmod(root, Mode::from_bits_truncate(info.mode))
                    .map_err(|e| fs_error("set mode of", &info.name, e))?;
            }
            OwnershipMode::Record => {
                fchmod(root, Mode::from_bits_truncate(info.mode | 0o700))
                    .map_err(|e| fs_error("set mode of", &info.name, e))?;
            }
        }
        self.records.set(PathBuf::new(), self.record_for(info));
        pass.dir_times.push((PathBuf::new(), info.mtime));
        pass.mark_upper(Path::new(""));
        Ok(())
    }

    fn resolve_parent(
        &mut self,
        parent: &[OsString],
        entry: &str,
        pass: &mut LayerPass,
    ) -> Result<Arc<ResolvedDir>> {
        let mut created = Vec::new();
        let dir = self
            .root
            .resolve(parent, Missing::Create, &mut created)
            .map_err(|e| resolve_error(e, entry))?;
        for path in created {
            // Parents the archive never listed: `tar` makes them 0755 and root-owned.
            self.count_entry()?;
            if self.options.ownership == OwnershipMode::Record {
                self.records.set(
                    path.clone(),
                    EntryRecord {
                        meta: Some(EntryMeta {
                            uid: 0,
                            gid: 0,
                            mode: 0o755,
                        }),
                        ..EntryRecord::default()
                    },
                );
            }
            pass.mark_upper(&path);
        }
        dir.ok_or_else(|| LayerError::NotADirectory {
            entry: entry.to_owned(),
            parent: parent.iter().collect(),
        })
    }

    /// Clears the way for a new entry at `leaf`. Returns whether an existing directory was
    /// kept (when `want_dir` and a directory is there).
    fn replace_existing(
        &mut self,
        dir: &ResolvedDir,
        leaf: &OsStr,
        phys: &Path,
        want_dir: bool,
        entry: &str,
    ) -> Result<bool> {
        let existing = stat_at(dir.fd.as_fd(), leaf).map_err(|e| fs_error("inspect", entry, e))?;
        if let Some(st) = existing {
            if is_type(&st, SFlag::S_IFDIR) {
                if want_dir {
                    return Ok(true);
                }
                rootfs::remove_tree(dir.fd.as_fd(), leaf)
                    .map_err(|e| fs_error("remove", entry, e))?;
            } else {
                unlinkat(dir.fd.as_fd(), leaf, UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| fs_error("remove", entry, e))?;
            }
            self.root.invalidate();
        }
        self.records.remove_tree(phys);
        Ok(false)
    }

    /// Runs `create` for `leaf`; if the name is taken, clears it and runs it once more. Trying
    /// first saves an `fstatat` per entry in the common case, a path no lower layer used.
    /// Records of the path are replaced by the caller.
    fn create_replacing<T>(
        &mut self,
        dir: &ResolvedDir,
        leaf: &OsStr,
        phys: &Path,
        entry: &str,
        op: &'static str,
        mut create: impl FnMut() -> nix::Result<T>,
    ) -> Result<T> {
        match create() {
            Err(Errno::EEXIST) => {
                self.replace_existing(dir, leaf, phys, false, entry)?;
                create()
            }
            other => other,
        }
        .map_err(|e| fs_error(op, entry, e))
    }

    fn make_dir(
        &mut self,
        dir: &ResolvedDir,
        leaf: &OsStr,
        phys: &Path,
        info: &EntryInfo,
        pass: &mut LayerPass,
    ) -> Result<()> {
        let mkdir = || mkdirat(dir.fd.as_fd(), leaf, Mode::from_bits_truncate(0o700));
        match mkdir() {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                if !self.replace_existing(dir, leaf, phys, true, &info.name)? {
                    mkdir().map_err(|e| fs_error("create directory", &info.name, e))?;
                }
            }
            Err(e) => return Err(fs_error("create directory", &info.name, e)),
        }
        self.finish_entry(dir, leaf, phys, info, EntryShape::Directory)?;
        pass.dir_times.push((phys.to_path_buf(), info.mtime));
        Ok(())
    }

    fn make_file<R: Read>(
        &mut self,
        dir: &ResolvedDir,
        leaf: &OsStr,
        phys: &Path,
        info: &EntryInfo,
        entry: &mut tar::Entry<'_, R>,
        pass: &mut LayerPass,
    ) -> Result<()> {
        // Check the declared size first so that an oversized file writes nothing.
        let declared = entry.size();
        if self.total_bytes.saturating_add(declared) > self.options.max_bytes {
            return Err(LayerError::TooLarge {
                limit: self.options.max_bytes,
            });
        }
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = self.create_replacing(dir, leaf, phys, &info.name, "create file", || {
            openat(dir.fd.as_fd(), leaf, flags, Mode::from_bits_truncate(0o600))
        })?;
        let mut file = File::from(fd);
        // Sparse entries expand past their declared size, so the copy itself is bounded too.
        let room = self.options.max_bytes.saturating_sub(self.total_bytes);
        let written = copy_content(entry, &mut file, room).map_err(|source| {
            if source.kind() == io::ErrorKind::FileTooLarge {
                LayerError::TooLarge {
                    limit: self.options.max_bytes,
                }
            } else {
                LayerError::Write {
                    entry: info.name.clone(),
                    source,
                }
            }
        })?;
        self.count_bytes(written)?;
        pass.stats.bytes += written;
        match self.options.ownership {
            OwnershipMode::Apply => {
                let (uid, gid) = ids(info)?;
                fchown(&file, Some(uid), Some(gid)).map_err(|source| LayerError::Chown {
                    entry: info.name.clone(),
                    uid: info.uid,
                    gid: info.gid,
                    source,
                })?;
                // After chown, which clears setuid and setgid.
                fchmod(&file, Mode::from_bits_truncate(info.mode))
            }
            OwnershipMode::Record => fchmod(&file, Mode::from_bits_truncate(info.mode | 0o600)),
        }
        .map_err(|e| fs_error("set mode of", &info.name, e))?;
        let t = timespec(info.mtime);
        futimens(&file, &t, &t).map_err(|e| fs_error("set times of", &info.name, e))?;
        self.records.set(phys.to_path_buf(), self.record_for(info));
        Ok(())
    }

    fn make_hard_link(
        &mut self,
        dir: &ResolvedDir,
        leaf: &OsStr,
        phys: &Path,
        target: &Path,
        info: &EntryInfo,
    ) -> Result<()> {
        let target_name = target.display().to_string();
        let missing = || LayerError::LinkTargetMissing {
            entry: info.name.clone(),
            target: target_name.clone(),
        };
        let (comps, _) = logical_components(target);
        let Some((target_leaf, target_parent)) = comps.split_last() else {
            return Err(LayerError::LinkToDirectory {
                entry: info.name.clone(),
                target: target_name,
            });
        };
        let target_dir = self
            .root
            .resolve(target_parent, Missing::Stop, &mut Vec::new())
            .map_err(|e| resolve_error(e, &info.name))?
            .ok_or_else(missing)?;
        let target_phys = target_dir.physical.join(target_leaf);
        if target_phys == phys {
            return Ok(());
        }
        let target_record = self.records.get(&target_phys).cloned();
        match stat_at(target_dir.fd.as_fd(), target_leaf)
            .map_err(|e| fs_error("inspect", &info.name, e))?
        {
            None => {
                // A link to a recorded device node is another recorded device node.
                let record = target_record
                    .filter(|r| r.device.is_some())
                    .ok_or_else(missing)?;
                self.replace_existing(dir, leaf, phys, false, &info.name)?;
                self.records.set(phys.to_path_buf(), record);
            }
            Some(st) if is_type(&st, SFlag::S_IFDIR) => {
                return Err(LayerError::LinkToDirectory {
                    entry: info.name.clone(),
                    target: target_name,
                });
            }
            Some(_) => {
                // No AT_SYMLINK_FOLLOW: a hard link to a symlink links the symlink itself.
                self.create_replacing(dir, leaf, phys, &info.name, "create hard link", || {
                    linkat(
                        target_dir.fd.as_fd(),
                        target_leaf.as_os_str(),
                        dir.fd.as_fd(),
                        leaf,
                        AtFlags::empty(),
                    )
                })?;
                // Both names share one inode, so they share what was recorded about it.
                self.records
                    .set(phys.to_path_buf(), target_record.unwrap_or_default());
            }
        }
        Ok(())
    }

    /// Sets owner, mode and times of a directory, symlink or FIFO just created at `leaf`.
    fn finish_entry(
        &mut self,
        dir: &ResolvedDir,
        leaf: &OsStr,
        phys: &Path,
        info: &EntryInfo,
        shape: EntryShape,
    ) -> Result<()> {
        let fd = dir.fd.as_fd();
        let owner_bits = match shape {
            EntryShape::Directory => 0o700,
            EntryShape::Symlink | EntryShape::Other => 0o600,
        };
        if self.options.ownership == OwnershipMode::Apply {
            let (uid, gid) = ids(info)?;
            fchownat(fd, leaf, Some(uid), Some(gid), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(
                |source| LayerError::Chown {
                    entry: info.name.clone(),
                    uid: info.uid,
                    gid: info.gid,
                    source,
                },
            )?;
        }
        if shape != EntryShape::Symlink {
            let mode = match self.options.ownership {
                OwnershipMode::Apply => info.mode,
                OwnershipMode::Record => info.mode | owner_bits,
            };
            // The leaf was created by this process a moment ago and is not a symlink, so
            // following is safe (and `AT_SYMLINK_NOFOLLOW` is not supported by fchmodat).
            fchmodat(
                fd,
                leaf,
                Mode::from_bits_truncate(mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| fs_error("set mode of", &info.name, e))?;
        }
        if shape != EntryShape::Directory {
            let t = timespec(info.mtime);
            utimensat(fd, leaf, &t, &t, UtimensatFlags::NoFollowSymlink)
                .map_err(|e| fs_error("set times of", &info.name, e))?;
        }
        self.records.set(phys.to_path_buf(), self.record_for(info));
        Ok(())
    }

    fn record_for(&self, info: &EntryInfo) -> EntryRecord {
        EntryRecord {
            meta: (self.options.ownership == OwnershipMode::Record).then(|| info.meta()),
            device: None,
            xattrs: info.xattrs.clone(),
        }
    }

    fn whiteout(
        &mut self,
        parent: &[OsString],
        hidden: &OsStr,
        entry: &str,
        pass: &mut LayerPass,
    ) -> Result<()> {
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(LayerError::BadWhiteout {
                entry: entry.to_owned(),
            });
        }
        let Some(dir) = self.resolve_existing(parent, entry)? else {
            return Ok(());
        };
        let phys = dir.physical.join(hidden);
        // Whiteouts hide lower layers only (layer.md); this layer's own entries stay.
        if pass.upper.contains(&phys) {
            return Ok(());
        }
        rootfs::remove_tree(dir.fd.as_fd(), hidden).map_err(|e| fs_error("remove", entry, e))?;
        self.root.invalidate();
        self.records.remove_tree(&phys);
        Ok(())
    }

    fn opaque(&mut self, parent: &[OsString], entry: &str, pass: &mut LayerPass) -> Result<()> {
        let Some(dir) = self.resolve_existing(parent, entry)? else {
            return Ok(());
        };
        let upper = &pass.upper;
        rootfs::prune(dir.fd.as_fd(), &dir.physical, &|p| upper.contains(p))
            .map_err(|e| fs_error("empty opaque directory", entry, e))?;
        self.root.invalidate();
        self.records
            .retain_below(&dir.physical, false, &|p| upper.contains(p));
        pass.mark_upper(&dir.physical);
        Ok(())
    }

    /// Resolves a whiteout's directory; a missing one, or a non-directory, hides nothing.
    fn resolve_existing(
        &mut self,
        parent: &[OsString],
        entry: &str,
    ) -> Result<Option<Arc<ResolvedDir>>> {
        match self.root.resolve(parent, Missing::Stop, &mut Vec::new()) {
            Ok(dir) => Ok(dir),
            Err(ResolveError::NotADirectory(_)) => Ok(None),
            Err(e) => Err(resolve_error(e, entry)),
        }
    }

    /// Directory mtimes, last, since creating children changed them. Best effort: a directory
    /// that a later entry of the same layer replaced is skipped.
    fn set_dir_times(&mut self, dir_times: &[(PathBuf, u64)]) {
        for (phys, mtime) in dir_times {
            let t = timespec(*mtime);
            let (Some(parent), Some(name)) = (phys.parent(), phys.file_name()) else {
                let _ = futimens(self.root.fd(), &t, &t);
                continue;
            };
            if let Ok(parent) =
                rootfs::open_beneath(self.root.fd(), parent, OFlag::O_PATH | OFlag::O_DIRECTORY)
            {
                let _ = utimensat(
                    parent.as_fd(),
                    name,
                    &t,
                    &t,
                    UtimensatFlags::NoFollowSymlink,
                );
            }
        }
    }
}

/// Kinds of entry [`LayerApplier::finish_entry`] handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryShape {
    Directory,
    Symlink,
    Other,
}

impl EntryInfo {
    fn meta(&self) -> EntryMeta {
        EntryMeta {
            uid: self.uid,
            gid: self.gid,
            mode: self.mode,
        }
    }
}

/// [`changeset::logical_components`] of a path, as owned names.
fn logical_components(path: &Path) -> (Vec<OsString>, bool) {
    let (comps, climbed) = changeset::logical_components(path.as_os_str().as_bytes());
    let owned = comps
        .into_iter()
        .map(|c| OsStr::from_bytes(c).to_owned())
        .collect();
    (owned, climbed)
}

fn read_info<R: Read>(entry: &mut tar::Entry<'_, R>, name: String) -> Result<EntryInfo> {
    let header_error = |source| LayerError::Header {
        entry: name.clone(),
        source,
    };
    let header = entry.header();
    let uid = header.uid().map_err(header_error)?;
    let gid = header.gid().map_err(header_error)?;
    let mode = header.mode().map_err(header_error)? & 0o7777;
    let mtime = header.mtime().map_err(header_error)?;
    let mut xattrs = Vec::new();
    if let Some(extensions) = entry.pax_extensions().map_err(header_error)? {
        for ext in extensions {
            let ext = ext.map_err(header_error)?;
            if let Some(attr) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                xattrs.push(Xattr {
                    name: OsStr::from_bytes(attr).to_owned(),
                    value: ext.value_bytes().to_vec(),
                });
            }
        }
    }
    Ok(EntryInfo {
        name,
        uid,
        gid,
        mode,
        mtime,
        xattrs,
    })
}

fn link_target<R: Read>(entry: &tar::Entry<'_, R>, name: &str) -> Result<PathBuf> {
    match entry.link_name() {
        Ok(Some(target)) if !target.as_os_str().is_empty() => Ok(target.into_owned()),
        Ok(_) => Err(LayerError::NoLinkTarget {
            entry: name.to_owned(),
        }),
        Err(source) => Err(LayerError::Header {
            entry: name.to_owned(),
            source,
        }),
    }
}

fn ids(info: &EntryInfo) -> Result<(Uid, Gid)> {
    match (u32::try_from(info.uid), u32::try_from(info.gid)) {
        (Ok(uid), Ok(gid)) => Ok((Uid::from_raw(uid), Gid::from_raw(gid))),
        _ => Err(LayerError::IdRange {
            entry: info.name.clone(),
            uid: info.uid,
            gid: info.gid,
        }),
    }
}

fn timespec(secs: u64) -> TimeSpec {
    TimeSpec::new(i64::try_from(secs).unwrap_or(i64::MAX), 0)
}

fn fs_error(op: &'static str, entry: &str, source: Errno) -> LayerError {
    LayerError::Fs {
        op,
        entry: entry.to_owned(),
        source,
    }
}

fn resolve_error(e: ResolveError, entry: &str) -> LayerError {
    let entry = entry.to_owned();
    match e {
        ResolveError::NotADirectory(parent) => LayerError::NotADirectory { entry, parent },
        ResolveError::Loop => LayerError::SymlinkLoop { entry },
        ResolveError::Sys(op, source) => LayerError::Fs { op, entry, source },
    }
}

/// Copies file content, failing with `FileTooLarge` past `limit` bytes.
fn copy_content(from: &mut impl Read, to: &mut File, limit: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        if total > limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "file content exceeds the size bound",
            ));
        }
        to.write_all(&buf[..n])?;
    }
}

#[cfg(test)]
mod test_tar;
#[cfg(test)]
mod tests;
