//! Typed metadata records: the contents of the replicated metadata log.
//!
//! A Raft entry carries one *batch* of records that is applied atomically. Encoding:
//!
//! ```text
//! batch  := format:u8 (=1) count:uvarint record*
//! record := type:uvarint version:uvarint body_len:uvarint body
//! ```
//!
//! Integers inside bodies are zigzag varints, strings and arrays are length-prefixed, so the
//! encoding is compact and deterministic (one value has exactly one encoding). Record type
//! numbers follow Kafka's KRaft metadata record API keys where one exists.
//!
//! Compatibility rules: a record's fields are only ever appended; a new field is read only when
//! the record's version says it is present, so a newer node reads an older log. The body length
//! lets an older node skip fields it does not know, and records of unknown type decode to
//! [`MetadataRecord::Unknown`], which replay ignores.

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::codec::*;
use crate::error::DecodeError;

/// Batch format byte.
const BATCH_FORMAT: u8 = 1;

/// `leader` value in a [`PartitionChangeRecord`] meaning "unchanged" (Kafka uses -2 too).
pub const NO_LEADER_CHANGE: i32 = -2;
/// `leader` value meaning "no leader".
pub const NO_LEADER: i32 = -1;

/// Kafka's `SecurityProtocol` ids.
pub mod security_protocol {
    pub const PLAINTEXT: i16 = 0;
    pub const SSL: i16 = 1;
    pub const SASL_PLAINTEXT: i16 = 2;
    pub const SASL_SSL: i16 = 3;
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Listener name, e.g. `PLAINTEXT`.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub security_protocol: i16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterBrokerRecord {
    pub broker_id: i32,
    /// Random per process start; tells a restart from a retried registration.
    pub incarnation_id: Uuid,
    pub broker_epoch: i64,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    /// New registrations are fenced until the broker has caught up with the metadata log.
    pub fenced: bool,
}

/// Fence, unfence or unregister one broker registration (identified by id and epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerEpochRecord {
    pub broker_id: i32,
    pub broker_epoch: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicRecord {
    pub name: String,
    pub topic_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRecord {
    pub topic_id: Uuid,
    pub partition_id: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// Replicas being added / removed by a reassignment in progress (version 1+; Kafka's
    /// `AddingReplicas` / `RemovingReplicas`). Both are also in `replicas`.
    pub adding_replicas: Vec<i32>,
    pub removing_replicas: Vec<i32>,
}

/// A change to an existing partition. Replay bumps the partition epoch, and the leader epoch
/// when the leader changes (as Kafka's controller does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionChangeRecord {
    pub topic_id: Uuid,
    pub partition_id: i32,
    /// New leader, [`NO_LEADER`], or [`NO_LEADER_CHANGE`].
    pub leader: i32,
    pub isr: Option<Vec<i32>>,
    pub replicas: Option<Vec<i32>>,
    /// A reassignment's adding / removing replicas (version 1+); `None` = unchanged.
    pub adding_replicas: Option<Vec<i32>>,
    pub removing_replicas: Option<Vec<i32>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoveTopicRecord {
    pub topic_id: Uuid,
}

/// What a config record applies to (Kafka's `ConfigResource.Type` ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConfigResourceType {
    Topic,
    /// A broker; the empty name is the cluster-wide default for all brokers.
    Broker,
}

impl ConfigResourceType {
    pub fn id(self) -> i8 {
        match self {
            ConfigResourceType::Topic => 2,
            ConfigResourceType::Broker => 4,
        }
    }

    pub fn from_id(id: i8) -> Option<Self> {
        match id {
            2 => Some(ConfigResourceType::Topic),
            4 => Some(ConfigResourceType::Broker),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigRecord {
    pub resource_type: ConfigResourceType,
    pub resource_name: String,
    pub name: String,
    /// `None` deletes the key (back to its default).
    pub value: Option<String>,
}

/// The controller handed producer ids below `next_producer_id` to `broker_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerIdsRecord {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub next_producer_id: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureLevelRecord {
    pub name: String,
    pub level: i16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataRecord {
    RegisterBroker(RegisterBrokerRecord),
    UnregisterBroker(BrokerEpochRecord),
    Topic(TopicRecord),
    Partition(PartitionRecord),
    Config(ConfigRecord),
    PartitionChange(PartitionChangeRecord),
    FenceBroker(BrokerEpochRecord),
    UnfenceBroker(BrokerEpochRecord),
    RemoveTopic(RemoveTopicRecord),
    FeatureLevel(FeatureLevelRecord),
    ProducerIds(ProducerIdsRecord),
    /// A record type this node does not know (written by a newer node); ignored on replay.
    Unknown {
        record_type: u64,
        version: u64,
    },
}

mod types {
    pub const REGISTER_BROKER: u64 = 0;
    pub const UNREGISTER_BROKER: u64 = 1;
    pub const TOPIC: u64 = 2;
    pub const PARTITION: u64 = 3;
    pub const CONFIG: u64 = 4;
    pub const PARTITION_CHANGE: u64 = 5;
    pub const FENCE_BROKER: u64 = 7;
    pub const UNFENCE_BROKER: u64 = 8;
    pub const REMOVE_TOPIC: u64 = 9;
    pub const FEATURE_LEVEL: u64 = 12;
    pub const PRODUCER_IDS: u64 = 15;
}

impl MetadataRecord {
    /// (record type, current version)
    fn header(&self) -> (u64, u64) {
        use MetadataRecord::*;
        match self {
            RegisterBroker(_) => (types::REGISTER_BROKER, 0),
            UnregisterBroker(_) => (types::UNREGISTER_BROKER, 0),
            Topic(_) => (types::TOPIC, 0),
            Partition(_) => (types::PARTITION, 1),
            Config(_) => (types::CONFIG, 0),
            PartitionChange(_) => (types::PARTITION_CHANGE, 1),
            FenceBroker(_) => (types::FENCE_BROKER, 0),
            UnfenceBroker(_) => (types::UNFENCE_BROKER, 0),
            RemoveTopic(_) => (types::REMOVE_TOPIC, 0),
            FeatureLevel(_) => (types::FEATURE_LEVEL, 0),
            ProducerIds(_) => (types::PRODUCER_IDS, 0),
            Unknown {
                record_type,
                version,
            } => (*record_type, *version),
        }
    }

    fn encode_body(&self, b: &mut BytesMut) {
        use MetadataRecord::*;
        match self {
            RegisterBroker(r) => {
                put_varint(b, r.broker_id.into());
                put_uuid(b, &r.incarnation_id);
                put_varint(b, r.broker_epoch);
                put_uvarint(b, r.endpoints.len() as u64);
                for e in &r.endpoints {
                    put_str(b, &e.name);
                    put_str(b, &e.host);
                    put_uvarint(b, e.port.into());
                    put_varint(b, e.security_protocol.into());
                }
                put_opt_str(b, r.rack.as_deref());
                put_bool(b, r.fenced);
            }
            UnregisterBroker(r) | FenceBroker(r) | UnfenceBroker(r) => {
                put_varint(b, r.broker_id.into());
                put_varint(b, r.broker_epoch);
            }
            Topic(r) => {
                put_str(b, &r.name);
                put_uuid(b, &r.topic_id);
            }
            Partition(r) => {
                put_uuid(b, &r.topic_id);
                put_varint(b, r.partition_id.into());
                put_i32s(b, &r.replicas);
                put_i32s(b, &r.isr);
                put_varint(b, r.leader.into());
                put_varint(b, r.leader_epoch.into());
                put_varint(b, r.partition_epoch.into());
                put_i32s(b, &r.adding_replicas);
                put_i32s(b, &r.removing_replicas);
            }
            Config(r) => {
                b.put_i8(r.resource_type.id());
                put_str(b, &r.resource_name);
                put_str(b, &r.name);
                put_opt_str(b, r.value.as_deref());
            }
            PartitionChange(r) => {
                put_uuid(b, &r.topic_id);
                put_varint(b, r.partition_id.into());
                put_varint(b, r.leader.into());
                put_opt_i32s(b, r.isr.as_deref());
                put_opt_i32s(b, r.replicas.as_deref());
                put_opt_i32s(b, r.adding_replicas.as_deref());
                put_opt_i32s(b, r.removing_replicas.as_deref());
            }
            RemoveTopic(r) => put_uuid(b, &r.topic_id),
            FeatureLevel(r) => {
                put_str(b, &r.name);
                put_varint(b, r.level.into());
            }
            ProducerIds(r) => {
                put_varint(b, r.broker_id.into());
                put_varint(b, r.broker_epoch);
                put_varint(b, r.next_producer_id);
            }
            Unknown { .. } => {}
        }
    }

    /// Decode one record body of the given type and version.
    fn decode_body(
        record_type: u64,
        version: u64,
        r: &mut Reader<'_>,
    ) -> Result<Self, DecodeError> {
        use MetadataRecord::*;
        let rec = match record_type {
            types::REGISTER_BROKER => {
                let broker_id = r.i32()?;
                let incarnation_id = r.uuid()?;
                let broker_epoch = r.varint()?;
                let n = r.len()?;
                let mut endpoints = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    endpoints.push(Endpoint {
                        name: r.string()?,
                        host: r.string()?,
                        port: u16::try_from(r.uvarint()?)
                            .map_err(|_| DecodeError::Malformed("port out of range"))?,
                        security_protocol: r.i16()?,
                    });
                }
                RegisterBroker(RegisterBrokerRecord {
                    broker_id,
                    incarnation_id,
                    broker_epoch,
                    endpoints,
                    rack: r.opt_string()?,
                    fenced: r.bool()?,
                })
            }
            types::UNREGISTER_BROKER | types::FENCE_BROKER | types::UNFENCE_BROKER => {
                let e = BrokerEpochRecord {
                    broker_id: r.i32()?,
                    broker_epoch: r.varint()?,
                };
                match record_type {
                    types::UNREGISTER_BROKER => UnregisterBroker(e),
                    types::FENCE_BROKER => FenceBroker(e),
                    _ => UnfenceBroker(e),
                }
            }
            types::TOPIC => Topic(TopicRecord {
                name: r.string()?,
                topic_id: r.uuid()?,
            }),
            types::PARTITION => Partition(PartitionRecord {
                topic_id: r.uuid()?,
                partition_id: r.i32()?,
                replicas: r.i32s()?,
                isr: r.i32s()?,
                leader: r.i32()?,
                leader_epoch: r.i32()?,
                partition_epoch: r.i32()?,
                // Fields are decoded in the order written, so these come last.
                adding_replicas: if version >= 1 { r.i32s()? } else { Vec::new() },
                removing_replicas: if version >= 1 { r.i32s()? } else { Vec::new() },
            }),
            types::CONFIG => {
                let id = r.u8()? as i8;
                let resource_type = ConfigResourceType::from_id(id)
                    .ok_or(DecodeError::Malformed("unknown config resource type"))?;
                Config(ConfigRecord {
                    resource_type,
                    resource_name: r.string()?,
                    name: r.string()?,
                    value: r.opt_string()?,
                })
            }
            types::PARTITION_CHANGE => PartitionChange(PartitionChangeRecord {
                topic_id: r.uuid()?,
                partition_id: r.i32()?,
                leader: r.i32()?,
                isr: opt_i32s(r)?,
                replicas: opt_i32s(r)?,
                adding_replicas: if version >= 1 { opt_i32s(r)? } else { None },
                removing_replicas: if version >= 1 { opt_i32s(r)? } else { None },
            }),
            types::REMOVE_TOPIC => RemoveTopic(RemoveTopicRecord {
                topic_id: r.uuid()?,
            }),
            types::FEATURE_LEVEL => FeatureLevel(FeatureLevelRecord {
                name: r.string()?,
                level: r.i16()?,
            }),
            types::PRODUCER_IDS => ProducerIds(ProducerIdsRecord {
                broker_id: r.i32()?,
                broker_epoch: r.varint()?,
                next_producer_id: r.varint()?,
            }),
            _ => Unknown {
                record_type,
                version,
            },
        };
        Ok(rec)
    }
}

fn put_opt_i32s(b: &mut BytesMut, v: Option<&[i32]>) {
    match v {
        None => b.put_u8(0),
        Some(v) => {
            b.put_u8(1);
            put_i32s(b, v);
        }
    }
}

fn opt_i32s(r: &mut Reader<'_>) -> Result<Option<Vec<i32>>, DecodeError> {
    Ok(if r.bool()? { Some(r.i32s()?) } else { None })
}

/// Append one record to `buf`.
pub fn encode_record(rec: &MetadataRecord, buf: &mut BytesMut) {
    let (ty, version) = rec.header();
    let mut body = BytesMut::new();
    rec.encode_body(&mut body);
    put_uvarint(buf, ty);
    put_uvarint(buf, version);
    put_uvarint(buf, body.len() as u64);
    buf.put_slice(&body);
}

/// Encode a batch of records that will be applied atomically.
pub fn encode_batch(records: &[MetadataRecord]) -> Bytes {
    let mut buf = BytesMut::with_capacity(16 + records.len() * 48);
    buf.put_u8(BATCH_FORMAT);
    put_uvarint(&mut buf, records.len() as u64);
    for r in records {
        encode_record(r, &mut buf);
    }
    buf.freeze()
}

/// Decode a batch. Every length is checked against the input before use.
pub fn decode_batch(data: &[u8]) -> Result<Vec<MetadataRecord>, DecodeError> {
    let mut r = Reader::new(data);
    let format = r.u8()?;
    if format != BATCH_FORMAT {
        return Err(DecodeError::UnsupportedFormat(format));
    }
    let n = r.len()?;
    // The smallest record takes 3 bytes, which bounds the allocation by the input.
    let mut out = Vec::with_capacity(n.min(r.remaining() / 3));
    for _ in 0..n {
        out.push(decode_record(&mut r)?);
    }
    if !r.is_empty() {
        return Err(DecodeError::Malformed("trailing bytes after batch"));
    }
    Ok(out)
}

pub(crate) fn decode_record(r: &mut Reader<'_>) -> Result<MetadataRecord, DecodeError> {
    let ty = r.uvarint()?;
    let version = r.uvarint()?;
    let len = r.len()?;
    let mut body = Reader::new(r.bytes(len)?);
    // Trailing body bytes are fields of a newer version: skipped on purpose.
    MetadataRecord::decode_body(ty, version, &mut body)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Ids from a small pool, so partition records, changes and removals hit existing topics.
    fn arb_uuid() -> impl Strategy<Value = Uuid> {
        (1u128..5).prop_map(Uuid::from_u128)
    }

    fn arb_ids() -> impl Strategy<Value = Vec<i32>> {
        prop::collection::vec(-1i32..6, 0..5)
    }

    pub(crate) fn arb_record() -> impl Strategy<Value = MetadataRecord> {
        use MetadataRecord::*;
        let endpoint = ("[A-Z]{1,8}", "[a-z0-9.]{1,12}", any::<u16>(), 0i16..4).prop_map(
            |(name, host, port, security_protocol)| Endpoint {
                name,
                host,
                port,
                security_protocol,
            },
        );
        prop_oneof![
            (
                0i32..6,
                arb_uuid(),
                0i64..4,
                prop::collection::vec(endpoint, 0..3),
                prop::option::of("[a-z]{1,4}"),
                any::<bool>()
            )
                .prop_map(
                    |(broker_id, incarnation_id, broker_epoch, endpoints, rack, fenced)| {
                        RegisterBroker(RegisterBrokerRecord {
                            broker_id,
                            incarnation_id,
                            broker_epoch,
                            endpoints,
                            rack,
                            fenced,
                        })
                    }
                ),
            (0i32..6, 0i64..3).prop_map(|(broker_id, broker_epoch)| FenceBroker(
                BrokerEpochRecord {
                    broker_id,
                    broker_epoch
                }
            )),
            (0i32..6, 0i64..3).prop_map(|(broker_id, broker_epoch)| UnfenceBroker(
                BrokerEpochRecord {
                    broker_id,
                    broker_epoch
                }
            )),
            ("[a-c]{1,3}", arb_uuid())
                .prop_map(|(name, topic_id)| Topic(TopicRecord { name, topic_id })),
            (
                arb_uuid(),
                0i32..4,
                arb_ids(),
                arb_ids(),
                -1i32..6,
                0i32..5,
                0i32..5,
                (arb_ids(), arb_ids())
            )
                .prop_map(
                    |(
                        topic_id,
                        partition_id,
                        replicas,
                        isr,
                        leader,
                        leader_epoch,
                        partition_epoch,
                        (adding_replicas, removing_replicas),
                    )| {
                        Partition(PartitionRecord {
                            topic_id,
                            partition_id,
                            replicas,
                            adding_replicas,
                            removing_replicas,
                            isr,
                            leader,
                            leader_epoch,
                            partition_epoch,
                        })
                    }
                ),
            (
                arb_uuid(),
                0i32..4,
                -2i32..6,
                prop::option::of(arb_ids()),
                prop::option::of(arb_ids()),
                (prop::option::of(arb_ids()), prop::option::of(arb_ids()))
            )
                .prop_map(
                    |(topic_id, partition_id, leader, isr, replicas, (adding, removing))| {
                        PartitionChange(PartitionChangeRecord {
                            topic_id,
                            partition_id,
                            leader,
                            isr,
                            replicas,
                            adding_replicas: adding,
                            removing_replicas: removing,
                        })
                    }
                ),
            (
                any::<bool>(),
                "[a-c]{0,3}",
                "[a-z.]{1,12}",
                prop::option::of("[0-9]{1,4}")
            )
                .prop_map(|(topic, resource_name, name, value)| Config(ConfigRecord {
                    resource_type: if topic {
                        ConfigResourceType::Topic
                    } else {
                        ConfigResourceType::Broker
                    },
                    resource_name,
                    name,
                    value,
                })),
            arb_uuid().prop_map(|topic_id| RemoveTopic(RemoveTopicRecord { topic_id })),
            ("[a-z.]{1,12}", any::<i16>())
                .prop_map(|(name, level)| FeatureLevel(FeatureLevelRecord { name, level })),
            (0i32..6, 0i64..100, 0i64..1_000_000).prop_map(
                |(broker_id, broker_epoch, next_producer_id)| ProducerIds(ProducerIdsRecord {
                    broker_id,
                    broker_epoch,
                    next_producer_id
                })
            ),
        ]
    }

    proptest! {
        #[test]
        fn batches_round_trip(records in prop::collection::vec(arb_record(), 0..20)) {
            let bytes = encode_batch(&records);
            prop_assert_eq!(decode_batch(&bytes).unwrap(), records.clone());
            // Deterministic: the same records always give the same bytes.
            prop_assert_eq!(encode_batch(&records), bytes);
        }

        #[test]
        fn truncated_or_corrupt_batches_never_panic(
            records in prop::collection::vec(arb_record(), 1..6),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let bytes = encode_batch(&records).to_vec();
            let _ = decode_batch(&bytes[..cut.index(bytes.len())]);
            let mut corrupt = bytes.clone();
            let i = flip.index(corrupt.len());
            corrupt[i] ^= 0x5a;
            let _ = decode_batch(&corrupt);
        }
    }

    #[test]
    fn unknown_record_types_and_newer_fields_are_skipped() {
        let mut buf = BytesMut::new();
        buf.put_u8(BATCH_FORMAT);
        put_uvarint(&mut buf, 2);
        // A record type from the future.
        put_uvarint(&mut buf, 999);
        put_uvarint(&mut buf, 3);
        put_uvarint(&mut buf, 2);
        buf.put_slice(&[1, 2]);
        // A v1 topic record with an extra trailing field.
        let mut body = BytesMut::new();
        put_str(&mut body, "t");
        put_uuid(&mut body, &Uuid::from_u128(7));
        put_str(&mut body, "future field");
        put_uvarint(&mut buf, types::TOPIC);
        put_uvarint(&mut buf, 1);
        put_uvarint(&mut buf, body.len() as u64);
        buf.put_slice(&body);
        let recs = decode_batch(&buf).unwrap();
        assert_eq!(
            recs,
            vec![
                MetadataRecord::Unknown {
                    record_type: 999,
                    version: 3
                },
                MetadataRecord::Topic(TopicRecord {
                    name: "t".into(),
                    topic_id: Uuid::from_u128(7)
                })
            ]
        );
    }

    #[test]
    fn version_zero_partition_records_read_without_reassignment_fields() {
        // Logs written before reassignments existed hold v0 bodies that end after the
        // partition epoch (records) and after the replicas (changes).
        let mut buf = BytesMut::new();
        buf.put_u8(BATCH_FORMAT);
        put_uvarint(&mut buf, 2);
        let mut body = BytesMut::new();
        put_uuid(&mut body, &Uuid::from_u128(7));
        put_varint(&mut body, 0);
        put_i32s(&mut body, &[1, 2]);
        put_i32s(&mut body, &[1]);
        put_varint(&mut body, 1);
        put_varint(&mut body, 3);
        put_varint(&mut body, 4);
        for (ty, body) in [(types::PARTITION, body.clone()), {
            let mut c = BytesMut::new();
            put_uuid(&mut c, &Uuid::from_u128(7));
            put_varint(&mut c, 0);
            put_varint(&mut c, i64::from(NO_LEADER_CHANGE));
            put_opt_i32s(&mut c, Some(&[1, 2]));
            put_opt_i32s(&mut c, None);
            (types::PARTITION_CHANGE, c)
        }] {
            put_uvarint(&mut buf, ty);
            put_uvarint(&mut buf, 0);
            put_uvarint(&mut buf, body.len() as u64);
            buf.put_slice(&body);
        }
        let recs = decode_batch(&buf).unwrap();
        assert_eq!(
            recs,
            vec![
                MetadataRecord::Partition(PartitionRecord {
                    topic_id: Uuid::from_u128(7),
                    partition_id: 0,
                    replicas: vec![1, 2],
                    isr: vec![1],
                    leader: 1,
                    leader_epoch: 3,
                    partition_epoch: 4,
                    adding_replicas: vec![],
                    removing_replicas: vec![],
                }),
                MetadataRecord::PartitionChange(PartitionChangeRecord {
                    topic_id: Uuid::from_u128(7),
                    partition_id: 0,
                    leader: NO_LEADER_CHANGE,
                    isr: Some(vec![1, 2]),
                    replicas: None,
                    adding_replicas: None,
                    removing_replicas: None,
                }),
            ]
        );
    }

    #[test]
    fn hostile_counts_are_rejected() {
        let mut buf = BytesMut::new();
        buf.put_u8(BATCH_FORMAT);
        put_uvarint(&mut buf, u64::MAX >> 1);
        assert_eq!(decode_batch(&buf), Err(DecodeError::Truncated));
    }
}
