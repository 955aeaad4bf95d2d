//! Dedicated roles: three `process.roles = "controller"` processes form the metadata quorum and
//! one `process.roles = "broker"` process serves clients, following the quorum's metadata log
//! over the network. Real clients (librdkafka through confluent-kafka, and kafka-python) use
//! the broker while the quorum leader is SIGKILLed and later restarted.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fjord_raft::client::{fetch_image, quorum_status};
use fjord_tests::clients::{self, ALL, KAFKA_PYTHON, RDKAFKA};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");
const CONTROLLER_IDS: [u64; 3] = [1, 2, 3];
const BROKER_ID: u64 = 4;
/// The cluster id every node is configured with, so all of them agree on it.
const CLUSTER_ID: &str = "fjordRolesTestCluster0";
/// Longest any process may take to start, and the quorum to elect a leader.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest creating a topic may take after the quorum leader was killed.
const FAILOVER_BOUND: Duration = Duration::from_secs(30);
/// Bound on one quorum-status RPC.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);

/// One `fjord broker` process with a fixed config, restartable on the same data.
struct Proc {
    name: String,
    dir: PathBuf,
    child: Option<Child>,
    starts: usize,
}

impl Proc {
    fn new(root: &Path, name: &str, config: String) -> Proc {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("fjord.toml"), config).unwrap();
        Proc {
            name: name.to_string(),
            dir,
            child: None,
            starts: 0,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("run-{}.log", self.starts))
    }

    /// Spawns the process. Returns a channel that receives the PLAINTEXT address once the
    /// process prints it (brokers only).
    fn spawn(&mut self) -> mpsc::Receiver<String> {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let stderr = std::fs::File::create(self.log_path()).unwrap();
        let mut child = Command::new(BIN)
            .args(["broker", "--config"])
            .arg(self.dir.join("fjord.toml"))
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("fjord: listening PLAINTEXT ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        self.child = Some(child);
        rx
    }

    /// Fails the test if the process has exited.
    fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("{} exited ({status}):\n{}", self.name, self.log_tail());
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three controllers and one broker, each its own process, with data under one temp dir.
struct Cluster {
    py: PathBuf,
    rt: tokio::runtime::Runtime,
    controllers: Vec<Proc>,
    controller_addrs: Vec<String>,
    broker: Proc,
    bootstrap: String,
    // Declared last: dropped after the processes are killed.
    _dir: tempfile::TempDir,
}

/// Ports for the three controller listeners: every listener is held until all are chosen, so
/// the three are distinct, then released for the controllers to bind.
fn controller_ports() -> Vec<u16> {
    let held: Vec<TcpListener> = CONTROLLER_IDS
        .iter()
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn common_config(dir: &Path, node_id: u64, voters: &str) -> String {
    let d = dir.display();
    format!(
        "node.id = {node_id}\n\
         controller.quorum.voters = \"{voters}\"\n\
         cluster.id = \"{CLUSTER_ID}\"\n\
         log.dirs = \"{d}/logs\"\n\
         metadata.log.dir = \"{d}/metadata\"\n"
    )
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let py = clients::python()?;
        let dir = tempfile::tempdir().unwrap();
        let ports = controller_ports();
        let voters = CONTROLLER_IDS
            .iter()
            .zip(&ports)
            .map(|(id, p)| format!("{id}@127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let controllers = CONTROLLER_IDS
            .iter()
            .zip(&ports)
            .map(|(id, port)| {
                let name = format!("controller-{id}");
                let mut config = common_config(&dir.path().join(&name), *id, &voters);
                let _ = writeln!(
                    config,
                    "process.roles = \"controller\"\nlisteners = \"CONTROLLER://127.0.0.1:{port}\""
                );
                Proc::new(dir.path(), &name, config)
            })
            .collect();
        let mut config = common_config(&dir.path().join("broker"), BROKER_ID, &voters);
        // A short heartbeat, so the broker finds the new active controller quickly.
        let _ = writeln!(
            config,
            "process.roles = \"broker\"\nlisteners = \"PLAINTEXT://127.0.0.1:0\"\n\
             \"broker.heartbeat.interval.ms\" = \"500\""
        );
        let broker = Proc::new(dir.path(), "broker", config);
        let mut cluster = Cluster {
            py,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            controllers,
            controller_addrs: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            broker,
            bootstrap: String::new(),
            _dir: dir,
        };
        for c in &mut cluster.controllers {
            c.spawn();
        }
        let leader = cluster.wait_for_leader(None, START_TIMEOUT);
        eprintln!("quorum leader: controller {leader}");
        let started = cluster.broker.spawn();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match started.recv_timeout(Duration::from_millis(200)) {
                Ok(addr) => {
                    cluster.bootstrap = addr;
                    break;
                }
                Err(_) if Instant::now() < deadline => cluster.broker.assert_running(),
                Err(_) => panic!(
                    "broker did not start within {START_TIMEOUT:?}:\n{}",
                    cluster.broker.log_tail()
                ),
            }
        }
        Some(cluster)
    }

    fn controller_index(id: u64) -> usize {
        CONTROLLER_IDS.iter().position(|c| *c == id).unwrap()
    }

    /// Waits until every running controller names the same leader (other than `not`), and
    /// returns it.
    fn wait_for_leader(&mut self, not: Option<u64>, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        let mut last = Vec::new();
        while Instant::now() < deadline {
            last.clear();
            for (i, c) in self.controllers.iter_mut().enumerate() {
                if c.child.is_none() {
                    continue;
                }
                c.assert_running();
                let addr = &self.controller_addrs[i];
                last.push(self.rt.block_on(quorum_status(addr, RPC_TIMEOUT)));
            }
            let leaders: Vec<Option<u64>> = last
                .iter()
                .map(|s| s.as_ref().ok().and_then(|s| s.leader))
                .collect();
            if let Some(Some(l)) = leaders.first()
                && leaders.iter().all(|x| *x == Some(*l))
                && Some(*l) != not
            {
                return *l;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no agreed quorum leader within {within:?}: {last:?}");
    }

    fn run(&self, client: &str, op: &str, mut args: Value) -> Value {
        args["bootstrap"] = json!(self.bootstrap);
        clients::run(&self.py, client, op, &args)
    }

    fn create_topic(&self, client: &str, name: &str, partitions: u32) -> Value {
        self.run(
            client,
            "admin",
            json!({"op": "create_topics", "topics": [{"name": name, "partitions": partitions}]}),
        )
    }

    /// Produces `n` keyed records with `producer` and checks `consumer` reads them all back
    /// (together with `already` records produced before), each exactly once.
    fn produce_and_consume(
        &self,
        producer: &str,
        consumer: &str,
        topic: &str,
        tag: &str,
        n: usize,
        already: usize,
    ) -> usize {
        let records: Vec<Value> = (0..n)
            .map(|i| json!({"key": format!("{tag}-{i}"), "value": format!("value {i}")}))
            .collect();
        let r = self.run(
            producer,
            "produce",
            json!({"topic": topic, "records": records, "acks": "all"}),
        );
        let results = r["results"].as_array().unwrap();
        assert_eq!(results.len(), n, "{r}");
        for res in results {
            assert_eq!(
                res["error"],
                Value::Null,
                "{producer} produce to {topic}: {res}\nbroker log:\n{}",
                self.broker.log_tail()
            );
        }
        let total = already + n;
        let r = self.run(
            consumer,
            "consume",
            json!({"topic": topic, "partitions": [0, 1], "count": total, "timeout": 30}),
        );
        let got = r["records"].as_array().unwrap();
        let keys: std::collections::BTreeSet<&str> =
            got.iter().filter_map(|r| r["key"].as_str()).collect();
        assert_eq!(got.len(), total, "{consumer} read from {topic}: {r}");
        assert_eq!(keys.len(), total, "every record exactly once: {r}");
        assert!(keys.contains(format!("{tag}-0").as_str()), "{r}");
        total
    }
}

#[test]
fn dedicated_controllers_and_broker_survive_losing_the_quorum_leader() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };

    // Before any failure: a topic created through the broker, used by both clients.
    let r = cluster.create_topic(RDKAFKA, "before", 2);
    assert_eq!(r["before"], Value::Null, "{r}");
    let mut count = cluster.produce_and_consume(RDKAFKA, KAFKA_PYTHON, "before", "a", 50, 0);
    count = cluster.produce_and_consume(KAFKA_PYTHON, RDKAFKA, "before", "b", 50, count);

    // SIGKILL the controller that leads the quorum.
    let old = cluster.wait_for_leader(None, Duration::from_secs(10));
    let killed_at = Instant::now();
    cluster.controllers[Cluster::controller_index(old)].kill();
    eprintln!("killed the quorum leader, controller {old}");

    // At once, and concurrently: the broker keeps serving the existing topic (its data path
    // needs no controller), and CreateTopics is retried until the two survivors have elected a
    // leader that commits it.
    let cluster_ref = &cluster;
    let (served_after, (first_try, created_after, failed)) = std::thread::scope(|s| {
        let creator = s.spawn(move || {
            let first_try = killed_at.elapsed();
            let mut attempts = Vec::new();
            loop {
                let r = cluster_ref.create_topic(RDKAFKA, "after", 2);
                if r["after"] == Value::Null {
                    return (first_try, killed_at.elapsed(), attempts);
                }
                attempts.push(r);
                assert!(
                    killed_at.elapsed() < FAILOVER_BOUND,
                    "no topic could be created within {FAILOVER_BOUND:?} of killing the \
                     leader: {attempts:?}\nbroker log:\n{}",
                    cluster_ref.broker.log_tail()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        count = cluster_ref.produce_and_consume(RDKAFKA, KAFKA_PYTHON, "before", "c", 50, count);
        count = cluster_ref.produce_and_consume(KAFKA_PYTHON, RDKAFKA, "before", "d", 50, count);
        (killed_at.elapsed(), creator.join().unwrap())
    });
    let new = cluster.wait_for_leader(Some(old), Duration::from_secs(10));
    eprintln!(
        "after killing controller {old}: existing topic served by both clients within \
         {served_after:?}; new leader controller {new}; CreateTopics sent {first_try:?} after \
         the kill succeeded {created_after:?} after it ({} failed attempts before: {failed:?})",
        failed.len()
    );
    assert_ne!(new, old);
    for (producer, consumer) in [(KAFKA_PYTHON, RDKAFKA), (RDKAFKA, KAFKA_PYTHON)] {
        let tag = format!("after-{producer}");
        let already = if producer == KAFKA_PYTHON { 0 } else { 20 };
        cluster.produce_and_consume(producer, consumer, "after", &tag, 20, already);
    }

    // Restart the killed controller: it rejoins as a follower and catches up from disk and
    // the leader, including the topic created while it was down.
    let i = Cluster::controller_index(old);
    cluster.controllers[i].spawn();
    let leader = cluster.wait_for_leader(None, START_TIMEOUT);
    assert_eq!(leader, new, "a rejoining follower does not take over");
    let r = cluster.create_topic(KAFKA_PYTHON, "restarted", 1);
    assert_eq!(r["restarted"], Value::Null, "{r}");
    let addr = cluster.controller_addrs[i].clone();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        cluster.controllers[i].assert_running();
        let image = cluster.rt.block_on(fetch_image(&addr, RPC_TIMEOUT));
        if let Ok(img) = &image
            && ["before", "after", "restarted"]
                .iter()
                .all(|t| img.topic(t).is_some())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted controller {old} did not catch up: {:?}",
            image.map(|i| i.topic_names.keys().cloned().collect::<Vec<_>>())
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The broker still serves everything, with metadata from the healed quorum.
    cluster.produce_and_consume(RDKAFKA, KAFKA_PYTHON, "before", "e", 10, count);
    let topics = cluster.run(KAFKA_PYTHON, "admin", json!({"op": "list_topics"}));
    for t in ["before", "after", "restarted"] {
        assert!(topics.get(t).is_some(), "{t} listed: {topics}");
    }
    for client in ALL {
        let offsets = cluster.run(
            client,
            "list_offsets",
            json!({"topic": "before", "partition": 0}),
        );
        assert_eq!(offsets["earliest"], 0, "{offsets}");
    }
}
