//! The controllers' Raft quorum (issue #3), built on openraft 0.9.
//!
//! Controllers listed in `controller.quorum.voters` form one Raft group whose log carries the
//! cluster metadata as opaque payloads. This module replicates and persists them (segment files,
//! vote and snapshot files under the quorum directory) and applies committed payloads in order
//! to the lead-supplied [`Applier`]. The same TCP listener serves Raft and application RPCs.
//!
//! The voter set is static: every voter initializes the group with the configured voters on
//! first start, and membership changes are not supported.

mod config;
mod durable;
mod error;
mod log_files;
mod log_store;
mod network;
mod rpc;
mod server;
mod snapshot;
mod state_machine;
#[cfg(test)]
mod tests;
mod types;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{CheckIsLeaderError, ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::{BasicNode, Raft};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

pub use config::{QuorumConfig, Voter, parse_voters};
pub use error::{QuorumError, RpcError};
use log_store::LogStore;
pub use rpc::{FIRST_APP_KIND, NoRpcService, RpcClient, RpcFuture, RpcService};
pub use state_machine::Applier;
use state_machine::StateMachine;
pub use types::{Payload, TypeConfig};

/// How long `propose` waits between checks when leadership is in flux.
const LEADER_POLL: Duration = Duration::from_millis(10);

/// Proof that this node led with a complete state machine at some point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderReady {
    pub term: u64,
    /// Everything up to this index (at least the leader's first entry of `term`) is applied.
    pub index: u64,
}

/// A point-in-time view of this node's quorum state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumStatus {
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
}

/// A running quorum member. Cheap to clone; all clones share one Raft node.
#[derive(Clone)]
pub struct Quorum {
    inner: Arc<Inner>,
}

struct Inner {
    raft: Raft<TypeConfig>,
    cfg: QuorumConfig,
    local_addr: SocketAddr,
    leader_rx: watch::Receiver<Option<u64>>,
    applied_rx: watch::Receiver<u64>,
    server_stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn map_fatal(f: Fatal<u64>) -> QuorumError {
    match f {
        Fatal::Stopped => QuorumError::ShuttingDown,
        Fatal::StorageError(e) => QuorumError::Storage(e.to_string()),
        other => QuorumError::Raft(other.to_string()),
    }
}

impl Quorum {
    /// Opens the quorum directory (recovering log and snapshot), starts the listener and the Raft
    /// node, and on first start initializes the group with the configured voters.
    pub async fn start(
        cfg: QuorumConfig,
        applier: impl Applier,
        service: Arc<dyn RpcService>,
    ) -> Result<Self, QuorumError> {
        cfg.validate()?;
        let raft_config = cfg.raft_config()?;
        let dir = cfg.dir.clone();
        let segment_bytes = cfg.segment_bytes;
        let applier: Box<dyn Applier> = Box::new(applier);
        let (log_store, sm, applied_rx) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let (log_store, repair) = LogStore::open(&dir, segment_bytes)?;
            if repair.cut_bytes > 0 || repair.dropped_segments > 0 {
                warn!(?repair, "raft log was repaired on open");
            }
            let (sm, applied_rx) = StateMachine::open(&dir, applier)?;
            Ok::<_, std::io::Error>((log_store, sm, applied_rx))
        })
        .await
        .map_err(|e| QuorumError::Storage(format!("storage open task failed: {e}")))?
        .map_err(|e| QuorumError::Storage(e.to_string()))?;

        let snap_index = sm
            .snapshot_meta()
            .and_then(|m| m.last_log_id)
            .map(|l| l.index);
        if let Some(purged) = log_store.purged()
            && snap_index.is_none_or(|s| s < purged.index)
        {
            return Err(QuorumError::Storage(format!(
                "log purged up to {} but the newest snapshot covers only {snap_index:?}",
                purged.index
            )));
        }

        let listener = TcpListener::bind(cfg.listen_addr).await?;
        let local_addr = listener.local_addr()?;
        let addrs: BTreeMap<u64, String> =
            cfg.voters.iter().map(|v| (v.id, v.addr.clone())).collect();
        let network = network::Network {
            addrs: Arc::new(addrs),
            max_frame_bytes: cfg.max_frame_bytes,
            backoff: (cfg.heartbeat_interval * 2).min(cfg.election_timeout_min / 2),
        };
        let raft = Raft::new(cfg.node_id, raft_config, network, log_store, sm)
            .await
            .map_err(map_fatal)?;

        let (server_stop, stop_rx) = watch::channel(false);
        let ctx = Arc::new(server::ServerCtx {
            raft: raft.clone(),
            service,
            max_frame_bytes: cfg.max_frame_bytes,
            io_timeout: cfg.rpc_timeout,
        });
        let server_task = tokio::spawn(server::serve(listener, ctx, stop_rx));

        let (leader_tx, leader_rx) = watch::channel(None);
        let mut metrics = raft.metrics();
        let leader_task = tokio::spawn(async move {
            loop {
                let leader = metrics.borrow_and_update().current_leader;
                leader_tx.send_if_modified(|cur| {
                    let changed = *cur != leader;
                    *cur = leader;
                    changed
                });
                if metrics.changed().await.is_err() {
                    leader_tx.send_replace(None);
                    return;
                }
            }
        });

        let quorum = Quorum {
            inner: Arc::new(Inner {
                raft,
                cfg,
                local_addr,
                leader_rx,
                applied_rx,
                server_stop,
                tasks: Mutex::new(vec![server_task, leader_task]),
            }),
        };
        if let Err(e) = quorum.initialize_if_pristine().await {
            quorum.clone().shutdown().await;
            return Err(e);
        }
        info!(node_id = quorum.inner.cfg.node_id, addr = %local_addr, "metadata quorum started");
        Ok(quorum)
    }

    async fn initialize_if_pristine(&self) -> Result<(), QuorumError> {
        let raft = &self.inner.raft;
        let voters: BTreeMap<u64, BasicNode> = self
            .inner
            .cfg
            .voters
            .iter()
            .map(|v| {
                (
                    v.id,
                    BasicNode {
                        addr: v.addr.clone(),
                    },
                )
            })
            .collect();
        if raft.is_initialized().await.map_err(map_fatal)? {
            let stored: Vec<u64> = raft
                .metrics()
                .borrow()
                .membership_config
                .voter_ids()
                .collect();
            let configured: Vec<u64> = voters.keys().copied().collect();
            if stored != configured {
                warn!(
                    ?stored,
                    ?configured,
                    "configured voters differ from the stored membership; the stored one is used"
                );
            }
            return Ok(());
        }
        // Every voter does this with the same voter set; openraft makes them all write the same
        // first entry, and one that already heard from a peer refuses with NotAllowed.
        match raft.initialize(voters).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                info!(%e, "quorum already initialized by a peer");
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotInMembers(e))) => {
                Err(QuorumError::Config(e.to_string()))
            }
            Err(RaftError::Fatal(f)) => Err(map_fatal(f)),
        }
    }

    pub fn node_id(&self) -> u64 {
        self.inner.cfg.node_id
    }

    /// The address the listener is bound to (useful when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    pub fn config(&self) -> &QuorumConfig {
        &self.inner.cfg
    }

    pub fn voter(&self, id: u64) -> Option<&Voter> {
        self.inner.cfg.voter(id)
    }

    pub fn leader(&self) -> Option<u64> {
        *self.inner.leader_rx.borrow()
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.inner.cfg.node_id)
    }

    /// Changes whenever the known leader changes (`None` while an election runs).
    pub fn leader_watch(&self) -> watch::Receiver<Option<u64>> {
        self.inner.leader_rx.clone()
    }

    /// The index of the last applied entry (0 before anything was applied).
    pub fn applied_watch(&self) -> watch::Receiver<u64> {
        self.inner.applied_rx.clone()
    }

    pub fn status(&self) -> QuorumStatus {
        let m = self.inner.raft.metrics().borrow().clone();
        QuorumStatus {
            node_id: self.inner.cfg.node_id,
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
        }
    }

    fn not_leader(&self, leader: Option<u64>) -> QuorumError {
        QuorumError::NotLeader {
            leader: leader.and_then(|id| self.voter(id).cloned()),
        }
    }

    /// Waits until some leader is known, or `deadline`.
    async fn known_leader(&self, deadline: Instant) -> Result<u64, QuorumError> {
        let mut rx = self.inner.leader_rx.clone();
        let waited = tokio::time::timeout_at(deadline, rx.wait_for(|l| l.is_some())).await;
        match waited {
            Err(_) => Err(QuorumError::Timeout(self.inner.cfg.write_timeout)),
            Ok(Err(_)) => Err(QuorumError::ShuttingDown),
            Ok(Ok(l)) => (*l).ok_or(QuorumError::ShuttingDown),
        }
    }

    /// Replicates `payload` and returns its log index once it is committed and applied here.
    ///
    /// Fails with `NotLeader` on a follower, and with `Timeout` when no majority commits it
    /// within `write_timeout` (the quorum is unavailable; the entry may still commit later).
    pub async fn propose(&self, payload: Bytes) -> Result<u64, QuorumError> {
        let max = self.inner.cfg.max_payload_bytes();
        if payload.len() > max {
            return Err(QuorumError::PayloadTooLarge {
                size: payload.len(),
                max,
            });
        }
        let me = self.inner.cfg.node_id;
        let deadline = Instant::now() + self.inner.cfg.write_timeout;
        loop {
            let leader = self.known_leader(deadline).await?;
            if leader != me {
                return Err(self.not_leader(Some(leader)));
            }
            let write = self.inner.raft.client_write(Payload(payload.clone()));
            match tokio::time::timeout_at(deadline, write).await {
                Err(_) => return Err(QuorumError::Timeout(self.inner.cfg.write_timeout)),
                Ok(Ok(resp)) => return Ok(resp.log_id.index),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    if let Some(id) = f.leader_id.filter(|&id| id != me) {
                        return Err(self.not_leader(Some(id)));
                    }
                    // Lost leadership and no successor known yet; the leader watch may lag.
                    tokio::time::sleep(LEADER_POLL).await;
                    if Instant::now() >= deadline {
                        return Err(QuorumError::Timeout(self.inner.cfg.write_timeout));
                    }
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                    return Err(QuorumError::Raft(e.to_string()));
                }
                Ok(Err(RaftError::Fatal(f))) => return Err(map_fatal(f)),
            }
        }
    }

    /// Resolves once this node is leader and its state machine has applied everything up to
    /// (at least) the leader's own first entry of its term, so the applier's state is complete.
    /// On timeout: `NotLeader` if another node leads, else `Timeout`.
    pub async fn wait_leader_ready(&self, timeout: Duration) -> Result<LeaderReady, QuorumError> {
        let me = self.inner.cfg.node_id;
        let deadline = Instant::now() + timeout;
        let timed_out = |q: &Quorum| match q.leader() {
            Some(l) if l != me => q.not_leader(Some(l)),
            _ => QuorumError::Timeout(timeout),
        };
        loop {
            let mut rx = self.inner.leader_rx.clone();
            match tokio::time::timeout_at(deadline, rx.wait_for(|l| *l == Some(me))).await {
                Err(_) => return Err(timed_out(self)),
                Ok(Err(_)) => return Err(QuorumError::ShuttingDown),
                Ok(Ok(_)) => {}
            }
            match tokio::time::timeout_at(deadline, self.inner.raft.ensure_linearizable()).await {
                Err(_) => return Err(timed_out(self)),
                Ok(Ok(read_log_id)) => {
                    let term = self.inner.raft.metrics().borrow().current_term;
                    return Ok(LeaderReady {
                        term,
                        index: read_log_id.map_or(0, |l| l.index),
                    });
                }
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))))
                | Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
                    tokio::time::sleep(LEADER_POLL.max(self.inner.cfg.heartbeat_interval)).await;
                }
                Ok(Err(RaftError::Fatal(f))) => return Err(map_fatal(f)),
            }
        }
    }

    /// Stops the listener and the Raft node. Other clones then fail with `ShuttingDown`.
    pub async fn shutdown(self) {
        let _ = self.inner.server_stop.send(true);
        if let Err(e) = self.inner.raft.shutdown().await {
            warn!(error = %e, "raft core ended abnormally");
        }
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.inner.tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
    }
}
