//! Reads one replica's partition log from a stopped node's `log.dirs`, for the checker.
//!
//! The partition directory is copied and opened with `fjord_storage::Log` in the copy, so the
//! node's own files are never touched (opening may run recovery, which truncates a torn tail
//! as the broker itself would on its next start).

use std::path::Path;
use std::sync::Arc;

use fjord_storage::checkpoint::{self, REPLICATION_OFFSET_CHECKPOINT};
use fjord_storage::records::decode_batch;
use fjord_storage::{BatchHeader, LoadParams, Log, LogConfig, TopicPartition};

use crate::consistency::{ReplicaLog, StoredRecord};

/// Bytes read per `Log::read` call.
const READ_BYTES: usize = 4 << 20;

/// The log of `topic`-`partition` in `log_dir` (one of node `node`'s `log.dirs`), or `None`
/// if that node has no directory for it.
pub fn read_replica(
    log_dir: &Path,
    node: i32,
    topic: &str,
    partition: i32,
) -> Result<Option<ReplicaLog>, String> {
    let name = format!("{topic}-{partition}");
    let src = log_dir.join(&name);
    if !src.is_dir() {
        return Ok(None);
    }
    let tmp = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let copy = tmp.path().join(&name);
    copy_dir(&src, &copy).map_err(|e| format!("copy {}: {e}", src.display()))?;
    let tp = TopicPartition::new(topic, partition);
    let params = LoadParams {
        recovery_point: 0,
        log_start_offset: 0,
        high_watermark: None,
        // Recover every segment: the node may have been SIGKILLed.
        clean_shutdown: false,
        now_ms: fjord_storage::now_ms(),
    };
    let log = Log::open(&copy, tp, Arc::new(LogConfig::default()), params)
        .map_err(|e| format!("open {}: {e}", src.display()))?;
    let mut out = ReplicaLog {
        node,
        log_start: log.log_start_offset(),
        log_end: log.log_end_offset(),
        records: Vec::new(),
    };
    let mut next = out.log_start;
    // Bounded: every round advances `next` by at least one batch, or stops.
    while next < out.log_end {
        let read = log
            .read(next, READ_BYTES, i64::MAX)
            .map_err(|e| format!("read {} at {next}: {e}", src.display()))?;
        let bytes = read.records;
        if bytes.is_empty() {
            break;
        }
        let mut pos = 0;
        let before = next;
        while pos < bytes.len() {
            let header = BatchHeader::parse(&bytes[pos..])
                .map_err(|e| format!("{} at {next}: {e}", src.display()))?;
            let end = pos + header.size();
            if end > bytes.len() {
                return Err(format!(
                    "{}: batch at {next} runs past the read",
                    src.display()
                ));
            }
            let (_, records) = decode_batch(&bytes[pos..end])
                .map_err(|e| format!("{} batch at {}: {e}", src.display(), header.base_offset))?;
            let batch = (
                header.base_offset,
                header.last_offset(),
                header.partition_leader_epoch,
                header.crc,
            );
            for r in records {
                out.records.push(StoredRecord {
                    offset: r.offset,
                    value: r.value.map(|v| String::from_utf8_lossy(&v).into_owned()),
                    batch,
                });
            }
            next = header.next_offset();
            pos = end;
        }
        if next <= before {
            return Err(format!(
                "{}: no progress reading at {before}",
                src.display()
            ));
        }
    }
    Ok(Some(out))
}

/// The high watermarks a node checkpointed in `log_dir` (written periodically and on a clean
/// shutdown), by (topic, partition).
pub fn checkpointed_high_watermarks(
    log_dir: &Path,
) -> Result<std::collections::BTreeMap<(String, i32), i64>, String> {
    let path = log_dir.join(REPLICATION_OFFSET_CHECKPOINT);
    if !path.exists() {
        return Ok(Default::default());
    }
    let map = checkpoint::read_offsets(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(map
        .into_iter()
        .map(|(tp, o)| ((tp.topic, tp.partition), o))
        .collect())
}

fn copy_dir(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else {
            std::fs::copy(entry.path(), to)?;
        }
    }
    Ok(())
}
