//! Helpers shared by the integration tests (included with `mod common;`).
#![allow(dead_code)]

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};

/// A frame payload (no length prefix): kafka-protocol's own header encoding
/// followed by `body`.
pub fn request_payload(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: Option<&'static str>,
    body: &[u8],
) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(client_id.map(StrBytes::from_static_str));
    let mut out = BytesMut::new();
    header
        .encode(&mut out, key.request_header_version(version))
        .unwrap();
    out.put_slice(body);
    out.freeze()
}

/// Encodes a typed request body with kafka-protocol.
pub fn body_of<T: Encodable>(msg: &T, version: i16) -> Bytes {
    let mut out = BytesMut::new();
    msg.encode(&mut out, version).unwrap();
    out.freeze()
}

/// Adds the 4-byte length prefix.
pub fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}
