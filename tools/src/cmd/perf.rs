//! `fjord perf produce|consume`: load generators with a progress bar and a final table of
//! records/s, MiB/s and latency percentiles.
//!
//! The producer pipelines: each connection keeps up to `--max-in-flight` Produce requests
//! outstanding, each carrying one batch per partition it serves. Batches are encoded from a
//! reused vector of records that all share one payload buffer, so the hot path allocates per
//! batch, never per record.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::records::{Compression, Record};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::Ctx;
use crate::client::admin::{OffsetSpec, Tp, list_offsets};
use crate::client::fetcher::{FetchOptions, fetch_once};
use crate::client::producer::{self, parse_acks};
use crate::client::records::{encode_records, parse_compression, to_record};
use crate::client::{ClientError, Connection, TopicInfo};
use crate::cmd::now_ms;
use crate::exit::{CliError, Result};
use crate::output::{print_json, print_table, table};

#[derive(Subcommand, Debug)]
pub enum PerfCmd {
    /// Produce records as fast as possible, or at --throughput.
    Produce(ProduceArgs),
    /// Read a topic from its start as fast as possible.
    Consume(ConsumeArgs),
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    pub topic: String,
    /// Records to send.
    #[arg(short = 'n', long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Stop after this many seconds even if records remain.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Bytes of each record's value.
    #[arg(short = 's', long, default_value_t = 100)]
    pub record_size: usize,
    /// Target records per second (default: as fast as possible).
    #[arg(short, long, value_name = "RECORDS/S")]
    pub throughput: Option<u64>,
    /// Acknowledgements: 0, 1 or all.
    #[arg(short, long, default_value = "1")]
    pub acks: String,
    #[arg(short = 'z', long, default_value = "none", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    pub compression: String,
    /// Most bytes of record values in one batch.
    #[arg(long, default_value_t = 1_048_576)]
    pub batch_size: usize,
    /// With --throughput: how long a batch may wait to fill.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// TCP connections (each to the leader of the partitions it serves).
    #[arg(short, long, default_value_t = 1)]
    pub connections: usize,
    /// Outstanding Produce requests per connection.
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Stop after this many records (default: everything up to the end as of the start).
    #[arg(short = 'n', long)]
    pub records: Option<u64>,
    /// Stop when no record arrived for this long.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub timeout_ms: u64,
    /// Most bytes per partition in one fetch.
    #[arg(long, default_value_t = 8_388_608)]
    pub partition_max_bytes: i32,
    /// Most bytes in one fetch response.
    #[arg(long, default_value_t = 52_428_800)]
    pub fetch_max_bytes: i32,
}

pub async fn run(ctx: &Ctx, cmd: PerfCmd) -> Result<()> {
    match cmd {
        PerfCmd::Produce(a) => produce(ctx, a).await,
        PerfCmd::Consume(a) => consume(ctx, a).await,
    }
}

fn progress(len: u64, unit: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let style = ProgressStyle::default_bar()
        .template(&format!(
            "{{elapsed_precise}} [{{bar:40}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, eta {{eta}}) {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style.progress_chars("=> "));
    pb
}

fn new_hist() -> Histogram<u64> {
    // Microseconds from 1 µs to 1 h at 3 significant figures; values above saturate.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Work shared by every producer connection.
struct Shared {
    /// Records not yet claimed by a batch.
    remaining: AtomicI64,
    /// Records claimed so far (rate-limited mode: decides each record's due time).
    claimed: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
    first_error: parking_lot::Mutex<Option<String>>,
    start: Instant,
    /// Nanoseconds between records in rate-limited mode.
    interval_ns: Option<f64>,
    deadline: Option<Instant>,
}

struct Plan {
    topic: TopicInfo,
    acks: i16,
    compression: Compression,
    batch_records: usize,
    linger: Duration,
    max_in_flight: usize,
    timeout_ms: i32,
    payload: Bytes,
}

async fn produce(ctx: &Ctx, a: ProduceArgs) -> Result<()> {
    let acks = parse_acks(&a.acks)
        .ok_or_else(|| CliError::Usage(format!("--acks '{}': use 0, 1 or all", a.acks)))?;
    let compression = parse_compression(&a.compression)
        .ok_or_else(|| CliError::Usage(format!("unknown compression '{}'", a.compression)))?;
    if a.connections == 0 || a.max_in_flight == 0 || a.records == 0 {
        return Err(CliError::Usage(
            "--records, --connections and --max-in-flight must be at least 1".into(),
        ));
    }
    if a.throughput == Some(0) {
        return Err(CliError::Usage("--throughput must be positive".into()));
    }
    let topic = ctx
        .client
        .topics(Some(std::slice::from_ref(&a.topic)))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| CliError::NotFound(format!("topic '{}' does not exist", a.topic)))?;
    if let Some(p) = topic.partitions.iter().find(|p| p.leader < 0) {
        return Err(CliError::Other(format!(
            "partition {}/{} has no leader; see `fjord cluster health`",
            topic.name, p.partition
        )));
    }
    let mut payload = vec![0u8; a.record_size];
    let mut rng = rand::thread_rng();
    for b in payload.iter_mut() {
        *b = rng.gen_range(b'A'..=b'Z');
    }
    let plan = Arc::new(Plan {
        // A record costs its value plus at most 16 bytes of framing at these sizes; the batch
        // (not just the values) must stay under --batch-size, as brokers cap batches at
        // max.message.bytes (1 MiB by default).
        batch_records: (a.batch_size.saturating_sub(61) / (a.record_size + 16)).clamp(1, 1_000_000),
        topic,
        acks,
        compression,
        linger: Duration::from_millis(a.linger_ms),
        max_in_flight: a.max_in_flight,
        timeout_ms: i32::try_from(ctx.client.options().request_timeout.as_millis())
            .unwrap_or(i32::MAX),
        payload: Bytes::from(payload),
    });
    // Each connection serves a share of the partitions; with fewer partitions than connections,
    // several connections share one.
    let parts: Vec<(i32, i32)> = plan
        .topic
        .partitions
        .iter()
        .map(|p| (p.partition, p.leader))
        .collect();
    let mut workers: Vec<(i32, Vec<i32>)> = Vec::new();
    for w in 0..a.connections {
        let mine: Vec<(i32, i32)> = if parts.len() >= a.connections {
            parts
                .iter()
                .enumerate()
                .filter(|(i, _)| i % a.connections == w)
                .map(|(_, p)| *p)
                .collect()
        } else {
            vec![parts[w % parts.len()]]
        };
        // One connection talks to one broker: split a worker's partitions by leader.
        let mut by_leader: std::collections::BTreeMap<i32, Vec<i32>> = Default::default();
        for (p, l) in mine {
            by_leader.entry(l).or_default().push(p);
        }
        workers.extend(by_leader);
    }
    let brokers = ctx.client.known_brokers().await;
    let mut conns = Vec::new();
    for (leader, ps) in workers {
        let addr = brokers.get(&leader).cloned().ok_or_else(|| {
            CliError::Other(format!("leader {leader} is not in the cluster metadata"))
        })?;
        let conn = Connection::connect(&addr, ctx.client.options()).await?;
        conns.push((conn, ps));
    }

    let pb = if ctx.json() {
        ProgressBar::hidden()
    } else {
        progress(a.records, "records")
    };
    let shared = Arc::new(Shared {
        remaining: AtomicI64::new(i64::try_from(a.records).unwrap_or(i64::MAX)),
        claimed: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        first_error: parking_lot::Mutex::new(None),
        start: Instant::now(),
        interval_ns: a.throughput.map(|t| 1e9 / t as f64),
        deadline: a
            .duration
            .map(|d| Instant::now() + Duration::from_secs_f64(d.max(0.0))),
    });
    let mut tasks = Vec::new();
    for (conn, ps) in conns {
        tasks.push(tokio::spawn(worker(
            conn,
            ps,
            plan.clone(),
            shared.clone(),
            pb.clone(),
        )));
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut hist = new_hist();
    let mut join = join_workers(tasks);
    let mut last_ack = shared.start;
    loop {
        tokio::select! {
            r = join.recv() => match r {
                Some(Ok((h, t))) => {
                    let _ = hist.add(&h);
                    last_ack = last_ack.max(t);
                }
                Some(Err(e)) => {
                    shared.stop.store(true, Ordering::Relaxed);
                    record_error(&shared, &e);
                }
                None => break,
            },
            _ = &mut ctrl_c => shared.stop.store(true, Ordering::Relaxed),
        }
    }
    pb.finish_and_clear();
    let elapsed = last_ack
        .duration_since(shared.start)
        .max(Duration::from_micros(1));
    let acked = shared.acked.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64();
    let summary = json!({
        "topic": plan.topic.name,
        "records": acked,
        "errors": errors,
        "record_size": a.record_size,
        "acks": a.acks,
        "compression": a.compression,
        "connections": a.connections,
        "elapsed_s": round(secs, 3),
        "records_per_sec": round(acked as f64 / secs, 1),
        "mib_per_sec": round(acked as f64 * a.record_size as f64 / secs / 1_048_576.0, 2),
        "latency_ms": if acks == 0 || hist.is_empty() { Value::Null } else { latency_json(&hist) },
        "first_error": shared.first_error.lock().clone(),
    });
    report(ctx, &summary, "produced", "to");
    if errors > 0 {
        return Err(CliError::Other(format!(
            "{errors} records failed; first error: {}",
            shared.first_error.lock().clone().unwrap_or_default()
        )));
    }
    Ok(())
}

fn record_error(shared: &Shared, e: &ClientError) {
    let mut f = shared.first_error.lock();
    if f.is_none() {
        *f = Some(e.to_string());
    }
}

/// Receives worker results as they finish.
fn join_workers(tasks: Vec<tokio::task::JoinHandle<WorkerResult>>) -> mpsc::Receiver<WorkerResult> {
    let (tx, rx) = mpsc::channel(tasks.len().max(1));
    for t in tasks {
        let tx = tx.clone();
        tokio::spawn(async move {
            let r = match t.await {
                Ok(r) => r,
                Err(e) => Err(ClientError::Protocol(format!("worker failed: {e}"))),
            };
            let _ = tx.send(r).await;
        });
    }
    rx
}

/// A worker's latency histogram and the time of its last answer.
type WorkerResult = std::result::Result<(Histogram<u64>, Instant), ClientError>;

/// A sent request and what to account for when its answer comes.
struct InFlight {
    pend: Option<crate::client::conn::Pend<ProduceRequest>>,
    /// (records, index of the first record in claim order) per partition batch.
    batches: Vec<(usize, u64)>,
    built_at: Instant,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

async fn worker(
    conn: Arc<Connection>,
    partitions: Vec<i32>,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    pb: ProgressBar,
) -> WorkerResult {
    let version = conn.version::<ProduceRequest>()?;
    let sem = Arc::new(Semaphore::new(plan.max_in_flight));
    let (tx, mut rx) = mpsc::channel::<InFlight>(plan.max_in_flight + 1);
    let collector = {
        let shared = shared.clone();
        let plan = plan.clone();
        let pb = pb.clone();
        let broker = conn.broker().to_string();
        tokio::spawn(async move {
            let mut hist = new_hist();
            let mut last = shared.start;
            while let Some(f) = rx.recv().await {
                let n: usize = f.batches.iter().map(|b| b.0).sum();
                let ok = match f.pend {
                    None => true,
                    Some(p) => match p.wait().await {
                        Ok(resp) => {
                            let mut ok = true;
                            for (_, r) in producer::results(resp, &plan.topic.name, &broker) {
                                if let Err(e) = r {
                                    record_error(&shared, &e);
                                    shared.stop.store(true, Ordering::Relaxed);
                                    ok = false;
                                }
                            }
                            ok
                        }
                        Err(e) => {
                            record_error(&shared, &e);
                            shared.stop.store(true, Ordering::Relaxed);
                            false
                        }
                    },
                };
                let now = Instant::now();
                last = now;
                if !ok {
                    shared.errors.fetch_add(n as u64, Ordering::Relaxed);
                    continue;
                }
                shared.acked.fetch_add(n as u64, Ordering::Relaxed);
                pb.inc(n as u64);
                if plan.acks == 0 {
                    continue;
                }
                match shared.interval_ns {
                    None => {
                        let us = now.duration_since(f.built_at).as_micros() as u64;
                        hist.saturating_record_n(us.max(1), n as u64);
                    }
                    Some(iv) => {
                        // Latency from each record's intended send time.
                        for &(count, first) in &f.batches {
                            for i in first..first + count as u64 {
                                let due =
                                    shared.start + Duration::from_nanos((i as f64 * iv) as u64);
                                let us = now.saturating_duration_since(due).as_micros() as u64;
                                hist.saturating_record(us.max(1));
                            }
                        }
                    }
                }
            }
            (hist, last)
        })
    };

    // Records reused for every batch: same payload, offsets 0..n; only timestamps change.
    let mut records: Vec<Record> = (0..plan.batch_records)
        .map(|i| {
            to_record(
                i as i64,
                0,
                None,
                Some(plan.payload.clone()),
                IndexMap::new(),
            )
        })
        .collect();
    let mut next = 0usize;
    let mut buf = BytesMut::with_capacity(plan.batch_records * (plan.payload.len() + 16) + 128);
    let result: std::result::Result<(), ClientError> = async {
        loop {
            if shared.stop.load(Ordering::Relaxed)
                || shared.deadline.is_some_and(|d| Instant::now() >= d)
            {
                return Ok(());
            }
            let permit = sem
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| ClientError::Protocol("semaphore closed".into()))?;
            let want = match shared.interval_ns {
                None => plan.batch_records,
                Some(iv) => wait_for_due(&shared, iv, plan.batch_records, plan.linger).await,
            };
            let n = claim(&shared.remaining, want);
            if n == 0 {
                return Ok(());
            }
            let first = shared.claimed.fetch_add(n as u64, Ordering::Relaxed);
            let partition = partitions[next % partitions.len()];
            next += 1;
            let ts = now_ms();
            for r in &mut records[..n] {
                r.timestamp = ts;
            }
            let built_at = Instant::now();
            buf.clear();
            encode_records(&records[..n], plan.compression, &mut buf)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            let batch = buf.split().freeze();
            let req = producer::request(
                &plan.topic.name,
                plan.topic.id,
                plan.acks,
                plan.timeout_ms,
                [(partition, batch)],
            );
            let pend = if plan.acks == 0 {
                conn.send_oneway(&req, version).await?;
                None
            } else {
                Some(conn.start(&req, version).await?)
            };
            let f = InFlight {
                pend,
                batches: vec![(n, first)],
                built_at,
                _permit: permit,
            };
            if tx.send(f).await.is_err() {
                return Ok(());
            }
        }
    }
    .await;
    drop(tx);
    let (hist, last) = collector
        .await
        .map_err(|e| ClientError::Protocol(format!("collector failed: {e}")))?;
    result?;
    Ok((hist, last))
}

/// Takes up to `want` records from the budget.
fn claim(remaining: &AtomicI64, want: usize) -> usize {
    let mut cur = remaining.load(Ordering::Relaxed);
    loop {
        if cur <= 0 {
            return 0;
        }
        let n = cur.min(want as i64);
        match remaining.compare_exchange_weak(cur, cur - n, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return n as usize,
            Err(x) => cur = x,
        }
    }
}

/// Rate-limited mode: waits until a full batch is due or the oldest due record has waited
/// `linger`; returns how many records are due (at least 1).
async fn wait_for_due(shared: &Shared, iv: f64, max: usize, linger: Duration) -> usize {
    loop {
        let claimed = shared.claimed.load(Ordering::Relaxed);
        let elapsed = shared.start.elapsed().as_nanos() as f64;
        let due_total = (elapsed / iv) as u64 + 1;
        let due = due_total.saturating_sub(claimed) as usize;
        let oldest_due = shared.start + Duration::from_nanos((claimed as f64 * iv) as u64);
        if due >= max || (due > 0 && oldest_due.elapsed() >= linger) {
            return due.min(max);
        }
        if shared.stop.load(Ordering::Relaxed) {
            return due.clamp(1, max);
        }
        let next_full =
            shared.start + Duration::from_nanos(((claimed + max as u64) as f64 * iv) as u64);
        let wake = if due > 0 {
            (oldest_due + linger).min(next_full)
        } else {
            oldest_due
        };
        tokio::time::sleep_until(wake.into()).await;
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn latency_json(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| round(us as f64 / 1000.0, 3);
    json!({
        "p50": ms(h.value_at_quantile(0.50)),
        "p95": ms(h.value_at_quantile(0.95)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p999": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
        "mean": round(h.mean() / 1000.0, 3),
    })
}

fn report(ctx: &Ctx, s: &Value, verb: &str, prep: &str) {
    if ctx.json() {
        print_json(s);
        return;
    }
    let f = |k: &str| crate::cmd::topic::plain(&s[k]);
    let l = |k: &str| match &s["latency_ms"][k] {
        Value::Null => "-".to_string(),
        v => format!("{:.2}", v.as_f64().unwrap_or(0.0)),
    };
    let mut t = table([
        "records",
        "records/s",
        "MiB/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "p999 ms",
        "max ms",
    ]);
    t.add_row(vec![
        f("records"),
        format!("{:.0}", s["records_per_sec"].as_f64().unwrap_or(0.0)),
        format!("{:.1}", s["mib_per_sec"].as_f64().unwrap_or(0.0)),
        l("p50"),
        l("p95"),
        l("p99"),
        l("p999"),
        l("max"),
    ]);
    println!(
        "{verb} {} records in {} s {prep} '{}'{}",
        f("records"),
        f("elapsed_s"),
        f("topic"),
        match s["errors"].as_u64() {
            Some(0) | None => String::new(),
            Some(e) => format!(" ({e} failed)"),
        }
    );
    print_table(&t);
}

async fn consume(ctx: &Ctx, a: ConsumeArgs) -> Result<()> {
    let topic = ctx
        .client
        .topics(Some(std::slice::from_ref(&a.topic)))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| CliError::NotFound(format!("topic '{}' does not exist", a.topic)))?;
    let tps: Vec<Tp> = topic
        .partitions
        .iter()
        .map(|p| (topic.name.clone(), p.partition))
        .collect();
    let start = list_offsets(&ctx.client, &tps, OffsetSpec::Earliest).await?;
    let end = list_offsets(&ctx.client, &tps, OffsetSpec::Latest).await?;
    let available: u64 = tps
        .iter()
        .map(|tp| {
            (end.get(tp).copied().unwrap_or(0) - start.get(tp).copied().unwrap_or(0)).max(0) as u64
        })
        .sum();
    let target = a.records.unwrap_or(available);
    let mut positions: std::collections::BTreeMap<i32, i64> =
        start.iter().map(|((_, p), o)| (*p, *o)).collect();
    let pb = if ctx.json() {
        ProgressBar::hidden()
    } else {
        progress(target, "records")
    };
    let opts = FetchOptions {
        max_wait_ms: 500,
        min_bytes: 1,
        max_bytes: a.fetch_max_bytes,
        partition_max_bytes: a.partition_max_bytes,
    };
    let mut hist = new_hist();
    let mut count = 0u64;
    let mut bytes = 0u64;
    let began = Instant::now();
    let mut last = Instant::now();
    let idle = Duration::from_millis(a.timeout_ms);
    let mut fetches = 0u64;
    while count < target && last.elapsed() < idle {
        let t0 = Instant::now();
        let fetched = fetch_once(&ctx.client, &topic, &positions, opts).await?;
        let lat = t0.elapsed().as_micros() as u64;
        let mut got = 0u64;
        for f in fetched {
            if let Some(e) = f.error {
                return Err(e.into());
            }
            got += f.records.len() as u64;
            bytes += f
                .records
                .iter()
                .map(|r| r.value.as_ref().map_or(0, |v| v.len()) as u64)
                .sum::<u64>();
            positions.insert(f.partition, f.next_offset);
        }
        if got > 0 {
            hist.saturating_record(lat.max(1));
            count += got;
            pb.inc(got);
            last = Instant::now();
            fetches += 1;
        }
    }
    pb.finish_and_clear();
    let secs = last.duration_since(began).as_secs_f64().max(1e-6);
    let summary = json!({
        "topic": topic.name,
        "records": count,
        "errors": 0,
        "elapsed_s": round(secs, 3),
        "records_per_sec": round(count as f64 / secs, 1),
        "mib_per_sec": round(bytes as f64 / secs / 1_048_576.0, 2),
        "fetches": fetches,
        "latency_ms": if hist.is_empty() { Value::Null } else { latency_json(&hist) },
    });
    report(ctx, &summary, "consumed", "from");
    if count < target {
        return Err(CliError::Other(format!(
            "read {count} of {target} records before {} ms without data",
            a.timeout_ms
        )));
    }
    Ok(())
}
