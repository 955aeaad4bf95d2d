//! Arbitrary bytes through everything a connection does before dispatch:
//! frame parsing, header parsing, bounded body decoding, and the error
//! answers. Any abort (hostile allocation), panic or hang is a finding.
#![no_main]

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use fjord_protocol::versions::codec_range;
use fjord_protocol::{
    ApiRange, Disposition, SupportedApis, encode_unsupported_api_versions, parse_request,
    read_frame,
};
use kafka_protocol::messages::{ApiKey, RequestKind};
use libfuzzer_sys::fuzz_target;

/// Every API and version kafka-protocol can decode, so that all decoders are
/// exercised, not only the Kafka 4.1 broker set.
fn all_apis() -> &'static SupportedApis {
    static APIS: OnceLock<SupportedApis> = OnceLock::new();
    APIS.get_or_init(|| {
        SupportedApis::new(ApiKey::iter().map(|k| {
            let (min, max) = codec_range(k);
            ApiRange {
                api_key: k,
                min,
                max,
            }
        }))
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("tokio runtime")
    })
}

fn handle_payload(payload: &Bytes) {
    match parse_request(payload, all_apis()) {
        Ok(req) => {
            // Whatever was accepted must survive kafka-protocol's own
            // encode/decode round trip at the same version.
            let version = req.header.api_version;
            let mut out = BytesMut::new();
            req.body
                .encode(&mut out, version)
                .expect("re-encoding a decoded request");
            let first = out.freeze();
            let again = fjord_protocol::decode_request(req.header.api_key, version, first.clone())
                .expect("decoding a re-encoded request");
            // Compared as bytes: a float field holding NaN never equals itself as a value.
            let mut second = BytesMut::new();
            again
                .encode(&mut second, version)
                .expect("re-encoding a round-tripped request");
            assert_eq!(second.freeze(), first, "round trip changed the request");
            if let RequestKind::Produce(p) = &req.body {
                // Records are sliced from the frame, never copied or parsed.
                for t in &p.topic_data {
                    for part in &t.partition_data {
                        if let Some(r) = &part.records {
                            let range = payload.as_ptr() as usize
                                ..=payload.as_ptr() as usize + payload.len();
                            assert!(r.is_empty() || range.contains(&(r.as_ptr() as usize)));
                        }
                    }
                }
            }
        }
        Err(e) => {
            if let Disposition::AnswerUnsupportedApiVersions { correlation_id } = e.disposition() {
                encode_unsupported_api_versions(correlation_id, all_apis())
                    .expect("encoding the ApiVersions fallback");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // As a stream of frames (small limit so oversized prefixes are common).
    let mut reader = data;
    for _ in 0..8 {
        match runtime().block_on(read_frame(&mut reader, 1 << 16)) {
            Ok(Some(frame)) => handle_payload(&frame),
            Ok(None) | Err(_) => break,
        }
    }
    // And as one frame payload, so header and body parsing see every input.
    handle_payload(&Bytes::copy_from_slice(data));
});
