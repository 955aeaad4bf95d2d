//! Chaos suite: three combined nodes, an RF=3 topic with min.insync.replicas=2, idempotent
//! acks=all librdkafka producers and a consumer group running throughout, while every few
//! seconds a random broker, the active controller or a partition leader is SIGKILLed and
//! restarted, or one node is cut off the network by its proxies and healed.
//!
//! At the end the cluster is healed and stopped, every replica's log is read from disk, and
//! `fjord_tests::consistency` checks Kafka's guarantees: every acknowledged record committed
//! exactly once at its acknowledged offset and in acknowledgement order, nothing duplicated,
//! replicas identical below the high watermark, nothing a consumer saw lost.
//!
//! Short by default (about a minute of chaos); `FJORD_CHAOS_SECS=600` runs ten minutes and
//! `FJORD_CHAOS_SEED=N` replays a run's sequence of actions; `FJORD_CHAOS_KEEP=1` keeps the
//! run's directory (kept anyway when the run fails); `FJORD_CHAOS_CONSUMER_DEBUG=cgrp,fetch`
//! turns on librdkafka debug logs in the consumers. Run alone with output:
//!   cargo test -p fjord-tests --test chaos -- --nocapture

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fjord_tests::admin::{self, PartitionInfo};
use fjord_tests::clients;
use fjord_tests::cluster::{Cluster, ClusterSpec, die_with_parent};
use fjord_tests::consistency::{self, Ack, Consumed, PartitionState, ReplicaLog};
use fjord_tests::replica_log;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");
const TOPIC: &str = "chaos";
const PARTITIONS: usize = 6;
const PRODUCERS: usize = 2;
const CONSUMERS: usize = 2;
/// Records per second per producer.
const RATE: u32 = 250;
/// Default length of the chaos phase.
const DEFAULT_SECS: u64 = 60;
/// Bound on the cluster returning to three unfenced brokers after a round.
const RECOVER_BOUND: Duration = Duration::from_secs(30);
/// Bound on leaders moving off a killed or isolated broker.
const FAILOVER_BOUND: Duration = Duration::from_secs(20);
/// Bound on a node restarting.
const RESTART_BOUND: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One long-running chaos_client.py process.
struct ClientProc {
    name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    out: PathBuf,
    summary: PathBuf,
    stderr: PathBuf,
}

impl ClientProc {
    fn start(py: &Path, dir: &Path, name: &str, role: &str, mut args: Value) -> ClientProc {
        let out = dir.join(format!("{name}.jsonl"));
        let summary = dir.join(format!("{name}.summary"));
        let stderr = dir.join(format!("{name}.stderr"));
        args["out"] = json!(out);
        let mut cmd = Command::new(py);
        cmd.arg(repo_root().join("tests/clients/chaos_client.py"))
            .arg(role)
            .arg(args.to_string())
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&summary).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        ClientProc {
            name: name.to_string(),
            child: Some(child),
            stdin,
            out,
            summary,
            stderr,
        }
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Closes stdin (the client's stop signal), waits up to `timeout`, then kills. Returns the
    /// client's summary line, or a description of what went wrong.
    fn stop(&mut self, timeout: Duration) -> Result<Value, String> {
        self.stdin.take();
        let Some(mut child) = self.child.take() else {
            return Err(format!("{} was not running", self.name));
        };
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break Some(s);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let text = std::fs::read_to_string(&self.summary).unwrap_or_default();
        match (status, serde_json::from_str(text.trim())) {
            (Some(s), Ok(v)) if s.success() => Ok(v),
            (status, _) => Err(format!(
                "{} ended with {status:?}; stderr tail:\n{}",
                self.name,
                tail(
                    &std::fs::read_to_string(&self.stderr).unwrap_or_default(),
                    15
                )
            )),
        }
    }
}

impl Drop for ClientProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        // A client SIGKILLed mid-line leaves a torn last line.
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// A broker taken out (killed or isolated) while it led partitions.
struct Outage {
    what: String,
    at_ms: i64,
    led: Vec<i32>,
    /// Until the freshest metadata showed other leaders for all of `led`.
    leaders_moved: Option<Duration>,
}

#[derive(Default)]
struct Log {
    events: Vec<String>,
    outages: Vec<Outage>,
    controller_failovers: Vec<Duration>,
    recover_failures: usize,
    restarts: Vec<Duration>,
}

impl Log {
    fn event(&mut self, t0: Instant, text: String) {
        let line = format!("[{:>6.1}s] {text}", t0.elapsed().as_secs_f64());
        eprintln!("{line}");
        self.events.push(line);
    }
}

fn led_by(view: &[PartitionInfo], node: i32) -> Vec<i32> {
    view.iter()
        .filter(|p| p.leader == node)
        .map(|p| p.partition)
        .collect()
}

/// Watches (bounded) what follows taking `victim` out: the active controller moving (if it
/// was the controller) and every partition it led getting another leader, each timed from
/// `since`; records the outage.
#[allow(clippy::too_many_arguments)]
fn observe_failover(
    cluster: &mut Cluster,
    log: &mut Log,
    t0: Instant,
    victim: usize,
    led: &[i32],
    was_controller: bool,
    what: String,
    at_ms: i64,
    since: Instant,
) {
    let victim_id = cluster.node_id(victim);
    let deadline = since + FAILOVER_BOUND;
    let mut moved = None;
    let mut controller = None;
    while Instant::now() < deadline && (moved.is_none() || (was_controller && controller.is_none()))
    {
        if moved.is_none() {
            let view = cluster.topic_view(TOPIC, false);
            let all_moved = led.iter().all(|p| {
                view.iter()
                    .any(|v| v.partition == *p && v.leader >= 0 && v.leader != victim_id)
            });
            if all_moved {
                moved = Some(since.elapsed());
            }
        }
        if was_controller
            && controller.is_none()
            && cluster.controller_leader().is_some_and(|c| c != victim)
        {
            controller = Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if was_controller {
        match controller {
            Some(d) => log.controller_failovers.push(d),
            None => {
                let views = cluster.quorum_views();
                log.event(
                    t0,
                    format!(
                        "  no new controller leader within {FAILOVER_BOUND:?}; quorum views \
                         (node index, leader, term): {views:?}"
                    ),
                );
            }
        }
    }
    let seen: Vec<String> = (0..cluster.len())
        .filter(|i| *i != victim)
        .filter_map(|i| {
            cluster
                .brokers_seen_by(i)
                .ok()
                .map(|b| format!("{}: {b:?}", cluster.node_id(i)))
        })
        .collect();
    log.event(
        t0,
        format!(
            "  new controller after {controller:?}, leaders moved after {moved:?}; unfenced \
             brokers as each other node sees them: {seen:?}"
        ),
    );
    log.outages.push(Outage {
        what,
        at_ms,
        led: led.to_vec(),
        leaders_moved: moved,
    });
}

#[derive(Clone, Copy, Debug)]
enum Action {
    KillRandom,
    KillController,
    KillPartitionLeader,
    IsolateRandom,
    IsolateController,
}

fn pick(rng: &mut StdRng) -> Action {
    match rng.gen_range(0..9) {
        0 | 1 => Action::KillRandom,
        2 => Action::KillController,
        3..=5 => Action::KillPartitionLeader,
        6 | 7 => Action::IsolateRandom,
        _ => Action::IsolateController,
    }
}

/// Brings the cluster back to three unfenced brokers (restarting any node that died on its
/// own); records a failure if it cannot within the bound.
fn settle(cluster: &mut Cluster, log: &mut Log, t0: Instant) {
    for (i, status) in cluster.crashed() {
        log.event(
            t0,
            format!(
                "node {} EXITED ON ITS OWN ({status}); log tail:\n{}",
                cluster.node_id(i),
                cluster.log_tail(i, 20)
            ),
        );
        cluster.kill(i);
    }
    for i in 0..cluster.len() {
        if !cluster.is_running(i) {
            match cluster
                .start_node(i)
                .and_then(|_| cluster.wait_serving(i, RESTART_BOUND))
            {
                Ok(d) => log.restarts.push(d),
                Err(e) => log.event(t0, format!("restart failed: {e}")),
            }
        }
    }
    let all = cluster.node_ids();
    if let Err(e) = cluster.wait_brokers(&all, RECOVER_BOUND) {
        log.recover_failures += 1;
        log.event(t0, format!("cluster did not recover: {e}"));
    }
}

fn run_round(cluster: &mut Cluster, rng: &mut StdRng, log: &mut Log, t0: Instant) {
    // Every round draws the same values whatever the cluster's state, so a seed replays the
    // same sequence of actions and timings (victims that depend on the state may differ).
    let action = pick(rng);
    let any_node = rng.gen_range(0..cluster.len());
    let any_partition = rng.gen_range(0..PARTITIONS as i32);
    let down_for = Duration::from_millis(rng.gen_range(0..2000));
    let hold = Duration::from_millis(rng.gen_range(4000..9000));
    let view = cluster.topic_view(TOPIC, false);
    let controller = cluster.controller_leader();
    let victim = match action {
        Action::KillRandom | Action::IsolateRandom => any_node,
        Action::KillController | Action::IsolateController => controller.unwrap_or(any_node),
        Action::KillPartitionLeader => view
            .iter()
            .find(|v| v.partition == any_partition)
            .and_then(|v| cluster.index_of(v.leader))
            .unwrap_or(any_node),
    };
    let victim_id = cluster.node_id(victim);
    let led = led_by(&view, victim_id);
    let was_controller = controller == Some(victim);
    let what = format!(
        "{action:?}: node {victim_id}{} leading partitions {led:?}",
        if was_controller {
            " (active controller)"
        } else {
            ""
        }
    );
    let at_ms = now_ms();
    let since = Instant::now();
    match action {
        Action::KillRandom | Action::KillController | Action::KillPartitionLeader => {
            cluster.kill(victim);
            log.event(t0, format!("SIGKILL {what}"));
            observe_failover(
                cluster,
                log,
                t0,
                victim,
                &led,
                was_controller,
                what,
                at_ms,
                since,
            );
            std::thread::sleep(down_for);
            match cluster
                .start_node(victim)
                .and_then(|_| cluster.wait_serving(victim, RESTART_BOUND))
            {
                Ok(d) => {
                    log.restarts.push(d);
                    log.event(
                        t0,
                        format!("  node {victim_id} restarted, serving after {d:?}"),
                    );
                }
                Err(e) => log.event(t0, format!("  restart of node {victim_id} failed: {e}")),
            }
        }
        Action::IsolateRandom | Action::IsolateController => {
            cluster.partition(victim);
            log.event(t0, format!("ISOLATE {what}"));
            observe_failover(
                cluster,
                log,
                t0,
                victim,
                &led,
                was_controller,
                what,
                at_ms,
                since,
            );
            std::thread::sleep(hold.saturating_sub(since.elapsed()));
            cluster.heal(victim);
            log.event(t0, format!("  healed node {victim_id}"));
        }
    }
    settle(cluster, log, t0);
}

fn stats(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.sort();
    format!(
        "n={} min {:?} median {:?} max {:?}",
        v.len(),
        v[0],
        v[v.len() / 2],
        v[v.len() - 1]
    )
}

#[test]
fn chaos_loses_no_acknowledged_record() {
    let Some(py) = clients::python() else {
        return;
    };
    let secs = std::env::var("FJORD_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECS);
    let seed = std::env::var("FJORD_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() as u64);
    eprintln!("chaos: {secs}s, seed {seed} (FJORD_CHAOS_SEED={seed} replays the choices)");
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = Instant::now();
    let t0_ms = now_ms();
    let mut log = Log::default();

    let mut cluster = Cluster::start(Path::new(BIN), ClusterSpec::new(3))
        .unwrap_or_else(|e| panic!("cluster start: {e}"));
    cluster
        .create_topic(
            TOPIC,
            PARTITIONS as i32,
            3,
            &[
                ("min.insync.replicas", "2"),
                ("unclean.leader.election.enable", "false"),
            ],
            Duration::from_secs(20),
        )
        .unwrap();
    let all = cluster.node_ids();
    cluster
        .wait_leaders(TOPIC, PARTITIONS, &all, Duration::from_secs(20))
        .unwrap();
    log.event(
        t0,
        format!(
            "cluster up, topic {TOPIC} created: {:?}",
            cluster.topic_view(TOPIC, false)
        ),
    );

    // Client outputs next to the nodes' data, so one directory holds a run's evidence.
    let work = cluster.root().join("clients");
    std::fs::create_dir_all(&work).unwrap();
    let bootstrap = cluster.bootstrap();
    let mut producers: Vec<ClientProc> = (0..PRODUCERS)
        .map(|i| {
            ClientProc::start(
                &py,
                &work,
                &format!("producer-{i}"),
                "producer",
                json!({"bootstrap": bootstrap, "topic": TOPIC, "partitions": PARTITIONS,
                       "id": format!("p{i}"), "rate": RATE}),
            )
        })
        .collect();
    let mut consumers: Vec<ClientProc> = (0..CONSUMERS)
        .map(|i| {
            ClientProc::start(
                &py,
                &work,
                &format!("consumer-{i}"),
                "consumer",
                json!({"bootstrap": bootstrap, "topic": TOPIC, "group": "chaos-group",
                       "debug": std::env::var("FJORD_CHAOS_CONSUMER_DEBUG").ok()}),
            )
        })
        .collect();

    // Steady state first: acknowledgements flowing before anything fails.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(30)
        && producers
            .iter()
            .all(|p| read_jsonl(&p.out).iter().all(|l| l.get("o").is_none()))
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    log.event(
        t0,
        format!("first acknowledgements after {:?}", warm.elapsed()),
    );
    std::thread::sleep(Duration::from_secs(3));

    let chaos_end = Instant::now() + Duration::from_secs(secs);
    let mut rounds = 0;
    while Instant::now() < chaos_end {
        rounds += 1;
        run_round(&mut cluster, &mut rng, &mut log, t0);
        for c in producers.iter_mut().chain(consumers.iter_mut()) {
            if !c.running() {
                log.event(t0, format!("client {} is no longer running", c.name));
            }
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(1000..3000)));
    }

    // Heal everything and let the clients finish against a whole cluster.
    let chaos_over = Instant::now();
    cluster.heal_all();
    settle(&mut cluster, &mut log, t0);
    log.event(
        t0,
        format!("chaos over after {rounds} rounds; clients finishing"),
    );
    std::thread::sleep(Duration::from_secs(5));
    let mut client_summaries = Vec::new();
    let producers_stopping_ms = now_ms();
    for p in &mut producers {
        client_summaries.push((p.name.clone(), p.stop(Duration::from_secs(45))));
    }
    for c in &mut consumers {
        client_summaries.push((c.name.clone(), c.stop(Duration::from_secs(20))));
    }

    // Final state: wait (bounded) for full ISRs, then high watermarks from the leaders.
    let full_isr = Instant::now();
    let mut view = cluster.topic_view(TOPIC, false);
    while full_isr.elapsed() < Duration::from_secs(30)
        && !(view.len() == PARTITIONS && view.iter().all(|p| p.isr.len() == 3))
    {
        std::thread::sleep(Duration::from_millis(200));
        view = cluster.topic_view(TOPIC, false);
    }
    let mut hw: BTreeMap<i32, i64> = BTreeMap::new();
    for p in &view {
        let Some(i) = cluster.index_of(p.leader) else {
            continue;
        };
        let Some(addr) = cluster.direct_addr(i) else {
            continue;
        };
        if let Ok(answers) = admin::high_watermarks(
            &addr.to_string(),
            TOPIC,
            &[p.partition],
            Duration::from_secs(5),
        ) {
            for (part, err, off) in answers {
                if err == 0 {
                    hw.insert(part, off);
                }
            }
        }
    }
    // After the final heal no proxy may still hold a black-holed connection.
    let mut proxy_lines = Vec::new();
    for i in 0..cluster.len() {
        let (client, controller) = cluster.proxy_stats(i);
        proxy_lines.push(format!(
            "node {} proxies: client {client:?}; controller {controller:?}",
            cluster.node_id(i)
        ));
        assert_eq!(
            client.held_now + controller.held_now,
            0,
            "black-holed connections left after healing: {client:?} {controller:?}"
        );
    }
    let forced = cluster.stop_all(Duration::from_secs(20));
    let mut crashed_lines: Vec<String> = Vec::new();
    for i in 0..cluster.len() {
        for needle in ["panicked", "EXITED"] {
            crashed_lines.extend(cluster.grep_logs(i, needle));
        }
    }
    let crashes = log
        .events
        .iter()
        .filter(|e| e.contains("EXITED ON ITS OWN"))
        .count();

    // Every replica's log, from disk.
    let mut states = Vec::new();
    let mut notes = Vec::new();
    for part in 0..PARTITIONS as i32 {
        let mut replicas: Vec<ReplicaLog> = Vec::new();
        let mut checkpointed = Vec::new();
        for i in 0..cluster.len() {
            let node = cluster.node_id(i);
            match replica_log::read_replica(&cluster.log_dir(i), node, TOPIC, part) {
                Ok(Some(l)) => replicas.push(l),
                Ok(None) => notes.push(format!("partition {part}: node {node} has no log")),
                Err(e) => notes.push(format!("partition {part}: node {node}: {e}")),
            }
            if let Ok(map) = replica_log::checkpointed_high_watermarks(&cluster.log_dir(i))
                && let Some(h) = map.get(&(TOPIC.to_string(), part))
            {
                checkpointed.push((node, *h));
            }
        }
        let info = view.iter().find(|p| p.partition == part);
        let leader = info.map_or(-1, |p| p.leader);
        let reference = if replicas.iter().any(|r| r.node == leader) {
            leader
        } else {
            let r = replicas
                .iter()
                .max_by_key(|r| r.log_end)
                .map_or(-1, |r| r.node);
            notes.push(format!(
                "partition {part}: final leader {leader} unknown or without a log; checking \
                 against node {r}, the longest log"
            ));
            r
        };
        let high_watermark = match hw.get(&part) {
            Some(h) => *h,
            None => {
                let h = checkpointed.iter().map(|(_, h)| *h).max().unwrap_or(0);
                notes.push(format!(
                    "partition {part}: no high watermark from a leader; using the largest \
                     checkpointed one, {h} ({checkpointed:?})"
                ));
                h
            }
        };
        let leo: Vec<(i32, i64)> = replicas.iter().map(|r| (r.node, r.log_end)).collect();
        notes.push(format!(
            "partition {part}: leader {leader}, isr {:?}, high watermark {high_watermark}, log \
             ends {leo:?}, checkpointed high watermarks {checkpointed:?}",
            info.map(|p| p.isr.clone()).unwrap_or_default()
        ));
        states.push(PartitionState {
            partition: part,
            high_watermark,
            reference,
            isr: info.map(|p| p.isr.clone()).unwrap_or_default(),
            replicas,
        });
    }

    // What the clients saw.
    let mut acks = Vec::new();
    let mut failed = 0usize;
    let mut fatal = Vec::new();
    let mut ack_times: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for p in &producers {
        for l in read_jsonl(&p.out) {
            if let Some(f) = l.get("fatal") {
                fatal.push(format!("{} {f}", l["i"]));
            } else if l.get("err").is_some() {
                failed += 1;
            } else if let (Some(i), Some(v), Some(part), Some(o)) = (
                l["i"].as_str(),
                l["v"].as_str(),
                l["p"].as_i64(),
                l["o"].as_i64(),
            ) {
                acks.push(Ack {
                    producer: i.to_string(),
                    partition: part as i32,
                    offset: o,
                    value: v.to_string(),
                });
                if let Some(t) = l["t"].as_i64() {
                    ack_times.entry(part as i32).or_default().push(t);
                }
            }
        }
    }
    for times in ack_times.values_mut() {
        times.sort_unstable();
    }
    let mut consumed = Vec::new();
    let mut consumer_errors = 0;
    let mut consumer_lines = Vec::new();
    let mut stalled_consumers = 0;
    for c in &consumers {
        let (mut n, mut rebalances, mut last, mut gap) = (0usize, 0usize, t0_ms, 0i64);
        for l in read_jsonl(&c.out) {
            if l.get("err").is_some() {
                consumer_errors += 1;
            } else if l.get("assigned").is_some() {
                rebalances += 1;
            } else if let (Some(part), Some(o), Some(v)) =
                (l["p"].as_i64(), l["o"].as_i64(), l["v"].as_str())
            {
                n += 1;
                if let Some(t) = l["t"].as_i64() {
                    gap = gap.max(t - last);
                    last = t;
                }
                consumed.push(Consumed {
                    partition: part as i32,
                    offset: o,
                    value: v.to_string(),
                });
            }
        }
        // Producers wrote until they were told to stop; a consumer that has had nothing for a
        // long while before that is stuck, not caught up.
        let stalled = producers_stopping_ms - last > 10_000;
        consumer_lines.push(format!(
            "{}: {n} records, {rebalances} assignments, last record at +{:.1}s, longest gap \
             between records {:.1}s{}",
            c.name,
            (last - t0_ms) as f64 / 1000.0,
            gap.max(producers_stopping_ms - last) as f64 / 1000.0,
            if stalled {
                format!(
                    "\n    STALLED: nothing received in the last {:.1}s before the producers \
                     stopped; its stderr tail:\n{}",
                    (producers_stopping_ms - last) as f64 / 1000.0,
                    tail(&std::fs::read_to_string(&c.stderr).unwrap_or_default(), 10)
                )
            } else {
                String::new()
            }
        ));
        stalled_consumers += usize::from(stalled);
    }
    let distinct_consumed = consumed
        .iter()
        .map(|c| (c.partition, c.offset))
        .collect::<std::collections::HashSet<_>>()
        .len();
    let chaos_over_at = chaos_over.duration_since(t0).as_secs_f64();

    // Failover: SIGKILL/isolation of a leader to the first acks=all acknowledgement of each of
    // its partitions afterwards (from the new leader: the old one is dead or unreachable).
    let mut produce_failovers = Vec::new();
    let mut never_acked = 0;
    for o in &log.outages {
        for p in &o.led {
            match ack_times
                .get(p)
                .and_then(|ts| ts.iter().find(|t| **t > o.at_ms))
            {
                Some(t) => produce_failovers.push(Duration::from_millis((t - o.at_ms) as u64)),
                None => never_acked += 1,
            }
        }
    }

    let report = consistency::check(&acks, &consumed, &states);
    let keep = std::env::var("FJORD_CHAOS_KEEP").as_deref() == Ok("1")
        || report.failed()
        || stalled_consumers > 0
        || acks.is_empty()
        || crashes > 0;
    let kept = keep.then(|| cluster.keep_files().to_path_buf());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n===== chaos summary (seed {seed}, {secs}s, {rounds} rounds) ====="
    );
    let _ = writeln!(
        out,
        "producers: {} acknowledged, {failed} failed deliveries, {} fatal errors {fatal:?}",
        acks.len(),
        fatal.len()
    );
    let _ = writeln!(
        out,
        "consumers: {} records received ({distinct_consumed} distinct offsets; {} were \
         committed in all), {consumer_errors} client errors; chaos ended at +{chaos_over_at:.1}s",
        consumed.len(),
        states.iter().map(|s| s.high_watermark.max(0)).sum::<i64>()
    );
    for l in &consumer_lines {
        let _ = writeln!(out, "  {l}");
    }
    for (name, s) in &client_summaries {
        let _ = writeln!(out, "  {name}: {s:?}");
    }
    let _ = writeln!(
        out,
        "leader outages: {}; leaders moved in: {}; not moved within {FAILOVER_BOUND:?}: {}",
        log.outages.len(),
        stats(log.outages.iter().filter_map(|o| o.leaders_moved).collect()),
        log.outages
            .iter()
            .filter(|o| o.leaders_moved.is_none())
            .count()
    );
    let _ = writeln!(
        out,
        "failover, leader SIGKILL/isolation -> first acks=all ack on the partition: {} \
         (partitions never acknowledged again: {never_acked})",
        stats(produce_failovers)
    );
    let _ = writeln!(
        out,
        "controller failover: {}",
        stats(log.controller_failovers.clone())
    );
    let _ = writeln!(
        out,
        "restarts serving after: {}",
        stats(log.restarts.clone())
    );
    let _ = writeln!(
        out,
        "rounds the cluster did not recover from within {RECOVER_BOUND:?}: {}; nodes that \
         exited on their own: {crashes}; SIGKILLed at the final stop: {forced:?}",
        log.recover_failures
    );
    for l in &proxy_lines {
        let _ = writeln!(out, "  {l}");
    }
    for o in &log.outages {
        let _ = writeln!(
            out,
            "  outage at {} ms: {} -> leaders moved {:?}",
            o.at_ms, o.what, o.leaders_moved
        );
    }
    for n in &notes {
        let _ = writeln!(out, "  {n}");
    }
    if !crashed_lines.is_empty() {
        let _ = writeln!(out, "broker log lines about crashes:");
        for l in crashed_lines.iter().take(20) {
            let _ = writeln!(out, "  {l}");
        }
    }
    if let Some(dir) = &kept {
        let _ = writeln!(
            out,
            "run directory kept for inspection: {} (node-N/run-K.log, clients/)",
            dir.display()
        );
    }
    let _ = writeln!(out, "checker: {}", report.summary());
    eprintln!("{out}");

    assert!(
        !acks.is_empty(),
        "no record was acknowledged during the run{out}\n{}",
        cluster.log_tails(30)
    );
    assert!(
        crashes == 0,
        "a node exited on its own during the run\n{out}"
    );
    assert!(!report.failed(), "Kafka guarantees violated:\n{out}");
}
