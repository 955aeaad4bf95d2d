//! ConsumerGroupHeartbeat: joining, heartbeating and leaving a consumer group, and the session
//! and revocation deadlines that remove members (Kafka's `GroupMetadataManager`
//! `consumerGroupHeartbeat`, `consumerGroupLeave` and `consumerGroupFenceMember`).
//!
//! A heartbeat is computed against the current state into a list of records; the records are
//! appended to the partition and then replayed, which is what changes the state. A write that
//! fails changes nothing. In order, a heartbeat:
//! 1. finds or creates the group and the member, checking the member's epoch;
//! 2. records the member's new subscription, and bumps the group epoch if a subscription or the
//!    metadata of the subscribed topics changed;
//! 3. computes a new target assignment when the group epoch is ahead of it;
//! 4. takes one reconciliation step for the member ([`crate::group::consumer::reconcile`]).

use std::collections::{BTreeMap, BTreeSet};

use fjord_raft::MetadataImage;
use uuid::Uuid;

use crate::group::GroupCoordinatorConfig;
use crate::group::classic::GroupState;
use crate::group::codes;
use crate::group::consumer::assignor::{MemberSpec, ServerAssignor};
use crate::group::consumer::group::{ConsumerGroup, compile_regex};
use crate::group::consumer::member::{ConsumerMember, MemberState};
use crate::group::consumer::reconcile::Reconcile;
use crate::group::consumer::records::{
    ConsumerRecord, CurrentAssignmentValue, MemberMetadataValue, TopicMetadata,
};
use crate::group::consumer::{
    Assignment, LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH, is_subset,
};
use crate::group::records::CoordinatorRecord;
use crate::group::state::ShardState;
use crate::group::timers::{TimerAction, TimerKey};

/// A ConsumerGroupHeartbeat request, decoded by the handler. `None` fields were not sent
/// (unchanged since the previous heartbeat).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns.
    pub owned: Option<Assignment>,
    pub api_version: i16,
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's partitions, when it must learn them.
    pub assignment: Option<Assignment>,
    /// The answer waits until the log is committed up to here.
    pub end: i64,
}

/// A failed heartbeat: Kafka's error code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatError {
    pub code: i16,
    pub message: Option<String>,
}

impl HeartbeatError {
    pub fn new(code: i16, message: impl Into<String>) -> HeartbeatError {
        HeartbeatError {
            code,
            message: Some(message.into()),
        }
    }

    /// An error whose message is the code's own.
    pub fn code(code: i16) -> HeartbeatError {
        HeartbeatError {
            code,
            message: None,
        }
    }
}

type Result<T> = std::result::Result<T, HeartbeatError>;

/// From this version the member id is the client's (KIP-1082) and always required.
const CLIENT_MEMBER_ID_VERSION: i16 = 1;

/// Kafka's request validation (done before the request reaches the group's coordinator).
pub fn validate(req: &HeartbeatRequest, assignors: &[String]) -> Result<()> {
    let invalid = |m: &str| Err(HeartbeatError::new(codes::INVALID_REQUEST, m));
    let blank = |s: &Option<String>| s.as_deref().is_some_and(|s| s.trim().is_empty());
    if req.group_id.trim().is_empty() {
        return invalid("GroupId can't be empty.");
    }
    if blank(&req.instance_id) {
        return invalid("InstanceId can't be empty.");
    }
    if blank(&req.rack_id) {
        return invalid("RackId can't be empty.");
    }
    if req.member_id.trim().is_empty()
        && (req.api_version >= CLIENT_MEMBER_ID_VERSION || req.member_epoch != 0)
    {
        return invalid("MemberId can't be empty.");
    }
    if req.member_epoch == 0 {
        if req.rebalance_timeout_ms == -1 {
            return invalid("RebalanceTimeoutMs must be provided in first request.");
        }
        if req.owned.as_ref().is_none_or(|o| !o.is_empty()) {
            return invalid("TopicPartitions must be empty when (re-)joining.");
        }
        if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
            return invalid(
                "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
            );
        }
    } else if req.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
        if req.instance_id.is_none() {
            return invalid("InstanceId can't be null.");
        }
    } else if req.member_epoch < LEAVE_GROUP_STATIC_MEMBER_EPOCH {
        return invalid("MemberEpoch is invalid.");
    }
    if let Some(re) = req
        .subscribed_topic_regex
        .as_deref()
        .filter(|r| !r.is_empty())
        && compile_regex(re).is_none()
    {
        return Err(HeartbeatError::new(
            codes::INVALID_REGULAR_EXPRESSION,
            format!("SubscribedTopicRegex `{re}` is not a valid regular expression."),
        ));
    }
    if let Some(a) = &req.server_assignor
        && !assignors.iter().any(|x| x == a)
    {
        return Err(HeartbeatError::new(
            codes::UNSUPPORTED_ASSIGNOR,
            format!(
                "ServerAssignor {a} is not supported. Supported assignors: {}.",
                assignors.join(", ")
            ),
        ));
    }
    Ok(())
}

/// What a heartbeat decided, before it is written.
struct Plan {
    records: Vec<CoordinatorRecord>,
    member_id: String,
    member_epoch: i32,
    assignment: Option<Assignment>,
    /// `Some(Some((epoch, timeout)))`: start the revocation deadline; `Some(None)`: stop it.
    revocation: Option<Option<(i32, i32)>>,
    /// A static member this one replaces: its deadlines end.
    replaced: Option<String>,
    /// A new target assignment was computed (a rebalance, for the metrics).
    new_target: bool,
}

fn member_metadata(m: &ConsumerMember) -> MemberMetadataValue {
    MemberMetadataValue {
        instance_id: m.instance_id.clone(),
        rack_id: m.rack_id.clone(),
        client_id: m.client_id.clone(),
        client_host: m.client_host.clone(),
        subscribed_topic_names: m.subscribed_topic_names.iter().cloned().collect(),
        subscribed_topic_regex: m.subscribed_topic_regex.clone(),
        rebalance_timeout_ms: m.rebalance_timeout_ms,
        server_assignor: m.server_assignor.clone(),
    }
}

fn subscription_record(group: &str, m: &ConsumerMember) -> CoordinatorRecord {
    CoordinatorRecord::Consumer(ConsumerRecord::MemberSubscription {
        group: group.to_string(),
        member: m.member_id.clone(),
        value: Some(member_metadata(m)),
    })
}

fn current_assignment_record(group: &str, m: &ConsumerMember) -> CoordinatorRecord {
    CoordinatorRecord::Consumer(ConsumerRecord::CurrentAssignment {
        group: group.to_string(),
        member: m.member_id.clone(),
        value: Some(CurrentAssignmentValue {
            member_epoch: m.member_epoch,
            previous_member_epoch: m.previous_member_epoch,
            state: m.state.value(),
            assigned: m.assigned.clone(),
            pending_revocation: m.pending_revocation.clone(),
        }),
    })
}

fn target_record(group: &str, member: &str, a: &Assignment) -> CoordinatorRecord {
    CoordinatorRecord::Consumer(ConsumerRecord::TargetAssignment {
        group: group.to_string(),
        member: member.to_string(),
        partitions: Some(a.clone()),
    })
}

/// The tombstones removing a member, in Kafka's order.
fn member_tombstones(group: &str, member: &str) -> Vec<CoordinatorRecord> {
    vec![
        CoordinatorRecord::Consumer(ConsumerRecord::CurrentAssignment {
            group: group.to_string(),
            member: member.to_string(),
            value: None,
        }),
        CoordinatorRecord::Consumer(ConsumerRecord::TargetAssignment {
            group: group.to_string(),
            member: member.to_string(),
            partitions: None,
        }),
        CoordinatorRecord::Consumer(ConsumerRecord::MemberSubscription {
            group: group.to_string(),
            member: member.to_string(),
            value: None,
        }),
    ]
}

fn metadata_record(group: &str, md: &BTreeMap<String, TopicMetadata>) -> CoordinatorRecord {
    CoordinatorRecord::Consumer(ConsumerRecord::SubscriptionMetadata {
        group: group.to_string(),
        topics: Some(md.values().cloned().collect()),
    })
}

fn epoch_record(group: &str, epoch: i32) -> CoordinatorRecord {
    CoordinatorRecord::Consumer(ConsumerRecord::GroupEpoch {
        group: group.to_string(),
        epoch: Some(epoch),
    })
}

/// The records removing `member` from `g` and bumping the group epoch.
fn fence_records(g: &ConsumerGroup, member: &str) -> Vec<CoordinatorRecord> {
    let mut records = member_tombstones(&g.id, member);
    let md = g.subscription_metadata_without(member);
    if md != g.subscription_metadata {
        records.push(metadata_record(&g.id, &md));
    }
    records.push(epoch_record(&g.id, g.group_epoch + 1));
    records
}

/// Kafka's member epoch check.
fn check_epoch(m: &ConsumerMember, received: i32, owned: Option<&Assignment>) -> Result<()> {
    // A member rejoining (after being fenced, say) starts over with epoch 0 (KAFKA-19233).
    if received == 0 {
        return Ok(());
    }
    if received > m.member_epoch {
        return Err(HeartbeatError::new(
            codes::FENCED_MEMBER_EPOCH,
            format!(
                "The consumer group member has a greater member epoch ({received}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
                m.member_epoch
            ),
        ));
    }
    if received < m.member_epoch {
        // The answer that bumped the epoch may have been lost: the previous epoch is accepted
        // from a member that owns no more than it is assigned.
        let lost_answer =
            received == m.previous_member_epoch && owned.is_some_and(|o| is_subset(o, &m.assigned));
        if !lost_answer {
            return Err(HeartbeatError::new(
                codes::FENCED_MEMBER_EPOCH,
                format!(
                    "The consumer group member has a smaller member epoch ({received}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
                    m.member_epoch
                ),
            ));
        }
    }
    Ok(())
}

/// The ids of the topics in `md` that `m` subscribes to.
fn member_topic_ids(m: &ConsumerMember, md: &BTreeMap<String, TopicMetadata>) -> BTreeSet<Uuid> {
    let re = m.subscribed_topic_regex.as_deref().and_then(compile_regex);
    md.values()
        .filter(|t| {
            m.subscribed_topic_names.contains(&t.name)
                || re.as_ref().is_some_and(|r| r.is_match(&t.name))
        })
        .map(|t| t.id)
        .collect()
}

fn not_found(group: &str) -> HeartbeatError {
    HeartbeatError::new(
        codes::GROUP_ID_NOT_FOUND,
        format!("Consumer group {group} not found."),
    )
}

fn not_a_consumer_group(group: &str) -> HeartbeatError {
    HeartbeatError::new(
        codes::GROUP_ID_NOT_FOUND,
        format!("Group {group} is not a consumer group."),
    )
}

fn plan_heartbeat(
    cfg: &GroupCoordinatorConfig,
    g: &ConsumerGroup,
    mut records: Vec<CoordinatorRecord>,
    req: &HeartbeatRequest,
    image: &MetadataImage,
) -> Result<Plan> {
    let joining = req.member_epoch == 0;
    let member_id = if req.member_id.is_empty() {
        // Version 0 lets the coordinator choose, as Kafka does: a random id in Kafka's base64.
        crate::util::uuid_to_base64(&Uuid::new_v4())
    } else {
        req.member_id.clone()
    };
    if g.num_members() >= cfg.consumer_max_size && g.member(&member_id).is_none() {
        return Err(HeartbeatError::new(
            codes::GROUP_MAX_SIZE_REACHED,
            format!(
                "The consumer group has reached its maximum capacity of {} members.",
                cfg.consumer_max_size
            ),
        ));
    }

    // 1. The member.
    let mut replaced: Option<&ConsumerMember> = None;
    let mut is_new = false;
    let member: ConsumerMember = match &req.instance_id {
        None => match g.member(&member_id) {
            Some(m) => {
                check_epoch(m, req.member_epoch, req.owned.as_ref())?;
                m.clone()
            }
            None if joining => {
                is_new = true;
                ConsumerMember::new(&member_id)
            }
            None => {
                return Err(HeartbeatError::new(
                    codes::UNKNOWN_MEMBER_ID,
                    format!("Member {member_id} is not a member of group {}.", g.id),
                ));
            }
        },
        Some(instance) => match g.static_member(instance) {
            Some(old) if old.member_id == member_id => {
                check_epoch(old, req.member_epoch, req.owned.as_ref())?;
                old.clone()
            }
            Some(old) if joining => {
                if old.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                    return Err(HeartbeatError::new(
                        codes::UNRELEASED_INSTANCE_ID,
                        format!(
                            "Static member {member_id} with instance id {instance} cannot join the group because the instance id is owned by {} member.",
                            old.member_id
                        ),
                    ));
                }
                // The static member is back under a new member id: it takes over the old
                // one's assignment, without a rebalance.
                let mut m = old.clone();
                m.member_id = member_id.clone();
                m.member_epoch = 0;
                m.previous_member_epoch = 0;
                records.extend(member_tombstones(&g.id, &old.member_id));
                records.push(subscription_record(&g.id, &m));
                records.push(target_record(
                    &g.id,
                    &m.member_id,
                    &g.target_of(&old.member_id, None),
                ));
                records.push(current_assignment_record(&g.id, &m));
                tracing::info!(group = %g.id, %instance, old = %old.member_id, new = %member_id, "static member rejoined; it replaces its previous member id");
                replaced = Some(old);
                m
            }
            Some(old) => {
                return Err(HeartbeatError::new(
                    codes::FENCED_INSTANCE_ID,
                    format!(
                        "Static member {member_id} with instance id {instance} was fenced by member {}.",
                        old.member_id
                    ),
                ));
            }
            None if joining => match g.member(&member_id) {
                Some(m) => m.clone(),
                None => {
                    is_new = true;
                    ConsumerMember::new(&member_id)
                }
            },
            None => {
                return Err(HeartbeatError::new(
                    codes::UNKNOWN_MEMBER_ID,
                    format!("Instance id {instance} is unknown."),
                ));
            }
        },
    };
    if is_new {
        tracing::info!(group = %g.id, member = %member_id, instance = ?req.instance_id, "member joins the consumer group");
    }
    let replaced_id = replaced.map(|m| m.member_id.as_str());

    // 2. The subscription, and the group epoch.
    let mut updated = member.clone();
    if let Some(i) = &req.instance_id {
        updated.instance_id = Some(i.clone());
    }
    if let Some(r) = &req.rack_id {
        updated.rack_id = Some(r.clone());
    }
    if req.rebalance_timeout_ms != -1 {
        updated.rebalance_timeout_ms = req.rebalance_timeout_ms;
    }
    if let Some(a) = &req.server_assignor {
        updated.server_assignor = Some(a.clone());
    }
    if let Some(names) = &req.subscribed_topic_names {
        updated.subscribed_topic_names = names.iter().cloned().collect();
    }
    if let Some(re) = &req.subscribed_topic_regex {
        updated.subscribed_topic_regex = (!re.is_empty()).then(|| re.clone());
    }
    updated.client_id = req.client_id.clone();
    updated.client_host = req.client_host.clone();
    let mut bump = false;
    if updated != member || is_new {
        records.push(subscription_record(&g.id, &updated));
        bump = updated.subscription_differs(&member);
    }
    let mut group_epoch = g.group_epoch;
    let mut metadata = g.subscription_metadata.clone();
    if bump || g.checked_image != Some(image.offset) {
        let md = g.compute_subscription_metadata(Some(&updated), replaced_id, image);
        if md != g.subscription_metadata {
            tracing::info!(group = %g.id, topics = ?md.values().map(|t| (&t.name, t.num_partitions)).collect::<Vec<_>>(), "the subscribed topics' metadata changed");
            records.push(metadata_record(&g.id, &md));
            bump = true;
            metadata = md;
        }
    }
    if bump {
        group_epoch += 1;
        records.push(epoch_record(&g.id, group_epoch));
        tracing::info!(group = %g.id, epoch = group_epoch, "bumped the consumer group epoch");
    }

    // 3. The target assignment.
    let (target_epoch, target) = if group_epoch > g.assignment_epoch {
        let assignor = g
            .preferred_assignor(Some(&updated))
            .and_then(|a| ServerAssignor::from_name(&a))
            .or_else(|| {
                cfg.consumer_assignors
                    .first()
                    .and_then(|a| ServerAssignor::from_name(a))
            })
            .unwrap_or(ServerAssignor::Uniform);
        let specs: Vec<MemberSpec> = g
            .members()
            .filter(|m| {
                m.member_id != updated.member_id && Some(m.member_id.as_str()) != replaced_id
            })
            .chain(std::iter::once(&updated))
            .map(|m| MemberSpec {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                topics: member_topic_ids(m, &metadata),
                current: g.target_of(&m.member_id, m.instance_id.as_deref()),
            })
            .collect();
        let topics: BTreeMap<Uuid, i32> = metadata
            .values()
            .map(|t| (t.id, t.num_partitions))
            .collect();
        let started = std::time::Instant::now();
        let result = assignor.assign(&specs, &topics);
        for s in &specs {
            let new = result.get(&s.member_id).cloned().unwrap_or_default();
            if new != s.current || !g.target().contains_key(&s.member_id) {
                records.push(target_record(&g.id, &s.member_id, &new));
            }
        }
        records.push(CoordinatorRecord::Consumer(
            ConsumerRecord::TargetAssignmentEpoch {
                group: g.id.clone(),
                epoch: Some(group_epoch),
            },
        ));
        tracing::info!(group = %g.id, epoch = group_epoch, assignor = assignor.name(), members = specs.len(), elapsed_us = started.elapsed().as_micros() as u64, "computed a new target assignment");
        (
            group_epoch,
            result.get(&updated.member_id).cloned().unwrap_or_default(),
        )
    } else {
        (
            g.assignment_epoch,
            g.target_of(&updated.member_id, updated.instance_id.as_deref()),
        )
    };

    // 4. One step towards the target.
    let held = |t: Uuid, p: i32| {
        g.owner(t, p)
            .is_some_and(|(o, _)| o != updated.member_id && Some(o) != replaced_id)
    };
    let reconciled = if updated.is_reconciled_to(target_epoch) {
        updated.clone()
    } else {
        Reconcile {
            target_epoch,
            target: &target,
            owned: req.owned.as_ref(),
            held_by_other: &held,
        }
        .step(&updated)
        .map_err(|f| HeartbeatError::new(f.code(), f.0))?
    };
    let mut revocation = None;
    if reconciled != updated {
        records.push(current_assignment_record(&g.id, &reconciled));
        revocation = Some(
            (reconciled.state == MemberState::UnrevokedPartitions)
                .then_some((reconciled.member_epoch, reconciled.rebalance_timeout_ms)),
        );
        tracing::debug!(group = %g.id, member = %reconciled.member_id, epoch = reconciled.member_epoch, state = ?reconciled.state, assigned = ?reconciled.assigned, revoking = ?reconciled.pending_revocation, "member assignment moved");
    }
    let full = joining
        || (req.rebalance_timeout_ms != -1
            && (req.subscribed_topic_names.is_some() || req.subscribed_topic_regex.is_some())
            && req.owned.is_some());
    let assignment =
        (full || reconciled.assigned != member.assigned).then(|| reconciled.assigned.clone());
    Ok(Plan {
        records,
        member_id,
        member_epoch: reconciled.member_epoch,
        assignment,
        revocation,
        replaced: replaced.map(|m| m.member_id.clone()),
        new_target: group_epoch > g.assignment_epoch,
    })
}

impl ShardState {
    /// ConsumerGroupHeartbeat (validated with [`validate`]). `image` is the metadata the
    /// subscriptions are resolved against.
    pub fn consumer_group_heartbeat(
        &mut self,
        req: &HeartbeatRequest,
        image: &MetadataImage,
    ) -> Result<HeartbeatAnswer> {
        if req.member_epoch == LEAVE_GROUP_MEMBER_EPOCH
            || req.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH
        {
            return self.consumer_group_leave(req);
        }
        let mut records = Vec::new();
        let fresh;
        let g = match self.consumer_groups.get(&req.group_id) {
            Some(g) => g,
            None => {
                if let Some(classic) = self.groups.get(&req.group_id) {
                    // An empty classic group gives way to a consumer group, as in Kafka; one
                    // with members cannot (no online upgrade).
                    if req.member_epoch != 0
                        || !classic.is(GroupState::Empty)
                        || classic.num_members() > 0
                    {
                        return Err(not_a_consumer_group(&req.group_id));
                    }
                    records.push(CoordinatorRecord::GroupMetadata {
                        group: req.group_id.clone(),
                        value: None,
                    });
                } else if req.member_epoch != 0 {
                    return Err(not_found(&req.group_id));
                }
                fresh = ConsumerGroup::new(&req.group_id);
                &fresh
            }
        };
        let plan = plan_heartbeat(&self.env.config, g, records, req, image)?;
        let end = self
            .write_and_replay(&plan.records)
            .map_err(HeartbeatError::code)?;
        if plan.new_target {
            crate::observe::metrics::rebalance_completed(
                crate::observe::metrics::GroupKind::Consumer,
            );
        }
        let group_id = req.group_id.clone();
        if let Some(g) = self.consumer_groups.get_mut(&group_id) {
            g.checked_image = Some(image.offset);
        }
        if let Some(old) = &plan.replaced {
            self.cancel_consumer_timers(&group_id, old);
        }
        let session = self.env.config.consumer_session_timeout_ms;
        self.env.timers.schedule_ms(
            TimerKey::ConsumerSession {
                group: group_id.clone(),
                member: plan.member_id.clone(),
            },
            i64::from(session),
            TimerAction::FenceConsumerMember,
        );
        let revocation_key = TimerKey::ConsumerRevocation {
            group: group_id,
            member: plan.member_id.clone(),
        };
        match plan.revocation {
            Some(Some((epoch, timeout))) => self.env.timers.schedule_ms(
                revocation_key,
                i64::from(timeout.max(0)),
                TimerAction::ExpireRevocation { epoch },
            ),
            Some(None) => self.env.timers.cancel(&revocation_key),
            None => {}
        }
        Ok(HeartbeatAnswer {
            member_id: plan.member_id,
            member_epoch: plan.member_epoch,
            heartbeat_interval_ms: self.env.config.consumer_heartbeat_interval_ms,
            assignment: plan.assignment,
            end,
        })
    }

    /// A heartbeat with epoch -1 (leave) or -2 (a static member leaving for a while).
    fn consumer_group_leave(&mut self, req: &HeartbeatRequest) -> Result<HeartbeatAnswer> {
        let Some(g) = self.consumer_groups.get(&req.group_id) else {
            return Err(if self.groups.contains_key(&req.group_id) {
                not_a_consumer_group(&req.group_id)
            } else {
                not_found(&req.group_id)
            });
        };
        let member = match &req.instance_id {
            None => g.member(&req.member_id).ok_or_else(|| {
                HeartbeatError::new(
                    codes::UNKNOWN_MEMBER_ID,
                    format!(
                        "Member {} is not a member of group {}.",
                        req.member_id, g.id
                    ),
                )
            })?,
            Some(instance) => {
                let m = g.static_member(instance).ok_or_else(|| {
                    HeartbeatError::new(
                        codes::UNKNOWN_MEMBER_ID,
                        format!("Instance id {instance} is unknown."),
                    )
                })?;
                if m.member_id != req.member_id {
                    return Err(HeartbeatError::new(
                        codes::FENCED_INSTANCE_ID,
                        format!(
                            "Static member {} with instance id {instance} was fenced by member {}.",
                            req.member_id, m.member_id
                        ),
                    ));
                }
                m
            }
        };
        let member_id = member.member_id.clone();
        let temporary =
            req.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH && req.instance_id.is_some();
        let records = if temporary {
            // The static member keeps its partitions until it returns or its session ends.
            let mut m = member.clone();
            m.member_epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH;
            m.pending_revocation = Assignment::new();
            tracing::info!(group = %g.id, member = %member_id, instance = ?m.instance_id, "static member left the consumer group for now");
            vec![current_assignment_record(&g.id, &m)]
        } else {
            tracing::info!(group = %g.id, member = %member_id, "member left the consumer group");
            fence_records(g, &member_id)
        };
        let end = self
            .write_and_replay(&records)
            .map_err(HeartbeatError::code)?;
        if !temporary {
            self.cancel_consumer_timers(&req.group_id, &member_id);
        }
        Ok(HeartbeatAnswer {
            member_id,
            member_epoch: req.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
            end,
        })
    }

    fn cancel_consumer_timers(&mut self, group: &str, member: &str) {
        self.env.timers.cancel(&TimerKey::ConsumerSession {
            group: group.to_string(),
            member: member.to_string(),
        });
        self.env.timers.cancel(&TimerKey::ConsumerRevocation {
            group: group.to_string(),
            member: member.to_string(),
        });
    }

    /// Removes a member whose deadline passed; `epoch`, if given, must still be its epoch.
    pub(crate) fn fence_consumer_member(
        &mut self,
        group: &str,
        member: &str,
        epoch: Option<i32>,
        reason: &str,
    ) {
        let Some(g) = self.consumer_groups.get(group) else {
            return;
        };
        let Some(m) = g.member(member) else {
            return;
        };
        if epoch.is_some_and(|e| e != m.member_epoch) {
            return;
        }
        tracing::info!(group = %group, member = %member, %reason, "removing a consumer group member");
        let records = fence_records(g, member);
        match self.write_and_replay(&records) {
            Ok(_) => self.cancel_consumer_timers(group, member),
            Err(code) => {
                // Try again later rather than keep a dead member for good.
                tracing::warn!(group = %group, member = %member, code, "could not write a member's removal; retrying");
                let session = self.env.config.consumer_session_timeout_ms;
                self.env.timers.schedule_ms(
                    TimerKey::ConsumerSession {
                        group: group.to_string(),
                        member: member.to_string(),
                    },
                    i64::from(session),
                    TimerAction::FenceConsumerMember,
                );
            }
        }
    }

    /// After loading: every member's session starts afresh, and members that were revoking
    /// get their deadline again.
    pub(crate) fn schedule_loaded_consumer_members(&mut self) {
        let session = self.env.config.consumer_session_timeout_ms;
        let mut keys = Vec::new();
        for g in self.consumer_groups.values() {
            for m in g.members() {
                keys.push((
                    TimerKey::ConsumerSession {
                        group: g.id.clone(),
                        member: m.member_id.clone(),
                    },
                    i64::from(session),
                    TimerAction::FenceConsumerMember,
                ));
                if m.state == MemberState::UnrevokedPartitions {
                    keys.push((
                        TimerKey::ConsumerRevocation {
                            group: g.id.clone(),
                            member: m.member_id.clone(),
                        },
                        i64::from(m.rebalance_timeout_ms.max(0)),
                        TimerAction::ExpireRevocation {
                            epoch: m.member_epoch,
                        },
                    ));
                }
            }
        }
        for (key, delay, action) in keys {
            self.env.timers.schedule_ms(key, delay, action);
        }
    }
}
