//! DescribeTopicPartitions (KIP-966): topic and partition metadata, paginated by a partition
//! budget and a cursor, answered from the applied metadata image with Kafka's semantics
//! (`DescribeTopicPartitionsRequestHandler` and `KRaftMetadataCache` in Apache Kafka):
//!
//! - an empty topic list means every topic; topics are answered in name order, starting at the
//!   cursor's topic (and, for that topic only, at the cursor's partition);
//! - at most `min(response_partition_limit, 2000)` partitions (at least 1) per response; when
//!   the budget runs out, `next_cursor` names the first topic and partition not returned;
//! - a named topic that does not exist is answered with UNKNOWN_TOPIC_OR_PARTITION (or
//!   INVALID_TOPIC_EXCEPTION for an invalid name) without using the budget; when listing all
//!   topics, a cursor topic deleted since the previous page is skipped;
//! - a cursor with a negative partition, or naming a topic missing from an explicit list,
//!   makes the whole request INVALID_REQUEST;
//! - eligible leader replicas are empty lists (Fjord has no ELR) and topic authorized
//!   operations are left unset (-2147483648): Fjord has no authorizer yet.

use std::collections::BTreeSet;
use std::sync::Arc;

use fjord_protocol::kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use fjord_protocol::kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, ResponseKind,
    TopicName,
};
use fjord_raft::controller::topics::validate_topic_name;
use fjord_raft::{MetadataImage, PartitionRegistration};
use uuid::Uuid;

use crate::broker::Broker;
use crate::codes;
use crate::dispatch::{Reply, RequestContext};
use crate::util::is_internal_topic;
use crate::util::str_bytes;

/// Kafka's `max.request.partition.size.limit` default: the most partitions one response holds.
pub const MAX_PARTITIONS_PER_RESPONSE: i32 = 2000;

pub fn handle(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    req: DescribeTopicPartitionsRequest,
) -> Reply {
    let image = broker.image();
    Reply::now(ResponseKind::DescribeTopicPartitions(describe(
        &image,
        &ctx.listener,
        &req,
    )))
}

/// The answer to `req` from `image`, with broker endpoints as seen on `listener`.
pub fn describe(
    image: &MetadataImage,
    listener: &str,
    req: &DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let fetch_all = req.topics.is_empty();
    let cursor = req
        .cursor
        .as_ref()
        .map(|c| (c.topic_name.as_str(), c.partition_index));
    let topics = match topics_to_describe(image, req, cursor) {
        Ok(t) => t,
        Err(reason) => {
            tracing::debug!(reason, "invalid DescribeTopicPartitions request");
            return invalid_request(req);
        }
    };
    let limit = req
        .response_partition_limit
        .clamp(1, MAX_PARTITIONS_PER_RESPONSE);
    let mut remaining = i64::from(limit);
    let mut out = Vec::new();
    let mut next_cursor = None;
    for name in topics {
        if remaining == 0 {
            // Every partition of the previous topic fitted; the next page starts here.
            next_cursor = Some(cursor_at(name, 0));
            break;
        }
        let first = match cursor {
            Some((topic, partition)) if topic == name => partition,
            _ => 0,
        };
        let Some(topic) = image.topic(name) else {
            if !fetch_all {
                out.push(unknown_topic(name));
            }
            continue;
        };
        let count = topic.partitions.len() as i64;
        let upper = count.min(i64::from(first) + remaining);
        let partitions: Vec<_> = (i64::from(first)..upper)
            .filter_map(|id| {
                let id = i32::try_from(id).ok()?;
                topic
                    .partitions
                    .get(&id)
                    .map(|p| describe_partition(image, listener, id, p))
            })
            .collect();
        remaining -= partitions.len() as i64;
        out.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_error_code(codes::NONE)
                .with_name(Some(TopicName(str_bytes(name))))
                .with_topic_id(topic.id)
                .with_is_internal(is_internal_topic(name))
                .with_partitions(partitions),
        );
        if upper < count {
            // `upper` < count <= i32::MAX partitions.
            next_cursor = Some(cursor_at(name, upper as i32));
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(out)
        .with_next_cursor(next_cursor)
}

/// The topic names to answer, in order: every topic, or the requested ones, from the cursor's
/// topic on.
fn topics_to_describe<'a>(
    image: &'a MetadataImage,
    req: &'a DescribeTopicPartitionsRequest,
    cursor: Option<(&'a str, i32)>,
) -> Result<BTreeSet<&'a str>, &'static str> {
    let from = cursor.map_or("", |(topic, _)| topic);
    if cursor.is_some_and(|(_, partition)| partition < 0) {
        return Err("cursor partition is negative");
    }
    if req.topics.is_empty() {
        return Ok(image
            .topic_names
            .keys()
            .map(String::as_str)
            .filter(|n| *n >= from)
            .collect());
    }
    let topics: BTreeSet<&str> = req
        .topics
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| *n >= from)
        .collect();
    if cursor.is_some() && !topics.contains(from) {
        return Err("the topic list does not contain the cursor topic");
    }
    Ok(topics)
}

fn cursor_at(topic: &str, partition: i32) -> Cursor {
    Cursor::default()
        .with_topic_name(TopicName(str_bytes(topic)))
        .with_partition_index(partition)
}

fn describe_partition(
    image: &MetadataImage,
    listener: &str,
    id: i32,
    p: &PartitionRegistration,
) -> DescribeTopicPartitionsResponsePartition {
    // Kafka reports a leader only if it is registered with an endpoint on this listener.
    let leader = if image
        .broker(p.leader)
        .is_some_and(|b| b.endpoint(listener).is_some())
    {
        p.leader
    } else {
        -1
    };
    let offline = p
        .replicas
        .iter()
        .filter(|r| {
            image
                .broker(**r)
                .is_none_or(|b| b.fenced || b.endpoint(listener).is_none())
        })
        .map(|r| BrokerId(*r))
        .collect();
    let ids = |v: &[i32]| v.iter().map(|r| BrokerId(*r)).collect::<Vec<_>>();
    DescribeTopicPartitionsResponsePartition::default()
        .with_error_code(codes::NONE)
        .with_partition_index(id)
        .with_leader_id(BrokerId(leader))
        .with_leader_epoch(p.leader_epoch)
        .with_replica_nodes(ids(&p.replicas))
        .with_isr_nodes(ids(&p.isr))
        .with_eligible_leader_replicas(Some(Vec::new()))
        .with_last_known_elr(Some(Vec::new()))
        .with_offline_replicas(offline)
}

fn unknown_topic(name: &str) -> DescribeTopicPartitionsResponseTopic {
    let code = if validate_topic_name(name).is_err() {
        codes::INVALID_TOPIC_EXCEPTION
    } else {
        codes::UNKNOWN_TOPIC_OR_PARTITION
    };
    DescribeTopicPartitionsResponseTopic::default()
        .with_error_code(code)
        .with_name(Some(TopicName(str_bytes(name))))
        .with_topic_id(Uuid::nil())
        .with_is_internal(is_internal_topic(name))
}

/// Kafka's error response: every requested topic (as sent) with the error and nothing else.
fn invalid_request(req: &DescribeTopicPartitionsRequest) -> DescribeTopicPartitionsResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            DescribeTopicPartitionsResponseTopic::default()
                .with_error_code(codes::INVALID_REQUEST)
                .with_name(Some(t.name.clone()))
        })
        .collect();
    DescribeTopicPartitionsResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_protocol::kafka_protocol::messages::describe_topic_partitions_request::{
        Cursor as RequestCursor, TopicRequest,
    };
    use fjord_raft::BrokerRegistration;
    use fjord_raft::TopicImage;
    use fjord_raft::records::Endpoint;

    fn image(topics: &[(&str, i32)]) -> MetadataImage {
        let mut img = MetadataImage::default();
        img.brokers.insert(
            1,
            BrokerRegistration {
                id: 1,
                incarnation_id: Uuid::new_v4(),
                epoch: 1,
                endpoints: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: "localhost".into(),
                    port: 9092,
                    security_protocol: 0,
                }],
                rack: None,
                fenced: false,
            },
        );
        for (name, count) in topics {
            let id = Uuid::new_v4();
            let partitions = (0..*count)
                .map(|p| {
                    (
                        p,
                        PartitionRegistration {
                            replicas: vec![1, 2],
                            adding_replicas: Vec::new(),
                            removing_replicas: Vec::new(),
                            isr: vec![1],
                            leader: 1,
                            leader_epoch: 3,
                            partition_epoch: 0,
                        },
                    )
                })
                .collect();
            img.topics.insert(
                id,
                TopicImage {
                    name: name.to_string(),
                    id,
                    partitions,
                },
            );
            img.topic_names.insert(name.to_string(), id);
        }
        img
    }

    fn request(
        topics: &[&str],
        limit: i32,
        cursor: Option<(&str, i32)>,
    ) -> DescribeTopicPartitionsRequest {
        DescribeTopicPartitionsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| TopicRequest::default().with_name(TopicName(str_bytes(t))))
                    .collect(),
            )
            .with_response_partition_limit(limit)
            .with_cursor(cursor.map(|(t, p)| {
                RequestCursor::default()
                    .with_topic_name(TopicName(str_bytes(t)))
                    .with_partition_index(p)
            }))
    }

    /// `(topic, partition)` pairs of a response, in order, and its next cursor.
    type Page = (Vec<(String, i32)>, Option<(String, i32)>);

    /// The [`Page`] of a response.
    fn pairs(r: &DescribeTopicPartitionsResponse) -> Page {
        let mut out = Vec::new();
        for t in &r.topics {
            let name = t.name.as_ref().unwrap().as_str().to_string();
            for p in &t.partitions {
                out.push((name.clone(), p.partition_index));
            }
        }
        let cursor = r
            .next_cursor
            .as_ref()
            .map(|c| (c.topic_name.as_str().to_string(), c.partition_index));
        (out, cursor)
    }

    #[test]
    fn paging_through_all_topics_visits_every_partition_once_in_order() {
        let img = image(&[("c", 2), ("a", 3), ("b", 1), ("d", 0), ("e", 4)]);
        let mut expected = Vec::new();
        for (t, n) in [("a", 3), ("b", 1), ("c", 2), ("e", 4)] {
            for p in 0..n {
                expected.push((t.to_string(), p));
            }
        }
        for limit in 1..=11 {
            let mut seen = Vec::new();
            let mut cursor: Option<(String, i32)> = None;
            for _ in 0..100 {
                let req = request(&[], limit, cursor.as_ref().map(|(t, p)| (t.as_str(), *p)));
                let resp = describe(&img, "PLAINTEXT", &req);
                let (got, next) = pairs(&resp);
                assert!(got.len() <= limit as usize, "limit {limit}: {got:?}");
                seen.extend(got);
                cursor = next;
                if cursor.is_none() {
                    break;
                }
            }
            assert!(cursor.is_none(), "limit {limit}: pagination ended");
            assert_eq!(seen, expected, "limit {limit}");
        }
    }

    #[test]
    fn budget_boundaries_set_the_cursor_like_kafka() {
        let img = image(&[("a", 2), ("b", 2)]);
        // The budget ends exactly at a topic's end: the cursor points at the next topic.
        let resp = describe(&img, "PLAINTEXT", &request(&[], 2, None));
        assert_eq!(
            pairs(&resp),
            (
                vec![("a".into(), 0), ("a".into(), 1)],
                Some(("b".into(), 0))
            )
        );
        // Inside a topic: the cursor points at the first partition left out.
        let resp = describe(&img, "PLAINTEXT", &request(&[], 3, None));
        assert_eq!(
            pairs(&resp),
            (
                vec![("a".into(), 0), ("a".into(), 1), ("b".into(), 0)],
                Some(("b".into(), 1))
            )
        );
        // Limits below 1 act as 1; the cursor's partition applies to its topic only.
        let resp = describe(&img, "PLAINTEXT", &request(&[], 0, Some(("a", 1))));
        assert_eq!(pairs(&resp), (vec![("a".into(), 1)], Some(("b".into(), 0))));
    }

    #[test]
    fn named_topics_unknown_and_invalid_names_and_bad_cursors() {
        let img = image(&[("a", 1), ("b", 1)]);
        let resp = describe(
            &img,
            "PLAINTEXT",
            &request(&["b", "zz", "bad name", "a", "b"], 2000, None),
        );
        let summary: Vec<(String, i16, usize)> = resp
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.as_ref().unwrap().as_str().to_string(),
                    t.error_code,
                    t.partitions.len(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("a".into(), 0, 1),
                ("b".into(), 0, 1),
                ("bad name".into(), codes::INVALID_TOPIC_EXCEPTION, 0),
                ("zz".into(), codes::UNKNOWN_TOPIC_OR_PARTITION, 0),
            ]
        );
        let a = &resp.topics[0];
        assert_eq!(a.topic_id, img.topic_names["a"]);
        assert_eq!(a.topic_authorized_operations, i32::MIN);
        let p = &a.partitions[0];
        assert_eq!(p.leader_id, BrokerId(1));
        assert_eq!(p.leader_epoch, 3);
        assert_eq!(p.replica_nodes, vec![BrokerId(1), BrokerId(2)]);
        assert_eq!(p.isr_nodes, vec![BrokerId(1)]);
        // Broker 2 is not registered.
        assert_eq!(p.offline_replicas, vec![BrokerId(2)]);
        assert_eq!(p.eligible_leader_replicas, Some(vec![]));
        assert!(resp.topics[3].topic_id.is_nil());

        // A listener the leader has no endpoint on: no leader, every replica offline.
        let resp = describe(&img, "OTHER", &request(&["a"], 10, None));
        let p = &resp.topics[0].partitions[0];
        assert_eq!(p.leader_id, BrokerId(-1));
        assert_eq!(p.offline_replicas, vec![BrokerId(1), BrokerId(2)]);

        for cursor in [("c", 0), ("a", -1)] {
            let resp = describe(&img, "PLAINTEXT", &request(&["a", "b"], 10, Some(cursor)));
            assert_eq!(resp.topics.len(), 2, "{cursor:?}");
            assert!(
                resp.topics
                    .iter()
                    .all(|t| t.error_code == codes::INVALID_REQUEST && t.partitions.is_empty()),
                "{cursor:?}: {resp:?}"
            );
            assert!(resp.next_cursor.is_none());
        }
        // Listing all topics, a cursor topic that no longer exists is skipped.
        let resp = describe(&img, "PLAINTEXT", &request(&[], 10, Some(("aa", 5))));
        assert_eq!(pairs(&resp), (vec![("b".into(), 0)], None));
    }
}
