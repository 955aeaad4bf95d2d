//! One hosted partition: its log plus the replication state the metadata image gives it
//! (leader, leader epoch, ISR), and the high watermark that follows from them.
//!
//! The high watermark is the smallest log end offset among the ISR. With one replica that is
//! the leader's own log end, so it moves on every append; once followers fetch, their offsets
//! enter the same computation through [`Partition::update_follower_offset`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fjord_raft::PartitionRegistration;
use fjord_storage::validate::RecordError;
use fjord_storage::{AppendInfo, Log, StorageError, TopicPartition};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::codes;

/// Replication state from the metadata image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaState {
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

impl From<&PartitionRegistration> for ReplicaState {
    fn from(p: &PartitionRegistration) -> Self {
        ReplicaState {
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
        }
    }
}

/// A partition-level failure, as the Kafka error the client will see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionError {
    pub code: i16,
    pub message: Option<String>,
    /// The records a produce was refused for (Produce v8+ `record_errors`).
    pub record_errors: Vec<RecordError>,
}

impl PartitionError {
    pub fn code(code: i16) -> Self {
        PartitionError {
            code,
            message: None,
            record_errors: Vec::new(),
        }
    }

    pub fn new(code: i16, message: impl Into<String>) -> Self {
        PartitionError {
            code,
            message: Some(message.into()),
            record_errors: Vec::new(),
        }
    }

    /// The Kafka error for a storage failure, with its message and any refused records.
    pub fn storage(e: &StorageError) -> Self {
        let record_errors = match e {
            StorageError::RecordsRejected { errors, .. } => errors.clone(),
            _ => Vec::new(),
        };
        PartitionError {
            code: codes::storage_error_code(e),
            message: Some(e.to_string()),
            record_errors,
        }
    }
}

pub struct Partition {
    pub tp: TopicPartition,
    pub topic_id: Uuid,
    local_id: i32,
    log: Arc<Log>,
    state: RwLock<ReplicaState>,
    /// Log end offsets followers last fetched from (replication fills this in).
    follower_offsets: Mutex<HashMap<i32, i64>>,
    /// Woken whenever the high watermark advances: fetch long polls and acks=all waits.
    hw_advanced: Notify,
}

impl Partition {
    pub fn new(
        tp: TopicPartition,
        topic_id: Uuid,
        local_id: i32,
        log: Arc<Log>,
        state: ReplicaState,
    ) -> Arc<Partition> {
        let p = Arc::new(Partition {
            tp,
            topic_id,
            local_id,
            log,
            state: RwLock::new(state),
            follower_offsets: Mutex::new(HashMap::new()),
            hw_advanced: Notify::new(),
        });
        p.maybe_advance_high_watermark();
        p
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    pub fn state(&self) -> ReplicaState {
        self.state.read().clone()
    }

    pub fn is_leader(&self) -> bool {
        self.state.read().leader == self.local_id
    }

    pub fn leader_epoch(&self) -> i32 {
        self.state.read().leader_epoch
    }

    pub fn high_watermark(&self) -> i64 {
        self.log.high_watermark()
    }

    /// Apply a newer registration from the metadata image.
    pub fn update(&self, state: ReplicaState) {
        let changed_leadership = {
            let mut s = self.state.write();
            if *s == state {
                return;
            }
            let changed = s.leader != state.leader || s.leader_epoch != state.leader_epoch;
            *s = state;
            changed
        };
        if changed_leadership {
            // A new epoch starts with no knowledge of where followers are.
            self.follower_offsets.lock().clear();
        }
        self.maybe_advance_high_watermark();
    }

    /// Checks a client's `current_leader_epoch` (-1 = not given) against ours.
    pub fn check_leader_epoch(&self, requested: i32) -> Result<(), PartitionError> {
        if requested < 0 {
            return Ok(());
        }
        let ours = self.leader_epoch();
        if requested > ours {
            Err(PartitionError::code(codes::UNKNOWN_LEADER_EPOCH))
        } else if requested < ours {
            Err(PartitionError::code(codes::FENCED_LEADER_EPOCH))
        } else {
            Ok(())
        }
    }

    /// Appends producer batches as the leader. `acks = -1` requires `min_insync_replicas` in
    /// the ISR first (Kafka checks before appending too). Idempotent batches are checked
    /// against the partition's producer state inside the log's append, atomically with it; a
    /// retry of a batch already in the log returns that batch's offsets with `duplicate` set.
    pub fn append_as_leader(
        &self,
        records: &[u8],
        acks: i16,
        min_insync_replicas: usize,
    ) -> Result<AppendInfo, PartitionError> {
        let (epoch, isr_len) = {
            let s = self.state.read();
            if s.leader != self.local_id {
                return Err(PartitionError::code(codes::NOT_LEADER_OR_FOLLOWER));
            }
            (s.leader_epoch, s.isr.len())
        };
        if acks == -1 && isr_len < min_insync_replicas {
            return Err(PartitionError::new(
                codes::NOT_ENOUGH_REPLICAS,
                format!("{isr_len} in-sync replicas, min.insync.replicas is {min_insync_replicas}"),
            ));
        }
        let info = self
            .log
            .append_as_leader(records, epoch, fjord_storage::now_ms())
            .map_err(|e| PartitionError::storage(&e))?;
        self.maybe_advance_high_watermark();
        Ok(info)
    }

    /// Records where a follower's log ends (from its fetch offset) and moves the high watermark.
    pub fn update_follower_offset(&self, replica: i32, log_end_offset: i64) {
        self.follower_offsets.lock().insert(replica, log_end_offset);
        self.maybe_advance_high_watermark();
    }

    /// HW = min log end offset over the ISR, never moving backwards.
    fn maybe_advance_high_watermark(&self) {
        let s = self.state.read();
        if s.leader != self.local_id {
            return;
        }
        let leo = self.log.log_end_offset();
        let followers = self.follower_offsets.lock();
        let mut hw = leo;
        for r in &s.isr {
            if *r != self.local_id {
                hw = hw.min(followers.get(r).copied().unwrap_or(0));
            }
        }
        drop(followers);
        drop(s);
        if hw > self.log.high_watermark() {
            self.log.set_high_watermark(hw);
            self.hw_advanced.notify_waiters();
        }
    }

    /// Waits until the high watermark reaches `offset` or `timeout` passes; true if reached.
    pub async fn wait_for_high_watermark(&self, offset: i64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.hw_advanced.notified();
            tokio::pin!(notified);
            // Register before checking so an advance between the check and the await wakes us.
            notified.as_mut().enable();
            if self.high_watermark() >= offset {
                return true;
            }
            if !self.is_leader() {
                return false;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.high_watermark() >= offset;
            }
        }
    }

    /// A future that completes at the next high-watermark advance. Call `enable()` on it
    /// before checking for data, so an append in between is not missed.
    pub fn hw_advanced(&self) -> tokio::sync::futures::Notified<'_> {
        self.hw_advanced.notified()
    }

    /// Wakes every waiter (leadership lost, partition removed, shutdown).
    pub fn wake_all(&self) {
        self.hw_advanced.notify_waiters();
    }
}
