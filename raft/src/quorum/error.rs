//! Errors of the quorum layer and of its RPC client.

use std::time::Duration;

use super::config::Voter;

/// Why a quorum operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("invalid controller.quorum.voters: {0}")]
    InvalidVoters(String),
    #[error("invalid quorum configuration: {0}")]
    Config(String),
    /// This node is not the leader. `leader` is the current leader when one is known.
    #[error("not the quorum leader (leader: {})", leader_text(.leader))]
    NotLeader { leader: Option<Voter> },
    /// No majority acknowledged in time: the quorum is unavailable. For a proposal the outcome is
    /// unknown: the entry may still be committed later, or never.
    #[error("metadata quorum unavailable: nothing committed within {0:?}")]
    Timeout(Duration),
    #[error("the quorum is shutting down")]
    ShuttingDown,
    #[error("quorum storage error: {0}")]
    Storage(String),
    #[error("payload of {size} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge { size: usize, max: usize },
    #[error("quorum I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The Raft core stopped for a reason other than a clean shutdown.
    #[error("raft failure: {0}")]
    Raft(String),
}

fn leader_text(leader: &Option<Voter>) -> String {
    match leader {
        Some(v) => format!("{}@{}", v.id, v.addr),
        None => "unknown".to_string(),
    }
}

/// Why an application RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("rpc kind {0} is reserved for raft (application kinds start at 16)")]
    ReservedKind(u8),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("rpc transport error: {0}")]
    Io(#[from] std::io::Error),
    #[error("rpc timed out after {0:?}")]
    Timeout(Duration),
    #[error("rpc frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("peer closed the connection")]
    Closed,
    /// The remote handler answered with an error.
    #[error("remote error: {0}")]
    Remote(String),
}
