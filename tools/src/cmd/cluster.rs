//! `fjord cluster info|health`.

use std::collections::BTreeMap;

use clap::Subcommand;
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::describe_cluster_request::DescribeClusterRequest;
use kafka_protocol::messages::describe_quorum_request::{
    DescribeQuorumRequest, PartitionData, TopicData,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::{Value, json};

use crate::Ctx;
use crate::client::TopicInfo;
use crate::client::cluster::topics_from;
use crate::client::error::check;
use crate::exit::{CliError, Result};
use crate::output::{ids, print_json, print_table, table};

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Cluster id, controller, brokers (fenced ones too), quorum, topic and partition counts.
    Info,
    /// Checks that every partition has a leader and a full ISR; exits 6 when not.
    Health,
}

#[derive(Debug, Default)]
struct Overview {
    cluster_id: Option<String>,
    controller: i32,
    /// id -> (address, rack, fenced)
    brokers: BTreeMap<i32, (String, Option<String>, Option<bool>)>,
    topics: usize,
    partitions: usize,
    under_replicated: Vec<Value>,
    offline: Vec<Value>,
    quorum: Option<Value>,
    fenced_known: bool,
}

async fn overview(ctx: &Ctx) -> Result<Overview> {
    let meta = ctx.client.metadata(None).await?;
    let mut o = Overview {
        cluster_id: meta.cluster_id.as_ref().map(|c| c.to_string()),
        controller: meta.controller_id.0,
        ..Default::default()
    };
    for b in &meta.brokers {
        o.brokers.insert(
            b.node_id.0,
            (
                format!("{}:{}", b.host.as_str(), b.port),
                b.rack.as_ref().map(|r| r.to_string()),
                None,
            ),
        );
    }
    let conn = ctx.client.any().await?;
    if conn.versions().supports::<DescribeClusterRequest>() {
        let v = conn.version::<DescribeClusterRequest>()?;
        let mut req = DescribeClusterRequest::default();
        if v >= 1 {
            req.endpoint_type = 1;
        }
        if v >= 2 {
            req.include_fenced_brokers = true;
            o.fenced_known = true;
        }
        let resp = conn.start(&req, v).await?.wait().await?;
        check(resp.error_code, resp.error_message.as_deref(), || {
            format!("DescribeCluster on {}", conn.broker())
        })?;
        o.cluster_id = Some(resp.cluster_id.to_string());
        o.controller = resp.controller_id.0;
        for b in resp.brokers {
            o.brokers.insert(
                b.broker_id.0,
                (
                    format!("{}:{}", b.host.as_str(), b.port),
                    b.rack.map(|r| r.to_string()),
                    (v >= 2).then_some(b.is_fenced),
                ),
            );
        }
    }
    // The controller quorum, where the broker forwards DescribeQuorum (Kafka does; Fjord may not).
    if conn.versions().supports::<DescribeQuorumRequest>() {
        let req = DescribeQuorumRequest::default().with_topics(vec![
            TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
                .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
        ]);
        match conn.send(&req).await {
            Ok(resp) if resp.error_code == 0 => {
                if let Some(p) = resp.topics.first().and_then(|t| t.partitions.first()) {
                    o.quorum = Some(json!({
                        "leader": p.leader_id.0,
                        "leader_epoch": p.leader_epoch,
                        "high_watermark": p.high_watermark,
                        "voters": p.current_voters.iter().map(|v| json!({
                            "id": v.replica_id.0, "log_end_offset": v.log_end_offset,
                        })).collect::<Vec<_>>(),
                        "observers": p.observers.iter().map(|v| v.replica_id.0).collect::<Vec<_>>(),
                    }));
                }
            }
            Ok(resp) => tracing::debug!(code = resp.error_code, "DescribeQuorum refused"),
            Err(e) => tracing::debug!(error = %e, "DescribeQuorum failed"),
        }
    }
    let topics = topics_from(&meta)?;
    o.topics = topics.len();
    o.partitions = topics.iter().map(|t| t.partitions.len()).sum();
    (o.offline, o.under_replicated) = assess(&topics);
    Ok(o)
}

/// Offline partitions (no leader) and under-replicated ones (ISR smaller than the replica set).
fn assess(topics: &[TopicInfo]) -> (Vec<Value>, Vec<Value>) {
    let (mut offline, mut under) = (Vec::new(), Vec::new());
    for t in topics {
        for p in &t.partitions {
            let doc = json!({
                "topic": t.name, "partition": p.partition, "leader": p.leader,
                "replicas": p.replicas, "isr": p.isr,
            });
            if p.leader < 0 {
                offline.push(doc);
            } else if p.isr.len() < p.replicas.len() {
                under.push(doc);
            }
        }
    }
    (offline, under)
}

pub async fn run(ctx: &Ctx, cmd: ClusterCmd) -> Result<()> {
    let o = overview(ctx).await?;
    let fenced: Vec<i32> = o
        .brokers
        .iter()
        .filter(|(_, b)| b.2 == Some(true))
        .map(|(id, _)| *id)
        .collect();
    match cmd {
        ClusterCmd::Info => {
            if ctx.json() {
                print_json(&json!({
                    "cluster_id": o.cluster_id,
                    "controller": o.controller,
                    "brokers": o.brokers.iter().map(|(id, (addr, rack, f))| json!({
                        "id": id, "address": addr, "rack": rack, "fenced": f,
                    })).collect::<Vec<_>>(),
                    "fenced_brokers": if o.fenced_known { json!(fenced) } else { Value::Null },
                    "quorum": o.quorum,
                    "topics": o.topics,
                    "partitions": o.partitions,
                    "under_replicated_partitions": o.under_replicated.len(),
                    "offline_partitions": o.offline.len(),
                }));
                return Ok(());
            }
            println!("CLUSTER      {}", o.cluster_id.clone().unwrap_or_default());
            println!("CONTROLLER   {}", o.controller);
            if let Some(q) = &o.quorum {
                let voters: Vec<String> = q["voters"]
                    .as_array()
                    .map(|a| a.iter().map(|v| v["id"].to_string()).collect())
                    .unwrap_or_default();
                println!(
                    "QUORUM       leader {} (epoch {}), voters {}",
                    q["leader"],
                    q["leader_epoch"],
                    voters.join(",")
                );
            }
            println!("TOPICS       {} ({} partitions)", o.topics, o.partitions);
            println!(
                "PARTITIONS   {} under-replicated, {} offline",
                o.under_replicated.len(),
                o.offline.len()
            );
            println!();
            let mut t = table(["id", "address", "rack", "fenced", "role"]);
            for (id, (addr, rack, f)) in &o.brokers {
                t.add_row(vec![
                    id.to_string(),
                    addr.clone(),
                    rack.clone().unwrap_or_default(),
                    f.map(|x| x.to_string()).unwrap_or("?".into()),
                    if *id == o.controller {
                        "controller".into()
                    } else {
                        String::new()
                    },
                ]);
            }
            print_table(&t);
            Ok(())
        }
        ClusterCmd::Health => {
            let healthy =
                o.offline.is_empty() && o.under_replicated.is_empty() && fenced.is_empty();
            if ctx.json() {
                print_json(&json!({
                    "healthy": healthy,
                    "brokers": o.brokers.len(),
                    "fenced_brokers": fenced,
                    "controller": o.controller,
                    "offline_partitions": o.offline,
                    "under_replicated_partitions": o.under_replicated,
                }));
            } else {
                println!("healthy: {healthy}");
                println!("brokers: {} ({} fenced)", o.brokers.len(), fenced.len());
                println!("controller: {}", o.controller);
                if !o.offline.is_empty() || !o.under_replicated.is_empty() {
                    let mut t =
                        table(["topic", "partition", "leader", "replicas", "isr", "problem"]);
                    for (list, what) in [
                        (&o.offline, "offline"),
                        (&o.under_replicated, "under-replicated"),
                    ] {
                        for p in list {
                            let v = |k: &str| -> Vec<i32> {
                                p[k].as_array()
                                    .map(|a| {
                                        a.iter()
                                            .filter_map(|x| x.as_i64())
                                            .map(|x| x as i32)
                                            .collect()
                                    })
                                    .unwrap_or_default()
                            };
                            t.add_row(vec![
                                p["topic"].as_str().unwrap_or_default().to_string(),
                                p["partition"].to_string(),
                                p["leader"].to_string(),
                                ids(&v("replicas")),
                                ids(&v("isr")),
                                what.to_string(),
                            ]);
                        }
                    }
                    print_table(&t);
                }
            }
            if healthy {
                Ok(())
            } else {
                Err(CliError::Unhealthy(format!(
                    "cluster unhealthy: {} offline, {} under-replicated partitions, {} fenced brokers",
                    o.offline.len(),
                    o.under_replicated.len(),
                    fenced.len()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::PartitionInfo;

    fn part(partition: i32, leader: i32, replicas: &[i32], isr: &[i32]) -> PartitionInfo {
        PartitionInfo {
            partition,
            leader,
            leader_epoch: 0,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            offline: Vec::new(),
            error_code: 0,
        }
    }

    #[test]
    fn finds_offline_and_under_replicated_partitions() {
        let t = TopicInfo {
            name: "t".into(),
            id: uuid::Uuid::nil(),
            internal: false,
            partitions: vec![
                part(0, 1, &[1, 2, 3], &[1, 2, 3]),
                part(1, 2, &[1, 2, 3], &[2]),
                part(2, -1, &[1, 2, 3], &[]),
            ],
        };
        let (offline, under) = assess(&[t]);
        assert_eq!(offline.len(), 1);
        assert_eq!(offline[0]["partition"], 2);
        assert_eq!(under.len(), 1);
        assert_eq!(under[0]["partition"], 1);
        assert_eq!(under[0]["isr"], json!([2]));
    }
}
