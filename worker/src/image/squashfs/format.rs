//! SquashFS 4.0 on-disk constants and the superblock, as the Linux kernel reads them
//! (`fs/squashfs/squashfs_fs.h`, `Documentation/filesystems/squashfs.rst`). All integers are
//! little-endian.

/// `hsqs`, the superblock magic.
pub const MAGIC: u32 = 0x7371_7368;
/// Size of the superblock in bytes.
pub const SUPERBLOCK_BYTES: u64 = 96;
/// Uncompressed size of one metadata block: 8 KiB.
pub const METADATA_BYTES: usize = 8192;
/// Set in a metadata block's 16-bit header when the block is stored uncompressed.
pub const METADATA_UNCOMPRESSED: u16 = 1 << 15;
/// Set in a data or fragment block size word when the block is stored uncompressed.
pub const DATA_UNCOMPRESSED: u32 = 1 << 24;
/// "No fragment" in a file inode.
pub const NO_FRAGMENT: u32 = 0xFFFF_FFFF;
/// "No xattrs" in an extended inode.
pub const NO_XATTR: u32 = 0xFFFF_FFFF;
/// A table that is absent from the image.
pub const NO_TABLE: u64 = u64::MAX;
/// The image is padded to a multiple of this (4 KiB), as mksquashfs does, because the kernel
/// reads it through a block device.
pub const PAD_BYTES: u64 = 4096;
/// Smallest data block size the format allows: 4 KiB.
pub const MIN_BLOCK_BYTES: u32 = 4096;
/// Largest data block size the format allows: 1 MiB.
pub const MAX_BLOCK_BYTES: u32 = 1 << 20;
/// Entries one directory header may announce.
pub const MAX_DIR_RUN: usize = 256;

/// Superblock flag: data is de-duplicated.
pub const FLAG_DUPLICATES: u16 = 0x0040;
/// Superblock flag: an NFS export (inode lookup) table is present.
pub const FLAG_EXPORTABLE: u16 = 0x0080;
/// Superblock flag: a compressor options block follows the superblock.
pub const FLAG_COMPRESSOR_OPTIONS: u16 = 0x0400;

/// Basic inode types; an extended type is the basic one plus [`EXTENDED`].
pub const DIR: u16 = 1;
/// Basic regular file.
pub const FILE: u16 = 2;
/// Basic symlink.
pub const SYMLINK: u16 = 3;
/// Basic block device.
pub const BLOCK_DEVICE: u16 = 4;
/// Basic character device.
pub const CHAR_DEVICE: u16 = 5;
/// Basic fifo.
pub const FIFO: u16 = 6;
/// Basic socket.
pub const SOCKET: u16 = 7;
/// Added to a basic type to get the extended type (1 → 8, …, 7 → 14).
pub const EXTENDED: u16 = 7;

/// The 96-byte superblock at offset 0.
#[derive(Debug, Clone, Default)]
pub struct SuperBlock {
    /// Number of inodes in the image.
    pub inode_count: u32,
    /// Image creation time, seconds since the epoch.
    pub mkfs_time: u32,
    /// Data block size in bytes, a power of two from 4 KiB to 1 MiB.
    pub block_size: u32,
    /// Number of entries in the fragment table.
    pub fragment_count: u32,
    /// Compressor id: 1 gzip, 4 xz, 5 lz4, 6 zstd.
    pub compression: u16,
    /// log2 of `block_size`.
    pub block_log: u16,
    /// `FLAG_*` bits.
    pub flags: u16,
    /// Number of entries in the id table.
    pub id_count: u16,
    /// Reference of the root directory inode (metadata block offset << 16 | offset in block).
    pub root_inode: u64,
    /// Bytes used by the image, before padding.
    pub bytes_used: u64,
    /// Absolute offset of the id table index.
    pub id_table: u64,
    /// Absolute offset of the xattr id table header, or [`NO_TABLE`].
    pub xattr_id_table: u64,
    /// Absolute offset of the inode table.
    pub inode_table: u64,
    /// Absolute offset of the directory table.
    pub directory_table: u64,
    /// Absolute offset of the fragment table index, or [`NO_TABLE`].
    pub fragment_table: u64,
    /// Absolute offset of the export table index, or [`NO_TABLE`].
    pub export_table: u64,
}

impl SuperBlock {
    /// The on-disk bytes.
    pub fn to_bytes(&self) -> [u8; SUPERBLOCK_BYTES as usize] {
        let mut b = Vec::with_capacity(SUPERBLOCK_BYTES as usize);
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&self.inode_count.to_le_bytes());
        b.extend_from_slice(&self.mkfs_time.to_le_bytes());
        b.extend_from_slice(&self.block_size.to_le_bytes());
        b.extend_from_slice(&self.fragment_count.to_le_bytes());
        b.extend_from_slice(&self.compression.to_le_bytes());
        b.extend_from_slice(&self.block_log.to_le_bytes());
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.id_count.to_le_bytes());
        b.extend_from_slice(&4u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        for v in [
            self.root_inode,
            self.bytes_used,
            self.id_table,
            self.xattr_id_table,
            self.inode_table,
            self.directory_table,
            self.fragment_table,
            self.export_table,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let mut out = [0u8; SUPERBLOCK_BYTES as usize];
        out.copy_from_slice(&b);
        out
    }
}

/// Linux's "new" device number encoding, which SquashFS stores: minor bits 0–7 and 20–31,
/// major bits 8–19.
pub fn encode_device(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_use_the_kernel_encoding() {
        // /dev/null is 1:3, a dm device 254:0, a large minor 8:300.
        assert_eq!(encode_device(1, 3), 0x103);
        assert_eq!(encode_device(254, 0), 0xfe00);
        assert_eq!(
            encode_device(8, 300),
            (300 & 0xff) | (8 << 8) | ((300 & !0xff) << 12)
        );
    }

    #[test]
    fn superblock_is_96_bytes_with_magic_and_version() {
        let b = SuperBlock {
            block_size: 131072,
            block_log: 17,
            ..Default::default()
        }
        .to_bytes();
        assert_eq!(&b[0..4], b"hsqs");
        assert_eq!(u16::from_le_bytes([b[28], b[29]]), 4);
        assert_eq!(u32::from_le_bytes([b[12], b[13], b[14], b[15]]), 131072);
    }
}
