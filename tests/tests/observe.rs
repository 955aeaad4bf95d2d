//! The HTTP listener of the `fjord` binary (`http.listener`): `/metrics` scraped before and
//! after traffic (counters that must move by exactly what was sent), the control API's routes
//! with their error answers, and forced rebalances of groups driven over the wire and by real
//! clients (kafka-python for a classic group, librdkafka for a KIP-848 group).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_storage::Compression;
use fjord_storage::records::simple_batch;
use fjord_tests::broker::BrokerProcess;
use fjord_tests::clients::{self, KAFKA_PYTHON, RDKAFKA};
use fjord_tests::wire::{Conn, topic_name};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");
const GROUPS_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/groups_client.py");
/// Bound on waiting for something a broker or client does in the background.
const SETTLE: Duration = Duration::from_secs(90);

const NONE: i16 = 0;
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;

fn start() -> (BrokerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let b = BrokerProcess::start(
        Path::new(BIN),
        dir.path(),
        &[
            ("http.listener", "127.0.0.1:0"),
            ("offsets.topic.num.partitions", "3"),
            ("group.initial.rebalance.delay.ms", "0"),
            ("group.consumer.heartbeat.interval.ms", "500"),
            ("group.consumer.session.timeout.ms", "6000"),
        ],
    );
    assert!(b.http.is_some(), "the broker printed no HTTP address");
    (b, dir)
}

// ------------------------------------------------------------------------------ HTTP client

struct HttpResponse {
    status: u16,
    content_type: String,
    body: String,
}

impl HttpResponse {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
    let mut s = TcpStream::connect(addr).expect("connect to the HTTP listener");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the HTTP response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, rest) = text.split_once("\r\n\r\n").expect("HTTP head");
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    HttpResponse {
        status,
        content_type: headers.get("content-type").cloned().unwrap_or_default(),
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn get(b: &BrokerProcess, path: &str) -> HttpResponse {
    http(b.http.as_deref().unwrap(), "GET", path, None)
}

fn post(b: &BrokerProcess, path: &str, body: &str) -> HttpResponse {
    http(b.http.as_deref().unwrap(), "POST", path, Some(body))
}

/// An error answer: its status, and the JSON body's `error` (non-empty) and `code`.
fn assert_error(r: &HttpResponse, status: u16, code: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.body);
    assert!(
        r.content_type.starts_with("application/json"),
        "{}",
        r.content_type
    );
    let v = r.json();
    assert!(
        v["error"].as_str().is_some_and(|e| !e.is_empty()),
        "no error text: {v}"
    );
    assert_eq!(v["code"], json!(code), "{v}");
    v
}

// ------------------------------------------------------------------------------ /metrics

/// One scrape: every sample by name and label set.
struct Scrape {
    text: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    fn take(b: &BrokerProcess) -> Scrape {
        let r = get(b, "/metrics");
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.content_type.starts_with("text/plain"),
            "{}",
            r.content_type
        );
        let samples = r
            .body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| parse_sample(l).unwrap_or_else(|| panic!("bad sample line: {l}")))
            .collect();
        Scrape {
            text: r.body,
            samples,
        }
    }

    /// The sample `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|(_, _, v)| *v)
    }

    /// A counter's value; absent counters have not counted anything yet.
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in:\n{}", self.text))
    }
}

/// `name{k="v",...} value` or `name value`.
fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let Some((name, labels)) = series.split_once('{') else {
        return Some((series.to_string(), BTreeMap::new(), value));
    };
    let mut rest = labels.strip_suffix('}')?;
    let mut out = BTreeMap::new();
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"")?;
        let mut v = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => v.push(chars.next()?.1),
                '"' => break i,
                c => v.push(c),
            }
        };
        out.insert(k.to_string(), v);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some((name.to_string(), out, value))
}

// ------------------------------------------------------------------------------ Kafka wire

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn batch(n: usize, tag: &str) -> Bytes {
    let values: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    let kvs: Vec<fjord_storage::records::KeyValue<'_>> =
        values.iter().map(|v| (None, Some(v.as_bytes()))).collect();
    simple_batch(0, 1_700_000_000_000, Compression::None, &kvs)
}

fn fetch(conn: &mut Conn, topic: &str, offset: i64, max_wait_ms: i32) -> FetchResponse {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    conn.call(12, &req)
}

/// Waits (bounded) until `check` holds for a scrape; returns that scrape.
fn scrape_until(b: &BrokerProcess, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + SETTLE;
    loop {
        let sc = Scrape::take(b);
        if check(&sc) {
            return sc;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen in time; last scrape:\n{}\nbroker log:\n{}",
            sc.text,
            b.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn metrics_move_by_exactly_the_traffic_sent() {
    let (b, _dir) = start();
    let mut conn = Conn::connect(&b.bootstrap);
    conn.create_topic("metered", 1, &[]);

    let before = Scrape::take(&b);
    assert!(
        before.text.contains("# TYPE fjord_requests_total counter"),
        "{}",
        before.text
    );
    let produce = [("api", "Produce")];
    let fetch_api = [("api", "Fetch")];
    let topic = [("topic", "metered")];

    // Three produces of four records each.
    let mut bytes_in = 0usize;
    for i in 0..3 {
        let records = batch(4, &format!("b{i}"));
        bytes_in += records.len();
        let r = conn.produce(9, "metered", 0, records);
        assert_eq!(r.error_code, NONE, "{r:?}");
    }
    // One produce to a topic that does not exist: an error, counted by its Kafka name.
    let r = conn.produce(9, "no-such-topic", 0, batch(1, "x"));
    assert_eq!(r.error_code, 3, "{r:?}");
    // Read everything back in one fetch.
    let f = fetch(&mut conn, "metered", 0, 500);
    let data = &f.responses[0].partitions[0];
    assert_eq!(data.error_code, NONE, "{f:?}");
    let fetched = data.records.as_ref().map_or(0, |r| r.len());
    assert_eq!(fetched, bytes_in, "one fetch returns every batch");

    let after = Scrape::take(&b);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.counter(name, labels) - before.counter(name, labels)
    };
    assert_eq!(delta("fjord_requests_total", &produce), 4.0);
    assert_eq!(delta("fjord_requests_total", &fetch_api), 1.0);
    assert_eq!(
        delta(
            "fjord_request_errors_total",
            &[("api", "Produce"), ("error", "UnknownTopicOrPartition")]
        ),
        1.0
    );
    assert_eq!(
        delta("fjord_request_duration_seconds_count", &produce),
        4.0,
        "every produce is timed"
    );
    assert!(
        after
            .value(
                "fjord_request_duration_seconds_bucket",
                &[("api", "Produce"), ("le", "+Inf")]
            )
            .is_some(),
        "latency is a histogram with buckets:\n{}",
        after.text
    );
    assert_eq!(delta("fjord_topic_bytes_in_total", &topic), bytes_in as f64);
    assert_eq!(delta("fjord_topic_records_in_total", &topic), 12.0);
    assert_eq!(
        delta("fjord_topic_bytes_out_total", &topic),
        bytes_in as f64
    );
    assert_eq!(delta("fjord_topic_records_out_total", &topic), 12.0);
    // No quotas: every produce response says 0 ms.
    assert_eq!(delta("fjord_producer_throttle_time_ms_count", &[]), 4.0);
    assert_eq!(
        after.counter("fjord_producer_throttle_time_ms_sum", &[]),
        0.0
    );

    // Storage: the partition's log holds exactly the batches; its directory at least that.
    let p0 = [("topic", "metered"), ("partition", "0")];
    assert_eq!(after.gauge("fjord_log_size_bytes", &p0), bytes_in as f64);
    assert_eq!(after.gauge("fjord_log_end_offset", &p0), 12.0);
    assert_eq!(after.gauge("fjord_log_start_offset", &p0), 0.0);
    assert_eq!(after.gauge("fjord_log_segments", &p0), 1.0);
    let log_dir = b.log_dir().display().to_string();
    let dir = [("dir", log_dir.as_str())];
    assert!(after.gauge("fjord_log_dir_size_bytes", &dir) >= bytes_in as f64);
    let capacity = after.gauge("fjord_log_dir_capacity_bytes", &dir);
    let available = after.gauge("fjord_log_dir_available_bytes", &dir);
    assert!(
        capacity > 0.0 && available <= capacity,
        "{capacity} {available}"
    );

    // Replication and the controller, in a healthy one-node cluster.
    assert!(after.gauge("fjord_leader_partitions", &[]) >= 1.0);
    assert_eq!(after.gauge("fjord_under_replicated_partitions", &[]), 0.0);
    assert_eq!(after.gauge("fjord_under_min_isr_partitions", &[]), 0.0);
    assert_eq!(after.gauge("fjord_controller_active", &[]), 1.0);
    assert_eq!(after.gauge("fjord_controller_leader_id", &[]), 1.0);
    assert!(after.gauge("fjord_controller_committed_offset", &[]) > 0.0);
    assert!(
        after.gauge("fjord_controller_log_end_offset", &[])
            >= after.gauge("fjord_controller_committed_offset", &[])
    );
    assert!(after.gauge("fjord_metadata_log_size_bytes", &[]) > 0.0);
    assert!(after.gauge("fjord_broker_metadata_offset", &[]) > 0.0);
    assert_eq!(after.gauge("fjord_broker_fenced", &[]), 0.0);
    assert_eq!(
        after.gauge("fjord_purgatory_size", &[("purgatory", "produce")]),
        0.0
    );

    // A long poll on the log end waits in the fetch purgatory, and leaves it when answered.
    let addr = b.bootstrap.clone();
    let poller = std::thread::spawn(move || {
        let mut c = Conn::connect(&addr);
        fetch(&mut c, "metered", 12, 4000)
    });
    scrape_until(&b, "a parked fetch", |sc| {
        sc.value("fjord_purgatory_size", &[("purgatory", "fetch")]) == Some(1.0)
    });
    let answer = poller.join().unwrap();
    assert_eq!(answer.responses[0].partitions[0].error_code, NONE);
    scrape_until(&b, "an empty fetch purgatory", |sc| {
        sc.value("fjord_purgatory_size", &[("purgatory", "fetch")]) == Some(0.0)
    });

    // A deleted topic's partition gauges leave the output; its traffic counters stay.
    let r = conn.call(
        4,
        &DeleteTopicsRequest::default()
            .with_topic_names(vec![topic_name("metered")])
            .with_timeout_ms(10_000),
    );
    assert_eq!(r.responses[0].error_code, NONE, "{r:?}");
    let gone = scrape_until(&b, "the deleted partition's gauges gone", |sc| {
        sc.value("fjord_log_size_bytes", &p0).is_none()
            && sc.value("fjord_log_end_offset", &p0).is_none()
    });
    assert_eq!(
        gone.counter("fjord_topic_records_in_total", &topic),
        after.counter("fjord_topic_records_in_total", &topic)
    );
}

// ------------------------------------------------------------------------------ control API

#[test]
fn control_api_routes_and_their_errors() {
    let (b, _dir) = start();
    let health = get(&b, "/healthz");
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (200, json!("ok"))
    );
    let ready = get(&b, "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["status"], json!("ready"));
    assert_eq!(ready.json()["node_id"], json!(1));

    // Create: 201, then 409 for the same name; the topic is real on the Kafka side.
    let r = post(
        &b,
        "/v1/topics",
        r#"{"name": "ctl", "partitions": 3, "replication_factor": 1, "configs": {"retention.ms": 60000, "cleanup.policy": "delete"}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    assert_eq!(created["name"], json!("ctl"));
    assert_eq!(created["partitions"], json!(3));
    assert_eq!(created["replication_factor"], json!(1));
    let v = assert_error(
        &post(&b, "/v1/topics", r#"{"name": "ctl", "partitions": 1}"#),
        409,
        "TopicAlreadyExists",
    );
    assert_eq!(v["kafka_error_code"], json!(36));
    let mut conn = Conn::connect(&b.bootstrap);
    assert_eq!(conn.produce(9, "ctl", 2, batch(2, "c")).error_code, NONE);
    let cfg = conn.call(
        4,
        &DescribeConfigsRequest::default().with_resources(vec![
            kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("ctl"))
                .with_configuration_keys(Some(vec![s("retention.ms")])),
        ]),
    );
    assert_eq!(
        cfg.results[0].configs[0].value.as_deref(),
        Some("60000"),
        "{cfg:?}"
    );
    // Defaults for what is left out (num.partitions = 1).
    let r = post(&b, "/v1/topics", r#"{"name": "ctl-defaults"}"#);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["partitions"], json!(1));

    // Bad input: 400 with the reason.
    assert_error(&post(&b, "/v1/topics", "{not json"), 400, "BadJson");
    assert_error(&post(&b, "/v1/topics", ""), 400, "BadJson");
    assert_error(
        &post(&b, "/v1/topics", r#"{"name": "x", "partitons": 3}"#),
        400,
        "BadJson",
    );
    assert_error(
        &post(&b, "/v1/topics", r#"{"name": "x", "partitions": "three"}"#),
        400,
        "BadJson",
    );
    assert_error(
        &post(&b, "/v1/topics", r#"{"name": "bad/name"}"#),
        400,
        "InvalidTopicException",
    );
    assert_error(
        &post(&b, "/v1/topics", r#"{"name": "zero", "partitions": 0}"#),
        400,
        "InvalidPartitions",
    );
    assert_error(
        &post(
            &b,
            "/v1/topics",
            r#"{"name": "cfg", "configs": {"retention.ms": [1]}}"#,
        ),
        400,
        "InvalidConfig",
    );

    // List: the created topics with their partitions.
    let r = get(&b, "/v1/topics");
    assert_eq!(r.status, 200, "{}", r.body);
    let topics = r.json();
    let ctl = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == json!("ctl"))
        .cloned()
        .unwrap_or_else(|| panic!("no ctl in {topics}"));
    assert_eq!(ctl["id"], created["id"]);
    assert_eq!(ctl["internal"], json!(false));
    let parts = ctl["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p["partition"], json!(i));
        assert_eq!(p["leader"], json!(1));
        assert_eq!(p["replicas"], json!([1]));
        assert_eq!(p["isr"], json!([1]));
    }
    assert!(
        !topics["topics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == json!("bad/name") || t["name"] == json!("zero")),
        "{topics}"
    );

    // Unknown groups: 404, before and after any group exists.
    assert_error(&get(&b, "/v1/groups/nobody/lag"), 404, "GroupIdNotFound");
    assert_error(
        &post(&b, "/v1/groups/nobody/rebalance", ""),
        404,
        "GroupIdNotFound",
    );
    let group = "someone";
    join_stable(&mut conn, &b, group, "ctl");
    assert_eq!(get(&b, &format!("/v1/groups/{group}/lag")).status, 200);
    assert_error(&get(&b, "/v1/groups/nobody/lag"), 404, "GroupIdNotFound");
    assert_error(
        &post(&b, "/v1/groups/nobody/rebalance", "{}"),
        404,
        "GroupIdNotFound",
    );

    // Routes and methods that do not exist.
    assert_error(&get(&b, "/v1/nothing"), 404, "NotFound");
    assert_error(
        &http(b.http.as_deref().unwrap(), "DELETE", "/v1/topics", None),
        405,
        "MethodNotAllowed",
    );
    assert_error(&get(&b, "/v1/groups/x/rebalance"), 405, "MethodNotAllowed");
}

/// A classic group of one member (joined over the wire) through its first rebalance;
/// returns the member id and generation.
fn join_stable(conn: &mut Conn, b: &BrokerProcess, group: &str, topic: &str) -> (String, i32) {
    let join = |member: &str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(30_000)
            .with_member_id(s(member))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(b"m")),
            ])
    };
    // The first FindCoordinator creates __consumer_offsets; wait until it is loaded.
    let deadline = Instant::now() + SETTLE;
    let member = loop {
        let found = conn.call(
            4,
            &FindCoordinatorRequest::default().with_coordinator_keys(vec![s(group)]),
        );
        if found.coordinators[0].error_code == NONE {
            let r = conn.call(5, &join(""));
            if r.error_code == MEMBER_ID_REQUIRED {
                break r.member_id.to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no coordinator for {group}\n{}",
            b.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let r = conn.call(5, &join(&member));
    assert_eq!(r.error_code, NONE, "{r:?}");
    let generation = r.generation_id;
    sync(conn, group, &member, generation);
    // Commit offset 1 of `topic` partition 0, so the group has something to report.
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(&member))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1),
                ]),
        ]);
    let r = conn.call(8, &commit);
    assert_eq!(r.topics[0].partitions[0].error_code, NONE, "{r:?}");
    (member, generation)
}

fn sync(conn: &mut Conn, group: &str, member: &str, generation: i32) {
    let r = conn.call(
        3,
        &SyncGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(s(member))
            .with_generation_id(generation)
            .with_assignments(vec![
                SyncGroupRequestAssignment::default()
                    .with_member_id(s(member))
                    .with_assignment(Bytes::from_static(b"a")),
            ]),
    );
    assert_eq!(r.error_code, NONE, "{r:?}");
}

fn heartbeat(conn: &mut Conn, group: &str, member: &str, generation: i32) -> i16 {
    conn.call(
        3,
        &HeartbeatRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(s(member))
            .with_generation_id(generation),
    )
    .error_code
}

#[test]
fn lag_and_a_forced_rebalance_over_the_wire() {
    let (b, _dir) = start();
    let mut conn = Conn::connect(&b.bootstrap);
    conn.create_topic("lagged", 1, &[]);
    for i in 0..2 {
        assert_eq!(
            conn.produce(9, "lagged", 0, batch(3, &format!("l{i}")))
                .error_code,
            NONE
        );
    }
    let group = "wired";
    let (member, generation) = join_stable(&mut conn, &b, group, "lagged");

    // Lag: committed 1 of 6.
    let r = get(&b, &format!("/v1/groups/{group}/lag"));
    assert_eq!(r.status, 200, "{}", r.body);
    let lag = r.json();
    assert_eq!(lag["group"], json!(group));
    assert_eq!(lag["state"], json!("Stable"));
    assert_eq!(lag["type"], json!("classic"));
    assert_eq!(lag["total_lag"], json!(5));
    let p = &lag["partitions"][0];
    assert_eq!(
        (
            &p["topic"],
            &p["partition"],
            &p["committed_offset"],
            &p["high_watermark"],
            &p["log_end_offset"],
            &p["lag"]
        ),
        (
            &json!("lagged"),
            &json!(0),
            &json!(1),
            &json!(6),
            &json!(6),
            &json!(5)
        ),
        "{lag}"
    );
    let sc = Scrape::take(&b);
    let labels = [("group", group), ("topic", "lagged"), ("partition", "0")];
    assert_eq!(sc.gauge("fjord_consumer_lag", &labels), 5.0);
    assert_eq!(
        sc.gauge("fjord_consumer_group_lag", &[("group", group)]),
        5.0
    );
    assert!(
        sc.gauge(
            "fjord_consumer_groups",
            &[("group_type", "classic"), ("state", "Stable")]
        ) >= 1.0
    );
    let classic = [("group_type", "classic")];
    let rebalances = sc.counter("fjord_rebalances_total", &classic);
    assert!(rebalances >= 1.0, "the first rebalance counts");

    // Force: the member hears REBALANCE_IN_PROGRESS on its next heartbeat.
    assert_eq!(heartbeat(&mut conn, group, &member, generation), NONE);
    let r = post(&b, &format!("/v1/groups/{group}/rebalance"), "");
    assert_eq!(r.status, 202, "{}", r.body);
    let forced = r.json();
    assert_eq!(forced["previous_state"], json!("Stable"), "{forced}");
    assert_eq!(forced["state"], json!("PreparingRebalance"));
    assert_eq!(forced["members"], json!(1));
    assert_eq!(
        heartbeat(&mut conn, group, &member, generation),
        REBALANCE_IN_PROGRESS
    );
    // Forcing again while it rebalances is accepted and changes nothing.
    let r = post(&b, &format!("/v1/groups/{group}/rebalance"), "");
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["previous_state"], json!("PreparingRebalance"));
    // The member rejoins into the next generation.
    let rejoin = JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(s(&member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"m")),
        ]);
    let r = conn.call(5, &rejoin);
    assert_eq!(r.error_code, NONE, "{r:?}");
    assert_eq!(r.generation_id, generation + 1);
    sync(&mut conn, group, &member, generation + 1);
    assert_eq!(heartbeat(&mut conn, group, &member, generation + 1), NONE);
    let sc = Scrape::take(&b);
    assert_eq!(
        sc.counter("fjord_rebalances_total", &classic),
        rebalances + 1.0
    );

    // Once the member leaves there is nothing to rebalance: 409.
    let r = conn.call(
        3,
        &LeaveGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_members(vec![MemberIdentity::default().with_member_id(s(&member))]),
    );
    assert_eq!(r.error_code, NONE, "{r:?}");
    assert_error(
        &post(&b, &format!("/v1/groups/{group}/rebalance"), ""),
        409,
        "GroupHasNoMembers",
    );
    // The committed offset outlives the members.
    assert_eq!(
        get(&b, &format!("/v1/groups/{group}/lag")).json()["total_lag"],
        json!(5)
    );
}

// ------------------------------------------------------------------------------ real clients

/// A consumer group member in `groups_client.py`, stopped (bounded) or killed on drop.
struct Member {
    child: Option<Child>,
    progress: PathBuf,
    stop: PathBuf,
    stderr: PathBuf,
}

impl Member {
    fn start(py: &Path, dir: &Path, client: &str, name: &str, mut args: Value) -> Member {
        let progress = dir.join(format!("{name}.progress"));
        let stop = dir.join(format!("{name}.stop"));
        let stderr = dir.join(format!("{name}.err"));
        args["progress"] = json!(progress);
        args["stop"] = json!(stop);
        args["deadline"] = json!(240);
        let child = Command::new(py)
            .args([GROUPS_CLIENT, client, "member", &args.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn a group member");
        Member {
            child: Some(child),
            progress,
            stop,
            stderr,
        }
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.progress)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn count(&self, event: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e["event"] == json!(event))
            .count()
    }

    fn wait_for(&self, b: &BrokerProcess, what: &str, check: impl Fn(&Member) -> bool) {
        let deadline = Instant::now() + SETTLE;
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "member: {what} did not happen; events: {:?}\nclient stderr:\n{}\nbroker log:\n{}",
                self.events(),
                std::fs::read_to_string(&self.stderr).unwrap_or_default(),
                b.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        let _ = std::fs::write(&self.stop, b"");
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn real_client_groups_rebalance_when_forced() {
    let Some(py) = clients::python() else {
        return;
    };
    let (b, dir) = start();
    let r = post(&b, "/v1/topics", r#"{"name": "live", "partitions": 2}"#);
    assert_eq!(r.status, 201, "{}", r.body);
    let records: Vec<Value> = (0..10)
        .map(|i| json!({"key": format!("k{i}"), "value": format!("v{i}")}))
        .collect();
    let produced = clients::run(
        &py,
        RDKAFKA,
        "produce",
        &json!({"bootstrap": b.bootstrap, "topic": "live", "records": records}),
    );
    assert!(
        produced["results"]
            .as_array()
            .is_some_and(|r| r.len() == 10 && r.iter().all(|x| x["error"].is_null())),
        "{produced}"
    );

    // A classic group (kafka-python, eager rebalances): consumes everything, then is forced
    // to rebalance, which it sees as a revoke and a new assignment.
    let classic = "live-classic";
    let mut kp = Member::start(
        &py,
        dir.path(),
        KAFKA_PYTHON,
        "kp",
        json!({"bootstrap": b.bootstrap, "group": classic, "topic": "live"}),
    );
    kp.wait_for(&b, "consume all 10 records", |m| m.count("record") >= 10);
    let lag_of = |group: &str| {
        let r = get(&b, &format!("/v1/groups/{group}/lag"));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    let lag = lag_of(classic);
    assert_eq!(lag["state"], json!("Stable"), "{lag}");
    assert_eq!(lag["total_lag"], json!(0), "{lag}");
    assert_eq!(lag["partitions"].as_array().map(Vec::len), Some(2), "{lag}");
    assert!(
        lag["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["member_id"].is_string()),
        "a Stable consumer-protocol group names its owners: {lag}"
    );
    let assigned = kp.count("assign");
    let before = Scrape::take(&b).counter("fjord_rebalances_total", &[("group_type", "classic")]);
    let r = post(&b, &format!("/v1/groups/{classic}/rebalance"), "");
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["type"], json!("classic"));
    kp.wait_for(&b, "a new assignment after the forced rebalance", |m| {
        m.count("assign") > assigned
    });
    scrape_until(&b, "the classic rebalance counted", |sc| {
        sc.counter("fjord_rebalances_total", &[("group_type", "classic")]) > before
    });
    let deadline = Instant::now() + SETTLE;
    while lag_of(classic)["state"] != json!("Stable") {
        assert!(Instant::now() < deadline, "the group did not settle");
        std::thread::sleep(Duration::from_millis(100));
    }
    kp.stop();

    // A KIP-848 group (librdkafka, group.protocol=consumer): the force bumps the group epoch
    // and the member's next heartbeat computes a new target assignment.
    let modern = "live-848";
    let mut rd = Member::start(
        &py,
        dir.path(),
        RDKAFKA,
        "rd",
        json!({"bootstrap": b.bootstrap, "group": modern, "topic": "live", "protocol": "consumer"}),
    );
    rd.wait_for(&b, "consume all 10 records", |m| m.count("record") >= 10);
    let consumer = [("group_type", "consumer")];
    let before = Scrape::take(&b).counter("fjord_rebalances_total", &consumer);
    assert!(before >= 1.0, "the first target assignment counts");
    let r = post(&b, &format!("/v1/groups/{modern}/rebalance"), "");
    assert_eq!(r.status, 202, "{}", r.body);
    let forced = r.json();
    assert_eq!(forced["type"], json!("consumer"), "{forced}");
    assert_eq!(forced["members"], json!(1));
    assert!(
        forced["group_epoch"].as_i64().is_some_and(|e| e >= 2),
        "{forced}"
    );
    scrape_until(&b, "the consumer group rebalance counted", |sc| {
        sc.counter("fjord_rebalances_total", &consumer) > before
    });
    let lag = lag_of(modern);
    assert_eq!(lag["type"], json!("consumer"), "{lag}");
    assert_eq!(lag["total_lag"], json!(0), "{lag}");
    // Both groups' lag is exported, per partition.
    let sc = Scrape::take(&b);
    for g in [classic, modern] {
        for p in ["0", "1"] {
            assert_eq!(
                sc.gauge(
                    "fjord_consumer_lag",
                    &[("group", g), ("topic", "live"), ("partition", p)]
                ),
                0.0
            );
        }
    }
    rd.stop();
}
