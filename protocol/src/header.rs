//! Request header parsing.
//!
//! The first 8 bytes (api key, api version, correlation id) are read by hand:
//! kafka-protocol's `decode_request_header_from_buffer` rejects an unknown key
//! before reading the correlation id, and the broker needs that id to answer
//! or at least to log. The rest depends on the header version the API/version
//! pair implies: v1 adds a nullable `i16`-length client id, v2 adds a tagged
//! field section (flexible versions).

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::StrBytes;

use crate::error::HeaderError;
use crate::versions::SupportedApis;

/// A parsed request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    /// `None` when absent (header v0) or sent as null.
    pub client_id: Option<StrBytes>,
    /// 0, 1 or 2, from `ApiKey::request_header_version`.
    pub header_version: i16,
}

/// Parses the header at the start of `frame` (a frame payload without its
/// length prefix) and returns it with the body that follows, sharing `frame`'s
/// memory.
///
/// A known key is checked against `apis` before anything after the
/// correlation id is read: for an unsupported version the header layout itself
/// may be unknown, and the only thing the broker may do is answer (ApiVersions)
/// or close.
pub fn parse_request_header(
    frame: &Bytes,
    apis: &SupportedApis,
) -> Result<(RequestHeader, Bytes), HeaderError> {
    if frame.len() < 8 {
        return Err(HeaderError::TooShort { len: frame.len() });
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);

    let api_key = ApiKey::try_from(raw_key).map_err(|()| HeaderError::UnknownApiKey {
        api_key: raw_key,
        api_version,
        correlation_id,
    })?;
    if !apis.supports(api_key, api_version) {
        return Err(HeaderError::UnsupportedVersion {
            api_key,
            api_version,
            correlation_id,
            supported: apis.get(api_key).map(|r| (r.min, r.max)),
        });
    }

    let header_version = api_key.request_header_version(api_version);
    let malformed = |reason| HeaderError::Malformed {
        api_key,
        api_version,
        correlation_id,
        reason,
    };
    let mut pos = 8;
    let client_id = if header_version >= 1 {
        read_client_id(frame, &mut pos).map_err(malformed)?
    } else {
        None
    };
    if header_version >= 2 {
        skip_tagged_fields(frame, &mut pos).map_err(malformed)?;
    }
    let header = RequestHeader {
        api_key,
        api_version,
        correlation_id,
        client_id,
        header_version,
    };
    Ok((header, frame.slice(pos..)))
}

/// Nullable string with an `i16` length. Kafka decodes the client id
/// leniently (invalid UTF-8 becomes replacement characters), so we do too.
fn read_client_id(frame: &Bytes, pos: &mut usize) -> Result<Option<StrBytes>, &'static str> {
    let len_bytes = frame
        .get(*pos..*pos + 2)
        .ok_or("truncated client id length")?;
    let len = i16::from_be_bytes([len_bytes[0], len_bytes[1]]);
    *pos += 2;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| "negative client id length")?;
    if frame.len() - *pos < len {
        return Err("truncated client id");
    }
    let raw = frame.slice(*pos..*pos + len);
    *pos += len;
    let id = match StrBytes::from_utf8(raw) {
        Ok(s) => s,
        Err(_) => {
            StrBytes::from_string(String::from_utf8_lossy(&frame[*pos - len..*pos]).into_owned())
        }
    };
    Ok(Some(id))
}

/// Request headers define no tagged fields; skip whatever a client sends,
/// checking that each one fits.
fn skip_tagged_fields(frame: &Bytes, pos: &mut usize) -> Result<(), &'static str> {
    let count = read_uvarint(frame, pos)?;
    for _ in 0..count {
        let _tag = read_uvarint(frame, pos)?;
        let size = read_uvarint(frame, pos)? as usize;
        if frame.len() - *pos < size {
            return Err("truncated tagged field");
        }
        *pos += size;
    }
    Ok(())
}

/// Unsigned varint of at most five bytes, rejecting anything that overflows 32
/// bits (Kafka does the same).
fn read_uvarint(frame: &Bytes, pos: &mut usize) -> Result<u32, &'static str> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let b = *frame.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        if i == 4 && b > 0x0f {
            return Err("varint overflows 32 bits");
        }
        value |= u32::from(b & 0x7f) << (i * 7);
        if b < 0x80 {
            return Ok(value);
        }
    }
    Err("varint overflows 32 bits")
}
