//! openraft's `RaftLogStorage` over our segment files.
//!
//! Every live entry is kept in memory (the metadata log is small and purged behind snapshots), so
//! reads never touch disk. Writes go to one dedicated thread that owns the files: appends are
//! acknowledged to openraft (the `LogFlushed` callback) only after the fsync that covers them,
//! and appends queued while an fsync runs share the next one. Truncate, purge and vote writes go
//! through the same queue so they are ordered with appends, and are awaited.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError};
use parking_lot::RwLock;
use tokio::sync::oneshot;
use tracing::{error, warn};

use super::config::MAX_ENTRY_BYTES;
use super::durable;
use super::log_files::{LogFiles, Repair};
use super::types::{self, Entry, LogId, StorageError, TypeConfig, Vote};

const VOTE_FILE: &str = "vote";
const COMMITTED_FILE: &str = "committed";
const PURGED_FILE: &str = "purged";
/// Upper bound on operations the writer takes from its queue before it fsyncs.
const MAX_BATCH: usize = 4096;
const SMALL_FILE_MAX: usize = 4096;

struct MemLog {
    entries: BTreeMap<u64, Entry>,
    purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

impl MemLog {
    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(self.purged)
    }
}

type Done = oneshot::Sender<io::Result<()>>;

enum Op {
    Append {
        frames: Vec<(u64, Vec<u8>)>,
        done: LogFlushed<TypeConfig>,
    },
    Committed {
        data: Vec<u8>,
    },
    /// Runs after every earlier append is durable; its caller waits for the result.
    Ordered {
        op: Ordered,
        done: Done,
    },
}

enum Ordered {
    Truncate(u64),
    Purge { upto: u64, marker: Vec<u8> },
    Vote(Vec<u8>),
}

/// The log store handed to openraft.
pub(crate) struct LogStore {
    mem: Arc<RwLock<MemLog>>,
    tx: Option<mpsc::Sender<Op>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogStore {
    // Wait for queued writes so that reopening the directory right after (a restart within one
    // process) never races with a writer that is still finishing.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// A read-only view sharing the store's in-memory entries.
#[derive(Clone)]
pub(crate) struct LogReader {
    mem: Arc<RwLock<MemLog>>,
}

fn storage_err(kind: fn(AnyError) -> StorageIOError<u64>, e: impl Into<AnyError>) -> StorageError {
    StorageError::IO {
        source: kind(e.into()),
    }
}

fn write_logs_err(e: impl Into<AnyError>) -> StorageError {
    storage_err(StorageIOError::write_logs, e)
}

fn writer_gone() -> StorageError {
    write_logs_err(AnyError::error("raft log writer thread stopped"))
}

impl LogStore {
    /// Opens (or creates) the log in `dir`: recovers the segments under `dir/log`, and reads the
    /// vote, committed and purge markers.
    pub(crate) fn open(dir: &Path, segment_bytes: u64) -> io::Result<(LogStore, Repair)> {
        std::fs::create_dir_all(dir)?;
        let vote: Option<Vote> = read_state(dir, VOTE_FILE)?;
        let purged: Option<LogId> = read_state(dir, PURGED_FILE)?;
        // The committed marker is written without fsync; a damaged one is only a lost hint.
        let committed: Option<LogId> = read_state::<Option<LogId>>(dir, COMMITTED_FILE)
            .unwrap_or_else(|e| {
                warn!(error = %e, "ignoring unreadable committed marker");
                None
            })
            .flatten();
        let (files, recovered, repair) = LogFiles::open(&dir.join("log"), segment_bytes)?;
        let first_live = purged.map_or(0, |p| p.index + 1);
        let entries: BTreeMap<u64, Entry> = recovered
            .into_iter()
            .filter(|e| e.log_id.index >= first_live)
            .map(|e| (e.log_id.index, e))
            .collect();
        if let Some((&first, _)) = entries.first_key_value()
            && first != first_live
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "raft log in {} starts at {first} but the purge point says {first_live}: entries are missing",
                    dir.display()
                ),
            ));
        }
        let mem = Arc::new(RwLock::new(MemLog {
            entries,
            purged,
            vote,
            committed,
        }));
        let (tx, rx) = mpsc::channel();
        let state_dir = dir.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("fjord-raft-log".into())
            .spawn(move || run_writer(files, state_dir, rx))?;
        let store = LogStore {
            mem,
            tx: Some(tx),
            writer: Some(writer),
        };
        Ok((store, repair))
    }

    pub(crate) fn reader(&self) -> LogReader {
        LogReader {
            mem: self.mem.clone(),
        }
    }

    /// The last purged log id (entries at or below it are gone).
    pub(crate) fn purged(&self) -> Option<LogId> {
        self.mem.read().purged
    }

    fn send(&self, op: Op) -> Result<(), ()> {
        match &self.tx {
            Some(tx) => tx.send(op).map_err(|_| ()),
            None => Err(()),
        }
    }

    /// Queues `op` behind every earlier write and waits for it.
    async fn call(&self, op: Ordered) -> io::Result<()> {
        let (done, rx) = oneshot::channel();
        let gone = || io::Error::other("raft log writer thread stopped");
        self.send(Op::Ordered { op, done }).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

fn read_state<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> io::Result<Option<T>> {
    match durable::read_small(dir, name, SMALL_FILE_MAX)? {
        None => Ok(None),
        Some(bytes) => types::decode(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{name}: {e}"))),
    }
}

fn entries_in<RB: RangeBounds<u64>>(mem: &MemLog, range: RB) -> Vec<Entry> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => match s.checked_add(1) {
            Some(s) => s,
            None => return Vec::new(),
        },
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    if end.is_some_and(|e| e <= start) {
        return Vec::new();
    }
    let iter = match end {
        Some(e) => mem.entries.range(start..e),
        None => mem.entries.range(start..),
    };
    iter.map(|(_, e)| e.clone()).collect()
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(entries_in(&self.mem.read(), range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(entries_in(&self.mem.read(), range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let mem = self.mem.read();
        Ok(LogState {
            last_purged_log_id: mem.purged,
            last_log_id: mem.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let err = |e: &dyn std::fmt::Display| {
            storage_err(StorageIOError::write_vote, AnyError::error(e.to_string()))
        };
        let data = types::encode(vote, SMALL_FILE_MAX).map_err(|e| err(&e))?;
        self.call(Ordered::Vote(data)).await.map_err(|e| err(&e))?;
        self.mem.write().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.mem.read().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Only a restart hint (lets the state machine catch up before a leader is known), so it
        // is written without fsync and not awaited.
        self.mem.write().committed = committed;
        if let Ok(data) = types::encode(&committed, SMALL_FILE_MAX) {
            let _ = self.send(Op::Committed { data });
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let mem = self.mem.read();
        let Some(c) = mem.committed else {
            return Ok(None);
        };
        // Trust the marker only if this log still holds that very entry (or purged past it): a
        // repaired log may have lost it, and openraft must not re-apply entries we lack.
        let consistent = mem.entries.get(&c.index).is_some_and(|e| e.log_id == c)
            || mem.purged.is_some_and(|p| c.index <= p.index);
        Ok(consistent.then_some(c))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut frames = Vec::with_capacity(entries.len());
        for e in &entries {
            let bytes = types::encode(e, MAX_ENTRY_BYTES).map_err(|err| StorageError::IO {
                source: StorageIOError::write_log_entry(e.log_id, &*err),
            })?;
            frames.push((e.log_id.index, bytes));
        }
        {
            let mut mem = self.mem.write();
            for e in entries {
                mem.entries.insert(e.log_id.index, e);
            }
        }
        self.send(Op::Append {
            frames,
            done: callback,
        })
        .map_err(|_| writer_gone())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        drop(self.mem.write().entries.split_off(&log_id.index));
        self.call(Ordered::Truncate(log_id.index))
            .await
            .map_err(|e| write_logs_err(&e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let marker = types::encode(&log_id, SMALL_FILE_MAX).map_err(|e| write_logs_err(&*e))?;
        {
            let mut mem = self.mem.write();
            let keep = mem.entries.split_off(&(log_id.index + 1));
            mem.entries = keep;
            mem.purged = Some(log_id);
        }
        self.call(Ordered::Purge {
            upto: log_id.index,
            marker,
        })
        .await
        .map_err(|e| write_logs_err(&e))
    }
}

/// The writer thread: owns the files; ends when the store is dropped.
fn run_writer(mut files: LogFiles, dir: PathBuf, rx: mpsc::Receiver<Op>) {
    // After any write error the files' state is unknown: refuse everything from then on.
    let mut failed: Option<String> = None;
    let mut pending: Vec<LogFlushed<TypeConfig>> = Vec::new();
    let mut committed: Option<Vec<u8>> = None;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(op) = next.take() {
            taken += 1;
            match op {
                Op::Append { frames, done } => {
                    if failed.is_none() {
                        for (index, bytes) in &frames {
                            if let Err(e) = files.append(*index, bytes) {
                                error!(error = %e, index, "raft log append failed");
                                failed = Some(e.to_string());
                                break;
                            }
                        }
                    }
                    pending.push(done);
                }
                // Only the newest marker of a batch is worth writing.
                Op::Committed { data } => committed = Some(data),
                Op::Ordered { op, done } => {
                    flush(&mut files, &mut pending, &mut failed);
                    let result = match &failed {
                        Some(msg) => {
                            Err(io::Error::other(format!("raft log failed earlier: {msg}")))
                        }
                        None => run_ordered(&mut files, &dir, op),
                    };
                    if let Err(e) = &result {
                        error!(error = %e, "raft log write failed");
                        failed.get_or_insert_with(|| e.to_string());
                    }
                    let _ = done.send(result);
                }
            }
            if taken < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        flush(&mut files, &mut pending, &mut failed);
        if let Some(data) = committed.take()
            && let Err(e) = durable::write_small(&dir, COMMITTED_FILE, &data, false)
        {
            warn!(error = %e, "could not record the committed index");
        }
    }
}

fn run_ordered(files: &mut LogFiles, dir: &Path, op: Ordered) -> io::Result<()> {
    match op {
        Ordered::Truncate(index) => files.truncate(index),
        Ordered::Purge { upto, marker } => {
            // Record the purge point before deleting anything, so recovery never sees a log that
            // starts later than the marker says.
            durable::write_small(dir, PURGED_FILE, &marker, true)?;
            files.purge(upto)
        }
        Ordered::Vote(data) => durable::write_small(dir, VOTE_FILE, &data, true),
    }
}

fn flush(
    files: &mut LogFiles,
    pending: &mut Vec<LogFlushed<TypeConfig>>,
    failed: &mut Option<String>,
) {
    if pending.is_empty() {
        return;
    }
    if failed.is_none()
        && let Err(e) = files.sync()
    {
        error!(error = %e, "raft log fsync failed");
        *failed = Some(e.to_string());
    }
    for done in pending.drain(..) {
        match failed {
            None => done.log_io_completed(Ok(())),
            Some(msg) => done.log_io_completed(Err(io::Error::other(msg.clone()))),
        }
    }
}
