//! Image assembly: the root filesystem as SquashFS, built from one of two sources.
//!
//! - [`dir_source`]: a directory tree on disk (the rootfs after `%post`), with host ids mapped
//!   back to in-image ids when the tree was written through a subordinate id range;
//! - [`layers`]: OCI layer blobs applied in order straight into the image model, without
//!   extracting anything to disk.
//!
//! Both fill a [`tree::Tree`]; [`squashfs::write_squashfs`] writes it. The SIF container around
//! the image is `kiln_proto::sif`'s.

pub mod blob;
pub mod changeset;
pub mod dir_source;
pub mod layers;
pub mod squashfs;
pub mod tree;

use std::io;
use std::path::PathBuf;

pub use dir_source::{IdMap, read_dir_tree};
pub use layers::apply_layer;
pub use squashfs::{Codec, ImageSummary, SquashfsOptions, write_squashfs};
pub use tree::Tree;

/// Why an image could not be built. Input faults (a hostile layer, a tree with ids outside the
/// map) are distinguished from I/O failures of the worker's own disk by their variant.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// `--comp` named a codec Kiln does not write.
    #[error("unknown compressor {0:?} (expected gzip, xz, lz4 or zstd)")]
    UnknownCodec(String),
    /// The level is out of the codec's range.
    #[error("compression level {level} is out of range for {codec}")]
    BadLevel {
        /// The codec.
        codec: Codec,
        /// The level asked for.
        level: u32,
    },
    /// The block size is not a power of two from 4 KiB to 1 MiB.
    #[error("block size {0} is not a power of two from 4096 to 1048576")]
    BadBlockSize(u32),
    /// A compressor library could not be set up.
    #[error("failed to set up the compressor")]
    CompressorInit(#[source] io::Error),
    /// The LZ4 compressor failed.
    #[error("lz4 compression failed: {0}")]
    Lz4(String),
    /// A file's contents could not be read while writing the image.
    #[error("failed to read {what}")]
    ReadContent {
        /// The file (path, or layer and offset).
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing the image failed.
    #[error("failed to write the image")]
    WriteImage(#[source] io::Error),
    /// A layer blob could not be opened.
    #[error("failed to open layer {path}")]
    OpenLayer {
        /// The blob.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A layer blob could not be read or is not a valid tar stream.
    #[error("failed to read layer {path}")]
    ReadLayer {
        /// The blob.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A layer entry's path is absolute or climbs out with `..`.
    #[error("layer {layer} has an unsafe path {path:?}")]
    UnsafePath {
        /// The blob.
        layer: PathBuf,
        /// The entry's path as written in the tar header.
        path: String,
    },
    /// A layer hard link names a target that does not exist or is a directory.
    #[error(
        "layer {layer}: hard link {path:?} points to {target:?}, which is not a file in the image"
    )]
    BadHardLink {
        /// The blob.
        layer: PathBuf,
        /// The link's path.
        path: String,
        /// Its target.
        target: String,
    },
    /// A layer entry's parent is not a directory (and not a symlink to one).
    #[error("layer {layer}: the parent of {path:?} is not a directory")]
    ParentNotADirectory {
        /// The blob.
        layer: PathBuf,
        /// The entry's path.
        path: String,
    },
    /// A layer entry of a type Kiln does not apply (GNU sparse files, volume labels, …).
    #[error("layer {layer}: entry {path:?} has unsupported tar type {kind}")]
    UnsupportedEntry {
        /// The blob.
        layer: PathBuf,
        /// The entry's path.
        path: String,
        /// The tar type flag.
        kind: char,
    },
    /// Symlinks in a layer path resolve in a loop or too deep.
    #[error("layer {layer}: too many symlinks resolving {path:?}")]
    SymlinkLoop {
        /// The blob.
        layer: PathBuf,
        /// The entry's path.
        path: String,
    },
    /// A layer has more entries than the limit.
    #[error("layer {layer} has more than {limit} entries")]
    TooManyEntries {
        /// The blob.
        layer: PathBuf,
        /// The limit.
        limit: usize,
    },
    /// A file name is empty, contains `/`, or is longer than SquashFS stores (256 bytes).
    #[error("file name {0:?} cannot be stored in SquashFS")]
    BadName(String),
    /// A symlink target is longer than 4095 bytes.
    #[error("symlink {0:?} has a target longer than 4095 bytes")]
    SymlinkTooLong(String),
    /// Walking the source directory failed.
    #[error("failed to read {path}")]
    ReadTree {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file in the source tree is owned by a host id the id map does not cover.
    #[error("{path} is owned by host {kind} {id}, which the id map does not cover")]
    UnmappedId {
        /// The file.
        path: PathBuf,
        /// "uid" or "gid".
        kind: &'static str,
        /// The host id.
        id: u32,
    },
    /// An id map entry is malformed or overflows.
    #[error("invalid id map entry {0:?} (expected INNER:HOST:COUNT)")]
    BadIdMap(String),
    /// More than 65535 distinct uids and gids.
    #[error("the image has more than 65535 distinct uids and gids")]
    TooManyIds,
    /// More inodes than SquashFS numbers.
    #[error("the image has more than 2^32 - 2 inodes")]
    TooManyInodes,
    /// More fragment blocks than SquashFS indexes.
    #[error("the image has more than 2^32 fragment blocks")]
    TooManyFragments,
    /// A table outgrew its 32-bit offsets.
    #[error("a directory or inode table exceeds 4 GiB")]
    TableTooLarge,
    /// An xattr name or value is too large for SquashFS.
    #[error("an extended attribute is too large for SquashFS")]
    XattrTooLarge,
    /// A file is too large to hold in memory for duplicate comparison.
    #[error("file of {0} bytes is too large")]
    FileTooLarge(u64),
    /// A content region names a blob the tree does not have.
    #[error("file content refers to unknown layer blob {0}")]
    UnknownBlob(usize),
    /// A node expected to be a directory is not (a bug in a source).
    #[error("node {0} is not a directory")]
    NotADirectory(usize),
    /// A directory has two names (a bug in a source).
    #[error("directory node {0} is linked twice")]
    DirectoryLinkedTwice(usize),
    /// A compression or writer thread stopped unexpectedly.
    #[error("a worker thread of the image writer stopped")]
    WorkerGone,
}

impl ImageError {
    /// Whether the build's own content caused the error (a tree the id map does not cover, a
    /// name SquashFS cannot hold, a hostile layer) rather than the worker or its disk.
    pub fn is_content_fault(&self) -> bool {
        matches!(
            self,
            Self::UnmappedId { .. }
                | Self::BadName(_)
                | Self::SymlinkTooLong(_)
                | Self::TooManyIds
                | Self::UnsafePath { .. }
                | Self::BadHardLink { .. }
                | Self::UnsupportedEntry { .. }
                | Self::ParentNotADirectory { .. }
                | Self::SymlinkLoop { .. }
                | Self::TooManyEntries { .. }
        )
    }
}

/// Result of image assembly.
pub type Result<T> = std::result::Result<T, ImageError>;
