//! `fjord-storage`: the per-partition log a Kafka broker keeps on disk, in Kafka's own
//! on-disk layout (segments of record batches, sparse offset and time indexes, leader-epoch and
//! offset checkpoints), with crash recovery, retention and key-based compaction.

pub mod batch;
pub mod checkpoint;
pub mod cleaner;
pub mod compression;
pub mod config;
pub mod epoch;
pub mod error;
pub mod index;
pub mod log;
pub mod manager;
pub mod producer_state;
pub mod recompress;
pub mod records;
pub mod segment;
pub mod validate;

#[cfg(test)]
pub(crate) mod testutil;

pub use batch::{BatchHeader, Compression, TimestampType};
pub use checkpoint::TopicPartition;
pub use config::{CleanupPolicy, LogConfig};
pub use error::StorageError;
pub use log::{AppendInfo, LoadParams, Log, ReadResult, TimestampAndOffset};
pub use manager::{LogManager, ManagerConfig};

/// Milliseconds since the Unix epoch, the clock Kafka timestamps use.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
