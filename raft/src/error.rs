//! Errors of the metadata layer and their Kafka error codes.

use thiserror::Error;

/// A metadata record or snapshot that cannot be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("metadata record truncated")]
    Truncated,
    #[error("malformed metadata record: {0}")]
    Malformed(&'static str),
    #[error("unsupported metadata batch format {0}")]
    UnsupportedFormat(u8),
}

/// Why the controller refused a request, as the Kafka error the client will see.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ControllerError {
    #[error("topic '{0}' already exists")]
    TopicAlreadyExists(String),
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    #[error("unknown topic or partition: {0}")]
    UnknownTopicOrPartition(String),
    #[error("unknown topic id {0}")]
    UnknownTopicId(uuid::Uuid),
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("broker {0} is already registered with another incarnation")]
    DuplicateBrokerRegistration(i32),
    #[error("stale broker epoch for broker {0}")]
    StaleBrokerEpoch(i32),
    #[error("broker {0} is not registered")]
    BrokerIdNotRegistered(i32),
    #[error("fenced leader epoch")]
    FencedLeaderEpoch,
    #[error("unknown leader epoch")]
    UnknownLeaderEpoch,
    #[error("not the leader of the partition")]
    NotLeaderOrFollower,
    #[error("partition epoch mismatch")]
    InvalidUpdateVersion,
    #[error("ineligible replica in ISR: {0}")]
    IneligibleReplica(String),
    #[error("this controller is not the active controller")]
    NotController { leader: Option<u64> },
    #[error("the metadata quorum is unavailable: {0}")]
    QuorumUnavailable(String),
    #[error("request timed out: {0}")]
    RequestTimedOut(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("policy violation: {0}")]
    PolicyViolation(String),
    #[error("no reassignment is in progress for {0}")]
    NoReassignmentInProgress(String),
    /// An error a remote controller answered with, carried by its Kafka code.
    #[error("{message}")]
    Remote { code: i16, message: String },
}

impl ControllerError {
    /// The Kafka protocol error code (see Kafka's `Errors` enum).
    pub fn code(&self) -> i16 {
        use ControllerError::*;
        match self {
            UnknownTopicOrPartition(_) => 3,
            NotLeaderOrFollower => 6,
            RequestTimedOut(_) => 7,
            InvalidTopic(_) => 17,
            TopicAlreadyExists(_) => 36,
            InvalidPartitions(_) => 37,
            InvalidReplicationFactor(_) => 38,
            InvalidReplicaAssignment(_) => 39,
            InvalidConfig(_) => 40,
            NotController { .. } => 41,
            InvalidRequest(_) => 42,
            QuorumUnavailable(_) => 7,
            FencedLeaderEpoch => 74,
            UnknownLeaderEpoch => 75,
            StaleBrokerEpoch(_) => 77,
            InvalidUpdateVersion => 95,
            UnknownTopicId(_) => 100,
            DuplicateBrokerRegistration(_) => 101,
            BrokerIdNotRegistered(_) => 102,
            IneligibleReplica(_) => 107,
            Unsupported(_) => 35,
            PolicyViolation(_) => 44,
            NoReassignmentInProgress(_) => 85,
            Remote { code, .. } => *code,
        }
    }
}
