//! `fjord topic reassign|reassignments|clear-throttle`: moving partitions between brokers
//! (KIP-455) with Kafka's replication throttle, the way `kafka-reassign-partitions.sh` does it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgGroup, Args};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::Ctx;
use crate::client::admin::{self, ConfigOp, RESOURCE_BROKER, RESOURCE_TOPIC, describe_what};
use crate::client::error::kafka_name;
use crate::client::reassignments::{self, Ongoing, Reassignment};
use crate::client::throttle::{
    self, FOLLOWER_RATE, FOLLOWER_REPLICAS, LEADER_RATE, LEADER_REPLICAS,
};
use crate::client::{ClientError, Connection, TopicInfo};
use crate::cmd::topic::{plain, timeout_ms};
use crate::exit::{CliError, Result};
use crate::output::{ids, print_json, print_table, table};

/// How often `--wait` asks whether the moves are done.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

pub const REASSIGN_HELP: &str = "\
Each --replicas PARTITION=ID,ID,... gives the partition's new replicas (the first is the \
preferred leader); the replication factor may change. The brokers in the new list that do not \
hold the partition copy it from the leader; the move completes once they are in sync, and the \
brokers left out then delete their copies. --cancel PARTITION returns a partition that is \
still moving to its original replicas.

--throttle BYTES/S limits the copying like kafka-reassign-partitions.sh: it SETs the topic's \
leader.replication.throttled.replicas (the moving partitions' current replicas) and \
follower.replication.throttled.replicas (the replicas being added), keeping entries already \
there, and the cluster-wide default leader.replication.throttled.rate and \
follower.replication.throttled.rate. The throttle stays until `fjord topic clear-throttle \
TOPIC` removes it, or until --wait does.

--wait polls until the partitions have moved (at most --timeout seconds), then removes a \
throttle this command set: the topic's configs once none of its partitions is moving, the \
cluster-wide rates once no partition of any topic is.

Examples:
  fjord topic reassign orders --replicas 0=2,3 --replicas 1=3,1 --throttle 10485760 --wait
  fjord topic reassign orders --cancel 0
  fjord topic reassignments orders

Exits 1 when a partition's change is refused (its error is shown in its row) or --wait times \
out (the move goes on), 4 when the topic or a partition does not exist.";

pub const CLEAR_THROTTLE_HELP: &str = "\
Deletes the topic's leader.replication.throttled.replicas and \
follower.replication.throttled.replicas and the cluster-wide default \
leader.replication.throttled.rate and follower.replication.throttled.rate (what `fjord topic \
reassign --throttle` sets). Throttle rates set for one broker (`fjord config set --broker ID`) \
are left alone. Moves still in progress, of any topic, continue unthrottled.";

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("what").required(true).multiple(true).args(["replicas", "cancel"])))]
pub struct ReassignArgs {
    /// The topic whose partitions move.
    pub topic: String,
    /// A partition's new replicas, e.g. `0=2,3`; may be repeated.
    #[arg(long, value_name = "PARTITION=ID,ID,...")]
    pub replicas: Vec<String>,
    /// Cancel the reassignment in progress of these partitions (`0,1` or repeated).
    #[arg(long, value_name = "PARTITION", value_delimiter = ',')]
    pub cancel: Vec<i32>,
    /// Limit replication of the moving replicas to this many bytes per second.
    #[arg(long, value_name = "BYTES/S", requires = "replicas")]
    pub throttle: Option<u64>,
    /// Wait until the partitions have moved, then remove the throttle this command set.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300, requires = "wait")]
    pub timeout: u64,
}

/// Parses `PARTITION=ID,ID,...`.
fn parse_move(s: &str) -> Result<(i32, Vec<i32>)> {
    let bad = || {
        CliError::Usage(format!(
            "--replicas '{s}': expected PARTITION=ID,ID,... (e.g. 0=1,2,3)"
        ))
    };
    let (p, ids) = s.split_once('=').ok_or_else(bad)?;
    let p: i32 = p.trim().parse().map_err(|_| bad())?;
    if p < 0 {
        return Err(CliError::Usage(format!(
            "--replicas '{s}': negative partition"
        )));
    }
    let ids = ids
        .split(',')
        .map(|b| b.trim().parse::<i32>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad())?;
    Ok((p, ids))
}

/// The requested change of each partition; a partition may be named once.
fn changes(args: &ReassignArgs) -> Result<BTreeMap<i32, Reassignment>> {
    let mut out = BTreeMap::new();
    let moves = args
        .replicas
        .iter()
        .map(|s| parse_move(s).map(|(p, ids)| (p, Reassignment::Move(ids))));
    let cancels = args.cancel.iter().map(|&p| {
        if p < 0 {
            Err(CliError::Usage(format!("--cancel {p}: negative partition")))
        } else {
            Ok((p, Reassignment::Cancel))
        }
    });
    for change in moves.chain(cancels) {
        let (p, change) = change?;
        if out.insert(p, change).is_some() {
            return Err(CliError::Usage(format!(
                "partition {p} is named twice (in --replicas or --cancel)"
            )));
        }
    }
    Ok(out)
}

/// The throttle rate as Kafka's `Long` config takes it; 0 would stop the copying for good.
fn throttle_rate(t: u64) -> Result<i64> {
    match i64::try_from(t) {
        Ok(r) if r > 0 => Ok(r),
        _ => Err(CliError::Usage(format!(
            "--throttle {t}: give a rate in bytes per second, at least 1"
        ))),
    }
}

/// The topic's partitions, by id: their current replicas.
fn current_replicas(info: &TopicInfo) -> BTreeMap<i32, Vec<i32>> {
    info.partitions
        .iter()
        .map(|p| (p.partition, p.replicas.clone()))
        .collect()
}

/// What `--throttle` set, for the report.
struct ThrottleSet {
    rate: i64,
    leader: Option<String>,
    follower: Option<String>,
}

/// Sets the topic's throttled-replica lists for `moves` (merged into what is there) and the
/// cluster-wide default rates, before the reassignment starts as Kafka's tool does.
async fn set_throttle(
    ctx: &Ctx,
    topic: &str,
    moves: &BTreeMap<i32, (Vec<i32>, Vec<i32>)>,
    rate: i64,
) -> Result<ThrottleSet> {
    let entries = throttle::for_moves(moves);
    let existing = admin::describe_configs(&ctx.client, RESOURCE_TOPIC, topic).await?;
    let value_of = |name: &str| {
        existing
            .iter()
            .find(|c| c.name == name && !c.is_default())
            .and_then(|c| c.value.clone())
    };
    let leader = (!entries.leader.is_empty())
        .then(|| throttle::merged(value_of(LEADER_REPLICAS).as_deref(), &entries.leader))
        .flatten();
    let follower = (!entries.follower.is_empty())
        .then(|| throttle::merged(value_of(FOLLOWER_REPLICAS).as_deref(), &entries.follower))
        .flatten();
    let mut ops = Vec::new();
    if let Some(v) = &leader {
        ops.push(ConfigOp::Set(LEADER_REPLICAS.into(), v.clone()));
    }
    if let Some(v) = &follower {
        ops.push(ConfigOp::Set(FOLLOWER_REPLICAS.into(), v.clone()));
    }
    if !ops.is_empty() {
        admin::alter_configs(&ctx.client, RESOURCE_TOPIC, topic, &ops, false).await?;
    }
    let rates = [
        ConfigOp::Set(LEADER_RATE.into(), rate.to_string()),
        ConfigOp::Set(FOLLOWER_RATE.into(), rate.to_string()),
    ];
    admin::alter_configs(&ctx.client, RESOURCE_BROKER, "", &rates, false).await?;
    Ok(ThrottleSet {
        rate,
        leader,
        follower,
    })
}

fn delete_ops(names: [&str; 2]) -> Vec<ConfigOp> {
    names
        .iter()
        .map(|n| ConfigOp::Delete(n.to_string()))
        .collect()
}

/// What removing the throttle after `--wait` did.
struct ThrottleCleared {
    topic_configs: bool,
    rates: bool,
    /// Partitions (of any topic) still moving, which kept part of the throttle in place.
    still_moving: Vec<Ongoing>,
}

/// Removes the throttle `reassign --throttle` set, as far as no other move still relies on it:
/// the topic's lists once none of its partitions moves, the rates once nothing moves.
async fn clear_after_wait(ctx: &Ctx, conn: &Connection, topic: &str) -> Result<ThrottleCleared> {
    let still_moving = reassignments::list(conn, None, timeout_ms(ctx)).await?;
    let topic_configs = !still_moving.iter().any(|o| o.topic == topic);
    if topic_configs {
        let ops = delete_ops([LEADER_REPLICAS, FOLLOWER_REPLICAS]);
        admin::alter_configs(&ctx.client, RESOURCE_TOPIC, topic, &ops, false).await?;
    }
    let rates = still_moving.is_empty();
    if rates {
        let ops = delete_ops([LEADER_RATE, FOLLOWER_RATE]);
        admin::alter_configs(&ctx.client, RESOURCE_BROKER, "", &ops, false).await?;
    }
    Ok(ThrottleCleared {
        topic_configs,
        rates,
        still_moving,
    })
}

/// One partition's row in the report.
struct Row {
    partition: i32,
    current: Vec<i32>,
    change: Reassignment,
    error: Option<ClientError>,
}

impl Row {
    fn json(&self) -> Value {
        let (error, code, message) = match &self.error {
            Some(ClientError::Kafka { error, message, .. }) => {
                (Some(kafka_name(*error)), error.code(), message.clone())
            }
            Some(other) => (
                Some("UNKNOWN_SERVER_ERROR".into()),
                -1,
                Some(other.to_string()),
            ),
            None => (None, 0, None),
        };
        json!({
            "partition": self.partition,
            "current_replicas": self.current,
            "action": match self.change { Reassignment::Move(_) => "move", Reassignment::Cancel => "cancel" },
            "target_replicas": match &self.change {
                Reassignment::Move(t) => json!(t),
                Reassignment::Cancel => Value::Null,
            },
            "status": if self.error.is_none() { "accepted" } else { "failed" },
            "error": error,
            "error_code": code,
            "message": message,
        })
    }

    fn status(&self) -> String {
        match &self.error {
            None => "accepted".into(),
            Some(ClientError::Kafka { error, message, .. }) => match message {
                Some(m) => format!("{} ({m})", kafka_name(*error)),
                None => kafka_name(*error),
            },
            Some(other) => other.to_string(),
        }
    }
}

pub async fn reassign(ctx: &Ctx, args: ReassignArgs) -> Result<()> {
    let changes = changes(&args)?;
    let rate = args.throttle.map(throttle_rate).transpose()?;
    let topic = args.topic.as_str();
    let info = ctx
        .client
        .topics(Some(&[topic.to_string()]))
        .await?
        .into_iter()
        .find(|t| t.name == topic)
        .ok_or_else(|| CliError::NotFound(format!("topic '{topic}' does not exist")))?;
    let current = current_replicas(&info);
    // Refused here rather than by the broker so that no throttle is set for a typo.
    for p in changes.keys() {
        if !current.contains_key(p) {
            return Err(CliError::NotFound(format!(
                "topic '{topic}' has no partition {p} (it has {})",
                current.len()
            )));
        }
    }
    let moves: BTreeMap<i32, (Vec<i32>, Vec<i32>)> = changes
        .iter()
        .filter_map(|(p, c)| match c {
            Reassignment::Move(t) => {
                let from = current.get(p).cloned().unwrap_or_default();
                Some((*p, (from, t.clone())))
            }
            Reassignment::Cancel => None,
        })
        .collect();
    let throttle = match rate {
        Some(rate) => Some(set_throttle(ctx, topic, &moves, rate).await?),
        None => None,
    };

    // The same broker answers the alter and the lists of --wait (see client::reassignments).
    let mut conn = ctx.client.admin().await?;
    let request = BTreeMap::from([(topic.to_string(), changes.clone())]);
    let outcomes = reassignments::alter(&conn, &request, timeout_ms(ctx)).await?;
    let mut rows: Vec<Row> = Vec::new();
    for o in outcomes.into_iter().filter(|o| o.topic == topic) {
        let Some(change) = changes.get(&o.partition) else {
            continue;
        };
        rows.push(Row {
            partition: o.partition,
            current: current.get(&o.partition).cloned().unwrap_or_default(),
            change: change.clone(),
            error: o.error,
        });
    }
    for p in changes.keys() {
        if !rows.iter().any(|r| r.partition == *p) {
            return Err(CliError::Other(format!(
                "AlterPartitionReassignments on {}: the answer leaves out {topic}/{p}",
                conn.broker()
            )));
        }
    }
    rows.sort_by_key(|r| r.partition);

    if !ctx.json() {
        print_throttle(topic, throttle.as_ref());
        let mut tb = table(["topic", "partition", "replicas", "target", "status"]);
        for r in &rows {
            tb.add_row(vec![
                topic.to_string(),
                r.partition.to_string(),
                ids(&r.current),
                match &r.change {
                    Reassignment::Move(t) => ids(t),
                    Reassignment::Cancel => "cancel".into(),
                },
                r.status(),
            ]);
        }
        print_table(&tb);
    }

    let accepted: BTreeMap<i32, Reassignment> = rows
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| (r.partition, r.change.clone()))
        .collect();
    let mut wait_doc = Value::Null;
    let mut timed_out = false;
    if args.wait {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(args.timeout);
        let done = wait_moved(ctx, &mut conn, topic, &accepted, deadline).await?;
        let elapsed = started.elapsed();
        let cleared = if done && throttle.is_some() {
            Some(clear_after_wait(ctx, &conn, topic).await?)
        } else {
            None
        };
        timed_out = !done;
        wait_doc = json!({
            "completed": done,
            "elapsed_ms": elapsed.as_millis() as u64,
            "throttle_cleared": cleared.as_ref().map(|c| json!({
                "topic_configs": c.topic_configs,
                "rates": c.rates,
                "still_moving": c.still_moving.iter().map(ongoing_json).collect::<Vec<_>>(),
            })),
        });
        if !ctx.json() {
            report_wait(
                topic,
                done,
                elapsed,
                &accepted,
                cleared.as_ref(),
                args.timeout,
            );
        }
    } else if !ctx.json() && throttle.is_some() {
        println!(
            "the throttle stays until `fjord topic clear-throttle {topic}`; watch the move with `fjord topic reassignments {topic}`"
        );
    }

    if ctx.json() {
        print_json(&json!({
            "topic": topic,
            "partitions": rows.iter().map(Row::json).collect::<Vec<_>>(),
            "throttle": throttle.as_ref().map(|t| json!({
                "rate": t.rate,
                LEADER_REPLICAS: t.leader,
                FOLLOWER_REPLICAS: t.follower,
            })),
            "wait": wait_doc,
        }));
    }
    if let Some(e) = rows.into_iter().find_map(|r| r.error) {
        return Err(e.into());
    }
    if timed_out {
        return Err(CliError::Other(format!(
            "the reassignment of '{topic}' has not finished after {} s; it goes on (see `fjord topic reassignments {topic}`){}",
            args.timeout,
            if throttle.is_some() {
                format!(" and the throttle stays until `fjord topic clear-throttle {topic}`")
            } else {
                String::new()
            }
        )));
    }
    Ok(())
}

fn print_throttle(topic: &str, throttle: Option<&ThrottleSet>) {
    let Some(t) = throttle else {
        return;
    };
    println!(
        "throttle: {} bytes/s ({LEADER_RATE} and {FOLLOWER_RATE}, cluster-wide defaults)",
        t.rate
    );
    for (name, v) in [
        (LEADER_REPLICAS, &t.leader),
        (FOLLOWER_REPLICAS, &t.follower),
    ] {
        if let Some(v) = v {
            println!("  topic '{topic}': {name}={v}");
        }
    }
    println!();
}

fn report_wait(
    topic: &str,
    done: bool,
    elapsed: Duration,
    accepted: &BTreeMap<i32, Reassignment>,
    cleared: Option<&ThrottleCleared>,
    timeout: u64,
) {
    println!();
    if !done {
        println!("not finished after {timeout} s");
        return;
    }
    if accepted.is_empty() {
        println!("nothing to wait for: no change was accepted");
    } else {
        println!(
            "reassignment of '{topic}' complete after {:.1} s",
            elapsed.as_secs_f64()
        );
    }
    let Some(c) = cleared else {
        return;
    };
    if c.topic_configs {
        println!("removed topic '{topic}': {LEADER_REPLICAS}, {FOLLOWER_REPLICAS}");
    }
    if c.rates {
        println!("removed cluster-wide defaults: {LEADER_RATE}, {FOLLOWER_RATE}");
    }
    if !c.still_moving.is_empty() {
        let moving: Vec<String> = c
            .still_moving
            .iter()
            .map(|o| format!("{}/{}", o.topic, o.partition))
            .collect();
        println!(
            "kept the rest of the throttle: {} still moving; remove it later with `fjord topic clear-throttle {topic}`",
            moving.join(", ")
        );
    }
}

fn wait_bar(ctx: &Ctx, len: usize) -> ProgressBar {
    if ctx.json() {
        return ProgressBar::hidden();
    }
    // indicatif draws on stderr, and only when it is a terminal.
    let pb = ProgressBar::new(len as u64);
    let style = ProgressStyle::default_bar()
        .template("{elapsed_precise} [{bar:40}] {pos}/{len} partitions moved {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style.progress_chars("=> "));
    pb
}

/// Polls until no partition of `pending` is listed as reassigning and each moved one shows its
/// target replicas in Metadata (what `fjord topic describe` reads next), or until `deadline`.
/// `Ok(false)` on the deadline. A broker that stops answering is replaced by the current
/// controller; any other error ends the wait.
async fn wait_moved(
    ctx: &Ctx,
    conn: &mut Arc<Connection>,
    topic: &str,
    pending: &BTreeMap<i32, Reassignment>,
    deadline: Instant,
) -> Result<bool> {
    let mut pending = pending.clone();
    let pb = wait_bar(ctx, pending.len());
    let total = pending.len();
    while !pending.is_empty() {
        pb.set_message(format!(
            "(moving: {})",
            pending
                .keys()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ));
        match tokio::time::timeout_at(deadline, moved(ctx, conn, topic, &pending)).await {
            Err(_) => break,
            Ok(Ok(done)) => {
                for p in done {
                    pending.remove(&p);
                }
                pb.set_position((total - pending.len()) as u64);
                if pending.is_empty() {
                    break;
                }
            }
            Ok(Err(e)) if e.is_unreachable() => {
                tracing::debug!(error = %e, "reassignment poll failed; asking the controller again");
                if let Ok(Ok(c)) = tokio::time::timeout_at(deadline, ctx.client.admin()).await {
                    *conn = c;
                }
            }
            Ok(Err(e)) => {
                pb.abandon();
                return Err(e.into());
            }
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep_until((now + POLL_INTERVAL).min(deadline)).await;
    }
    pb.finish_and_clear();
    Ok(pending.is_empty())
}

/// The partitions of `pending` that have finished moving.
async fn moved(
    ctx: &Ctx,
    conn: &Connection,
    topic: &str,
    pending: &BTreeMap<i32, Reassignment>,
) -> Result<Vec<i32>, ClientError> {
    let which = BTreeMap::from([(topic.to_string(), pending.keys().copied().collect())]);
    let ongoing = reassignments::list(conn, Some(&which), timeout_ms(ctx)).await?;
    let meta = ctx.client.topics(Some(&[topic.to_string()])).await?;
    let replicas: BTreeMap<i32, BTreeSet<i32>> = meta
        .iter()
        .filter(|t| t.name == topic)
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (p.partition, p.replicas.iter().copied().collect()))
        })
        .collect();
    Ok(pending
        .iter()
        .filter(|(p, change)| {
            !ongoing
                .iter()
                .any(|o| o.topic == topic && o.partition == **p)
                && match change {
                    Reassignment::Move(t) => replicas.get(p) == Some(&t.iter().copied().collect()),
                    Reassignment::Cancel => true,
                }
        })
        .map(|(p, _)| *p)
        .collect())
}

fn ongoing_json(o: &Ongoing) -> Value {
    json!({
        "topic": o.topic,
        "partition": o.partition,
        "replicas": o.replicas,
        "adding_replicas": o.adding,
        "removing_replicas": o.removing,
    })
}

/// `fjord topic reassignments [TOPIC...]`.
pub async fn list(ctx: &Ctx, topics: &[String]) -> Result<()> {
    let which: Option<BTreeMap<String, Vec<i32>>> = if topics.is_empty() {
        None
    } else {
        let infos = ctx.client.topics(Some(topics)).await?;
        Some(
            infos
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        t.partitions.iter().map(|p| p.partition).collect(),
                    )
                })
                .collect(),
        )
    };
    let conn = ctx.client.admin().await?;
    let ongoing = reassignments::list(&conn, which.as_ref(), timeout_ms(ctx)).await?;
    if ctx.json() {
        print_json(&Value::Array(ongoing.iter().map(ongoing_json).collect()));
    } else {
        let mut tb = table(["topic", "partition", "replicas", "adding", "removing"]);
        for o in &ongoing {
            tb.add_row(vec![
                o.topic.clone(),
                o.partition.to_string(),
                ids(&o.replicas),
                ids(&o.adding),
                ids(&o.removing),
            ]);
        }
        print_table(&tb);
    }
    Ok(())
}

/// `fjord topic clear-throttle TOPIC`.
pub async fn clear_throttle(ctx: &Ctx, topic: &str) -> Result<()> {
    // Name the topic in the error if it does not exist (brokers answer with a generic code).
    ctx.client.topics(Some(&[topic.to_string()])).await?;
    let resources = [
        (
            RESOURCE_TOPIC,
            topic,
            delete_ops([LEADER_REPLICAS, FOLLOWER_REPLICAS]),
        ),
        (
            RESOURCE_BROKER,
            "",
            delete_ops([LEADER_RATE, FOLLOWER_RATE]),
        ),
    ];
    for (kind, name, ops) in &resources {
        admin::alter_configs(&ctx.client, *kind, name, ops, false).await?;
    }
    // Only to warn: a broker without ListPartitionReassignments has no moves to speak of.
    let still_moving = match ctx.client.admin().await {
        Ok(conn) => match reassignments::list(&conn, None, timeout_ms(ctx)).await {
            Ok(v) => v,
            Err(e) if e.kafka_error().is_some() || matches!(e, ClientError::Unsupported { .. }) => {
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    };
    let docs: Vec<Value> = resources
        .iter()
        .map(|(kind, name, ops)| {
            json!({
                "resource": describe_what(*kind, name),
                "changes": ops.iter().map(|op| match op {
                    ConfigOp::Set(k, v) => json!({"name": k, "operation": "set", "value": v}),
                    ConfigOp::Delete(k) => json!({"name": k, "operation": "delete", "value": null}),
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    if ctx.json() {
        print_json(&json!({
            "topic": topic,
            "resources": docs,
            "still_moving": still_moving.iter().map(ongoing_json).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let mut tb = table(["resource", "config", "operation"]);
    for d in &docs {
        for c in d["changes"].as_array().into_iter().flatten() {
            tb.add_row(vec![
                plain(&d["resource"]),
                plain(&c["name"]),
                plain(&c["operation"]),
            ]);
        }
    }
    print_table(&tb);
    if !still_moving.is_empty() {
        println!(
            "note: {} partition(s) still moving, now unthrottled (`fjord topic reassignments`)",
            still_moving.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(replicas: &[&str], cancel: &[i32]) -> ReassignArgs {
        ReassignArgs {
            topic: "t".into(),
            replicas: replicas.iter().map(|s| s.to_string()).collect(),
            cancel: cancel.to_vec(),
            throttle: None,
            wait: false,
            timeout: 300,
        }
    }

    #[test]
    fn replica_arguments() {
        assert_eq!(parse_move("0=1,2,3").unwrap(), (0, vec![1, 2, 3]));
        assert_eq!(parse_move(" 4 = 2 ").unwrap(), (4, vec![2]));
        for bad in ["0", "=1", "0=", "0=1,,2", "x=1", "-1=2", "0=a"] {
            assert!(parse_move(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_partition_is_changed_once() {
        let c = changes(&args(&["0=2", "1=3,1"], &[2])).unwrap();
        assert_eq!(c[&0], Reassignment::Move(vec![2]));
        assert_eq!(c[&1], Reassignment::Move(vec![3, 1]));
        assert_eq!(c[&2], Reassignment::Cancel);
        assert!(changes(&args(&["0=2", "0=3"], &[])).is_err());
        assert!(changes(&args(&["0=2"], &[0])).is_err());
        assert!(changes(&args(&[], &[-1])).is_err());
    }

    #[test]
    fn throttle_rates() {
        assert_eq!(throttle_rate(1000).unwrap(), 1000);
        assert!(throttle_rate(0).is_err());
        assert!(throttle_rate(u64::MAX).is_err());
    }
}
