//! openraft's network: one TCP connection per peer client, reused across RPCs and replaced
//! after any failure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use super::rpc::{
    self, ExchangeError, KIND_APPEND_ENTRIES, KIND_INSTALL_SNAPSHOT, KIND_VOTE, STATUS_OK,
};
use super::server::{RaftReply, SnapshotReply};
use super::types::{self, TypeConfig};

/// A transport failure, as openraft wants it: an `Error` to wrap.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct TransportError(String);

enum CallError {
    /// Could not connect: openraft backs off before retrying.
    Connect(std::io::Error),
    /// The request does not fit a frame.
    TooLarge,
    Other(String),
}

#[derive(Clone)]
pub(crate) struct Network {
    /// Voter addresses from the configuration; they win over addresses stored in the membership
    /// so an operator can move a controller by editing its config.
    pub addrs: Arc<BTreeMap<u64, String>>,
    pub max_frame_bytes: usize,
    pub backoff: Duration,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        let addr = self
            .addrs
            .get(&target)
            .cloned()
            .unwrap_or_else(|| node.addr.clone());
        PeerClient {
            target,
            addr,
            conn: None,
            max_frame_bytes: self.max_frame_bytes,
            backoff: self.backoff,
        }
    }
}

pub(crate) struct PeerClient {
    target: u64,
    addr: String,
    conn: Option<TcpStream>,
    max_frame_bytes: usize,
    backoff: Duration,
}

impl PeerClient {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        kind: u8,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, CallError> {
        let body = types::encode(req, self.max_frame_bytes).map_err(|e| match *e {
            bincode::ErrorKind::SizeLimit => CallError::TooLarge,
            other => CallError::Other(format!("cannot encode request: {other}")),
        })?;
        // Taken out for the duration of the call: if openraft drops this future on its own
        // timeout, a half-used connection is dropped with it instead of being reused.
        let conn = self.conn.take();
        let addr = self.addr.clone();
        let max = self.max_frame_bytes;
        let fut = async move {
            let mut s = match conn {
                Some(s) => s,
                None => {
                    let s = TcpStream::connect(&addr)
                        .await
                        .map_err(CallError::Connect)?;
                    let _ = s.set_nodelay(true);
                    s
                }
            };
            let (status, payload) =
                rpc::exchange(&mut s, kind, &body, max)
                    .await
                    .map_err(|e| match e {
                        ExchangeError::Io(e) => CallError::Other(format!("{addr}: {e}")),
                        ExchangeError::Closed => {
                            CallError::Other(format!("{addr} closed the connection"))
                        }
                        ExchangeError::TooLarge(n) => {
                            CallError::Other(format!("{addr} sent a {n}-byte reply"))
                        }
                    })?;
            Ok::<_, CallError>((s, status, payload))
        };
        let (s, status, payload) = tokio::time::timeout(ttl, fut).await.map_err(|_| {
            CallError::Other(format!("no reply from {} within {ttl:?}", self.addr))
        })??;
        self.conn = Some(s);
        if status != STATUS_OK {
            return Err(CallError::Other(format!(
                "{} refused the request: {}",
                self.addr,
                String::from_utf8_lossy(&payload)
            )));
        }
        types::decode(&payload)
            .map_err(|e| CallError::Other(format!("malformed reply from {}: {e}", self.addr)))
    }

    fn transport<E: std::error::Error>(&self, e: CallError) -> RPCError<u64, BasicNode, E> {
        match e {
            CallError::Connect(io) => {
                RPCError::Unreachable(Unreachable::new(&TransportError(format!(
                    "cannot connect to voter {} at {}: {io}",
                    self.target, self.addr
                ))))
            }
            CallError::TooLarge => RPCError::Network(NetworkError::new(&TransportError(format!(
                "request to {} exceeds the {}-byte frame limit",
                self.addr, self.max_frame_bytes
            )))),
            CallError::Other(msg) => RPCError::Network(NetworkError::new(&TransportError(msg))),
        }
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<u64, BasicNode, E> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

type RaftRpcError<E = openraft::error::Infallible> = RPCError<u64, BasicNode, RaftError<u64, E>>;

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RaftRpcError> {
        let entries = req.entries.len() as u64;
        match self
            .call::<_, RaftReply<AppendEntriesResponse<u64>>>(
                KIND_APPEND_ENTRIES,
                &req,
                option.hard_ttl(),
            )
            .await
        {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.remote(e)),
            // Ask openraft to send fewer entries per request; a single entry that does not fit
            // cannot be helped (propose refuses payloads that large).
            Err(CallError::TooLarge) if entries > 1 => Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries / 2),
            )),
            Err(e) => Err(self.transport(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RaftRpcError<InstallSnapshotError>> {
        match self
            .call::<_, SnapshotReply>(KIND_INSTALL_SNAPSHOT, &req, option.hard_ttl())
            .await
        {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.remote(e)),
            Err(e) => Err(self.transport(e)),
        }
    }

    async fn vote(
        &mut self,
        req: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RaftRpcError> {
        match self
            .call::<_, RaftReply<VoteResponse<u64>>>(KIND_VOTE, &req, option.hard_ttl())
            .await
        {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.remote(e)),
            Err(e) => Err(self.transport(e)),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.backoff))
    }
}
