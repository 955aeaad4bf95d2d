//! Requests that several commands share: offsets by time, configs.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::describe_configs_request::{
    DescribeConfigsRequest, DescribeConfigsResource,
};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig, IncrementalAlterConfigsRequest,
};
use kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use super::cluster::Client;
use super::error::{ClientError, check};

/// Which offset ListOffsets should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The first offset whose timestamp is at or after this many ms since the epoch.
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        }
    }
}

pub type Tp = (String, i32);

/// Offsets of `partitions` per `spec`, asking each partition's leader. For a timestamp after
/// the last record, the answer is the latest offset (what a consumer would reset to).
pub async fn list_offsets(
    client: &Client,
    partitions: &[Tp],
    spec: OffsetSpec,
) -> Result<BTreeMap<Tp, i64>, ClientError> {
    let mut out = BTreeMap::new();
    if partitions.is_empty() {
        return Ok(out);
    }
    let mut topics: Vec<String> = partitions.iter().map(|(t, _)| t.clone()).collect();
    topics.sort();
    topics.dedup();
    let meta = client.topics(Some(&topics)).await?;
    let mut leader_of: HashMap<(&str, i32), i32> = HashMap::new();
    for t in &meta {
        for p in &t.partitions {
            leader_of.insert((t.name.as_str(), p.partition), p.leader);
        }
    }
    let mut by_leader: BTreeMap<i32, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    for (t, p) in partitions {
        let leader = *leader_of
            .get(&(t.as_str(), *p))
            .ok_or_else(|| ClientError::Kafka {
                what: format!("partition {t}/{p}"),
                error: kafka_protocol::ResponseError::UnknownTopicOrPartition,
                message: Some("the topic has no such partition".into()),
            })?;
        if leader < 0 {
            return Err(ClientError::Kafka {
                what: format!("partition {t}/{p}"),
                error: kafka_protocol::ResponseError::LeaderNotAvailable,
                message: Some("it has no leader; see `fjord cluster health`".into()),
            });
        }
        by_leader
            .entry(leader)
            .or_default()
            .entry(t.clone())
            .or_default()
            .push(*p);
    }
    for (leader, topics) in by_leader {
        let conn = client.node(leader).await?;
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(
                topics
                    .iter()
                    .map(|(t, ps)| {
                        ListOffsetsTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.clone())))
                            .with_partitions(
                                ps.iter()
                                    .map(|&p| {
                                        ListOffsetsPartition::default()
                                            .with_partition_index(p)
                                            .with_timestamp(spec.wire())
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let resp = conn.send(&req).await?;
        let mut fallback = Vec::new();
        for t in resp.topics {
            for p in t.partitions {
                let name = t.name.0.to_string();
                check(p.error_code, None, || {
                    format!(
                        "ListOffsets for {name}/{} on {}",
                        p.partition_index,
                        conn.broker()
                    )
                })?;
                if p.offset < 0 {
                    fallback.push((name.clone(), p.partition_index));
                }
                out.insert((name, p.partition_index), p.offset);
            }
        }
        if !fallback.is_empty() && spec != OffsetSpec::Latest {
            let latest = Box::pin(list_offsets(client, &fallback, OffsetSpec::Latest)).await?;
            out.extend(latest);
        }
    }
    Ok(out)
}

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// One configuration entry.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: &'static str,
    pub read_only: bool,
    pub sensitive: bool,
}

impl ConfigEntry {
    /// True when the value is Kafka's built-in default.
    pub fn is_default(&self) -> bool {
        self.source == "DEFAULT_CONFIG"
    }
}

pub fn source_name(s: i8) -> &'static str {
    match s {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

/// Where a config request about a resource must go: a broker's own configs to that broker.
async fn config_conn(
    client: &Client,
    resource_type: i8,
    name: &str,
) -> Result<std::sync::Arc<super::Connection>, ClientError> {
    if resource_type == RESOURCE_BROKER
        && let Ok(id) = name.parse::<i32>()
    {
        return client.node(id).await;
    }
    client.any().await
}

pub fn describe_what(resource_type: i8, name: &str) -> String {
    match resource_type {
        RESOURCE_TOPIC => format!("topic '{name}'"),
        RESOURCE_BROKER if name.is_empty() => "cluster-wide broker defaults".to_string(),
        RESOURCE_BROKER => format!("broker {name}"),
        other => format!("resource {other}/{name}"),
    }
}

/// All configs of one resource, as DescribeConfigs reports them.
pub async fn describe_configs(
    client: &Client,
    resource_type: i8,
    name: &str,
) -> Result<Vec<ConfigEntry>, ClientError> {
    let conn = config_conn(client, resource_type, name).await?;
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configuration_keys(None),
    ]);
    let resp = conn.send(&req).await?;
    let mut out = Vec::new();
    for r in resp.results {
        check(r.error_code, r.error_message.as_deref(), || {
            format!(
                "DescribeConfigs of {} on {}",
                describe_what(resource_type, name),
                conn.broker()
            )
        })?;
        for c in r.configs {
            out.push(ConfigEntry {
                name: c.name.to_string(),
                value: c.value.map(|v| v.to_string()),
                source: source_name(c.config_source),
                read_only: c.read_only,
                sensitive: c.is_sensitive,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// An IncrementalAlterConfigs operation.
#[derive(Debug, Clone)]
pub enum ConfigOp {
    Set(String, String),
    Delete(String),
}

pub async fn alter_configs(
    client: &Client,
    resource_type: i8,
    name: &str,
    ops: &[ConfigOp],
    validate_only: bool,
) -> Result<(), ClientError> {
    let conn = config_conn(client, resource_type, name).await?;
    let configs = ops
        .iter()
        .map(|op| match op {
            ConfigOp::Set(k, v) => AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_string(v.clone()))),
            ConfigOp::Delete(k) => AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(1)
                .with_value(None),
        })
        .collect();
    let req = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_configs(configs),
        ]);
    let resp = conn.send(&req).await?;
    for r in resp.responses {
        check(r.error_code, r.error_message.as_deref(), || {
            format!(
                "IncrementalAlterConfigs of {} on {}",
                describe_what(resource_type, name),
                conn.broker()
            )
        })?;
    }
    Ok(())
}
