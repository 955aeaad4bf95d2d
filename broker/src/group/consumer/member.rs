//! One member of a consumer group: its subscription (from ConsumerGroupMemberMetadata records)
//! and where it stands in the reconciliation of its assignment (from
//! ConsumerGroupCurrentMemberAssignment records).

use std::collections::BTreeSet;

use crate::group::consumer::Assignment;

/// Where a member stands in reconciling its assignment with its target (Kafka's `MemberState`;
/// the values are the ones stored in records).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Converged on the target assignment of its epoch.
    Stable,
    /// Must revoke partitions before it can move to the next epoch.
    UnrevokedPartitions,
    /// At the target epoch, waiting for partitions other members still hold.
    UnreleasedPartitions,
    /// A state a newer version wrote; the member is reconciled from scratch.
    Unknown,
}

impl MemberState {
    pub fn value(self) -> i8 {
        match self {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
            MemberState::Unknown => 127,
        }
    }

    pub fn from_value(v: i8) -> MemberState {
        match v {
            0 => MemberState::Stable,
            1 => MemberState::UnrevokedPartitions,
            2 => MemberState::UnreleasedPartitions,
            _ => MemberState::Unknown,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerMember {
    pub member_id: String,
    /// The epoch the member must send; -1 once removed, -2 while a static member is away.
    pub member_epoch: i32,
    /// The epoch before the last bump: a member whose answer was lost may still send it.
    pub previous_member_epoch: i32,
    pub state: MemberState,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// How long the member may take to revoke partitions; -1 if never given.
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: BTreeSet<String>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member may use now.
    pub assigned: Assignment,
    /// The partitions the member must give up before it moves on.
    pub pending_revocation: Assignment,
}

impl ConsumerMember {
    /// A member that just joined: epoch 0, nothing assigned.
    pub fn new(member_id: &str) -> ConsumerMember {
        ConsumerMember {
            member_id: member_id.to_string(),
            member_epoch: 0,
            previous_member_epoch: 0,
            state: MemberState::Stable,
            instance_id: None,
            rack_id: None,
            rebalance_timeout_ms: -1,
            client_id: String::new(),
            client_host: String::new(),
            subscribed_topic_names: BTreeSet::new(),
            subscribed_topic_regex: None,
            server_assignor: None,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
        }
    }

    /// Whether the member converged on the target assignment of `epoch`.
    pub fn is_reconciled_to(&self, epoch: i32) -> bool {
        self.state == MemberState::Stable && self.member_epoch == epoch
    }

    /// Whether the subscription differs from `other`'s (a change bumps the group epoch).
    pub fn subscription_differs(&self, other: &ConsumerMember) -> bool {
        self.subscribed_topic_names != other.subscribed_topic_names
            || self.subscribed_topic_regex != other.subscribed_topic_regex
    }

    /// Moves to `epoch`, remembering the one it leaves.
    pub fn bump_epoch(&mut self, epoch: i32) {
        self.previous_member_epoch = self.member_epoch;
        self.member_epoch = epoch;
    }
}
