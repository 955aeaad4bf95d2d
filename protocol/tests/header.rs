//! Request headers: round trips against kafka-protocol's encoder for every
//! supported API/version, and the typed failures.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use fjord_protocol::versions::codec_range;
use fjord_protocol::{
    Disposition, HeaderError, ProtocolError, SupportedApis, parse_request_header,
};
use kafka_protocol::messages::{ApiKey, RequestHeader as KpHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};

#[test]
fn every_supported_key_and_version_round_trips() {
    // Everything kafka-protocol can serve, not only the Kafka 4.1 broker set.
    let all = SupportedApis::new(ApiKey::iter().map(|k| {
        let (min, max) = codec_range(k);
        fjord_protocol::ApiRange {
            api_key: k,
            min,
            max,
        }
    }));
    let mut checked = 0;
    for range in all.ranges() {
        for version in range.min..=range.max {
            let header_version = range.api_key.request_header_version(version);
            for client_id in [Some("client-1"), Some(""), None] {
                let body = b"\x01\x02body";
                let payload =
                    common::request_payload(range.api_key, version, 0x0102_0304, client_id, body);
                let (h, rest) = parse_request_header(&payload, &all).unwrap();
                assert_eq!(h.api_key, range.api_key);
                assert_eq!(h.api_version, version);
                assert_eq!(h.correlation_id, 0x0102_0304);
                assert_eq!(h.header_version, header_version);
                let want = if header_version >= 1 { client_id } else { None };
                assert_eq!(
                    h.client_id.as_deref(),
                    want,
                    "{:?} v{version}",
                    range.api_key
                );
                assert_eq!(rest.as_ref(), body);
                checked += 1;
            }
            if header_version >= 2 {
                // Unknown tagged fields in the header are skipped.
                let header = KpHeader::default()
                    .with_request_api_key(range.api_key as i16)
                    .with_request_api_version(version)
                    .with_correlation_id(5)
                    .with_client_id(Some(StrBytes::from_static_str("c")))
                    .with_unknown_tagged_field(3, Bytes::from_static(b"xyz"))
                    .with_unknown_tagged_field(9, Bytes::new());
                let mut out = BytesMut::new();
                header.encode(&mut out, 2).unwrap();
                out.put_u8(0xAB);
                let payload = out.freeze();
                let (h, rest) = parse_request_header(&payload, &all).unwrap();
                assert_eq!(h.client_id.as_deref(), Some("c"));
                assert_eq!(rest.as_ref(), &[0xAB]);
            }
        }
    }
    assert!(checked > 800, "{checked}");
}

fn raw_header(key: i16, version: i16, correlation_id: i32) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i16(key);
    b.put_i16(version);
    b.put_i32(correlation_id);
    b
}

#[test]
fn unknown_api_key_carries_the_correlation_id() {
    let apis = SupportedApis::kafka_41_broker();
    for key in [9999i16, -1, 93, 4] {
        let payload = raw_header(key, 3, 77).freeze();
        let err = parse_request_header(&payload, &apis).unwrap_err();
        assert_eq!(
            err,
            HeaderError::UnknownApiKey {
                api_key: key,
                api_version: 3,
                correlation_id: 77
            }
        );
        assert_eq!(err.correlation_id(), Some(77));
        assert_eq!(ProtocolError::from(err).disposition(), Disposition::Close);
    }
}

#[test]
fn unsupported_versions_are_typed_with_the_id() {
    let apis = SupportedApis::kafka_41_broker();
    // Metadata v14 does not exist; Produce v2 was removed in Kafka 4.0.
    for (key, version) in [
        (ApiKey::Metadata, 14),
        (ApiKey::Produce, 2),
        (ApiKey::Fetch, -1),
    ] {
        let payload = raw_header(key as i16, version, 12).freeze();
        let err = parse_request_header(&payload, &apis).unwrap_err();
        match &err {
            HeaderError::UnsupportedVersion {
                api_key,
                api_version,
                correlation_id: 12,
                supported: Some(_),
            } => {
                assert_eq!((*api_key, *api_version), (key, version));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(err.disposition(), Disposition::Close);
    }
    // ApiVersions is answered, not closed.
    let payload = raw_header(ApiKey::ApiVersions as i16, 5, 42).freeze();
    let err = parse_request_header(&payload, &apis).unwrap_err();
    assert_eq!(
        err.disposition(),
        Disposition::AnswerUnsupportedApiVersions { correlation_id: 42 }
    );
}

#[test]
fn known_api_not_served_is_unsupported() {
    let apis = SupportedApis::new([fjord_protocol::ApiRange {
        api_key: ApiKey::ApiVersions,
        min: 0,
        max: 4,
    }]);
    // Vote is controller-only and was not passed in.
    let payload = raw_header(ApiKey::Vote as i16, 0, 1).freeze();
    match parse_request_header(&payload, &apis).unwrap_err() {
        HeaderError::UnsupportedVersion {
            supported: None, ..
        } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn short_and_malformed_headers() {
    let apis = SupportedApis::kafka_41_broker();
    for len in 0..8 {
        let payload = Bytes::from(vec![0u8; len]);
        assert_eq!(
            parse_request_header(&payload, &apis).unwrap_err(),
            HeaderError::TooShort { len }
        );
    }
    let malformed = |payload: Bytes| match parse_request_header(&payload, &apis).unwrap_err() {
        e @ HeaderError::Malformed {
            correlation_id: 9, ..
        } => {
            assert_eq!(e.disposition(), Disposition::Close);
        }
        other => panic!("{other:?}"),
    };
    // Metadata v1 uses header v1: client id length missing, too long, negative.
    malformed(raw_header(ApiKey::Metadata as i16, 1, 9).freeze());
    let mut b = raw_header(ApiKey::Metadata as i16, 1, 9);
    b.put_u8(0);
    malformed(b.freeze());
    let mut b = raw_header(ApiKey::Metadata as i16, 1, 9);
    b.put_i16(10);
    b.put_slice(b"short");
    malformed(b.freeze());
    let mut b = raw_header(ApiKey::Metadata as i16, 1, 9);
    b.put_i16(-2);
    malformed(b.freeze());
    // Metadata v12 uses header v2: tagged section missing, lying, overflowing.
    let mut b = raw_header(ApiKey::Metadata as i16, 12, 9);
    b.put_i16(-1);
    malformed(b.clone().freeze());
    let mut lying = b.clone();
    lying.put_slice(&[1, 0, 50, 1, 2]);
    malformed(lying.freeze());
    let mut overflow = b;
    overflow.put_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    malformed(overflow.freeze());
}

#[test]
fn invalid_utf8_client_id_is_accepted_leniently() {
    let apis = SupportedApis::kafka_41_broker();
    let mut b = raw_header(ApiKey::Metadata as i16, 1, 3);
    b.put_i16(3);
    b.put_slice(&[b'a', 0xff, b'b']);
    let (h, rest) = parse_request_header(&b.freeze(), &apis).unwrap();
    assert_eq!(h.client_id.as_deref(), Some("a\u{fffd}b"));
    assert!(rest.is_empty());
}
