//! The KIP-848 consumer group protocol over raw TCP against the `fjord` binary:
//! ConsumerGroupHeartbeat and ConsumerGroupDescribe, their Kafka error codes, revocation before
//! reassignment, a coordinator restart that keeps the group, a rebalance on CreatePartitions,
//! session expiry, and how OffsetCommit/OffsetFetch, ListGroups and DescribeGroups treat
//! consumer groups.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_tests::broker::BrokerProcess;
use fjord_tests::wire::{Conn, topic_name};
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");

const NONE: i16 = 0;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const NOT_COORDINATOR: i16 = 16;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const UNKNOWN_MEMBER_ID: i16 = 25;
const UNSUPPORTED_VERSION: i16 = 35;
const INVALID_REQUEST: i16 = 42;
const GROUP_ID_NOT_FOUND: i16 = 69;
const FENCED_MEMBER_EPOCH: i16 = 110;
const UNSUPPORTED_ASSIGNOR: i16 = 112;
const STALE_MEMBER_EPOCH: i16 = 113;
const INVALID_REGULAR_EXPRESSION: i16 = 128;

/// The session the broker gives consumer group members in these tests.
const SESSION_MS: u64 = 4000;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn start() -> (BrokerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let session = SESSION_MS.to_string();
    let b = BrokerProcess::start(
        Path::new(BIN),
        dir.path(),
        &[
            ("offsets.topic.replication.factor", "1"),
            ("offsets.topic.num.partitions", "3"),
            ("group.consumer.heartbeat.interval.ms", "500"),
            ("group.consumer.session.timeout.ms", &session),
        ],
    );
    (b, dir)
}

/// Retries a heartbeat while the coordinator is not ready (bounded).
fn wait_for_coordinator(conn: &mut Conn, broker: &BrokerProcess, group: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = conn.call(
            4,
            &FindCoordinatorRequest::default().with_coordinator_keys(vec![s(group)]),
        );
        let c = &r.coordinators[0];
        if c.error_code == NONE {
            let d = conn.call(1, &describe(group));
            if ![COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR].contains(&d.groups[0].error_code) {
                return;
            }
        } else {
            assert_eq!(c.error_code, COORDINATOR_NOT_AVAILABLE, "{r:?}");
        }
        assert!(
            Instant::now() < deadline,
            "no coordinator for {group}; broker log:\n{}",
            broker.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn topic_id(conn: &mut Conn, topic: &str) -> Uuid {
    let md = conn.call(
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(topic))),
        ])),
    );
    assert_eq!(md.topics[0].error_code, 0, "{md:?}");
    md.topics[0].topic_id
}

/// A full ConsumerGroupHeartbeat v1 (as a member sends it to join, or after an error).
fn join(group: &str, member: &str, topics: &[&str]) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(topics.iter().map(|t| topic_name(t)).collect()))
        .with_topic_partitions(Some(Vec::new()))
}

/// A heartbeat reporting the partitions `owned` of topic `tid`.
fn beat(
    group: &str,
    member: &str,
    epoch: i32,
    tid: Uuid,
    owned: &BTreeSet<i32>,
) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(-1)
        .with_topic_partitions(Some(vec![
            TopicPartitions::default()
                .with_topic_id(tid)
                .with_partitions(owned.iter().copied().collect()),
        ]))
}

fn leave(group: &str, member: &str) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_member_epoch(-1)
        .with_rebalance_timeout_ms(-1)
}

/// The partitions of `tid` in an answer's assignment, if it has one.
fn assigned(r: &ConsumerGroupHeartbeatResponse, tid: Uuid) -> Option<BTreeSet<i32>> {
    r.assignment.as_ref().map(|a| {
        a.topic_partitions
            .iter()
            .filter(|t| t.topic_id == tid)
            .flat_map(|t| t.partitions.iter().copied())
            .collect()
    })
}

fn describe(group: &str) -> ConsumerGroupDescribeRequest {
    ConsumerGroupDescribeRequest::default()
        .with_group_ids(vec![GroupId(s(group))])
        .with_include_authorized_operations(true)
}

fn commit(group: &str, member: &str, epoch: i32, topic: &str) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_generation_id_or_member_epoch(epoch)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(3),
                ]),
        ])
}

fn fetch(group: &str, member: &str, epoch: i32) -> OffsetFetchRequest {
    OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(Some(s(member)))
            .with_member_epoch(epoch)
            .with_topics(None),
    ])
}

fn all(n: i32) -> BTreeSet<i32> {
    (0..n).collect()
}

#[test]
fn consumer_group_heartbeat_errors_carry_kafkas_codes() {
    let (broker, _dir) = start();
    let mut conn = Conn::connect(&broker.bootstrap);
    // Both APIs are advertised with Kafka 4.1's versions.
    let v = conn.call(3, &ApiVersionsRequest::default());
    for key in [68, 69] {
        let api = v
            .api_keys
            .iter()
            .find(|a| a.api_key == key)
            .expect("advertised");
        assert_eq!((api.min_version, api.max_version), (0, 1), "{key}");
    }
    conn.create_topic("t", 2, &[]);
    let tid = topic_id(&mut conn, "t");
    wait_for_coordinator(&mut conn, &broker, "g");

    // Validation comes first.
    let r = conn.call(
        1,
        &join("g", "a", &["t"]).with_server_assignor(Some(s("sticky"))),
    );
    assert_eq!(r.error_code, UNSUPPORTED_ASSIGNOR, "{r:?}");
    assert_eq!(
        r.error_message.as_deref(),
        Some("ServerAssignor sticky is not supported. Supported assignors: uniform, range.")
    );
    let r = conn.call(1, &join("g", "a", &["t"]).with_rebalance_timeout_ms(-1));
    assert_eq!(r.error_code, INVALID_REQUEST, "{r:?}");
    let r = conn.call(1, &join("g", "", &["t"]));
    assert_eq!(r.error_code, INVALID_REQUEST, "{r:?}");
    assert_eq!(r.error_message.as_deref(), Some("MemberId can't be empty."));
    let r = conn.call(
        1,
        &join("g", "a", &[]).with_subscribed_topic_regex(Some(s("(unclosed"))),
    );
    assert_eq!(r.error_code, INVALID_REGULAR_EXPRESSION, "{r:?}");
    let r = conn.call(1, &beat("g", "a", 3, tid, &BTreeSet::new()));
    assert_eq!(r.error_code, GROUP_ID_NOT_FOUND, "{r:?}");

    // A member joins and gets everything.
    let r = conn.call(1, &join("g", "a", &["t"]));
    assert_eq!(r.error_code, NONE, "{r:?}");
    assert_eq!(r.member_id.as_deref(), Some("a"));
    assert_eq!(r.member_epoch, 1);
    assert_eq!(r.heartbeat_interval_ms, 500);
    assert_eq!(assigned(&r, tid), Some(all(2)));
    // Version 0 lets the coordinator choose the member id.
    let r0 = conn.call(0, &join("g0", "", &["t"]));
    assert_eq!(r0.error_code, NONE, "{r0:?}");
    assert_eq!(r0.member_id.as_ref().map(|m| m.len()), Some(22), "{r0:?}");

    let r = conn.call(1, &beat("g", "nobody", 1, tid, &BTreeSet::new()));
    assert_eq!(r.error_code, UNKNOWN_MEMBER_ID, "{r:?}");
    let r = conn.call(1, &beat("g", "a", 7, tid, &all(2)));
    assert_eq!(r.error_code, FENCED_MEMBER_EPOCH, "{r:?}");
    assert!(
        r.error_message
            .as_deref()
            .unwrap_or("")
            .contains("greater member epoch")
    );
    let r = conn.call(1, &leave("g", "nobody"));
    assert_eq!(r.error_code, UNKNOWN_MEMBER_ID, "{r:?}");

    // Offsets: member epochs, not generations.
    assert_eq!(
        conn.call(9, &commit("g", "a", 2, "t")).topics[0].partitions[0].error_code,
        STALE_MEMBER_EPOCH
    );
    assert_eq!(
        conn.call(9, &commit("g", "zz", 1, "t")).topics[0].partitions[0].error_code,
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        conn.call(8, &commit("g", "a", 1, "t")).topics[0].partitions[0].error_code,
        UNSUPPORTED_VERSION
    );
    assert_eq!(
        conn.call(9, &commit("g", "a", 1, "t")).topics[0].partitions[0].error_code,
        NONE
    );
    assert_eq!(
        conn.call(9, &fetch("g", "a", 0)).groups[0].error_code,
        STALE_MEMBER_EPOCH
    );
    let f = conn.call(9, &fetch("g", "a", 1));
    assert_eq!(f.groups[0].error_code, NONE, "{f:?}");
    assert_eq!(f.groups[0].topics[0].partitions[0].committed_offset, 3);

    // A classic member cannot join it.
    let j = conn.call(
        5,
        &JoinGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(s(""))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(b"m")),
            ]),
    );
    assert_eq!(j.error_code, INCONSISTENT_GROUP_PROTOCOL, "{j:?}");

    // Administration sees a group of type consumer.
    let l = conn.call(
        5,
        &ListGroupsRequest::default().with_types_filter(vec![s("consumer")]),
    );
    let g = l
        .groups
        .iter()
        .find(|g| g.group_id.as_str() == "g")
        .expect("listed");
    assert_eq!(g.group_type.as_str(), "consumer");
    assert_eq!(g.protocol_type.as_str(), "consumer");
    assert_eq!(g.group_state.as_str(), "Stable");
    let l = conn.call(
        5,
        &ListGroupsRequest::default().with_types_filter(vec![s("classic")]),
    );
    assert!(l.groups.iter().all(|g| g.group_id.as_str() != "g"), "{l:?}");
    let d = conn.call(
        6,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
    );
    assert_eq!(d.groups[0].error_code, GROUP_ID_NOT_FOUND, "{d:?}");
    assert_eq!(
        d.groups[0].error_message.as_deref(),
        Some("Group g is not a classic group.")
    );
    let d = conn.call(
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
    );
    assert_eq!(d.groups[0].group_state.as_str(), "Dead", "{d:?}");
    let d = conn.call(1, &describe("g"));
    let g = &d.groups[0];
    assert_eq!(g.error_code, NONE, "{d:?}");
    assert_eq!(
        (g.group_state.as_str(), g.group_epoch, g.assignment_epoch),
        ("Stable", 1, 1)
    );
    assert_eq!(g.assignor_name.as_str(), "uniform");
    assert_eq!(g.members.len(), 1);
    let m = &g.members[0];
    assert_eq!(
        (m.member_id.as_str(), m.member_epoch, m.member_type),
        ("a", 1, 1)
    );
    assert_eq!(m.client_id.as_str(), "fjord-wire-test");
    assert_eq!(m.client_host.as_str(), "/127.0.0.1");
    assert_eq!(m.assignment.topic_partitions[0].topic_name.as_str(), "t");
    assert_eq!(m.assignment.topic_partitions[0].partitions, vec![0, 1]);
    assert_eq!(m.target_assignment, m.assignment);
    let d = conn.call(1, &describe("missing"));
    assert_eq!(d.groups[0].error_code, GROUP_ID_NOT_FOUND, "{d:?}");

    // Leaving: epoch -1, then the member is unknown and the group empty.
    let r = conn.call(1, &leave("g", "a"));
    assert_eq!((r.error_code, r.member_epoch), (NONE, -1), "{r:?}");
    let r = conn.call(1, &beat("g", "a", 1, tid, &all(2)));
    assert_eq!(r.error_code, UNKNOWN_MEMBER_ID, "{r:?}");
    let d = conn.call(1, &describe("g"));
    assert_eq!(
        (d.groups[0].group_state.as_str(), d.groups[0].group_epoch),
        ("Empty", 2)
    );
    // An empty group accepts commits without membership; DeleteGroups removes it.
    assert_eq!(
        conn.call(9, &commit("g", "", -1, "t")).topics[0].partitions[0].error_code,
        NONE
    );
    let del = conn.call(
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g"))]),
    );
    assert_eq!(del.results[0].error_code, NONE, "{del:?}");
    assert_eq!(
        conn.call(1, &describe("g")).groups[0].error_code,
        GROUP_ID_NOT_FOUND
    );
    let log = std::fs::read_to_string(broker.stderr_path()).unwrap_or_default();
    assert!(!log.contains("panicked"), "{}", broker.log_tail());
}

#[test]
fn revocation_comes_before_reassignment_and_the_group_survives_a_restart() {
    let (mut broker, _dir) = start();
    let mut conn = Conn::connect(&broker.bootstrap);
    conn.create_topic("r", 4, &[]);
    let tid = topic_id(&mut conn, "r");
    wait_for_coordinator(&mut conn, &broker, "rg");

    let ra = conn.call(1, &join("rg", "a", &["r"]));
    assert_eq!((ra.error_code, ra.member_epoch), (NONE, 1), "{ra:?}");
    let mut a_owned = assigned(&ra, tid).unwrap();
    assert_eq!(a_owned, all(4));

    // b joins: it moves to epoch 2 but gets nothing while a holds everything.
    let rb = conn.call(1, &join("rg", "b", &["r"]));
    assert_eq!((rb.error_code, rb.member_epoch), (NONE, 2), "{rb:?}");
    assert_eq!(assigned(&rb, tid), Some(BTreeSet::new()));
    let rb = conn.call(1, &beat("rg", "b", 2, tid, &BTreeSet::new()));
    assert_eq!(assigned(&rb, tid).unwrap_or_default(), BTreeSet::new());
    // a is told to keep two, still in its epoch.
    let ra = conn.call(1, &beat("rg", "a", 1, tid, &a_owned));
    assert_eq!((ra.error_code, ra.member_epoch), (NONE, 1), "{ra:?}");
    let kept = assigned(&ra, tid).expect("a new assignment");
    assert_eq!(kept.len(), 2);
    // Until a's heartbeat shows it let go, b still gets nothing.
    let rb = conn.call(1, &beat("rg", "b", 2, tid, &BTreeSet::new()));
    assert_eq!(
        assigned(&rb, tid).unwrap_or_default(),
        BTreeSet::new(),
        "{rb:?}"
    );
    a_owned = kept;
    let ra = conn.call(1, &beat("rg", "a", 1, tid, &a_owned));
    assert_eq!((ra.error_code, ra.member_epoch), (NONE, 2), "{ra:?}");
    let rb = conn.call(1, &beat("rg", "b", 2, tid, &BTreeSet::new()));
    let b_owned = assigned(&rb, tid).expect("b's partitions");
    assert_eq!(b_owned.len(), 2);
    assert!(a_owned.is_disjoint(&b_owned));
    let d = conn.call(1, &describe("rg"));
    assert_eq!(d.groups[0].group_state.as_str(), "Stable", "{d:?}");

    // The coordinator dies and comes back: the group, its epochs and assignments are in the log.
    broker.restart();
    let mut conn = Conn::connect(&broker.bootstrap);
    wait_for_coordinator(&mut conn, &broker, "rg");
    let d = conn.call(1, &describe("rg"));
    let g = &d.groups[0];
    assert_eq!(
        (g.error_code, g.group_epoch, g.assignment_epoch),
        (NONE, 2, 2),
        "{d:?}"
    );
    assert_eq!(g.members.len(), 2);
    let ra = conn.call(1, &beat("rg", "a", 2, tid, &a_owned));
    assert_eq!((ra.error_code, ra.member_epoch), (NONE, 2), "{ra:?}");
    let rb = conn.call(1, &beat("rg", "b", 2, tid, &b_owned));
    assert_eq!((rb.error_code, rb.member_epoch), (NONE, 2), "{rb:?}");

    // More partitions: the next heartbeat starts a rebalance that hands them out.
    let cp = conn.call(
        3,
        &CreatePartitionsRequest::default()
            .with_topics(vec![
                CreatePartitionsTopic::default()
                    .with_name(topic_name("r"))
                    .with_count(6),
            ])
            .with_timeout_ms(10_000),
    );
    assert_eq!(cp.results[0].error_code, NONE, "{cp:?}");
    let (mut a_owned, mut b_owned) = (a_owned, b_owned);
    let (mut a_epoch, mut b_epoch) = (2, 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while a_owned.len() + b_owned.len() < 6 || a_epoch != b_epoch {
        assert!(
            Instant::now() < deadline,
            "no rebalance: {a_owned:?} {b_owned:?}"
        );
        let ra = conn.call(1, &beat("rg", "a", a_epoch, tid, &a_owned));
        assert_eq!(ra.error_code, NONE, "{ra:?}");
        a_epoch = ra.member_epoch;
        if let Some(p) = assigned(&ra, tid) {
            a_owned = p;
        }
        let rb = conn.call(1, &beat("rg", "b", b_epoch, tid, &b_owned));
        assert_eq!(rb.error_code, NONE, "{rb:?}");
        b_epoch = rb.member_epoch;
        if let Some(p) = assigned(&rb, tid) {
            b_owned = p;
        }
        assert!(a_owned.is_disjoint(&b_owned), "{a_owned:?} {b_owned:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!((a_owned.len(), b_owned.len(), a_epoch), (3, 3, 3));

    // b stops heartbeating: after its session a gets everything.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    while a_owned.len() < 6 {
        assert!(
            Instant::now() < deadline,
            "b's session never ended: {a_owned:?}"
        );
        let ra = conn.call(1, &beat("rg", "a", a_epoch, tid, &a_owned));
        assert_eq!(ra.error_code, NONE, "{ra:?}");
        a_epoch = ra.member_epoch;
        if let Some(p) = assigned(&ra, tid) {
            a_owned = p;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(SESSION_MS - 1000),
        "b's partitions moved before its session could end ({:?})",
        started.elapsed()
    );
    let rb = conn.call(1, &beat("rg", "b", b_epoch, tid, &b_owned));
    assert_eq!(rb.error_code, UNKNOWN_MEMBER_ID, "{rb:?}");
    let log = std::fs::read_to_string(broker.stderr_path()).unwrap_or_default();
    assert!(!log.contains("panicked"), "{}", broker.log_tail());
}
