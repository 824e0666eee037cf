//! Layer blob decompression: gzip, zstd or plain tar, told apart by magic bytes.
//!
//! Media types are checked by the registry client, but the bytes decide how to read a blob:
//! old Docker images label plain tarballs `tar.gzip`, and sniffing costs four bytes.

use std::io::{self, BufRead, BufReader, Read};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (RFC 1952), possibly several members.
    Gzip,
    /// zstd frames.
    Zstd,
}

impl Compression {
    /// Tells the compression from the first bytes of a blob.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }
}

/// Wraps a layer blob in the decoder its first bytes call for, returning the tar stream.
///
/// # Errors
/// Reading the first bytes or setting up the zstd decoder failed.
pub fn decompress<'a>(
    blob: impl Read + Send + 'a,
) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    // 128 KiB: large reads keep the decoders fed without a second copy.
    let mut reader = BufReader::with_capacity(128 * 1024, blob);
    let compression = Compression::sniff(reader.fill_buf()?);
    let stream: Box<dyn Read + Send + 'a> = match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
    };
    Ok((compression, stream))
}

/// A reader that fails once more than `limit` bytes have come through, so a decompression bomb
/// stops at the configured bound instead of filling the disk or memory.
pub(super) struct LimitedReader<R> {
    inner: R,
    remaining: u64,
}

impl<R> LimitedReader<R> {
    pub(super) fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            remaining: limit,
        }
    }
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            // One byte more tells a stream that ends exactly at the bound from one that goes on.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    "layer stream exceeds the size bound",
                )),
            };
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn each_codec_round_trips() {
        let plain = b"hello layer".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&plain[..], 3).unwrap();
        for (blob, want) in [
            (plain.clone(), Compression::None),
            (gz, Compression::Gzip),
            (zst, Compression::Zstd),
        ] {
            let (got, mut r) = decompress(&blob[..]).unwrap();
            assert_eq!(got, want);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, plain);
        }
    }

    #[test]
    fn limited_reader_stops_past_the_bound_only() {
        let mut exact = LimitedReader::new(&[1u8; 10][..], 10);
        assert_eq!(io::copy(&mut exact, &mut io::sink()).unwrap(), 10);
        let mut over = LimitedReader::new(&[1u8; 11][..], 10);
        assert_eq!(
            io::copy(&mut over, &mut io::sink()).unwrap_err().kind(),
            io::ErrorKind::FileTooLarge
        );
    }
}
