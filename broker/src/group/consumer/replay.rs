//! Applying consumer group records to a shard: the only way consumer groups change, whether
//! the records were just written or are read back when the partition loads (Kafka's `replay`).
//! Records that contradict the state (a tombstone for something absent) are ignored.

use crate::group::classic::GroupState;
use crate::group::consumer::group::ConsumerGroup;
use crate::group::consumer::member::MemberState;
use crate::group::consumer::records::ConsumerRecord;
use crate::group::consumer::{Assignment, LEAVE_GROUP_MEMBER_EPOCH};
use crate::group::state::ShardState;

impl ShardState {
    pub(crate) fn replay_consumer(&mut self, record: &ConsumerRecord) {
        match record {
            ConsumerRecord::GroupEpoch {
                group,
                epoch: Some(e),
            } => self.consumer_group_entry(group).group_epoch = *e,
            ConsumerRecord::GroupEpoch { group, epoch: None } => {
                if let Some(g) = self.consumer_groups.remove(group)
                    && !g.is_empty()
                {
                    tracing::warn!(group = %group, members = g.num_members(), "deleted a consumer group that still had members");
                }
                self.env.timers.cancel_group(group);
            }
            ConsumerRecord::SubscriptionMetadata {
                group,
                topics: Some(topics),
            } => {
                self.consumer_group_entry(group).subscription_metadata =
                    topics.iter().map(|t| (t.name.clone(), t.clone())).collect();
            }
            ConsumerRecord::SubscriptionMetadata {
                group,
                topics: None,
            } => {
                if let Some(g) = self.consumer_groups.get_mut(group) {
                    g.subscription_metadata.clear();
                }
            }
            ConsumerRecord::MemberSubscription {
                group,
                member,
                value: Some(v),
            } => {
                let g = self.consumer_group_entry(group);
                let mut m = g.member_entry(member).clone();
                m.instance_id = v.instance_id.clone();
                m.rack_id = v.rack_id.clone();
                m.client_id = v.client_id.clone();
                m.client_host = v.client_host.clone();
                m.subscribed_topic_names = v.subscribed_topic_names.iter().cloned().collect();
                m.subscribed_topic_regex = v.subscribed_topic_regex.clone();
                m.rebalance_timeout_ms = v.rebalance_timeout_ms;
                m.server_assignor = v.server_assignor.clone();
                g.put_member(m);
            }
            ConsumerRecord::MemberSubscription {
                group,
                member,
                value: None,
            } => {
                if let Some(g) = self.consumer_groups.get_mut(group) {
                    g.remove_member(member);
                }
            }
            ConsumerRecord::TargetAssignmentEpoch {
                group,
                epoch: Some(e),
            } => self.consumer_group_entry(group).assignment_epoch = *e,
            ConsumerRecord::TargetAssignmentEpoch { group, epoch: None } => {
                if let Some(g) = self.consumer_groups.get_mut(group) {
                    g.assignment_epoch = -1;
                }
            }
            ConsumerRecord::TargetAssignment {
                group,
                member,
                partitions: Some(a),
            } => self
                .consumer_group_entry(group)
                .set_target(member, a.clone()),
            ConsumerRecord::TargetAssignment {
                group,
                member,
                partitions: None,
            } => {
                if let Some(g) = self.consumer_groups.get_mut(group) {
                    g.remove_target(member);
                }
            }
            ConsumerRecord::CurrentAssignment {
                group,
                member,
                value: Some(v),
            } => {
                let g = self.consumer_group_entry(group);
                let mut m = g.member_entry(member).clone();
                m.member_epoch = v.member_epoch;
                m.previous_member_epoch = v.previous_member_epoch;
                m.state = MemberState::from_value(v.state);
                m.assigned = v.assigned.clone();
                m.pending_revocation = v.pending_revocation.clone();
                g.put_member(m);
            }
            ConsumerRecord::CurrentAssignment {
                group,
                member,
                value: None,
            } => {
                // The first of a member's tombstones: it holds nothing any more.
                if let Some(g) = self.consumer_groups.get_mut(group)
                    && let Some(m) = g.member(member)
                {
                    let mut m = m.clone();
                    m.member_epoch = LEAVE_GROUP_MEMBER_EPOCH;
                    m.assigned = Assignment::new();
                    m.pending_revocation = Assignment::new();
                    g.put_member(m);
                }
            }
        }
    }

    /// The consumer group `id`, created empty if absent. An empty classic group of the same
    /// id gives way (its tombstone is written first; this covers logs where it is missing).
    fn consumer_group_entry(&mut self, id: &str) -> &mut ConsumerGroup {
        if !self.consumer_groups.contains_key(id)
            && let Some(mut classic) = self.groups.remove(id)
        {
            if classic.num_members() > 0 {
                tracing::warn!(group = %id, "a consumer group record replaced a classic group with members");
            }
            classic.transition(GroupState::Dead, crate::group::now_ms());
            self.env.timers.cancel_group(id);
        }
        self.consumer_groups
            .entry(id.to_string())
            .or_insert_with(|| ConsumerGroup::new(id))
    }
}
