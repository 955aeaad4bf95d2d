//! Quorum configuration: the voter set (Kafka's `controller.quorum.voters` syntax) and timings.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::{Config, SnapshotPolicy};

use super::error::QuorumError;

/// Recovery refuses log entries bigger than this whatever the configured frame limit, so that a
/// later, smaller `max_frame_bytes` can never make existing entries look corrupt.
pub(crate) const MAX_ENTRY_BYTES: usize = 256 << 20;

/// Bytes of framing around a payload inside an AppendEntries request (entry header, request
/// header). Proposals must leave this much room under `max_frame_bytes`.
pub(crate) const ENTRY_OVERHEAD: usize = 512;

/// One voting controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: u64,
    /// "host:port".
    pub addr: String,
}

/// Parses `controller.quorum.voters`: comma-separated `id@host:port`, e.g.
/// `1@127.0.0.1:9093,2@127.0.0.1:9094`. Hosts may be bracketed IPv6 literals.
pub fn parse_voters(s: &str) -> Result<Vec<Voter>, QuorumError> {
    let bad = |msg: String| QuorumError::InvalidVoters(msg);
    let mut voters = Vec::new();
    let mut ids = BTreeSet::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(bad(format!("empty voter entry in {s:?}")));
        }
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| bad(format!("{part:?} is not id@host:port")))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| bad(format!("{id:?} is not a node id")))?;
        let addr = addr.trim();
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| bad(format!("{addr:?} has no port")))?;
        let host_ok = if let Some(inner) = host.strip_prefix('[') {
            inner.strip_suffix(']').is_some_and(|h| !h.is_empty())
        } else {
            !host.is_empty() && !host.contains(':')
        };
        if !host_ok {
            return Err(bad(format!("{addr:?} has no valid host")));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(bad(format!("{port:?} is not a port"))),
        }
        if !ids.insert(id) {
            return Err(bad(format!("voter id {id} appears twice")));
        }
        voters.push(Voter {
            id,
            addr: addr.to_string(),
        });
    }
    Ok(voters)
}

/// Everything the quorum needs to run one controller.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    pub node_id: u64,
    pub voters: Vec<Voter>,
    /// Where this controller listens for Raft and application RPCs.
    pub listen_addr: SocketAddr,
    /// The quorum's directory, e.g. `<metadata.log.dir>/__cluster_metadata-0`.
    pub dir: PathBuf,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Bound on one Raft RPC (vote, snapshot chunk) and on connecting.
    pub rpc_timeout: Duration,
    /// `propose` gives up with `QuorumError::Timeout` after this long.
    pub write_timeout: Duration,
    /// Take a snapshot after this many entries since the last one; 0 never snapshots.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind the newest snapshot, so a slightly lagging voter can catch
    /// up from the log instead of receiving a whole snapshot.
    pub keep_entries_after_snapshot: u64,
    /// Upper bound of any frame on the wire (requests and replies).
    pub max_frame_bytes: usize,
    /// A log segment is rolled once it reaches this size.
    pub segment_bytes: u64,
}

impl QuorumConfig {
    /// A configuration with production defaults for timings and sizes.
    pub fn new(node_id: u64, voters: Vec<Voter>, listen_addr: SocketAddr, dir: PathBuf) -> Self {
        QuorumConfig {
            node_id,
            voters,
            listen_addr,
            dir,
            // A failed leader is replaced after roughly twice the maximum election timeout
            // (openraft's followers wait out the old leader's lease first), so 500-1000 ms
            // keeps controller failover near 2 s, inside the 3 s the brief allows.
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: Duration::from_millis(1000),
            rpc_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(5),
            snapshot_every_entries: 20_000,
            keep_entries_after_snapshot: 1_000,
            max_frame_bytes: 16 << 20,
            segment_bytes: 16 << 20,
        }
    }

    pub fn voter(&self, id: u64) -> Option<&Voter> {
        self.voters.iter().find(|v| v.id == id)
    }

    /// The largest payload `propose` accepts: it must fit one AppendEntries frame.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_frame_bytes.saturating_sub(ENTRY_OVERHEAD)
    }

    pub(crate) fn validate(&self) -> Result<(), QuorumError> {
        let bad = |m: String| Err(QuorumError::Config(m));
        if self.voters.is_empty() {
            return bad("no voters".into());
        }
        let ids: BTreeSet<u64> = self.voters.iter().map(|v| v.id).collect();
        if ids.len() != self.voters.len() {
            return bad("duplicate voter ids".into());
        }
        if !ids.contains(&self.node_id) {
            return bad(format!(
                "node id {} is not one of the voters {:?}",
                self.node_id, ids
            ));
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.election_timeout_min
        {
            return bad(
                "heartbeat interval must be positive and below the election timeout".into(),
            );
        }
        if self.election_timeout_min >= self.election_timeout_max {
            return bad("election_timeout_min must be below election_timeout_max".into());
        }
        if self.rpc_timeout.is_zero() || self.write_timeout.is_zero() {
            return bad("rpc and write timeouts must be positive".into());
        }
        if self.max_frame_bytes < 64 << 10 || self.max_frame_bytes > MAX_ENTRY_BYTES {
            return bad(format!(
                "max_frame_bytes must be between 64 KiB and {MAX_ENTRY_BYTES}"
            ));
        }
        if self.segment_bytes < 1024 {
            return bad("segment_bytes must be at least 1 KiB".into());
        }
        Ok(())
    }

    /// The openraft configuration derived from this one.
    pub(crate) fn raft_config(&self) -> Result<Arc<Config>, QuorumError> {
        let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
        let snapshot_policy = if self.snapshot_every_entries == 0 {
            SnapshotPolicy::Never
        } else {
            SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries)
        };
        let config = Config {
            cluster_name: "fjord-metadata".to_string(),
            heartbeat_interval: ms(self.heartbeat_interval),
            election_timeout_min: ms(self.election_timeout_min),
            election_timeout_max: ms(self.election_timeout_max),
            install_snapshot_timeout: ms(self.rpc_timeout),
            snapshot_policy,
            // A chunk plus its request header must fit one frame.
            snapshot_max_chunk_size: (self.max_frame_bytes / 2) as u64,
            max_in_snapshot_log_to_keep: self.keep_entries_after_snapshot,
            purge_batch_size: 1,
            ..Config::default()
        };
        config
            .validate()
            .map(Arc::new)
            .map_err(|e| QuorumError::Config(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kafka_voter_syntax() {
        let v = parse_voters("1@127.0.0.1:9093, 2@localhost:9094,3@[::1]:9095").unwrap();
        assert_eq!(
            v,
            vec![
                Voter {
                    id: 1,
                    addr: "127.0.0.1:9093".into()
                },
                Voter {
                    id: 2,
                    addr: "localhost:9094".into()
                },
                Voter {
                    id: 3,
                    addr: "[::1]:9095".into()
                },
            ]
        );
    }

    #[test]
    fn rejects_malformed_voters() {
        for s in [
            "",
            "1@",
            "@host:1",
            "x@host:1",
            "1@host",
            "1@host:0",
            "1@host:99999",
            "1@:9093",
            "1@h:1,1@h:2",
            "1@h:1,",
            "1@::1:9093",
            "1@[]:9093",
        ] {
            assert!(parse_voters(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn validate_requires_self_in_voters() {
        let voters = parse_voters("1@127.0.0.1:9093").unwrap();
        let cfg = QuorumConfig::new(2, voters, "127.0.0.1:0".parse().unwrap(), "/tmp".into());
        assert!(cfg.validate().is_err());
        let mut ok = cfg.clone();
        ok.node_id = 1;
        ok.validate().unwrap();
        ok.raft_config().unwrap();
    }
}
