//! Bounded request body decoding.
//!
//! Order of defences, each covering what the previous cannot:
//! 1. [`crate::schema::validate`] walks the body without allocating and
//!    rejects any array count not backed by bytes (kafka-protocol would
//!    `Vec::with_capacity` it and abort the process) and truncation, and finds
//!    where the body ends. This is what makes decoding hostile input safe; see
//!    `schema`. Bytes after the body are ignored, as Kafka ignores them
//!    (librdkafka 2.x sends three after a Metadata v13 body).
//! 2. kafka-protocol decodes the validated body; its own errors (bad UTF-8,
//!    a tag not valid in this version) are returned as [`DecodeError::Invalid`].
//! 3. `catch_unwind` turns any panic inside kafka-protocol into
//!    [`DecodeError::Panicked`]. It cannot catch an allocation failure (that
//!    aborts), which is why step 1 exists.
//! 4. The decoder must have consumed exactly the body the walk found; anything
//!    else means the schema tables and kafka-protocol disagree.
//!
//! Produce's `records` field stays the raw `Bytes` slice of the frame: the
//! request decoders never parse record batches.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, RequestKind};
use kafka_protocol::protocol::{Decodable, Request};

use crate::error::{DecodeError, ProtocolError};
use crate::header::{RequestHeader, parse_request_header};
use crate::schema;
use crate::versions::SupportedApis;

/// A decoded request: header plus typed body.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRequest {
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// Header + body decoding of one frame payload (as returned by
/// [`crate::frame::read_frame`]).
pub fn parse_request(frame: &Bytes, apis: &SupportedApis) -> Result<DecodedRequest, ProtocolError> {
    let (header, body) = parse_request_header(frame, apis)?;
    let body = decode_request(header.api_key, header.api_version, body)?;
    Ok(DecodedRequest { header, body })
}

/// Decodes a request body of `api_key`/`version` into a [`RequestKind`].
pub fn decode_request(
    api_key: ApiKey,
    version: i16,
    body: Bytes,
) -> Result<RequestKind, DecodeError> {
    decode_with(api_key, version, body, |buf| {
        RequestKind::decode(api_key, buf, version)
    })
}

/// Decodes a request body into its typed message, e.g.
/// `decode_request_as::<MetadataRequest>(12, body)`.
pub fn decode_request_as<R>(version: i16, body: Bytes) -> Result<R, DecodeError>
where
    R: Request + Decodable,
{
    let api_key = ApiKey::try_from(R::KEY).map_err(|()| DecodeError::UnknownApi(R::KEY))?;
    decode_with(api_key, version, body, |buf| R::decode(buf, version))
}

// Generic over the error so kafka-protocol's `anyhow::Error` need not be named.
fn decode_with<T, E: std::fmt::Display>(
    api_key: ApiKey,
    version: i16,
    body: Bytes,
    decode: impl FnOnce(&mut Bytes) -> Result<T, E>,
) -> Result<T, DecodeError> {
    match schema::request_versions(api_key as i16) {
        Some((lo, hi)) if lo <= version && version <= hi => {}
        _ => return Err(DecodeError::UnsupportedVersion { api_key, version }),
    }
    let len =
        schema::validate(api_key as i16, version, &body).map_err(|source| DecodeError::Shape {
            api_key,
            version,
            source,
        })?;
    if len < body.len() {
        tracing::debug!(
            ?api_key,
            version,
            trailing = body.len() - len,
            "ignoring bytes after the request body"
        );
    }
    let mut buf = body.slice(..len);
    let decoded = catch_unwind(AssertUnwindSafe(|| decode(&mut buf)))
        .map_err(|_| {
            tracing::warn!(
                ?api_key,
                version,
                "kafka-protocol panicked decoding a request body"
            );
            DecodeError::Panicked { api_key, version }
        })?
        .map_err(|e| DecodeError::Invalid {
            api_key,
            version,
            message: format!("{e:#}"),
        })?;
    if buf.has_remaining() {
        return Err(DecodeError::LengthMismatch {
            api_key,
            version,
            remaining: buf.remaining(),
        });
    }
    Ok(decoded)
}
