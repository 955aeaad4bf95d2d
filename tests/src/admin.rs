//! Fallible Kafka requests for the cluster harness: one connection per call, every step bounded
//! by a timeout, errors returned rather than panicking, because during chaos a node may be
//! dead, partitioned or not yet serving and the caller decides what that means.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, ListOffsetsRequest, MetadataRequest, MetadataResponse,
    RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use crate::wire::topic_name;

/// Largest response frame accepted (a Metadata answer for a few topics is far smaller).
const MAX_FRAME: usize = 64 << 20;

/// Sends one request to `addr` on a fresh connection and decodes the answer.
pub fn call<R: Request + Encodable>(
    addr: &str,
    version: i16,
    req: &R,
    timeout: Duration,
) -> Result<R::Response, String>
where
    R::Response: Decodable + HeaderVersion,
{
    let sock: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("{addr}: {e}"))?;
    let key = ApiKey::try_from(R::KEY).map_err(|_| format!("unknown api key {}", R::KEY))?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("fjord-cluster-harness")));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, key.request_header_version(version))
        .map_err(|e| format!("encode header: {e}"))?;
    req.encode(&mut buf, version)
        .map_err(|e| format!("encode request: {e}"))?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    stream
        .write_all(&buf)
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let len = i32::from_be_bytes(len);
    if len < 0 || len as usize > MAX_FRAME {
        return Err(format!("{addr}: bad frame length {len}"));
    }
    let mut body = vec![0u8; len as usize];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let mut frame = Bytes::from(body);
    let header = ResponseHeader::decode(
        &mut frame,
        <R::Response as HeaderVersion>::header_version(version),
    )
    .map_err(|e| format!("decode response header: {e}"))?;
    if header.correlation_id != 1 {
        return Err(format!("correlation id {}", header.correlation_id));
    }
    let resp =
        R::Response::decode(&mut frame, version).map_err(|e| format!("decode response: {e}"))?;
    if frame.has_remaining() {
        return Err("trailing bytes in the response".into());
    }
    Ok(resp)
}

/// Metadata v12 for `topics` (all topics if `None`), without auto-creation.
pub fn metadata(
    addr: &str,
    topics: Option<&[&str]>,
    timeout: Duration,
) -> Result<MetadataResponse, String> {
    let req = MetadataRequest::default()
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                .collect()
        }))
        .with_allow_auto_topic_creation(false);
    call(addr, 12, &req, timeout)
}

/// One partition as a Metadata answer describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    pub error_code: i16,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// The partitions of `topic` in a Metadata answer, by index (empty if the topic is missing or
/// has an error).
pub fn partitions(md: &MetadataResponse, topic: &str) -> Vec<PartitionInfo> {
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<i32>>();
    let mut out: Vec<PartitionInfo> = md
        .topics
        .iter()
        .filter(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic) && t.error_code == 0)
        .flat_map(|t| t.partitions.iter())
        .map(|p| PartitionInfo {
            partition: p.partition_index,
            error_code: p.error_code,
            leader: p.leader_id.0,
            leader_epoch: p.leader_epoch,
            replicas: ids(&p.replica_nodes),
            isr: ids(&p.isr_nodes),
        })
        .collect();
    out.sort_by_key(|p| p.partition);
    out
}

/// CreateTopics v7 for one topic; returns the topic's error code and message.
pub fn create_topic(
    addr: &str,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(&str, &str)],
    timeout: Duration,
) -> Result<(i16, Option<String>), String> {
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v.to_string())))
        })
        .collect();
    let req = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(topic_name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)
                .with_configs(configs),
        ])
        .with_timeout_ms(timeout.as_millis().min(i32::MAX as u128) as i32);
    let resp = call(addr, 7, &req, timeout + Duration::from_secs(1))?;
    let t = resp
        .topics
        .first()
        .ok_or_else(|| "CreateTopics answered no topic".to_string())?;
    Ok((
        t.error_code,
        t.error_message.as_ref().map(|m| m.to_string()),
    ))
}

/// ListOffsets v7 (latest, read_uncommitted: the high watermark) for `partitions` of `topic`,
/// asked of `addr`; per partition the error code and offset.
pub fn high_watermarks(
    addr: &str,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<Vec<(i32, i16, i64)>, String> {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(0)
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(*p)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(-1)
                        })
                        .collect(),
                ),
        ]);
    let resp = call(addr, 7, &req, timeout)?;
    Ok(resp
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| (p.partition_index, p.error_code, p.offset))
        .collect())
}

/// IncrementalAlterConfigs v1 for one resource (`resource_type` 2 topic, 4 broker): `Some`
/// sets a key, `None` deletes it. Returns the resource's error code and message.
pub fn incremental_alter_configs(
    addr: &str,
    resource_type: i8,
    name: &str,
    changes: &[(&str, Option<&str>)],
    timeout: Duration,
) -> Result<(i16, Option<String>), String> {
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let configs = changes
        .iter()
        .map(|(k, v)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_config_operation(if v.is_some() { 0 } else { 1 })
                .with_value(v.map(|v| StrBytes::from_string(v.to_string())))
        })
        .collect();
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configs(configs),
    ]);
    let resp = call(addr, 1, &req, timeout)?;
    let r = resp
        .responses
        .first()
        .ok_or_else(|| "IncrementalAlterConfigs answered no resource".to_string())?;
    Ok((
        r.error_code,
        r.error_message.as_ref().map(|m| m.to_string()),
    ))
}
