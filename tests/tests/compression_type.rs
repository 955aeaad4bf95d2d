//! The topic config `compression.type` against the real `fjord` binary: topics set to zstd,
//! gzip and uncompressed receive batches from librdkafka (none, lz4 idempotent) and kafka-python
//! (gzip, snappy); both clients read every record back unchanged, and the partition's segment
//! file holds only batches in the topic's codec. Wire-level tests cover idempotent retries of
//! rebuilt batches and the record validation Kafka applies when it rebuilds a batch.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use fjord_storage::Compression;
use fjord_storage::batch::{self, BatchHeader, StoredBatches};
use fjord_storage::records::{self, BatchSpec, Header, Record};
use fjord_tests::broker::BrokerProcess;
use fjord_tests::clients::{self, ALL, KAFKA_PYTHON, RDKAFKA};
use fjord_tests::wire::Conn;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");

const CORRUPT_MESSAGE: i16 = 2;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_RECORD: i16 = 87;
const NOW: i64 = 1_700_000_000_000;

fn start() -> (BrokerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(Path::new(BIN), dir.path(), &[]);
    (broker, dir)
}

/// The first segment of partition 0 of `topic`, as stored on disk.
fn segment(broker: &BrokerProcess, topic: &str) -> Vec<u8> {
    let path: PathBuf = broker
        .log_dir()
        .join(format!("{topic}-0"))
        .join("00000000000000000000.log");
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Headers of every batch in a segment, each checked to carry a valid CRC.
fn stored_batches(segment: &[u8]) -> Vec<BatchHeader> {
    let found: Vec<_> = StoredBatches::new(segment, 0).collect();
    let end = found.last().map_or(0, |b| b.position + b.header.size());
    assert_eq!(end, segment.len(), "the segment is whole batches");
    found
        .iter()
        .map(|b| {
            let bytes = &segment[b.position..b.position + b.header.size()];
            assert_eq!(
                batch::compute_crc(bytes),
                b.header.crc,
                "CRC at {}",
                b.position
            );
            b.header
        })
        .collect()
}

fn codec_of(name: &str) -> Compression {
    match name {
        "uncompressed" => Compression::None,
        other => Compression::from_name(other).unwrap(),
    }
}

// ------------------------------------------------------------------------- real clients

struct Env {
    py: PathBuf,
    broker: BrokerProcess,
    _dir: tempfile::TempDir,
}

impl Env {
    fn start() -> Option<Env> {
        let py = clients::python()?;
        let (broker, dir) = start();
        Some(Env {
            py,
            broker,
            _dir: dir,
        })
    }

    fn run(&self, client: &str, op: &str, mut args: Value) -> Value {
        args["bootstrap"] = json!(self.broker.bootstrap);
        clients::run(&self.py, client, op, &args)
    }
}

/// Keys, null keys and values, repeated and empty header keys, explicit timestamps.
fn varied_records(n: usize, tag: &str, base_ts: i64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "key": if i % 4 == 1 { Value::Null } else { json!(format!("{tag}-key-{i}")) },
                "value": if i % 5 == 2 && i % 4 != 1 {
                    Value::Null
                } else {
                    json!(format!("{tag}-value-{i}-ünïcode-").repeat(i % 7 + 1))
                },
                "headers": if i % 3 == 0 {
                    json!([["trace", format!("t{i}")], ["trace", "again"], ["", ""]])
                } else {
                    json!([])
                },
                "timestamp": base_ts + (i as i64 * 37) % 11,
            })
        })
        .collect()
}

#[test]
fn real_clients_produce_to_recompressing_topics_and_read_everything_back() {
    let Some(env) = Env::start() else { return };
    // (client, producer codec, idempotent)
    let producers = [
        (RDKAFKA, "none", false),
        (RDKAFKA, "lz4", true),
        (KAFKA_PYTHON, "gzip", false),
        (KAFKA_PYTHON, "snappy", false),
    ];
    for target in ["zstd", "gzip", "uncompressed"] {
        let topic = format!("ct-{target}");
        let r = env.run(
            RDKAFKA,
            "admin",
            json!({"op": "create_topics", "topics": [
                {"name": topic, "partitions": 1, "config": {"compression.type": target}}
            ]}),
        );
        assert_eq!(r[&topic], Value::Null, "create {topic}: {r}");

        let mut sent = Vec::new();
        for (k, (client, codec, idempotent)) in producers.iter().enumerate() {
            let records = varied_records(40, &format!("{client}-{codec}"), NOW + k as i64 * 1000);
            let r = env.run(
                client,
                "produce",
                json!({"topic": topic, "records": records, "compression": codec,
                       "linger_ms": 50, "acks": "all", "idempotent": idempotent}),
            );
            let results = r["results"].as_array().unwrap();
            assert_eq!(results.len(), records.len(), "{r}");
            for res in results {
                assert_eq!(
                    res["error"],
                    Value::Null,
                    "{client} ({codec}) to {topic}: {res}\nbroker log:\n{}",
                    env.broker.log_tail()
                );
            }
            sent.extend(records);
        }

        for consumer in ALL {
            let r = env.run(
                consumer,
                "consume",
                json!({"topic": topic, "partitions": [0], "count": sent.len(), "timeout": 30}),
            );
            let mut got = r["records"].as_array().unwrap().clone();
            got.sort_by_key(|g| g["offset"].as_i64());
            assert_eq!(got.len(), sent.len(), "{consumer} from {topic}: {r}");
            for (i, (s, g)) in sent.iter().zip(&got).enumerate() {
                assert_eq!(
                    g["offset"].as_i64(),
                    Some(i as i64),
                    "{consumer} {topic}: {g}"
                );
                for field in ["key", "value", "headers", "timestamp"] {
                    assert_eq!(
                        g[field], s[field],
                        "{consumer} read {field} of record {i} of {topic}: {g}"
                    );
                }
            }
        }

        let headers = stored_batches(&segment(&env.broker, &topic));
        assert!(headers.len() >= producers.len(), "{headers:?}");
        let want = codec_of(target);
        for h in &headers {
            assert_eq!(h.compression(), Some(want), "{topic}: {h:?}");
        }
        let total: i64 = headers.iter().map(|h| i64::from(h.records_count)).sum();
        assert_eq!(total, sent.len() as i64);
        // The idempotent producer's batches keep its producer id and consecutive sequences.
        let idempotent: Vec<&BatchHeader> = headers.iter().filter(|h| h.producer_id >= 0).collect();
        assert!(
            !idempotent.is_empty(),
            "{topic}: no idempotent batch stored"
        );
        let mut next_seq = 0;
        for h in idempotent {
            assert_eq!(h.producer_id, idempotent_pid(&headers), "{topic}");
            assert_eq!(h.base_sequence, next_seq, "{topic}: {h:?}");
            next_seq = h.last_sequence() + 1;
        }
        assert_eq!(next_seq, 40, "{topic}: every idempotent record");
    }

    // Altering the config applies to the next batch; stored batches stay as they are.
    let topic = "ct-uncompressed";
    let r = env.run(
        RDKAFKA,
        "admin",
        json!({"op": "alter_configs", "topic": topic, "set": {"compression.type": "lz4"}}),
    );
    assert!(r.as_object().unwrap().values().all(Value::is_null), "{r}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let r = env.run(
            RDKAFKA,
            "admin",
            json!({"op": "describe_configs", "topic": topic}),
        );
        if r["compression.type"]["value"] == json!("lz4") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alter not visible: {r}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let records = varied_records(10, "after-alter", NOW + 10_000);
    let r = env.run(
        KAFKA_PYTHON,
        "produce",
        json!({"topic": topic, "records": records, "compression": "gzip", "linger_ms": 50}),
    );
    assert!(
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["error"].is_null()),
        "{r}"
    );
    let headers = stored_batches(&segment(&env.broker, topic));
    let (before, after): (Vec<&BatchHeader>, Vec<&BatchHeader>) =
        headers.iter().partition(|h| h.base_offset < 160);
    assert!(
        before
            .iter()
            .all(|h| h.compression() == Some(Compression::None))
    );
    assert!(!after.is_empty());
    assert!(
        after
            .iter()
            .all(|h| h.compression() == Some(Compression::Lz4)),
        "{after:?}"
    );
    let got = env.run(
        RDKAFKA,
        "consume",
        json!({"topic": topic, "partitions": [0], "offset": 160, "count": 10, "timeout": 30}),
    );
    let got = got["records"].as_array().unwrap();
    assert_eq!(got.len(), 10);
    for (g, s) in got.iter().zip(&records) {
        assert_eq!((&g["key"], &g["value"]), (&s["key"], &s["value"]));
        assert_eq!(
            (&g["headers"], &g["timestamp"]),
            (&s["headers"], &s["timestamp"])
        );
    }
}

fn idempotent_pid(headers: &[BatchHeader]) -> i64 {
    headers
        .iter()
        .find(|h| h.producer_id >= 0)
        .map_or(-1, |h| h.producer_id)
}

// ------------------------------------------------------------------------- wire level

fn name(s: &str) -> TopicName {
    fjord_tests::wire::topic_name(s)
}

fn create_topic(conn: &mut Conn, topic: &str, configs: &[(&str, &str)]) {
    conn.create_topic(topic, 1, configs);
}

/// Produces to partition 0 with acks=-1: (error code, base offset, error message).
fn produce(conn: &mut Conn, topic: &str, records: Bytes) -> (i16, i64, Option<String>) {
    let req = ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ]);
    let resp = conn.call(9, &req);
    let p = &resp.responses[0].partition_responses[0];
    (
        p.error_code,
        p.base_offset,
        p.error_message.as_ref().map(|m| m.to_string()),
    )
}

fn init_producer_id(conn: &mut Conn) -> (i64, i16) {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    let resp = conn.call(4, &req);
    assert_eq!(resp.error_code, 0, "{resp:?}");
    (resp.producer_id.0, resp.producer_epoch)
}

fn wire_records(n: usize, keyed: bool) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            offset: i as i64,
            timestamp: NOW + i as i64,
            key: (keyed || i % 2 == 0).then(|| Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("v{i}-").repeat(20))),
            headers: vec![
                Header {
                    key: Bytes::from_static(b"dup"),
                    value: Some(Bytes::from_static(b"1")),
                },
                Header {
                    key: Bytes::from_static(b"dup"),
                    value: None,
                },
            ],
        })
        .collect()
}

fn idempotent_batch(codec: Compression, pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
    let mut spec = BatchSpec::new(0, codec);
    spec.producer_id = pid;
    spec.producer_epoch = epoch;
    spec.base_sequence = seq;
    records::encode_batch(&spec, &wire_records(n, true)).unwrap()
}

#[test]
fn idempotent_retries_of_rebuilt_batches_are_answered_as_duplicates() {
    let (broker, _dir) = start();
    let mut conn = Conn::connect(&broker.bootstrap);
    create_topic(&mut conn, "ct-idem", &[("compression.type", "zstd")]);
    let (pid, epoch) = init_producer_id(&mut conn);

    let first = idempotent_batch(Compression::Gzip, pid, epoch, 0, 5);
    let second = idempotent_batch(Compression::Snappy, pid, epoch, 5, 3);
    assert_eq!(produce(&mut conn, "ct-idem", first.clone()).0, 0);
    assert_eq!(produce(&mut conn, "ct-idem", second.clone()).0, 0);
    // Retries of both (rebuilt again on arrival) get their original offsets back.
    let (code, base, _) = produce(&mut conn, "ct-idem", first);
    assert_eq!((code, base), (0, 0));
    let (code, base, _) = produce(&mut conn, "ct-idem", second);
    assert_eq!((code, base), (0, 5));
    // A sequence gap is still refused.
    let gap = idempotent_batch(Compression::Lz4, pid, epoch, 20, 1);
    assert_eq!(
        produce(&mut conn, "ct-idem", gap).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    let next = idempotent_batch(Compression::None, pid, epoch, 8, 2);
    let (code, base, _) = produce(&mut conn, "ct-idem", next);
    assert_eq!((code, base), (0, 8));

    let headers = stored_batches(&segment(&broker, "ct-idem"));
    let summary: Vec<(Option<Compression>, i64, i32, i32)> = headers
        .iter()
        .map(|h| {
            (
                h.compression(),
                h.base_offset,
                h.base_sequence,
                h.records_count,
            )
        })
        .collect();
    let z = Some(Compression::Zstd);
    assert_eq!(summary, vec![(z, 0, 0, 5), (z, 5, 5, 3), (z, 8, 8, 2)]);
    for h in &headers {
        assert_eq!((h.producer_id, h.producer_epoch), (pid, epoch));
    }
}

/// Rebuilds a batch with `plain` as its (uncompressed) records section and a valid CRC.
fn with_records_section(batch: &[u8], plain: &[u8]) -> Bytes {
    let mut out = batch[..batch::HEADER_SIZE].to_vec();
    out.extend_from_slice(plain);
    let len = (out.len() - batch::LOG_OVERHEAD) as i32;
    out[batch::LENGTH..batch::LENGTH + 4].copy_from_slice(&len.to_be_bytes());
    let crc = batch::compute_crc(&out);
    out[batch::CRC..batch::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

#[test]
fn rebuilding_validates_records_as_kafka_does() {
    let (broker, _dir) = start();
    let mut conn = Conn::connect(&broker.bootstrap);
    create_topic(&mut conn, "ct-check", &[("compression.type", "gzip")]);
    create_topic(
        &mut conn,
        "ct-compact",
        &[("compression.type", "zstd"), ("cleanup.policy", "compact")],
    );

    // Records that leave bytes over inside a CRC-valid batch: INVALID_RECORD.
    let plain = records::encode_batch(
        &BatchSpec::new(0, Compression::None),
        &wire_records(3, true),
    )
    .unwrap();
    let mut section = plain[batch::HEADER_SIZE..].to_vec();
    section.extend_from_slice(&[2, 0, 0]);
    let (code, _, message) = produce(
        &mut conn,
        "ct-check",
        with_records_section(&plain, &section),
    );
    assert_eq!(code, INVALID_RECORD, "{message:?}");
    assert!(message.is_some_and(|m| m.contains("remain")));

    // A compressed body that is not the codec's stream: CORRUPT_MESSAGE, nothing stored.
    let lz4 = records::encode_batch(&BatchSpec::new(0, Compression::Lz4), &wire_records(3, true))
        .unwrap();
    let garbage = with_records_section(&lz4, &[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]);
    assert_eq!(produce(&mut conn, "ct-check", garbage).0, CORRUPT_MESSAGE);

    // Inner offset deltas that are not 0, 1, 2: renumbered, as Kafka rebuilds them.
    let mut odd = wire_records(3, true);
    odd[1].offset = 9;
    let mut spec = BatchSpec::new(0, Compression::Snappy);
    spec.last_offset_delta = Some(2);
    let batch = records::encode_batch(&spec, &odd).unwrap();
    let (code, base, message) = produce(&mut conn, "ct-check", batch);
    assert_eq!((code, base), (0, 0), "{message:?}");
    let seg = segment(&broker, "ct-check");
    let headers = stored_batches(&seg);
    assert_eq!(headers.len(), 1, "the refused batches left nothing behind");
    let (h, got) = records::decode_batch(&seg).unwrap();
    assert_eq!(h.compression(), Some(Compression::Gzip));
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    for (g, s) in got.iter().zip(&odd) {
        assert_eq!(
            (&g.key, &g.value, &g.headers),
            (&s.key, &s.value, &s.headers)
        );
    }

    // A compacted topic refuses keyless records in a batch it rebuilds.
    let keyless = records::encode_batch(
        &BatchSpec::new(0, Compression::Gzip),
        &wire_records(4, false),
    )
    .unwrap();
    let (code, _, message) = produce(&mut conn, "ct-compact", keyless);
    assert_eq!(code, INVALID_RECORD, "{message:?}");
    assert!(message.is_some_and(|m| m.contains("without a key")));
    let keyed = records::encode_batch(
        &BatchSpec::new(0, Compression::Gzip),
        &wire_records(4, true),
    )
    .unwrap();
    assert_eq!(produce(&mut conn, "ct-compact", keyed).0, 0);
    let headers = stored_batches(&segment(&broker, "ct-compact"));
    assert_eq!(headers.len(), 1);
    assert_eq!(headers[0].compression(), Some(Compression::Zstd));
}

#[test]
fn producer_keeps_batches_exactly_as_sent() {
    let (broker, _dir) = start();
    let mut conn = Conn::connect(&broker.bootstrap);
    create_topic(&mut conn, "ct-producer", &[]);
    let mut expected = Vec::new();
    for (i, codec) in [Compression::Gzip, Compression::Lz4, Compression::None]
        .into_iter()
        .enumerate()
    {
        let batch =
            records::encode_batch(&BatchSpec::new(0, codec), &wire_records(4, true)).unwrap();
        let (code, base, _) = produce(&mut conn, "ct-producer", batch.clone());
        assert_eq!((code, base), (0, 4 * i as i64));
        expected.push(batch);
    }
    let seg = segment(&broker, "ct-producer");
    let found: Vec<_> = StoredBatches::new(&seg, 0).collect();
    assert_eq!(found.len(), expected.len());
    for (b, sent) in found.iter().zip(&expected) {
        let stored = &seg[b.position..b.position + b.header.size()];
        // Only the leader-stamped base offset and leader epoch differ.
        assert_eq!(
            &stored[batch::MAGIC..],
            &sent[batch::MAGIC..],
            "stored as sent"
        );
    }
}
