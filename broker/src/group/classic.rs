//! A classic group: its members, its generation, the protocol its members agreed on and the
//! state machine (Kafka's `ClassicGroup` and `ClassicGroupState`):
//!
//! ```text
//! Empty ──join──▶ PreparingRebalance ──all joined──▶ CompletingRebalance ──leader sync──▶ Stable
//!   ▲                 ▲        │                           │                              │
//!   └──no members─────┘        └───────────◀── member change, leave, expiry ◀─────────────┘
//! ```
//! Any state may become Dead when the group is deleted or its partition unloaded.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::group::codes;
use crate::group::member::{ClassicMember, JoinResult, JoinedMember, Protocol, SyncResult};
use crate::group::records::{GroupMetadataValue, MemberMetadata, subscription_topics};

/// The protocol type of Kafka consumers.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka reports (ListGroups, DescribeGroups).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    fn valid_previous(self, previous: GroupState) -> bool {
        use GroupState::*;
        match self {
            Empty => previous == PreparingRebalance,
            PreparingRebalance => matches!(previous, Stable | CompletingRebalance | Empty),
            CompletingRebalance => previous == PreparingRebalance,
            Stable => previous == CompletingRebalance,
            Dead => true,
        }
    }
}

pub struct ClassicGroup {
    pub id: String,
    state: GroupState,
    previous_state: GroupState,
    /// When the group entered its current state (ms), if known.
    state_timestamp: Option<i64>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, ClassicMember>,
    /// group.instance.id → member id.
    static_members: HashMap<String, String>,
    /// Members told to rejoin with the id they were given (KIP-394), not yet joined.
    pending_join: HashSet<String>,
    /// Members of the current generation that have not sent SyncGroup yet.
    pending_sync: HashSet<String>,
    /// How many members support each protocol.
    supported_protocols: HashMap<String, usize>,
    /// A member joined during the initial rebalance delay, which extends the delay.
    pub new_member_added: bool,
    /// The topics the consumer members subscribe to, when known.
    subscribed_topics: Option<HashSet<String>>,
}

impl ClassicGroup {
    pub fn new(id: &str, now_ms: i64) -> ClassicGroup {
        ClassicGroup {
            id: id.to_string(),
            state: GroupState::Empty,
            previous_state: GroupState::Empty,
            state_timestamp: Some(now_ms),
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_join: HashSet::new(),
            pending_sync: HashSet::new(),
            supported_protocols: HashMap::new(),
            new_member_added: false,
            subscribed_topics: None,
        }
    }

    /// The group as a GroupMetadata record left it: Stable with its members, or Empty.
    pub fn from_record(id: &str, v: &GroupMetadataValue) -> ClassicGroup {
        let mut g = ClassicGroup::new(id, v.current_state_timestamp);
        g.state_timestamp = (v.current_state_timestamp >= 0).then_some(v.current_state_timestamp);
        g.state = if v.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        g.previous_state = g.state;
        g.generation_id = v.generation;
        g.protocol_type = (!v.protocol_type.is_empty()).then(|| v.protocol_type.clone());
        g.protocol_name = v.protocol.clone();
        g.leader = v.leader.clone();
        let protocol = v.protocol.clone().unwrap_or_default();
        for m in &v.members {
            let member = ClassicMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: if m.rebalance_timeout == -1 {
                    m.session_timeout
                } else {
                    m.rebalance_timeout
                },
                session_timeout_ms: m.session_timeout,
                protocol_type: v.protocol_type.clone(),
                protocols: vec![Protocol {
                    name: protocol.clone(),
                    metadata: m.subscription.clone(),
                }],
                assignment: m.assignment.clone(),
                awaiting_join: None,
                awaiting_sync: None,
                is_new: false,
            };
            g.insert_member(member);
        }
        g.subscribed_topics = g.compute_subscribed_topics();
        g
    }

    /// The GroupMetadata record for the group with `assignment` (member id → assignment).
    pub fn to_record(&self, assignment: &HashMap<String, Bytes>) -> GroupMetadataValue {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation_id,
            protocol: self.protocol_name.clone(),
            leader: self.leader.clone(),
            current_state_timestamp: self.state_timestamp.unwrap_or(-1),
            members: self
                .members
                .values()
                .map(|m| MemberMetadata {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout: m.rebalance_timeout_ms,
                    session_timeout: m.session_timeout_ms,
                    subscription: m.metadata(&protocol).cloned().unwrap_or_default(),
                    assignment: assignment.get(&m.member_id).cloned().unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// The record Kafka writes for an empty group: generation 0, no protocol.
    pub fn empty_record(&self) -> GroupMetadataValue {
        GroupMetadataValue {
            protocol_type: String::new(),
            generation: 0,
            protocol: None,
            leader: None,
            current_state_timestamp: self.state_timestamp.unwrap_or(-1),
            members: Vec::new(),
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn previous_state(&self) -> GroupState {
        self.previous_state
    }

    pub fn is(&self, s: GroupState) -> bool {
        self.state == s
    }

    pub fn state_timestamp(&self) -> Option<i64> {
        self.state_timestamp
    }

    pub fn transition(&mut self, to: GroupState, now_ms: i64) {
        if !to.valid_previous(self.state) {
            // A bug in the coordinator, not something a client can cause; Kafka throws here.
            tracing::error!(group = %self.id, from = self.state.name(), to = to.name(), "invalid group state transition");
        }
        self.previous_state = self.state;
        self.state = to;
        self.state_timestamp = Some(now_ms);
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn is_leader(&self, member_id: &str) -> bool {
        self.leader.as_deref() == Some(member_id)
    }

    pub fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    pub fn member(&self, member_id: &str) -> Option<&ClassicMember> {
        self.members.get(member_id)
    }

    pub fn member_mut(&mut self, member_id: &str) -> Option<&mut ClassicMember> {
        self.members.get_mut(member_id)
    }

    pub fn members(&self) -> impl Iterator<Item = &ClassicMember> {
        self.members.values()
    }

    pub fn members_mut(&mut self) -> impl Iterator<Item = &mut ClassicMember> {
        self.members.values_mut()
    }

    pub fn member_ids(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    pub fn num_members(&self) -> usize {
        self.members.len()
    }

    pub fn num_awaiting_join(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.is_awaiting_join())
            .count()
    }

    pub fn is_empty_state(&self) -> bool {
        self.state == GroupState::Empty
    }

    /// Ids of members that have not rejoined in the current rebalance.
    pub fn not_yet_rejoined(&self) -> Vec<String> {
        self.members
            .values()
            .filter(|m| !m.is_awaiting_join())
            .map(|m| m.member_id.clone())
            .collect()
    }

    pub fn has_all_members_joined(&self) -> bool {
        self.members.len() == self.num_awaiting_join() && self.pending_join.is_empty()
    }

    /// The longest rebalance timeout among the members: how long a rebalance may take.
    pub fn rebalance_timeout_ms(&self) -> i32 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    pub fn can_rebalance(&self) -> bool {
        GroupState::PreparingRebalance.valid_previous(self.state)
    }

    /// A fresh member id: `<client id or instance id>-<uuid>`, as Kafka makes them.
    pub fn generate_member_id(client_id: &str, group_instance_id: Option<&str>) -> String {
        format!(
            "{}-{}",
            group_instance_id.unwrap_or(client_id),
            uuid::Uuid::new_v4()
        )
    }

    // ---------------------------------------------------------------- membership

    fn insert_member(&mut self, member: ClassicMember) {
        if let Some(instance) = &member.group_instance_id {
            self.static_members
                .insert(instance.clone(), member.member_id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member.member_id.clone());
        }
        for p in &member.protocols {
            *self.supported_protocols.entry(p.name.clone()).or_insert(0) += 1;
        }
        self.pending_join.remove(&member.member_id);
        self.members.insert(member.member_id.clone(), member);
    }

    /// Adds a member (its JoinGroup parked in `join`).
    pub fn add(&mut self, mut member: ClassicMember, join: Option<oneshot::Sender<JoinResult>>) {
        member.awaiting_join = join;
        self.insert_member(member);
    }

    pub fn remove(&mut self, member_id: &str) -> Option<ClassicMember> {
        let removed = self.members.remove(member_id);
        if let Some(m) = &removed {
            self.decrement_protocols(&m.protocols);
            if let Some(instance) = &m.group_instance_id {
                self.static_members.remove(instance);
            }
        }
        if self.is_leader(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
        self.pending_join.remove(member_id);
        self.pending_sync.remove(member_id);
        removed
    }

    fn decrement_protocols(&mut self, protocols: &[Protocol]) {
        for p in protocols {
            if let Some(n) = self.supported_protocols.get_mut(&p.name) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.supported_protocols.remove(&p.name);
                }
            }
        }
    }

    /// Replaces a member's protocols and timeouts, parking its JoinGroup in `join` (or
    /// clearing the parked one when `None`).
    pub fn update_member(
        &mut self,
        member_id: &str,
        protocols: Vec<Protocol>,
        rebalance_timeout_ms: i32,
        session_timeout_ms: i32,
        join: Option<oneshot::Sender<JoinResult>>,
    ) {
        let Some(old) = self.members.get(member_id).map(|m| m.protocols.clone()) else {
            return;
        };
        self.decrement_protocols(&old);
        for p in &protocols {
            *self.supported_protocols.entry(p.name.clone()).or_insert(0) += 1;
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.protocols = protocols;
            m.rebalance_timeout_ms = rebalance_timeout_ms;
            m.session_timeout_ms = session_timeout_ms;
            m.awaiting_join = join;
        }
    }

    /// If the leader has not rejoined, makes a member that has the leader. False when no
    /// member rejoined at all.
    pub fn maybe_elect_new_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader.clone() else {
            return false;
        };
        if self
            .members
            .get(&leader)
            .is_some_and(ClassicMember::is_awaiting_join)
        {
            return true;
        }
        match self.members.values().find(|m| m.is_awaiting_join()) {
            Some(m) => {
                tracing::info!(group = %self.id, old_leader = %leader, new_leader = %m.member_id, "group leader did not rejoin in time; elected another");
                self.leader = Some(m.member_id.clone());
                true
            }
            None => false,
        }
    }

    /// A static member rejoined with a new member id: the old id's parked requests are fenced
    /// and the member continues under the new id with its assignment.
    pub fn replace_static_member(
        &mut self,
        instance_id: &str,
        old_member_id: &str,
        new_member_id: &str,
    ) -> bool {
        let Some(mut old) = self.members.remove(old_member_id) else {
            return false;
        };
        let mut fenced = JoinResult::error(old_member_id, codes::FENCED_INSTANCE_ID);
        fenced.protocol_name = None;
        old.complete_join(fenced);
        old.complete_sync(SyncResult::error(codes::FENCED_INSTANCE_ID));
        old.member_id = new_member_id.to_string();
        old.is_new = false;
        self.members.insert(new_member_id.to_string(), old);
        if self.is_leader(old_member_id) {
            self.leader = Some(new_member_id.to_string());
        }
        self.static_members
            .insert(instance_id.to_string(), new_member_id.to_string());
        true
    }

    pub fn is_pending_member(&self, member_id: &str) -> bool {
        self.pending_join.contains(member_id)
    }

    pub fn add_pending_member(&mut self, member_id: &str) {
        self.pending_join.insert(member_id.to_string());
    }

    pub fn num_pending_join(&self) -> usize {
        self.pending_join.len()
    }

    pub fn add_pending_sync(&mut self, member_id: &str) {
        self.pending_sync.insert(member_id.to_string());
    }

    pub fn remove_pending_sync(&mut self, member_id: &str) {
        self.pending_sync.remove(member_id);
    }

    pub fn has_received_sync_from_all(&self) -> bool {
        self.pending_sync.is_empty()
    }

    pub fn pending_sync_members(&self) -> Vec<String> {
        self.pending_sync.iter().cloned().collect()
    }

    pub fn clear_pending_sync(&mut self) {
        self.pending_sync.clear();
    }

    pub fn static_member_id(&self, instance_id: &str) -> Option<&str> {
        self.static_members.get(instance_id).map(String::as_str)
    }

    /// Kafka's `validateMember`: a static member must match its instance id's current member
    /// id (else FENCED_INSTANCE_ID); the member must exist (else UNKNOWN_MEMBER_ID).
    pub fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), i16> {
        if let Some(instance) = instance_id {
            match self.static_member_id(instance) {
                None => return Err(codes::UNKNOWN_MEMBER_ID),
                Some(existing) if existing != member_id => {
                    tracing::info!(group = %self.id, member_id, instance, existing, "static member fenced by a newer member id");
                    return Err(codes::FENCED_INSTANCE_ID);
                }
                Some(_) => {}
            }
        }
        if !self.has_member(member_id) {
            return Err(codes::UNKNOWN_MEMBER_ID);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- protocols

    /// Whether a member with this protocol type and these protocols may join.
    pub fn supports_protocols(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.is(GroupState::Empty) {
            !protocol_type.is_empty() && !protocols.is_empty()
        } else {
            self.protocol_type.as_deref() == Some(protocol_type)
                && protocols.iter().any(|p| {
                    self.supported_protocols.get(&p.name).copied().unwrap_or(0)
                        == self.members.len()
                })
        }
    }

    /// The protocol every member supports that most members prefer (ties go to the one the
    /// current leader prefers, then by name, so the choice is deterministic).
    pub fn select_protocol(&self) -> Option<String> {
        let n = self.members.len();
        let candidates: Vec<&str> = self
            .supported_protocols
            .iter()
            .filter(|(_, c)| **c == n)
            .map(|(p, _)| p.as_str())
            .collect();
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some(p) = m.vote(&candidates) {
                *votes.entry(p).or_insert(0) += 1;
            }
        }
        let leader_rank = |p: &str| {
            self.leader
                .as_deref()
                .and_then(|l| self.members.get(l))
                .and_then(|m| m.protocols.iter().position(|x| x.name == p))
                .unwrap_or(usize::MAX)
        };
        votes
            .into_iter()
            .max_by(|(a, va), (b, vb)| {
                va.cmp(vb)
                    .then_with(|| leader_rank(b).cmp(&leader_rank(a)))
                    .then_with(|| b.cmp(a))
            })
            .map(|(p, _)| p.to_string())
    }

    /// Starts the next generation: CompletingRebalance with a chosen protocol, or Empty.
    pub fn init_next_generation(&mut self, now_ms: i64) {
        self.generation_id = self.generation_id.wrapping_add(1);
        if !self.members.is_empty() {
            self.protocol_name = self.select_protocol();
            self.subscribed_topics = self.compute_subscribed_topics();
            self.transition(GroupState::CompletingRebalance, now_ms);
        } else {
            self.protocol_name = None;
            self.subscribed_topics = self.compute_subscribed_topics();
            self.transition(GroupState::Empty, now_ms);
        }
        self.pending_sync.clear();
    }

    /// Every member with its metadata for the chosen protocol (the leader's JoinGroup answer).
    pub fn current_members(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members
            .values()
            .map(|m| JoinedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata(&protocol).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// The JoinGroup answer of the current generation for `member_id`.
    pub fn join_result(&self, member_id: &str, skip_assignment: bool) -> JoinResult {
        JoinResult {
            error: codes::NONE,
            member_id: member_id.to_string(),
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            skip_assignment,
            members: if self.is_leader(member_id) {
                self.current_members()
            } else {
                Vec::new()
            },
        }
    }

    pub fn assignment(&self) -> HashMap<String, Bytes> {
        self.members
            .values()
            .map(|m| (m.member_id.clone(), m.assignment.clone()))
            .collect()
    }

    pub fn uses_consumer_protocol(&self) -> bool {
        self.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE)
    }

    fn compute_subscribed_topics(&self) -> Option<HashSet<String>> {
        if !self.uses_consumer_protocol() {
            return None;
        }
        if self.members.is_empty() {
            return Some(HashSet::new());
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = HashSet::new();
        for m in self.members.values() {
            let Some(t) = m.metadata(protocol).and_then(|md| subscription_topics(md)) else {
                tracing::warn!(group = %self.id, "cannot parse a consumer subscription; the subscribed topics are unknown");
                return None;
            };
            topics.extend(t);
        }
        Some(topics)
    }

    /// Whether offsets of `topic` are in use by the group (OffsetDelete refuses those).
    pub fn is_subscribed_to_topic(&self, topic: &str) -> bool {
        match &self.subscribed_topics {
            Some(t) => t.contains(topic),
            None => self.uses_consumer_protocol(),
        }
    }

    // ---------------------------------------------------------------- validations

    /// Kafka's `validateOffsetCommit` for plain (non-transactional) commits.
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), i16> {
        if self.is(GroupState::Dead) {
            return Err(codes::COORDINATOR_NOT_AVAILABLE);
        }
        if generation_id < 0 && self.is(GroupState::Empty) {
            // The admin client or a consumer that assigns partitions itself.
            return Ok(());
        }
        if generation_id >= 0 || !member_id.is_empty() || instance_id.is_some() {
            self.validate_member(member_id, instance_id)?;
            if generation_id != self.generation_id {
                return Err(codes::ILLEGAL_GENERATION);
            }
        } else if !self.is(GroupState::Empty) {
            return Err(codes::UNKNOWN_MEMBER_ID);
        }
        if self.is(GroupState::CompletingRebalance) {
            // The member knows the new generation but has no assignment yet.
            return Err(codes::REBALANCE_IN_PROGRESS);
        }
        Ok(())
    }

    pub fn validate_delete(&self) -> Result<(), i16> {
        match self.state {
            GroupState::Dead => Err(codes::GROUP_ID_NOT_FOUND),
            GroupState::Empty => Ok(()),
            _ => Err(codes::NON_EMPTY_GROUP),
        }
    }

    pub fn validate_offset_delete(&self) -> Result<(), i16> {
        match self.state {
            GroupState::Dead => Err(codes::GROUP_ID_NOT_FOUND),
            GroupState::Empty => Ok(()),
            _ if self.uses_consumer_protocol() => Ok(()),
            _ => Err(codes::NON_EMPTY_GROUP),
        }
    }

    /// Which timestamp decides whether an offset of this group has expired, if offsets of
    /// this group may expire now (Kafka's `offsetExpirationCondition`).
    pub fn offset_expiry_base(&self) -> Option<ExpiryBase> {
        match &self.protocol_type {
            None => Some(ExpiryBase::CommitTimestamp),
            Some(_) if self.is(GroupState::Empty) => Some(match self.state_timestamp {
                Some(t) => ExpiryBase::Fixed(t),
                None => ExpiryBase::CommitTimestamp,
            }),
            Some(_)
                if self.uses_consumer_protocol()
                    && self.subscribed_topics.is_some()
                    && self.is(GroupState::Stable) =>
            {
                Some(ExpiryBase::CommitTimestamp)
            }
            Some(_) => None,
        }
    }
}

/// From when an offset's retention is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiryBase {
    /// The offset's own commit timestamp.
    CommitTimestamp,
    /// A fixed time: when the group became empty.
    Fixed(i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, protocols: &[&str]) -> ClassicMember {
        ClassicMember {
            member_id: id.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: 1000,
            session_timeout_ms: 1000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| Protocol {
                    name: p.to_string(),
                    metadata: Bytes::from(p.to_string()),
                })
                .collect(),
            assignment: Bytes::new(),
            awaiting_join: None,
            awaiting_sync: None,
            is_new: false,
        }
    }

    #[test]
    fn protocol_selection_takes_the_common_protocol_most_members_prefer() {
        let mut g = ClassicGroup::new("g", 0);
        g.add(member("a", &["range", "roundrobin"]), None);
        g.transition(GroupState::PreparingRebalance, 0);
        g.add(member("b", &["roundrobin", "range"]), None);
        g.add(member("c", &["roundrobin", "sticky"]), None);
        // Only roundrobin is supported by all three.
        assert_eq!(g.select_protocol().as_deref(), Some("roundrobin"));
        assert!(!g.supports_protocols("consumer", &member("d", &["range"]).protocols));
        assert!(g.supports_protocols("consumer", &member("d", &["roundrobin"]).protocols));
        assert!(!g.supports_protocols("connect", &member("d", &["roundrobin"]).protocols));
        g.remove("c");
        // range and roundrobin tie 1-1: the leader's (a) preference wins.
        assert_eq!(g.select_protocol().as_deref(), Some("range"));
    }

    #[test]
    fn leader_moves_when_the_leader_leaves_and_generation_advances() {
        let mut g = ClassicGroup::new("g", 0);
        g.add(member("a", &["range"]), None);
        g.add(member("b", &["range"]), None);
        assert!(g.is_leader("a"));
        g.remove("a");
        assert!(g.is_leader("b"));
        g.transition(GroupState::PreparingRebalance, 1);
        g.init_next_generation(2);
        assert_eq!(g.generation_id, 1);
        assert!(g.is(GroupState::CompletingRebalance));
        assert_eq!(g.protocol_name.as_deref(), Some("range"));
        g.remove("b");
        g.transition(GroupState::PreparingRebalance, 3);
        g.init_next_generation(4);
        assert!(g.is(GroupState::Empty));
        assert_eq!(g.protocol_name, None);
        assert_eq!(g.generation_id, 2);
    }

    #[test]
    fn offset_commit_validation_follows_kafka() {
        let mut g = ClassicGroup::new("g", 0);
        // Empty group, generation -1: a simple commit.
        assert_eq!(g.validate_offset_commit("", None, -1), Ok(()));
        // A member id on an empty group: unknown.
        assert_eq!(
            g.validate_offset_commit("m", None, 0),
            Err(codes::UNKNOWN_MEMBER_ID)
        );
        g.add(member("a", &["range"]), None);
        g.transition(GroupState::PreparingRebalance, 0);
        g.init_next_generation(0);
        assert_eq!(
            g.validate_offset_commit("a", None, 1),
            Err(codes::REBALANCE_IN_PROGRESS)
        );
        g.transition(GroupState::Stable, 0);
        assert_eq!(g.validate_offset_commit("a", None, 1), Ok(()));
        assert_eq!(
            g.validate_offset_commit("a", None, 0),
            Err(codes::ILLEGAL_GENERATION)
        );
        assert_eq!(
            g.validate_offset_commit("x", None, 1),
            Err(codes::UNKNOWN_MEMBER_ID)
        );
        // Generation -1 without a member on a non-empty group.
        assert_eq!(
            g.validate_offset_commit("", None, -1),
            Err(codes::UNKNOWN_MEMBER_ID)
        );
        assert_eq!(g.validate_delete(), Err(codes::NON_EMPTY_GROUP));
    }

    #[test]
    fn record_round_trip_restores_a_stable_group() {
        let mut g = ClassicGroup::new("g", 0);
        let mut m = member("a", &["range"]);
        m.group_instance_id = Some("inst".into());
        g.add(m, None);
        g.transition(GroupState::PreparingRebalance, 5);
        g.init_next_generation(6);
        let mut assignment = HashMap::new();
        assignment.insert("a".to_string(), Bytes::from_static(b"asg"));
        let rec = g.to_record(&assignment);
        let back = ClassicGroup::from_record("g", &rec);
        assert!(back.is(GroupState::Stable));
        assert_eq!(back.generation_id, 1);
        assert!(back.is_leader("a"));
        assert_eq!(back.static_member_id("inst"), Some("a"));
        assert_eq!(
            back.member("a").unwrap().assignment,
            Bytes::from_static(b"asg")
        );
        assert_eq!(back.to_record(&back.assignment()), rec);
    }
}
