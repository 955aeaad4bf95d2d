//! Storage tests: openraft's own suite against our log store and state machine, and recovery of
//! damaged log files.

use std::fs::{self, OpenOptions};
use std::path::Path;

use bytes::Bytes;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{EntryPayload, RaftLogReader, RaftSnapshotBuilder};
use tempfile::TempDir;

use super::log_files::list_segments;
use super::types::{Entry, Payload, StorageError, TypeConfig};
use super::{Applier, LogStore, StateMachine};

/// Keeps every applied payload; snapshots are the bincode of the list.
#[derive(Default)]
struct ListApplier {
    items: Vec<(u64, Vec<u8>)>,
}

impl Applier for ListApplier {
    fn apply(&mut self, index: u64, payload: &[u8]) {
        self.items.push((index, payload.to_vec()));
    }
    fn snapshot(&self) -> Vec<u8> {
        bincode::serialize(&self.items).unwrap()
    }
    fn restore(&mut self, _index: u64, data: &[u8]) -> Result<(), String> {
        self.items = bincode::deserialize(data).map_err(|e| e.to_string())?;
        Ok(())
    }
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = LogStore::open(dir.path(), 4096).unwrap();
        let (sm, _) = StateMachine::open(dir.path(), Box::new(ListApplier::default())).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: openraft::testing::log_id(term, 1, index),
        payload: EntryPayload::Normal(Payload(Bytes::from(format!("payload-{index}-").repeat(8)))),
    }
}

async fn write_log(dir: &Path, segment_bytes: u64, indexes: std::ops::Range<u64>) {
    let (mut log, _) = LogStore::open(dir, segment_bytes).unwrap();
    log.blocking_append(indexes.map(|i| entry(1, i)))
        .await
        .unwrap();
}

async fn read_all(dir: &Path, segment_bytes: u64) -> (Vec<u64>, super::log_files::Repair) {
    let (mut log, repair) = LogStore::open(dir, segment_bytes).unwrap();
    let entries = log.try_get_log_entries(..).await.unwrap();
    for e in &entries {
        assert_eq!(e, &entry(1, e.log_id.index), "entry content changed");
    }
    (entries.iter().map(|e| e.log_id.index).collect(), repair)
}

fn seg_path(dir: &Path, base: u64) -> std::path::PathBuf {
    dir.join("log").join(format!("{base:020}.seg"))
}

#[tokio::test]
async fn reopen_returns_every_entry_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 512, 0..40).await;
    let segs = list_segments(&dir.path().join("log")).unwrap();
    assert!(segs.len() > 3, "expected several segments, got {segs:?}");
    let (idx, repair) = read_all(dir.path(), 512).await;
    assert_eq!(idx, (0..40).collect::<Vec<_>>());
    assert_eq!(repair, Default::default());
}

#[tokio::test]
async fn torn_tail_is_cut_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 1 << 20, 0..10).await;
    let path = seg_path(dir.path(), 0);
    let len = fs::metadata(&path).unwrap().len();
    // Half of the last frame never reached the disk.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 20)
        .unwrap();
    let (idx, repair) = read_all(dir.path(), 1 << 20).await;
    assert_eq!(idx, (0..9).collect::<Vec<_>>());
    assert!(repair.cut_bytes > 0);
    assert!(
        fs::metadata(&path).unwrap().len() < len - 20,
        "torn bytes were not cut from the file"
    );
    // The log is writable again at the cut point, and a second reopen is clean.
    write_log(dir.path(), 1 << 20, 9..12).await;
    let (idx, repair) = read_all(dir.path(), 1 << 20).await;
    assert_eq!(idx, (0..12).collect::<Vec<_>>());
    assert_eq!(repair, Default::default());
}

#[tokio::test]
async fn flipped_byte_cuts_the_log_from_that_entry() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 512, 0..40).await;
    let segs = list_segments(&dir.path().join("log")).unwrap();
    assert!(segs.len() >= 4);
    let victim = segs[1];
    let path = seg_path(dir.path(), victim);
    let mut raw = fs::read(&path).unwrap();
    // Inside the second frame's payload.
    let first_len = u32::from_le_bytes(raw[0..4].try_into().unwrap()) as usize;
    let pos = 8 + first_len + 8 + 20;
    raw[pos] ^= 0x40;
    fs::write(&path, &raw).unwrap();
    let (idx, repair) = read_all(dir.path(), 512).await;
    assert_eq!(idx, (0..victim + 1).collect::<Vec<_>>());
    assert_eq!(repair.dropped_segments, segs.len() - 2);
    assert_eq!(
        list_segments(&dir.path().join("log")).unwrap(),
        segs[..2].to_vec()
    );
}

#[tokio::test]
async fn truncate_purge_and_vote_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = LogStore::open(dir.path(), 512).unwrap();
        log.blocking_append((0..40).map(|i| entry(1, i)))
            .await
            .unwrap();
        log.truncate(openraft::testing::log_id(1, 1, 30))
            .await
            .unwrap();
        log.purge(openraft::testing::log_id(1, 1, 12))
            .await
            .unwrap();
        log.save_vote(&openraft::Vote::new_committed(3, 2))
            .await
            .unwrap();
        // Re-append after the truncation point under a new term.
        log.blocking_append((30..33).map(|i| entry(2, i)))
            .await
            .unwrap();
        log.save_committed(Some(openraft::testing::log_id(2, 1, 31)))
            .await
            .unwrap();
    }
    let (mut log, _) = LogStore::open(dir.path(), 512).unwrap();
    let st = log.get_log_state().await.unwrap();
    assert_eq!(
        st.last_purged_log_id,
        Some(openraft::testing::log_id(1, 1, 12))
    );
    assert_eq!(st.last_log_id, Some(openraft::testing::log_id(2, 1, 32)));
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(openraft::Vote::new_committed(3, 2))
    );
    assert_eq!(
        log.read_committed().await.unwrap(),
        Some(openraft::testing::log_id(2, 1, 31))
    );
    // A committed marker naming an entry this log does not hold is not trusted.
    log.save_committed(Some(openraft::testing::log_id(2, 1, 40)))
        .await
        .unwrap();
    assert_eq!(log.read_committed().await.unwrap(), None);
    let entries = log.try_get_log_entries(..).await.unwrap();
    let idx: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(idx, (13..33).collect::<Vec<_>>());
    assert_eq!(entries.last().unwrap().log_id.leader_id.term, 2);
    // Whole segments below the purge point are gone from disk.
    let segs = list_segments(&dir.path().join("log")).unwrap();
    assert!(segs[0] > 0 && segs[0] <= 13, "segments {segs:?}");
}

#[tokio::test]
async fn snapshot_restores_the_applier_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut sm, applied) =
            StateMachine::open(dir.path(), Box::new(ListApplier::default())).unwrap();
        sm.apply((1..=5).map(|i| entry(1, i))).await.unwrap();
        assert_eq!(*applied.borrow(), 5);
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(
            snap.meta.last_log_id,
            Some(openraft::testing::log_id(1, 1, 5))
        );
        sm.apply((6..=7).map(|i| entry(1, i))).await.unwrap();
    }
    let (mut sm, applied) =
        StateMachine::open(dir.path(), Box::new(ListApplier::default())).unwrap();
    assert_eq!(*applied.borrow(), 5);
    let (last, _) = sm.applied_state().await.unwrap();
    assert_eq!(last, Some(openraft::testing::log_id(1, 1, 5)));
    let snap = sm.get_current_snapshot().await.unwrap().unwrap();
    let items: Vec<(u64, Vec<u8>)> = bincode::deserialize(snap.snapshot.get_ref()).unwrap();
    assert_eq!(
        items.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    // A damaged snapshot refuses to load rather than silently starting empty.
    let name = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "bin"))
        .unwrap();
    let mut raw = fs::read(&name).unwrap();
    let at = raw.len() - 3;
    raw[at] ^= 1;
    fs::write(&name, raw).unwrap();
    assert!(StateMachine::open(dir.path(), Box::new(ListApplier::default())).is_err());
}
