//! Behaviour of one partition log: appends, reads, rolls, indexes, timestamps, follower
//! appends, truncation, retention and recovery.

use std::sync::Arc;

use bytes::Bytes;
use fjord_storage::batch::{self, BatchHeader, Compression, StoredBatches};
use fjord_storage::records::{self, BatchSpec, Record};
use fjord_storage::{LoadParams, Log, LogConfig, StorageError, TopicPartition};

const NOW: i64 = 1_700_000_000_000;

fn config(overrides: &[(&str, &str)]) -> Arc<LogConfig> {
    Arc::new(
        LogConfig::default()
            .with_overrides(overrides.iter().copied())
            .unwrap(),
    )
}

fn open(dir: &std::path::Path, cfg: Arc<LogConfig>) -> Log {
    Log::open(
        dir,
        TopicPartition::new("t", 0),
        cfg,
        LoadParams::new_log(NOW),
    )
    .unwrap()
}

fn reopen(dir: &std::path::Path, cfg: Arc<LogConfig>, clean: bool, recovery_point: i64) -> Log {
    let params = LoadParams {
        recovery_point,
        log_start_offset: 0,
        high_watermark: None,
        clean_shutdown: clean,
        now_ms: NOW,
    };
    Log::open(dir, TopicPartition::new("t", 0), cfg, params).unwrap()
}

/// A producer-style batch (offsets from 0) of `n` records with values `prefix-i`.
fn producer_batch(n: usize, ts: i64, codec: Compression, prefix: &str) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            offset: i as i64,
            timestamp: ts + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("{prefix}-{i}"))),
            headers: vec![],
        })
        .collect();
    records::encode_batch(&BatchSpec::new(0, codec), &records).unwrap()
}

/// Every record readable from `from`, as (offset, value).
fn read_all(log: &Log, from: i64) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut next = from;
    for _ in 0..10_000 {
        let r = log.read(next, 1 << 20, i64::MAX).unwrap();
        if r.records.is_empty() {
            break;
        }
        for b in StoredBatches::new(&r.records, 0) {
            let (_, recs) =
                records::decode_batch(&r.records[b.position..b.position + b.header.size()])
                    .unwrap();
            for rec in recs.into_iter().filter(|rec| rec.offset >= next) {
                out.push((
                    rec.offset,
                    String::from_utf8(rec.value.unwrap().to_vec()).unwrap(),
                ));
            }
            next = b.header.next_offset();
        }
    }
    out
}

#[test]
fn appends_assign_offsets_and_read_back_zero_copy() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(&[]));
    let a = log
        .append_as_leader(&producer_batch(3, NOW, Compression::None, "a"), 5, NOW)
        .unwrap();
    assert_eq!((a.first_offset, a.last_offset, a.record_count), (0, 2, 3));
    let b = log
        .append_as_leader(&producer_batch(2, NOW + 10, Compression::Zstd, "b"), 5, NOW)
        .unwrap();
    assert_eq!((b.first_offset, b.last_offset), (3, 4));
    assert_eq!(b.max_timestamp, NOW + 11);
    assert_eq!(log.log_end_offset(), 5);

    let r = log.read(0, 1 << 20, i64::MAX).unwrap();
    let batches: Vec<BatchHeader> = StoredBatches::new(&r.records, 0)
        .map(|b| b.header)
        .collect();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[1].base_offset, 3);
    assert_eq!(batches[1].partition_leader_epoch, 5);
    // The stamped batch still passes its CRC: base offset and epoch lie outside it.
    let mut v = batch::BatchList::new();
    batch::split_batches(&r.records, batch::Validation::Stored, usize::MAX, &mut v).unwrap();
    assert_eq!(read_all(&log, 0).len(), 5);
    // A read from the middle of a batch starts at that batch.
    let mid = log.read(4, 1, i64::MAX).unwrap();
    assert_eq!(
        StoredBatches::new(&mid.records, 0)
            .next()
            .unwrap()
            .header
            .base_offset,
        3
    );
}

#[test]
fn read_returns_at_least_one_batch_and_honours_max_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(&[]));
    for _ in 0..4 {
        log.append_as_leader(&producer_batch(10, NOW, Compression::None, "x"), 0, NOW)
            .unwrap();
    }
    let one = log.read(0, 1, i64::MAX).unwrap();
    assert_eq!(
        StoredBatches::new(&one.records, 0).count(),
        1,
        "one whole batch even over max_bytes"
    );
    let two = log.read(0, one.records.len() * 2, i64::MAX).unwrap();
    assert_eq!(StoredBatches::new(&two.records, 0).count(), 2);
    let bounded = log.read(0, 1 << 20, 20).unwrap();
    assert_eq!(
        StoredBatches::new(&bounded.records, 0).count(),
        2,
        "only batches below max_offset"
    );
    assert!(log.read(20, 1 << 20, 20).unwrap().records.is_empty());
    assert!(log.read(40, 1 << 20, i64::MAX).unwrap().records.is_empty());
    assert!(matches!(
        log.read(41, 100, i64::MAX),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        log.read(-1, 100, i64::MAX),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn rolls_by_size_and_time_and_names_segments_like_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        config(&[("segment.bytes", "500"), ("segment.ms", "60000")]),
    );
    for i in 0..10 {
        log.append_as_leader(&producer_batch(5, NOW + i, Compression::None, "v"), 0, NOW)
            .unwrap();
    }
    assert!(log.num_segments() > 2);
    let bases = log.segment_base_offsets();
    for base in &bases {
        for ext in ["log", "index", "timeindex"] {
            assert!(
                dir.path().join(format!("{base:020}.{ext}")).exists(),
                "{base} {ext}"
            );
        }
    }
    assert_eq!(read_all(&log, 0).len(), 50);
    // A batch whose timestamp is past segment.ms from the segment's first batch rolls.
    let n = log.num_segments();
    log.append_as_leader(
        &producer_batch(1, NOW + 61_000, Compression::None, "late"),
        0,
        NOW,
    )
    .unwrap();
    assert_eq!(log.num_segments(), n + 1);
    // Closed segments' indexes are trimmed to their entries.
    let closed = bases[0];
    let len = std::fs::metadata(dir.path().join(format!("{closed:020}.index")))
        .unwrap()
        .len();
    assert_eq!(len % 8, 0);
    assert!(len < 10 * 1024 * 1024);
}

#[test]
fn sparse_index_entries_every_interval_and_lookup_by_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(&[("index.interval.bytes", "200")]));
    for _ in 0..50 {
        log.append_as_leader(&producer_batch(4, NOW, Compression::None, "value"), 0, NOW)
            .unwrap();
    }
    log.roll(NOW).unwrap();
    let index = std::fs::read(dir.path().join("00000000000000000000.index")).unwrap();
    assert!(index.len() >= 8 * 5, "several entries");
    let data = std::fs::read(dir.path().join("00000000000000000000.log")).unwrap();
    // Every entry points at the start of a batch whose last offset is the entry's offset.
    for e in index.chunks(8) {
        let rel = u32::from_be_bytes([e[0], e[1], e[2], e[3]]) as i64;
        let pos = u32::from_be_bytes([e[4], e[5], e[6], e[7]]) as usize;
        let h = BatchHeader::parse(&data[pos..]).unwrap();
        assert_eq!(h.last_offset(), rel);
    }
    for target in [0, 1, 57, 101, 199] {
        let r = log.read(target, 1, i64::MAX).unwrap();
        let h = StoredBatches::new(&r.records, 0).next().unwrap().header;
        assert!(h.base_offset <= target && target <= h.last_offset());
    }
}

#[test]
fn offsets_by_time_earliest_latest_and_max_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        config(&[("segment.bytes", "600"), ("index.interval.bytes", "100")]),
    );
    // Batch i holds timestamps 1000*i .. 1000*i+2; batch 7 has the largest, and is gzip.
    for i in 0..10i64 {
        let ts = if i == 7 { 50_000 } else { 1000 * i };
        let codec = if i == 7 {
            Compression::Gzip
        } else {
            Compression::None
        };
        log.append_as_leader(&producer_batch(3, ts, codec, "t"), 0, NOW)
            .unwrap();
    }
    let found = log.offset_for_timestamp(3001).unwrap().unwrap();
    assert_eq!((found.offset, found.timestamp), (10, 3001));
    let found = log.offset_for_timestamp(3003).unwrap().unwrap();
    assert_eq!((found.offset, found.timestamp), (12, 4000));
    assert_eq!(log.offset_for_timestamp(0).unwrap().unwrap().offset, 0);
    assert_eq!(
        log.offset_for_timestamp(50_002).unwrap().unwrap().offset,
        23
    );
    assert_eq!(log.offset_for_timestamp(50_003).unwrap(), None);
    let max = log.max_timestamp_offset().unwrap().unwrap();
    assert_eq!((max.offset, max.timestamp), (23, 50_002));
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(log.log_end_offset(), 30);
}

#[test]
fn log_append_time_is_stamped_with_a_valid_crc() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        config(&[("message.timestamp.type", "LogAppendTime")]),
    );
    let info = log
        .append_as_leader(&producer_batch(3, 5, Compression::Lz4, "lat"), 0, NOW)
        .unwrap();
    assert_eq!(info.log_append_time, NOW);
    let r = log.read(0, 1 << 20, i64::MAX).unwrap();
    let mut v = batch::BatchList::new();
    batch::split_batches(&r.records, batch::Validation::Stored, usize::MAX, &mut v).unwrap();
    assert_eq!(
        v[0].header.timestamp_type(),
        batch::TimestampType::LogAppendTime
    );
    let (_, recs) = records::decode_batch(&r.records).unwrap();
    assert!(recs.iter().all(|r| r.timestamp == NOW));
}

#[test]
fn bad_batches_are_rejected_with_typed_errors_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(&[("max.message.bytes", "300")]));
    let good = producer_batch(2, NOW, Compression::None, "ok").to_vec();

    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    assert!(matches!(
        log.append_as_leader(&bad_crc, 0, NOW),
        Err(StorageError::CorruptRecord { .. })
    ));

    let mut bad_magic = good.clone();
    bad_magic[batch::MAGIC] = 1;
    assert!(matches!(
        log.append_as_leader(&bad_magic, 0, NOW),
        Err(StorageError::UnsupportedMagic(1))
    ));

    assert!(matches!(
        log.append_as_leader(&good[..good.len() - 3], 0, NOW),
        Err(StorageError::CorruptRecord { .. })
    ));
    assert!(matches!(
        log.append_as_leader(&[], 0, NOW),
        Err(StorageError::InvalidRecord(_))
    ));

    let big = producer_batch(40, NOW, Compression::None, "a-long-enough-value").to_vec();
    assert!(matches!(
        log.append_as_leader(&big, 0, NOW),
        Err(StorageError::RecordTooLarge { .. })
    ));

    // A record count that disagrees with lastOffsetDelta, re-CRC'd so only the count is wrong.
    let mut miscounted = good.clone();
    miscounted[batch::RECORDS_COUNT..batch::RECORDS_COUNT + 4].copy_from_slice(&3i32.to_be_bytes());
    let crc = batch::compute_crc(&miscounted);
    miscounted[batch::CRC..batch::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        log.append_as_leader(&miscounted, 0, NOW),
        Err(StorageError::InvalidRecord(_))
    ));

    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_in_bytes(), 0);
    log.append_as_leader(&good, 0, NOW).unwrap();
    assert_eq!(log.log_end_offset(), 2);
}

#[test]
fn follower_appends_keep_leader_offsets_and_truncate_divergent_tails() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = open(leader_dir.path(), config(&[("segment.bytes", "500")]));
    let follower = open(follower_dir.path(), config(&[("segment.bytes", "500")]));
    for epoch in [1, 1, 2, 2, 3] {
        leader
            .append_as_leader(&producer_batch(3, NOW, Compression::None, "r"), epoch, NOW)
            .unwrap();
    }
    let mut next = 0;
    while next < leader.log_end_offset() {
        let r = leader.read(next, 200, i64::MAX).unwrap();
        let info = follower.append_as_follower(&r.records, NOW).unwrap();
        next = info.last_offset + 1;
    }
    assert_eq!(follower.log_end_offset(), 15);
    assert_eq!(read_all(&follower, 0), read_all(&leader, 0));
    assert_eq!(follower.end_offset_for_epoch(1), (1, 6));
    assert_eq!(follower.end_offset_for_epoch(2), (2, 12));
    assert_eq!(follower.end_offset_for_epoch(3), (3, 15));
    // Re-appending old offsets is refused.
    let again = leader.read(0, 100, i64::MAX).unwrap();
    assert!(matches!(
        follower.append_as_follower(&again.records, NOW),
        Err(StorageError::UnexpectedAppendOffset { .. })
    ));

    // A new leader diverged after offset 6: truncate there, epochs follow.
    assert!(follower.truncate_to(6, NOW).unwrap());
    assert_eq!(follower.log_end_offset(), 6);
    assert_eq!(follower.latest_epoch(), Some(1));
    assert_eq!(read_all(&follower, 0).len(), 6);
    // Truncating into the middle of a batch removes the whole batch.
    follower.truncate_to(4, NOW).unwrap();
    assert_eq!(follower.log_end_offset(), 3);
    // Appends continue after truncation.
    let r = leader.read(3, 1 << 20, i64::MAX).unwrap();
    follower.append_as_follower(&r.records, NOW).unwrap();
    assert_eq!(read_all(&follower, 0), read_all(&leader, 0));
    follower.truncate_fully_and_start_at(100, NOW).unwrap();
    assert_eq!(
        (follower.log_start_offset(), follower.log_end_offset()),
        (100, 100)
    );
    assert!(follower.epoch_entries().is_empty());
}

#[test]
fn truncation_keeps_data_already_handed_to_readers_intact() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(&[]));
    for _ in 0..3 {
        log.append_as_leader(&producer_batch(10, NOW, Compression::None, "held"), 0, NOW)
            .unwrap();
    }
    let held = log.read(20, 1 << 20, i64::MAX).unwrap().records;
    log.truncate_to(10, NOW).unwrap();
    // The slice still reads (no SIGBUS): truncation copied rather than shrinking under it.
    let (_, recs) = records::decode_batch(&held).unwrap();
    assert_eq!(recs.len(), 10);
    assert_eq!(log.log_end_offset(), 10);
    drop(held);
    log.append_as_leader(&producer_batch(1, NOW, Compression::None, "after"), 0, NOW)
        .unwrap();
    assert_eq!(read_all(&log, 0).len(), 11);
}

#[test]
fn retention_by_time_and_size_and_delete_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        config(&[("segment.bytes", "400"), ("retention.ms", "60000")]),
    );
    for i in 0..12i64 {
        // The first six batches are old.
        let ts = if i < 6 { NOW - 120_000 } else { NOW };
        log.append_as_leader(&producer_batch(3, ts, Compression::None, "r"), 0, NOW)
            .unwrap();
    }
    log.set_high_watermark(log.log_end_offset());
    let before = log.num_segments();
    let deleted = log.apply_retention(NOW).unwrap();
    assert!(deleted > 0 && log.num_segments() == before - deleted);
    assert!(log.log_start_offset() > 0 && log.log_start_offset() <= 18);
    assert!(matches!(
        log.read(0, 100, i64::MAX),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert!(
        read_all(&log, log.log_start_offset())
            .iter()
            .all(|(o, _)| *o >= 18 || *o >= log.log_start_offset())
    );

    // Size: shrink to about one segment.
    log.update_config(config(&[
        ("segment.bytes", "400"),
        ("retention.ms", "-1"),
        ("retention.bytes", "400"),
    ]));
    log.apply_retention(NOW).unwrap();
    assert!(log.size_in_bytes() <= 800, "size {}", log.size_in_bytes());
    assert_eq!(log.log_end_offset(), 36);

    // DeleteRecords cannot pass the high watermark.
    assert!(matches!(
        log.delete_records(37, NOW),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    let start = log.delete_records(35, NOW).unwrap();
    assert_eq!(start, 35);
    assert_eq!(read_all(&log, 35).len(), 1);
}

#[test]
fn expired_active_segment_is_rolled_then_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(&[("retention.ms", "1000")]));
    log.append_as_leader(
        &producer_batch(3, NOW - 10_000, Compression::None, "old"),
        0,
        NOW,
    )
    .unwrap();
    log.set_high_watermark(3);
    assert_eq!(log.apply_retention(NOW).unwrap(), 1);
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.num_segments()
        ),
        (3, 3, 1)
    );
    let info = log
        .append_as_leader(&producer_batch(1, NOW, Compression::None, "new"), 0, NOW)
        .unwrap();
    assert_eq!(info.first_offset, 3);
}

#[test]
fn clean_reopen_restores_offsets_without_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("segment.bytes", "700"), ("index.interval.bytes", "100")]);
    {
        let log = open(dir.path(), cfg.clone());
        for i in 0..20 {
            log.append_as_leader(
                &producer_batch(3, NOW + i, Compression::Snappy, "c"),
                2,
                NOW,
            )
            .unwrap();
        }
        log.close(NOW).unwrap();
    }
    let log = reopen(dir.path(), cfg, true, 0);
    assert_eq!(log.log_end_offset(), 60);
    assert_eq!(log.latest_epoch(), Some(2));
    assert_eq!(read_all(&log, 0).len(), 60);
    // Batch 17 holds timestamps NOW+17..NOW+19 at offsets 51..53.
    assert_eq!(
        log.offset_for_timestamp(NOW + 19).unwrap().unwrap().offset,
        53
    );
    log.append_as_leader(&producer_batch(1, NOW, Compression::None, "more"), 2, NOW)
        .unwrap();
    assert_eq!(log.log_end_offset(), 61);
}

#[test]
fn unclean_reopen_truncates_a_torn_tail_and_rebuilds_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("index.interval.bytes", "100")]);
    let sizes: Vec<u64>;
    {
        let log = open(dir.path(), cfg.clone());
        for _ in 0..10 {
            log.append_as_leader(&producer_batch(4, NOW, Compression::None, "torn"), 0, NOW)
                .unwrap();
        }
        sizes = vec![log.size_in_bytes()];
        // No close: the process "dies" with preallocated indexes.
    }
    let path = dir.path().join("00000000000000000000.log");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(sizes[0] - 7).unwrap();
    let log = reopen(dir.path(), cfg, false, 0);
    assert_eq!(log.log_end_offset(), 36, "the torn last batch is gone");
    assert_eq!(read_all(&log, 0).len(), 36);
    let index = std::fs::metadata(dir.path().join("00000000000000000000.index"))
        .unwrap()
        .len();
    assert_eq!(
        index,
        10 * 1024 * 1024,
        "active index is preallocated again"
    );
    log.append_as_leader(&producer_batch(1, NOW, Compression::None, "x"), 0, NOW)
        .unwrap();
    assert_eq!(log.log_end_offset(), 37);
}

#[test]
fn corrupt_batch_in_the_middle_drops_it_and_everything_after() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("segment.bytes", "400")]);
    {
        let log = open(dir.path(), cfg.clone());
        for _ in 0..10 {
            log.append_as_leader(&producer_batch(3, NOW, Compression::None, "c"), 0, NOW)
                .unwrap();
        }
    }
    // Flip a byte inside the second segment's first batch.
    let mut bases: Vec<i64> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .strip_suffix(".log")
                .map(|s| s.parse().unwrap())
        })
        .collect();
    bases.sort();
    assert!(bases.len() >= 3);
    let victim = dir.path().join(format!("{:020}.log", bases[1]));
    let mut data = std::fs::read(&victim).unwrap();
    data[70] ^= 0x55;
    std::fs::write(&victim, &data).unwrap();
    let log = reopen(dir.path(), cfg, false, 0);
    assert_eq!(log.log_end_offset(), bases[1]);
    assert_eq!(log.num_segments(), 2);
    assert_eq!(read_all(&log, 0).len() as i64, bases[1]);
}

#[test]
fn fsync_per_append_advances_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(&[("flush.messages", "1")]));
    log.append_as_leader(&producer_batch(3, NOW, Compression::None, "d"), 0, NOW)
        .unwrap();
    assert_eq!(log.recovery_point(), 3);
    let lazy_dir = tempfile::tempdir().unwrap();
    let lazy = open(lazy_dir.path(), config(&[]));
    lazy.append_as_leader(&producer_batch(3, NOW, Compression::None, "d"), 0, NOW)
        .unwrap();
    assert_eq!(lazy.recovery_point(), 0);
    lazy.flush(NOW).unwrap();
    assert_eq!(lazy.recovery_point(), 3);
}

#[test]
fn a_corrupt_base_offset_outside_the_crc_is_cut_at_recovery_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[]);
    let second_batch_at;
    {
        let log = open(dir.path(), cfg.clone());
        log.append_as_leader(&producer_batch(3, NOW, Compression::None, "a"), 0, NOW)
            .unwrap();
        second_batch_at = log.size_in_bytes() as usize;
        log.append_as_leader(&producer_batch(3, NOW, Compression::None, "b"), 0, NOW)
            .unwrap();
    }
    // The base offset is not covered by the CRC: the batch still "checks out" but claims an
    // offset near i64::MAX.
    let path = dir.path().join("00000000000000000000.log");
    let mut data = std::fs::read(&path).unwrap();
    data[second_batch_at..second_batch_at + 8].copy_from_slice(&(i64::MAX - 1).to_be_bytes());
    std::fs::write(&path, &data).unwrap();
    let log = reopen(dir.path(), cfg, false, 0);
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(read_all(&log, 0).len(), 3);
}
