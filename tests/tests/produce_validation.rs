//! Record-level produce validation, as Kafka's log validator does it: keyless records on a
//! compacted topic (INVALID_RECORD) and timestamps outside `message.timestamp.before.max.ms` /
//! `message.timestamp.after.max.ms` (INVALID_TIMESTAMP) are refused with the index of each
//! offending record (Produce v8+ `record_errors`), nothing of the batch is appended, and client
//! appends to internal topics are refused. Checked on the wire and with both real clients.

use std::path::Path;

use bytes::Bytes;
use fjord_storage::Compression;
use fjord_storage::records::{KeyValue, simple_batch};
use fjord_tests::broker::BrokerProcess;
use fjord_tests::clients;
use fjord_tests::wire::Conn;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_TIMESTAMP: i16 = 32;
const INVALID_RECORD: i16 = 87;

fn now_ms() -> i64 {
    fjord_storage::now_ms()
}

fn batch(ts: i64, codec: Compression, kvs: &[KeyValue<'_>]) -> Bytes {
    simple_batch(0, ts, codec, kvs)
}

fn indexes(p: &kafka_protocol::messages::produce_response::PartitionProduceResponse) -> Vec<i32> {
    p.record_errors.iter().map(|e| e.batch_index).collect()
}

fn log_end(conn: &mut Conn, topic: &str) -> i64 {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let req = kafka_protocol::messages::ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(fjord_tests::wire::topic_name(topic))
                .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)]),
        ]);
    let resp = conn.call(7, &req);
    resp.topics[0].partitions[0].offset
}

/// FindCoordinator until the group coordinator answers, which creates `__consumer_offsets`.
fn wait_for_offsets_topic(conn: &mut Conn) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let req = kafka_protocol::messages::FindCoordinatorRequest::default()
            .with_key(kafka_protocol::protocol::StrBytes::from_static_str("g"));
        if conn.call(3, &req).error_code == 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no group coordinator");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn keyless_records_on_compacted_topics_and_out_of_range_timestamps_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(Path::new(BIN), dir.path(), &[]);
    let mut conn = Conn::connect(&broker.bootstrap);
    conn.create_topic("compacted", 1, &[("cleanup.policy", "compact")]);
    conn.create_topic(
        "bounded",
        1,
        &[("message.timestamp.before.max.ms", "60000")],
    );
    conn.create_topic("plain", 1, &[]);
    let now = now_ms();

    for codec in [Compression::None, Compression::Zstd] {
        // Records 1 and 3 lack keys: both are named, nothing is appended.
        let kvs: [KeyValue<'_>; 4] = [
            (Some(b"a"), Some(b"1")),
            (None, Some(b"2")),
            (Some(b"b"), Some(b"3")),
            (None, Some(b"4")),
        ];
        let p = conn.produce(9, "compacted", 0, batch(now, codec, &kvs));
        assert_eq!(p.error_code, INVALID_RECORD, "{codec:?}: {p:?}");
        assert_eq!(indexes(&p), vec![1, 3], "{codec:?}");
        assert!(p.error_message.is_some());
        // v7 (kafkajs) has no per-record errors; the partition error is the same.
        let p = conn.produce(7, "compacted", 0, batch(now, codec, &kvs));
        assert_eq!(p.error_code, INVALID_RECORD);
        let p = conn.produce(9, "compacted", 0, batch(now, codec, &[(Some(b"k"), None)]));
        assert_eq!(p.error_code, 0, "a keyed tombstone is fine: {p:?}");
    }
    assert_eq!(log_end(&mut conn, "compacted"), 2);

    // Two hours ahead of the broker's clock: beyond the one-hour default.
    let future = now + 2 * 3_600_000;
    let p = conn.produce(
        9,
        "plain",
        0,
        batch(future, Compression::None, &[(None, Some(b"x"))]),
    );
    assert_eq!(p.error_code, INVALID_TIMESTAMP, "{p:?}");
    assert_eq!(indexes(&p), vec![0]);
    // A day old is fine by default ...
    let p = conn.produce(
        9,
        "plain",
        0,
        batch(now - 86_400_000, Compression::Lz4, &[(None, Some(b"x"))]),
    );
    assert_eq!(p.error_code, 0, "{p:?}");
    // ... but not on a topic that allows one minute.
    let p = conn.produce(
        9,
        "bounded",
        0,
        batch(now - 86_400_000, Compression::Lz4, &[(None, Some(b"x"))]),
    );
    assert_eq!(p.error_code, INVALID_TIMESTAMP, "{p:?}");
    assert_eq!(log_end(&mut conn, "plain"), 1);
    assert_eq!(log_end(&mut conn, "bounded"), 0);

    // Clients may not write the coordinators' topics.
    wait_for_offsets_topic(&mut conn);
    let record = [(Some(&b"k"[..]), Some(&b"v"[..]))];
    let p = conn.produce(
        9,
        "__consumer_offsets",
        0,
        batch(now, Compression::None, &record),
    );
    assert_eq!(p.error_code, INVALID_TOPIC_EXCEPTION, "{p:?}");
}

/// Both real clients see the refusal as a delivery error naming the Kafka error, and the
/// same producer's keyed records still go through.
#[test]
fn real_clients_see_invalid_record_for_keyless_records_on_compacted_topics() {
    let Some(py) = clients::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(Path::new(BIN), dir.path(), &[]);
    let mut conn = Conn::connect(&broker.bootstrap);
    conn.create_topic("compacted-clients", 1, &[("cleanup.policy", "compact")]);
    for (client, expected) in [
        ("rdkafka", "INVALID_RECORD"),
        ("kafka-python", "InvalidRecordError"),
    ] {
        let out = clients::run(
            &py,
            client,
            "produce",
            &json!({
                "bootstrap": broker.bootstrap,
                "topic": "compacted-clients",
                "acks": "1",
                "records": [{"key": null, "value": "no key"}],
            }),
        );
        let error = out["results"][0]["error"].as_str().unwrap_or_default();
        assert!(error.contains(expected), "{client}: {out}");
        let out = clients::run(
            &py,
            client,
            "produce",
            &json!({
                "bootstrap": broker.bootstrap,
                "topic": "compacted-clients",
                "acks": "1",
                "records": [{"key": "k", "value": "keyed"}],
            }),
        );
        assert_eq!(
            out["results"][0]["error"],
            serde_json::Value::Null,
            "{client}: {out}"
        );
    }
    assert_eq!(log_end(&mut conn, "compacted-clients"), 2);
}

/// Both real clients see INVALID_TIMESTAMP for a record two hours ahead of the broker's clock;
/// librdkafka sees a topic error when it writes `__consumer_offsets`.
#[test]
fn real_clients_see_invalid_timestamp_and_internal_topic_refusals() {
    let Some(py) = clients::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(Path::new(BIN), dir.path(), &[]);
    let mut conn = Conn::connect(&broker.bootstrap);
    conn.create_topic("timed-clients", 1, &[]);
    wait_for_offsets_topic(&mut conn);
    let future = now_ms() + 2 * 3_600_000;
    for (client, timestamp_error, topic_error) in [
        ("rdkafka", "INVALID_TIMESTAMP", "TOPIC_EXCEPTION"),
        ("kafka-python", "InvalidTimestampError", ""),
    ] {
        let produce = |topic: &str, record: serde_json::Value| {
            let out = clients::run(
                &py,
                client,
                "produce",
                &json!({"bootstrap": broker.bootstrap, "topic": topic, "acks": "1",
                "partition": 0, "timeout": 20, "records": [record],
                "extra": if client == "rdkafka" {
                    json!({"message.timeout.ms": 15000})
                } else {
                    json!({"request_timeout_ms": 15000})
                }}),
            );
            out["results"][0]["error"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let e = produce(
            "timed-clients",
            json!({"key": "k", "value": "v", "timestamp": future}),
        );
        assert!(e.contains(timestamp_error), "{client}: {e}");
        // kafka-python refuses internal topics itself before sending anything.
        if client == "rdkafka" {
            let e = produce("__consumer_offsets", json!({"key": "k", "value": "v"}));
            assert!(e.contains(topic_error), "{client}: {e}");
        }
    }
    assert_eq!(log_end(&mut conn, "timed-clients"), 0);
}
