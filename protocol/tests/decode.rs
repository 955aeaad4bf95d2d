//! Body decoding of hostile and malformed input, and the promises the broker
//! relies on (raw Produce records, exact consumption).

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use fjord_protocol::schema::SchemaError;
use fjord_protocol::{
    DecodeError, Disposition, ProtocolError, SupportedApis, decode_request, decode_request_as,
    parse_request,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, MetadataRequest, ProduceRequest, RequestKind, TopicName};
use kafka_protocol::protocol::StrBytes;

/// The proof for the `Vec::with_capacity` abort: a Metadata request claiming
/// 0x7fffffff topics must come back as an error. Without the shape check this
/// test process would abort on the allocation.
#[test]
fn metadata_with_hostile_topic_count_is_an_error_not_an_abort() {
    // v0..v8: i32 count.
    for version in [0i16, 1, 4, 8] {
        let mut body = BytesMut::new();
        body.put_i32(0x7fff_ffff);
        body.put_slice(&[0, 1, b'a']);
        match decode_request(ApiKey::Metadata, version, body.freeze()) {
            Err(DecodeError::Shape {
                source:
                    SchemaError::ArrayCountTooLarge {
                        count: 0x7fff_ffff, ..
                    },
                ..
            }) => {}
            other => panic!("v{version}: {other:?}"),
        }
    }
    // v9+: compact count (varint of count + 1) of 0xfffffffe elements.
    let mut body = BytesMut::new();
    body.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    body.put_slice(&[0u8; 32]);
    assert!(matches!(
        decode_request(ApiKey::Metadata, 12, body.freeze()),
        Err(DecodeError::Shape {
            source: SchemaError::ArrayCountTooLarge { .. },
            ..
        })
    ));
    // The same through the whole request path, and the broker closes.
    let apis = SupportedApis::kafka_41_broker();
    let mut body = BytesMut::new();
    body.put_i32(0x7fff_ffff);
    let payload = common::request_payload(ApiKey::Metadata, 4, 1, Some("x"), &body);
    let err = parse_request(&payload, &apis).unwrap_err();
    assert!(matches!(err, ProtocolError::Decode(_)));
    assert_eq!(err.disposition(), Disposition::Close);
}

/// Hostile counts nested below valid outer structure, and in a known tagged
/// field (Fetch v15+ ReplicaState is a tagged struct; Fetch v17 partitions).
#[test]
fn nested_hostile_counts_are_errors() {
    // Produce v7: transactional id null, acks, timeout, 1 topic "t", then a
    // partition count of i32::MAX.
    let mut body = BytesMut::new();
    body.put_i16(-1);
    body.put_i16(1);
    body.put_i32(1000);
    body.put_i32(1);
    body.put_i16(1);
    body.put_u8(b't');
    body.put_i32(i32::MAX);
    body.put_i32(0);
    assert!(matches!(
        decode_request(ApiKey::Produce, 7, body.freeze()),
        Err(DecodeError::Shape {
            source: SchemaError::ArrayCountTooLarge { .. },
            ..
        })
    ));
    // CreateTopics v4 topic whose replica-assignment broker id array lies.
    let mut body = BytesMut::new();
    body.put_i32(1); // topics
    body.put_i16(1);
    body.put_u8(b't');
    body.put_i32(1); // partitions
    body.put_i16(1); // rf
    body.put_i32(1); // assignments
    body.put_i32(0); // partition index
    body.put_i32(0x4000_0000); // broker ids
    assert!(decode_request(ApiKey::CreateTopics, 4, body.freeze()).is_err());
}

/// Every API and version must turn arbitrary junk into an error, including
/// junk that is all 0x7f/0xff (maximal counts everywhere).
#[test]
fn junk_bodies_are_errors_for_every_api() {
    let patterns: [&[u8]; 5] = [
        &[0x7f, 0xff, 0xff, 0xff],
        &[0xff],
        &[0x00, 0x00, 0x7f, 0xff],
        &[0x01, 0x7f, 0xff, 0xff, 0xff],
        &[0x80, 0x80, 0x80, 0x80, 0x0f],
    ];
    for key in ApiKey::iter() {
        let Some((lo, hi)) = fjord_protocol::schema::request_versions(key as i16) else {
            panic!("{key:?} has no schema");
        };
        for version in lo..=hi {
            for pattern in patterns {
                for reps in [1usize, 2, 5, 16] {
                    let body: Vec<u8> = pattern
                        .iter()
                        .copied()
                        .cycle()
                        .take(pattern.len() * reps)
                        .collect();
                    // Ok is possible (junk can be valid); what matters is that
                    // we get here without aborting.
                    let _ = decode_request(key, version, Bytes::from(body));
                }
            }
        }
    }
}

#[test]
fn trailing_bytes_are_ignored_as_kafka_does() {
    let req = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("orders")))),
    ]));
    for version in [0i16, 9, 12, 13] {
        let mut body = common::body_of(&req, version).to_vec();
        let ok = decode_request(ApiKey::Metadata, version, Bytes::from(body.clone())).unwrap();
        let RequestKind::Metadata(m) = ok.clone() else {
            panic!()
        };
        assert_eq!(m.topics.unwrap().len(), 1);
        // librdkafka 2.x sends three bytes after a Metadata v13 body.
        body.extend_from_slice(&[0, 0, 0]);
        let padded = decode_request(ApiKey::Metadata, version, Bytes::from(body)).unwrap();
        assert_eq!(padded, ok, "v{version}");
    }
}

#[test]
fn truncated_and_garbage_bodies_are_rejected() {
    let req = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("orders")))),
    ]));
    let body = common::body_of(&req, 12);
    for cut in 0..body.len() {
        assert!(
            decode_request(ApiKey::Metadata, 12, body.slice(..cut)).is_err(),
            "cut {cut}"
        );
    }
    // Invalid UTF-8 in a topic name passes the shape check but not
    // kafka-protocol.
    let mut bad = BytesMut::new();
    bad.put_i32(1);
    bad.put_i16(2);
    bad.put_slice(&[0xc3, 0x28]);
    bad.put_u8(1);
    assert!(matches!(
        decode_request(ApiKey::Metadata, 4, bad.freeze()),
        Err(DecodeError::Invalid { .. })
    ));
    // A version kafka-protocol cannot decode.
    assert!(matches!(
        decode_request(ApiKey::OffsetCommit, 10, Bytes::new()),
        Err(DecodeError::UnsupportedVersion { .. })
    ));
}

/// Produce records must stay the raw bytes of the frame (fjord-storage parses
/// batches itself): no copy, no record decoding, even when they are garbage.
#[test]
fn produce_records_stay_raw_frame_bytes() {
    let records = Bytes::from_static(b"\x00\x01not-a-record-batch-at-all\xff\xff\xff\x7f");
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("payments")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(3)
                        .with_records(Some(records.clone())),
                ]),
        ]);
    let apis = SupportedApis::kafka_41_broker();
    for version in [3i16, 7, 9, 12] {
        let payload = common::request_payload(
            ApiKey::Produce,
            version,
            8,
            Some("p"),
            &common::body_of(&req, version),
        );
        let decoded = parse_request(&payload, &apis).unwrap();
        let RequestKind::Produce(p) = decoded.body else {
            panic!()
        };
        let got = p.topic_data[0].partition_data[0].records.clone().unwrap();
        assert_eq!(got, records);
        // Same memory as the frame: a slice, not a copy.
        let frame_range = payload.as_ptr() as usize..payload.as_ptr() as usize + payload.len();
        assert!(
            frame_range.contains(&(got.as_ptr() as usize)),
            "v{version}: records were copied"
        );
    }
}

#[test]
fn typed_decoding_matches_request_kind() {
    let req = MetadataRequest::default()
        .with_topics(None)
        .with_allow_auto_topic_creation(false);
    let body = common::body_of(&req, 11);
    let typed: MetadataRequest = decode_request_as(11, body.clone()).unwrap();
    assert_eq!(typed, req);
    let mut hostile = BytesMut::new();
    hostile.put_u8(0x80);
    hostile.put_slice(&[0xff, 0xff, 0xff, 0x0f]);
    assert!(decode_request_as::<MetadataRequest>(11, hostile.freeze()).is_err());
}

/// Found by the fuzzer: kafka-protocol decodes an unknown tag above i32::MAX
/// (as a negative key) but drops it when re-encoding while still counting it,
/// producing a corrupt message. Such tags, and varints longer than 32 bits,
/// are refused up front.
#[test]
fn out_of_range_tags_and_overlong_varints_are_rejected() {
    // Metadata v9: topics null, three booleans, then one tagged field whose
    // tag is 0xffffffff.
    let body = Bytes::from_static(&[0, 1, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x0f, 0]);
    assert!(matches!(
        decode_request(ApiKey::Metadata, 9, body),
        Err(DecodeError::Shape {
            source: SchemaError::InvalidTag { tag: u32::MAX, .. },
            ..
        })
    ));
    // A compact array count whose fifth varint byte still has the
    // continuation bit set.
    let body = Bytes::from_static(&[0x81, 0x80, 0x80, 0x80, 0x80, 0, 1, 0, 0, 0]);
    assert!(matches!(
        decode_request(ApiKey::Metadata, 9, body),
        Err(DecodeError::Shape {
            source: SchemaError::InvalidVarint { .. },
            ..
        })
    ));
    // Tag i32::MAX itself is an ordinary unknown tag.
    let body = Bytes::from_static(&[0, 1, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x07, 0]);
    assert!(decode_request(ApiKey::Metadata, 9, body).is_ok());
}
