//! Opening a layer blob as a tar stream: gzip, zstd or plain tar, told apart by magic bytes (the
//! media type is not trusted, and a worker's cache stores blobs by digest only).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use crate::image::{ImageError, Result};

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Opens the blob at `path` and returns its decompressed tar stream.
pub fn open_blob(path: &Path) -> Result<Box<dyn Read + Send>> {
    let open_err = |source| ImageError::OpenLayer {
        path: path.to_owned(),
        source,
    };
    let mut file = BufReader::with_capacity(1 << 20, File::open(path).map_err(open_err)?);
    let head = file.fill_buf().map_err(open_err)?;
    Ok(if head.starts_with(GZIP_MAGIC) {
        // Multi-member gzip is legal for layers (pigz, some registries).
        Box::new(flate2::bufread::MultiGzDecoder::new(file))
    } else if head.starts_with(ZSTD_MAGIC) {
        Box::new(zstd::stream::read::Decoder::with_buffer(file).map_err(open_err)?)
    } else {
        Box::new(file)
    })
}
