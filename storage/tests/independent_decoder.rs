//! Segments written by Fjord decode record by record with an independent implementation: the
//! `kafka-protocol` crate's record batch decoder (which also checks every CRC), for batches
//! encoded by that crate and by Fjord's own encoder, in every codec.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use fjord_storage::batch::Compression;
use fjord_storage::records::{self, BatchSpec, Header, Record};
use fjord_storage::{LoadParams, Log, LogConfig, TopicPartition};
use indexmap_like::headers_of;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records as kp;

const NOW: i64 = 1_700_000_000_000;

mod indexmap_like {
    use kafka_protocol::records::Record;
    /// Header pairs of a decoded record, in order.
    pub fn headers_of(r: &Record) -> Vec<(String, Option<Vec<u8>>)> {
        r.headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_ref().map(|b| b.to_vec())))
            .collect()
    }
}

fn kp_codec(c: Compression) -> kp::Compression {
    match c {
        Compression::None => kp::Compression::None,
        Compression::Gzip => kp::Compression::Gzip,
        Compression::Snappy => kp::Compression::Snappy,
        Compression::Lz4 => kp::Compression::Lz4,
        Compression::Zstd => kp::Compression::Zstd,
    }
}

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// A batch from the kafka-protocol encoder, the way an independent producer would send it.
/// Each codec's batches come from their own producer id: the log drops a batch that repeats a
/// producer's sequence numbers as an idempotent retry.
fn kp_batch(codec: Compression, n: usize, tag: &str) -> Bytes {
    let producer_id = kp_producer_id(codec);
    let records: Vec<kp::Record> = (0..n)
        .map(|i| {
            let mut record = kp::Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch: 0,
                timestamp_type: kp::TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: NOW + i as i64,
                key: (i % 2 == 0).then(|| Bytes::from(format!("{tag}-key-{i}"))),
                value: (i != 1).then(|| Bytes::from(format!("{tag}-value-{i}").repeat(20))),
                headers: Default::default(),
            };
            record.headers.insert(
                StrBytes::from_string(format!("h{i}")),
                Some(Bytes::from(format!("hv{i}"))),
            );
            record
        })
        .collect();
    let mut buf = BytesMut::new();
    kp::RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &kp::RecordEncodeOptions {
            version: 2,
            compression: kp_codec(codec),
        },
    )
    .unwrap();
    buf.freeze()
}

fn kp_producer_id(codec: Compression) -> i64 {
    7 + i64::from(codec.id())
}

/// A batch from Fjord's own encoder (what compaction writes).
fn fjord_batch(codec: Compression, n: usize, tag: &str) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            offset: i as i64,
            timestamp: NOW + 100 + i as i64,
            key: Some(Bytes::from(format!("{tag}-k{i}"))),
            value: Some(Bytes::from(format!("{tag}-v{i}"))),
            headers: vec![Header {
                key: Bytes::from_static(b"src"),
                value: Some(Bytes::from_static(b"fjord")),
            }],
        })
        .collect();
    records::encode_batch(&BatchSpec::new(0, codec), &records).unwrap()
}

fn segment_bytes(dir: &std::path::Path) -> Vec<u8> {
    std::fs::read(dir.join("00000000000000000000.log")).unwrap()
}

#[test]
fn every_record_of_a_fjord_segment_decodes_independently() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        TopicPartition::new("d", 0),
        Arc::new(LogConfig::default()),
        LoadParams::new_log(NOW),
    )
    .unwrap();
    let mut expected = Vec::new();
    for (i, codec) in CODECS.iter().enumerate() {
        let tag = format!("kp{i}");
        let batch = kp_batch(*codec, 4, &tag);
        let info = log.append_as_leader(&batch, 3, NOW).unwrap();
        for j in 0..4i64 {
            expected.push((info.first_offset + j, *codec, Some(tag.clone()), j));
        }
        let tag = format!("fj{i}");
        let info = log
            .append_as_leader(&fjord_batch(*codec, 3, &tag), 3, NOW)
            .unwrap();
        for j in 0..3i64 {
            expected.push((info.first_offset + j, *codec, None, j));
        }
    }
    log.close(NOW).unwrap();

    let mut data = Bytes::from(segment_bytes(dir.path()));
    let sets =
        kp::RecordBatchDecoder::decode_all(&mut data).expect("kafka-protocol decodes the segment");
    assert_eq!(sets.len(), 10);
    let decoded: Vec<kp::Record> = sets.iter().flat_map(|s| s.records.clone()).collect();
    assert_eq!(decoded.len(), expected.len());
    for (rec, (offset, codec, kp_tag, j)) in decoded.iter().zip(&expected) {
        assert_eq!(rec.offset, *offset);
        assert_eq!(rec.partition_leader_epoch, 3, "leader epoch stamped");
        match kp_tag {
            Some(tag) => {
                assert_eq!(rec.timestamp, NOW + j);
                assert_eq!(rec.producer_id, kp_producer_id(*codec));
                assert_eq!(rec.sequence, *j as i32);
                assert_eq!(
                    rec.key,
                    (j % 2 == 0).then(|| Bytes::from(format!("{tag}-key-{j}")))
                );
                assert_eq!(
                    rec.value,
                    (*j != 1).then(|| Bytes::from(format!("{tag}-value-{j}").repeat(20)))
                );
                assert_eq!(
                    headers_of(rec),
                    vec![(format!("h{j}"), Some(format!("hv{j}").into_bytes()))]
                );
            }
            None => {
                assert_eq!(rec.timestamp, NOW + 100 + j);
                assert!(
                    rec.key
                        .as_ref()
                        .unwrap()
                        .ends_with(format!("-k{j}").as_bytes())
                );
                assert_eq!(
                    headers_of(rec),
                    vec![("src".to_string(), Some(b"fjord".to_vec()))]
                );
            }
        }
        let _ = codec;
    }
    for (set, codec) in sets.iter().zip(CODECS.iter().flat_map(|c| [*c, *c])) {
        assert_eq!(set.compression, kp_codec(codec));
    }
}

#[test]
fn log_append_time_batches_decode_with_the_broker_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig::default()
        .with_overrides([("message.timestamp.type", "LogAppendTime")])
        .unwrap();
    let log = Log::open(
        dir.path(),
        TopicPartition::new("d", 0),
        Arc::new(cfg),
        LoadParams::new_log(NOW),
    )
    .unwrap();
    for codec in CODECS {
        log.append_as_leader(&kp_batch(codec, 3, "lat"), 0, NOW + 5)
            .unwrap();
    }
    log.close(NOW).unwrap();
    let mut data = Bytes::from(segment_bytes(dir.path()));
    let raw = data.clone();
    let sets = kp::RecordBatchDecoder::decode_all(&mut data).expect("CRCs recomputed correctly");
    assert_eq!(sets.len(), 5);
    for rec in sets.iter().flat_map(|s| &s.records) {
        assert_eq!(rec.timestamp_type, kp::TimestampType::LogAppend);
    }
    // kafka-protocol 0.18 discards maxTimestamp when decoding (Java and librdkafka give
    // LogAppendTime records the batch's maxTimestamp), so check the stamped header directly.
    for b in fjord_storage::batch::StoredBatches::new(&raw, 0) {
        assert_eq!(b.header.max_timestamp, NOW + 5);
    }
}
