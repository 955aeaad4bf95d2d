//! openraft type configuration, the opaque payload type and the one bincode codec used for
//! everything this layer puts on disk or on the wire.

use std::fmt;
use std::io::Cursor;

use bincode::Options;
use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

openraft::declare_raft_types!(
    /// Raft types of the metadata quorum: opaque byte payloads, u64 voter ids.
    pub TypeConfig:
        D = Payload,
        R = (),
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Vote = openraft::Vote<u64>;
pub type StoredMembership = openraft::StoredMembership<u64, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<u64, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<u64>;

/// An entry payload: bytes the layer never interprets.
///
/// A newtype rather than `Bytes` itself because `bytes` is built without its serde feature here,
/// and because serializing as a byte string (not a sequence of u8) keeps bincode's encoding a
/// length prefix plus one copy.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Payload(pub Bytes);

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(PayloadVisitor)
    }
}

struct PayloadVisitor;

impl<'de> Visitor<'de> for PayloadVisitor {
    type Value = Payload;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Payload, E> {
        Ok(Payload(Bytes::copy_from_slice(v)))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
        Ok(Payload(Bytes::from(v)))
    }

    // Self-describing formats may hand a byte string over as a sequence; never trust its hint.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Payload, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(Payload(Bytes::from(out)))
    }
}

/// The bincode configuration for everything: fixed-width integers, no trailing bytes, and a size
/// limit so a corrupt or hostile length prefix can never make the decoder allocate more than the
/// bytes it was given.
fn options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .reject_trailing_bytes()
        .with_limit(limit)
}

/// Encodes `value`, failing if the encoding would exceed `limit` bytes.
pub(crate) fn encode<T: Serialize>(value: &T, limit: usize) -> Result<Vec<u8>, bincode::Error> {
    options(limit as u64).serialize(value)
}

/// Decodes exactly `bytes` (no trailing garbage), bounded by their length.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    options(bytes.len() as u64).deserialize(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_as_byte_string() {
        let p = Payload(Bytes::from_static(b"hello"));
        let enc = encode(&p, 1024).unwrap();
        // u64 length prefix + the bytes themselves.
        assert_eq!(enc.len(), 8 + 5);
        let back: Payload = decode(&enc).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn decode_rejects_lying_length_prefix() {
        let mut enc = encode(&Payload(Bytes::from_static(b"abc")), 1024).unwrap();
        enc[0..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(decode::<Payload>(&enc).is_err());
    }

    #[test]
    fn encode_respects_limit() {
        let p = Payload(Bytes::from(vec![0u8; 100]));
        assert!(encode(&p, 50).is_err());
    }
}
