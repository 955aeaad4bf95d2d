//! One consumer group as its records describe it (Kafka's `ConsumerGroup`): epochs, members,
//! the target assignment, the subscribed topics' metadata, and who holds which partition.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fjord_raft::MetadataImage;
use uuid::Uuid;

use crate::group::codes;
use crate::group::consumer::member::ConsumerMember;
use crate::group::consumer::records::{ConsumerRecord, TopicMetadata};
use crate::group::consumer::{Assignment, normalized};
use crate::group::records::CoordinatorRecord;
use crate::util::is_internal_topic;

/// The state of a consumer group as ListGroups and ConsumerGroupDescribe report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConsumerGroupState {
    Empty,
    /// The group epoch moved; the target assignment is not computed yet.
    Assigning,
    /// Some member has not converged on the target assignment.
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

pub struct ConsumerGroup {
    pub id: String,
    pub group_epoch: i32,
    /// The epoch of the target assignment; -1 once its tombstone is replayed.
    pub assignment_epoch: i32,
    /// The subscribed topics that exist, by name, as of the last epoch bump.
    pub subscription_metadata: BTreeMap<String, TopicMetadata>,
    members: BTreeMap<String, ConsumerMember>,
    /// Instance id → member id.
    static_members: HashMap<String, String>,
    target: HashMap<String, Assignment>,
    /// Who holds each partition (assigned or pending revocation), at which member epoch.
    owners: HashMap<(Uuid, i32), (String, i32)>,
    /// The metadata image the subscription metadata was last checked against (not persisted:
    /// a reloaded group checks again on its next heartbeat).
    pub checked_image: Option<u64>,
}

impl ConsumerGroup {
    pub fn new(id: &str) -> ConsumerGroup {
        ConsumerGroup {
            id: id.to_string(),
            group_epoch: 0,
            assignment_epoch: 0,
            subscription_metadata: BTreeMap::new(),
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            target: HashMap::new(),
            owners: HashMap::new(),
            checked_image: None,
        }
    }

    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.group_epoch > self.assignment_epoch {
            ConsumerGroupState::Assigning
        } else if self
            .members
            .values()
            .any(|m| !m.is_reconciled_to(self.assignment_epoch))
        {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn member(&self, id: &str) -> Option<&ConsumerMember> {
        self.members.get(id)
    }

    pub fn members(&self) -> impl Iterator<Item = &ConsumerMember> {
        self.members.values()
    }

    pub fn num_members(&self) -> usize {
        self.members.len()
    }

    pub fn static_member(&self, instance_id: &str) -> Option<&ConsumerMember> {
        self.static_members
            .get(instance_id)
            .and_then(|id| self.members.get(id))
    }

    /// A member's target assignment. A member replacing a static member with the same
    /// instance id inherits that member's target until the next assignment.
    pub fn target_of(&self, member_id: &str, instance_id: Option<&str>) -> Assignment {
        if let Some(t) = self.target.get(member_id) {
            return t.clone();
        }
        instance_id
            .and_then(|i| self.static_members.get(i))
            .and_then(|id| self.target.get(id))
            .cloned()
            .unwrap_or_default()
    }

    pub fn target(&self) -> &HashMap<String, Assignment> {
        &self.target
    }

    /// The member holding a partition and its epoch, if any.
    pub fn owner(&self, topic: Uuid, partition: i32) -> Option<(&str, i32)> {
        self.owners
            .get(&(topic, partition))
            .map(|(m, e)| (m.as_str(), *e))
    }

    /// The assignor the members prefer (the one most of them name), counting `updated` in
    /// place of the member with its id; ties go to the name first in alphabetical order.
    pub fn preferred_assignor(&self, updated: Option<&ConsumerMember>) -> Option<String> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        let replaced = updated.map(|m| m.member_id.as_str());
        for m in self
            .members
            .values()
            .filter(|m| Some(m.member_id.as_str()) != replaced)
            .chain(updated)
        {
            if let Some(a) = m.server_assignor.as_deref() {
                *counts.entry(a).or_insert(0) += 1;
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for (name, n) in counts {
            if best.is_none_or(|(_, b)| n > b) {
                best = Some((name, n));
            }
        }
        best.map(|(n, _)| n.to_string())
    }

    /// Whether a member of the group consumes `topic` (OffsetDelete refuses those offsets,
    /// and they never expire).
    pub fn is_subscribed_to_topic(&self, topic: &str) -> bool {
        self.subscription_metadata.contains_key(topic)
            || self
                .members
                .values()
                .any(|m| m.subscribed_topic_names.contains(topic))
    }

    /// Kafka's `validateOffsetCommit` for consumer groups.
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        member_epoch: i32,
        api_version: i16,
    ) -> Result<(), i16> {
        // The admin client, or a consumer assigning partitions itself, while nobody is in.
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let m = self
            .members
            .get(member_id)
            .ok_or(codes::UNKNOWN_MEMBER_ID)?;
        if api_version < 9 {
            // Only OffsetCommit v9 carries member epochs.
            return Err(codes::UNSUPPORTED_VERSION);
        }
        if member_epoch != m.member_epoch {
            return Err(codes::STALE_MEMBER_EPOCH);
        }
        Ok(())
    }

    /// Kafka's `validateOffsetFetch` for consumer groups (OffsetFetch v9 names the member).
    pub fn validate_offset_fetch(
        &self,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> Result<(), i16> {
        let Some(member_id) = member_id else {
            return if member_epoch < 0 {
                Ok(())
            } else {
                Err(codes::UNKNOWN_MEMBER_ID)
            };
        };
        if member_epoch < 0 && member_id.is_empty() {
            return Ok(());
        }
        let m = self
            .members
            .get(member_id)
            .ok_or(codes::UNKNOWN_MEMBER_ID)?;
        if member_epoch != m.member_epoch {
            return Err(codes::STALE_MEMBER_EPOCH);
        }
        Ok(())
    }

    pub fn validate_delete(&self) -> Result<(), i16> {
        if self.members.is_empty() {
            Ok(())
        } else {
            Err(codes::NON_EMPTY_GROUP)
        }
    }

    /// The records deleting the group, in the order Kafka writes them.
    pub fn tombstones(&self) -> Vec<CoordinatorRecord> {
        let group = || self.id.clone();
        let mut out = Vec::new();
        let ids: BTreeSet<&String> = self.members.keys().chain(self.target.keys()).collect();
        for m in &ids {
            out.push(ConsumerRecord::CurrentAssignment {
                group: group(),
                member: (*m).clone(),
                value: None,
            });
        }
        for m in &ids {
            out.push(ConsumerRecord::TargetAssignment {
                group: group(),
                member: (*m).clone(),
                partitions: None,
            });
        }
        out.push(ConsumerRecord::TargetAssignmentEpoch {
            group: group(),
            epoch: None,
        });
        for m in &ids {
            out.push(ConsumerRecord::MemberSubscription {
                group: group(),
                member: (*m).clone(),
                value: None,
            });
        }
        out.push(ConsumerRecord::SubscriptionMetadata {
            group: group(),
            topics: None,
        });
        out.push(ConsumerRecord::GroupEpoch {
            group: group(),
            epoch: None,
        });
        out.into_iter().map(CoordinatorRecord::Consumer).collect()
    }

    // ---------------------------------------------------------------- subscriptions

    /// The names of the existing topics `member` subscribes to, by name or by regular
    /// expression.
    pub fn member_topics(member: &ConsumerMember, image: &MetadataImage) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = member
            .subscribed_topic_names
            .iter()
            .filter(|n| image.topic(n).is_some())
            .cloned()
            .collect();
        if let Some(re) = member
            .subscribed_topic_regex
            .as_deref()
            .and_then(compile_regex)
        {
            out.extend(
                image
                    .topic_names
                    .keys()
                    // Internal topics are never matched, as in Kafka.
                    .filter(|n| !is_internal_topic(n) && re.is_match(n))
                    .cloned(),
            );
        }
        out
    }

    /// The subscription metadata the group would have with `updated` in place of the member
    /// with its id and without `removed`: every existing topic some member subscribes to.
    pub fn compute_subscription_metadata(
        &self,
        updated: Option<&ConsumerMember>,
        removed: Option<&str>,
        image: &MetadataImage,
    ) -> BTreeMap<String, TopicMetadata> {
        let replaced = updated.map(|m| m.member_id.as_str());
        let mut names = BTreeSet::new();
        for m in self
            .members
            .values()
            .filter(|m| {
                Some(m.member_id.as_str()) != replaced && Some(m.member_id.as_str()) != removed
            })
            .chain(updated)
        {
            names.extend(Self::member_topics(m, image));
        }
        names
            .into_iter()
            .filter_map(|n| {
                let t = image.topic(&n)?;
                Some((
                    n.clone(),
                    TopicMetadata {
                        id: t.id,
                        name: n,
                        num_partitions: t.partitions.len() as i32,
                    },
                ))
            })
            .collect()
    }

    /// The subscription metadata without `removed`, from what the group already knows (used
    /// where no metadata image is at hand: the next heartbeat checks against the image).
    pub fn subscription_metadata_without(&self, removed: &str) -> BTreeMap<String, TopicMetadata> {
        let remaining: Vec<&ConsumerMember> = self
            .members
            .values()
            .filter(|m| m.member_id != removed)
            .collect();
        let regexes: Vec<regex::Regex> = remaining
            .iter()
            .filter_map(|m| m.subscribed_topic_regex.as_deref().and_then(compile_regex))
            .collect();
        self.subscription_metadata
            .iter()
            .filter(|(name, _)| {
                remaining
                    .iter()
                    .any(|m| m.subscribed_topic_names.contains(*name))
                    || regexes.iter().any(|r| r.is_match(name))
            })
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect()
    }

    // ---------------------------------------------------------------- replay

    /// The member with `id`, created (epoch 0, nothing assigned) if absent.
    pub(crate) fn member_entry(&mut self, id: &str) -> &mut ConsumerMember {
        self.members
            .entry(id.to_string())
            .or_insert_with(|| ConsumerMember::new(id))
    }

    /// Replaces a member (or adds it), keeping the static member index and the partition
    /// owners in step.
    pub(crate) fn put_member(&mut self, m: ConsumerMember) {
        if let Some(old) = self.members.remove(&m.member_id) {
            self.forget_member(&old);
        }
        if let Some(i) = &m.instance_id {
            self.static_members.insert(i.clone(), m.member_id.clone());
        }
        for (t, ps) in m.assigned.iter().chain(m.pending_revocation.iter()) {
            for p in ps {
                let prev = self
                    .owners
                    .insert((*t, *p), (m.member_id.clone(), m.member_epoch));
                if let Some((other, _)) = prev
                    && other != m.member_id
                {
                    // Reconciliation never hands out a held partition; a log written by
                    // another coordinator might.
                    tracing::warn!(group = %self.id, topic = %t, partition = p, %other, member = %m.member_id, "partition held by two members");
                }
            }
        }
        self.members.insert(m.member_id.clone(), m);
    }

    pub(crate) fn remove_member(&mut self, id: &str) -> Option<ConsumerMember> {
        let m = self.members.remove(id)?;
        self.forget_member(&m);
        Some(m)
    }

    fn forget_member(&mut self, m: &ConsumerMember) {
        if let Some(i) = &m.instance_id
            && self.static_members.get(i) == Some(&m.member_id)
        {
            self.static_members.remove(i);
        }
        for (t, ps) in m.assigned.iter().chain(m.pending_revocation.iter()) {
            for p in ps {
                if self
                    .owners
                    .get(&(*t, *p))
                    .is_some_and(|(o, _)| *o == m.member_id)
                {
                    self.owners.remove(&(*t, *p));
                }
            }
        }
    }

    pub(crate) fn set_target(&mut self, member: &str, a: Assignment) {
        self.target.insert(member.to_string(), normalized(a));
    }

    pub(crate) fn remove_target(&mut self, member: &str) {
        self.target.remove(member);
    }
}

/// Compiles a subscription's regular expression (Kafka uses RE2 syntax, as does the `regex`
/// crate). As in Kafka, a topic must match it whole. `None` if it is invalid (refused when the
/// member sends it) or too large.
pub fn compile_regex(pattern: &str) -> Option<regex::Regex> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        // Bounds the memory one subscription can make the coordinator spend.
        .size_limit(1 << 20)
        .build()
        .ok()
}
