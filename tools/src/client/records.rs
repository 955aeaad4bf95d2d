//! Record batches (magic v2): encoding for produce through kafka-protocol's `records` module, and
//! a bounded decoder of our own for fetch.
//!
//! Why not kafka-protocol's decoder: it sizes vectors and header maps from counts it has not
//! checked against the bytes present (a hostile count makes the process abort on allocation), it
//! decompresses without a size limit, it keeps one value per header key, and it drops the
//! LogAppendTime flag's meaning (such records carry the batch's max timestamp). Here every count
//! and length is checked against the bytes that are really there, decompression stops at
//! [`MAX_DECOMPRESSED`], and headers keep their order and duplicates.

use std::io::Read;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Fixed part of a v2 batch, up to and including the record count.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before `batchLength` counts: base offset (8) and the length itself (4).
const LOG_OVERHEAD: usize = 12;
/// Upper bound on one batch's decompressed records; a batch claiming more is refused.
pub const MAX_DECOMPRESSED: usize = 128 * 1024 * 1024;
/// Smallest encoding of one record: length, attributes, timestamp delta, offset delta, key
/// length, value length, header count (one byte each).
const MIN_RECORD_LEN: usize = 7;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record batch at offset {offset}: {message}")]
    Corrupt { offset: i64, message: String },
    #[error("cannot encode records: {0}")]
    Encode(String),
}

/// Codec names as the CLI accepts them.
pub fn parse_compression(s: &str) -> Option<Compression> {
    Some(match s {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        _ => return None,
    })
}

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct OutRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
    pub timestamp: i64,
}

/// Encodes `records` as one v2 batch (no producer id, base sequence -1).
///
/// Header keys must be unique within a record: the encoder's header map keeps one value per key.
pub fn encode_batch(
    records: &[OutRecord],
    compression: Compression,
    out: &mut BytesMut,
) -> Result<(), RecordError> {
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut headers = IndexMap::with_capacity(r.headers.len());
            for (k, v) in &r.headers {
                headers.insert(StrBytes::from_string(k.clone()), Some(v.clone()));
            }
            to_record(
                i as i64,
                r.timestamp,
                r.key.clone(),
                r.value.clone(),
                headers,
            )
        })
        .collect();
    encode_records(&recs, compression, out)
}

/// A record for [`encode_records`] at position `index` of its batch.
pub fn to_record(
    index: i64,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: IndexMap<StrBytes, Option<Bytes>>,
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        // The encoder splits batches wherever offset - sequence changes, and derives the base
        // sequence from the first record: offset-1 keeps one batch with base sequence -1.
        sequence: (index as i32).wrapping_sub(1),
        timestamp_type: TimestampType::Creation,
        offset: index,
        timestamp,
        key,
        value,
        headers,
    }
}

/// Encodes already built records (offsets 0..n, see [`to_record`]) as one batch.
pub fn encode_records(
    records: &[Record],
    compression: Compression,
    out: &mut BytesMut,
) -> Result<(), RecordError> {
    RecordBatchEncoder::encode(
        out,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| RecordError::Encode(format!("{e:#}")))
}

/// A record read from a fetch response.
#[derive(Debug, Clone, PartialEq)]
pub struct InRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub log_append_time: bool,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

/// What one fetched partition's `records` held.
#[derive(Debug, Default)]
pub struct Decoded {
    pub records: Vec<InRecord>,
    /// The offset to fetch next: after the last complete batch (control batches included), or
    /// the fetch offset if no batch was complete.
    pub next_offset: Option<i64>,
    /// Bytes of batches seen (compressed size), for throughput figures.
    pub bytes: usize,
}

/// Decodes every complete batch in `data`, skipping control batches and records below
/// `min_offset` (a fetch may start inside a batch). A trailing partial batch, which brokers
/// may send when they cut a response at its size limit, is ignored.
pub fn decode_batches(mut data: Bytes, min_offset: i64) -> Result<Decoded, RecordError> {
    let mut out = Decoded::default();
    while data.len() >= LOG_OVERHEAD {
        let base_offset = i64::from_be_bytes(data[0..8].try_into().unwrap_or_default());
        let len = i32::from_be_bytes(data[8..12].try_into().unwrap_or_default());
        let corrupt = |message: String| RecordError::Corrupt {
            offset: base_offset,
            message,
        };
        let Ok(len) = usize::try_from(len) else {
            return Err(corrupt(format!("negative batch length {len}")));
        };
        if LOG_OVERHEAD + len > data.len() {
            break;
        }
        let batch = data.split_to(LOG_OVERHEAD + len);
        out.bytes += batch.len();
        if batch.len() < BATCH_HEADER_LEN {
            return Err(corrupt(format!(
                "{}-byte batch is shorter than its header",
                batch.len()
            )));
        }
        let magic = batch[16] as i8;
        if magic != 2 {
            return Err(corrupt(format!(
                "message format v{magic} is not supported (only v2 record batches)"
            )));
        }
        let h = BatchHeader::parse(&batch);
        let crc = u32::from_be_bytes(batch[17..21].try_into().unwrap_or_default());
        if crc32c::crc32c(&batch[21..]) != crc {
            return Err(corrupt("CRC mismatch".into()));
        }
        out.next_offset = Some(base_offset + i64::from(h.last_offset_delta) + 1);
        if h.attributes & 0x20 != 0 {
            continue; // control batch (transaction marker)
        }
        let body = batch.slice(BATCH_HEADER_LEN..);
        let body = decompress(h.attributes & 0x7, body).map_err(corrupt)?;
        let count = usize::try_from(h.record_count)
            .map_err(|_| corrupt(format!("negative record count {}", h.record_count)))?;
        if count > body.len() / MIN_RECORD_LEN {
            return Err(corrupt(format!(
                "{count} records cannot fit in {} bytes",
                body.len()
            )));
        }
        let log_append_time = h.attributes & 0x08 != 0;
        let mut buf = body;
        out.records.reserve(count);
        for _ in 0..count {
            let mut r = read_record(&mut buf, base_offset, h.first_timestamp).map_err(corrupt)?;
            if log_append_time {
                r.timestamp = h.max_timestamp;
                r.log_append_time = true;
            }
            if r.offset >= min_offset {
                out.records.push(r);
            }
        }
    }
    Ok(out)
}

struct BatchHeader {
    attributes: i16,
    last_offset_delta: i32,
    first_timestamp: i64,
    max_timestamp: i64,
    record_count: i32,
}

impl BatchHeader {
    /// `b` is at least [`BATCH_HEADER_LEN`] bytes long.
    fn parse(b: &[u8]) -> BatchHeader {
        let i16_at = |o: usize| i16::from_be_bytes([b[o], b[o + 1]]);
        let i32_at = |o: usize| i32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let i64_at = |o: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[o..o + 8]);
            i64::from_be_bytes(x)
        };
        BatchHeader {
            attributes: i16_at(21),
            last_offset_delta: i32_at(23),
            first_timestamp: i64_at(27),
            max_timestamp: i64_at(35),
            record_count: i32_at(57),
        }
    }
}

fn read_record(buf: &mut Bytes, base_offset: i64, first_ts: i64) -> Result<InRecord, String> {
    let len = varint(buf)?;
    let len = usize::try_from(len).map_err(|_| format!("negative record length {len}"))?;
    if len > buf.len() {
        return Err(format!("record of {len} bytes overruns its batch"));
    }
    let mut r = buf.split_to(len);
    if !r.has_remaining() {
        return Err("empty record".into());
    }
    let _attributes = r.get_i8();
    let ts_delta = varlong(&mut r)?;
    let offset_delta = varint(&mut r)?;
    let key = bytes_field(&mut r)?;
    let value = bytes_field(&mut r)?;
    let n = varint(&mut r)?;
    let n = usize::try_from(n).map_err(|_| format!("negative header count {n}"))?;
    // Each header takes at least two bytes (key length, value length).
    if n > r.remaining() / 2 {
        return Err(format!("{n} headers cannot fit in {} bytes", r.remaining()));
    }
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        let k = bytes_field(&mut r)?.ok_or("null header key")?;
        let v = bytes_field(&mut r)?;
        headers.push((k, v));
    }
    Ok(InRecord {
        offset: base_offset + i64::from(offset_delta),
        timestamp: first_ts.wrapping_add(ts_delta),
        log_append_time: false,
        key,
        value,
        headers,
    })
}

fn bytes_field(buf: &mut Bytes) -> Result<Option<Bytes>, String> {
    let len = varint(buf)?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| format!("negative length {len}"))?;
    if len > buf.len() {
        return Err(format!("field of {len} bytes overruns its record"));
    }
    Ok(Some(buf.split_to(len)))
}

fn varlong(buf: &mut Bytes) -> Result<i64, String> {
    let mut raw: u64 = 0;
    for shift in (0..70).step_by(7) {
        if !buf.has_remaining() {
            return Err("truncated varint".into());
        }
        let b = buf.get_u8();
        raw |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn varint(buf: &mut Bytes) -> Result<i32, String> {
    let v = varlong(buf)?;
    i32::try_from(v).map_err(|_| format!("varint {v} out of range"))
}

fn decompress(codec: i16, body: Bytes) -> Result<Bytes, String> {
    let capped = |r: &mut dyn Read| -> Result<Bytes, String> {
        let mut out = Vec::new();
        r.take(MAX_DECOMPRESSED as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("decompression failed: {e}"))?;
        if out.len() > MAX_DECOMPRESSED {
            return Err(format!(
                "decompresses to more than {MAX_DECOMPRESSED} bytes; refused"
            ));
        }
        Ok(Bytes::from(out))
    };
    match codec {
        0 => Ok(body),
        1 => capped(&mut flate2::read::GzDecoder::new(&body[..])),
        2 => snappy(&body),
        3 => capped(&mut lz4_flex::frame::FrameDecoder::new(&body[..])),
        4 => {
            let mut d =
                zstd::stream::read::Decoder::new(&body[..]).map_err(|e| format!("zstd: {e}"))?;
            capped(&mut d)
        }
        other => Err(format!("unknown compression codec {other}")),
    }
}

/// Java clients frame snappy the xerial way (a magic header, then length-prefixed blocks);
/// others send one raw snappy block.
fn snappy(body: &[u8]) -> Result<Bytes, String> {
    const MAGIC: &[u8] = b"\x82SNAPPY\x00";
    let raw = |block: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        let n = snap::raw::decompress_len(block).map_err(|e| format!("snappy: {e}"))?;
        if out.len() + n > MAX_DECOMPRESSED {
            return Err(format!(
                "decompresses to more than {MAX_DECOMPRESSED} bytes; refused"
            ));
        }
        let start = out.len();
        out.resize(start + n, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(|e| format!("snappy: {e}"))?;
        Ok(())
    };
    let mut out = Vec::new();
    if body.len() >= 16 && body.starts_with(MAGIC) {
        let mut rest = &body[16..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err("truncated xerial snappy block length".into());
            }
            let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            rest = &rest[4..];
            if n > rest.len() {
                return Err("xerial snappy block overruns the batch".into());
            }
            raw(&rest[..n], &mut out)?;
            rest = &rest[n..];
        }
    } else {
        raw(body, &mut out)?;
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<OutRecord> {
        (0..n)
            .map(|i| OutRecord {
                key: (i % 2 == 0).then(|| Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("value-{i}"))),
                headers: vec![("h".into(), Bytes::from_static(b"1"))],
                timestamp: 1_700_000_000_000 + i as i64,
            })
            .collect()
    }

    #[test]
    fn round_trip_every_codec() {
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let mut buf = BytesMut::new();
            encode_batch(&sample(50), parse_compression(codec).unwrap(), &mut buf).unwrap();
            let d = decode_batches(buf.freeze(), 0).unwrap();
            assert_eq!(d.records.len(), 50, "{codec}");
            assert_eq!(d.next_offset, Some(50), "{codec}");
            assert_eq!(d.records[3].value.as_deref(), Some(&b"value-3"[..]));
            assert_eq!(d.records[3].key, None);
            assert_eq!(d.records[4].key.as_deref(), Some(&b"k4"[..]));
            assert_eq!(d.records[7].timestamp, 1_700_000_000_007);
            assert_eq!(d.records[7].headers.len(), 1);
        }
    }

    #[test]
    fn one_batch_with_base_sequence_minus_one() {
        let mut buf = BytesMut::new();
        encode_batch(&sample(10), Compression::None, &mut buf).unwrap();
        let b = buf.freeze();
        let len = i32::from_be_bytes(b[8..12].try_into().unwrap()) as usize;
        assert_eq!(len + 12, b.len(), "all records in one batch");
        assert_eq!(i32::from_be_bytes(b[53..57].try_into().unwrap()), -1);
        assert_eq!(i64::from_be_bytes(b[43..51].try_into().unwrap()), -1);
    }

    #[test]
    fn partial_trailing_batch_is_ignored_and_min_offset_applies() {
        let mut buf = BytesMut::new();
        encode_batch(&sample(5), Compression::None, &mut buf).unwrap();
        let one = buf.split().freeze();
        let mut two = BytesMut::from(&one[..]);
        two.extend_from_slice(&one[..one.len() - 3]);
        let d = decode_batches(two.freeze(), 2).unwrap();
        assert_eq!(d.records.len(), 3);
        assert_eq!(d.records[0].offset, 2);
        assert_eq!(d.next_offset, Some(5));
    }

    #[test]
    fn hostile_counts_are_refused_without_allocating() {
        let mut buf = BytesMut::new();
        encode_batch(&sample(1), Compression::None, &mut buf).unwrap();
        let mut b = buf.to_vec();
        b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        let err = decode_batches(Bytes::from(b), 0).unwrap_err();
        assert!(err.to_string().contains("cannot fit"), "{err}");
    }

    #[test]
    fn corrupt_crc_is_an_error() {
        let mut buf = BytesMut::new();
        encode_batch(&sample(3), Compression::None, &mut buf).unwrap();
        let mut b = buf.to_vec();
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(decode_batches(Bytes::from(b), 0).is_err());
    }

    #[test]
    fn duplicate_header_keys_survive_decoding() {
        // Build a record by hand with two headers named "k".
        let mut rec = Vec::new();
        rec.extend_from_slice(&[0, 0, 0]); // attributes, ts delta, offset delta
        rec.push(1); // key: null (-1 zigzag = 1)
        rec.extend_from_slice(&[2, b'v']); // value "v"
        rec.push(4); // 2 headers
        for v in [b'1', b'2'] {
            rec.extend_from_slice(&[2, b'k', 2, v]);
        }
        let mut body = vec![(rec.len() as u8) << 1];
        body.extend_from_slice(&rec);
        let mut batch = vec![0u8; BATCH_HEADER_LEN];
        batch[16] = 2;
        batch[57..61].copy_from_slice(&1i32.to_be_bytes());
        batch.extend_from_slice(&body);
        let len = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        let d = decode_batches(Bytes::from(batch), 0).unwrap();
        let h = &d.records[0].headers;
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].1.as_deref(), Some(&b"2"[..]));
    }
}
