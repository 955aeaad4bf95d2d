//! Replication figures on three local brokers (combined controller+broker nodes behind the
//! test harness's proxies, optimised build): RF=3, `min.insync.replicas=2`, acks=all.
//!
//! 1. Throughput and latency of librdkafka producing 100-byte records for FJORD_BENCH_SECS
//!    (default 10) seconds to a 6-partition topic.
//! 2. Failover: FJORD_BENCH_ROUNDS (default 5) times, SIGKILL the leader of a one-partition
//!    topic and time until the first acks=all record sent after the kill is acknowledged (by
//!    the new leader), then restart the killed broker and wait for a full ISR again.
//!
//! Brokers heartbeat every 250 ms and are fenced after 1.5 s of silence (Fjord's defaults, as
//! in `config/cluster-3/`; FJORD_BENCH_HEARTBEAT_MS and FJORD_BENCH_SESSION_MS change them);
//! failover time is bounded below by that session timeout.
//!
//! Run: `cargo bench -p fjord-benches --bench replication`.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fjord_tests::cluster::{Cluster, ClusterSpec};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

const BIN: &str = env!("CARGO_BIN_EXE_fjord-bench-broker");
const BOUND: Duration = Duration::from_secs(60);

/// Delivery callbacks: counts, and latency samples (µs) from the send instant in the opaque.
struct Deliveries {
    start: Instant,
    ok: AtomicU64,
    failed: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Self::DeliveryOpaque) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                let us = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
                if let Ok(mut l) = self.latencies_us.lock() {
                    l.push(us);
                }
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn throughput(cluster: &Cluster, secs: u64) {
    let topic = "rf3";
    cluster
        .create_topic(topic, 6, 3, &[("min.insync.replicas", "2")], BOUND)
        .expect("create topic");
    cluster
        .wait_leaders(topic, 6, &cluster.node_ids(), BOUND)
        .expect("leaders");
    let ctx = Deliveries {
        start: Instant::now(),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latencies_us: Mutex::new(Vec::with_capacity(32_000_000)),
    };
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "1000000")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("compression.type", "none")
        .set("enable.idempotence", "false")
        .create_with_context(ctx)
        .expect("producer");
    let value = [b'x'; 100];
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut sent = 0u64;
    while Instant::now() < deadline {
        let record = BaseRecord::with_opaque_to(topic, Box::new(Instant::now()))
            .payload(&value[..])
            .key(&[] as &[u8]);
        match producer.send::<[u8], [u8]>(record) {
            Ok(()) => sent += 1,
            Err(_) => std::thread::sleep(Duration::from_micros(200)),
        }
    }
    let _ = producer.flush(Duration::from_secs(60));
    let ctx = producer.context();
    let elapsed = ctx.start.elapsed().as_secs_f64();
    let ok = ctx.ok.load(Ordering::Relaxed);
    let mut lat = ctx
        .latencies_us
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    lat.sort_unstable();
    println!(
        "RF=3 acks=all 100 B: {:.0} records/s, {:.1} MB/s ({ok} acknowledged of {sent} sent, {} failed, {elapsed:.1} s); latency ms p50 {:.1} p99 {:.1} p999 {:.1}",
        ok as f64 / elapsed,
        ok as f64 * 100.0 / elapsed / 1e6,
        ctx.failed.load(Ordering::Relaxed),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
    );
}

/// One record, acks=all, waited for; `Ok` when acknowledged within `timeout`.
fn produce_one(producer: &ThreadedProducer<Deliveries>, topic: &str, timeout: Duration) -> bool {
    let before = producer.context().ok.load(Ordering::Relaxed);
    let record = BaseRecord::with_opaque_to(topic, Box::new(Instant::now()))
        .payload("failover")
        .key("k")
        .partition(0);
    if producer.send(record).is_err() {
        return false;
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if producer.context().ok.load(Ordering::Relaxed) > before {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

fn failover(cluster: &mut Cluster, rounds: u64) {
    let topic = "failover";
    cluster
        .create_topic(topic, 1, 3, &[("min.insync.replicas", "2")], BOUND)
        .expect("create topic");
    cluster
        .wait_leaders(topic, 1, &cluster.node_ids(), BOUND)
        .expect("leader");
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .create_with_context(Deliveries {
            start: Instant::now(),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latencies_us: Mutex::new(Vec::new()),
        })
        .expect("producer");
    assert!(produce_one(&producer, topic, BOUND), "first produce");
    let mut times = Vec::new();
    for round in 0..rounds {
        let leader = cluster.leader(topic, 0).expect("a leader");
        let i = cluster.index_of(leader).expect("leader index");
        let killed = Instant::now();
        cluster.kill(i);
        // A record is sent at once; meanwhile the metadata is polled for the new leader.
        let (acked, moved) = std::thread::scope(|s| {
            let t = s.spawn(|| produce_one(&producer, topic, BOUND));
            let mut moved = None;
            while moved.is_none() && killed.elapsed() < BOUND && !t.is_finished() {
                if cluster.leader(topic, 0).is_some_and(|l| l != leader) {
                    moved = Some(killed.elapsed());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (t.join().unwrap_or(false), moved)
        });
        assert!(acked, "produce after the kill");
        let took = killed.elapsed();
        let new_leader = cluster.leader(topic, 0);
        let moved = moved.map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
        println!(
            "failover round {round}: leader {leader} SIGKILLed; new leader {new_leader:?} in the metadata after {moved}; first acks=all record after the kill acknowledged in {:.2} s",
            took.as_secs_f64()
        );
        times.push(took);
        cluster.restart(i, BOUND).expect("restart");
        let deadline = Instant::now() + BOUND;
        while cluster
            .topic_view(topic, false)
            .first()
            .is_none_or(|p| p.isr.len() < 3)
        {
            assert!(Instant::now() < deadline, "ISR did not refill");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    times.sort();
    if !times.is_empty() {
        println!(
            "failover: median {:.2} s, max {:.2} s over {} rounds (target < 3 s)",
            times[times.len() / 2].as_secs_f64(),
            times[times.len() - 1].as_secs_f64(),
            times.len()
        );
    }
}

fn main() {
    let secs = env_or("FJORD_BENCH_SECS", 10);
    let rounds = env_or("FJORD_BENCH_ROUNDS", 5);
    let only = std::env::var("FJORD_BENCH_ONLY").unwrap_or_default();
    let heartbeat = env_or("FJORD_BENCH_HEARTBEAT_MS", 250);
    let session = env_or("FJORD_BENCH_SESSION_MS", 1500);
    let spec = ClusterSpec::new(3)
        .with("broker.heartbeat.interval.ms", &heartbeat.to_string())
        .with("broker.session.timeout.ms", &session.to_string());
    let mut cluster = Cluster::start(Path::new(BIN), spec).expect("cluster");
    println!(
        "fjord replication benchmark: 3 nodes ({BIN}); broker.heartbeat.interval.ms={heartbeat} \
         broker.session.timeout.ms={session}; load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if only.is_empty() || only == "throughput" {
        throughput(&cluster, secs);
    }
    if only.is_empty() || only == "failover" {
        failover(&mut cluster, rounds);
    }
}
