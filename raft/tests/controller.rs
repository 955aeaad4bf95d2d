//! The controller quorum end to end: three controllers in separate processes (this test binary
//! re-runs itself as `controller_child` when `FJORD_CTRL_ID` is set), driven over the controller
//! RPC as brokers drive it. Also broker fencing against a single in-process controller.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_raft::client::{ControllerClient, fetch_image, quorum_status};
use fjord_raft::controller::ControllerConfig;
use fjord_raft::controller::requests::*;
use fjord_raft::node::ControllerNode;
use fjord_raft::quorum::{QuorumConfig, Voter, parse_voters};
use fjord_raft::{ControllerError, MetadataImage};
use uuid::Uuid;

fn quorum_config(id: u64, voters: Vec<Voter>, dir: &Path) -> QuorumConfig {
    let addr = voters
        .iter()
        .find(|v| v.id == id)
        .map(|v| v.addr.parse().unwrap())
        .unwrap();
    let mut q = QuorumConfig::new(id, voters, addr, dir.to_path_buf());
    q.heartbeat_interval = Duration::from_millis(50);
    q.election_timeout_min = Duration::from_millis(300);
    q.election_timeout_max = Duration::from_millis(600);
    q.rpc_timeout = Duration::from_millis(500);
    q.write_timeout = Duration::from_secs(2);
    q.snapshot_every_entries = 20;
    q.keep_entries_after_snapshot = 5;
    q
}

/// Child entry point: run one controller until killed.
#[test]
fn controller_child() {
    let Ok(id) = std::env::var("FJORD_CTRL_ID") else {
        return;
    };
    let voters = parse_voters(&std::env::var("FJORD_CTRL_VOTERS").unwrap()).unwrap();
    let dir = PathBuf::from(std::env::var("FJORD_CTRL_DIR").unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let q = quorum_config(id.parse().unwrap(), voters, &dir);
        // The test's broker registers once and never heartbeats: keep it unfenced.
        let cfg = ControllerConfig {
            session_timeout: Duration::from_secs(600),
            ..ControllerConfig::default()
        };
        let _node = ControllerNode::start(q, cfg).await.unwrap();
        println!("READY");
        // Bounded life, so a crashed parent cannot leak controllers for long.
        tokio::time::sleep(Duration::from_secs(180)).await;
        std::process::exit(0);
    });
}

/// `n` distinct free ports: all listeners are held until every port is known.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

struct Cluster {
    voters: Vec<Voter>,
    voters_str: String,
    root: tempfile::TempDir,
    children: BTreeMap<u64, Child>,
}

impl Cluster {
    fn new(n: u64) -> Self {
        let voters_str = free_ports(n as usize)
            .into_iter()
            .zip(1..=n)
            .map(|(port, i)| format!("{i}@127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            voters: parse_voters(&voters_str).unwrap(),
            voters_str,
            root: tempfile::tempdir().unwrap(),
            children: BTreeMap::new(),
        };
        for i in 1..=n {
            c.start(i);
        }
        c
    }

    fn start(&mut self, id: u64) {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "controller_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FJORD_CTRL_ID", id.to_string())
            .env("FJORD_CTRL_VOTERS", &self.voters_str)
            .env("FJORD_CTRL_DIR", self.root.path().join(format!("c{id}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.insert(id, child);
    }

    fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.children.remove(&id) {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    fn addr(&self, id: u64) -> String {
        self.voters
            .iter()
            .find(|v| v.id == id)
            .unwrap()
            .addr
            .clone()
    }

    /// A client that only knows controller `id`.
    fn client_via(&self, id: u64) -> ControllerClient {
        ControllerClient::new(
            self.voters.iter().filter(|v| v.id == id).cloned().collect(),
            None,
        )
    }

    fn client(&self) -> ControllerClient {
        ControllerClient::new(self.voters.clone(), None)
    }

    async fn image(&self, id: u64) -> Result<MetadataImage, String> {
        fetch_image(&self.addr(id), Duration::from_secs(3)).await
    }

    /// The controller that currently leads, as a live controller reports it.
    async fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            assert!(Instant::now() < deadline, "no leader elected");
            for id in self.children.keys() {
                if let Ok(s) = quorum_status(&self.addr(*id), Duration::from_millis(500)).await
                    && let Some(l) = s.leader
                    && self.children.contains_key(&l)
                {
                    return l;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.children.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }
}

fn topic(name: &str, partitions: i32) -> CreatableTopic {
    CreatableTopic {
        name: name.into(),
        num_partitions: partitions,
        replication_factor: 1,
        assignments: vec![],
        configs: vec![],
    }
}

async fn register_broker(client: &ControllerClient, id: i32, port: u16) -> i64 {
    let r = client
        .call(
            ControllerRequest::RegisterBroker(RegisterBroker {
                broker_id: id,
                incarnation_id: Uuid::new_v4(),
                endpoints: vec![EndpointSpec {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port,
                    security_protocol: 0,
                }],
                rack: None,
            }),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let ControllerResponse::RegisterBroker(Ok(reg)) = r else {
        panic!("{r:?}")
    };
    let r = heartbeat(client, id, reg.broker_epoch).await.unwrap();
    assert!(!r.is_fenced, "broker {id} not unfenced: {r:?}");
    reg.broker_epoch
}

async fn heartbeat(
    client: &ControllerClient,
    id: i32,
    epoch: i64,
) -> Result<HeartbeatReply, ControllerError> {
    let r = client
        .call(
            ControllerRequest::Heartbeat(Heartbeat {
                broker_id: id,
                broker_epoch: epoch,
                current_metadata_offset: u64::MAX,
                want_fence: false,
                want_shutdown: false,
            }),
            Duration::from_secs(10),
        )
        .await?;
    match r {
        ControllerResponse::Heartbeat(Ok(h)) => Ok(h),
        other => panic!("{other:?}"),
    }
}

async fn create(
    client: &ControllerClient,
    name: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<(), String> {
    match client
        .call(
            ControllerRequest::CreateTopics {
                topics: vec![topic(name, partitions)],
                validate_only: false,
            },
            timeout,
        )
        .await
    {
        Ok(ControllerResponse::CreateTopics(v)) => {
            v[0].1.clone().map(|_| ()).map_err(|e| e.to_string())
        }
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Wait until every listed controller's image has all of `names` (bounded).
async fn wait_topics_everywhere(cluster: &Cluster, ids: &[u64], names: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    for id in ids {
        loop {
            if let Ok(img) = cluster.image(*id).await
                && names.iter().all(|n| img.topic(n).is_some())
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "controller {id} never saw all topics"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controllers_survive_leader_kill_restart_and_majority_loss() {
    let mut cluster = Cluster::new(3);
    let client = cluster.client();
    register_broker(&client, 1, 9092).await;

    // Topics created through each node are visible on all.
    let mut acked = BTreeSet::new();
    for via in 1..=3 {
        let name = format!("via-{via}");
        create(&cluster.client_via(via), &name, 3, Duration::from_secs(15))
            .await
            .unwrap();
        acked.insert(name);
    }
    wait_topics_everywhere(&cluster, &[1, 2, 3], &acked).await;

    // SIGKILL the leader while creations are in flight.
    let leader = cluster.leader().await;
    let client = Arc::new(cluster.client());
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("inflight-{i}");
            let r = create(&c, &name, 4, Duration::from_secs(20)).await;
            (name, r)
        }));
        if i == 10 {
            cluster.kill(leader);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut unacked = Vec::new();
    for t in tasks {
        let (name, r) = t.await.unwrap();
        match r {
            Ok(()) => {
                acked.insert(name);
            }
            // A retried create whose first attempt committed before the kill: it must exist.
            Err(e) if e.contains("already exists") => {
                acked.insert(name);
            }
            Err(_) => unacked.push(name),
        }
    }
    let survivors: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    wait_topics_everywhere(&cluster, &survivors, &acked).await;
    let img = cluster.image(survivors[0]).await.unwrap();
    for name in &unacked {
        // All or nothing: a topic is either absent or has every partition.
        if let Some(t) = img.topic(name) {
            assert_eq!(t.partitions.len(), 4, "{name} partially applied");
        }
    }
    // Writes work on the new leader.
    create(
        &cluster.client(),
        "after-failover",
        1,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    acked.insert("after-failover".into());

    // The killed controller restarts from its disk (log and snapshot) and catches up.
    for i in 0..30 {
        create(
            &cluster.client(),
            &format!("more-{i}"),
            1,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        acked.insert(format!("more-{i}"));
    }
    // The survivors took snapshots (every 20 entries) and purged their logs behind them, so the
    // killed controller restarts from its own disk and must then catch up through a snapshot.
    for id in &survivors {
        let dir = cluster.root.path().join(format!("c{id}"));
        let snapshots = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("snapshot-"))
            .count();
        assert!(snapshots > 0, "controller {id} never took a snapshot");
    }
    cluster.start(leader);
    wait_topics_everywhere(&cluster, &[1, 2, 3], &acked).await;
    // All three converge on the same image.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut images = Vec::new();
        for id in 1..=3 {
            images.push(cluster.image(id).await.unwrap());
        }
        if images.iter().all(|i| i.offset == images[0].offset) {
            assert_eq!(images[0], images[1], "controllers 1 and 2 diverged");
            assert_eq!(images[0], images[2], "controllers 1 and 3 diverged");
            break;
        }
        assert!(Instant::now() < deadline, "controllers never converged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Lose the majority: the survivor refuses writes with a clear error and applies nothing.
    let keep = 1 + (leader % 3);
    for id in 1..=3 {
        if id != keep {
            cluster.kill(id);
        }
    }
    let before = cluster.image(keep).await.unwrap();
    let err = create(
        &cluster.client_via(keep),
        "no-quorum",
        1,
        Duration::from_secs(6),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("unavailable") || err.contains("NotController") || err.contains("not the"),
        "unexpected error without a quorum: {err}"
    );
    let after = cluster.image(keep).await.unwrap();
    assert!(after.topic("no-quorum").is_none());
    assert_eq!(before.topics, after.topics);
    // Restore a majority: writes work again.
    let back = if keep == 1 { 2 } else { 1 };
    cluster.start(back);
    create(&cluster.client(), "quorum-back", 1, Duration::from_secs(20))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_broker_is_fenced_and_loses_leadership() {
    let dir = tempfile::tempdir().unwrap();
    let voters = parse_voters(&format!("1@127.0.0.1:{}", free_ports(1)[0])).unwrap();
    let q = quorum_config(1, voters.clone(), dir.path());
    let node = ControllerNode::start(
        q,
        ControllerConfig {
            session_timeout: Duration::from_millis(1500),
            ..ControllerConfig::default()
        },
    )
    .await
    .unwrap();
    let client = Arc::new(ControllerClient::new(voters, Some((1, node.clone()))));
    let mut epochs = BTreeMap::new();
    for id in 1..=3 {
        epochs.insert(id, register_broker(&client, id, 9000 + id as u16).await);
    }
    let r = client
        .call(
            ControllerRequest::CreateTopics {
                topics: vec![CreatableTopic {
                    replication_factor: 3,
                    ..topic("replicated", 6)
                }],
                validate_only: false,
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(
        matches!(&r, ControllerResponse::CreateTopics(v) if v[0].1.is_ok()),
        "{r:?}"
    );
    // Brokers 2 and 3 keep heartbeating; broker 1 goes silent.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beats = {
        let (c, e, stop) = (client.clone(), epochs.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for id in [2, 3] {
                    let _ = heartbeat(&c, id, e[&id]).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let silent_since = Instant::now();
    let mut images = node.images();
    let fenced_at = loop {
        let img = images.borrow_and_update().clone();
        if img.broker(1).unwrap().fenced {
            break Instant::now();
        }
        assert!(
            silent_since.elapsed() < Duration::from_secs(10),
            "broker 1 was never fenced"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), images.changed()).await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    beats.await.unwrap();
    // Fenced within the session timeout plus the controller's check interval.
    assert!(fenced_at.duration_since(silent_since) < Duration::from_millis(1500 + 1500));
    let img = node.images().borrow().clone();
    let t = img.topic("replicated").unwrap();
    for p in t.partitions.values() {
        assert_ne!(p.leader, 1);
        assert!(p.isr.contains(&p.leader));
        assert!(!p.isr.contains(&1));
    }
    assert!(t.partitions.values().any(|p| p.leader_epoch > 0));
    node.shutdown().await;
}
