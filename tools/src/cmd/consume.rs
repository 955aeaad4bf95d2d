//! `fjord consume TOPIC`: print records, with or without a consumer group.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use kafka_protocol::ResponseError;
use serde_json::{Value, json};

use crate::Ctx;
use crate::client::admin::{OffsetSpec, Tp, list_offsets};
use crate::client::fetcher::{FetchOptions, fetch_once};
use crate::client::member::GroupMember;
use crate::client::records::InRecord;
use crate::client::{ClientError, TopicInfo};
use crate::cmd::{format_time, parse_time};
use crate::exit::{CliError, Result};
use crate::output::Format;

/// How often a group member commits its positions while consuming.
const COMMIT_EVERY: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Only these partitions (comma-separated; not with --group).
    #[arg(short, long, value_delimiter = ',', conflicts_with = "group")]
    pub partitions: Vec<i32>,
    /// Read as a member of this consumer group (committed offsets are used and advanced).
    #[arg(short, long)]
    pub group: Option<String>,
    /// Start at the earliest offset (with --group: only where nothing is committed).
    #[arg(long, group = "start")]
    pub from_beginning: bool,
    /// Start at this offset in every partition.
    #[arg(long, group = "start", value_name = "OFFSET")]
    pub offset: Option<i64>,
    /// Start at the first record at or after this time (RFC 3339, date, or epoch ms).
    #[arg(long, group = "start", value_name = "TIME")]
    pub from_timestamp: Option<String>,
    /// Start at the end: only records produced from now on (the default without --group).
    #[arg(long, group = "start")]
    pub from_end: bool,
    /// Stop after this many records.
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// Stop once every partition has been read up to its end as of that moment.
    #[arg(short = 'e', long)]
    pub exit_at_end: bool,
    /// Stop when no record arrived for this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Template for each record: {topic} {partition} {offset} {timestamp} {key} {value}
    /// {headers}; \n and \t are understood. Default: the value. Ignored with --output json.
    #[arg(short, long)]
    pub format: Option<String>,
}

enum Start {
    Earliest,
    Latest,
    Offset(i64),
    Time(i64),
}

pub async fn run(ctx: &Ctx, a: ConsumeArgs) -> Result<()> {
    let topic = ctx
        .client
        .topics(Some(std::slice::from_ref(&a.topic)))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| CliError::NotFound(format!("topic '{}' does not exist", a.topic)))?;
    let start = if a.from_beginning {
        Start::Earliest
    } else if let Some(o) = a.offset {
        Start::Offset(o)
    } else if let Some(t) = &a.from_timestamp {
        Start::Time(parse_time(t)?)
    } else {
        Start::Latest
    };
    let printer = Printer::new(ctx.format, a.format.as_deref());
    let mut session = Session {
        ctx,
        topic,
        positions: BTreeMap::new(),
        member: None,
        printed: 0,
        reset_to_earliest: a.from_beginning,
    };
    match &a.group {
        Some(g) => session.join(g, &start).await?,
        None => {
            let parts: Vec<i32> = if a.partitions.is_empty() {
                session
                    .topic
                    .partitions
                    .iter()
                    .map(|p| p.partition)
                    .collect()
            } else {
                for p in &a.partitions {
                    if !session.topic.partitions.iter().any(|x| x.partition == *p) {
                        return Err(CliError::NotFound(format!(
                            "topic '{}' has no partition {p}",
                            a.topic
                        )));
                    }
                }
                a.partitions.clone()
            };
            session.positions = session.starting(&parts, &start).await?;
        }
    }
    let result = session.run(&a, &printer).await;
    if let Some(m) = session.member.take() {
        let committed = m.commit(&session.commit_map()).await;
        let left = m.leave().await;
        result?;
        committed?;
        left?;
    } else {
        result?;
    }
    Ok(())
}

struct Session<'a> {
    ctx: &'a Ctx,
    topic: TopicInfo,
    positions: BTreeMap<i32, i64>,
    member: Option<GroupMember>,
    printed: u64,
    reset_to_earliest: bool,
}

impl Session<'_> {
    async fn starting(&self, parts: &[i32], start: &Start) -> Result<BTreeMap<i32, i64>> {
        let tps: Vec<Tp> = parts
            .iter()
            .map(|&p| (self.topic.name.clone(), p))
            .collect();
        let spec = match start {
            Start::Offset(o) => return Ok(parts.iter().map(|&p| (p, *o)).collect()),
            Start::Earliest => OffsetSpec::Earliest,
            Start::Latest => OffsetSpec::Latest,
            Start::Time(t) => OffsetSpec::Timestamp(*t),
        };
        let offsets = list_offsets(&self.ctx.client, &tps, spec).await?;
        Ok(offsets.into_iter().map(|((_, p), o)| (p, o)).collect())
    }

    async fn join(&mut self, group: &str, start: &Start) -> Result<()> {
        let m = GroupMember::join(
            self.ctx.client.clone(),
            group,
            vec![self.topic.name.clone()],
        )
        .await?;
        self.member = Some(m);
        self.assign_from_member(start).await
    }

    /// Positions for the member's partitions: committed offsets, else `start`.
    async fn assign_from_member(&mut self, start: &Start) -> Result<()> {
        let Some(m) = &self.member else { return Ok(()) };
        let parts: Vec<i32> = m
            .assignment
            .get(&self.topic.name)
            .cloned()
            .unwrap_or_default();
        let committed = m.committed().await?;
        let mut positions = BTreeMap::new();
        let missing: Vec<i32> = parts
            .iter()
            .copied()
            .filter(|p| !committed.contains_key(&(self.topic.name.clone(), *p)))
            .collect();
        let fresh = self.starting(&missing, start).await?;
        for p in parts {
            let o = committed
                .get(&(self.topic.name.clone(), p))
                .copied()
                .or_else(|| fresh.get(&p).copied())
                .unwrap_or(0);
            positions.insert(p, o);
        }
        tracing::info!(?positions, "assigned");
        self.positions = positions;
        Ok(())
    }

    fn commit_map(&self) -> BTreeMap<Tp, i64> {
        self.positions
            .iter()
            .map(|(p, o)| ((self.topic.name.clone(), *p), *o))
            .collect()
    }

    async fn run(&mut self, a: &ConsumeArgs, printer: &Printer) -> Result<()> {
        let idle = a.timeout_ms.map(Duration::from_millis);
        let mut last_record = Instant::now();
        let mut last_commit = Instant::now();
        let mut ends: Option<BTreeMap<i32, i64>> = None;
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut out = std::io::stdout().lock();
        loop {
            if a.count.is_some_and(|n| self.printed >= n) {
                return Ok(());
            }
            if idle.is_some_and(|d| last_record.elapsed() >= d) {
                return Ok(());
            }
            let positions = self.commit_map();
            if let Some(m) = &mut self.member
                && m.needs_rejoin()
            {
                // Commit what was read before giving the partitions away.
                let _ = m.commit(&positions).await;
                m.rejoin().await?;
                let start = if self.reset_to_earliest {
                    Start::Earliest
                } else {
                    Start::Latest
                };
                self.assign_from_member(&start).await?;
                ends = None;
            }
            if a.exit_at_end {
                if ends.is_none() {
                    let tps: Vec<Tp> = self
                        .positions
                        .keys()
                        .map(|&p| (self.topic.name.clone(), p))
                        .collect();
                    ends = Some(
                        list_offsets(&self.ctx.client, &tps, OffsetSpec::Latest)
                            .await?
                            .into_iter()
                            .map(|((_, p), o)| (p, o))
                            .collect(),
                    );
                }
                if let Some(e) = &ends
                    && self
                        .positions
                        .iter()
                        .all(|(p, o)| e.get(p).is_none_or(|end| o >= end))
                {
                    return Ok(());
                }
            }
            if self.positions.is_empty() {
                // No partitions (more members than partitions): wait for a rebalance or the end.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = &mut ctrl_c => return Ok(()),
                }
                continue;
            }
            let mut opts = FetchOptions::default();
            if let Some(d) = idle {
                opts.max_wait_ms = opts.max_wait_ms.min(d.as_millis() as i32).max(1);
            }
            let fetched = tokio::select! {
                r = fetch_once(&self.ctx.client, &self.topic, &self.positions, opts) => r,
                _ = &mut ctrl_c => return Ok(()),
            };
            let fetched = match fetched {
                Ok(f) => f,
                Err(e) if e.is_unreachable() => {
                    tracing::warn!(error = %e, "fetch failed; refreshing metadata");
                    self.refresh().await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for f in fetched {
                if let Some(e) = f.error {
                    self.handle_partition_error(f.partition, e).await?;
                    continue;
                }
                for r in &f.records {
                    if a.count.is_some_and(|n| self.printed >= n) {
                        break;
                    }
                    printer.print(&mut out, &self.topic.name, f.partition, r);
                    self.positions.insert(f.partition, r.offset + 1);
                    self.printed += 1;
                    last_record = Instant::now();
                }
                if a.count.is_none_or(|n| self.printed < n) {
                    // Past control batches and skipped records too.
                    let cur = self.positions.get(&f.partition).copied().unwrap_or(0);
                    self.positions.insert(f.partition, cur.max(f.next_offset));
                }
            }
            let _ = out.flush();
            if let Some(m) = &self.member
                && last_commit.elapsed() >= COMMIT_EVERY
            {
                m.commit(&self.commit_map()).await?;
                last_commit = Instant::now();
            }
        }
    }

    async fn refresh(&mut self) -> Result<()> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(t) = self
            .ctx
            .client
            .topics(Some(std::slice::from_ref(&self.topic.name)))
            .await?
            .pop()
        {
            self.topic = t;
        }
        Ok(())
    }

    async fn handle_partition_error(&mut self, partition: i32, e: ClientError) -> Result<()> {
        match e.kafka_error() {
            Some(ResponseError::OffsetOutOfRange) => {
                let spec = if self.reset_to_earliest {
                    OffsetSpec::Earliest
                } else {
                    OffsetSpec::Latest
                };
                let tp = (self.topic.name.clone(), partition);
                let o = list_offsets(&self.ctx.client, std::slice::from_ref(&tp), spec).await?;
                if let Some(&o) = o.get(&tp) {
                    tracing::warn!(partition, offset = o, "offset out of range; reset");
                    self.positions.insert(partition, o);
                }
                Ok(())
            }
            Some(k) if k.is_retriable() => self.refresh().await,
            _ => Err(e.into()),
        }
    }
}

struct Printer {
    json: bool,
    template: Option<Vec<Piece>>,
}

#[derive(Debug, PartialEq)]
enum Piece {
    Text(String),
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    Value,
    Headers,
}

impl Printer {
    fn new(format: Format, template: Option<&str>) -> Printer {
        Printer {
            json: format == Format::Json,
            template: template.map(parse_template),
        }
    }

    fn print(&self, out: &mut impl Write, topic: &str, partition: i32, r: &InRecord) {
        if self.json {
            let _ = writeln!(out, "{}", record_json(topic, partition, r));
            return;
        }
        let Some(t) = &self.template else {
            let _ = out.write_all(r.value.as_deref().unwrap_or_default());
            let _ = out.write_all(b"\n");
            return;
        };
        let mut s = Vec::new();
        for piece in t {
            match piece {
                Piece::Text(x) => s.extend_from_slice(x.as_bytes()),
                Piece::Topic => s.extend_from_slice(topic.as_bytes()),
                Piece::Partition => s.extend_from_slice(partition.to_string().as_bytes()),
                Piece::Offset => s.extend_from_slice(r.offset.to_string().as_bytes()),
                Piece::Timestamp => s.extend_from_slice(r.timestamp.to_string().as_bytes()),
                Piece::Key => s.extend_from_slice(r.key.as_deref().unwrap_or_default()),
                Piece::Value => s.extend_from_slice(r.value.as_deref().unwrap_or_default()),
                Piece::Headers => {
                    for (i, (k, v)) in r.headers.iter().enumerate() {
                        if i > 0 {
                            s.push(b',');
                        }
                        s.extend_from_slice(k);
                        s.push(b'=');
                        s.extend_from_slice(v.as_deref().unwrap_or_default());
                    }
                }
            }
        }
        s.push(b'\n');
        let _ = out.write_all(&s);
    }
}

fn text(b: &Option<Bytes>) -> Value {
    match b {
        None => Value::Null,
        Some(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
    }
}

/// One record as a JSON object (values as UTF-8 text, invalid bytes replaced).
pub fn record_json(topic: &str, partition: i32, r: &InRecord) -> Value {
    json!({
        "topic": topic,
        "partition": partition,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "timestamp_type": if r.log_append_time { "LogAppendTime" } else { "CreateTime" },
        "time": format_time(r.timestamp),
        "key": text(&r.key),
        "value": text(&r.value),
        "headers": r.headers.iter().map(|(k, v)| json!({
            "key": String::from_utf8_lossy(k),
            "value": text(v),
        })).collect::<Vec<_>>(),
    })
}

fn parse_template(t: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = t;
    while let Some(c) = rest.chars().next() {
        if c == '\\' && rest.len() > 1 {
            let next = rest[1..].chars().next().unwrap_or('\\');
            match next {
                'n' => text.push('\n'),
                't' => text.push('\t'),
                '\\' => text.push('\\'),
                other => {
                    text.push('\\');
                    text.push(other);
                }
            }
            rest = &rest[1 + next.len_utf8()..];
            continue;
        }
        if c == '{'
            && let Some(end) = rest.find('}')
        {
            let piece = match &rest[1..end] {
                "topic" => Some(Piece::Topic),
                "partition" => Some(Piece::Partition),
                "offset" => Some(Piece::Offset),
                "timestamp" => Some(Piece::Timestamp),
                "key" => Some(Piece::Key),
                "value" => Some(Piece::Value),
                "headers" => Some(Piece::Headers),
                _ => None,
            };
            if let Some(p) = piece {
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                }
                out.push(p);
                rest = &rest[end + 1..];
                continue;
            }
        }
        text.push(c);
        rest = &rest[c.len_utf8()..];
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_pieces() {
        let p = parse_template("{partition}:{offset}\\t{key}={value} {nope}\\n");
        assert_eq!(
            p,
            vec![
                Piece::Partition,
                Piece::Text(":".into()),
                Piece::Offset,
                Piece::Text("\t".into()),
                Piece::Key,
                Piece::Text("=".into()),
                Piece::Value,
                Piece::Text(" {nope}\n".into()),
            ]
        );
    }

    #[test]
    fn prints_with_template_and_json() {
        let r = InRecord {
            offset: 7,
            timestamp: 1000,
            log_append_time: false,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![(Bytes::from_static(b"h"), Some(Bytes::from_static(b"1")))],
        };
        let p = Printer::new(
            Format::Table,
            Some("{partition}/{offset} {key}:{value} [{headers}]"),
        );
        let mut out = Vec::new();
        p.print(&mut out, "t", 3, &r);
        assert_eq!(String::from_utf8(out).unwrap(), "3/7 k:v [h=1]\n");
        let j = record_json("t", 3, &r);
        assert_eq!(j["headers"][0]["value"], "1");
        assert_eq!(j["time"], "1970-01-01T00:00:01.000Z");
    }
}
