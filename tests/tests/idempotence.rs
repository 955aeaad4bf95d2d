//! Idempotent produce at the wire level against the `fjord` binary: InitProducerId, hand-built
//! idempotent batches (duplicates, sequence gaps, fenced epochs, concurrent retries), and the
//! producer state surviving SIGKILL and SIGTERM restarts.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use fjord_storage::Compression;
use fjord_storage::records::{BatchSpec, Record, encode_batch};
use fjord_tests::broker::BrokerProcess;
use fjord_tests::wire::Conn;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_REQUEST: i16 = 42;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;

fn start(extra: &[(&str, &str)]) -> (BrokerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let b = BrokerProcess::start(Path::new(BIN), dir.path(), extra);
    (b, dir)
}

fn name(s: &str) -> TopicName {
    fjord_tests::wire::topic_name(s)
}

fn create_topic(conn: &mut Conn, topic: &str, configs: &[(&str, &str)]) {
    conn.create_topic(topic, 1, configs);
}

/// InitProducerId without a transactional id: (error, producer id, epoch).
fn init_producer_id(conn: &mut Conn) -> (i16, i64, i16) {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    let resp = conn.call(4, &req);
    (resp.error_code, resp.producer_id.0, resp.producer_epoch)
}

/// An idempotent batch of `n` records whose values name producer, epoch and sequence.
fn batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            offset: i as i64,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!(
                "{pid}/{epoch}/{seq}+{i}-{}",
                "x".repeat(60)
            ))),
            headers: vec![],
        })
        .collect();
    let mut spec = BatchSpec::new(0, Compression::None);
    spec.producer_id = pid;
    spec.producer_epoch = epoch;
    spec.base_sequence = seq;
    encode_batch(&spec, &records).unwrap()
}

fn produce_request(topic: &str, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
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
        ])
}

/// Produces `records` to partition 0: (error code, base offset).
fn produce(conn: &mut Conn, topic: &str, records: Bytes) -> (i16, i64) {
    let resp = conn.call(9, &produce_request(topic, records));
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// After a restart the partition has a leader again once the controller re-elected this
/// broker; until then produce answers NOT_LEADER_OR_FOLLOWER (6) or LEADER_NOT_AVAILABLE (5),
/// which clients retry. So does this, for up to 30 s.
fn produce_after_restart(conn: &mut Conn, topic: &str, records: Bytes) -> (i16, i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = produce(conn, topic, records.clone());
        if !matches!(answer.0, 5 | 6) || std::time::Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn log_end_offset(conn: &mut Conn, topic: &str) -> i64 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_current_leader_epoch(-1)
                        .with_timestamp(-1),
                ]),
        ]);
    let resp = conn.call(7, &req);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "{resp:?}");
    p.offset
}

#[test]
fn init_producer_id_hands_out_fresh_ids_and_refuses_transactional_ids() {
    let (broker, _dir) = start(&[]);
    let mut c = Conn::connect(&broker.bootstrap);
    let versions = c.call(3, &ApiVersionsRequest::default());
    let v = versions
        .api_keys
        .iter()
        .find(|k| k.api_key == 22)
        .expect("InitProducerId advertised");
    assert_eq!((v.min_version, v.max_version), (0, 5));

    let (err, first, epoch) = init_producer_id(&mut c);
    assert_eq!((err, epoch), (0, 0));
    assert!(first >= 0);
    let mut seen = std::collections::BTreeSet::from([first]);
    // Enough ids to cross a 1000-id block, through the background prefetch.
    for _ in 0..1100 {
        let (err, id, epoch) = init_producer_id(&mut c);
        assert_eq!((err, epoch), (0, 0));
        assert!(seen.insert(id), "id {id} handed out twice");
    }
    // KIP-360: an idempotent producer re-initialising with its id and epoch gets a new id.
    let resp = c.call(
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_producer_id(ProducerId(first))
            .with_producer_epoch(0),
    );
    assert_eq!(resp.error_code, 0);
    assert!(!seen.contains(&resp.producer_id.0));

    let call = |c: &mut Conn, req: InitProducerIdRequest| {
        let r = c.call(4, &req);
        (r.error_code, r.producer_id.0, r.producer_epoch)
    };
    let tx = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx-1"))))
        .with_transaction_timeout_ms(60_000);
    assert_eq!(call(&mut c, tx), (COORDINATOR_NOT_AVAILABLE, -1, -1));
    let empty = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str(""))));
    assert_eq!(call(&mut c, empty).0, INVALID_REQUEST);
    let epoch_without_id = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_producer_epoch(3);
    assert_eq!(call(&mut c, epoch_without_id).0, INVALID_REQUEST);
}

#[test]
fn duplicates_gaps_and_fenced_epochs() {
    let (broker, _dir) = start(&[]);
    let mut c = Conn::connect(&broker.bootstrap);
    create_topic(&mut c, "idem", &[]);
    let (_, pid, _) = init_producer_id(&mut c);

    assert_eq!(produce(&mut c, "idem", batch(pid, 0, 0, 3)), (0, 0));
    assert_eq!(produce(&mut c, "idem", batch(pid, 0, 3, 2)), (0, 3));
    assert_eq!(log_end_offset(&mut c, "idem"), 5);

    // The same request again, as after a lost response: its original offset, nothing appended.
    assert_eq!(produce(&mut c, "idem", batch(pid, 0, 0, 3)), (0, 0));
    assert_eq!(produce(&mut c, "idem", batch(pid, 0, 3, 2)), (0, 3));
    assert_eq!(log_end_offset(&mut c, "idem"), 5, "log not grown");

    // A gap, and a sequence from the past that is not one of the retained batches.
    assert_eq!(
        produce(&mut c, "idem", batch(pid, 0, 9, 1)).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(
        produce(&mut c, "idem", batch(pid, 0, 1, 2)).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(log_end_offset(&mut c, "idem"), 5);

    // A bumped epoch restarts at 0; the old epoch is fenced from then on.
    assert_eq!(
        produce(&mut c, "idem", batch(pid, 1, 4, 1)).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER,
        "a new epoch starts at sequence 0"
    );
    assert_eq!(produce(&mut c, "idem", batch(pid, 1, 0, 1)), (0, 5));
    assert_eq!(
        produce(&mut c, "idem", batch(pid, 0, 5, 1)).0,
        INVALID_PRODUCER_EPOCH
    );
    assert_eq!(log_end_offset(&mut c, "idem"), 6);

    // A producer id this partition has not seen may start anywhere (Kafka since KIP-360).
    let (_, other, _) = init_producer_id(&mut c);
    assert_eq!(produce(&mut c, "idem", batch(other, 0, 1000, 1)), (0, 6));
    assert_eq!(produce(&mut c, "idem", batch(other, 0, 1001, 1)), (0, 7));

    // Sequences wrap from i32::MAX to 0.
    let (_, wrap, _) = init_producer_id(&mut c);
    assert_eq!(
        produce(&mut c, "idem", batch(wrap, 0, i32::MAX - 1, 3)),
        (0, 8)
    );
    assert_eq!(produce(&mut c, "idem", batch(wrap, 0, 1, 1)), (0, 11));
    assert_eq!(
        produce(&mut c, "idem", batch(wrap, 0, i32::MAX - 1, 3)),
        (0, 8)
    );

    // A transactional batch cannot be written: no transaction coordinator hands out ids.
    let mut spec = BatchSpec::new(0, Compression::None);
    spec.producer_id = pid;
    spec.producer_epoch = 1;
    spec.base_sequence = 1;
    spec.attributes = 0x10;
    let txn = encode_batch(
        &spec,
        &[Record {
            offset: 0,
            timestamp: 0,
            key: None,
            value: Some(Bytes::from_static(b"t")),
            headers: vec![],
        }],
    )
    .unwrap();
    assert_eq!(
        produce(&mut c, "idem", txn).0,
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    );
    assert_eq!(log_end_offset(&mut c, "idem"), 12);
}

#[test]
fn concurrent_retries_on_many_connections_append_once() {
    let (broker, _dir) = start(&[]);
    let mut c = Conn::connect(&broker.bootstrap);
    create_topic(&mut c, "race", &[]);
    let (_, pid, _) = init_producer_id(&mut c);
    assert_eq!(produce(&mut c, "race", batch(pid, 0, 0, 1)), (0, 0));
    // Eight connections each pipeline the same next batch ten times, all at once.
    let next = batch(pid, 0, 1, 4);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (addr, next) = (broker.bootstrap.clone(), next.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::connect(&addr);
                let ids: Vec<i32> = (0..10)
                    .map(|_| conn.send(9, &produce_request("race", next.clone())))
                    .collect();
                ids.iter()
                    .map(|_| {
                        let (_, resp) = conn.recv::<ProduceRequest>(9);
                        let p = &resp.responses[0].partition_responses[0];
                        (p.error_code, p.base_offset)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for answer in t.join().unwrap() {
            assert_eq!(answer, (0, 1), "every copy answered with the one append");
        }
    }
    assert_eq!(log_end_offset(&mut c, "race"), 5);
}

/// Produces `count` batches of 3 records from a fresh producer; returns the id and the base
/// offset of each batch (sequence `3 * i`).
fn produce_batches(conn: &mut Conn, topic: &str, count: i32) -> (i64, Vec<i64>) {
    let (err, pid, _) = init_producer_id(conn);
    assert_eq!(err, 0);
    let offsets = (0..count)
        .map(|i| {
            let (err, offset) = produce(conn, topic, batch(pid, 0, 3 * i, 3));
            assert_eq!(err, 0);
            offset
        })
        .collect();
    (pid, offsets)
}

#[test]
fn producer_state_survives_sigkill() {
    let (mut broker, _dir) = start(&[]);
    let mut c = Conn::connect(&broker.bootstrap);
    // Small segments: the batches roll several, so the restart loads a snapshot taken at a
    // roll and replays the batches after it.
    create_topic(&mut c, "crash", &[("segment.bytes", "1000")]);
    let (pid, offsets) = produce_batches(&mut c, "crash", 12);
    let end = log_end_offset(&mut c, "crash");
    assert_eq!(end, 36);
    let snapshots = std::fs::read_dir(broker.log_dir().join("crash-0"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".snapshot")
        })
        .count();
    assert!(snapshots >= 2, "segments rolled and left snapshots");
    drop(c);

    broker.kill();
    broker.restart();
    let mut c = Conn::connect(&broker.bootstrap);
    // The last batch, resent with its sequence: a duplicate, with its original offset.
    assert_eq!(
        produce_after_restart(&mut c, "crash", batch(pid, 0, 33, 3)),
        (0, offsets[11])
    );
    // So is every batch of the last five.
    assert_eq!(
        produce(&mut c, "crash", batch(pid, 0, 21, 3)),
        (0, offsets[7])
    );
    assert_eq!(log_end_offset(&mut c, "crash"), end, "nothing appended");
    // A sixth-to-last retry is no longer recognised, and out of order.
    assert_eq!(
        produce(&mut c, "crash", batch(pid, 0, 18, 3)).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(produce(&mut c, "crash", batch(pid, 0, 36, 3)), (0, end));
    // Ids handed out before the crash are not handed out again.
    let (_, fresh, _) = init_producer_id(&mut c);
    assert_ne!(fresh, pid);
    assert!(fresh > pid, "blocks come from the committed metadata");
}

#[test]
fn producer_state_survives_a_clean_restart() {
    let (mut broker, _dir) = start(&[]);
    let mut c = Conn::connect(&broker.bootstrap);
    create_topic(&mut c, "clean", &[]);
    let (pid, offsets) = produce_batches(&mut c, "clean", 4);
    drop(c);
    let status = broker
        .terminate(Duration::from_secs(30))
        .expect("the broker exits on SIGTERM");
    assert!(status.success(), "{}", broker.log_tail());
    assert!(
        broker
            .log_dir()
            .join("clean-0/00000000000000000012.snapshot")
            .exists(),
        "clean shutdown wrote a snapshot at the log end"
    );
    broker.restart();
    let mut c = Conn::connect(&broker.bootstrap);
    assert_eq!(
        produce_after_restart(&mut c, "clean", batch(pid, 0, 9, 3)),
        (0, offsets[3])
    );
    assert_eq!(
        produce(&mut c, "clean", batch(pid, 0, 0, 3)),
        (0, offsets[0])
    );
    assert_eq!(log_end_offset(&mut c, "clean"), 12);
}
