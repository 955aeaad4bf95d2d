//! Kafka wire protocol for Fjord: everything between TCP bytes and typed
//! kafka-protocol messages (issue #4).
//!
//! A connection loop looks like:
//! 1. [`frame::read_frame`] one size-prefixed frame (bounded by
//!    `socket.request.max.bytes`);
//! 2. [`decode::parse_request`] it against the broker's [`versions::SupportedApis`]
//!    (header, then a bounded body decode);
//! 3. on error, follow [`error::ProtocolError::disposition`]: answer an
//!    unsupported ApiVersions version with
//!    [`versions::encode_unsupported_api_versions`], close otherwise;
//! 4. answer with [`encode::encode_response`] / [`encode::encode_response_kind`]
//!    and [`frame::write_frame`].

pub mod decode;
pub mod encode;
pub mod error;
pub mod frame;
pub mod header;
pub mod schema;
pub mod versions;

pub use decode::{DecodedRequest, decode_request, decode_request_as, parse_request};
pub use encode::{encode_response, encode_response_kind};
pub use error::{DecodeError, Disposition, EncodeError, FrameError, HeaderError, ProtocolError};
pub use frame::{DEFAULT_MAX_REQUEST_BYTES, read_frame, write_frame, write_frame_parts};
pub use header::{RequestHeader, parse_request_header};
pub use versions::{
    ApiRange, KAFKA_41_BROKER_APIS, SupportedApis, api_versions_response,
    encode_unsupported_api_versions, unsupported_api_versions_response,
};

/// Re-exported so users name the exact kafka-protocol this crate decodes with.
pub use kafka_protocol;
