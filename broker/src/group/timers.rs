//! Keyed deadlines of one shard: member sessions, join and sync phases, offset expiry.
//! Scheduling a key again replaces its deadline, as Kafka's coordinator timer does.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKey {
    /// A member's session (or, for a new or pending member, its join deadline).
    Heartbeat { group: String, member: String },
    /// The end of a group's join phase.
    Join { group: String },
    /// The end of a group's sync phase.
    Sync { group: String },
    /// The periodic removal of expired offsets.
    OffsetsExpiry,
    /// A consumer group member's session.
    ConsumerSession { group: String, member: String },
    /// How long a consumer group member may take to revoke partitions.
    ConsumerRevocation { group: String, member: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerAction {
    ExpireHeartbeat,
    CompleteJoin,
    /// The delayed first rebalance of an empty group (`group.initial.rebalance.delay.ms`).
    InitialJoin {
        delay_ms: i32,
        remaining_ms: i32,
    },
    ExpireSync {
        generation: i32,
    },
    ExpireOffsets,
    /// Removes a consumer group member whose session ended.
    FenceConsumerMember,
    /// Removes a consumer group member still in `epoch` (it did not revoke in time).
    ExpireRevocation {
        epoch: i32,
    },
}

#[derive(Default)]
pub struct Timers {
    by_key: HashMap<TimerKey, (Instant, u64, TimerAction)>,
    queue: BTreeSet<(Instant, u64, TimerKey)>,
    seq: u64,
}

impl Timers {
    /// Sets `key` to fire `action` after `delay`, replacing an earlier schedule of the key.
    pub fn schedule(&mut self, key: TimerKey, delay: Duration, action: TimerAction) {
        self.schedule_at(key, Instant::now() + delay, action);
    }

    pub fn schedule_at(&mut self, key: TimerKey, at: Instant, action: TimerAction) {
        self.cancel(&key);
        self.seq += 1;
        self.queue.insert((at, self.seq, key.clone()));
        self.by_key.insert(key, (at, self.seq, action));
    }

    pub fn schedule_ms(&mut self, key: TimerKey, delay_ms: i64, action: TimerAction) {
        self.schedule(key, Duration::from_millis(delay_ms.max(0) as u64), action);
    }

    pub fn cancel(&mut self, key: &TimerKey) {
        if let Some((at, seq, _)) = self.by_key.remove(key) {
            self.queue.remove(&(at, seq, key.clone()));
        }
    }

    pub fn contains(&self, key: &TimerKey) -> bool {
        self.by_key.contains_key(key)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _, _)| *at)
    }

    /// Removes and returns the earliest timer due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(TimerKey, TimerAction)> {
        let (at, _, key) = self.queue.first()?.clone();
        if at > now {
            return None;
        }
        self.queue.pop_first();
        let (_, _, action) = self.by_key.remove(&key)?;
        Some((key, action))
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Drops every timer of `group` (the group was deleted or unloaded).
    pub fn cancel_group(&mut self, group: &str) {
        let keys: Vec<TimerKey> = self
            .by_key
            .keys()
            .filter(|k| match k {
                TimerKey::Heartbeat { group: g, .. }
                | TimerKey::Join { group: g }
                | TimerKey::Sync { group: g }
                | TimerKey::ConsumerSession { group: g, .. }
                | TimerKey::ConsumerRevocation { group: g, .. } => g == group,
                TimerKey::OffsetsExpiry => false,
            })
            .cloned()
            .collect();
        for k in keys {
            self.cancel(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(g: &str) -> TimerKey {
        TimerKey::Join { group: g.into() }
    }

    #[test]
    fn rescheduling_replaces_and_due_timers_pop_in_order() {
        let base = Instant::now();
        let ms = |n| base + Duration::from_millis(n);
        let mut t = Timers::default();
        t.schedule_at(join("a"), ms(100), TimerAction::CompleteJoin);
        t.schedule_at(join("b"), ms(50), TimerAction::CompleteJoin);
        t.schedule_at(join("a"), ms(10), TimerAction::ExpireOffsets);
        assert_eq!(t.len(), 2);
        assert_eq!(t.next_deadline(), Some(ms(10)));
        assert!(t.pop_due(ms(5)).is_none());
        assert_eq!(
            t.pop_due(ms(60)),
            Some((join("a"), TimerAction::ExpireOffsets))
        );
        assert_eq!(
            t.pop_due(ms(60)),
            Some((join("b"), TimerAction::CompleteJoin))
        );
        assert!(t.pop_due(ms(60)).is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn cancel_group_keeps_other_groups() {
        let at = Instant::now();
        let mut t = Timers::default();
        t.schedule_at(join("a"), at, TimerAction::CompleteJoin);
        t.schedule_at(
            TimerKey::Heartbeat {
                group: "a".into(),
                member: "m".into(),
            },
            at,
            TimerAction::ExpireHeartbeat,
        );
        t.schedule_at(join("b"), at, TimerAction::CompleteJoin);
        t.cancel_group("a");
        assert_eq!(t.len(), 1);
        assert!(t.contains(&join("b")));
    }
}
