//! Block compressors for the four codecs Kiln writes, and their SquashFS ids and option blocks.
//!
//! Every data block, fragment block and metadata block goes through [`BlockCompressor::compress`];
//! a block that does not shrink is stored raw, as the format allows. Each compression thread owns
//! its own compressor (the C libraries keep per-stream state).

use std::fmt;
use std::str::FromStr;

use super::format::METADATA_BYTES;
use crate::image::{ImageError, Result};

/// A SquashFS compressor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// zlib streams (SquashFS id 1). The only codec every runtime reads: SingularityCE's image
    /// check rejects zstd and xz/lz4 depend on the host kernel's build options.
    Gzip,
    /// LZMA2 in xz containers with CRC32 checks (id 4).
    Xz,
    /// LZ4 block format (id 5).
    Lz4,
    /// Zstandard frames (id 6).
    Zstd,
}

impl Codec {
    /// The superblock `compression` id.
    pub fn id(self) -> u16 {
        match self {
            Codec::Gzip => 1,
            Codec::Xz => 4,
            Codec::Lz4 => 5,
            Codec::Zstd => 6,
        }
    }

    /// Level used when none is given: mksquashfs's defaults for gzip (9) and xz (preset 6);
    /// zstd 3 rather than mksquashfs's 15, which is 40 times slower for 7% less size.
    pub fn default_level(self) -> u32 {
        match self {
            Codec::Gzip => 9,
            Codec::Xz => 6,
            Codec::Lz4 => 0,
            Codec::Zstd => 3,
        }
    }

    /// Accepted levels: gzip 1–12 (libdeflate; 10–12 compress harder than zlib can), xz 0–9,
    /// zstd 1–22; lz4 has a single level (0).
    pub fn level_range(self) -> (u32, u32) {
        match self {
            Codec::Gzip => (1, 12),
            Codec::Xz => (0, 9),
            Codec::Lz4 => (0, 0),
            Codec::Zstd => (1, 22),
        }
    }

    /// A warning when images of this codec may not run everywhere, `None` for gzip.
    pub fn portability_warning(self) -> Option<&'static str> {
        match self {
            Codec::Gzip => None,
            Codec::Zstd => Some(
                "SingularityCE rejects zstd-compressed images; use gzip for Singularity targets",
            ),
            Codec::Xz | Codec::Lz4 => Some(
                "the target kernel or squashfuse may lack this compressor; gzip runs everywhere",
            ),
        }
    }

    /// The compressor options block written after the superblock, when the format needs one or
    /// the settings differ from what readers assume (mksquashfs's rule).
    pub fn options_block(self, level: u32) -> Option<Vec<u8>> {
        match self {
            // Readers assume level 9, window 15. libdeflate levels above 9 have no zlib
            // equivalent; decompression does not depend on the level, so nothing is stored.
            Codec::Gzip if level < 9 => {
                let mut b = level.to_le_bytes().to_vec();
                b.extend_from_slice(&15u16.to_le_bytes());
                b.extend_from_slice(&0u16.to_le_bytes());
                Some(b)
            }
            Codec::Gzip => None,
            // Without options the kernel assumes dictionary size = block size, which is what
            // the encoder uses.
            Codec::Xz => None,
            // LZ4 options are mandatory: version 1 (legacy), no HC flag.
            Codec::Lz4 => {
                let mut b = 1u32.to_le_bytes().to_vec();
                b.extend_from_slice(&0u32.to_le_bytes());
                Some(b)
            }
            Codec::Zstd if level != 15 => Some(level.to_le_bytes().to_vec()),
            Codec::Zstd => None,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::Gzip => "gzip",
            Codec::Xz => "xz",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        })
    }
}

impl FromStr for Codec {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gzip" => Ok(Codec::Gzip),
            "xz" => Ok(Codec::Xz),
            "lz4" => Ok(Codec::Lz4),
            "zstd" => Ok(Codec::Zstd),
            other => Err(ImageError::UnknownCodec(other.to_owned())),
        }
    }
}

/// Compresses one block at a time.
pub trait BlockCompressor: Send {
    /// Compresses `input` into `out` (cleared first). Returns `false`, leaving `out`
    /// unspecified, when the result would not be smaller than the input: the caller then stores
    /// the block raw.
    fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool>;
}

/// A compressor for `codec` at `level` (already validated) and the given block size.
pub fn new_compressor(
    codec: Codec,
    level: u32,
    block_size: u32,
) -> Result<Box<dyn BlockCompressor>> {
    Ok(match codec {
        Codec::Gzip => {
            let lvl = libdeflater::CompressionLvl::new(level as i32)
                .map_err(|_| ImageError::BadLevel { codec, level })?;
            Box::new(Gzip(libdeflater::Compressor::new(lvl)))
        }
        Codec::Zstd => Box::new(Zstd(
            zstd::bulk::Compressor::new(level as i32).map_err(ImageError::CompressorInit)?,
        )),
        Codec::Xz => {
            liblzma::stream::LzmaOptions::new_preset(level)
                .map_err(|_| ImageError::BadLevel { codec, level })?;
            // The kernel sizes its dictionary from the block size when no options block is
            // present, so a larger encoder dictionary would make blocks unreadable.
            Box::new(Xz {
                preset: level,
                dict_size: block_size.max(METADATA_BYTES as u32),
            })
        }
        Codec::Lz4 => Box::new(Lz4),
    })
}

struct Gzip(libdeflater::Compressor);

impl BlockCompressor for Gzip {
    fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        // An output buffer one byte short of the input makes libdeflate give up as soon as the
        // block would not shrink, instead of finishing a useless compression.
        out.clear();
        out.resize(input.len().saturating_sub(1), 0);
        match self.0.zlib_compress(input, out) {
            Ok(n) => {
                out.truncate(n);
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }
}

struct Zstd(zstd::bulk::Compressor<'static>);

impl BlockCompressor for Zstd {
    fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        out.clear();
        // zstd writes at most the Vec's capacity and fails when that is too small.
        out.reserve(input.len().saturating_sub(1));
        match self.0.compress_to_buffer(input, out) {
            Ok(n) => Ok(n < input.len()),
            Err(_) => Ok(false),
        }
    }
}

/// liblzma's filter chain holds raw pointers (not `Send`), so it is built per block; that costs
/// nothing next to LZMA2 itself.
struct Xz {
    preset: u32,
    dict_size: u32,
}

impl BlockCompressor for Xz {
    fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        let mut opts = liblzma::stream::LzmaOptions::new_preset(self.preset)
            .map_err(|e| ImageError::CompressorInit(e.into()))?;
        opts.dict_size(self.dict_size);
        let mut filters = liblzma::stream::Filters::new();
        filters.lzma2(&opts);
        let mut stream =
            liblzma::stream::Stream::new_stream_encoder(&filters, liblzma::stream::Check::Crc32)
                .map_err(|e| ImageError::CompressorInit(e.into()))?;
        out.clear();
        out.reserve(input.len() + input.len() / 2 + 1024);
        loop {
            let status = stream
                .process_vec(input, out, liblzma::stream::Action::Finish)
                .map_err(|e| ImageError::CompressorInit(e.into()))?;
            if status == liblzma::stream::Status::StreamEnd {
                break;
            }
            out.reserve(out.capacity());
        }
        Ok(out.len() < input.len())
    }
}

struct Lz4;

impl BlockCompressor for Lz4 {
    fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        out.clear();
        out.resize(lz4_flex::block::get_maximum_output_size(input.len()), 0);
        let n = lz4_flex::block::compress_into(input, out)
            .map_err(|e| ImageError::Lz4(e.to_string()))?;
        out.truncate(n);
        Ok(n < input.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_shrinks_text_and_refuses_noise() {
        let text: Vec<u8> = b"squashfs block "
            .iter()
            .copied()
            .cycle()
            .take(131072)
            .collect();
        // xorshift noise: incompressible, deterministic.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..131072)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for codec in [Codec::Gzip, Codec::Xz, Codec::Lz4, Codec::Zstd] {
            let mut c = new_compressor(codec, codec.default_level(), 131072).unwrap();
            let mut out = Vec::new();
            assert!(
                c.compress(&text, &mut out).unwrap(),
                "{codec} did not compress text"
            );
            assert!(out.len() < text.len() / 10, "{codec}: {}", out.len());
            assert!(
                !c.compress(&noise, &mut out).unwrap(),
                "{codec} claims to shrink noise"
            );
        }
    }

    #[test]
    fn gzip_output_is_a_zlib_stream() {
        let mut c = new_compressor(Codec::Gzip, 9, 131072).unwrap();
        let input = vec![7u8; 5000];
        let mut out = Vec::new();
        assert!(c.compress(&input, &mut out).unwrap());
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&out[..]), &mut back)
            .unwrap();
        assert_eq!(back, input);
    }

    #[test]
    fn codec_names_parse_and_unknown_ones_fail() {
        assert_eq!("zstd".parse::<Codec>().unwrap(), Codec::Zstd);
        assert!("lzo".parse::<Codec>().is_err());
        assert!(Codec::Gzip.portability_warning().is_none());
        assert!(Codec::Zstd.portability_warning().is_some());
    }
}
