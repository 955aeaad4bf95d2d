//! Consumer-group administration: list, describe, committed offsets, commit, delete.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::ConsumerProtocolAssignment;
use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use kafka_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequest, OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{GroupId, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};
use serde::Serialize;

use super::admin::Tp;
use super::cluster::Client;
use super::conn::Connection;
use super::error::{ClientError, check};

fn group_id(g: &str) -> GroupId {
    GroupId(StrBytes::from_string(g.to_string()))
}

fn topic_name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_string()))
}

/// A group as ListGroups reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ListedGroup {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
    pub coordinator: i32,
}

/// Groups of every broker (each broker lists the groups it coordinates).
pub async fn list_groups(client: &Client) -> Result<Vec<ListedGroup>, ClientError> {
    let meta = client.metadata(Some(&[])).await?;
    let mut out = Vec::new();
    for b in &meta.brokers {
        let conn = client.node(b.node_id.0).await?;
        let resp = conn.send(&ListGroupsRequest::default()).await?;
        check(resp.error_code, None, || {
            format!("ListGroups on {}", conn.broker())
        })?;
        for g in resp.groups {
            out.push(ListedGroup {
                group: g.group_id.0.to_string(),
                state: g.group_state.to_string(),
                protocol_type: g.protocol_type.to_string(),
                coordinator: b.node_id.0,
            });
        }
    }
    out.sort_by(|a, b| a.group.cmp(&b.group));
    out.dedup_by(|a, b| a.group == b.group);
    Ok(out)
}

/// A member of a described group, with its assignment decoded when it is a consumer group.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub assignment: BTreeMap<String, Vec<i32>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub coordinator: String,
    pub members: Vec<Member>,
}

impl GroupDescription {
    /// Kafka lets offsets be changed by an admin only when the group has no members.
    pub fn is_inactive(&self) -> bool {
        self.members.is_empty() && matches!(self.state.as_str(), "Empty" | "Dead" | "")
    }
}

pub async fn describe_group(client: &Client, group: &str) -> Result<GroupDescription, ClientError> {
    let conn = client.coordinator(group).await?;
    let resp = conn
        .send(&DescribeGroupsRequest::default().with_groups(vec![group_id(group)]))
        .await?;
    let Some(g) = resp.groups.into_iter().next() else {
        return Err(ClientError::Protocol(format!(
            "DescribeGroups on {} answered without group '{group}'",
            conn.broker()
        )));
    };
    check(g.error_code, g.error_message.as_deref(), || {
        format!("group '{group}' on {}", conn.broker())
    })?;
    Ok(description(g, conn.broker()))
}

fn description(g: DescribedGroup, coordinator: &str) -> GroupDescription {
    let consumer = g.protocol_type.as_str() == "consumer";
    GroupDescription {
        group: g.group_id.0.to_string(),
        state: g.group_state.to_string(),
        protocol_type: g.protocol_type.to_string(),
        protocol: g.protocol_data.to_string(),
        coordinator: coordinator.to_string(),
        members: g
            .members
            .into_iter()
            .map(|m| Member {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.map(|s| s.to_string()),
                client_id: m.client_id.to_string(),
                client_host: m.client_host.to_string(),
                assignment: if consumer {
                    decode_assignment(&m.member_assignment)
                        .map(|a| assignment_map(&a))
                        .unwrap_or_default()
                } else {
                    BTreeMap::new()
                },
            })
            .collect(),
    }
}

fn assignment_map(a: &ConsumerProtocolAssignment) -> BTreeMap<String, Vec<i32>> {
    a.assigned_partitions
        .iter()
        .map(|tp| (tp.topic.0.to_string(), tp.partitions.clone()))
        .collect()
}

/// Committed offsets of `group`; `topics` None means every partition the group has committed.
pub async fn committed_offsets(
    client: &Client,
    group: &str,
    topics: Option<&BTreeMap<String, Vec<i32>>>,
) -> Result<BTreeMap<Tp, i64>, ClientError> {
    let conn = client.coordinator(group).await?;
    offset_fetch(&conn, group, topics).await
}

pub async fn offset_fetch(
    conn: &Connection,
    group: &str,
    topics: Option<&BTreeMap<String, Vec<i32>>>,
) -> Result<BTreeMap<Tp, i64>, ClientError> {
    let v = conn.version::<OffsetFetchRequest>()?;
    let what = || format!("committed offsets of group '{group}' on {}", conn.broker());
    let req = if v >= 8 {
        OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(group_id(group))
                .with_topics(topics.map(|ts| {
                    ts.iter()
                        .map(|(t, ps)| {
                            OffsetFetchRequestTopics::default()
                                .with_name(topic_name(t))
                                .with_partition_indexes(ps.clone())
                        })
                        .collect()
                })),
        ])
    } else {
        if topics.is_none() && v < 2 {
            return Err(ClientError::Protocol(format!(
                "{} is too old to list all committed offsets (OffsetFetch v{v})",
                conn.broker()
            )));
        }
        OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|(t, ps)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(topic_name(t))
                            .with_partition_indexes(ps.clone())
                    })
                    .collect()
            }))
    };
    let resp = conn.start(&req, v).await?.wait().await?;
    let mut out = BTreeMap::new();
    if v >= 8 {
        for g in resp.groups {
            check(g.error_code, None, what)?;
            for t in g.topics {
                for p in t.partitions {
                    check(p.error_code, None, what)?;
                    if p.committed_offset >= 0 {
                        out.insert(
                            (t.name.0.to_string(), p.partition_index),
                            p.committed_offset,
                        );
                    }
                }
            }
        }
    } else {
        if v >= 2 {
            check(resp.error_code, None, what)?;
        }
        for t in resp.topics {
            for p in t.partitions {
                check(p.error_code, None, what)?;
                if p.committed_offset >= 0 {
                    out.insert(
                        (t.name.0.to_string(), p.partition_index),
                        p.committed_offset,
                    );
                }
            }
        }
    }
    Ok(out)
}

/// Commits `offsets` for `group`: as a member (`generation`, `member_id`) or, with generation
/// -1 and an empty member id, as an admin of an empty group.
pub async fn commit_offsets(
    conn: &Connection,
    group: &str,
    generation: i32,
    member_id: &str,
    offsets: &BTreeMap<Tp, i64>,
) -> Result<(), ClientError> {
    let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    for ((t, p), o) in offsets {
        by_topic.entry(t.as_str()).or_default().push((*p, *o));
    }
    let req = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(
                            ps.into_iter()
                                .map(|(p, o)| {
                                    OffsetCommitRequestPartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(o)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let resp = conn.send(&req).await?;
    for t in resp.topics {
        for p in t.partitions {
            check(p.error_code, None, || {
                format!(
                    "commit offset of {}/{} for group '{group}' on {}",
                    t.name.0.as_str(),
                    p.partition_index,
                    conn.broker()
                )
            })?;
        }
    }
    Ok(())
}

pub async fn delete_group(client: &Client, group: &str) -> Result<(), ClientError> {
    let conn = client.coordinator(group).await?;
    let resp = conn
        .send(&DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]))
        .await?;
    for r in resp.results {
        check(r.error_code, None, || {
            format!(
                "delete group '{}' on {}",
                r.group_id.0.as_str(),
                conn.broker()
            )
        })?;
    }
    Ok(())
}

/// Version of the consumer protocol's embedded messages that we write.
const EMBEDDED_VERSION: i16 = 0;

pub fn encode_subscription(topics: &[String]) -> Result<Bytes, ClientError> {
    let sub = ConsumerProtocolSubscription::default().with_topics(
        topics
            .iter()
            .map(|t| StrBytes::from_string(t.clone()))
            .collect(),
    );
    embed(&sub)
}

pub fn encode_assignment(assigned: &BTreeMap<String, Vec<i32>>) -> Result<Bytes, ClientError> {
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        assigned
            .iter()
            .map(|(t, ps)| {
                TopicPartition::default()
                    .with_topic(topic_name(t))
                    .with_partitions(ps.clone())
            })
            .collect(),
    );
    embed(&a)
}

fn embed<M: Encodable>(m: &M) -> Result<Bytes, ClientError> {
    let mut buf = BytesMut::new();
    buf.put_i16(EMBEDDED_VERSION);
    m.encode(&mut buf, EMBEDDED_VERSION)
        .map_err(|e| ClientError::Protocol(format!("encode consumer protocol data: {e:#}")))?;
    Ok(buf.freeze())
}

/// Decodes a version-prefixed consumer-protocol message. Newer versions only append fields, so
/// a version above ours is read as our highest.
fn unembed<M: Decodable + Message>(data: &Bytes) -> Option<M> {
    if data.len() < 2 {
        return None;
    }
    let mut buf = data.clone();
    let v = buf.get_i16().clamp(M::VERSIONS.min, M::VERSIONS.max);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| M::decode(&mut buf, v)))
        .ok()?
        .ok()
}

pub fn decode_subscription(data: &Bytes) -> Option<Vec<String>> {
    unembed::<ConsumerProtocolSubscription>(data)
        .map(|s| s.topics.iter().map(|t| t.to_string()).collect())
}

pub fn decode_assignment(data: &Bytes) -> Option<ConsumerProtocolAssignment> {
    unembed::<ConsumerProtocolAssignment>(data)
}

/// Decoded assignment as topic -> partitions.
pub fn decode_assignment_map(data: &Bytes) -> BTreeMap<String, Vec<i32>> {
    decode_assignment(data)
        .map(|a| assignment_map(&a))
        .unwrap_or_default()
}

/// Kafka's range assignor: per topic, members sorted by id take contiguous ranges, the first
/// `partitions % members` one partition more.
pub fn range_assign(
    members: &[(String, Vec<String>)],
    partition_counts: &BTreeMap<String, usize>,
) -> BTreeMap<String, BTreeMap<String, Vec<i32>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<i32>>> = members
        .iter()
        .map(|(m, _)| (m.clone(), BTreeMap::new()))
        .collect();
    for (topic, &n) in partition_counts {
        let mut subs: Vec<&String> = members
            .iter()
            .filter(|(_, ts)| ts.contains(topic))
            .map(|(m, _)| m)
            .collect();
        subs.sort();
        if subs.is_empty() {
            continue;
        }
        let per = n / subs.len();
        let extra = n % subs.len();
        let mut next = 0usize;
        for (i, m) in subs.iter().enumerate() {
            let take = per + usize::from(i < extra);
            if take > 0
                && let Some(a) = out.get_mut(*m)
            {
                a.insert(
                    topic.clone(),
                    (next..next + take).map(|p| p as i32).collect(),
                );
            }
            next += take;
        }
    }
    out
}

/// Keeps `Arc<Connection>` importable for callers of this module.
pub type Conn = Arc<Connection>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_matches_kafka() {
        let members = vec![
            ("b".to_string(), vec!["t".to_string(), "u".to_string()]),
            ("a".to_string(), vec!["t".to_string()]),
        ];
        let counts = BTreeMap::from([("t".to_string(), 5usize), ("u".to_string(), 2usize)]);
        let a = range_assign(&members, &counts);
        assert_eq!(a["a"]["t"], vec![0, 1, 2]);
        assert_eq!(a["b"]["t"], vec![3, 4]);
        assert_eq!(a["b"]["u"], vec![0, 1]);
        assert!(!a["a"].contains_key("u"));
    }

    #[test]
    fn embedded_messages_round_trip() {
        let s = encode_subscription(&["x".into(), "y".into()]).unwrap();
        assert_eq!(decode_subscription(&s).unwrap(), vec!["x", "y"]);
        let m = BTreeMap::from([("x".to_string(), vec![0, 2])]);
        let a = encode_assignment(&m).unwrap();
        assert_eq!(decode_assignment_map(&a), m);
        assert!(decode_assignment(&Bytes::from_static(b"\x00")).is_none());
    }
}
