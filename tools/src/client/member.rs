//! A consumer-group member on the classic protocol: JoinGroup, SyncGroup (the leader computes a
//! range assignment), Heartbeat in the background, OffsetCommit, LeaveGroup.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::GroupId;
use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use kafka_protocol::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
use kafka_protocol::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use super::admin::Tp;
use super::cluster::Client;
use super::conn::Connection;
use super::error::{ClientError, check};
use super::groups::{
    commit_offsets, decode_assignment_map, decode_subscription, encode_assignment,
    encode_subscription, offset_fetch, range_assign,
};

const SESSION_TIMEOUT_MS: i32 = 10_000;
const REBALANCE_TIMEOUT_MS: i32 = 30_000;
const HEARTBEAT_EVERY: Duration = Duration::from_millis(3_000);
/// Bound on JoinGroup round trips of one join (MEMBER_ID_REQUIRED, rebalances restarting).
const JOIN_ATTEMPTS: usize = 10;
const PROTOCOL: &str = "range";

#[derive(Debug, Clone, Default)]
struct Identity {
    member_id: String,
    generation: i32,
}

pub struct GroupMember {
    client: Arc<Client>,
    group: String,
    topics: Vec<String>,
    coordinator: Arc<Connection>,
    identity: Arc<Mutex<Identity>>,
    rejoin: Arc<AtomicBool>,
    heartbeat: Option<JoinHandle<()>>,
    /// This member's partitions, topic -> partitions.
    pub assignment: BTreeMap<String, Vec<i32>>,
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

fn gid(g: &str) -> GroupId {
    GroupId(StrBytes::from_string(g.to_string()))
}

impl GroupMember {
    /// Joins `group` subscribed to `topics` and waits for an assignment.
    pub async fn join(
        client: Arc<Client>,
        group: &str,
        topics: Vec<String>,
    ) -> Result<GroupMember, ClientError> {
        let coordinator = client.coordinator(group).await?;
        let mut m = GroupMember {
            client,
            group: group.to_string(),
            topics,
            coordinator,
            identity: Arc::new(Mutex::new(Identity {
                member_id: String::new(),
                generation: -1,
            })),
            rejoin: Arc::new(AtomicBool::new(false)),
            heartbeat: None,
            assignment: BTreeMap::new(),
        };
        m.rejoin().await?;
        Ok(m)
    }

    pub fn generation(&self) -> i32 {
        self.identity.lock().generation
    }

    pub fn member_id(&self) -> String {
        self.identity.lock().member_id.clone()
    }

    /// True when the coordinator has started a rebalance this member must join.
    pub fn needs_rejoin(&self) -> bool {
        self.rejoin.load(Ordering::Relaxed)
    }

    /// (Re)joins the group: JoinGroup, then SyncGroup with the assignment if we lead.
    pub async fn rejoin(&mut self) -> Result<(), ClientError> {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        if self.coordinator.is_closed() {
            self.coordinator = self.client.coordinator(&self.group).await?;
        }
        let conn = self.coordinator.clone();
        let join_wait = Duration::from_millis(REBALANCE_TIMEOUT_MS as u64 + 5_000);
        let metadata = encode_subscription(&self.topics)?;
        let jv = conn.version::<JoinGroupRequest>()?;
        let mut attempts = 0;
        let joined = loop {
            attempts += 1;
            let member_id = self.member_id();
            let req = JoinGroupRequest::default()
                .with_group_id(gid(&self.group))
                .with_session_timeout_ms(SESSION_TIMEOUT_MS)
                .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
                .with_member_id(StrBytes::from_string(member_id))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![
                    JoinGroupRequestProtocol::default()
                        .with_name(StrBytes::from_static_str(PROTOCOL))
                        .with_metadata(metadata.clone()),
                ]);
            let resp = conn
                .start_timeout(&req, jv, join_wait)
                .await?
                .wait()
                .await?;
            match ResponseError::try_from_code(resp.error_code) {
                None => break resp,
                Some(ResponseError::MemberIdRequired) if attempts < JOIN_ATTEMPTS => {
                    self.identity.lock().member_id = resp.member_id.to_string();
                }
                Some(ResponseError::UnknownMemberId) if attempts < JOIN_ATTEMPTS => {
                    self.identity.lock().member_id.clear();
                }
                Some(ResponseError::RebalanceInProgress) if attempts < JOIN_ATTEMPTS => {}
                Some(_) => {
                    check(resp.error_code, None, || {
                        format!("join group '{}' on {}", self.group, conn.broker())
                    })?;
                }
            }
        };
        {
            let mut id = self.identity.lock();
            id.member_id = joined.member_id.to_string();
            id.generation = joined.generation_id;
        }
        let me = joined.member_id.to_string();
        let assignments = if joined.leader.as_str() == me && !joined.skip_assignment {
            self.assign(&joined.members).await?
        } else {
            Vec::new()
        };
        let sv = conn.version::<SyncGroupRequest>()?;
        let mut sync = SyncGroupRequest::default()
            .with_group_id(gid(&self.group))
            .with_generation_id(joined.generation_id)
            .with_member_id(joined.member_id.clone())
            .with_assignments(assignments);
        if sv >= 5 {
            sync = sync
                .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                .with_protocol_name(Some(StrBytes::from_static_str(PROTOCOL)));
        }
        let resp = conn
            .start_timeout(&sync, sv, join_wait)
            .await?
            .wait()
            .await?;
        if resp.error_code == ResponseError::RebalanceInProgress.code() {
            // Another rebalance began; the caller's next poll rejoins.
            self.rejoin.store(true, Ordering::Relaxed);
            self.assignment.clear();
            return Ok(());
        }
        check(resp.error_code, None, || {
            format!("sync group '{}' on {}", self.group, conn.broker())
        })?;
        self.assignment = decode_assignment_map(&resp.assignment);
        self.rejoin.store(false, Ordering::Relaxed);
        self.heartbeat = Some(tokio::spawn(heartbeat_loop(
            conn,
            self.group.clone(),
            self.identity.clone(),
            self.rejoin.clone(),
        )));
        Ok(())
    }

    /// The leader's job: a range assignment over every member's subscription.
    async fn assign(
        &self,
        members: &[kafka_protocol::messages::join_group_response::JoinGroupResponseMember],
    ) -> Result<Vec<SyncGroupRequestAssignment>, ClientError> {
        let subs: Vec<(String, Vec<String>)> = members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    decode_subscription(&m.metadata).unwrap_or_default(),
                )
            })
            .collect();
        let mut topics: Vec<String> = subs.iter().flat_map(|(_, t)| t.clone()).collect();
        topics.sort();
        topics.dedup();
        let mut counts = BTreeMap::new();
        // Topics that do not exist get no partitions rather than failing the whole group.
        for t in &topics {
            if let Ok(info) = self.client.topics(Some(std::slice::from_ref(t))).await
                && let Some(i) = info.first()
            {
                counts.insert(t.clone(), i.partitions.len());
            }
        }
        let plan = range_assign(&subs, &counts);
        plan.into_iter()
            .map(|(m, a)| {
                Ok(SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(m))
                    .with_assignment(encode_assignment(&a)?))
            })
            .collect()
    }

    /// Committed offsets of this member's partitions.
    pub async fn committed(&self) -> Result<BTreeMap<Tp, i64>, ClientError> {
        offset_fetch(&self.coordinator, &self.group, Some(&self.assignment)).await
    }

    /// Commits positions (the offsets of the next records to read).
    pub async fn commit(&self, offsets: &BTreeMap<Tp, i64>) -> Result<(), ClientError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let id = self.identity.lock().clone();
        commit_offsets(
            &self.coordinator,
            &self.group,
            id.generation,
            &id.member_id,
            offsets,
        )
        .await
    }

    /// Leaves the group so the others rebalance at once instead of after the session timeout.
    pub async fn leave(mut self) -> Result<(), ClientError> {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let member_id = self.member_id();
        if member_id.is_empty() {
            return Ok(());
        }
        let conn = self.coordinator.clone();
        let v = conn.version::<LeaveGroupRequest>()?;
        let mut req = LeaveGroupRequest::default().with_group_id(gid(&self.group));
        if v >= 3 {
            req.members =
                vec![MemberIdentity::default().with_member_id(StrBytes::from_string(member_id))];
        } else {
            req.member_id = StrBytes::from_string(member_id);
        }
        let resp = conn.start(&req, v).await?.wait().await?;
        check(resp.error_code, None, || {
            format!("leave group '{}' on {}", self.group, conn.broker())
        })
    }
}

async fn heartbeat_loop(
    conn: Arc<Connection>,
    group: String,
    identity: Arc<Mutex<Identity>>,
    rejoin: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(HEARTBEAT_EVERY).await;
        let id = identity.lock().clone();
        let req = HeartbeatRequest::default()
            .with_group_id(gid(&group))
            .with_generation_id(id.generation)
            .with_member_id(StrBytes::from_string(id.member_id));
        match conn.send(&req).await {
            Ok(resp) => match ResponseError::try_from_code(resp.error_code) {
                None => {}
                Some(
                    ResponseError::RebalanceInProgress
                    | ResponseError::IllegalGeneration
                    | ResponseError::UnknownMemberId
                    | ResponseError::FencedInstanceId,
                ) => {
                    rejoin.store(true, Ordering::Relaxed);
                    return;
                }
                Some(e) => tracing::warn!(group, error = %e, "heartbeat failed"),
            },
            Err(e) => {
                tracing::warn!(group, error = %e, "heartbeat failed");
                rejoin.store(true, Ordering::Relaxed);
                return;
            }
        }
    }
}
