//! Property tests: random batch sequences read back with the right offsets, and a crash at
//! any byte of the last segment recovers to exactly the whole valid batches before it, with
//! indexes that agree with a full scan.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use fjord_storage::batch::{BatchHeader, Compression, StoredBatches};
use fjord_storage::records::{self, BatchSpec, Record};
use fjord_storage::{LoadParams, Log, LogConfig, TopicPartition};
use proptest::prelude::*;

const NOW: i64 = 1_700_000_000_000;
const INDEX_INTERVAL: u64 = 150;

fn codec(i: u8) -> Compression {
    [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ][i as usize % 5]
}

/// (record count, value size, codec, timestamp step)
fn batch_strategy() -> impl Strategy<Value = (usize, usize, u8, i64)> {
    (1usize..12, 0usize..60, 0u8..5, -5i64..50)
}

fn make_batch(n: usize, size: usize, c: u8, ts: i64, seq: usize) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            offset: i as i64,
            timestamp: ts + i as i64,
            key: (i % 3 != 0).then(|| Bytes::from(format!("key-{seq}-{i}"))),
            value: Some(Bytes::from(vec![(seq % 251) as u8; size])),
            headers: vec![],
        })
        .collect();
    records::encode_batch(&BatchSpec::new(0, codec(c)), &records).unwrap()
}

fn config(segment_bytes: u64) -> Arc<LogConfig> {
    let seg = segment_bytes.to_string();
    let interval = INDEX_INTERVAL.to_string();
    Arc::new(
        LogConfig::default()
            .with_overrides([
                ("segment.bytes", seg.as_str()),
                ("index.interval.bytes", interval.as_str()),
            ])
            .unwrap(),
    )
}

fn open(dir: &Path, cfg: Arc<LogConfig>, clean: bool) -> Log {
    let params = LoadParams {
        recovery_point: 0,
        log_start_offset: 0,
        high_watermark: None,
        clean_shutdown: clean,
        now_ms: NOW,
    };
    Log::open(dir, TopicPartition::new("p", 0), cfg, params).unwrap()
}

/// (base offset, last offset, record count) of every batch, read through the log's API.
fn read_batches(log: &Log) -> Vec<(i64, i64, i32)> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    for _ in 0..100_000 {
        let r = log.read(next, 700, i64::MAX).unwrap();
        if r.records.is_empty() {
            break;
        }
        for b in StoredBatches::new(&r.records, 0) {
            out.push((
                b.header.base_offset,
                b.header.last_offset(),
                b.header.records_count,
            ));
            next = b.header.next_offset();
        }
    }
    out
}

fn segment_files(dir: &Path) -> Vec<i64> {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .map(|s| s.parse().unwrap())
        })
        .collect();
    bases.sort();
    bases
}

/// The offset and time index entries Kafka's rule gives for a segment's batches, computed here
/// independently of the storage code, including the final time entry written at close.
fn expected_indexes(data: &[u8], base: i64) -> (Vec<u8>, Vec<u8>) {
    let (mut offsets, mut times) = (Vec::new(), Vec::new());
    let (mut since, mut max_ts, mut max_ts_offset, mut last_time_entry) =
        (0u64, -1i64, base, -1i64);
    let mut pos = 0usize;
    while pos < data.len() {
        let h = BatchHeader::parse(&data[pos..]).unwrap();
        if h.max_timestamp > max_ts {
            max_ts = h.max_timestamp;
            max_ts_offset = h.last_offset();
        }
        if since > INDEX_INTERVAL {
            offsets.extend_from_slice(&((h.last_offset() - base) as u32).to_be_bytes());
            offsets.extend_from_slice(&(pos as u32).to_be_bytes());
            if max_ts > last_time_entry {
                times.extend_from_slice(&max_ts.to_be_bytes());
                times.extend_from_slice(&((max_ts_offset - base) as u32).to_be_bytes());
                last_time_entry = max_ts;
            }
            since = 0;
        }
        since += h.size() as u64;
        pos += h.size();
    }
    if max_ts > last_time_entry {
        times.extend_from_slice(&max_ts.to_be_bytes());
        times.extend_from_slice(&((max_ts_offset - base) as u32).to_be_bytes());
    }
    (offsets, times)
}

fn assert_indexes_match_full_scan(dir: &Path) {
    for base in segment_files(dir) {
        let data = std::fs::read(dir.join(format!("{base:020}.log"))).unwrap();
        let (offsets, times) = expected_indexes(&data, base);
        assert_eq!(
            std::fs::read(dir.join(format!("{base:020}.index"))).unwrap(),
            offsets,
            "offset index of {base}"
        );
        assert_eq!(
            std::fs::read(dir.join(format!("{base:020}.timeindex"))).unwrap(),
            times,
            "time index of {base}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_batches_read_back_with_the_right_offsets(
        batches in prop::collection::vec(batch_strategy(), 1..40),
        segment_bytes in 1100u64..4000,
        rolls in prop::collection::vec(any::<bool>(), 40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), config(segment_bytes), true);
        let mut expected = Vec::new();
        let mut ts = NOW;
        for (i, (n, size, c, step)) in batches.iter().enumerate() {
            ts += step;
            let info = log.append_as_leader(&make_batch(*n, *size, *c, ts, i), 1, NOW).unwrap();
            prop_assert_eq!(info.last_offset - info.first_offset + 1, *n as i64);
            expected.push((info.first_offset, info.last_offset, *n as i32));
            if rolls[i] {
                log.roll(NOW).unwrap();
            }
        }
        prop_assert_eq!(read_batches(&log), expected.clone());
        // Every offset finds the batch that holds it.
        for (base, last, _) in &expected {
            for o in [*base, *last, (*base + *last) / 2] {
                let r = log.read(o, 1, i64::MAX).unwrap();
                let h = StoredBatches::new(&r.records, 0).next().unwrap().header;
                prop_assert!(h.base_offset <= o && o <= h.last_offset());
            }
        }
        // Record-level decode sees consecutive offsets.
        let mut next = 0;
        for (base, last, _) in &expected {
            let r = log.read(*base, 1, i64::MAX).unwrap();
            let (_, recs) = records::decode_batch(&r.records[..BatchHeader::parse(&r.records).unwrap().size()]).unwrap();
            for rec in recs {
                prop_assert_eq!(rec.offset, next);
                next += 1;
            }
            prop_assert_eq!(next, last + 1);
        }
        log.close(NOW).unwrap();
        assert_indexes_match_full_scan(dir.path());
        let reopened = open(dir.path(), config(segment_bytes), true);
        prop_assert_eq!(read_batches(&reopened), expected);
    }

    #[test]
    fn a_crash_at_any_byte_recovers_exactly_the_whole_batches_before_it(
        batches in prop::collection::vec(batch_strategy(), 1..30),
        segment_bytes in 1100u64..3000,
        cut_fraction in 0.0f64..=1.0,
        garbage in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(segment_bytes);
        let mut appended = Vec::new();
        {
            let log = open(dir.path(), cfg.clone(), true);
            for (i, (n, size, c, step)) in batches.iter().enumerate() {
                let info = log.append_as_leader(&make_batch(*n, *size, *c, NOW + step, i), 0, NOW).unwrap();
                appended.push((info.first_offset, info.last_offset, *n as i32));
            }
            // Dropped without close: an unclean stop, indexes still preallocated.
        }
        let bases = segment_files(dir.path());
        let last = *bases.last().unwrap();
        let path = dir.path().join(format!("{last:020}.log"));
        let data = std::fs::read(&path).unwrap();
        let cut = ((data.len() as f64) * cut_fraction) as usize;
        let mut torn = data[..cut].to_vec();
        torn.extend_from_slice(&garbage);
        std::fs::write(&path, &torn).unwrap();

        // Expected: batches of earlier segments, plus those of the last segment that lie
        // wholly within the cut.
        let mut kept_in_last = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let h = BatchHeader::parse(&data[pos..]).unwrap();
            if pos + h.size() > cut {
                break;
            }
            kept_in_last.push((h.base_offset, h.last_offset(), h.records_count));
            pos += h.size();
        }
        let mut expected: Vec<(i64, i64, i32)> = appended.iter().copied().filter(|(b, _, _)| *b < last).collect();
        expected.extend(kept_in_last);
        // Garbage that happens to form a valid batch is vanishingly unlikely (it needs a CRC32C
        // match); the assertion below would show it.
        let log = open(dir.path(), cfg.clone(), false);
        prop_assert_eq!(read_batches(&log), expected.clone());
        let leo = expected.last().map_or(last, |(_, l, _)| l + 1);
        prop_assert_eq!(log.log_end_offset(), leo.max(last));
        prop_assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, pos.min(cut));
        log.close(NOW).unwrap();
        assert_indexes_match_full_scan(dir.path());
        // And the log keeps working where it left off.
        let log = open(dir.path(), cfg, true);
        let info = log.append_as_leader(&make_batch(2, 5, 0, NOW, 999), 0, NOW).unwrap();
        prop_assert_eq!(info.first_offset, leo.max(last));
    }
}
