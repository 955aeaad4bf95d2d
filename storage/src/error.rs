//! Typed storage errors. The broker maps these to Kafka error codes in one place.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Bytes that are not a well-formed, CRC-valid batch (Kafka: CORRUPT_MESSAGE).
    #[error("corrupt record batch at byte {position}: {reason}")]
    CorruptRecord {
        position: usize,
        reason: &'static str,
    },
    /// Well-formed bytes that break a rule for records (Kafka: INVALID_RECORD).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A batch larger than `max.message.bytes` (Kafka: MESSAGE_TOO_LARGE).
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    RecordTooLarge { size: usize, max: usize },
    /// A record set larger than a whole segment (Kafka: RECORD_LIST_TOO_LARGE).
    #[error("record set of {size} bytes exceeds segment.bytes {max}")]
    RecordBatchTooLarge { size: usize, max: usize },
    /// An idempotent batch whose sequence does not follow the producer's last one
    /// (Kafka: OUT_OF_ORDER_SEQUENCE_NUMBER).
    #[error("out of order sequence number: {0}")]
    OutOfOrderSequence(String),
    /// An idempotent batch from an older producer epoch (Kafka: INVALID_PRODUCER_EPOCH).
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
    /// Records a leader refuses (Kafka: INVALID_RECORD or INVALID_TIMESTAMP, with per-record
    /// errors for Produce v8+).
    #[error("{} record(s) refused ({reason:?}): {}", errors.len(), errors.first().map_or("", |e| e.message.as_str()))]
    RecordsRejected {
        reason: crate::validate::RejectReason,
        errors: Vec<crate::validate::RecordError>,
    },
    /// Magic other than 2 (Kafka: UNSUPPORTED_FOR_MESSAGE_FORMAT).
    #[error("unsupported record batch magic {0}; only magic 2 is accepted")]
    UnsupportedMagic(i8),
    /// (Kafka: OFFSET_OUT_OF_RANGE)
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// A follower append that does not continue the log (Kafka: UnexpectedAppendOffsetException).
    #[error(
        "append of offset {first_offset} does not continue the log end offset {log_end_offset}"
    )]
    UnexpectedAppendOffset {
        first_offset: i64,
        log_end_offset: i64,
    },
    /// Offsets in a follower append that go backwards.
    #[error("offsets go backwards within the appended batches at offset {0}")]
    NonMonotonicOffsets(i64),
    #[error("compression ({codec}): {reason}")]
    Compression { codec: &'static str, reason: String },
    #[error("invalid log config {key}={value}: {reason}")]
    Config {
        key: String,
        value: String,
        reason: String,
    },
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The log hit an I/O error it could not undo and refuses further writes
    /// (Kafka: KAFKA_STORAGE_ERROR).
    #[error("log {0} is offline after an unrecoverable I/O error")]
    LogOffline(String),
    /// The same partition has a directory in two log directories (Kafka refuses to start).
    #[error("partition {partition} has logs in both {first} and {second}")]
    DuplicateLog {
        partition: String,
        first: PathBuf,
        second: PathBuf,
    },
    /// Another process holds the log directory.
    #[error("log directory {0} is locked by another process")]
    DirectoryLocked(PathBuf),
}

impl StorageError {
    pub(crate) fn corrupt(position: usize, reason: &'static str) -> StorageError {
        StorageError::CorruptRecord { position, reason }
    }

    /// Shift a position-carrying error by `base` bytes (for errors found in a sub-slice).
    pub(crate) fn at(self, base: usize) -> StorageError {
        match self {
            StorageError::CorruptRecord { position, reason } => StorageError::CorruptRecord {
                position: position + base,
                reason,
            },
            other => other,
        }
    }
}

/// Attach a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at_path(self, path: &std::path::Path) -> Result<T, StorageError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at_path(self, path: &std::path::Path) -> Result<T, StorageError> {
        self.map_err(|source| StorageError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
