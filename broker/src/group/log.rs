//! A shard's records in its `__consumer_offsets` partition: appending them as the leader, and
//! replaying the partition to rebuild the shard when this broker becomes its leader.

use std::sync::Arc;

use fjord_storage::batch::StoredBatches;
use fjord_storage::records::{BatchSpec, Record, decode_batch, encode_batch};
use fjord_storage::{Compression, StorageError};

use crate::group::OFFSETS_TOPIC;
use crate::group::codes;
use crate::group::now_ms;
use crate::group::records::CoordinatorRecord;
use crate::group::state::{RecordLog, ShardState};
use crate::partition::Partition;
use crate::replicas::ReplicaManager;

/// Bytes read per step while loading.
const LOAD_CHUNK: usize = 1024 * 1024;

/// The error a coordinator reports for a failed write, as Kafka maps it: the partition being
/// unavailable means the coordinator is (COORDINATOR_NOT_AVAILABLE), having lost it means this
/// is no longer the coordinator (NOT_COORDINATOR), and a write too large is the server's fault.
pub fn write_error_code(code: i16) -> i16 {
    match code {
        codes::UNKNOWN_TOPIC_OR_PARTITION
        | codes::NOT_ENOUGH_REPLICAS
        | codes::REQUEST_TIMED_OUT => codes::COORDINATOR_NOT_AVAILABLE,
        codes::NOT_LEADER_OR_FOLLOWER | codes::KAFKA_STORAGE_ERROR => codes::NOT_COORDINATOR,
        codes::MESSAGE_TOO_LARGE | codes::RECORD_LIST_TOO_LARGE => codes::UNKNOWN_SERVER_ERROR,
        other => other,
    }
}

/// Writes a shard's records to its partition as the leader.
pub struct PartitionLog {
    partition: Arc<Partition>,
    replicas: Arc<ReplicaManager>,
}

impl PartitionLog {
    pub fn new(partition: Arc<Partition>, replicas: Arc<ReplicaManager>) -> PartitionLog {
        PartitionLog {
            partition,
            replicas,
        }
    }
}

impl RecordLog for PartitionLog {
    fn append(&mut self, records: &[CoordinatorRecord]) -> Result<(i64, i64), i16> {
        let now = now_ms();
        let batch: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (key, value) = r.encode();
                Record {
                    offset: i as i64,
                    timestamp: now,
                    key: Some(key),
                    value,
                    headers: Vec::new(),
                }
            })
            .collect();
        let bytes = encode_batch(&BatchSpec::new(0, Compression::None), &batch).map_err(|e| {
            tracing::error!(error = %e, "could not encode coordinator records");
            codes::UNKNOWN_SERVER_ERROR
        })?;
        let min_isr = self
            .replicas
            .topic_settings(OFFSETS_TOPIC)
            .map_or(1, |s| s.min_insync_replicas);
        // acks=all, as Kafka's coordinator writes: the write counts once the ISR has it.
        let info = self
            .partition
            .append_as_leader(&bytes, -1, min_isr)
            .map_err(|e| {
                tracing::warn!(partition = %self.partition.tp, code = e.code, message = ?e.message, "coordinator write failed");
                write_error_code(e.code)
            })?;
        Ok((info.first_offset, info.last_offset + 1))
    }

    fn committed(&self) -> i64 {
        self.partition.high_watermark()
    }
}

/// What loading found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadStats {
    pub records: u64,
    pub skipped: u64,
    pub end_offset: i64,
}

/// Replays the whole partition into `state` (blocking I/O: call from a blocking thread).
/// Records that cannot be decoded are skipped with a warning rather than failing the load.
pub fn load(partition: &Partition, state: &mut ShardState) -> Result<LoadStats, StorageError> {
    let log = partition.log();
    let end = log.log_end_offset();
    let mut next = log.log_start_offset();
    let mut stats = LoadStats {
        end_offset: end,
        ..LoadStats::default()
    };
    while next < end {
        let read = log.read(next, LOAD_CHUNK, end)?;
        if read.records.is_empty() {
            break;
        }
        let before = next;
        for b in StoredBatches::new(&read.records, 0) {
            let bytes = &read.records[b.position..b.position + b.header.size()];
            next = next.max(b.header.next_offset());
            // Control batches are transaction markers; transactional offset commits are not
            // written by Fjord (no transactions yet).
            if b.header.is_control() || b.header.is_transactional() {
                continue;
            }
            let (_, records) = decode_batch(bytes)?;
            for r in records {
                let Some(key) = &r.key else {
                    stats.skipped += 1;
                    continue;
                };
                match CoordinatorRecord::decode(key, r.value.as_deref()) {
                    Ok(Some(c)) => {
                        state.replay(r.offset, &c);
                        stats.records += 1;
                    }
                    Ok(None) => stats.skipped += 1,
                    Err(e) => {
                        tracing::warn!(partition = %partition.tp, offset = r.offset, error = %e, "skipping an undecodable coordinator record");
                        stats.skipped += 1;
                    }
                }
            }
        }
        if next <= before {
            // No progress (should not happen with a well-formed log): stop rather than spin.
            tracing::error!(partition = %partition.tp, offset = next, "loading made no progress; stopping");
            break;
        }
    }
    Ok(stats)
}
