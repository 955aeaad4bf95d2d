//! The group APIs over raw TCP against the `fjord` binary: FindCoordinator and the creation of
//! `__consumer_offsets`, and the Kafka error codes of JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, OffsetDelete, DescribeGroups and DeleteGroups.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_tests::broker::BrokerProcess;
use fjord_tests::wire::Conn;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const OFFSET_METADATA_TOO_LARGE: i16 = 12;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const ILLEGAL_GENERATION: i16 = 22;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const INVALID_GROUP_ID: i16 = 24;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const REBALANCE_IN_PROGRESS: i16 = 27;
const INVALID_REQUEST: i16 = 42;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const MEMBER_ID_REQUIRED: i16 = 79;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn start() -> (BrokerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let b = BrokerProcess::start(
        Path::new(BIN),
        dir.path(),
        &[
            ("offsets.topic.replication.factor", "1"),
            ("offsets.topic.num.partitions", "7"),
            ("group.initial.rebalance.delay.ms", "200"),
        ],
    );
    (b, dir)
}

fn create_topic(conn: &mut Conn, topic: &str, partitions: i32) {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(s(topic)))
                .with_num_partitions(partitions)
                .with_replication_factor(1),
        ])
        .with_timeout_ms(10_000);
    let resp = conn.call(7, &req);
    assert_eq!(resp.topics[0].error_code, 0, "{resp:?}");
}

/// FindCoordinator v4 for `group` until the coordinator is known and loaded (bounded).
fn wait_for_coordinator(conn: &mut Conn, broker: &BrokerProcess, group: &str) -> (i32, i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = conn.call(
            4,
            &FindCoordinatorRequest::default().with_coordinator_keys(vec![s(group)]),
        );
        let c = &resp.coordinators[0];
        if c.error_code == NONE {
            // Loaded too: a read answers without COORDINATOR_LOAD_IN_PROGRESS.
            let f = conn.call(8, &offset_fetch_all(group));
            if f.groups[0].error_code == NONE {
                return (c.node_id.0, c.port);
            }
        } else {
            assert_eq!(c.error_code, COORDINATOR_NOT_AVAILABLE, "{resp:?}");
        }
        assert!(
            Instant::now() < deadline,
            "no coordinator for {group}; broker log:\n{}",
            broker.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// OffsetFetch v8 for every committed offset of `group` (null topics).
fn offset_fetch_all(group: &str) -> OffsetFetchRequest {
    OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(None),
    ])
}

fn join(group: &str, member: &str, metadata: &'static [u8]) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(metadata)),
        ])
}

fn heartbeat(group: &str, member: &str, generation: i32) -> HeartbeatRequest {
    HeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_generation_id(generation)
}

fn commit(
    group: &str,
    member: &str,
    generation: i32,
    topic: &str,
    offset: i64,
    metadata: &str,
) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset)
                        .with_committed_metadata(Some(s(metadata))),
                ]),
        ])
}

fn commit_code(resp: &OffsetCommitResponse) -> i16 {
    resp.topics[0].partitions[0].error_code
}

/// The first JoinGroup of a new member: MEMBER_ID_REQUIRED with its id.
fn new_member_id(conn: &mut Conn, group: &str) -> String {
    let r = conn.call(5, &join(group, "", b"m"));
    assert_eq!(r.error_code, MEMBER_ID_REQUIRED, "{r:?}");
    assert!(!r.member_id.is_empty());
    r.member_id.to_string()
}

#[test]
fn find_coordinator_creates_the_offsets_topic_and_answers_every_version() {
    let (broker, _dir) = start();
    let mut conn = Conn::connect(&broker.bootstrap);
    // No __consumer_offsets yet: Kafka answers COORDINATOR_NOT_AVAILABLE and creates it.
    let first = conn.call(3, &FindCoordinatorRequest::default().with_key(s("g")));
    assert_eq!(first.error_code, COORDINATOR_NOT_AVAILABLE, "{first:?}");
    assert_eq!(first.node_id.0, -1);
    let (node, port) = wait_for_coordinator(&mut conn, &broker, "g");
    assert_eq!(node, 1);
    let bootstrap_port: i32 = broker
        .bootstrap
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(port, bootstrap_port);

    // The topic: 7 partitions as configured, compacted.
    let md = conn.call(
        9,
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(s("__consumer_offsets")))),
        ])),
    );
    assert_eq!(md.topics[0].error_code, 0, "{md:?}");
    assert_eq!(md.topics[0].partitions.len(), 7);
    let cfg = conn.call(
        4,
        &DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("__consumer_offsets"))
                .with_configuration_keys(Some(vec![s("cleanup.policy")])),
        ]),
    );
    let policy = cfg.results[0]
        .configs
        .iter()
        .find(|c| c.name.as_str() == "cleanup.policy")
        .and_then(|c| c.value.clone());
    assert_eq!(policy.as_deref(), Some("compact"), "{cfg:?}");

    // Every version; v0 has no key type, v4+ batch their keys.
    for v in 0..=3 {
        let r = conn.call(v, &FindCoordinatorRequest::default().with_key(s("g")));
        assert_eq!(
            (r.error_code, r.node_id.0, r.port),
            (NONE, 1, bootstrap_port),
            "v{v}: {r:?}"
        );
        // Kafka's single-key versions say "NONE" even on success.
        if v >= 1 {
            assert_eq!(r.error_message.as_deref(), Some("NONE"), "v{v}: {r:?}");
        }
    }
    for v in 4..=6 {
        let r = conn.call(
            v,
            &FindCoordinatorRequest::default().with_coordinator_keys(vec![s("a"), s("b"), s("")]),
        );
        assert_eq!(r.coordinators.len(), 3);
        for c in &r.coordinators {
            assert_eq!((c.error_code, c.node_id.0), (NONE, 1), "v{v}: {r:?}");
        }
        assert_eq!(r.coordinators[1].key.as_str(), "b");
    }
    // Transactions: no transaction coordinator.
    let r = conn.call(
        3,
        &FindCoordinatorRequest::default()
            .with_key(s("tx"))
            .with_key_type(1),
    );
    assert_eq!(
        (r.error_code, r.node_id.0),
        (COORDINATOR_NOT_AVAILABLE, -1),
        "{r:?}"
    );
    // Share groups (key type 2) and unknown key types are invalid.
    let r = conn.call(
        6,
        &FindCoordinatorRequest::default()
            .with_key_type(2)
            .with_coordinator_keys(vec![s("x")]),
    );
    assert_eq!(r.coordinators[0].error_code, INVALID_REQUEST, "{r:?}");
    let r = conn.call(
        4,
        &FindCoordinatorRequest::default()
            .with_key_type(9)
            .with_coordinator_keys(vec![s("x"), s("y")]),
    );
    assert!(
        r.coordinators
            .iter()
            .all(|c| c.error_code == INVALID_REQUEST),
        "{r:?}"
    );
}

#[test]
fn group_protocol_error_codes_on_the_wire() {
    let (broker, _dir) = start();
    let mut c1 = Conn::connect(&broker.bootstrap);
    create_topic(&mut c1, "wt", 2);
    wait_for_coordinator(&mut c1, &broker, "wg");

    // Validation before the group is looked at.
    let r = c1.call(5, &join("", "", b"m"));
    assert_eq!(r.error_code, INVALID_GROUP_ID);
    let r = c1.call(5, &join("wg", "", b"m").with_session_timeout_ms(10));
    assert_eq!(r.error_code, INVALID_SESSION_TIMEOUT);
    // A member id for a group that does not exist.
    let r = c1.call(5, &join("wg", "made-up", b"m"));
    assert_eq!(r.error_code, UNKNOWN_MEMBER_ID);

    // KIP-394: the first join of a member only gets it an id.
    let m1 = new_member_id(&mut c1, "wg");
    let r = c1.call(5, &join("wg", &m1, b"m"));
    assert_eq!(r.error_code, NONE, "{r:?}");
    assert_eq!(r.generation_id, 1);
    assert_eq!(r.leader.as_str(), m1);
    assert_eq!(r.members.len(), 1);
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    // Version 7 returns the protocol type too.
    let r = c1.call(7, &join("wg", &m1, b"m"));
    assert_eq!(r.protocol_type.as_deref(), Some("consumer"), "{r:?}");

    // SyncGroup v5 requires the protocol type and name.
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("wg")))
        .with_generation_id(1)
        .with_member_id(s(&m1))
        .with_assignments(vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(s(&m1))
                .with_assignment(Bytes::from_static(b"all of it")),
        ]);
    let r = c1.call(5, &sync);
    assert_eq!(r.error_code, INCONSISTENT_GROUP_PROTOCOL);
    let r = c1.call(3, &sync.clone().with_generation_id(9));
    assert_eq!(r.error_code, ILLEGAL_GENERATION);
    let r = c1.call(3, &sync);
    assert_eq!(r.error_code, NONE);
    assert_eq!(&r.assignment[..], b"all of it");

    // Heartbeats.
    assert_eq!(c1.call(3, &heartbeat("wg", &m1, 1)).error_code, NONE);
    assert_eq!(
        c1.call(3, &heartbeat("wg", "bogus", 1)).error_code,
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        c1.call(3, &heartbeat("wg", &m1, 0)).error_code,
        ILLEGAL_GENERATION
    );
    assert_eq!(
        c1.call(3, &heartbeat("", &m1, 1)).error_code,
        INVALID_GROUP_ID
    );

    // Offset commits: member and generation checks, metadata size, unknown topics.
    assert_eq!(
        commit_code(&c1.call(8, &commit("wg", &m1, 1, "wt", 5, "meta"))),
        NONE
    );
    assert_eq!(
        commit_code(&c1.call(8, &commit("wg", "bogus", 1, "wt", 6, ""))),
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        commit_code(&c1.call(8, &commit("wg", &m1, 7, "wt", 6, ""))),
        ILLEGAL_GENERATION
    );
    assert_eq!(
        commit_code(&c1.call(8, &commit("wg", &m1, 1, "wt", 6, &"x".repeat(5000)))),
        OFFSET_METADATA_TOO_LARGE
    );
    assert_eq!(
        commit_code(&c1.call(8, &commit("wg", &m1, 1, "nope", 6, ""))),
        UNKNOWN_TOPIC_OR_PARTITION
    );
    // A generation for a group that does not exist: v9 says so, older versions say the
    // generation is wrong.
    assert_eq!(
        commit_code(&c1.call(9, &commit("ghost", "x", 3, "wt", 1, ""))),
        GROUP_ID_NOT_FOUND
    );
    assert_eq!(
        commit_code(&c1.call(8, &commit("ghost", "x", 3, "wt", 1, ""))),
        ILLEGAL_GENERATION
    );
    // A simple commit (no membership, generation -1) to a group with members is refused.
    assert_eq!(
        commit_code(&c1.call(8, &commit("wg", "", -1, "wt", 1, ""))),
        UNKNOWN_MEMBER_ID
    );

    // Fetch: v8 batches groups; v1 names one group.
    let f = c1.call(
        8,
        &OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s("wg")))
                .with_topics(Some(vec![
                    OffsetFetchRequestTopics::default()
                        .with_name(TopicName(s("wt")))
                        .with_partition_indexes(vec![0, 1]),
                ])),
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s("ghost")))
                .with_topics(None),
        ]),
    );
    let wg = &f.groups[0];
    assert_eq!(wg.error_code, NONE);
    let parts = &wg.topics[0].partitions;
    assert_eq!(
        (parts[0].committed_offset, parts[0].metadata.as_deref()),
        (5, Some("meta"))
    );
    assert_eq!(parts[1].committed_offset, -1);
    assert_eq!(
        (f.groups[1].error_code, f.groups[1].topics.len()),
        (NONE, 0)
    );
    let f = c1.call(
        1,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(s("wg")))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("wt")))
                    .with_partition_indexes(vec![0]),
            ])),
    );
    assert_eq!(f.topics[0].partitions[0].committed_offset, 5);

    // A second member joins: the first learns of the rebalance from its heartbeat.
    let mut c2 = Conn::connect(&broker.bootstrap);
    let m2 = new_member_id(&mut c2, "wg");
    c2.send(5, &join("wg", &m2, b"m"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let code = c1.call(3, &heartbeat("wg", &m1, 1)).error_code;
        if code == REBALANCE_IN_PROGRESS {
            break;
        }
        assert_eq!(code, NONE);
        assert!(Instant::now() < deadline, "no rebalance");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Commits of the old generation are still accepted while members rejoin.
    assert_eq!(
        commit_code(&c1.call(8, &commit("wg", &m1, 1, "wt", 7, ""))),
        NONE
    );
    let r1 = c1.call(5, &join("wg", &m1, b"m"));
    let (_, r2) = c2.recv::<JoinGroupRequest>(5);
    assert_eq!((r1.error_code, r2.error_code), (NONE, NONE));
    assert_eq!((r1.generation_id, r2.generation_id), (2, 2));
    assert_eq!(r1.leader, r2.leader);
    // Between JoinGroup and the leader's SyncGroup, commits get REBALANCE_IN_PROGRESS.
    assert_eq!(
        commit_code(&c1.call(8, &commit("wg", &m1, 2, "wt", 8, ""))),
        REBALANCE_IN_PROGRESS
    );

    // DescribeGroups mid-rebalance, and for groups that do not exist (v6: an error).
    let d = c1.call(
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("wg")), GroupId(s("nope"))]),
    );
    assert_eq!(d.groups[0].group_state.as_str(), "CompletingRebalance");
    assert_eq!(d.groups[0].members.len(), 2);
    assert_eq!(
        (d.groups[1].error_code, d.groups[1].group_state.as_str()),
        (NONE, "Dead")
    );
    let d = c1.call(
        6,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("nope"))]),
    );
    assert_eq!(d.groups[0].error_code, GROUP_ID_NOT_FOUND, "{d:?}");

    // LeaveGroup v3 in a batch: one known member, one stranger.
    let r = c1.call(
        3,
        &LeaveGroupRequest::default()
            .with_group_id(GroupId(s("wg")))
            .with_members(vec![
                MemberIdentity::default().with_member_id(s(&m2)),
                MemberIdentity::default().with_member_id(s("stranger")),
            ]),
    );
    assert_eq!(r.error_code, NONE);
    assert_eq!(
        r.members.iter().map(|m| m.error_code).collect::<Vec<_>>(),
        vec![NONE, UNKNOWN_MEMBER_ID]
    );
    // The group still has m1: it cannot be deleted.
    let r = c1.call(
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("wg"))]),
    );
    assert_eq!(r.results[0].error_code, NON_EMPTY_GROUP);
    // LeaveGroup v0 names one member.
    let r = c1.call(
        0,
        &LeaveGroupRequest::default()
            .with_group_id(GroupId(s("wg")))
            .with_member_id(s(&m1)),
    );
    assert_eq!(r.error_code, NONE);
    assert_eq!(
        c1.call(3, &heartbeat("wg", &m1, 2)).error_code,
        UNKNOWN_MEMBER_ID
    );

    // ListGroups with a state filter.
    let l = c1.call(
        4,
        &ListGroupsRequest::default().with_states_filter(vec![s("empty")]),
    );
    assert!(
        l.groups.iter().any(|g| g.group_id.as_str() == "wg"),
        "{l:?}"
    );
    let l = c1.call(
        4,
        &ListGroupsRequest::default().with_states_filter(vec![s("Stable")]),
    );
    assert!(
        !l.groups.iter().any(|g| g.group_id.as_str() == "wg"),
        "{l:?}"
    );

    // OffsetDelete, then DeleteGroups.
    let od = c1.call(
        0,
        &OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("wg")))
            .with_topics(vec![
                OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s("wt")))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0),
                    ]),
                OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s("nope")))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0),
                    ]),
            ]),
    );
    assert_eq!(od.error_code, NONE);
    assert_eq!(od.topics[0].partitions[0].error_code, NONE);
    assert_eq!(
        od.topics[1].partitions[0].error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    let od = c1.call(
        0,
        &OffsetDeleteRequest::default().with_group_id(GroupId(s("ghost"))),
    );
    assert_eq!(od.error_code, GROUP_ID_NOT_FOUND);
    let r = c1.call(
        2,
        &DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(s("wg")), GroupId(s("never"))]),
    );
    assert_eq!(
        r.results.iter().map(|x| x.error_code).collect::<Vec<_>>(),
        vec![NONE, GROUP_ID_NOT_FOUND]
    );
    let f = c1.call(8, &offset_fetch_all("wg"));
    assert!(f.groups[0].topics.is_empty(), "{f:?}");
}

#[test]
fn a_restarted_coordinator_keeps_generations_members_and_offsets() {
    let (mut broker, _dir) = start();
    let mut c = Conn::connect(&broker.bootstrap);
    create_topic(&mut c, "rt", 1);
    wait_for_coordinator(&mut c, &broker, "rg");
    let m = new_member_id(&mut c, "rg");
    let r = c.call(5, &join("rg", &m, b"m"));
    assert_eq!((r.error_code, r.generation_id), (NONE, 1));
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("rg")))
        .with_generation_id(1)
        .with_member_id(s(&m))
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("range")))
        .with_assignments(vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(s(&m))
                .with_assignment(Bytes::from_static(b"a")),
        ]);
    assert_eq!(c.call(5, &sync).error_code, NONE);
    assert_eq!(
        commit_code(&c.call(8, &commit("rg", &m, 1, "rt", 11, "kept"))),
        NONE
    );
    drop(c);

    broker.restart();
    let mut c = Conn::connect(&broker.bootstrap);
    wait_for_coordinator(&mut c, &broker, "rg");
    // The member and its generation were loaded from __consumer_offsets.
    assert_eq!(c.call(3, &heartbeat("rg", &m, 1)).error_code, NONE);
    let r = c.call(5, &sync.clone().with_assignments(Vec::new()));
    assert_eq!((r.error_code, &r.assignment[..]), (NONE, &b"a"[..]));
    let f = c.call(8, &offset_fetch_all("rg"));
    assert_eq!(
        f.groups[0].topics.len(),
        1,
        "{f:?}\nbroker log:\n{}",
        broker.log_tail()
    );
    let p = &f.groups[0].topics[0].partitions[0];
    assert_eq!(
        (p.committed_offset, p.metadata.as_deref()),
        (11, Some("kept"))
    );
    let d = c.call(
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("rg"))]),
    );
    assert_eq!(d.groups[0].group_state.as_str(), "Stable");
    assert_eq!(d.groups[0].protocol_data.as_str(), "range");
}
