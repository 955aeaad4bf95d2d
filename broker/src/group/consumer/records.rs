//! The KIP-848 consumer group records of `__consumer_offsets`, in Kafka's layouts (apache/kafka
//! `group-coordinator/src/main/resources/common/message/ConsumerGroup*.json`). The key version
//! names the record:
//!
//! | key | record | value |
//! |----:|--------|-------|
//! | 3 | ConsumerGroupMetadata (group) | the group epoch |
//! | 4 | ConsumerGroupPartitionMetadata (group) | the subscribed topics: id, name, partitions |
//! | 5 | ConsumerGroupMemberMetadata (group, member) | the member's subscription and client |
//! | 6 | ConsumerGroupTargetAssignmentMetadata (group) | the target assignment epoch |
//! | 7 | ConsumerGroupTargetAssignmentMember (group, member) | the member's target partitions |
//! | 8 | ConsumerGroupCurrentMemberAssignment (group, member) | epochs, state, owned partitions |
//!
//! Keys use the classic encoding (int16-prefixed strings). Values are version 0 in the
//! flexible encoding: compact strings and arrays (unsigned varint length + 1), 16-byte UUIDs,
//! and a tagged-field section closing every struct. Unknown tagged fields (such as the classic
//! member metadata, tag 0 of the member value, or fields newer versions add) are skipped.
//! A null value is a tombstone.

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::group::consumer::Assignment;
use crate::group::records::{Reader, RecordError, put_string, truncate_utf8};

/// One subscribed topic as the group saw it (ConsumerGroupPartitionMetadataValue.TopicMetadata).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TopicMetadata {
    pub id: Uuid,
    pub name: String,
    pub num_partitions: i32,
}

/// ConsumerGroupMemberMetadataValue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetadataValue {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub server_assignor: Option<String>,
}

/// ConsumerGroupCurrentMemberAssignmentValue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentAssignmentValue {
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: i8,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
}

/// A consumer group record; `None` values are tombstones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerRecord {
    GroupEpoch {
        group: String,
        epoch: Option<i32>,
    },
    SubscriptionMetadata {
        group: String,
        topics: Option<Vec<TopicMetadata>>,
    },
    MemberSubscription {
        group: String,
        member: String,
        value: Option<MemberMetadataValue>,
    },
    TargetAssignmentEpoch {
        group: String,
        epoch: Option<i32>,
    },
    TargetAssignment {
        group: String,
        member: String,
        partitions: Option<Assignment>,
    },
    CurrentAssignment {
        group: String,
        member: String,
        value: Option<CurrentAssignmentValue>,
    },
}

const GROUP_EPOCH: i16 = 3;
const SUBSCRIPTION_METADATA: i16 = 4;
const MEMBER_SUBSCRIPTION: i16 = 5;
const TARGET_ASSIGNMENT_EPOCH: i16 = 6;
const TARGET_ASSIGNMENT: i16 = 7;
const CURRENT_ASSIGNMENT: i16 = 8;

/// The only value version Kafka defines for these records.
const VALUE_VERSION: i16 = 0;

impl ConsumerRecord {
    pub fn group(&self) -> &str {
        match self {
            ConsumerRecord::GroupEpoch { group, .. }
            | ConsumerRecord::SubscriptionMetadata { group, .. }
            | ConsumerRecord::MemberSubscription { group, .. }
            | ConsumerRecord::TargetAssignmentEpoch { group, .. }
            | ConsumerRecord::TargetAssignment { group, .. }
            | ConsumerRecord::CurrentAssignment { group, .. } => group,
        }
    }

    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let mut k = BytesMut::new();
        let value = match self {
            ConsumerRecord::GroupEpoch { group, epoch } => {
                k.put_i16(GROUP_EPOCH);
                put_string(&mut k, group);
                epoch.map(|e| value(|v| v.put_i32(e)))
            }
            ConsumerRecord::SubscriptionMetadata { group, topics } => {
                k.put_i16(SUBSCRIPTION_METADATA);
                put_string(&mut k, group);
                topics.as_ref().map(|ts| {
                    value(|v| {
                        put_len(v, ts.len());
                        for t in ts {
                            v.put_slice(t.id.as_bytes());
                            put_compact(v, &t.name);
                            v.put_i32(t.num_partitions);
                            // No rack information: Kafka stores an empty list then.
                            put_len(v, 0);
                            v.put_u8(0);
                        }
                    })
                })
            }
            ConsumerRecord::MemberSubscription {
                group,
                member,
                value: m,
            } => {
                k.put_i16(MEMBER_SUBSCRIPTION);
                put_string(&mut k, group);
                put_string(&mut k, member);
                m.as_ref().map(|m| {
                    value(|v| {
                        put_compact_nullable(v, m.instance_id.as_deref());
                        put_compact_nullable(v, m.rack_id.as_deref());
                        put_compact(v, &m.client_id);
                        put_compact(v, &m.client_host);
                        put_len(v, m.subscribed_topic_names.len());
                        for n in &m.subscribed_topic_names {
                            put_compact(v, n);
                        }
                        put_compact_nullable(v, m.subscribed_topic_regex.as_deref());
                        v.put_i32(m.rebalance_timeout_ms);
                        put_compact_nullable(v, m.server_assignor.as_deref());
                    })
                })
            }
            ConsumerRecord::TargetAssignmentEpoch { group, epoch } => {
                k.put_i16(TARGET_ASSIGNMENT_EPOCH);
                put_string(&mut k, group);
                epoch.map(|e| value(|v| v.put_i32(e)))
            }
            ConsumerRecord::TargetAssignment {
                group,
                member,
                partitions,
            } => {
                k.put_i16(TARGET_ASSIGNMENT);
                put_string(&mut k, group);
                put_string(&mut k, member);
                partitions
                    .as_ref()
                    .map(|a| value(|v| put_topic_partitions(v, a)))
            }
            ConsumerRecord::CurrentAssignment {
                group,
                member,
                value: c,
            } => {
                k.put_i16(CURRENT_ASSIGNMENT);
                put_string(&mut k, group);
                put_string(&mut k, member);
                c.as_ref().map(|c| {
                    value(|v| {
                        v.put_i32(c.member_epoch);
                        v.put_i32(c.previous_member_epoch);
                        v.put_i8(c.state);
                        put_topic_partitions(v, &c.assigned);
                        put_topic_partitions(v, &c.pending_revocation);
                    })
                })
            }
        };
        (k.freeze(), value)
    }

    /// Decodes a consumer group record; `Ok(None)` if the key is another kind of record.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<ConsumerRecord>, RecordError> {
        let mut k = Reader::new(key);
        let version = k.i16("key version")?;
        if !(GROUP_EPOCH..=CURRENT_ASSIGNMENT).contains(&version) {
            return Ok(None);
        }
        let group = k.string(false, "group")?;
        let member = match version {
            MEMBER_SUBSCRIPTION | TARGET_ASSIGNMENT | CURRENT_ASSIGNMENT => {
                Some(k.string(false, "member id")?)
            }
            _ => None,
        };
        let mut v = match value {
            None => None,
            Some(bytes) => {
                let mut r = Reader::new(bytes);
                let vv = r.i16("value version")?;
                if vv != VALUE_VERSION {
                    return Err(RecordError::UnsupportedVersion {
                        what: "consumer group record value",
                        version: vv,
                    });
                }
                Some(r)
            }
        };
        let member = member.unwrap_or_default();
        let record = match version {
            GROUP_EPOCH => ConsumerRecord::GroupEpoch {
                group,
                epoch: v.as_mut().map(|r| r.i32("group epoch")).transpose()?,
            },
            SUBSCRIPTION_METADATA => ConsumerRecord::SubscriptionMetadata {
                group,
                topics: v.as_mut().map(read_topic_metadata).transpose()?,
            },
            MEMBER_SUBSCRIPTION => ConsumerRecord::MemberSubscription {
                group,
                member,
                value: v.as_mut().map(read_member_metadata).transpose()?,
            },
            TARGET_ASSIGNMENT_EPOCH => ConsumerRecord::TargetAssignmentEpoch {
                group,
                epoch: v.as_mut().map(|r| r.i32("assignment epoch")).transpose()?,
            },
            TARGET_ASSIGNMENT => ConsumerRecord::TargetAssignment {
                group,
                member,
                partitions: v.as_mut().map(read_topic_partitions).transpose()?,
            },
            _ => ConsumerRecord::CurrentAssignment {
                group,
                member,
                value: v.as_mut().map(read_current_assignment).transpose()?,
            },
        };
        if let Some(r) = v.as_mut() {
            r.skip_tagged_fields()?;
        }
        Ok(Some(record))
    }
}

/// A version 0 value: the version, the body, and an empty tagged-field section.
fn value(body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut v = BytesMut::new();
    v.put_i16(VALUE_VERSION);
    body(&mut v);
    v.put_u8(0);
    v.freeze()
}

fn put_uvarint(out: &mut BytesMut, mut n: u64) {
    while n >= 0x80 {
        out.put_u8((n as u8) | 0x80);
        n >>= 7;
    }
    out.put_u8(n as u8);
}

/// A compact array's length.
fn put_len(out: &mut BytesMut, n: usize) {
    put_uvarint(out, n as u64 + 1);
}

fn put_compact(out: &mut BytesMut, s: &str) {
    // Kafka caps strings at i16::MAX bytes; longer text is cut at a character boundary.
    let s = truncate_utf8(s, i16::MAX as usize);
    put_len(out, s.len());
    out.put_slice(s.as_bytes());
}

fn put_compact_nullable(out: &mut BytesMut, s: Option<&str>) {
    match s {
        None => out.put_u8(0),
        Some(s) => put_compact(out, s),
    }
}

fn put_topic_partitions(out: &mut BytesMut, a: &Assignment) {
    put_len(out, a.len());
    for (t, ps) in a {
        out.put_slice(t.as_bytes());
        put_len(out, ps.len());
        for p in ps {
            out.put_i32(*p);
        }
        out.put_u8(0);
    }
}

fn read_compact_strings(
    r: &mut Reader<'_>,
    what: &'static str,
) -> Result<Vec<String>, RecordError> {
    let n = r.array_len(true, 1, what)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(r.string(true, what)?);
    }
    Ok(out)
}

fn read_topic_metadata(r: &mut Reader<'_>) -> Result<Vec<TopicMetadata>, RecordError> {
    // The smallest topic: an id, an empty name, a count, an empty list, no tags.
    let n = r.array_len(true, 16 + 1 + 4 + 1 + 1, "topics")?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.uuid("topic id")?;
        let name = r.string(true, "topic name")?;
        let num_partitions = r.i32("partition count")?;
        // Rack information: read past it (Fjord's assignors are not rack-aware).
        let racks = r.array_len(true, 4 + 1 + 1, "partition racks")?;
        for _ in 0..racks {
            r.i32("partition")?;
            read_compact_strings(r, "racks")?;
            r.skip_tagged_fields()?;
        }
        r.skip_tagged_fields()?;
        out.push(TopicMetadata {
            id,
            name,
            num_partitions,
        });
    }
    Ok(out)
}

fn read_member_metadata(r: &mut Reader<'_>) -> Result<MemberMetadataValue, RecordError> {
    Ok(MemberMetadataValue {
        instance_id: r.nullable_string(true, "instance id")?,
        rack_id: r.nullable_string(true, "rack id")?,
        client_id: r.string(true, "client id")?,
        client_host: r.string(true, "client host")?,
        subscribed_topic_names: read_compact_strings(r, "subscribed topic names")?,
        subscribed_topic_regex: r.nullable_string(true, "subscribed topic regex")?,
        rebalance_timeout_ms: r.i32("rebalance timeout")?,
        server_assignor: r.nullable_string(true, "server assignor")?,
    })
}

fn read_topic_partitions(r: &mut Reader<'_>) -> Result<Assignment, RecordError> {
    let n = r.array_len(true, 16 + 1 + 1, "topic partitions")?;
    let mut out = Assignment::new();
    for _ in 0..n {
        let id = r.uuid("topic id")?;
        let count = r.array_len(true, 4, "partitions")?;
        let mut ps = std::collections::BTreeSet::new();
        for _ in 0..count {
            ps.insert(r.i32("partition")?);
        }
        r.skip_tagged_fields()?;
        if !ps.is_empty() {
            out.entry(id).or_default().extend(ps);
        }
    }
    Ok(out)
}

fn read_current_assignment(r: &mut Reader<'_>) -> Result<CurrentAssignmentValue, RecordError> {
    Ok(CurrentAssignmentValue {
        member_epoch: r.i32("member epoch")?,
        previous_member_epoch: r.i32("previous member epoch")?,
        state: r.i8("member state")?,
        assigned: read_topic_partitions(r)?,
        pending_revocation: read_topic_partitions(r)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::records::CoordinatorRecord;

    fn t(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn samples() -> Vec<ConsumerRecord> {
        let mut a = Assignment::new();
        a.insert(t(1), [0, 2, 5].into());
        a.insert(t(2), [1].into());
        vec![
            ConsumerRecord::GroupEpoch {
                group: "g".into(),
                epoch: Some(7),
            },
            ConsumerRecord::SubscriptionMetadata {
                group: "g".into(),
                topics: Some(vec![TopicMetadata {
                    id: t(1),
                    name: "orders".into(),
                    num_partitions: 6,
                }]),
            },
            ConsumerRecord::MemberSubscription {
                group: "g".into(),
                member: "m".into(),
                value: Some(MemberMetadataValue {
                    instance_id: Some("i".into()),
                    rack_id: None,
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    subscribed_topic_names: vec!["orders".into(), "payments".into()],
                    subscribed_topic_regex: Some("^o.*".into()),
                    rebalance_timeout_ms: 300_000,
                    server_assignor: Some("range".into()),
                }),
            },
            ConsumerRecord::TargetAssignmentEpoch {
                group: "g".into(),
                epoch: Some(7),
            },
            ConsumerRecord::TargetAssignment {
                group: "g".into(),
                member: "m".into(),
                partitions: Some(a.clone()),
            },
            ConsumerRecord::CurrentAssignment {
                group: "g".into(),
                member: "m".into(),
                value: Some(CurrentAssignmentValue {
                    member_epoch: 7,
                    previous_member_epoch: 6,
                    state: 1,
                    assigned: a,
                    pending_revocation: Assignment::from([(t(3), [9].into())]),
                }),
            },
        ]
    }

    #[test]
    fn every_record_round_trips_and_tombstones_too() {
        for r in samples() {
            let (k, v) = r.encode();
            assert_eq!(
                CoordinatorRecord::decode(&k, v.as_deref()).unwrap(),
                Some(CoordinatorRecord::Consumer(r.clone()))
            );
            let tomb = CoordinatorRecord::decode(&k, None).unwrap();
            let Some(CoordinatorRecord::Consumer(tomb)) = tomb else {
                panic!("{tomb:?}");
            };
            assert_eq!(tomb.group(), "g");
        }
    }

    #[test]
    fn layouts_match_kafka() {
        let s = samples();
        // ConsumerGroupMetadataKey v3 "g"; value v0: epoch 7, no tagged fields.
        let (k, v) = s[0].encode();
        assert_eq!(&k[..], &[0, 3, 0, 1, b'g']);
        assert_eq!(&v.unwrap()[..], &[0, 0, 0, 0, 0, 7, 0]);
        // ConsumerGroupCurrentMemberAssignmentKey v8 "g" "m".
        let (k, v) = s[5].encode();
        assert_eq!(&k[..], &[0, 8, 0, 1, b'g', 0, 1, b'm']);
        let v = v.unwrap();
        // Version, epoch 7, previous 6, state 1, then two topics (compact length 3).
        assert_eq!(&v[..11], &[0, 0, 0, 0, 0, 7, 0, 0, 0, 6, 1]);
        assert_eq!(v[11], 3);
        assert_eq!(&v[12..28], t(1).as_bytes());
        // Three partitions (compact length 4): 0, 2, 5, then the topic's tagged fields.
        assert_eq!(v[28], 4);
        assert_eq!(&v[29..41], &[0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 5]);
        assert_eq!(v[41], 0);
    }

    #[test]
    fn tagged_fields_are_skipped_and_hostile_counts_refused() {
        // A member value with Kafka's tagged ClassicMemberMetadata (tag 0) appended.
        let (k, v) = samples()[2].encode();
        let mut v = v.unwrap().to_vec();
        let last = v.len() - 1;
        v[last] = 1; // one tagged field
        v.extend_from_slice(&[0, 3, 0xaa, 0xbb, 0xcc]);
        assert!(matches!(
            CoordinatorRecord::decode(&k, Some(&v)).unwrap(),
            Some(CoordinatorRecord::Consumer(
                ConsumerRecord::MemberSubscription { .. }
            ))
        ));
        // A target assignment claiming 2^31 topics in a few bytes.
        let mut bad = vec![0u8, 0];
        bad.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x08]);
        assert!(CoordinatorRecord::decode(&[0, 7, 0, 1, b'g', 0, 1, b'm'], Some(&bad)).is_err());
        // A newer value version is refused rather than misread.
        assert!(
            CoordinatorRecord::decode(&[0, 3, 0, 1, b'g'], Some(&[0, 1, 0, 0, 0, 1, 0])).is_err()
        );
        // A truncated key.
        assert!(CoordinatorRecord::decode(&[0, 5, 0, 1, b'g'], None).is_err());
    }
}
