//! A cluster of combined (broker + controller) `fjord` processes on 127.0.0.1, each behind
//! proxies the test controls (see [`crate::proxy`]).
//!
//! Node `i` (0-based; its `node.id` is `i + 1`) binds its PLAINTEXT listener on an ephemeral
//! port and its CONTROLLER listener on a port chosen here, but every other process only knows
//! it by its proxies: `advertised.listeners` names the client proxy (so clients and replica
//! fetchers of other brokers go through it), and `controller.quorum.voters` names the
//! controller proxies (so Raft traffic and brokers' controller RPCs go through them). Killing,
//! restarting and isolating a node are then the harness's operations; queries the harness makes
//! for itself (Metadata, quorum status) go to the real listeners, so they work whatever the
//! network looks like and show each node's own view.
//!
//! Every wait is bounded; children are SIGKILLed when the cluster is dropped, and by the kernel
//! if the test process dies first.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::admin::{self, PartitionInfo};
use crate::proxy::{Network, Proxy, ProxyStats};

/// Bound on one harness query (Metadata, quorum status).
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Default bound on a node starting to serve clients.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How the cluster is configured. Every node gets the same `extra` properties (Kafka names;
/// they override the harness defaults); `per_node` properties apply to one node only and
/// override both.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub nodes: usize,
    pub cluster_id: String,
    pub extra: Vec<(String, String)>,
    /// `(node index, key, value)`: see [`ClusterSpec::with_node`].
    pub per_node: Vec<(usize, String, String)>,
    /// `RUST_LOG` for the nodes.
    pub rust_log: String,
}

impl ClusterSpec {
    pub fn new(nodes: usize) -> ClusterSpec {
        ClusterSpec {
            nodes,
            cluster_id: "fjordClusterHarness0001".into(),
            extra: Vec::new(),
            per_node: Vec::new(),
            rust_log: "info,openraft=warn".into(),
        }
    }

    pub fn with(mut self, key: &str, value: &str) -> ClusterSpec {
        self.extra.push((key.to_string(), value.to_string()));
        self
    }

    /// Sets `key` on node `node_index` only (0-based, so its `node.id` is `node_index + 1`),
    /// e.g. a different `broker.rack` per node. It overrides a harness default or a
    /// [`ClusterSpec::with`] value for that node; setting the same key twice for a node keeps
    /// the last value. Not for the keys the harness itself writes per node (`node.id`,
    /// `listeners`, `advertised.listeners`, `controller.*`, `cluster.id`, `log.dirs`,
    /// `metadata.log.dir`): the config file would hold them twice and the node refuse it.
    pub fn with_node(mut self, node_index: usize, key: &str, value: &str) -> ClusterSpec {
        self.per_node
            .retain(|(i, k, _)| !(*i == node_index && k == key));
        self.per_node
            .push((node_index, key.to_string(), value.to_string()));
        self
    }

    /// The properties set for node `i` alone.
    fn node_properties(&self, i: usize) -> impl Iterator<Item = (&str, &str)> {
        self.per_node
            .iter()
            .filter(move |(n, _, _)| *n == i)
            .map(|(_, k, v)| (k.as_str(), v.as_str()))
    }
}

struct NodeProc {
    id: i32,
    dir: PathBuf,
    controller_port: u16,
    client_proxy: Proxy,
    controller_proxy: Proxy,
    child: Option<Child>,
    /// Receives the real PLAINTEXT address once the process prints it.
    started: Option<mpsc::Receiver<SocketAddr>>,
    client_addr: Option<SocketAddr>,
    starts: usize,
}

impl NodeProc {
    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("run-{}.log", self.starts))
    }
}

/// A running cluster; see the module documentation.
pub struct Cluster {
    binary: PathBuf,
    spec: ClusterSpec,
    network: Arc<Network>,
    nodes: Vec<NodeProc>,
    rt: tokio::runtime::Runtime,
    root: PathBuf,
    // Declared last: removed after the processes are killed.
    tmp: Option<tempfile::TempDir>,
}

/// Ports that were free a moment ago, all distinct (each listener is held until all are
/// chosen).
fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// Makes the child get SIGKILL when the thread that spawned it exits, so nodes do not outlive
/// a test process that is itself killed (Drop does not run then). The cluster must therefore
/// be driven from one thread that lives as long as it does (the test's).
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // Safety: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl Cluster {
    /// Starts `spec.nodes` nodes of `binary` with data in a new temporary directory, and waits
    /// until every one serves clients and all are registered and unfenced. With
    /// `FJORD_KEEP_CLUSTER=1` the directory is kept after the test.
    pub fn start(binary: &Path, spec: ClusterSpec) -> Result<Cluster, String> {
        let tmp = tempfile::Builder::new()
            .prefix("fjord-cluster-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let root = tmp.path().to_path_buf();
        let mut c = Cluster::create(binary, spec, &root)?;
        c.tmp = Some(tmp);
        if std::env::var("FJORD_KEEP_CLUSTER").as_deref() == Ok("1") {
            eprintln!("FJORD_KEEP_CLUSTER=1: keeping {}", c.keep_files().display());
        }
        c.start_all(START_TIMEOUT)?;
        Ok(c)
    }

    /// Sets up proxies and configs under `root` without starting anything.
    pub fn create(binary: &Path, spec: ClusterSpec, root: &Path) -> Result<Cluster, String> {
        let network = Network::new();
        let ports = free_ports(spec.nodes).map_err(|e| format!("ports: {e}"))?;
        let mut nodes = Vec::new();
        for (i, port) in ports.into_iter().enumerate() {
            let dir = root.join(format!("node-{}", i + 1));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let proxy =
                |what| Proxy::start(i, network.clone()).map_err(|e| format!("{what} proxy: {e}"));
            nodes.push(NodeProc {
                id: i as i32 + 1,
                dir,
                controller_port: port,
                client_proxy: proxy("client")?,
                controller_proxy: proxy("controller")?,
                child: None,
                started: None,
                client_addr: None,
                starts: 0,
            });
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let c = Cluster {
            binary: binary.to_path_buf(),
            spec,
            network,
            nodes,
            rt,
            root: root.to_path_buf(),
            tmp: None,
        };
        for i in 0..c.nodes.len() {
            c.write_config(i)?;
        }
        Ok(c)
    }

    fn write_config(&self, i: usize) -> Result<(), String> {
        let n = &self.nodes[i];
        let voters = self
            .nodes
            .iter()
            .map(|m| format!("{}@{}", m.id, m.controller_proxy.addr()))
            .collect::<Vec<_>>()
            .join(",");
        let d = n.dir.display();
        let mut text = format!(
            "node.id = {id}\n\
             process.roles = \"broker,controller\"\n\
             listeners = \"PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{cport}\"\n\
             advertised.listeners = \"PLAINTEXT://{adv}\"\n\
             controller.listener.names = \"CONTROLLER\"\n\
             controller.quorum.voters = \"{voters}\"\n\
             cluster.id = \"{cid}\"\n\
             log.dirs = \"{d}/logs\"\n\
             metadata.log.dir = \"{d}/metadata\"\n",
            id = n.id,
            cport = n.controller_port,
            adv = n.client_proxy.addr(),
            cid = self.spec.cluster_id,
        );
        let nodes = self.nodes.len().to_string();
        let min_isr = if self.nodes.len() >= 3 { "2" } else { "1" };
        // Defaults for a replicated cluster; a short heartbeat and session so a dead broker is
        // fenced (and its partitions get new leaders) within a few seconds.
        let defaults = [
            ("default.replication.factor", nodes.as_str()),
            ("offsets.topic.replication.factor", nodes.as_str()),
            ("min.insync.replicas", min_isr),
            ("broker.heartbeat.interval.ms", "500"),
            ("broker.session.timeout.ms", "3000"),
            ("group.initial.rebalance.delay.ms", "0"),
        ];
        // A key appears once in the file: a node's own value wins over `extra`, which wins
        // over the defaults.
        let own = |k: &str| self.spec.node_properties(i).any(|(o, _)| o == k);
        for (k, v) in defaults {
            if !self.spec.extra.iter().any(|(e, _)| e == k) && !own(k) {
                let _ = writeln!(text, "\"{k}\" = \"{v}\"");
            }
        }
        for (k, v) in &self.spec.extra {
            if !own(k) {
                let _ = writeln!(text, "\"{k}\" = \"{v}\"");
            }
        }
        for (k, v) in self.spec.node_properties(i) {
            let _ = writeln!(text, "\"{k}\" = \"{v}\"");
        }
        let path = self.config_path(i);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Spawns every node that is not running, then waits (bounded by `timeout` in all) for all
    /// of them to serve and be registered and unfenced.
    pub fn start_all(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        // All at once: a combined node only serves once the quorum has a leader, which needs
        // a majority of the voters running.
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                self.spawn(i)?;
            }
        }
        for i in 0..self.nodes.len() {
            self.wait_serving(i, deadline.saturating_duration_since(Instant::now()))?;
        }
        let all = self.node_ids();
        self.wait_brokers(&all, deadline.saturating_duration_since(Instant::now()))
    }

    // ------------------------------------------------------------------ addresses and paths

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `node.id` of node `i`.
    pub fn node_id(&self, i: usize) -> i32 {
        self.nodes[i].id
    }

    pub fn node_ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The index of the node with `node.id` `id`.
    pub fn index_of(&self, id: i32) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// `bootstrap.servers` for clients: every node's client proxy.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.client_proxy.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s advertised address (its client proxy).
    pub fn client_addr(&self, i: usize) -> String {
        self.nodes[i].client_proxy.addr().to_string()
    }

    /// Node `i`'s real PLAINTEXT listener while it runs (bypasses the proxy).
    pub fn direct_addr(&self, i: usize) -> Option<SocketAddr> {
        self.nodes[i].client_addr
    }

    /// Node `i`'s real CONTROLLER listener (bypasses the proxy).
    pub fn controller_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].controller_port)
    }

    /// The directory holding every node's data, config and logs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Keeps the cluster's directory after the cluster is dropped (for post-mortems), and
    /// returns it.
    pub fn keep_files(&mut self) -> &Path {
        if let Some(t) = &mut self.tmp {
            t.disable_cleanup(true);
        }
        &self.root
    }

    pub fn node_dir(&self, i: usize) -> &Path {
        &self.nodes[i].dir
    }

    pub fn config_path(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.join("fjord.toml")
    }

    /// Node `i`'s `log.dirs` (one directory).
    pub fn log_dir(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.join("logs")
    }

    pub fn metadata_dir(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.join("metadata")
    }

    /// The stderr log of node `i`'s latest start.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.nodes[i].log_path()
    }

    /// The last `lines` lines of node `i`'s log of its latest start.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Every node's log tail, labelled, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for i in 0..self.nodes.len() {
            let _ = writeln!(
                out,
                "---- node {} ({}):\n{}",
                self.nodes[i].id,
                self.log_path(i).display(),
                self.log_tail(i, lines)
            );
        }
        out
    }

    /// Lines of every log of node `i` (all its starts) that contain `needle`.
    pub fn grep_logs(&self, i: usize, needle: &str) -> Vec<String> {
        (1..=self.nodes[i].starts)
            .flat_map(|k| {
                std::fs::read_to_string(self.nodes[i].dir.join(format!("run-{k}.log")))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains(needle))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub fn proxy_stats(&self, i: usize) -> (ProxyStats, ProxyStats) {
        (
            self.nodes[i].client_proxy.stats(),
            self.nodes[i].controller_proxy.stats(),
        )
    }

    // ------------------------------------------------------------------ processes

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let config = self.config_path(i);
        let n = &mut self.nodes[i];
        if n.child.is_some() {
            return Err(format!("node {} is already running", n.id));
        }
        n.starts += 1;
        let log = std::fs::File::create(n.log_path()).map_err(|e| format!("log file: {e}"))?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(["broker", "--config"])
            .arg(&config)
            .env("RUST_LOG", &self.spec.rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.binary.display()))?;
        self.network.set_pid(i, Some(child.id()));
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(addr) = line.strip_prefix("fjord: listening PLAINTEXT ")
                        && let Ok(a) = addr.trim().parse()
                    {
                        let _ = tx.send(a);
                    }
                }
            });
        }
        n.child = Some(child);
        n.started = Some(rx);
        n.client_addr = None;
        // The controller listener is fixed, so Raft traffic can flow while the node starts.
        n.controller_proxy
            .set_upstream(Some(SocketAddr::from(([127, 0, 0, 1], n.controller_port))));
        Ok(())
    }

    /// Starts node `i` (not running) without waiting for it.
    pub fn start_node(&mut self, i: usize) -> Result<(), String> {
        self.spawn(i)
    }

    /// Waits until node `i` prints its PLAINTEXT address (it serves clients only once
    /// registered and unfenced), then forwards its client proxy there. Returns how long the
    /// wait took.
    pub fn wait_serving(&mut self, i: usize, timeout: Duration) -> Result<Duration, String> {
        let t0 = Instant::now();
        let deadline = t0 + timeout;
        loop {
            if self.nodes[i].client_addr.is_some() {
                return Ok(t0.elapsed());
            }
            if let Some(status) = self.exit_status(i) {
                return Err(format!(
                    "node {} exited ({status}) while starting:\n{}",
                    self.nodes[i].id,
                    self.log_tail(i, 40)
                ));
            }
            let got = match &self.nodes[i].started {
                Some(rx) => rx.recv_timeout(Duration::from_millis(100)),
                None => return Err(format!("node {} is not running", self.nodes[i].id)),
            };
            match got {
                Ok(addr) => {
                    let n = &mut self.nodes[i];
                    n.client_addr = Some(addr);
                    n.client_proxy.set_upstream(Some(addr));
                }
                Err(_) if Instant::now() < deadline => {}
                Err(_) => {
                    return Err(format!(
                        "node {} did not serve within {timeout:?}:\n{}",
                        self.nodes[i].id,
                        self.log_tail(i, 40)
                    ));
                }
            }
        }
    }

    /// Whether node `i`'s process is running (it may be partitioned).
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i].child.is_some() && self.exit_status(i).is_none()
    }

    /// `Some(status)` if node `i`'s process has exited on its own (not reaped by the harness).
    pub fn exit_status(&mut self, i: usize) -> Option<ExitStatus> {
        self.nodes[i]
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Indices of nodes whose process exited without the harness stopping it.
    pub fn crashed(&mut self) -> Vec<(usize, ExitStatus)> {
        (0..self.nodes.len())
            .filter_map(|i| self.exit_status(i).map(|s| (i, s)))
            .collect()
    }

    fn reaped(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.started = None;
        n.client_addr = None;
        n.client_proxy.set_upstream(None);
        n.controller_proxy.set_upstream(None);
        self.network.set_pid(i, None);
    }

    /// SIGKILLs node `i` and reaps it. Returns whether it was running.
    pub fn kill(&mut self, i: usize) -> bool {
        let Some(mut c) = self.nodes[i].child.take() else {
            return false;
        };
        let _ = c.kill();
        let _ = c.wait();
        self.reaped(i);
        true
    }

    /// SIGTERM (a clean, controlled shutdown) and a bounded wait; SIGKILL if it does not end
    /// in time. Returns the exit status if it ended on its own.
    pub fn terminate(&mut self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        let mut c = self.nodes[i].child.take()?;
        // Safety: signalling a child we spawned and have not reaped.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        let mut status = None;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = c.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if status.is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.reaped(i);
        status
    }

    /// SIGTERMs every running node (all at once, so controlled shutdowns overlap as in a
    /// rolling stop of the whole cluster) and waits; returns nodes that had to be SIGKILLed.
    pub fn stop_all(&mut self, timeout: Duration) -> Vec<usize> {
        for n in &self.nodes {
            if let Some(c) = &n.child {
                // Safety: signalling a child we spawned and have not reaped.
                unsafe {
                    libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        let mut forced = Vec::new();
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_some() && self.terminate(i, timeout).is_none() {
                forced.push(i);
            }
        }
        forced
    }

    /// SIGKILL, start again on the same data, and wait until it serves clients. Returns how
    /// long the restart took to serve.
    pub fn restart(&mut self, i: usize, timeout: Duration) -> Result<Duration, String> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_serving(i, timeout)
    }

    // ------------------------------------------------------------------ network

    fn enforce(&self) {
        for n in &self.nodes {
            n.client_proxy.enforce();
            n.controller_proxy.enforce();
        }
    }

    /// Cuts node `i` off from every other node and from clients (see [`crate::proxy`]).
    pub fn partition(&self, i: usize) {
        self.network.isolate(i);
        self.enforce();
    }

    pub fn heal(&self, i: usize) {
        self.network.heal(i);
        self.enforce();
    }

    pub fn heal_all(&self) {
        for i in 0..self.nodes.len() {
            self.network.heal(i);
        }
        self.enforce();
    }

    pub fn is_partitioned(&self, i: usize) -> bool {
        self.network.is_isolated(i)
    }

    // ------------------------------------------------------------------ cluster state

    /// Node `i`'s own Metadata answer (asked on its real listener).
    pub fn metadata_from(
        &self,
        i: usize,
        topics: Option<&[&str]>,
    ) -> Result<kafka_protocol::messages::MetadataResponse, String> {
        let addr = self.nodes[i]
            .client_addr
            .ok_or_else(|| format!("node {} is not serving", self.nodes[i].id))?;
        admin::metadata(&addr.to_string(), topics, QUERY_TIMEOUT)
    }

    /// Unfenced broker ids in node `i`'s metadata, sorted.
    pub fn brokers_seen_by(&self, i: usize) -> Result<Vec<i32>, String> {
        let md = self.metadata_from(i, Some(&[]))?;
        let mut ids: Vec<i32> = md.brokers.iter().map(|b| b.node_id.0).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Waits until every serving, non-partitioned node lists exactly `expected` (node ids) as
    /// its unfenced brokers.
    pub fn wait_brokers(&self, expected: &[i32], timeout: Duration) -> Result<(), String> {
        let mut want = expected.to_vec();
        want.sort_unstable();
        let deadline = Instant::now() + timeout;
        loop {
            let mut last = Vec::new();
            let mut ok = true;
            for i in 0..self.nodes.len() {
                if self.nodes[i].client_addr.is_none() || self.is_partitioned(i) {
                    continue;
                }
                let seen = self.brokers_seen_by(i);
                ok &= seen.as_ref() == Ok(&want);
                last.push((self.nodes[i].id, seen));
            }
            if ok && !last.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "brokers {want:?} not all registered and unfenced within {timeout:?}; \
                     seen (node, brokers): {last:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The freshest view of `topic`'s partitions: for each partition, the answer with the
    /// highest leader epoch among serving nodes that are not partitioned (or all serving nodes
    /// if `include_partitioned`).
    pub fn topic_view(&self, topic: &str, include_partitioned: bool) -> Vec<PartitionInfo> {
        let mut best: std::collections::BTreeMap<i32, PartitionInfo> = Default::default();
        for i in 0..self.nodes.len() {
            if !include_partitioned && self.is_partitioned(i) {
                continue;
            }
            let Ok(md) = self.metadata_from(i, Some(&[topic])) else {
                continue;
            };
            for p in admin::partitions(&md, topic) {
                match best.get(&p.partition) {
                    Some(b) if b.leader_epoch >= p.leader_epoch => {}
                    _ => {
                        best.insert(p.partition, p);
                    }
                }
            }
        }
        best.into_values().collect()
    }

    /// The leader (node id) of `topic`-`partition` in the freshest view, if any.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        self.topic_view(topic, false)
            .into_iter()
            .find(|p| p.partition == partition)
            .map(|p| p.leader)
            .filter(|l| *l >= 0)
    }

    /// Waits until every partition of `topic` has a leader (in the freshest view) among
    /// `allowed` node ids; returns the view.
    pub fn wait_leaders(
        &self,
        topic: &str,
        partitions: usize,
        allowed: &[i32],
        timeout: Duration,
    ) -> Result<Vec<PartitionInfo>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let view = self.topic_view(topic, false);
            if view.len() == partitions && view.iter().all(|p| allowed.contains(&p.leader)) {
                return Ok(view);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{topic}: not every partition led by one of {allowed:?} within \
                     {timeout:?}: {view:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Each running node's view of the Raft quorum: (node index, reported leader, term).
    pub fn quorum_views(&mut self) -> Vec<(usize, Option<u64>, u64)> {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            if !self.is_running(i) {
                continue;
            }
            let addr = self.controller_addr(i);
            if let Ok(s) = self
                .rt
                .block_on(fjord_raft::client::quorum_status(&addr, QUERY_TIMEOUT))
            {
                out.push((i, s.leader, s.term));
            }
        }
        out
    }

    /// The active controller (node index): the leader named at the highest term by a running,
    /// non-partitioned node, which itself agrees it leads at that term.
    pub fn controller_leader(&mut self) -> Option<usize> {
        let views = self.quorum_views();
        let (_, leader, term) = views
            .iter()
            .filter(|(i, l, _)| l.is_some() && !self.is_partitioned(*i))
            .max_by_key(|(_, _, t)| *t)?;
        let idx = self.index_of(i32::try_from((*leader)?).ok()?)?;
        views
            .iter()
            .any(|(i, l, t)| *i == idx && *l == *leader && t == term)
            .then_some(idx)
    }

    /// Waits (bounded) for an active controller other than `not`; see
    /// [`Cluster::controller_leader`].
    pub fn wait_controller_leader(
        &mut self,
        not: Option<usize>,
        timeout: Duration,
    ) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.controller_leader().filter(|l| Some(*l) != not) {
                return Ok(l);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no controller leader (other than {not:?}) within {timeout:?}; views \
                     (node index, leader, term): {:?}",
                    self.quorum_views()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// CreateTopics through any serving, non-partitioned node (retried until `timeout` while
    /// nodes answer with retriable errors).
    pub fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            for i in 0..self.nodes.len() {
                let Some(addr) = self.nodes[i].client_addr else {
                    continue;
                };
                if self.is_partitioned(i) {
                    continue;
                }
                match admin::create_topic(
                    &addr.to_string(),
                    topic,
                    partitions,
                    replication_factor,
                    configs,
                    Duration::from_secs(10),
                ) {
                    Ok((0, _)) => return Ok(()),
                    // NOT_CONTROLLER, REQUEST_TIMED_OUT: retry.
                    Ok((code @ (41 | 7), msg)) => last = format!("error {code} {msg:?}"),
                    Ok((code, msg)) => return Err(format!("CreateTopics {topic}: {code} {msg:?}")),
                    Err(e) => last = e,
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "CreateTopics {topic} did not succeed within {timeout:?}: {last}"
        ))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
