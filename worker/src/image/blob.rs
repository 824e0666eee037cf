//! Opening a layer blob as a tar stream: gzip, zstd or plain tar, told apart by magic bytes (the
//! media type is not trusted, and a worker's cache stores blobs by digest only). The detection
//! and the decoders are the layer applier's ([`decompress`]), so both readers of a blob agree.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::image::{ImageError, Result};
use crate::pipeline::layer::decompress;

/// Opens the blob at `path` and returns its decompressed tar stream.
pub fn open_blob(path: &Path) -> Result<Box<dyn Read + Send>> {
    let open_err = |source| ImageError::OpenLayer {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(open_err)?;
    let (_, stream) = decompress(file).map_err(open_err)?;
    Ok(stream)
}
