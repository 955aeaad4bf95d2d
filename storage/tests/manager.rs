//! The log manager end to end: placement of partitions across log directories, Kafka's
//! per-directory checkpoints and clean-shutdown marker, recovery after an unclean stop, the
//! directory lock, DeleteRecords, partition deletion, retention, compaction, the background
//! flusher, and a SIGKILL crash test of the whole manager with its background threads.
//!
//! Everything is checked on disk in Kafka's formats: `<topic>-<partition>` directories,
//! 20-digit segment file names, and the text checkpoints (`0\n<count>\n<topic> <p> <offset>\n…`).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_storage::batch::{Compression, StoredBatches};
use fjord_storage::records::{self, BatchSpec, Record};
use fjord_storage::{
    AppendInfo, Log, LogConfig, LogManager, ManagerConfig, StorageError, TopicPartition, now_ms,
};

const RECOVERY_POINT: &str = "recovery-point-offset-checkpoint";
const LOG_START: &str = "log-start-offset-checkpoint";
const REPLICATION: &str = "replication-offset-checkpoint";
const CLEANER: &str = "cleaner-offset-checkpoint";
const MARKER: &str = ".kafka_cleanshutdown";
const ALL_CHECKPOINTS: [&str; 4] = [RECOVERY_POINT, LOG_START, REPLICATION, CLEANER];

// ---------------------------------------------------------------------------------------------
// helpers

fn topic_config(overrides: &[(&str, &str)]) -> Arc<LogConfig> {
    Arc::new(
        LogConfig::default()
            .with_overrides(overrides.iter().copied())
            .unwrap(),
    )
}

fn manager_config(dirs: &[&Path]) -> ManagerConfig {
    ManagerConfig {
        log_dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
        ..ManagerConfig::default()
    }
}

fn topics(list: &[(&str, Arc<LogConfig>)]) -> HashMap<String, Arc<LogConfig>> {
    list.iter()
        .map(|(t, c)| (t.to_string(), c.clone()))
        .collect()
}

fn open(cfg: &ManagerConfig, topic_configs: &[(&str, Arc<LogConfig>)]) -> LogManager {
    match LogManager::open(cfg.clone(), topics(topic_configs)) {
        Ok(m) => m,
        Err(e) => panic!("LogManager::open failed: {e}"),
    }
}

fn open_err(cfg: &ManagerConfig) -> StorageError {
    match LogManager::open(cfg.clone(), HashMap::new()) {
        Ok(_) => panic!("LogManager::open unexpectedly succeeded"),
        Err(e) => e,
    }
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

/// One batch of keyed records with the current time as timestamp.
fn kv_batch(kvs: &[(&str, &str)]) -> Bytes {
    let pairs: Vec<records::KeyValue<'_>> = kvs
        .iter()
        .map(|(k, v)| (Some(k.as_bytes()), Some(v.as_bytes())))
        .collect();
    records::simple_batch(0, now_ms(), Compression::None, &pairs)
}

/// A batch of `n` records `key-i` / `<prefix>-i` (value padded to `pad` bytes).
fn values_batch(prefix: &str, n: usize, pad: usize) -> Bytes {
    let keys: Vec<String> = (0..n).map(|i| format!("key-{i}")).collect();
    let values: Vec<String> = (0..n)
        .map(|i| {
            let mut v = format!("{prefix}-{i}");
            while v.len() < pad {
                v.push('.');
            }
            v
        })
        .collect();
    let kvs: Vec<(&str, &str)> = keys
        .iter()
        .zip(values.iter())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    kv_batch(&kvs)
}

fn append(log: &Log, batch: &[u8]) -> AppendInfo {
    log.append_as_leader(batch, 0, now_ms()).unwrap()
}

/// (offset, key, value) of one record.
type Rec = (i64, Option<String>, Option<String>);

fn utf8(b: Option<Bytes>) -> Option<String> {
    b.map(|b| String::from_utf8(b.to_vec()).unwrap())
}

/// Every record from `from` to the log end, asserting that the batches tile the log up to its
/// end offset (nothing half-written or missing at the tail).
fn read_from(log: &Log, from: i64) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut next = from;
    for _ in 0..100_000 {
        let r = log.read(next, 1 << 20, i64::MAX).unwrap();
        if r.records.is_empty() {
            break;
        }
        for b in StoredBatches::new(&r.records, 0) {
            let (_, recs) =
                records::decode_batch(&r.records[b.position..b.position + b.header.size()])
                    .unwrap();
            for rec in recs.into_iter().filter(|rec| rec.offset >= next) {
                out.push((rec.offset, utf8(rec.key), utf8(rec.value)));
            }
            next = b.header.next_offset();
        }
    }
    assert_eq!(
        next,
        log.log_end_offset(),
        "{}: batches read back end at the log end offset",
        log.topic_partition()
    );
    out
}

fn read_all(log: &Log) -> Vec<Rec> {
    read_from(log, log.log_start_offset())
}

/// Parse a per-directory offset checkpoint, checking Kafka's text format strictly:
/// `0\n<count>\n` then exactly `count` lines `topic partition offset`, each ending in '\n'.
fn read_checkpoint(path: &Path) -> BTreeMap<(String, i32), i64> {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading checkpoint {}: {e}", path.display()));
    assert!(text.ends_with('\n'), "{}: {text:?}", path.display());
    let lines: Vec<&str> = text[..text.len() - 1].split('\n').collect();
    assert_eq!(lines[0], "0", "{}: version line: {text:?}", path.display());
    let count: usize = lines[1].parse().unwrap();
    assert_eq!(
        lines.len(),
        2 + count,
        "{}: count line agrees with the entries: {text:?}",
        path.display()
    );
    let mut out = BTreeMap::new();
    for line in &lines[2..] {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 3, "{}: entry {line:?}", path.display());
        let prev = out.insert(
            (parts[0].to_string(), parts[1].parse::<i32>().unwrap()),
            parts[2].parse::<i64>().unwrap(),
        );
        assert!(
            prev.is_none(),
            "{}: duplicate entry {line:?}",
            path.display()
        );
    }
    out
}

fn cp_key(topic: &str, partition: i32) -> (String, i32) {
    (topic.to_string(), partition)
}

/// `.log` files of a partition directory: base offset → size in bytes.
fn segment_files(dir: &Path) -> BTreeMap<i64, u64> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(digits) = name.strip_suffix(".log") {
            assert_eq!(digits.len(), 20, "Kafka segment name {name}");
            out.insert(digits.parse().unwrap(), e.metadata().unwrap().len());
        }
    }
    out
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn seg_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// Poll `cond` every 10 ms for at most `limit`; true if it held.
fn poll_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// 1. placement across log directories

#[test]
fn partitions_spread_over_log_dirs_by_fewest_partitions() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    let b = root.path().join("b");

    // First only `a` exists as a log dir and gets three partitions.
    {
        let m = open(&manager_config(&[&a]), &[]);
        for p in 0..3 {
            let log = m.get_or_create(&tp("pre", p)).unwrap();
            append(&log, &kv_batch(&[("k", "pre")]));
        }
        m.shutdown().unwrap();
    }

    // With both dirs, new partitions go to the one holding fewest partitions.
    let cfg = manager_config(&[&a, &b]);
    let m = open(&cfg, &[]);
    assert_eq!(m.log_dirs(), vec![a.clone(), b.clone()]);
    assert_eq!(m.all_logs().len(), 3);
    let mut counts = [3usize, 0usize];
    let new: Vec<TopicPartition> = (0..4)
        .map(|p| tp("alpha", p))
        .chain((0..3).map(|p| tp("beta", p)))
        .collect();
    let mut placed = BTreeMap::new();
    let mut batch_len = BTreeMap::new();
    for t in &new {
        let log = m.get_or_create(t).unwrap();
        let in_a = a.join(t.dir_name());
        let in_b = b.join(t.dir_name());
        assert!(
            in_a.is_dir() != in_b.is_dir(),
            "{t}: exactly one directory named {}",
            t.dir_name()
        );
        let d = if in_a.is_dir() { 0 } else { 1 };
        let min = *counts.iter().min().unwrap();
        assert_eq!(
            counts[d], min,
            "{t} went to dir {d} although counts were {counts:?}"
        );
        counts[d] += 1;
        assert_eq!(log.dir(), [&a, &b][d].join(t.dir_name()).as_path());
        placed.insert(t.clone(), d);
        // The same log comes back from get_or_create and get.
        assert!(Arc::ptr_eq(&log, &m.get_or_create(t).unwrap()));
        assert!(Arc::ptr_eq(&log, &m.get(t).unwrap()));
        let batch = kv_batch(&[("k", &t.to_string())]);
        append(&log, &batch);
        batch_len.insert(t.clone(), batch.len() as u64);
    }
    // 3 pre-existing in a: the first three new ones all go to b.
    for t in &new[..3] {
        assert_eq!(placed[t], 1, "{t} should be placed in the emptier dir b");
    }
    assert!(counts[0].abs_diff(counts[1]) <= 1, "{counts:?}");
    assert_eq!(counts[0] + counts[1], 10);
    assert_eq!(m.all_logs().len(), 10);

    for (t, d) in &placed {
        let pdir = [&a, &b][*d].join(t.dir_name());
        for ext in ["log", "index", "timeindex"] {
            assert!(seg_path(&pdir, 0, ext).is_file(), "{t}: segment .{ext}");
        }
        assert_eq!(
            fs::metadata(seg_path(&pdir, 0, "log")).unwrap().len(),
            batch_len[t],
            "{t}: the appended batch is in the first segment file"
        );
    }
    m.shutdown().unwrap();
    drop(m);

    // Reopen: every partition is found again in the dir it was created in.
    let m = open(&cfg, &[]);
    assert_eq!(m.all_logs().len(), 10);
    for (t, d) in &placed {
        let log = m.get(t).unwrap();
        assert_eq!(log.dir(), [&a, &b][*d].join(t.dir_name()).as_path());
        let recs = read_all(&log);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].2.as_deref(), Some(t.to_string().as_str()));
    }
}

// ---------------------------------------------------------------------------------------------
// 2. clean shutdown

#[test]
fn clean_shutdown_writes_marker_and_checkpoints_and_reopen_consumes_marker() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    let b = root.path().join("b");
    let cfg = manager_config(&[&a, &b]);
    let small = topic_config(&[("segment.bytes", "1024")]);
    let m = open(&cfg, &[("orders", small.clone())]);
    let parts: Vec<TopicPartition> = (0..3)
        .map(|p| tp("orders", p))
        .chain((0..2).map(|p| tp("audit-log", p)))
        .collect();
    let mut expected: BTreeMap<TopicPartition, Vec<Rec>> = BTreeMap::new();
    for (i, t) in parts.iter().enumerate() {
        let log = m.get_or_create(t).unwrap();
        for j in 0..(4 + 3 * i) {
            append(&log, &values_batch(&format!("{t}-{j}"), 1 + j % 4, 40));
        }
        if i % 2 == 0 {
            log.set_high_watermark(log.log_end_offset() - 1);
        }
        expected.insert(t.clone(), read_all(&log));
    }
    assert!(m.get(&tp("orders", 2)).unwrap().num_segments() > 1);
    let leo: BTreeMap<TopicPartition, i64> = m
        .all_logs()
        .iter()
        .map(|l| (l.topic_partition().clone(), l.log_end_offset()))
        .collect();
    let hw: BTreeMap<TopicPartition, i64> = m
        .all_logs()
        .iter()
        .map(|l| (l.topic_partition().clone(), l.high_watermark()))
        .collect();
    let dir_of: BTreeMap<TopicPartition, PathBuf> = m
        .all_logs()
        .iter()
        .map(|l| {
            (
                l.topic_partition().clone(),
                l.dir().parent().unwrap().to_path_buf(),
            )
        })
        .collect();
    for d in [&a, &b] {
        assert!(!d.join(MARKER).exists(), "no marker while running");
    }

    m.shutdown().unwrap();
    m.shutdown().unwrap(); // idempotent
    for d in [&a, &b] {
        assert_eq!(
            fs::read_to_string(d.join(MARKER)).unwrap(),
            r#"{"version":0,"brokerEpoch":-1}"#
        );
        // Exact Kafka text: sorted entries of this dir's partitions at their log end offsets.
        let mut text = String::new();
        let mine: Vec<&TopicPartition> = dir_of
            .iter()
            .filter(|(_, p)| p == &d)
            .map(|(t, _)| t)
            .collect();
        assert!(!mine.is_empty());
        text.push_str(&format!("0\n{}\n", mine.len()));
        for t in &mine {
            text.push_str(&format!("{} {} {}\n", t.topic, t.partition, leo[*t]));
        }
        assert_eq!(fs::read_to_string(d.join(RECOVERY_POINT)).unwrap(), text);
        let hws = read_checkpoint(&d.join(REPLICATION));
        assert_eq!(hws.len(), mine.len());
        for t in &mine {
            assert_eq!(hws[&cp_key(&t.topic, t.partition)], hw[*t], "{t} hw");
        }
    }
    drop(m);

    let m = open(&cfg, &[("orders", small)]);
    for d in [&a, &b] {
        assert!(
            !d.join(MARKER).exists(),
            "the marker is removed right after a clean open"
        );
    }
    assert_eq!(m.all_logs().len(), parts.len());
    for t in &parts {
        let log = m.get(t).unwrap();
        assert_eq!(log.log_end_offset(), leo[t], "{t}");
        assert_eq!(log.recovery_point(), leo[t], "{t}");
        assert_eq!(log.high_watermark(), hw[t], "{t}");
        assert_eq!(read_all(&log), expected[t], "{t}");
    }
    // Appends continue after the reopened end.
    let log = m.get(&parts[0]).unwrap();
    let info = append(&log, &kv_batch(&[("after", "reopen")]));
    assert_eq!(info.first_offset, leo[&parts[0]]);
}

// ---------------------------------------------------------------------------------------------
// 3. unclean stop

#[test]
fn unclean_stop_recovers_and_cuts_a_torn_tail() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    let cfg = manager_config(&[&a]);
    let conf = topic_config(&[("segment.bytes", "2048")]);
    let m = open(&cfg, &[("t", conf.clone())]);
    let l0 = m.get_or_create(&tp("t", 0)).unwrap();
    let l1 = m.get_or_create(&tp("t", 1)).unwrap();
    let mut infos0 = Vec::new();
    for i in 0..30 {
        infos0.push(append(&l0, &values_batch(&format!("zero-{i}"), 3, 30)));
        append(&l1, &values_batch(&format!("one-{i}"), 2, 30));
    }
    assert!(l0.num_segments() > 2, "several segments");
    let before0 = read_all(&l0);
    let before1 = read_all(&l1);
    let (leo0, leo1) = (l0.log_end_offset(), l1.log_end_offset());
    let active0 = *l0.segment_base_offsets().last().unwrap();
    let dir0 = l0.dir().to_path_buf();
    drop((l0, l1));
    drop(m); // no shutdown: no marker
    assert!(!a.join(MARKER).exists());

    // Tear the last batch of t-0: cut its active segment in the middle of that batch.
    let last = infos0.last().unwrap().clone();
    assert!(
        last.first_offset >= active0,
        "the last batch is in the active segment"
    );
    let active_log = seg_path(&dir0, active0, "log");
    let len = fs::metadata(&active_log).unwrap().len();
    let torn_len = len - last.bytes as u64 / 2;
    fs::OpenOptions::new()
        .write(true)
        .open(&active_log)
        .unwrap()
        .set_len(torn_len)
        .unwrap();

    let m = open(&cfg, &[("t", conf.clone())]);
    let l0 = m.get(&tp("t", 0)).unwrap();
    let l1 = m.get(&tp("t", 1)).unwrap();
    assert_eq!(l0.log_end_offset(), last.first_offset, "torn batch cut");
    assert_eq!(
        fs::metadata(&active_log).unwrap().len(),
        len - last.bytes as u64,
        "the file is cut at the last whole batch"
    );
    let kept: Vec<Rec> = before0
        .iter()
        .filter(|r| r.0 < last.first_offset)
        .cloned()
        .collect();
    assert_eq!(read_all(&l0), kept);
    assert_eq!(l1.log_end_offset(), leo1);
    assert_eq!(read_all(&l1), before1);
    assert!(leo0 > l0.log_end_offset());
    // Recovery points moved to the recovered ends, in memory and in the checkpoint.
    assert_eq!(l0.recovery_point(), l0.log_end_offset());
    assert_eq!(l1.recovery_point(), leo1);
    let rp = read_checkpoint(&a.join(RECOVERY_POINT));
    assert_eq!(rp[&cp_key("t", 0)], l0.log_end_offset());
    assert_eq!(rp[&cp_key("t", 1)], leo1);
    // The log continues right after the cut.
    let info = append(&l0, &kv_batch(&[("k", "after-cut")]));
    assert_eq!(info.first_offset, last.first_offset);
    let recs = read_all(&l0);
    assert_eq!(recs.last().unwrap().2.as_deref(), Some("after-cut"));

    // Clean shutdown, then the marker goes missing (as after a crash right after a clean
    // start) and the tail is torn: recovery must run again and cut it.
    let leo0 = l0.log_end_offset();
    let last_len = info.bytes as u64;
    let active0 = *l0.segment_base_offsets().last().unwrap();
    drop((l0, l1));
    m.shutdown().unwrap();
    drop(m);
    fs::remove_file(a.join(MARKER)).unwrap();
    let active_log = seg_path(&dir0, active0, "log");
    let len = fs::metadata(&active_log).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&active_log)
        .unwrap()
        .set_len(len - last_len + 3)
        .unwrap();
    let m = open(&cfg, &[("t", conf)]);
    let l0 = m.get(&tp("t", 0)).unwrap();
    assert_eq!(l0.log_end_offset(), leo0 - 1);
    assert_eq!(fs::metadata(&active_log).unwrap().len(), len - last_len);
    assert_eq!(
        read_checkpoint(&a.join(RECOVERY_POINT))[&cp_key("t", 0)],
        leo0 - 1
    );
    assert_eq!(read_all(&l0), kept);
}

// ---------------------------------------------------------------------------------------------
// 4. directory lock

#[test]
fn log_dir_lock_excludes_a_second_manager_until_the_first_is_dropped() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    let c = root.path().join("c");
    let first = open(&manager_config(&[&a]), &[]);
    first.start_background().unwrap();
    append(
        &first.get_or_create(&tp("t", 0)).unwrap(),
        &kv_batch(&[("k", "v")]),
    );
    assert!(a.join(".lock").is_file());

    match open_err(&manager_config(&[&a])) {
        StorageError::DirectoryLocked(p) => assert_eq!(p, a),
        e => panic!("expected DirectoryLocked, got {e}"),
    }
    // A manager over a free dir plus the locked one fails too, and releases the free one.
    match open_err(&manager_config(&[&c, &a])) {
        StorageError::DirectoryLocked(p) => assert_eq!(p, a),
        e => panic!("expected DirectoryLocked, got {e}"),
    }
    drop(open(&manager_config(&[&c]), &[]));

    // Dropping the first (with its background threads running) releases the lock.
    drop(first);
    let second = open(&manager_config(&[&a]), &[]);
    let log = second.get(&tp("t", 0)).unwrap();
    assert_eq!(log.log_end_offset(), 1);
    match open_err(&manager_config(&[&a])) {
        StorageError::DirectoryLocked(_) => {}
        e => panic!("expected DirectoryLocked, got {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 5. DeleteRecords

fn assert_out_of_range(log: &Log, offset: i64) {
    match log.read(offset, 1 << 20, i64::MAX) {
        Err(StorageError::OffsetOutOfRange {
            offset: o,
            log_start_offset,
            ..
        }) => {
            assert_eq!(o, offset);
            assert_eq!(log_start_offset, log.log_start_offset());
        }
        Err(e) => panic!("read at {offset}: expected OffsetOutOfRange, got {e}"),
        Ok(r) => panic!(
            "read at {offset} below the log start {} returned {} bytes",
            log.log_start_offset(),
            r.records.len()
        ),
    }
}

#[test]
fn delete_records_is_checkpointed_at_once_and_survives_restarts() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    let cfg = manager_config(&[&a]);
    let conf = topic_config(&[("segment.bytes", "700")]);
    let m = open(&cfg, &[("dr", conf.clone())]);
    let t = tp("dr", 0);
    let log = m.get_or_create(&t).unwrap();
    m.get_or_create(&tp("dr", 1)).unwrap();
    for i in 0..12 {
        let info = append(&log, &values_batch(&format!("b{i}"), 5, 20));
        assert_eq!(info.first_offset, i * 5);
    }
    let all = read_all(&log);
    assert!(log.num_segments() > 3);
    // Not past the high watermark (still 0 for a leader that never advanced it).
    assert!(matches!(
        m.delete_records(&t, 23),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert!(read_checkpoint(&a.join(LOG_START)).is_empty());
    assert!(matches!(
        m.delete_records(&tp("nope", 0), 0),
        Err(StorageError::LogOffline(_))
    ));

    log.set_high_watermark(log.log_end_offset());
    assert_eq!(m.delete_records(&t, 23).unwrap(), 23);
    assert_eq!(log.log_start_offset(), 23);
    // Checkpointed at once, before any background checkpoint could run.
    let starts = read_checkpoint(&a.join(LOG_START));
    assert_eq!(starts.get(&cp_key("dr", 0)), Some(&23), "{starts:?}");
    assert!(
        !starts.contains_key(&cp_key("dr", 1)),
        "unmoved starts are not listed"
    );
    // Segments wholly below the new start are gone from disk.
    let segs = segment_files(log.dir());
    let first = *segs.keys().next().unwrap();
    assert!(first <= 23 && first > 0, "{segs:?}");
    assert_eq!(log.segment_base_offsets()[0], first);
    assert_out_of_range(&log, 22);
    assert_out_of_range(&log, 0);
    let expected: Vec<Rec> = all.iter().filter(|r| r.0 >= 23).cloned().collect();
    assert_eq!(read_all(&log), expected);
    let dir = log.dir().to_path_buf();
    drop(log);

    // Unclean restart.
    drop(m);
    let m = open(&cfg, &[("dr", conf.clone())]);
    let log = m.get(&t).unwrap();
    assert_eq!(log.log_start_offset(), 23);
    assert_out_of_range(&log, 22);
    assert_out_of_range(&log, first);
    assert_eq!(read_all(&log), expected);
    assert_eq!(read_checkpoint(&a.join(LOG_START))[&cp_key("dr", 0)], 23);

    // Clean restart.
    drop(log);
    m.shutdown().unwrap();
    drop(m);
    let m = open(&cfg, &[("dr", conf)]);
    let log = m.get(&t).unwrap();
    assert_eq!(log.log_start_offset(), 23);
    assert_out_of_range(&log, 22);
    assert_eq!(read_all(&log), expected);
    assert_eq!(segment_files(&dir).keys().next(), Some(&first));
}

// ---------------------------------------------------------------------------------------------
// 6. deleting partitions

#[test]
fn delete_log_removes_directory_and_checkpoint_entries() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    let cfg = manager_config(&[&a]);
    // t-1 is compacted, so it has an entry in every one of the four checkpoints.
    let compacted = topic_config(&[
        ("cleanup.policy", "compact"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("segment.bytes", "300"),
    ]);
    let m = open(&cfg, &[]);
    let keep = tp("t", 0);
    let gone = tp("t", 1);
    for t in [&keep, &gone] {
        let log = m.get_or_create(t).unwrap();
        if t == &gone {
            log.update_config(compacted.clone());
        }
        for i in 0..5 {
            append(&log, &values_batch(&format!("{t}-{i}"), 3, 10));
        }
        log.roll(now_ms()).unwrap();
        log.set_high_watermark(log.log_end_offset());
        m.delete_records(t, 2).unwrap();
    }
    assert_eq!(m.run_cleaner(), 1);
    m.checkpoint().unwrap();
    for name in ALL_CHECKPOINTS {
        let cp = read_checkpoint(&a.join(name));
        assert!(cp.contains_key(&cp_key("t", 1)), "{name}: {cp:?}");
    }
    let gone_dir = a.join(gone.dir_name());
    assert!(gone_dir.is_dir());

    assert!(m.delete_log(&gone).unwrap());
    assert!(!gone_dir.exists());
    assert!(m.get(&gone).is_none());
    assert_eq!(m.all_logs().len(), 1);
    let leftovers: Vec<String> = file_names(&a)
        .into_iter()
        .filter(|n| n.starts_with("t-1"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    for name in ALL_CHECKPOINTS {
        let cp = read_checkpoint(&a.join(name));
        assert!(!cp.contains_key(&cp_key("t", 1)), "{name}: {cp:?}");
    }
    assert!(read_checkpoint(&a.join(RECOVERY_POINT)).contains_key(&cp_key("t", 0)));
    assert!(read_checkpoint(&a.join(LOG_START)).contains_key(&cp_key("t", 0)));
    assert!(!m.delete_log(&gone).unwrap(), "second delete finds nothing");

    // Recreated, it starts empty.
    let again = m.get_or_create(&gone).unwrap();
    assert_eq!((again.log_start_offset(), again.log_end_offset()), (0, 0));
    assert!(read_all(&again).is_empty());
    assert!(m.delete_log(&gone).unwrap());
    drop(again);
    m.shutdown().unwrap();
    drop(m);

    let m = open(&cfg, &[]);
    assert!(m.get(&gone).is_none());
    assert_eq!(m.all_logs().len(), 1);
    for name in ALL_CHECKPOINTS {
        let cp = read_checkpoint(&a.join(name));
        assert!(!cp.contains_key(&cp_key("t", 1)), "{name}: {cp:?}");
    }
}

/// A stop in the middle of `delete_log` leaves `<topic>-<p>.<id>-delete`: the next start
/// removes it and the partition is not loaded.
#[test]
fn leftover_delete_directory_is_removed_at_open() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    let cfg = manager_config(&[&a]);
    let m = open(&cfg, &[]);
    for p in 0..2 {
        let log = m.get_or_create(&tp("t", p)).unwrap();
        for i in 0..4 {
            append(&log, &values_batch(&format!("{p}-{i}"), 2, 10));
        }
        log.set_high_watermark(3);
    }
    m.checkpoint().unwrap();
    drop(m); // unclean
    // The rename delete_log does first, as Kafka names it.
    let leftover = a.join("t-1.5f0e2c7d9a1b4c3e8f6a0b1c2d3e4f50-delete");
    fs::rename(a.join("t-1"), &leftover).unwrap();
    assert!(seg_path(&leftover, 0, "log").is_file());
    // Another one, as if from a partition this broker never loaded.
    let other = a.join("gone-7.18d3e0f2a11-delete");
    fs::create_dir(&other).unwrap();
    fs::write(seg_path(&other, 0, "log"), b"junk").unwrap();

    let m = open(&cfg, &[]);
    assert!(!leftover.exists());
    assert!(!other.exists());
    assert!(m.get(&tp("t", 1)).is_none());
    assert!(m.get(&tp("t", 0)).is_some());
    assert_eq!(m.all_logs().len(), 1);
    for name in [RECOVERY_POINT, LOG_START, REPLICATION, CLEANER] {
        let cp = read_checkpoint(&a.join(name));
        assert!(!cp.contains_key(&cp_key("t", 1)), "{name}: {cp:?}");
    }
    assert_eq!(read_checkpoint(&a.join(REPLICATION))[&cp_key("t", 0)], 3);
}

/// The same partition in two log directories (a half-finished move, or an operator copying
/// a directory) must not be loaded silently: `open` keeps whichever directory it reads last
/// and the other copy is neither served nor checkpointed, so which data a partition has
/// depends on `log.dirs` order. Kafka refuses to start ("Duplicate log directories for
/// <tp> are found").
#[test]
fn the_same_partition_in_two_log_dirs_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    let b = root.path().join("b");
    for (dir, value) in [(&a, "from-a"), (&b, "from-b")] {
        let m = open(&manager_config(&[dir]), &[]);
        let log = m.get_or_create(&tp("dup", 0)).unwrap();
        append(&log, &kv_batch(&[("k", value)]));
        if dir == &a {
            append(&log, &kv_batch(&[("k", "from-a-2")]));
        }
        drop(log);
        m.shutdown().unwrap();
    }
    match LogManager::open(manager_config(&[&a, &b]), HashMap::new()) {
        Err(fjord_storage::StorageError::DuplicateLog { partition, .. }) => {
            assert_eq!(partition, "dup-0")
        }
        Err(e) => panic!("refused, but with the wrong error: {e}"),
        Ok(m) => {
            let log = m.get(&tp("dup", 0)).unwrap();
            panic!(
                "opened with dup-0 in both dirs; serving {} (log end offset {}), {} logs in total",
                log.dir().display(),
                log.log_end_offset(),
                m.all_logs().len()
            );
        }
    }
}

/// A partition deleted while the broker was down (its `-delete` leftover, or its directory
/// simply gone) keeps its `cleaner-offset-checkpoint` entry forever, and a partition recreated
/// with the same name inherits it: the cleaner then treats `[0, stale offset)` of the new log
/// as already clean and never deduplicates it. Kafka drops checkpoint entries for partitions
/// that have no log (`LogCleanerManager.updateCheckpoints` filters by the current logs).
#[test]
fn cleaner_checkpoint_of_a_partition_deleted_while_down_is_dropped() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    let cfg = manager_config(&[&a]);
    let conf = topic_config(&[
        ("cleanup.policy", "compact"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("segment.bytes", "400"),
    ]);
    // `rounds` values for each of five keys `<prefix>0..4`.
    let write_dupes = |log: &Log, prefix: &str, rounds: usize| {
        for r in 0..rounds {
            for k in 0..5 {
                append(
                    log,
                    &kv_batch(&[(&format!("{prefix}{k}"), &format!("v{r}"))]),
                );
            }
        }
    };
    let m = open(&cfg, &[("c", conf.clone())]);
    let log = m.get_or_create(&tp("c", 0)).unwrap();
    write_dupes(&log, "x", 12);
    log.roll(now_ms()).unwrap();
    log.set_high_watermark(log.log_end_offset());
    assert_eq!(m.run_cleaner(), 1);
    let stale = read_checkpoint(&a.join(CLEANER))[&cp_key("c", 0)];
    assert_eq!(stale, 60);
    drop(log);
    drop(m);
    // delete_log got as far as its rename when the broker stopped.
    fs::rename(a.join("c-0"), a.join("c-0.0123456789abcdef-delete")).unwrap();

    let m = open(&cfg, &[("c", conf)]);
    assert!(m.get(&tp("c", 0)).is_none());
    let cleaner_cp = read_checkpoint(&a.join(CLEANER));
    let stale_listed = cleaner_cp.contains_key(&cp_key("c", 0));

    // The consequence: recreate the partition, write keys `a*` below the stale offset and
    // keys `b*` above it, and compact.
    let log = m.get_or_create(&tp("c", 0)).unwrap();
    write_dupes(&log, "a", 12);
    write_dupes(&log, "b", 8);
    log.roll(now_ms()).unwrap();
    log.set_high_watermark(log.log_end_offset());
    let cleaned = m.run_cleaner();
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for (_, k, _) in read_all(&log) {
        *per_key.entry(k.unwrap()).or_default() += 1;
    }
    assert!(
        !stale_listed,
        "cleaner-offset-checkpoint still lists deleted c-0: {cleaner_cp:?}; after recreating \
         it, run_cleaner() = {cleaned} and records per key are {per_key:?}"
    );
    assert_eq!(cleaned, 1);
    assert_eq!(per_key.len(), 10);
    assert!(per_key.values().all(|n| *n == 1), "{per_key:?}");
}

// ---------------------------------------------------------------------------------------------
// 7. retention

/// Kafka's size-based retention over segment sizes (oldest first): how many leading
/// segments go.
fn expected_size_deletions(sizes: &[u64], retention_bytes: i64) -> usize {
    let total: u64 = sizes.iter().sum();
    if (total as i64) < retention_bytes {
        return 0;
    }
    let mut excess = total as i64 - retention_bytes;
    let mut n = 0;
    for s in sizes {
        if excess - *s as i64 >= 0 {
            excess -= *s as i64;
            n += 1;
        } else {
            break;
        }
    }
    n
}

#[test]
fn retention_by_size_deletes_oldest_segments() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    let m = open(&manager_config(&[&a]), &[]);
    let t = tp("ret", 0);
    let log = m.get_or_create(&t).unwrap();
    let other = m.get_or_create(&tp("other", 0)).unwrap();
    let conf = topic_config(&[("segment.bytes", "1024"), ("retention.bytes", "2500")]);
    m.set_topic_config("ret", conf.clone());
    assert_eq!(*log.config(), *conf);
    assert_ne!(*other.config(), *conf, "only the named topic changes");
    // A config set before the topic has logs applies to logs created later.
    m.set_topic_config("later", conf.clone());
    assert_eq!(*m.get_or_create(&tp("later", 3)).unwrap().config(), *conf);
    for i in 0..24 {
        append(&log, &values_batch(&format!("r{i}"), 3, 60));
        append(&other, &values_batch(&format!("o{i}"), 3, 60));
    }
    let before = segment_files(log.dir());
    assert!(before.len() >= 5, "{before:?}");
    assert_eq!(other.num_segments(), 1);
    let all = read_all(&log);

    // Nothing at or above the high watermark is deleted.
    assert_eq!(m.run_retention(), 0);
    assert_eq!(segment_files(log.dir()), before);

    log.set_high_watermark(log.log_end_offset());
    let sizes: Vec<u64> = before.values().copied().collect();
    let n = expected_size_deletions(&sizes, 2500);
    assert!(n >= 2, "{sizes:?}");
    assert_eq!(m.run_retention(), n);
    let after = segment_files(log.dir());
    let expected_bases: Vec<i64> = before.keys().copied().skip(n).collect();
    assert_eq!(after.keys().copied().collect::<Vec<_>>(), expected_bases);
    let first = expected_bases[0];
    assert_eq!(log.log_start_offset(), first);
    assert_eq!(log.segment_base_offsets(), expected_bases);
    let names = file_names(log.dir());
    for base in before.keys().take(n) {
        for ext in ["log", "index", "timeindex"] {
            assert!(!seg_path(log.dir(), *base, ext).exists());
        }
    }
    assert!(!names.iter().any(|n| n.ends_with(".deleted")), "{names:?}");
    // Kafka stops before the log would drop below retention.bytes.
    assert_eq!(log.size_in_bytes(), after.values().sum::<u64>());
    assert!(log.size_in_bytes() as i64 >= 2500);
    assert!((log.size_in_bytes() - after.values().next().unwrap()) < 2500);
    assert_out_of_range(&log, first - 1);
    let expected: Vec<Rec> = all.iter().filter(|r| r.0 >= first).cloned().collect();
    assert_eq!(read_all(&log), expected);
    assert_eq!(m.run_retention(), 0, "nothing more to delete");
    assert_eq!(other.num_segments(), 1);
    assert_eq!(other.log_start_offset(), 0);
}

#[test]
fn background_retention_deletes_segments_and_shutdown_joins_threads() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    let cfg = ManagerConfig {
        retention_check_interval: Duration::from_millis(50),
        ..manager_config(&[&a])
    };
    let conf = topic_config(&[("segment.bytes", "1024"), ("retention.bytes", "2048")]);
    let m = open(&cfg, &[("bg", conf.clone())]);
    m.start_background().unwrap();
    m.start_background().unwrap(); // a second call starts nothing more
    let log = m.get_or_create(&tp("bg", 0)).unwrap();
    for i in 0..24 {
        append(&log, &values_batch(&format!("r{i}"), 3, 60));
    }
    let before = segment_files(log.dir());
    let sizes: Vec<u64> = before.values().copied().collect();
    let n = expected_size_deletions(&sizes, 2048);
    assert!(n >= 2, "{sizes:?}");
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        segment_files(log.dir()),
        before,
        "not past the high watermark"
    );
    log.set_high_watermark(log.log_end_offset());
    let expected_bases: Vec<i64> = before.keys().copied().skip(n).collect();
    let done = poll_until(Duration::from_secs(5), || {
        log.log_start_offset() == expected_bases[0]
    });
    assert!(
        done,
        "background retention did not run: start {}, segments {:?}",
        log.log_start_offset(),
        log.segment_base_offsets()
    );
    assert_eq!(
        segment_files(log.dir()).keys().copied().collect::<Vec<_>>(),
        expected_bases
    );
    let leo = log.log_end_offset();
    drop(log);
    m.shutdown().unwrap();
    drop(m);
    // Only a joined thread has let go of the manager's state, and with it the dir lock.
    let m = open(&cfg, &[("bg", conf)]);
    let log = m.get(&tp("bg", 0)).unwrap();
    assert_eq!(log.log_start_offset(), expected_bases[0]);
    assert_eq!(log.log_end_offset(), leo);
}

// ---------------------------------------------------------------------------------------------
// 8. compaction

#[test]
fn compaction_through_the_manager_keeps_the_latest_value_per_key() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    let cfg = manager_config(&[&a]);
    let conf = topic_config(&[
        ("cleanup.policy", "compact"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("segment.bytes", "512"),
    ]);
    let m = open(&cfg, &[("cmp", conf.clone())]);
    let t = tp("cmp", 0);
    let log = m.get_or_create(&t).unwrap();
    // A delete-policy log with duplicates that the cleaner must leave alone.
    let plain = m.get_or_create(&tp("plain", 0)).unwrap();
    let mut last_offset: BTreeMap<String, i64> = BTreeMap::new();
    for round in 0..6 {
        for k in 0..10 {
            let key = format!("k{k}");
            let info = append(&log, &kv_batch(&[(&key, &format!("{key}-v{round}"))]));
            last_offset.insert(key.clone(), info.first_offset);
            append(&plain, &kv_batch(&[(&key, &format!("{key}-v{round}"))]));
        }
    }
    log.roll(now_ms()).unwrap();
    let active = log.log_end_offset();
    assert_eq!(*log.segment_base_offsets().last().unwrap(), active);
    for k in 0..5 {
        append(
            &log,
            &kv_batch(&[(&format!("k{k}"), &format!("k{k}-active"))]),
        );
    }
    assert_eq!(*log.segment_base_offsets().last().unwrap(), active);
    let before_segments = log.num_segments();
    assert!(before_segments > 3);
    let closed_bytes_before: u64 = segment_files(log.dir())
        .iter()
        .filter(|(b, _)| **b < active)
        .map(|(_, s)| *s)
        .sum();
    let active_before: Vec<Rec> = read_from(&log, active);
    let plain_before = read_all(&plain);

    // Nothing is cleaned above the high watermark.
    assert_eq!(m.run_cleaner(), 0);
    log.set_high_watermark(log.log_end_offset());
    plain.set_high_watermark(plain.log_end_offset());
    assert_eq!(m.run_cleaner(), 1);

    let check = |log: &Log| {
        let recs = read_all(log);
        let closed: Vec<&Rec> = recs.iter().filter(|r| r.0 < active).collect();
        let mut seen: BTreeMap<String, (i64, String)> = BTreeMap::new();
        for (o, k, v) in &closed {
            let k = k.clone().unwrap();
            let prev = seen.insert(k.clone(), (*o, v.clone().unwrap()));
            assert!(
                prev.is_none(),
                "key {k} kept twice below the active segment"
            );
        }
        assert_eq!(seen.len(), 10, "{seen:?}");
        for (k, (o, v)) in &seen {
            assert_eq!(*v, format!("{k}-v5"), "latest value of {k}");
            assert_eq!(*o, last_offset[k], "offsets are kept as written");
        }
        let active_now: Vec<Rec> = recs.iter().filter(|r| r.0 >= active).cloned().collect();
        assert_eq!(active_now, active_before, "the active segment is untouched");
    };
    check(&log);
    let closed_bytes_after: u64 = segment_files(log.dir())
        .iter()
        .filter(|(b, _)| **b < active)
        .map(|(_, s)| *s)
        .sum();
    assert!(
        closed_bytes_after * 3 < closed_bytes_before,
        "{closed_bytes_before} -> {closed_bytes_after}"
    );
    let names = file_names(log.dir());
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".cleaned") || n.ends_with(".swap") || n.ends_with(".deleted")),
        "{names:?}"
    );
    assert_eq!(
        read_all(&plain),
        plain_before,
        "delete-policy log untouched"
    );
    let cp = read_checkpoint(&a.join(CLEANER));
    assert_eq!(cp.get(&cp_key("cmp", 0)), Some(&active), "{cp:?}");
    assert!(!cp.contains_key(&cp_key("plain", 0)));
    assert_eq!(m.run_cleaner(), 0, "nothing dirty is left");

    drop((log, plain));
    m.shutdown().unwrap();
    drop(m);
    let m = open(&cfg, &[("cmp", conf)]);
    let log = m.get(&t).unwrap();
    check(&log);
    assert_eq!(
        read_checkpoint(&a.join(CLEANER)).get(&cp_key("cmp", 0)),
        Some(&active)
    );
    assert_eq!(m.run_cleaner(), 0);
}

// ---------------------------------------------------------------------------------------------
// 9. background flusher

#[test]
fn background_flusher_honours_flush_ms_and_flushes_rolled_segments() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    let cfg = ManagerConfig {
        flush_check_interval: Duration::from_millis(20),
        checkpoint_interval: Duration::from_millis(30),
        ..manager_config(&[&a])
    };
    let timed = topic_config(&[("flush.ms", "50")]);
    let rolling = topic_config(&[("segment.bytes", "600")]);
    let m = open(&cfg, &[("timed", timed), ("rolling", rolling)]);
    let fast = m.get_or_create(&tp("timed", 0)).unwrap();
    let idle = m.get_or_create(&tp("idle", 0)).unwrap();
    let roll = m.get_or_create(&tp("rolling", 0)).unwrap();
    m.start_background().unwrap();

    for i in 0..5 {
        append(&fast, &values_batch(&format!("f{i}"), 4, 20));
        append(&idle, &values_batch(&format!("i{i}"), 4, 20));
    }
    let leo = fast.log_end_offset();
    assert!(
        poll_until(Duration::from_secs(5), || fast.recovery_point() == leo),
        "flush.ms=50: recovery point {} never reached {leo}",
        fast.recovery_point()
    );
    assert!(
        poll_until(Duration::from_secs(5), || {
            read_checkpoint(&a.join(RECOVERY_POINT)).get(&cp_key("timed", 0)) == Some(&leo)
        }),
        "the background checkpoint records the flushed recovery point"
    );
    // Without flush.ms nothing is flushed while the segment stays active.
    assert_eq!(idle.recovery_point(), 0);

    // Default flush settings: a rolled segment is still flushed promptly.
    let mut n = 0;
    while roll.num_segments() < 3 && n < 100 {
        append(&roll, &values_batch(&format!("r{n}"), 4, 20));
        n += 1;
    }
    assert!(roll.num_segments() >= 3);
    let active = *roll.segment_base_offsets().last().unwrap();
    assert!(
        poll_until(Duration::from_secs(5), || roll.recovery_point() >= active),
        "rolled segments not flushed: recovery point {} < {active}",
        roll.recovery_point()
    );
    assert!(
        poll_until(Duration::from_secs(5), || {
            read_checkpoint(&a.join(RECOVERY_POINT))
                .get(&cp_key("rolling", 0))
                .is_some_and(|o| *o >= active)
        }),
        "checkpointed recovery point of the rolled log"
    );
    assert_eq!(idle.recovery_point(), 0);
    drop((fast, idle, roll));
    m.shutdown().unwrap();
}

// ---------------------------------------------------------------------------------------------
// 10. SIGKILL the whole manager while it appends with its background threads running

const CRASH_TOPIC: &str = "crash";
const CRASH_PARTITIONS: i32 = 4;
const CRASH_ROUNDS: usize = 3;

fn crash_dirs(base: &Path) -> Vec<PathBuf> {
    vec![base.join("d0"), base.join("d1")]
}

fn crash_manager_config(base: &Path) -> ManagerConfig {
    ManagerConfig {
        log_dirs: crash_dirs(base),
        flush_check_interval: Duration::from_millis(10),
        checkpoint_interval: Duration::from_millis(30),
        ..ManagerConfig::default()
    }
}

fn crash_topic_config() -> Arc<LogConfig> {
    // retention.ms=-1: the fixed record timestamps are old; nothing may age out.
    topic_config(&[
        ("segment.bytes", "32768"),
        ("flush.ms", "20"),
        ("retention.ms", "-1"),
    ])
}

fn crash_value(partition: i32, seq: u64, j: usize) -> String {
    format!("p{partition}-s{seq}-r{j}-").repeat(1 + (seq as usize * 7 + j) % 20)
}

fn crash_batch(partition: i32, seq: u64) -> Bytes {
    let n = 1 + (seq % 7) as usize;
    let records: Vec<Record> = (0..n)
        .map(|j| Record {
            offset: j as i64,
            timestamp: 1_700_000_000_000 + seq as i64,
            key: Some(Bytes::from(format!("k{seq}"))),
            value: Some(Bytes::from(crash_value(partition, seq, j))),
            headers: vec![],
        })
        .collect();
    let codec = [Compression::None, Compression::Lz4, Compression::Zstd][(seq % 3) as usize];
    records::encode_batch(&BatchSpec::new(0, codec), &records).unwrap()
}

/// The writer. A no-op unless run by the parent test.
#[test]
fn manager_crash_writer_child() {
    let Ok(base) = std::env::var("FJORD_MANAGER_CRASH_DIR") else {
        return;
    };
    let first_seq: u64 = std::env::var("FJORD_MANAGER_CRASH_SEQ")
        .unwrap()
        .parse()
        .unwrap();
    let base = PathBuf::from(base);
    let m = open(
        &crash_manager_config(&base),
        &[(CRASH_TOPIC, crash_topic_config())],
    );
    m.start_background().unwrap();
    let logs: Vec<Arc<Log>> = (0..CRASH_PARTITIONS)
        .map(|p| m.get_or_create(&tp(CRASH_TOPIC, p)).unwrap())
        .collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "OPEN").unwrap();
    out.flush().unwrap();
    for seq in first_seq..first_seq + 10_000_000 {
        let p = (seq % CRASH_PARTITIONS as u64) as i32;
        let info = logs[p as usize]
            .append_as_leader(&crash_batch(p, seq), 0, now_ms())
            .unwrap();
        writeln!(
            out,
            "ACK {p} {seq} {} {}",
            info.first_offset, info.last_offset
        )
        .unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_of_the_manager_loses_nothing_acknowledged() {
    let base = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let cfg = crash_manager_config(base.path());
    // partition -> (seq, first, last)
    let mut acked: BTreeMap<i32, Vec<(u64, i64, i64)>> = BTreeMap::new();
    let mut next_seq = 0u64;
    for round in 0..CRASH_ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "manager_crash_writer_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FJORD_MANAGER_CRASH_DIR", base.path())
            .env("FJORD_MANAGER_CRASH_SEQ", next_seq.to_string())
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let kill_after = 250 + round * 150 + (std::process::id() as usize % 100);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut round_acks = 0;
        let mut lines = Vec::new();
        while round_acks < kill_after && Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    round_acks += line.starts_with("ACK ") as usize;
                    lines.push(line);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        let mut parsed = 0usize;
        for line in &lines {
            let parts: Vec<&str> = line.split(' ').collect();
            if parts.len() == 5 && parts[0] == "ACK" {
                // A line cut off by the kill does not parse as four numbers.
                if let (Ok(p), Ok(s), Ok(f), Ok(l)) = (
                    parts[1].parse::<i32>(),
                    parts[2].parse::<u64>(),
                    parts[3].parse::<i64>(),
                    parts[4].parse::<i64>(),
                ) {
                    acked.entry(p).or_default().push((s, f, l));
                    next_seq = next_seq.max(s + 1);
                    parsed += 1;
                }
            }
        }
        assert!(
            round_acks > 0,
            "round {round}: the writer acknowledged nothing (exit {status:?}, output {lines:?})"
        );

        let dirs = crash_dirs(base.path());
        for d in &dirs {
            assert!(
                !d.join(MARKER).exists(),
                "round {round}: a killed manager leaves no clean-shutdown marker"
            );
        }
        let started = Instant::now();
        let m = open(&cfg, &[(CRASH_TOPIC, crash_topic_config())]);
        let open_time = started.elapsed();
        assert_eq!(m.all_logs().len(), CRASH_PARTITIONS as usize);
        let mut summary = Vec::new();
        for p in 0..CRASH_PARTITIONS {
            let log = m
                .get(&tp(CRASH_TOPIC, p))
                .unwrap_or_else(|| panic!("round {round}: partition {p} not loaded"));
            let in_dirs = dirs
                .iter()
                .filter(|d| d.join(format!("{CRASH_TOPIC}-{p}")).is_dir())
                .count();
            assert_eq!(
                in_dirs, 1,
                "round {round}: partition {p} in exactly one dir"
            );
            let recs = read_all(&log);
            let found: HashMap<i64, (Option<String>, Option<String>)> =
                recs.into_iter().map(|(o, k, v)| (o, (k, v))).collect();
            let mine = acked.get(&p).map(Vec::as_slice).unwrap_or(&[]);
            let last = mine.iter().map(|a| a.2).max().unwrap_or(-1);
            assert!(
                log.log_end_offset() > last,
                "round {round}: partition {p} ends at {} but {last} was acknowledged",
                log.log_end_offset()
            );
            for (seq, first, last) in mine {
                for (j, offset) in (*first..=*last).enumerate() {
                    let (k, v) = found.get(&offset).unwrap_or_else(|| {
                        panic!("round {round}: partition {p} acknowledged offset {offset} lost")
                    });
                    assert_eq!(k.as_deref(), Some(format!("k{seq}").as_str()));
                    assert_eq!(
                        v.as_deref(),
                        Some(crash_value(p, *seq, j).as_str()),
                        "round {round}: partition {p} offset {offset} corrupted"
                    );
                }
            }
            assert_eq!(log.recovery_point(), log.log_end_offset());
            let parent = log.dir().parent().unwrap().to_path_buf();
            assert_eq!(
                read_checkpoint(&parent.join(RECOVERY_POINT)).get(&cp_key(CRASH_TOPIC, p)),
                Some(&log.log_end_offset()),
                "round {round}: recovery point checkpoint after open"
            );
            summary.push(format!(
                "p{p}: {} acked batches, log end {}, {} segments",
                mine.len(),
                log.log_end_offset(),
                log.num_segments()
            ));
        }
        eprintln!(
            "round {round}: {round_acks} acks this round ({parsed} parsed), reopen took {open_time:?}; {}",
            summary.join("; ")
        );
        // Alternate how the parent lets go: unclean drop, or a clean shutdown (whose marker
        // the next writer's open consumes).
        if round % 2 == 1 {
            m.shutdown().unwrap();
        }
        drop(m);
    }
}
