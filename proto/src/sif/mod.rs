//! The Singularity Image Format (SIF v2, spec version "01"): what the worker writes as the result
//! of a build, what the library stores and what stock `singularity`/`siftool` read.
//!
//! Contract: `specs/sif-squashfs.md` §1-2 (layout, object kinds, what `singularity build`
//! writes); upstream sylabs/sif `pkg/sif`. A SIF is a 128-byte [`GlobalHeader`], a table of
//! [`Descriptor`]s (48 slots of 585 bytes at 4096 by default) and the data objects they describe,
//! each at an offset satisfying its alignment (4 KiB for partitions).
//!
//! - [`format`]: the on-disk structs and codes, pure encode/decode;
//! - [`SifReader`]: validates a whole image against its own length before trusting any offset,
//!   then lists and reads objects through bounded windows;
//! - [`SifWriter`]: streams objects from a `Read` or hands out a `Write + Seek` window into the
//!   image, and writes the header and descriptors last;
//! - [`SiftoolList`]: the object table formatted as `siftool list` prints it.
//!
//! Nothing here opens files: every function works on the `Read`/`Write`/`Seek` it is given.

pub mod format;
mod listing;
mod reader;
mod writer;

use std::io::{self, Read, Seek, SeekFrom, Write};

pub use format::{
    Arch, DataType, Descriptor, FormatType, FsType, GlobalHeader, HashType, Link, MessageType,
    ObjectMetadata, PartType, SbomFormat,
};
pub use listing::SiftoolList;
pub use reader::{MAX_DESCRIPTORS, ObjectReader, SifReader};
pub use writer::{CreateOptions, ObjectInput, ObjectWriter, SifWriter, write_singularity_image};

/// Result of SIF operations.
pub type Result<T> = std::result::Result<T, SifError>;

/// Everything that can go wrong reading or writing a SIF.
#[derive(Debug, thiserror::Error)]
pub enum SifError {
    /// The underlying reader or writer failed while measuring or positioning in the image.
    #[error("failed to seek in the sif image")]
    Seek(#[source] io::Error),
    /// The file ends before the 128-byte global header does.
    #[error("sif image of {len} bytes is too short for the 128-byte global header")]
    TruncatedHeader {
        /// Length of the file, bytes.
        len: u64,
    },
    /// Reading the global header failed.
    #[error("failed to read the sif global header")]
    ReadHeader(#[source] io::Error),
    /// The magic is not `SIF_MAGIC\0`.
    #[error("not a sif image: bad magic \"{}\"", found.escape_ascii())]
    BadMagic {
        /// The 10 bytes found at 0x20.
        found: [u8; 10],
    },
    /// The spec version is not `01`.
    #[error("unsupported sif version \"{}\", expected \"01\\0\"", found.escape_ascii())]
    UnsupportedVersion {
        /// The 3 bytes found at 0x2A.
        found: [u8; 3],
    },
    /// A header field is out of range or inconsistent with the others or the file length.
    #[error("malformed sif global header: {reason}")]
    MalformedHeader {
        /// What is wrong, naming the field.
        reason: String,
    },
    /// Reading the descriptor table failed.
    #[error("failed to read the sif descriptor table")]
    ReadDescriptors(#[source] io::Error),
    /// An object descriptor is out of range or collides with another part of the image.
    #[error("malformed sif descriptor of object {id}: {reason}")]
    MalformedDescriptor {
        /// The object ID as stored.
        id: u32,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// No object has this ID.
    #[error("sif image has no object {id}")]
    ObjectNotFound {
        /// The ID asked for.
        id: u32,
    },
    /// An object is larger than the caller allowed to load into memory.
    #[error("sif object {id} is {size} bytes, more than the {limit} allowed in memory")]
    ObjectTooLarge {
        /// The object ID.
        id: u32,
        /// Its size, bytes.
        size: u64,
        /// The caller's limit, bytes.
        limit: u64,
    },
    /// Reading an object's data failed.
    #[error("failed to read sif object {id}")]
    ReadObject {
        /// The object ID.
        id: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing an object's data to the caller's output failed.
    #[error("failed to copy sif object {id} out")]
    CopyObject {
        /// The object ID.
        id: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A writer parameter is invalid (launch script too long, name too long, bad group…).
    #[error("invalid sif parameter: {reason}")]
    InvalidParameter {
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// All descriptor slots are used.
    #[error("sif image has no free descriptor slot (capacity {capacity})")]
    NoFreeDescriptor {
        /// Number of slots in the image.
        capacity: u32,
    },
    /// A second primary system partition was added.
    #[error("sif image already has a primary system partition")]
    SecondPrimaryPartition,
    /// An [`ObjectWriter`] was dropped without `finish`, so the image state is unknown.
    #[error("a sif object writer was dropped before finish; the image is incomplete")]
    UnfinishedObject,
    /// An offset or size no longer fits the format's signed 64-bit fields.
    #[error("sif image grew past the largest offset the format can store")]
    TooLarge,
    /// Reading the data of a new object from the caller's reader failed.
    #[error("failed to read the data of sif {part}")]
    ReadSource {
        /// Which object (`object 3`).
        part: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing to the output failed.
    #[error("failed to write the sif {part}")]
    Write {
        /// Which part was being written (`header`, `descriptor table`, `object 3`…).
        part: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Which side of a [`copy_stream`] failed.
enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `from` to `to` through one heap buffer of [`writer::COPY_BUFFER_LEN`] bytes; returns
/// the bytes copied. Unlike `io::copy` it says which side failed.
fn copy_stream<R: Read, W: Write>(from: &mut R, to: &mut W) -> std::result::Result<u64, CopyError> {
    let mut buf = vec![0; writer::COPY_BUFFER_LEN];
    let mut copied = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
        copied += n as u64;
    }
}

/// Seeks `inner` inside a window of `len` bytes that starts at file offset `start` and whose
/// cursor is at `pos`, as `Seek` on a file does: positions past the end are allowed, before the
/// start are an error. Returns the new cursor, relative to `start`.
fn seek_window<S: Seek>(
    inner: &mut S,
    start: u64,
    pos: u64,
    len: u64,
    target: SeekFrom,
) -> io::Result<u64> {
    let (base, delta) = match target {
        SeekFrom::Start(n) => (n, 0),
        SeekFrom::Current(d) => (pos, d),
        SeekFrom::End(d) => (len, d),
    };
    let pos = base
        .checked_add_signed(delta)
        .filter(|pos| start.checked_add(*pos).is_some())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of a sif object, or past 2^64",
            )
        })?;
    inner.seek(SeekFrom::Start(start + pos))?;
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Cursor;

    #[test]
    fn seeks_inside_the_window_like_a_file() {
        let mut file = Cursor::new(vec![0; 100]);
        let mut seek = |target| seek_window(&mut file, 20, 5, 10, target).ok();
        assert_eq!(seek(SeekFrom::Start(3)), Some(3));
        assert_eq!(seek(SeekFrom::Current(-5)), Some(0));
        assert_eq!(seek(SeekFrom::End(2)), Some(12));
        assert_eq!(seek(SeekFrom::Current(-6)), None);
        assert_eq!(seek(SeekFrom::End(-11)), None);
        assert_eq!(seek(SeekFrom::Start(u64::MAX - 10)), None);
        assert_eq!(
            seek_window(&mut file, 20, 0, 10, SeekFrom::End(-1)).ok(),
            Some(9)
        );
        assert_eq!(file.position(), 29);
    }
}
