//! The four Kafka codecs, for the paths that must look inside batches (compaction, timestamp
//! lookups). The produce and fetch paths never call this module.
//!
//! Framing follows what Kafka's Java client writes so that rewritten batches read back in every
//! client: gzip streams, snappy in xerial's block framing (raw snappy is also accepted on
//! decode, as librdkafka and Java both do), lz4 in the LZ4 frame format, zstd frames.

use std::io::{Read, Write};

use crate::batch::Compression;
use crate::error::StorageError;

/// Upper bound on a decompressed batch, so a hostile or corrupt batch cannot make the cleaner
/// allocate without limit.
pub const MAX_DECOMPRESSED: usize = 256 * 1024 * 1024;

const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_LEN: usize = 16;
const XERIAL_BLOCK: usize = 32 * 1024;

fn err(codec: &'static str, reason: impl ToString) -> StorageError {
    StorageError::Compression {
        codec,
        reason: reason.to_string(),
    }
}

/// Read a decompressing stream to its end, refusing output beyond [`MAX_DECOMPRESSED`].
fn read_bounded(codec: &'static str, reader: impl Read) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::new();
    reader
        .take(MAX_DECOMPRESSED as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| err(codec, e))?;
    if out.len() > MAX_DECOMPRESSED {
        return Err(err(codec, "decompressed batch exceeds the size limit"));
    }
    Ok(out)
}

pub fn decompress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, StorageError> {
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => read_bounded("gzip", flate2::read::GzDecoder::new(data)),
        Compression::Snappy => snappy_decompress(data),
        Compression::Lz4 => read_bounded("lz4", lz4_flex::frame::FrameDecoder::new(data)),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(data).map_err(|e| err("zstd", e))?;
            read_bounded("zstd", decoder)
        }
    }
}

pub fn compress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, StorageError> {
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(data).map_err(|e| err("gzip", e))?;
            enc.finish().map_err(|e| err("gzip", e))
        }
        Compression::Snappy => snappy_compress_xerial(data),
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(data).map_err(|e| err("lz4", e))?;
            enc.finish().map_err(|e| err("lz4", e))
        }
        Compression::Zstd => zstd::bulk::compress(data, 3).map_err(|e| err("zstd", e)),
    }
}

fn snappy_decompress(data: &[u8]) -> Result<Vec<u8>, StorageError> {
    if data.len() >= XERIAL_HEADER_LEN && data[..8] == XERIAL_MAGIC {
        let mut out = Vec::new();
        let mut at = XERIAL_HEADER_LEN;
        while at < data.len() {
            let len_bytes = data
                .get(at..at + 4)
                .ok_or_else(|| err("snappy", "truncated xerial block length"))?;
            let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]])
                as usize;
            at += 4;
            let block = data
                .get(at..at.saturating_add(len))
                .ok_or_else(|| err("snappy", "truncated xerial block"))?;
            let n = snap::raw::decompress_len(block).map_err(|e| err("snappy", e))?;
            if out.len() + n > MAX_DECOMPRESSED {
                return Err(err("snappy", "decompressed batch exceeds the size limit"));
            }
            let start = out.len();
            out.resize(start + n, 0);
            snap::raw::Decoder::new()
                .decompress(block, &mut out[start..])
                .map_err(|e| err("snappy", e))?;
            at += len;
        }
        Ok(out)
    } else {
        let n = snap::raw::decompress_len(data).map_err(|e| err("snappy", e))?;
        if n > MAX_DECOMPRESSED {
            return Err(err("snappy", "decompressed batch exceeds the size limit"));
        }
        snap::raw::Decoder::new()
            .decompress_vec(data)
            .map_err(|e| err("snappy", e))
    }
}

/// xerial framing: 8-byte magic, version 1, compatible version 1, then (u32 length, raw
/// snappy block) pairs.
fn snappy_compress_xerial(data: &[u8]) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::with_capacity(data.len() / 2 + XERIAL_HEADER_LEN);
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    let mut encoder = snap::raw::Encoder::new();
    for chunk in data.chunks(XERIAL_BLOCK) {
        let block = encoder.compress_vec(chunk).map_err(|e| err("snappy", e))?;
        out.extend_from_slice(&(block.len() as u32).to_be_bytes());
        out.extend_from_slice(&block);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let c = compress(codec, &data).unwrap();
            assert_eq!(decompress(codec, &c).unwrap(), data, "{codec:?}");
        }
    }

    #[test]
    fn raw_snappy_is_accepted() {
        let data = b"hello hello hello hello".repeat(100);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(decompress(Compression::Snappy, &raw).unwrap(), data);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert!(
                decompress(codec, &[0xde, 0xad, 0xbe, 0xef, 1, 2, 3]).is_err(),
                "{codec:?}"
            );
        }
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
        assert!(decompress(Compression::Snappy, &xerial).is_err());
    }
}
