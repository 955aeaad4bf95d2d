//! OffsetCommit, OffsetFetch and OffsetDelete. As in Kafka, partitions of topics the metadata
//! does not know are answered UNKNOWN_TOPIC_OR_PARTITION here; the rest goes to the group's
//! coordinator shard, and answers that depend on a write wait until it is committed.

use std::collections::HashMap;
use std::sync::Arc;

use fjord_protocol::kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use fjord_protocol::kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use fjord_protocol::kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use fjord_protocol::kafka_protocol::messages::{
    GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, ResponseKind, TopicName,
};
use fjord_raft::MetadataImage;

use crate::broker::Broker;
use crate::dispatch::{Reply, RequestContext};
use crate::group::codes;
use crate::group::commits::{
    CommitPartition, CommitRequest, FetchedOffset, FetchedTopics, TopicPartitions,
};
use crate::util::str_bytes;

fn partition_exists(image: &MetadataImage, topic: &str, partition: i32) -> bool {
    image.partition(topic, partition).is_some()
}

// ------------------------------------------------------------------------ OffsetCommit

pub fn handle_offset_commit(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    req: OffsetCommitRequest,
) -> Reply {
    let broker = broker.clone();
    Reply::later(async move { ResponseKind::OffsetCommit(offset_commit(&broker, &ctx, req).await) })
}

async fn offset_commit(
    broker: &Broker,
    ctx: &RequestContext,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let version = ctx.version();
    let image = broker.image();
    // Per (topic, partition): the answer, once known.
    let mut answers: HashMap<(String, i32), i16> = HashMap::new();
    let mut valid: Vec<(String, Vec<CommitPartition>)> = Vec::new();
    for t in &req.topics {
        let name = t.name.as_str();
        let mut parts = Vec::new();
        for p in &t.partitions {
            if partition_exists(&image, name, p.partition_index) {
                parts.push(CommitPartition {
                    index: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if version >= 6 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.as_str().to_string()),
                });
            } else {
                answers.insert(
                    (name.to_string(), p.partition_index),
                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                );
            }
        }
        if !parts.is_empty() {
            valid.push((name.to_string(), parts));
        }
    }
    if !valid.is_empty() {
        let group_id = req.group_id.as_str().to_string();
        let commit = CommitRequest {
            group_id: group_id.clone(),
            member_id: req.member_id.as_str().to_string(),
            group_instance_id: if version >= 7 {
                req.group_instance_id
                    .as_ref()
                    .map(|s| s.as_str().to_string())
            } else {
                None
            },
            generation_id: req.generation_id_or_member_epoch,
            // Versions 2-4 may ask for their own retention; later ones use the broker's.
            retention_time_ms: if version <= 4 {
                req.retention_time_ms
            } else {
                -1
            },
            api_version: version,
            topics: valid.clone(),
        };
        let result = match broker.groups.shard_for(&group_id, &image) {
            Err(code) => Err(code),
            Ok(shard) => match shard.write(|st| st.commit_offsets(commit)).and_then(|r| r) {
                Err(code) => Err(code),
                Ok(w) => shard.committed(w.end).await.map(|()| w),
            },
        };
        match result {
            Ok(w) => {
                for (t, parts) in w.topics {
                    for (p, code) in parts {
                        answers.insert((t.clone(), p), code);
                    }
                }
            }
            Err(code) => {
                for (t, parts) in &valid {
                    for p in parts {
                        answers.insert((t.clone(), p.index), code);
                    }
                }
            }
        }
    }
    OffsetCommitResponse::default().with_topics(
        req.topics
            .iter()
            .map(|t| {
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                let code = answers
                                    .get(&(t.name.as_str().to_string(), p.partition_index))
                                    .copied()
                                    .unwrap_or(codes::UNKNOWN_SERVER_ERROR);
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

// ------------------------------------------------------------------------ OffsetFetch

/// One group's OffsetFetch answer before it is shaped for the request's version.
struct GroupOffsets {
    group_id: String,
    error: i16,
    topics: FetchedTopics,
}

pub fn handle_offset_fetch(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    req: OffsetFetchRequest,
) -> Reply {
    let version = ctx.version();
    // Version 8 batches groups; earlier versions name one. Version 9 names the member asking
    // (KIP-848 consumer groups check its epoch).
    type Wanted = (String, Option<TopicPartitions>, Option<String>, i32);
    let wanted: Vec<Wanted> = if version >= 8 {
        req.groups
            .iter()
            .map(|g| {
                let topics = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.as_str().to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let (member_id, member_epoch) = if version >= 9 {
                    (
                        g.member_id.as_ref().map(|m| m.as_str().to_string()),
                        g.member_epoch,
                    )
                } else {
                    (None, -1)
                };
                (
                    g.group_id.as_str().to_string(),
                    topics,
                    member_id,
                    member_epoch,
                )
            })
            .collect()
    } else {
        let topics = req.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.as_str().to_string(), t.partition_indexes.clone()))
                .collect()
        });
        vec![(req.group_id.as_str().to_string(), topics, None, -1)]
    };
    let image = broker.image();
    let results: Vec<GroupOffsets> = wanted
        .into_iter()
        .map(|(group_id, topics, member_id, member_epoch)| {
            let r = broker
                .groups
                .shard_for(&group_id, &image)
                .and_then(|s| {
                    s.read(|st| {
                        st.validate_offset_fetch(&group_id, member_id.as_deref(), member_epoch)
                            .map(|()| st.fetch_offsets(&group_id, topics.as_deref()))
                    })
                })
                .and_then(|r| r);
            match r {
                Ok(topics) => GroupOffsets {
                    group_id,
                    error: codes::NONE,
                    topics,
                },
                Err(code) => GroupOffsets {
                    group_id,
                    error: code,
                    // Versions before 2 have no group-level error: it goes on every partition.
                    topics: if version < 2 {
                        topics
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(t, parts)| {
                                let out = parts
                                    .into_iter()
                                    .map(|p| FetchedOffset {
                                        partition: p,
                                        offset: -1,
                                        leader_epoch: -1,
                                        metadata: String::new(),
                                        error: code,
                                    })
                                    .collect();
                                (t, out)
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                },
            }
        })
        .collect();
    Reply::now(ResponseKind::OffsetFetch(fetch_response(results, version)))
}

fn fetch_response(results: Vec<GroupOffsets>, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        return OffsetFetchResponse::default().with_groups(
            results
                .into_iter()
                .map(|g| {
                    OffsetFetchResponseGroup::default()
                        .with_group_id(GroupId(str_bytes(&g.group_id)))
                        .with_error_code(g.error)
                        .with_topics(
                            g.topics
                                .into_iter()
                                .map(|(t, parts)| {
                                    OffsetFetchResponseTopics::default()
                                        .with_name(TopicName(str_bytes(&t)))
                                        .with_partitions(
                                            parts
                                                .into_iter()
                                                .map(|p| {
                                                    OffsetFetchResponsePartitions::default()
                                                        .with_partition_index(p.partition)
                                                        .with_committed_offset(p.offset)
                                                        .with_committed_leader_epoch(p.leader_epoch)
                                                        .with_metadata(Some(str_bytes(&p.metadata)))
                                                        .with_error_code(p.error)
                                                })
                                                .collect(),
                                        )
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    }
    let Some(g) = results.into_iter().next() else {
        return OffsetFetchResponse::default();
    };
    let mut resp = OffsetFetchResponse::default().with_topics(
        g.topics
            .into_iter()
            .map(|(t, parts)| {
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(str_bytes(&t)))
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|p| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(p.partition)
                                    .with_committed_offset(p.offset)
                                    .with_committed_leader_epoch(if version >= 5 {
                                        p.leader_epoch
                                    } else {
                                        -1
                                    })
                                    .with_metadata(Some(str_bytes(&p.metadata)))
                                    .with_error_code(p.error)
                            })
                            .collect(),
                    )
            })
            .collect(),
    );
    if version >= 2 {
        resp = resp.with_error_code(g.error);
    }
    resp
}

// ------------------------------------------------------------------------ OffsetDelete

pub fn handle_offset_delete(
    broker: &Arc<Broker>,
    _ctx: RequestContext,
    req: OffsetDeleteRequest,
) -> Reply {
    let broker = broker.clone();
    Reply::later(async move { ResponseKind::OffsetDelete(offset_delete(&broker, req).await) })
}

async fn offset_delete(broker: &Broker, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = req.group_id.as_str().to_string();
    if group_id.is_empty() {
        return OffsetDeleteResponse::default().with_error_code(codes::INVALID_GROUP_ID);
    }
    let image = broker.image();
    let mut answers: HashMap<(String, i32), i16> = HashMap::new();
    let mut valid: Vec<(String, Vec<i32>)> = Vec::new();
    for t in &req.topics {
        let name = t.name.as_str();
        let mut parts = Vec::new();
        for p in &t.partitions {
            if partition_exists(&image, name, p.partition_index) {
                parts.push(p.partition_index);
            } else {
                answers.insert(
                    (name.to_string(), p.partition_index),
                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                );
            }
        }
        if !parts.is_empty() {
            valid.push((name.to_string(), parts));
        }
    }
    let result = match broker.groups.shard_for(&group_id, &image) {
        Err(code) => Err(code),
        Ok(shard) => match shard
            .write(|st| st.delete_offsets(&group_id, &valid))
            .and_then(|r| r)
        {
            Err(code) => Err(code),
            Ok(w) => shard.committed(w.end).await.map(|()| w),
        },
    };
    match result {
        // A group-level error is the whole answer.
        Err(code) => OffsetDeleteResponse::default().with_error_code(code),
        Ok(w) => {
            for (t, parts) in w.topics {
                for (p, code) in parts {
                    answers.insert((t.clone(), p), code);
                }
            }
            OffsetDeleteResponse::default().with_topics(
                req.topics
                    .iter()
                    .map(|t| {
                        OffsetDeleteResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        let code = answers
                                            .get(&(t.name.as_str().to_string(), p.partition_index))
                                            .copied()
                                            .unwrap_or(codes::UNKNOWN_SERVER_ERROR);
                                        OffsetDeleteResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
        }
    }
}
