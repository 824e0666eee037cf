//! Unpacking a SquashFS image into a directory with the `backhand` reader, for SIF base images
//! (`library`, `oras`) and `kiln-worker run`; no `unsquashfs` needed.
//!
//! The image is untrusted. Every path is checked (no `..`, no empty or `/`-holding names) and
//! every write goes through [`Confined`], resolved by the kernel inside the destination, so a
//! symlink the image planted earlier (`/a -> /`) never carries a later entry outside it; a
//! file replaces a symlink in its place instead of writing through it. Entries and bytes are
//! bounded. Owners and modes (setuid included) are given when the caller is root of the
//! build's user namespace (`super::tasks`); device nodes, which no user namespace may create,
//! and sockets are skipped and counted.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use backhand::{FilesystemReader, InnerNode};

use super::confined::Confined;

/// Most entries an image may hold.
pub const MAX_ENTRIES: usize = 4_000_000;
/// Most bytes of file content unpacked from one image.
pub const MAX_UNPACKED_BYTES: u64 = 256 << 30;

/// What an unpack wrote and skipped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackSummary {
    /// Entries written (directories, files, symlinks, FIFOs).
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Device nodes and sockets skipped.
    pub skipped: u64,
}

/// Why an image could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The image is not a SquashFS 4.0 image `backhand` reads.
    #[error("not a readable SquashFS image")]
    Read(#[source] backhand::BackhandError),
    /// An entry's path climbs out or is malformed.
    #[error("the image has an unsafe path {0:?}")]
    UnsafePath(PathBuf),
    /// Over [`MAX_ENTRIES`] or [`MAX_UNPACKED_BYTES`].
    #[error("the image is larger than this worker unpacks ({0})")]
    TooLarge(&'static str),
    /// Writing into the destination failed.
    #[error("failed to write {path}")]
    Write {
        /// The entry.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Reading a file's content out of the image failed.
    #[error("failed to read {path} from the image")]
    Content {
        /// The entry.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

impl UnpackError {
    /// Whether the image is at fault rather than the worker's disk.
    pub fn is_image_fault(&self) -> bool {
        !matches!(self, Self::Write { .. })
    }
}

/// The image path `full` (absolute, as `backhand` gives it) relative to the root; `None` for
/// the root itself.
fn relative(full: &Path) -> Result<Option<PathBuf>, UnpackError> {
    let mut out = PathBuf::new();
    for component in full.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => out.push(name),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(UnpackError::UnsafePath(full.to_owned()));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Unpacks the SquashFS image at `image` over the directory `dest` (which must exist; what is
/// there is replaced entry by entry, directories merged). With `keep_owners` every entry gets
/// the image's owner and mode; otherwise only the mode, and files belong to the caller.
///
/// # Errors
/// An [`UnpackError`]; [`UnpackError::is_image_fault`] tells whose.
pub fn unpack_squashfs(
    image: &Path,
    dest: &Path,
    keep_owners: bool,
) -> Result<UnpackSummary, UnpackError> {
    let file = File::open(image).map_err(|source| UnpackError::Content {
        path: image.to_owned(),
        source,
    })?;
    let fs = FilesystemReader::from_reader(BufReader::new(file)).map_err(UnpackError::Read)?;
    let root = Confined::open(dest).map_err(|source| UnpackError::Write {
        path: dest.to_owned(),
        source,
    })?;
    let mut summary = UnpackSummary::default();
    // Directory metadata goes on last, deepest first: a directory without write permission
    // must not stop its own contents.
    let mut dirs: Vec<(Option<PathBuf>, backhand::NodeHeader)> = Vec::new();
    let mut buf = vec![0u8; 128 * 1024];
    for (count, node) in fs.files().enumerate() {
        if count >= MAX_ENTRIES {
            return Err(UnpackError::TooLarge("entries"));
        }
        let path = relative(&node.fullpath)?;
        let write_err = |source| UnpackError::Write {
            path: node.fullpath.clone(),
            source,
        };
        let Some(rel) = path.clone() else {
            dirs.push((None, node.header));
            continue;
        };
        match &node.inner {
            InnerNode::Dir(_) => {
                root.create_dir_all(&rel).map_err(write_err)?;
                dirs.push((path, node.header));
                continue;
            }
            InnerNode::File(file) => {
                let is_dir = matches!(
                    root.kind(&rel, false).map_err(write_err)?,
                    Some(super::confined::Kind::Dir)
                );
                if !is_dir {
                    let mut out = root.create_file(&rel, 0o600).map_err(write_err)?;
                    let mut reader = fs.file(file).reader();
                    loop {
                        let n = reader
                            .read(&mut buf)
                            .map_err(|source| UnpackError::Content {
                                path: node.fullpath.clone(),
                                source,
                            })?;
                        if n == 0 {
                            break;
                        }
                        summary.bytes += n as u64;
                        if summary.bytes > MAX_UNPACKED_BYTES {
                            return Err(UnpackError::TooLarge("bytes"));
                        }
                        out.write_all(&buf[..n]).map_err(write_err)?;
                    }
                } else {
                    return Err(write_err(io::Error::other("a directory is in the way")));
                }
            }
            InnerNode::Symlink(link) => {
                // The image's link replaces what is there (a base-environment file or link).
                // A directory in the way stays, and the link with it is not made.
                let _ = root.remove_file(&rel);
                root.symlink(&link.link, &rel).map_err(write_err)?;
            }
            InnerNode::NamedPipe => {
                let _ = root.remove_file(&rel);
                root.make_fifo(&rel).map_err(write_err)?;
            }
            InnerNode::CharacterDevice(_) | InnerNode::BlockDevice(_) | InnerNode::Socket => {
                summary.skipped += 1;
                continue;
            }
        }
        summary.entries += 1;
        set_meta(&root, &rel, node.header, keep_owners).map_err(write_err)?;
    }
    for (path, header) in dirs.into_iter().rev() {
        let rel = path.clone().unwrap_or_else(|| PathBuf::from("."));
        summary.entries += 1;
        set_meta(&root, &rel, header, keep_owners).map_err(|source| UnpackError::Write {
            path: path.unwrap_or_else(|| PathBuf::from("/")),
            source,
        })?;
    }
    Ok(summary)
}

fn set_meta(
    root: &Confined,
    rel: &Path,
    header: backhand::NodeHeader,
    keep_owners: bool,
) -> io::Result<()> {
    let mode = u32::from(header.permissions) & 0o7777;
    if keep_owners {
        root.set_owner_and_mode(rel, header.uid, header.gid, mode)
    } else {
        let (uid, gid, _) = root.owner_and_mode(rel, false)?;
        root.set_owner_and_mode(rel, uid, gid, mode & 0o777)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths_must_stay_below_the_root() {
        assert_eq!(relative(Path::new("/")).unwrap(), None);
        assert_eq!(
            relative(Path::new("/a/./b")).unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert!(relative(Path::new("/a/../../etc")).is_err());
    }

    /// An image from Kiln's own writer: a read-only directory holding a setuid file, a symlink
    /// to an absolute host path and a file below a name the destination already holds as a
    /// symlink out of it.
    fn image(dir: &Path) -> PathBuf {
        use crate::image::tree::{Content, Meta, Node, NodeKind, Tree};
        let content = dir.join("content");
        std::fs::write(&content, b"data").unwrap();
        let meta = |mode| Meta {
            mode,
            ..Meta::implicit_dir()
        };
        let mut tree = Tree::new(Meta::implicit_dir());
        let file = |tree: &mut Tree, mode| {
            tree.add(Node {
                meta: meta(mode),
                kind: NodeKind::File {
                    size: 4,
                    content: Content::Path(content.clone()),
                    hash: None,
                },
            })
        };
        let locked = tree.add(Node {
            meta: meta(0o500),
            kind: NodeKind::Dir(Default::default()),
        });
        tree.link(Tree::ROOT, b"locked".to_vec(), locked).unwrap();
        let tool = file(&mut tree, 0o4755);
        tree.link(locked, b"tool".to_vec(), tool).unwrap();
        let link = tree.add(Node {
            meta: meta(0o777),
            kind: NodeKind::Symlink(b"/etc/passwd".to_vec()),
        });
        tree.link(Tree::ROOT, b"passwd".to_vec(), link).unwrap();
        let etc = tree.add(Node {
            meta: meta(0o755),
            kind: NodeKind::Dir(Default::default()),
        });
        tree.link(Tree::ROOT, b"out".to_vec(), etc).unwrap();
        let planted = file(&mut tree, 0o644);
        tree.link(etc, b"planted".to_vec(), planted).unwrap();
        let out = dir.join("image.squashfs");
        let f = File::create(&out).unwrap();
        crate::image::write_squashfs(&tree, &f, &crate::image::SquashfsOptions::default()).unwrap();
        out
    }

    #[test]
    fn unpacks_modes_and_links_and_writes_nothing_outside() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let image = image(dir.path());
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let dest = dir.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        // The destination holds `out` as a symlink to a host directory.
        std::os::unix::fs::symlink(&outside, dest.join("out")).unwrap();
        let result = unpack_squashfs(&image, &dest, false);
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        // The symlink in the way makes `out` fail, or it resolves inside: never outside.
        if let Ok(summary) = &result {
            assert!(summary.entries >= 3);
        }
        let tool = std::fs::symlink_metadata(dest.join("locked/tool"));
        if let Ok(tool) = tool {
            assert_eq!(
                tool.permissions().mode() & 0o7777,
                0o755,
                "no setuid without owners"
            );
        }
        // A clean destination unpacks whole.
        let clean = dir.path().join("clean");
        std::fs::create_dir(&clean).unwrap();
        let summary = unpack_squashfs(&image, &clean, false).unwrap();
        assert_eq!(summary.bytes, 8);
        assert_eq!(std::fs::read(clean.join("locked/tool")).unwrap(), b"data");
        let locked = std::fs::metadata(clean.join("locked")).unwrap();
        assert_eq!(locked.permissions().mode() & 0o7777, 0o500);
        assert_eq!(
            std::fs::read_link(clean.join("passwd")).unwrap(),
            Path::new("/etc/passwd")
        );
        std::fs::set_permissions(clean.join("locked"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        assert!(unpack_squashfs(&dir.path().join("content"), &clean, false).is_err());
    }
}
