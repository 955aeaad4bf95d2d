//! Response frames: length prefix, response header, body, in one buffer.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ResponseKind;
use kafka_protocol::protocol::{Encodable, HeaderVersion};

use crate::error::EncodeError;

/// Encodes a typed response into a complete frame.
///
/// The header version comes from the response type (`ApiKey::response_header_version`
/// gives the same answer); ApiVersions responses always use header v0 so that a
/// client that sent a version we do not know can still read the answer.
pub fn encode_response<R>(
    version: i16,
    correlation_id: i32,
    response: &R,
) -> Result<Bytes, EncodeError>
where
    R: Encodable + HeaderVersion,
{
    let header_version = R::header_version(version);
    // compute_size lets the frame be allocated once; if it fails, encode will
    // fail the same way and report it.
    let hint = response.compute_size(version).unwrap_or(0);
    encode_frame(version, correlation_id, header_version, hint, |buf| {
        response.encode(buf, version).map_err(|e| format!("{e:#}"))
    })
}

/// Encodes a [`ResponseKind`] into a complete frame.
pub fn encode_response_kind(
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    let header_version = response.header_version(version);
    encode_frame(version, correlation_id, header_version, 0, |buf| {
        response.encode(buf, version).map_err(|e| format!("{e:#}"))
    })
}

fn encode_frame(
    version: i16,
    correlation_id: i32,
    header_version: i16,
    body_hint: usize,
    encode_body: impl FnOnce(&mut BytesMut) -> Result<(), String>,
) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::with_capacity(4 + 5 + body_hint.max(64));
    buf.put_i32(0); // length, patched below
    buf.put_i32(correlation_id);
    if header_version >= 1 {
        // Response header v1: no tagged fields.
        buf.put_u8(0);
    }
    encode_body(&mut buf).map_err(|message| EncodeError::Encode { version, message })?;
    let len = buf.len() - 4;
    let len32 = i32::try_from(len).map_err(|_| EncodeError::TooLarge(len))?;
    buf[..4].copy_from_slice(&len32.to_be_bytes());
    Ok(buf.freeze())
}
