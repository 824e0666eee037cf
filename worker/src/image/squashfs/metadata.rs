//! Metadata streams: records chopped into 8 KiB blocks, each compressed and prefixed with a 16-bit
//! size header. The inode, directory, fragment, export, id and xattr tables are all such streams.
//!
//! A position in a stream is a *reference*: the byte offset of the block's header from the start
//! of the stream, shifted left by 16, or'ed with the offset inside the uncompressed block.

use super::codec::BlockCompressor;
use super::format::{METADATA_BYTES, METADATA_UNCOMPRESSED};
use crate::image::Result;

/// One metadata stream being built in memory.
pub struct MetaWriter {
    compressor: Box<dyn BlockCompressor>,
    /// Finished blocks, headers included.
    out: Vec<u8>,
    /// The block being filled (fewer than 8 KiB bytes).
    pending: Vec<u8>,
    /// Offset in `out` of every finished block, for lookup-table indexes.
    block_starts: Vec<u64>,
    scratch: Vec<u8>,
}

impl MetaWriter {
    /// An empty stream compressing with `compressor`.
    pub fn new(compressor: Box<dyn BlockCompressor>) -> Self {
        Self {
            compressor,
            out: Vec::new(),
            pending: Vec::with_capacity(METADATA_BYTES),
            block_starts: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Where the next byte written will be: (block offset in the stream, offset in the block).
    pub fn position(&self) -> (u64, u16) {
        (self.out.len() as u64, self.pending.len() as u16)
    }

    /// The reference of the next byte written.
    pub fn reference(&self) -> u64 {
        let (block, offset) = self.position();
        (block << 16) | u64::from(offset)
    }

    /// Appends `bytes`, finishing blocks as they fill.
    pub fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let take = (METADATA_BYTES - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() == METADATA_BYTES {
                self.flush_block()?;
            }
        }
        Ok(())
    }

    fn flush_block(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.block_starts.push(self.out.len() as u64);
        if self.compressor.compress(&self.pending, &mut self.scratch)? {
            self.out
                .extend_from_slice(&(self.scratch.len() as u16).to_le_bytes());
            self.out.extend_from_slice(&self.scratch);
        } else {
            self.out.extend_from_slice(
                &(self.pending.len() as u16 | METADATA_UNCOMPRESSED).to_le_bytes(),
            );
            self.out.extend_from_slice(&self.pending);
        }
        self.pending.clear();
        Ok(())
    }

    /// Finishes the last block and returns the stream's bytes and its block offsets.
    pub fn finish(mut self) -> Result<(Vec<u8>, Vec<u64>)> {
        self.flush_block()?;
        Ok((self.out, self.block_starts))
    }
}

/// Encodes a lookup table (fixed-size records) as metadata blocks to be placed at absolute
/// offset `at`. Returns the blocks and the uncompressed index of their absolute offsets, which is
/// written right after them and is what the superblock points to.
pub fn lookup_table(
    compressor: Box<dyn BlockCompressor>,
    records: &[u8],
    at: u64,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut meta = MetaWriter::new(compressor);
    meta.write(records)?;
    let (blocks, starts) = meta.finish()?;
    let index = starts
        .iter()
        .flat_map(|start| (at + start).to_le_bytes())
        .collect();
    Ok((blocks, index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::squashfs::codec::{Codec, new_compressor};

    #[test]
    fn references_count_compressed_block_offsets() {
        let mut m = MetaWriter::new(new_compressor(Codec::Gzip, 9, 131072).unwrap());
        assert_eq!(m.reference(), 0);
        m.write(&[1u8; 8000]).unwrap();
        assert_eq!(m.reference(), 8000);
        m.write(&[1u8; 300]).unwrap();
        // The first block (8192 ones) compressed to a few bytes plus its 2-byte header.
        let (block, offset) = m.position();
        assert!(block > 2 && block < 100, "{block}");
        assert_eq!(offset, 108);
        let (bytes, starts) = m.finish().unwrap();
        assert_eq!(starts, vec![0, block]);
        assert_eq!(u16::from_le_bytes([bytes[0], bytes[1]]) as u64, block - 2);
    }

    #[test]
    fn lookup_table_index_points_at_absolute_blocks() {
        let records = vec![0u8; 8192 * 2 + 16];
        let (blocks, index) = lookup_table(
            new_compressor(Codec::Gzip, 9, 131072).unwrap(),
            &records,
            1000,
        )
        .unwrap();
        assert_eq!(index.len(), 3 * 8);
        assert_eq!(u64::from_le_bytes(index[0..8].try_into().unwrap()), 1000);
        let second = u64::from_le_bytes(index[8..16].try_into().unwrap());
        let first_len = u16::from_le_bytes([blocks[0], blocks[1]]) as u64;
        assert_eq!(second, 1000 + 2 + first_len);
    }
}
