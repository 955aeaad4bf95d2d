//! One log segment: a `.log` file of record batches plus its `.index` and `.timeindex`.
//!
//! Writes go through the file descriptor (`write` with `O_APPEND`). Reads come from a shared
//! read-only mapping of the same file, handed out as `Bytes` that keep the mapping alive, so a
//! fetch never copies record data in user space. The active segment maps a reserved length past
//! its end and remaps when it outgrows it; pages past the written size are never handed out.
//!
//! A mapping must never lose pages under a reader, so a file that readers still hold is never
//! shrunk in place: truncation copies the kept prefix to a new file and renames it over the old
//! one, which stays alive for the readers that have it.

use std::fs::{self, File, OpenOptions};
use std::io::{IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};

use crate::batch::{BatchHeader, BatchRef, NO_TIMESTAMP, StoredBatches};
use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::{IoContext, StorageError};
use crate::index::{OffsetIndex, OffsetPosition, TimeIndex, TimestampOffset};

pub const LOG_SUFFIX: &str = ".log";
pub const INDEX_SUFFIX: &str = ".index";
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";
pub const DELETED_SUFFIX: &str = ".deleted";
pub const CLEANED_SUFFIX: &str = ".cleaned";
pub const SWAP_SUFFIX: &str = ".swap";

static NEXT_SEGMENT_ID: AtomicU64 = AtomicU64::new(1);

/// `<dir>/<20-digit base offset><ext><suffix>`, Kafka's segment file naming.
pub fn segment_path(dir: &Path, base_offset: i64, ext: &str, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}{ext}{suffix}"))
}

/// Keeps a mapping alive for as long as any `Bytes` sliced from it.
struct MapOwner(Arc<Mmap>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Where a batch that holds a wanted offset starts.
#[derive(Clone, Copy, Debug)]
pub struct BatchPosition {
    pub position: usize,
    pub header: BatchHeader,
}

pub struct Segment {
    /// Identity for the cleaner: a segment replaced or truncated gets a new one.
    pub(crate) id: u64,
    base_offset: i64,
    dir: PathBuf,
    suffix: String,
    /// `<base>.log<suffix>`, kept so the append path never formats a name.
    log_path: PathBuf,
    file: Option<Arc<File>>,
    map: Option<Arc<Mmap>>,
    size: u64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_last_index_entry: u64,
    max_timestamp: i64,
    /// Last offset of the batch holding `max_timestamp` (Kafka's "shallow" offset).
    offset_of_max_timestamp: i64,
    /// Max timestamp of the first batch, which `segment.ms` is measured from.
    rolling_based_timestamp: Option<i64>,
    created_ms: i64,
    next_offset: i64,
    /// Data written since the last fsync.
    dirty: bool,
}

impl Segment {
    /// Create a new empty, active segment.
    pub fn create(
        dir: &Path,
        base_offset: i64,
        suffix: &str,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<Segment, StorageError> {
        let log_path = segment_path(dir, base_offset, LOG_SUFFIX, suffix);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&log_path)
            .at_path(&log_path)?;
        if file.metadata().at_path(&log_path)?.len() != 0 {
            // Only an empty leftover may be reused; anything else is data we must not clobber.
            return Err(StorageError::Io {
                path: log_path,
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "segment file already holds data",
                ),
            });
        }
        for ext in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            let p = segment_path(dir, base_offset, ext, suffix);
            if p.exists() {
                fs::remove_file(&p).at_path(&p)?;
            }
        }
        let mut seg = Segment::assemble(dir, base_offset, suffix, config, Some(file), 0, now_ms)?;
        seg.dirty = true;
        seg.remap(reserve_len(config, 0))?;
        Ok(seg)
    }

    /// Open an existing segment. Indexes are taken as they are (trimmed by a clean roll or
    /// close); the caller decides whether to [`Segment::recover`] instead of trusting them.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        suffix: &str,
        config: &LogConfig,
        active: bool,
        now_ms: i64,
    ) -> Result<Segment, StorageError> {
        let log_path = segment_path(dir, base_offset, LOG_SUFFIX, suffix);
        let file = open_for_append(&log_path)?;
        let meta = file.metadata().at_path(&log_path)?;
        let size = meta.len();
        let created_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(now_ms, |d| d.as_millis() as i64);
        let file = active.then_some(file);
        let mut seg = Segment::assemble(dir, base_offset, suffix, config, file, size, created_ms)?;
        let len = if active {
            reserve_len(config, size)
        } else {
            size as usize
        };
        if active {
            seg.remap(len)?;
        } else if size > 0 {
            // A closed segment maps exactly its length; the descriptor is closed after mapping.
            let file = File::open(&log_path).at_path(&log_path)?;
            seg.map = Some(Arc::new(
                unsafe { MmapOptions::new().len(len).map(&file) }.at_path(&log_path)?,
            ));
        }
        if let Some(e) = seg.time_index.last_entry() {
            seg.max_timestamp = e.timestamp;
            seg.offset_of_max_timestamp = e.offset;
        }
        Ok(seg)
    }

    /// A segment over an opened log file: indexes mapped writable when the segment is active
    /// (it holds a file handle), read-only otherwise; no data mapping yet.
    fn assemble(
        dir: &Path,
        base_offset: i64,
        suffix: &str,
        config: &LogConfig,
        file: Option<File>,
        size: u64,
        created_ms: i64,
    ) -> Result<Segment, StorageError> {
        let active = file.is_some();
        let index = |ext| segment_path(dir, base_offset, ext, suffix);
        let max = config.segment_index_bytes;
        Ok(Segment {
            id: NEXT_SEGMENT_ID.fetch_add(1, Ordering::Relaxed),
            base_offset,
            dir: dir.to_path_buf(),
            suffix: suffix.to_string(),
            log_path: segment_path(dir, base_offset, LOG_SUFFIX, suffix),
            file: file.map(Arc::new),
            map: None,
            size,
            offset_index: OffsetIndex::open(&index(INDEX_SUFFIX), base_offset, active, max)?,
            time_index: TimeIndex::open(&index(TIME_INDEX_SUFFIX), base_offset, active, max)?,
            bytes_since_last_index_entry: 0,
            max_timestamp: NO_TIMESTAMP,
            offset_of_max_timestamp: base_offset,
            rolling_based_timestamp: None,
            created_ms,
            next_offset: base_offset,
            dirty: false,
        })
    }

    fn remap(&mut self, len: usize) -> Result<(), StorageError> {
        let path = self.log_path.clone();
        let file = match &self.file {
            Some(f) => f.clone(),
            None => Arc::new(File::open(&path).at_path(&path)?),
        };
        // Safety: the mapping is read-only and shared; we never shrink a file that has live
        // mappings handed out (see `truncate_to`), and only bytes below `size`, which were
        // written before being published, are read.
        let map = unsafe { MmapOptions::new().len(len.max(1)).map(&*file) }.at_path(&path)?;
        self.map = Some(Arc::new(map));
        Ok(())
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    /// The offset after the last batch in this segment (its base offset when empty).
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    pub fn offset_of_max_timestamp(&self) -> i64 {
        self.offset_of_max_timestamp
    }
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    pub fn offset_index(&self) -> &OffsetIndex {
        &self.offset_index
    }
    pub fn time_index(&self) -> &TimeIndex {
        &self.time_index
    }

    /// Kafka's `largestTimestamp`: the newest record timestamp, or the file's mtime if none.
    pub fn largest_timestamp(&self) -> i64 {
        if self.max_timestamp >= 0 {
            self.max_timestamp
        } else {
            self.created_ms
        }
    }

    /// The written bytes of this segment.
    pub fn data(&self) -> &[u8] {
        match &self.map {
            Some(m) => &m[..self.size as usize],
            None => &[],
        }
    }

    /// A zero-copy slice of written bytes `[from, to)`.
    pub fn slice(&self, from: usize, to: usize) -> Bytes {
        match &self.map {
            Some(m) if from < to && to as u64 <= self.size => {
                Bytes::from_owner(MapOwner(m.clone())).slice(from..to)
            }
            _ => Bytes::new(),
        }
    }

    pub fn batches(&self, from_position: usize) -> StoredBatches<'_> {
        StoredBatches::new(self.data(), from_position)
    }

    /// Would appending `bytes` of batches spanning `[first_offset, last_offset]` with max
    /// timestamp `max_ts` need a new segment first? (Kafka's `shouldRoll`.)
    pub fn should_roll(
        &self,
        config: &LogConfig,
        bytes: u64,
        last_offset: i64,
        max_ts: i64,
        now_ms: i64,
    ) -> bool {
        if self.size == 0 {
            return false;
        }
        let waited = match self.rolling_based_timestamp {
            Some(t) if t >= 0 => max_ts.saturating_sub(t),
            _ => now_ms.saturating_sub(self.created_ms),
        };
        self.size.saturating_add(bytes) > config.segment_bytes
            || waited > config.segment_ms
            || self.offset_index.is_full()
            || self.time_index.entries() + 1 >= self.time_index_max_entries(config)
            || last_offset - self.base_offset > i32::MAX as i64
    }

    fn time_index_max_entries(&self, config: &LogConfig) -> usize {
        if self.time_index.is_writable() {
            config.max_time_index_entries()
        } else {
            self.time_index.entries()
        }
    }

    /// Write already-stamped batches, laid out by `slices`, and index the `batches` they form.
    /// On a write error the file is cut back to its previous length.
    pub fn append(
        &mut self,
        config: &LogConfig,
        slices: &mut [IoSlice<'_>],
        batches: &[BatchRef],
        total: u64,
    ) -> Result<(), StorageError> {
        let Some(file) = self.file.as_ref() else {
            return Err(StorageError::Io {
                path: self.log_path.clone(),
                source: std::io::Error::other("append to a closed segment"),
            });
        };
        if let Err(e) = write_all_gathered(file, slices, total) {
            // Undo a partial write so the file never holds a torn batch we did not report.
            file.set_len(self.size).at_path(&self.log_path)?;
            return Err(StorageError::Io {
                path: self.log_path.clone(),
                source: e,
            });
        }
        let start = self.size;
        let needed = (start + total) as usize;
        if self.map.as_ref().is_none_or(|m| m.len() < needed) {
            self.remap(reserve_len(config, needed as u64))?;
        }
        self.size = start + total;
        self.dirty = true;
        let mut position = start;
        for b in batches {
            self.index_batch(config, position, &b.header);
            position += b.header.size() as u64;
        }
        Ok(())
    }

    /// Index bookkeeping for one batch at `position` (shared by append and recovery so both
    /// build identical indexes).
    fn index_batch(&mut self, config: &LogConfig, position: u64, h: &BatchHeader) {
        if position == 0 {
            self.rolling_based_timestamp = Some(h.max_timestamp);
        }
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.offset_of_max_timestamp = h.last_offset();
        }
        if self.bytes_since_last_index_entry > config.index_interval_bytes {
            self.offset_index.append(OffsetPosition {
                offset: h.last_offset(),
                position: position as u32,
            });
            self.maybe_append_time_entry();
            self.bytes_since_last_index_entry = 0;
        }
        self.bytes_since_last_index_entry += h.size() as u64;
        self.next_offset = h.next_offset();
    }

    fn maybe_append_time_entry(&mut self) {
        let last_ts = self
            .time_index
            .last_entry()
            .map_or(NO_TIMESTAMP, |e| e.timestamp);
        if self.max_timestamp > last_ts {
            self.time_index.append(TimestampOffset {
                timestamp: self.max_timestamp,
                offset: self.offset_of_max_timestamp,
            });
        }
    }

    /// Re-validate every batch, rebuild both indexes, and cut the file at the first torn or
    /// corrupt batch. Returns how many bytes were cut.
    pub fn recover(
        &mut self,
        config: &LogConfig,
        mut epochs: Option<&mut LeaderEpochCache>,
    ) -> Result<u64, StorageError> {
        // Rebuilt entries need writable indexes; a closed segment is trimmed again afterwards.
        self.make_indexes_writable(config)?;
        // What recovery keeps may not be on disk yet: the next flush must sync it.
        self.dirty = true;
        self.offset_index.clear();
        self.time_index.clear();
        self.bytes_since_last_index_entry = 0;
        self.max_timestamp = NO_TIMESTAMP;
        self.offset_of_max_timestamp = self.base_offset;
        self.rolling_based_timestamp = None;
        self.next_offset = self.base_offset;
        let mut valid = 0usize;
        let mut prev_next = self.base_offset;
        let headers: Vec<BatchHeader> = {
            let data = self.data();
            let mut out = Vec::new();
            while valid < data.len() {
                let rest = &data[valid..];
                let Ok(h) = BatchHeader::parse(rest) else {
                    break;
                };
                if h.size() > rest.len()
                    || crate::batch::compute_crc(&rest[..h.size()]) != h.crc
                    || h.last_offset_delta < 0
                    || h.base_offset < prev_next
                    || h.last_offset() - self.base_offset > i32::MAX as i64
                {
                    break;
                }
                prev_next = h.next_offset();
                valid += h.size();
                out.push(h);
            }
            out
        };
        let mut position = 0u64;
        for h in &headers {
            self.index_batch(config, position, h);
            position += h.size() as u64;
            if let Some(cache) = epochs.as_deref_mut()
                && h.partition_leader_epoch >= 0
                && cache
                    .latest_epoch()
                    .is_none_or(|e| h.partition_leader_epoch > e)
            {
                cache.assign(h.partition_leader_epoch, h.base_offset)?;
            }
        }
        let truncated = self.size - valid as u64;
        if truncated > 0 {
            self.cut_file(valid as u64)?;
        }
        Ok(truncated)
    }

    /// After a clean shutdown: find the next offset by scanning from the last index entry
    /// (at most `index.interval.bytes` plus one batch), so opening is O(segments).
    pub fn load_next_offset(&mut self) {
        let from = self
            .offset_index
            .last_entry()
            .map_or(0, |e| e.position as usize);
        let (mut next, mut since) = (self.base_offset, 0u64);
        for b in self.batches(from) {
            next = b.header.next_offset();
            since += b.header.size() as u64;
        }
        self.rolling_based_timestamp = self.batches(0).next().map(|b| b.header.max_timestamp);
        self.next_offset = next;
        self.bytes_since_last_index_entry = since;
    }

    /// The first batch whose last offset is `>= offset`, searching from the index.
    pub fn find_batch(&self, offset: i64) -> Option<BatchPosition> {
        let from = self
            .offset_index
            .lookup(offset)
            .map_or(0, |e| e.position as usize);
        self.batches(from)
            .find(|b| b.header.last_offset() >= offset)
            .map(|b| BatchPosition {
                position: b.position,
                header: b.header,
            })
    }

    /// The stored batch header at exactly `position`, if one starts there.
    pub fn batch_at(&self, position: usize) -> Option<BatchHeader> {
        self.batches(position).next().map(|b| b.header)
    }

    /// No longer active: final time-index entry, indexes trimmed and read-only.
    /// The file descriptor stays open until the data is flushed.
    pub fn make_inactive(&mut self) -> Result<(), StorageError> {
        let last_ts = self
            .time_index
            .last_entry()
            .map_or(NO_TIMESTAMP, |e| e.timestamp);
        if self.max_timestamp > last_ts {
            // Kafka's skipFullCheck entry: the time index keeps a slot free for it.
            self.time_index.append(TimestampOffset {
                timestamp: self.max_timestamp,
                offset: self.offset_of_max_timestamp,
            });
        }
        self.offset_index.trim()?;
        self.time_index.trim()?;
        if self.size > 0 {
            let len = self.size as usize;
            self.remap(len)?;
        }
        Ok(())
    }

    /// Map both indexes writable at their full preallocated size (if they are not already).
    fn make_indexes_writable(&mut self, config: &LogConfig) -> Result<(), StorageError> {
        if !self.offset_index.is_writable() {
            self.offset_index
                .reopen_writable(config.segment_index_bytes)?;
        }
        if !self.time_index.is_writable() {
            self.time_index
                .reopen_writable(config.segment_index_bytes)?;
        }
        Ok(())
    }

    /// Become the active segment again (after a truncation into it).
    pub fn make_active(&mut self, config: &LogConfig) -> Result<(), StorageError> {
        if self.file.is_none() {
            let path = self.log_path.clone();
            self.file = Some(Arc::new(open_for_append(&path)?));
        }
        self.make_indexes_writable(config)?;
        self.remap(reserve_len(config, self.size))
    }

    /// fsync data and indexes (opening a closed segment's file just for the sync).
    pub fn flush(&mut self) -> Result<(), StorageError> {
        let path = self.log_path.clone();
        match &self.file {
            Some(f) => f.sync_data().at_path(&path)?,
            None => File::open(&path)
                .and_then(|f| f.sync_data())
                .at_path(&path)?,
        }
        self.offset_index.flush()?;
        self.time_index.flush()?;
        self.dirty = false;
        Ok(())
    }

    /// A handle for an fsync made without holding the log's lock.
    pub(crate) fn file_handle(&self) -> Option<Arc<File>> {
        self.file.clone()
    }

    pub(crate) fn mark_clean(&mut self, drop_handle: bool) {
        self.dirty = false;
        if drop_handle {
            self.file = None;
        }
    }

    /// Remove every batch whose last offset is `>= offset` (whole batches: a batch holding
    /// `offset` goes too). Returns the bytes removed.
    pub fn truncate_to(&mut self, config: &LogConfig, offset: i64) -> Result<u64, StorageError> {
        let Some(found) = self.find_batch(offset) else {
            return Ok(0);
        };
        let cut = found.position as u64;
        let removed = self.size - cut;
        self.cut_file(cut)?;
        self.make_active(config)?;
        self.recover(config, None)?;
        Ok(removed)
    }

    /// Shrink the log file to `len`, in place when nobody else holds the mapping, otherwise by
    /// copying the prefix to a new file renamed over the old one.
    fn cut_file(&mut self, len: u64) -> Result<(), StorageError> {
        let path = self.log_path.clone();
        let shared = self.map.as_ref().is_some_and(|m| Arc::strong_count(m) > 1);
        self.map = None;
        if shared {
            let tmp = path.with_extension("log.truncating");
            {
                let mut src = File::open(&path).at_path(&path)?;
                let dst = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&tmp)
                    .at_path(&tmp)?;
                std::io::copy(&mut std::io::Read::take(&mut src, len), &mut &dst).at_path(&tmp)?;
                dst.sync_all().at_path(&tmp)?;
            }
            fs::rename(&tmp, &path).at_path(&path)?;
            crate::checkpoint::sync_dir(&self.dir)?;
            if self.file.is_some() {
                self.file = Some(Arc::new(open_for_append(&path)?));
            }
        } else {
            let f = OpenOptions::new().write(true).open(&path).at_path(&path)?;
            f.set_len(len).at_path(&path)?;
        }
        self.size = len;
        self.id = NEXT_SEGMENT_ID.fetch_add(1, Ordering::Relaxed);
        self.dirty = true;
        if len > 0 {
            self.remap(len as usize)?;
        }
        Ok(())
    }

    /// Rename every file of this segment from its current suffix to `suffix`.
    pub fn change_suffix(&mut self, suffix: &str) -> Result<(), StorageError> {
        let from = self.log_path.clone();
        let to = segment_path(&self.dir, self.base_offset, LOG_SUFFIX, suffix);
        fs::rename(&from, &to).at_path(&to)?;
        self.offset_index.rename(&segment_path(
            &self.dir,
            self.base_offset,
            INDEX_SUFFIX,
            suffix,
        ))?;
        self.time_index.rename(&segment_path(
            &self.dir,
            self.base_offset,
            TIME_INDEX_SUFFIX,
            suffix,
        ))?;
        self.suffix = suffix.to_string();
        self.log_path = to;
        Ok(())
    }

    /// Delete the segment's files: renamed `.deleted` first so a crash part way leaves
    /// nothing that reads as live; readers holding the mapping keep their data.
    pub fn delete(mut self) -> Result<(), StorageError> {
        self.change_suffix(DELETED_SUFFIX)?;
        for ext in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            let p = segment_path(&self.dir, self.base_offset, ext, DELETED_SUFFIX);
            if let Err(e) = fs::remove_file(&p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(StorageError::Io { path: p, source: e });
            }
        }
        Ok(())
    }

    /// Mark state after external construction (the cleaner writes segments with `append`).
    pub(crate) fn set_created_ms(&mut self, ms: i64) {
        self.created_ms = ms;
    }
}

/// Open an existing segment file for appends (`O_APPEND`, so writes land at its end even
/// after a truncation).
fn open_for_append(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .at_path(path)
}

/// How much address space to map for an active segment of `size` bytes.
fn reserve_len(config: &LogConfig, size: u64) -> usize {
    let want = config
        .segment_bytes
        .max(size)
        .saturating_add(config.max_message_bytes as u64);
    // Round to 2 MiB and cap the reservation; a larger file just remaps as it grows.
    let want = want.min(1 << 40);
    (want.div_ceil(2 << 20) * (2 << 20)) as usize
}

/// Appends up to this size are copied into one buffer and written with a single `write()`:
/// for small batches the copy is cheaper than the kernel walking several iovecs.
const GATHER_LIMIT: u64 = 16 * 1024;

thread_local! {
    static GATHER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn write_all_gathered(
    mut file: &File,
    slices: &mut [IoSlice<'_>],
    total: u64,
) -> std::io::Result<()> {
    if slices.len() < 2 || total > GATHER_LIMIT {
        return write_all_vectored(file, slices);
    }
    GATHER.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        for s in slices.iter() {
            buf.extend_from_slice(s);
        }
        file.write_all(&buf)
    })
}

fn write_all_vectored(mut file: &File, mut slices: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    "short write",
                ));
            }
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
