//! `fjord topic create|list|describe|delete|alter-config|add-partitions`, and the
//! reassignment commands of [`crate::cmd::reassign`].

use std::collections::BTreeMap;

use clap::Subcommand;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsRequest, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
};
use kafka_protocol::messages::delete_topics_request::{DeleteTopicState, DeleteTopicsRequest};
use kafka_protocol::protocol::StrBytes;
use serde_json::{Value, json};

use crate::Ctx;
use crate::client::admin::{self, ConfigOp, OffsetSpec, RESOURCE_TOPIC, Tp, list_offsets};
use crate::client::error::ClientError;
use crate::cmd::{key_value, reassign};
use crate::exit::{CliError, Result};
use crate::output::{ids, print_json, print_table, table};

#[derive(Subcommand, Debug)]
pub enum TopicCmd {
    /// Create topics.
    Create {
        #[arg(required = true)]
        names: Vec<String>,
        /// Partitions (default: the broker's num.partitions).
        #[arg(short, long)]
        partitions: Option<i32>,
        /// Replicas per partition (default: the broker's default.replication.factor).
        #[arg(short, long)]
        replication_factor: Option<i16>,
        /// Topic config, e.g. `-c retention.ms=3600000`; may be repeated.
        #[arg(short, long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Succeed if the topic exists already.
        #[arg(long)]
        if_not_exists: bool,
        /// Ask the broker to check the request without creating anything.
        #[arg(long)]
        validate_only: bool,
    },
    /// List topics.
    List {
        /// Include internal topics such as __consumer_offsets.
        #[arg(short, long)]
        internal: bool,
    },
    /// Partitions (leader, replicas, ISR, earliest/latest offsets) and non-default configs.
    Describe {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Delete topics.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
        /// Succeed if a topic does not exist.
        #[arg(long)]
        if_exists: bool,
    },
    /// Set or remove topic configs.
    AlterConfig {
        name: String,
        /// `key=value` to set; may be repeated.
        #[arg(short, long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Config to remove (back to the default); may be repeated.
        #[arg(short, long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Raise a topic's partition count.
    AddPartitions {
        name: String,
        /// The new total number of partitions.
        #[arg(long)]
        total: i32,
    },
    /// Move partitions to other brokers, optionally throttled, or cancel moves in progress.
    #[command(after_help = reassign::REASSIGN_HELP)]
    Reassign(reassign::ReassignArgs),
    /// Partition reassignments in progress (all topics, or these): replicas, adding, removing.
    Reassignments { topics: Vec<String> },
    /// Remove the replication throttle `reassign --throttle` set (topic lists, cluster rates).
    #[command(after_help = reassign::CLEAR_THROTTLE_HELP)]
    ClearThrottle { name: String },
}

pub async fn run(ctx: &Ctx, cmd: TopicCmd) -> Result<()> {
    match cmd {
        TopicCmd::Create {
            names,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
            validate_only,
        } => {
            create(
                ctx,
                &names,
                partitions,
                replication_factor,
                &configs,
                if_not_exists,
                validate_only,
            )
            .await
        }
        TopicCmd::List { internal } => list(ctx, internal).await,
        TopicCmd::Describe { names } => describe(ctx, &names).await,
        TopicCmd::Delete { names, if_exists } => delete(ctx, &names, if_exists).await,
        TopicCmd::AlterConfig { name, set, delete } => {
            alter_config(ctx, &name, &set, &delete).await
        }
        TopicCmd::AddPartitions { name, total } => add_partitions(ctx, &name, total).await,
        TopicCmd::Reassign(args) => reassign::reassign(ctx, args).await,
        TopicCmd::Reassignments { topics } => reassign::list(ctx, &topics).await,
        TopicCmd::ClearThrottle { name } => reassign::clear_throttle(ctx, &name).await,
    }
}

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub(crate) fn timeout_ms(ctx: &Ctx) -> i32 {
    i32::try_from(ctx.client.options().request_timeout.as_millis()).unwrap_or(i32::MAX)
}

async fn create(
    ctx: &Ctx,
    names: &[String],
    partitions: Option<i32>,
    rf: Option<i16>,
    configs: &[String],
    if_not_exists: bool,
    validate_only: bool,
) -> Result<()> {
    if partitions.is_some_and(|p| p < 1) {
        return Err(CliError::Usage("--partitions must be at least 1".into()));
    }
    if rf.is_some_and(|r| r < 1) {
        return Err(CliError::Usage(
            "--replication-factor must be at least 1".into(),
        ));
    }
    let configs = configs
        .iter()
        .map(|c| key_value(c, "--config"))
        .collect::<Result<Vec<_>>>()?;
    let conn = ctx.client.admin().await?;
    let v = conn.version::<CreateTopicsRequest>()?;
    if v < 4 && (partitions.is_none() || rf.is_none()) {
        return Err(CliError::Usage(format!(
            "{} does not support broker-default partitions or replication factor (CreateTopics v{v}); pass --partitions and --replication-factor",
            conn.broker()
        )));
    }
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(timeout_ms(ctx))
        .with_validate_only(validate_only)
        .with_topics(
            names
                .iter()
                .map(|n| {
                    CreatableTopic::default()
                        .with_name(topic_name(n))
                        .with_num_partitions(partitions.unwrap_or(-1))
                        .with_replication_factor(rf.unwrap_or(-1))
                        .with_configs(
                            configs
                                .iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfig::default()
                                        .with_name(StrBytes::from_string(k.clone()))
                                        .with_value(Some(StrBytes::from_string(v.clone())))
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let resp = conn.start(&req, v).await?.wait().await?;
    let mut rows = Vec::new();
    let mut first_err: Option<ClientError> = None;
    for t in resp.topics {
        let name = t.name.0.to_string();
        let err = ClientError::from_code(
            || format!("create topic '{name}' on {}", conn.broker()),
            t.error_code,
            t.error_message.as_deref(),
        );
        let status = match &err {
            None if validate_only => "valid".to_string(),
            None => "created".to_string(),
            Some(e)
                if if_not_exists && e.kafka_error() == Some(ResponseError::TopicAlreadyExists) =>
            {
                "exists".to_string()
            }
            Some(e) => {
                let s = e.to_string();
                first_err.get_or_insert(err.unwrap_or(ClientError::Protocol(s.clone())));
                s
            }
        };
        rows.push(json!({
            "name": name,
            "status": status,
            "topic_id": (v >= 7 && !t.topic_id.is_nil()).then(|| t.topic_id.to_string()),
            "partitions": (v >= 5 && t.num_partitions > 0).then_some(t.num_partitions),
            "replication_factor": (v >= 5 && t.replication_factor > 0).then_some(t.replication_factor),
        }));
    }
    if ctx.json() {
        print_json(&Value::Array(rows));
    } else {
        let mut tb = table(["topic", "status", "partitions", "replicas", "id"]);
        for r in &rows {
            tb.add_row(vec![
                plain(&r["name"]),
                plain(&r["status"]),
                plain(&r["partitions"]),
                plain(&r["replication_factor"]),
                plain(&r["topic_id"]),
            ]);
        }
        print_table(&tb);
    }
    match first_err {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// A JSON scalar as table text ("" for null).
pub fn plain(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn list(ctx: &Ctx, internal: bool) -> Result<()> {
    let topics = ctx.client.topics(None).await?;
    let topics: Vec<_> = topics
        .into_iter()
        .filter(|t| internal || !t.internal)
        .collect();
    if ctx.json() {
        print_json(&Value::Array(
            topics
                .iter()
                .map(|t| {
                    json!({
                        "name": t.name,
                        "topic_id": t.id.to_string(),
                        "partitions": t.partitions.len(),
                        "replication_factor": t.partitions.first().map(|p| p.replicas.len()),
                        "internal": t.internal,
                    })
                })
                .collect(),
        ));
    } else {
        let mut tb = table(["name", "partitions", "replicas", "id"]);
        for t in &topics {
            tb.add_row(vec![
                t.name.clone(),
                t.partitions.len().to_string(),
                t.partitions
                    .first()
                    .map(|p| p.replicas.len().to_string())
                    .unwrap_or_default(),
                t.id.to_string(),
            ]);
        }
        print_table(&tb);
    }
    Ok(())
}

async fn describe(ctx: &Ctx, names: &[String]) -> Result<()> {
    let topics = ctx.client.topics(Some(names)).await?;
    let tps: Vec<Tp> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), p.partition)))
        .filter(|_| true)
        .collect();
    // Offsets of leaderless partitions cannot be asked for; they show as unknown.
    let with_leader: Vec<Tp> = topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.leader >= 0)
                .map(|p| (t.name.clone(), p.partition))
        })
        .collect();
    let earliest = list_offsets(&ctx.client, &with_leader, OffsetSpec::Earliest).await?;
    let latest = list_offsets(&ctx.client, &with_leader, OffsetSpec::Latest).await?;
    let mut docs = Vec::new();
    for t in &topics {
        let configs: BTreeMap<String, Option<String>> =
            admin::describe_configs(&ctx.client, RESOURCE_TOPIC, &t.name)
                .await?
                .into_iter()
                .filter(|c| !c.is_default())
                .map(|c| {
                    (
                        c.name,
                        if c.sensitive {
                            Some("(sensitive)".into())
                        } else {
                            c.value
                        },
                    )
                })
                .collect();
        let parts: Vec<Value> = t
            .partitions
            .iter()
            .map(|p| {
                let key = (t.name.clone(), p.partition);
                json!({
                    "partition": p.partition,
                    "leader": p.leader,
                    "leader_epoch": p.leader_epoch,
                    "replicas": p.replicas,
                    "isr": p.isr,
                    "offline_replicas": p.offline,
                    "earliest_offset": earliest.get(&key),
                    "latest_offset": latest.get(&key),
                })
            })
            .collect();
        docs.push(json!({
            "name": t.name,
            "topic_id": t.id.to_string(),
            "internal": t.internal,
            "partitions": parts,
            "configs": configs,
        }));
    }
    let _ = tps;
    if ctx.json() {
        print_json(&Value::Array(docs));
        return Ok(());
    }
    for (i, (t, d)) in topics.iter().zip(&docs).enumerate() {
        if i > 0 {
            println!();
        }
        println!("TOPIC        {}", t.name);
        println!("ID           {}", t.id);
        println!("PARTITIONS   {}", t.partitions.len());
        println!(
            "REPLICAS     {}",
            t.partitions.first().map(|p| p.replicas.len()).unwrap_or(0)
        );
        if t.internal {
            println!("INTERNAL     true");
        }
        let cfg = d["configs"].as_object().cloned().unwrap_or_default();
        if cfg.is_empty() {
            println!("CONFIGS      (all defaults)");
        } else {
            let text: Vec<String> = cfg
                .iter()
                .map(|(k, v)| format!("{k}={}", plain(v)))
                .collect();
            println!("CONFIGS      {}", text.join(", "));
        }
        println!();
        let mut tb = table([
            "partition",
            "leader",
            "epoch",
            "replicas",
            "isr",
            "offline",
            "earliest",
            "latest",
        ]);
        for p in &t.partitions {
            let key = (t.name.clone(), p.partition);
            tb.add_row(vec![
                p.partition.to_string(),
                if p.leader < 0 {
                    "none".into()
                } else {
                    p.leader.to_string()
                },
                p.leader_epoch.to_string(),
                ids(&p.replicas),
                ids(&p.isr),
                ids(&p.offline),
                earliest.get(&key).map(i64::to_string).unwrap_or("?".into()),
                latest.get(&key).map(i64::to_string).unwrap_or("?".into()),
            ]);
        }
        print_table(&tb);
    }
    Ok(())
}

async fn delete(ctx: &Ctx, names: &[String], if_exists: bool) -> Result<()> {
    let conn = ctx.client.admin().await?;
    let v = conn.version::<kafka_protocol::messages::DeleteTopicsRequest>()?;
    let mut req = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms(ctx));
    if v >= 6 {
        req.topics = names
            .iter()
            .map(|n| DeleteTopicState::default().with_name(Some(topic_name(n))))
            .collect();
    } else {
        req.topic_names = names.iter().map(|n| topic_name(n)).collect();
    }
    let resp = conn.start(&req, v).await?.wait().await?;
    let mut rows = Vec::new();
    let mut first_err = None;
    for r in resp.responses {
        let name = r.name.map(|n| n.0.to_string()).unwrap_or_default();
        let err = ClientError::from_code(
            || format!("delete topic '{name}' on {}", conn.broker()),
            r.error_code,
            r.error_message.as_deref(),
        );
        let status = match err {
            None => "deleted".to_string(),
            Some(e)
                if if_exists
                    && matches!(
                        e.kafka_error(),
                        Some(
                            ResponseError::UnknownTopicOrPartition | ResponseError::UnknownTopicId
                        )
                    ) =>
            {
                "absent".to_string()
            }
            Some(e) => {
                let s = e.to_string();
                first_err.get_or_insert(e);
                s
            }
        };
        rows.push(json!({"name": name, "status": status}));
    }
    if ctx.json() {
        print_json(&Value::Array(rows));
    } else {
        let mut tb = table(["topic", "status"]);
        for r in &rows {
            tb.add_row(vec![plain(&r["name"]), plain(&r["status"])]);
        }
        print_table(&tb);
    }
    match first_err {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

async fn alter_config(ctx: &Ctx, name: &str, set: &[String], delete: &[String]) -> Result<()> {
    let ops = config_ops(set, delete)?;
    // Name the topic in the error if it does not exist (brokers answer with a generic code).
    ctx.client.topics(Some(&[name.to_string()])).await?;
    admin::alter_configs(&ctx.client, RESOURCE_TOPIC, name, &ops, false).await?;
    report_ops(ctx, &format!("topic '{name}'"), &ops);
    Ok(())
}

/// `--set k=v` and `--delete k` as config operations; at least one is required.
pub fn config_ops(set: &[String], delete: &[String]) -> Result<Vec<ConfigOp>> {
    let mut ops = Vec::new();
    for s in set {
        let (k, v) = key_value(s, "--set")?;
        ops.push(ConfigOp::Set(k, v));
    }
    ops.extend(delete.iter().map(|k| ConfigOp::Delete(k.clone())));
    if ops.is_empty() {
        return Err(CliError::Usage(
            "nothing to change: give --set KEY=VALUE or --delete KEY".into(),
        ));
    }
    Ok(ops)
}

pub fn report_ops(ctx: &Ctx, what: &str, ops: &[ConfigOp]) {
    let rows: Vec<Value> = ops
        .iter()
        .map(|op| match op {
            ConfigOp::Set(k, v) => json!({"name": k, "operation": "set", "value": v}),
            ConfigOp::Delete(k) => json!({"name": k, "operation": "delete", "value": null}),
        })
        .collect();
    if ctx.json() {
        print_json(&json!({"resource": what, "changes": rows}));
    } else {
        println!("updated {what}");
        let mut tb = table(["config", "operation", "value"]);
        for r in &rows {
            tb.add_row(vec![
                plain(&r["name"]),
                plain(&r["operation"]),
                plain(&r["value"]),
            ]);
        }
        print_table(&tb);
    }
}

async fn add_partitions(ctx: &Ctx, name: &str, total: i32) -> Result<()> {
    let topics = ctx.client.topics(Some(&[name.to_string()])).await?;
    let current = topics.first().map(|t| t.partitions.len()).unwrap_or(0);
    if total as usize <= current {
        return Err(CliError::Usage(format!(
            "topic '{name}' has {current} partitions already; --total must be larger (partitions can only be added)"
        )));
    }
    let conn = ctx.client.admin().await?;
    let req = CreatePartitionsRequest::default()
        .with_timeout_ms(timeout_ms(ctx))
        .with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(topic_name(name))
                .with_count(total)
                .with_assignments(None),
        ]);
    let resp = conn.send(&req).await?;
    for r in &resp.results {
        crate::client::error::check(r.error_code, r.error_message.as_deref(), || {
            format!("add partitions to '{name}' on {}", conn.broker())
        })?;
    }
    if ctx.json() {
        print_json(&json!({"name": name, "previous_partitions": current, "partitions": total}));
    } else {
        println!("topic '{name}': {current} -> {total} partitions");
    }
    Ok(())
}
