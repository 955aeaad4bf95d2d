//! FindCoordinator and the classic group APIs: JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! ListGroups, DescribeGroups, DeleteGroups. The work is the group coordinator's
//! (`crate::group`); these handlers validate what Kafka validates before it, route each group
//! to the shard that owns it and shape the answers for the request's version.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fjord_protocol::kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use fjord_protocol::kafka_protocol::messages::describe_groups_response::{
    DescribedGroup, DescribedGroupMember,
};
use fjord_protocol::kafka_protocol::messages::find_coordinator_response::Coordinator;
use fjord_protocol::kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use fjord_protocol::kafka_protocol::messages::leave_group_response::MemberResponse;
use fjord_protocol::kafka_protocol::messages::list_groups_response::ListedGroup;
use fjord_protocol::kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, ResponseKind, SyncGroupRequest,
    SyncGroupResponse,
};
use fjord_protocol::kafka_protocol::protocol::StrBytes;
use fjord_raft::MetadataImage;
use tokio::sync::oneshot;

use crate::broker::Broker;
use crate::dispatch::{Reply, RequestContext};
use crate::group::OFFSETS_TOPIC;
use crate::group::codes;
use crate::group::member::{JoinResult, Protocol, SyncResult};
use crate::group::rebalance::{
    JoinRequest, LeavingMember, NEW_MEMBER_JOIN_TIMEOUT_MS, SyncRequest,
};
use crate::group::shard::Shard;
use crate::util::str_bytes;

/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;
const KEY_TYPE_SHARE: i8 = 2;

/// Longest a SyncGroup stays parked waiting for the leader's assignment. The coordinator ends
/// every sync phase within the group's rebalance timeout; this only bounds the handler.
const SYNC_PARK_LIMIT: Duration = Duration::from_secs(30 * 60);

/// `Authorized operations` of a group without an authorizer: READ, DELETE and DESCRIBE
/// (ACL operation codes 3, 6 and 8), as Kafka reports them.
pub(crate) const GROUP_AUTHORIZED_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

fn opt(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.as_str().to_string())
}

/// The host Kafka reports for a client: its address as Java prints an `InetAddress`.
pub fn client_host(ctx: &RequestContext) -> String {
    ctx.peer.map(|p| format!("/{}", p.ip())).unwrap_or_default()
}

fn client_id(ctx: &RequestContext) -> String {
    ctx.header
        .client_id
        .as_ref()
        .map(|c| c.as_str().to_string())
        .unwrap_or_default()
}

// ------------------------------------------------------------------------ FindCoordinator

pub fn handle_find_coordinator(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    req: FindCoordinatorRequest,
) -> Reply {
    let version = ctx.version();
    let image = broker.image();
    let keys: Vec<StrBytes> = if version >= 4 {
        req.coordinator_keys.clone()
    } else {
        vec![req.key.clone()]
    };
    // Kafka fails the whole request on an unknown key type (with the error's default
    // message); other errors are per key, and carry a message only before version 4, where
    // even success says "NONE".
    let known_type = matches!(
        req.key_type,
        KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION | KEY_TYPE_SHARE
    );
    let found: Vec<(StrBytes, Found)> = keys
        .into_iter()
        .map(|k| {
            let f = if known_type {
                find_coordinator(broker, &ctx, &image, req.key_type, k.as_str())
            } else {
                Found::error(codes::INVALID_REQUEST)
            };
            (k, f)
        })
        .collect();
    let resp = if version >= 4 {
        FindCoordinatorResponse::default().with_coordinators(
            found
                .into_iter()
                .map(|(key, f)| {
                    let message = (!known_type).then(|| str_bytes(codes::message(f.error)));
                    Coordinator::default()
                        .with_key(key)
                        .with_node_id(BrokerId(f.node_id))
                        .with_host(str_bytes(&f.host))
                        .with_port(f.port)
                        .with_error_code(f.error)
                        .with_error_message(message)
                })
                .collect(),
        )
    } else {
        let f = found
            .into_iter()
            .next()
            .map(|(_, f)| f)
            .unwrap_or_else(|| Found::error(codes::INVALID_REQUEST));
        let r = FindCoordinatorResponse::default()
            .with_error_code(f.error)
            .with_node_id(BrokerId(f.node_id))
            .with_host(str_bytes(&f.host))
            .with_port(f.port);
        if version >= 1 {
            let message = if f.error == codes::NONE {
                "NONE"
            } else {
                codes::message(f.error)
            };
            r.with_error_message(Some(str_bytes(message)))
        } else {
            r
        }
    };
    Reply::now(ResponseKind::FindCoordinator(resp))
}

struct Found {
    error: i16,
    node_id: i32,
    host: String,
    port: i32,
}

impl Found {
    /// An error with Kafka's "no node" (-1, "", -1).
    fn error(code: i16) -> Found {
        Found {
            error: code,
            node_id: -1,
            host: String::new(),
            port: -1,
        }
    }
}

fn find_coordinator(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    image: &MetadataImage,
    key_type: i8,
    key: &str,
) -> Found {
    match key_type {
        KEY_TYPE_GROUP => {}
        KEY_TYPE_TRANSACTION => {
            // Kafka answers COORDINATOR_NOT_AVAILABLE while the transaction state topic cannot
            // be had; without a transaction coordinator that is always the case here.
            tracing::debug!(
                transactional_id = key,
                "FindCoordinator for a transaction: transactions are not supported"
            );
            return Found::error(codes::COORDINATOR_NOT_AVAILABLE);
        }
        // No share group coordinator (KIP-932 is not enabled), as Kafka answers then.
        _ => return Found::error(codes::INVALID_REQUEST),
    }
    if image.topic(OFFSETS_TOPIC).is_none() {
        broker.groups.request_offsets_topic();
        return Found::error(codes::COORDINATOR_NOT_AVAILABLE);
    }
    let p = broker.groups.partition_for(key, image);
    let leader = image.partition(OFFSETS_TOPIC, p).map_or(-1, |r| r.leader);
    let endpoint = image
        .broker(leader)
        .filter(|b| !b.fenced)
        .and_then(|b| b.endpoint(&ctx.listener));
    match endpoint {
        Some(ep) => Found {
            error: codes::NONE,
            node_id: leader,
            host: ep.host.clone(),
            port: i32::from(ep.port),
        },
        None => Found::error(codes::COORDINATOR_NOT_AVAILABLE),
    }
}

/// The shard that coordinates `group_id` on this broker.
fn shard_for(broker: &Broker, group_id: &str) -> Result<Arc<Shard>, i16> {
    broker.groups.shard_for(group_id, &broker.image())
}

// ------------------------------------------------------------------------ JoinGroup

pub fn handle_join_group(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    req: JoinGroupRequest,
) -> Reply {
    let broker = broker.clone();
    Reply::later(async move {
        let version = ctx.version();
        let r = join_group(&broker, &ctx, req).await;
        ResponseKind::JoinGroup(join_response(r, version))
    })
}

async fn join_group(broker: &Broker, ctx: &RequestContext, req: JoinGroupRequest) -> JoinResult {
    let member_id = req.member_id.as_str().to_string();
    let group_id = req.group_id.as_str().to_string();
    if group_id.is_empty() {
        return JoinResult::error(&member_id, codes::INVALID_GROUP_ID);
    }
    let cfg = broker.groups.config();
    if req.session_timeout_ms < cfg.min_session_timeout_ms
        || req.session_timeout_ms > cfg.max_session_timeout_ms
    {
        return JoinResult::error(&member_id, codes::INVALID_SESSION_TIMEOUT);
    }
    let shard = match shard_for(broker, &group_id) {
        Ok(s) => s,
        Err(code) => return JoinResult::error(&member_id, code),
    };
    // Version 0 has no rebalance timeout: the session timeout serves for both.
    let rebalance_timeout_ms = if ctx.version() == 0 {
        req.session_timeout_ms
    } else {
        req.rebalance_timeout_ms
    };
    let join = JoinRequest {
        group_id,
        member_id: member_id.clone(),
        group_instance_id: opt(&req.group_instance_id),
        client_id: client_id(ctx),
        client_host: client_host(ctx),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms,
        protocol_type: req.protocol_type.as_str().to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| Protocol {
                name: p.name.as_str().to_string(),
                metadata: p.metadata.clone(),
            })
            .collect(),
        api_version: ctx.version(),
        reason: opt(&req.reason),
    };
    let (tx, rx) = oneshot::channel();
    if let Err(code) = shard.write(|st| st.join(join, tx)) {
        return JoinResult::error(&member_id, code);
    }
    // The coordinator answers within the group's rebalance timeout (or the new member join
    // timeout); the bound only keeps the handler from waiting forever on a bug.
    let limit = Duration::from_millis(
        i64::from(rebalance_timeout_ms.max(req.session_timeout_ms)).max(NEW_MEMBER_JOIN_TIMEOUT_MS)
            as u64,
    ) + Duration::from_secs(60);
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(r)) => r,
        // The shard went away (or a newer JoinGroup of the same member replaced this one).
        Ok(Err(_)) => JoinResult::error(&member_id, codes::NOT_COORDINATOR),
        Err(_) => {
            tracing::warn!(member = %member_id, "JoinGroup was not answered in time");
            JoinResult::error(&member_id, codes::REBALANCE_IN_PROGRESS)
        }
    }
}

fn join_response(r: JoinResult, version: i16) -> JoinGroupResponse {
    // Before version 7 the protocol name is not nullable: Kafka sends "" instead; from 7 on
    // an empty name is sent as null.
    let protocol_name = match r.protocol_name {
        Some(n) if version >= 7 && n.is_empty() => None,
        None if version < 7 => Some(String::new()),
        other => other,
    };
    JoinGroupResponse::default()
        .with_error_code(r.error)
        .with_generation_id(r.generation_id)
        .with_protocol_type(r.protocol_type.as_deref().map(str_bytes))
        .with_protocol_name(protocol_name.as_deref().map(str_bytes))
        .with_leader(str_bytes(&r.leader))
        .with_skip_assignment(version >= 9 && r.skip_assignment)
        .with_member_id(str_bytes(&r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(&m.member_id))
                        .with_group_instance_id(m.group_instance_id.as_deref().map(str_bytes))
                        .with_metadata(m.metadata)
                })
                .collect(),
        )
}

// ------------------------------------------------------------------------ SyncGroup

pub fn handle_sync_group(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    req: SyncGroupRequest,
) -> Reply {
    let broker = broker.clone();
    Reply::later(async move {
        let r = sync_group(&broker, &ctx, req).await;
        ResponseKind::SyncGroup(
            SyncGroupResponse::default()
                .with_error_code(r.error)
                .with_protocol_type(r.protocol_type.as_deref().map(str_bytes))
                .with_protocol_name(r.protocol_name.as_deref().map(str_bytes))
                .with_assignment(r.assignment),
        )
    })
}

async fn sync_group(broker: &Broker, ctx: &RequestContext, req: SyncGroupRequest) -> SyncResult {
    // From version 5 the protocol type and name are mandatory.
    if ctx.version() >= 5 && (req.protocol_type.is_none() || req.protocol_name.is_none()) {
        return SyncResult::error(codes::INCONSISTENT_GROUP_PROTOCOL);
    }
    let group_id = req.group_id.as_str().to_string();
    if group_id.is_empty() {
        return SyncResult::error(codes::INVALID_GROUP_ID);
    }
    let shard = match shard_for(broker, &group_id) {
        Ok(s) => s,
        Err(code) => return SyncResult::error(code),
    };
    let sync = SyncRequest {
        group_id,
        member_id: req.member_id.as_str().to_string(),
        group_instance_id: opt(&req.group_instance_id),
        generation_id: req.generation_id,
        protocol_type: opt(&req.protocol_type),
        protocol_name: opt(&req.protocol_name),
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.as_str().to_string(), a.assignment.clone()))
            .collect(),
    };
    let (tx, rx) = oneshot::channel();
    if let Err(code) = shard.write(|st| st.sync(sync, tx)) {
        return SyncResult::error(code);
    }
    match tokio::time::timeout(SYNC_PARK_LIMIT, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => SyncResult::error(codes::NOT_COORDINATOR),
        Err(_) => SyncResult::error(codes::REBALANCE_IN_PROGRESS),
    }
}

// ------------------------------------------------------------------------ Heartbeat

pub fn handle_heartbeat(
    broker: &Arc<Broker>,
    _ctx: RequestContext,
    req: HeartbeatRequest,
) -> Reply {
    let group_id = req.group_id.as_str();
    let code = if group_id.is_empty() {
        codes::INVALID_GROUP_ID
    } else {
        let r = shard_for(broker, group_id).and_then(|shard| {
            shard.write(|st| {
                st.heartbeat(
                    group_id,
                    req.member_id.as_str(),
                    req.group_instance_id.as_deref(),
                    req.generation_id,
                )
            })
        });
        match r {
            Ok(code) => code,
            // A loading coordinator answers blindly: the member cannot be checked yet.
            Err(codes::COORDINATOR_LOAD_IN_PROGRESS) => codes::NONE,
            Err(code) => code,
        }
    };
    Reply::now(ResponseKind::Heartbeat(
        HeartbeatResponse::default().with_error_code(code),
    ))
}

// ------------------------------------------------------------------------ LeaveGroup

pub fn handle_leave_group(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    req: LeaveGroupRequest,
) -> Reply {
    let version = ctx.version();
    // Versions 0-2 name a single member.
    let members: Vec<LeavingMember> = if version >= 3 {
        req.members
            .iter()
            .map(|m| LeavingMember {
                member_id: m.member_id.as_str().to_string(),
                group_instance_id: opt(&m.group_instance_id),
                reason: opt(&m.reason),
                error: codes::NONE,
            })
            .collect()
    } else {
        vec![LeavingMember {
            member_id: req.member_id.as_str().to_string(),
            group_instance_id: None,
            reason: None,
            error: codes::NONE,
        }]
    };
    let group_id = req.group_id.as_str();
    let result: Result<Vec<LeavingMember>, i16> = if group_id.is_empty() {
        Err(codes::INVALID_GROUP_ID)
    } else {
        shard_for(broker, group_id)
            .and_then(|shard| shard.write(|st| st.leave(group_id, members)))
            .and_then(|r| r)
    };
    let resp = match result {
        Err(code) => LeaveGroupResponse::default().with_error_code(code),
        Ok(members) if version >= 3 => LeaveGroupResponse::default().with_members(
            members
                .into_iter()
                .map(|m| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(&m.member_id))
                        .with_group_instance_id(m.group_instance_id.as_deref().map(str_bytes))
                        .with_error_code(m.error)
                })
                .collect(),
        ),
        Ok(members) => LeaveGroupResponse::default()
            .with_error_code(members.first().map_or(codes::NONE, |m| m.error)),
    };
    Reply::now(ResponseKind::LeaveGroup(resp))
}

// ------------------------------------------------------------------------ ListGroups

pub fn handle_list_groups(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    req: ListGroupsRequest,
) -> Reply {
    let states: Vec<String> = if ctx.version() >= 4 {
        req.states_filter
            .iter()
            .map(|s| s.as_str().to_string())
            .collect()
    } else {
        Vec::new()
    };
    let types: Vec<String> = if ctx.version() >= 5 {
        req.types_filter
            .iter()
            .map(|s| s.as_str().to_string())
            .collect()
    } else {
        Vec::new()
    };
    let mut groups = Vec::new();
    let mut error = codes::NONE;
    for shard in broker.groups.shards() {
        match shard.read(|st| st.list_groups(&states, &types)) {
            Ok(g) => groups.extend(g),
            // Kafka skips partitions it turns out not to coordinate, and fails the whole
            // request while one loads.
            Err(codes::NOT_COORDINATOR) => {}
            Err(code) => {
                error = code;
                break;
            }
        }
    }
    let resp = if error != codes::NONE {
        ListGroupsResponse::default().with_error_code(error)
    } else {
        ListGroupsResponse::default().with_groups(
            groups
                .into_iter()
                .map(|g| {
                    ListedGroup::default()
                        .with_group_id(GroupId(str_bytes(&g.group_id)))
                        .with_protocol_type(str_bytes(&g.protocol_type))
                        .with_group_state(str_bytes(g.state))
                        .with_group_type(str_bytes(g.group_type))
                })
                .collect(),
        )
    };
    Reply::now(ResponseKind::ListGroups(resp))
}

// ------------------------------------------------------------------------ DescribeGroups

pub fn handle_describe_groups(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    req: DescribeGroupsRequest,
) -> Reply {
    let version = ctx.version();
    let with_ops = version >= 3 && req.include_authorized_operations;
    let groups = req
        .groups
        .iter()
        .map(|g| {
            let id = g.as_str();
            let described =
                shard_for(broker, id).and_then(|s| s.read(|st| st.describe_group(id, version)));
            match described {
                Ok(d) => {
                    let mut out = DescribedGroup::default()
                        .with_group_id(g.clone())
                        .with_error_code(d.error)
                        .with_group_state(str_bytes(&d.state))
                        .with_protocol_type(str_bytes(&d.protocol_type))
                        .with_protocol_data(str_bytes(&d.protocol_data))
                        .with_members(
                            d.members
                                .into_iter()
                                .map(|m| {
                                    DescribedGroupMember::default()
                                        .with_member_id(str_bytes(&m.member_id))
                                        .with_group_instance_id(
                                            m.group_instance_id.as_deref().map(str_bytes),
                                        )
                                        .with_client_id(str_bytes(&m.client_id))
                                        .with_client_host(str_bytes(&m.client_host))
                                        .with_member_metadata(m.metadata)
                                        .with_member_assignment(m.assignment)
                                })
                                .collect(),
                        );
                    if version >= 6 {
                        out = out.with_error_message(d.error_message.as_deref().map(str_bytes));
                    }
                    if with_ops && d.error == codes::NONE {
                        out = out.with_authorized_operations(GROUP_AUTHORIZED_OPERATIONS);
                    }
                    out
                }
                Err(code) => {
                    let out = DescribedGroup::default()
                        .with_group_id(g.clone())
                        .with_error_code(code);
                    if version >= 6 {
                        out.with_error_message(Some(str_bytes(codes::message(code))))
                    } else {
                        out
                    }
                }
            }
        })
        .collect();
    Reply::now(ResponseKind::DescribeGroups(
        DescribeGroupsResponse::default().with_groups(groups),
    ))
}

// ------------------------------------------------------------------------ DeleteGroups

pub fn handle_delete_groups(
    broker: &Arc<Broker>,
    _ctx: RequestContext,
    req: DeleteGroupsRequest,
) -> Reply {
    let broker = broker.clone();
    Reply::later(async move {
        // Kafka deletes each named group once.
        let mut ids: Vec<String> = Vec::new();
        for g in &req.groups_names {
            if !ids.iter().any(|x| x == g.as_str()) {
                ids.push(g.as_str().to_string());
            }
        }
        let image = broker.image();
        let mut by_partition: BTreeMap<i32, Vec<String>> = BTreeMap::new();
        for id in &ids {
            by_partition
                .entry(broker.groups.partition_for(id, &image))
                .or_default()
                .push(id.clone());
        }
        let mut codes_by_group: BTreeMap<String, i16> = BTreeMap::new();
        for (_, group_ids) in by_partition {
            let r = match broker.groups.shard_for(&group_ids[0], &image) {
                Err(code) => Err(code),
                Ok(shard) => match shard
                    .write(|st| st.delete_groups(&group_ids))
                    .and_then(|r| r)
                {
                    Err(code) => Err(code),
                    Ok((results, end)) => match shard.committed(end).await {
                        Ok(()) => Ok(results),
                        Err(code) => Err(code),
                    },
                },
            };
            match r {
                Ok(results) => codes_by_group.extend(results),
                Err(code) => {
                    for g in group_ids {
                        codes_by_group.insert(g, code);
                    }
                }
            }
        }
        ResponseKind::DeleteGroups(
            DeleteGroupsResponse::default().with_results(
                ids.into_iter()
                    .map(|id| {
                        let code = codes_by_group
                            .get(&id)
                            .copied()
                            .unwrap_or(codes::UNKNOWN_SERVER_ERROR);
                        DeletableGroupResult::default()
                            .with_group_id(GroupId(str_bytes(&id)))
                            .with_error_code(code)
                    })
                    .collect(),
            ),
        )
    })
}
