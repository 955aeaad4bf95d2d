//! Group coordinator benchmark (issue #5): the real `fjord` broker, one process on loopback,
//! driven over the raw Kafka protocol (one TCP connection and thread per group member, requests
//! encoded with kafka-protocol, as the wire tests do).
//!
//! - Rebalance time of a 10-member classic group: nine members are stable; the time from the
//!   tenth member's first JoinGroup to the moment all ten have their SyncGroup answer for the
//!   new generation; then the time from one member's LeaveGroup to the moment the nine others
//!   have synced again. Members heartbeat every `FJORD_BENCH_HEARTBEAT_MS` (default 100 ms), and
//!   the members already in the group only learn of a rebalance from a heartbeat answer, so the
//!   figure includes up to one heartbeat interval of discovery (each round starts at a random
//!   point of the heartbeat cycle); the "from the last JoinGroup" line leaves the discovery
//!   out (from the last member's JoinGroup to the last SyncGroup answer).
//! - The same for a KIP-848 consumer group of ten members (ConsumerGroupHeartbeat every
//!   heartbeat interval): time from the tenth member's first heartbeat to the group having
//!   converged (every member at the target epoch, every partition owned exactly once), and from
//!   one member's leave to convergence of the other nine.
//! - OffsetCommit round trips per second on one connection: one request at a time, and
//!   pipelined (`FJORD_BENCH_WINDOW` requests in flight, default 32), each committing one
//!   partition of a simple group.
//!
//! Run: `cargo bench -p fjord-benches --bench groups`. Environment: `FJORD_BENCH_SECS` (seconds
//! per commit phase, default 5), `FJORD_BENCH_ROUNDS` (rebalance rounds, default 10),
//! `FJORD_BENCH_HEARTBEAT_MS` (default 100), `FJORD_BENCH_WINDOW` (default 32).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use fjord_tests::broker::BrokerProcess;
use fjord_tests::wire::{Conn, topic_name};
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const BIN: &str = env!("CARGO_BIN_EXE_fjord-bench-broker");
const TOPIC: &str = "bench-groups";
const PARTITIONS: i32 = 10;
const MEMBERS: usize = 10;
const MEMBER_ID_REQUIRED: i16 = 79;
const REBALANCE_IN_PROGRESS: i16 = 27;

/// A pause of three heartbeat intervals plus a random part of one, so that measurements do
/// not start at the same point of the members' heartbeat cycle every round (they tend to
/// heartbeat in step after a rebalance).
fn pause(heartbeat: Duration) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut x = u64::from(nanos) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let jitter = heartbeat.mul_f64((x % 1000) as f64 / 1000.0);
    thread::sleep(heartbeat * 3 + jitter);
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

/// ConsumerProtocolSubscription v0 for one topic.
fn subscription() -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(1);
    b.put_i16(TOPIC.len() as i16);
    b.put_slice(TOPIC.as_bytes());
    b.put_i32(-1);
    b.freeze()
}

/// ConsumerProtocolAssignment v0 of `parts` of the topic.
fn assignment(parts: &[i32]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(1);
    b.put_i16(TOPIC.len() as i16);
    b.put_slice(TOPIC.as_bytes());
    b.put_i32(parts.len() as i32);
    for p in parts {
        b.put_i32(*p);
    }
    b.put_i32(-1);
    b.freeze()
}

// ---------------------------------------------------------------- classic members

enum Event {
    /// A member has its SyncGroup answer for `generation`.
    Synced {
        member: usize,
        generation: i32,
        at: Instant,
    },
    /// A member sent its JoinGroup for a rebalance.
    Joining { member: usize, at: Instant },
}

struct ClassicMember {
    stop: Arc<AtomicBool>,
    leave: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl ClassicMember {
    fn spawn(
        idx: usize,
        bootstrap: &str,
        group: &str,
        heartbeat: Duration,
        tx: mpsc::Sender<Event>,
    ) -> ClassicMember {
        let stop = Arc::new(AtomicBool::new(false));
        let leave = Arc::new(AtomicBool::new(false));
        let (stop2, leave2) = (stop.clone(), leave.clone());
        let (bootstrap, group) = (bootstrap.to_string(), group.to_string());
        let handle = thread::spawn(move || {
            classic_member(idx, &bootstrap, &group, heartbeat, &stop2, &leave2, &tx)
        });
        ClassicMember {
            stop,
            leave,
            handle: Some(handle),
        }
    }

    /// Sends LeaveGroup and ends the member.
    fn leave(mut self) {
        self.leave.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for ClassicMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn join_request(group: &str, member: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(20_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(subscription()),
        ])
}

/// Joins (or rejoins) and syncs; returns the generation.
fn join_and_sync(conn: &mut Conn, group: &str, member_id: &mut String) -> i32 {
    loop {
        let r = conn.call(5, &join_request(group, member_id));
        if r.error_code == MEMBER_ID_REQUIRED {
            *member_id = r.member_id.to_string();
            continue;
        }
        assert_eq!(r.error_code, 0, "JoinGroup: {r:?}");
        let generation = r.generation_id;
        // The leader assigns ranges of the topic's partitions, as the range assignor does.
        let assignments: Vec<SyncGroupRequestAssignment> = if r.leader == r.member_id {
            let mut ids: Vec<String> = r.members.iter().map(|m| m.member_id.to_string()).collect();
            ids.sort();
            let n = ids.len() as i32;
            let (quota, extra) = (PARTITIONS / n, PARTITIONS % n);
            let mut start = 0;
            ids.iter()
                .enumerate()
                .map(|(i, id)| {
                    let size = quota + i32::from((i as i32) < extra);
                    let parts: Vec<i32> = (start..start + size).collect();
                    start += size;
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(id))
                        .with_assignment(assignment(&parts))
                })
                .collect()
        } else {
            Vec::new()
        };
        let sync = conn.call(
            3,
            &SyncGroupRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_member_id(s(member_id))
                .with_generation_id(generation)
                .with_assignments(assignments),
        );
        if sync.error_code == REBALANCE_IN_PROGRESS {
            continue;
        }
        assert_eq!(sync.error_code, 0, "SyncGroup: {sync:?}");
        return generation;
    }
}

fn classic_member(
    idx: usize,
    bootstrap: &str,
    group: &str,
    heartbeat: Duration,
    stop: &AtomicBool,
    leave: &AtomicBool,
    tx: &mpsc::Sender<Event>,
) {
    let mut conn = Conn::connect(bootstrap);
    let mut member_id = String::new();
    let _ = tx.send(Event::Joining {
        member: idx,
        at: Instant::now(),
    });
    let mut generation = join_and_sync(&mut conn, group, &mut member_id);
    let _ = tx.send(Event::Synced {
        member: idx,
        generation,
        at: Instant::now(),
    });
    loop {
        let deadline = Instant::now() + heartbeat;
        while Instant::now() < deadline {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            if leave.load(Ordering::SeqCst) {
                let r = conn.call(
                    3,
                    &LeaveGroupRequest::default()
                        .with_group_id(GroupId(s(group)))
                        .with_members(vec![
                            MemberIdentity::default().with_member_id(s(&member_id)),
                        ]),
                );
                assert_eq!(r.error_code, 0, "LeaveGroup: {r:?}");
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
        let r = conn.call(
            3,
            &HeartbeatRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_member_id(s(&member_id))
                .with_generation_id(generation),
        );
        match r.error_code {
            0 => {}
            REBALANCE_IN_PROGRESS => {
                let _ = tx.send(Event::Joining {
                    member: idx,
                    at: Instant::now(),
                });
                generation = join_and_sync(&mut conn, group, &mut member_id);
                let _ = tx.send(Event::Synced {
                    member: idx,
                    generation,
                    at: Instant::now(),
                });
            }
            other => panic!("member {idx}: Heartbeat error {other}"),
        }
    }
}

/// Waits until every member in `members` has synced a generation above `after`; returns that
/// generation, the time the last of them synced, and the time the last of them sent its
/// JoinGroup for it.
fn wait_synced(
    rx: &mpsc::Receiver<Event>,
    members: &BTreeSet<usize>,
    after: i32,
) -> (i32, Instant, Instant) {
    let mut synced: BTreeMap<usize, (i32, Instant)> = BTreeMap::new();
    let mut joining: BTreeMap<usize, Instant> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let generations: BTreeSet<i32> = members
            .iter()
            .filter_map(|m| synced.get(m).map(|(g, _)| *g))
            .collect();
        if synced.len() >= members.len()
            && members.iter().all(|m| synced.contains_key(m))
            && generations.len() == 1
        {
            let generation = *generations.iter().next().unwrap_or(&0);
            let last_sync = members
                .iter()
                .filter_map(|m| synced.get(m).map(|(_, t)| *t))
                .max();
            let last_join = members.iter().filter_map(|m| joining.get(m).copied()).max();
            if let (Some(s), Some(j)) = (last_sync, last_join) {
                return (generation, s, j);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the group did not settle");
        match rx.recv_timeout(left) {
            Ok(Event::Synced {
                member,
                generation,
                at,
            }) if generation > after => {
                synced.insert(member, (generation, at));
            }
            Ok(Event::Joining { member, at }) => {
                joining.insert(member, at);
            }
            Ok(_) => {}
            Err(_) => panic!("the group did not settle"),
        }
    }
}

struct Rounds {
    join: Vec<Duration>,
    join_coordinator: Vec<Duration>,
    leave: Vec<Duration>,
    leave_coordinator: Vec<Duration>,
}

fn classic_rebalances(bootstrap: &str, heartbeat: Duration, rounds: usize) -> Rounds {
    let (tx, rx) = mpsc::channel();
    let group = "bench-classic";
    let mut members: BTreeMap<usize, ClassicMember> = BTreeMap::new();
    for i in 0..MEMBERS - 1 {
        members.insert(
            i,
            ClassicMember::spawn(i, bootstrap, group, heartbeat, tx.clone()),
        );
    }
    let ids: BTreeSet<usize> = members.keys().copied().collect();
    let (mut generation, _, _) = wait_synced(&rx, &ids, 0);
    let mut out = Rounds {
        join: Vec::new(),
        join_coordinator: Vec::new(),
        leave: Vec::new(),
        leave_coordinator: Vec::new(),
    };
    for next in MEMBERS - 1..MEMBERS - 1 + rounds {
        // Let heartbeats fall at their usual phase before measuring.
        pause(heartbeat);
        let started = Instant::now();
        members.insert(
            next,
            ClassicMember::spawn(next, bootstrap, group, heartbeat, tx.clone()),
        );
        let ids: BTreeSet<usize> = members.keys().copied().collect();
        let (g, synced, last_join) = wait_synced(&rx, &ids, generation);
        generation = g;
        out.join.push(synced - started);
        out.join_coordinator
            .push(synced.saturating_duration_since(last_join));

        pause(heartbeat);
        let leaver = *members.keys().next().unwrap_or(&0);
        let started = Instant::now();
        if let Some(m) = members.remove(&leaver) {
            m.leave();
        }
        let ids: BTreeSet<usize> = members.keys().copied().collect();
        let (g, synced, last_join) = wait_synced(&rx, &ids, generation);
        generation = g;
        out.leave.push(synced - started);
        out.leave_coordinator
            .push(synced.saturating_duration_since(last_join));
    }
    drop(members);
    out
}

// ---------------------------------------------------------------- KIP-848 members

/// A KIP-848 member: heartbeats every `heartbeat`, owning what the last answer assigned.
struct ConsumerMember {
    stop: Arc<AtomicBool>,
    leave: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

/// What a KIP-848 member reports after each heartbeat: its epoch and owned partitions.
struct Beat {
    member: usize,
    epoch: i32,
    owned: BTreeSet<i32>,
    gone: bool,
}

impl ConsumerMember {
    fn spawn(
        idx: usize,
        bootstrap: &str,
        group: &str,
        heartbeat: Duration,
        tid: uuid::Uuid,
        tx: mpsc::Sender<Beat>,
    ) -> ConsumerMember {
        let stop = Arc::new(AtomicBool::new(false));
        let leave = Arc::new(AtomicBool::new(false));
        let (stop2, leave2) = (stop.clone(), leave.clone());
        let (bootstrap, group) = (bootstrap.to_string(), group.to_string());
        let handle = thread::spawn(move || {
            let mut conn = Conn::connect(&bootstrap);
            let member_id = format!("bench-member-{idx}");
            let mut epoch = 0;
            let mut owned: BTreeSet<i32> = BTreeSet::new();
            loop {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let leaving = leave2.load(Ordering::SeqCst);
                let mut req = ConsumerGroupHeartbeatRequest::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_member_id(s(&member_id))
                    .with_member_epoch(if leaving { -1 } else { epoch })
                    .with_rebalance_timeout_ms(if epoch == 0 { 30_000 } else { -1 })
                    .with_topic_partitions(Some(vec![
                        TopicPartitions::default()
                            .with_topic_id(tid)
                            .with_partitions(owned.iter().copied().collect()),
                    ]));
                if epoch == 0 {
                    req = req
                        .with_subscribed_topic_names(Some(vec![topic_name(TOPIC)]))
                        .with_topic_partitions(Some(Vec::new()));
                }
                let r = conn.call(1, &req);
                assert_eq!(r.error_code, 0, "member {idx}: {r:?}");
                if leaving {
                    let _ = tx.send(Beat {
                        member: idx,
                        epoch: -1,
                        owned: BTreeSet::new(),
                        gone: true,
                    });
                    return;
                }
                epoch = r.member_epoch;
                let mut changed = false;
                if let Some(a) = &r.assignment {
                    owned = a
                        .topic_partitions
                        .iter()
                        .flat_map(|t| t.partitions.iter().copied())
                        .collect();
                    changed = true;
                }
                let _ = tx.send(Beat {
                    member: idx,
                    epoch,
                    owned: owned.clone(),
                    gone: false,
                });
                // Like a real client: acknowledge a new assignment at once, else wait.
                if !changed {
                    let deadline = Instant::now() + heartbeat;
                    while Instant::now() < deadline
                        && !stop2.load(Ordering::SeqCst)
                        && !leave2.load(Ordering::SeqCst)
                    {
                        thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        });
        ConsumerMember {
            stop,
            leave,
            handle: Some(handle),
        }
    }

    fn leave(mut self) {
        self.leave.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for ConsumerMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Waits until the live members agree on one epoch and own every partition exactly once.
fn wait_converged(
    rx: &mpsc::Receiver<Beat>,
    state: &mut BTreeMap<usize, (i32, BTreeSet<i32>)>,
    live: &BTreeSet<usize>,
) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let epochs: BTreeSet<i32> = live
            .iter()
            .filter_map(|m| state.get(m).map(|(e, _)| *e))
            .collect();
        let owned: Vec<i32> = live
            .iter()
            .filter_map(|m| state.get(m))
            .flat_map(|(_, o)| o.iter().copied())
            .collect();
        let distinct: BTreeSet<i32> = owned.iter().copied().collect();
        if live.iter().all(|m| state.contains_key(m))
            && epochs.len() == 1
            && owned.len() == PARTITIONS as usize
            && distinct.len() == owned.len()
        {
            return Instant::now();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the consumer group did not converge: {state:?}"
        );
        match rx.recv_timeout(left) {
            Ok(b) if b.gone => {
                state.remove(&b.member);
            }
            Ok(b) => {
                state.insert(b.member, (b.epoch, b.owned));
            }
            Err(_) => panic!("the consumer group did not converge"),
        }
    }
}

fn consumer_rebalances(
    bootstrap: &str,
    heartbeat: Duration,
    rounds: usize,
    tid: uuid::Uuid,
) -> (Vec<Duration>, Vec<Duration>) {
    let (tx, rx) = mpsc::channel();
    let group = "bench-consumer";
    let mut members: BTreeMap<usize, ConsumerMember> = BTreeMap::new();
    let mut state = BTreeMap::new();
    for i in 0..MEMBERS - 1 {
        members.insert(
            i,
            ConsumerMember::spawn(i, bootstrap, group, heartbeat, tid, tx.clone()),
        );
    }
    let live: BTreeSet<usize> = members.keys().copied().collect();
    wait_converged(&rx, &mut state, &live);
    let (mut joins, mut leaves) = (Vec::new(), Vec::new());
    for next in MEMBERS - 1..MEMBERS - 1 + rounds {
        pause(heartbeat);
        let started = Instant::now();
        members.insert(
            next,
            ConsumerMember::spawn(next, bootstrap, group, heartbeat, tid, tx.clone()),
        );
        let live: BTreeSet<usize> = members.keys().copied().collect();
        joins.push(wait_converged(&rx, &mut state, &live) - started);

        pause(heartbeat);
        let leaver = *members.keys().next().unwrap_or(&0);
        let started = Instant::now();
        if let Some(m) = members.remove(&leaver) {
            m.leave();
        }
        state.remove(&leaver);
        let live: BTreeSet<usize> = members.keys().copied().collect();
        leaves.push(wait_converged(&rx, &mut state, &live) - started);
    }
    drop(members);
    (joins, leaves)
}

// ---------------------------------------------------------------- offset commits

fn commit_request(offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s("bench-commits")))
        .with_member_id(s(""))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(topic_name(TOPIC))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index((offset % i64::from(PARTITIONS)) as i32)
                        .with_committed_offset(offset),
                ]),
        ])
}

fn check_commit(r: &OffsetCommitResponse) {
    let code = r.topics[0].partitions[0].error_code;
    assert_eq!(code, 0, "OffsetCommit: {r:?}");
}

/// Commits one at a time for `secs`; returns commits/s and the mean round trip.
fn commits_single(bootstrap: &str, secs: f64) -> (f64, Duration) {
    let mut conn = Conn::connect(bootstrap);
    let started = Instant::now();
    let mut n: u64 = 0;
    while started.elapsed().as_secs_f64() < secs {
        check_commit(&conn.call(8, &commit_request(n as i64)));
        n += 1;
    }
    let elapsed = started.elapsed();
    (n as f64 / elapsed.as_secs_f64(), elapsed / n.max(1) as u32)
}

/// Keeps `window` commits in flight for `secs`; returns commits/s.
fn commits_pipelined(bootstrap: &str, secs: f64, window: u64) -> f64 {
    let mut conn = Conn::connect(bootstrap);
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut done: u64 = 0;
    while sent < window {
        conn.send(8, &commit_request(sent as i64));
        sent += 1;
    }
    while started.elapsed().as_secs_f64() < secs {
        let (_, r) = conn.recv::<OffsetCommitRequest>(8);
        check_commit(&r);
        done += 1;
        conn.send(8, &commit_request(sent as i64));
        sent += 1;
    }
    while done < sent {
        let (_, r) = conn.recv::<OffsetCommitRequest>(8);
        check_commit(&r);
        done += 1;
    }
    done as f64 / started.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------- main

fn stats(v: &[Duration]) -> String {
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    if ms.is_empty() {
        return "-".into();
    }
    format!(
        "median {:7.1} ms   min {:7.1}   max {:7.1}",
        ms[ms.len() / 2],
        ms[0],
        ms[ms.len() - 1]
    )
}

fn wait_for_coordinator(conn: &mut Conn, group: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = conn.call(
            4,
            &FindCoordinatorRequest::default().with_coordinator_keys(vec![s(group)]),
        );
        if r.coordinators[0].error_code == 0 {
            let c = conn.call(8, &commit_request(0));
            if c.topics[0].partitions[0].error_code == 0 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no coordinator");
        thread::sleep(Duration::from_millis(100));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs = env_num("FJORD_BENCH_SECS", 5) as f64;
    let rounds = env_num("FJORD_BENCH_ROUNDS", 10) as usize;
    let heartbeat = Duration::from_millis(env_num("FJORD_BENCH_HEARTBEAT_MS", 100));
    let window = env_num("FJORD_BENCH_WINDOW", 32);
    let dir = tempfile::tempdir().expect("temp dir");
    let hb = heartbeat.as_millis().to_string();
    let broker = BrokerProcess::start(
        Path::new(BIN),
        dir.path(),
        &[
            ("offsets.topic.num.partitions", "10"),
            ("group.initial.rebalance.delay.ms", "0"),
            ("group.consumer.heartbeat.interval.ms", &hb),
        ],
    );
    let bootstrap = broker.bootstrap.clone();
    let mut conn = Conn::connect(&bootstrap);
    conn.create_topic(TOPIC, PARTITIONS, &[]);
    for g in ["bench-commits", "bench-classic", "bench-consumer"] {
        wait_for_coordinator(&mut conn, g);
    }
    let md = conn.call(
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(TOPIC))),
        ])),
    );
    let tid = md.topics[0].topic_id;

    println!(
        "fjord group coordinator benchmark: one broker process ({BIN}), raw protocol clients on loopback"
    );
    println!(
        "{MEMBERS}-member groups over a {PARTITIONS}-partition topic; members heartbeat every {} ms; {rounds} rounds",
        heartbeat.as_millis()
    );
    let r = classic_rebalances(&bootstrap, heartbeat, rounds);
    println!(
        "classic rebalance, 10th member joins   : {}",
        stats(&r.join)
    );
    println!(
        "  from the last JoinGroup               : {}",
        stats(&r.join_coordinator)
    );
    println!(
        "classic rebalance, a member leaves      : {}",
        stats(&r.leave)
    );
    println!(
        "  from the last JoinGroup               : {}",
        stats(&r.leave_coordinator)
    );
    let (joins, leaves) = consumer_rebalances(&bootstrap, heartbeat, rounds, tid);
    println!(
        "KIP-848 group converged, 10th joins     : {}",
        stats(&joins)
    );
    println!(
        "KIP-848 group converged, a member leaves: {}",
        stats(&leaves)
    );

    let (rate, rtt) = commits_single(&bootstrap, secs);
    println!(
        "OffsetCommit, one at a time            : {rate:9.0} commits/s (mean round trip {:.1} µs)",
        rtt.as_secs_f64() * 1e6
    );
    let rate = commits_pipelined(&bootstrap, secs, window);
    println!("OffsetCommit, {window} in flight            : {rate:9.0} commits/s");
}
