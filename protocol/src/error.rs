//! Error types for framing, header parsing, body decoding and encoding, and the
//! one decision the broker needs from them: answer or close.

use kafka_protocol::messages::ApiKey;

use crate::schema::SchemaError;

/// Kafka's UNSUPPORTED_VERSION error code.
pub const UNSUPPORTED_VERSION: i16 = 35;

/// Reading one size-prefixed frame failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("negative frame length {0}")]
    NegativeLength(i32),
    #[error("frame of {size} bytes exceeds the limit of {max} bytes (socket.request.max.bytes)")]
    TooLarge { size: usize, max: usize },
    /// The peer closed the connection part-way through a frame (including
    /// part-way through its length prefix).
    #[error("connection closed after {got} of {expected} bytes of a frame")]
    Truncated { expected: usize, got: usize },
    #[error("i/o error reading a frame: {0}")]
    Io(#[from] std::io::Error),
}

/// The request header could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer than the 8 bytes that carry key, version and correlation id.
    #[error("request of {len} bytes is too short for a request header")]
    TooShort { len: usize },
    /// An API key kafka-protocol does not know.
    #[error("unknown api key {api_key} v{api_version} (correlation id {correlation_id})")]
    UnknownApiKey {
        api_key: i16,
        api_version: i16,
        correlation_id: i32,
    },
    /// A known API that this broker does not serve, or a version outside the
    /// range it advertises (`supported` is that range, `None` if not served).
    #[error(
        "{api_key:?} v{api_version} is not supported (supported: {supported:?}, correlation id {correlation_id})"
    )]
    UnsupportedVersion {
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
        supported: Option<(i16, i16)>,
    },
    /// The rest of the header (client id, tagged fields) is malformed.
    #[error(
        "malformed {api_key:?} v{api_version} request header (correlation id {correlation_id}): {reason}"
    )]
    Malformed {
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
        reason: &'static str,
    },
}

/// The request body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("kafka-protocol has no api key {0}")]
    UnknownApi(i16),
    #[error("kafka-protocol cannot decode {api_key:?} v{version}")]
    UnsupportedVersion { api_key: ApiKey, version: i16 },
    /// The allocation-free shape check rejected the body (hostile counts,
    /// truncation, trailing bytes, ...).
    #[error("{api_key:?} v{version} body rejected: {source}")]
    Shape {
        api_key: ApiKey,
        version: i16,
        #[source]
        source: SchemaError,
    },
    /// kafka-protocol itself refused the body (invalid UTF-8, bad tag, ...).
    #[error("{api_key:?} v{version} body failed to decode: {message}")]
    Invalid {
        api_key: ApiKey,
        version: i16,
        message: String,
    },
    /// The schema walk and kafka-protocol disagree on where the body ends.
    #[error("{api_key:?} v{version}: decoder left {remaining} of the body's bytes unread")]
    LengthMismatch {
        api_key: ApiKey,
        version: i16,
        remaining: usize,
    },
    /// kafka-protocol panicked; caught so one connection cannot take the
    /// broker down.
    #[error("{api_key:?} v{version} decoder panicked")]
    Panicked { api_key: ApiKey, version: i16 },
}

/// A response could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("failed to encode response v{version}: {message}")]
    Encode { version: i16, message: String },
    #[error("response of {0} bytes does not fit a frame")]
    TooLarge(usize),
}

/// Any failure between TCP bytes and a typed request.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// What the broker should do after a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Answer with a v0 ApiVersionsResponse carrying UNSUPPORTED_VERSION and
    /// the supported ranges (see [`crate::versions::encode_unsupported_api_versions`]),
    /// then keep the connection: clients retry with a version they find there.
    AnswerUnsupportedApiVersions { correlation_id: i32 },
    /// Close the connection. Kafka does the same for oversized or malformed
    /// frames, unknown keys, unsupported versions of other APIs and bodies it
    /// cannot parse: there is no safe way to answer in the client's format.
    Close,
}

impl ProtocolError {
    pub fn disposition(&self) -> Disposition {
        match self {
            ProtocolError::Header(h) => h.disposition(),
            ProtocolError::Frame(_) | ProtocolError::Decode(_) => Disposition::Close,
        }
    }

    /// The correlation id, when enough of the request was read to know it.
    pub fn correlation_id(&self) -> Option<i32> {
        match self {
            ProtocolError::Header(h) => h.correlation_id(),
            _ => None,
        }
    }
}

impl HeaderError {
    pub fn disposition(&self) -> Disposition {
        match *self {
            HeaderError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            } => Disposition::AnswerUnsupportedApiVersions { correlation_id },
            _ => Disposition::Close,
        }
    }

    pub fn correlation_id(&self) -> Option<i32> {
        match *self {
            HeaderError::TooShort { .. } => None,
            HeaderError::UnknownApiKey { correlation_id, .. }
            | HeaderError::UnsupportedVersion { correlation_id, .. }
            | HeaderError::Malformed { correlation_id, .. } => Some(correlation_id),
        }
    }
}
