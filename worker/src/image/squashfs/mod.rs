//! Kiln's SquashFS 4.0 writer: turns a [`Tree`] into an image the Linux kernel, squashfuse and
//! `unsquashfs` read.
//!
//! Layout, in the order the kernel insists on: superblock, compressor options, data blocks and
//! fragment blocks, inode table, directory table, fragment table, export table, id table, xattr
//! table; then zero padding to 4 KiB. What mksquashfs does by default and Singularity relies on
//! is kept: hard links as one inode, xattrs, duplicate files stored once (after a full byte
//! comparison), tail ends packed into fragments, sparse blocks, an NFS export table.
//!
//! Why not backhand's writer (the design card's first choice): it stores no hard links and no
//! xattrs and compresses on one thread (`specs/sif-squashfs.md` §5.3), and none of the three can
//! be added through its public API. backhand stays useful as a reader.

pub mod codec;
mod data;
pub mod format;
mod metadata;
mod prefetch;
mod tables;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};

pub use codec::Codec;
use data::{DataOptions, FileItem, write_data};
use format::{
    FLAG_COMPRESSOR_OPTIONS, FLAG_DUPLICATES, FLAG_EXPORTABLE, METADATA_UNCOMPRESSED, NO_TABLE,
    PAD_BYTES,
};
use metadata::lookup_table;
use tables::{Walk, write_tables};

use crate::image::tree::{Content, NodeKind, Tree};
use crate::image::{ImageError, Result};

/// How an image is written. `Default` is what Singularity writes: gzip level 9, 128 KiB blocks,
/// duplicates removed, every core.
#[derive(Debug, Clone)]
pub struct SquashfsOptions {
    /// Compressor.
    pub codec: Codec,
    /// Compression level; `None` for the codec's default ([`Codec::default_level`]).
    pub level: Option<u32>,
    /// Data block size in bytes: a power of two from 4 KiB to 1 MiB. Default 128 KiB.
    pub block_size: u32,
    /// Compression threads; 0 means one per available core.
    pub threads: usize,
    /// Whether duplicate files are stored once. Default on.
    pub dedup: bool,
    /// Memory for comparing duplicates among layer files, in bytes (see
    /// [`data::DataOptions::dedup_memory_bytes`]). Default 256 MiB.
    pub dedup_memory_bytes: u64,
    /// Superblock creation time, seconds since the epoch. Default 0, so that the same tree gives
    /// the same bytes.
    pub mkfs_time: u32,
}

impl Default for SquashfsOptions {
    fn default() -> Self {
        Self {
            codec: Codec::Gzip,
            level: None,
            block_size: 128 * 1024,
            threads: 0,
            dedup: true,
            dedup_memory_bytes: 256 << 20,
            mkfs_time: 0,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// Bytes of the image before padding (the superblock's `bytes_used`).
    pub bytes_used: u64,
    /// Length of the image file, padded to 4 KiB.
    pub file_size: u64,
    /// Inodes in the image.
    pub inodes: u32,
    /// Regular files (inodes).
    pub files: u64,
    /// Files stored as duplicates of an earlier one.
    pub duplicates: u64,
    /// Fragment blocks.
    pub fragments: u32,
}

/// Writes `tree` as a SquashFS image to `out` (from offset 0; the file is truncated to the
/// image's padded length).
///
/// Errors: bad options ([`ImageError::BadBlockSize`], [`ImageError::BadLevel`]); a file that
/// cannot be read or changed size meanwhile; a layer blob that cannot be read; limits of the
/// format (more than 65536 distinct ids, names over 256 bytes); a failed write.
pub fn write_squashfs(tree: &Tree, out: &File, opts: &SquashfsOptions) -> Result<ImageSummary> {
    let block_size = opts.block_size;
    if !block_size.is_power_of_two()
        || !(format::MIN_BLOCK_BYTES..=format::MAX_BLOCK_BYTES).contains(&block_size)
    {
        return Err(ImageError::BadBlockSize(block_size));
    }
    let level = opts.level.unwrap_or(opts.codec.default_level());
    let (lo, hi) = opts.codec.level_range();
    if !(lo..=hi).contains(&level) {
        return Err(ImageError::BadLevel {
            codec: opts.codec,
            level,
        });
    }
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };

    let walk = Walk::new(tree)?;
    let mut files: Vec<FileItem> = walk
        .files
        .iter()
        .filter_map(|&node| match &tree.nodes[node].kind {
            NodeKind::File {
                size,
                content,
                hash,
            } => Some(FileItem {
                node,
                size: *size,
                content: content.clone(),
                hash: *hash,
            }),
            _ => None,
        })
        .collect();
    // Files on disk and in memory in tree order, then layer regions in stream order: a
    // compressed layer can only be read forwards.
    files.sort_by_key(|f| match f.content {
        Content::Layer { blob, offset } => (1, blob, offset),
        _ => (0, 0, 0),
    });
    let file_count = files.len() as u64;

    let options_block = opts.codec.options_block(level);
    let mut head = Vec::new();
    if let Some(payload) = &options_block {
        head.extend_from_slice(&(payload.len() as u16 | METADATA_UNCOMPRESSED).to_le_bytes());
        head.extend_from_slice(payload);
    }
    let data_start = format::SUPERBLOCK_BYTES + head.len() as u64;
    let data_opts = DataOptions {
        block_size,
        codec: opts.codec,
        level,
        threads,
        dedup: opts.dedup,
        dedup_memory_bytes: opts.dedup_memory_bytes,
    };
    let layout = write_data(out, data_start, files, &tree.blobs, &data_opts)?;
    let tables = write_tables(tree, &walk, &layout, opts.codec, level, block_size)?;

    // Tables after the data, each table's blocks followed by its index.
    let mut w = out;
    w.seek(SeekFrom::Start(layout.end))
        .map_err(ImageError::WriteImage)?;
    let mut w = BufWriter::with_capacity(1 << 20, w);
    let mut pos = layout.end;
    let mut put = |w: &mut BufWriter<&File>, bytes: &[u8]| -> Result<u64> {
        let at = pos;
        w.write_all(bytes).map_err(ImageError::WriteImage)?;
        pos += bytes.len() as u64;
        Ok(at)
    };
    let compressor = || codec::new_compressor(opts.codec, level, block_size);

    let inode_table = put(&mut w, &tables.inodes)?;
    let directory_table = put(&mut w, &tables.directories)?;

    let fragment_records: Vec<u8> = layout
        .fragments
        .iter()
        .flat_map(|&(start, word)| {
            let mut r = start.to_le_bytes().to_vec();
            r.extend_from_slice(&word.to_le_bytes());
            r.extend_from_slice(&0u32.to_le_bytes());
            r
        })
        .collect();
    let (blocks, index) = lookup_table(
        compressor()?,
        &fragment_records,
        directory_table + tables.directories.len() as u64,
    )?;
    put(&mut w, &blocks)?;
    let fragment_table = put(&mut w, &index)?;

    let export_at = fragment_table + index.len() as u64;
    let (blocks, index) = lookup_table(compressor()?, &tables.export, export_at)?;
    put(&mut w, &blocks)?;
    let export_table = put(&mut w, &index)?;

    let id_at = export_table + index.len() as u64;
    let (blocks, index) = lookup_table(compressor()?, &tables.ids.records(), id_at)?;
    put(&mut w, &blocks)?;
    let id_table = put(&mut w, &index)?;

    let xattr_count = tables.xattrs.len();
    let xattr_id_table = if xattr_count == 0 {
        NO_TABLE
    } else {
        let (kv, records) = tables.xattrs.finish()?;
        let kv_at = put(&mut w, &kv)?;
        let ids_at = kv_at + kv.len() as u64;
        let (blocks, index) = lookup_table(compressor()?, &records, ids_at)?;
        put(&mut w, &blocks)?;
        let mut header = kv_at.to_le_bytes().to_vec();
        header.extend_from_slice(&(xattr_count as u32).to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        let at = put(&mut w, &header)?;
        put(&mut w, &index)?;
        at
    };
    let bytes_used = pos;
    let file_size = bytes_used.div_ceil(PAD_BYTES) * PAD_BYTES;
    w.flush().map_err(ImageError::WriteImage)?;
    drop(w);

    let mut flags = FLAG_EXPORTABLE;
    if opts.dedup {
        flags |= FLAG_DUPLICATES;
    }
    if options_block.is_some() {
        flags |= FLAG_COMPRESSOR_OPTIONS;
    }
    let fragments =
        u32::try_from(layout.fragments.len()).map_err(|_| ImageError::TooManyFragments)?;
    let sb = format::SuperBlock {
        inode_count: tables.inode_count,
        mkfs_time: opts.mkfs_time,
        block_size,
        fragment_count: fragments,
        compression: opts.codec.id(),
        block_log: block_size.trailing_zeros() as u16,
        flags,
        id_count: tables.ids.len() as u16,
        root_inode: tables.root,
        bytes_used,
        id_table,
        xattr_id_table,
        inode_table,
        directory_table,
        fragment_table,
        export_table,
    };
    let mut w = out;
    w.seek(SeekFrom::Start(0)).map_err(ImageError::WriteImage)?;
    w.write_all(&sb.to_bytes())
        .map_err(ImageError::WriteImage)?;
    w.write_all(&head).map_err(ImageError::WriteImage)?;
    out.set_len(file_size).map_err(ImageError::WriteImage)?;
    Ok(ImageSummary {
        bytes_used,
        file_size,
        inodes: tables.inode_count,
        files: file_count,
        duplicates: layout.duplicates,
        fragments,
    })
}
