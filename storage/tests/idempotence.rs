//! Producer state in a partition log: duplicates, sequence and epoch checks at append, and the
//! state surviving an unclean stop (replay), a clean one (snapshot), snapshot plus tail,
//! truncation and segment deletion.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use fjord_storage::producer_state::snapshot_path;
use fjord_storage::records::{BatchSpec, Record, encode_batch};
use fjord_storage::{Compression, LoadParams, Log, LogConfig, StorageError, TopicPartition};

const NOW: i64 = 1_700_000_000_000;

fn config(overrides: &[(&str, &str)]) -> Arc<LogConfig> {
    Arc::new(
        LogConfig::default()
            .with_overrides(overrides.iter().copied())
            .unwrap(),
    )
}

fn open_new(dir: &Path, cfg: Arc<LogConfig>) -> Log {
    Log::open(
        dir,
        TopicPartition::new("p", 0),
        cfg,
        LoadParams::new_log(NOW),
    )
    .unwrap()
}

fn reopen(dir: &Path, clean: bool) -> Log {
    let params = LoadParams {
        recovery_point: 0,
        log_start_offset: 0,
        high_watermark: None,
        clean_shutdown: clean,
        now_ms: NOW,
    };
    Log::open(dir, TopicPartition::new("p", 0), config(&[]), params).unwrap()
}

/// An idempotent batch of `n` records.
fn batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            offset: i as i64,
            timestamp: NOW + i as i64,
            key: None,
            value: Some(Bytes::from(format!("{pid}-{epoch}-{seq}-{i}"))),
            headers: vec![],
        })
        .collect();
    let mut spec = BatchSpec::new(0, Compression::None);
    spec.producer_id = pid;
    spec.producer_epoch = epoch;
    spec.base_sequence = seq;
    encode_batch(&spec, &records).unwrap()
}

/// Appends and returns (first offset, duplicate?).
fn append(log: &Log, b: &Bytes) -> (i64, bool) {
    let info = log.append_as_leader(b, 0, NOW).unwrap();
    (info.first_offset, info.duplicate)
}

fn retained_seqs(log: &Log, pid: i64) -> Vec<(i32, i32)> {
    log.producer_state(pid)
        .map(|e| e.batches().map(|b| (b.first_seq, b.last_seq)).collect())
        .unwrap_or_default()
}

#[test]
fn retries_are_answered_with_the_original_offsets_and_not_appended() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_new(dir.path(), config(&[]));
    let first = batch(1, 0, 0, 3);
    let second = batch(1, 0, 3, 2);
    assert_eq!(append(&log, &first), (0, false));
    assert_eq!(append(&log, &batch(2, 0, 0, 1)), (3, false));
    assert_eq!(append(&log, &second), (4, false));
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(append(&log, &first), (0, true));
    assert_eq!(append(&log, &second), (4, true));
    assert_eq!(log.log_end_offset(), 6, "duplicates are not appended");

    let gap = log.append_as_leader(&batch(1, 0, 9, 1), 0, NOW);
    assert!(
        matches!(gap, Err(StorageError::OutOfOrderSequence(_))),
        "{gap:?}"
    );
    assert_eq!(append(&log, &batch(1, 1, 0, 1)), (6, false));
    let fenced = log.append_as_leader(&batch(1, 0, 5, 1), 0, NOW);
    assert!(
        matches!(fenced, Err(StorageError::InvalidProducerEpoch(_))),
        "{fenced:?}"
    );
    assert_eq!(log.log_end_offset(), 7, "rejected batches are not appended");
}

#[test]
fn a_duplicate_on_a_log_append_time_topic_reports_the_original_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_new(
        dir.path(),
        config(&[("message.timestamp.type", "LogAppendTime")]),
    );
    let b = batch(4, 0, 0, 2);
    let first = log.append_as_leader(&b, 0, NOW + 500).unwrap();
    assert_eq!(first.log_append_time, NOW + 500);
    let retry = log.append_as_leader(&b, 0, NOW + 9_000).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.first_offset, 0);
    assert_eq!(retry.log_append_time, NOW + 500);

    // CreateTime topics answer -1, as for any CreateTime append.
    let dir = tempfile::tempdir().unwrap();
    let log = open_new(dir.path(), config(&[]));
    log.append_as_leader(&b, 0, NOW).unwrap();
    let retry = log.append_as_leader(&b, 0, NOW).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.log_append_time, -1);
}

#[test]
fn concurrent_retries_of_one_batch_append_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open_new(dir.path(), config(&[])));
    append(&log, &batch(8, 0, 0, 1));
    let b = batch(8, 0, 1, 4);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (log, b) = (log.clone(), b.clone());
            std::thread::spawn(move || {
                (0..50)
                    .map(|_| append(&log, &b))
                    .collect::<Vec<(i64, bool)>>()
            })
        })
        .collect();
    let results: Vec<(i64, bool)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(results.iter().filter(|(_, dup)| !dup).count(), 1);
    assert!(
        results.iter().all(|(offset, _)| *offset == 1),
        "{results:?}"
    );
    assert_eq!(log.log_end_offset(), 5);
}

#[test]
fn state_is_rebuilt_from_the_log_after_an_unclean_stop() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open_new(dir.path(), config(&[]));
        for i in 0..7 {
            append(&log, &batch(1, 0, i * 2, 2));
        }
        append(&log, &batch(2, 3, 100, 1));
        // Dropped without close: no clean-shutdown snapshot.
    }
    let log = reopen(dir.path(), false);
    assert_eq!(
        retained_seqs(&log, 1),
        vec![(4, 5), (6, 7), (8, 9), (10, 11), (12, 13)]
    );
    assert_eq!(log.producer_state(2).unwrap().epoch, 3);
    // Every retained batch is still recognised, with its offsets.
    assert_eq!(append(&log, &batch(1, 0, 4, 2)), (4, true));
    assert_eq!(append(&log, &batch(1, 0, 12, 2)), (12, true));
    assert_eq!(append(&log, &batch(2, 3, 100, 1)), (14, true));
    assert!(matches!(
        log.append_as_leader(&batch(1, 0, 20, 1), 0, NOW),
        Err(StorageError::OutOfOrderSequence(_))
    ));
    assert_eq!(append(&log, &batch(1, 0, 14, 1)), (15, false));
}

#[test]
fn a_clean_shutdown_leaves_a_snapshot_that_the_next_open_loads() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open_new(dir.path(), config(&[]));
        append(&log, &batch(5, 0, 0, 3));
        append(&log, &batch(5, 0, 3, 3));
        log.close(NOW).unwrap();
    }
    assert!(
        snapshot_path(dir.path(), 6).exists(),
        "snapshot at the log end"
    );
    let log = reopen(dir.path(), true);
    assert_eq!(retained_seqs(&log, 5), vec![(0, 2), (3, 5)]);
    assert_eq!(append(&log, &batch(5, 0, 3, 3)), (3, true));
}

#[test]
fn snapshot_plus_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open_new(dir.path(), config(&[]));
        append(&log, &batch(1, 0, 0, 2)); // 0-1
        log.roll(NOW).unwrap(); // snapshot at 2
        append(&log, &batch(1, 0, 2, 2)); // 2-3
        append(&log, &batch(2, 0, 0, 1)); // 4
        log.roll(NOW).unwrap(); // snapshot at 5
        append(&log, &batch(1, 0, 4, 1)); // 5
        assert_eq!(log.producer_snapshot_offsets(), vec![2, 5]);
    }
    // Replace the newest snapshot with one that also knows producer 99 (never in the log): if
    // the reopened log knows 99 and the tail batch, it loaded the snapshot and replayed after.
    std::fs::write(
        snapshot_path(dir.path(), 5),
        kafka_snapshot(&[
            (1, 0, 3, 3, 1),
            (2, 0, 0, 4, 0),
            (99, 2, 44, 4, 4), // seqs 40-44 at offsets 0-4
        ]),
    )
    .unwrap();
    let log = reopen(dir.path(), false);
    assert_eq!(log.producer_state(99).unwrap().epoch, 2);
    assert_eq!(retained_seqs(&log, 99), vec![(40, 44)]);
    assert_eq!(retained_seqs(&log, 1), vec![(2, 3), (4, 4)]);
    assert_eq!(append(&log, &batch(1, 0, 4, 1)), (5, true));
    drop(log);

    // Torn snapshots are skipped: the older one plus a longer replay give the truth. (The
    // reopen above wrote one at the log end, 6, from the doctored state; tear it too.)
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".snapshot"))
            .count(),
        3
    );
    for offset in [5, 6] {
        std::fs::write(snapshot_path(dir.path(), offset), b"\x00\x01torn").unwrap();
    }
    let log = reopen(dir.path(), false);
    assert!(log.producer_state(99).is_none());
    assert_eq!(retained_seqs(&log, 1), vec![(0, 1), (2, 3), (4, 4)]);
    assert_eq!(retained_seqs(&log, 2), vec![(0, 0)]);
}

/// A snapshot in Kafka's v1 layout: (producer id, epoch, last seq, last offset, offset delta).
fn kafka_snapshot(entries: &[(i64, i16, i32, i64, i32)]) -> Vec<u8> {
    let mut body = (entries.len() as i32).to_be_bytes().to_vec();
    for (pid, epoch, seq, offset, delta) in entries {
        body.extend_from_slice(&pid.to_be_bytes());
        body.extend_from_slice(&epoch.to_be_bytes());
        body.extend_from_slice(&seq.to_be_bytes());
        body.extend_from_slice(&offset.to_be_bytes());
        body.extend_from_slice(&delta.to_be_bytes());
        body.extend_from_slice(&NOW.to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&(-1i64).to_be_bytes());
    }
    let mut file = 1i16.to_be_bytes().to_vec();
    file.extend_from_slice(&crc32c(&body).to_be_bytes());
    file.extend_from_slice(&body);
    file
}

/// CRC32C (Castagnoli), bitwise: the test's own, independent of the crate under test.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn truncation_forgets_batches_past_the_new_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_new(dir.path(), config(&[]));
    for i in 0..3 {
        append(&log, &batch(1, 0, i * 2, 2)); // 0-1, 2-3, 4-5
    }
    log.roll(NOW).unwrap(); // snapshot at 6
    append(&log, &batch(1, 0, 6, 2)); // 6-7
    log.roll(NOW).unwrap(); // snapshot at 8
    append(&log, &batch(1, 0, 8, 2)); // 8-9
    assert_eq!(log.producer_snapshot_offsets(), vec![6, 8]);

    log.truncate_to(4, NOW).unwrap();
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(
        log.producer_snapshot_offsets(),
        vec![4],
        "snapshots past 4 gone"
    );
    assert!(!snapshot_path(dir.path(), 6).exists());
    assert_eq!(retained_seqs(&log, 1), vec![(0, 1), (2, 3)]);
    assert_eq!(append(&log, &batch(1, 0, 2, 2)), (2, true));
    // The truncated batch is new again.
    assert_eq!(append(&log, &batch(1, 0, 4, 2)), (4, false));

    // Truncating everything forgets every producer.
    log.truncate_fully_and_start_at(50, NOW).unwrap();
    assert!(log.producer_state(1).is_none());
    assert!(log.producer_snapshot_offsets().is_empty());
    assert_eq!(append(&log, &batch(1, 0, 77, 1)), (50, false));
}

#[test]
fn truncation_then_unclean_restart_keeps_the_truncated_state() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open_new(dir.path(), config(&[]));
        append(&log, &batch(3, 0, 0, 1));
        log.roll(NOW).unwrap();
        append(&log, &batch(3, 0, 1, 1));
        append(&log, &batch(3, 0, 2, 1));
        log.truncate_to(2, NOW).unwrap();
    }
    let log = reopen(dir.path(), false);
    assert_eq!(retained_seqs(&log, 3), vec![(0, 0), (1, 1)]);
    assert_eq!(append(&log, &batch(3, 0, 2, 1)), (2, false));
}

#[test]
fn deleted_segments_take_their_snapshots_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_new(dir.path(), config(&[]));
    for i in 0..3 {
        append(&log, &batch(6, 0, i, 1));
        log.roll(NOW).unwrap();
    }
    append(&log, &batch(6, 0, 3, 1));
    assert_eq!(log.producer_snapshot_offsets(), vec![1, 2, 3]);
    log.set_high_watermark(4);
    log.delete_records(2, NOW).unwrap();
    assert_eq!(log.log_start_offset(), 2);
    assert_eq!(log.producer_snapshot_offsets(), vec![2, 3]);
    assert!(!snapshot_path(dir.path(), 1).exists());
    // The in-memory state is untouched by deletion.
    assert_eq!(append(&log, &batch(6, 0, 3, 1)), (3, true));
}

#[test]
fn follower_appends_record_producer_state() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open_new(dir.path(), config(&[]));
    leader.append_as_leader(&batch(9, 1, 0, 2), 4, NOW).unwrap();
    leader.append_as_leader(&batch(9, 1, 2, 1), 4, NOW).unwrap();
    let stored = leader.read(0, 1 << 20, i64::MAX).unwrap().records;

    let fdir = tempfile::tempdir().unwrap();
    let follower = open_new(fdir.path(), config(&[]));
    follower.append_as_follower(&stored, NOW).unwrap();
    assert_eq!(retained_seqs(&follower, 9), vec![(0, 1), (2, 2)]);
    // Were it to become leader, a retry would be recognised.
    assert_eq!(append(&follower, &batch(9, 1, 2, 1)), (2, true));
}
