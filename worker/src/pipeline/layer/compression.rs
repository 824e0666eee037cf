//! Layer blob decompression: gzip, zstd or plain tar, told apart by magic bytes.
//!
//! Media types are checked by the registry client, but the bytes decide how to read a blob:
//! old Docker images label plain tarballs `tar.gzip`, and sniffing costs four bytes.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::mpsc;

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

/// Decompressed bytes handed from the decompressing thread to the applier at a time.
const PIPE_CHUNK: usize = 1 << 20;
/// Chunks in flight between the two threads (memory: this many times [`PIPE_CHUNK`]).
const PIPE_DEPTH: usize = 4;

/// Runs `apply` on the decompressed stream of `blob`, decompressing on a second thread so that
/// inflating and writing files overlap, as `tar -xz` overlaps them with a `gzip` process. A
/// plain tar is read directly.
///
/// # Errors
/// Reading or decompressing the blob failed, or `apply` failed (its error comes first).
pub(super) fn with_decompressed<T, E>(
    blob: impl Read + Send,
    apply: impl FnOnce(Compression, &mut dyn Read) -> Result<T, E>,
    read_error: impl Fn(io::Error) -> E,
) -> Result<T, E> {
    let (compression, mut stream) = decompress(blob).map_err(&read_error)?;
    if compression == Compression::None {
        return apply(compression, &mut stream);
    }
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(PIPE_DEPTH);
        let pump = scope.spawn(move || pump(&mut stream, &tx));
        let mut reader = ChannelReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        };
        let result = apply(compression, &mut reader);
        // Hang up first, so a pump blocked on a full channel ends.
        drop(reader);
        match pump.join() {
            Ok(()) => result,
            Err(_) => result.and(Err(read_error(io::Error::other(
                "layer decompression thread panicked",
            )))),
        }
    })
}

/// Reads `stream` into the channel until EOF (the sender is then dropped), an error (sent), or
/// the receiver hanging up.
fn pump(stream: &mut dyn Read, tx: &mpsc::SyncSender<io::Result<Vec<u8>>>) {
    loop {
        let mut chunk = vec![0u8; PIPE_CHUNK];
        let mut filled = 0;
        let outcome = loop {
            match stream.read(&mut chunk[filled..]) {
                Ok(0) => break Ok(true),
                Ok(n) => {
                    filled += n;
                    if filled == chunk.len() {
                        break Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        chunk.truncate(filled);
        match outcome {
            Ok(at_end) => {
                if !chunk.is_empty() && tx.send(Ok(chunk)).is_err() {
                    return;
                }
                if at_end {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// The receiving end of [`pump`]: the sender hanging up is the end of the stream.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk?;
                    self.pos = 0;
                }
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
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
    fn the_decompressing_thread_delivers_every_byte_and_errors() {
        // Several chunks' worth, so the channel fills and drains.
        let plain: Vec<u8> = (0..3 * PIPE_CHUNK + 17).map(|i| (i % 253) as u8).collect();
        let zst = zstd::encode_all(&plain[..], 1).unwrap();
        let got = with_decompressed(
            &zst[..],
            |c, r| {
                let mut out = Vec::new();
                r.read_to_end(&mut out).map(|_| (c, out))
            },
            |e| e,
        )
        .unwrap();
        assert_eq!(got, (Compression::Zstd, plain.clone()));

        // A consumer that stops early does not hang the pump.
        let first = with_decompressed(&zst[..], |_, r| r.read(&mut [0u8; 10]), |e| e).unwrap();
        assert!(first > 0);

        // A corrupt stream is an error, not a short read.
        let mut bad = zst.clone();
        bad.truncate(zst.len() / 2);
        let err = with_decompressed(&bad[..], |_, r| r.read_to_end(&mut Vec::new()), |e| e);
        assert!(err.is_err());
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
