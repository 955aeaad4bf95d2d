//! Partition reassignment (AlterPartitionReassignments / ListPartitionReassignments) and the
//! replication throttle, on three brokers, driven by two independent admin clients
//! (kafka-python and kafkajs; librdkafka has no reassignment API):
//!
//! 1. kafka-python moves a replica to the broker that had none, with a follower throttle on
//!    the new replica: while throttled the move stays in progress (both clients list it with
//!    its adding and removing replicas) and the new replica's log grows but is incomplete;
//!    lifting the throttle lets it finish, the removed broker deletes its copy.
//! 2. kafkajs moves it again with a leader-side throttle: the same holding, then completion.
//! 3. kafka-python starts a move and cancels it: the partition returns to its replicas and the
//!    half-built replica is deleted; cancelling again is NO_REASSIGNMENT_IN_PROGRESS, and an
//!    unknown broker is INVALID_REPLICA_ASSIGNMENT.
//!
//! At the end a consumer reads every acknowledged record once, in order, and the replicas'
//! logs on disk are identical.
//!
//! The throttle assertions only rely on a lower bound of time (1 MB cannot cross a 40 kB/s
//! throttle in 4 s), which a slow machine makes more true, never less.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fjord_tests::admin::incremental_alter_configs;
use fjord_tests::clients::{self, KAFKA_PYTHON, RDKAFKA};
use fjord_tests::cluster::{Cluster, ClusterSpec};
use fjord_tests::replica_log::read_replica;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");
const TOPIC: &str = "moving";
const BOUND: Duration = Duration::from_secs(60);
const TOPIC_RESOURCE: i8 = 2;
const BROKER_RESOURCE: i8 = 4;
/// Bytes per second allowed while throttled.
const THROTTLE: &str = "40000";
/// How long a throttled move is watched before the throttle is lifted.
const HOLD: Duration = Duration::from_secs(4);

fn produce(py: &Path, cluster: &Cluster, tag: &str, n: usize, size: usize) -> Vec<String> {
    let values: Vec<String> = (0..n)
        .map(|i| {
            let mut v = format!("{tag}-{i:05}-");
            while v.len() < size {
                v.push('x');
            }
            v
        })
        .collect();
    let errors = clients::produce_acked(
        py,
        &cluster.bootstrap(),
        TOPIC,
        0,
        &values,
        &json!({"batch.size": 16384}),
    );
    assert!(errors.is_empty(), "{errors:?}\n{}", cluster.log_tails(40));
    values
}

fn set_config(cluster: &Cluster, resource_type: i8, name: &str, changes: &[(&str, Option<&str>)]) {
    let deadline = Instant::now() + BOUND;
    loop {
        let r = incremental_alter_configs(
            cluster.bootstrap().split(',').next().unwrap(),
            resource_type,
            name,
            changes,
            Duration::from_secs(10),
        );
        match r {
            Ok((0, _)) => return,
            other => assert!(
                Instant::now() < deadline,
                "IncrementalAlterConfigs {name} {changes:?}: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn kp_admin(py: &Path, cluster: &Cluster, args: Value) -> Value {
    let mut args = args;
    args["bootstrap"] = json!(cluster.bootstrap());
    clients::run(py, KAFKA_PYTHON, "admin", &args)
}

fn kafkajs(cluster: &Cluster, op: &str, args: Value) -> Value {
    let mut args = args;
    args["bootstrap"] = json!(cluster.bootstrap());
    clients::run_kafkajs(op, &args)
}

/// The partition as the freshest Metadata shows it: (replicas, isr, leader).
fn partition(cluster: &Cluster) -> (Vec<i32>, Vec<i32>, i32) {
    let view = cluster.topic_view(TOPIC, false);
    let p = view.first().expect("the topic's partition");
    (p.replicas.clone(), p.isr.clone(), p.leader)
}

fn partition_dir(cluster: &Cluster, id: i32) -> PathBuf {
    cluster
        .log_dir(cluster.index_of(id).unwrap())
        .join(format!("{TOPIC}-0"))
}

/// Bytes in the `.log` segments of `id`'s replica (0 when it has none).
fn log_bytes(cluster: &Cluster, id: i32) -> u64 {
    let Ok(entries) = std::fs::read_dir(partition_dir(cluster, id)) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn wait_until(what: &str, cluster: &Cluster, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {BOUND:?}: {:?}\n{}",
            partition(cluster),
            cluster.log_tails(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for the move to `target` to finish: nothing listed, Metadata shows exactly the
/// target with all of it in sync, and every removed broker has deleted its copy.
fn wait_completed(py: &Path, cluster: &Cluster, target: &[i32]) {
    wait_until("the reassignment to complete", cluster, || {
        let listed = kp_admin(py, cluster, json!({"op": "list_reassignments"}));
        let (replicas, isr, leader) = partition(cluster);
        let mut in_sync = isr.clone();
        in_sync.sort_unstable();
        let mut want = target.to_vec();
        want.sort_unstable();
        listed.as_object().is_some_and(|o| o.is_empty())
            && replicas == target
            && in_sync == want
            && target.contains(&leader)
    });
    for id in cluster.node_ids() {
        if !target.contains(&id) {
            wait_until(&format!("broker {id} to delete its copy"), cluster, || {
                !partition_dir(cluster, id).exists()
            });
        }
    }
}

/// While throttled, the move stays in progress and `adding`'s copy grows but stays short.
fn assert_held(py: &Path, cluster: &Cluster, adding: i32, total: u64) {
    wait_until("the new replica to start fetching", cluster, || {
        log_bytes(cluster, adding) > 0
    });
    std::thread::sleep(HOLD);
    let listed = kp_admin(py, cluster, json!({"op": "list_reassignments"}));
    assert!(
        listed[format!("{TOPIC}-0")]["adding_replicas"] == json!([adding]),
        "still moving while throttled: {listed}"
    );
    let copied = log_bytes(cluster, adding);
    assert!(
        copied > 0 && copied < total / 2,
        "throttled copy: {copied} of {total} bytes"
    );
}

#[test]
fn reassignments_move_throttle_and_cancel_with_two_clients() {
    let Some(py) = clients::python() else {
        return;
    };
    // Small replica fetches, so a throttle is felt within one partition of 1 MB (a throttle is
    // checked between fetches, as in Kafka).
    let spec = ClusterSpec::new(3)
        .with("replica.lag.time.max.ms", "4000")
        .with("replica.fetch.max.bytes", "16384")
        .with("replica.fetch.response.max.bytes", "16384");
    let mut cluster = Cluster::start(Path::new(BIN), spec).unwrap_or_else(|e| panic!("{e}"));
    cluster
        .create_topic(TOPIC, 1, 2, &[("min.insync.replicas", "1")], BOUND)
        .unwrap();
    cluster
        .wait_leaders(TOPIC, 1, &cluster.node_ids(), BOUND)
        .unwrap();
    wait_until("both replicas in sync", &cluster, || {
        partition(&cluster).1.len() == 2
    });
    let (replicas, _, _) = partition(&cluster);
    let (a, b) = (replicas[0], replicas[1]);
    let x = cluster
        .node_ids()
        .into_iter()
        .find(|id| !replicas.contains(id))
        .unwrap();
    let mut acked = produce(&py, &cluster, "first", 1000, 1000);
    let total = log_bytes(&cluster, a);
    assert!(total >= 1_000_000, "{total}");

    // 1. kafka-python moves a's replica to x; x's follower side is throttled.
    set_config(
        &cluster,
        TOPIC_RESOURCE,
        TOPIC,
        &[(
            "follower.replication.throttled.replicas",
            Some(&format!("0:{x}")),
        )],
    );
    set_config(
        &cluster,
        BROKER_RESOURCE,
        &x.to_string(),
        &[("follower.replication.throttled.rate", Some(THROTTLE))],
    );
    let r = kp_admin(
        &py,
        &cluster,
        json!({"op": "alter_reassignments", "topic": TOPIC, "assignments": {"0": [x, b]}}),
    );
    assert_eq!(r, json!({"0": null}));
    let expected = json!({format!("{TOPIC}-0"): {
        "replicas": [x, b, a], "adding_replicas": [x], "removing_replicas": [a]}});
    assert_eq!(
        kp_admin(&py, &cluster, json!({"op": "list_reassignments"})),
        expected
    );
    assert_eq!(
        kafkajs(
            &cluster,
            "list_reassignments",
            json!({"topic": TOPIC, "partitions": [0]})
        ),
        expected
    );
    assert_held(&py, &cluster, x, total);
    set_config(
        &cluster,
        BROKER_RESOURCE,
        &x.to_string(),
        &[("follower.replication.throttled.rate", None)],
    );
    wait_completed(&py, &cluster, &[x, b]);
    acked.extend(produce(&py, &cluster, "second", 50, 100));

    // 2. kafkajs moves it from x to a; the leaders' side is throttled (cluster-wide rate).
    set_config(
        &cluster,
        TOPIC_RESOURCE,
        TOPIC,
        &[
            ("follower.replication.throttled.replicas", None),
            (
                "leader.replication.throttled.replicas",
                Some(&format!("0:{x},0:{b}")),
            ),
        ],
    );
    set_config(
        &cluster,
        BROKER_RESOURCE,
        "",
        &[("leader.replication.throttled.rate", Some(THROTTLE))],
    );
    let r = kafkajs(
        &cluster,
        "alter_reassignments",
        json!({"topic": TOPIC, "assignments": {"0": [b, a]}}),
    );
    assert_eq!(r, json!({"ok": true}));
    assert_eq!(
        kafkajs(&cluster, "list_reassignments", json!({})),
        json!({format!("{TOPIC}-0"): {
            "replicas": [b, a, x], "adding_replicas": [a], "removing_replicas": [x]}})
    );
    assert_held(&py, &cluster, a, total);
    set_config(
        &cluster,
        BROKER_RESOURCE,
        "",
        &[("leader.replication.throttled.rate", None)],
    );
    wait_completed(&py, &cluster, &[b, a]);

    // 3. A move that is cancelled; then the errors.
    set_config(
        &cluster,
        TOPIC_RESOURCE,
        TOPIC,
        &[
            ("leader.replication.throttled.replicas", None),
            ("follower.replication.throttled.replicas", Some("*")),
        ],
    );
    set_config(
        &cluster,
        BROKER_RESOURCE,
        "",
        &[("follower.replication.throttled.rate", Some(THROTTLE))],
    );
    let r = kp_admin(
        &py,
        &cluster,
        json!({"op": "alter_reassignments", "topic": TOPIC, "assignments": {"0": [x, a]}}),
    );
    assert_eq!(r, json!({"0": null}));
    wait_until("x to start copying", &cluster, || {
        log_bytes(&cluster, x) > 0
    });
    let r = kp_admin(
        &py,
        &cluster,
        json!({"op": "alter_reassignments", "topic": TOPIC, "assignments": {"0": null}}),
    );
    assert_eq!(r, json!({"0": null}));
    wait_completed(&py, &cluster, &partition(&cluster).0);
    let (replicas, _, _) = partition(&cluster);
    let mut sorted = replicas.clone();
    sorted.sort_unstable();
    let mut original = vec![a, b];
    original.sort_unstable();
    assert_eq!(sorted, original, "cancelled back to the original replicas");
    let r = kp_admin(
        &py,
        &cluster,
        json!({"op": "alter_reassignments", "topic": TOPIC, "assignments": {"0": null}}),
    );
    assert_eq!(r, json!({"0": "NoReassignmentInProgressError"}));
    let r = kp_admin(
        &py,
        &cluster,
        json!({"op": "alter_reassignments", "topic": TOPIC, "assignments": {"0": [a, 99]}}),
    );
    assert_eq!(r, json!({"0": "InvalidReplicationAssignmentError"}));
    set_config(
        &cluster,
        BROKER_RESOURCE,
        "",
        &[("follower.replication.throttled.rate", None)],
    );

    // Everything acknowledged is there once, in order, and the replicas agree on disk.
    acked.extend(produce(&py, &cluster, "third", 50, 100));
    let consumed =
        clients::consume_values(&py, RDKAFKA, &cluster.bootstrap(), TOPIC, 0, acked.len());
    assert_eq!(consumed.len(), acked.len());
    assert!(
        consumed == acked,
        "the records differ from those acknowledged"
    );
    wait_until("both replicas in sync", &cluster, || {
        partition(&cluster).1.len() == 2
    });
    let stuck = cluster.stop_all(Duration::from_secs(30));
    assert!(stuck.is_empty(), "nodes that did not stop: {stuck:?}");
    let mut logs = Vec::new();
    for id in [a, b] {
        let i = cluster.index_of(id).unwrap();
        let log = read_replica(&cluster.log_dir(i), id, TOPIC, 0)
            .unwrap()
            .unwrap_or_else(|| panic!("node {id} has no replica"));
        logs.push(log);
    }
    assert_eq!(logs[0].records, logs[1].records, "the replicas differ");
    assert_eq!(logs[0].records.len(), acked.len());
    let i = cluster.index_of(x).unwrap();
    assert!(
        read_replica(&cluster.log_dir(i), x, TOPIC, 0)
            .unwrap()
            .is_none()
    );
}
