//! A minimal raw Kafka connection for protocol-level tests: encodes requests with kafka-protocol
//! (its client side, independent of the broker's decoding path) and decodes the answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

pub struct Conn {
    stream: TcpStream,
    next_id: i32,
}

impl Conn {
    pub fn connect(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect to the broker");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        Conn { stream, next_id: 1 }
    }

    /// Sends raw bytes as they are (for malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Encodes and sends `req` at `version`; returns its correlation id.
    pub fn send<R: Request + Encodable>(&mut self, version: i16, req: &R) -> i32 {
        let id = self.next_id;
        self.next_id += 1;
        let key = ApiKey::try_from(R::KEY).expect("known api key");
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str("fjord-wire-test")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, key.request_header_version(version))
            .expect("encode header");
        req.encode(&mut buf, version).expect("encode request");
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&buf).expect("send request");
        id
    }

    /// Reads one response frame: `None` if the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(Bytes::from(body))
    }

    /// Reads and decodes the answer to a request of type `R` sent at `version`; returns the
    /// correlation id and the response.
    pub fn recv<R: Request>(&mut self, version: i16) -> (i32, R::Response)
    where
        R::Response: Decodable + HeaderVersion,
    {
        let mut frame = self.read_frame().expect("a response frame");
        let header = ResponseHeader::decode(
            &mut frame,
            <R::Response as HeaderVersion>::header_version(version),
        )
        .expect("decode response header");
        let resp = R::Response::decode(&mut frame, version).expect("decode response");
        assert!(!frame.has_remaining(), "trailing bytes in the response");
        (header.correlation_id, resp)
    }

    pub fn call<R: Request + Encodable>(&mut self, version: i16, req: &R) -> R::Response
    where
        R::Response: Decodable + HeaderVersion,
    {
        let id = self.send(version, req);
        let (got, resp) = self.recv::<R>(version);
        assert_eq!(got, id, "correlation id");
        resp
    }

    /// True once the broker has closed the connection (reads EOF or reset within the timeout).
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut b = [0u8; 1];
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(10)));
        let closed = match self.stream.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(30)));
        closed
    }
}

/// A kafka-protocol topic name.
pub fn topic_name(s: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(StrBytes::from_string(s.to_string()))
}

impl Conn {
    /// CreateTopics v7 for one topic with replication factor 1; asserts it succeeded.
    pub fn create_topic(&mut self, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
        use kafka_protocol::messages::create_topics_request::{
            CreatableTopic, CreatableTopicConfig,
        };
        let configs = configs
            .iter()
            .map(|(k, v)| {
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_string(k.to_string()))
                    .with_value(Some(StrBytes::from_string(v.to_string())))
            })
            .collect();
        let req = kafka_protocol::messages::CreateTopicsRequest::default()
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(topic_name(topic))
                    .with_num_partitions(partitions)
                    .with_replication_factor(1)
                    .with_configs(configs),
            ])
            .with_timeout_ms(10_000);
        let resp = self.call(7, &req);
        assert_eq!(resp.topics[0].error_code, 0, "{resp:?}");
    }
}

impl Conn {
    /// Produce `records` to one partition (acks=1, by name, so `version` must be below 13) and
    /// return that partition's answer.
    pub fn produce(
        &mut self,
        version: i16,
        topic: &str,
        partition: i32,
        records: bytes::Bytes,
    ) -> kafka_protocol::messages::produce_response::PartitionProduceResponse {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        let req = kafka_protocol::messages::ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(topic_name(topic))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(records)),
                    ]),
            ]);
        let mut resp = self.call(version, &req);
        resp.responses.remove(0).partition_responses.remove(0)
    }
}
