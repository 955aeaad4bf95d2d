//! Fetch from follower (KIP-392) on a three-node cluster with one rack per node (node `i` on
//! rack `r{i}`).
//!
//! - Real clients: librdkafka (`client.rack`) and kafka-python (`client_rack`) in rack r3
//!   consume a partition led outside r3; each node's `/metrics` shows the records going out
//!   from node 3 and not from the leader (and, as a control, from the leader for a consumer
//!   without a rack).
//! - The wire: a rack-aware leader's `preferred_read_replica` (and -1 without a rack, for the
//!   leader's own rack, an unknown rack, or a leader without the selector), a follower serving
//!   consumers only below its own high watermark, and a follower long poll woken when the
//!   follower's high watermark advances.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_storage::Compression;
use fjord_storage::records::{KeyValue, simple_batch};
use fjord_tests::admin::PartitionInfo;
use fjord_tests::clients::{self, KAFKA_PYTHON, RDKAFKA};
use fjord_tests::cluster::{Cluster, ClusterSpec};
use fjord_tests::wire::{Conn, topic_name};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, DescribeConfigsRequest, FetchRequest, FetchResponse, ProduceRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");
const BOUND: Duration = Duration::from_secs(60);
const RACK_AWARE: &str = "org.apache.kafka.common.replica.RackAwareReplicaSelector";
const RECORDS_OUT: &str = "fjord_topic_records_out_total";

const NONE: i16 = 0;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const UNKNOWN_LEADER_EPOCH: i16 = 75;

/// The node in rack r3 (index 2, `node.id` 3), where the consumers are.
const NEAR: usize = 2;

/// Ports that were free a moment ago, all distinct.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Node `i` on rack `r{i+1}`.
fn with_racks(mut spec: ClusterSpec) -> ClusterSpec {
    for i in 0..spec.nodes {
        spec = spec.with_node(i, "broker.rack", &format!("r{}", i + 1));
    }
    spec
}

/// Waits until `topic` has `partitions` partitions, each led and with all three replicas in
/// the ISR.
fn wait_full_isr(cluster: &Cluster, topic: &str, partitions: usize) -> Vec<PartitionInfo> {
    cluster
        .wait_leaders(topic, partitions, &cluster.node_ids(), BOUND)
        .unwrap();
    let deadline = Instant::now() + BOUND;
    loop {
        let view = cluster.topic_view(topic, false);
        if view.len() == partitions && view.iter().all(|p| p.isr.len() == 3) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: ISR not full within {BOUND:?}: {view:?}\n{}",
            cluster.log_tails(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ------------------------------------------------------------------------------ /metrics

/// One GET of `/metrics` at `addr`: the body.
fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or(("", ""));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// Records sent to consumers from `topic`, per node (absent counters have counted nothing).
fn records_out(http: &[String], topic: &str) -> Vec<f64> {
    let label = format!("topic=\"{topic}\"");
    http.iter()
        .map(|addr| {
            scrape(addr)
                .lines()
                .filter(|l| l.starts_with(RECORDS_OUT) && l.contains(&label))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        })
        .collect()
}

// ------------------------------------------------------------------------------ real clients

#[test]
fn consumers_in_a_followers_rack_read_from_it() {
    let Some(py) = clients::python() else {
        return;
    };
    let ports = free_ports(3);
    let http: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut spec = with_racks(ClusterSpec::new(3)).with("replica.selector.class", RACK_AWARE);
    for (i, addr) in http.iter().enumerate() {
        spec = spec.with_node(i, "http.listener", addr);
    }
    let cluster = Cluster::start(Path::new(BIN), spec).unwrap_or_else(|e| panic!("{e}"));
    let topic = "near";
    cluster.create_topic(topic, 3, 3, &[], BOUND).unwrap();
    let view = wait_full_isr(&cluster, topic, 3);
    let near_id = cluster.node_id(NEAR);
    // A partition led outside rack r3 (one per node: placement spreads leaders).
    let p = view
        .iter()
        .find(|p| p.leader != near_id)
        .unwrap_or_else(|| panic!("every partition led by node {near_id}: {view:?}"));
    let (partition, leader) = (p.partition, p.leader);
    let leader_index = cluster.index_of(leader).unwrap();
    let other_index = (0..3).find(|i| *i != leader_index && *i != NEAR).unwrap();

    let values: Vec<String> = (0..200).map(|i| format!("near-{i:04}")).collect();
    let records: Vec<Value> = values.iter().map(|v| json!({"value": v})).collect();
    let r = clients::run(
        &py,
        RDKAFKA,
        "produce",
        &json!({"bootstrap": cluster.bootstrap(), "topic": topic, "records": records,
                "acks": "all", "partition": partition, "timeout": 60}),
    );
    for res in r["results"].as_array().unwrap() {
        assert_eq!(res["error"], Value::Null, "{res}");
    }
    let n = values.len() as f64;

    let consume = |client: &str, rack: Option<&str>| -> Vec<f64> {
        let before = records_out(&http, topic);
        let r = clients::run(
            &py,
            client,
            "consume",
            &json!({"bootstrap": cluster.bootstrap(), "topic": topic,
                    "partitions": [partition], "offset": 0, "count": values.len(),
                    "timeout": 60, "client_rack": rack}),
        );
        let got: Vec<&str> = r["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["value"].as_str())
            .collect();
        assert_eq!(
            got,
            values.iter().map(String::as_str).collect::<Vec<_>>(),
            "{client} rack {rack:?}\n{}",
            cluster.log_tails(30)
        );
        let after = records_out(&http, topic);
        after.iter().zip(&before).map(|(a, b)| a - b).collect()
    };

    for client in [RDKAFKA, KAFKA_PYTHON] {
        let sent = consume(client, Some("r3"));
        eprintln!("{client} in r3: records out per node {sent:?} (leader {leader})");
        assert!(
            sent[NEAR] >= n,
            "{client}: node {near_id} sent {} of {n} records: {sent:?}",
            sent[NEAR]
        );
        assert_eq!(
            sent[leader_index], 0.0,
            "{client}: the leader sent records: {sent:?}"
        );
        assert_eq!(sent[other_index], 0.0, "{client}: {sent:?}");
    }
    // The control: without a rack the leader serves, and node 3 sends nothing.
    let sent = consume(KAFKA_PYTHON, None);
    eprintln!("kafka-python without a rack: records out per node {sent:?}");
    assert!(sent[leader_index] >= n, "{sent:?}");
    assert_eq!(sent[NEAR], 0.0, "{sent:?}");
}

// ------------------------------------------------------------------------------ the wire

/// Produces `values` to one partition as one batch with acks=all; returns its base offset.
fn produce_acks_all(conn: &mut Conn, topic: &str, partition: i32, values: &[&str]) -> i64 {
    let kvs: Vec<KeyValue<'_>> = values.iter().map(|v| (None, Some(v.as_bytes()))).collect();
    let records = simple_batch(0, fjord_storage::now_ms(), Compression::None, &kvs);
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ]);
    let resp = conn.call(9, &req);
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, NONE, "{resp:?}");
    p.base_offset
}

/// One consumer fetch of one partition.
struct Fetch<'a> {
    version: i16,
    topic: &'a str,
    partition: i32,
    offset: i64,
    rack: &'a str,
    max_wait_ms: i32,
    min_bytes: i32,
    current_leader_epoch: i32,
}

impl<'a> Fetch<'a> {
    fn at(topic: &'a str, partition: i32, offset: i64) -> Fetch<'a> {
        Fetch {
            version: 12,
            topic,
            partition,
            offset,
            rack: "",
            max_wait_ms: 0,
            min_bytes: 1,
            current_leader_epoch: -1,
        }
    }

    fn rack(mut self, rack: &'a str) -> Self {
        self.rack = rack;
        self
    }

    fn request(&self) -> FetchRequest {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(self.max_wait_ms)
            .with_min_bytes(self.min_bytes)
            .with_max_bytes(1 << 20)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(topic_name(self.topic))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(self.partition)
                            .with_fetch_offset(self.offset)
                            .with_current_leader_epoch(self.current_leader_epoch)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ]);
        if self.version >= 11 {
            req.with_rack_id(StrBytes::from_string(self.rack.to_string()))
        } else {
            req
        }
    }

    fn send(&self, conn: &mut Conn) -> PartitionData {
        let resp = conn.call(self.version, &self.request());
        only_partition(resp)
    }
}

fn only_partition(mut resp: FetchResponse) -> PartitionData {
    assert_eq!(resp.error_code, NONE, "{resp:?}");
    assert_eq!(resp.responses.len(), 1, "{resp:?}");
    let mut t = resp.responses.remove(0);
    assert_eq!(t.partitions.len(), 1, "{t:?}");
    t.partitions.remove(0)
}

/// The offsets the response's records cover: (first, one past the last), `None` if empty.
fn offsets(d: &PartitionData) -> Option<(i64, i64)> {
    let r = d.records.as_ref()?;
    let headers: Vec<_> = fjord_storage::log::batch_headers(r).collect();
    Some((
        headers.first()?.base_offset,
        headers.last()?.last_offset() + 1,
    ))
}

fn records_len(d: &PartitionData) -> usize {
    d.records.as_ref().map_or(0, Bytes::len)
}

#[test]
fn preferred_read_replicas_and_follower_reads_on_the_wire() {
    // Node 3 has no selector (a leader there ignores racks). Followers park their fetches for
    // up to 20 s when nothing is appended, so a follower's high watermark stays behind the
    // leader's after an acks=all produce until the next append: the window the follower-bound
    // checks use (lag time well above it, so nobody leaves the ISR meanwhile).
    let spec = with_racks(ClusterSpec::new(3))
        .with("replica.fetch.wait.max.ms", "20000")
        .with("replica.lag.time.max.ms", "120000")
        .with_node(0, "replica.selector.class", RACK_AWARE)
        .with_node(1, "replica.selector.class", RACK_AWARE);
    let cluster = Cluster::start(Path::new(BIN), spec).unwrap_or_else(|e| panic!("{e}"));
    let topic = "wire";
    cluster.create_topic(topic, 3, 3, &[], BOUND).unwrap();
    let view = wait_full_isr(&cluster, topic, 3);
    let near_id = cluster.node_id(NEAR);
    let led_by: HashMap<i32, &PartitionInfo> = view.iter().map(|p| (p.leader, p)).collect();
    let far = view
        .iter()
        .find(|p| p.leader != near_id)
        .unwrap_or_else(|| panic!("{view:?}"));
    let near = *led_by
        .get(&near_id)
        .unwrap_or_else(|| panic!("no partition led by node {near_id}: {view:?}"));
    let leader_index = cluster.index_of(far.leader).unwrap();
    let mut leader = Conn::connect(&cluster.client_addr(leader_index));
    let mut follower = Conn::connect(&cluster.client_addr(NEAR));
    let mut near_leader = Conn::connect(&cluster.client_addr(NEAR));

    // The selector is a broker config like the others.
    let described = leader.call(
        4,
        &DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_string(far.leader.to_string()))
                .with_configuration_keys(Some(vec![StrBytes::from_static_str(
                    "replica.selector.class",
                )])),
        ]),
    );
    let entry = described.results[0]
        .configs
        .iter()
        .find(|c| c.name.as_str() == "replica.selector.class")
        .unwrap_or_else(|| panic!("{described:?}"));
    assert_eq!(entry.value.as_deref(), Some(RACK_AWARE));

    let five = ["a", "b", "c", "d", "e"];
    assert_eq!(
        produce_acks_all(&mut leader, topic, far.partition, &five),
        0
    );
    assert_eq!(
        produce_acks_all(&mut near_leader, topic, near.partition, &five[..3]),
        0
    );

    // ---- the rack-aware leader
    // Rack r3 holds an in-sync follower that has the offset: sent there, at once (min_bytes
    // would otherwise hold the answer for max_wait_ms), without records.
    let mut to_near = Fetch::at(topic, far.partition, 0).rack("r3");
    to_near.min_bytes = 1 << 20;
    to_near.max_wait_ms = 10_000;
    let t0 = Instant::now();
    let d = to_near.send(&mut leader);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(d.error_code, NONE, "{d:?}");
    assert_eq!(d.preferred_read_replica.0, near_id, "{d:?}");
    assert_eq!(records_len(&d), 0, "{d:?}");
    assert_eq!(d.high_watermark, 5);
    // No rack, the leader's own rack, a rack without replicas: served by the leader.
    let own_rack = format!("r{}", far.leader);
    for rack in ["", own_rack.as_str(), "r9"] {
        let d = Fetch::at(topic, far.partition, 0)
            .rack(rack)
            .send(&mut leader);
        assert_eq!(d.preferred_read_replica.0, -1, "rack {rack:?}: {d:?}");
        assert_eq!(offsets(&d), Some((0, 5)), "rack {rack:?}");
    }
    // A leader without the selector serves whatever the rack.
    let d = Fetch::at(topic, near.partition, 0)
        .rack("r1")
        .send(&mut near_leader);
    assert_eq!(d.preferred_read_replica.0, -1, "{d:?}");
    assert_eq!(offsets(&d), Some((0, 3)));

    // ---- the follower (node 3 for the partition led elsewhere), before its fetch brings
    // the leader's new high watermark: it holds the five records but has not seen them
    // committed, so it serves none of them.
    let d = Fetch::at(topic, far.partition, 0)
        .rack("r3")
        .send(&mut follower);
    assert_eq!(d.error_code, NONE, "{d:?}");
    assert_eq!(d.high_watermark, 0, "the follower's own view: {d:?}");
    assert_eq!(records_len(&d), 0, "{d:?}");
    // At its log end: nothing, no error; past it: OFFSET_OUT_OF_RANGE.
    let d = Fetch::at(topic, far.partition, 5).send(&mut follower);
    assert_eq!((d.error_code, records_len(&d)), (NONE, 0), "{d:?}");
    let d = Fetch::at(topic, far.partition, 6).send(&mut follower);
    assert_eq!(d.error_code, OFFSET_OUT_OF_RANGE, "{d:?}");
    // Before Fetch v11 a consumer must use the leader.
    let mut old = Fetch::at(topic, far.partition, 0);
    old.version = 10;
    assert_eq!(old.send(&mut follower).error_code, NOT_LEADER_OR_FOLLOWER);
    // A leader epoch the follower has not seen yet.
    let mut future = Fetch::at(topic, far.partition, 0);
    future.current_leader_epoch = far.leader_epoch + 1;
    assert_eq!(future.send(&mut follower).error_code, UNKNOWN_LEADER_EPOCH);
    let mut current = Fetch::at(topic, far.partition, 0);
    current.current_leader_epoch = far.leader_epoch;
    assert_eq!(current.send(&mut follower).error_code, NONE);

    // ---- a long poll on the follower, woken when its high watermark advances: the next
    // append makes the leader answer the follower's parked fetch with the high watermark
    // (5), which wakes this poll long before its 15 s are up.
    let mut poll = Fetch::at(topic, far.partition, 0).rack("r3");
    poll.max_wait_ms = 15_000;
    let t0 = Instant::now();
    let id = follower.send(poll.version, &poll.request());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        produce_acks_all(&mut leader, topic, far.partition, &["f"]),
        5
    );
    let (got, resp) = follower.recv::<FetchRequest>(poll.version);
    let waited = t0.elapsed();
    assert_eq!(got, id);
    let d = only_partition(resp);
    eprintln!("follower long poll answered after {waited:?}");
    assert!(
        waited < Duration::from_secs(8),
        "the follower's poll was not woken by its high watermark: {waited:?}"
    );
    assert_eq!(d.error_code, NONE, "{d:?}");
    assert_eq!(offsets(&d), Some((0, 5)), "{d:?}");
    assert_eq!(d.high_watermark, 5);

    // ---- the follower now holds six records and has seen five committed; the leader has
    // committed six. The sixth is not served by the follower until it hears so.
    let d = Fetch::at(topic, far.partition, 0).send(&mut leader);
    assert_eq!((d.high_watermark, offsets(&d)), (6, Some((0, 6))), "{d:?}");
    let d = Fetch::at(topic, far.partition, 0)
        .rack("r3")
        .send(&mut follower);
    assert_eq!((d.high_watermark, offsets(&d)), (5, Some((0, 5))), "{d:?}");
    let d = Fetch::at(topic, far.partition, 5).send(&mut follower);
    assert_eq!((d.error_code, records_len(&d)), (NONE, 0), "{d:?}");
    let d = Fetch::at(topic, far.partition, 6).send(&mut follower);
    assert_eq!((d.error_code, records_len(&d)), (NONE, 0), "{d:?}");
    let d = Fetch::at(topic, far.partition, 7).send(&mut follower);
    assert_eq!(d.error_code, OFFSET_OUT_OF_RANGE, "{d:?}");
}
