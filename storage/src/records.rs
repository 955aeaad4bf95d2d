//! Record-level decoding and batch encoding, for the few paths that must see individual
//! records: compaction, exact timestamp lookups, and tests. Records are Kafka's v2 format:
//!
//! ```text
//! length varint | attributes int8 | timestampDelta varlong | offsetDelta varint
//! keyLength varint | key | valueLength varint | value
//! headerCount varint | (headerKeyLength varint | key | headerValueLength varint | value)*
//! ```
//!
//! Decoding is bounded by the batch's bytes: counts are checked against what remains before
//! anything is allocated, so a hostile `recordsCount` cannot exhaust memory.

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{
    self, ATTRIBUTES, BatchHeader, COMPRESSION_MASK, CRC, Compression, DELETE_HORIZON_FLAG,
    HEADER_SIZE, LOG_OVERHEAD, TimestampType,
};
use crate::compression;
use crate::error::StorageError;

/// The smallest possible encoded record: length, attributes, and five one-byte varints.
const MIN_RECORD_SIZE: usize = 7;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// One record with its absolute offset and timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

impl Record {
    /// A record with a null value is a tombstone for its key.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// Decode every record of one batch (decompressing if needed).
pub fn decode_batch(batch_bytes: &[u8]) -> Result<(BatchHeader, Vec<Record>), StorageError> {
    let header = BatchHeader::parse(batch_bytes)?;
    let end = header.size().min(batch_bytes.len());
    let codec = header.compression().ok_or(StorageError::corrupt(
        batch::ATTRIBUTES,
        "unknown compression codec",
    ))?;
    let body = &batch_bytes[HEADER_SIZE..end];
    let body: Bytes = match codec {
        Compression::None => Bytes::copy_from_slice(body),
        c => Bytes::from(compression::decompress(c, body)?),
    };
    let count = header.records_count.max(0) as usize;
    if count > body.len() / MIN_RECORD_SIZE + 1 {
        return Err(StorageError::corrupt(
            batch::RECORDS_COUNT,
            "record count exceeds what the batch can hold",
        ));
    }
    let log_append_time = header.timestamp_type() == TimestampType::LogAppendTime;
    let mut records = Vec::with_capacity(count);
    let mut at = 0usize;
    for _ in 0..count {
        let (record, next) = decode_record(&body, at, &header, log_append_time)?;
        records.push(record);
        at = next;
    }
    Ok((header, records))
}

fn truncated() -> StorageError {
    StorageError::corrupt(HEADER_SIZE, "truncated record")
}

fn decode_record(
    body: &Bytes,
    at: usize,
    h: &BatchHeader,
    log_append_time: bool,
) -> Result<(Record, usize), StorageError> {
    let (len, n) = batch::read_varint(body, at).ok_or_else(truncated)?;
    if len < 0 {
        return Err(truncated());
    }
    let start = at + n;
    let end = start
        .checked_add(len as usize)
        .filter(|&e| e <= body.len())
        .ok_or_else(truncated)?;
    let buf = &body[..end];
    let mut p = start + 1; // attributes: unused in v2
    let (ts_delta, n) = batch::read_varlong(buf, p).ok_or_else(truncated)?;
    p += n;
    let (offset_delta, n) = batch::read_varint(buf, p).ok_or_else(truncated)?;
    p += n;
    let key = read_bytes(body, end, &mut p)?;
    let value = read_bytes(body, end, &mut p)?;
    let (header_count, n) = batch::read_varint(buf, p).ok_or_else(truncated)?;
    p += n;
    if header_count < 0 || header_count as usize > (end - p) / 2 + 1 {
        return Err(truncated());
    }
    let mut headers = Vec::with_capacity(header_count as usize);
    for _ in 0..header_count {
        let key = read_bytes(body, end, &mut p)?.ok_or_else(truncated)?;
        let value = read_bytes(body, end, &mut p)?;
        headers.push(Header { key, value });
    }
    if p != end {
        return Err(StorageError::corrupt(
            HEADER_SIZE,
            "record length disagrees with its fields",
        ));
    }
    let timestamp = if log_append_time {
        h.max_timestamp
    } else {
        h.base_timestamp.wrapping_add(ts_delta)
    };
    let record = Record {
        offset: h.base_offset + offset_delta as i64,
        timestamp,
        key,
        value,
        headers,
    };
    Ok((record, end))
}

fn read_bytes(body: &Bytes, end: usize, p: &mut usize) -> Result<Option<Bytes>, StorageError> {
    let (len, n) = batch::read_varint(&body[..end], *p).ok_or_else(truncated)?;
    *p += n;
    if len < 0 {
        return Ok(None);
    }
    let stop = p
        .checked_add(len as usize)
        .filter(|&e| e <= end)
        .ok_or_else(truncated)?;
    let out = body.slice(*p..stop);
    *p = stop;
    Ok(Some(out))
}

/// Header fields for [`encode_batch`]. Offsets and timestamps in the records are absolute.
#[derive(Clone, Debug)]
pub struct BatchSpec {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    /// Attribute bits other than compression (timestamp type, transactional, control).
    pub attributes: i16,
    pub compression: Compression,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// Keep this last offset delta even if the last records were removed (compaction keeps
    /// a batch's offset range so producer state and the log end offset stay right).
    pub last_offset_delta: Option<i32>,
    /// Set the KIP-534 delete horizon: stored in baseTimestamp with attribute bit 6.
    pub delete_horizon_ms: Option<i64>,
    /// For LogAppendTime batches: the append time, which is the batch's max timestamp.
    pub log_append_time: Option<i64>,
}

impl BatchSpec {
    /// A plain producer-style batch: CreateTime, no producer id.
    pub fn new(base_offset: i64, compression: Compression) -> BatchSpec {
        BatchSpec {
            base_offset,
            partition_leader_epoch: -1,
            attributes: 0,
            compression,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            last_offset_delta: None,
            delete_horizon_ms: None,
            log_append_time: None,
        }
    }
}

fn put_varint(out: &mut BytesMut, v: i32) {
    put_uvarint(out, ((v << 1) ^ (v >> 31)) as u32 as u64);
}
fn put_varlong(out: &mut BytesMut, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}
fn put_uvarint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}
fn put_bytes(out: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.put_slice(b);
        }
    }
}

fn encode_record(
    out: &mut BytesMut,
    scratch: &mut BytesMut,
    r: &Record,
    base_offset: i64,
    base_timestamp: i64,
) {
    scratch.clear();
    scratch.put_u8(0);
    put_varlong(scratch, r.timestamp.wrapping_sub(base_timestamp));
    put_varint(scratch, (r.offset - base_offset) as i32);
    put_bytes(scratch, r.key.as_deref());
    put_bytes(scratch, r.value.as_deref());
    put_varint(scratch, r.headers.len() as i32);
    for h in &r.headers {
        put_bytes(scratch, Some(&h.key));
        put_bytes(scratch, h.value.as_deref());
    }
    put_varint(out, scratch.len() as i32);
    out.put_slice(scratch);
}

/// Encode a v2 batch. `records` must be in offset order and within i32 deltas of the base.
pub fn encode_batch(spec: &BatchSpec, records: &[Record]) -> Result<Bytes, StorageError> {
    let first_ts = records.first().map_or(batch::NO_TIMESTAMP, |r| r.timestamp);
    let max_ts = match spec.log_append_time {
        Some(t) => t,
        None => records
            .iter()
            .map(|r| r.timestamp)
            .max()
            .unwrap_or(batch::NO_TIMESTAMP),
    };
    let base_timestamp = spec.delete_horizon_ms.unwrap_or(first_ts);
    let last_offset_delta = spec.last_offset_delta.unwrap_or_else(|| {
        records
            .last()
            .map_or(0, |r| (r.offset - spec.base_offset) as i32)
    });

    let mut body = BytesMut::new();
    let mut scratch = BytesMut::new();
    for r in records {
        encode_record(&mut body, &mut scratch, r, spec.base_offset, base_timestamp);
    }
    let body = compression::compress(spec.compression, &body)?;

    let mut attributes = (spec.attributes & !COMPRESSION_MASK) | spec.compression.id();
    if spec.delete_horizon_ms.is_some() {
        attributes |= DELETE_HORIZON_FLAG;
    }
    if spec.log_append_time.is_some() {
        attributes |= batch::TIMESTAMP_TYPE_MASK;
    }
    let mut out = BytesMut::with_capacity(HEADER_SIZE + body.len());
    out.put_i64(spec.base_offset);
    out.put_i32((HEADER_SIZE - LOG_OVERHEAD + body.len()) as i32);
    out.put_i32(spec.partition_leader_epoch);
    out.put_i8(batch::CURRENT_MAGIC);
    out.put_u32(0);
    out.put_i16(attributes);
    out.put_i32(last_offset_delta);
    out.put_i64(base_timestamp);
    out.put_i64(max_ts);
    out.put_i64(spec.producer_id);
    out.put_i16(spec.producer_epoch);
    out.put_i32(spec.base_sequence);
    out.put_i32(records.len() as i32);
    out.put_slice(&body);
    let crc = crc32c::crc32c(&out[ATTRIBUTES..]);
    out[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out.freeze())
}

/// A key and value, either of which may be null.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Convenience for tests and tools: a batch of key/value records with consecutive offsets.
pub fn simple_batch(
    base_offset: i64,
    timestamp: i64,
    compression: Compression,
    kvs: &[KeyValue<'_>],
) -> Bytes {
    let records: Vec<Record> = kvs
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            offset: base_offset + i as i64,
            timestamp,
            key: k.map(Bytes::copy_from_slice),
            value: v.map(Bytes::copy_from_slice),
            headers: Vec::new(),
        })
        .collect();
    // Encoding only fails if a codec fails on in-memory data, which the codecs do not do.
    encode_batch(&BatchSpec::new(base_offset, compression), &records).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_with_headers_and_nulls() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let records = vec![
                Record {
                    offset: 10,
                    timestamp: 1_000,
                    key: Some(Bytes::from_static(b"k1")),
                    value: None,
                    headers: vec![
                        Header {
                            key: Bytes::from_static(b"h"),
                            value: Some(Bytes::from_static(b"1")),
                        },
                        Header {
                            key: Bytes::from_static(b"h"),
                            value: None,
                        },
                    ],
                },
                Record {
                    offset: 12,
                    timestamp: 900,
                    key: None,
                    value: Some(Bytes::from_static(b"v")),
                    headers: vec![],
                },
            ];
            let mut spec = BatchSpec::new(10, codec);
            spec.last_offset_delta = Some(5);
            let bytes = encode_batch(&spec, &records).unwrap();
            let mut out = batch::BatchList::new();
            batch::split_batches(&bytes, batch::Validation::Stored, usize::MAX, &mut out).unwrap();
            let (h, decoded) = decode_batch(&bytes).unwrap();
            assert_eq!(decoded, records, "{codec:?}");
            assert_eq!(h.last_offset(), 15);
            assert_eq!(h.max_timestamp, 1_000);
        }
    }

    #[test]
    fn delete_horizon_keeps_record_timestamps() {
        let records = vec![Record {
            offset: 0,
            timestamp: 5_000,
            key: Some(Bytes::from_static(b"k")),
            value: None,
            headers: vec![],
        }];
        let mut spec = BatchSpec::new(0, Compression::None);
        spec.delete_horizon_ms = Some(99_999);
        let bytes = encode_batch(&spec, &records).unwrap();
        let (h, decoded) = decode_batch(&bytes).unwrap();
        assert_eq!(h.delete_horizon_ms(), Some(99_999));
        assert_eq!(decoded[0].timestamp, 5_000);
    }

    #[test]
    fn hostile_record_count_is_rejected_without_allocating() {
        let mut bytes = simple_batch(0, 0, Compression::None, &[(None, Some(b"v"))]).to_vec();
        bytes[batch::RECORDS_COUNT..batch::RECORDS_COUNT + 4]
            .copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_batch(&bytes).is_err());
    }
}
