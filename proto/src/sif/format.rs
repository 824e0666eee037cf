//! The on-disk structures of SIF v2 (spec version "01"): the 128-byte global header, the 585-byte
//! object descriptor and the type-specific `Extra` bytes, as plain structs whose fields follow the
//! layout in order (sylabs/sif `pkg/sif/sif.go` `header`, `pkg/sif/descriptor.go`
//! `rawDescriptor`; contract: `specs/sif-squashfs.md` §1).
//!
//! Encoding and decoding here are pure byte shuffling and cannot fail: a fixed-size buffer always
//! holds a header or a descriptor. Whether the values make sense (magic, version, offsets inside
//! the file) is the reader's job, and whether parameters are acceptable is the writer's.

use std::fmt;

/// Size of the global header at offset 0, in bytes.
pub const HEADER_LEN: usize = 128;
/// Size of one object descriptor, in bytes (`4+1+4+4+4+8×7+128+384`).
pub const DESCRIPTOR_LEN: usize = 585;
/// Size of the launch script field, in bytes; the script itself must be shorter (NUL-terminated).
pub const LAUNCH_SCRIPT_LEN: usize = 32;
/// Size of the descriptor name field, in bytes.
pub const NAME_LEN: usize = 128;
/// Size of the descriptor `Extra` field, in bytes.
pub const EXTRA_LEN: usize = 384;
/// Size of the signer entity inside a signature descriptor's `Extra`, in bytes.
pub const ENTITY_LEN: usize = 256;
/// Length of an OpenPGP v4 fingerprint stored in the entity field, in bytes.
pub const FINGERPRINT_LEN: usize = 20;

/// `Magic` of every SIF: `"SIF_MAGIC"` and a NUL.
pub const MAGIC: [u8; 10] = *b"SIF_MAGIC\0";
/// `Version` of spec version 1, the only one that exists: `"01"` and a NUL.
pub const VERSION: [u8; 3] = *b"01\0";
/// The launch script `singularity build` writes, so that a SIF is executable.
pub const SINGULARITY_LAUNCH_SCRIPT: &str = "#!/usr/bin/env run-singularity\n";

/// Bits set on every stored group ID, and on a link that points to a group.
pub const GROUP_MASK: u32 = 0xF000_0000;
/// The group every object of a `singularity build` image belongs to.
pub const DEFAULT_GROUP: u32 = 1;
/// Descriptor slots a new image gets (sylabs/sif `CreateContainer` default).
pub const DEFAULT_DESCRIPTOR_CAPACITY: u32 = 48;
/// Where the descriptor table starts, in bytes from the start of the file.
pub const DEFAULT_DESCRIPTORS_OFFSET: u64 = 4096;
/// Alignment of partition objects, in bytes (4 KiB, so the kernel can loop-mount them).
pub const PARTITION_ALIGNMENT: u64 = 4096;
/// The time sylabs/sif writes in deterministic mode: Go's zero `time.Time` in Unix seconds
/// (0001-01-01 UTC). `siftool` omits such times from its output.
pub const DETERMINISTIC_TIME: i64 = -62_135_596_800;

/// Declares a newtype over an on-disk `int32` code with its known values and the label sylabs/sif
/// prints for each. A newtype rather than an enum keeps unknown codes from newer writers intact.
macro_rules! int32_code {
    (
        $(#[$meta:meta])*
        $name:ident, unknown = $unknown:literal,
        $( $(#[$cmeta:meta])* $konst:ident = $value:literal => $label:literal, )*
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub i32);

        impl $name {
            $( $(#[$cmeta])* pub const $konst: Self = Self($value); )*

            /// The label sylabs/sif (and so `siftool`) prints for this value.
            pub fn label(self) -> &'static str {
                match self.0 {
                    $( $value => $label, )*
                    _ => $unknown,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.label())
            }
        }
    };
}

int32_code! {
    /// The kind of a data object (`DataType`, `iota + 0x4001`); 0 in unused descriptor slots.
    DataType, unknown = "Unknown",
    /// The definition file the image was built from.
    DEFFILE = 0x4001 => "Def.FILE",
    /// Environment variables.
    ENV_VARS = 0x4002 => "Env.Vars",
    /// JSON labels.
    LABELS = 0x4003 => "JSON.Labels",
    /// A file system partition; `Extra` holds [`ObjectMetadata::Partition`].
    PARTITION = 0x4004 => "FS",
    /// A signature over other objects; `Extra` holds [`ObjectMetadata::Signature`].
    SIGNATURE = 0x4005 => "Signature",
    /// Generic JSON, found by name (`inspect-metadata.json`, `oci-config.json`).
    GENERIC_JSON = 0x4006 => "JSON.Generic",
    /// Generic raw data.
    GENERIC = 0x4007 => "Generic/Raw",
    /// A cryptographic message; `Extra` holds [`ObjectMetadata::CryptoMessage`].
    CRYPTO_MESSAGE = 0x4008 => "Cryptographic Message",
    /// A software bill of materials; `Extra` holds [`ObjectMetadata::Sbom`].
    SBOM = 0x4009 => "SBOM",
    /// The root OCI index of an OCI-SIF; `Extra` holds [`ObjectMetadata::OciBlob`].
    OCI_ROOT_INDEX = 0x400A => "OCI.RootIndex",
    /// An OCI blob of an OCI-SIF; `Extra` holds [`ObjectMetadata::OciBlob`].
    OCI_BLOB = 0x400B => "OCI.Blob",
}

int32_code! {
    /// The file system of a partition object (`FSType`).
    FsType, unknown = "Unknown",
    /// SquashFS, read-only; what `singularity build` writes.
    SQUASHFS = 1 => "Squashfs",
    /// EXT3, read-write (deprecated).
    EXT3 = 2 => "Ext3",
    /// An archive of immutable data objects.
    IMMUTABLE_OBJECTS = 3 => "Archive",
    /// Raw data.
    RAW = 4 => "Raw",
    /// SquashFS inside dm-crypt.
    ENCRYPTED_SQUASHFS = 5 => "Encrypted squashfs",
}

int32_code! {
    /// The role of a partition object (`PartType`).
    PartType, unknown = "Unknown",
    /// Holds an operating system.
    SYSTEM = 1 => "System",
    /// Holds the primary operating system, the one Singularity runs; at most one per image.
    PRIMARY_SYSTEM = 2 => "*System",
    /// Holds data only.
    DATA = 3 => "Data",
    /// Holds an overlay.
    OVERLAY = 4 => "Overlay",
}

int32_code! {
    /// The hash function of a signature object (`hashType`); labels are Go's `crypto.Hash` names.
    HashType, unknown = "unknown",
    /// SHA-256, what `singularity sign` uses.
    SHA256 = 1 => "SHA-256",
    /// SHA-384.
    SHA384 = 2 => "SHA-384",
    /// SHA-512.
    SHA512 = 3 => "SHA-512",
    /// BLAKE2s-256.
    BLAKE2S_256 = 4 => "BLAKE2s-256",
    /// BLAKE2b-256.
    BLAKE2B_256 = 5 => "BLAKE2b-256",
}

int32_code! {
    /// The encoding of a cryptographic message object (`FormatType`).
    FormatType, unknown = "Unknown",
    /// OpenPGP.
    OPENPGP = 1 => "OpenPGP",
    /// PEM.
    PEM = 2 => "PEM",
}

int32_code! {
    /// The content of a cryptographic message object (`MessageType`).
    MessageType, unknown = "Unknown",
    /// An OpenPGP clear signature.
    CLEAR_SIGNATURE = 0x100 => "Clear Signature",
    /// An RSA-OAEP encrypted key (the passphrase of an encrypted partition).
    RSA_OAEP = 0x200 => "RSA-OAEP",
}

int32_code! {
    /// The format of an SBOM object (`SBOMFormat`).
    SbomFormat, unknown = "unknown",
    /// CycloneDX (JSON).
    CYCLONEDX_JSON = 1 => "cyclonedx-json",
    /// CycloneDX (XML).
    CYCLONEDX_XML = 2 => "cyclonedx-xml",
    /// GitHub dependency snapshot (JSON).
    GITHUB_JSON = 3 => "github-json",
    /// SPDX (JSON).
    SPDX_JSON = 4 => "spdx-json",
    /// SPDX (RDF/XML).
    SPDX_RDF = 5 => "spdx-rdf",
    /// SPDX (tag/value).
    SPDX_TAG_VALUE = 6 => "spdx-tag-value",
    /// SPDX (YAML).
    SPDX_YAML = 7 => "spdx-yaml",
    /// Syft (JSON).
    SYFT_JSON = 8 => "syft-json",
}

/// A CPU architecture as stored in the header and in partition metadata: two ASCII digits and a
/// NUL (`pkg/sif/arch.go`). Codes this table does not know are kept as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Arch(pub [u8; 3]);

/// Go architecture names by SIF code, in code order (`"00"` is unknown).
const ARCH_NAMES: [(&[u8; 3], &str); 13] = [
    (b"01\0", "386"),
    (b"02\0", "amd64"),
    (b"03\0", "arm"),
    (b"04\0", "arm64"),
    (b"05\0", "ppc64"),
    (b"06\0", "ppc64le"),
    (b"07\0", "mips"),
    (b"08\0", "mipsle"),
    (b"09\0", "mips64"),
    (b"10\0", "mips64le"),
    (b"11\0", "s390x"),
    (b"12\0", "riscv64"),
    (b"13\0", "loong64"),
];

impl Arch {
    /// No primary partition, or an architecture nobody recorded.
    pub const UNKNOWN: Self = Self(*b"00\0");
    /// x86-64.
    pub const AMD64: Self = Self(*b"02\0");
    /// 64-bit ARM.
    pub const ARM64: Self = Self(*b"04\0");

    /// The code for a Go architecture name (`amd64`, `arm64`, `ppc64le`, …), or `None` if SIF
    /// has no code for it.
    pub fn from_go_arch(name: &str) -> Option<Self> {
        ARCH_NAMES
            .iter()
            .find(|(_, go)| *go == name)
            .map(|(code, _)| Self(**code))
    }

    /// The Go architecture name, or `"unknown"` for `00` and codes this table does not know.
    pub fn go_arch(self) -> &'static str {
        ARCH_NAMES
            .iter()
            .find(|(code, _)| **code == self.0)
            .map_or("unknown", |(_, go)| go)
    }

    /// Whether this is one of the architectures SIF defines (not `00`, not an unknown code).
    pub fn is_known(self) -> bool {
        self.go_arch() != "unknown"
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.go_arch())
    }
}

/// The global header, 128 bytes at offset 0, little-endian (`pkg/sif/sif.go` `header`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalHeader {
    /// 0x00: a `#!` line so the file can be executed; NUL-padded, shorter than 32 bytes.
    pub launch_script: [u8; LAUNCH_SCRIPT_LEN],
    /// 0x20: [`MAGIC`].
    pub magic: [u8; 10],
    /// 0x2A: spec version, [`VERSION`] (`"01\0"`).
    pub version: [u8; 3],
    /// 0x2D: architecture of the primary system partition, [`Arch::UNKNOWN`] without one.
    pub arch: Arch,
    /// 0x30: image UUID, 16 raw bytes in RFC 4122 order; all zero in deterministic mode.
    pub id: [u8; 16],
    /// 0x40: creation time, Unix seconds.
    pub created_at: i64,
    /// 0x48: last modification time, Unix seconds.
    pub modified_at: i64,
    /// 0x50: descriptor slots not in use.
    pub descriptors_free: i64,
    /// 0x58: descriptor slots in the table (48 by default).
    pub descriptors_total: i64,
    /// 0x60: file offset of the descriptor table, bytes (4096 by default).
    pub descriptors_offset: i64,
    /// 0x68: size of the descriptor table, bytes (`585 × descriptors_total`).
    pub descriptors_size: i64,
    /// 0x70: file offset of the data section, bytes (the end of the descriptor table).
    pub data_offset: i64,
    /// 0x78: size of the data section, bytes: end of the last object minus `data_offset`,
    /// alignment gaps included.
    pub data_size: i64,
}

impl GlobalHeader {
    /// Lays the header out as it is stored.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0; HEADER_LEN];
        let mut w = FieldWriter::new(&mut out);
        w.bytes(&self.launch_script);
        w.bytes(&self.magic);
        w.bytes(&self.version);
        w.bytes(&self.arch.0);
        w.bytes(&self.id);
        for value in [
            self.created_at,
            self.modified_at,
            self.descriptors_free,
            self.descriptors_total,
            self.descriptors_offset,
            self.descriptors_size,
            self.data_offset,
            self.data_size,
        ] {
            w.i64(value);
        }
        out
    }

    /// Reads the fields of a stored header without judging them (see the reader for that).
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Self {
        let mut r = FieldReader::new(bytes);
        Self {
            launch_script: r.array(),
            magic: r.array(),
            version: r.array(),
            arch: Arch(r.array()),
            id: r.array(),
            created_at: r.i64(),
            modified_at: r.i64(),
            descriptors_free: r.i64(),
            descriptors_total: r.i64(),
            descriptors_offset: r.i64(),
            descriptors_size: r.i64(),
            data_offset: r.i64(),
            data_size: r.i64(),
        }
    }

    /// The launch script without its NUL padding.
    pub fn launch_script(&self) -> &[u8] {
        trim_nul(&self.launch_script)
    }

    /// Parses a UUID string (`8-4-4-4-12` hex digits, either case) into the 16 bytes of the
    /// header's `id`; `None` if it is not one.
    pub fn parse_id(text: &str) -> Option<[u8; 16]> {
        let groups: Vec<&str> = text.split('-').collect();
        if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
            return None;
        }
        let hex = groups.concat();
        // `from_str_radix` would also take a sign.
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut id = [0; 16];
        for (byte, pair) in id.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        Some(id)
    }

    /// The image ID as a UUID string (`8-4-4-4-12` lowercase hex).
    pub fn id_string(&self) -> String {
        let hex: String = self.id.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }
}

/// Where a descriptor's `LinkedID` points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// No link (stored as 0).
    None,
    /// Another object, by ID (stored as is).
    Object(u32),
    /// A group of objects, by group ID (stored OR'ed with [`GROUP_MASK`]); signatures use this.
    Group(u32),
}

impl Link {
    /// Decodes a stored `LinkedID`.
    pub fn from_raw(raw: u32) -> Self {
        let id = raw & !GROUP_MASK;
        if id == 0 {
            Self::None
        } else if raw & GROUP_MASK == GROUP_MASK {
            Self::Group(id)
        } else {
            Self::Object(id)
        }
    }

    /// The stored `LinkedID`. IDs that collide with [`GROUP_MASK`] are refused by the writer.
    pub fn to_raw(self) -> u32 {
        match self {
            Self::None => 0,
            Self::Object(id) => id,
            Self::Group(id) => id | GROUP_MASK,
        }
    }
}

/// One object descriptor, 585 bytes, little-endian (`pkg/sif/descriptor.go` `rawDescriptor`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// +0: kind of data object; 0 in unused slots.
    pub data_type: DataType,
    /// +4: whether the slot holds an object (any non-zero byte counts, as in Go's decoder).
    pub used: bool,
    /// +5: object ID, 1-based; writers use slot index + 1.
    pub id: u32,
    /// +9: group ID OR'ed with [`GROUP_MASK`]; `0xF0000000` alone means "no group".
    pub group_id: u32,
    /// +13: link target as stored, see [`Link`].
    pub linked_id: u32,
    /// +17: absolute file offset of the object's data, bytes.
    pub offset: i64,
    /// +25: length of the object's data, bytes.
    pub size: i64,
    /// +33: `size` plus the alignment gap in front of the object, bytes.
    pub size_with_padding: i64,
    /// +41: object creation time, Unix seconds.
    pub created_at: i64,
    /// +49: object modification time, Unix seconds.
    pub modified_at: i64,
    /// +57: deprecated, always 0.
    pub uid: i64,
    /// +65: deprecated, always 0.
    pub gid: i64,
    /// +73: object name, NUL-padded (`inspect-metadata.json` is found by it).
    pub name: [u8; NAME_LEN],
    /// +201: type-specific metadata, NUL-padded, see [`ObjectMetadata`].
    pub extra: [u8; EXTRA_LEN],
}

impl Descriptor {
    /// An unused slot: every byte zero.
    pub fn unused() -> Self {
        Self::decode(&[0; DESCRIPTOR_LEN])
    }

    /// Lays the descriptor out as it is stored.
    pub fn encode(&self) -> [u8; DESCRIPTOR_LEN] {
        let mut out = [0; DESCRIPTOR_LEN];
        let mut w = FieldWriter::new(&mut out);
        w.bytes(&self.data_type.0.to_le_bytes());
        w.bytes(&[u8::from(self.used)]);
        for value in [self.id, self.group_id, self.linked_id] {
            w.bytes(&value.to_le_bytes());
        }
        for value in [
            self.offset,
            self.size,
            self.size_with_padding,
            self.created_at,
            self.modified_at,
            self.uid,
            self.gid,
        ] {
            w.i64(value);
        }
        w.bytes(&self.name);
        w.bytes(&self.extra);
        out
    }

    /// Reads the fields of a stored descriptor without judging them.
    pub fn decode(bytes: &[u8; DESCRIPTOR_LEN]) -> Self {
        let mut r = FieldReader::new(bytes);
        Self {
            data_type: DataType(r.i32()),
            used: r.array::<1>()[0] != 0,
            id: r.u32(),
            group_id: r.u32(),
            linked_id: r.u32(),
            offset: r.i64(),
            size: r.i64(),
            size_with_padding: r.i64(),
            created_at: r.i64(),
            modified_at: r.i64(),
            uid: r.i64(),
            gid: r.i64(),
            name: r.array(),
            extra: r.array(),
        }
    }

    /// The group the object belongs to, without the mask; `None` for "no group".
    pub fn group(&self) -> Option<u32> {
        match self.group_id & !GROUP_MASK {
            0 => None,
            id => Some(id),
        }
    }

    /// Where the object links to.
    pub fn link(&self) -> Link {
        Link::from_raw(self.linked_id)
    }

    /// The name without its NUL padding (sylabs/sif trims trailing NULs only).
    pub fn name(&self) -> &[u8] {
        trim_nul(&self.name)
    }

    /// The type-specific metadata in `Extra`, decoded according to `data_type`.
    pub fn metadata(&self) -> ObjectMetadata {
        ObjectMetadata::decode(self.data_type, &self.extra)
    }

    /// File offset of the data in bytes; the reader has checked it is not negative.
    pub fn data_offset(&self) -> u64 {
        u64::try_from(self.offset).unwrap_or(0)
    }

    /// Length of the data in bytes; the reader has checked it is not negative.
    pub fn data_len(&self) -> u64 {
        u64::try_from(self.size).unwrap_or(0)
    }
}

/// The typed content of a descriptor's `Extra` field (`pkg/sif/descriptor.go` `partition`,
/// `signature`, `cryptoMessage`, `sbom`, `ociBlob`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectMetadata {
    /// Nothing: definition files, JSON, generic data, environment, labels.
    None,
    /// Partition: `Fstype i32, Parttype i32, Arch [3]u8` (11 bytes).
    Partition {
        /// File system inside the partition.
        fs_type: FsType,
        /// Role of the partition.
        part_type: PartType,
        /// Architecture of the binaries in the partition.
        arch: Arch,
    },
    /// Signature: `Hashtype i32, Entity [256]u8` (260 bytes).
    Signature {
        /// Hash function the signature uses.
        hash_type: HashType,
        /// Signer: an OpenPGP fingerprint (20 bytes for v4 keys) then zeros; all zero for DSSE.
        entity: Box<[u8; ENTITY_LEN]>,
    },
    /// Cryptographic message: `Formattype i32, Messagetype i32` (8 bytes).
    CryptoMessage {
        /// Encoding of the message.
        format: FormatType,
        /// What the message holds.
        message: MessageType,
    },
    /// SBOM: `Format i32` (4 bytes).
    Sbom {
        /// Format of the bill of materials.
        format: SbomFormat,
    },
    /// OCI root index or blob: the digest as text (`sha256:<hex>`), NUL-terminated.
    OciBlob {
        /// The digest text, without the NUL.
        digest: Vec<u8>,
    },
}

impl ObjectMetadata {
    /// The data types whose `Extra` holds this kind of metadata; empty for
    /// [`ObjectMetadata::None`], which fits every type without metadata.
    pub fn data_types(&self) -> &'static [DataType] {
        match self {
            Self::None => &[],
            Self::Partition { .. } => &[DataType::PARTITION],
            Self::Signature { .. } => &[DataType::SIGNATURE],
            Self::CryptoMessage { .. } => &[DataType::CRYPTO_MESSAGE],
            Self::Sbom { .. } => &[DataType::SBOM],
            Self::OciBlob { .. } => &[DataType::OCI_ROOT_INDEX, DataType::OCI_BLOB],
        }
    }

    /// Decodes `Extra` as the metadata of an object of type `data_type`; types without metadata
    /// (and unknown types) give [`ObjectMetadata::None`].
    pub fn decode(data_type: DataType, extra: &[u8; EXTRA_LEN]) -> Self {
        let mut r = FieldReader::new(extra);
        match data_type {
            DataType::PARTITION => Self::Partition {
                fs_type: FsType(r.i32()),
                part_type: PartType(r.i32()),
                arch: Arch(r.array()),
            },
            DataType::SIGNATURE => Self::Signature {
                hash_type: HashType(r.i32()),
                entity: Box::new(r.array()),
            },
            DataType::CRYPTO_MESSAGE => Self::CryptoMessage {
                format: FormatType(r.i32()),
                message: MessageType(r.i32()),
            },
            DataType::SBOM => Self::Sbom {
                format: SbomFormat(r.i32()),
            },
            DataType::OCI_ROOT_INDEX | DataType::OCI_BLOB => {
                let end = extra.iter().position(|&b| b == 0).unwrap_or(EXTRA_LEN);
                Self::OciBlob {
                    digest: extra[..end].to_vec(),
                }
            }
            _ => Self::None,
        }
    }

    /// Encodes into an `Extra` field, or `None` if the OCI digest does not fit in 384 bytes.
    pub fn encode(&self) -> Option<[u8; EXTRA_LEN]> {
        let mut out = [0; EXTRA_LEN];
        let mut w = FieldWriter::new(&mut out);
        match self {
            Self::None => {}
            Self::Partition {
                fs_type,
                part_type,
                arch,
            } => {
                w.bytes(&fs_type.0.to_le_bytes());
                w.bytes(&part_type.0.to_le_bytes());
                w.bytes(&arch.0);
            }
            Self::Signature { hash_type, entity } => {
                w.bytes(&hash_type.0.to_le_bytes());
                w.bytes(&entity[..]);
            }
            Self::CryptoMessage { format, message } => {
                w.bytes(&format.0.to_le_bytes());
                w.bytes(&message.0.to_le_bytes());
            }
            Self::Sbom { format } => w.bytes(&format.0.to_le_bytes()),
            Self::OciBlob { digest } => {
                if digest.len() > EXTRA_LEN {
                    return None;
                }
                w.bytes(digest);
            }
        }
        Some(out)
    }

    /// The signer's fingerprint of a signature: the first 20 entity bytes, or `None` when they
    /// are all zero (DSSE signatures) or this is not a signature (sylabs/sif
    /// `SignatureMetadata`).
    pub fn fingerprint(&self) -> Option<&[u8]> {
        match self {
            Self::Signature { entity, .. } if entity[..FINGERPRINT_LEN].iter().any(|&b| b != 0) => {
                Some(&entity[..FINGERPRINT_LEN])
            }
            _ => None,
        }
    }
}

/// `bytes` without its trailing NULs.
fn trim_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &bytes[..end]
}

/// Sequential little-endian field decoder over a buffer whose size the caller's layout fits;
/// only used on fixed-size arrays, so the slicing below cannot go out of bounds.
struct FieldReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> FieldReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(&self.bytes[self.pos..self.pos + N]);
        self.pos += N;
        out
    }

    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.array())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.array())
    }
}

/// Sequential field encoder, the mirror of [`FieldReader`].
struct FieldWriter<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl<'a> FieldWriter<'a> {
    fn new(out: &'a mut [u8]) -> Self {
        Self { out, pos: 0 }
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.out[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }

    fn i64(&mut self, value: i64) {
        self.bytes(&value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_at_the_documented_offsets() {
        let header = GlobalHeader {
            launch_script: {
                let mut s = [0; LAUNCH_SCRIPT_LEN];
                s[..SINGULARITY_LAUNCH_SCRIPT.len()]
                    .copy_from_slice(SINGULARITY_LAUNCH_SCRIPT.as_bytes());
                s
            },
            magic: MAGIC,
            version: VERSION,
            arch: Arch::AMD64,
            id: [
                0x28, 0xcc, 0xd5, 0x78, 0x99, 0xaf, 0x44, 0x60, 0xa4, 0x80, 0x8e, 0xc6, 0xfa, 0x29,
                0x95, 0x70,
            ],
            created_at: 0x6b09_89b3,
            modified_at: 0x6b09_89b3,
            descriptors_free: 45,
            descriptors_total: 48,
            descriptors_offset: 4096,
            descriptors_size: 28080,
            data_offset: 32176,
            data_size: 8784,
        };
        let bytes = header.encode();
        // The hexdump of spec §1.8, rows 0x20 to 0x7f.
        assert_eq!(&bytes[0x20..0x30], b"SIF_MAGIC\x0001\x0002\x00");
        assert_eq!(&bytes[0x40..0x44], &[0xb3, 0x89, 0x09, 0x6b]);
        assert_eq!(&bytes[0x50..0x51], &[45]);
        assert_eq!(&bytes[0x70..0x74], &[0xb0, 0x7d, 0, 0]);
        assert_eq!(&bytes[0x78..0x7a], &[0x50, 0x22]);
        assert_eq!(GlobalHeader::decode(&bytes), header);
        assert_eq!(header.id_string(), "28ccd578-99af-4460-a480-8ec6fa299570");
        assert_eq!(
            GlobalHeader::parse_id("28CCD578-99af-4460-a480-8ec6fa299570"),
            Some(header.id)
        );
        for bad in [
            "",
            "28ccd578-99af-4460-a480-8ec6fa29957",
            "28ccd578+99af-4460-a480-8ec6fa299570",
            "+8ccd578-99af-4460-a480-8ec6fa299570",
            "28ccd57g-99af-4460-a480-8ec6fa299570",
        ] {
            assert_eq!(GlobalHeader::parse_id(bad), None, "{bad}");
        }
        assert_eq!(header.launch_script(), SINGULARITY_LAUNCH_SCRIPT.as_bytes());
    }

    #[test]
    fn descriptor_round_trips_at_the_documented_offsets() {
        let mut d = Descriptor::unused();
        d.data_type = DataType::PARTITION;
        d.used = true;
        d.id = 3;
        d.group_id = DEFAULT_GROUP | GROUP_MASK;
        d.offset = 36864;
        d.size = 4096;
        d.size_with_padding = 7591;
        d.extra = ObjectMetadata::Partition {
            fs_type: FsType::SQUASHFS,
            part_type: PartType::PRIMARY_SYSTEM,
            arch: Arch::AMD64,
        }
        .encode()
        .expect("partition metadata fits");
        let bytes = d.encode();
        // Spec §1.8, descriptor 2 at 0x1492.
        assert_eq!(
            &bytes[..13],
            &[0x04, 0x40, 0, 0, 1, 3, 0, 0, 0, 1, 0, 0, 0xf0]
        );
        assert_eq!(&bytes[17..21], &[0x00, 0x90, 0, 0]);
        assert_eq!(&bytes[201..212], &[1, 0, 0, 0, 2, 0, 0, 0, b'0', b'2', 0]);
        let back = Descriptor::decode(&bytes);
        assert_eq!(back, d);
        assert_eq!(back.group(), Some(1));
        assert_eq!(back.link(), Link::None);
        assert_eq!(
            back.metadata(),
            ObjectMetadata::Partition {
                fs_type: FsType::SQUASHFS,
                part_type: PartType::PRIMARY_SYSTEM,
                arch: Arch::AMD64
            }
        );
    }

    #[test]
    fn any_non_zero_used_byte_means_used() {
        let mut bytes = [0; DESCRIPTOR_LEN];
        bytes[4] = 7;
        assert!(Descriptor::decode(&bytes).used);
    }

    #[test]
    fn links_keep_object_and_group_apart() {
        assert_eq!(Link::from_raw(0), Link::None);
        assert_eq!(Link::from_raw(GROUP_MASK), Link::None);
        assert_eq!(Link::from_raw(5), Link::Object(5));
        assert_eq!(Link::from_raw(0xF000_0001), Link::Group(1));
        for link in [Link::None, Link::Object(9), Link::Group(2)] {
            assert_eq!(Link::from_raw(link.to_raw()), link);
        }
    }

    #[test]
    fn arch_codes_follow_the_sif_table() {
        assert_eq!(Arch::from_go_arch("amd64"), Some(Arch::AMD64));
        assert_eq!(Arch::from_go_arch("riscv64"), Some(Arch(*b"12\0")));
        assert_eq!(Arch::from_go_arch("sparc"), None);
        assert_eq!(Arch::ARM64.go_arch(), "arm64");
        assert_eq!(Arch(*b"99\0").go_arch(), "unknown");
        assert!(!Arch::UNKNOWN.is_known());
    }

    #[test]
    fn metadata_round_trips_and_names_its_labels() {
        let mut entity = [0; ENTITY_LEN];
        entity[..4].copy_from_slice(&[0x12, 0x04, 0x5c, 0x8c]);
        let cases = [
            (
                DataType::SIGNATURE,
                ObjectMetadata::Signature {
                    hash_type: HashType::SHA256,
                    entity: Box::new(entity),
                },
            ),
            (
                DataType::CRYPTO_MESSAGE,
                ObjectMetadata::CryptoMessage {
                    format: FormatType::PEM,
                    message: MessageType::RSA_OAEP,
                },
            ),
            (
                DataType::SBOM,
                ObjectMetadata::Sbom {
                    format: SbomFormat::SPDX_JSON,
                },
            ),
            (
                DataType::OCI_BLOB,
                ObjectMetadata::OciBlob {
                    digest: b"sha256:0123".to_vec(),
                },
            ),
            (DataType::GENERIC_JSON, ObjectMetadata::None),
        ];
        for (data_type, metadata) in cases {
            let extra = metadata.encode().expect("fits");
            assert_eq!(ObjectMetadata::decode(data_type, &extra), metadata);
        }
        assert_eq!(
            ObjectMetadata::Signature {
                hash_type: HashType::SHA256,
                entity: Box::new(entity)
            }
            .fingerprint()
            .map(<[u8]>::len),
            Some(FINGERPRINT_LEN)
        );
        assert_eq!(
            ObjectMetadata::Signature {
                hash_type: HashType::SHA256,
                entity: Box::new([0; ENTITY_LEN])
            }
            .fingerprint(),
            None
        );
        assert!(
            ObjectMetadata::OciBlob {
                digest: vec![b'a'; EXTRA_LEN + 1]
            }
            .encode()
            .is_none()
        );
        assert_eq!(DataType(0x4004).label(), "FS");
        assert_eq!(DataType(0x4100).label(), "Unknown");
        assert_eq!(PartType::PRIMARY_SYSTEM.label(), "*System");
        assert_eq!(SbomFormat(42).label(), "unknown");
    }
}
