//! Incremental fetch sessions (KIP-227) on the wire, and a kafka-python consumer (which uses
//! them) reading every record of a topic that keeps growing across several partitions.

use std::path::Path;

use bytes::Bytes;
use fjord_storage::Compression;
use fjord_storage::records::simple_batch;
use fjord_tests::broker::BrokerProcess;
use fjord_tests::clients;
use fjord_tests::wire::{Conn, topic_name};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
const FETCH_SESSION_TOPIC_ID_ERROR: i16 = 106;

fn partition(index: i32, offset: i64) -> FetchPartition {
    FetchPartition::default()
        .with_partition(index)
        .with_fetch_offset(offset)
        .with_partition_max_bytes(1 << 20)
}

fn request(session_id: i32, epoch: i32, topic: &str, parts: Vec<FetchPartition>) -> FetchRequest {
    let topics = if parts.is_empty() {
        vec![]
    } else {
        vec![
            FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(parts),
        ]
    };
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(50)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(topics)
}

/// (partition, record bytes, high watermark) of every partition in the response.
fn answered(resp: &FetchResponse) -> Vec<(i32, usize, i64)> {
    let mut out: Vec<(i32, usize, i64)> = resp
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| {
            (
                p.partition_index,
                p.records.as_ref().map_or(0, Bytes::len),
                p.high_watermark,
            )
        })
        .collect();
    out.sort();
    out
}

fn produce(conn: &mut Conn, topic: &str, partition: i32, value: &str) {
    let kvs = [(None, Some(value.as_bytes()))];
    let records = simple_batch(0, fjord_storage::now_ms(), Compression::None, &kvs);
    assert_eq!(conn.produce(9, topic, partition, records).error_code, 0);
}

#[test]
fn incremental_fetches_carry_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(Path::new(BIN), dir.path(), &[]);
    let mut conn = Conn::connect(&broker.bootstrap);
    conn.create_topic("s", 3, &[]);
    produce(&mut conn, "s", 0, "a");

    // Epoch 0 opens a session and answers every partition.
    let parts = vec![partition(0, 0), partition(1, 0), partition(2, 0)];
    let resp = conn.call(12, &request(0, 0, "s", parts));
    assert_eq!(resp.error_code, 0);
    let id = resp.session_id;
    assert!(id > 0, "a session was created: {resp:?}");
    let all = answered(&resp);
    assert_eq!(all.len(), 3);
    assert!(all[0].1 > 0 && all[0].2 == 1, "{all:?}");

    // The client read partition 0 and says so; nothing else is new, so nothing is answered.
    let resp = conn.call(12, &request(id, 1, "s", vec![partition(0, 1)]));
    assert_eq!((resp.error_code, resp.session_id), (0, id));
    assert_eq!(answered(&resp), vec![]);

    // New data on partition 2 only: the request lists nothing, the answer has partition 2.
    produce(&mut conn, "s", 2, "b");
    let resp = conn.call(12, &request(id, 2, "s", vec![]));
    let got = answered(&resp);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0, got[0].2), (2, 1));
    assert!(got[0].1 > 0);

    // The same epoch again is stale; an unknown id is unknown; ids on a names session refused.
    let resp = conn.call(12, &request(id, 2, "s", vec![]));
    assert_eq!(resp.error_code, INVALID_FETCH_SESSION_EPOCH);
    let resp = conn.call(12, &request(id.wrapping_add(1), 3, "s", vec![]));
    assert_eq!(resp.error_code, FETCH_SESSION_ID_NOT_FOUND);
    let resp = conn.call(13, &request(id, 3, "s", vec![]));
    assert_eq!(resp.error_code, FETCH_SESSION_TOPIC_ID_ERROR);

    // Forgetting a partition: later data there is no longer answered.
    let forget = ForgottenTopic::default()
        .with_topic(topic_name("s"))
        .with_partitions(vec![1]);
    let resp = conn.call(
        12,
        &request(id, 3, "s", vec![partition(2, 1)]).with_forgotten_topics_data(vec![forget]),
    );
    assert_eq!(resp.error_code, 0);
    produce(&mut conn, "s", 1, "c");
    let resp = conn.call(12, &request(id, 4, "s", vec![]));
    assert_eq!(answered(&resp), vec![]);

    // Epoch -1 closes the session and is served as a sessionless full fetch.
    let resp = conn.call(12, &request(id, -1, "s", vec![partition(1, 0)]));
    assert_eq!((resp.error_code, resp.session_id), (0, 0));
    assert_eq!(answered(&resp).len(), 1);
    let resp = conn.call(12, &request(id, 5, "s", vec![]));
    assert_eq!(resp.error_code, FETCH_SESSION_ID_NOT_FOUND);
}

/// kafka-python keeps a fetch session while it consumes; every record of four partitions,
/// produced in two rounds, arrives once.
#[test]
fn kafka_python_consumes_everything_through_a_fetch_session() {
    let Some(py) = clients::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(Path::new(BIN), dir.path(), &[]);
    let mut conn = Conn::connect(&broker.bootstrap);
    conn.create_topic("sessions", 4, &[]);
    let mut expected = 0;
    for round in 0..2 {
        for p in 0..4 {
            for i in 0..25 {
                produce(&mut conn, "sessions", p, &format!("r{round}-p{p}-{i}"));
                expected += 1;
            }
        }
        for client in ["kafka-python", "rdkafka"] {
            let out = clients::run(
                &py,
                client,
                "consume",
                &json!({
                    "bootstrap": broker.bootstrap,
                    "topic": "sessions",
                    "partitions": [0, 1, 2, 3],
                    "count": expected,
                }),
            );
            let records = out["records"].as_array().unwrap();
            assert_eq!(records.len(), expected, "{client} round {round}");
            let mut values: Vec<&str> = records
                .iter()
                .map(|r| r["value"].as_str().unwrap())
                .collect();
            values.sort();
            values.dedup();
            assert_eq!(values.len(), expected, "{client}: no duplicates");
        }
    }
}
