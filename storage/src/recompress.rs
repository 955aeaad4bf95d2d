//! The topic config `compression.type` on the produce path.
//!
//! With `producer` (the default) batches are stored exactly as sent and nothing here runs. With
//! a codec, each produced batch in another codec is decompressed, its records are validated the
//! way Kafka's `LogValidator` validates them when it has to rebuild a batch, and the same
//! records are compressed again with the topic's codec and level. Batches already in the target
//! codec are passed through untouched, as Kafka keeps them in place.
//!
//! What the rebuilt batch keeps: every record byte (attributes, timestamp and offset deltas,
//! keys, values, headers in order with repeated keys), and from the header the base offset and
//! timestamp, last offset delta, record count, producer id, epoch and base sequence, the
//! timestamp type and the transactional flag. Sequence numbers are unchanged, so the producer
//! state sees the same batch and idempotent retries are still recognised as duplicates. What
//! changes: the codec bits, the length, a fresh CRC, and for CreateTime batches the max
//! timestamp, which Kafka takes from the records when it rebuilds.
//!
//! Record validation follows Kafka's rebuild path: a record that does not parse, a header with a
//! negative key size, a batch whose records end early or leave bytes over answer INVALID_RECORD;
//! a keyless record in a compacted topic too. Kafka does not reject inner offset deltas that
//! are not 0, 1, 2, ...: it renumbers them when it rebuilds (older clients wrote them wrongly),
//! and so does this. Decompression is bounded by [`compression::MAX_DECOMPRESSED`].

use std::borrow::Cow;
use std::io::Write;

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{
    self, ATTRIBUTES, BatchHeader, BatchList, COMPRESSION_MASK, CRC, Compression, HEADER_SIZE,
    LENGTH, LOG_OVERHEAD, MAX_TIMESTAMP, NO_TIMESTAMP, StoredBatches, TimestampType, Validation,
};
use crate::compression;
use crate::config::{CompressionType, GZIP_LEVELS, LogConfig};
use crate::error::StorageError;

/// How many rejected record indexes an error message names (Kafka shows at most three).
const MAX_NAMED_RECORD_ERRORS: usize = 3;

/// What a log with a codec in `compression.type` does to produced batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recompression {
    /// The codec every stored batch must have.
    pub codec: Compression,
    /// The codec's level: gzip (-1 = default) and zstd honour it; snappy has none, and lz4 is
    /// written by `lz4_flex`, which has a single level (the frames are valid for every level).
    pub level: i32,
    /// Refuse records without a key (`cleanup.policy` includes `compact`).
    pub require_keys: bool,
    /// `max.message.bytes`, checked on the batches as sent (the log checks the rebuilt ones).
    pub max_batch_size: usize,
}

impl Recompression {
    /// `None` when the log keeps the producer's codec.
    pub fn for_config(config: &LogConfig) -> Option<Recompression> {
        let CompressionType::Codec(codec) = config.compression_type else {
            return None;
        };
        let level = match codec {
            Compression::Gzip => config.compression_gzip_level,
            Compression::Lz4 => config.compression_lz4_level,
            Compression::Zstd => config.compression_zstd_level,
            Compression::None | Compression::Snappy => 0,
        };
        Some(Recompression {
            codec,
            level,
            require_keys: config.cleanup_policy.compact,
            max_batch_size: config.max_message_bytes,
        })
    }
}

/// The produced `records` as a log with `config` stores them: the same `Bytes` (no copy) when
/// `compression.type` is `producer` or every batch already has the target codec.
pub fn for_log(records: &Bytes, config: &LogConfig) -> Result<Bytes, StorageError> {
    match Recompression::for_config(config) {
        None => Ok(records.clone()),
        Some(target) => recompress(records, &target),
    }
}

/// Rewrites every batch of `records` whose codec is not `target.codec`. When all of them
/// already have it, the same `Bytes` come back unvalidated (the log's append validates them, so
/// passing them through costs one header scan, not a second CRC pass). Otherwise the input is
/// validated as a producer's record set first (CRC, lengths, `max.message.bytes`), so nothing is
/// decompressed that the log would refuse anyway.
pub fn recompress(records: &Bytes, target: &Recompression) -> Result<Bytes, StorageError> {
    if all_in_codec(records, target.codec) {
        return Ok(records.clone());
    }
    let mut batches = BatchList::new();
    batch::split_batches(
        records,
        Validation::Producer,
        target.max_batch_size,
        &mut batches,
    )?;
    let mut out = BytesMut::with_capacity(records.len());
    for b in &batches {
        let raw = &records[b.position..b.position + b.header.size()];
        if b.header.compression() == Some(target.codec) {
            out.extend_from_slice(raw);
        } else {
            rebuild(raw, &b.header, target, &mut out)?;
        }
    }
    Ok(out.freeze())
}

/// Whether `records` is whole batches that all have `codec` (headers only, no CRC).
fn all_in_codec(records: &[u8], codec: Compression) -> bool {
    let mut end = 0;
    for b in StoredBatches::new(records, 0) {
        if b.header.compression() != Some(codec) {
            return false;
        }
        end = b.position + b.header.size();
    }
    end == records.len() && end > 0
}

/// Appends `raw` (one validated batch) to `out`, recompressed with `target`.
fn rebuild(
    raw: &[u8],
    h: &BatchHeader,
    target: &Recompression,
    out: &mut BytesMut,
) -> Result<(), StorageError> {
    // split_batches refused unknown codecs.
    let source = h.compression().ok_or(StorageError::CorruptRecord {
        position: ATTRIBUTES,
        reason: "unknown compression codec in attributes",
    })?;
    let body = &raw[HEADER_SIZE..];
    let plain: Cow<'_, [u8]> = match source {
        Compression::None => Cow::Borrowed(body),
        codec => Cow::Owned(compression::decompress(codec, body)?),
    };
    let walk = walk_records(&plain, h, target.require_keys, None)?;
    let plain = if walk.renumber {
        let mut renumbered = BytesMut::with_capacity(plain.len() + 16);
        walk_records(&plain, h, target.require_keys, Some(&mut renumbered))?;
        Cow::Owned(renumbered.to_vec())
    } else {
        plain
    };
    let compressed: Cow<'_, [u8]> = match target.codec {
        Compression::None => plain,
        codec => Cow::Owned(compress_at(codec, target.level, &plain)?),
    };
    let batch_length = i32::try_from(HEADER_SIZE - LOG_OVERHEAD + compressed.len())
        .map_err(|_| StorageError::InvalidRecord("recompressed batch exceeds 2 GiB".into()))?;

    let start = out.len();
    out.extend_from_slice(&raw[..HEADER_SIZE]);
    out.put_slice(&compressed);
    let batch = &mut out[start..];
    batch[LENGTH..LENGTH + 4].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = (h.attributes & !COMPRESSION_MASK) | target.codec.id();
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    if h.timestamp_type() == TimestampType::CreateTime {
        batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&walk.max_timestamp.to_be_bytes());
    }
    let crc = batch::compute_crc(batch);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// What a pass over a batch's records found.
struct Walk {
    max_timestamp: i64,
    /// Some offset delta is not the record's index.
    renumber: bool,
}

fn invalid(reason: String) -> StorageError {
    StorageError::InvalidRecord(reason)
}

/// Parses every record of the uncompressed records section `plain` (bounded by its length:
/// each record consumes at least two bytes or fails, whatever `recordsCount` claims). With
/// `rewrite`, writes each record there with its offset delta set to its index.
fn walk_records(
    plain: &[u8],
    h: &BatchHeader,
    require_keys: bool,
    mut rewrite: Option<&mut BytesMut>,
) -> Result<Walk, StorageError> {
    let count = h.records_count.max(0) as usize;
    let mut at = 0usize;
    let mut max_timestamp = NO_TIMESTAMP;
    let mut renumber = false;
    let mut keyless: Vec<usize> = Vec::new();
    let mut keyless_total = 0usize;
    for index in 0..count {
        if at >= plain.len() {
            return Err(invalid(format!(
                "incorrect declared batch size: {count} records declared, the batch ends after {index}"
            )));
        }
        let (len, n) = batch::read_varint(plain, at)
            .ok_or_else(|| invalid(format!("record {index}: unreadable record length")))?;
        let start = at + n;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e <= plain.len())
            .ok_or_else(|| {
                invalid(format!(
                    "record {index}: invalid record size {len} with {} bytes left in the batch",
                    plain.len() - start.min(plain.len())
                ))
            })?;
        let record = &plain[..end];
        let fields = parse_record(record, start, index)?;
        let timestamp = h.base_timestamp.wrapping_add(fields.timestamp_delta);
        max_timestamp = max_timestamp.max(timestamp);
        if fields.offset_delta != index as i64 {
            renumber = true;
        }
        if require_keys && !fields.has_key {
            keyless_total += 1;
            if keyless.len() < MAX_NAMED_RECORD_ERRORS {
                keyless.push(index);
            }
        }
        if let Some(buf) = rewrite.as_deref_mut() {
            // attributes and timestamp delta | offset delta | key, value, headers
            let head = &record[start..fields.offset_delta_at];
            let tail = &record[fields.after_offset_delta..end];
            let mut delta = [0u8; 5];
            let delta_len = encode_varint(index as i32, &mut delta);
            let body_len = head.len() + delta_len + tail.len();
            let mut len_buf = [0u8; 5];
            let len_len = encode_varint(body_len as i32, &mut len_buf);
            buf.put_slice(&len_buf[..len_len]);
            buf.put_slice(head);
            buf.put_slice(&delta[..delta_len]);
            buf.put_slice(tail);
        }
        at = end;
    }
    if at != plain.len() {
        return Err(invalid(format!(
            "incorrect declared batch size: {} bytes remain after the {count} declared records",
            plain.len() - at
        )));
    }
    if keyless_total > 0 {
        let named: Vec<String> = keyless.iter().map(usize::to_string).collect();
        return Err(invalid(format!(
            "{keyless_total} record(s) rejected: a compacted topic cannot accept records without a key (batch index {})",
            named.join(", ")
        )));
    }
    Ok(Walk {
        max_timestamp,
        renumber,
    })
}

/// The fields of one record that validation and renumbering need.
struct RecordFields {
    timestamp_delta: i64,
    offset_delta: i64,
    /// Where the offset delta varint starts and ends within the record slice.
    offset_delta_at: usize,
    after_offset_delta: usize,
    has_key: bool,
}

/// Parses the record whose body is `record[start..]` (the slice ends where its length says).
fn parse_record(record: &[u8], start: usize, index: usize) -> Result<RecordFields, StorageError> {
    let end = record.len();
    let structure = || invalid(format!("record {index}: invalid record structure"));
    // attributes: no bits are defined for v2 records; they are carried as they are.
    let mut p = start
        .checked_add(1)
        .filter(|&p| p <= end)
        .ok_or_else(structure)?;
    let (timestamp_delta, n) = batch::read_varlong(record, p).ok_or_else(structure)?;
    p += n;
    let offset_delta_at = p;
    let (offset_delta, n) = batch::read_varint(record, p).ok_or_else(structure)?;
    p += n;
    let after_offset_delta = p;
    let key_len = skip_bytes(record, &mut p).ok_or_else(structure)?;
    skip_bytes(record, &mut p).ok_or_else(structure)?;
    let (headers, n) = batch::read_varint(record, p).ok_or_else(structure)?;
    p += n;
    if headers < 0 {
        return Err(invalid(format!(
            "record {index}: invalid number of record headers {headers}"
        )));
    }
    for _ in 0..headers {
        let (key_len, n) = batch::read_varint(record, p).ok_or_else(structure)?;
        if key_len < 0 {
            return Err(invalid(format!(
                "record {index}: invalid negative header key size {key_len}"
            )));
        }
        p = skip(record, p + n, key_len).ok_or_else(structure)?;
        skip_bytes(record, &mut p).ok_or_else(structure)?;
    }
    if p != end {
        return Err(invalid(format!(
            "record {index}: invalid record size: expected to read {} bytes in record payload, but read {}",
            end - start,
            p - start
        )));
    }
    Ok(RecordFields {
        timestamp_delta,
        offset_delta: i64::from(offset_delta),
        offset_delta_at,
        after_offset_delta,
        has_key: key_len >= 0,
    })
}

/// Skips a varint-length-prefixed byte field (a negative length is null, as Kafka reads it);
/// returns the length read.
fn skip_bytes(record: &[u8], p: &mut usize) -> Option<i32> {
    let (len, n) = batch::read_varint(record, *p)?;
    *p = if len < 0 {
        *p + n
    } else {
        skip(record, *p + n, len)?
    };
    Some(len)
}

fn skip(record: &[u8], from: usize, len: i32) -> Option<usize> {
    from.checked_add(usize::try_from(len).ok()?)
        .filter(|&e| e <= record.len())
}

/// Zigzag varint into `out`; returns its length.
fn encode_varint(v: i32, out: &mut [u8; 5]) -> usize {
    let mut u = ((v << 1) ^ (v >> 31)) as u32;
    let mut i = 0;
    while u >= 0x80 {
        out[i] = (u as u8) | 0x80;
        u >>= 7;
        i += 1;
    }
    out[i] = u as u8;
    i + 1
}

/// [`compression::compress`] with the topic's level where the codec has one here.
fn compress_at(codec: Compression, level: i32, data: &[u8]) -> Result<Vec<u8>, StorageError> {
    let failed = |codec: &'static str, e: std::io::Error| StorageError::Compression {
        codec,
        reason: e.to_string(),
    };
    match codec {
        Compression::Gzip => {
            let level = if GZIP_LEVELS.contains(&level) {
                flate2::Compression::new(level as u32)
            } else {
                // -1: the codec's default (zlib's 6, as java.util.zip uses).
                flate2::Compression::default()
            };
            let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 2), level);
            enc.write_all(data).map_err(|e| failed("gzip", e))?;
            enc.finish().map_err(|e| failed("gzip", e))
        }
        Compression::Zstd => zstd::bulk::compress(data, level).map_err(|e| failed("zstd", e)),
        other => compression::compress(other, data),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::batch::TRANSACTIONAL_FLAG;
    use crate::records::{self, BatchSpec, Header, Record};
    use crate::{LoadParams, Log, TopicPartition};

    const NOW: i64 = 1_700_000_000_000;
    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn target(codec: Compression) -> Recompression {
        Recompression {
            codec,
            level: match codec {
                Compression::Gzip => -1,
                Compression::Lz4 => 9,
                Compression::Zstd => 3,
                _ => 0,
            },
            require_keys: false,
            max_batch_size: usize::MAX,
        }
    }

    fn varied_records(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                offset: i as i64,
                timestamp: NOW + (i as i64 * 7) % 5 - 2,
                key: (i % 4 != 1).then(|| Bytes::from(format!("key-{i}"))),
                value: (i % 5 != 2).then(|| Bytes::from(format!("value-{i}-").repeat(i % 9 + 1))),
                headers: if i % 3 == 0 {
                    vec![
                        Header {
                            key: Bytes::from_static(b"trace"),
                            value: Some(Bytes::from(format!("t{i}"))),
                        },
                        Header {
                            key: Bytes::from_static(b"trace"),
                            value: None,
                        },
                        Header {
                            key: Bytes::from_static(b""),
                            value: Some(Bytes::new()),
                        },
                    ]
                } else {
                    vec![]
                },
            })
            .collect()
    }

    fn idempotent_spec(codec: Compression, pid: i64, epoch: i16, seq: i32) -> BatchSpec {
        let mut spec = BatchSpec::new(0, codec);
        spec.producer_id = pid;
        spec.producer_epoch = epoch;
        spec.base_sequence = seq;
        spec
    }

    /// The uncompressed records section of a batch.
    fn plain_records(batch: &[u8]) -> Vec<u8> {
        let h = BatchHeader::parse(batch).unwrap();
        compression::decompress(h.compression().unwrap(), &batch[HEADER_SIZE..h.size()]).unwrap()
    }

    /// Rebuilds an uncompressed batch around new record bytes, with a correct CRC.
    fn with_plain_records(batch: &[u8], plain: &[u8]) -> Bytes {
        let mut out = batch[..HEADER_SIZE].to_vec();
        out.extend_from_slice(plain);
        let len = (out.len() - LOG_OVERHEAD) as i32;
        out[LENGTH..LENGTH + 4].copy_from_slice(&len.to_be_bytes());
        let crc = batch::compute_crc(&out);
        out[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(out)
    }

    fn assert_same_batch_except_codec(sent: &[u8], stored: &[u8], codec: Compression) {
        let a = BatchHeader::parse(sent).unwrap();
        let b = BatchHeader::parse(stored).unwrap();
        assert_eq!(b.compression(), Some(codec));
        assert_eq!(
            b.attributes & !COMPRESSION_MASK,
            a.attributes & !COMPRESSION_MASK
        );
        assert_eq!(
            (b.base_offset, b.partition_leader_epoch, b.last_offset_delta),
            (a.base_offset, a.partition_leader_epoch, a.last_offset_delta)
        );
        assert_eq!(
            (b.base_timestamp, b.max_timestamp, b.records_count),
            (a.base_timestamp, a.max_timestamp, a.records_count)
        );
        assert_eq!(
            (b.producer_id, b.producer_epoch, b.base_sequence),
            (a.producer_id, a.producer_epoch, a.base_sequence)
        );
        assert_eq!(b.size(), stored.len());
        assert_eq!(batch::compute_crc(stored), b.crc, "fresh CRC");
        assert_eq!(plain_records(stored), plain_records(sent), "record bytes");
        assert_eq!(
            records::decode_batch(stored).unwrap().1,
            records::decode_batch(sent).unwrap().1
        );
    }

    #[test]
    fn every_source_codec_to_every_target_codec() {
        let records = varied_records(40);
        for source in CODECS {
            let sent =
                records::encode_batch(&idempotent_spec(source, 42, 3, 1_000), &records).unwrap();
            for codec in CODECS {
                let stored = recompress(&sent, &target(codec)).unwrap();
                if codec == source {
                    assert_eq!(stored, sent, "{source:?} stays as sent");
                    assert_eq!(stored.as_ptr(), sent.as_ptr(), "without a copy");
                }
                assert_same_batch_except_codec(&sent, &stored, codec);
                let mut found = BatchList::new();
                batch::split_batches(&stored, Validation::Producer, usize::MAX, &mut found)
                    .unwrap();
                assert_eq!(found.len(), 1);
            }
        }
    }

    #[test]
    fn an_independent_decoder_reads_every_recompressed_batch() {
        use kafka_protocol::records::RecordBatchDecoder;
        let records = varied_records(25);
        for source in CODECS {
            let sent = records::encode_batch(&idempotent_spec(source, 9, 1, 5), &records).unwrap();
            for codec in CODECS {
                let mut stored = recompress(&sent, &target(codec)).unwrap();
                let sets = RecordBatchDecoder::decode_all(&mut stored)
                    .unwrap_or_else(|e| panic!("{source:?} -> {codec:?}: {e:?}"));
                assert_eq!(sets.len(), 1);
                let got = &sets[0].records;
                assert_eq!(got.len(), records.len());
                for (g, r) in got.iter().zip(&records) {
                    assert_eq!((g.offset, g.timestamp), (r.offset, r.timestamp));
                    assert_eq!((&g.key, &g.value), (&r.key, &r.value));
                    assert_eq!((g.producer_id, g.producer_epoch), (9, 1));
                    assert_eq!(g.sequence, 5 + r.offset as i32);
                }
            }
        }
    }

    #[test]
    fn producer_setting_and_matching_codecs_keep_the_same_bytes() {
        let sent = records::encode_batch(&BatchSpec::new(0, Compression::Lz4), &varied_records(3))
            .unwrap();
        let out = for_log(&sent, &LogConfig::default()).unwrap();
        assert_eq!(out.as_ptr(), sent.as_ptr());
        let lz4 = LogConfig::default()
            .with_overrides([("compression.type", "lz4")])
            .unwrap();
        assert_eq!(for_log(&sent, &lz4).unwrap().as_ptr(), sent.as_ptr());
        let zstd = LogConfig::default()
            .with_overrides([("compression.type", "zstd")])
            .unwrap();
        let out = for_log(&sent, &zstd).unwrap();
        assert_eq!(
            BatchHeader::parse(&out).unwrap().compression(),
            Some(Compression::Zstd)
        );
    }

    #[test]
    fn only_the_batches_in_another_codec_are_rebuilt() {
        let a = records::encode_batch(
            &idempotent_spec(Compression::Gzip, 1, 0, 0),
            &varied_records(4),
        )
        .unwrap();
        let b = records::encode_batch(
            &idempotent_spec(Compression::Zstd, 1, 0, 4),
            &varied_records(6),
        )
        .unwrap();
        let mut both = a.to_vec();
        both.extend_from_slice(&b);
        let out = recompress(&Bytes::from(both), &target(Compression::Zstd)).unwrap();
        let found: Vec<_> = StoredBatches::new(&out, 0).collect();
        assert_eq!(found.len(), 2);
        let first = &out[..found[0].header.size()];
        let second = &out[found[1].position..];
        assert_same_batch_except_codec(&a, first, Compression::Zstd);
        assert_eq!(second, &b[..], "already zstd: kept byte for byte");
    }

    #[test]
    fn transactional_flag_and_log_append_time_type_are_kept() {
        let records = varied_records(5);
        let mut spec = idempotent_spec(Compression::Snappy, 77, 2, 10);
        spec.attributes = TRANSACTIONAL_FLAG;
        spec.log_append_time = Some(NOW + 999);
        let sent = records::encode_batch(&spec, &records).unwrap();
        let stored = recompress(&sent, &target(Compression::Gzip)).unwrap();
        let h = BatchHeader::parse(&stored).unwrap();
        assert!(h.is_transactional());
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(
            h.max_timestamp,
            NOW + 999,
            "LogAppendTime max timestamp kept"
        );
        assert_same_batch_except_codec(&sent, &stored, Compression::Gzip);
    }

    #[test]
    fn record_attributes_are_carried_as_sent() {
        let sent = records::encode_batch(&BatchSpec::new(0, Compression::None), &varied_records(3))
            .unwrap();
        let mut plain = plain_records(&sent);
        // The first record's attributes byte follows its one-byte length varint.
        plain[1] = 0x5a;
        let sent = with_plain_records(&sent, &plain);
        for codec in [Compression::Gzip, Compression::Zstd] {
            let stored = recompress(&sent, &target(codec)).unwrap();
            assert_eq!(plain_records(&stored), plain);
        }
    }

    #[test]
    fn inner_offsets_are_renumbered_like_kafka_does() {
        let mut records = varied_records(4);
        // Deltas 0, 7, 2, 3 within a batch whose header says four records (last delta 3).
        records[1].offset = 7;
        let mut spec = BatchSpec::new(0, Compression::Gzip);
        spec.last_offset_delta = Some(3);
        let sent = records::encode_batch(&spec, &records).unwrap();
        let stored = recompress(&sent, &target(Compression::Zstd)).unwrap();
        let (h, got) = records::decode_batch(&stored).unwrap();
        assert_eq!(h.last_offset_delta, 3);
        assert_eq!(
            got.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        for (g, r) in got.iter().zip(&records) {
            assert_eq!(
                (&g.key, &g.value, &g.headers),
                (&r.key, &r.value, &r.headers)
            );
            assert_eq!(g.timestamp, r.timestamp);
        }
        assert_eq!(batch::compute_crc(&stored), h.crc);
    }

    #[test]
    fn max_timestamp_comes_from_the_records() {
        let sent = records::encode_batch(&BatchSpec::new(0, Compression::None), &varied_records(6))
            .unwrap();
        let mut lying = sent.to_vec();
        lying[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&5i64.to_be_bytes());
        let crc = batch::compute_crc(&lying);
        lying[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        let stored = recompress(&Bytes::from(lying), &target(Compression::Lz4)).unwrap();
        let want = varied_records(6).iter().map(|r| r.timestamp).max().unwrap();
        assert_eq!(BatchHeader::parse(&stored).unwrap().max_timestamp, want);
    }

    fn expect_invalid(sent: Bytes, t: &Recompression, needle: &str) {
        match recompress(&sent, t) {
            Err(StorageError::InvalidRecord(m)) => {
                assert!(m.contains(needle), "{m:?} should mention {needle:?}")
            }
            other => panic!("expected INVALID_RECORD ({needle}), got {other:?}"),
        }
    }

    #[test]
    fn malformed_records_are_invalid_record() {
        let sent = records::encode_batch(&BatchSpec::new(0, Compression::None), &varied_records(3))
            .unwrap();
        let plain = plain_records(&sent);
        let t = target(Compression::Zstd);

        // Trailing bytes after the declared records.
        let mut extra = plain.clone();
        extra.extend_from_slice(&[2, 0]);
        expect_invalid(with_plain_records(&sent, &extra), &t, "remain");

        // The records end before the declared count.
        let first_len = batch::read_varint(&plain, 0).unwrap();
        let one = &plain[..first_len.1 + first_len.0 as usize];
        let short = with_plain_records(&sent, one);
        let mut short = short.to_vec();
        // keep recordsCount 3 and lastOffsetDelta 2: the header still passes producer checks
        let crc = batch::compute_crc(&short);
        short[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        expect_invalid(Bytes::from(short), &t, "declared");

        // A record length beyond the batch.
        let mut long = plain.clone();
        long[0] = 0x7e; // 63
        expect_invalid(with_plain_records(&sent, &long), &t, "record size");

        // A record whose length is longer than its fields: the next record's bytes are
        // swallowed, so the fields end before the length says.
        let mut fat = plain.clone();
        fat[0] += 2;
        expect_invalid(with_plain_records(&sent, &fat), &t, "record 0");

        // A negative header count.
        let single = records::encode_batch(
            &BatchSpec::new(0, Compression::None),
            &[Record {
                offset: 0,
                timestamp: NOW,
                key: None,
                value: None,
                headers: vec![],
            }],
        )
        .unwrap();
        let mut p = plain_records(&single);
        let last = p.len() - 1;
        assert_eq!(p[last], 0, "header count 0");
        p[last] = 1; // zigzag -1
        expect_invalid(with_plain_records(&single, &p), &t, "headers -1");

        // A negative header key size.
        let with_header = records::encode_batch(
            &BatchSpec::new(0, Compression::None),
            &[Record {
                offset: 0,
                timestamp: NOW,
                key: None,
                value: None,
                headers: vec![Header {
                    key: Bytes::from_static(b"k"),
                    value: None,
                }],
            }],
        )
        .unwrap();
        let mut p = plain_records(&with_header);
        // ... | headerCount 1 (0x02) | keyLen 1 (0x02) | 'k' | valueLen -1 (0x01)
        let at = p.len() - 3;
        assert_eq!(&p[at..], &[2, b'k', 1]);
        p[at] = 3; // zigzag -2
        expect_invalid(
            with_plain_records(&with_header, &p),
            &t,
            "negative header key",
        );
    }

    #[test]
    fn compacted_topics_refuse_keyless_records_when_rebuilding() {
        let sent =
            records::encode_batch(&BatchSpec::new(0, Compression::Gzip), &varied_records(10))
                .unwrap();
        let mut t = target(Compression::Zstd);
        t.require_keys = true;
        // varied_records leaves keys out of records 1, 5 and 9.
        expect_invalid(sent.clone(), &t, "3 record(s)");
        expect_invalid(sent, &t, "batch index 1, 5, 9");
        let keyed: Vec<Record> = varied_records(10)
            .into_iter()
            .map(|mut r| {
                r.key.get_or_insert_with(|| Bytes::from_static(b"k"));
                r
            })
            .collect();
        let sent = records::encode_batch(&BatchSpec::new(0, Compression::Gzip), &keyed).unwrap();
        recompress(&sent, &t).unwrap();
    }

    #[test]
    fn crc_size_and_codec_errors_come_before_any_decompression() {
        let sent = records::encode_batch(&BatchSpec::new(0, Compression::Gzip), &varied_records(8))
            .unwrap();
        let mut bad = sent.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(
            recompress(&Bytes::from(bad), &target(Compression::Zstd)),
            Err(StorageError::CorruptRecord { .. })
        ));
        let mut small = target(Compression::Zstd);
        small.max_batch_size = sent.len() - 1;
        assert!(matches!(
            recompress(&sent, &small),
            Err(StorageError::RecordTooLarge { .. })
        ));
        // A CRC-valid batch whose gzip stream is garbage.
        let garbage = with_plain_records(&sent, &[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]);
        assert!(matches!(
            recompress(&garbage, &target(Compression::Zstd)),
            Err(StorageError::Compression { .. })
        ));
    }

    #[test]
    fn hostile_record_count_is_bounded_by_the_bytes() {
        let sent =
            records::encode_batch(&BatchSpec::new(0, Compression::Snappy), &varied_records(2))
                .unwrap();
        let mut bad = sent.to_vec();
        bad[batch::RECORDS_COUNT..batch::RECORDS_COUNT + 4]
            .copy_from_slice(&i32::MAX.to_be_bytes());
        bad[batch::LAST_OFFSET_DELTA..batch::LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        let crc = batch::compute_crc(&bad);
        bad[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        expect_invalid(Bytes::from(bad), &target(Compression::Gzip), "declared");
    }

    #[test]
    fn levels_are_applied() {
        let records: Vec<Record> = (0..200)
            .map(|i| Record {
                offset: i,
                timestamp: NOW,
                key: Some(Bytes::from(format!("key-{}", i % 17))),
                value: Some(Bytes::from(format!(
                    "{i:>8} some compressible text {}",
                    i % 13
                ))),
                headers: vec![],
            })
            .collect();
        let sent = records::encode_batch(&BatchSpec::new(0, Compression::None), &records).unwrap();
        for (codec, low, high) in [(Compression::Gzip, 1, 9), (Compression::Zstd, -50, 19)] {
            let mut t = target(codec);
            t.level = low;
            let fast = recompress(&sent, &t).unwrap();
            t.level = high;
            let small = recompress(&sent, &t).unwrap();
            assert_ne!(fast, small, "{codec:?} levels {low} and {high}");
            assert!(small.len() < fast.len(), "{codec:?}");
            assert_eq!(records::decode_batch(&fast).unwrap().1, records);
            assert_eq!(records::decode_batch(&small).unwrap().1, records);
        }
    }

    #[test]
    fn for_config_reads_the_topic_settings() {
        assert_eq!(Recompression::for_config(&LogConfig::default()), None);
        let c = LogConfig::default()
            .with_overrides([
                ("compression.type", "gzip"),
                ("compression.gzip.level", "4"),
                ("cleanup.policy", "compact"),
                ("max.message.bytes", "5000"),
            ])
            .unwrap();
        assert_eq!(
            Recompression::for_config(&c),
            Some(Recompression {
                codec: Compression::Gzip,
                level: 4,
                require_keys: true,
                max_batch_size: 5000,
            })
        );
        let c = LogConfig::default()
            .with_overrides([
                ("compression.type", "zstd"),
                ("compression.zstd.level", "-7"),
            ])
            .unwrap();
        assert_eq!(Recompression::for_config(&c).map(|r| r.level), Some(-7));
    }

    /// Recompressed idempotent batches carry the producer's sequence numbers, so the log's
    /// producer state answers a retry with the original offsets instead of appending it again.
    #[test]
    fn idempotent_retries_of_recompressed_batches_are_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig::default()
            .with_overrides([("compression.type", "zstd")])
            .unwrap();
        let log = Log::open(
            dir.path(),
            TopicPartition::new("t", 0),
            Arc::new(config.clone()),
            LoadParams::new_log(NOW),
        )
        .unwrap();
        let first = records::encode_batch(
            &idempotent_spec(Compression::Gzip, 5, 0, 0),
            &varied_records(4),
        )
        .unwrap();
        let second = records::encode_batch(
            &idempotent_spec(Compression::Lz4, 5, 0, 4),
            &varied_records(3),
        )
        .unwrap();
        let a = log
            .append_as_leader(&for_log(&first, &config).unwrap(), 0, NOW)
            .unwrap();
        let b = log
            .append_as_leader(&for_log(&second, &config).unwrap(), 0, NOW)
            .unwrap();
        assert_eq!((a.first_offset, b.first_offset), (0, 4));
        let retry = log
            .append_as_leader(&for_log(&first, &config).unwrap(), 0, NOW)
            .unwrap();
        assert!(retry.duplicate);
        assert_eq!((retry.first_offset, retry.last_offset), (0, 3));
        assert_eq!(log.log_end_offset(), 7);
        // A gap is still refused.
        let gap = records::encode_batch(
            &idempotent_spec(Compression::Snappy, 5, 0, 9),
            &varied_records(1),
        )
        .unwrap();
        assert!(matches!(
            log.append_as_leader(&for_log(&gap, &config).unwrap(), 0, NOW),
            Err(StorageError::OutOfOrderSequence(_))
        ));
        let read = log.read(0, usize::MAX, log.log_end_offset()).unwrap();
        let stored: Vec<_> = StoredBatches::new(&read.records, 0).collect();
        assert_eq!(stored.len(), 2);
        for b in stored {
            assert_eq!(b.header.compression(), Some(Compression::Zstd));
            assert_eq!(b.header.producer_id, 5);
        }
    }

    /// key, value, headers as (key suffix, value), timestamp delta
    type RawRecord = (
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(u8, Option<Vec<u8>>)>,
        i64,
    );

    fn record_strategy() -> impl Strategy<Value = RawRecord> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            proptest::collection::vec(
                (
                    0u8..3,
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
                ),
                0..4,
            ),
            -100_000i64..100_000,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Random batches in a random source codec, recompressed to a random target codec,
        /// decode to the same records field by field, with the producer fields, flags and
        /// offsets of the batch as sent.
        #[test]
        fn random_batches_round_trip_through_any_codec_pair(
            raw in proptest::collection::vec(record_strategy(), 1..30),
            source in 0usize..5,
            codec in 0usize..5,
            producer in proptest::option::of((0i64..i64::MAX, 0i16..i16::MAX, 0i32..i32::MAX)),
            transactional in any::<bool>(),
            base_ts in 0i64..2_000_000_000_000,
        ) {
            let (source, codec) = (CODECS[source], CODECS[codec]);
            let records: Vec<Record> = raw
                .into_iter()
                .enumerate()
                .map(|(i, (key, value, headers, ts))| Record {
                    offset: i as i64,
                    timestamp: base_ts + ts,
                    key: key.map(Bytes::from),
                    value: value.map(Bytes::from),
                    headers: headers
                        .into_iter()
                        .map(|(k, v)| Header {
                            key: Bytes::from(vec![b'h', k]),
                            value: v.map(Bytes::from),
                        })
                        .collect(),
                })
                .collect();
            let mut spec = BatchSpec::new(0, source);
            if let Some((pid, epoch, seq)) = producer {
                spec = idempotent_spec(source, pid, epoch, seq);
                if transactional {
                    spec.attributes = TRANSACTIONAL_FLAG;
                }
            }
            let sent = records::encode_batch(&spec, &records).unwrap();
            let stored = recompress(&sent, &target(codec)).unwrap();
            if source == codec {
                prop_assert_eq!(&stored, &sent);
            }
            assert_same_batch_except_codec(&sent, &stored, codec);
            let (_, decoded) = records::decode_batch(&stored).unwrap();
            prop_assert_eq!(decoded, records);
        }
    }
}
