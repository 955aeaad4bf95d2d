//! The leader-epoch cache: for each leader epoch, the first offset written in it. Followers use
//! it (through OffsetForLeaderEpoch) to find where their log diverges from a new leader's.
//! Persisted as the partition's `leader-epoch-checkpoint` on every change.

use std::path::{Path, PathBuf};

use crate::checkpoint;
use crate::error::StorageError;

pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

pub struct LeaderEpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Load the checkpoint in `dir` (missing file: empty cache).
    pub fn load(dir: &Path) -> Result<Self, StorageError> {
        let path = dir.join(checkpoint::LEADER_EPOCH_CHECKPOINT);
        let mut entries: Vec<EpochEntry> = checkpoint::read_epochs(&path)?
            .into_iter()
            .map(|(epoch, start_offset)| EpochEntry {
                epoch,
                start_offset,
            })
            .collect();
        // A checkpoint is written whole, but keep the invariant even for a hand-edited file.
        entries.sort_by_key(|e| e.epoch);
        entries.dedup_by_key(|e| e.epoch);
        Ok(LeaderEpochCache { path, entries })
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Record that `epoch` starts at `start_offset`. Entries with an epoch at or above it, or a
    /// start offset at or after it, are replaced, so the cache stays increasing in both.
    /// Returns whether anything changed (and was written to disk).
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<bool, StorageError> {
        if epoch < 0 || start_offset < 0 {
            return Ok(false);
        }
        if let Some(last) = self.entries.last()
            && last.epoch == epoch
            && last.start_offset <= start_offset
        {
            return Ok(false);
        }
        self.entries
            .retain(|e| e.epoch < epoch && e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.persist()?;
        Ok(true)
    }

    /// Kafka's `endOffsetFor`: the largest epoch `<= requested` that this log knows, and the
    /// offset where the next higher epoch starts (the log end offset for the latest epoch).
    /// `(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)` when the requested epoch is newer than any
    /// known, or the cache is empty.
    pub fn end_offset_for_epoch(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        let undefined = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested == UNDEFINED_EPOCH {
            return undefined;
        }
        match self.latest_epoch() {
            None => undefined,
            Some(latest) if latest == requested => (requested, log_end_offset),
            Some(_) => {
                let Some(higher) = self.entries.iter().find(|e| e.epoch > requested) else {
                    return undefined;
                };
                match self.entries.iter().rev().find(|e| e.epoch <= requested) {
                    // Older than anything we have: the requested epoch ends where ours begin.
                    None => (requested, higher.start_offset),
                    Some(floor) => (floor.epoch, higher.start_offset),
                }
            }
        }
    }

    /// Drop entries starting at or after `end_offset` (the log was truncated there).
    pub fn truncate_from_end(&mut self, end_offset: i64) -> Result<(), StorageError> {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        if self.entries.len() != before {
            self.persist()?;
        }
        Ok(())
    }

    /// The log now starts at `start_offset`: drop entries wholly before it, moving the latest
    /// such entry up to start there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> Result<(), StorageError> {
        let before: Vec<EpochEntry> = self
            .entries
            .iter()
            .copied()
            .filter(|e| e.start_offset <= start_offset)
            .collect();
        let Some(last_before) = before.last().copied() else {
            return Ok(());
        };
        if before.len() == 1 && last_before.start_offset == start_offset {
            return Ok(());
        }
        self.entries.retain(|e| e.start_offset > start_offset);
        self.entries.insert(
            0,
            EpochEntry {
                epoch: last_before.epoch,
                start_offset,
            },
        );
        self.persist()
    }

    pub fn clear(&mut self) -> Result<(), StorageError> {
        self.entries.clear();
        self.persist()
    }

    fn persist(&self) -> Result<(), StorageError> {
        let pairs: Vec<(i32, i64)> = self
            .entries
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect();
        checkpoint::write_epochs(&self.path, &pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offset_for_epoch_follows_kafka() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::load(dir.path()).unwrap();
        assert_eq!(
            c.end_offset_for_epoch(0, 10),
            (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
        );
        c.assign(2, 10).unwrap();
        c.assign(4, 25).unwrap();
        c.assign(4, 30).unwrap(); // same epoch, later offset: ignored
        c.assign(7, 40).unwrap();
        assert_eq!(c.end_offset_for_epoch(7, 55), (7, 55));
        assert_eq!(c.end_offset_for_epoch(5, 55), (4, 40));
        assert_eq!(c.end_offset_for_epoch(4, 55), (4, 40));
        assert_eq!(c.end_offset_for_epoch(1, 55), (1, 10));
        assert_eq!(
            c.end_offset_for_epoch(9, 55),
            (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
        );
        assert_eq!(
            c.end_offset_for_epoch(UNDEFINED_EPOCH, 55),
            (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
        );
        let text =
            std::fs::read_to_string(dir.path().join(checkpoint::LEADER_EPOCH_CHECKPOINT)).unwrap();
        assert_eq!(text, "0\n3\n2 10\n4 25\n7 40\n");
    }

    #[test]
    fn truncation_from_both_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::load(dir.path()).unwrap();
        for (e, o) in [(1, 0), (2, 10), (3, 20)] {
            c.assign(e, o).unwrap();
        }
        c.truncate_from_start(15).unwrap();
        assert_eq!(
            c.entries(),
            &[
                EpochEntry {
                    epoch: 2,
                    start_offset: 15
                },
                EpochEntry {
                    epoch: 3,
                    start_offset: 20
                }
            ]
        );
        c.truncate_from_end(20).unwrap();
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 2,
                start_offset: 15
            }]
        );
        // a new epoch at a lower offset replaces what it overlaps
        c.assign(5, 12).unwrap();
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 5,
                start_offset: 12
            }]
        );
        let reloaded = LeaderEpochCache::load(dir.path()).unwrap();
        assert_eq!(reloaded.entries(), c.entries());
    }
}
