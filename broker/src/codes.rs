//! Kafka error codes the broker answers with (Kafka's `Errors` enum), and the one mapping from
//! storage errors to them.

use fjord_storage::StorageError;
use fjord_storage::validate::RejectReason;

pub const NONE: i16 = 0;
pub const UNKNOWN_SERVER_ERROR: i16 = -1;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const LEADER_NOT_AVAILABLE: i16 = 5;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const RECORD_LIST_TOO_LARGE: i16 = 18;
pub const NOT_ENOUGH_REPLICAS: i16 = 19;
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
pub const INVALID_REQUIRED_ACKS: i16 = 21;
pub const INVALID_TIMESTAMP: i16 = 32;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const INVALID_REQUEST: i16 = 42;
pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
pub const POLICY_VIOLATION: i16 = 44;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
/// Kafka 4.x answers a fenced epoch on Produce with this (since 2.7; PRODUCER_FENCED is for
/// transactional requests), which clients handle by bumping the epoch.
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
pub const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
pub const FENCED_LEADER_EPOCH: i16 = 74;
pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
pub const INVALID_RECORD: i16 = 87;
pub const UNKNOWN_TOPIC_ID: i16 = 100;
pub const FETCH_SESSION_TOPIC_ID_ERROR: i16 = 106;

/// Kafka's `ConfigSource` ids (DescribeConfigs).
pub mod config_source {
    pub const TOPIC_CONFIG: i8 = 1;
    pub const DYNAMIC_BROKER_CONFIG: i8 = 2;
    pub const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
}

/// The Kafka error a client sees for a storage failure.
pub fn storage_error_code(e: &StorageError) -> i16 {
    match e {
        StorageError::CorruptRecord { .. } => CORRUPT_MESSAGE,
        StorageError::InvalidRecord(_) => INVALID_RECORD,
        StorageError::RecordTooLarge { .. } => MESSAGE_TOO_LARGE,
        StorageError::RecordBatchTooLarge { .. } => RECORD_LIST_TOO_LARGE,
        StorageError::UnsupportedMagic(_) => UNSUPPORTED_FOR_MESSAGE_FORMAT,
        StorageError::OffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
        StorageError::Compression { .. } => CORRUPT_MESSAGE,
        StorageError::OutOfOrderSequence(_) => OUT_OF_ORDER_SEQUENCE_NUMBER,
        StorageError::InvalidProducerEpoch(_) => INVALID_PRODUCER_EPOCH,
        StorageError::RecordsRejected { reason, .. } => match reason {
            RejectReason::InvalidRecord => INVALID_RECORD,
            RejectReason::InvalidTimestamp => INVALID_TIMESTAMP,
        },
        StorageError::Io { .. } | StorageError::LogOffline(_) => KAFKA_STORAGE_ERROR,
        _ => UNKNOWN_SERVER_ERROR,
    }
}
