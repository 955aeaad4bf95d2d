//! ApiVersions: answers for v0..v4 and the v0 fallback for versions we do not
//! support.

mod common;

use bytes::{Buf, Bytes};
use fjord_protocol::versions::codec_range;
use fjord_protocol::{
    ApiRange, Disposition, KAFKA_41_BROKER_APIS, ProtocolError, SupportedApis,
    api_versions_response, encode_response, encode_unsupported_api_versions, parse_request,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestKind, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

/// Splits a response frame into (correlation id, body), checking the length
/// prefix and reading the header at `header_version`.
fn open_frame(frame: &Bytes, header_version: i16) -> (i32, Bytes) {
    let mut buf = frame.clone();
    let len = buf.get_i32();
    assert_eq!(len as usize, buf.len(), "length prefix");
    let header = ResponseHeader::decode(&mut buf, header_version).unwrap();
    (header.correlation_id, buf)
}

#[test]
fn kafka_41_table_within_kafka_protocol() {
    let mut last = -1i16;
    for r in KAFKA_41_BROKER_APIS {
        let (lo, hi) = codec_range(r.api_key);
        assert!(
            lo <= r.min && r.max <= hi && r.min <= r.max,
            "{r:?} outside {lo}..={hi}"
        );
        assert!(r.api_key as i16 > last, "table not sorted/unique at {r:?}");
        last = r.api_key as i16;
    }
    // Nothing is clamped away when building the broker table from it.
    assert_eq!(
        SupportedApis::kafka_41_broker().ranges(),
        KAFKA_41_BROKER_APIS
    );
    // The versions old clients send are there (kafkajs 2.2.4: Produce v7,
    // Fetch v11, Metadata v6).
    let apis = SupportedApis::kafka_41_broker();
    assert!(apis.supports(ApiKey::Produce, 7));
    assert!(apis.supports(ApiKey::Fetch, 11));
    assert!(apis.supports(ApiKey::Metadata, 6));
    // Controller-only APIs are not part of it.
    assert!(apis.get(ApiKey::Vote).is_none());
    assert!(apis.get(ApiKey::BrokerHeartbeat).is_none());
}

#[test]
fn supported_apis_clamps_to_what_kafka_protocol_handles() {
    let apis = SupportedApis::new([
        ApiRange {
            api_key: ApiKey::Metadata,
            min: -5,
            max: 99,
        },
        ApiRange {
            api_key: ApiKey::OffsetCommit,
            min: 0,
            max: 10,
        },
        ApiRange {
            api_key: ApiKey::Produce,
            min: 0,
            max: 1,
        },
        ApiRange {
            api_key: ApiKey::Fetch,
            min: 4,
            max: 4,
        },
        ApiRange {
            api_key: ApiKey::Fetch,
            min: 5,
            max: 6,
        },
    ]);
    assert_eq!(
        apis.ranges(),
        &[
            // Produce 0-1 is below what kafka-protocol decodes: dropped.
            ApiRange {
                api_key: ApiKey::Fetch,
                min: 5,
                max: 6
            },
            ApiRange {
                api_key: ApiKey::Metadata,
                min: 0,
                max: 13
            },
            // The request schema stops at 9 even though the response has 10.
            ApiRange {
                api_key: ApiKey::OffsetCommit,
                min: 2,
                max: 9
            },
        ]
    );
}

#[test]
fn api_versions_requests_v0_to_v4_are_answered_in_kind() {
    let apis = SupportedApis::kafka_41_broker();
    for version in 0..=4i16 {
        let mut req = ApiVersionsRequest::default();
        if version >= 3 {
            req = req
                .with_client_software_name(StrBytes::from_static_str("fjord-test"))
                .with_client_software_version(StrBytes::from_static_str("1.0"));
        }
        let payload = common::request_payload(
            ApiKey::ApiVersions,
            version,
            100 + i32::from(version),
            Some("c"),
            &common::body_of(&req, version),
        );
        let decoded = parse_request(&payload, &apis).unwrap();
        assert_eq!(decoded.header.api_version, version);
        let RequestKind::ApiVersions(got) = decoded.body else {
            panic!("not ApiVersions")
        };
        assert_eq!(got, req);

        let resp =
            api_versions_response(&apis).with_throttle_time_ms(if version >= 1 { 7 } else { 0 });
        let frame = encode_response(version, decoded.header.correlation_id, &resp).unwrap();
        // ApiVersions responses always use header v0.
        let (cid, mut body) = open_frame(&frame, 0);
        assert_eq!(cid, 100 + i32::from(version));
        let back = ApiVersionsResponse::decode(&mut body, version).unwrap();
        assert!(body.is_empty());
        assert_eq!(back.error_code, 0);
        let listed: Vec<(i16, i16, i16)> = back
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        let want: Vec<(i16, i16, i16)> = apis
            .ranges()
            .iter()
            .map(|r| (r.api_key as i16, r.min, r.max))
            .collect();
        assert_eq!(listed, want);
        if version >= 1 {
            assert_eq!(back.throttle_time_ms, 7);
        }
    }
}

#[test]
fn unsupported_api_versions_version_gets_a_v0_error_with_ranges() {
    let apis = SupportedApis::kafka_41_broker();
    for version in [5i16, 127, i16::MAX, -1] {
        // A future client: its body layout is unknown, so send junk after the
        // header; it must not matter.
        let mut payload =
            common::request_payload(ApiKey::ApiVersions, 4, 4242, Some("future"), b"\xde\xad");
        // Patch the version field (bytes 2..4) to the unsupported one.
        let mut raw = payload.to_vec();
        raw[2..4].copy_from_slice(&version.to_be_bytes());
        payload = Bytes::from(raw);

        let err = parse_request(&payload, &apis).unwrap_err();
        assert!(matches!(err, ProtocolError::Header(_)));
        let Disposition::AnswerUnsupportedApiVersions { correlation_id } = err.disposition() else {
            panic!("{err:?} should be answered")
        };
        assert_eq!(correlation_id, 4242);

        let frame = encode_unsupported_api_versions(correlation_id, &apis).unwrap();
        // Header v0 is just the correlation id; the body is v0: error code,
        // then the array. Nothing else (no throttle time, no tagged fields).
        let (cid, body) = open_frame(&frame, 0);
        assert_eq!(cid, 4242);
        assert_eq!(&body[..2], &35i16.to_be_bytes());
        assert_eq!(&body[2..6], &(apis.ranges().len() as i32).to_be_bytes());
        assert_eq!(body.len(), 2 + 4 + 6 * apis.ranges().len());
        let back = ApiVersionsResponse::decode(&mut body.clone(), 0).unwrap();
        assert_eq!(back.error_code, 35);
        let av = back
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::ApiVersions as i16)
            .unwrap();
        assert_eq!((av.min_version, av.max_version), (0, 4));
        assert_eq!(back.api_keys.len(), apis.ranges().len());
    }
}
