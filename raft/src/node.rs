//! A controller process: the quorum, the metadata applier, and the active-controller loop that
//! turns requests into committed records. Also the RPCs brokers use to reach it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::applier::{MetadataApplier, RecentBatches};
use crate::controller::requests::{ControllerRequest, ControllerResponse};
use crate::controller::{ControllerConfig, ControllerLogic};
use crate::error::ControllerError;
use crate::image::MetadataImage;
use crate::quorum::{Quorum, QuorumConfig, QuorumError, RpcClient, RpcService, Voter};
use crate::records::encode_batch;

/// RPC kind of a [`ControllerRequest`].
pub const RPC_CONTROLLER_REQUEST: u8 = 16;
/// RPC kind of a [`FetchMetadata`].
pub const RPC_FETCH_METADATA: u8 = 17;

/// RPC kind of a [`ControllerRequest`] forwarded by another controller: never forwarded again.
pub const RPC_CONTROLLER_FORWARDED: u8 = 19;

/// RPC kind of a quorum status query (answered with [`NodeStatus`]).
pub const RPC_QUORUM_STATUS: u8 = 18;

/// One controller's view of the quorum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub metadata_offset: u64,
}

/// How often the active controller checks broker sessions (and a new Raft leader takes up the
/// controller role): a small fraction of the session timeout, so a dead broker is fenced
/// within 50 ms of its session running out. The check is a scan of the sessions in memory.
const TICK: Duration = Duration::from_millis(50);
/// Most requests committed together as one Raft entry.
const MAX_GROUP: usize = 256;
/// Batches kept for brokers that fetch the metadata log tail.
const RECENT_BATCHES: usize = 10_000;

/// An error as it crosses the controller RPC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteError {
    NotController { leader: Option<u64> },
    Unavailable(String),
    Failed { code: i16, message: String },
}

impl From<ControllerError> for RemoteError {
    fn from(e: ControllerError) -> Self {
        match e {
            ControllerError::NotController { leader } => RemoteError::NotController { leader },
            ControllerError::QuorumUnavailable(m) => RemoteError::Unavailable(m),
            e => RemoteError::Failed {
                code: e.code(),
                message: e.to_string(),
            },
        }
    }
}

impl From<RemoteError> for ControllerError {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::NotController { leader } => ControllerError::NotController { leader },
            RemoteError::Unavailable(m) => ControllerError::QuorumUnavailable(m),
            RemoteError::Failed { code, message } => ControllerError::Remote { code, message },
        }
    }
}

/// A broker asking for metadata after `offset`, waiting up to `max_wait_ms` for news.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchMetadata {
    pub offset: u64,
    pub max_wait_ms: u64,
}

/// A controller's answer to [`FetchMetadata`], with the quorum leader it knows so brokers can
/// move to the leader (a lagging follower would serve them stale metadata).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetadataReply {
    pub leader: Option<u64>,
    pub delta: MetadataDelta,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MetadataDelta {
    /// Encoded record batches with their log indexes, in order.
    Batches(Vec<(u64, Vec<u8>)>),
    /// The tail no longer reaches back to the broker's offset: the whole image.
    Snapshot(Vec<u8>),
}

struct Job {
    req: ControllerRequest,
    reply: oneshot::Sender<Result<ControllerResponse, ControllerError>>,
}

/// One running controller.
pub struct ControllerNode {
    quorum: Quorum,
    jobs: mpsc::Sender<Job>,
    images: watch::Receiver<Arc<MetadataImage>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Clone)]
struct Service {
    jobs: mpsc::Sender<Job>,
    images: watch::Receiver<Arc<MetadataImage>>,
    recent: Arc<Mutex<RecentBatches>>,
    node_id: u64,
    voters: Arc<Vec<Voter>>,
    /// Set once the quorum is running (the service is built before it).
    quorum: Arc<std::sync::OnceLock<Quorum>>,
    /// For forwarding requests that reach a follower to the active controller.
    forward: Arc<RpcClient>,
}

/// Bound on a forwarded request: below the client's own attempt timeout, so the client never
/// retries elsewhere while a forwarded copy may still run.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// Most bytes of batches in one FetchMetadata reply (always at least one batch).
const FETCH_MAX_BYTES: usize = 4 << 20;

fn encode<T: Serialize>(v: &T) -> Result<Bytes, String> {
    bincode::serialize(v)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(b.len() as u64)
        .deserialize(b)
        .map_err(|e| e.to_string())
}

async fn submit(
    jobs: &mpsc::Sender<Job>,
    req: ControllerRequest,
) -> Result<ControllerResponse, ControllerError> {
    let (tx, rx) = oneshot::channel();
    jobs.send(Job { req, reply: tx })
        .await
        .map_err(|_| ControllerError::QuorumUnavailable("controller is shutting down".into()))?;
    rx.await
        .map_err(|_| ControllerError::QuorumUnavailable("controller is shutting down".into()))?
}

impl Service {
    async fn fetch(&self, f: FetchMetadata) -> MetadataDelta {
        let mut images = self.images.clone();
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(f.max_wait_ms.min(30_000));
        loop {
            let current = images.borrow_and_update().offset;
            if f.offset < current {
                if let Some(batches) = self.recent.lock().since(f.offset, 1000)
                    && !batches.is_empty()
                {
                    let mut bytes = 0;
                    let mut out = Vec::new();
                    for (i, b) in batches {
                        if !out.is_empty() && bytes + b.len() > FETCH_MAX_BYTES {
                            break;
                        }
                        bytes += b.len();
                        out.push((i, b.to_vec()));
                    }
                    return MetadataDelta::Batches(out);
                }
                // The tail no longer reaches back to the broker's offset.
                let image = images.borrow().clone();
                return MetadataDelta::Snapshot(image.encode_snapshot());
            }
            // Nothing newer here (or this controller is behind the broker): wait for news.
            match tokio::time::timeout_at(deadline, images.changed()).await {
                Ok(Ok(())) => {}
                Err(_) | Ok(Err(_)) => return MetadataDelta::Batches(Vec::new()),
            }
        }
    }
}

impl RpcService for Service {
    fn handle(
        &self,
        kind: u8,
        body: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Bytes, String>> + Send>> {
        let this = self.clone();
        Box::pin(async move {
            match kind {
                RPC_CONTROLLER_FORWARDED => {
                    let req: ControllerRequest = decode(&body)?;
                    encode(&submit(&this.jobs, req).await.map_err(RemoteError::from))
                }
                RPC_CONTROLLER_REQUEST => {
                    let req: ControllerRequest = decode(&body)?;
                    let r = submit(&this.jobs, req).await;
                    // A request that reaches a follower is forwarded (once) to the active
                    // controller, so a client can send to any controller.
                    if let Err(ControllerError::NotController {
                        leader: Some(leader),
                    }) = &r
                        && *leader != this.node_id
                        && let Some(v) = this.voters.iter().find(|v| v.id == *leader)
                        && let Ok(reply) = this
                            .forward
                            .call(&v.addr, RPC_CONTROLLER_FORWARDED, body, FORWARD_TIMEOUT)
                            .await
                    {
                        return Ok(reply);
                    }
                    encode(&r.map_err(RemoteError::from))
                }
                RPC_FETCH_METADATA => {
                    let f: FetchMetadata = decode(&body)?;
                    let delta = this.fetch(f).await;
                    encode(&MetadataReply {
                        leader: this.quorum.get().and_then(Quorum::leader),
                        delta,
                    })
                }
                RPC_QUORUM_STATUS => {
                    let q = this.quorum.get().ok_or("quorum is starting")?;
                    let st = q.status();
                    encode(&NodeStatus {
                        node_id: st.node_id,
                        leader: st.leader,
                        term: st.term,
                        metadata_offset: this.images.borrow().offset,
                    })
                }
                _ => Err(format!("unknown controller rpc kind {kind}")),
            }
        })
    }
}

impl ControllerNode {
    pub async fn start(
        qcfg: QuorumConfig,
        ccfg: ControllerConfig,
    ) -> Result<Arc<ControllerNode>, QuorumError> {
        let (publish, images) = watch::channel(Arc::new(MetadataImage::default()));
        let recent = Arc::new(Mutex::new(RecentBatches::new(RECENT_BATCHES)));
        let applier = MetadataApplier::new(publish, recent.clone());
        let (jobs, rx) = mpsc::channel(1024);
        let quorum_cell = Arc::new(std::sync::OnceLock::new());
        let service = Arc::new(Service {
            jobs: jobs.clone(),
            images: images.clone(),
            recent,
            node_id: qcfg.node_id,
            voters: Arc::new(qcfg.voters.clone()),
            quorum: quorum_cell.clone(),
            forward: Arc::new(RpcClient::new(qcfg.max_frame_bytes)),
        });
        let quorum = Quorum::start(qcfg, applier, service).await?;
        let _ = quorum_cell.set(quorum.clone());
        let task = tokio::spawn(active_loop(
            quorum.clone(),
            rx,
            images.clone(),
            ControllerLogic::new(ccfg),
        ));
        Ok(Arc::new(ControllerNode {
            quorum,
            jobs,
            images,
            task: Mutex::new(Some(task)),
        }))
    }

    /// Handle a request on this node (answers NotController unless it is the active one).
    pub async fn call(
        &self,
        req: ControllerRequest,
    ) -> Result<ControllerResponse, ControllerError> {
        submit(&self.jobs, req).await
    }

    /// The committed metadata image, updated as batches are applied.
    pub fn images(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.images.clone()
    }

    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    pub async fn shutdown(&self) {
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
        self.quorum.clone().shutdown().await;
    }
}

/// The active-controller loop. It runs on every controller, but only acts while this node leads
/// the quorum; elsewhere it answers NotController with the leader it knows.
async fn active_loop(
    quorum: Quorum,
    mut jobs: mpsc::Receiver<Job>,
    images: watch::Receiver<Arc<MetadataImage>>,
    mut logic: ControllerLogic,
) {
    let mut leader = quorum.leader_watch();
    // `Some` while this node is the active controller: the committed image plus everything
    // proposed since (each group is committed before the next one is handled).
    let mut working: Option<MetadataImage> = None;
    // A job that did not fit in the previous group.
    let mut carried: Option<Job> = None;
    let mut last_activation: Option<Instant> = None;
    // Half the largest entry, so one group never comes near the frame limit.
    let max_group_bytes = quorum.config().max_payload_bytes() / 2;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = if let Some(job) = carried.take() {
            job
        } else {
            tokio::select! {
                job = jobs.recv() => match job {
                    Some(job) => job,
                    None => return,
                },
                _ = tick.tick() => {
                    if working.is_some() && !quorum.is_leader() {
                        working = None;
                    }
                    if working.is_none() && quorum.is_leader() {
                        last_activation = Some(Instant::now());
                        working = activate(&quorum, &images, &mut logic).await;
                    }
                    if let Some(image) = working.as_mut() {
                        let records = logic.tick(image, Instant::now());
                        if !records.is_empty()
                            && let Err(e) = quorum.propose(encode_batch(&records)).await
                        {
                            tracing::warn!(error = %e, "could not commit broker fencing");
                            working = None;
                        }
                    }
                    continue;
                }
                changed = leader.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if !quorum.is_leader() {
                        working = None;
                    }
                    continue;
                }
            }
        };
        if first.reply.is_closed() {
            // The caller gave up (timed out); do not act on its behalf later.
            continue;
        }
        // Activation waits for the quorum; try it at most once per tick so a backlog of
        // requests does not wait once each when there is no quorum.
        if working.is_none()
            && quorum.is_leader()
            && last_activation.is_none_or(|t| t.elapsed() >= TICK)
        {
            last_activation = Some(Instant::now());
            working = activate(&quorum, &images, &mut logic).await;
        }
        let Some(image) = working.as_mut() else {
            let _ = first.reply.send(Err(ControllerError::NotController {
                leader: quorum.leader(),
            }));
            continue;
        };
        // Group commit: handle every request already waiting, in order, against the working
        // image, and commit all their records as one entry (one fsync). Each request sees the
        // ones before it; the group applies all or nothing.
        let mut answers = Vec::new();
        let mut payload = Vec::new();
        let mut registered = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            if !job.reply.is_closed() {
                let saved = image.clone();
                let (resp, records) = logic.handle(image, &job.req, Instant::now());
                let encoded = encode_batch(&records);
                if !records.is_empty() && encoded.len() > max_group_bytes {
                    *image = saved;
                    let _ = job.reply.send(Err(ControllerError::PolicyViolation(format!(
                        "the request's metadata ({} bytes) exceeds the largest entry ({} bytes)",
                        encoded.len(),
                        max_group_bytes
                    ))));
                } else if !records.is_empty()
                    && !payload.is_empty()
                    && payload.len() + encoded.len() > max_group_bytes
                {
                    // Does not fit with the others: first of the next group.
                    *image = saved;
                    carried = Some(job);
                    break;
                } else {
                    if let ControllerRequest::RegisterBroker(r) = &job.req
                        && !records.is_empty()
                    {
                        registered.push(r.broker_id);
                    }
                    payload.extend(records);
                    answers.push((job.reply, resp));
                }
            }
            if answers.len() < MAX_GROUP {
                next = jobs.try_recv().ok();
            }
        }
        if payload.is_empty() {
            for (reply, resp) in answers {
                let _ = reply.send(Ok(resp));
            }
            continue;
        }
        match quorum.propose(encode_batch(&payload)).await {
            Ok(index) => {
                for id in registered {
                    logic.registration_committed(id, index);
                }
                for (reply, resp) in answers {
                    let _ = reply.send(Ok(resp));
                }
            }
            Err(e) => {
                // Outcome unknown: start again from what is committed.
                working = None;
                let err = quorum_error(e, &quorum);
                for (reply, _) in answers {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// Become the active controller: wait until everything committed before our term is applied,
/// commit a barrier entry (so entries this node appended in an earlier attempt whose outcome
/// was unknown are settled and applied too), then take the committed image as the working one.
async fn activate(
    quorum: &Quorum,
    images: &watch::Receiver<Arc<MetadataImage>>,
    logic: &mut ControllerLogic,
) -> Option<MetadataImage> {
    if let Err(e) = quorum.wait_leader_ready(Duration::from_secs(5)).await {
        tracing::debug!(error = %e, "not ready to act as controller");
        return None;
    }
    if let Err(e) = quorum.propose(encode_batch(&[])).await {
        tracing::debug!(error = %e, "barrier entry not committed");
        return None;
    }
    let image = (**images.borrow()).clone();
    logic.become_leader(&image, Instant::now());
    tracing::info!(offset = image.offset, "active controller");
    Some(image)
}

fn quorum_error(e: QuorumError, quorum: &Quorum) -> ControllerError {
    match e {
        QuorumError::NotLeader { leader } => ControllerError::NotController {
            leader: leader.map(|v| v.id).or(quorum.leader()),
        },
        e => ControllerError::QuorumUnavailable(e.to_string()),
    }
}
