//! Kafka's sparse segment indexes, memory-mapped.
//!
//! `.index`: 8-byte entries, `relativeOffset int32 | position int32` (big-endian), mapping the
//! last offset of a batch to the byte position where that batch starts.
//! `.timeindex`: 12-byte entries, `timestamp int64 | relativeOffset int32`, the largest
//! timestamp seen so far and the offset holding it.
//!
//! While a segment is active its index files are preallocated to `segment.index.bytes` (rounded
//! down to a whole entry) and mapped writable; when the segment rolls or the log closes they are
//! trimmed to their entries and mapped read-only. No file descriptor is kept open: the mapping
//! outlives the descriptor.

use std::fs::OpenOptions;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapMut, MmapOptions};

use crate::error::{IoContext, StorageError};

/// One kind of index entry: how it is laid out and what it is searched by.
pub trait IndexEntry: Copy {
    const SIZE: usize;
    /// The search key (offset for `.index`, timestamp for `.timeindex`).
    fn key(&self) -> i64;
    /// The absolute offset the entry points at.
    fn offset(&self) -> i64;
    fn read(bytes: &[u8], base_offset: i64) -> Self;
    fn write(&self, bytes: &mut [u8], base_offset: i64);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetPosition {
    pub offset: i64,
    pub position: u32,
}

impl IndexEntry for OffsetPosition {
    const SIZE: usize = 8;
    fn key(&self) -> i64 {
        self.offset
    }
    fn offset(&self) -> i64 {
        self.offset
    }
    fn read(b: &[u8], base: i64) -> Self {
        OffsetPosition {
            offset: base + u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i64,
            position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
    fn write(&self, b: &mut [u8], base: i64) {
        b[0..4].copy_from_slice(&((self.offset - base) as u32).to_be_bytes());
        b[4..8].copy_from_slice(&self.position.to_be_bytes());
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimestampOffset {
    pub timestamp: i64,
    pub offset: i64,
}

impl IndexEntry for TimestampOffset {
    const SIZE: usize = 12;
    fn key(&self) -> i64 {
        self.timestamp
    }
    fn offset(&self) -> i64 {
        self.offset
    }
    fn read(b: &[u8], base: i64) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[0..8]);
        TimestampOffset {
            timestamp: i64::from_be_bytes(ts),
            offset: base + u32::from_be_bytes([b[8], b[9], b[10], b[11]]) as i64,
        }
    }
    fn write(&self, b: &mut [u8], base: i64) {
        b[0..8].copy_from_slice(&self.timestamp.to_be_bytes());
        b[8..12].copy_from_slice(&((self.offset - base) as u32).to_be_bytes());
    }
}

enum Mapping {
    None,
    ReadOnly(Mmap),
    Writable(MmapMut),
}

impl Mapping {
    fn bytes(&self) -> &[u8] {
        match self {
            Mapping::None => &[],
            Mapping::ReadOnly(m) => m,
            Mapping::Writable(m) => m,
        }
    }
}

/// A memory-mapped index file of `E` entries.
pub struct Index<E: IndexEntry> {
    path: PathBuf,
    base_offset: i64,
    map: Mapping,
    entries: usize,
    max_entries: usize,
    /// False when the file length was not a multiple of the entry size at open.
    whole_entries: bool,
    _entry: PhantomData<E>,
}

pub type OffsetIndex = Index<OffsetPosition>;
pub type TimeIndex = Index<TimestampOffset>;

impl<E: IndexEntry> Index<E> {
    /// Open (or create) the index at `path`. Existing entries are the file's length divided by
    /// the entry size, as Kafka assumes for a trimmed index; [`Index::sanity_check`] tells
    /// whether to trust them. When `writable`, the file is grown to `max_bytes` and mapped
    /// for appends.
    pub fn open(
        path: &Path,
        base_offset: i64,
        writable: bool,
        max_bytes: u64,
    ) -> Result<Self, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .at_path(path)?;
        let len = file.metadata().at_path(path)?.len();
        let entries = (len as usize) / E::SIZE;
        let mut index = Index {
            path: path.to_path_buf(),
            base_offset,
            map: Mapping::None,
            entries,
            max_entries: entries,
            whole_entries: (len as usize).is_multiple_of(E::SIZE),
            _entry: PhantomData,
        };
        if writable {
            index.make_writable(&file, max_bytes)?;
        } else if entries > 0 {
            // Safety: the file is ours, not truncated while mapped (it only ever shrinks
            // through `trim`, which drops the mapping first).
            let map =
                unsafe { MmapOptions::new().len(entries * E::SIZE).map(&file) }.at_path(path)?;
            index.map = Mapping::ReadOnly(map);
        }
        Ok(index)
    }

    fn make_writable(&mut self, file: &std::fs::File, max_bytes: u64) -> Result<(), StorageError> {
        let max_entries = ((max_bytes as usize) / E::SIZE).max(self.entries).max(1);
        let len = (max_entries * E::SIZE) as u64;
        self.map = Mapping::None;
        file.set_len(len).at_path(&self.path)?;
        // Safety: as in `open`.
        let map =
            unsafe { MmapOptions::new().len(len as usize).map_mut(file) }.at_path(&self.path)?;
        self.map = Mapping::Writable(map);
        self.max_entries = max_entries;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn entries(&self) -> usize {
        self.entries
    }
    pub fn is_full(&self) -> bool {
        self.entries >= self.max_entries
    }
    pub fn is_writable(&self) -> bool {
        matches!(self.map, Mapping::Writable(_))
    }

    pub fn entry(&self, i: usize) -> E {
        let at = i * E::SIZE;
        E::read(&self.map.bytes()[at..at + E::SIZE], self.base_offset)
    }

    pub fn last_entry(&self) -> Option<E> {
        self.entries.checked_sub(1).map(|i| self.entry(i))
    }

    /// The entry with the largest key `<= target`.
    pub fn lookup(&self, target: i64) -> Option<E> {
        // partition_point: number of entries with key <= target
        let (mut lo, mut hi) = (0usize, self.entries);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.entry(mid).key() <= target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.entry(i))
    }

    /// Append an entry. Callers keep keys and offsets non-decreasing and check `is_full`.
    pub fn append(&mut self, e: E) {
        let at = self.entries * E::SIZE;
        if let Mapping::Writable(m) = &mut self.map
            && at + E::SIZE <= m.len()
        {
            e.write(&mut m[at..at + E::SIZE], self.base_offset);
            self.entries += 1;
        }
    }

    /// Drop every entry whose offset is `>= offset`.
    pub fn truncate_to_offset(&mut self, offset: i64) {
        while let Some(last) = self.last_entry() {
            if last.offset() < offset {
                break;
            }
            self.entries -= 1;
        }
    }

    pub fn clear(&mut self) {
        self.entries = 0;
        self.whole_entries = true;
    }

    /// Kafka's sanity check, cheap enough for every segment at startup: a whole number of
    /// entries, and first and last entries that lie at or after the base offset in order.
    pub fn sanity_check(&self) -> bool {
        if !self.whole_entries {
            return false;
        }
        match (self.entries, self.last_entry()) {
            (0, _) | (_, None) => true,
            (_, Some(last)) => {
                let first = self.entry(0);
                first.offset() >= self.base_offset
                    && last.offset() >= first.offset()
                    && last.key() >= first.key()
            }
        }
    }

    /// Every entry at or after the base offset, keys and offsets never decreasing (tests).
    pub fn verify_all(&self) -> bool {
        let (mut key, mut off) = (i64::MIN, self.base_offset);
        for i in 0..self.entries {
            let e = self.entry(i);
            if e.offset() < off || e.key() < key {
                return false;
            }
            (key, off) = (e.key(), e.offset());
        }
        self.whole_entries
    }

    /// Write dirty pages of a writable mapping to disk, or fsync a read-only index file.
    pub fn flush(&self) -> Result<(), StorageError> {
        match &self.map {
            Mapping::Writable(m) => m.flush().at_path(&self.path),
            _ => std::fs::File::open(&self.path)
                .and_then(|f| f.sync_all())
                .at_path(&self.path),
        }
    }

    /// Shrink the file to its entries and map it read-only (segment roll or close).
    pub fn trim(&mut self) -> Result<(), StorageError> {
        if let Mapping::Writable(m) = &self.map {
            m.flush().at_path(&self.path)?;
        }
        self.map = Mapping::None;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .at_path(&self.path)?;
        let len = (self.entries * E::SIZE) as u64;
        file.set_len(len).at_path(&self.path)?;
        if len > 0 {
            // Safety: as in `open`.
            let map =
                unsafe { MmapOptions::new().len(len as usize).map(&file) }.at_path(&self.path)?;
            self.map = Mapping::ReadOnly(map);
        }
        self.max_entries = self.entries;
        Ok(())
    }

    /// Grow back to `max_bytes` and map writable (a trimmed segment becoming active again).
    pub fn reopen_writable(&mut self, max_bytes: u64) -> Result<(), StorageError> {
        self.map = Mapping::None;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .at_path(&self.path)?;
        self.make_writable(&file, max_bytes)
    }

    /// Move the index file (and its mapping, which follows the inode) to a new path.
    pub fn rename(&mut self, to: &Path) -> Result<(), StorageError> {
        std::fs::rename(&self.path, to).at_path(to)?;
        self.path = to.to_path_buf();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_bytes_match_kafka_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000100.index");
        let mut idx = OffsetIndex::open(&path, 100, true, 80).unwrap();
        idx.append(OffsetPosition {
            offset: 105,
            position: 4096,
        });
        idx.append(OffsetPosition {
            offset: 230,
            position: 9000,
        });
        assert_eq!(idx.lookup(99), None);
        assert_eq!(idx.lookup(105).unwrap().position, 4096);
        assert_eq!(idx.lookup(200).unwrap().position, 4096);
        assert_eq!(idx.lookup(10_000).unwrap().position, 9000);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 80, "preallocated");
        idx.trim().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            bytes,
            [0, 0, 0, 5, 0, 0, 0x10, 0, 0, 0, 0, 130, 0, 0, 0x23, 0x28]
        );
        let reopened = OffsetIndex::open(&path, 100, false, 80).unwrap();
        assert_eq!(reopened.entries(), 2);
        assert!(reopened.sanity_check());
    }

    #[test]
    fn time_index_truncates_by_offset_and_fills_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.timeindex");
        let mut idx = TimeIndex::open(&path, 0, true, 36).unwrap();
        for i in 0..5 {
            idx.append(TimestampOffset {
                timestamp: 1000 + i,
                offset: i * 10,
            });
        }
        assert_eq!(idx.entries(), 3);
        assert!(idx.is_full());
        assert_eq!(idx.lookup(1001).unwrap().offset, 10);
        idx.truncate_to_offset(10);
        assert_eq!(idx.entries(), 1);
        assert_eq!(
            std::fs::read(&path).unwrap()[..12],
            [0, 0, 0, 0, 0, 0, 0x03, 0xe8, 0, 0, 0, 0]
        );
    }
}
