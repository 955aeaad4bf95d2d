//! Replication across three brokers: followers copy the leader, the ISR fills, acks=all
//! produce survives a SIGKILL of the leader, the killed broker rejoins the ISR after a restart,
//! and at the end every replica holds the same log with every acknowledged record once, in
//! order.

use std::path::Path;
use std::time::{Duration, Instant};

use fjord_tests::clients::{self, KAFKA_PYTHON, RDKAFKA};
use fjord_tests::cluster::{Cluster, ClusterSpec};
use fjord_tests::replica_log::read_replica;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");
const TOPIC: &str = "replicated";
const BOUND: Duration = Duration::from_secs(60);

fn produce(py: &Path, cluster: &Cluster, tag: &str, n: usize) -> Vec<String> {
    let values: Vec<String> = (0..n).map(|i| format!("{tag}-{i:04}")).collect();
    let errors = clients::produce_acked(py, &cluster.bootstrap(), TOPIC, 0, &values, &json!({}));
    assert!(errors.is_empty(), "{errors:?}\n{}", cluster.log_tails(40));
    values
}

fn wait_isr(cluster: &Cluster, want: usize) -> Vec<i32> {
    let deadline = Instant::now() + BOUND;
    loop {
        let view = cluster.topic_view(TOPIC, false);
        if let Some(p) = view.first()
            && p.isr.len() == want
        {
            return p.isr.clone();
        }
        assert!(
            Instant::now() < deadline,
            "ISR never reached {want}: {view:?}\n{}",
            cluster.log_tails(40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn acks_all_survives_a_leader_kill_and_replicas_converge() {
    let Some(py) = clients::python() else {
        return;
    };
    let spec = ClusterSpec::new(3).with("replica.lag.time.max.ms", "4000");
    let mut cluster = Cluster::start(Path::new(BIN), spec).unwrap_or_else(|e| panic!("{e}"));
    cluster
        .create_topic(TOPIC, 1, 3, &[("min.insync.replicas", "2")], BOUND)
        .unwrap();
    cluster
        .wait_leaders(TOPIC, 1, &cluster.node_ids(), BOUND)
        .unwrap();

    let mut acked = produce(&py, &cluster, "a", 300);
    assert_eq!(wait_isr(&cluster, 3).len(), 3);

    // SIGKILL the leader: a new one is elected from the ISR and acks=all goes on.
    let leader = cluster.leader(TOPIC, 0).unwrap();
    let leader_index = cluster.index_of(leader).unwrap();
    assert!(cluster.kill(leader_index));
    let killed_at = Instant::now();
    let survivors: Vec<i32> = cluster
        .node_ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    cluster.wait_leaders(TOPIC, 1, &survivors, BOUND).unwrap();
    acked.extend(produce(&py, &cluster, "b", 300));
    eprintln!(
        "acks=all produce resumed {:?} after the SIGKILL",
        killed_at.elapsed()
    );

    // The killed broker comes back, catches up and rejoins the ISR.
    cluster.restart(leader_index, BOUND).unwrap();
    let isr = wait_isr(&cluster, 3);
    assert!(isr.contains(&leader), "{isr:?}");
    acked.extend(produce(&py, &cluster, "c", 100));
    wait_isr(&cluster, 3);

    // A consumer sees every acknowledged record once, in order.
    let consumed = clients::consume_values(
        &py,
        KAFKA_PYTHON,
        &cluster.bootstrap(),
        TOPIC,
        0,
        acked.len(),
    );
    assert_eq!(consumed, acked);

    // Every replica's log, read from disk after a clean stop, is the same.
    let stuck = cluster.stop_all(Duration::from_secs(30));
    assert!(stuck.is_empty(), "nodes that did not stop: {stuck:?}");
    let mut logs = Vec::new();
    for i in 0..cluster.len() {
        let log = read_replica(&cluster.log_dir(i), cluster.node_id(i), TOPIC, 0)
            .unwrap()
            .unwrap_or_else(|| panic!("node {} has no replica", cluster.node_id(i)));
        logs.push(log);
    }
    for log in &logs {
        let values: Vec<&str> = log
            .records
            .iter()
            .filter_map(|r| r.value.as_deref())
            .collect();
        assert_eq!(
            values,
            acked.iter().map(String::as_str).collect::<Vec<_>>(),
            "node {}",
            log.node
        );
        assert_eq!(log.records, logs[0].records, "node {} differs", log.node);
    }
}

/// Kills and restarts the preferred leader of `topic`-0 so that another replica leads.
fn displace_preferred(cluster: &mut Cluster, topic: &str) -> i32 {
    let view = cluster.topic_view(topic, false);
    let preferred = view[0].replicas[0];
    assert_eq!(view[0].leader, preferred, "{view:?}");
    let i = cluster.index_of(preferred).unwrap();
    cluster.kill(i);
    let others: Vec<i32> = cluster
        .node_ids()
        .into_iter()
        .filter(|id| *id != preferred)
        .collect();
    cluster.wait_leaders(topic, 1, &others, BOUND).unwrap();
    cluster.restart(i, BOUND).unwrap();
    let deadline = Instant::now() + BOUND;
    while cluster.topic_view(topic, false)[0].isr.len() < 3 {
        assert!(Instant::now() < deadline, "{}", cluster.log_tails(30));
        std::thread::sleep(Duration::from_millis(200));
    }
    preferred
}

#[test]
fn admin_clients_and_the_controller_restore_preferred_leaders() {
    let Some(py) = clients::python() else {
        return;
    };
    let spec = ClusterSpec::new(3).with("auto.leader.rebalance.enable", "false");
    let mut cluster = Cluster::start(Path::new(BIN), spec).unwrap_or_else(|e| panic!("{e}"));
    cluster.create_topic("pref", 1, 3, &[], BOUND).unwrap();
    cluster
        .wait_leaders("pref", 1, &cluster.node_ids(), BOUND)
        .unwrap();
    for client in [RDKAFKA, KAFKA_PYTHON] {
        let preferred = displace_preferred(&mut cluster, "pref");
        // Nothing moves it back by itself with the rebalance off.
        std::thread::sleep(Duration::from_secs(2));
        assert_ne!(cluster.leader("pref", 0), Some(preferred));
        let r = clients::run(
            &py,
            client,
            "admin",
            &json!({"bootstrap": cluster.bootstrap(), "op": "elect_leaders",
                    "topic": "pref", "partitions": [0]}),
        );
        assert_eq!(r["pref-0"], Value::Null, "{client}: {r}");
        assert_eq!(cluster.leader("pref", 0), Some(preferred), "{client}");
        // Asking again: the election is not needed (librdkafka reports it as an error).
        let again = clients::run(
            &py,
            client,
            "admin",
            &json!({"bootstrap": cluster.bootstrap(), "op": "elect_leaders",
                    "topic": "pref", "partitions": [0]}),
        );
        let text = again["pref-0"].to_string();
        assert!(
            again["pref-0"].is_null()
                || text.contains("84")
                || text.contains("ELECTION_NOT_NEEDED"),
            "{client}: {again}"
        );
    }
    drop(cluster);

    // With the periodic check on (every second here), leadership goes back without asking.
    let spec = ClusterSpec::new(3).with("leader.imbalance.check.interval.seconds", "1");
    let mut cluster = Cluster::start(Path::new(BIN), spec).unwrap_or_else(|e| panic!("{e}"));
    cluster.create_topic("auto", 1, 3, &[], BOUND).unwrap();
    cluster
        .wait_leaders("auto", 1, &cluster.node_ids(), BOUND)
        .unwrap();
    let preferred = displace_preferred(&mut cluster, "auto");
    let deadline = Instant::now() + BOUND;
    while cluster.leader("auto", 0) != Some(preferred) {
        assert!(Instant::now() < deadline, "{}", cluster.log_tails(30));
        std::thread::sleep(Duration::from_millis(200));
    }
}
