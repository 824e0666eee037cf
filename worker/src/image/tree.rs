//! The in-memory entry model of an image: what both sources (a built directory tree, a sequence of
//! OCI layers) fill and what the SquashFS writer reads.
//!
//! The tree holds metadata only. File contents stay where they are (a path on disk, a region of a
//! layer blob, or a few bytes in memory) and are streamed by the writer. A hard link is two
//! directory entries naming the same [`NodeId`]; directories are never linked.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::image::{ImageError, Result};

/// Index of a node in [`Tree::nodes`].
pub type NodeId = usize;

/// The longest file name SquashFS stores: the kernel reads at most 256 bytes (the on-disk size
/// field is stored minus one and capped at 255).
pub const MAX_NAME_BYTES: usize = 256;

/// The longest symlink target Linux accepts (`PATH_MAX` minus the terminating NUL).
pub const MAX_SYMLINK_BYTES: usize = 4095;

/// Extended attributes: full names (`security.capability`) and raw values.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Ownership, permissions, time and extended attributes of one inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid, setgid and sticky (`0o7777`); the type lives in the node.
    pub mode: u16,
    /// Owner as seen inside the image.
    pub uid: u32,
    /// Group as seen inside the image.
    pub gid: u32,
    /// Modification time, seconds since the epoch (SquashFS stores an unsigned 32-bit value).
    pub mtime: u32,
    /// Extended attributes as full names (`security.capability`) and raw values, sorted by name.
    pub xattrs: Xattrs,
}

impl Meta {
    /// Metadata for a directory an extractor creates implicitly (a missing parent): `0755`,
    /// owned by root, time 0, which is what `tar` and `umoci` give such directories.
    pub fn implicit_dir() -> Self {
        Self {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        }
    }
}

/// Where the bytes of a regular file come from.
#[derive(Debug, Clone)]
pub enum Content {
    /// A file on disk, read when the image is written.
    Path(PathBuf),
    /// Bytes held in memory (small generated files).
    Bytes(Arc<[u8]>),
    /// A region of the decompressed tar stream of [`Tree::blobs`]`[blob]`, starting at `offset`;
    /// its length is the file size.
    Layer {
        /// Index into [`Tree::blobs`].
        blob: usize,
        /// Byte offset in the decompressed tar stream.
        offset: u64,
    },
}

/// What kind of inode a node is, with the data specific to that kind.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// A directory; entries are kept sorted by name bytes, the order SquashFS requires.
    Dir(BTreeMap<Vec<u8>, NodeId>),
    /// A regular file.
    File {
        /// Length in bytes.
        size: u64,
        /// Where the bytes are.
        content: Content,
        /// A 128-bit xxh3 of the contents when the source already computed it (layers do while
        /// they skip over the data); only a hint for duplicate detection, which always compares
        /// the bytes too.
        hash: Option<u128>,
    },
    /// A symbolic link and its target, stored verbatim and never followed by the writer.
    Symlink(Vec<u8>),
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
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
}

/// One inode of the image.
#[derive(Debug, Clone)]
pub struct Node {
    /// Ownership, mode, time, xattrs.
    pub meta: Meta,
    /// Type and type-specific data.
    pub kind: NodeKind,
}

impl Node {
    /// Whether this node is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir(_))
    }
}

/// An image as a tree of nodes rooted at [`Tree::ROOT`].
///
/// Nodes that become unreachable (replaced or whited out) stay in `nodes` and are skipped by the
/// writer, which only walks what the root reaches.
#[derive(Debug, Clone)]
pub struct Tree {
    /// All nodes; `nodes[ROOT]` is the root directory.
    pub nodes: Vec<Node>,
    /// Layer blobs that [`Content::Layer`] regions refer to, in the order they were applied.
    pub blobs: Vec<PathBuf>,
}

impl Tree {
    /// The root directory's id.
    pub const ROOT: NodeId = 0;

    /// A tree holding only a root directory with the given metadata.
    pub fn new(root: Meta) -> Self {
        Self {
            nodes: vec![Node {
                meta: root,
                kind: NodeKind::Dir(BTreeMap::new()),
            }],
            blobs: Vec::new(),
        }
    }

    /// Adds a node that is not yet linked into any directory and returns its id.
    pub fn add(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The entries of directory `dir`, or `None` when `dir` is not a directory.
    pub fn entries(&self, dir: NodeId) -> Option<&BTreeMap<Vec<u8>, NodeId>> {
        match &self.nodes[dir].kind {
            NodeKind::Dir(entries) => Some(entries),
            _ => None,
        }
    }

    /// Mutable entries of directory `dir`, or `None` when `dir` is not a directory.
    pub fn entries_mut(&mut self, dir: NodeId) -> Option<&mut BTreeMap<Vec<u8>, NodeId>> {
        match &mut self.nodes[dir].kind {
            NodeKind::Dir(entries) => Some(entries),
            _ => None,
        }
    }

    /// Links `node` into directory `dir` as `name`, replacing whatever had that name.
    ///
    /// Errors with [`ImageError::NotADirectory`] when `dir` is not a directory.
    pub fn link(&mut self, dir: NodeId, name: Vec<u8>, node: NodeId) -> Result<()> {
        self.entries_mut(dir)
            .ok_or(ImageError::NotADirectory(dir))?
            .insert(name, node);
        Ok(())
    }
}
