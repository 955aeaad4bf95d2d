//! One step of a member towards its target assignment (Kafka's `CurrentAssignmentBuilder`).
//!
//! - A Stable member behind the target epoch computes its next assignment.
//! - A member with partitions pending revocation waits until its heartbeat no longer lists
//!   them as owned, then moves to the next epoch.
//! - A member waiting for partitions other members hold takes them as they are released.
//!
//! The next assignment keeps what the member has and the target still gives it; what the
//! target no longer gives it must be revoked first (the member stays in its epoch meanwhile);
//! otherwise it moves to the target epoch and receives the target's new partitions that no one
//! else holds, waiting for the others.

use uuid::Uuid;

use crate::group::codes;
use crate::group::consumer::member::{ConsumerMember, MemberState};
use crate::group::consumer::{Assignment, intersects, normalized};

/// The inputs of a reconciliation step.
pub struct Reconcile<'a> {
    pub target_epoch: i32,
    pub target: &'a Assignment,
    /// The partitions the member reported as owned in this heartbeat (`None`: not reported).
    pub owned: Option<&'a Assignment>,
    /// Whether another member still holds a partition.
    pub held_by_other: &'a dyn Fn(Uuid, i32) -> bool,
}

/// A reconciliation step that cannot proceed: the member is fenced (FENCED_MEMBER_EPOCH).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fenced(pub String);

impl Fenced {
    pub fn code(&self) -> i16 {
        codes::FENCED_MEMBER_EPOCH
    }
}

impl Reconcile<'_> {
    /// The member after this step (equal to `member` if nothing can change).
    pub fn step(&self, member: &ConsumerMember) -> Result<ConsumerMember, Fenced> {
        match member.state {
            MemberState::Stable => {
                if member.member_epoch == self.target_epoch {
                    Ok(member.clone())
                } else {
                    Ok(self.next(member, member.member_epoch, &member.assigned))
                }
            }
            MemberState::UnrevokedPartitions => {
                if self.still_owns(&member.pending_revocation) {
                    Ok(member.clone())
                } else {
                    // The revocation is acknowledged: the member may move past its epoch.
                    Ok(self.next(member, member.member_epoch + 1, &member.assigned))
                }
            }
            MemberState::UnreleasedPartitions => {
                Ok(self.next(member, member.member_epoch, &member.assigned))
            }
            MemberState::Unknown => {
                // Written by a newer version: start over from nothing owned.
                if self.owned.is_none_or(|o| !o.is_empty()) {
                    return Err(Fenced(
                        "The consumer group member is in a unknown state. The member must abandon all its partitions and rejoin.".into(),
                    ));
                }
                Ok(self.next(member, self.target_epoch, &member.assigned))
            }
        }
    }

    /// Whether the member may still own one of `revoking`: it did not say, or said it does.
    fn still_owns(&self, revoking: &Assignment) -> bool {
        match self.owned {
            None => true,
            Some(owned) => intersects(owned, revoking),
        }
    }

    fn next(&self, member: &ConsumerMember, epoch: i32, current: &Assignment) -> ConsumerMember {
        let mut kept = Assignment::new();
        let mut revoking = Assignment::new();
        let mut gained = Assignment::new();
        let mut unreleased = false;
        let topics: std::collections::BTreeSet<&Uuid> =
            self.target.keys().chain(current.keys()).collect();
        for t in topics {
            let target = self.target.get(t);
            let has = current.get(t);
            for p in has.into_iter().flatten() {
                if target.is_some_and(|tp| tp.contains(p)) {
                    kept.entry(*t).or_default().insert(*p);
                } else {
                    revoking.entry(*t).or_default().insert(*p);
                }
            }
            for p in target.into_iter().flatten() {
                if has.is_some_and(|hp| hp.contains(p)) {
                    continue;
                }
                if (self.held_by_other)(*t, *p) {
                    unreleased = true;
                } else {
                    gained.entry(*t).or_default().insert(*p);
                }
            }
        }
        let mut next = member.clone();
        if !revoking.is_empty() && self.still_owns(&revoking) {
            // Revoke first; the epoch only moves once the member let go.
            next.state = MemberState::UnrevokedPartitions;
            next.bump_epoch(epoch);
            next.assigned = normalized(kept);
            next.pending_revocation = normalized(revoking);
            return next;
        }
        for (t, ps) in gained {
            kept.entry(t).or_default().extend(ps);
        }
        next.state = if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
        next.bump_epoch(self.target_epoch);
        next.assigned = normalized(kept);
        next.pending_revocation = Assignment::new();
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Uuid {
        Uuid::from_bytes([7; 16])
    }

    fn a(ps: &[i32]) -> Assignment {
        normalized(Assignment::from([(t(), ps.iter().copied().collect())]))
    }

    fn member(epoch: i32, assigned: &[i32]) -> ConsumerMember {
        let mut m = ConsumerMember::new("m");
        m.member_epoch = epoch;
        m.assigned = a(assigned);
        m
    }

    fn nobody(_: Uuid, _: i32) -> bool {
        false
    }

    #[test]
    fn a_new_member_takes_free_partitions_and_waits_for_held_ones() {
        let target = a(&[0, 1, 2]);
        let held = |_: Uuid, p: i32| p == 2;
        let r = Reconcile {
            target_epoch: 3,
            target: &target,
            owned: Some(&Assignment::new()),
            held_by_other: &held,
        };
        let next = r.step(&member(0, &[])).unwrap();
        assert_eq!(next.member_epoch, 3);
        assert_eq!(next.previous_member_epoch, 0);
        assert_eq!(next.state, MemberState::UnreleasedPartitions);
        assert_eq!(next.assigned, a(&[0, 1]));
        // Partition 2 is released: the next step takes it and the member is Stable.
        let r = Reconcile {
            held_by_other: &nobody,
            ..r
        };
        let last = r.step(&next).unwrap();
        assert_eq!(last.state, MemberState::Stable);
        assert_eq!(last.assigned, a(&[0, 1, 2]));
        assert_eq!(last.member_epoch, 3);
    }

    #[test]
    fn revocation_comes_before_the_epoch_moves() {
        let target = a(&[0, 1]);
        let owned_all = a(&[0, 1, 2, 3]);
        let r = Reconcile {
            target_epoch: 5,
            target: &target,
            owned: Some(&owned_all),
            held_by_other: &nobody,
        };
        let m = member(4, &[0, 1, 2, 3]);
        let next = r.step(&m).unwrap();
        assert_eq!(next.state, MemberState::UnrevokedPartitions);
        assert_eq!(next.member_epoch, 4, "the epoch waits for the revocation");
        assert_eq!(next.previous_member_epoch, 4);
        assert_eq!(next.assigned, a(&[0, 1]));
        assert_eq!(next.pending_revocation, a(&[2, 3]));
        // Still owning partition 3: no progress.
        let still = a(&[0, 1, 3]);
        let r2 = Reconcile {
            owned: Some(&still),
            ..r
        };
        assert_eq!(r2.step(&next).unwrap(), next);
        // A heartbeat that does not report owned partitions proves nothing either.
        let r3 = Reconcile { owned: None, ..r };
        assert_eq!(r3.step(&next).unwrap(), next);
        // Released: the member moves to the target epoch.
        let released = a(&[0, 1]);
        let r4 = Reconcile {
            owned: Some(&released),
            ..r
        };
        let done = r4.step(&next).unwrap();
        assert_eq!(done.state, MemberState::Stable);
        assert_eq!(done.member_epoch, 5);
        assert_eq!(done.previous_member_epoch, 4);
        assert!(done.pending_revocation.is_empty());
    }

    #[test]
    fn a_member_that_already_let_go_moves_on_at_once() {
        let target = a(&[0]);
        let owned = a(&[0]);
        let r = Reconcile {
            target_epoch: 2,
            target: &target,
            owned: Some(&owned),
            held_by_other: &nobody,
        };
        let next = r.step(&member(1, &[0, 1])).unwrap();
        assert_eq!(next.state, MemberState::Stable);
        assert_eq!(next.member_epoch, 2);
        assert_eq!(next.assigned, a(&[0]));
    }

    #[test]
    fn an_unknown_state_fences_unless_the_member_owns_nothing() {
        let target = a(&[0]);
        let mut m = member(1, &[0]);
        m.state = MemberState::Unknown;
        let r = Reconcile {
            target_epoch: 2,
            target: &target,
            owned: None,
            held_by_other: &nobody,
        };
        assert!(r.step(&m).is_err());
        let empty = Assignment::new();
        let r = Reconcile {
            owned: Some(&empty),
            ..r
        };
        assert_eq!(r.step(&m).unwrap().state, MemberState::Stable);
    }

    #[test]
    fn member_state_values_match_kafka() {
        for s in [
            MemberState::Stable,
            MemberState::UnrevokedPartitions,
            MemberState::UnreleasedPartitions,
            MemberState::Unknown,
        ] {
            assert_eq!(MemberState::from_value(s.value()), s);
        }
        assert_eq!(MemberState::UnrevokedPartitions.value(), 1);
        assert_eq!(MemberState::from_value(55), MemberState::Unknown);
    }
}
