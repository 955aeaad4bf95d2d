//! Writes a seed corpus of valid framed requests (several APIs and versions)
//! to the directory given as the first argument.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FetchRequest, MetadataRequest, ProduceRequest, RequestHeader,
    RequestKind, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

fn frame(key: ApiKey, version: i16, body: &RequestKind) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("seed")));
    let mut payload = BytesMut::new();
    header
        .encode(&mut payload, key.request_header_version(version))
        .unwrap();
    body.encode(&mut payload, version).unwrap();
    let mut out = BytesMut::new();
    out.put_i32(payload.len() as i32);
    out.put_slice(&payload);
    out.to_vec()
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: make_seeds <dir>");
    std::fs::create_dir_all(&dir).unwrap();
    let topic = || TopicName(StrBytes::from_static_str("orders"));
    let metadata = RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic())),
    ])));
    let produce = RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(topic())
                    .with_partition_data(vec![
                        PartitionProduceData::default().with_records(Some(vec![0u8; 16].into())),
                    ]),
            ]),
    );
    let fetch = |v: i16| {
        let t = FetchTopic::default()
            .with_partitions(vec![FetchPartition::default().with_fetch_offset(5)]);
        let t = if v >= 13 { t } else { t.with_topic(topic()) };
        RequestKind::Fetch(
            FetchRequest::default()
                .with_max_wait_ms(500)
                .with_topics(vec![t]),
        )
    };
    let mut n = 0;
    let mut write = |bytes: Vec<u8>| {
        std::fs::write(format!("{dir}/seed-{n:03}"), bytes).unwrap();
        n += 1;
    };
    for v in 0..=4 {
        let mut req = ApiVersionsRequest::default();
        if v >= 3 {
            req = req
                .with_client_software_name(StrBytes::from_static_str("seed"))
                .with_client_software_version(StrBytes::from_static_str("1"));
        }
        write(frame(
            ApiKey::ApiVersions,
            v,
            &RequestKind::ApiVersions(req),
        ));
    }
    for v in [0, 4, 9, 12, 13] {
        write(frame(ApiKey::Metadata, v, &metadata));
    }
    for v in [3, 7, 9, 12] {
        write(frame(ApiKey::Produce, v, &produce));
    }
    for v in [4, 11, 12, 15, 17] {
        write(frame(ApiKey::Fetch, v, &fetch(v)));
    }
    println!("wrote {n} seeds to {dir}");
}
