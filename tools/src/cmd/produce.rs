//! `fjord produce TOPIC`: one record per line of stdin (or `--file`), sent in batches as lines
//! arrive.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use clap::Args;
use serde_json::json;
use tokio::sync::mpsc;

use crate::Ctx;
use crate::client::partitioner::partition_for_key;
use crate::client::producer::{self, parse_acks};
use crate::client::records::{OutRecord, encode_batch, parse_compression};
use crate::client::{ClientError, TopicInfo};
use crate::cmd::{key_value, now_ms};
use crate::exit::{CliError, Result};
use crate::output::{print_json, print_table, table};

/// Most records put in one request.
const MAX_BATCH_RECORDS: usize = 10_000;
/// Most value bytes put in one request (Kafka's default max.request.size is 1 MiB).
const MAX_BATCH_BYTES: usize = 900 * 1024;
/// How many times a batch is retried after a retriable error (leader moved, not available).
const RETRIES: usize = 5;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic to produce to (it must exist).
    pub topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(short, long)]
    pub file: Option<PathBuf>,
    /// Split each line at the first occurrence of this string into key and value (a line
    /// without it has a null key).
    #[arg(short, long)]
    pub key_separator: Option<String>,
    /// Header added to every record, `key=value`; may be repeated (keys must differ).
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Send every record to this partition (default: by key hash as Kafka clients do, else
    /// round-robin per batch).
    #[arg(short, long)]
    pub partition: Option<i32>,
    /// Acknowledgements: 0, 1 or all.
    #[arg(short, long, default_value = "all")]
    pub acks: String,
    /// Compression codec of the batches.
    #[arg(short = 'z', long, default_value = "none", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    pub compression: String,
}

pub async fn run(ctx: &Ctx, a: ProduceArgs) -> Result<()> {
    let acks = parse_acks(&a.acks)
        .ok_or_else(|| CliError::Usage(format!("--acks '{}': use 0, 1 or all", a.acks)))?;
    let compression = parse_compression(&a.compression)
        .ok_or_else(|| CliError::Usage(format!("unknown compression '{}'", a.compression)))?;
    let mut headers: Vec<(String, Bytes)> = Vec::new();
    for h in &a.headers {
        let (k, v) = key_value(h, "--header")?;
        if headers.iter().any(|(x, _)| *x == k) {
            return Err(CliError::Usage(format!(
                "header '{k}' given twice: each record carries one value per header key here"
            )));
        }
        headers.push((k, Bytes::from(v)));
    }
    let topic = ctx
        .client
        .topics(Some(std::slice::from_ref(&a.topic)))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| CliError::NotFound(format!("topic '{}' does not exist", a.topic)))?;
    if topic.partitions.is_empty() {
        return Err(CliError::Other(format!(
            "topic '{}' has no partitions",
            a.topic
        )));
    }
    if let Some(p) = a.partition
        && !topic.partitions.iter().any(|x| x.partition == p)
    {
        return Err(CliError::NotFound(format!(
            "topic '{}' has no partition {p} (it has {})",
            a.topic,
            topic.partitions.len()
        )));
    }

    let (tx, mut rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(4096);
    let file = a.file.clone();
    std::thread::spawn(move || read_lines(file, tx));

    let mut state = Sender {
        ctx,
        topic,
        acks,
        compression,
        next_rr: 0,
        stats: BTreeMap::new(),
        total: 0,
    };
    let sep = a.key_separator.as_deref().map(str::as_bytes);
    let mut pending: Vec<OutRecord> = Vec::new();
    let mut pending_bytes = 0usize;
    let mut line_no = 0usize;
    loop {
        // Wait for one line, then take whatever else is already there.
        let first = rx.recv().await;
        let mut lines = match first {
            Some(l) => vec![l],
            None => break,
        };
        while lines.len() < MAX_BATCH_RECORDS {
            match rx.try_recv() {
                Ok(l) => lines.push(l),
                Err(_) => break,
            }
        }
        for line in lines {
            line_no += 1;
            let line =
                line.map_err(|e| CliError::Other(format!("reading input line {line_no}: {e}")))?;
            let (key, value) = split(&line, sep);
            pending_bytes += value.len() + key.as_ref().map_or(0, |k| k.len());
            pending.push(OutRecord {
                key,
                value: Some(value),
                headers: headers.clone(),
                timestamp: now_ms(),
            });
            if pending.len() >= MAX_BATCH_RECORDS || pending_bytes >= MAX_BATCH_BYTES {
                state
                    .send(std::mem::take(&mut pending), a.partition)
                    .await?;
                pending_bytes = 0;
            }
        }
        if !pending.is_empty() {
            state
                .send(std::mem::take(&mut pending), a.partition)
                .await?;
            pending_bytes = 0;
        }
    }
    state.report();
    Ok(())
}

fn read_lines(file: Option<PathBuf>, tx: mpsc::Sender<std::io::Result<Vec<u8>>>) {
    let reader: Box<dyn BufRead> = match file {
        Some(p) => match std::fs::File::open(&p) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", p.display()),
                )));
                return;
            }
        },
        None => Box::new(std::io::stdin().lock()),
    };
    let mut reader = reader;
    loop {
        let mut buf = Vec::new();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => return,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                if tx.blocking_send(Ok(buf)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}

fn split(line: &[u8], sep: Option<&[u8]>) -> (Option<Bytes>, Bytes) {
    if let Some(sep) = sep.filter(|s| !s.is_empty())
        && let Some(i) = line.windows(sep.len()).position(|w| w == sep)
    {
        return (
            Some(Bytes::copy_from_slice(&line[..i])),
            Bytes::copy_from_slice(&line[i + sep.len()..]),
        );
    }
    (None, Bytes::copy_from_slice(line))
}

#[derive(Default)]
struct PartitionStats {
    records: u64,
    first_offset: Option<i64>,
    last_offset: Option<i64>,
}

struct Sender<'a> {
    ctx: &'a Ctx,
    topic: TopicInfo,
    acks: i16,
    compression: kafka_protocol::records::Compression,
    next_rr: usize,
    stats: BTreeMap<i32, PartitionStats>,
    total: u64,
}

impl Sender<'_> {
    async fn send(&mut self, records: Vec<OutRecord>, fixed: Option<i32>) -> Result<()> {
        let n = self.topic.partitions.len();
        let rr = self.topic.partitions[self.next_rr % n].partition;
        self.next_rr += 1;
        let mut by_partition: BTreeMap<i32, Vec<OutRecord>> = BTreeMap::new();
        for r in records {
            let p = fixed.unwrap_or_else(|| match &r.key {
                Some(k) => self.topic.partitions[partition_for_key(k, n) as usize % n].partition,
                None => rr,
            });
            by_partition.entry(p).or_default().push(r);
        }
        for (p, recs) in by_partition {
            let mut buf = BytesMut::new();
            encode_batch(&recs, self.compression, &mut buf)
                .map_err(|e| CliError::Other(e.to_string()))?;
            let base = self.send_batch(p, buf.freeze()).await?;
            let s = self.stats.entry(p).or_default();
            s.records += recs.len() as u64;
            if let Some(b) = base {
                s.first_offset.get_or_insert(b);
                s.last_offset = Some(b + recs.len() as i64 - 1);
            }
            self.total += recs.len() as u64;
        }
        Ok(())
    }

    /// Sends one batch to its partition's leader, retrying retriable errors after a metadata
    /// refresh; returns the base offset (None with acks=0).
    async fn send_batch(&mut self, partition: i32, batch: Bytes) -> Result<Option<i64>> {
        let timeout_ms = i32::try_from(self.ctx.client.options().request_timeout.as_millis())
            .unwrap_or(i32::MAX);
        let mut attempt = 0;
        loop {
            let leader = self
                .topic
                .partitions
                .iter()
                .find(|p| p.partition == partition)
                .map(|p| p.leader)
                .unwrap_or(-1);
            let outcome: Result<Option<i64>, ClientError> = async {
                if leader < 0 {
                    return Err(ClientError::Kafka {
                        what: format!("produce to {}/{partition}", self.topic.name),
                        error: kafka_protocol::ResponseError::LeaderNotAvailable,
                        message: None,
                    });
                }
                let conn = self.ctx.client.node(leader).await?;
                let v = conn.version::<kafka_protocol::messages::ProduceRequest>()?;
                let req = producer::request(
                    &self.topic.name,
                    self.topic.id,
                    self.acks,
                    timeout_ms,
                    [(partition, batch.clone())],
                );
                if self.acks == 0 {
                    conn.send_oneway(&req, v).await?;
                    return Ok(None);
                }
                let resp = conn.start(&req, v).await?.wait().await?;
                let results = producer::results(resp, &self.topic.name, conn.broker());
                match results.into_iter().find(|(p, _)| *p == partition) {
                    Some((_, r)) => r.map(Some),
                    None => Err(ClientError::Protocol(format!(
                        "{} answered a produce to {}/{partition} without that partition",
                        conn.broker(),
                        self.topic.name
                    ))),
                }
            }
            .await;
            match outcome {
                Ok(b) => return Ok(b),
                Err(e) if attempt < RETRIES && retriable(&e) => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "retrying produce");
                    tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
                    if let Ok(mut t) = self
                        .ctx
                        .client
                        .topics(Some(std::slice::from_ref(&self.topic.name)))
                        .await
                        && let Some(t) = t.pop()
                    {
                        self.topic = t;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn report(&self) {
        if self.ctx.json() {
            let parts: Vec<_> = self
                .stats
                .iter()
                .map(|(p, s)| {
                    json!({"partition": p, "records": s.records,
                           "first_offset": s.first_offset, "last_offset": s.last_offset})
                })
                .collect();
            print_json(
                &json!({"topic": self.topic.name, "records": self.total, "partitions": parts}),
            );
        } else {
            let mut t = table(["partition", "records", "first offset", "last offset"]);
            for (p, s) in &self.stats {
                t.add_row(vec![
                    p.to_string(),
                    s.records.to_string(),
                    s.first_offset.map(|o| o.to_string()).unwrap_or("-".into()),
                    s.last_offset.map(|o| o.to_string()).unwrap_or("-".into()),
                ]);
            }
            eprintln!("produced {} records to '{}'", self.total, self.topic.name);
            print_table(&t);
        }
    }
}

fn retriable(e: &ClientError) -> bool {
    match e.kafka_error() {
        Some(k) => k.is_retriable(),
        None => matches!(e, ClientError::Closed { .. } | ClientError::Io { .. }),
    }
}
