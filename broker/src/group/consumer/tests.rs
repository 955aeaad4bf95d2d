//! The consumer group protocol driven directly over an in-memory log, with simulated clients
//! that behave like KIP-848 consumers: they own exactly what the last answer assigned them and
//! report it on every heartbeat.

use std::time::Duration;

use fjord_raft::MetadataImage;
use fjord_raft::image::{PartitionRegistration, TopicImage};
use uuid::Uuid;

use crate::group::GroupCoordinatorConfig;
use crate::group::codes;
use crate::group::commits::{CommitPartition, CommitRequest};
use crate::group::consumer::group::ConsumerGroupState;
use crate::group::consumer::heartbeat::{
    HeartbeatAnswer, HeartbeatError, HeartbeatRequest, validate,
};
use crate::group::consumer::member::MemberState;
use crate::group::consumer::{Assignment, intersects, partition_count};
use crate::group::records::CoordinatorRecord;
use crate::group::state::ShardState;
use crate::group::state::testing::{MemLog, shard};

fn config() -> GroupCoordinatorConfig {
    GroupCoordinatorConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupCoordinatorConfig::default()
    }
}

fn topic_id(name: &str) -> Uuid {
    let mut b = [0u8; 16];
    for (i, c) in name.bytes().enumerate() {
        b[i % 16] ^= c.wrapping_add(i as u8);
    }
    b[15] ^= 0x5a;
    Uuid::from_bytes(b)
}

/// A metadata image with `topics` (name, partitions) at raft offset `offset`.
fn image(offset: u64, topics: &[(&str, i32)]) -> MetadataImage {
    let mut img = MetadataImage {
        offset,
        ..MetadataImage::default()
    };
    for (name, n) in topics {
        let id = topic_id(name);
        let mut t = TopicImage {
            name: name.to_string(),
            id,
            partitions: Default::default(),
        };
        for p in 0..*n {
            t.partitions.insert(
                p,
                PartitionRegistration {
                    replicas: vec![1],
                    adding_replicas: Vec::new(),
                    removing_replicas: Vec::new(),
                    isr: vec![1],
                    leader: 1,
                    leader_epoch: 0,
                    partition_epoch: 0,
                },
            );
        }
        img.topics.insert(id, t);
        img.topic_names.insert(name.to_string(), id);
    }
    img
}

fn parts(topic: &str, ps: &[i32]) -> Assignment {
    let mut a = Assignment::new();
    if !ps.is_empty() {
        a.insert(topic_id(topic), ps.iter().copied().collect());
    }
    a
}

/// A simulated KIP-848 consumer.
struct Client {
    group: String,
    member_id: String,
    instance_id: Option<String>,
    epoch: i32,
    owned: Assignment,
    topics: Vec<String>,
    assignor: Option<String>,
}

impl Client {
    fn new(group: &str, member_id: &str, topics: &[&str]) -> Client {
        Client {
            group: group.into(),
            member_id: member_id.into(),
            instance_id: None,
            epoch: 0,
            owned: Assignment::new(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            assignor: None,
        }
    }

    fn request(&self) -> HeartbeatRequest {
        HeartbeatRequest {
            group_id: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: self.epoch,
            instance_id: self.instance_id.clone(),
            rack_id: None,
            rebalance_timeout_ms: 60_000,
            client_id: format!("client-{}", self.member_id),
            client_host: "/127.0.0.1".into(),
            subscribed_topic_names: Some(self.topics.clone()),
            subscribed_topic_regex: None,
            server_assignor: self.assignor.clone(),
            owned: Some(self.owned.clone()),
            api_version: 1,
        }
    }

    fn heartbeat(
        &mut self,
        st: &mut ShardState,
        img: &MetadataImage,
    ) -> Result<HeartbeatAnswer, HeartbeatError> {
        let req = self.request();
        validate(&req, &st.env.config.consumer_assignors)?;
        let a = st.consumer_group_heartbeat(&req, img)?;
        self.epoch = a.member_epoch;
        if let Some(asg) = &a.assignment {
            // A consumer revokes what it no longer has and starts on what it got.
            self.owned = asg.clone();
        }
        Ok(a)
    }
}

/// Heartbeats every client in turn until the group is Stable, checking after every heartbeat
/// that no partition is owned by two clients at once (revocation before reassignment).
fn settle(st: &mut ShardState, img: &MetadataImage, clients: &mut [Client]) {
    for _ in 0..20 {
        for i in 0..clients.len() {
            clients[i].heartbeat(st, img).expect("heartbeat");
            for j in 0..clients.len() {
                if i != j {
                    assert!(
                        !intersects(&clients[i].owned, &clients[j].owned),
                        "{} and {} own the same partition: {:?} {:?}",
                        clients[i].member_id,
                        clients[j].member_id,
                        clients[i].owned,
                        clients[j].owned
                    );
                }
            }
        }
        let g = &st.consumer_groups[&clients[0].group];
        if g.state() == ConsumerGroupState::Stable
            && clients
                .iter()
                .all(|c| Some(c.epoch) == g.member(&c.member_id).map(|m| m.member_epoch))
        {
            return;
        }
    }
    panic!("the group did not settle");
}

fn all_owned(clients: &[Client]) -> usize {
    clients.iter().map(|c| partition_count(&c.owned)).sum()
}

#[test]
fn three_members_share_six_partitions_and_revoke_before_reassignment() {
    let (mut st, _) = shard(config());
    let img = image(1, &[("orders", 6)]);
    let mut clients = vec![Client::new("g", "a", &["orders"])];
    let first = clients[0].heartbeat(&mut st, &img).unwrap();
    assert_eq!(first.member_epoch, 1);
    assert_eq!(first.assignment, Some(parts("orders", &[0, 1, 2, 3, 4, 5])));
    assert_eq!(first.heartbeat_interval_ms, 5000);

    // A second member: it waits for what the first still holds.
    clients.push(Client::new("g", "b", &["orders"]));
    let b = clients[1].heartbeat(&mut st, &img).unwrap();
    assert_eq!(b.member_epoch, 2);
    assert_eq!(b.assignment, Some(Assignment::new()));
    assert_eq!(
        st.consumer_groups["g"].member("b").unwrap().state,
        MemberState::UnreleasedPartitions
    );
    // The first member is told to give up half, in its own epoch.
    let a = clients[0].heartbeat(&mut st, &img).unwrap();
    assert_eq!(a.member_epoch, 1);
    assert_eq!(partition_count(a.assignment.as_ref().unwrap()), 3);
    assert_eq!(
        st.consumer_groups["g"].member("a").unwrap().state,
        MemberState::UnrevokedPartitions
    );
    assert_eq!(
        st.consumer_groups["g"].state(),
        ConsumerGroupState::Reconciling
    );
    settle(&mut st, &img, &mut clients);
    assert_eq!(partition_count(&clients[0].owned), 3);
    assert_eq!(partition_count(&clients[1].owned), 3);

    clients.push(Client::new("g", "c", &["orders"]));
    settle(&mut st, &img, &mut clients);
    for c in &clients {
        assert_eq!(partition_count(&c.owned), 2, "{}", c.member_id);
    }
    assert_eq!(all_owned(&clients), 6);
    let g = &st.consumer_groups["g"];
    assert_eq!(g.group_epoch, 3);
    assert_eq!(g.assignment_epoch, 3);

    // A member leaves: the others take over its partitions.
    let mut c = clients.pop().unwrap();
    c.epoch = -1;
    let left = c.heartbeat(&mut st, &img).unwrap();
    assert_eq!(left.member_epoch, -1);
    assert_eq!(st.consumer_groups["g"].group_epoch, 4);
    assert_eq!(
        st.consumer_groups["g"].state(),
        ConsumerGroupState::Assigning
    );
    settle(&mut st, &img, &mut clients);
    assert_eq!(all_owned(&clients), 6);
    assert_eq!(partition_count(&clients[0].owned), 3);
}

#[test]
fn epochs_are_checked_as_kafka_does() {
    let (mut st, _) = shard(config());
    let img = image(1, &[("t", 4)]);
    let mut a = Client::new("g", "a", &["t"]);
    a.heartbeat(&mut st, &img).unwrap();
    assert_eq!(a.epoch, 1);

    let mut stranger = Client::new("g", "zz", &["t"]);
    stranger.epoch = 1;
    assert_eq!(
        stranger.heartbeat(&mut st, &img).unwrap_err().code,
        codes::UNKNOWN_MEMBER_ID
    );
    let mut ahead = Client::new("g", "a", &["t"]);
    ahead.epoch = 5;
    let e = ahead.heartbeat(&mut st, &img).unwrap_err();
    assert_eq!(e.code, codes::FENCED_MEMBER_EPOCH);
    assert!(e.message.unwrap().contains("greater member epoch"));
    let mut nowhere = Client::new("missing", "a", &["t"]);
    nowhere.epoch = 3;
    assert_eq!(
        nowhere.heartbeat(&mut st, &img).unwrap_err().code,
        codes::GROUP_ID_NOT_FOUND
    );

    // A second member moves the group to epoch 2; "a" is at epoch 1 revoking. Its previous
    // epoch is accepted only while it owns no more than it is assigned.
    let mut b = Client::new("g", "b", &["t"]);
    b.heartbeat(&mut st, &img).unwrap();
    a.heartbeat(&mut st, &img).unwrap(); // told to revoke, still epoch 1
    a.heartbeat(&mut st, &img).unwrap(); // revoked: epoch 2
    assert_eq!(a.epoch, 2);
    let mut stale = Client::new("g", "a", &["t"]);
    stale.epoch = 1;
    stale.owned = a.owned.clone();
    stale
        .heartbeat(&mut st, &img)
        .expect("previous epoch with a subset is fine");
    stale.epoch = 1;
    stale.owned = parts("t", &[0, 1, 2, 3]);
    let e = stale.heartbeat(&mut st, &img).unwrap_err();
    assert_eq!(e.code, codes::FENCED_MEMBER_EPOCH);
    assert!(e.message.unwrap().contains("smaller member epoch"));
    // Rejoining with epoch 0 is always allowed (KAFKA-19233): the member gets its partitions.
    let mut rejoin = Client::new("g", "a", &["t"]);
    let r = rejoin.heartbeat(&mut st, &img).unwrap();
    assert_eq!(r.member_epoch, 2);
    assert_eq!(r.assignment, Some(a.owned.clone()));
}

#[test]
fn requests_are_validated_before_anything_else() {
    let assignors = config().consumer_assignors;
    let mut c = Client::new("g", "a", &["t"]);
    c.assignor = Some("sticky".into());
    let e = validate(&c.request(), &assignors).unwrap_err();
    assert_eq!(e.code, codes::UNSUPPORTED_ASSIGNOR);
    assert_eq!(
        e.message.as_deref(),
        Some("ServerAssignor sticky is not supported. Supported assignors: uniform, range.")
    );
    let mut r = Client::new("g", "a", &["t"]).request();
    r.rebalance_timeout_ms = -1;
    assert_eq!(
        validate(&r, &assignors).unwrap_err().code,
        codes::INVALID_REQUEST
    );
    let mut r = Client::new("g", "a", &["t"]).request();
    r.owned = Some(parts("t", &[0]));
    assert_eq!(
        validate(&r, &assignors).unwrap_err().message.as_deref(),
        Some("TopicPartitions must be empty when (re-)joining.")
    );
    let mut r = Client::new("g", "", &["t"]).request();
    assert_eq!(
        validate(&r, &assignors).unwrap_err().message.as_deref(),
        Some("MemberId can't be empty.")
    );
    // Version 0 lets the coordinator pick the member id.
    r.api_version = 0;
    assert!(validate(&r, &assignors).is_ok());
    let (mut st, _) = shard(config());
    let a = st
        .consumer_group_heartbeat(&r, &image(1, &[("t", 1)]))
        .unwrap();
    assert_eq!(
        a.member_id.len(),
        22,
        "Kafka's base64 uuid: {}",
        a.member_id
    );
    let mut r = Client::new("g", "a", &["t"]).request();
    r.subscribed_topic_regex = Some("(unclosed".into());
    assert_eq!(
        validate(&r, &assignors).unwrap_err().code,
        codes::INVALID_REGULAR_EXPRESSION
    );
    let mut r = Client::new("g", "a", &["t"]).request();
    r.member_epoch = -2;
    assert_eq!(
        validate(&r, &assignors).unwrap_err().message.as_deref(),
        Some("InstanceId can't be null.")
    );
    r.member_epoch = -3;
    assert_eq!(
        validate(&r, &assignors).unwrap_err().message.as_deref(),
        Some("MemberEpoch is invalid.")
    );
}

#[test]
fn sessions_and_revocations_expire() {
    let cfg = GroupCoordinatorConfig {
        consumer_session_timeout_ms: 50,
        ..config()
    };
    let (mut st, _) = shard(cfg);
    let img = image(1, &[("t", 2)]);
    let mut clients = vec![Client::new("g", "a", &["t"]), Client::new("g", "b", &["t"])];
    settle(&mut st, &img, &mut clients);
    std::thread::sleep(Duration::from_millis(30));
    clients[0].heartbeat(&mut st, &img).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    st.fire_timers();
    // "b" did not heartbeat for 60 ms: fenced. "a" did.
    let g = &st.consumer_groups["g"];
    assert!(g.member("b").is_none());
    assert!(g.member("a").is_some());
    let e = clients[1].heartbeat(&mut st, &img).unwrap_err();
    assert_eq!(e.code, codes::UNKNOWN_MEMBER_ID);
    clients.truncate(1);
    settle(&mut st, &img, &mut clients);
    assert_eq!(partition_count(&clients[0].owned), 2);

    // A member that never revokes is removed after its rebalance timeout.
    let cfg = GroupCoordinatorConfig {
        consumer_session_timeout_ms: 60_000,
        ..config()
    };
    let (mut st, _) = shard(cfg);
    let mut a = Client::new("g", "a", &["t"]);
    a.heartbeat(&mut st, &img).unwrap();
    let mut b = Client::new("g", "b", &["t"]);
    b.heartbeat(&mut st, &img).unwrap();
    let mut req = a.request();
    req.rebalance_timeout_ms = 40;
    req.owned = None; // never says it let go
    st.consumer_group_heartbeat(&req, &img).unwrap();
    assert_eq!(
        st.consumer_groups["g"].member("a").unwrap().state,
        MemberState::UnrevokedPartitions
    );
    std::thread::sleep(Duration::from_millis(60));
    st.fire_timers();
    assert!(st.consumer_groups["g"].member("a").is_none());
    b.heartbeat(&mut st, &img).unwrap();
    assert_eq!(partition_count(&b.owned), 2, "the partitions went to b");
}

#[test]
fn the_log_rebuilds_the_groups_exactly() {
    let (mut st, log) = shard(config());
    let img = image(1, &[("orders", 6), ("audit", 2)]);
    let mut clients = [
        Client::new("g", "a", &["orders", "audit"]),
        Client::new("g", "b", &["orders"]),
        Client::new("h", "x", &["audit"]),
    ];
    settle(&mut st, &img, &mut clients[..2]);
    settle(&mut st, &img, &mut clients[2..]);
    // Leave "b" mid-rebalance to cover pending revocations in the log too.
    let mut c = Client::new("g", "c", &["orders"]);
    c.heartbeat(&mut st, &img).unwrap();
    clients[0].heartbeat(&mut st, &img).unwrap();

    let reloaded = reload(&log);
    for id in ["g", "h"] {
        let (a, b) = (&st.consumer_groups[id], &reloaded.consumer_groups[id]);
        assert_eq!(a.group_epoch, b.group_epoch);
        assert_eq!(a.assignment_epoch, b.assignment_epoch);
        assert_eq!(a.subscription_metadata, b.subscription_metadata);
        assert_eq!(a.target(), b.target());
        assert_eq!(
            a.members().collect::<Vec<_>>(),
            b.members().collect::<Vec<_>>()
        );
        assert_eq!(a.state(), b.state());
        assert_eq!(
            st.describe_consumer_group(id, &img, "uniform"),
            reloaded.describe_consumer_group(id, &img, "uniform")
        );
    }
}

/// A shard rebuilt from the records of `log`, through their encoded form.
fn reload(log: &MemLog) -> ShardState {
    let (mut reloaded, _) = shard(config());
    for (offset, r) in log.records.lock().iter() {
        let (k, v) = r.encode();
        let decoded = CoordinatorRecord::decode(&k, v.as_deref())
            .unwrap()
            .expect("a known record");
        assert_eq!(&decoded, r);
        reloaded.replay(*offset, &decoded);
    }
    reloaded
}

#[test]
fn metadata_changes_rebalance_the_group() {
    let (mut st, _) = shard(config());
    let img = image(1, &[("t", 2)]);
    let mut clients = vec![
        Client::new("g", "a", &["t", "later"]),
        Client::new("g", "b", &["t", "later"]),
    ];
    settle(&mut st, &img, &mut clients);
    let epoch = st.consumer_groups["g"].group_epoch;
    // Partitions are added and a subscribed topic is created.
    let img = image(2, &[("t", 4), ("later", 2)]);
    settle(&mut st, &img, &mut clients);
    assert_eq!(all_owned(&clients), 6);
    assert_eq!(st.consumer_groups["g"].group_epoch, epoch + 1);
    // The same image again changes nothing.
    settle(&mut st, &img, &mut clients);
    assert_eq!(st.consumer_groups["g"].group_epoch, epoch + 1);
}

#[test]
fn static_members_leave_for_a_while_and_come_back_to_their_partitions() {
    let (mut st, _) = shard(config());
    let img = image(1, &[("t", 4)]);
    let mut a = Client::new("g", "a1", &["t"]);
    a.instance_id = Some("inst-a".into());
    let mut b = Client::new("g", "b", &["t"]);
    let mut clients = vec![a, b];
    settle(&mut st, &img, &mut clients);
    b = clients.pop().unwrap();
    a = clients.pop().unwrap();
    let before = a.owned.clone();
    let epoch = st.consumer_groups["g"].group_epoch;

    // Another process with the same instance id cannot join while a1 is in.
    let mut twin = Client::new("g", "a2", &["t"]);
    twin.instance_id = Some("inst-a".into());
    assert_eq!(
        twin.heartbeat(&mut st, &img).unwrap_err().code,
        codes::UNRELEASED_INSTANCE_ID
    );
    // a1 leaves for a while (epoch -2); nothing moves.
    a.epoch = -2;
    assert_eq!(a.heartbeat(&mut st, &img).unwrap().member_epoch, -2);
    assert_eq!(st.consumer_groups["g"].group_epoch, epoch);
    b.heartbeat(&mut st, &img).unwrap();
    assert!(!intersects(&b.owned, &before));
    // It comes back under a new member id and gets its partitions at once.
    let r = twin.heartbeat(&mut st, &img).unwrap();
    assert_eq!(r.assignment, Some(before));
    assert_eq!(st.consumer_groups["g"].group_epoch, epoch, "no rebalance");
    assert!(st.consumer_groups["g"].member("a1").is_none());
    // The old id is fenced.
    let mut old = Client::new("g", "a1", &["t"]);
    old.instance_id = Some("inst-a".into());
    old.epoch = r.member_epoch;
    assert_eq!(
        old.heartbeat(&mut st, &img).unwrap_err().code,
        codes::FENCED_INSTANCE_ID
    );
}

#[test]
fn the_range_assignor_can_be_chosen() {
    let (mut st, _) = shard(config());
    let img = image(1, &[("x", 3), ("y", 3)]);
    let mut clients = vec![
        Client::new("g", "m1", &["x", "y"]),
        Client::new("g", "m0", &["x", "y"]),
    ];
    for c in &mut clients {
        c.assignor = Some("range".into());
    }
    settle(&mut st, &img, &mut clients);
    let mut m0 = parts("x", &[0, 1]);
    m0.extend(parts("y", &[0, 1]));
    assert_eq!(clients[1].owned, m0);
    let d = st.describe_consumer_group("g", &img, "uniform");
    assert_eq!(d.assignor_name, "range");
    assert_eq!(d.state, "Stable");
    assert_eq!(d.members.len(), 2);
}

#[test]
fn regular_expressions_subscribe_to_matching_topics() {
    let (mut st, _) = shard(config());
    let img = image(
        1,
        &[
            ("orders-eu", 2),
            ("orders-us", 2),
            ("audit", 2),
            ("__consumer_offsets", 3),
        ],
    );
    let mut c = Client::new("g", "a", &[]);
    let mut req = c.request();
    req.subscribed_topic_names = None;
    // A topic must match whole; internal topics never match.
    req.subscribed_topic_regex = Some("orders-.*|__consumer_offsets|audi".into());
    let a = st.consumer_group_heartbeat(&req, &img).unwrap();
    c.epoch = a.member_epoch;
    let got = a.assignment.unwrap();
    let mut want = parts("orders-eu", &[0, 1]);
    want.extend(parts("orders-us", &[0, 1]));
    assert_eq!(got, want);
}

#[test]
fn offsets_of_consumer_groups_check_member_epochs() {
    let (mut st, _) = shard(config());
    let img = image(1, &[("t", 1)]);
    let mut a = Client::new("g", "a", &["t"]);
    a.heartbeat(&mut st, &img).unwrap();
    let commit = |member: &str, epoch: i32, version: i16| CommitRequest {
        group_id: "g".into(),
        member_id: member.into(),
        group_instance_id: None,
        generation_id: epoch,
        retention_time_ms: -1,
        api_version: version,
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
    assert!(st.commit_offsets(commit("a", a.epoch, 9)).is_ok());
    assert_eq!(
        st.commit_offsets(commit("a", a.epoch + 1, 9)),
        Err(codes::STALE_MEMBER_EPOCH)
    );
    assert_eq!(
        st.commit_offsets(commit("zz", a.epoch, 9)),
        Err(codes::UNKNOWN_MEMBER_ID)
    );
    assert_eq!(
        st.commit_offsets(commit("a", a.epoch, 8)),
        Err(codes::UNSUPPORTED_VERSION)
    );
    // The admin client cannot commit while members are in.
    assert_eq!(
        st.commit_offsets(commit("", -1, 9)),
        Err(codes::UNKNOWN_MEMBER_ID)
    );
    assert_eq!(st.validate_offset_fetch("g", Some("a"), a.epoch), Ok(()));
    assert_eq!(
        st.validate_offset_fetch("g", Some("a"), a.epoch - 1),
        Err(codes::STALE_MEMBER_EPOCH)
    );
    assert_eq!(st.validate_offset_fetch("g", None, -1), Ok(()));
    assert_eq!(st.fetch_offsets("g", None)[0].1[0].offset, 5);
}

#[test]
fn consumer_groups_are_listed_described_and_deleted() {
    let (mut st, _) = shard(config());
    let img = image(1, &[("t", 2)]);
    let mut a = Client::new("cg", "a", &["t"]);
    a.heartbeat(&mut st, &img).unwrap();
    let listed = st.list_groups(&[], &[]);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].group_type, "consumer");
    assert_eq!(listed[0].protocol_type, "consumer");
    assert_eq!(listed[0].state, "Stable");
    assert!(st.list_groups(&[], &["classic".into()]).is_empty());
    assert_eq!(
        st.list_groups(&["STABLE".into()], &["Consumer".into()])
            .len(),
        1
    );
    // DescribeGroups is for classic groups.
    let d = st.describe_group("cg", 6);
    assert_eq!(d.error, codes::GROUP_ID_NOT_FOUND);
    assert_eq!(
        d.error_message.as_deref(),
        Some("Group cg is not a classic group.")
    );
    assert_eq!(st.describe_group("cg", 5).state, "Dead");
    // ConsumerGroupDescribe of a missing group.
    let d = st.describe_consumer_group("nope", &img, "uniform");
    assert_eq!(d.error, codes::GROUP_ID_NOT_FOUND);

    // A classic member cannot join it while it has members.
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    st.join(
        crate::group::rebalance::JoinRequest {
            group_id: "cg".into(),
            member_id: String::new(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: Vec::new(),
            api_version: 5,
            reason: None,
        },
        tx,
    );
    assert_eq!(
        rx.try_recv().unwrap().error,
        codes::INCONSISTENT_GROUP_PROTOCOL
    );

    assert_eq!(
        st.delete_groups(&["cg".into()]).unwrap().0,
        vec![("cg".to_string(), codes::NON_EMPTY_GROUP)]
    );
    a.epoch = -1;
    a.heartbeat(&mut st, &img).unwrap();
    assert_eq!(st.list_groups(&[], &[])[0].state, "Empty");
    assert_eq!(
        st.delete_groups(&["cg".into()]).unwrap().0,
        vec![("cg".to_string(), codes::NONE)]
    );
    assert!(st.consumer_groups.is_empty());
    assert!(st.list_groups(&[], &[]).is_empty());
}

#[test]
fn an_empty_classic_group_gives_way_and_keeps_its_offsets() {
    let (mut st, log) = shard(config());
    let img = image(1, &[("t", 1)]);
    // Offsets committed without membership make a simple (classic) group.
    st.commit_offsets(CommitRequest {
        group_id: "g".into(),
        member_id: String::new(),
        group_instance_id: None,
        generation_id: -1,
        retention_time_ms: -1,
        api_version: 9,
        topics: vec![(
            "t".into(),
            vec![CommitPartition {
                index: 0,
                offset: 3,
                leader_epoch: -1,
                metadata: None,
            }],
        )],
    })
    .unwrap();
    assert!(st.groups.contains_key("g"));
    let mut a = Client::new("g", "a", &["t"]);
    a.heartbeat(&mut st, &img).unwrap();
    assert!(!st.groups.contains_key("g"));
    assert!(st.consumer_groups.contains_key("g"));
    assert_eq!(st.fetch_offsets("g", None)[0].1[0].offset, 3);
    let reloaded = reload(&log);
    assert!(!reloaded.groups.contains_key("g"));
    assert_eq!(reloaded.fetch_offsets("g", None)[0].1[0].offset, 3);
}
