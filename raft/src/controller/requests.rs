//! Requests the controller serves and their answers. Brokers send them over the controller RPC
//! (bincode-encoded); the broker's Kafka handlers translate client requests into these.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ControllerError;
use crate::records::Endpoint;

/// A Kafka error code with its message, as a client will see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: i16,
    pub message: String,
}

impl From<ControllerError> for ApiError {
    fn from(e: ControllerError) -> Self {
        ApiError {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error {}: {}", self.code, self.message)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub security_protocol: i16,
}

impl From<&EndpointSpec> for Endpoint {
    fn from(e: &EndpointSpec) -> Self {
        Endpoint {
            name: e.name.clone(),
            host: e.host.clone(),
            port: e.port,
            security_protocol: e.security_protocol,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatableTopic {
    pub name: String,
    /// -1: the controller's `num.partitions`.
    pub num_partitions: i32,
    /// -1: the controller's `default.replication.factor`.
    pub replication_factor: i16,
    /// Manual placement: (partition, replica broker ids). Excludes the two counts above.
    pub assignments: Vec<(i32, Vec<i32>)>,
    pub configs: Vec<(String, Option<String>)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedTopic {
    pub topic_id: Uuid,
    pub num_partitions: i32,
    pub replication_factor: i16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRef {
    pub name: Option<String>,
    pub id: Option<Uuid>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedTopic {
    pub name: String,
    pub topic_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPartitions {
    pub topic: String,
    /// The total partition count wanted.
    pub count: i32,
    /// Replicas for each new partition, in order, or empty for automatic placement.
    pub assignments: Vec<Vec<i32>>,
}

/// Which resource a config change is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigResource {
    Topic(String),
    /// A broker id, or `""` for the cluster-wide default.
    Broker(String),
}

/// Kafka's incremental alter config operation ids: SET 0, DELETE 1, APPEND 2, SUBTRACT 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlterConfigOp {
    Set,
    Delete,
    Append,
    Subtract,
}

impl AlterConfigOp {
    pub fn from_id(id: i8) -> Option<Self> {
        Some(match id {
            0 => AlterConfigOp::Set,
            1 => AlterConfigOp::Delete,
            2 => AlterConfigOp::Append,
            3 => AlterConfigOp::Subtract,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChange {
    pub resource: ConfigResource,
    /// `incremental = false` is the legacy AlterConfigs: the given set replaces all overrides.
    pub incremental: bool,
    pub ops: Vec<(String, AlterConfigOp, Option<String>)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterBroker {
    pub broker_id: i32,
    pub incarnation_id: Uuid,
    pub endpoints: Vec<EndpointSpec>,
    pub rack: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub broker_epoch: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub broker_id: i32,
    pub broker_epoch: i64,
    /// The metadata offset the broker has applied.
    pub current_metadata_offset: u64,
    pub want_fence: bool,
    pub want_shutdown: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub is_caught_up: bool,
    pub is_fenced: bool,
    pub should_shut_down: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartition {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdBlock {
    pub first: i64,
    pub len: i32,
}

/// Everything a controller can be asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerRequest {
    CreateTopics {
        topics: Vec<CreatableTopic>,
        validate_only: bool,
    },
    DeleteTopics(Vec<TopicRef>),
    CreatePartitions {
        topics: Vec<NewPartitions>,
        validate_only: bool,
    },
    AlterConfigs {
        changes: Vec<ConfigChange>,
        validate_only: bool,
    },
    RegisterBroker(RegisterBroker),
    Heartbeat(Heartbeat),
    AlterPartition(AlterPartition),
    /// Kafka's ElectLeaders: `election_type` 0 preferred, 1 unclean; `None` = all partitions.
    ElectLeaders {
        election_type: i8,
        partitions: Option<Vec<(String, i32)>>,
    },
    AllocateProducerIds {
        broker_id: i32,
        broker_epoch: i64,
    },
    /// (topic, partition, target replicas or `None` to cancel) per partition.
    AlterPartitionReassignments {
        partitions: Vec<(String, i32, Option<Vec<i32>>)>,
        allow_replication_factor_change: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerResponse {
    CreateTopics(Vec<(String, ApiResult<CreatedTopic>)>),
    DeleteTopics(Vec<(TopicRef, ApiResult<DeletedTopic>)>),
    CreatePartitions(Vec<(String, ApiResult<()>)>),
    AlterConfigs(Vec<(ConfigResource, ApiResult<()>)>),
    RegisterBroker(ApiResult<Registered>),
    Heartbeat(ApiResult<HeartbeatReply>),
    AlterPartition(ApiResult<PartitionState>),
    /// (topic, partition, result) per partition.
    ElectLeaders(Vec<(String, i32, ApiResult<()>)>),
    AllocateProducerIds(ApiResult<ProducerIdBlock>),
    /// (topic, partition, result) per partition.
    AlterPartitionReassignments(Vec<(String, i32, ApiResult<()>)>),
}
