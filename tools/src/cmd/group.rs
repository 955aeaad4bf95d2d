//! `fjord group list|describe|lag|reset-offsets|delete`.

use std::collections::BTreeMap;

use clap::{ArgGroup, Subcommand};
use serde_json::{Value, json};

use crate::Ctx;
use crate::client::admin::{OffsetSpec, Tp, list_offsets};
use crate::client::groups::{self, GroupDescription};
use crate::client::{ClientError, Connection};
use crate::cmd::{parse_time, topic_partitions};
use crate::exit::{CliError, Result};
use crate::output::{print_json, print_table, table};

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// List consumer groups.
    List,
    /// State, members and their partitions, committed offsets and lag.
    Describe { group: String },
    /// Committed offset, log end offset and lag per partition.
    Lag { group: String },
    /// Move a group's committed offsets (replay or skip); a dry run unless --execute.
    #[command(group(ArgGroup::new("to").required(true).args(
        ["to_earliest", "to_latest", "to_datetime", "to_offset", "shift_by"])))]
    ResetOffsets {
        group: String,
        /// `topic` or `topic:0,1` (those partitions only); may be repeated. Default: every
        /// partition the group has committed offsets for.
        #[arg(short, long = "topic", value_name = "TOPIC[:P,...]")]
        topics: Vec<String>,
        /// To the log start offset.
        #[arg(long)]
        to_earliest: bool,
        /// To the log end offset (skip everything).
        #[arg(long)]
        to_latest: bool,
        /// To the first record at or after this time (RFC 3339, date, or epoch ms).
        #[arg(long, value_name = "TIME")]
        to_datetime: Option<String>,
        /// To this offset (kept within the log's range).
        #[arg(long, value_name = "OFFSET")]
        to_offset: Option<i64>,
        /// By this many records from the committed offset (negative: back); kept in range.
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        shift_by: Option<i64>,
        /// Apply the change (the group must have no active members).
        #[arg(long, conflicts_with = "dry_run")]
        execute: bool,
        /// Only show what would change (the default).
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete groups (they must have no active members).
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
}

pub async fn run(ctx: &Ctx, cmd: GroupCmd) -> Result<()> {
    match cmd {
        GroupCmd::List => list(ctx).await,
        GroupCmd::Describe { group } => describe(ctx, &group).await,
        GroupCmd::Lag { group } => lag(ctx, &group).await,
        GroupCmd::ResetOffsets {
            group,
            topics,
            to_earliest,
            to_latest,
            to_datetime,
            to_offset,
            shift_by,
            execute,
            dry_run: _,
        } => {
            let to = if to_earliest {
                To::Earliest
            } else if to_latest {
                To::Latest
            } else if let Some(t) = to_datetime {
                To::Time(parse_time(&t)?)
            } else if let Some(o) = to_offset {
                To::Offset(o)
            } else if let Some(n) = shift_by {
                To::Shift(n)
            } else {
                return Err(CliError::Usage("say where to: --to-earliest, --to-latest, --to-datetime, --to-offset or --shift-by".into()));
            };
            reset(ctx, &group, &topics, to, execute).await
        }
        GroupCmd::Delete { groups } => delete(ctx, &groups).await,
    }
}

async fn list(ctx: &Ctx) -> Result<()> {
    let groups = groups::list_groups(&ctx.client).await?;
    if ctx.json() {
        print_json(&serde_json::to_value(&groups).unwrap_or(Value::Null));
    } else {
        let mut t = table(["group", "state", "protocol type", "coordinator"]);
        for g in &groups {
            t.add_row(vec![
                g.group.clone(),
                g.state.clone(),
                g.protocol_type.clone(),
                g.coordinator.to_string(),
            ]);
        }
        print_table(&t);
    }
    Ok(())
}

/// DescribeGroups answers a group that does not exist with state Dead; say "not found".
async fn described(ctx: &Ctx, group: &str) -> Result<GroupDescription> {
    Ok(groups::describe_group(&ctx.client, group).await?)
}

#[derive(Debug, Clone)]
struct LagRow {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    end: i64,
    member: Option<String>,
}

impl LagRow {
    fn lag(&self) -> Option<i64> {
        self.committed.map(|c| (self.end - c).max(0))
    }

    fn json(&self) -> Value {
        json!({
            "topic": self.topic,
            "partition": self.partition,
            "committed_offset": self.committed,
            "log_end_offset": self.end,
            "lag": self.lag(),
            "member_id": self.member,
        })
    }
}

/// Committed offsets and ends for every partition the group has committed or is assigned.
async fn lag_rows(ctx: &Ctx, group: &str, d: &GroupDescription) -> Result<Vec<LagRow>> {
    let committed = groups::committed_offsets(&ctx.client, group, None).await?;
    let mut owner: BTreeMap<Tp, String> = BTreeMap::new();
    for m in &d.members {
        for (t, ps) in &m.assignment {
            for p in ps {
                owner.insert((t.clone(), *p), m.member_id.clone());
            }
        }
    }
    let mut tps: Vec<Tp> = committed.keys().chain(owner.keys()).cloned().collect();
    tps.sort();
    tps.dedup();
    // Partitions of deleted topics cannot be asked about; they show without an end offset.
    let existing: Vec<String> = {
        let mut names: Vec<String> = tps.iter().map(|(t, _)| t.clone()).collect();
        names.dedup();
        let all = ctx.client.topics(None).await?;
        names
            .into_iter()
            .filter(|n| all.iter().any(|t| &t.name == n))
            .collect()
    };
    let live: Vec<Tp> = tps
        .iter()
        .filter(|(t, _)| existing.contains(t))
        .cloned()
        .collect();
    let ends = list_offsets(&ctx.client, &live, OffsetSpec::Latest).await?;
    Ok(live
        .into_iter()
        .map(|tp| LagRow {
            committed: committed.get(&tp).copied(),
            end: ends.get(&tp).copied().unwrap_or(-1),
            member: owner.get(&tp).cloned(),
            topic: tp.0,
            partition: tp.1,
        })
        .collect())
}

fn lag_table(rows: &[LagRow]) {
    let mut t = table([
        "topic",
        "partition",
        "committed",
        "log end",
        "lag",
        "member",
    ]);
    for r in rows {
        t.add_row(vec![
            r.topic.clone(),
            r.partition.to_string(),
            r.committed.map(|c| c.to_string()).unwrap_or("-".into()),
            r.end.to_string(),
            r.lag().map(|c| c.to_string()).unwrap_or("-".into()),
            r.member.clone().unwrap_or_default(),
        ]);
    }
    print_table(&t);
}

fn require_exists(d: &GroupDescription, rows: &[LagRow]) -> Result<()> {
    if d.state == "Dead" && d.members.is_empty() && rows.iter().all(|r| r.committed.is_none()) {
        return Err(CliError::NotFound(format!(
            "group '{}' does not exist (no members, no committed offsets)",
            d.group
        )));
    }
    Ok(())
}

async fn describe(ctx: &Ctx, group: &str) -> Result<()> {
    let d = described(ctx, group).await?;
    let rows = lag_rows(ctx, group, &d).await?;
    require_exists(&d, &rows)?;
    let total: i64 = rows.iter().filter_map(LagRow::lag).sum();
    if ctx.json() {
        let mut v = serde_json::to_value(&d).unwrap_or(Value::Null);
        v["offsets"] = Value::Array(rows.iter().map(LagRow::json).collect());
        v["total_lag"] = json!(total);
        print_json(&v);
        return Ok(());
    }
    println!("GROUP        {}", d.group);
    println!("COORDINATOR  {}", d.coordinator);
    println!("STATE        {}", d.state);
    println!("PROTOCOL     {} {}", d.protocol_type, d.protocol);
    println!("MEMBERS      {}", d.members.len());
    println!("TOTAL LAG    {total}");
    if !d.members.is_empty() {
        println!();
        let mut t = table(["member", "instance", "client", "host", "partitions"]);
        for m in &d.members {
            let parts: Vec<String> = m
                .assignment
                .iter()
                .map(|(t, ps)| {
                    format!(
                        "{t}:{}",
                        ps.iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                })
                .collect();
            t.add_row(vec![
                m.member_id.clone(),
                m.group_instance_id.clone().unwrap_or_default(),
                m.client_id.clone(),
                m.client_host.clone(),
                parts.join(" "),
            ]);
        }
        print_table(&t);
    }
    if !rows.is_empty() {
        println!();
        lag_table(&rows);
    }
    Ok(())
}

async fn lag(ctx: &Ctx, group: &str) -> Result<()> {
    let d = described(ctx, group).await?;
    let rows = lag_rows(ctx, group, &d).await?;
    require_exists(&d, &rows)?;
    let total: i64 = rows.iter().filter_map(LagRow::lag).sum();
    if ctx.json() {
        print_json(&json!({
            "group": group,
            "state": d.state,
            "total_lag": total,
            "partitions": rows.iter().map(LagRow::json).collect::<Vec<_>>(),
        }));
    } else {
        lag_table(&rows);
        println!("total lag: {total}");
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum To {
    Earliest,
    Latest,
    Time(i64),
    Offset(i64),
    Shift(i64),
}

async fn reset(ctx: &Ctx, group: &str, topics: &[String], to: To, execute: bool) -> Result<()> {
    // Offsets may be set for a group that does not exist yet (Kafka creates it on commit).
    let d = match groups::describe_group(&ctx.client, group).await {
        Err(e) if e.kafka_error() == Some(kafka_protocol::ResponseError::GroupIdNotFound) => None,
        other => Some(other?),
    };
    if let Some(d) = d.as_ref().filter(|d| !d.is_inactive()) {
        return Err(CliError::Conflict(format!(
            "group '{group}' has {} active member(s) (state {}); stop its consumers first: offsets can only be reset while the group is empty",
            d.members.len(),
            d.state
        )));
    }
    let committed = groups::committed_offsets(&ctx.client, group, None).await?;
    // Which partitions: the --topic arguments, else everything the group has committed.
    let mut tps: Vec<Tp> = Vec::new();
    if topics.is_empty() {
        tps.extend(committed.keys().cloned());
        if tps.is_empty() {
            return Err(CliError::NotFound(format!(
                "group '{group}' has no committed offsets; name the topics with --topic"
            )));
        }
    } else {
        let mut wanted: BTreeMap<String, Option<Vec<i32>>> = BTreeMap::new();
        for t in topics {
            let (name, parts) = topic_partitions(t)?;
            wanted.insert(name, parts);
        }
        let names: Vec<String> = wanted.keys().cloned().collect();
        let infos = ctx.client.topics(Some(&names)).await?;
        for info in infos {
            let all: Vec<i32> = info.partitions.iter().map(|p| p.partition).collect();
            match wanted.get(&info.name).cloned().flatten() {
                None => tps.extend(all.iter().map(|&p| (info.name.clone(), p))),
                Some(ps) => {
                    for p in ps {
                        if !all.contains(&p) {
                            return Err(CliError::NotFound(format!(
                                "topic '{}' has no partition {p} (it has {})",
                                info.name,
                                all.len()
                            )));
                        }
                        tps.push((info.name.clone(), p));
                    }
                }
            }
        }
    }
    tps.sort();
    tps.dedup();
    let earliest = list_offsets(&ctx.client, &tps, OffsetSpec::Earliest).await?;
    let latest = list_offsets(&ctx.client, &tps, OffsetSpec::Latest).await?;
    let by_time = match to {
        To::Time(t) => Some(list_offsets(&ctx.client, &tps, OffsetSpec::Timestamp(t)).await?),
        _ => None,
    };
    let mut plan: BTreeMap<Tp, i64> = BTreeMap::new();
    let mut rows = Vec::new();
    for tp in &tps {
        let lo = earliest.get(tp).copied().unwrap_or(0);
        let hi = latest.get(tp).copied().unwrap_or(lo).max(lo);
        let current = committed.get(tp).copied();
        let target = match to {
            To::Earliest => lo,
            To::Latest => hi,
            To::Time(_) => by_time
                .as_ref()
                .and_then(|m| m.get(tp).copied())
                .unwrap_or(hi),
            To::Offset(o) => o,
            // Without a committed offset a shift starts from the log start, as Kafka's tool does.
            To::Shift(n) => current.unwrap_or(lo).saturating_add(n),
        }
        .clamp(lo, hi);
        plan.insert(tp.clone(), target);
        rows.push(json!({
            "topic": tp.0,
            "partition": tp.1,
            "current_offset": current,
            "new_offset": target,
            "log_start_offset": lo,
            "log_end_offset": hi,
        }));
    }
    if execute {
        let conn: std::sync::Arc<Connection> = ctx.client.coordinator(group).await?;
        groups::commit_offsets(&conn, group, -1, "", &plan)
            .await
            .map_err(|e| match e.kafka_error() {
                Some(kafka_protocol::ResponseError::UnknownMemberId
                | kafka_protocol::ResponseError::IllegalGeneration
                | kafka_protocol::ResponseError::RebalanceInProgress) => CliError::Conflict(format!(
                    "group '{group}' became active while resetting ({e}); stop its consumers and retry"
                )),
                _ => CliError::Client(e),
            })?;
    }
    if ctx.json() {
        print_json(&json!({
            "group": group,
            "executed": execute,
            "partitions": rows,
        }));
    } else {
        let mut t = table([
            "topic",
            "partition",
            "current",
            "new",
            "log start",
            "log end",
        ]);
        for r in &rows {
            t.add_row(vec![
                crate::cmd::topic::plain(&r["topic"]),
                crate::cmd::topic::plain(&r["partition"]),
                match &r["current_offset"] {
                    Value::Null => "-".into(),
                    v => v.to_string(),
                },
                crate::cmd::topic::plain(&r["new_offset"]),
                crate::cmd::topic::plain(&r["log_start_offset"]),
                crate::cmd::topic::plain(&r["log_end_offset"]),
            ]);
        }
        print_table(&t);
        if execute {
            println!("offsets of group '{group}' reset");
        } else {
            println!("dry run: nothing changed; add --execute to apply");
        }
    }
    Ok(())
}

async fn delete(ctx: &Ctx, names: &[String]) -> Result<()> {
    let mut rows = Vec::new();
    let mut first: Option<ClientError> = None;
    for g in names {
        match groups::delete_group(&ctx.client, g).await {
            Ok(()) => rows.push(json!({"group": g, "status": "deleted"})),
            Err(e) if e.is_unreachable() => return Err(e.into()),
            Err(e) => {
                rows.push(json!({"group": g, "status": e.to_string()}));
                first.get_or_insert(e);
            }
        }
    }
    if ctx.json() {
        print_json(&Value::Array(rows));
    } else {
        let mut t = table(["group", "status"]);
        for r in &rows {
            t.add_row(vec![
                crate::cmd::topic::plain(&r["group"]),
                crate::cmd::topic::plain(&r["status"]),
            ]);
        }
        print_table(&t);
    }
    match first {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
