//! Key-based log compaction (Kafka's log cleaner).
//!
//! A pass works from a snapshot of the log's closed segments ([`Log::cleaner_view`]); the
//! active segment is never touched. It:
//!
//! 1. builds an offset map (key → latest offset) over the dirty section, from the first dirty
//!    offset (the `cleaner-offset-checkpoint` value) up to the first uncleanable offset, stopping
//!    early if the map is full;
//! 2. rewrites every closed segment below the map's end, the already-clean prefix included
//!    (newer dirty records can supersede clean ones), in groups that fit in one segment;
//! 3. swaps each group's cleaned segment in with [`Log::replace_segments`], which is crash-safe
//!    (`.cleaned` → `.swap` → live) and refuses if the group changed meanwhile.
//!
//! Offsets are never renumbered: records keep their offsets, rewritten batches keep their base
//! offset and `lastOffsetDelta`, so consumers, followers and producer state see the same offset
//! space as before. Tombstones follow KIP-534: the first pass that keeps one stamps its batch
//! with a delete horizon (`now + delete.retention.ms`) and a pass after the horizon drops it.

use std::collections::HashMap;
use std::io::IoSlice;
use std::ops::Range;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;

use crate::batch::{
    self, BatchHeader, BatchRef, CONTROL_FLAG, CRC, Compression, MAX_TIMESTAMP, StoredBatches,
    TIMESTAMP_TYPE_MASK, TRANSACTIONAL_FLAG, TimestampType,
};
use crate::config::LogConfig;
use crate::error::{IoContext, StorageError};
use crate::log::{CleanerView, Log, SegmentView};
use crate::records::{self, BatchSpec, Record};
use crate::segment::Segment;

/// Cleaned batches are written to the new segment in chunks of about this size, so a group's
/// output never has to be held in memory whole.
const WRITE_CHUNK: usize = 1 << 20;

/// What one cleaning pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Source segments replaced by cleaned ones.
    pub segments_read: usize,
    /// Cleaned segments swapped in.
    pub segments_written: usize,
    /// Records decoded from the replaced segments.
    pub records_read: u64,
    /// Of those, records written to the cleaned segments.
    pub records_kept: u64,
    /// Tombstones dropped because their batch's delete horizon had passed.
    pub tombstones_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// The first dirty offset this pass started from.
    pub first_dirty_offset: i64,
    /// Everything below this offset is now clean: the next first dirty offset to checkpoint.
    pub end_offset: i64,
}

impl CleanStats {
    fn add(&mut self, group: &CleanStats) {
        self.segments_read += group.segments_read;
        self.segments_written += group.segments_written;
        self.records_read += group.records_read;
        self.records_kept += group.records_kept;
        self.tombstones_removed += group.tombstones_removed;
        self.bytes_before += group.bytes_before;
        self.bytes_after += group.bytes_after;
    }
}

/// The cleanable range of a log and how dirty it is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cleanable {
    pub first_dirty: i64,
    /// Exclusive end of the cleanable range: a segment boundary (the high watermark is rounded
    /// down to one), or `first_dirty` itself when nothing is cleanable.
    pub first_uncleanable: i64,
    /// Cleanable bytes over clean plus cleanable bytes.
    pub dirty_ratio: f64,
    /// Size of the segments in `[first_dirty, first_uncleanable)`, counting the whole segment
    /// that holds `first_dirty`.
    pub cleanable_bytes: u64,
}

/// Dirty ratio and cleanable range of a log given its current first-dirty offset (from the
/// cleaner checkpoint; None = log start). None if the log holds no data.
pub fn cleanable(log: &Log, first_dirty: Option<i64>, now_ms: i64) -> Option<Cleanable> {
    cleanable_in(&log.cleaner_view(), first_dirty, now_ms)
}

/// Whether the log should be cleaned now: its policy includes `compact`, its dirty ratio is
/// strictly above `min.cleanable.dirty.ratio`, and there is something to clean.
pub fn needs_cleaning(log: &Log, first_dirty: Option<i64>, now_ms: i64) -> bool {
    let view = log.cleaner_view();
    view.config.cleanup_policy.compact
        && cleanable_in(&view, first_dirty, now_ms).is_some_and(|c| {
            c.cleanable_bytes > 0 && c.dirty_ratio > view.config.min_cleanable_dirty_ratio
        })
}

/// Clean the log once. `stats.end_offset` is the new first-dirty offset to checkpoint. The
/// offset map holds at most about `max_map_entries` keys (at least one batch's worth, so every
/// pass makes progress); a dirty section with more keys is cleaned over several passes.
pub fn clean_log(
    log: &Log,
    first_dirty: Option<i64>,
    now_ms: i64,
    max_map_entries: usize,
) -> Result<CleanStats, StorageError> {
    let view = log.cleaner_view();
    let start = resolve_first_dirty(&view, first_dirty);
    let mut stats = CleanStats {
        first_dirty_offset: start,
        end_offset: start,
        ..CleanStats::default()
    };
    // Compacting a log that is not meant to be compacted would destroy data; refuse quietly.
    if !view.config.cleanup_policy.compact {
        return Ok(stats);
    }
    let Some(range) = cleanable_in(&view, first_dirty, now_ms) else {
        return Ok(stats);
    };
    if range.first_uncleanable <= range.first_dirty {
        return Ok(stats);
    }
    let map = build_offset_map(
        &view,
        range.first_dirty,
        range.first_uncleanable,
        max_map_entries,
    )?;
    if map.end_offset <= range.first_dirty {
        return Ok(stats);
    }
    let to_clean = view
        .segments
        .iter()
        .take_while(|s| s.base_offset < map.end_offset)
        .count();
    let cleaner = Cleaner {
        log,
        config: &view.config,
        map: &map.latest,
        end_offset: map.end_offset,
        producer_last_offsets: producer_last_offsets(&view),
        now_ms,
    };
    for group in group_segments(&view.segments[..to_clean], &view.config) {
        let segments = &view.segments[group];
        match cleaner.clean_group(segments)? {
            Some(group_stats) => stats.add(&group_stats),
            None => {
                // The log changed under us (retention, truncation). Groups already swapped in
                // were cleaned against the whole map, so the dirty records they held are clean.
                stats.end_offset = segments[0].base_offset.max(range.first_dirty);
                tracing::debug!(partition = %log.topic_partition(), base_offset = segments[0].base_offset, "log changed during cleaning; stopping this pass");
                return Ok(stats);
            }
        }
    }
    stats.end_offset = map.end_offset;
    tracing::debug!(partition = %log.topic_partition(), ?stats, "cleaned log");
    Ok(stats)
}

/// The checkpointed first dirty offset, or the log start if there is none or it no longer lies
/// within the closed part of the log (the log was truncated or its start moved past it).
fn resolve_first_dirty(view: &CleanerView, first_dirty: Option<i64>) -> i64 {
    match first_dirty {
        Some(o) if o >= view.log_start_offset && o <= view.active_base_offset => o,
        _ => view.log_start_offset,
    }
}

/// Where closed segment `i` ends: the next segment's base offset. Gaps between segments count
/// as part of the earlier one, so the segments tile the offset space.
fn segment_end(view: &CleanerView, i: usize) -> i64 {
    view.segments
        .get(i + 1)
        .map_or(view.active_base_offset, |s| s.base_offset)
}

fn cleanable_in(view: &CleanerView, first_dirty: Option<i64>, now_ms: i64) -> Option<Cleanable> {
    if view.total_bytes == 0 {
        return None;
    }
    let first_dirty = resolve_first_dirty(view, first_dirty);
    let segments = &view.segments;
    // Records at or above the high watermark may still be truncated away, so they are not
    // cleaned. Only whole segments are cleaned, so the bound is the base of the segment that
    // holds the high watermark.
    let hw_bound = if view.high_watermark >= view.active_base_offset {
        view.active_base_offset
    } else {
        segments
            .iter()
            .rev()
            .map(|s| s.base_offset)
            .find(|b| *b <= view.high_watermark)
            .unwrap_or(view.high_watermark)
    };
    // min.compaction.lag.ms: the first dirty segment holding a record younger than the lag,
    // and everything after it, stays as written.
    let lag = view.config.min_compaction_lag_ms;
    let lag_bound = if lag > 0 {
        let young_after = now_ms.saturating_sub(lag);
        (0..segments.len())
            .filter(|&i| segment_end(view, i) > first_dirty)
            .find(|&i| segments[i].largest_timestamp > young_after)
            .map(|i| segments[i].base_offset)
    } else {
        None
    };
    let first_uncleanable = view
        .active_base_offset
        .min(hw_bound)
        .min(lag_bound.unwrap_or(i64::MAX))
        .max(first_dirty);
    let (mut clean_bytes, mut cleanable_bytes) = (0u64, 0u64);
    for (i, s) in segments.iter().enumerate() {
        let size = s.data.len() as u64;
        if segment_end(view, i) <= first_dirty {
            clean_bytes += size;
        } else if first_dirty < first_uncleanable && s.base_offset < first_uncleanable {
            cleanable_bytes += size;
        }
    }
    let total = clean_bytes + cleanable_bytes;
    let dirty_ratio = if total == 0 {
        0.0
    } else {
        cleanable_bytes as f64 / total as f64
    };
    Some(Cleanable {
        first_dirty,
        first_uncleanable,
        dirty_ratio,
        cleanable_bytes,
    })
}

/// Latest offset of every key in the mapped part of the dirty section.
struct OffsetMap {
    latest: HashMap<Bytes, i64>,
    /// Exclusive end of the mapped range: records at or above it are left as they are.
    end_offset: i64,
}

/// Map keys to their latest offset over `[first_dirty, first_uncleanable)`. When the map is
/// full it stops at the last complete segment (or, inside the first segment, the last complete
/// batch), so the next pass resumes from a clean boundary.
fn build_offset_map(
    view: &CleanerView,
    first_dirty: i64,
    first_uncleanable: i64,
    max_entries: usize,
) -> Result<OffsetMap, StorageError> {
    let mut latest: HashMap<Bytes, i64> = HashMap::new();
    // Ends of the last fully mapped segment and batch.
    let (mut mapped_segments_end, mut mapped_batches_end) = (first_dirty, first_dirty);
    for (i, seg) in view.segments.iter().enumerate() {
        let end = segment_end(view, i);
        if end <= first_dirty {
            continue;
        }
        if seg.base_offset >= first_uncleanable {
            break;
        }
        for b in StoredBatches::new(&seg.data, 0) {
            let h = &b.header;
            if h.last_offset() < first_dirty {
                continue;
            }
            // Control batches (transaction markers) carry no user keys. Aborted transactional
            // data is not yet told apart from committed data: that needs the transaction index,
            // which comes with transaction support.
            if !h.is_control() {
                let (_, recs) = records::decode_batch(batch_bytes(seg, &b))?;
                for r in recs {
                    let Some(key) = r.key else { continue };
                    if r.offset < first_dirty {
                        continue;
                    }
                    if let Some(offset) = latest.get_mut(&key[..]) {
                        *offset = r.offset;
                        continue;
                    }
                    // Entries set from a partly mapped batch or segment point past the end
                    // offset, at newer records of the same key that stay; older records of
                    // that key are rightly dropped, so leaving them in the map is harmless.
                    if latest.len() >= max_entries && mapped_batches_end > first_dirty {
                        let end_offset = if mapped_segments_end > first_dirty {
                            mapped_segments_end
                        } else {
                            mapped_batches_end
                        };
                        return Ok(OffsetMap { latest, end_offset });
                    }
                    // Copy the key: the decoded record borrows the whole decompressed batch,
                    // which the map must not keep alive.
                    latest.insert(Bytes::copy_from_slice(&key), r.offset);
                }
            }
            mapped_batches_end = h.next_offset();
        }
        mapped_segments_end = end;
        mapped_batches_end = end;
    }
    Ok(OffsetMap {
        latest,
        end_offset: mapped_segments_end,
    })
}

/// Last offset of each producer's last data batch below the high watermark. A producer's last
/// batch is kept (emptied if need be) so its id, epoch and sequence survive for idempotence.
/// Only the closed segments are scanned: a producer whose newer batch is in the active segment
/// keeps one extra empty batch, which is harmless. Batches at or above the high watermark may
/// be truncated away, so they do not count as anyone's last.
fn producer_last_offsets(view: &CleanerView) -> HashMap<i64, i64> {
    let mut last = HashMap::new();
    for seg in &view.segments {
        for b in StoredBatches::new(&seg.data, 0) {
            let h = &b.header;
            if h.last_offset() >= view.high_watermark {
                return last;
            }
            if h.producer_id >= 0 && !h.is_control() {
                last.insert(h.producer_id, h.last_offset());
            }
        }
    }
    last
}

/// Split consecutive segments into groups that each fit in one segment: total size at most
/// `segment.bytes` and an offset span that fits the indexes' 32-bit relative offsets.
fn group_segments(segments: &[SegmentView], config: &LogConfig) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    while start < segments.len() {
        let base = segments[start].base_offset;
        let mut size = segments[start].data.len() as u64;
        let mut end = start + 1;
        while let Some(next) = segments.get(end) {
            let next_size = next.data.len() as u64;
            let last_offset = next.next_offset.max(next.base_offset + 1) - 1;
            if size + next_size > config.segment_bytes || last_offset - base > i32::MAX as i64 {
                break;
            }
            size += next_size;
            end += 1;
        }
        groups.push(start..end);
        start = end;
    }
    groups
}

fn batch_bytes<'a>(seg: &'a SegmentView, b: &BatchRef) -> &'a [u8] {
    &seg.data[b.position..b.position + b.header.size()]
}

/// What cleaning does to one stored batch.
enum Outcome {
    /// Copy the original bytes unchanged.
    Keep,
    /// Write this re-encoded batch instead.
    Rewrite(Bytes),
    Drop,
}

struct Cleaner<'a> {
    log: &'a Log,
    config: &'a LogConfig,
    map: &'a HashMap<Bytes, i64>,
    end_offset: i64,
    producer_last_offsets: HashMap<i64, i64>,
    now_ms: i64,
}

impl Cleaner<'_> {
    /// Clean one group into a new segment and swap it in. None if the log changed meanwhile.
    fn clean_group(&self, segments: &[SegmentView]) -> Result<Option<CleanStats>, StorageError> {
        let mut cleaned = self
            .log
            .create_cleaned_segment(segments[0].base_offset, self.now_ms)?;
        let mut stats = CleanStats::default();
        if let Err(e) = self.write_group(&mut cleaned, segments, &mut stats) {
            // Best effort: a leftover `.cleaned` file is also removed by the next pass or load.
            if let Err(del) = cleaned.delete() {
                tracing::warn!(error = %del, "could not remove a partly written cleaned segment");
            }
            return Err(e);
        }
        stats.bytes_after = cleaned.size();
        stats.bytes_before = segments.iter().map(|s| s.data.len() as u64).sum();
        stats.segments_read = segments.len();
        stats.segments_written = 1;
        let old: Vec<(i64, u64)> = segments.iter().map(|s| (s.base_offset, s.id)).collect();
        Ok(self.log.replace_segments(&old, cleaned)?.then_some(stats))
    }

    fn write_group(
        &self,
        dest: &mut Segment,
        segments: &[SegmentView],
        stats: &mut CleanStats,
    ) -> Result<(), StorageError> {
        let mut out: Vec<u8> = Vec::new();
        let mut refs: Vec<BatchRef> = Vec::new();
        for seg in segments {
            for b in StoredBatches::new(&seg.data, 0) {
                let raw = batch_bytes(seg, &b);
                match self.clean_batch(raw, &b.header, seg.next_offset, stats)? {
                    Outcome::Keep => {
                        refs.push(BatchRef {
                            position: out.len(),
                            header: b.header,
                        });
                        out.extend_from_slice(raw);
                    }
                    Outcome::Rewrite(bytes) => {
                        let header = BatchHeader::parse(&bytes)?;
                        refs.push(BatchRef {
                            position: out.len(),
                            header,
                        });
                        out.extend_from_slice(&bytes);
                    }
                    Outcome::Drop => {}
                }
                if out.len() >= WRITE_CHUNK {
                    self.write_chunk(dest, &mut out, &mut refs)?;
                }
            }
        }
        self.write_chunk(dest, &mut out, &mut refs)?;
        // The cleaned segment stands in for the old ones in time-based retention and the
        // compaction lag, which fall back to the file time when no record has a timestamp.
        let newest = segments
            .iter()
            .map(|s| s.largest_timestamp)
            .max()
            .unwrap_or(self.now_ms);
        if newest >= 0 {
            dest.set_created_ms(newest);
            let path = dest.log_path();
            std::fs::File::open(path)
                .and_then(|f| f.set_modified(UNIX_EPOCH + Duration::from_millis(newest as u64)))
                .at_path(path)?;
        }
        Ok(())
    }

    fn write_chunk(
        &self,
        dest: &mut Segment,
        out: &mut Vec<u8>,
        refs: &mut Vec<BatchRef>,
    ) -> Result<(), StorageError> {
        if out.is_empty() {
            return Ok(());
        }
        dest.append(
            self.config,
            &mut [IoSlice::new(out)],
            refs,
            out.len() as u64,
        )?;
        out.clear();
        refs.clear();
        Ok(())
    }

    /// Decide one batch's fate. `segment_next_offset` is the end of the batch's source segment.
    fn clean_batch(
        &self,
        raw: &[u8],
        h: &BatchHeader,
        segment_next_offset: i64,
        stats: &mut CleanStats,
    ) -> Result<Outcome, StorageError> {
        if h.base_offset >= self.end_offset {
            return Ok(Outcome::Keep);
        }
        // Transaction markers stay until transactions are supported: dropping one needs the
        // transaction's state, which the cleaner does not track yet.
        if h.is_control() {
            return Ok(Outcome::Keep);
        }
        let (_, recs) = records::decode_batch(raw)?;
        let total = recs.len();
        stats.records_read += total as u64;
        let retain_deletes = h
            .delete_horizon_ms()
            .is_none_or(|horizon| self.now_ms < horizon);
        let mut kept: Vec<Record> = Vec::with_capacity(total);
        for r in recs {
            match self.retain(&r, retain_deletes) {
                Retain::Yes => kept.push(r),
                Retain::Superseded => {}
                Retain::ExpiredTombstone => stats.tombstones_removed += 1,
            }
        }
        stats.records_kept += kept.len() as u64;

        if kept.is_empty() {
            // An emptied batch still matters if it is its producer's last (its id, epoch and
            // sequence restore idempotence state) or its segment's last: keeping it keeps the
            // cleaned segment's next offset equal to the old segments', which the log end
            // offset and the `.swap` crash recovery (replace live segments up to the swap's
            // next offset) rely on.
            let producers_last = h.producer_id >= 0
                && self.producer_last_offsets.get(&h.producer_id) == Some(&h.last_offset());
            let segments_last = h.next_offset() == segment_next_offset;
            if !(producers_last || segments_last) {
                return Ok(Outcome::Drop);
            }
            if h.records_count == 0 {
                return Ok(Outcome::Keep);
            }
            return Ok(Outcome::Rewrite(empty_batch(h)?));
        }

        // KIP-534: the first pass that keeps a tombstone starts its delete.retention.ms clock.
        let set_horizon = h.delete_horizon_ms().is_none() && kept.iter().any(Record::is_tombstone);
        if kept.len() == total && !set_horizon {
            return Ok(Outcome::Keep);
        }
        let compression = h.compression().ok_or(StorageError::corrupt(
            batch::ATTRIBUTES,
            "unknown compression codec",
        ))?;
        let delete_horizon_ms = if set_horizon {
            Some(self.now_ms.saturating_add(self.config.delete_retention_ms))
        } else {
            h.delete_horizon_ms()
        };
        let spec = BatchSpec {
            compression,
            delete_horizon_ms,
            log_append_time: (h.timestamp_type() == TimestampType::LogAppendTime)
                .then_some(h.max_timestamp),
            ..header_spec(h)
        };
        Ok(Outcome::Rewrite(records::encode_batch(&spec, &kept)?))
    }

    fn retain(&self, r: &Record, retain_deletes: bool) -> Retain {
        if r.offset >= self.end_offset {
            return Retain::Yes;
        }
        // A record without a key cannot be compacted; Kafka drops such records when cleaning.
        let Some(key) = &r.key else {
            return Retain::Superseded;
        };
        if self
            .map
            .get(&key[..])
            .is_some_and(|&latest| r.offset < latest)
        {
            return Retain::Superseded;
        }
        if r.value.is_none() && !retain_deletes {
            return Retain::ExpiredTombstone;
        }
        Retain::Yes
    }
}

enum Retain {
    Yes,
    /// A newer record has the same key, or the record has no key.
    Superseded,
    /// The latest record for its key is a tombstone whose delete horizon has passed.
    ExpiredTombstone,
}

/// The fields of `h` that a rewritten batch keeps, with no compression, horizon or append time.
fn header_spec(h: &BatchHeader) -> BatchSpec {
    BatchSpec {
        base_offset: h.base_offset,
        partition_leader_epoch: h.partition_leader_epoch,
        attributes: h.attributes & (TIMESTAMP_TYPE_MASK | TRANSACTIONAL_FLAG | CONTROL_FLAG),
        compression: Compression::None,
        producer_id: h.producer_id,
        producer_epoch: h.producer_epoch,
        base_sequence: h.base_sequence,
        last_offset_delta: Some(h.last_offset_delta),
        delete_horizon_ms: None,
        log_append_time: None,
    }
}

/// A record-less copy of `h`'s batch: Kafka's empty batch header, uncompressed, no delete
/// horizon, base timestamp -1, and the original max timestamp so time lookups still see it.
fn empty_batch(h: &BatchHeader) -> Result<Bytes, StorageError> {
    let mut bytes = records::encode_batch(&header_spec(h), &[])?.to_vec();
    bytes[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&h.max_timestamp.to_be_bytes());
    let crc = batch::compute_crc(&bytes);
    bytes[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(Bytes::from(bytes))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::checkpoint::TopicPartition;
    use crate::log::LoadParams;
    use crate::records::simple_batch;

    const NOW: i64 = 1_700_000_000_000;
    const DAY: i64 = 24 * 60 * 60 * 1000;
    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn compact_config(overrides: &[(&str, &str)]) -> Arc<LogConfig> {
        let config = LogConfig::default()
            .with_overrides([("cleanup.policy", "compact")])
            .unwrap();
        Arc::new(config.with_overrides(overrides.iter().copied()).unwrap())
    }

    /// Open (or reopen) a log as a single-replica leader would: everything is replicated, so
    /// the high watermark is the log end.
    fn open(dir: &Path, config: Arc<LogConfig>) -> Log {
        let log = Log::open(
            dir,
            TopicPartition::new("t", 0),
            config,
            LoadParams::new_log(NOW),
        )
        .unwrap();
        log.set_high_watermark(log.log_end_offset());
        log
    }

    type Kv<'a> = (Option<&'a str>, Option<&'a str>);
    type RawKv<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    fn append_with(log: &Log, ts: i64, codec: Compression, kvs: &[Kv]) -> i64 {
        let kvs: Vec<RawKv> = kvs
            .iter()
            .map(|(k, v)| (k.map(str::as_bytes), v.map(str::as_bytes)))
            .collect();
        // As a follower: these logs hold keyless records on purpose (a topic switched to
        // compaction keeps its old ones), which a leader append would now refuse.
        log.append_as_follower(&simple_batch(log.log_end_offset(), ts, codec, &kvs), ts)
            .unwrap()
            .first_offset
    }

    fn append(log: &Log, kvs: &[Kv]) -> i64 {
        append_with(log, NOW, Compression::None, kvs)
    }

    /// Every batch from the log start to the log end, decoded.
    fn read_batches(log: &Log) -> Vec<(BatchHeader, Vec<Record>)> {
        let (mut offset, end) = (log.log_start_offset(), log.log_end_offset());
        let mut out = Vec::new();
        while offset < end {
            let read = log.read(offset, 1 << 30, end).unwrap();
            if read.records.is_empty() {
                break;
            }
            for b in StoredBatches::new(&read.records, 0) {
                let (h, recs) =
                    records::decode_batch(&read.records[b.position..b.position + b.header.size()])
                        .unwrap();
                assert!(
                    h.base_offset >= offset,
                    "batches go backwards at {}",
                    h.base_offset
                );
                offset = h.next_offset();
                out.push((h, recs));
            }
        }
        out
    }

    type Visible = Vec<(i64, Option<String>, Option<String>)>;

    /// (offset, key, value) of every record a consumer reading from the log start sees.
    fn visible(log: &Log) -> Visible {
        let text = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8(b.to_vec()).unwrap());
        let out: Visible = read_batches(log)
            .iter()
            .flat_map(|(_, recs)| {
                recs.iter()
                    .map(|r| (r.offset, text(&r.key), text(&r.value)))
            })
            .collect();
        assert!(
            out.windows(2).all(|w| w[0].0 < w[1].0),
            "offsets must strictly increase: {out:?}"
        );
        out
    }

    fn rec(offset: i64, key: &str, value: Option<&str>) -> (i64, Option<String>, Option<String>) {
        (offset, Some(key.to_string()), value.map(str::to_string))
    }

    fn batch_at(log: &Log, base: i64) -> (BatchHeader, Vec<Record>) {
        read_batches(log)
            .into_iter()
            .find(|(h, _)| h.base_offset == base)
            .unwrap()
    }

    #[test]
    fn keeps_the_latest_value_per_key_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), compact_config(&[]));
        append(
            &log,
            &[
                (Some("k1"), Some("a")),
                (Some("k2"), Some("b")),
                (Some("k3"), Some("c")),
            ],
        );
        log.roll(NOW).unwrap();
        append(&log, &[(Some("k1"), Some("a2")), (None, Some("no key"))]);
        log.roll(NOW).unwrap();
        append(&log, &[(Some("k2"), Some("b2")), (Some("k1"), Some("a3"))]);
        log.roll(NOW).unwrap();
        assert_eq!(
            append(&log, &[(Some("k3"), Some("c2")), (Some("k1"), Some("a4"))]),
            7
        );
        log.set_high_watermark(log.log_end_offset());
        let active_before = log.read(7, 1 << 30, 9).unwrap().records;
        let untouched_before = log.read(5, 1, 7).unwrap().records;
        let closed_bytes = log.size_in_bytes() - active_before.len() as u64;

        let c = cleanable(&log, None, NOW).unwrap();
        assert_eq!(
            c,
            Cleanable {
                first_dirty: 0,
                first_uncleanable: 7,
                dirty_ratio: 1.0,
                cleanable_bytes: closed_bytes
            }
        );
        assert!(needs_cleaning(&log, None, NOW));

        let stats = clean_log(&log, None, NOW, 1000).unwrap();
        assert_eq!((stats.first_dirty_offset, stats.end_offset), (0, 7));
        assert_eq!((stats.segments_read, stats.segments_written), (3, 1));
        assert_eq!(
            (
                stats.records_read,
                stats.records_kept,
                stats.tombstones_removed
            ),
            (7, 3, 0)
        );
        assert_eq!(stats.bytes_before, closed_bytes);
        assert!(stats.bytes_after < stats.bytes_before);
        assert_eq!(
            visible(&log),
            vec![
                rec(2, "k3", Some("c")),
                rec(5, "k2", Some("b2")),
                rec(6, "k1", Some("a3")),
                rec(7, "k3", Some("c2")),
                rec(8, "k1", Some("a4")),
            ]
        );
        // The three small segments became one; the active segment is byte-for-byte unchanged.
        assert_eq!(log.segment_base_offsets(), vec![0, 7]);
        assert_eq!(log.read(7, 1 << 30, 9).unwrap().records, active_before);
        assert_eq!(log.log_end_offset(), 9);
        // A batch that lost nothing is copied verbatim.
        assert_eq!(log.read(5, 1, 7).unwrap().records, untouched_before);
        // A batch rewritten to fewer records keeps its offset range.
        let (h, recs) = batch_at(&log, 0);
        assert_eq!(
            (h.last_offset(), h.records_count, recs[0].timestamp),
            (2, 1, NOW)
        );
        // The emptied last batch of its segment stays as a bare header covering 3..=4.
        let (h, recs) = batch_at(&log, 3);
        assert_eq!(
            (
                h.last_offset(),
                h.records_count,
                h.compression(),
                h.max_timestamp
            ),
            (4, 0, Some(Compression::None), NOW)
        );
        assert!(recs.is_empty());

        // Nothing is dirty any more.
        assert!(!needs_cleaning(&log, Some(stats.end_offset), NOW));
        assert_eq!(
            cleanable(&log, Some(stats.end_offset), NOW)
                .unwrap()
                .cleanable_bytes,
            0
        );
        let again = clean_log(&log, Some(stats.end_offset), NOW, 1000).unwrap();
        assert_eq!((again.segments_written, again.end_offset), (0, 7));

        // Appends carry on from the same log end, and the cleaned log survives a restart.
        assert_eq!(append(&log, &[(Some("k2"), Some("b3"))]), 9);
        let expected = visible(&log);
        assert_eq!(expected.len(), 6);
        log.close(NOW).unwrap();
        drop(log);
        let log = open(dir.path(), compact_config(&[]));
        assert_eq!(visible(&log), expected);
        assert_eq!(log.log_end_offset(), 10);
    }

    #[test]
    fn tombstones_get_a_delete_horizon_then_go() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(
            dir.path(),
            compact_config(&[("delete.retention.ms", "1000")]),
        );
        append(&log, &[(Some("k1"), Some("v1")), (Some("k2"), Some("v2"))]);
        log.roll(NOW).unwrap();
        append(&log, &[(Some("k1"), None)]);
        log.roll(NOW).unwrap();
        append(&log, &[(Some("k3"), Some("v3"))]);
        log.set_high_watermark(log.log_end_offset());

        // First pass: the older value goes, the tombstone stays and starts its clock.
        let first = clean_log(&log, None, NOW, 1000).unwrap();
        assert_eq!(first.tombstones_removed, 0);
        assert_eq!(
            visible(&log),
            vec![
                rec(1, "k2", Some("v2")),
                rec(2, "k1", None),
                rec(3, "k3", Some("v3"))
            ]
        );
        let (h, recs) = batch_at(&log, 2);
        assert_eq!(h.delete_horizon_ms(), Some(NOW + 1000));
        assert_eq!(
            recs[0].timestamp, NOW,
            "the horizon must not change record timestamps"
        );

        // Before the horizon: still there, horizon unchanged.
        log.roll(NOW).unwrap();
        append(&log, &[(Some("k4"), Some("v4"))]);
        log.set_high_watermark(log.log_end_offset());
        let second = clean_log(&log, Some(first.end_offset), NOW + 999, 1000).unwrap();
        assert_eq!((second.end_offset, second.tombstones_removed), (4, 0));
        assert_eq!(batch_at(&log, 2).0.delete_horizon_ms(), Some(NOW + 1000));
        assert!(visible(&log).contains(&rec(2, "k1", None)));

        // At the horizon: gone.
        log.roll(NOW).unwrap();
        append(&log, &[(Some("k5"), Some("v5"))]);
        log.set_high_watermark(log.log_end_offset());
        let third = clean_log(&log, Some(second.end_offset), NOW + 1000, 1000).unwrap();
        assert_eq!(third.tombstones_removed, 1);
        assert_eq!(
            visible(&log),
            vec![
                rec(1, "k2", Some("v2")),
                rec(3, "k3", Some("v3")),
                rec(4, "k4", Some("v4")),
                rec(5, "k5", Some("v5"))
            ]
        );
        assert_eq!(log.log_end_offset(), 6);
    }

    #[test]
    fn rewritten_batches_keep_their_codec() {
        for codec in CODECS {
            let dir = tempfile::tempdir().unwrap();
            let log = open(dir.path(), compact_config(&[]));
            append_with(
                &log,
                NOW,
                codec,
                &[
                    (Some("k1"), Some("a")),
                    (Some("k2"), Some("b")),
                    (Some("k3"), Some("c")),
                ],
            );
            log.roll(NOW).unwrap();
            append_with(
                &log,
                NOW,
                codec,
                &[(Some("k1"), Some("a2")), (Some("k3"), None)],
            );
            log.roll(NOW).unwrap();
            append(&log, &[(Some("k9"), Some("z"))]);
            log.set_high_watermark(log.log_end_offset());
            clean_log(&log, None, NOW, 1000).unwrap();

            assert_eq!(
                visible(&log),
                vec![
                    rec(1, "k2", Some("b")),
                    rec(3, "k1", Some("a2")),
                    rec(4, "k3", None),
                    rec(5, "k9", Some("z"))
                ],
                "{codec:?}"
            );
            let batches = read_batches(&log);
            // One batch lost records, the other only gained a delete horizon: both re-encoded.
            let (first, second) = (&batches[0].0, &batches[1].0);
            assert_eq!(
                (first.base_offset, first.last_offset(), first.compression()),
                (0, 2, Some(codec)),
                "{codec:?}"
            );
            assert_eq!(first.delete_horizon_ms(), None);
            assert_eq!(
                (second.base_offset, second.compression()),
                (3, Some(codec)),
                "{codec:?}"
            );
            assert_eq!(second.delete_horizon_ms(), Some(NOW + DAY));
        }
    }

    fn producer_batch(
        pid: i64,
        seq: i32,
        attributes: i16,
        codec: Compression,
        kvs: &[Kv],
    ) -> Bytes {
        let records: Vec<Record> = kvs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Record {
                offset: i as i64,
                timestamp: NOW - 5,
                key: k.map(|k| Bytes::copy_from_slice(k.as_bytes())),
                value: v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
                headers: Vec::new(),
            })
            .collect();
        let mut spec = BatchSpec::new(0, codec);
        spec.producer_id = pid;
        spec.producer_epoch = 3;
        spec.base_sequence = seq;
        spec.attributes = attributes;
        records::encode_batch(&spec, &records).unwrap()
    }

    #[test]
    fn rewritten_and_emptied_batches_keep_their_header_fields() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(
            dir.path(),
            compact_config(&[("message.timestamp.type", "LogAppendTime")]),
        );
        let kv = |k, v| (Some(k), Some(v));
        // Producer 7's only batch is entirely superseded but must stay (emptied) for its
        // sequence state; producer 8's batch loses one record; the last batch is untouched.
        log.append_as_leader(
            &producer_batch(
                7,
                10,
                TRANSACTIONAL_FLAG,
                Compression::Lz4,
                &[kv("k1", "a"), kv("k2", "b")],
            ),
            5,
            NOW,
        )
        .unwrap();
        log.append_as_leader(
            &producer_batch(8, 0, 0, Compression::Zstd, &[kv("k3", "c"), kv("k1", "a2")]),
            5,
            NOW + 1,
        )
        .unwrap();
        log.append_as_leader(
            &producer_batch(
                -1,
                -1,
                0,
                Compression::None,
                &[kv("k2", "b2"), kv("k3", "c2")],
            ),
            6,
            NOW + 2,
        )
        .unwrap();
        log.roll(NOW).unwrap();
        append(&log, &[kv("k4", "d")]);
        log.set_high_watermark(log.log_end_offset());
        clean_log(&log, None, NOW + 10, 1000).unwrap();

        let batches = read_batches(&log);
        let (empty, _) = &batches[0];
        assert_eq!(
            (empty.base_offset, empty.last_offset(), empty.records_count),
            (0, 1, 0)
        );
        assert_eq!(
            (
                empty.producer_id,
                empty.producer_epoch,
                empty.base_sequence,
                empty.last_sequence()
            ),
            (7, 3, 10, 11)
        );
        assert_eq!(
            (empty.partition_leader_epoch, empty.compression()),
            (5, Some(Compression::None))
        );
        assert!(empty.is_transactional());
        assert_eq!(
            (
                empty.timestamp_type(),
                empty.max_timestamp,
                empty.base_timestamp
            ),
            (TimestampType::LogAppendTime, NOW, -1)
        );
        let (rewritten, recs) = &batches[1];
        assert_eq!(
            (
                rewritten.base_offset,
                rewritten.last_offset(),
                rewritten.records_count
            ),
            (2, 3, 1)
        );
        assert_eq!(
            (
                rewritten.producer_id,
                rewritten.base_sequence,
                rewritten.partition_leader_epoch
            ),
            (8, 0, 5)
        );
        assert_eq!(
            (rewritten.compression(), rewritten.timestamp_type()),
            (Some(Compression::Zstd), TimestampType::LogAppendTime)
        );
        assert_eq!(
            (rewritten.max_timestamp, recs[0].offset, recs[0].timestamp),
            (NOW + 1, 3, NOW + 1)
        );
        assert!(!rewritten.is_transactional());
        assert_eq!(batches[2].0.records_count, 2);

        // Once producer 7 has a later batch, the empty one has no reason to stay.
        log.append_as_leader(
            &producer_batch(7, 12, 0, Compression::None, &[kv("k5", "e")]),
            6,
            NOW + 20,
        )
        .unwrap();
        log.roll(NOW).unwrap();
        append(&log, &[kv("k6", "f")]);
        log.set_high_watermark(log.log_end_offset());
        clean_log(&log, None, NOW + 30, 1000).unwrap();
        assert_eq!(read_batches(&log)[0].0.base_offset, 2);
    }

    #[test]
    fn dirty_ratio_gates_cleaning() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(
            dir.path(),
            compact_config(&[("min.cleanable.dirty.ratio", "1.0")]),
        );
        assert_eq!(
            cleanable(&log, None, NOW),
            None,
            "an empty log has nothing to clean"
        );
        for i in 0..20 {
            append(
                &log,
                &[(
                    Some(&format!("key-{i}")),
                    Some("a fairly long value that stays after cleaning"),
                )],
            );
        }
        log.roll(NOW).unwrap();
        append(&log, &[(Some("key-0"), Some("new"))]);
        log.set_high_watermark(log.log_end_offset());
        // Everything is dirty, ratio 1.0, but the threshold is strict.
        assert_eq!(cleanable(&log, None, NOW).unwrap().dirty_ratio, 1.0);
        assert!(!needs_cleaning(&log, None, NOW));
        log.update_config(compact_config(&[]));
        assert!(needs_cleaning(&log, None, NOW));
        let stats = clean_log(&log, None, NOW, 1000).unwrap();
        assert_eq!(stats.records_kept, 20);

        // A small dirty segment behind a large clean one stays below the 0.5 default.
        log.roll(NOW).unwrap();
        append(&log, &[(Some("key-1"), Some("x"))]);
        log.set_high_watermark(log.log_end_offset());
        let c = cleanable(&log, Some(stats.end_offset), NOW).unwrap();
        let bases = log.segment_base_offsets();
        assert_eq!((c.first_dirty, c.first_uncleanable), (bases[1], bases[2]));
        assert!(c.cleanable_bytes > 0 && c.dirty_ratio < 0.5, "{c:?}");
        assert!(!needs_cleaning(&log, Some(stats.end_offset), NOW));
        // A checkpoint outside the log falls back to the log start: all of it is dirty again.
        assert_eq!(
            cleanable(&log, Some(1_000_000), NOW).unwrap().dirty_ratio,
            1.0
        );

        // A log without the compact policy is never cleaned.
        log.update_config(Arc::new(LogConfig::default()));
        assert!(!needs_cleaning(&log, None, NOW));
        assert_eq!(
            clean_log(&log, None, NOW, 1000).unwrap().segments_written,
            0
        );
    }

    #[test]
    fn compaction_lag_and_high_watermark_bound_the_cleanable_range() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(
            dir.path(),
            compact_config(&[("min.compaction.lag.ms", "10000")]),
        );
        append_with(
            &log,
            NOW - 20_000,
            Compression::None,
            &[(Some("k1"), Some("old")), (Some("k2"), Some("b"))],
        );
        log.roll(NOW).unwrap();
        append_with(
            &log,
            NOW,
            Compression::None,
            &[(Some("k1"), Some("new")), (Some("k2"), Some("b2"))],
        );
        log.roll(NOW).unwrap();
        append(&log, &[(Some("k3"), Some("c"))]);
        log.set_high_watermark(log.log_end_offset());

        // The second segment is younger than the lag: only the first may be cleaned, and
        // nothing in it is superseded yet.
        let c = cleanable(&log, None, NOW).unwrap();
        assert_eq!((c.first_dirty, c.first_uncleanable), (0, 2));
        let stats = clean_log(&log, None, NOW, 1000).unwrap();
        assert_eq!(stats.end_offset, 2);
        assert_eq!(visible(&log).len(), 5);

        // The high watermark bounds it too, rounded down to a segment boundary.
        log.set_high_watermark(3);
        assert_eq!(
            cleanable(&log, Some(2), NOW + 20_000)
                .unwrap()
                .first_uncleanable,
            2
        );
        log.set_high_watermark(log.log_end_offset());

        // Once the lag has passed, the newer values win.
        let c = cleanable(&log, Some(stats.end_offset), NOW + 20_000).unwrap();
        assert_eq!((c.first_dirty, c.first_uncleanable), (2, 4));
        clean_log(&log, Some(stats.end_offset), NOW + 20_000, 1000).unwrap();
        assert_eq!(
            visible(&log),
            vec![
                rec(2, "k1", Some("new")),
                rec(3, "k2", Some("b2")),
                rec(4, "k3", Some("c"))
            ]
        );
    }

    #[test]
    fn a_full_offset_map_cleans_in_several_passes() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), compact_config(&[]));
        // Segment r holds a@4r, u{r}@4r+1, b@4r+2, w{r}@4r+3: two shared keys, two of its own.
        for round in 0..3 {
            let value = format!("v{round}");
            let (u, w) = (format!("u{round}"), format!("w{round}"));
            append(&log, &[(Some("a"), Some(&value)), (Some(&u), Some(&value))]);
            append(&log, &[(Some("b"), Some(&value)), (Some(&w), Some(&value))]);
            log.roll(NOW).unwrap();
        }
        append(&log, &[(Some("z"), Some("active"))]);
        log.set_high_watermark(log.log_end_offset());
        // Two keys fit: the map stops after the first batch, inside the first segment.
        let first = clean_log(&log, None, NOW, 2).unwrap();
        assert_eq!(first.end_offset, 2);
        assert_eq!(visible(&log).len(), 13);
        // Four keys fit: the map stops at the segment boundary before the key that overflows.
        let second = clean_log(&log, Some(first.end_offset), NOW, 4).unwrap();
        assert_eq!(second.end_offset, 4);
        let third = clean_log(&log, Some(second.end_offset), NOW, 4).unwrap();
        assert_eq!(third.end_offset, 8);
        assert!(!visible(&log).contains(&rec(0, "a", Some("v0"))));
        let fourth = clean_log(&log, Some(third.end_offset), NOW, 4).unwrap();
        assert_eq!(fourth.end_offset, 12);
        let v = |r: i64| format!("v{r}");
        assert_eq!(
            visible(&log),
            vec![
                rec(1, "u0", Some(&v(0))),
                rec(3, "w0", Some(&v(0))),
                rec(5, "u1", Some(&v(1))),
                rec(7, "w1", Some(&v(1))),
                rec(8, "a", Some(&v(2))),
                rec(9, "u2", Some(&v(2))),
                rec(10, "b", Some(&v(2))),
                rec(11, "w2", Some(&v(2))),
                rec(12, "z", Some("active")),
            ]
        );
    }

    fn segment_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn copy_dir(from: &Path, to: &Path) {
        for name in segment_files(from) {
            std::fs::copy(from.join(&name), to.join(&name)).unwrap();
        }
    }

    fn unclean_open(dir: &Path, config: Arc<LogConfig>) -> Log {
        let params = LoadParams {
            recovery_point: 0,
            log_start_offset: 0,
            high_watermark: None,
            clean_shutdown: false,
            now_ms: NOW,
        };
        let log = Log::open(dir, TopicPartition::new("t", 0), config, params).unwrap();
        log.set_high_watermark(log.log_end_offset());
        log
    }

    /// Build a log with `fill`, clean it, then replay two crashes on copies of the uncleaned
    /// directory: one after every group's `.cleaned` → `.swap` rename but before the old
    /// segments were deleted (with a later group's `.cleaned` half written), one before any
    /// swap. Recovery must yield the cleaned log and the original log respectively.
    fn check_interrupted_swaps(config: Arc<LogConfig>, fill: impl Fn(&Log)) {
        let live = tempfile::tempdir().unwrap();
        let log = open(live.path(), config.clone());
        fill(&log);
        let original = visible(&log);
        log.close(NOW).unwrap();
        drop(log);
        let before = tempfile::tempdir().unwrap();
        copy_dir(live.path(), before.path());

        let log = open(live.path(), config.clone());
        let stats = clean_log(&log, None, NOW, 1000).unwrap();
        assert!(stats.segments_written > 1, "{stats:?}");
        let cleaned = visible(&log);
        assert!(cleaned.len() < original.len());
        let bases = log.segment_base_offsets();
        log.close(NOW).unwrap();
        drop(log);
        let cleaned_bases = &bases[..bases.len() - 1];
        let names = |base: i64, suffix: &str| {
            ["log", "index", "timeindex"].map(|ext| {
                (
                    format!("{base:020}.{ext}"),
                    format!("{base:020}.{ext}{suffix}"),
                )
            })
        };

        let crashed = tempfile::tempdir().unwrap();
        copy_dir(before.path(), crashed.path());
        for base in cleaned_bases {
            for (live_name, swap_name) in names(*base, ".swap") {
                std::fs::copy(live.path().join(live_name), crashed.path().join(swap_name)).unwrap();
            }
        }
        let half_written = format!("{:020}.log.cleaned", bases[bases.len() - 1]);
        std::fs::write(crashed.path().join(half_written), b"half a segment").unwrap();
        let log = unclean_open(crashed.path(), config.clone());
        assert_eq!(visible(&log), cleaned);
        assert_eq!(log.segment_base_offsets(), bases);
        drop(log);
        let left = segment_files(crashed.path());
        assert!(
            left.iter()
                .all(|n| !n.ends_with(".swap") && !n.ends_with(".cleaned")),
            "{left:?}"
        );

        let early = tempfile::tempdir().unwrap();
        copy_dir(before.path(), early.path());
        for base in cleaned_bases {
            for (live_name, cleaned_name) in names(*base, ".cleaned") {
                std::fs::copy(live.path().join(live_name), early.path().join(cleaned_name))
                    .unwrap();
            }
        }
        let log = unclean_open(early.path(), config);
        assert_eq!(visible(&log), original);
        drop(log);
        assert!(
            segment_files(early.path())
                .iter()
                .all(|n| !n.ends_with(".cleaned"))
        );
    }

    #[test]
    fn interrupted_swaps_recover_to_the_cleaned_log() {
        check_interrupted_swaps(compact_config(&[("segment.bytes", "400")]), |log| {
            for i in 0..30 {
                let (k1, k2) = (format!("k{}", i % 5), format!("k{}", (i + 2) % 7));
                let v2 = if i % 4 == 0 { None } else { Some("w") };
                append(log, &[(Some(&k1), Some(&format!("v{i}"))), (Some(&k2), v2)]);
            }
        });
    }

    #[test]
    fn swap_recovery_covers_a_group_whose_last_segment_was_emptied() {
        // One-batch segments of ~75 bytes: groups are [0, 1] and [2]. Everything in segment 1
        // is superseded by segment 2, so the first cleaned segment must still reach offset 2
        // or recovering its `.swap` would leave the old segment 1 live beside it.
        check_interrupted_swaps(compact_config(&[("segment.bytes", "200")]), |log| {
            append(log, &[(Some("k1"), Some("a"))]);
            log.roll(NOW).unwrap();
            append(log, &[(Some("k2"), Some("b"))]);
            log.roll(NOW).unwrap();
            append(log, &[(Some("k2"), Some("b2"))]);
            log.roll(NOW).unwrap();
            append(log, &[(Some("k3"), Some("c"))]);
            assert_eq!(log.segment_base_offsets(), vec![0, 1, 2, 3]);
        });
    }

    /// One appended batch: records of (key index, value byte; None = tombstone), a codec, and
    /// whether to roll a new segment after it.
    type Op = (Vec<(Option<u8>, Option<u8>)>, usize, bool);

    fn ops() -> impl Strategy<Value = (Vec<Op>, u64, usize)> {
        let record = (
            proptest::option::weighted(0.9, 0u8..6),
            proptest::option::weighted(0.8, any::<u8>()),
        );
        let op = (
            proptest::collection::vec(record, 1..5),
            0..CODECS.len(),
            proptest::bool::weighted(0.15),
        );
        (
            proptest::collection::vec(op, 1..40),
            1024u64..4096,
            1usize..8,
        )
    }

    type Model = Vec<(Option<Vec<u8>>, Option<Vec<u8>>)>;
    type Seen = Vec<(i64, Option<Vec<u8>>, Option<Vec<u8>>)>;

    fn seen(log: &Log) -> Seen {
        let bytes = |b: &Option<Bytes>| b.as_ref().map(|b| b.to_vec());
        read_batches(log)
            .iter()
            .flat_map(|(_, recs)| {
                recs.iter()
                    .map(|r| (r.offset, bytes(&r.key), bytes(&r.value)))
            })
            .collect()
    }

    fn last_writes(
        records: impl Iterator<Item = (i64, Option<Vec<u8>>, Option<Vec<u8>>)>,
    ) -> BTreeMap<Vec<u8>, (i64, Option<Vec<u8>>)> {
        records
            .filter_map(|(offset, k, v)| Some((k?, (offset, v))))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn cleaning_matches_a_last_write_wins_model((ops, segment_bytes, map_entries) in ops()) {
            let dir = tempfile::tempdir().unwrap();
            let segment_bytes = segment_bytes.to_string();
            let log = open(dir.path(), compact_config(&[("segment.bytes", &segment_bytes)]));
            let mut model: Model = Vec::new();
            for (records, codec, roll) in &ops {
                let kvs: Model = records.iter().map(|(k, v)| (k.map(|k| vec![b'k', k]), v.map(|v| vec![v]))).collect();
                let refs: Vec<RawKv> = kvs.iter().map(|(k, v)| (k.as_deref(), v.as_deref())).collect();
                let first = log.append_as_follower(&simple_batch(log.log_end_offset(), NOW, CODECS[*codec], &refs), NOW).unwrap().first_offset;
                prop_assert_eq!(first, model.len() as i64);
                model.extend(kvs);
                if *roll {
                    log.roll(NOW).unwrap();
                }
            }
            let leo = log.log_end_offset();
            log.set_high_watermark(leo);
            let indexed = || model.iter().cloned().enumerate().map(|(i, (k, v))| (i as i64, k, v));
            let latest = last_writes(indexed());

            let stats = clean_log(&log, None, NOW, map_entries).unwrap();
            let after = seen(&log);
            prop_assert_eq!(log.log_end_offset(), leo);
            for (offset, k, v) in &after {
                // Every surviving record is an original one, at its original offset.
                prop_assert_eq!(&model[*offset as usize], &(k.clone(), v.clone()));
            }
            // Every key's latest write survives; tombstones too, on a first pass.
            prop_assert_eq!(&last_writes(after.iter().cloned()), &latest);
            // Below the cleaned end there is at most one record per key and none without one.
            let mut keys = std::collections::HashSet::new();
            for (_, k, _) in after.iter().filter(|r| r.0 < stats.end_offset) {
                prop_assert!(k.as_ref().is_some_and(|k| keys.insert(k.clone())), "duplicate or keyless record: {:?}", k);
            }
            // Nothing at or above it was touched.
            let untouched: Seen = indexed().filter(|r| r.0 >= stats.end_offset).collect();
            prop_assert_eq!(after.iter().filter(|r| r.0 >= stats.end_offset).cloned().collect::<Seen>(), untouched);

            // A pass after the delete horizon removes the tombstones the first pass kept.
            let horizon_kept: Vec<Vec<u8>> =
                latest.iter().filter(|(_, (o, v))| v.is_none() && *o < stats.end_offset).map(|(k, _)| k.clone()).collect();
            clean_log(&log, None, NOW + DAY, usize::MAX).unwrap();
            let final_state = last_writes(seen(&log).into_iter());
            let mut expected = latest.clone();
            for k in &horizon_kept {
                expected.remove(k);
            }
            prop_assert_eq!(final_state, expected);
            prop_assert_eq!(log.log_end_offset(), leo);
        }
    }
}
