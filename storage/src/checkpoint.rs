//! Kafka's text checkpoint files, written atomically (temp file, fsync, rename, fsync dir).
//!
//! Format (Kafka's `CheckpointFile`): a version line, a count line, then one entry per line.
//! Per-directory offset checkpoints (`recovery-point-offset-checkpoint`,
//! `log-start-offset-checkpoint`, `replication-offset-checkpoint`, `cleaner-offset-checkpoint`)
//! have entries `topic partition offset`; `leader-epoch-checkpoint` has `epoch startOffset`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, StorageError};

pub const RECOVERY_POINT_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
pub const LOG_START_OFFSET_CHECKPOINT: &str = "log-start-offset-checkpoint";
pub const REPLICATION_OFFSET_CHECKPOINT: &str = "replication-offset-checkpoint";
pub const CLEANER_OFFSET_CHECKPOINT: &str = "cleaner-offset-checkpoint";
pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";
pub const CLEAN_SHUTDOWN_MARKER: &str = ".kafka_cleanshutdown";

const VERSION: u32 = 0;
/// Bound on entries read from a checkpoint, so a corrupt count cannot drive allocation.
const MAX_ENTRIES: usize = 10_000_000;

/// A topic-partition as Kafka names it on disk (`<topic>-<partition>`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }

    /// Parse a partition directory name; the partition is after the last '-'.
    pub fn from_dir_name(name: &str) -> Option<TopicPartition> {
        let (topic, partition) = name.rsplit_once('-')?;
        if topic.is_empty() {
            return None;
        }
        Some(TopicPartition {
            topic: topic.to_string(),
            partition: partition.parse().ok()?,
        })
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Write `lines` as a checkpoint at `path`, atomically and durably.
fn write_checkpoint(path: &Path, lines: &[String]) -> Result<(), StorageError> {
    let mut text = String::with_capacity(16 + lines.iter().map(|l| l.len() + 1).sum::<usize>());
    text.push_str(&format!("{VERSION}\n{}\n", lines.len()));
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    write_atomically(path, text.as_bytes())
}

/// Replace `path` with `contents`: write a `.tmp` sibling, fsync it, rename over, fsync the dir.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), StorageError> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .at_path(&tmp)?;
        f.write_all(contents).at_path(&tmp)?;
        f.sync_all().at_path(&tmp)?;
    }
    fs::rename(&tmp, path).at_path(path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// fsync a directory so renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).at_path(dir)
}

fn corrupt(path: &Path, why: &str) -> StorageError {
    StorageError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("malformed checkpoint: {why}"),
        ),
    }
}

/// Read a checkpoint's entry lines. A missing file reads as no entries.
fn read_checkpoint(path: &Path) -> Result<Vec<String>, StorageError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(StorageError::Io {
                path: path.to_path_buf(),
                source: e,
            });
        }
    };
    let mut lines = text.lines();
    let version: u32 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| corrupt(path, "version"))?;
    if version != VERSION {
        return Err(corrupt(path, "unsupported version"));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| corrupt(path, "count"))?;
    if count > MAX_ENTRIES {
        return Err(corrupt(path, "entry count too large"));
    }
    let entries: Vec<String> = lines.take(count).map(str::to_string).collect();
    if entries.len() != count {
        return Err(corrupt(path, "fewer entries than its count"));
    }
    Ok(entries)
}

/// Read a per-directory offset checkpoint (`topic partition offset` lines).
pub fn read_offsets(path: &Path) -> Result<BTreeMap<TopicPartition, i64>, StorageError> {
    let mut map = BTreeMap::new();
    for line in read_checkpoint(path)? {
        let mut parts = line.split(' ');
        let (Some(topic), Some(p), Some(o), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(corrupt(path, "entry is not `topic partition offset`"));
        };
        let partition = p.parse().map_err(|_| corrupt(path, "partition"))?;
        let offset = o.parse().map_err(|_| corrupt(path, "offset"))?;
        map.insert(TopicPartition::new(topic, partition), offset);
    }
    Ok(map)
}

pub fn write_offsets(
    path: &Path,
    offsets: &BTreeMap<TopicPartition, i64>,
) -> Result<(), StorageError> {
    let lines: Vec<String> = offsets
        .iter()
        .map(|(tp, o)| format!("{} {} {}", tp.topic, tp.partition, o))
        .collect();
    write_checkpoint(path, &lines)
}

/// Read a `leader-epoch-checkpoint` (`epoch startOffset` lines).
pub fn read_epochs(path: &Path) -> Result<Vec<(i32, i64)>, StorageError> {
    let mut out = Vec::new();
    for line in read_checkpoint(path)? {
        let (e, o) = line
            .split_once(' ')
            .ok_or_else(|| corrupt(path, "entry is not `epoch offset`"))?;
        out.push((
            e.parse().map_err(|_| corrupt(path, "epoch"))?,
            o.parse().map_err(|_| corrupt(path, "offset"))?,
        ));
    }
    Ok(out)
}

pub fn write_epochs(path: &Path, entries: &[(i32, i64)]) -> Result<(), StorageError> {
    let lines: Vec<String> = entries.iter().map(|(e, o)| format!("{e} {o}")).collect();
    write_checkpoint(path, &lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_in_kafka_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECOVERY_POINT_CHECKPOINT);
        let mut m = BTreeMap::new();
        m.insert(TopicPartition::new("orders-eu", 3), 42);
        m.insert(TopicPartition::new("a", 0), 0);
        write_offsets(&path, &m).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "0\n2\na 0 0\norders-eu 3 42\n"
        );
        assert_eq!(read_offsets(&path).unwrap(), m);
        assert!(
            read_offsets(&dir.path().join("missing"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn malformed_checkpoints_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        for text in [
            "",
            "1\n0\n",
            "0\n2\na 0 1\n",
            "0\n1\na zero 1\n",
            "0\n99999999999\n",
        ] {
            fs::write(&path, text).unwrap();
            assert!(read_offsets(&path).is_err(), "{text:?}");
        }
    }

    #[test]
    fn dir_names_split_at_the_last_dash() {
        assert_eq!(
            TopicPartition::from_dir_name("my-topic-12"),
            Some(TopicPartition::new("my-topic", 12))
        );
        assert_eq!(TopicPartition::from_dir_name("-1"), None);
        assert_eq!(TopicPartition::from_dir_name("topic"), None);
    }
}
