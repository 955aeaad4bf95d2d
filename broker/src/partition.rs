//! One hosted partition: its log plus the replication state the metadata image gives it
//! (leader, leader epoch, ISR), and the high watermark that follows from them.
//!
//! The high watermark is the smallest log end offset among the ISR. With one replica that is
//! the leader's own log end, so it moves on every append; followers' offsets enter the same
//! computation through [`Partition::on_follower_fetch`], which also tracks when each follower
//! was last caught up (Kafka's `lastCaughtUpTimeMs`) for ISR expansion and shrinking.
//!
//! On a follower the high watermark is the leader's, as its fetch responses carry it
//! ([`Partition::follow_high_watermark`]); consumers reading from the follower (KIP-392) wait on
//! the same notification as on a leader.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fjord_raft::PartitionRegistration;
use fjord_raft::controller::requests::PartitionState;
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

/// How an acks=all wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    Committed,
    NotLeader,
    TimedOut,
}

/// What the leader knows of one follower, from its fetches.
#[derive(Clone, Copy, Debug)]
struct FollowerProgress {
    /// The follower's log end offset: its last fetch offset.
    log_end_offset: i64,
    /// When the follower last had everything the leader had (ms).
    last_caught_up_ms: i64,
    /// The leader's log end offset and the time at the follower's previous fetch.
    last_fetch_leader_leo: i64,
    last_fetch_ms: i64,
    /// The follower's log start offset, as its last fetch gave it (-1: unknown).
    log_start_offset: i64,
}

impl FollowerProgress {
    /// Nothing heard from the follower yet in this leader epoch.
    fn unknown(last_caught_up_ms: i64) -> FollowerProgress {
        FollowerProgress {
            log_end_offset: 0,
            last_caught_up_ms,
            last_fetch_leader_leo: 0,
            last_fetch_ms: 0,
            log_start_offset: -1,
        }
    }
}

/// An in-sync follower as the leader sees it, for choosing a consumer's read replica
/// (Kafka's `ReplicaView`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerView {
    pub replica: i32,
    /// -1 when the follower has not said.
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub last_caught_up_ms: i64,
}

pub struct Partition {
    pub tp: TopicPartition,
    pub topic_id: Uuid,
    local_id: i32,
    log: Arc<Log>,
    state: RwLock<ReplicaState>,
    /// Followers' progress while we lead (reset on every leadership change).
    followers: Mutex<HashMap<i32, FollowerProgress>>,
    /// An AlterPartition for this partition is on its way to the controller.
    isr_change_pending: AtomicBool,
    /// Woken whenever the high watermark advances: fetch long polls and acks=all waits.
    hw_advanced: Notify,
    /// Woken on every leader append: followers' fetch long polls.
    appended: Notify,
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
            followers: Mutex::new(HashMap::new()),
            isr_change_pending: AtomicBool::new(false),
            hw_advanced: Notify::new(),
            appended: Notify::new(),
        });
        p.reset_followers();
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
            // An AlterPartition answer may already have brought a newer partition epoch.
            if s.leader_epoch == state.leader_epoch && s.partition_epoch > state.partition_epoch {
                return;
            }
            let changed = s.leader != state.leader || s.leader_epoch != state.leader_epoch;
            if s.partition_epoch != state.partition_epoch {
                self.isr_change_pending.store(false, Ordering::SeqCst);
            }
            *s = state;
            changed
        };
        if changed_leadership {
            self.reset_followers();
            // Waiters re-check leadership: a former leader's acks=all produces fail now.
            self.wake_all();
        }
        self.maybe_advance_high_watermark();
    }

    /// A new leader epoch starts with no knowledge of where followers are; ISR members count
    /// as caught up now (Kafka's `resetReplicaState`), others as never.
    fn reset_followers(&self) {
        let s = self.state.read();
        let now = fjord_storage::now_ms();
        let mut followers = self.followers.lock();
        followers.clear();
        if s.leader != self.local_id {
            return;
        }
        for r in s.replicas.iter().filter(|r| **r != self.local_id) {
            let caught_up = if s.isr.contains(r) { now } else { 0 };
            followers.insert(*r, FollowerProgress::unknown(caught_up));
        }
    }

    pub fn local_id(&self) -> i32 {
        self.local_id
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
        self.append_in_epoch(records, acks, min_insync_replicas)
            .map(|(info, _)| info)
    }

    /// [`Self::append_as_leader`], also returning the leader epoch the records were written
    /// in (what [`Self::wait_for_commit`] needs).
    pub fn append_in_epoch(
        &self,
        records: &[u8],
        acks: i16,
        min_insync_replicas: usize,
    ) -> Result<(AppendInfo, i32), PartitionError> {
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
        if !info.duplicate {
            self.appended.notify_waiters();
        }
        self.maybe_advance_high_watermark();
        Ok((info, epoch))
    }

    /// A follower fetched from `fetch_offset` (so its log ends there) when our log ended at
    /// `leader_leo`. Moves the high watermark and returns the ISR to propose when the follower
    /// has caught up but is not in it (Kafka's ISR expansion; at most one proposal in flight).
    pub fn on_follower_fetch(
        &self,
        replica: i32,
        fetch_offset: i64,
        leader_leo: i64,
        now_ms: i64,
    ) -> Option<PartitionState> {
        {
            let mut followers = self.followers.lock();
            let p = followers
                .entry(replica)
                .or_insert(FollowerProgress::unknown(0));
            if fetch_offset >= leader_leo {
                p.last_caught_up_ms = p.last_caught_up_ms.max(now_ms);
            } else if fetch_offset >= p.last_fetch_leader_leo {
                p.last_caught_up_ms = p.last_caught_up_ms.max(p.last_fetch_ms);
            }
            p.log_end_offset = fetch_offset;
            p.last_fetch_leader_leo = leader_leo;
            p.last_fetch_ms = now_ms;
        }
        self.maybe_advance_high_watermark();
        let s = self.state.read();
        if s.leader != self.local_id
            || s.isr.contains(&replica)
            || !s.replicas.contains(&replica)
            || fetch_offset < self.log.high_watermark()
            || self.isr_change_pending.swap(true, Ordering::SeqCst)
        {
            return None;
        }
        let mut isr = s.isr.clone();
        isr.push(replica);
        Some(PartitionState {
            leader: s.leader,
            leader_epoch: s.leader_epoch,
            isr,
            partition_epoch: s.partition_epoch,
        })
    }

    /// The ISR to propose without followers that have not been caught up for `max_lag_ms`
    /// (Kafka's ISR shrink), if any must go and no proposal is in flight.
    pub fn isr_without_laggards(&self, now_ms: i64, max_lag_ms: i64) -> Option<PartitionState> {
        let s = self.state.read();
        if s.leader != self.local_id {
            return None;
        }
        let followers = self.followers.lock();
        let isr: Vec<i32> = s
            .isr
            .iter()
            .copied()
            .filter(|r| {
                *r == self.local_id
                    || followers
                        .get(r)
                        .is_some_and(|p| now_ms - p.last_caught_up_ms <= max_lag_ms)
            })
            .collect();
        drop(followers);
        if isr.len() == s.isr.len() || self.isr_change_pending.swap(true, Ordering::SeqCst) {
            return None;
        }
        Some(PartitionState {
            leader: s.leader,
            leader_epoch: s.leader_epoch,
            isr,
            partition_epoch: s.partition_epoch,
        })
    }

    /// The controller's answer to our AlterPartition (`None`: it failed; try again later).
    pub fn on_isr_change(&self, committed: Option<PartitionState>) {
        if let Some(c) = committed {
            let mut s = self.state.write();
            if c.leader_epoch == s.leader_epoch && c.partition_epoch > s.partition_epoch {
                s.isr = c.isr;
                s.partition_epoch = c.partition_epoch;
            }
        }
        self.isr_change_pending.store(false, Ordering::SeqCst);
        self.maybe_advance_high_watermark();
    }

    /// A follower's fetch said where its log starts (Fetch v5+ `log_start_offset`; -1 when
    /// not given). Kept for read-replica selection: a follower that no longer has an offset
    /// cannot serve it.
    pub fn on_follower_log_start(&self, replica: i32, log_start_offset: i64) {
        if let Some(p) = self.followers.lock().get_mut(&replica) {
            p.log_start_offset = log_start_offset;
        }
    }

    /// The ISR's followers that have fetched in this leader epoch, as we last heard from them
    /// (empty unless we lead): the candidates a consumer may be sent to read from.
    pub fn in_sync_followers(&self) -> Vec<FollowerView> {
        let s = self.state.read();
        if s.leader != self.local_id {
            return Vec::new();
        }
        let followers = self.followers.lock();
        s.isr
            .iter()
            .filter(|r| **r != self.local_id)
            .filter_map(|r| {
                let p = followers.get(r).filter(|p| p.last_fetch_ms > 0)?;
                Some(FollowerView {
                    replica: *r,
                    log_start_offset: p.log_start_offset,
                    log_end_offset: p.log_end_offset,
                    last_caught_up_ms: p.last_caught_up_ms,
                })
            })
            .collect()
    }

    /// The log end offset of every follower we have heard from (tests, metrics).
    pub fn follower_log_end_offsets(&self) -> HashMap<i32, i64> {
        self.followers
            .lock()
            .iter()
            .map(|(r, p)| (*r, p.log_end_offset))
            .collect()
    }

    /// HW = min log end offset over the ISR, never moving backwards.
    fn maybe_advance_high_watermark(&self) {
        let s = self.state.read();
        if s.leader != self.local_id {
            return;
        }
        let leo = self.log.log_end_offset();
        let followers = self.followers.lock();
        let mut hw = leo;
        for r in &s.isr {
            if *r != self.local_id {
                hw = hw.min(followers.get(r).map_or(0, |p| p.log_end_offset));
            }
        }
        drop(followers);
        drop(s);
        if hw > self.log.high_watermark() {
            self.log.set_high_watermark(hw);
            self.hw_advanced.notify_waiters();
        }
    }

    /// As a follower: the leader said its high watermark is `leader_hw`. Ours follows it, never
    /// past our own log end, and waiters (consumers reading from this follower) are woken when
    /// it advances. Ignored once we lead: then the ISR decides it.
    pub fn follow_high_watermark(&self, leader_hw: i64) {
        if leader_hw < 0 || self.is_leader() {
            return;
        }
        let before = self.log.high_watermark();
        self.log
            .set_high_watermark(leader_hw.min(self.log.log_end_offset()));
        if self.log.high_watermark() > before {
            self.hw_advanced.notify_waiters();
        }
    }

    /// Waits until the high watermark reaches `offset` or `timeout` passes; true if reached
    /// while this broker still leads in the epoch it led when the wait began.
    pub async fn wait_for_high_watermark(&self, offset: i64, timeout: Duration) -> bool {
        let epoch = self.leader_epoch();
        self.wait_for_commit(offset, epoch, timeout).await == Commit::Committed
    }

    /// Waits until records below `offset`, written as leader in `epoch`, are committed (the
    /// high watermark passed them while we still lead in that epoch). A leadership change
    /// means they may be truncated, so it ends the wait: a follower's high watermark follows
    /// another leader's log and says nothing about our records.
    pub async fn wait_for_commit(&self, offset: i64, epoch: i32, timeout: Duration) -> Commit {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.hw_advanced.notified();
            tokio::pin!(notified);
            // Register before checking so an advance between the check and the await wakes us.
            notified.as_mut().enable();
            {
                let s = self.state.read();
                if s.leader != self.local_id || s.leader_epoch != epoch {
                    return Commit::NotLeader;
                }
            }
            if self.high_watermark() >= offset {
                return Commit::Committed;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Commit::TimedOut;
            }
        }
    }

    /// The ISR's size now (acks=all checks it against `min.insync.replicas`).
    pub fn isr_len(&self) -> usize {
        self.state.read().isr.len()
    }

    /// A future that completes at the next high-watermark advance. Call `enable()` on it
    /// before checking for data, so an append in between is not missed.
    pub fn hw_advanced(&self) -> tokio::sync::futures::Notified<'_> {
        self.hw_advanced.notified()
    }

    /// A future that completes at the next leader append (followers' long polls).
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }

    /// Wakes every waiter (leadership lost, partition removed, shutdown).
    pub fn wake_all(&self) {
        self.hw_advanced.notify_waiters();
        self.appended.notify_waiters();
    }
}
