//! Protocol-level tests against the `fjord` binary over raw TCP: hostile input, error codes,
//! acks=0, pipelining and fetch long polls.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_storage::Compression;
use fjord_storage::records::simple_batch;
use fjord_tests::broker::BrokerProcess;
use fjord_tests::wire::Conn;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");

fn start(extra: &[(&str, &str)]) -> (BrokerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let b = BrokerProcess::start(Path::new(BIN), dir.path(), extra);
    (b, dir)
}

fn name(s: &str) -> TopicName {
    fjord_tests::wire::topic_name(s)
}

fn create_topic(conn: &mut Conn, topic: &str, partitions: i32) {
    create_topic_with(conn, topic, partitions, &[]);
}

fn create_topic_with(conn: &mut Conn, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    conn.create_topic(topic, partitions, configs);
}

fn produce_request(topic: &str, partition: i32, acks: i16, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ])
}

fn batch(values: &[&str]) -> Bytes {
    let kvs: Vec<fjord_storage::records::KeyValue<'_>> =
        values.iter().map(|v| (None, Some(v.as_bytes()))).collect();
    simple_batch(0, 1_700_000_000_000, Compression::None, &kvs)
}

fn fetch_request(topic: &str, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

fn api_versions_works(addr: &str) {
    let mut c = Conn::connect(addr);
    let resp = c.call(3, &ApiVersionsRequest::default());
    assert_eq!(resp.error_code, 0);
    assert!(
        resp.api_keys.iter().any(|k| k.api_key == 0),
        "Produce advertised"
    );
}

#[test]
fn hostile_input_closes_only_that_connection() {
    let (broker, _dir) = start(&[("socket.request.max.bytes", "1048576")]);
    let addr = broker.bootstrap.clone();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\x00\x00\x10this is not kafka".to_vec()),
        ("length over the limit", (2i32 << 20).to_be_bytes().to_vec()),
        ("negative length", (-5i32).to_be_bytes().to_vec()),
        ("unknown api key", {
            let mut f = vec![0, 0, 0, 10];
            f.extend_from_slice(&999i16.to_be_bytes());
            f.extend_from_slice(&0i16.to_be_bytes());
            f.extend_from_slice(&7i32.to_be_bytes());
            f.extend_from_slice(&[0xff, 0xff]);
            f
        }),
        ("unsupported Metadata version", {
            let mut f = vec![0, 0, 0, 10];
            f.extend_from_slice(&3i16.to_be_bytes());
            f.extend_from_slice(&99i16.to_be_bytes());
            f.extend_from_slice(&7i32.to_be_bytes());
            f.extend_from_slice(&[0xff, 0xff]);
            f
        }),
        ("array count far beyond the body", {
            // Metadata v1: topics array claiming i32::MAX entries.
            let mut f = vec![0, 0, 0, 14];
            f.extend_from_slice(&3i16.to_be_bytes());
            f.extend_from_slice(&1i16.to_be_bytes());
            f.extend_from_slice(&7i32.to_be_bytes());
            f.extend_from_slice(&[0xff, 0xff]);
            f.extend_from_slice(&i32::MAX.to_be_bytes());
            f
        }),
    ];
    for (what, bytes) in cases {
        let mut bad = Conn::connect(&addr);
        bad.send_raw(&bytes).unwrap();
        assert!(
            bad.is_closed_by_peer(),
            "{what}: connection should be closed"
        );
        api_versions_works(&addr);
    }
    // A truncated frame: the peer goes away mid-frame; the broker must carry on.
    {
        let mut bad = Conn::connect(&addr);
        bad.send_raw(&[0, 0, 1, 0, 0, 3, 0]).unwrap();
    }
    api_versions_works(&addr);
}

#[test]
fn unsupported_api_versions_version_gets_a_v0_error_listing_ranges() {
    let (broker, _dir) = start(&[]);
    let mut c = Conn::connect(&broker.bootstrap);
    // ApiVersions v77, by hand: a client newer than the broker.
    let mut f = vec![0, 0, 0, 10];
    f.extend_from_slice(&18i16.to_be_bytes());
    f.extend_from_slice(&77i16.to_be_bytes());
    f.extend_from_slice(&42i32.to_be_bytes());
    f.extend_from_slice(&[0xff, 0xff]);
    c.send_raw(&f).unwrap();
    let (got, resp) = c.recv::<ApiVersionsRequest>(0);
    assert_eq!(got, 42);
    assert_eq!(resp.error_code, 35, "UNSUPPORTED_VERSION");
    let av = resp.api_keys.iter().find(|k| k.api_key == 18).unwrap();
    assert_eq!((av.min_version, av.max_version), (0, 4));
    // The connection stays usable.
    let resp = c.call(0, &ApiVersionsRequest::default());
    assert_eq!(resp.error_code, 0);
}

#[test]
fn produce_errors_acks_zero_and_pipelining() {
    let (broker, _dir) = start(&[("auto.create.topics.enable", "false")]);
    let mut c = Conn::connect(&broker.bootstrap);
    create_topic(&mut c, "wire", 1);

    // Wrong CRC: flip a byte of the record body.
    let mut bad = batch(&["a", "b"]).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let resp = c.call(9, &produce_request("wire", 0, 1, Bytes::from(bad)));
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 2,
        "CORRUPT_MESSAGE"
    );

    let resp = c.call(9, &produce_request("missing", 0, 1, batch(&["x"])));
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    let resp = c.call(9, &produce_request("wire", 7, 1, batch(&["x"])));
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 3);
    let resp = c.call(9, &produce_request("wire", 0, 2, batch(&["x"])));
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 21,
        "INVALID_REQUIRED_ACKS"
    );

    // acks=all honours min.insync.replicas against the ISR (one replica here).
    create_topic_with(&mut c, "strict", 1, &[("min.insync.replicas", "2")]);
    let resp = c.call(9, &produce_request("strict", 0, -1, batch(&["x"])));
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 19,
        "NOT_ENOUGH_REPLICAS"
    );
    let resp = c.call(9, &produce_request("strict", 0, 1, batch(&["x"])));
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 0,
        "acks=1 is not bound by it"
    );
    let resp = c.call(9, &produce_request("wire", 0, -1, batch(&["x"])));
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);

    // acks=0 gets no answer: the next answer on the connection is for the next request.
    c.send(9, &produce_request("wire", 0, 0, batch(&["silent"])));
    let id = c.send(3, &ApiVersionsRequest::default());
    let (got, _) = c.recv::<ApiVersionsRequest>(3);
    assert_eq!(got, id);

    // Pipelining: 30 produces sent back to back are answered in order, appended in order.
    let ids: Vec<i32> = (0..30)
        .map(|i| {
            c.send(
                9,
                &produce_request("wire", 0, 1, batch(&[&format!("p{i}")])),
            )
        })
        .collect();
    let mut last_offset = -1;
    for id in ids {
        let (got, resp) = c.recv::<ProduceRequest>(9);
        assert_eq!(got, id, "answers in request order");
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0);
        assert!(p.base_offset > last_offset, "appends in request order");
        last_offset = p.base_offset;
    }
    // 1 acks=all record, 1 silent one, then 30 pipelined ones.
    assert_eq!(last_offset, 31);
}

#[test]
fn fetch_long_poll_wakes_on_append_and_reports_out_of_range() {
    let (broker, _dir) = start(&[]);
    let mut c = Conn::connect(&broker.bootstrap);
    create_topic(&mut c, "poll", 1);

    // Nothing to read: the broker waits max_wait_ms, then answers empty.
    let started = Instant::now();
    let resp = c.call(12, &fetch_request("poll", 0, 300));
    let waited = started.elapsed();
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.records.as_ref().map_or(0, Bytes::len), 0);
    assert!(
        waited >= Duration::from_millis(250),
        "waited only {waited:?}"
    );

    // A long poll is woken by an append on another connection, long before max_wait_ms.
    let addr = broker.bootstrap.clone();
    let producer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut p = Conn::connect(&addr);
        let resp = p.call(9, &produce_request("poll", 0, 1, batch(&["wake up"])));
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    });
    let started = Instant::now();
    let resp = c.call(12, &fetch_request("poll", 0, 20_000));
    let waited = started.elapsed();
    producer.join().unwrap();
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert!(p.records.as_ref().is_some_and(|r| !r.is_empty()), "{p:?}");
    assert_eq!(p.high_watermark, 1);
    assert!(
        waited < Duration::from_secs(5),
        "woken by the append, not the timeout: {waited:?}"
    );

    let resp = c.call(12, &fetch_request("poll", 1000, 0));
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 1, "OFFSET_OUT_OF_RANGE");
    assert_eq!(p.high_watermark, 1);

    // An incremental session the broker never created.
    let resp = c.call(
        12,
        &fetch_request("poll", 0, 0)
            .with_session_id(1234)
            .with_session_epoch(1),
    );
    assert_eq!(resp.error_code, 70, "FETCH_SESSION_ID_NOT_FOUND");
}
