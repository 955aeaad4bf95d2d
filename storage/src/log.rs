//! The log of one partition: an ordered set of segments with Kafka's append, read, flush,
//! truncation and retention semantics.
//!
//! Concurrency: one `RwLock` guards the segment set and offsets. Appends take it exclusively
//! for the `write` into the page cache and the index update; reads take it shared only to
//! locate batches and slice a mapping, then return zero-copy `Bytes`. fsync never runs under
//! the lock: `flush` collects file handles, syncs them, then records the new recovery point, so
//! concurrent appenders waiting on the same flush share one fsync (group commit).
//!
//! Durability: an acknowledged append is in the OS page cache, which survives the broker
//! process being killed (SIGKILL) but not a power loss. With `flush.messages=1` every append
//! is fsynced before `append_*` returns; with `flush.messages=N` or `flush.ms` it is fsynced
//! when the count or age is reached. The recovery point is the offset below which everything
//! is known to be on disk; after an unclean stop every segment from the one holding the
//! recovery point onward is re-validated and cut at the first torn or corrupt batch.

use std::collections::BTreeMap;
use std::fs;
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;

use crate::batch::{
    self, BatchHeader, BatchList, BatchRef, HEADER_SIZE, NO_TIMESTAMP, TimestampType, Validation,
};
use crate::checkpoint::{self, TopicPartition};
use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::{IoContext, StorageError};
use crate::producer_state::{ProducerCheck, ProducerStateManager};
use crate::records;
use crate::segment::{
    self, CLEANED_SUFFIX, DELETED_SUFFIX, INDEX_SUFFIX, LOG_SUFFIX, SWAP_SUFFIX, Segment,
    TIME_INDEX_SUFFIX,
};

/// What an append did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    /// Last offset of the batch that holds `max_timestamp`.
    pub offset_of_max_timestamp: i64,
    /// The broker's append time when `message.timestamp.type=LogAppendTime`, else -1.
    pub log_append_time: i64,
    pub log_start_offset: i64,
    pub record_count: i64,
    pub bytes: usize,
    /// An idempotent retry of batches already in the log: nothing was appended and the
    /// offsets are the original ones.
    pub duplicate: bool,
}

/// Whole batches from one segment, and the log's bounds at the time of the read.
#[derive(Clone, Debug)]
pub struct ReadResult {
    pub records: Bytes,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
}

/// A record found by a timestamp lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimestampAndOffset {
    pub timestamp: i64,
    pub offset: i64,
    pub leader_epoch: Option<i32>,
}

/// State carried from the log directory's checkpoints into [`Log::open`].
#[derive(Clone, Copy, Debug)]
pub struct LoadParams {
    pub recovery_point: i64,
    pub log_start_offset: i64,
    pub high_watermark: Option<i64>,
    pub clean_shutdown: bool,
    pub now_ms: i64,
}

impl LoadParams {
    pub fn new_log(now_ms: i64) -> LoadParams {
        LoadParams {
            recovery_point: 0,
            log_start_offset: 0,
            high_watermark: None,
            clean_shutdown: true,
            now_ms,
        }
    }
}

struct LogState {
    config: Arc<LogConfig>,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    log_end_offset: i64,
    high_watermark: i64,
    recovery_point: i64,
    unflushed_messages: i64,
    last_flush_ms: i64,
    epochs: LeaderEpochCache,
    offline: bool,
    created_segment_since_flush: bool,
    producers: ProducerStateManager,
}

pub struct Log {
    tp: TopicPartition,
    dir: PathBuf,
    state: RwLock<LogState>,
    flush_lock: Mutex<()>,
}

impl LogState {
    fn active(&self) -> &Segment {
        // The segment map is never empty: load and every deletion keep one segment.
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }
    fn check_online(&self, tp: &TopicPartition) -> Result<(), StorageError> {
        if self.offline {
            Err(StorageError::LogOffline(tp.to_string()))
        } else {
            Ok(())
        }
    }
    fn size(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }
}

impl Log {
    /// Open (or create) the log in `dir`, recovering it if the last stop was unclean.
    pub fn open(
        dir: &Path,
        tp: TopicPartition,
        config: Arc<LogConfig>,
        params: LoadParams,
    ) -> Result<Log, StorageError> {
        fs::create_dir_all(dir).at_path(dir)?;
        let state = load(dir, &tp, config, params)?;
        Ok(Log {
            tp,
            dir: dir.to_path_buf(),
            state: RwLock::new(state),
            flush_lock: Mutex::new(()),
        })
    }

    pub fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> Arc<LogConfig> {
        self.state.read().config.clone()
    }
    pub fn update_config(&self, config: Arc<LogConfig>) {
        self.state.write().config = config;
    }
    pub fn log_start_offset(&self) -> i64 {
        self.state.read().log_start_offset
    }
    pub fn log_end_offset(&self) -> i64 {
        self.state.read().log_end_offset
    }
    pub fn high_watermark(&self) -> i64 {
        self.state.read().high_watermark
    }
    pub fn recovery_point(&self) -> i64 {
        self.state.read().recovery_point
    }
    pub fn size_in_bytes(&self) -> u64 {
        self.state.read().size()
    }
    pub fn num_segments(&self) -> usize {
        self.state.read().segments.len()
    }
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.state.read().segments.keys().copied().collect()
    }
    pub fn is_offline(&self) -> bool {
        self.state.read().offline
    }

    /// Set the high watermark (the replication layer's call), kept within [log start, log end].
    pub fn set_high_watermark(&self, hw: i64) {
        let mut s = self.state.write();
        s.high_watermark = hw.clamp(s.log_start_offset, s.log_end_offset);
    }

    /// Append producer batches as the leader: validate, assign offsets from the log end,
    /// stamp `leader_epoch`, and (for LogAppendTime topics) the append time.
    pub fn append_as_leader(
        &self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let config = self.config();
        let mut batches = BatchList::new();
        batch::split_batches(
            records,
            Validation::Producer,
            config.max_message_bytes,
            &mut batches,
        )?;
        if records.len() as u64 > config.segment_bytes {
            return Err(StorageError::RecordBatchTooLarge {
                size: records.len(),
                max: config.segment_bytes as usize,
            });
        }
        // Record-level checks (keys on compacted topics, timestamp bounds) before the lock:
        // they may decompress, and a refused request leaves no trace in the log.
        crate::validate::check_records(records, &batches, &config, now_ms)?;
        let log_append_time = config.timestamp_type == TimestampType::LogAppendTime;

        let mut s = self.state.write();
        s.check_online(&self.tp)?;
        if let ProducerCheck::Duplicate(d) = s
            .producers
            .check_append(batches.iter().map(|b| &b.header))?
        {
            return Ok(AppendInfo {
                first_offset: d.first_offset,
                last_offset: d.last_offset,
                max_timestamp: d.timestamp,
                offset_of_max_timestamp: d.last_offset,
                log_append_time: if log_append_time { d.timestamp } else { -1 },
                log_start_offset: s.log_start_offset,
                record_count: 0,
                bytes: 0,
                duplicate: true,
            });
        }
        let first_offset = s.log_end_offset;
        // Stamped copies of each header; the bodies are written straight from `records`.
        let mut headers: SmallVec<[[u8; HEADER_SIZE]; 2]> = SmallVec::with_capacity(batches.len());
        let mut next = first_offset;
        let (mut max_ts, mut offset_of_max_ts, mut count) = (NO_TIMESTAMP, first_offset, 0i64);
        for b in batches.iter_mut() {
            let mut h = [0u8; HEADER_SIZE];
            h.copy_from_slice(&records[b.position..b.position + HEADER_SIZE]);
            batch::stamp_offset_and_epoch(&mut h, next, leader_epoch);
            b.header.base_offset = next;
            b.header.partition_leader_epoch = leader_epoch;
            if log_append_time {
                let body = &records[b.position + HEADER_SIZE..b.position + b.header.size()];
                batch::stamp_log_append_time(&mut h, body, now_ms);
                b.header.max_timestamp = now_ms;
                b.header.attributes |= batch::TIMESTAMP_TYPE_MASK;
            }
            if b.header.max_timestamp > max_ts {
                max_ts = b.header.max_timestamp;
                offset_of_max_ts = b.header.last_offset();
            }
            count += b.header.records_count as i64;
            next = b.header.next_offset();
            headers.push(h);
        }
        let last_offset = next - 1;
        let mut slices: SmallVec<[IoSlice<'_>; 4]> = SmallVec::with_capacity(batches.len() * 2);
        for (b, h) in batches.iter().zip(headers.iter()) {
            slices.push(IoSlice::new(h));
            slices.push(IoSlice::new(
                &records[b.position + HEADER_SIZE..b.position + b.header.size()],
            ));
        }
        self.write_batches(
            &mut s,
            &config,
            &mut slices,
            &batches,
            records.len() as u64,
            first_offset,
            last_offset,
            max_ts,
            now_ms,
        )?;
        s.producers
            .on_append(batches.iter().map(|b| &b.header), last_offset + 1);
        if leader_epoch >= 0 {
            s.epochs.assign(leader_epoch, first_offset)?;
        }
        let info = AppendInfo {
            first_offset,
            last_offset,
            max_timestamp: max_ts,
            offset_of_max_timestamp: offset_of_max_ts,
            log_append_time: if log_append_time { now_ms } else { -1 },
            log_start_offset: s.log_start_offset,
            record_count: count,
            bytes: records.len(),
            duplicate: false,
        };
        self.finish_append(s, &config, info, now_ms)
    }

    /// Append batches that already carry the leader's offsets (replication). The first batch
    /// must start at or after the log end offset and offsets must increase.
    pub fn append_as_follower(
        &self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let config = self.config();
        let mut batches = BatchList::new();
        batch::split_batches(records, Validation::Stored, usize::MAX, &mut batches)?;
        let mut s = self.state.write();
        s.check_online(&self.tp)?;
        let first_offset = batches[0].header.base_offset;
        if first_offset < s.log_end_offset {
            return Err(StorageError::UnexpectedAppendOffset {
                first_offset,
                log_end_offset: s.log_end_offset,
            });
        }
        let mut prev_next = first_offset;
        let (mut max_ts, mut offset_of_max_ts, mut count) = (NO_TIMESTAMP, first_offset, 0i64);
        for b in &batches {
            if b.header.base_offset < prev_next {
                return Err(StorageError::NonMonotonicOffsets(b.header.base_offset));
            }
            prev_next = b.header.next_offset();
            if b.header.max_timestamp > max_ts {
                max_ts = b.header.max_timestamp;
                offset_of_max_ts = b.header.last_offset();
            }
            count += b.header.records_count.max(0) as i64;
        }
        let last_offset = prev_next - 1;
        if last_offset - first_offset > i32::MAX as i64 {
            return Err(StorageError::InvalidRecord(
                "appended batches span more than 2^31 offsets".into(),
            ));
        }
        let mut slices = [IoSlice::new(records)];
        self.write_batches(
            &mut s,
            &config,
            &mut slices,
            &batches,
            records.len() as u64,
            first_offset,
            last_offset,
            max_ts,
            now_ms,
        )?;
        s.producers
            .on_append(batches.iter().map(|b| &b.header), last_offset + 1);
        for b in &batches {
            if b.header.partition_leader_epoch >= 0 {
                s.epochs
                    .assign(b.header.partition_leader_epoch, b.header.base_offset)?;
            }
        }
        let info = AppendInfo {
            first_offset,
            last_offset,
            max_timestamp: max_ts,
            offset_of_max_timestamp: offset_of_max_ts,
            log_append_time: -1,
            log_start_offset: s.log_start_offset,
            record_count: count,
            bytes: records.len(),
            duplicate: false,
        };
        self.finish_append(s, &config, info, now_ms)
    }

    /// Count the appended records against `flush.messages`, release the lock, and fsync if
    /// the policy says so before the append is reported done.
    fn finish_append(
        &self,
        mut s: parking_lot::RwLockWriteGuard<'_, LogState>,
        config: &LogConfig,
        info: AppendInfo,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        s.unflushed_messages += info.record_count;
        let flush_now = s.unflushed_messages >= config.flush_messages;
        drop(s);
        if flush_now {
            self.flush(now_ms)?;
        }
        Ok(info)
    }

    #[allow(clippy::too_many_arguments)]
    fn write_batches(
        &self,
        s: &mut LogState,
        config: &LogConfig,
        slices: &mut [IoSlice<'_>],
        batches: &[BatchRef],
        total: u64,
        first_offset: i64,
        last_offset: i64,
        max_ts: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        if s.active()
            .should_roll(config, total, last_offset, max_ts, now_ms)
        {
            self.roll_locked(s, config, first_offset.max(s.log_end_offset), now_ms)?;
        }
        let result = s.active_mut().append(config, slices, batches, total);
        match result {
            Ok(()) => {
                s.log_end_offset = last_offset + 1;
                Ok(())
            }
            Err(e) => {
                // The segment cut the file back; if that failed too, its state is unknown.
                if matches!(e, StorageError::Io { .. }) && !self.active_size_matches(s) {
                    s.offline = true;
                    tracing::error!(partition = %self.tp, error = %e, "log taken offline after a failed write");
                }
                Err(e)
            }
        }
    }

    fn active_size_matches(&self, s: &LogState) -> bool {
        let active = s.active();
        fs::metadata(active.log_path())
            .map(|m| m.len() == active.size())
            .unwrap_or(false)
    }

    fn roll_locked(
        &self,
        s: &mut LogState,
        config: &LogConfig,
        new_base: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        if s.active().size() == 0 {
            return Ok(());
        }
        s.active_mut().make_inactive()?;
        let seg = Segment::create(&self.dir, new_base, "", config, now_ms)?;
        s.segments.insert(new_base, seg);
        s.created_segment_since_flush = true;
        // Producer state as of the new segment's start, so a reload replays one segment at most.
        s.producers.update_map_end_offset(new_base);
        if let Err(e) = s.producers.take_snapshot(false) {
            tracing::warn!(partition = %self.tp, error = %e, "could not write a producer state snapshot");
        }
        tracing::debug!(partition = %self.tp, base_offset = new_base, "rolled segment");
        Ok(())
    }

    /// Roll a new active segment at the log end offset (if the active one is not empty).
    pub fn roll(&self, now_ms: i64) -> Result<(), StorageError> {
        let config = self.config();
        let mut s = self.state.write();
        let leo = s.log_end_offset;
        self.roll_locked(&mut s, &config, leo, now_ms)
    }

    /// Read whole batches from the first one holding `start_offset`, up to `max_bytes` (at
    /// least one batch) and only batches that end below `max_offset` (exclusive; pass the
    /// high watermark for consumers, the log end offset for replicas).
    pub fn read(
        &self,
        start_offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<ReadResult, StorageError> {
        let s = self.state.read();
        let mut result = ReadResult {
            records: Bytes::new(),
            log_start_offset: s.log_start_offset,
            log_end_offset: s.log_end_offset,
            high_watermark: s.high_watermark,
        };
        if start_offset < s.log_start_offset || start_offset > s.log_end_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset: start_offset,
                log_start_offset: s.log_start_offset,
                log_end_offset: s.log_end_offset,
            });
        }
        if start_offset >= s.log_end_offset || start_offset >= max_offset {
            return Ok(result);
        }
        let floor = s
            .segments
            .range(..=start_offset)
            .next_back()
            .map_or(i64::MIN, |(b, _)| *b);
        for seg in s.segments.range(floor..).map(|(_, seg)| seg) {
            let Some(found) = seg.find_batch(start_offset) else {
                continue;
            };
            let mut end = found.position;
            for b in seg.batches(found.position) {
                if b.header.last_offset() >= max_offset {
                    break;
                }
                let size = b.header.size();
                if end > found.position && end - found.position + size > max_bytes {
                    break;
                }
                end += size;
            }
            result.records = seg.slice(found.position, end);
            return Ok(result);
        }
        Ok(result)
    }

    /// ListOffsets by timestamp: the first record with timestamp `>= ts`, or `None`.
    pub fn offset_for_timestamp(
        &self,
        ts: i64,
    ) -> Result<Option<TimestampAndOffset>, StorageError> {
        let s = self.state.read();
        let lso = s.log_start_offset;
        for seg in s.segments.values() {
            if seg.largest_timestamp() < ts || seg.size() == 0 {
                continue;
            }
            let from_offset = seg
                .time_index()
                .lookup(ts)
                .map_or(seg.base_offset(), |e| e.offset)
                .max(lso);
            let from = seg
                .offset_index()
                .lookup(from_offset)
                .map_or(0, |e| e.position as usize);
            for b in seg.batches(from) {
                if b.header.max_timestamp < ts || b.header.last_offset() < lso {
                    continue;
                }
                let (_, recs) =
                    records::decode_batch(&seg.data()[b.position..b.position + b.header.size()])?;
                if let Some(r) = recs.iter().find(|r| r.timestamp >= ts && r.offset >= lso) {
                    return Ok(Some(TimestampAndOffset {
                        timestamp: r.timestamp,
                        offset: r.offset,
                        leader_epoch: (b.header.partition_leader_epoch >= 0)
                            .then_some(b.header.partition_leader_epoch),
                    }));
                }
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP (-3): the first record carrying the log's largest timestamp.
    pub fn max_timestamp_offset(&self) -> Result<Option<TimestampAndOffset>, StorageError> {
        let s = self.state.read();
        let mut best: Option<&Segment> = None;
        for seg in s.segments.values() {
            if seg.max_timestamp() >= 0
                && best.is_none_or(|b| seg.max_timestamp() > b.max_timestamp())
            {
                best = Some(seg);
            }
        }
        let Some(seg) = best else { return Ok(None) };
        let from = seg
            .offset_index()
            .lookup(seg.offset_of_max_timestamp())
            .map_or(0, |e| e.position as usize);
        for b in seg.batches(from) {
            if b.header.max_timestamp != seg.max_timestamp() {
                continue;
            }
            let (_, recs) =
                records::decode_batch(&seg.data()[b.position..b.position + b.header.size()])?;
            if let Some(r) = recs.iter().find(|r| r.timestamp == seg.max_timestamp()) {
                return Ok(Some(TimestampAndOffset {
                    timestamp: r.timestamp,
                    offset: r.offset,
                    leader_epoch: (b.header.partition_leader_epoch >= 0)
                        .then_some(b.header.partition_leader_epoch),
                }));
            }
        }
        Ok(None)
    }

    /// OffsetForLeaderEpoch: `(epoch, end offset)` per Kafka's `endOffsetFor`.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let s = self.state.read();
        s.epochs.end_offset_for_epoch(epoch, s.log_end_offset)
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.state.read().epochs.latest_epoch()
    }

    pub fn epoch_entries(&self) -> Vec<crate::epoch::EpochEntry> {
        self.state.read().epochs.entries().to_vec()
    }

    /// What this partition knows of `producer_id` (idempotent produce).
    pub fn producer_state(
        &self,
        producer_id: i64,
    ) -> Option<crate::producer_state::ProducerStateEntry> {
        self.state.read().producers.producer(producer_id).cloned()
    }

    /// Offsets of the `<offset>.snapshot` producer state files.
    pub fn producer_snapshot_offsets(&self) -> Vec<i64> {
        self.state.read().producers.snapshot_offsets()
    }

    /// fsync everything written so far and advance the recovery point. The fsync runs without
    /// the log lock; callers that arrive while one is running wait and usually find their data
    /// already covered.
    pub fn flush(&self, now_ms: i64) -> Result<(), StorageError> {
        let _one_at_a_time = self.flush_lock.lock();
        let (target, dirty, sync_dir) = {
            let s = self.state.read();
            if s.recovery_point >= s.log_end_offset && !s.segments.values().any(Segment::is_dirty) {
                return Ok(());
            }
            let active_base = s.active().base_offset();
            let dirty: Vec<DirtySegment> = s
                .segments
                .values()
                .filter(|seg| seg.is_dirty())
                .map(|seg| DirtySegment {
                    base: seg.base_offset(),
                    id: seg.id,
                    size: seg.size(),
                    file: seg.file_handle(),
                    indexes: [
                        seg.offset_index().path().to_path_buf(),
                        seg.time_index().path().to_path_buf(),
                    ],
                    active: seg.base_offset() == active_base,
                })
                .collect();
            (s.log_end_offset, dirty, s.created_segment_since_flush)
        };
        for d in &dirty {
            if let Some(f) = &d.file {
                f.sync_data().at_path(&self.dir)?;
            }
            if !d.active {
                // Closed segments' indexes were trimmed at roll; make that durable too.
                for p in &d.indexes {
                    match fs::File::open(p) {
                        Ok(f) => f.sync_all().at_path(p)?,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(StorageError::Io {
                                path: p.clone(),
                                source: e,
                            });
                        }
                    }
                }
            }
        }
        if sync_dir {
            checkpoint::sync_dir(&self.dir)?;
        }
        let mut s = self.state.write();
        let active_base = s.active().base_offset();
        for d in &dirty {
            if let Some(seg) = s.segments.get_mut(&d.base)
                && seg.id == d.id
                && seg.size() == d.size
            {
                seg.mark_clean(d.base != active_base);
            }
        }
        // Only offsets written before the fsync started are covered.
        s.recovery_point = s.recovery_point.max(target.min(s.log_end_offset));
        s.unflushed_messages = 0;
        s.last_flush_ms = now_ms;
        s.created_segment_since_flush = s.created_segment_since_flush && !sync_dir;
        Ok(())
    }

    /// Flush if `flush.ms` has passed since the last flush, or a rolled segment awaits its
    /// fsync (Kafka flushes a segment as soon as it rolls).
    pub fn flush_if_due(&self, now_ms: i64) -> Result<(), StorageError> {
        let due = {
            let s = self.state.read();
            let rolled_pending = s.segments.values().rev().skip(1).any(Segment::is_dirty);
            let unflushed = s.recovery_point < s.log_end_offset;
            rolled_pending
                || (unflushed && now_ms.saturating_sub(s.last_flush_ms) >= s.config.flush_ms)
        };
        if due { self.flush(now_ms) } else { Ok(()) }
    }

    /// Remove everything at or after `target` (whole batches). Used by followers after a
    /// leader change. Returns whether anything was removed.
    pub fn truncate_to(&self, target: i64, now_ms: i64) -> Result<bool, StorageError> {
        let config = self.config();
        let mut s = self.state.write();
        s.check_online(&self.tp)?;
        if target >= s.log_end_offset {
            return Ok(false);
        }
        if target < s.log_start_offset {
            self.reset_locked(&mut s, &config, target, now_ms)?;
            return Ok(true);
        }
        let doomed: Vec<i64> = s.segments.range(target + 1..).map(|(b, _)| *b).collect();
        let keep_first = s.segments.keys().next().is_some_and(|b| *b > target);
        for base in doomed {
            if keep_first && s.segments.len() == 1 {
                break;
            }
            if let Some(seg) = s.segments.remove(&base) {
                seg.delete()?;
            }
        }
        let active = s.active_mut();
        active.truncate_to(&config, target)?;
        let leo = active.next_offset();
        s.log_end_offset = leo;
        s.epochs.truncate_from_end(leo)?;
        s.high_watermark = s.high_watermark.min(leo);
        s.recovery_point = s.recovery_point.min(leo);
        let st = &mut *s;
        st.producers
            .rebuild(&st.segments, st.log_start_offset, leo, false)?;
        tracing::info!(partition = %self.tp, target, log_end_offset = leo, "truncated log");
        Ok(true)
    }

    /// Delete all data and restart the log empty at `offset`.
    pub fn truncate_fully_and_start_at(
        &self,
        offset: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let config = self.config();
        let mut s = self.state.write();
        self.reset_locked(&mut s, &config, offset, now_ms)
    }

    fn reset_locked(
        &self,
        s: &mut LogState,
        config: &LogConfig,
        offset: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        for (_, seg) in std::mem::take(&mut s.segments) {
            seg.delete()?;
        }
        s.segments.insert(
            offset,
            Segment::create(&self.dir, offset, "", config, now_ms)?,
        );
        s.log_start_offset = offset;
        s.log_end_offset = offset;
        s.high_watermark = offset;
        s.recovery_point = offset;
        s.unflushed_messages = 0;
        s.created_segment_since_flush = true;
        s.epochs.clear()?;
        s.producers.truncate_fully_and_start_at(offset)?;
        Ok(())
    }

    /// DeleteRecords: move the log start offset up to `offset` (must not pass the high
    /// watermark) and delete segments wholly below it. Returns the new log start offset.
    pub fn delete_records(&self, offset: i64, now_ms: i64) -> Result<i64, StorageError> {
        let config = self.config();
        let mut s = self.state.write();
        s.check_online(&self.tp)?;
        if offset > s.high_watermark || offset < 0 {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: s.log_start_offset,
                log_end_offset: s.high_watermark,
            });
        }
        if offset > s.log_start_offset {
            s.log_start_offset = offset;
            s.epochs.truncate_from_start(offset)?;
        }
        self.delete_segments_locked(&mut s, &config, now_ms, |_, _, _| false)?;
        Ok(s.log_start_offset)
    }

    /// Forget idle producers (see `ProducerStateManager::remove_expired`); returns how many.
    pub fn remove_expired_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.state
            .write()
            .producers
            .remove_expired(now_ms, expiration_ms)
    }

    /// Apply `retention.ms`, `retention.bytes` and the log start offset: delete closed segments
    /// oldest first (rolling first if the active one has expired too). Returns how many
    /// segments were deleted.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        let config = self.config();
        let mut s = self.state.write();
        if s.offline {
            return Ok(0);
        }
        let delete = config.cleanup_policy.delete;
        let total = s.size() as i64;
        let mut size_excess =
            if delete && config.retention_bytes >= 0 && total >= config.retention_bytes {
                total - config.retention_bytes
            } else {
                -1
            };
        self.delete_segments_locked(&mut s, &config, now_ms, |seg, now, _| {
            let by_time = delete
                && config.retention_ms >= 0
                && now.saturating_sub(seg.largest_timestamp()) > config.retention_ms;
            let by_size = size_excess >= 0 && size_excess - seg.size() as i64 >= 0;
            if by_time || by_size {
                size_excess -= seg.size() as i64;
                true
            } else {
                false
            }
        })
    }

    /// Delete segments from the oldest while `breached` holds or the segment lies wholly below
    /// the log start offset, never past the high watermark.
    fn delete_segments_locked(
        &self,
        s: &mut LogState,
        config: &LogConfig,
        now_ms: i64,
        mut breached: impl FnMut(&Segment, i64, i64) -> bool,
    ) -> Result<usize, StorageError> {
        let bases: Vec<i64> = s.segments.keys().copied().collect();
        let mut doomed = Vec::new();
        for (i, base) in bases.iter().enumerate() {
            let seg = &s.segments[base];
            let next_base = bases.get(i + 1).copied();
            if next_base.is_none() && seg.size() == 0 {
                break;
            }
            let upper = next_base.unwrap_or(s.log_end_offset);
            if s.high_watermark < upper {
                break;
            }
            let below_start = next_base.is_some_and(|n| n <= s.log_start_offset);
            if below_start || breached(seg, now_ms, s.log_start_offset) {
                doomed.push(*base);
            } else {
                break;
            }
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        if doomed.len() == s.segments.len() {
            let leo = s.log_end_offset;
            self.roll_locked(s, config, leo, now_ms)?;
        }
        for base in &doomed {
            if let Some(seg) = s.segments.remove(base) {
                seg.delete()?;
            }
        }
        let first = s
            .segments
            .keys()
            .next()
            .copied()
            .unwrap_or(s.log_end_offset);
        if first > s.log_start_offset {
            s.log_start_offset = first;
            s.epochs.truncate_from_start(first)?;
        }
        s.high_watermark = s.high_watermark.max(s.log_start_offset);
        s.recovery_point = s.recovery_point.max(s.log_start_offset);
        // Snapshots belong to the segments they start; the first kept segment keeps its own.
        s.producers.delete_snapshots_before(first)?;
        tracing::info!(partition = %self.tp, segments = doomed.len(), log_start_offset = s.log_start_offset, "deleted old segments");
        Ok(doomed.len())
    }

    /// Flush and close: trim the active segment's indexes. The log must not be used after.
    pub fn close(&self, now_ms: i64) -> Result<(), StorageError> {
        self.flush(now_ms)?;
        let mut s = self.state.write();
        s.active_mut().make_inactive()?;
        s.active_mut().mark_clean(true);
        // The next open loads this instead of replaying the log.
        s.producers.take_snapshot(true)?;
        s.offline = true;
        Ok(())
    }

    // ---- hooks for the cleaner ----

    /// A consistent view of the closed segments for compaction.
    pub(crate) fn cleaner_view(&self) -> CleanerView {
        let s = self.state.read();
        let active_base = s.active().base_offset();
        let segments = s
            .segments
            .values()
            .filter(|seg| seg.base_offset() < active_base)
            .map(|seg| SegmentView {
                base_offset: seg.base_offset(),
                id: seg.id,
                data: seg.slice(0, seg.size() as usize),
                largest_timestamp: seg.largest_timestamp(),
                next_offset: seg.next_offset(),
            })
            .collect();
        CleanerView {
            config: s.config.clone(),
            segments,
            active_base_offset: active_base,
            log_start_offset: s.log_start_offset,
            high_watermark: s.high_watermark,
            total_bytes: s.size(),
        }
    }

    /// Create an empty `.cleaned` segment to write a cleaned group into.
    pub(crate) fn create_cleaned_segment(
        &self,
        base_offset: i64,
        now_ms: i64,
    ) -> Result<Segment, StorageError> {
        let config = self.config();
        for ext in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            let p = segment::segment_path(&self.dir, base_offset, ext, CLEANED_SUFFIX);
            if p.exists() {
                fs::remove_file(&p).at_path(&p)?;
            }
        }
        Segment::create(&self.dir, base_offset, CLEANED_SUFFIX, &config, now_ms)
    }

    /// Replace the segments `old` (base offset and id, as seen in a [`CleanerView`]) with the
    /// cleaned segment, crash-safely: `.cleaned` → `.swap`, old files → `.deleted`, `.swap` →
    /// live. Returns false (and discards `cleaned`) if any old segment changed meanwhile.
    pub(crate) fn replace_segments(
        &self,
        old: &[(i64, u64)],
        mut cleaned: Segment,
    ) -> Result<bool, StorageError> {
        let mut s = self.state.write();
        let active_base = s.active().base_offset();
        let unchanged = old.iter().all(|(base, id)| {
            *base < active_base && s.segments.get(base).is_some_and(|seg| seg.id == *id)
        });
        if !unchanged || s.offline {
            drop(s);
            cleaned.delete()?;
            return Ok(false);
        }
        cleaned.make_inactive()?;
        cleaned.flush()?;
        cleaned.mark_clean(true);
        cleaned.change_suffix(SWAP_SUFFIX)?;
        checkpoint::sync_dir(&self.dir)?;
        for (base, _) in old {
            if let Some(seg) = s.segments.remove(base) {
                seg.delete()?;
            }
        }
        cleaned.change_suffix("")?;
        checkpoint::sync_dir(&self.dir)?;
        s.segments.insert(cleaned.base_offset(), cleaned);
        Ok(true)
    }
}

/// A segment with unsynced data, as collected for a flush.
struct DirtySegment {
    base: i64,
    id: u64,
    size: u64,
    file: Option<Arc<fs::File>>,
    indexes: [PathBuf; 2],
    active: bool,
}

/// What the cleaner sees of a log.
pub(crate) struct CleanerView {
    pub config: Arc<LogConfig>,
    pub segments: Vec<SegmentView>,
    pub active_base_offset: i64,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub total_bytes: u64,
}

pub(crate) struct SegmentView {
    pub base_offset: i64,
    pub id: u64,
    pub data: Bytes,
    pub largest_timestamp: i64,
    pub next_offset: i64,
}

/// The file name's base offset and suffix, if it is a segment file.
fn parse_segment_name(name: &str) -> Option<(i64, &'static str, &'static str)> {
    let (stem, suffix) = [DELETED_SUFFIX, CLEANED_SUFFIX, SWAP_SUFFIX]
        .iter()
        .find_map(|s| name.strip_suffix(s).map(|stem| (stem, *s)))
        .unwrap_or((name, ""));
    let (digits, ext) = [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX]
        .iter()
        .find_map(|e| stem.strip_suffix(e).map(|d| (d, *e)))?;
    if digits.len() != 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, ext, suffix))
}

fn remove(path: &Path) -> Result<(), StorageError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Load a partition directory: finish or discard interrupted compactions, open segments,
/// recover after an unclean stop, and restore offsets and the epoch cache.
fn load(
    dir: &Path,
    tp: &TopicPartition,
    config: Arc<LogConfig>,
    params: LoadParams,
) -> Result<LogState, StorageError> {
    let now = params.now_ms;
    let mut live_logs = Vec::new();
    let mut index_files = Vec::new();
    let mut swaps = Vec::new();
    for entry in fs::read_dir(dir).at_path(dir)? {
        let entry = entry.at_path(dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.ends_with(".tmp") || name.ends_with(".truncating") {
            remove(&path)?;
            continue;
        }
        let Some((base, ext, suffix)) = parse_segment_name(&name) else {
            continue;
        };
        match suffix {
            DELETED_SUFFIX | CLEANED_SUFFIX => remove(&path)?,
            SWAP_SUFFIX => {
                if ext == LOG_SUFFIX {
                    swaps.push(base);
                }
            }
            _ if ext == LOG_SUFFIX => live_logs.push(base),
            _ => index_files.push((base, path)),
        }
    }
    // A `.swap` segment is a finished compaction that was not fully installed: it replaces
    // every live segment in its offset range.
    for base in swaps {
        let mut swap = Segment::open(dir, base, SWAP_SUFFIX, &config, false, now)?;
        swap.load_next_offset();
        let end = swap.next_offset().max(base + 1);
        for b in live_logs.iter().copied().filter(|b| *b >= base && *b < end) {
            for ext in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                remove(&segment::segment_path(dir, b, ext, ""))?;
            }
        }
        live_logs.retain(|b| *b < base || *b >= end);
        swap.change_suffix("")?;
        live_logs.push(base);
        tracing::info!(partition = %tp, base_offset = base, "completed an interrupted segment swap");
    }
    for (base, path) in index_files {
        if !live_logs.contains(&base) {
            remove(&path)?;
        }
    }
    live_logs.sort_unstable();
    live_logs.dedup();

    let mut epochs = LeaderEpochCache::load(dir)?;
    let mut segments = BTreeMap::new();
    let recover_from = if params.clean_shutdown {
        i64::MAX
    } else {
        // Recover from the segment holding the recovery point.
        live_logs
            .iter()
            .copied()
            .filter(|b| *b <= params.recovery_point)
            .max()
            .unwrap_or(i64::MIN)
    };
    let last = live_logs.last().copied();
    let mut recovered_any = false;
    for base in live_logs.iter().copied() {
        let active = Some(base) == last;
        let mut seg = Segment::open(dir, base, "", &config, active, now)?;
        let must_recover = base >= recover_from
            || !seg.offset_index().sanity_check()
            || !seg.time_index().sanity_check();
        if must_recover {
            recovered_any = true;
            let cut = seg.recover(&config, Some(&mut epochs))?;
            if !active {
                seg.make_inactive()?;
            }
            if cut > 0 {
                tracing::warn!(partition = %tp, base_offset = base, bytes = cut, "truncated a torn or corrupt segment tail");
                if !active {
                    // Everything after corruption is suspect: drop later segments.
                    seg.make_active(&config)?;
                    segments.insert(base, seg);
                    for later in live_logs.iter().copied().filter(|b| *b > base) {
                        for ext in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                            remove(&segment::segment_path(dir, later, ext, ""))?;
                        }
                    }
                    break;
                }
            }
        } else {
            seg.load_next_offset();
        }
        segments.insert(base, seg);
    }
    if segments.is_empty() {
        let base = params.log_start_offset.max(0);
        segments.insert(base, Segment::create(dir, base, "", &config, now)?);
    }
    let mut log_end_offset = segments
        .values()
        .next_back()
        .map_or(0, Segment::next_offset);
    if log_end_offset < params.log_start_offset {
        // The checkpointed start is beyond the data (e.g. the tail was lost): start there.
        for (_, seg) in std::mem::take(&mut segments) {
            seg.delete()?;
        }
        segments.insert(
            params.log_start_offset,
            Segment::create(dir, params.log_start_offset, "", &config, now)?,
        );
        epochs.clear()?;
        log_end_offset = params.log_start_offset;
    }
    let first_base = *segments.keys().next().unwrap_or(&0);
    let log_start_offset = params.log_start_offset.max(first_base);
    epochs.truncate_from_end(log_end_offset)?;
    epochs.truncate_from_start(log_start_offset)?;
    if recovered_any {
        // What recovery kept is only durable once synced; then it is the new recovery point.
        let active_base = segments.keys().next_back().copied();
        for (base, seg) in segments.iter_mut() {
            if seg.is_dirty() {
                seg.flush()?;
                seg.mark_clean(Some(*base) != active_base);
            }
        }
        checkpoint::sync_dir(dir)?;
    }
    let mut producers = ProducerStateManager::new(dir)?;
    let bases: Vec<i64> = segments.keys().copied().collect();
    producers.remove_stray_snapshots(&bases)?;
    producers.rebuild(
        &segments,
        log_start_offset,
        log_end_offset,
        params.clean_shutdown,
    )?;
    // Without a checkpointed high watermark nothing is known to be replicated (Kafka: 0).
    let high_watermark = params
        .high_watermark
        .unwrap_or(log_start_offset)
        .clamp(log_start_offset, log_end_offset);
    Ok(LogState {
        config,
        segments,
        log_start_offset,
        log_end_offset,
        high_watermark,
        recovery_point: log_end_offset,
        unflushed_messages: 0,
        last_flush_ms: now,
        epochs,
        offline: false,
        created_segment_since_flush: false,
        producers,
    })
}

/// Batch headers of a whole record set, for callers (the broker) that need producer ids and
/// sequences before appending.
pub fn batch_headers(records: &[u8]) -> impl Iterator<Item = BatchHeader> + '_ {
    batch::StoredBatches::new(records, 0).map(|b| b.header)
}
