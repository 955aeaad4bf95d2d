//! The coordinator's state machine driven directly, over an in-memory log.

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::group::GroupCoordinatorConfig;
use crate::group::classic::GroupState;
use crate::group::codes;
use crate::group::commits::{CommitPartition, CommitRequest};
use crate::group::member::{JoinResult, Protocol, SyncResult};
use crate::group::rebalance::{JoinRequest, LeavingMember, SyncRequest};
use crate::group::records::CoordinatorRecord;
use crate::group::state::ShardState;
use crate::group::state::testing::{MemLog, shard};

fn config() -> GroupCoordinatorConfig {
    GroupCoordinatorConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupCoordinatorConfig::default()
    }
}

fn join_req(group: &str, member: &str, version: i16) -> JoinRequest {
    JoinRequest {
        group_id: group.into(),
        member_id: member.into(),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![Protocol {
            name: "range".into(),
            metadata: Bytes::from_static(b"sub"),
        }],
        api_version: version,
        reason: None,
    }
}

fn join(st: &mut ShardState, req: JoinRequest) -> oneshot::Receiver<JoinResult> {
    let (tx, rx) = oneshot::channel();
    st.join(req, tx);
    rx
}

fn sync(
    st: &mut ShardState,
    group: &str,
    member: &str,
    generation: i32,
    assignments: Vec<(String, Bytes)>,
) -> oneshot::Receiver<SyncResult> {
    let (tx, rx) = oneshot::channel();
    st.sync(
        SyncRequest {
            group_id: group.into(),
            member_id: member.into(),
            group_instance_id: None,
            generation_id: generation,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments,
        },
        tx,
    );
    rx
}

/// Joins a new dynamic member the KIP-394 way; returns its id and its parked JoinGroup.
fn join_new(st: &mut ShardState, group: &str) -> (String, oneshot::Receiver<JoinResult>) {
    let mut rx = join(st, join_req(group, "", 5));
    let r = rx.try_recv().expect("MEMBER_ID_REQUIRED at once");
    assert_eq!(r.error, codes::MEMBER_ID_REQUIRED);
    assert!(r.member_id.starts_with("client-"), "{}", r.member_id);
    let id = r.member_id;
    let rx = join(st, join_req(group, &id, 5));
    (id, rx)
}

/// A group of `n` members through its first rebalance to Stable; returns the member ids (the
/// leader first) and the generation.
fn stable_group(st: &mut ShardState, group: &str, n: usize) -> (Vec<String>, i32) {
    let mut pending = Vec::new();
    for _ in 0..n {
        pending.push(join_new(st, group));
    }
    // The (zero) initial delay ends the join phase.
    st.fire_timers();
    let mut results = Vec::new();
    for (id, mut rx) in pending {
        let r = rx.try_recv().expect("join answered");
        assert_eq!(r.error, codes::NONE);
        assert_eq!(r.member_id, id);
        results.push(r);
    }
    let generation = results[0].generation_id;
    let leader = results[0].leader.clone();
    let leader_result = results.iter().find(|r| r.member_id == leader).unwrap();
    assert_eq!(leader_result.members.len(), n);
    for r in &results {
        assert_eq!(r.generation_id, generation);
        assert_eq!(r.protocol_name.as_deref(), Some("range"));
        if r.member_id != leader {
            assert!(r.members.is_empty(), "only the leader learns the members");
        }
    }
    let mut ids: Vec<String> = results.iter().map(|r| r.member_id.clone()).collect();
    ids.sort_by_key(|id| *id != leader);
    let mut followers = Vec::new();
    for id in ids.iter().skip(1) {
        followers.push(sync(st, group, id, generation, Vec::new()));
    }
    let assignments = ids
        .iter()
        .map(|id| (id.clone(), Bytes::from(format!("assignment-of-{id}"))))
        .collect();
    let mut leader_rx = sync(st, group, &ids[0], generation, assignments);
    let r = leader_rx
        .try_recv()
        .expect("leader sync answered once stored");
    assert_eq!(r.error, codes::NONE);
    assert_eq!(
        r.assignment,
        Bytes::from(format!("assignment-of-{}", ids[0]))
    );
    for (id, mut rx) in ids.iter().skip(1).zip(followers) {
        let r = rx.try_recv().expect("follower sync answered");
        assert_eq!(r.error, codes::NONE);
        assert_eq!(r.assignment, Bytes::from(format!("assignment-of-{id}")));
    }
    assert!(st.groups[group].is(GroupState::Stable));
    (ids, generation)
}

#[test]
fn first_join_requires_a_member_id_and_the_group_stabilizes() {
    let (mut st, log) = shard(config());
    let (ids, generation) = stable_group(&mut st, "g", 3);
    assert_eq!(generation, 1);
    assert_eq!(ids.len(), 3);
    // The new group's empty record, then the assignment.
    let records = log.records.lock();
    assert!(matches!(
        &records.last().unwrap().1,
        CoordinatorRecord::GroupMetadata { value: Some(v), .. } if v.generation == 1 && v.members.len() == 3
    ));
}

#[test]
fn heartbeat_and_sync_errors_at_the_state_machine() {
    let (mut st, _) = shard(config());
    let (ids, generation) = stable_group(&mut st, "g", 2);
    assert_eq!(st.heartbeat("g", &ids[1], None, generation), codes::NONE);
    assert_eq!(
        st.heartbeat("g", "nobody", None, generation),
        codes::UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        st.heartbeat("g", &ids[1], None, generation - 1),
        codes::ILLEGAL_GENERATION
    );
    assert_eq!(
        st.heartbeat("unknown-group", &ids[1], None, generation),
        codes::UNKNOWN_MEMBER_ID
    );
    let mut rx = sync(&mut st, "g", &ids[1], generation + 1, Vec::new());
    assert_eq!(rx.try_recv().unwrap().error, codes::ILLEGAL_GENERATION);
    // A follower whose metadata changed triggers a rebalance; the others learn it from
    // their heartbeat.
    let mut changed = join_req("g", &ids[1], 5);
    changed.protocols[0].metadata = Bytes::from_static(b"new subscription");
    let mut parked = join(&mut st, changed);
    assert!(parked.try_recv().is_err(), "parked until the others rejoin");
    assert!(st.groups["g"].is(GroupState::PreparingRebalance));
    assert_eq!(
        st.heartbeat("g", &ids[0], None, generation),
        codes::REBALANCE_IN_PROGRESS
    );
    let mut leader = join(&mut st, join_req("g", &ids[0], 5));
    let a = parked.try_recv().unwrap();
    let b = leader.try_recv().unwrap();
    assert_eq!(a.generation_id, generation + 1);
    assert_eq!(b.generation_id, generation + 1);
    assert!(st.groups["g"].is(GroupState::CompletingRebalance));
}

#[test]
fn leave_and_session_expiry_rebalance_the_rest() {
    let (mut st, _) = shard(config());
    let (ids, generation) = stable_group(&mut st, "g", 3);
    let left = st
        .leave(
            "g",
            vec![
                LeavingMember {
                    member_id: ids[2].clone(),
                    group_instance_id: None,
                    reason: Some("bye".into()),
                    error: 0,
                },
                LeavingMember {
                    member_id: "stranger".into(),
                    group_instance_id: None,
                    reason: None,
                    error: 0,
                },
            ],
        )
        .unwrap();
    assert_eq!(left[0].error, codes::NONE);
    assert_eq!(left[1].error, codes::UNKNOWN_MEMBER_ID);
    assert!(st.groups["g"].is(GroupState::PreparingRebalance));
    let mut a = join(&mut st, join_req("g", &ids[0], 5));
    assert!(a.try_recv().is_err());
    // The other survivor never rejoins; its session ends and the rebalance completes
    // without it.
    st.expire_heartbeat("g", &ids[1]);
    let r = a.try_recv().unwrap();
    assert_eq!(r.error, codes::NONE);
    assert_eq!(r.generation_id, generation + 1);
    assert_eq!(r.members.len(), 1);
    assert_eq!(st.groups["g"].num_members(), 1);
}

#[test]
fn offsets_commit_fetch_and_survive_a_reload() {
    let (mut st, log) = shard(config());
    let (ids, generation) = stable_group(&mut st, "g", 2);
    let commit = |member: &str, generation: i32, metadata: &str| CommitRequest {
        group_id: "g".into(),
        member_id: member.into(),
        group_instance_id: None,
        generation_id: generation,
        retention_time_ms: -1,
        api_version: 8,
        topics: vec![(
            "t".into(),
            vec![CommitPartition {
                index: 0,
                offset: 42,
                leader_epoch: 3,
                metadata: Some(metadata.into()),
            }],
        )],
    };
    let w = st.commit_offsets(commit(&ids[0], generation, "m")).unwrap();
    assert_eq!(w.topics, vec![("t".to_string(), vec![(0, codes::NONE)])]);
    assert_eq!(
        st.commit_offsets(commit(&ids[0], generation + 1, "m")),
        Err(codes::ILLEGAL_GENERATION)
    );
    assert_eq!(
        st.commit_offsets(commit("stranger", generation, "m")),
        Err(codes::UNKNOWN_MEMBER_ID)
    );
    let big = "x".repeat(5000);
    let w = st
        .commit_offsets(commit(&ids[0], generation, &big))
        .unwrap();
    assert_eq!(w.topics[0].1, vec![(0, codes::OFFSET_METADATA_TOO_LARGE)]);
    // A commit without membership to another group creates a simple group.
    let mut simple = commit("", -1, "");
    simple.group_id = "simple".into();
    simple.topics[0].1[0].offset = 7;
    st.commit_offsets(simple).unwrap();
    assert!(st.groups["simple"].is(GroupState::Empty));
    assert_eq!(st.groups["simple"].protocol_type, None);

    let fetched = st.fetch_offsets("g", Some(&[("t".into(), vec![0, 1])]));
    assert_eq!(fetched[0].1[0].offset, 42);
    assert_eq!(fetched[0].1[0].leader_epoch, 3);
    assert_eq!(fetched[0].1[0].metadata, "m");
    assert_eq!(fetched[0].1[1].offset, -1);
    assert_eq!(st.fetch_offsets("nope", None), Vec::new());

    // Another shard replaying the same log sees the same groups and offsets.
    let (mut reloaded, _) = shard(config());
    for (offset, r) in log.records.lock().iter() {
        reloaded.replay(*offset, r);
    }
    let g = &reloaded.groups["g"];
    assert!(g.is(GroupState::Stable));
    assert_eq!(g.generation_id, generation);
    assert_eq!(g.num_members(), 2);
    assert_eq!(
        g.member(&ids[1]).unwrap().assignment,
        Bytes::from(format!("assignment-of-{}", ids[1]))
    );
    assert_eq!(reloaded.fetch_offsets("g", None)[0].1[0].offset, 42);
    assert_eq!(reloaded.fetch_offsets("simple", None)[0].1[0].offset, 7);
}

#[test]
fn delete_groups_and_offsets() {
    let (mut st, _) = shard(config());
    stable_group(&mut st, "busy", 1);
    let commit = |group: &str, topic: &str| CommitRequest {
        group_id: group.into(),
        member_id: String::new(),
        group_instance_id: None,
        generation_id: -1,
        retention_time_ms: -1,
        api_version: 8,
        topics: vec![(
            topic.into(),
            vec![CommitPartition {
                index: 0,
                offset: 1,
                leader_epoch: -1,
                metadata: None,
            }],
        )],
    };
    st.commit_offsets(commit("idle", "a")).unwrap();
    st.commit_offsets(commit("idle", "b")).unwrap();
    let w = st.delete_offsets("idle", &[("a".into(), vec![0])]).unwrap();
    assert_eq!(w.topics, vec![("a".to_string(), vec![(0, codes::NONE)])]);
    assert_eq!(st.fetch_offsets("idle", None).len(), 1);
    // A consumer group in use refuses to lose the offsets of topics it consumes.
    assert_eq!(
        st.delete_offsets("busy", &[("t".into(), vec![0])])
            .unwrap()
            .topics[0]
            .1,
        vec![(0, codes::GROUP_SUBSCRIBED_TO_TOPIC)]
    );
    assert_eq!(
        st.delete_offsets("missing", &[]),
        Err(codes::GROUP_ID_NOT_FOUND)
    );
    let (results, _) = st
        .delete_groups(&["idle".into(), "busy".into(), "missing".into()])
        .unwrap();
    assert_eq!(
        results,
        vec![
            ("idle".to_string(), codes::NONE),
            ("busy".to_string(), codes::NON_EMPTY_GROUP),
            ("missing".to_string(), codes::GROUP_ID_NOT_FOUND),
        ]
    );
    assert!(!st.groups.contains_key("idle"));
    assert!(st.fetch_offsets("idle", None).is_empty());
    let listed = st.list_groups(&[], &[]);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, "Stable");
    assert!(st.list_groups(&["empty".into()], &[]).is_empty());
    assert_eq!(
        st.list_groups(&["STABLE".into()], &["classic".into()])
            .len(),
        1
    );
    assert!(st.list_groups(&[], &["consumer".into()]).is_empty());
    assert_eq!(st.describe_group("missing", 5).state, "Dead");
    assert_eq!(
        st.describe_group("missing", 6).error,
        codes::GROUP_ID_NOT_FOUND
    );
}

#[test]
fn static_member_restart_keeps_its_assignment_without_a_rebalance() {
    let (mut st, _) = shard(config());
    let mut req = join_req("g", "", 5);
    req.group_instance_id = Some("instance-1".into());
    let mut first = join(&mut st, req.clone());
    st.fire_timers();
    let r = first.try_recv().unwrap();
    assert_eq!(
        r.error,
        codes::NONE,
        "static members join without MEMBER_ID_REQUIRED"
    );
    let old_id = r.member_id.clone();
    assert!(old_id.starts_with("instance-1-"));
    let mut s = sync(
        &mut st,
        "g",
        &old_id,
        r.generation_id,
        vec![(old_id.clone(), Bytes::from_static(b"mine"))],
    );
    assert_eq!(s.try_recv().unwrap().error, codes::NONE);
    let generation = st.groups["g"].generation_id;

    // The restarted instance joins again with no member id.
    let mut again = join(&mut st, req);
    let r = again
        .try_recv()
        .expect("answered once the new id is stored");
    assert_eq!(r.error, codes::NONE);
    assert_ne!(r.member_id, old_id);
    assert_eq!(r.generation_id, generation, "no rebalance");
    assert!(st.groups["g"].is(GroupState::Stable));
    let mut s = sync(&mut st, "g", &r.member_id, generation, Vec::new());
    assert_eq!(
        s.try_recv().unwrap().assignment,
        Bytes::from_static(b"mine")
    );
    // The old incarnation is fenced.
    let (tx, mut rx) = oneshot::channel();
    st.sync(
        SyncRequest {
            group_id: "g".into(),
            member_id: old_id,
            group_instance_id: Some("instance-1".into()),
            generation_id: generation,
            protocol_type: None,
            protocol_name: None,
            assignments: Vec::new(),
        },
        tx,
    );
    assert_eq!(rx.try_recv().unwrap().error, codes::FENCED_INSTANCE_ID);
}

#[test]
fn failed_writes_fail_the_sync_and_rebalance() {
    let (mut st, log): (ShardState, MemLog) = shard(config());
    let mut pending = [join_new(&mut st, "g"), join_new(&mut st, "g")];
    st.fire_timers();
    let results: Vec<JoinResult> = pending
        .iter_mut()
        .map(|(_, rx)| rx.try_recv().unwrap())
        .collect();
    let leader = results[0].leader.clone();
    let follower = results
        .iter()
        .find(|r| r.member_id != leader)
        .unwrap()
        .member_id
        .clone();
    let mut f = sync(&mut st, "g", &follower, 1, Vec::new());
    *log.fail_with.lock() = Some(codes::NOT_COORDINATOR);
    let mut l = sync(&mut st, "g", &leader, 1, Vec::new());
    assert_eq!(l.try_recv().unwrap().error, codes::NOT_COORDINATOR);
    assert_eq!(f.try_recv().unwrap().error, codes::NOT_COORDINATOR);
    assert!(st.groups["g"].is(GroupState::PreparingRebalance));
}

#[test]
fn expired_offsets_and_then_empty_groups_are_removed() {
    let (mut st, log) = shard(GroupCoordinatorConfig {
        offsets_retention: std::time::Duration::ZERO,
        ..config()
    });
    let simple = CommitRequest {
        group_id: "simple".into(),
        member_id: String::new(),
        group_instance_id: None,
        generation_id: -1,
        retention_time_ms: -1,
        api_version: 8,
        topics: vec![(
            "t".into(),
            vec![CommitPartition {
                index: 0,
                offset: 1,
                leader_epoch: -1,
                metadata: None,
            }],
        )],
    };
    st.commit_offsets(simple).unwrap();
    // A consumer group that is Stable keeps the offsets of the topics it subscribes to,
    // however old.
    let (ids, generation) = stable_group(&mut st, "busy", 1);
    // The test subscription ("sub") is not a consumer protocol subscription, so the group's
    // topics are unknown and, as in Kafka, none of its offsets expire.
    let busy = CommitRequest {
        group_id: "busy".into(),
        member_id: ids[0].clone(),
        group_instance_id: None,
        generation_id: generation,
        retention_time_ms: -1,
        api_version: 8,
        topics: vec![(
            "t".into(),
            vec![CommitPartition {
                index: 0,
                offset: 5,
                leader_epoch: -1,
                metadata: None,
            }],
        )],
    };
    st.commit_offsets(busy).unwrap();
    let before = log.records.lock().len();
    st.expire_offsets();
    let written: Vec<CoordinatorRecord> = log.records.lock()[before..]
        .iter()
        .map(|(_, r)| r.clone())
        .collect();
    assert_eq!(
        written,
        vec![
            CoordinatorRecord::OffsetCommit {
                group: "simple".into(),
                topic: "t".into(),
                partition: 0,
                value: None
            },
            CoordinatorRecord::GroupMetadata {
                group: "simple".into(),
                value: None
            },
        ]
    );
    assert!(!st.groups.contains_key("simple"));
    assert_eq!(st.fetch_offsets("busy", None)[0].1[0].offset, 5);
}
