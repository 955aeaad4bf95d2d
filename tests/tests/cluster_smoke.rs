//! The multi-node harness itself: three combined nodes behind proxies, an RF=3 topic, a real
//! client through the proxies, and the harness's kill/restart and partition/heal operations
//! observed through the cluster's own metadata.

use std::time::{Duration, Instant};

use fjord_tests::clients::{self, KAFKA_PYTHON, RDKAFKA};
use fjord_tests::cluster::{Cluster, ClusterSpec};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");
/// Bound on the cluster noticing a dead or isolated broker (session timeout 3 s) and on a
/// node rejoining.
const CHANGE_BOUND: Duration = Duration::from_secs(30);
/// The topic whose data goes through clients: replication factor 1, so its records are
/// committed without followers and the harness is tested independently of replication.
const PLAIN: &str = "plain";
/// The replicated topic: its placement and leader elections are observed.
const REPLICATED: &str = "smoke";

/// Produces `n` records with librdkafka (idempotent, acks=all) to `topic` (to `partition`
/// if given) and checks kafka-python reads them back from `partitions`, together with the
/// `already` records produced there from offset `from` on, each exactly once. Returns the new
/// total.
#[allow(clippy::too_many_arguments)]
fn round_trip(
    py: &std::path::Path,
    cluster: &Cluster,
    bootstrap: &str,
    partition: Option<i32>,
    partitions: &[i32],
    from: i64,
    tag: &str,
    n: usize,
    already: usize,
) -> usize {
    let records: Vec<Value> = (0..n)
        .map(|i| json!({"key": format!("{tag}-{i}"), "value": format!("{tag} {i}")}))
        .collect();
    let r = clients::run(
        py,
        RDKAFKA,
        "produce",
        &json!({"bootstrap": bootstrap, "topic": PLAIN, "records": records, "acks": "all",
                "idempotent": true, "partition": partition}),
    );
    for res in r["results"].as_array().unwrap() {
        assert_eq!(
            res["error"],
            Value::Null,
            "produce: {res}\n{}",
            cluster.log_tails(30)
        );
    }
    let total = already + n;
    let r = clients::run(
        py,
        KAFKA_PYTHON,
        "consume",
        &json!({"bootstrap": bootstrap, "topic": PLAIN, "partitions": partitions,
                "offset": from, "count": total, "timeout": 30}),
    );
    let got = r["records"].as_array().unwrap();
    let keys: std::collections::BTreeSet<&str> =
        got.iter().filter_map(|r| r["key"].as_str()).collect();
    assert_eq!(got.len(), total, "consumed: {r}\n{}", cluster.log_tails(30));
    assert_eq!(keys.len(), total, "each record once: {r}");
    total
}

#[test]
fn three_nodes_behind_proxies_survive_kill_restart_and_partition() {
    let Some(py) = clients::python() else {
        return;
    };
    let t0 = Instant::now();
    let mut cluster = Cluster::start(std::path::Path::new(BIN), ClusterSpec::new(3))
        .unwrap_or_else(|e| panic!("cluster start: {e}"));
    eprintln!("3 nodes serving and unfenced after {:?}", t0.elapsed());
    let ids = cluster.node_ids();
    let all = cluster.bootstrap();
    let controller = cluster
        .wait_controller_leader(None, Duration::from_secs(10))
        .unwrap();
    eprintln!("controller leader: node {}", cluster.node_id(controller));

    // Every node advertises its proxy, not its real listener.
    let md = cluster.metadata_from(0, Some(&[])).unwrap();
    for b in &md.brokers {
        let i = cluster.index_of(b.node_id.0).unwrap();
        assert_eq!(
            format!("{}:{}", b.host, b.port),
            cluster.client_addr(i),
            "{md:?}"
        );
    }

    let replicated = [("min.insync.replicas", "2")];
    cluster
        .create_topic(REPLICATED, 3, 3, &replicated, Duration::from_secs(20))
        .unwrap();
    let view = cluster
        .wait_leaders(REPLICATED, 3, &ids, Duration::from_secs(20))
        .unwrap();
    for p in &view {
        let mut r = p.replicas.clone();
        r.sort_unstable();
        assert_eq!(r, ids, "RF=3 places a replica on every node: {view:?}");
    }
    let plain = [("min.insync.replicas", "1")];
    cluster
        .create_topic(PLAIN, 3, 1, &plain, Duration::from_secs(20))
        .unwrap();
    cluster
        .wait_leaders(PLAIN, 3, &ids, Duration::from_secs(20))
        .unwrap();
    let mut count = round_trip(&py, &cluster, &all, None, &[0, 1, 2], 0, "a", 30, 0);

    // All traffic goes through the proxies: clients through the client proxies, Raft through
    // the controller proxies.
    for i in 0..3 {
        let (client, ctl) = cluster.proxy_stats(i);
        eprintln!(
            "node {} proxies: client {client:?} controller {ctl:?}",
            i + 1
        );
        assert!(ctl.forwarded > 0, "node {} controller proxy unused", i + 1);
        // Raft traffic comes from the other nodes, and the proxy can tell which.
        assert!(ctl.from_nodes > 0, "node {}: {ctl:?}", i + 1);
    }
    let client_total: u64 = (0..3).map(|i| cluster.proxy_stats(i).0.forwarded).sum();
    assert!(client_total > 0);

    // SIGKILL the leader of a replicated partition: the others fence it and elect new
    // leaders for what it led.
    let leader = cluster.leader(REPLICATED, 0).unwrap();
    let victim = cluster.index_of(leader).unwrap();
    let killed = Instant::now();
    assert!(cluster.kill(victim));
    let others: Vec<i32> = ids.iter().copied().filter(|i| *i != leader).collect();
    cluster
        .wait_brokers(&others, CHANGE_BOUND)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(30)));
    cluster
        .wait_leaders(REPLICATED, 3, &others, CHANGE_BOUND)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(30)));
    eprintln!(
        "killed node {leader}: fenced and its partitions moved within {:?}",
        killed.elapsed()
    );
    let took = cluster
        .restart(victim, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    cluster.wait_brokers(&ids, CHANGE_BOUND).unwrap();
    eprintln!("node {leader} restarted and serving after {took:?}");
    // Its RF=1 partition is back with its data.
    cluster
        .wait_leaders(PLAIN, 3, &ids, CHANGE_BOUND)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(30)));
    count = round_trip(&py, &cluster, &all, None, &[0, 1, 2], 0, "b", 30, count);

    // Isolate the active controller. Cut only inbound, it would keep its leadership by
    // sending to its followers (their answers ride on its own connections); a new leader
    // among the others shows its outbound connections are cut too.
    let c = cluster.wait_controller_leader(None, CHANGE_BOUND).unwrap();
    let c_id = cluster.node_id(c);
    let isolated_at = Instant::now();
    cluster.partition(c);
    let new_c = cluster
        .wait_controller_leader(Some(c), CHANGE_BOUND)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(30)));
    assert_ne!(new_c, c, "{:?}", cluster.quorum_views());
    eprintln!(
        "isolated node {c_id} (active controller): node {} leads after {:?}",
        cluster.node_id(new_c),
        isolated_at.elapsed()
    );
    // Clients cannot reach it through its advertised address: the connection is accepted and
    // then silent.
    let r = fjord_tests::admin::metadata(&cluster.client_addr(c), None, Duration::from_secs(1));
    assert!(r.is_err(), "an isolated node answered: {r:?}");
    // The process itself still runs and answers on its real listener.
    assert!(cluster.is_running(c));
    assert!(cluster.metadata_from(c, None).is_ok());

    cluster.heal(c);
    cluster
        .wait_brokers(&ids, CHANGE_BOUND)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(30)));
    eprintln!("healed node {c_id}: all three unfenced");
    cluster
        .wait_leaders(PLAIN, 3, &ids, CHANGE_BOUND)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(30)));
    round_trip(&py, &cluster, &all, None, &[0, 1, 2], 0, "c", 30, count);
    let (client, ctl) = cluster.proxy_stats(c);
    assert!(client.blackholed + ctl.blackholed > 0, "{client:?} {ctl:?}");
    assert!(cluster.crashed().is_empty(), "{:?}", cluster.crashed());
}
