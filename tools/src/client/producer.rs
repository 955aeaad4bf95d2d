//! Produce requests: one request carries one encoded batch per partition of one topic.

use bytes::Bytes;
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::produce_response::ProduceResponse;
use kafka_protocol::protocol::StrBytes;

use super::error::ClientError;

/// Acknowledgement level: 0 (none), 1 (leader), -1 (all in-sync replicas).
pub fn parse_acks(s: &str) -> Option<i16> {
    match s {
        "0" => Some(0),
        "1" => Some(1),
        "all" | "-1" => Some(-1),
        _ => None,
    }
}

/// Builds a Produce request for `batches` (partition, encoded batch) of one topic.
pub fn request(
    topic: &str,
    topic_id: uuid::Uuid,
    acks: i16,
    timeout_ms: i32,
    batches: impl IntoIterator<Item = (i32, Bytes)>,
) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_topic_id(topic_id)
                .with_partition_data(
                    batches
                        .into_iter()
                        .map(|(p, b)| {
                            PartitionProduceData::default()
                                .with_index(p)
                                .with_records(Some(b))
                        })
                        .collect(),
                ),
        ])
}

/// The per-partition outcome of a Produce answer: base offset or error.
pub fn results(
    resp: ProduceResponse,
    topic: &str,
    broker: &str,
) -> Vec<(i32, Result<i64, ClientError>)> {
    let mut out = Vec::new();
    for t in resp.responses {
        for p in t.partition_responses {
            let r = match ClientError::from_code(
                || format!("produce to {topic}/{} on {broker}", p.index),
                p.error_code,
                p.error_message.as_deref(),
            ) {
                Some(e) => Err(e),
                None => Ok(p.base_offset),
            };
            out.push((p.index, r));
        }
    }
    out
}
