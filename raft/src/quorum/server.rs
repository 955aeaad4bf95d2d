//! The controller's listener: Raft RPCs from peers and application RPCs, one request at a time
//! per connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::Raft;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::rpc::{
    self, FIRST_APP_KIND, KIND_APPEND_ENTRIES, KIND_INSTALL_SNAPSHOT, KIND_VOTE, RpcService,
    STATUS_ERR, STATUS_OK,
};
use super::types::{self, TypeConfig};

/// A connection with no request for this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct ServerCtx {
    pub raft: Raft<TypeConfig>,
    pub service: Arc<dyn RpcService>,
    pub max_frame_bytes: usize,
    /// Bound on reading one request body and writing one reply.
    pub io_timeout: Duration,
}

/// Raft's reply to AppendEntries and Vote as carried on the wire.
pub(crate) type RaftReply<T> = Result<T, RaftError<u64>>;
pub(crate) type SnapshotReply =
    Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>;

/// Accepts connections until `shutdown` turns true (or its sender is dropped).
pub(crate) async fn serve(
    listener: TcpListener,
    ctx: Arc<ServerCtx>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    debug!(%peer, "accepted quorum connection");
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve_conn(stream, ctx.clone()));
                }
                Err(e) => {
                    // Typically fd exhaustion: back off instead of spinning.
                    warn!(error = %e, "quorum listener accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

async fn serve_conn(mut s: TcpStream, ctx: Arc<ServerCtx>) {
    loop {
        let head = match tokio::time::timeout(IDLE_TIMEOUT, rpc::read_head(&mut s)).await {
            Ok(Ok(Some(head))) => head,
            Ok(Ok(None)) | Err(_) => return,
            Ok(Err(e)) => {
                debug!(error = %e, "quorum connection read failed");
                return;
            }
        };
        let (len, kind) = head;
        if len > ctx.max_frame_bytes {
            let msg = format!(
                "frame of {len} bytes exceeds the limit of {}",
                ctx.max_frame_bytes
            );
            warn!(kind, "{msg}; closing the connection");
            let _ = tokio::time::timeout(
                ctx.io_timeout,
                rpc::write_msg(&mut s, STATUS_ERR, msg.as_bytes()),
            )
            .await;
            return;
        }
        let body = match tokio::time::timeout(ctx.io_timeout, rpc::read_body(&mut s, len)).await {
            Ok(Ok(b)) => b,
            _ => return,
        };
        let (status, payload) = match dispatch(&ctx, kind, body).await {
            Ok(p) if p.len() <= ctx.max_frame_bytes => (STATUS_OK, p),
            Ok(p) => (
                STATUS_ERR,
                Bytes::from(format!(
                    "reply of {} bytes exceeds the frame limit",
                    p.len()
                )),
            ),
            Err(msg) => (STATUS_ERR, Bytes::from(msg)),
        };
        match tokio::time::timeout(ctx.io_timeout, rpc::write_msg(&mut s, status, &payload)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

fn reply<T: Serialize>(value: &T, max: usize) -> Result<Bytes, String> {
    types::encode(value, max)
        .map(Bytes::from)
        .map_err(|e| format!("cannot encode reply: {e}"))
}

/// Largest snapshot a controller accepts from its leader.
const MAX_SNAPSHOT_BYTES: u64 = 4 << 30;

async fn dispatch(ctx: &ServerCtx, kind: u8, body: Bytes) -> Result<Bytes, String> {
    let bad = |e: bincode::Error| format!("malformed request of kind {kind}: {e}");
    match kind {
        KIND_APPEND_ENTRIES => {
            let req: AppendEntriesRequest<TypeConfig> = types::decode(&body).map_err(bad)?;
            let res: RaftReply<AppendEntriesResponse<u64>> = ctx.raft.append_entries(req).await;
            reply(&res, ctx.max_frame_bytes)
        }
        KIND_VOTE => {
            let req: VoteRequest<u64> = types::decode(&body).map_err(bad)?;
            let res: RaftReply<VoteResponse<u64>> = ctx.raft.vote(req).await;
            reply(&res, ctx.max_frame_bytes)
        }
        KIND_INSTALL_SNAPSHOT => {
            let req: InstallSnapshotRequest<TypeConfig> = types::decode(&body).map_err(bad)?;
            // openraft writes each chunk at the offset it names; a bogus offset would make it
            // grow the snapshot buffer to match, so cap where a chunk may land.
            let end = req.offset.saturating_add(req.data.len() as u64);
            if end > MAX_SNAPSHOT_BYTES {
                return Err(format!(
                    "snapshot chunk ends at byte {end}, past the {MAX_SNAPSHOT_BYTES}-byte limit"
                ));
            }
            let res: SnapshotReply = ctx.raft.install_snapshot(req).await;
            reply(&res, ctx.max_frame_bytes)
        }
        k if k >= FIRST_APP_KIND => ctx.service.handle(kind, body).await,
        _ => Err(format!("unknown rpc kind {kind}")),
    }
}
