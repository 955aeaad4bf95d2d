//! The broker's side of the quorum: a client that finds the active controller and sends it
//! requests, and a fetcher that keeps a broker's metadata image current.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::controller::requests::{ControllerRequest, ControllerResponse};
use crate::error::ControllerError;
use crate::image::MetadataImage;
use crate::node::{
    ControllerNode, FetchMetadata, MetadataDelta, MetadataReply, NodeStatus,
    RPC_CONTROLLER_REQUEST, RPC_FETCH_METADATA, RPC_QUORUM_STATUS, RemoteError, decode,
};
use crate::quorum::{RpcClient, Voter};
use crate::records::decode_batch;

/// Pause before trying again when no controller knows a leader (an election is running).
const NO_LEADER_BACKOFF: Duration = Duration::from_millis(50);
/// The shortest time one attempt at one controller gets before the next is tried.
const MIN_ATTEMPT: Duration = Duration::from_secs(1);

/// Sends requests to whichever controller is active, following NotController hints.
pub struct ControllerClient {
    voters: Vec<Voter>,
    /// The controller running in this process, if any (combined mode): reached without a socket.
    local: Option<(u64, Arc<ControllerNode>)>,
    rpc: RpcClient,
    leader_hint: Mutex<Option<u64>>,
    /// Bound on one RPC attempt.
    attempt_timeout: Duration,
}

impl ControllerClient {
    pub fn new(voters: Vec<Voter>, local: Option<(u64, Arc<ControllerNode>)>) -> Self {
        ControllerClient {
            voters,
            local,
            rpc: RpcClient::new(64 << 20),
            leader_hint: Mutex::new(None),
            attempt_timeout: Duration::from_secs(5),
        }
    }

    async fn call_one(
        &self,
        id: u64,
        req: &ControllerRequest,
    ) -> Result<ControllerResponse, ControllerError> {
        if let Some((local_id, node)) = &self.local
            && *local_id == id
        {
            return node.call(req.clone()).await;
        }
        let voter = self.voters.iter().find(|v| v.id == id).ok_or_else(|| {
            ControllerError::QuorumUnavailable(format!("unknown controller {id}"))
        })?;
        let body =
            bincode::serialize(req).map_err(|e| ControllerError::InvalidRequest(e.to_string()))?;
        let reply = self
            .rpc
            .call(
                &voter.addr,
                RPC_CONTROLLER_REQUEST,
                Bytes::from(body),
                self.attempt_timeout,
            )
            .await
            .map_err(|e| ControllerError::QuorumUnavailable(e.to_string()))?;
        let r: Result<ControllerResponse, RemoteError> =
            decode(&reply).map_err(ControllerError::QuorumUnavailable)?;
        r.map_err(ControllerError::from)
    }

    /// Send `req` to the active controller, retrying elsewhere until `timeout`. Errors are
    /// NotController/QuorumUnavailable only when no controller could answer in time.
    pub async fn call(
        &self,
        req: ControllerRequest,
        timeout: Duration,
    ) -> Result<ControllerResponse, ControllerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut next = 0usize;
        let mut redirects = 0u32;
        let mut last_err = ControllerError::QuorumUnavailable("no controller answered".into());
        while tokio::time::Instant::now() < deadline {
            let hint = *self.leader_hint.lock();
            let target = match hint {
                Some(id) => id,
                None => {
                    let Some(v) = self.voters.get(next % self.voters.len().max(1)) else {
                        return Err(ControllerError::QuorumUnavailable("no voters".into()));
                    };
                    next += 1;
                    v.id
                }
            };
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            // Half the budget per attempt (at least a second): a voter that does not answer
            // (dead, or cut off by a partition) must leave time to ask another.
            let budget = (remaining / 2).max(MIN_ATTEMPT).min(remaining);
            let attempt = tokio::time::timeout(budget, self.call_one(target, &req)).await;
            match attempt {
                Err(_) => {
                    // Forget it as the leader and go on with the next voter after it.
                    let mut hint = self.leader_hint.lock();
                    if *hint == Some(target) {
                        *hint = None;
                    }
                    drop(hint);
                    if let Some(i) = self.voters.iter().position(|v| v.id == target) {
                        next = i + 1;
                    }
                    last_err = ControllerError::QuorumUnavailable(format!(
                        "controller {target} did not answer within {budget:?}"
                    ));
                }
                Ok(Ok(resp)) => {
                    *self.leader_hint.lock() = Some(target);
                    return Ok(resp);
                }
                Ok(Err(ControllerError::NotController { leader })) => {
                    *self.leader_hint.lock() = leader.filter(|l| *l != target);
                    redirects += 1;
                    // Follow one hint at once; after that, controllers pointing at each other
                    // during an election must not make us spin.
                    if leader.is_none() || leader == Some(target) || redirects > 1 {
                        tokio::time::sleep(NO_LEADER_BACKOFF).await;
                    }
                    last_err = ControllerError::NotController { leader };
                }
                Ok(Err(e @ ControllerError::QuorumUnavailable(_))) => {
                    *self.leader_hint.lock() = None;
                    last_err = e;
                    tokio::time::sleep(NO_LEADER_BACKOFF).await;
                }
                Ok(Err(e)) => return Err(e),
            }
        }
        Err(last_err)
    }
}

/// Keep `publish` current by fetching the metadata log from the controllers (dedicated broker
/// mode). Returns when `publish` has no receivers left.
pub async fn fetch_metadata_loop(voters: Vec<Voter>, publish: watch::Sender<Arc<MetadataImage>>) {
    let rpc = RpcClient::new(256 << 20);
    let mut image = (**publish.borrow()).clone();
    let mut next = 0usize;
    while !publish.is_closed() {
        let Some(voter) = voters.get(next % voters.len().max(1)) else {
            return;
        };
        let req = FetchMetadata {
            offset: image.offset,
            max_wait_ms: 500,
        };
        let body = match bincode::serialize(&req) {
            Ok(b) => Bytes::from(b),
            Err(_) => return,
        };
        let reply = rpc
            .call(
                &voter.addr,
                RPC_FETCH_METADATA,
                body,
                Duration::from_secs(5),
            )
            .await;
        let reply: MetadataReply = match reply.map_err(|e| e.to_string()).and_then(|r| decode(&r)) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(controller = voter.id, error = %e, "metadata fetch failed");
                next += 1;
                tokio::time::sleep(NO_LEADER_BACKOFF).await;
                continue;
            }
        };
        // Follow the quorum leader: it has everything committed.
        if let Some(l) = reply.leader
            && l != voter.id
            && let Some(pos) = voters.iter().position(|v| v.id == l)
        {
            next = pos;
        }
        let changed = match reply.delta {
            MetadataDelta::Batches(batches) => {
                let any = !batches.is_empty();
                for (index, payload) in batches {
                    match decode_batch(&payload) {
                        Ok(records) => image.apply_batch(index, &records),
                        Err(e) => {
                            tracing::error!(index, error = %e, "undecodable metadata batch");
                            image.offset = image.offset.max(index);
                        }
                    }
                }
                any
            }
            MetadataDelta::Snapshot(data) => match MetadataImage::decode_snapshot(&data) {
                Ok(snap) if snap.offset >= image.offset => {
                    image = snap;
                    true
                }
                Ok(_) => false,
                Err(e) => {
                    tracing::error!(error = %e, "undecodable metadata snapshot");
                    next += 1;
                    tokio::time::sleep(NO_LEADER_BACKOFF).await;
                    false
                }
            },
        };
        if changed {
            publish.send_replace(Arc::new(image.clone()));
        }
    }
}

/// Read one controller's committed image over RPC (for tools and tests): the snapshot or log
/// tail from offset 0, then more tail until it has nothing newer.
pub async fn fetch_image(addr: &str, timeout: Duration) -> Result<MetadataImage, String> {
    let rpc = RpcClient::new(256 << 20);
    let mut image = MetadataImage::default();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            return Err(format!("timed out reading metadata from {addr}"));
        }
        let body = bincode::serialize(&FetchMetadata {
            offset: image.offset,
            max_wait_ms: 0,
        })
        .map_err(|e| e.to_string())?;
        let reply = rpc
            .call(addr, RPC_FETCH_METADATA, Bytes::from(body), remaining)
            .await
            .map_err(|e| e.to_string())?;
        match decode::<MetadataReply>(&reply)?.delta {
            MetadataDelta::Batches(b) if b.is_empty() => return Ok(image),
            MetadataDelta::Batches(b) => {
                for (index, payload) in b {
                    let records = decode_batch(&payload).map_err(|e| e.to_string())?;
                    image.apply_batch(index, &records);
                }
            }
            MetadataDelta::Snapshot(data) => {
                image = MetadataImage::decode_snapshot(&data).map_err(|e| e.to_string())?;
            }
        }
    }
}

/// Ask one controller for its view of the quorum.
pub async fn quorum_status(addr: &str, timeout: Duration) -> Result<NodeStatus, String> {
    let rpc = RpcClient::new(1 << 20);
    let reply = rpc
        .call(addr, RPC_QUORUM_STATUS, Bytes::new(), timeout)
        .await
        .map_err(|e| e.to_string())?;
    decode(&reply)
}
