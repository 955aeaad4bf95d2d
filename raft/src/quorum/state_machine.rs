//! openraft's `RaftStateMachine`: feeds committed payloads to the lead's `Applier`, and builds,
//! stores and installs snapshots of it.

use std::io::{self, Cursor};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use parking_lot::Mutex;
use tokio::sync::watch;
use tracing::warn;

use super::snapshot::SnapshotStore;
use super::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// The deterministic state machine fed by the quorum (the lead's metadata image).
///
/// `apply` is called only for committed entries carrying a payload, in log order, exactly once
/// per entry per process lifetime: after a restart the quorum first calls `restore` with the
/// newest snapshot (if any), then `apply` for the entries after it. `restore` is also called
/// when the leader ships a snapshot because this node fell too far behind.
pub trait Applier: Send + 'static {
    /// Applies one committed payload. Must not fail: invalid content is the applier's business.
    fn apply(&mut self, index: u64, payload: &[u8]);
    /// The serialized state as of the last applied index.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the whole state with a snapshot taken at `index`.
    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), String>;
}

pub(crate) struct StateMachine {
    // A mutex only to make the state machine `Sync` as openraft requires; it is always reached
    // through `&mut self`, so it is never contended.
    applier: Mutex<Box<dyn Applier>>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshots: Arc<SnapshotStore>,
    applied_tx: watch::Sender<u64>,
}

fn sm_err(e: impl Into<AnyError>) -> StorageError {
    StorageError::IO {
        source: StorageIOError::write_state_machine(e.into()),
    }
}

fn snapshot_err(e: &io::Error) -> StorageError {
    StorageError::IO {
        source: StorageIOError::write_snapshot(None, e),
    }
}

impl StateMachine {
    /// Opens the snapshot directory `dir` and restores `applier` from the newest snapshot.
    /// Returns the state machine and a watch of the last applied index.
    pub(crate) fn open(
        dir: &Path,
        mut applier: Box<dyn Applier>,
    ) -> io::Result<(StateMachine, watch::Receiver<u64>)> {
        let (snapshots, newest) = SnapshotStore::open(dir)?;
        let (last_applied, membership) = match newest {
            None => (None, StoredMembership::default()),
            Some((meta, data)) => {
                let index = meta.last_log_id.map_or(0, |l| l.index);
                applier.restore(index, &data).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("applier rejected the snapshot at index {index}: {e}"),
                    )
                })?;
                (meta.last_log_id, meta.last_membership)
            }
        };
        let (applied_tx, applied_rx) = watch::channel(last_applied.map_or(0, |l| l.index));
        let sm = StateMachine {
            applier: Mutex::new(applier),
            last_applied,
            membership,
            snapshots: Arc::new(snapshots),
            applied_tx,
        };
        Ok((sm, applied_rx))
    }

    /// Metadata of the current snapshot, if any.
    pub(crate) fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.snapshots.current_meta()
    }

    fn publish_applied(&self) {
        if let Some(l) = self.last_applied {
            self.applied_tx.send_replace(l.index);
        }
    }
}

/// Builds one snapshot from state captured when openraft asked for the builder: openraft runs
/// the build concurrently with further applies, so the data must be taken up front.
pub(crate) struct SnapshotBuilder {
    snapshots: Arc<SnapshotStore>,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// Write (and fsync) a snapshot on the blocking pool: a multi-megabyte fsync on a runtime
/// worker would delay Raft heartbeats and, in combined mode, broker requests. Returns the data.
async fn save_off_runtime(
    store: Arc<SnapshotStore>,
    meta: SnapshotMeta,
    data: Vec<u8>,
) -> Result<Vec<u8>, StorageError> {
    tokio::task::spawn_blocking(move || store.save(&meta, &data).map(|()| data))
        .await
        .map_err(|e| io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map_err(|e| snapshot_err(&e))
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let data = std::mem::take(&mut self.data);
        let data = save_off_runtime(self.snapshots.clone(), self.meta.clone(), data).await?;
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let applier = self.applier.get_mut();
        for entry in entries {
            replies.push(());
            if self
                .last_applied
                .is_some_and(|l| entry.log_id.index <= l.index)
            {
                // openraft never does this; guard the applier's exactly-once contract anyway.
                warn!(log_id = %entry.log_id, "skipping an entry that was already applied");
                continue;
            }
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(payload) => applier.apply(entry.log_id.index, &payload.0),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                }
            }
            self.last_applied = Some(entry.log_id);
        }
        self.publish_applied();
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let (index, term) = self
            .last_applied
            .map_or((0, 0), |l| (l.index, l.leader_id.term));
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{index}-{term}-{}", uuid::Uuid::new_v4().simple()),
        };
        SnapshotBuilder {
            snapshots: self.snapshots.clone(),
            meta,
            data: self.applier.get_mut().snapshot(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let index = meta.last_log_id.map_or(0, |l| l.index);
        // Restore before persisting: a snapshot the applier rejects must not become the one a
        // restart loads. openraft keeps the old log until this returns, so a crash in between
        // restarts from the old snapshot and log.
        self.applier.get_mut().restore(index, &data).map_err(|e| {
            sm_err(AnyError::error(format!(
                "applier rejected snapshot at {index}: {e}"
            )))
        })?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        save_off_runtime(self.snapshots.clone(), meta.clone(), data).await?;
        self.publish_applied();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let store = self.snapshots.clone();
        let loaded = tokio::task::spawn_blocking(move || store.load_current())
            .await
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|e| StorageError::IO {
                source: StorageIOError::read_snapshot(None, &e),
            })?;
        Ok(loaded.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
