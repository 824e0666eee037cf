//! Deterministic tar layers: the fixture builders describe a layer as a list of [`Entry`] values,
//! and [`Layer::write_tar`] writes them sorted by path with mtime 0 and no user or group names, so
//! the same description always gives the same bytes and the same digest.
//!
//! Paths and link targets are written verbatim, byte for byte, with no validation: the hostile
//! fixture needs `../` names and links to host paths that any careful tar writer refuses. Names
//! over 100 bytes use GNU long-name records, as GNU tar and Docker write them.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use tar::{EntryType, Header};

use crate::error::{Result, SupportError, io_error};

/// Longest name or link target a plain tar header holds, in bytes.
const HEADER_NAME_BYTES: usize = 100;

/// Name of the pseudo-entry carrying a GNU long name or long link target.
const GNU_LONG_NAME: &[u8] = b"././@LongLink";

/// Where a regular file's content comes from.
#[derive(Debug, Clone)]
pub enum FileData {
    /// Content held in memory.
    Bytes(Vec<u8>),
    /// Content read from a host file when the layer is written.
    Host(PathBuf),
}

/// What an entry is, with the data its type needs.
#[derive(Debug, Clone)]
pub enum EntryKind {
    /// A directory.
    Directory,
    /// A regular file.
    File(FileData),
    /// A symbolic link to `target` (raw bytes, relative or absolute).
    Symlink(Vec<u8>),
    /// A hard link to the earlier entry `target` (a path in the archive, raw bytes).
    HardLink(Vec<u8>),
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
}

/// One tar entry: a path in the image, its type and its metadata.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path inside the image, relative, without a leading `/` for well-formed entries; raw bytes.
    pub path: Vec<u8>,
    /// Type and type-specific data.
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`0o4755`).
    pub mode: u32,
    /// Owner uid.
    pub uid: u64,
    /// Owner gid.
    pub gid: u64,
}

impl Entry {
    /// An entry of `kind` at `path`, owned by root, with `mode`.
    pub fn new(path: impl AsRef<[u8]>, kind: EntryKind, mode: u32) -> Entry {
        Entry {
            path: path.as_ref().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// A directory with mode 0755.
    pub fn dir(path: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, EntryKind::Directory, 0o755)
    }

    /// A regular file holding `content`, mode 0644.
    pub fn file(path: impl AsRef<[u8]>, content: impl Into<Vec<u8>>) -> Entry {
        Entry::new(
            path,
            EntryKind::File(FileData::Bytes(content.into())),
            0o644,
        )
    }

    /// A symbolic link to `target`, mode 0777.
    pub fn symlink(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, EntryKind::Symlink(target.as_ref().to_vec()), 0o777)
    }

    /// A hard link to the entry `target`, mode 0644 (extractors take the target's mode).
    pub fn hard_link(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, EntryKind::HardLink(target.as_ref().to_vec()), 0o644)
    }

    /// A named pipe, mode 0644.
    pub fn fifo(path: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, EntryKind::Fifo, 0o644)
    }

    /// An OCI whiteout deleting `name` from the directory `dir` of the lower layers.
    pub fn whiteout(dir: &str, name: &str) -> Entry {
        Entry::file(join(dir, &format!(".wh.{name}")), Vec::new())
    }

    /// An OCI opaque marker: the directory `dir` hides everything the lower layers put in it.
    pub fn opaque(dir: &str) -> Entry {
        Entry::file(join(dir, ".wh..wh..opq"), Vec::new())
    }

    /// The same entry with permission bits `mode`.
    pub fn with_mode(mut self, mode: u32) -> Entry {
        self.mode = mode;
        self
    }

    /// The same entry owned by `uid`:`gid`.
    pub fn with_owner(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{}/{name}", dir.trim_end_matches('/'))
    }
}

/// A layer: entries written in byte order of their paths, so parents precede their children and a
/// hard link must be named after its target (the builders choose names accordingly).
#[derive(Debug, Clone, Default)]
pub struct Layer {
    entries: Vec<Entry>,
}

impl Layer {
    /// A layer of `entries`, sorted by path.
    pub fn new(mut entries: Vec<Entry>) -> Layer {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Layer { entries }
    }

    /// The entries in the order they are written.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Writes the uncompressed tar stream, end-of-archive blocks included, and returns `out`.
    ///
    /// Errors: [`SupportError::Io`] when a [`FileData::Host`] file cannot be read,
    /// [`SupportError::Tar`] when `out` fails.
    pub fn write_tar<W: Write>(&self, out: W) -> Result<W> {
        let mut builder = tar::Builder::new(out);
        for entry in &self.entries {
            append(&mut builder, entry)?;
        }
        builder.into_inner().map_err(|source| SupportError::Tar {
            path: "end of archive".to_owned(),
            source,
        })
    }
}

fn append<W: Write>(builder: &mut tar::Builder<W>, entry: &Entry) -> Result<()> {
    let tar_error = |source| SupportError::Tar {
        path: String::from_utf8_lossy(&entry.path).into_owned(),
        source,
    };
    let mut header = Header::new_gnu();
    header.set_mode(entry.mode);
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mtime(0);
    header.set_size(0);
    let mut path = entry.path.clone();
    let mut data: Box<dyn Read> = Box::new(io::empty());
    match &entry.kind {
        EntryKind::Directory => {
            header.set_entry_type(EntryType::Directory);
            // GNU tar marks directories with a trailing slash; extractors accept both forms.
            if !path.ends_with(b"/") {
                path.push(b'/');
            }
        }
        EntryKind::File(FileData::Bytes(bytes)) => {
            header.set_entry_type(EntryType::Regular);
            header.set_size(bytes.len() as u64);
            data = Box::new(bytes.as_slice());
        }
        EntryKind::File(FileData::Host(host)) => {
            header.set_entry_type(EntryType::Regular);
            let file = File::open(host).map_err(io_error("open", host))?;
            let len = file.metadata().map_err(io_error("stat", host))?.len();
            header.set_size(len);
            // `take` keeps the header's size true even if the file grows while we read it.
            data = Box::new(file.take(len));
        }
        EntryKind::Symlink(target) | EntryKind::HardLink(target) => {
            header.set_entry_type(if matches!(entry.kind, EntryKind::Symlink(_)) {
                EntryType::Symlink
            } else {
                EntryType::Link
            });
            if target.len() > HEADER_NAME_BYTES {
                append_long(builder, EntryType::GNULongLink, target).map_err(tar_error)?;
            }
            let n = target.len().min(HEADER_NAME_BYTES);
            header.as_old_mut().linkname[..n].copy_from_slice(&target[..n]);
        }
        EntryKind::Fifo => header.set_entry_type(EntryType::Fifo),
        EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
            header.set_entry_type(if matches!(entry.kind, EntryKind::CharDevice { .. }) {
                EntryType::Char
            } else {
                EntryType::Block
            });
            header.set_device_major(*major).map_err(tar_error)?;
            header.set_device_minor(*minor).map_err(tar_error)?;
        }
    }
    if path.len() > HEADER_NAME_BYTES {
        append_long(builder, EntryType::GNULongName, &path).map_err(tar_error)?;
    }
    let n = path.len().min(HEADER_NAME_BYTES);
    header.as_old_mut().name[..n].copy_from_slice(&path[..n]);
    header.set_cksum();
    let expected = header.size().map_err(tar_error)?;
    // `append` copies whatever `data` yields; a short host file would misalign the archive.
    let mut counted = CountingReader {
        inner: data,
        count: 0,
    };
    builder.append(&header, &mut counted).map_err(tar_error)?;
    if counted.count != expected {
        return Err(tar_error(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shrank while it was archived",
        )));
    }
    Ok(())
}

/// Writes a GNU long-name (`L`) or long-link (`K`) record carrying `value` plus a NUL.
fn append_long<W: Write>(
    builder: &mut tar::Builder<W>,
    kind: EntryType,
    value: &[u8],
) -> io::Result<()> {
    let mut header = Header::new_gnu();
    header.as_old_mut().name[..GNU_LONG_NAME.len()].copy_from_slice(GNU_LONG_NAME);
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_mtime(0);
    let mut data = value.to_vec();
    data.push(0);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, data.as_slice())
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(layer: &Layer) -> Vec<(Vec<u8>, EntryType, Option<Vec<u8>>)> {
        let bytes = layer.write_tar(Vec::new()).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                (
                    entry.path_bytes().into_owned(),
                    entry.header().entry_type(),
                    entry.link_name_bytes().map(|l| l.into_owned()),
                )
            })
            .collect()
    }

    #[test]
    fn entries_are_sorted_and_output_is_deterministic() {
        let layer = Layer::new(vec![
            Entry::file("b/file", "x"),
            Entry::dir("b"),
            Entry::file("a", "y"),
        ]);
        let names: Vec<_> = listing(&layer).into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            vec![b"a".to_vec(), b"b/".to_vec(), b"b/file".to_vec()]
        );
        assert_eq!(
            layer.write_tar(Vec::new()).unwrap(),
            layer.write_tar(Vec::new()).unwrap()
        );
    }

    #[test]
    fn long_names_and_link_targets_round_trip() {
        let long = format!("d/{}", "n".repeat(150));
        let target = format!("/{}", "t".repeat(120));
        let layer = Layer::new(vec![
            Entry::file(&long, "x"),
            Entry::symlink("link", &target),
        ]);
        let entries = listing(&layer);
        assert_eq!(entries[0].0, long.as_bytes());
        assert_eq!(entries[1].2.as_deref(), Some(target.as_bytes()));
    }

    #[test]
    fn hostile_names_are_written_verbatim() {
        let layer = Layer::new(vec![Entry::file("../../escape", "x")]);
        let bytes = layer.write_tar(Vec::new()).unwrap();
        // The tar crate's reader refuses `..` when unpacking but reports the raw name.
        assert_eq!(&bytes[..12], b"../../escape");
    }

    #[test]
    fn devices_and_fifos_keep_their_type() {
        let layer = Layer::new(vec![
            Entry::new(
                "dev/sda",
                EntryKind::BlockDevice { major: 8, minor: 0 },
                0o660,
            ),
            Entry::fifo("fifo"),
        ]);
        let types: Vec<_> = listing(&layer).into_iter().map(|e| e.1).collect();
        assert_eq!(types, vec![EntryType::Block, EntryType::Fifo]);
    }
}
