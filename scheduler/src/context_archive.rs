//! Checks a build context archive (gzip-compressed tar, build-api.md §4.5) before it is
//! accepted: every entry must stay inside the root once extracted, and the whole must fit the
//! unpacked-size limit. The stock client writes only directories and regular files with
//! rootless relative names (symlinks are dereferenced), so anything else is refused rather than
//! interpreted: absolute names, `..`, links, devices, FIFOs. Workers extract the archive again
//! and must still treat it as hostile; this check gives the user an early, clear error.

use std::io::{self, Read};
use std::path::{Component, Path};

use flate2::read::GzDecoder;
use tar::EntryType;

/// Entries accepted in one archive.
pub const MAX_ENTRIES: u64 = 1_000_000;

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Not a gzip-compressed tar archive, or truncated.
    #[error("the build context is not a readable gzip-compressed tar archive")]
    Unreadable(#[source] io::Error),
    /// An entry name that would land outside the extraction root.
    #[error("build context entry {0:?} escapes the context root")]
    Escapes(String),
    /// An entry type the client never writes (links, devices, FIFOs).
    #[error("build context entry {name:?} is a {kind}, only files and directories are accepted")]
    Type {
        /// The entry's name.
        name: String,
        /// What it is.
        kind: &'static str,
    },
    /// Too much data or too many entries once unpacked.
    #[error("the build context unpacks to more than {0} bytes or {MAX_ENTRIES} entries")]
    TooLarge(u64),
}

/// What an accepted archive holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Files and directories.
    pub entries: u64,
    /// Bytes of file content.
    pub unpacked_bytes: u64,
}

/// Reads the whole archive from `reader` and checks every entry.
///
/// # Errors
/// [`ArchiveError`] for the first entry that is refused.
pub fn inspect(reader: impl Read, max_unpacked_bytes: u64) -> Result<ArchiveSummary, ArchiveError> {
    let mut archive = tar::Archive::new(GzDecoder::new(reader));
    let mut summary = ArchiveSummary {
        entries: 0,
        unpacked_bytes: 0,
    };
    for entry in archive.entries().map_err(ArchiveError::Unreadable)? {
        let entry = entry.map_err(ArchiveError::Unreadable)?;
        let path = entry.path().map_err(ArchiveError::Unreadable)?;
        let name = path.to_string_lossy().into_owned();
        if !stays_inside(&path) {
            return Err(ArchiveError::Escapes(name));
        }
        let kind = match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous | EntryType::Directory => None,
            EntryType::Symlink => Some("symbolic link"),
            EntryType::Link => Some("hard link"),
            EntryType::Char => Some("character device"),
            EntryType::Block => Some("block device"),
            EntryType::Fifo => Some("FIFO"),
            _ => Some("special entry"),
        };
        if let Some(kind) = kind {
            return Err(ArchiveError::Type { name, kind });
        }
        summary.entries += 1;
        summary.unpacked_bytes = summary.unpacked_bytes.saturating_add(entry.size());
        if summary.entries > MAX_ENTRIES || summary.unpacked_bytes > max_unpacked_bytes {
            return Err(ArchiveError::TooLarge(max_unpacked_bytes));
        }
    }
    Ok(summary)
}

/// True for a relative name without `..` (`.` components are harmless).
fn stays_inside(path: &Path) -> bool {
    path.components()
        .all(|component| matches!(component, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
pub(crate) mod tests {
    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    /// A gzip tar with the given entries: `(name, type, content)`. Names are written raw into
    /// the header, so hostile names survive.
    pub(crate) fn archive(entries: &[(&str, EntryType, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
        for (name, kind, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(content.len() as u64);
            let bytes = name.as_bytes();
            header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            if *kind == EntryType::Symlink {
                header.set_link_name("/etc/passwd").unwrap();
            }
            header.set_cksum();
            builder.append(&header, *content).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn accepts_what_the_client_writes() {
        let bytes = archive(&[
            ("home/", EntryType::Directory, b""),
            ("home/alice/a.txt", EntryType::Regular, b"hello"),
        ]);
        assert_eq!(
            inspect(&bytes[..], 1024).unwrap(),
            ArchiveSummary {
                entries: 2,
                unpacked_bytes: 5
            }
        );
    }

    #[test]
    fn refuses_escapes_links_devices_and_bombs() {
        let cases: [(&str, EntryType); 4] = [
            ("../evil", EntryType::Regular),
            ("/etc/evil", EntryType::Regular),
            ("home/link", EntryType::Symlink),
            ("dev/sda", EntryType::Block),
        ];
        for (name, kind) in cases {
            let bytes = archive(&[(name, kind, b"")]);
            assert!(inspect(&bytes[..], 1024).is_err(), "{name}");
        }
        let bytes = archive(&[("big", EntryType::Regular, &[0u8; 2048])]);
        assert!(matches!(
            inspect(&bytes[..], 1024),
            Err(ArchiveError::TooLarge(1024))
        ));
        assert!(matches!(
            inspect(&b"not gzip"[..], 1024),
            Err(ArchiveError::Unreadable(_))
        ));
    }
}
