//! The records of `__consumer_offsets`, in Kafka's own formats so that Kafka's tools (for
//! example `kafka-console-consumer --formatter OffsetsMessageFormatter`) can read the topic.
//!
//! A record key is an `int16` version followed by the key struct; the version says which kind
//! of record it is (0 and 1: an offset commit; 2: group metadata; 3 to 8: KIP-848 consumer
//! group records, see [`crate::group::consumer::records`]; other kinds, such as share group
//! records, are skipped when read). A value is an
//! `int16` version followed by the value struct; a null value is a tombstone. Versions written
//! are the ones Kafka 4.x writes: OffsetCommitKey v1, OffsetCommitValue v3 (v1 when the commit
//! carries an expiry time), GroupMetadataKey v2, GroupMetadataValue v3. Every version Kafka
//! defines can be read, including the flexible v4 values.
//!
//! Decoding is bounded: lengths and counts are checked against the bytes that remain before
//! anything is allocated.

use bytes::{BufMut, Bytes, BytesMut};

use crate::group::consumer::records::ConsumerRecord;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion { what: &'static str, version: i16 },
}

/// The key of a `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    OffsetCommit {
        group: String,
        topic: String,
        partition: i32,
    },
    GroupMetadata {
        group: String,
    },
    /// A record kind Fjord does not use (share and streams group records, regular
    /// expressions), or a consumer group record (decoded by `ConsumerRecord`), by key version.
    Other(i16),
}

/// OffsetCommitValue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitValue {
    pub offset: i64,
    /// -1 when unknown.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    /// -1 unless the commit asked for its own retention (OffsetCommit v2-v4).
    pub expire_timestamp: i64,
}

/// One member in GroupMetadataValue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetadata {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// -1 in records older than version 1.
    pub rebalance_timeout: i32,
    pub session_timeout: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// GroupMetadataValue: a classic group as of its last completed rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadataValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// -1 when unknown.
    pub current_state_timestamp: i64,
    pub members: Vec<MemberMetadata>,
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordinatorRecord {
    OffsetCommit {
        group: String,
        topic: String,
        partition: i32,
        /// `None`: a tombstone (the offset was deleted or expired).
        value: Option<OffsetCommitValue>,
    },
    GroupMetadata {
        group: String,
        /// `None`: a tombstone (the group was deleted).
        value: Option<GroupMetadataValue>,
    },
    /// A KIP-848 consumer group record.
    Consumer(ConsumerRecord),
}

impl CoordinatorRecord {
    /// The record's key and value bytes.
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        match self {
            CoordinatorRecord::OffsetCommit {
                group,
                topic,
                partition,
                value,
            } => {
                let mut k = BytesMut::new();
                k.put_i16(1);
                put_string(&mut k, group);
                put_string(&mut k, topic);
                k.put_i32(*partition);
                (k.freeze(), value.as_ref().map(encode_offset_commit_value))
            }
            CoordinatorRecord::GroupMetadata { group, value } => {
                let mut k = BytesMut::new();
                k.put_i16(2);
                put_string(&mut k, group);
                (k.freeze(), value.as_ref().map(encode_group_metadata_value))
            }
            CoordinatorRecord::Consumer(r) => r.encode(),
        }
    }

    /// Decodes a record; `Ok(None)` for record kinds Fjord does not use.
    pub fn decode(
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<Option<CoordinatorRecord>, RecordError> {
        if let Some(r) = ConsumerRecord::decode(key, value)? {
            return Ok(Some(CoordinatorRecord::Consumer(r)));
        }
        match decode_key(key)? {
            RecordKey::OffsetCommit {
                group,
                topic,
                partition,
            } => Ok(Some(CoordinatorRecord::OffsetCommit {
                group,
                topic,
                partition,
                value: value.map(decode_offset_commit_value).transpose()?,
            })),
            RecordKey::GroupMetadata { group } => Ok(Some(CoordinatorRecord::GroupMetadata {
                group,
                value: value.map(decode_group_metadata_value).transpose()?,
            })),
            RecordKey::Other(_) => Ok(None),
        }
    }
}

pub(crate) fn put_string(out: &mut BytesMut, s: &str) {
    // Callers pass group ids, topic names and client strings, which Kafka caps at i16::MAX;
    // longer text is cut at a character boundary rather than written with a wrong length.
    let s = truncate_utf8(s, i16::MAX as usize);
    out.put_i16(s.len() as i16);
    out.put_slice(s.as_bytes());
}

fn put_nullable_string(out: &mut BytesMut, s: Option<&str>) {
    match s {
        None => out.put_i16(-1),
        Some(s) => put_string(out, s),
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_i32(b.len() as i32);
    out.put_slice(b);
}

pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn encode_offset_commit_value(v: &OffsetCommitValue) -> Bytes {
    let mut out = BytesMut::new();
    if v.expire_timestamp >= 0 {
        // Version 1 is the only one with an expiry time; Kafka writes it for such commits.
        out.put_i16(1);
        out.put_i64(v.offset);
        put_string(&mut out, &v.metadata);
        out.put_i64(v.commit_timestamp);
        out.put_i64(v.expire_timestamp);
    } else {
        out.put_i16(3);
        out.put_i64(v.offset);
        out.put_i32(v.leader_epoch);
        put_string(&mut out, &v.metadata);
        out.put_i64(v.commit_timestamp);
    }
    out.freeze()
}

fn encode_group_metadata_value(v: &GroupMetadataValue) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(3);
    put_string(&mut out, &v.protocol_type);
    out.put_i32(v.generation);
    put_nullable_string(&mut out, v.protocol.as_deref());
    put_nullable_string(&mut out, v.leader.as_deref());
    out.put_i64(v.current_state_timestamp);
    out.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_string(&mut out, &m.member_id);
        put_nullable_string(&mut out, m.group_instance_id.as_deref());
        put_string(&mut out, &m.client_id);
        put_string(&mut out, &m.client_host);
        out.put_i32(m.rebalance_timeout);
        out.put_i32(m.session_timeout);
        put_bytes(&mut out, &m.subscription);
        put_bytes(&mut out, &m.assignment);
    }
    out.freeze()
}

/// A bounded reader over Kafka's primitive types, classic and flexible (compact) encodings.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RecordError> {
        if n > self.remaining() {
            return Err(RecordError::Truncated(what));
        }
        let out = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    pub(crate) fn i8(&mut self, what: &'static str) -> Result<i8, RecordError> {
        Ok(self.take(1, what)?[0] as i8)
    }

    pub(crate) fn uuid(&mut self, what: &'static str) -> Result<uuid::Uuid, RecordError> {
        let b = self.take(16, what)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ok(uuid::Uuid::from_bytes(a))
    }

    pub(crate) fn i16(&mut self, what: &'static str) -> Result<i16, RecordError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, RecordError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, RecordError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    pub(crate) fn uvarint(&mut self, what: &'static str) -> Result<u64, RecordError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.take(1, what)?[0];
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RecordError::Invalid(what))
    }

    pub(crate) fn utf8(&mut self, n: usize, what: &'static str) -> Result<String, RecordError> {
        let b = self.take(n, what)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| RecordError::Invalid(what))
    }

    /// A string; `flexible` selects the compact encoding.
    pub(crate) fn nullable_string(
        &mut self,
        flexible: bool,
        what: &'static str,
    ) -> Result<Option<String>, RecordError> {
        let len: i64 = if flexible {
            self.uvarint(what)? as i64 - 1
        } else {
            i64::from(self.i16(what)?)
        };
        if len < 0 {
            return Ok(None);
        }
        self.utf8(len as usize, what).map(Some)
    }

    pub(crate) fn string(
        &mut self,
        flexible: bool,
        what: &'static str,
    ) -> Result<String, RecordError> {
        self.nullable_string(flexible, what)?
            .ok_or(RecordError::Invalid(what))
    }

    pub(crate) fn bytes(
        &mut self,
        flexible: bool,
        what: &'static str,
    ) -> Result<Bytes, RecordError> {
        let len: i64 = if flexible {
            self.uvarint(what)? as i64 - 1
        } else {
            i64::from(self.i32(what)?)
        };
        if len < 0 {
            return Err(RecordError::Invalid(what));
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize, what)?))
    }

    pub(crate) fn array_len(
        &mut self,
        flexible: bool,
        min_item: usize,
        what: &'static str,
    ) -> Result<usize, RecordError> {
        let len: i64 = if flexible {
            self.uvarint(what)? as i64 - 1
        } else {
            i64::from(self.i32(what)?)
        };
        if len < 0 {
            return Err(RecordError::Invalid(what));
        }
        // Each item needs at least `min_item` bytes: refuse counts the buffer cannot hold.
        if (len as u64).saturating_mul(min_item as u64) > self.remaining() as u64 {
            return Err(RecordError::Truncated(what));
        }
        Ok(len as usize)
    }

    /// Skips a flexible struct's tagged fields.
    pub(crate) fn skip_tagged_fields(&mut self) -> Result<(), RecordError> {
        let count = self.uvarint("tagged fields")?;
        for _ in 0..count {
            self.uvarint("tag")?;
            let size = self.uvarint("tagged field size")?;
            let size = usize::try_from(size).map_err(|_| RecordError::Invalid("tagged field"))?;
            self.take(size, "tagged field")?;
        }
        Ok(())
    }
}

/// Decodes a record key.
pub fn decode_key(key: &[u8]) -> Result<RecordKey, RecordError> {
    let mut r = Reader::new(key);
    let version = r.i16("key version")?;
    match version {
        0 | 1 => Ok(RecordKey::OffsetCommit {
            group: r.string(false, "group")?,
            topic: r.string(false, "topic")?,
            partition: r.i32("partition")?,
        }),
        2 => Ok(RecordKey::GroupMetadata {
            group: r.string(false, "group")?,
        }),
        v if v > 2 => Ok(RecordKey::Other(v)),
        v => Err(RecordError::UnsupportedVersion {
            what: "key",
            version: v,
        }),
    }
}

/// Decodes an OffsetCommitValue of any version Kafka has defined (0-4).
pub fn decode_offset_commit_value(value: &[u8]) -> Result<OffsetCommitValue, RecordError> {
    let mut r = Reader::new(value);
    let version = r.i16("offset commit value version")?;
    if !(0..=4).contains(&version) {
        return Err(RecordError::UnsupportedVersion {
            what: "OffsetCommitValue",
            version,
        });
    }
    let flexible = version >= 4;
    let offset = r.i64("offset")?;
    let leader_epoch = if version >= 3 {
        r.i32("leader epoch")?
    } else {
        -1
    };
    let metadata = r.string(flexible, "metadata")?;
    let commit_timestamp = r.i64("commit timestamp")?;
    let expire_timestamp = if version == 1 {
        r.i64("expire timestamp")?
    } else {
        -1
    };
    if flexible {
        r.skip_tagged_fields()?;
    }
    Ok(OffsetCommitValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
        expire_timestamp,
    })
}

/// Decodes a GroupMetadataValue of any version Kafka has defined (0-4).
pub fn decode_group_metadata_value(value: &[u8]) -> Result<GroupMetadataValue, RecordError> {
    let mut r = Reader::new(value);
    let version = r.i16("group metadata value version")?;
    if !(0..=4).contains(&version) {
        return Err(RecordError::UnsupportedVersion {
            what: "GroupMetadataValue",
            version,
        });
    }
    let flexible = version >= 4;
    let protocol_type = r.string(flexible, "protocol type")?;
    let generation = r.i32("generation")?;
    let protocol = r.nullable_string(flexible, "protocol")?;
    let leader = r.nullable_string(flexible, "leader")?;
    let current_state_timestamp = if version >= 2 {
        r.i64("current state timestamp")?
    } else {
        -1
    };
    // The smallest member: four empty strings, a timeout and two empty byte arrays.
    let count = r.array_len(flexible, 4, "members")?;
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let member_id = r.string(flexible, "member id")?;
        let group_instance_id = if version >= 3 {
            r.nullable_string(flexible, "group instance id")?
        } else {
            None
        };
        let client_id = r.string(flexible, "client id")?;
        let client_host = r.string(flexible, "client host")?;
        let rebalance_timeout = if version >= 1 {
            r.i32("rebalance timeout")?
        } else {
            -1
        };
        let session_timeout = r.i32("session timeout")?;
        let subscription = r.bytes(flexible, "subscription")?;
        let assignment = r.bytes(flexible, "assignment")?;
        if flexible {
            r.skip_tagged_fields()?;
        }
        members.push(MemberMetadata {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout,
            session_timeout,
            subscription,
            assignment,
        });
    }
    if flexible {
        r.skip_tagged_fields()?;
    }
    Ok(GroupMetadataValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp,
        members,
    })
}

/// The topics of a consumer protocol subscription (ConsumerProtocolSubscription): every
/// version starts with the version and the topic list, which is all the coordinator needs
/// (Kafka reads it the same way, as version 0). `None` if the bytes are not a subscription.
pub fn subscription_topics(subscription: &[u8]) -> Option<Vec<String>> {
    let mut r = Reader::new(subscription);
    let _version = r.i16("subscription version").ok()?;
    let count = r.array_len(false, 2, "topics").ok()?;
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        topics.push(r.string(false, "topic").ok()?);
    }
    Some(topics)
}

/// The partitions of a consumer protocol assignment (ConsumerProtocolAssignment): every version
/// starts with the version and the topic partitions. `None` if the bytes are not an assignment.
pub fn assignment_partitions(assignment: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
    let mut r = Reader::new(assignment);
    let _version = r.i16("assignment version").ok()?;
    // The smallest topic: an empty name and an empty partition list.
    let count = r.array_len(false, 6, "topics").ok()?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let topic = r.string(false, "topic").ok()?;
        let n = r.array_len(false, 4, "partitions").ok()?;
        let mut parts = Vec::with_capacity(n);
        for _ in 0..n {
            parts.push(r.i32("partition").ok()?);
        }
        out.push((topic, parts));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_partitions_reads_the_consumer_protocol_prefix() {
        let mut s = BytesMut::new();
        s.put_i16(1);
        s.put_i32(1);
        put_string(&mut s, "t");
        s.put_i32(2);
        s.put_i32(0);
        s.put_i32(3);
        s.put_i32(-1); // user data
        assert_eq!(
            assignment_partitions(&s),
            Some(vec![("t".to_string(), vec![0, 3])])
        );
        assert_eq!(assignment_partitions(&[0, 1, 0x7f, 0xff, 0xff, 0xff]), None);
        assert_eq!(assignment_partitions(&[]), None);
    }

    #[test]
    fn offset_commit_round_trips_in_kafkas_layout() {
        let rec = CoordinatorRecord::OffsetCommit {
            group: "g".into(),
            topic: "t".into(),
            partition: 7,
            value: Some(OffsetCommitValue {
                offset: 42,
                leader_epoch: 3,
                metadata: "meta".into(),
                commit_timestamp: 1_700_000_000_000,
                expire_timestamp: -1,
            }),
        };
        let (k, v) = rec.encode();
        // OffsetCommitKey v1: version, "g", "t", partition.
        assert_eq!(&k[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 7][..]);
        let v = v.unwrap();
        // OffsetCommitValue v3: version, offset, leader epoch, metadata, commit timestamp.
        assert_eq!(&v[..2], &[0, 3]);
        assert_eq!(&v[2..10], &42i64.to_be_bytes());
        assert_eq!(&v[10..14], &3i32.to_be_bytes());
        assert_eq!(&v[14..20], &[0, 4, b'm', b'e', b't', b'a']);
        assert_eq!(v.len(), 28);
        assert_eq!(CoordinatorRecord::decode(&k, Some(&v)).unwrap(), Some(rec));
    }

    #[test]
    fn commits_with_expiry_use_version_1() {
        let value = OffsetCommitValue {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 5,
            expire_timestamp: 10,
        };
        let rec = CoordinatorRecord::OffsetCommit {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            value: Some(value.clone()),
        };
        let (_, v) = rec.encode();
        let v = v.unwrap();
        assert_eq!(&v[..2], &[0, 1]);
        assert_eq!(decode_offset_commit_value(&v).unwrap(), value);
    }

    #[test]
    fn group_metadata_round_trips_and_tombstones_decode() {
        let value = GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp: 99,
            members: vec![MemberMetadata {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout: 300_000,
                session_timeout: 10_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        let rec = CoordinatorRecord::GroupMetadata {
            group: "g".into(),
            value: Some(value),
        };
        let (k, v) = rec.encode();
        assert_eq!(&k[..], &[0, 2, 0, 1, b'g'][..]);
        assert_eq!(&v.as_ref().unwrap()[..2], &[0, 3]);
        assert_eq!(
            CoordinatorRecord::decode(&k, v.as_deref()).unwrap(),
            Some(rec)
        );
        let tomb = CoordinatorRecord::decode(&k, None).unwrap();
        assert_eq!(
            tomb,
            Some(CoordinatorRecord::GroupMetadata {
                group: "g".into(),
                value: None
            })
        );
    }

    #[test]
    fn flexible_values_and_other_record_kinds_are_read() {
        // OffsetCommitValue v4: compact metadata string and an empty tagged-field section.
        let mut v = BytesMut::new();
        v.put_i16(4);
        v.put_i64(9);
        v.put_i32(2);
        v.put_u8(3); // length 2 + 1
        v.put_slice(b"hi");
        v.put_i64(77);
        v.put_u8(1); // one tagged field
        v.put_u8(0); // tag 0
        v.put_u8(2); // two bytes
        v.put_slice(b"xx");
        let got = decode_offset_commit_value(&v).unwrap();
        assert_eq!(got.offset, 9);
        assert_eq!(got.leader_epoch, 2);
        assert_eq!(got.metadata, "hi");
        assert_eq!(got.commit_timestamp, 77);
        // A share group record (key version 10) is skipped, not an error.
        assert_eq!(
            CoordinatorRecord::decode(&[0, 10, 0, 1, b'g'], Some(b"whatever")).unwrap(),
            None
        );
    }

    #[test]
    fn hostile_lengths_are_refused_without_allocating() {
        let mut v = BytesMut::new();
        v.put_i16(3);
        v.put_i16(0); // protocol type ""
        v.put_i32(1);
        v.put_i16(-1);
        v.put_i16(-1);
        v.put_i64(0);
        v.put_i32(i32::MAX); // members
        assert!(decode_group_metadata_value(&v).is_err());
        assert!(decode_key(&[0, 1, 0x7f, 0xff]).is_err());
        assert!(decode_key(&[0xff, 0xff]).is_err());
        assert!(decode_offset_commit_value(&[0, 9]).is_err());
        assert_eq!(subscription_topics(&[0, 0, 0x7f, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn subscription_topics_reads_the_consumer_protocol_prefix() {
        let mut s = BytesMut::new();
        s.put_i16(3);
        s.put_i32(2);
        put_string(&mut s, "a");
        put_string(&mut s, "bb");
        s.put_i32(-1); // user data and later fields follow; they are not read
        assert_eq!(
            subscription_topics(&s),
            Some(vec!["a".to_string(), "bb".to_string()])
        );
    }
}
