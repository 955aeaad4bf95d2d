//! Fetching records of one topic from partition leaders.

use std::collections::BTreeMap;

use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::protocol::StrBytes;

use super::cluster::{Client, TopicInfo};
use super::error::ClientError;
use super::records::{InRecord, decode_batches};

/// The result of fetching one partition once.
#[derive(Debug)]
pub struct PartitionFetch {
    pub partition: i32,
    pub records: Vec<InRecord>,
    /// Where the next fetch of this partition should start.
    pub next_offset: i64,
    pub high_watermark: i64,
    /// Bytes of record batches received.
    pub bytes: usize,
    /// A partition-level error (offset out of range, leader moved...).
    pub error: Option<ClientError>,
}

/// Fetch settings.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 52_428_800,
            partition_max_bytes: 1_048_576,
        }
    }
}

/// Fetches every partition in `positions` (partition -> offset) once, from each leader in
/// parallel. Errors that concern a whole request (connection, decode) are returned as `Err`.
pub async fn fetch_once(
    client: &Client,
    topic: &TopicInfo,
    positions: &BTreeMap<i32, i64>,
    opts: FetchOptions,
) -> Result<Vec<PartitionFetch>, ClientError> {
    let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
    let mut out = Vec::new();
    for (&p, &offset) in positions {
        let leader = topic
            .partitions
            .iter()
            .find(|x| x.partition == p)
            .map(|x| x.leader)
            .unwrap_or(-1);
        if leader < 0 {
            out.push(PartitionFetch {
                partition: p,
                records: Vec::new(),
                next_offset: offset,
                high_watermark: -1,
                bytes: 0,
                error: Some(ClientError::Kafka {
                    what: format!("fetch {}/{p}", topic.name),
                    error: kafka_protocol::ResponseError::LeaderNotAvailable,
                    message: None,
                }),
            });
            continue;
        }
        by_leader.entry(leader).or_default().push((p, offset));
    }
    let mut waiting = Vec::new();
    for (leader, parts) in by_leader {
        let conn = client.node(leader).await?;
        let v = conn.version::<FetchRequest>()?;
        let req = FetchRequest::default()
            .with_max_wait_ms(opts.max_wait_ms)
            .with_min_bytes(opts.min_bytes)
            .with_max_bytes(opts.max_bytes)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.name.clone())))
                    .with_topic_id(topic.id)
                    .with_partitions(
                        parts
                            .iter()
                            .map(|&(p, o)| {
                                FetchPartition::default()
                                    .with_partition(p)
                                    .with_fetch_offset(o)
                                    .with_partition_max_bytes(opts.partition_max_bytes)
                            })
                            .collect(),
                    ),
            ]);
        let pend = conn.start(&req, v).await?;
        waiting.push((conn, parts, pend));
    }
    for (conn, parts, pend) in waiting {
        let resp = pend.wait().await?;
        super::error::check(resp.error_code, None, || {
            format!("fetch from {}", conn.broker())
        })?;
        for t in resp.responses {
            for pd in t.partitions {
                let Some(&(p, offset)) = parts.iter().find(|(p, _)| *p == pd.partition_index)
                else {
                    continue;
                };
                let error = ClientError::from_code(
                    || {
                        format!(
                            "fetch {}/{p} at offset {offset} from {}",
                            topic.name,
                            conn.broker()
                        )
                    },
                    pd.error_code,
                    None,
                );
                let (records, next, bytes) = match (&error, pd.records) {
                    (None, Some(data)) => {
                        let d = decode_batches(data, offset).map_err(|e| {
                            ClientError::Protocol(format!(
                                "{}/{p} from {}: {e}",
                                topic.name,
                                conn.broker()
                            ))
                        })?;
                        (
                            d.records,
                            d.next_offset.unwrap_or(offset).max(offset),
                            d.bytes,
                        )
                    }
                    _ => (Vec::new(), offset, 0),
                };
                out.push(PartitionFetch {
                    partition: p,
                    records,
                    next_offset: next,
                    high_watermark: pd.high_watermark,
                    bytes,
                    error,
                });
            }
        }
    }
    out.sort_by_key(|f| f.partition);
    Ok(out)
}
