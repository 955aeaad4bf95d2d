//! DeleteRecords (API key 21) against the `fjord` binary: through the admin APIs of
//! confluent-kafka (librdkafka) and kafka-python, seen by consumers and ListOffsets as a new log
//! start offset that survives a SIGKILL, and its per-partition errors at the wire level.

mod support;

use std::path::Path;

use bytes::Bytes;
use fjord_storage::Compression;
use fjord_storage::records::simple_batch;
use fjord_tests::broker::BrokerProcess;
use fjord_tests::clients::{self, ALL, RDKAFKA};
use fjord_tests::wire::Conn;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");

const OFFSET_OUT_OF_RANGE: i16 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const POLICY_VIOLATION: i16 = 44;

fn run(py: &Path, broker: &BrokerProcess, client: &str, op: &str, mut args: Value) -> Value {
    args["bootstrap"] = json!(broker.bootstrap);
    clients::run(py, client, op, &args)
}

fn extra(py: &Path, broker: &BrokerProcess, client: &str, op: &str, mut args: Value) -> Value {
    args["bootstrap"] = json!(broker.bootstrap);
    support::run(py, client, op, &args)
}

fn produce_to(py: &Path, broker: &BrokerProcess, topic: &str, partition: i32, n: usize) {
    let records: Vec<Value> = (0..n)
        .map(|i| json!({"key": format!("k{i}"), "value": format!("v{i}")}))
        .collect();
    let r = run(
        py,
        broker,
        RDKAFKA,
        "produce",
        json!({"topic": topic, "records": records, "partition": partition}),
    );
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), n, "{r}");
    assert!(results.iter().all(|x| x["error"].is_null()), "{r}");
}

fn offsets(py: &Path, broker: &BrokerProcess, client: &str, topic: &str, p: i32) -> (i64, i64) {
    let r = run(
        py,
        broker,
        client,
        "list_offsets",
        json!({"topic": topic, "partition": p}),
    );
    (
        r["earliest"].as_i64().unwrap(),
        r["latest"].as_i64().unwrap(),
    )
}

#[test]
fn both_admin_clients_delete_records_and_consumers_see_the_new_log_start() {
    let Some(py) = clients::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(Path::new(BIN), dir.path(), &[]);
    for client in ALL {
        let topic = format!("dr-{client}");
        let r = run(
            &py,
            &broker,
            RDKAFKA,
            "admin",
            json!({"op": "create_topics", "topics": [{"name": topic, "partitions": 2}]}),
        );
        assert_eq!(r[&topic], Value::Null, "{r}");
        produce_to(&py, &broker, &topic, 0, 100);
        produce_to(&py, &broker, &topic, 1, 10);

        // Below offset 40 on partition 0; everything (-1: the high watermark) on partition 1.
        let r = extra(
            &py,
            &broker,
            client,
            "delete_records",
            json!({"deletes": [[topic, 0, 40], [topic, 1, -1]]}),
        );
        assert_eq!(
            r[format!("{topic}:0")]["low_watermark"],
            40,
            "{client}: {r}"
        );
        assert_eq!(
            r[format!("{topic}:1")]["low_watermark"],
            10,
            "{client}: {r}"
        );

        for reader in ALL {
            assert_eq!(
                offsets(&py, &broker, reader, &topic, 0),
                (40, 100),
                "{reader}"
            );
            assert_eq!(
                offsets(&py, &broker, reader, &topic, 1),
                (10, 10),
                "{reader}"
            );
            // A consumer positioned at 0 is told OFFSET_OUT_OF_RANGE and resets to the new
            // log start.
            let r = extra(
                &py,
                &broker,
                reader,
                "consume_from",
                json!({"topic": topic, "partition": 0, "offset": 0, "count": 60}),
            );
            let got: Vec<i64> = r["offsets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o.as_i64().unwrap())
                .collect();
            assert_eq!(got, (40..100).collect::<Vec<_>>(), "{reader} read: {r}");
        }

        // Past the high watermark: refused, nothing moves.
        let r = extra(
            &py,
            &broker,
            client,
            "delete_records",
            json!({"deletes": [[topic, 0, 101]]}),
        );
        assert_eq!(
            r[format!("{topic}:0")]["code"],
            OFFSET_OUT_OF_RANGE,
            "{client}: {r}"
        );
        // Below the current start: nothing to do, the answer is the current start.
        let r = extra(
            &py,
            &broker,
            client,
            "delete_records",
            json!({"deletes": [[topic, 0, 10]]}),
        );
        assert_eq!(
            r[format!("{topic}:0")]["low_watermark"],
            40,
            "{client}: {r}"
        );
        assert_eq!(offsets(&py, &broker, client, &topic, 0), (40, 100));
    }

    // The new log start is checkpointed: a SIGKILL does not bring deleted records back.
    broker.kill();
    broker.restart();
    for client in ALL {
        let topic = format!("dr-{client}");
        assert_eq!(
            offsets(&py, &broker, client, &topic, 0),
            (40, 100),
            "{client}"
        );
        assert_eq!(
            offsets(&py, &broker, client, &topic, 1),
            (10, 10),
            "{client}"
        );
    }
    produce_to(&py, &broker, "dr-rdkafka", 1, 1);
    assert_eq!(offsets(&py, &broker, RDKAFKA, "dr-rdkafka", 1), (10, 11));
}

fn name(s: &str) -> TopicName {
    fjord_tests::wire::topic_name(s)
}

fn create_topic(conn: &mut Conn, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    conn.create_topic(topic, partitions, configs);
}

fn produce(conn: &mut Conn, topic: &str, n: usize) {
    let values: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
    // Keyed: one of the topics is compacted, which refuses records without keys.
    let kvs: Vec<fjord_storage::records::KeyValue<'_>> = values
        .iter()
        .map(|v| (Some(v.as_bytes()), Some(v.as_bytes())))
        .collect();
    let records: Bytes = simple_batch(0, 1_700_000_000_000, Compression::None, &kvs);
    let req = ProduceRequest::default()
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
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 0,
        "{resp:?}"
    );
}

/// One DeleteRecords call at `version`; `(topic, partition, offset)` in, `(error, low
/// watermark)` per partition out, in request order.
fn delete(conn: &mut Conn, version: i16, parts: &[(&str, i32, i64)]) -> Vec<(i16, i64)> {
    let topics = parts
        .iter()
        .map(|(t, p, o)| {
            DeleteRecordsTopic::default()
                .with_name(name(t))
                .with_partitions(vec![
                    DeleteRecordsPartition::default()
                        .with_partition_index(*p)
                        .with_offset(*o),
                ])
        })
        .collect();
    let req = DeleteRecordsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(5000);
    let resp = conn.call(version, &req);
    assert_eq!(resp.topics.len(), parts.len(), "{resp:?}");
    resp.topics
        .iter()
        .zip(parts)
        .map(|(t, (topic, p, _))| {
            assert_eq!(t.name.as_str(), *topic);
            assert_eq!(t.partitions.len(), 1, "{t:?}");
            assert_eq!(t.partitions[0].partition_index, *p);
            (t.partitions[0].error_code, t.partitions[0].low_watermark)
        })
        .collect()
}

#[test]
fn per_partition_errors_and_the_fetch_view_at_the_wire_level() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(Path::new(BIN), dir.path(), &[]);
    let mut conn = Conn::connect(&broker.bootstrap);
    let versions = conn.call(3, &ApiVersionsRequest::default());
    let dr = versions
        .api_keys
        .iter()
        .find(|k| k.api_key == 21)
        .expect("DeleteRecords advertised");
    assert_eq!((dr.min_version, dr.max_version), (0, 2));

    create_topic(&mut conn, "wire", 2, &[]);
    create_topic(
        &mut conn,
        "wire-compact",
        1,
        &[("cleanup.policy", "compact")],
    );
    produce(&mut conn, "wire", 5);
    produce(&mut conn, "wire-compact", 5);

    let got = delete(
        &mut conn,
        2,
        &[
            ("wire", 0, 6),          // past the high watermark (5)
            ("wire", 0, -2),         // negative, not -1
            ("wire", 2, 0),          // no such partition
            ("nope", 0, 0),          // no such topic
            ("wire-compact", 0, -1), // cleanup.policy without delete
            ("__consumer_offsets", 0, 0),
            ("wire", 1, -1), // empty partition: the high watermark is 0
        ],
    );
    assert_eq!(
        got,
        vec![
            (OFFSET_OUT_OF_RANGE, -1),
            (OFFSET_OUT_OF_RANGE, -1),
            (UNKNOWN_TOPIC_OR_PARTITION, -1),
            (UNKNOWN_TOPIC_OR_PARTITION, -1),
            (POLICY_VIOLATION, -1),
            (INVALID_TOPIC_EXCEPTION, -1),
            (0, 0),
        ]
    );
    // Version 0 (not flexible) works the same.
    assert_eq!(delete(&mut conn, 0, &[("wire", 0, 3)]), vec![(0, 3)]);
    assert_eq!(delete(&mut conn, 1, &[("wire", 0, -1)]), vec![(0, 5)]);
    assert_eq!(delete(&mut conn, 2, &[("wire", 0, 2)]), vec![(0, 5)]);

    // Fetching below the new start is out of range, and says where the log starts.
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name("wire"))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let resp = conn.call(11, &fetch);
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, OFFSET_OUT_OF_RANGE, "{p:?}");
    assert_eq!(p.log_start_offset, 5, "{p:?}");
    let list = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name("wire"))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-2),
                ]),
        ]);
    let resp = conn.call(7, &list);
    assert_eq!(resp.topics[0].partitions[0].offset, 5, "{resp:?}");
}
