//! Metadata quorum benchmark (issue #3): topic creations per second through the controller,
//! for one voter and for three voters in separate processes, and the time from SIGKILL of the
//! Raft leader to the first write committed by its successor.
//!
//! Run: `cargo bench -p fjord-benches --bench metadata`. The binary re-runs itself as a
//! controller process when `FJORD_BENCH_CTRL_ID` is set.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_raft::client::{ControllerClient, quorum_status};
use fjord_raft::controller::ControllerConfig;
use fjord_raft::controller::requests::*;
use fjord_raft::node::ControllerNode;
use fjord_raft::quorum::{QuorumConfig, Voter, parse_voters};

const TOPICS: usize = 2000;
const CONCURRENCY: usize = 16;
const FAILOVERS: usize = 5;

fn quorum_config(id: u64, voters: Vec<Voter>, dir: &Path) -> QuorumConfig {
    let addr = voters
        .iter()
        .find(|v| v.id == id)
        .unwrap()
        .addr
        .parse()
        .unwrap();
    let mut q = QuorumConfig::new(id, voters, addr, dir.to_path_buf());
    // Kafka's KRaft defaults are 2 s fetch / 1 s election; these are the defaults Fjord ships.
    q.snapshot_every_entries = 5000;
    q
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn child_main(id: u64) {
    let voters = parse_voters(&std::env::var("FJORD_BENCH_CTRL_VOTERS").unwrap()).unwrap();
    let dir = PathBuf::from(std::env::var("FJORD_BENCH_CTRL_DIR").unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let _node =
            ControllerNode::start(quorum_config(id, voters, &dir), ControllerConfig::default())
                .await
                .unwrap();
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}

async fn register(client: &ControllerClient) {
    let r = client
        .call(
            ControllerRequest::RegisterBroker(RegisterBroker {
                broker_id: 1,
                incarnation_id: uuid_like(),
                endpoints: vec![],
                rack: None,
            }),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let ControllerResponse::RegisterBroker(Ok(reg)) = r else {
        panic!("{r:?}")
    };
    let r = client
        .call(
            ControllerRequest::Heartbeat(Heartbeat {
                broker_id: 1,
                broker_epoch: reg.broker_epoch,
                current_metadata_offset: u64::MAX,
                want_fence: false,
                want_shutdown: false,
            }),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert!(
        matches!(r, ControllerResponse::Heartbeat(Ok(ref h)) if !h.is_fenced),
        "{r:?}"
    );
}

fn uuid_like() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}

async fn create(client: &ControllerClient, name: String, timeout: Duration) -> bool {
    let r = client
        .call(
            ControllerRequest::CreateTopics {
                topics: vec![CreatableTopic {
                    name,
                    num_partitions: 3,
                    replication_factor: 1,
                    assignments: vec![],
                    configs: vec![],
                }],
                validate_only: false,
            },
            timeout,
        )
        .await;
    matches!(r, Ok(ControllerResponse::CreateTopics(v)) if v[0].1.is_ok())
}

/// Create `TOPICS` topics from `CONCURRENCY` tasks; returns (topics/s, p50, p99 latency).
async fn creations(client: Arc<ControllerClient>, prefix: &str) -> (f64, Duration, Duration) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let c = client.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (t..TOPICS).step_by(CONCURRENCY) {
                let s = Instant::now();
                assert!(create(&c, format!("{prefix}-{i}"), Duration::from_secs(30)).await);
                lat.push(s.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    (
        TOPICS as f64 / secs,
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
    )
}

struct Children(Vec<(u64, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(id: u64, voters: &str, root: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env("FJORD_BENCH_CTRL_ID", id.to_string())
        .env("FJORD_BENCH_CTRL_VOTERS", voters)
        .env("FJORD_BENCH_CTRL_DIR", root.join(format!("c{id}")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn leader_of(voters: &[Voter], alive: &[u64]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for v in voters.iter().filter(|v| alive.contains(&v.id)) {
            if let Ok(s) = quorum_status(&v.addr, Duration::from_millis(500)).await
                && let Some(l) = s.leader
                && alive.contains(&l)
            {
                return l;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no leader");
}

fn main() {
    if let Ok(id) = std::env::var("FJORD_BENCH_CTRL_ID") {
        child_main(id.parse().unwrap());
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing we need.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        println!("metadata quorum benchmark: {TOPICS} topic creations (3 partitions each), {CONCURRENCY} concurrent clients");
        println!("{:<34} {:>12} {:>10} {:>10}", "setup", "topics/s", "p50 ms", "p99 ms");

        // One voter, in process (the single-node default path).
        let dir = tempfile::tempdir().unwrap();
        let voters = parse_voters(&format!("1@127.0.0.1:{}", free_port())).unwrap();
        let node = ControllerNode::start(quorum_config(1, voters.clone(), dir.path()), ControllerConfig::default())
            .await
            .unwrap();
        let client = Arc::new(ControllerClient::new(voters, Some((1, node.clone()))));
        register(&client).await;
        let (rate, p50, p99) = creations(client, "single").await;
        println!("{:<34} {:>12.0} {:>10.2} {:>10.2}", "1 voter (in-process)", rate, ms(p50), ms(p99));
        node.shutdown().await;

        // Three voters in three processes, over TCP.
        let root = tempfile::tempdir().unwrap();
        let voters_str = (1..=3).map(|i| format!("{i}@127.0.0.1:{}", free_port())).collect::<Vec<_>>().join(",");
        let voters = parse_voters(&voters_str).unwrap();
        let mut children = Children((1..=3).map(|i| (i, spawn(i, &voters_str, root.path()))).collect());
        let client = Arc::new(ControllerClient::new(voters.clone(), None));
        register(&client).await;
        let (rate, p50, p99) = creations(client.clone(), "triple").await;
        println!("{:<34} {:>12.0} {:>10.2} {:>10.2}", "3 voters (processes, TCP)", rate, ms(p50), ms(p99));

        // Failover: SIGKILL the leader, time until a write commits on the new one.
        let mut times = Vec::new();
        for round in 0..FAILOVERS {
            let alive: Vec<u64> = children.0.iter().map(|(i, _)| *i).collect();
            let leader = leader_of(&voters, &alive).await;
            let pos = children.0.iter().position(|(i, _)| *i == leader).unwrap();
            let (_, mut c) = children.0.remove(pos);
            let killed = Instant::now();
            c.kill().unwrap();
            let client = ControllerClient::new(voters.clone(), None);
            let mut i = 0;
            while !create(&client, format!("failover-{round}-{i}"), Duration::from_secs(30)).await {
                i += 1;
            }
            times.push(killed.elapsed());
            let _ = c.wait();
            children.0.push((leader, spawn(leader, &voters_str, root.path())));
            // Let the restarted voter catch up before the next round.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        times.sort();
        println!(
            "leader SIGKILL -> first committed write on the new leader over {FAILOVERS} rounds: min {:.0} ms, median {:.0} ms, max {:.0} ms (election timeout {}-{} ms)",
            ms(times[0]),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1]),
            QuorumConfig::new(1, vec![], "127.0.0.1:1".parse().unwrap(), PathBuf::new()).election_timeout_min.as_millis(),
            QuorumConfig::new(1, vec![], "127.0.0.1:1".parse().unwrap(), PathBuf::new()).election_timeout_max.as_millis(),
        );
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
