//! Partition reassignment (KIP-455): AlterPartitionReassignments starts or cancels moves,
//! ListPartitionReassignments shows the ones in progress. Callers send both to the same broker
//! (`Client::admin`, as for CreateTopics): a broker answers an alter once its own metadata
//! shows the change, while another broker's view may trail by a propagation.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::conn::Connection;
use super::error::{ClientError, check};

/// What to do with one partition: move it to these replicas (the first is the preferred
/// leader), or cancel its reassignment in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reassignment {
    Move(Vec<i32>),
    Cancel,
}

/// The broker's answer for one partition of an AlterPartitionReassignments request.
#[derive(Debug)]
pub struct PartitionOutcome {
    pub topic: String,
    pub partition: i32,
    /// `None` when the change was accepted.
    pub error: Option<ClientError>,
}

/// A reassignment in progress, as ListPartitionReassignments reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ongoing {
    pub topic: String,
    pub partition: i32,
    /// Target and original replicas together while the move runs.
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn broker_ids(v: &[BrokerId]) -> Vec<i32> {
    v.iter().map(|b| b.0).collect()
}

/// Sends one AlterPartitionReassignments for `changes` (topic -> partition -> change), at v1
/// when the broker has it, always allowing a change of replication factor. A request-level
/// error is an `Err`; per-partition errors come back in the outcomes, one per partition asked
/// about, in the broker's order.
pub async fn alter(
    conn: &Connection,
    changes: &BTreeMap<String, BTreeMap<i32, Reassignment>>,
    timeout_ms: i32,
) -> Result<Vec<PartitionOutcome>, ClientError> {
    let v = conn.version::<AlterPartitionReassignmentsRequest>()?;
    let topics = changes
        .iter()
        .map(|(t, parts)| {
            ReassignableTopic::default()
                .with_name(topic_name(t))
                .with_partitions(
                    parts
                        .iter()
                        .map(|(p, change)| {
                            ReassignablePartition::default()
                                .with_partition_index(*p)
                                .with_replicas(match change {
                                    Reassignment::Move(ids) => {
                                        Some(ids.iter().map(|&b| BrokerId(b)).collect())
                                    }
                                    Reassignment::Cancel => None,
                                })
                        })
                        .collect(),
                )
        })
        .collect();
    // v0 has no such field and always allows it; the default (true) encodes at v0.
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_allow_replication_factor_change(true)
        .with_topics(topics);
    let resp = conn.start(&req, v).await?.wait().await?;
    check(resp.error_code, resp.error_message.as_deref(), || {
        format!("AlterPartitionReassignments on {}", conn.broker())
    })?;
    let mut out = Vec::new();
    for t in resp.responses {
        let topic = t.name.0.to_string();
        for p in t.partitions {
            let error = ClientError::from_code(
                || {
                    format!(
                        "reassign {topic}/{} on {}",
                        p.partition_index,
                        conn.broker()
                    )
                },
                p.error_code,
                p.error_message.as_deref(),
            );
            out.push(PartitionOutcome {
                topic: topic.clone(),
                partition: p.partition_index,
                error,
            });
        }
    }
    Ok(out)
}

/// Reassignments in progress: of every partition (`which = None`), or of the named
/// partitions (partitions that are not moving, or do not exist, are left out, as Kafka does).
/// Sorted by topic and partition.
pub async fn list(
    conn: &Connection,
    which: Option<&BTreeMap<String, Vec<i32>>>,
    timeout_ms: i32,
) -> Result<Vec<Ongoing>, ClientError> {
    let v = conn.version::<ListPartitionReassignmentsRequest>()?;
    let req = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_topics(which.map(|w| {
            w.iter()
                .map(|(t, ps)| {
                    ListPartitionReassignmentsTopics::default()
                        .with_name(topic_name(t))
                        .with_partition_indexes(ps.clone())
                })
                .collect()
        }));
    let resp = conn.start(&req, v).await?.wait().await?;
    check(resp.error_code, resp.error_message.as_deref(), || {
        format!("ListPartitionReassignments on {}", conn.broker())
    })?;
    let mut out: Vec<Ongoing> = resp
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| Ongoing {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                replicas: broker_ids(&p.replicas),
                adding: broker_ids(&p.adding_replicas),
                removing: broker_ids(&p.removing_replicas),
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(out)
}
