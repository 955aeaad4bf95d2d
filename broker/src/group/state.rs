//! The state of one `__consumer_offsets` partition (a shard): its groups, their committed
//! offsets and deadlines, and the log its changes are written to.
//!
//! Operations run one at a time under the shard's lock. A write appends its records to the
//! partition while still holding the lock, so the log order is the order in which the changes
//! were made. What must wait until the records are committed (replicated as required: a sync
//! leader's assignment reaching the members, a static member's new id) is deferred with
//! [`Env::after_commit`] and runs once the partition's high watermark covers the records, or
//! with an error if that does not happen within `offsets.commit.timeout.ms`.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use crate::group::classic::{ClassicGroup, GroupState};
use crate::group::codes;
use crate::group::consumer::group::ConsumerGroup;
use crate::group::member::{JoinResult, SyncResult};
use crate::group::offsets::{OffsetAndMetadata, OffsetStore};
use crate::group::records::CoordinatorRecord;
use crate::group::timers::{TimerAction, TimerKey, Timers};
use crate::group::{GroupCoordinatorConfig, now_ms};

/// Where a shard's records go: the `__consumer_offsets` partition (or a test double).
pub trait RecordLog: Send {
    /// Appends `records` as one batch; returns the offset of the first record and the offset
    /// after the last. Errors are Kafka codes as the coordinator reports them.
    fn append(&mut self, records: &[CoordinatorRecord]) -> Result<(i64, i64), i16>;
    /// Records below this offset are committed.
    fn committed(&self) -> i64;
}

/// Most timers fired under one hold of the lock; the rest fire on the next round.
const MAX_TIMERS_PER_ROUND: usize = 10_000;

type DeferredAction = Box<dyn FnOnce(&mut ShardState, Result<(), i16>) + Send>;

struct Deferred {
    /// Runs once the log is committed up to here.
    end: i64,
    deadline: Instant,
    action: DeferredAction,
}

/// Everything a group operation touches besides the group itself.
pub struct Env {
    pub timers: Timers,
    pub config: Arc<GroupCoordinatorConfig>,
    log: Box<dyn RecordLog>,
    deferred: Vec<Deferred>,
    /// Successful appends so far (lets an operation tell whether it wrote anything).
    appends: u64,
}

impl Env {
    /// Appends records; see [`RecordLog::append`].
    pub fn append(&mut self, records: &[CoordinatorRecord]) -> Result<(i64, i64), i16> {
        if records.is_empty() {
            let at = self.log.committed();
            return Ok((at, at));
        }
        let r = self.log.append(records);
        if r.is_ok() {
            self.appends += 1;
        }
        r
    }

    pub fn appends(&self) -> u64 {
        self.appends
    }

    /// Runs `action` once the log is committed up to `end` (or fails it with
    /// COORDINATOR_NOT_AVAILABLE after `offsets.commit.timeout.ms`, as Kafka maps a timed-out
    /// write).
    pub fn after_commit(
        &mut self,
        end: i64,
        action: impl FnOnce(&mut ShardState, Result<(), i16>) + Send + 'static,
    ) {
        self.deferred.push(Deferred {
            end,
            deadline: Instant::now() + self.config.offsets_commit_timeout,
            action: Box::new(action),
        });
    }

    pub fn committed(&self) -> i64 {
        self.log.committed()
    }

    pub fn reschedule_heartbeat(&mut self, group: &str, member: &str, timeout_ms: i64) {
        self.timers.schedule_ms(
            TimerKey::Heartbeat {
                group: group.to_string(),
                member: member.to_string(),
            },
            timeout_ms,
            TimerAction::ExpireHeartbeat,
        );
    }

    pub fn cancel_heartbeat(&mut self, group: &str, member: &str) {
        self.timers.cancel(&TimerKey::Heartbeat {
            group: group.to_string(),
            member: member.to_string(),
        });
    }
}

pub struct ShardState {
    /// Classic groups (and "simple" groups that only commit offsets).
    pub groups: HashMap<String, ClassicGroup>,
    /// KIP-848 consumer groups. A group id is in at most one of the two maps.
    pub consumer_groups: HashMap<String, ConsumerGroup>,
    pub offsets: OffsetStore,
    pub env: Env,
}

impl ShardState {
    pub fn new(config: Arc<GroupCoordinatorConfig>, log: Box<dyn RecordLog>) -> ShardState {
        ShardState {
            groups: HashMap::new(),
            consumer_groups: HashMap::new(),
            offsets: OffsetStore::default(),
            env: Env {
                timers: Timers::default(),
                config,
                log,
                deferred: Vec::new(),
                appends: 0,
            },
        }
    }

    /// Applies a record read from the log (loading) or just written (offset commits and
    /// deletions): Kafka's replay.
    pub fn replay(&mut self, record_offset: i64, record: &CoordinatorRecord) {
        match record {
            CoordinatorRecord::OffsetCommit {
                group,
                topic,
                partition,
                value: Some(v),
            } => {
                // Offsets committed without group membership belong to a "simple" group: an
                // empty classic group without a protocol type.
                if !self.groups.contains_key(group) && !self.consumer_groups.contains_key(group) {
                    self.groups
                        .insert(group.clone(), ClassicGroup::new(group, now_ms()));
                }
                self.offsets.put(
                    group,
                    topic,
                    *partition,
                    OffsetAndMetadata::from_record(record_offset, v),
                );
            }
            CoordinatorRecord::OffsetCommit {
                group,
                topic,
                partition,
                value: None,
            } => {
                self.offsets.remove(group, topic, *partition);
            }
            CoordinatorRecord::GroupMetadata {
                group,
                value: Some(v),
            } => {
                self.groups
                    .insert(group.clone(), ClassicGroup::from_record(group, v));
            }
            CoordinatorRecord::GroupMetadata { group, value: None } => {
                if let Some(mut g) = self.groups.remove(group) {
                    g.transition(GroupState::Dead, now_ms());
                    self.env.timers.cancel_group(group);
                }
            }
            CoordinatorRecord::Consumer(r) => self.replay_consumer(r),
        }
    }

    /// After loading: restart every member's session and the periodic offset expiry.
    pub fn on_loaded(&mut self) {
        let ShardState { groups, env, .. } = self;
        for g in groups.values_mut() {
            for m in g.members() {
                env.reschedule_heartbeat(&g.id, &m.member_id, i64::from(m.session_timeout_ms));
            }
            if g.num_members() > env.config.max_size {
                env.prepare_rebalance(g, "the loaded group is over group.max.size");
            }
        }
        let interval = env.config.offsets_retention_check_interval;
        env.timers.schedule(
            TimerKey::OffsetsExpiry,
            interval,
            TimerAction::ExpireOffsets,
        );
        self.schedule_loaded_consumer_members();
        self.settle();
    }

    /// The partition is no longer led here: parked requests learn it (NOT_COORDINATOR) and
    /// every group becomes Dead.
    pub fn on_unloaded(&mut self) {
        let now = now_ms();
        for g in self.groups.values_mut() {
            g.transition(GroupState::Dead, now);
            for m in g.members_mut() {
                m.complete_join(JoinResult::error(
                    &m.member_id.clone(),
                    codes::NOT_COORDINATOR,
                ));
                m.complete_sync(SyncResult::error(codes::NOT_COORDINATOR));
            }
        }
        self.groups.clear();
        self.consumer_groups.clear();
        self.offsets = OffsetStore::default();
        self.env.timers = Timers::default();
        for d in std::mem::take(&mut self.env.deferred) {
            // Nothing may act on a group that is gone; the actions check for their group.
            drop(d);
        }
    }

    /// Runs deferred actions whose records are committed; fails the ones past their
    /// deadline. Actions may defer more; this loops until nothing is ready.
    pub fn settle(&mut self) {
        loop {
            let committed = self.env.log.committed();
            let now = Instant::now();
            let (ready, waiting): (Vec<Deferred>, Vec<Deferred>) =
                std::mem::take(&mut self.env.deferred)
                    .into_iter()
                    .partition(|d| d.end <= committed || d.deadline <= now);
            self.env.deferred = waiting;
            if ready.is_empty() {
                return;
            }
            for d in ready {
                let result = if d.end <= committed {
                    Ok(())
                } else {
                    Err(codes::COORDINATOR_NOT_AVAILABLE)
                };
                (d.action)(self, result);
            }
        }
    }

    /// Fires every timer that is due.
    pub fn fire_timers(&mut self) {
        // A timer may schedule another that is already due (a zero initial delay); bound the
        // rounds so a misconfigured interval cannot hold the lock forever.
        for _ in 0..MAX_TIMERS_PER_ROUND {
            let Some((key, action)) = self.env.timers.pop_due(Instant::now()) else {
                return;
            };
            self.fire(key, action);
            self.settle();
        }
    }

    fn fire(&mut self, key: TimerKey, action: TimerAction) {
        match (key, action) {
            (TimerKey::Heartbeat { group, member }, TimerAction::ExpireHeartbeat) => {
                self.expire_heartbeat(&group, &member);
            }
            (TimerKey::Join { group }, TimerAction::CompleteJoin) => {
                let ShardState { groups, env, .. } = self;
                if let Some(g) = groups.get_mut(&group) {
                    env.complete_join(g);
                }
            }
            (
                TimerKey::Join { group },
                TimerAction::InitialJoin {
                    delay_ms,
                    remaining_ms,
                },
            ) => {
                let ShardState { groups, env, .. } = self;
                if let Some(g) = groups.get_mut(&group) {
                    env.try_complete_initial_rebalance(g, delay_ms, remaining_ms);
                }
            }
            (TimerKey::Sync { group }, TimerAction::ExpireSync { generation }) => {
                let ShardState { groups, env, .. } = self;
                if let Some(g) = groups.get_mut(&group) {
                    env.expire_pending_sync(g, generation);
                }
            }
            (TimerKey::OffsetsExpiry, TimerAction::ExpireOffsets) => {
                self.expire_offsets();
                let interval = self.env.config.offsets_retention_check_interval;
                self.env.timers.schedule(
                    TimerKey::OffsetsExpiry,
                    interval,
                    TimerAction::ExpireOffsets,
                );
            }
            (TimerKey::ConsumerSession { group, member }, TimerAction::FenceConsumerMember) => {
                self.fence_consumer_member(&group, &member, None, "its session expired");
            }
            (
                TimerKey::ConsumerRevocation { group, member },
                TimerAction::ExpireRevocation { epoch },
            ) => {
                self.fence_consumer_member(
                    &group,
                    &member,
                    Some(epoch),
                    "it did not revoke its partitions within its rebalance timeout",
                );
            }
            (key, action) => {
                tracing::error!(?key, ?action, "timer key and action do not match");
            }
        }
    }

    /// When the shard next needs to run: the earliest timer or deferred deadline.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let deferred = self.env.deferred.iter().map(|d| d.deadline).min();
        match (self.env.timers.next_deadline(), deferred) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn has_deferred(&self) -> bool {
        !self.env.deferred.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! An in-memory log for shard tests.

    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;

    #[derive(Clone, Default)]
    pub struct MemLog {
        pub records: Arc<Mutex<Vec<(i64, CoordinatorRecord)>>>,
        pub fail_with: Arc<Mutex<Option<i16>>>,
    }

    impl RecordLog for MemLog {
        fn append(&mut self, records: &[CoordinatorRecord]) -> Result<(i64, i64), i16> {
            if let Some(code) = *self.fail_with.lock() {
                return Err(code);
            }
            let mut log = self.records.lock();
            let first = log.len() as i64;
            for r in records {
                let at = log.len() as i64;
                log.push((at, r.clone()));
            }
            Ok((first, log.len() as i64))
        }

        fn committed(&self) -> i64 {
            self.records.lock().len() as i64
        }
    }

    pub fn shard(config: GroupCoordinatorConfig) -> (ShardState, MemLog) {
        let log = MemLog::default();
        (
            ShardState::new(Arc::new(config), Box::new(log.clone())),
            log,
        )
    }
}
