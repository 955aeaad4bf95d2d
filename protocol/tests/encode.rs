//! Response frames carry the right header version and length.

use bytes::{Buf, Bytes};
use fjord_protocol::{encode_response, encode_response_kind};
use kafka_protocol::messages::{ApiKey, MetadataResponse, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Decodable;

fn split(frame: &Bytes, header_version: i16) -> (ResponseHeader, Bytes) {
    let mut buf = frame.clone();
    assert_eq!(buf.get_i32() as usize, buf.len());
    let h = ResponseHeader::decode(&mut buf, header_version).unwrap();
    (h, buf)
}

#[test]
fn metadata_responses_use_the_header_version_of_their_api_version() {
    let resp = MetadataResponse::default().with_throttle_time_ms(3);
    for version in 0..=13i16 {
        let hv = ApiKey::Metadata.response_header_version(version);
        assert_eq!(hv, if version >= 9 { 1 } else { 0 });
        for frame in [
            encode_response(version, -7, &resp).unwrap(),
            encode_response_kind(version, -7, &ResponseKind::Metadata(resp.clone())).unwrap(),
        ] {
            let (h, mut body) = split(&frame, hv);
            assert_eq!(h.correlation_id, -7);
            let back = MetadataResponse::decode(&mut body, version).unwrap();
            assert!(body.is_empty(), "v{version}");
            if version >= 3 {
                assert_eq!(back.throttle_time_ms, 3);
            }
        }
    }
}

#[test]
fn api_versions_responses_always_use_header_v0() {
    for version in 0..=4i16 {
        assert_eq!(ApiKey::ApiVersions.response_header_version(version), 0);
        let frame =
            encode_response_kind(version, 1, &ResponseKind::ApiVersions(Default::default()))
                .unwrap();
        // Header v0 = 4 bytes of correlation id, then the body.
        assert_eq!(&frame[4..8], &1i32.to_be_bytes());
    }
}

#[test]
fn fields_unknown_to_a_version_are_an_error_not_a_panic() {
    // include_cluster_authorized_operations exists only in Metadata v8-v10
    // of the request; for responses use cluster_authorized_operations (v8-10).
    let resp = MetadataResponse::default().with_cluster_authorized_operations(5);
    assert!(encode_response(11, 0, &resp).is_err());
}
