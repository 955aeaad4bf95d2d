//! Producer state of one partition, for idempotent produce: per producer id, its epoch and the
//! metadata of its last five batches here (Kafka's `ProducerStateManager`, `ProducerStateEntry`
//! and the data-batch half of `ProducerAppendInfo`).
//!
//! The state lives inside the log's lock, so checking a producer batch and appending it are one
//! step: two produce requests for the same partition cannot both pass the check and both append.
//!
//! Rules (Kafka 4.x, `ProducerAppendInfo.checkProducerEpoch`/`checkSequence` and
//! `ProducerStateEntry.findDuplicateBatch`), for batches from clients:
//! - a batch whose epoch and exact sequence range match one of the producer's retained batches
//!   is a duplicate: nothing is appended and the original offsets are returned;
//! - an epoch below the producer's current one is `INVALID_PRODUCER_EPOCH`;
//! - a new epoch must start at sequence 0, and within an epoch the first sequence must follow
//!   the last one (wrapping from `i32::MAX` to 0), else `OUT_OF_ORDER_SEQUENCE_NUMBER`;
//! - a producer id without state here (never seen, or forgotten because its data was deleted)
//!   is accepted at any sequence. Since KIP-360 Kafka no longer answers UNKNOWN_PRODUCER_ID.
//!
//! Persistence (Kafka's layout): `<offset>.snapshot` files in the partition directory hold the
//! state as of `offset`. One is written when a segment rolls (named by the new segment's base
//! offset) and one at the log end on clean shutdown. Opening a log loads the newest readable
//! snapshot and replays batch headers from there to the log end (headers carry producer id,
//! epoch and base sequence), so an unclean stop loses nothing. Truncation drops snapshots past
//! the new end and rebuilds the same way.
//!
//! Snapshot format: Kafka's version 1 (`version int16, crc uint32` = CRC32C of the rest, then an
//! array of `producer_id int64, epoch int16, last_sequence int32, last_offset int64,
//! offset_delta int32, timestamp int64, coordinator_epoch int32, current_txn_first_offset
//! int64`). Kafka writes one entry per producer (its last batch); Fjord writes one entry per
//! retained batch, oldest first, so all five survive a restart. Kafka reading such a file keeps
//! the last entry per producer, which is exactly the entry Kafka itself would have written.
//!
//! Idle producers expire as in Kafka: a producer whose last batch's timestamp is at least
//! `producer.id.expiration.ms` (default 24 h) old is forgotten by the periodic check
//! ([`ProducerStateManager::remove_expired`]); its next batch must then start a new sequence.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::batch::{BatchHeader, be_i16, be_i32, be_i64, be_u32};
use crate::error::{IoContext, StorageError};
use crate::segment::Segment;

/// Batches remembered per producer (Kafka's `NUM_BATCHES_TO_RETAIN`, and the most a producer
/// may have in flight with idempotence on).
pub const NUM_BATCHES_TO_RETAIN: usize = 5;
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;
pub const NO_SEQUENCE: i32 = -1;
pub const SNAPSHOT_SUFFIX: &str = ".snapshot";

const SNAPSHOT_VERSION: i16 = 1;
/// version (2) + crc (4)
const CRC_END: usize = 6;
/// version + crc + array length
const SNAPSHOT_HEADER: usize = CRC_END + 4;
const ENTRY_SIZE: usize = 8 + 2 + 4 + 8 + 4 + 8 + 4 + 8;

/// One appended batch of a producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The batch's max timestamp (the append time on LogAppendTime topics).
    pub timestamp: i64,
}

/// What the partition knows about one producer id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerStateEntry {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_timestamp: i64,
    /// Oldest first, at most [`NUM_BATCHES_TO_RETAIN`], all of the current epoch.
    batches: VecDeque<BatchMetadata>,
}

impl ProducerStateEntry {
    fn empty(producer_id: i64) -> Self {
        ProducerStateEntry {
            producer_id,
            epoch: NO_PRODUCER_EPOCH,
            last_timestamp: -1,
            batches: VecDeque::new(),
        }
    }

    pub fn batches(&self) -> impl Iterator<Item = &BatchMetadata> {
        self.batches.iter()
    }

    pub fn last_seq(&self) -> i32 {
        self.batches.back().map_or(NO_SEQUENCE, |b| b.last_seq)
    }

    /// A new epoch forgets the old epoch's batches.
    fn set_epoch(&mut self, epoch: i16) {
        if self.epoch != epoch {
            self.batches.clear();
            self.epoch = epoch;
        }
    }

    fn add_batch(&mut self, epoch: i16, batch: BatchMetadata) {
        self.set_epoch(epoch);
        if self.batches.len() == NUM_BATCHES_TO_RETAIN {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
        self.last_timestamp = batch.timestamp;
    }

    fn find_duplicate(&self, epoch: i16, first_seq: i32, last_seq: i32) -> Option<BatchMetadata> {
        if epoch != self.epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            .copied()
    }
}

/// The verdict on a leader append's batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProducerCheck {
    /// Append them.
    Append,
    /// Already appended: answer with this batch's offsets and append nothing.
    Duplicate(BatchMetadata),
}

/// The batch's sequence after `base` advanced by `delta` records, wrapping like Kafka's
/// `DefaultRecordBatch.incrementSequence`.
fn increment_sequence(base: i32, delta: i32) -> i32 {
    let next = i64::from(base) + i64::from(delta);
    if next > i64::from(i32::MAX) {
        (next - i64::from(i32::MAX) - 1) as i32
    } else {
        next as i32
    }
}

/// The inverse of [`increment_sequence`] (Kafka's `decrementSequence`).
fn decrement_sequence(seq: i32, delta: i32) -> i32 {
    if seq < delta {
        (i64::from(i32::MAX) - (i64::from(delta) - i64::from(seq)) + 1) as i32
    } else {
        seq - delta
    }
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    i64::from(next_seq) == i64::from(last_seq) + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

fn metadata_of(h: &BatchHeader) -> BatchMetadata {
    BatchMetadata {
        first_seq: h.base_sequence,
        last_seq: increment_sequence(h.base_sequence, h.last_offset_delta),
        first_offset: h.base_offset,
        last_offset: h.last_offset(),
        timestamp: h.max_timestamp,
    }
}

pub fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}{SNAPSHOT_SUFFIX}"))
}

fn parse_snapshot_name(name: &str) -> Option<i64> {
    let digits = name.strip_suffix(SNAPSHOT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Why a snapshot file was not usable.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub struct ProducerStateManager {
    dir: PathBuf,
    producers: HashMap<i64, ProducerStateEntry>,
    /// Offsets of the snapshot files in `dir`.
    snapshots: BTreeSet<i64>,
    /// The state reflects every batch below this offset.
    map_end_offset: i64,
    /// `map_end_offset` when the newest snapshot was written or loaded.
    last_snap_offset: i64,
}

impl ProducerStateManager {
    /// No state yet; finds the snapshot files in `dir`. Call [`Self::rebuild`] to load.
    pub fn new(dir: &Path) -> Result<Self, StorageError> {
        let mut snapshots = BTreeSet::new();
        for entry in fs::read_dir(dir).at_path(dir)? {
            let entry = entry.at_path(dir)?;
            if let Some(offset) = parse_snapshot_name(&entry.file_name().to_string_lossy()) {
                snapshots.insert(offset);
            }
        }
        Ok(ProducerStateManager {
            dir: dir.to_path_buf(),
            producers: HashMap::new(),
            snapshots,
            map_end_offset: 0,
            last_snap_offset: 0,
        })
    }

    pub fn producer(&self, producer_id: i64) -> Option<&ProducerStateEntry> {
        self.producers.get(&producer_id)
    }

    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// Forgets producers whose last batch is `expiration_ms` or more older than `now_ms`
    /// (Kafka's `isProducerExpired`; no transactions are open in Fjord yet). Returns how many.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, p| now_ms.saturating_sub(p.last_timestamp) < expiration_ms);
        before - self.producers.len()
    }

    pub fn snapshot_offsets(&self) -> Vec<i64> {
        self.snapshots.iter().copied().collect()
    }

    pub fn map_end_offset(&self) -> i64 {
        self.map_end_offset
    }

    /// Checks a leader append from a client against the state, without changing it. Batches
    /// without a producer id are not checked. `batches` are in append order.
    pub fn check_append<'a>(
        &self,
        batches: impl IntoIterator<Item = &'a BatchHeader>,
    ) -> Result<ProducerCheck, StorageError> {
        // Where each producer stands after the earlier batches of this same append:
        // (producer id, epoch, last sequence). Almost always empty or one entry.
        let mut pending: smallvec::SmallVec<[(i64, i16, i32); 2]> = smallvec::SmallVec::new();
        for h in batches {
            let pid = h.producer_id;
            if pid < 0 {
                continue;
            }
            if h.base_sequence < 0 {
                return Err(StorageError::InvalidRecord(format!(
                    "invalid sequence number {} in a record batch with producer id {pid}",
                    h.base_sequence
                )));
            }
            let epoch = h.producer_epoch;
            let first_seq = h.base_sequence;
            let last_seq = increment_sequence(first_seq, h.last_offset_delta);
            let committed = self.producers.get(&pid);
            // Duplicates are judged against what is already in the log (Kafka: `lastEntry`).
            if let Some(dup) = committed.and_then(|e| e.find_duplicate(epoch, first_seq, last_seq))
            {
                return Ok(ProducerCheck::Duplicate(dup));
            }
            let committed_epoch = committed.map_or(NO_PRODUCER_EPOCH, |e| e.epoch);
            let (current_epoch, current_last_seq) =
                match pending.iter().rev().find(|(p, _, _)| *p == pid) {
                    Some((_, e, s)) => (*e, *s),
                    None => (
                        committed_epoch,
                        committed.map_or(NO_SEQUENCE, |e| e.last_seq()),
                    ),
                };
            if epoch < current_epoch {
                return Err(StorageError::InvalidProducerEpoch(format!(
                    "epoch {epoch} of producer {pid} is older than its current epoch {current_epoch}"
                )));
            }
            if epoch != current_epoch {
                if first_seq != 0 && current_epoch != NO_PRODUCER_EPOCH {
                    return Err(StorageError::OutOfOrderSequence(format!(
                        "producer {pid} starts epoch {epoch} at sequence {first_seq}; a new epoch \
                         starts at 0 (current epoch {current_epoch})"
                    )));
                }
            } else if committed_epoch != NO_PRODUCER_EPOCH
                && !in_sequence(current_last_seq, first_seq)
            {
                return Err(StorageError::OutOfOrderSequence(format!(
                    "producer {pid} sent sequence {first_seq}, expected {} (last {current_last_seq})",
                    increment_sequence(current_last_seq, 1)
                )));
            }
            pending.push((pid, epoch, last_seq));
        }
        Ok(ProducerCheck::Append)
    }

    /// Records batches now in the log (offsets and timestamps final), leader or follower, and
    /// moves the map end to `end_offset`. No checks: leader batches were checked before, and
    /// replicated or recovered batches are the log's truth.
    pub fn on_append<'a>(
        &mut self,
        batches: impl IntoIterator<Item = &'a BatchHeader>,
        end_offset: i64,
    ) {
        for h in batches {
            self.apply(h);
        }
        self.map_end_offset = self.map_end_offset.max(end_offset);
    }

    fn apply(&mut self, h: &BatchHeader) {
        if h.producer_id < 0 {
            return;
        }
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerStateEntry::empty(h.producer_id));
        if h.is_control() {
            // A transaction marker carries the producer's epoch but no data sequence.
            entry.set_epoch(h.producer_epoch);
            entry.last_timestamp = h.max_timestamp;
        } else if h.base_sequence >= 0 {
            entry.add_batch(h.producer_epoch, metadata_of(h));
        } else {
            entry.set_epoch(h.producer_epoch);
        }
    }

    /// The state now reflects everything below `offset` (a segment rolled there, no batches
    /// in between).
    pub fn update_map_end_offset(&mut self, offset: i64) {
        self.map_end_offset = offset;
    }

    /// Writes `<map end>.snapshot` unless the state has not moved since the last snapshot
    /// written or loaded (Kafka's rule; so an empty new log writes none).
    /// `sync` makes it durable (clean shutdown); without it a crash may lose or tear the file,
    /// which the CRC catches on load and costs only a longer replay.
    pub fn take_snapshot(&mut self, sync: bool) -> Result<(), StorageError> {
        if self.map_end_offset <= self.last_snap_offset {
            if sync && let Some(latest) = self.snapshots.last() {
                // The file may have been written without fsync (at a roll); make it durable.
                let path = snapshot_path(&self.dir, *latest);
                fs::File::open(&path)
                    .and_then(|f| f.sync_all())
                    .at_path(&path)?;
            }
            return Ok(());
        }
        let offset = self.map_end_offset;
        let path = snapshot_path(&self.dir, offset);
        let tmp = self.dir.join(format!("{offset:020}{SNAPSHOT_SUFFIX}.tmp"));
        let bytes = encode_snapshot(&self.producers);
        {
            let mut f = fs::File::create(&tmp).at_path(&tmp)?;
            f.write_all(&bytes).at_path(&tmp)?;
            if sync {
                f.sync_all().at_path(&tmp)?;
            }
        }
        fs::rename(&tmp, &path).at_path(&path)?;
        if sync {
            crate::checkpoint::sync_dir(&self.dir)?;
        }
        self.snapshots.insert(offset);
        self.last_snap_offset = offset;
        tracing::debug!(dir = %self.dir.display(), offset, producers = self.producers.len(), "wrote producer state snapshot");
        Ok(())
    }

    fn delete_snapshot(&mut self, offset: i64) -> Result<(), StorageError> {
        self.snapshots.remove(&offset);
        let path = snapshot_path(&self.dir, offset);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StorageError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// Deletes snapshots below `offset` (their segments were deleted).
    pub fn delete_snapshots_before(&mut self, offset: i64) -> Result<(), StorageError> {
        let doomed: Vec<i64> = self.snapshots.range(..offset).copied().collect();
        for o in doomed {
            self.delete_snapshot(o)?;
        }
        Ok(())
    }

    /// Kafka's `removeStraySnapshots`: drop snapshots whose segment is gone (compaction merged
    /// it, or it was deleted), keeping the newest stray only if it lies beyond every segment
    /// base (the log-end snapshot of a clean shutdown).
    pub fn remove_stray_snapshots(&mut self, segment_bases: &[i64]) -> Result<(), StorageError> {
        let bases: BTreeSet<i64> = segment_bases.iter().copied().collect();
        let strays: Vec<i64> = self
            .snapshots
            .iter()
            .copied()
            .filter(|o| !bases.contains(o))
            .collect();
        let max_base = bases.last().copied();
        for (i, o) in strays.iter().enumerate() {
            let newest = i + 1 == strays.len();
            if !newest || max_base.is_some_and(|m| *o < m) {
                self.delete_snapshot(*o)?;
            }
        }
        Ok(())
    }

    /// Forgets everything and deletes every snapshot; the log restarts empty at `offset`.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), StorageError> {
        self.producers.clear();
        for o in self.snapshot_offsets() {
            self.delete_snapshot(o)?;
        }
        self.map_end_offset = offset;
        self.last_snap_offset = offset;
        Ok(())
    }

    /// Brings the state in line with a log spanning `[log_start, log_end)` in `segments`:
    /// deletes snapshots outside it, reloads the newest readable snapshot and replays the batch
    /// headers after it (Kafka's `rebuildProducerState`). Used when opening a log and after
    /// truncation. After a clean shutdown with no snapshot at all (data from before producer
    /// state was kept) Kafka skips the replay and starts empty at the log end; so does this.
    pub fn rebuild(
        &mut self,
        segments: &BTreeMap<i64, Segment>,
        log_start: i64,
        log_end: i64,
        clean_shutdown: bool,
    ) -> Result<(), StorageError> {
        if self.snapshots.is_empty() && clean_shutdown {
            self.producers.clear();
            self.map_end_offset = log_end;
            return self.take_snapshot(false);
        }
        for o in self.snapshot_offsets() {
            if o > log_end || o <= log_start {
                self.delete_snapshot(o)?;
            }
        }
        if self.map_end_offset != log_end {
            self.producers.clear();
            self.load_latest_snapshot(log_start)?;
        } else {
            self.map_end_offset = self.map_end_offset.max(log_start);
        }
        if self.map_end_offset < log_end {
            let from = self.map_end_offset;
            let first_base = segments
                .range(..=from)
                .next_back()
                .map_or(i64::MIN, |(b, _)| *b);
            for seg in segments.range(first_base..log_end).map(|(_, s)| s) {
                let start = seg
                    .find_batch(from)
                    .map_or(seg.size() as usize, |b| b.position);
                for b in seg.batches(start) {
                    if b.header.base_offset >= log_end {
                        break;
                    }
                    if b.header.last_offset() >= from {
                        self.apply(&b.header);
                    }
                }
            }
            tracing::debug!(dir = %self.dir.display(), from, to = log_end, producers = self.producers.len(), "rebuilt producer state from the log");
        }
        self.map_end_offset = log_end;
        self.take_snapshot(false)
    }

    /// Loads the newest snapshot that reads back intact, deleting unreadable ones on the way;
    /// with none, the state starts empty at `log_start`.
    fn load_latest_snapshot(&mut self, log_start: i64) -> Result<(), StorageError> {
        while let Some(offset) = self.snapshots.last().copied() {
            match read_snapshot(&snapshot_path(&self.dir, offset)) {
                Ok(producers) => {
                    self.producers = producers;
                    self.map_end_offset = offset;
                    self.last_snap_offset = offset;
                    return Ok(());
                }
                Err(SnapshotError::Corrupt { path, reason }) => {
                    tracing::warn!(path = %path.display(), reason, "ignoring an unreadable producer state snapshot");
                    self.delete_snapshot(offset)?;
                }
                Err(SnapshotError::Storage(e)) => return Err(e),
            }
        }
        self.map_end_offset = log_start;
        self.last_snap_offset = log_start;
        Ok(())
    }
}

fn encode_snapshot(producers: &HashMap<i64, ProducerStateEntry>) -> Vec<u8> {
    let mut ids: Vec<&i64> = producers.keys().collect();
    ids.sort_unstable();
    let count: usize = producers.values().map(|e| e.batches.len().max(1)).sum();
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER + count * ENTRY_SIZE);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(count as i32).to_be_bytes());
    let mut put = |pid: i64, epoch: i16, seq: i32, offset: i64, delta: i32, ts: i64| {
        out.extend_from_slice(&pid.to_be_bytes());
        out.extend_from_slice(&epoch.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&delta.to_be_bytes());
        out.extend_from_slice(&ts.to_be_bytes());
        // No transactions: coordinator epoch -1, no ongoing transaction.
        out.extend_from_slice(&(-1i32).to_be_bytes());
        out.extend_from_slice(&(-1i64).to_be_bytes());
    };
    for pid in ids {
        let e = &producers[pid];
        if e.batches.is_empty() {
            put(*pid, e.epoch, NO_SEQUENCE, -1, 0, e.last_timestamp);
        }
        for b in &e.batches {
            let delta = (b.last_offset - b.first_offset).clamp(0, i64::from(i32::MAX)) as i32;
            put(*pid, e.epoch, b.last_seq, b.last_offset, delta, b.timestamp);
        }
    }
    let crc = crc32c::crc32c(&out[CRC_END..]);
    out[2..CRC_END].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Reads a snapshot file; any malformation is [`SnapshotError::Corrupt`].
pub fn read_snapshot(path: &Path) -> Result<HashMap<i64, ProducerStateEntry>, SnapshotError> {
    let buf = fs::read(path).at_path(path)?;
    let corrupt = |reason: &str| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if buf.len() < SNAPSHOT_HEADER {
        return Err(corrupt("shorter than its header"));
    }
    if be_i16(&buf, 0) != SNAPSHOT_VERSION {
        return Err(corrupt("unknown version"));
    }
    if be_u32(&buf, 2) != crc32c::crc32c(&buf[CRC_END..]) {
        return Err(corrupt("CRC mismatch"));
    }
    let count = be_i32(&buf, CRC_END);
    let body = &buf[SNAPSHOT_HEADER..];
    if count < 0 || body.len() != count as usize * ENTRY_SIZE {
        return Err(corrupt("entry count does not match the file length"));
    }
    let mut producers: HashMap<i64, ProducerStateEntry> = HashMap::new();
    for e in body.chunks_exact(ENTRY_SIZE) {
        let pid = be_i64(e, 0);
        let epoch = be_i16(e, 8);
        let last_seq = be_i32(e, 10);
        let last_offset = be_i64(e, 14);
        let delta = be_i32(e, 22);
        let timestamp = be_i64(e, 26);
        if pid < 0 || delta < 0 {
            return Err(corrupt("negative producer id or offset delta"));
        }
        let entry = producers
            .entry(pid)
            .or_insert_with(|| ProducerStateEntry::empty(pid));
        entry.set_epoch(epoch);
        entry.last_timestamp = timestamp;
        if last_offset >= 0 {
            entry.add_batch(
                epoch,
                BatchMetadata {
                    first_seq: decrement_sequence(last_seq, delta),
                    last_seq,
                    first_offset: last_offset.saturating_sub(i64::from(delta)),
                    last_offset,
                    timestamp,
                },
            );
        }
    }
    Ok(producers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{BatchSpec, Record, encode_batch};
    use bytes::Bytes;

    fn header(pid: i64, epoch: i16, seq: i32, n: i32, base_offset: i64) -> BatchHeader {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                offset: base_offset + i64::from(i),
                timestamp: 1_000 + i64::from(i),
                key: None,
                value: Some(Bytes::from_static(b"v")),
                headers: vec![],
            })
            .collect();
        let mut spec = BatchSpec::new(base_offset, crate::Compression::None);
        spec.producer_id = pid;
        spec.producer_epoch = epoch;
        spec.base_sequence = seq;
        BatchHeader::parse(&encode_batch(&spec, &records).unwrap()).unwrap()
    }

    fn manager() -> (tempfile::TempDir, ProducerStateManager) {
        let dir = tempfile::tempdir().unwrap();
        let m = ProducerStateManager::new(dir.path()).unwrap();
        (dir, m)
    }

    /// Checks and, if accepted, records one batch; returns the verdict.
    fn append(m: &mut ProducerStateManager, h: BatchHeader) -> Result<ProducerCheck, StorageError> {
        let verdict = m.check_append([&h])?;
        if verdict == ProducerCheck::Append {
            m.on_append([&h], h.next_offset());
        }
        Ok(verdict)
    }

    fn duplicate_of(r: Result<ProducerCheck, StorageError>) -> (i64, i64) {
        match r {
            Ok(ProducerCheck::Duplicate(d)) => (d.first_offset, d.last_offset),
            other => panic!("expected a duplicate, got {other:?}"),
        }
    }

    fn accepted(r: Result<ProducerCheck, StorageError>) {
        assert!(matches!(r, Ok(ProducerCheck::Append)), "{r:?}");
    }

    fn out_of_order(r: Result<ProducerCheck, StorageError>) {
        assert!(
            matches!(r, Err(StorageError::OutOfOrderSequence(_))),
            "{r:?}"
        );
    }

    #[test]
    fn in_order_batches_are_accepted_and_retries_are_duplicates() {
        let (_d, mut m) = manager();
        accepted(append(&mut m, header(7, 0, 0, 3, 0)));
        accepted(append(&mut m, header(7, 0, 3, 2, 3)));
        // A retry carries the same sequences; the offsets it would get now are irrelevant.
        assert_eq!(duplicate_of(append(&mut m, header(7, 0, 0, 3, 5))), (0, 2));
        assert_eq!(duplicate_of(append(&mut m, header(7, 0, 3, 2, 5))), (3, 4));
        // Same first sequence, different range: not a duplicate, and out of order.
        out_of_order(append(&mut m, header(7, 0, 0, 2, 5)));
        // A gap, and a step back.
        out_of_order(append(&mut m, header(7, 0, 6, 1, 5)));
        out_of_order(append(&mut m, header(7, 0, 4, 1, 5)));
        accepted(append(&mut m, header(7, 0, 5, 1, 5)));
        assert_eq!(m.producer(7).unwrap().last_seq(), 5);
        assert_eq!(m.map_end_offset(), 6);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let (_d, mut m) = manager();
        for i in 0..6 {
            accepted(append(&mut m, header(1, 0, i, 1, i64::from(i))));
        }
        assert_eq!(
            m.producer(1).unwrap().batches().count(),
            NUM_BATCHES_TO_RETAIN
        );
        out_of_order(append(&mut m, header(1, 0, 0, 1, 6)));
        assert_eq!(duplicate_of(append(&mut m, header(1, 0, 1, 1, 6))), (1, 1));
    }

    #[test]
    fn epochs_fence_and_restart_sequences() {
        let (_d, mut m) = manager();
        accepted(append(&mut m, header(3, 2, 0, 2, 0)));
        let older = append(&mut m, header(3, 1, 2, 1, 2));
        assert!(
            matches!(older, Err(StorageError::InvalidProducerEpoch(_))),
            "{older:?}"
        );
        // A new epoch must start at 0 ...
        out_of_order(append(&mut m, header(3, 3, 2, 1, 2)));
        accepted(append(&mut m, header(3, 3, 0, 1, 2)));
        // ... and forgets the old epoch's batches.
        assert_eq!(m.producer(3).unwrap().batches().count(), 1);
        let stale = append(&mut m, header(3, 2, 0, 2, 3));
        assert!(
            matches!(stale, Err(StorageError::InvalidProducerEpoch(_))),
            "{stale:?}"
        );
    }

    #[test]
    fn idle_producers_expire_and_lose_their_duplicate_protection() {
        let (_d, mut m) = manager();
        // Batch timestamps are 1_000.. (see `header`).
        accepted(append(&mut m, header(5, 0, 0, 1, 0)));
        accepted(append(&mut m, header(6, 0, 0, 1, 1)));
        assert_eq!(m.remove_expired(1_000 + 999, 1_000), 0);
        assert_eq!(duplicate_of(append(&mut m, header(5, 0, 0, 1, 2))), (0, 0));
        assert_eq!(m.remove_expired(1_000 + 1_000, 1_000), 2);
        assert_eq!(m.producer_count(), 0);
        // Forgotten: the same batch is new again.
        accepted(append(&mut m, header(5, 0, 0, 1, 2)));
    }

    #[test]
    fn unknown_producers_start_at_any_sequence() {
        let (_d, mut m) = manager();
        accepted(append(&mut m, header(9, 0, 42, 1, 0)));
        accepted(append(&mut m, header(9, 0, 43, 1, 1)));
        // Batches without a producer id are never checked.
        accepted(append(&mut m, header(-1, -1, -1, 4, 2)));
        let bad = append(&mut m, header(10, 0, -1, 1, 6));
        assert!(
            matches!(bad, Err(StorageError::InvalidRecord(_))),
            "{bad:?}"
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let (_d, mut m) = manager();
        // MAX-1, MAX, 0
        accepted(append(&mut m, header(5, 0, i32::MAX - 1, 3, 0)));
        assert_eq!(m.producer(5).unwrap().last_seq(), 0);
        accepted(append(&mut m, header(5, 0, 1, 1, 3)));
        assert_eq!(
            duplicate_of(append(&mut m, header(5, 0, i32::MAX - 1, 3, 4))),
            (0, 2)
        );
        let (_d, mut m) = manager();
        accepted(append(&mut m, header(5, 0, i32::MAX, 1, 0)));
        accepted(append(&mut m, header(5, 0, 0, 1, 1)));
    }

    #[test]
    fn batches_of_one_append_are_checked_in_order() {
        let (_d, mut m) = manager();
        let (a, b) = (header(4, 0, 0, 3, 0), header(4, 0, 3, 2, 3));
        assert!(matches!(
            m.check_append([&a, &b]),
            Ok(ProducerCheck::Append)
        ));
        m.on_append([&a, &b], 5);
        assert_eq!(m.producer(4).unwrap().last_seq(), 4);
        // The second batch is checked against the first, not against the log.
        let (c, gap) = (header(4, 0, 5, 1, 5), header(4, 0, 7, 1, 6));
        out_of_order(m.check_append([&c, &gap]));
        let (c2, old_epoch) = (header(4, 1, 0, 1, 5), header(4, 0, 6, 1, 6));
        let r = m.check_append([&c2, &old_epoch]);
        assert!(
            matches!(r, Err(StorageError::InvalidProducerEpoch(_))),
            "{r:?}"
        );
        // A duplicate anywhere answers for the whole append (Kafka returns at the first one).
        let next = header(4, 0, 5, 1, 5);
        assert_eq!(duplicate_of(m.check_append([&next, &b])), (3, 4));
    }

    #[test]
    fn snapshots_round_trip_every_retained_batch() {
        let (dir, mut m) = manager();
        for i in 0..7 {
            accepted(append(&mut m, header(11, 1, i * 2, 2, i64::from(i) * 2)));
        }
        accepted(append(&mut m, header(12, 0, i32::MAX, 2, 14)));
        m.take_snapshot(true).unwrap();
        assert_eq!(m.snapshot_offsets(), vec![16]);
        let path = snapshot_path(dir.path(), 16);
        let loaded = read_snapshot(&path).unwrap();
        assert_eq!(loaded.get(&11), m.producer(11));
        assert_eq!(loaded.get(&12), m.producer(12));
        assert_eq!(loaded[&12].batches().next().unwrap().first_seq, i32::MAX);
        // No new state, no new file.
        m.take_snapshot(true).unwrap();
        assert_eq!(m.snapshot_offsets(), vec![16]);

        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read_snapshot(&path),
            Err(SnapshotError::Corrupt { .. })
        ));
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        assert!(matches!(
            read_snapshot(&path),
            Err(SnapshotError::Corrupt { .. })
        ));
    }

    #[test]
    fn reads_a_snapshot_laid_out_as_kafka_writes_it() {
        // Built by hand from Kafka's schema: one producer, its last batch only.
        let mut body = Vec::new();
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&1000i64.to_be_bytes()); // producer_id
        body.extend_from_slice(&3i16.to_be_bytes()); // epoch
        body.extend_from_slice(&9i32.to_be_bytes()); // last_sequence
        body.extend_from_slice(&120i64.to_be_bytes()); // last_offset
        body.extend_from_slice(&4i32.to_be_bytes()); // offset_delta
        body.extend_from_slice(&77i64.to_be_bytes()); // timestamp
        body.extend_from_slice(&(-1i32).to_be_bytes()); // coordinator_epoch
        body.extend_from_slice(&(-1i64).to_be_bytes()); // current_txn_first_offset
        let mut file = 1i16.to_be_bytes().to_vec();
        file.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        file.extend_from_slice(&body);
        let dir = tempfile::tempdir().unwrap();
        let path = snapshot_path(dir.path(), 121);
        std::fs::write(&path, &file).unwrap();
        let loaded = read_snapshot(&path).unwrap();
        let e = &loaded[&1000];
        assert_eq!(e.epoch, 3);
        assert_eq!(
            e.batches().copied().collect::<Vec<_>>(),
            vec![BatchMetadata {
                first_seq: 5,
                last_seq: 9,
                first_offset: 116,
                last_offset: 120,
                timestamp: 77
            }]
        );
        // And what Fjord writes for that state is byte for byte what Kafka wrote.
        assert_eq!(encode_snapshot(&loaded), file);
    }

    #[test]
    fn stray_snapshots_are_removed_except_a_newest_beyond_the_segments() {
        let (dir, _) = manager();
        for o in [0, 50, 70, 100, 130] {
            std::fs::write(snapshot_path(dir.path(), o), b"").unwrap();
        }
        let mut m = ProducerStateManager::new(dir.path()).unwrap();
        m.remove_stray_snapshots(&[0, 100]).unwrap();
        assert_eq!(m.snapshot_offsets(), vec![0, 100, 130]);
        m.remove_stray_snapshots(&[0, 200]).unwrap();
        assert_eq!(m.snapshot_offsets(), vec![0]);
        assert!(!snapshot_path(dir.path(), 100).exists());
        m.truncate_fully_and_start_at(300).unwrap();
        assert!(m.snapshot_offsets().is_empty());
        assert!(!snapshot_path(dir.path(), 0).exists());
    }
}
