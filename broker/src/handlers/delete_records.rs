//! DeleteRecords: moves a partition's log start offset forward on its leader, as Kafka's
//! `Partition.deleteRecordsOnLeader` does. Records below the new start can no longer be read
//! and segments wholly below it are deleted; the start offset is checkpointed before the answer.
//!
//! Per partition: internal topics are refused (INVALID_TOPIC_EXCEPTION); only the leader
//! deletes (NOT_LEADER_OR_FOLLOWER, or UNKNOWN_TOPIC_OR_PARTITION when the partition does not
//! exist); a topic whose `cleanup.policy` lacks `delete` is refused (POLICY_VIOLATION); offset -1
//! means the high watermark; a negative offset or one past the high watermark is
//! OFFSET_OUT_OF_RANGE. The answer carries the low watermark: the log start offset afterwards.

use std::sync::Arc;

use fjord_protocol::kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use fjord_protocol::kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ResponseKind, TopicName,
};
use fjord_storage::TopicPartition;

use crate::broker::Broker;
use crate::codes;
use crate::dispatch::{Reply, RequestContext};
use crate::partition::PartitionError;
use crate::util::is_internal_topic;

/// `DeleteRecordsRequest.HIGH_WATERMARK`: delete everything below the high watermark.
const HIGH_WATERMARK: i64 = -1;

pub fn handle(broker: &Arc<Broker>, _ctx: RequestContext, req: DeleteRecordsRequest) -> Reply {
    let broker = broker.clone();
    Reply::later(async move {
        let requested: Vec<(String, Vec<(i32, i64)>)> = req
            .topics
            .iter()
            .map(|t| {
                let parts = t
                    .partitions
                    .iter()
                    .map(|p| (p.partition_index, p.offset))
                    .collect();
                (t.name.as_str().to_string(), parts)
            })
            .collect();
        let work = requested.clone();
        let b = broker.clone();
        // Deleting segments and writing the checkpoint are blocking file operations.
        let results = tokio::task::spawn_blocking(move || delete_all(&b, work))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "DeleteRecords panicked");
                requested
                    .into_iter()
                    .map(|(topic, parts)| {
                        let failed = parts
                            .into_iter()
                            .map(|(p, _)| {
                                (p, Err(PartitionError::code(codes::UNKNOWN_SERVER_ERROR)))
                            })
                            .collect();
                        (topic, failed)
                    })
                    .collect()
            });
        ResponseKind::DeleteRecords(DeleteRecordsResponse::default().with_topics(encode(results)))
    })
}

type TopicResults = Vec<(String, Vec<(i32, Result<i64, PartitionError>)>)>;

fn delete_all(broker: &Broker, requested: Vec<(String, Vec<(i32, i64)>)>) -> TopicResults {
    requested
        .into_iter()
        .map(|(topic, parts)| {
            let results = parts
                .into_iter()
                .map(|(partition, offset)| {
                    let r = delete_one(broker, &topic, partition, offset);
                    if let Err(e) = &r {
                        tracing::debug!(
                            topic,
                            partition,
                            offset,
                            code = e.code,
                            "DeleteRecords refused"
                        );
                    }
                    (partition, r)
                })
                .collect();
            (topic, results)
        })
        .collect()
}

/// Deletes the records of one partition below `offset`; returns the new low watermark.
fn delete_one(
    broker: &Broker,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<i64, PartitionError> {
    if is_internal_topic(topic) {
        return Err(PartitionError::new(
            codes::INVALID_TOPIC_EXCEPTION,
            format!("cannot delete records of internal topic {topic}"),
        ));
    }
    let p = broker.replicas.get(topic, partition).ok_or_else(|| {
        if broker.image().partition(topic, partition).is_some() {
            PartitionError::code(codes::NOT_LEADER_OR_FOLLOWER)
        } else {
            PartitionError::code(codes::UNKNOWN_TOPIC_OR_PARTITION)
        }
    })?;
    if !p.is_leader() {
        return Err(PartitionError::code(codes::NOT_LEADER_OR_FOLLOWER));
    }
    if !p.log().config().cleanup_policy.delete {
        return Err(PartitionError::new(
            codes::POLICY_VIOLATION,
            format!(
                "records of {topic}-{partition} cannot be deleted: cleanup.policy has no delete"
            ),
        ));
    }
    let target = if offset == HIGH_WATERMARK {
        p.high_watermark()
    } else {
        offset
    };
    if target < 0 {
        return Err(PartitionError::code(codes::OFFSET_OUT_OF_RANGE));
    }
    // Refuses an offset past the high watermark itself, under the log's lock.
    let tp = TopicPartition {
        topic: topic.to_string(),
        partition,
    };
    broker
        .replicas
        .log_manager()
        .delete_records(&tp, target)
        .map_err(|e| PartitionError::storage(&e))?;
    tracing::info!(partition = %tp, offset = target, "deleted records");
    // Kafka's low watermark is the smallest log start offset among the live replicas. Only the
    // leader's is known here, which is the whole answer while partitions have one replica.
    Ok(p.log().log_start_offset())
}

fn encode(results: TopicResults) -> Vec<DeleteRecordsTopicResult> {
    results
        .into_iter()
        .map(|(topic, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(partition, r)| {
                    let base =
                        DeleteRecordsPartitionResult::default().with_partition_index(partition);
                    match r {
                        Ok(low) => base.with_low_watermark(low).with_error_code(codes::NONE),
                        Err(e) => base.with_low_watermark(-1).with_error_code(e.code),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(TopicName(crate::util::str_bytes(&topic)))
                .with_partitions(partitions)
        })
        .collect()
}
