//! Broker benchmark (issue #4): the real `fjord` broker, one process on loopback, driven by
//! librdkafka through the `rdkafka` crate.
//!
//! For 100-byte and 1 KiB records, 1 and 6 partitions, `acks=1` and `acks=all`, it produces as
//! fast as the client can for a fixed time and prints records/s, MiB/s (record values only),
//! per-record produce latency (send call to delivery callback) and the broker's CPU time per
//! record; then one consumer reads the topic back from the start (page cache). Last, fixed-rate
//! runs of 100-byte records with `acks=all`: 100,000/s with `linger.ms=1` and 1,000,000/s with
//! `linger.ms=5`, latency counted from each record's intended send time. Last, `fjord perf
//! produce` run with the same settings right after librdkafka, side by side (issue #6: the
//! CLI's figures agree with librdkafka's at a fixed rate).
//!
//! Run: `cargo bench -p fjord-benches --bench broker`. Environment:
//! - `FJORD_BENCH_SECS`: seconds per produce phase (default 5; the fixed-rate runs take the same).
//! - `FJORD_BENCH_ONLY`: run only the phases whose label contains this text (e.g. `100B 1p`,
//!   `fixed`), for profiling one phase.
//! - `FJORD_BENCH_QUEUE`: the producer's `queue.buffering.max.messages` (default 100000, about
//!   ten 1 MiB batches of 100-byte records: enough to keep the pipeline full; a larger queue
//!   gave the same records/s here and only added queueing delay to the latency figures).
//!
//! The broker is this package's `fjord-bench-broker` binary: the same `main` as `fjord`, built
//! by Cargo with the bench profile whenever this benchmark is built, so it is never stale and
//! never a debug build.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fjord_tests::broker::BrokerProcess;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const BIN: &str = env!("CARGO_BIN_EXE_fjord-bench-broker");

/// Producer settings typical of throughput runs: batches of up to 1 MiB, 5 ms to fill them.
const LINGER_MS: &str = "5";
const BATCH_BYTES: &str = "1048576";
/// Fixed-rate runs of 100-byte records with acks=all: (records/s, linger.ms, partitions). The
/// brief's targets: p99 under 3 ms at 100,000/s with linger.ms=1, under 50 ms at 1,000,000/s.
const FIXED_RUNS: [(u64, &str, i32); 4] = [
    (100_000, "1", 1),
    (100_000, "1", 6),
    (1_000_000, LINGER_MS, 1),
    (1_000_000, LINGER_MS, 6),
];

struct Settings {
    secs: f64,
    only: Option<String>,
    queue_messages: u64,
}

impl Settings {
    fn from_env() -> Settings {
        let secs = std::env::var("FJORD_BENCH_SECS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .unwrap_or(5.0);
        let queue_messages = std::env::var("FJORD_BENCH_QUEUE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        Settings {
            secs,
            only: std::env::var("FJORD_BENCH_ONLY")
                .ok()
                .filter(|s| !s.is_empty()),
            queue_messages,
        }
    }

    fn wants(&self, label: &str) -> bool {
        self.only.as_deref().is_none_or(|o| label.contains(o))
    }
}

/// Delivery bookkeeping, shared by the sending thread and librdkafka's polling thread.
struct Deliveries {
    /// Send times are passed through librdkafka as nanoseconds since this instant.
    epoch: Instant,
    /// Each delivered record's send second (since `epoch`) and send-to-callback latency in
    /// microseconds.
    latencies_us: Mutex<Vec<(u32, u32)>>,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Nanoseconds since `epoch` of the latest delivery callback.
    last_ns: AtomicU64,
}

impl Deliveries {
    fn new(epoch: Instant, expected: usize) -> Deliveries {
        Deliveries {
            epoch,
            latencies_us: Mutex::new(Vec::with_capacity(expected)),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
            last_ns: AtomicU64::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        let now = self.now_ns();
        match result {
            Ok(_) => {
                let us = now.saturating_sub(sent_ns as u64) / 1000;
                let second = (sent_ns / 1_000_000_000) as u32;
                self.latencies_us
                    .lock()
                    .unwrap()
                    .push((second, us.min(u32::MAX as u64) as u32));
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| e.to_string());
            }
        }
        self.last_ns.fetch_max(now, Ordering::Relaxed);
    }
}

/// (user, system) CPU time of a process and all its threads, from /proc/<pid>/stat.
fn proc_times(pid: &str) -> (Duration, Duration) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may contain spaces; fields are counted after its closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Safety: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    // Fields 14 and 15 of proc_pid_stat(5) (utime, stime) are the 12th and 13th after the name.
    let ticks = |i: usize| {
        let t = fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        Duration::from_nanos(t * 1_000_000_000 / hz)
    };
    (ticks(11), ticks(12))
}

fn cpu_time(pid: &str) -> Duration {
    let (user, system) = proc_times(pid);
    user + system
}

fn system_time(pid: &str) -> Duration {
    proc_times(pid).1
}

/// Busy CPU time of the whole machine (every core, everything but idle and iowait), from
/// /proc/stat. Minus the broker's and the client's, it is what other programs took during a
/// phase: the honest noise figure on a shared machine.
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return Duration::ZERO;
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    // Safety: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(busy * 1_000_000_000 / hz)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// p99 of each second's records (by send time), then the median of those: the steady-state
/// tail. This machine pauses for 50-400 ms a few times a minute whatever runs on it (a plain
/// `write()` loop in Python sees the same gaps), and one pause puts a 5 s run's overall p99 at
/// the pause length; the overall figures still report it.
fn median_p99_per_second(timed: &[(u32, u32)]) -> f64 {
    let mut by_second: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    for &(second, us) in timed {
        by_second.entry(second).or_default().push(us);
    }
    // The last second is partial.
    by_second.pop_last();
    let mut p99s: Vec<f64> = by_second
        .into_values()
        .map(|mut v| {
            v.sort_unstable();
            percentile(&v, 0.99)
        })
        .collect();
    if p99s.is_empty() {
        return f64::NAN;
    }
    p99s.sort_by(f64::total_cmp);
    p99s[p99s.len() / 2]
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[i] as f64 / 1000.0
}

struct ProduceResult {
    delivered: u64,
    failed: u64,
    first_error: Option<String>,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    /// The median over each whole second of sending of that second's p99.
    p99_median_second: f64,
    max_ms: f64,
    broker_cpu: Duration,
    client_cpu: Duration,
    /// CPU time of everything else on the machine during the phase.
    other_cpu: Duration,
}

impl ProduceResult {
    fn records_per_sec(&self) -> f64 {
        self.delivered as f64 / self.secs
    }

    fn broker_us_per_record(&self) -> f64 {
        self.broker_cpu.as_secs_f64() * 1e6 / self.delivered.max(1) as f64
    }
}

struct Run<'a> {
    bootstrap: &'a str,
    broker_pid: &'a str,
    topic: &'a str,
    partitions: i32,
    size: usize,
    acks: &'a str,
    linger_ms: &'a str,
    /// None: as fast as the client goes; Some(r): r records/s, paced by intended send times.
    rate: Option<u64>,
    secs: f64,
    queue_messages: u64,
}

fn producer_config(run: &Run<'_>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", run.bootstrap)
        .set("acks", run.acks)
        .set("linger.ms", run.linger_ms)
        .set("batch.size", BATCH_BYTES)
        // librdkafka caps a batch at message.max.bytes too (default 1,000,000).
        .set("message.max.bytes", BATCH_BYTES)
        .set("batch.num.messages", "1000000")
        .set("compression.type", "none")
        .set(
            "queue.buffering.max.messages",
            run.queue_messages.to_string(),
        )
        .set("queue.buffering.max.kbytes", "2097151")
        .set("enable.idempotence", "false");
    c
}

/// Produces for `run.secs` seconds (or at `run.rate`), then waits for every delivery.
fn produce(run: &Run<'_>) -> ProduceResult {
    let expected = match run.rate {
        Some(r) => (r as f64 * run.secs) as usize + 1,
        // Reserved (not touched) up front: growing the vector would copy it inside the
        // delivery callback and show up as a latency spike.
        None => (run.secs * 4e6) as usize,
    };
    let ctx = Deliveries::new(Instant::now(), expected);
    let producer: ThreadedProducer<Deliveries> = producer_config(run)
        .create_with_context(ctx)
        .expect("create producer");
    // Fetch the topic's metadata before timing starts, as a long-running producer would have it.
    producer
        .client()
        .fetch_metadata(Some(run.topic), Duration::from_secs(10))
        .expect("topic metadata");
    let payload = vec![0x5au8; run.size];
    let ctx = producer.context();
    let parts = run.partitions as u64;
    let broker_cpu0 = cpu_time(run.broker_pid);
    let client_cpu0 = cpu_time("self");
    let machine0 = machine_busy();
    let start_ns = ctx.now_ns();
    let end_ns = start_ns + (run.secs * 1e9) as u64;
    let mut sent: u64 = 0;
    'send: loop {
        let now = ctx.now_ns();
        if now >= end_ns {
            break;
        }
        // Latency counts from the intended send time in paced runs, so a stalled client or
        // broker shows up in the figures instead of silently lowering the offered rate.
        let (stamp, burst_end) = match run.rate {
            None => (now, sent + 1),
            Some(r) => {
                let due = |i: u64| start_ns + i * 1_000_000_000 / r;
                if due(sent) > now {
                    std::thread::sleep(Duration::from_nanos((due(sent) - now).min(200_000)));
                    continue;
                }
                // Everything due by now, in one burst.
                let n = (now - start_ns) * r / 1_000_000_000 + 1;
                (due(sent), n.max(sent + 1))
            }
        };
        while sent < burst_end {
            let stamp = match run.rate {
                Some(r) => stamp.max(start_ns + sent * 1_000_000_000 / r),
                None => stamp,
            };
            // Round-robin over partitions, no key: every partition gets the same load.
            let mut record = BaseRecord::with_opaque_to(run.topic, stamp as usize)
                .partition((sent % parts) as i32)
                .payload(&payload[..]);
            loop {
                match producer.send::<[u8], [u8]>(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_micros(100));
                        if ctx.now_ns() >= end_ns + 30_000_000_000 {
                            break 'send;
                        }
                    }
                    Err((e, _)) => panic!("send: {e}"),
                }
            }
            sent += 1;
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .expect("every record delivered within 120 s");
    let broker_cpu = cpu_time(run.broker_pid).saturating_sub(broker_cpu0);
    let client_cpu = cpu_time("self").saturating_sub(client_cpu0);
    let other_cpu = machine_busy()
        .saturating_sub(machine0)
        .saturating_sub(broker_cpu + client_cpu);
    let secs = (ctx.last_ns.load(Ordering::Relaxed).saturating_sub(start_ns)) as f64 / 1e9;
    let timed = std::mem::take(&mut *ctx.latencies_us.lock().unwrap());
    let p99_median_second = median_p99_per_second(&timed);
    let mut lat: Vec<u32> = timed.into_iter().map(|(_, us)| us).collect();
    lat.sort_unstable();
    ProduceResult {
        delivered: ctx.delivered.load(Ordering::Relaxed),
        failed: ctx.failed.load(Ordering::Relaxed),
        first_error: ctx.first_error.lock().unwrap().clone(),
        secs,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        p999_ms: percentile(&lat, 0.999),
        p99_median_second,
        max_ms: lat.last().map_or(f64::NAN, |v| *v as f64 / 1000.0),
        broker_cpu,
        client_cpu,
        other_cpu,
    }
}

struct ConsumeResult {
    records: u64,
    secs: f64,
    broker_cpu: Duration,
    client_cpu: Duration,
}

/// One consumer that assigns every partition itself at offset 0 (no group membership, no
/// committed offsets) and reads `expected` records.
fn consume(
    bootstrap: &str,
    broker_pid: &str,
    topic: &str,
    partitions: i32,
    size: usize,
    expected: u64,
) -> ConsumeResult {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // librdkafka refuses assign() without a group id, though nothing here joins the group.
        .set("group.id", "fjord-bench")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.message.max.bytes", "4194304")
        // librdkafka's defaults (100,000 queued records, then a 1 s fetch backoff) stall a
        // consumer that reads a backlog faster than one poll loop drains it.
        .set("queued.min.messages", "1000000")
        .set("fetch.queue.backoff.ms", "5")
        .create()
        .expect("create consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("add partition");
    }
    let broker_cpu0 = cpu_time(broker_pid);
    let client_cpu0 = cpu_time("self");
    let start = Instant::now();
    consumer.assign(&tpl).expect("assign");
    let mut next = vec![0i64; partitions as usize];
    let mut records = 0u64;
    // The rate counts from the first record: librdkafka spends about 0.5 s on its own start
    // (offset lookup, fetcher wake-up) before it sends the first Fetch.
    let mut first = None;
    let mut last = start;
    let deadline = start + Duration::from_secs(300);
    while records < expected && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Ok(m)) => {
                let p = m.partition() as usize;
                assert_eq!(
                    m.offset(),
                    next[p],
                    "partition {p}: records in order, no gap"
                );
                assert_eq!(m.payload().map_or(0, <[u8]>::len), size);
                next[p] += 1;
                records += 1;
                last = Instant::now();
                first.get_or_insert(last);
            }
            Some(Err(e)) => panic!("consume {topic}: {e}"),
        }
    }
    let broker_cpu = cpu_time(broker_pid).saturating_sub(broker_cpu0);
    let client_cpu = cpu_time("self").saturating_sub(client_cpu0);
    assert_eq!(
        records, expected,
        "consumed every produced record of {topic}"
    );
    ConsumeResult {
        records,
        secs: (last - first.unwrap_or(start)).as_secs_f64(),
        broker_cpu,
        client_cpu,
    }
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("create admin client")
}

fn create_topic(
    rt: &tokio::runtime::Runtime,
    admin: &AdminClient<DefaultClientContext>,
    name: &str,
    partitions: i32,
) {
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let r = rt
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .expect("create topics");
    for t in r {
        t.unwrap_or_else(|(n, e)| panic!("create {n}: {e}"));
    }
}

fn delete_topic(
    rt: &tokio::runtime::Runtime,
    admin: &AdminClient<DefaultClientContext>,
    name: &str,
) {
    let r = rt
        .block_on(admin.delete_topics(&[name], &AdminOptions::new()))
        .expect("delete topics");
    for t in r {
        t.unwrap_or_else(|(n, e)| panic!("delete {n}: {e}"));
    }
}

/// System CPU time per byte of plain `write()`s of `mib` MiB into a new file in `dir`: the
/// kernel's page-cache cost that every broker append pays too, measured in the same run.
///
/// On this project's VMs that cost swings by 10x: the host backs guest memory lazily and takes
/// freed memory back within seconds (virtio-balloon free page reporting), so a write into a page
/// costs about 2.6 ns/byte when the page is new to the guest and 0.2 ns/byte when it was just
/// freed and reused (`dd` of 1 GB: 2.8 s of system time, 0.23 s right after, 1.1 s after 3 s).
fn page_cache_write_cost(dir: &Path, mib: usize) -> f64 {
    use std::io::Write as _;
    let path = dir.join("page-cache-baseline");
    let chunk = vec![0x5au8; 1 << 20];
    let sys0 = system_time("self");
    let mut f = std::fs::File::create(&path).expect("create baseline file");
    for _ in 0..mib {
        f.write_all(&chunk).expect("write baseline file");
    }
    let sys = system_time("self").saturating_sub(sys0);
    drop(f);
    std::fs::remove_file(&path).expect("remove baseline file");
    sys.as_secs_f64() * 1e9 / (mib << 20) as f64
}

fn size_label(size: usize) -> String {
    if size >= 1024 {
        format!("{}KiB", size / 1024)
    } else {
        format!("{size}B")
    }
}

fn main() {
    // harness = false: Cargo passes `--bench` and any filter; FJORD_BENCH_ONLY is the filter.
    let settings = Settings::from_env();
    let (_, rdkafka_version) = rdkafka::util::get_rdkafka_version();
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = BrokerProcess::start(Path::new(BIN), dir.path(), &[]);
    let pid = broker.pid().expect("broker pid").to_string();
    let bootstrap = broker.bootstrap.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let admin = admin(&bootstrap);

    println!(
        "fjord broker benchmark: one broker process ({BIN}), data in {}",
        dir.path().display()
    );
    println!(
        "client: librdkafka {rdkafka_version} via rdkafka; broker default flush policy (page cache, background fsync)"
    );
    println!(
        "producer: linger.ms={LINGER_MS} batch.size={BATCH_BYTES} compression=none \
         queue.buffering.max.messages={} enable.idempotence=false, no key, partitions round-robin",
        settings.queue_messages
    );
    println!(
        "phase: {} s each (FJORD_BENCH_SECS); latency = send() to delivery callback; MiB/s counts record values only",
        settings.secs
    );
    println!(
        "kernel page-cache write cost now: {:.2} ns/byte of system CPU (plain write() of 512 MiB)",
        page_cache_write_cost(dir.path(), 512)
    );
    println!(
        "load average at start: {}  (cores: {})",
        load_average(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "{:<22} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7} {:>7} {:>7} | {:>11} {:>8} {:>9} {:>7}",
        "produce",
        "records/s",
        "MiB/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "max ms",
        "brk us/r",
        "brk cpu",
        "cli cpu",
        "oth cpu",
        "consume r/s",
        "MiB/s",
        "brk us/r",
        "cli cpu"
    );

    for size in [100usize, 1024] {
        for partitions in [1, 6] {
            for acks in ["1", "all"] {
                let label = format!("{} {}p acks={acks}", size_label(size), partitions);
                if !settings.wants(&label) {
                    continue;
                }
                let topic = format!("bench-{}-{partitions}p-acks{acks}", size_label(size));
                create_topic(&rt, &admin, &topic, partitions);
                let run = Run {
                    bootstrap: &bootstrap,
                    broker_pid: &pid,
                    topic: &topic,
                    partitions,
                    size,
                    acks,
                    linger_ms: LINGER_MS,
                    rate: None,
                    secs: settings.secs,
                    queue_messages: settings.queue_messages,
                };
                let p = produce(&run);
                let c = consume(&bootstrap, &pid, &topic, partitions, size, p.delivered);
                let mib = |records: f64| records * size as f64 / (1 << 20) as f64;
                println!(
                    "{:<22} {:>11.0} {:>8.1} {:>8.2} {:>8.2} {:>8.2} {:>8.1} {:>9.3} {:>7.2} {:>7.2} {:>7.2} | {:>11.0} {:>8.1} {:>9.3} {:>7.2}",
                    label,
                    p.records_per_sec(),
                    mib(p.records_per_sec()),
                    p.p50_ms,
                    p.p99_ms,
                    p.p999_ms,
                    p.max_ms,
                    p.broker_us_per_record(),
                    p.broker_cpu.as_secs_f64() / p.secs,
                    p.client_cpu.as_secs_f64() / p.secs,
                    p.other_cpu.as_secs_f64() / p.secs,
                    c.records as f64 / c.secs,
                    mib(c.records as f64 / c.secs),
                    c.broker_cpu.as_secs_f64() * 1e6 / c.records.max(1) as f64,
                    c.client_cpu.as_secs_f64() / c.secs,
                );
                if p.failed > 0 {
                    println!(
                        "    {} records failed: {}",
                        p.failed,
                        p.first_error.unwrap_or_default()
                    );
                }
                // The topic's data is no longer needed; keep the disk footprint to one phase.
                delete_topic(&rt, &admin, &topic);
            }
        }
    }

    println!();
    println!(
        "fixed rate, 100-byte records, acks=all; latency from each record's intended send time \
         (targets: p99 < 3 ms at 100k/s with linger.ms=1, p99 < 50 ms at 1M/s);\n\
         p99/s med = median over the run's seconds of each second's p99"
    );
    println!(
        "{:<22} {:>11} {:>8} {:>8} {:>10} {:>8} {:>8} {:>9} {:>7} {:>7} {:>7}",
        "produce",
        "records/s",
        "p50 ms",
        "p99 ms",
        "p99/s med",
        "p999 ms",
        "max ms",
        "brk us/r",
        "brk cpu",
        "cli cpu",
        "oth cpu"
    );
    for (rate, linger_ms, partitions) in FIXED_RUNS {
        let label = format!("fixed {}k/s {partitions}p linger={linger_ms}", rate / 1000);
        if !settings.wants(&label) {
            continue;
        }
        let topic = format!("bench-fixed-{}k-{partitions}p", rate / 1000);
        create_topic(&rt, &admin, &topic, partitions);
        let p = produce(&Run {
            bootstrap: &bootstrap,
            broker_pid: &pid,
            topic: &topic,
            partitions,
            size: 100,
            acks: "all",
            linger_ms,
            rate: Some(rate),
            secs: settings.secs,
            queue_messages: settings.queue_messages,
        });
        println!(
            "{:<22} {:>11.0} {:>8.2} {:>8.2} {:>10.2} {:>8.2} {:>8.1} {:>9.3} {:>7.2} {:>7.2} {:>7.2}",
            label,
            p.records_per_sec(),
            p.p50_ms,
            p.p99_ms,
            p.p99_median_second,
            p.p999_ms,
            p.max_ms,
            p.broker_us_per_record(),
            p.broker_cpu.as_secs_f64() / p.secs,
            p.client_cpu.as_secs_f64() / p.secs,
            p.other_cpu.as_secs_f64() / p.secs,
        );
        if p.failed > 0 {
            println!(
                "    {} records failed: {}",
                p.failed,
                p.first_error.unwrap_or_default()
            );
        }
        delete_topic(&rt, &admin, &topic);
    }
    compare_with_fjord_perf(&settings, &rt, &admin, &bootstrap, &pid);
    println!();
    println!("load average at end: {}", load_average());
    drop(broker);
}

/// `fjord perf produce` (this package's broker binary is the same `fjord` main) against
/// librdkafka, one after the other on the same broker, same topic shape and same settings.
/// At a fixed rate both must report the rate they were given; as fast as possible the figures
/// differ by what each client costs, so the client CPU columns are printed beside them.
const PERF_RUNS: [(Option<u64>, &str, &str); 4] = [
    (Some(100_000), "1", "all"),
    (Some(1_000_000), LINGER_MS, "all"),
    (None, LINGER_MS, "1"),
    (None, LINGER_MS, "all"),
];

fn compare_with_fjord_perf(
    settings: &Settings,
    rt: &tokio::runtime::Runtime,
    admin: &AdminClient<DefaultClientContext>,
    bootstrap: &str,
    pid: &str,
) {
    println!();
    println!(
        "fjord perf produce vs librdkafka, 100-byte records, 1 partition, same broker, one after \
         the other; latency from intended send time at a fixed rate, from send otherwise"
    );
    println!(
        "{:<32} {:>11} {:>11} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>9}",
        "produce",
        "rdkafka r/s",
        "fjord r/s",
        "ratio",
        "rdk p50",
        "fj p50",
        "rdk p99",
        "fj p99",
        "rdk cpu",
        "fj cpu",
        "log check"
    );
    for (rate, linger_ms, acks) in PERF_RUNS {
        let label = match rate {
            Some(r) => format!("perf {}k/s linger={linger_ms} acks={acks}", r / 1000),
            None => format!("perf max acks={acks}"),
        };
        if !settings.wants(&label) {
            continue;
        }
        let topic = format!("bench-perf-{}-{acks}", rate.unwrap_or(0));
        create_topic(rt, admin, &topic, 1);
        let rdk = produce(&Run {
            bootstrap,
            broker_pid: pid,
            topic: &topic,
            partitions: 1,
            size: 100,
            acks,
            linger_ms,
            rate,
            secs: settings.secs,
            queue_messages: settings.queue_messages,
        });
        let fj = fjord_perf_produce(bootstrap, &topic, rate, linger_ms, acks, settings.secs);
        let fj_rate = fj.report["records_per_sec"].as_f64().unwrap_or(f64::NAN);
        let fj_ms = |q: &str| fj.report["latency_ms"][q].as_f64().unwrap_or(f64::NAN);
        // Both tools' acknowledged counts against what the partition's log holds: the
        // throughput figures rest on these counts.
        let acked = rdk.delivered + fj.report["records"].as_u64().unwrap_or(0);
        let end = end_offset(bootstrap, &topic);
        let check = if end == Some(acked as i64) {
            "ok".to_string()
        } else {
            format!("{end:?}!={acked}")
        };
        println!(
            "{:<32} {:>11.0} {:>11.0} {:>7.3} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7.2} {:>7.2} {:>9}",
            label,
            rdk.records_per_sec(),
            fj_rate,
            fj_rate / rdk.records_per_sec(),
            rdk.p50_ms,
            fj_ms("p50"),
            rdk.p99_ms,
            fj_ms("p99"),
            rdk.client_cpu.as_secs_f64() / rdk.secs,
            fj.cpu.as_secs_f64() / fj.secs.max(1e-9),
            check,
        );
        if rdk.failed > 0 || fj.report["errors"].as_u64() != Some(0) {
            println!(
                "    failures: librdkafka {} ({}), fjord perf {}",
                rdk.failed,
                rdk.first_error.unwrap_or_default(),
                fj.report
            );
        }
        delete_topic(rt, admin, &topic);
    }
}

/// The partition-0 log end offset (high watermark) of `topic`.
fn end_offset(bootstrap: &str, topic: &str) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .ok()?;
    consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .ok()
        .map(|(_, high)| high)
}

struct PerfRun {
    /// `fjord perf produce --output json`'s summary.
    report: serde_json::Value,
    /// CPU time of the `fjord perf` process, and its wall time.
    cpu: Duration,
    secs: f64,
}

fn fjord_perf_produce(
    bootstrap: &str,
    topic: &str,
    rate: Option<u64>,
    linger_ms: &str,
    acks: &str,
    secs: f64,
) -> PerfRun {
    let records = rate.map_or(u64::MAX / 2, |r| (r as f64 * secs) as u64);
    let mut cmd = std::process::Command::new(BIN);
    cmd.args([
        "perf", "produce", topic, "--output", "json", "-b", bootstrap,
    ])
    .args(["-n", &records.to_string(), "--duration", &secs.to_string()])
    .args(["-s", "100", "--acks", acks, "--linger-ms", linger_ms])
    .args(["--batch-size", BATCH_BYTES]);
    if let Some(r) = rate {
        cmd.args(["--throughput", &r.to_string()]);
    }
    let before = children_cpu();
    let started = Instant::now();
    let out = cmd.output().expect("run fjord perf produce");
    let secs = started.elapsed().as_secs_f64();
    let cpu = children_cpu().saturating_sub(before);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        serde_json::json!({
            "errors": null,
            "stdout": String::from_utf8_lossy(&out.stdout),
            "stderr": String::from_utf8_lossy(&out.stderr),
        })
    });
    PerfRun { report, cpu, secs }
}

/// User + system CPU of this process's waited-for children (the broker is never waited for
/// while the benchmark runs, so the delta around one `fjord perf` run is that run's CPU).
fn children_cpu() -> Duration {
    // Safety: getrusage writes into the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
