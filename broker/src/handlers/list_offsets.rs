//! ListOffsets (earliest, latest, max timestamp, by timestamp) and OffsetForLeaderEpoch.

use std::sync::Arc;

use fjord_protocol::kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use fjord_protocol::kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use fjord_protocol::kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, ResponseKind,
};
use fjord_storage::Log;

use crate::broker::Broker;
use crate::codes;
use crate::dispatch::{Reply, RequestContext};
use crate::partition::{Partition, PartitionError};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const EARLIEST_PENDING_UPLOAD: i64 = -5;

fn leader_partition(
    broker: &Broker,
    topic: &str,
    partition: i32,
    current_leader_epoch: i32,
) -> Result<Arc<Partition>, PartitionError> {
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
    p.check_leader_epoch(current_leader_epoch)?;
    Ok(p)
}

/// The leader epoch of the batch holding `offset`, from the epoch cache.
fn epoch_at(log: &Log, offset: i64) -> i32 {
    log.epoch_entries()
        .iter()
        .rev()
        .find(|e| e.start_offset <= offset)
        .map_or(-1, |e| e.epoch)
}

pub fn handle(broker: &Arc<Broker>, ctx: RequestContext, req: ListOffsetsRequest) -> Reply {
    // read_committed asks for the last stable offset, which equals the high watermark until
    // transactions exist, so both isolation levels get the same answer.
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let base = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    let current = if ctx.version() >= 4 {
                        p.current_leader_epoch
                    } else {
                        -1
                    };
                    match leader_partition(broker, t.name.as_str(), p.partition_index, current)
                        .and_then(|part| lookup(&part, p.timestamp))
                    {
                        Ok((timestamp, offset, epoch)) => {
                            let mut r = base.with_timestamp(timestamp).with_offset(offset);
                            if ctx.version() >= 4 {
                                r = r.with_leader_epoch(epoch);
                            }
                            r
                        }
                        Err(e) => base
                            .with_error_code(e.code)
                            .with_timestamp(-1)
                            .with_offset(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    Reply::now(ResponseKind::ListOffsets(
        ListOffsetsResponse::default().with_topics(topics),
    ))
}

/// `(timestamp, offset, leader epoch)` for one query.
fn lookup(p: &Partition, timestamp: i64) -> Result<(i64, i64, i32), PartitionError> {
    let log = p.log();
    let hw = p.high_watermark();
    let storage = |e: fjord_storage::StorageError| PartitionError::storage(&e);
    Ok(match timestamp {
        LATEST => (-1, hw, p.leader_epoch()),
        EARLIEST | EARLIEST_LOCAL => {
            let start = log.log_start_offset();
            (-1, start, epoch_at(log, start))
        }
        EARLIEST_PENDING_UPLOAD => (-1, -1, -1),
        MAX_TIMESTAMP => match log.max_timestamp_offset().map_err(storage)? {
            Some(found) if found.offset < hw => (
                found.timestamp,
                found.offset,
                found.leader_epoch.unwrap_or(-1),
            ),
            _ => (-1, -1, -1),
        },
        ts if ts >= 0 => match log.offset_for_timestamp(ts).map_err(storage)? {
            Some(found) if found.offset < hw => (
                found.timestamp,
                found.offset,
                found.leader_epoch.unwrap_or(-1),
            ),
            _ => (-1, -1, -1),
        },
        _ => return Err(PartitionError::code(codes::INVALID_REQUEST)),
    })
}

pub fn handle_offset_for_leader_epoch(
    broker: &Arc<Broker>,
    _ctx: RequestContext,
    req: OffsetForLeaderEpochRequest,
) -> Reply {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let base = EpochEndOffset::default().with_partition(p.partition);
                    match leader_partition(
                        broker,
                        t.topic.as_str(),
                        p.partition,
                        p.current_leader_epoch,
                    ) {
                        Ok(part) => {
                            let (epoch, end) = part.log().end_offset_for_epoch(p.leader_epoch);
                            base.with_leader_epoch(epoch).with_end_offset(end)
                        }
                        Err(e) => base
                            .with_error_code(e.code)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    Reply::now(ResponseKind::OffsetForLeaderEpoch(
        OffsetForLeaderEpochResponse::default().with_topics(topics),
    ))
}
