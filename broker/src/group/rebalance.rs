//! The classic rebalance protocol: JoinGroup, SyncGroup, Heartbeat, LeaveGroup and the
//! deadlines that drive a group through its states, following Kafka's `GroupMetadataManager`
//! (method names mirror Kafka's so the two can be read side by side).

use std::collections::HashMap;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::group::classic::{ClassicGroup, GroupState};
use crate::group::codes;
use crate::group::member::{ClassicMember, JoinResult, Protocol, SyncResult};
use crate::group::now_ms;
use crate::group::records::CoordinatorRecord;
use crate::group::state::{Env, ShardState};
use crate::group::timers::{TimerAction, TimerKey};

/// How long a new member's JoinGroup may stay parked before the member is dropped (Kafka's
/// `classicGroupNewMemberJoinTimeoutMs`): clients cannot heartbeat while their JoinGroup is
/// parked, and a client that reconnects and retries would otherwise leave a defunct member.
pub const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 5 * 60 * 1000;

/// A JoinGroup request, validated by the handler (group id present, session timeout within
/// bounds).
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    pub api_version: i16,
    pub reason: Option<String>,
}

#[derive(Clone, Debug)]
pub struct SyncRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

/// One member of a LeaveGroup request, and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeavingMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub reason: Option<String>,
    pub error: i16,
}

fn send_join(tx: oneshot::Sender<JoinResult>, r: JoinResult) {
    // The client may have disconnected; nothing else depends on the answer.
    let _ = tx.send(r);
}

impl ShardState {
    /// JoinGroup. The answer arrives on `tx`, at once or when the join phase ends.
    pub fn join(&mut self, req: JoinRequest, tx: oneshot::Sender<JoinResult>) {
        if let Some(cg) = self.consumer_groups.get(&req.group_id) {
            // Classic members cannot join a KIP-848 group that has members (no mixed groups);
            // an empty one gives way to a classic group, as in Kafka.
            if !cg.is_empty() {
                tracing::info!(group = %req.group_id, "a classic member tried to join a consumer group");
                send_join(
                    tx,
                    JoinResult::error(&req.member_id, codes::INCONSISTENT_GROUP_PROTOCOL),
                );
                return;
            }
            let records = cg.tombstones();
            if let Err(code) = self.write_and_replay(&records) {
                send_join(tx, JoinResult::error(&req.member_id, code));
                return;
            }
        }
        let is_unknown = req.member_id.is_empty();
        let is_new_group = !self.groups.contains_key(&req.group_id);
        if is_new_group && !is_unknown {
            // A member id for a group that does not exist: the member must start over.
            send_join(
                tx,
                JoinResult::error(&req.member_id, codes::UNKNOWN_MEMBER_ID),
            );
            return;
        }
        let group_id = req.group_id.clone();
        let ShardState { groups, env, .. } = self;
        let g = groups
            .entry(group_id.clone())
            .or_insert_with(|| ClassicGroup::new(&group_id, now_ms()));
        let wrote = env.appends();
        if !env.accept_joining_member(g, &req.member_id) {
            g.remove(&req.member_id);
            send_join(tx, JoinResult::error("", codes::GROUP_MAX_SIZE_REACHED));
        } else if is_unknown {
            env.join_new_member(g, req, tx);
        } else {
            env.join_existing_member(g, req, tx);
        }
        if is_new_group && env.appends() == wrote {
            // Persist the new (empty) group so it survives a restart; if that fails the group
            // is dropped again, as Kafka reverts it.
            let record = CoordinatorRecord::GroupMetadata {
                group: group_id.clone(),
                value: Some(g.empty_record()),
            };
            if let Err(code) = env.append(&[record]) {
                tracing::warn!(group = %group_id, code, "could not write the metadata of a new group");
                for m in g.members_mut() {
                    let id = m.member_id.clone();
                    m.complete_join(JoinResult::error(&id, code));
                }
                groups.remove(&group_id);
                env.timers.cancel_group(&group_id);
            }
        }
        self.settle();
    }

    /// SyncGroup. The answer arrives on `tx`, at once or once the leader's assignment is
    /// stored.
    pub fn sync(&mut self, req: SyncRequest, tx: oneshot::Sender<SyncResult>) {
        let send = |tx: oneshot::Sender<SyncResult>, r: SyncResult| {
            let _ = tx.send(r);
        };
        let ShardState { groups, env, .. } = self;
        let Some(g) = groups.get_mut(&req.group_id) else {
            return send(tx, SyncResult::error(codes::UNKNOWN_MEMBER_ID));
        };
        if g.is(GroupState::Empty) {
            return send(tx, SyncResult::error(codes::UNKNOWN_MEMBER_ID));
        }
        if let Err(code) = validate_sync(g, &req) {
            return send(tx, SyncResult::error(code));
        }
        match g.state() {
            GroupState::PreparingRebalance => {
                send(tx, SyncResult::error(codes::REBALANCE_IN_PROGRESS));
            }
            GroupState::CompletingRebalance => {
                if let Some(m) = g.member_mut(&req.member_id) {
                    m.awaiting_sync = Some(tx);
                }
                env.remove_pending_sync_member(g, &req.member_id);
                if g.is_leader(&req.member_id) {
                    env.store_leader_assignment(g, &req);
                }
            }
            GroupState::Stable => {
                env.remove_pending_sync_member(g, &req.member_id);
                let assignment = g
                    .member(&req.member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                send(
                    tx,
                    SyncResult {
                        error: codes::NONE,
                        protocol_type: g.protocol_type.clone(),
                        protocol_name: g.protocol_name.clone(),
                        assignment,
                    },
                );
            }
            GroupState::Empty | GroupState::Dead => {
                send(tx, SyncResult::error(codes::COORDINATOR_NOT_AVAILABLE));
            }
        }
        self.settle();
    }

    /// Heartbeat; returns the error code.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> i16 {
        let ShardState { groups, env, .. } = self;
        let Some(g) = groups.get_mut(group_id) else {
            return codes::UNKNOWN_MEMBER_ID;
        };
        if g.is(GroupState::Dead) {
            return codes::COORDINATOR_NOT_AVAILABLE;
        }
        if let Err(code) = g.validate_member(member_id, group_instance_id) {
            return code;
        }
        if generation_id != g.generation_id {
            return codes::ILLEGAL_GENERATION;
        }
        let session = g.member(member_id).map_or(0, |m| m.session_timeout_ms);
        match g.state() {
            GroupState::Empty => codes::UNKNOWN_MEMBER_ID,
            GroupState::PreparingRebalance => {
                env.reschedule_heartbeat(group_id, member_id, i64::from(session));
                codes::REBALANCE_IN_PROGRESS
            }
            // Members may heartbeat between their JoinGroup and SyncGroup answers.
            GroupState::CompletingRebalance | GroupState::Stable => {
                env.reschedule_heartbeat(group_id, member_id, i64::from(session));
                codes::NONE
            }
            GroupState::Dead => codes::COORDINATOR_NOT_AVAILABLE,
        }
    }

    /// LeaveGroup for a batch of members. `Err` is a group-level error; otherwise each
    /// member's answer. A group that does not exist answers UNKNOWN_MEMBER_ID per member.
    pub fn leave(
        &mut self,
        group_id: &str,
        members: Vec<LeavingMember>,
    ) -> Result<Vec<LeavingMember>, i16> {
        let ShardState { groups, env, .. } = self;
        let Some(g) = groups.get_mut(group_id) else {
            return Ok(members
                .into_iter()
                .map(|m| LeavingMember {
                    error: codes::UNKNOWN_MEMBER_ID,
                    ..m
                })
                .collect());
        };
        if g.is(GroupState::Dead) {
            return Err(codes::COORDINATOR_NOT_AVAILABLE);
        }
        let mut out = Vec::with_capacity(members.len());
        let mut left = 0usize;
        for m in members {
            let reason = m.reason.clone().unwrap_or_else(|| "not provided".into());
            let error = if m.member_id.is_empty() {
                // Administrative removal by group instance id.
                match m
                    .group_instance_id
                    .as_deref()
                    .and_then(|i| g.static_member_id(i))
                    .map(str::to_string)
                {
                    Some(id) => {
                        env.remove_current_member(g, &id, &reason);
                        codes::NONE
                    }
                    None => codes::UNKNOWN_MEMBER_ID,
                }
            } else if g.is_pending_member(&m.member_id) {
                g.remove(&m.member_id);
                env.cancel_heartbeat(group_id, &m.member_id);
                tracing::info!(group = %group_id, member = %m.member_id, %reason, "pending member left the group");
                codes::NONE
            } else {
                match g.validate_member(&m.member_id, m.group_instance_id.as_deref()) {
                    Ok(()) => {
                        env.remove_current_member(g, &m.member_id, &reason);
                        codes::NONE
                    }
                    Err(code) => code,
                }
            };
            if error == codes::NONE {
                left += 1;
            }
            out.push(LeavingMember { error, ..m });
        }
        if left > 0 {
            match g.state() {
                GroupState::Stable | GroupState::CompletingRebalance => {
                    env.maybe_prepare_rebalance_or_complete_join(g, "members left the group");
                }
                GroupState::PreparingRebalance => env.maybe_complete_join_phase(g),
                _ => {}
            }
        }
        self.settle();
        Ok(out)
    }

    /// A member's session deadline passed.
    pub(crate) fn expire_heartbeat(&mut self, group_id: &str, member_id: &str) {
        let ShardState { groups, env, .. } = self;
        let Some(g) = groups.get_mut(group_id) else {
            return;
        };
        if g.is(GroupState::Dead) {
            return;
        }
        if g.is_pending_member(member_id) {
            tracing::info!(group = %group_id, member = %member_id, "pending member removed after its session timeout");
            g.remove(member_id);
            if g.is(GroupState::PreparingRebalance) && g.has_all_members_joined() {
                env.complete_join(g);
            }
            return;
        }
        let Some(m) = g.member(member_id) else {
            return;
        };
        if !m.has_satisfied_heartbeat() {
            tracing::info!(group = %group_id, member = %member_id, "member failed to heartbeat in time; removing it from the group");
            env.remove_member_and_update_group(g, member_id);
        }
    }
}

fn validate_sync(g: &ClassicGroup, req: &SyncRequest) -> Result<(), i16> {
    if g.is(GroupState::Dead) {
        return Err(codes::COORDINATOR_NOT_AVAILABLE);
    }
    g.validate_member(&req.member_id, req.group_instance_id.as_deref())?;
    if req.generation_id != g.generation_id {
        return Err(codes::ILLEGAL_GENERATION);
    }
    let inconsistent = |asked: &Option<String>, ours: &Option<String>| matches!((asked, ours), (Some(a), Some(o)) if a != o);
    if inconsistent(&req.protocol_type, &g.protocol_type)
        || inconsistent(&req.protocol_name, &g.protocol_name)
    {
        return Err(codes::INCONSISTENT_GROUP_PROTOCOL);
    }
    Ok(())
}

impl Env {
    fn accept_joining_member(&self, g: &ClassicGroup, member_id: &str) -> bool {
        let max = self.config.max_size;
        match g.state() {
            GroupState::Empty | GroupState::Dead => true,
            // The number of members awaiting a join answer is the group's next size; it lets
            // the last rejoining members be the ones refused when the limit shrank.
            GroupState::PreparingRebalance => {
                g.member(member_id)
                    .is_some_and(ClassicMember::is_awaiting_join)
                    || g.num_awaiting_join() < max
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                g.has_member(member_id) || g.num_members() < max
            }
        }
    }

    fn join_new_member(
        &mut self,
        g: &mut ClassicGroup,
        req: JoinRequest,
        tx: oneshot::Sender<JoinResult>,
    ) {
        if g.is(GroupState::Dead) {
            send_join(tx, JoinResult::error("", codes::COORDINATOR_NOT_AVAILABLE));
        } else if !g.supports_protocols(&req.protocol_type, &req.protocols) {
            send_join(
                tx,
                JoinResult::error("", codes::INCONSISTENT_GROUP_PROTOCOL),
            );
        } else {
            let new_id =
                ClassicGroup::generate_member_id(&req.client_id, req.group_instance_id.as_deref());
            match req.group_instance_id.clone() {
                Some(instance) => match g.static_member_id(&instance).map(str::to_string) {
                    Some(existing) => {
                        tracing::info!(group = %g.id, %instance, old = %existing, new = %new_id, "static member rejoined with an unknown member id; replacing its old id");
                        self.update_static_member_then_rebalance_or_complete_join(
                            g, req, &existing, &new_id, tx,
                        );
                    }
                    None => self.add_member_then_rebalance_or_complete_join(g, req, &new_id, tx),
                },
                None if req.api_version >= 4 => {
                    // KIP-394: the member must come back with this id; until then it is pending
                    // and expires after its session timeout.
                    g.add_pending_member(&new_id);
                    self.reschedule_heartbeat(&g.id, &new_id, i64::from(req.session_timeout_ms));
                    send_join(tx, JoinResult::error(&new_id, codes::MEMBER_ID_REQUIRED));
                }
                None => self.add_member_then_rebalance_or_complete_join(g, req, &new_id, tx),
            }
        }
    }

    fn join_existing_member(
        &mut self,
        g: &mut ClassicGroup,
        req: JoinRequest,
        tx: oneshot::Sender<JoinResult>,
    ) {
        let member_id = req.member_id.clone();
        if g.is(GroupState::Dead) {
            send_join(
                tx,
                JoinResult::error(&member_id, codes::COORDINATOR_NOT_AVAILABLE),
            );
            return;
        }
        if !g.supports_protocols(&req.protocol_type, &req.protocols) {
            send_join(
                tx,
                JoinResult::error(&member_id, codes::INCONSISTENT_GROUP_PROTOCOL),
            );
            return;
        }
        if g.is_pending_member(&member_id) {
            if req.group_instance_id.is_some() {
                // Pending members are dynamic by construction; Kafka treats this as a bug.
                send_join(
                    tx,
                    JoinResult::error(&member_id, codes::UNKNOWN_SERVER_ERROR),
                );
                return;
            }
            tracing::info!(group = %g.id, member = %member_id, "pending member joins the group");
            self.add_member_then_rebalance_or_complete_join(g, req, &member_id, tx);
            return;
        }
        if let Err(code) = g.validate_member(&member_id, req.group_instance_id.as_deref()) {
            send_join(tx, JoinResult::error(&member_id, code));
            return;
        }
        let same_metadata = g
            .member(&member_id)
            .is_some_and(|m| m.protocols == req.protocols);
        match g.state() {
            GroupState::PreparingRebalance => {
                self.update_member_then_rebalance_or_complete_join(
                    g,
                    req,
                    tx,
                    "member rejoined during a rebalance",
                );
            }
            GroupState::CompletingRebalance => {
                if same_metadata {
                    // The member probably missed the JoinGroup answer: send it again.
                    send_join(tx, g.join_result(&member_id, false));
                } else {
                    self.update_member_then_rebalance_or_complete_join(
                        g,
                        req,
                        tx,
                        "member changed its metadata",
                    );
                }
            }
            GroupState::Stable => {
                if g.is_leader(&member_id) {
                    // The leader rejoins to trigger a rebalance (e.g. topic metadata changed).
                    self.update_member_then_rebalance_or_complete_join(
                        g,
                        req,
                        tx,
                        "the leader rejoined",
                    );
                } else if !same_metadata {
                    self.update_member_then_rebalance_or_complete_join(
                        g,
                        req,
                        tx,
                        "member changed its metadata",
                    );
                } else {
                    send_join(tx, g.join_result(&member_id, false));
                }
            }
            GroupState::Empty | GroupState::Dead => {
                tracing::warn!(group = %g.id, member = %member_id, state = g.state().name(), "rejoining member in an unexpected group state");
                send_join(tx, JoinResult::error(&member_id, codes::UNKNOWN_MEMBER_ID));
            }
        }
    }

    fn update_member_then_rebalance_or_complete_join(
        &mut self,
        g: &mut ClassicGroup,
        req: JoinRequest,
        tx: oneshot::Sender<JoinResult>,
        reason: &str,
    ) {
        g.update_member(
            &req.member_id,
            req.protocols,
            req.rebalance_timeout_ms,
            req.session_timeout_ms,
            Some(tx),
        );
        self.maybe_prepare_rebalance_or_complete_join(g, reason);
    }

    fn add_member_then_rebalance_or_complete_join(
        &mut self,
        g: &mut ClassicGroup,
        req: JoinRequest,
        member_id: &str,
        tx: oneshot::Sender<JoinResult>,
    ) {
        let member = ClassicMember {
            member_id: member_id.to_string(),
            group_instance_id: req.group_instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            session_timeout_ms: req.session_timeout_ms,
            protocol_type: req.protocol_type.clone(),
            protocols: req.protocols,
            assignment: Bytes::new(),
            awaiting_join: None,
            awaiting_sync: None,
            is_new: true,
        };
        if g.is(GroupState::PreparingRebalance) && g.previous_state() == GroupState::Empty {
            // Joining during the initial delay extends it.
            g.new_member_added = true;
        }
        g.add(member, Some(tx));
        self.reschedule_heartbeat(&g.id, member_id, NEW_MEMBER_JOIN_TIMEOUT_MS);
        tracing::info!(group = %g.id, member = %member_id, instance = ?req.group_instance_id, reason = ?req.reason, "member joins the group");
        self.maybe_prepare_rebalance_or_complete_join(g, "a member joined");
    }

    pub(crate) fn maybe_prepare_rebalance_or_complete_join(
        &mut self,
        g: &mut ClassicGroup,
        reason: &str,
    ) {
        if g.can_rebalance() {
            self.prepare_rebalance(g, reason);
        } else {
            self.maybe_complete_join_phase(g);
        }
    }

    /// Completes the join phase if every member rejoined, unless this is the delayed first
    /// rebalance of the group.
    pub(crate) fn maybe_complete_join_phase(&mut self, g: &mut ClassicGroup) {
        if !g.is(GroupState::PreparingRebalance)
            || g.previous_state() == GroupState::Empty
            || !g.has_all_members_joined()
        {
            return;
        }
        self.complete_join(g);
    }

    pub(crate) fn prepare_rebalance(&mut self, g: &mut ClassicGroup, reason: &str) {
        if g.is(GroupState::CompletingRebalance) {
            // Members waiting for an assignment must rejoin instead.
            self.reset_and_propagate_assignment_with_error(g, codes::REBALANCE_IN_PROGRESS);
        }
        self.remove_sync_expiration(g);
        let initial = g.is(GroupState::Empty);
        if initial {
            let delay = self.config.initial_rebalance_delay_ms;
            let remaining = (g.rebalance_timeout_ms() - delay).max(0);
            self.timers.schedule_ms(
                TimerKey::Join {
                    group: g.id.clone(),
                },
                i64::from(delay),
                TimerAction::InitialJoin {
                    delay_ms: delay,
                    remaining_ms: remaining,
                },
            );
        }
        g.transition(GroupState::PreparingRebalance, now_ms());
        tracing::info!(group = %g.id, generation = g.generation_id, %reason, "preparing to rebalance");
        if !initial {
            self.maybe_complete_join_else_schedule(g);
        }
    }

    fn maybe_complete_join_else_schedule(&mut self, g: &mut ClassicGroup) {
        if g.has_all_members_joined() {
            self.complete_join(g);
        } else {
            self.timers.schedule_ms(
                TimerKey::Join {
                    group: g.id.clone(),
                },
                i64::from(g.rebalance_timeout_ms()),
                TimerAction::CompleteJoin,
            );
        }
    }

    pub(crate) fn try_complete_initial_rebalance(
        &mut self,
        g: &mut ClassicGroup,
        delay_ms: i32,
        remaining_ms: i32,
    ) {
        if g.new_member_added && remaining_ms != 0 {
            g.new_member_added = false;
            let new_delay = self.config.initial_rebalance_delay_ms.min(remaining_ms);
            let new_remaining = (remaining_ms - delay_ms).max(0);
            self.timers.schedule_ms(
                TimerKey::Join {
                    group: g.id.clone(),
                },
                i64::from(new_delay),
                TimerAction::InitialJoin {
                    delay_ms: new_delay,
                    remaining_ms: new_remaining,
                },
            );
        } else {
            self.complete_join(g);
        }
    }

    /// Ends the join phase: dynamic members that did not rejoin are dropped, the next
    /// generation starts and every waiting member gets its JoinGroup answer (the leader with
    /// the member list).
    pub(crate) fn complete_join(&mut self, g: &mut ClassicGroup) {
        self.timers.cancel(&TimerKey::Join {
            group: g.id.clone(),
        });
        let gone: Vec<String> = g
            .not_yet_rejoined()
            .into_iter()
            .filter(|id| g.member(id).is_some_and(|m| !m.is_static()))
            .collect();
        for id in &gone {
            if let Some(mut m) = g.remove(id) {
                m.complete_sync(SyncResult::error(codes::UNKNOWN_MEMBER_ID));
            }
            self.cancel_heartbeat(&g.id, id);
        }
        if !gone.is_empty() {
            tracing::info!(group = %g.id, members = ?gone, "removed members that did not rejoin in time");
        }
        if g.is(GroupState::Dead) {
            return;
        }
        if !g.maybe_elect_new_joined_leader() && g.num_members() > 0 {
            // Only static members remain and none rejoined: wait another rebalance timeout,
            // until their sessions expire.
            tracing::error!(group = %g.id, "could not complete the rebalance because no member rejoined");
            self.timers.schedule_ms(
                TimerKey::Join {
                    group: g.id.clone(),
                },
                i64::from(g.rebalance_timeout_ms()),
                TimerAction::CompleteJoin,
            );
            return;
        }
        g.init_next_generation(now_ms());
        if g.is(GroupState::Empty) {
            tracing::info!(group = %g.id, generation = g.generation_id, "group is now empty");
            let record = CoordinatorRecord::GroupMetadata {
                group: g.id.clone(),
                value: Some(g.to_record(&HashMap::new())),
            };
            if let Err(code) = self.append(&[record]) {
                // The previous generation stays in the log; it has no live members either.
                tracing::warn!(group = %g.id, code, "could not write the metadata of the empty group");
            }
            return;
        }
        tracing::info!(group = %g.id, generation = g.generation_id, members = g.num_members(), protocol = ?g.protocol_name, "stabilized group");
        crate::observe::metrics::rebalance_completed(crate::observe::metrics::GroupKind::Classic);
        for id in g.member_ids() {
            let result = g.join_result(&id, false);
            let session = if let Some(m) = g.member_mut(&id) {
                m.complete_join(result);
                m.is_new = false;
                m.session_timeout_ms
            } else {
                continue;
            };
            self.reschedule_heartbeat(&g.id, &id, i64::from(session));
            g.add_pending_sync(&id);
        }
        self.timers.schedule_ms(
            TimerKey::Sync {
                group: g.id.clone(),
            },
            i64::from(g.rebalance_timeout_ms()),
            TimerAction::ExpireSync {
                generation: g.generation_id,
            },
        );
    }

    fn remove_member_and_update_group(&mut self, g: &mut ClassicGroup, member_id: &str) {
        // A new member may time out while its JoinGroup is parked: answer it so the client
        // rejoins if it is still there.
        if let Some(mut m) = g.remove(member_id) {
            m.complete_join(JoinResult::error("", codes::UNKNOWN_MEMBER_ID));
            m.complete_sync(SyncResult::error(codes::UNKNOWN_MEMBER_ID));
        }
        match g.state() {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance_or_complete_join(g, "a member's session expired");
            }
            GroupState::PreparingRebalance if g.has_all_members_joined() => self.complete_join(g),
            _ => {}
        }
    }

    fn remove_current_member(&mut self, g: &mut ClassicGroup, member_id: &str, reason: &str) {
        self.cancel_heartbeat(&g.id, member_id);
        tracing::info!(group = %g.id, member = %member_id, %reason, "member left the group");
        if let Some(mut m) = g.remove(member_id) {
            m.complete_join(JoinResult::error("", codes::UNKNOWN_MEMBER_ID));
            m.complete_sync(SyncResult::error(codes::UNKNOWN_MEMBER_ID));
        }
    }

    fn reset_and_propagate_assignment_with_error(&mut self, g: &mut ClassicGroup, error: i16) {
        for m in g.members_mut() {
            m.assignment = Bytes::new();
        }
        self.propagate_assignment(g, error);
    }

    fn set_and_propagate_assignment(
        &mut self,
        g: &mut ClassicGroup,
        assignment: &HashMap<String, Bytes>,
    ) {
        for m in g.members_mut() {
            m.assignment = assignment.get(&m.member_id).cloned().unwrap_or_default();
        }
        self.propagate_assignment(g, codes::NONE);
    }

    fn propagate_assignment(&mut self, g: &mut ClassicGroup, error: i16) {
        let (protocol_type, protocol_name) = if error == codes::NONE {
            (g.protocol_type.clone(), g.protocol_name.clone())
        } else {
            (None, None)
        };
        let mut answered = Vec::new();
        for m in g.members_mut() {
            let r = SyncResult {
                error,
                protocol_type: protocol_type.clone(),
                protocol_name: protocol_name.clone(),
                assignment: m.assignment.clone(),
            };
            if m.complete_sync(r) {
                answered.push((m.member_id.clone(), m.session_timeout_ms));
            }
        }
        // A session that expired while the member waited for its assignment counted as
        // alive; start it afresh now that the member has its answer.
        for (id, session) in answered {
            self.reschedule_heartbeat(&g.id, &id, i64::from(session));
        }
    }

    fn remove_sync_expiration(&mut self, g: &mut ClassicGroup) {
        g.clear_pending_sync();
        self.timers.cancel(&TimerKey::Sync {
            group: g.id.clone(),
        });
    }

    fn remove_pending_sync_member(&mut self, g: &mut ClassicGroup, member_id: &str) {
        g.remove_pending_sync(member_id);
        let done = match g.state() {
            GroupState::Dead | GroupState::Empty | GroupState::PreparingRebalance => true,
            GroupState::CompletingRebalance | GroupState::Stable => g.has_received_sync_from_all(),
        };
        if done {
            self.timers.cancel(&TimerKey::Sync {
                group: g.id.clone(),
            });
        }
    }

    pub(crate) fn expire_pending_sync(&mut self, g: &mut ClassicGroup, generation: i32) {
        if generation != g.generation_id {
            return;
        }
        if !matches!(
            g.state(),
            GroupState::CompletingRebalance | GroupState::Stable
        ) || g.has_received_sync_from_all()
        {
            return;
        }
        let pending = g.pending_sync_members();
        for id in &pending {
            g.remove(id);
            self.cancel_heartbeat(&g.id, id);
        }
        tracing::info!(group = %g.id, members = ?pending, "removed members that did not send SyncGroup in time");
        self.prepare_rebalance(g, "members did not sync in time");
    }

    /// The leader's SyncGroup: store the assignment, and once it is committed give every
    /// member its share and make the group Stable.
    fn store_leader_assignment(&mut self, g: &mut ClassicGroup, req: &SyncRequest) {
        let mut assignment: HashMap<String, Bytes> = req.assignments.iter().cloned().collect();
        for id in g.member_ids() {
            assignment.entry(id).or_default();
        }
        tracing::info!(group = %g.id, leader = %req.member_id, generation = g.generation_id, members = g.num_members(), "assignment received from the leader");
        let record = CoordinatorRecord::GroupMetadata {
            group: g.id.clone(),
            value: Some(g.to_record(&assignment)),
        };
        let group_id = g.id.clone();
        let generation = req.generation_id;
        let member_id = req.member_id.clone();
        let end = match self.append(&[record]) {
            Ok((_, end)) => end,
            Err(code) => {
                self.assignment_not_stored(g, code, &member_id);
                return;
            }
        };
        self.after_commit(end, move |st, result| {
            let ShardState { groups, env, .. } = st;
            let Some(g) = groups.get_mut(&group_id) else {
                return;
            };
            // The group may have moved on while the write was pending.
            if !g.is(GroupState::CompletingRebalance) || g.generation_id != generation {
                return;
            }
            match result {
                Ok(()) => {
                    env.set_and_propagate_assignment(g, &assignment);
                    g.transition(GroupState::Stable, now_ms());
                }
                Err(code) => env.assignment_not_stored(g, code, &member_id),
            }
        });
    }

    fn assignment_not_stored(&mut self, g: &mut ClassicGroup, code: i16, member_id: &str) {
        tracing::warn!(group = %g.id, code, "could not store the group's assignment");
        self.reset_and_propagate_assignment_with_error(g, code);
        self.maybe_prepare_rebalance_or_complete_join(
            g,
            &format!("error {code} when storing the assignment (leader {member_id})"),
        );
    }

    /// A static member came back with a new member id (KIP-345). In a Stable group whose
    /// protocol does not change it keeps its assignment without a rebalance.
    fn update_static_member_then_rebalance_or_complete_join(
        &mut self,
        g: &mut ClassicGroup,
        req: JoinRequest,
        old_id: &str,
        new_id: &str,
        tx: oneshot::Sender<JoinResult>,
    ) {
        let Some(instance) = req.group_instance_id.clone() else {
            return send_join(tx, JoinResult::error("", codes::UNKNOWN_SERVER_ERROR));
        };
        let current_leader = g.leader().unwrap_or_default().to_string();
        if !g.replace_static_member(&instance, old_id, new_id) {
            return send_join(tx, JoinResult::error("", codes::UNKNOWN_MEMBER_ID));
        }
        let (old_rebalance, old_session, old_protocols) = match g.member(new_id) {
            Some(m) => (
                m.rebalance_timeout_ms,
                m.session_timeout_ms,
                m.protocols.clone(),
            ),
            None => return,
        };
        self.reschedule_heartbeat(&g.id, new_id, i64::from(old_session));
        g.update_member(
            new_id,
            req.protocols.clone(),
            req.rebalance_timeout_ms,
            req.session_timeout_ms,
            Some(tx),
        );
        match g.state() {
            GroupState::Stable => {
                let selected = g.select_protocol();
                if g.protocol_name.is_some() && g.protocol_name == selected {
                    tracing::info!(group = %g.id, %instance, "static member rejoined without changing the protocol; no rebalance");
                    let assignment = g.assignment();
                    let record = CoordinatorRecord::GroupMetadata {
                        group: g.id.clone(),
                        value: Some(g.to_record(&assignment)),
                    };
                    let revert = StaticRevert {
                        instance,
                        old_id: old_id.to_string(),
                        new_id: new_id.to_string(),
                        old_rebalance,
                        old_session,
                        old_protocols,
                        current_leader,
                    };
                    let end = match self.append(&[record]) {
                        Ok((_, end)) => end,
                        Err(code) => {
                            self.revert_static_member(g, &revert, code);
                            return;
                        }
                    };
                    let group_id = g.id.clone();
                    let skip_assignment_supported = req.api_version >= 9;
                    self.after_commit(end, move |st, result| {
                        let ShardState { groups, env, .. } = st;
                        let Some(g) = groups.get_mut(&group_id) else {
                            return;
                        };
                        if !g.has_member(&revert.new_id) {
                            return;
                        }
                        match result {
                            Err(code) => env.revert_static_member(g, &revert, code),
                            Ok(()) => {
                                let is_leader = g.is_leader(&revert.new_id);
                                let r = if skip_assignment_supported {
                                    // The leader learns the members but need not assign.
                                    g.join_result(&revert.new_id, is_leader)
                                } else {
                                    JoinResult {
                                        members: Vec::new(),
                                        leader: revert.current_leader.clone(),
                                        ..g.join_result(&revert.new_id, false)
                                    }
                                };
                                if let Some(m) = g.member_mut(&revert.new_id) {
                                    m.complete_join(r);
                                }
                            }
                        }
                    });
                } else {
                    self.maybe_prepare_rebalance_or_complete_join(
                        g,
                        "a static member rejoined with a different protocol",
                    );
                }
            }
            // The leader may already have assigned with the old member id: rebalance.
            GroupState::CompletingRebalance => {
                self.prepare_rebalance(g, "a static member rejoined during the sync phase");
            }
            GroupState::PreparingRebalance => self.maybe_complete_join_phase(g),
            GroupState::Empty | GroupState::Dead => {
                tracing::error!(group = %g.id, state = g.state().name(), "a known static member rejoined a group in an unexpected state");
            }
        }
    }

    fn revert_static_member(&mut self, g: &mut ClassicGroup, r: &StaticRevert, code: i16) {
        tracing::warn!(group = %g.id, instance = %r.instance, code, "could not persist a static member's new id; reverting to the old one");
        let tx = g.member_mut(&r.new_id).and_then(|m| m.awaiting_join.take());
        g.update_member(
            &r.new_id,
            r.old_protocols.clone(),
            r.old_rebalance,
            r.old_session,
            None,
        );
        g.replace_static_member(&r.instance, &r.new_id, &r.old_id);
        self.reschedule_heartbeat(&g.id, &r.old_id, i64::from(r.old_session));
        if let Some(tx) = tx {
            send_join(
                tx,
                JoinResult {
                    error: code,
                    member_id: String::new(),
                    generation_id: g.generation_id,
                    protocol_type: g.protocol_type.clone(),
                    protocol_name: g.protocol_name.clone(),
                    leader: r.current_leader.clone(),
                    skip_assignment: false,
                    members: Vec::new(),
                },
            );
        }
    }
}

/// What undoing a static member's replacement needs.
struct StaticRevert {
    instance: String,
    old_id: String,
    new_id: String,
    old_rebalance: i32,
    old_session: i32,
    old_protocols: Vec<Protocol>,
    current_leader: String,
}
