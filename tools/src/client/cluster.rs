//! The cluster as a whole: bootstrap, metadata, and connections to particular brokers (partition
//! leaders, the controller, group coordinators).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::metadata_response::MetadataResponse;
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::conn::{ConnOptions, Connection};
use super::error::ClientError;

/// How long FindCoordinator is retried while the coordinator is loading or being elected.
const COORDINATOR_WAIT: Duration = Duration::from_secs(15);

#[derive(Default)]
struct State {
    bootstrap: Option<Arc<Connection>>,
    nodes: HashMap<i32, Arc<Connection>>,
    addrs: BTreeMap<i32, String>,
}

pub struct Client {
    bootstrap: Vec<String>,
    opts: ConnOptions,
    state: tokio::sync::Mutex<State>,
}

/// A partition as Metadata describes it.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline: Vec<i32>,
    pub error_code: i16,
}

/// A topic as Metadata describes it.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub id: uuid::Uuid,
    pub internal: bool,
    pub partitions: Vec<PartitionInfo>,
}

impl Client {
    pub fn new(bootstrap: Vec<String>, opts: ConnOptions) -> Client {
        Client {
            bootstrap,
            opts,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    pub fn options(&self) -> &ConnOptions {
        &self.opts
    }

    /// A connection to any broker: the bootstrap connection, or the first that answers.
    pub async fn any(&self) -> Result<Arc<Connection>, ClientError> {
        let mut st = self.state.lock().await;
        if let Some(c) = &st.bootstrap
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        if let Some(c) = st.nodes.values().find(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let mut tried = Vec::new();
        let candidates: Vec<String> = self
            .bootstrap
            .iter()
            .cloned()
            .chain(st.addrs.values().cloned())
            .collect();
        for addr in candidates {
            match Connection::connect(&addr, &self.opts).await {
                Ok(c) => {
                    st.bootstrap = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "bootstrap broker unreachable");
                    tried.push(match e {
                        ClientError::Connect { source, .. } => format!("{addr}: {source}"),
                        other => format!("{addr}: {other}"),
                    });
                }
            }
        }
        Err(ClientError::NoBrokers {
            tried: if tried.is_empty() {
                "no addresses".into()
            } else {
                tried.join("; ")
            },
        })
    }

    /// A connection to broker `id`, looking its address up in Metadata if needed.
    pub async fn node(&self, id: i32) -> Result<Arc<Connection>, ClientError> {
        {
            let st = self.state.lock().await;
            if let Some(c) = st.nodes.get(&id)
                && !c.is_closed()
            {
                return Ok(c.clone());
            }
        }
        if !self.state.lock().await.addrs.contains_key(&id) {
            self.metadata(Some(&[])).await?;
        }
        let mut st = self.state.lock().await;
        if let Some(c) = st.nodes.get(&id)
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let Some(addr) = st.addrs.get(&id).cloned() else {
            return Err(ClientError::Protocol(format!(
                "broker {id} is not in the cluster metadata (it may have been removed)"
            )));
        };
        let c = Connection::connect(&addr, &self.opts).await?;
        st.nodes.insert(id, c.clone());
        Ok(c)
    }

    /// Remembers a broker's address (from FindCoordinator or DescribeCluster).
    pub async fn learn(&self, id: i32, addr: String) {
        self.state.lock().await.addrs.entry(id).or_insert(addr);
    }

    /// Brokers known from the last Metadata, by id.
    pub async fn known_brokers(&self) -> BTreeMap<i32, String> {
        self.state.lock().await.addrs.clone()
    }

    /// Metadata for `topics` (`None`: all topics; `Some(&[])`: brokers only). Never creates
    /// topics.
    pub async fn metadata(
        &self,
        topics: Option<&[String]>,
    ) -> Result<MetadataResponse, ClientError> {
        let conn = self.any().await?;
        let req = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect()
            }));
        let resp = conn.send(&req).await?;
        super::error::check(resp.error_code, None, || {
            format!("Metadata from {}", conn.broker())
        })?;
        let mut st = self.state.lock().await;
        for b in &resp.brokers {
            st.addrs
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        Ok(resp)
    }

    /// Topics with their partitions, sorted by name and partition. Topic-level errors are
    /// returned as errors naming the topic.
    pub async fn topics(&self, names: Option<&[String]>) -> Result<Vec<TopicInfo>, ClientError> {
        let resp = self.metadata(names).await?;
        topics_from(&resp)
    }

    /// The controller as Metadata reports it (in KRaft clusters, a broker that forwards to the
    /// controller), else any broker: where CreateTopics and friends go.
    pub async fn admin(&self) -> Result<Arc<Connection>, ClientError> {
        let resp = self.metadata(Some(&[])).await?;
        if resp.controller_id.0 >= 0
            && let Ok(c) = self.node(resp.controller_id.0).await
        {
            return Ok(c);
        }
        self.any().await
    }

    /// The coordinator of consumer group `group`, retrying while it is being elected or loaded.
    pub async fn coordinator(&self, group: &str) -> Result<Arc<Connection>, ClientError> {
        let deadline = tokio::time::Instant::now() + COORDINATOR_WAIT;
        loop {
            match self.find_coordinator(group).await {
                Ok(c) => return Ok(c),
                Err(e)
                    if matches!(
                        e.kafka_error(),
                        Some(
                            ResponseError::CoordinatorNotAvailable
                                | ResponseError::CoordinatorLoadInProgress
                                | ResponseError::NotCoordinator
                        )
                    ) && tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!(group, error = %e, "coordinator not ready; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn find_coordinator(&self, group: &str) -> Result<Arc<Connection>, ClientError> {
        let conn = self.any().await?;
        let v = conn.version::<FindCoordinatorRequest>()?;
        let key = StrBytes::from_string(group.to_string());
        let req = if v >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![key])
        } else {
            FindCoordinatorRequest::default().with_key(key)
        };
        let resp = conn.start(&req, v).await?.wait().await?;
        let what = || format!("FindCoordinator for group '{group}' via {}", conn.broker());
        let (id, host, port) = if v >= 4 {
            let Some(c) = resp.coordinators.first() else {
                return Err(ClientError::Protocol(format!(
                    "{}: the answer lists no coordinator",
                    what()
                )));
            };
            super::error::check(c.error_code, c.error_message.as_deref(), what)?;
            (c.node_id.0, c.host.to_string(), c.port)
        } else {
            super::error::check(resp.error_code, resp.error_message.as_deref(), what)?;
            (resp.node_id.0, resp.host.to_string(), resp.port)
        };
        self.learn(id, format!("{host}:{port}")).await;
        self.node(id).await
    }
}

/// Converts a Metadata answer into [`TopicInfo`]s; a topic error becomes a [`ClientError`].
pub fn topics_from(resp: &MetadataResponse) -> Result<Vec<TopicInfo>, ClientError> {
    let mut out = Vec::with_capacity(resp.topics.len());
    for t in &resp.topics {
        let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
        super::error::check(t.error_code, None, || format!("topic '{name}'"))?;
        let mut partitions: Vec<PartitionInfo> = t
            .partitions
            .iter()
            .map(|p| PartitionInfo {
                partition: p.partition_index,
                leader: p.leader_id.0,
                leader_epoch: p.leader_epoch,
                replicas: ids(&p.replica_nodes),
                isr: ids(&p.isr_nodes),
                offline: ids(&p.offline_replicas),
                error_code: p.error_code,
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        out.push(TopicInfo {
            name,
            id: t.topic_id,
            internal: t.is_internal,
            partitions,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn ids(v: &[BrokerId]) -> Vec<i32> {
    v.iter().map(|b| b.0).collect()
}
