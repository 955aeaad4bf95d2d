//! KIP-848 consumer groups: the `consumer` group protocol of ConsumerGroupHeartbeat (API 68)
//! and ConsumerGroupDescribe (API 69), with the semantics of Apache Kafka's group coordinator
//! (`GroupMetadataManager`, `ConsumerGroup`, `CurrentAssignmentBuilder`, the server-side
//! assignors).
//!
//! A consumer group has a *group epoch*, bumped whenever its membership, its members'
//! subscriptions or the metadata of the subscribed topics change. When the group epoch is ahead
//! of the *target assignment epoch*, the group's assignor (`uniform` or `range`) computes a new
//! target assignment. Each member then converges towards its target on its own heartbeats: it is
//! first asked to revoke what it must give up, and only once its heartbeat shows it released
//! those partitions does it move to the new epoch; a partition is only handed to a new owner
//! once no other member holds it ([`reconcile`]).
//!
//! Every change is a record in `__consumer_offsets` in Kafka's own formats ([`records`]); the
//! state is changed only by replaying those records ([`replay`]), so a coordinator that loads
//! the partition after a restart rebuilds exactly the same groups.
//!
//! - [`member`]: one member; [`group`]: one group, its target assignment and who owns which
//!   partition.
//! - [`assignor`]: the `uniform` and `range` server assignors.
//! - [`reconcile`]: one member's step towards its target assignment.
//! - [`heartbeat`]: ConsumerGroupHeartbeat (join, heartbeat, leave), session and revocation
//!   timeouts; [`describe`]: ConsumerGroupDescribe.

pub mod assignor;
pub mod describe;
pub mod group;
pub mod heartbeat;
pub mod member;
pub mod reconcile;
pub mod records;
pub mod replay;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// The member epoch a member sends to leave the group.
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;
/// The member epoch a static member sends to leave temporarily (it keeps its partitions until
/// it comes back or its session expires).
pub const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;

/// The group type ListGroups reports, and the protocol type of its members.
pub const CONSUMER_GROUP_TYPE: &str = "consumer";

/// Partitions by topic id. Topics without partitions are never stored, so two equal
/// assignments compare equal.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// Drops topics without partitions.
pub fn normalized(mut a: Assignment) -> Assignment {
    a.retain(|_, p| !p.is_empty());
    a
}

/// Whether every partition of `a` is in `b`.
pub fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter().all(|(t, ps)| {
        ps.is_empty() || b.get(t).is_some_and(|bs| ps.iter().all(|p| bs.contains(p)))
    })
}

/// Whether `a` and `b` share a partition.
pub fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .any(|(t, ps)| b.get(t).is_some_and(|bs| ps.iter().any(|p| bs.contains(p))))
}

/// The number of partitions in `a`.
pub fn partition_count(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}
