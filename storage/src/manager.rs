//! The log manager: every partition log across one or more log directories, their
//! checkpoints, and the background work (flush, retention, checkpointing, compaction).
//!
//! Each log directory holds partition directories (`<topic>-<partition>`), a `.lock` file held
//! with `flock` while the manager runs, and Kafka's per-directory checkpoints. A clean shutdown
//! writes `.kafka_cleanshutdown`; its absence at startup means every log recovers from its
//! recovery point.
//!
//! File handles: a closed segment is read through a memory mapping and keeps no descriptor, so
//! each log holds one descriptor for its active segment plus, briefly, one per rolled segment
//! awaiting its fsync — open files grow with partitions, not with segments.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::checkpoint::{self, TopicPartition};
use crate::cleaner;
use crate::config::LogConfig;
use crate::error::{IoContext, StorageError};
use crate::log::{LoadParams, Log};
use crate::now_ms;

const LOCK_FILE: &str = ".lock";
const DELETE_DIR_SUFFIX: &str = "-delete";

#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// `log.dirs`
    pub log_dirs: Vec<PathBuf>,
    /// Broker-wide defaults for every log (`log.*` settings, as topic-level names).
    pub default_config: LogConfig,
    /// How often the flusher checks `flush.ms` and rolled segments (`log.flush.scheduler.interval.ms`).
    pub flush_check_interval: Duration,
    /// `log.retention.check.interval.ms`
    pub retention_check_interval: Duration,
    /// `log.flush.offset.checkpoint.interval.ms`
    pub checkpoint_interval: Duration,
    /// `log.cleaner.enable`
    pub cleaner_enabled: bool,
    /// `log.cleaner.backoff.ms`: pause between cleaner passes.
    pub cleaner_backoff: Duration,
    /// Keys the cleaner's offset map may hold in one pass (bounds its memory).
    pub cleaner_max_map_entries: usize,
    /// `num.recovery.threads.per.data.dir`
    pub recovery_threads: usize,
    /// `producer.id.expiration.ms`: idle producers' state is dropped after this long.
    pub producer_id_expiration_ms: i64,
    /// `producer.id.expiration.check.interval.ms`
    pub producer_id_expiration_check_interval: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            log_dirs: vec![PathBuf::from("./data")],
            default_config: LogConfig::default(),
            flush_check_interval: Duration::from_secs(1),
            retention_check_interval: Duration::from_secs(300),
            checkpoint_interval: Duration::from_secs(60),
            cleaner_enabled: true,
            cleaner_backoff: Duration::from_secs(15),
            cleaner_max_map_entries: 4_000_000,
            recovery_threads: 2,
            producer_id_expiration_ms: 24 * 60 * 60 * 1000,
            producer_id_expiration_check_interval: Duration::from_secs(600),
        }
    }
}

struct LogDir {
    path: PathBuf,
    /// Holds the `flock` for as long as the manager lives.
    _lock: File,
    /// First dirty offset per compacted partition (`cleaner-offset-checkpoint`).
    cleaner_offsets: Mutex<BTreeMap<TopicPartition, i64>>,
}

struct Entry {
    log: Arc<Log>,
    dir: usize,
}

struct Inner {
    config: ManagerConfig,
    dirs: Vec<LogDir>,
    logs: RwLock<BTreeMap<TopicPartition, Entry>>,
    topic_configs: RwLock<HashMap<String, Arc<LogConfig>>>,
    stop: Mutex<bool>,
    wake: Condvar,
    /// Serialises checkpoint writes.
    checkpoint_lock: Mutex<()>,
}

pub struct LogManager {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    shut_down: Mutex<bool>,
}

/// Take an exclusive, non-blocking `flock` on `<dir>/.lock`.
fn lock_dir(dir: &Path) -> Result<File, StorageError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .at_path(&path)?;
    // Safety: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(StorageError::DirectoryLocked(dir.to_path_buf()));
    }
    Ok(file)
}

impl LogManager {
    /// Open every log under `config.log_dirs`, recovering after an unclean stop.
    /// `topic_configs` gives per-topic overrides already known (from cluster metadata).
    pub fn open(
        config: ManagerConfig,
        topic_configs: HashMap<String, Arc<LogConfig>>,
    ) -> Result<LogManager, StorageError> {
        let mut dirs = Vec::new();
        let mut logs = BTreeMap::new();
        for (dir_index, path) in config.log_dirs.iter().enumerate() {
            fs::create_dir_all(path).at_path(path)?;
            let lock = lock_dir(path)?;
            let marker = path.join(checkpoint::CLEAN_SHUTDOWN_MARKER);
            let clean_shutdown = marker.exists();
            let recovery =
                checkpoint::read_offsets(&path.join(checkpoint::RECOVERY_POINT_CHECKPOINT))?;
            let starts =
                checkpoint::read_offsets(&path.join(checkpoint::LOG_START_OFFSET_CHECKPOINT))?;
            let hws =
                checkpoint::read_offsets(&path.join(checkpoint::REPLICATION_OFFSET_CHECKPOINT))?;
            let cleaner_offsets =
                checkpoint::read_offsets(&path.join(checkpoint::CLEANER_OFFSET_CHECKPOINT))?;

            let mut partitions = Vec::new();
            for entry in fs::read_dir(path).at_path(path)? {
                let entry = entry.at_path(path)?;
                if !entry.file_type().at_path(&entry.path())?.is_dir() {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(DELETE_DIR_SUFFIX) {
                    // A topic deletion that did not finish before the stop.
                    fs::remove_dir_all(entry.path()).at_path(&entry.path())?;
                    continue;
                }
                if let Some(tp) = TopicPartition::from_dir_name(&name) {
                    partitions.push((tp, entry.path()));
                }
            }
            let started = Instant::now();
            let now = now_ms();
            let opened = open_parallel(partitions, config.recovery_threads.max(1), |tp, dir| {
                let log_config = topic_configs
                    .get(&tp.topic)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(config.default_config.clone()));
                let params = LoadParams {
                    recovery_point: recovery.get(tp).copied().unwrap_or(0),
                    log_start_offset: starts.get(tp).copied().unwrap_or(0),
                    high_watermark: hws.get(tp).copied(),
                    clean_shutdown,
                    now_ms: now,
                };
                Log::open(dir, tp.clone(), log_config, params)
            })?;
            tracing::info!(dir = %path.display(), logs = opened.len(), clean_shutdown, elapsed_ms = started.elapsed().as_millis() as u64, "loaded log directory");
            for log in opened {
                let tp = log.topic_partition().clone();
                if let Some(other) = logs.get(&tp) {
                    let first: &Entry = other;
                    return Err(StorageError::DuplicateLog {
                        partition: tp.to_string(),
                        first: first.log.dir().to_path_buf(),
                        second: log.dir().to_path_buf(),
                    });
                }
                logs.insert(
                    tp,
                    Entry {
                        log: Arc::new(log),
                        dir: dir_index,
                    },
                );
            }
            // Entries for partitions without a log (deleted while we were down) must not
            // carry over to a partition created later under the same name.
            let cleaner_offsets: BTreeMap<TopicPartition, i64> = cleaner_offsets
                .into_iter()
                .filter(|(tp, _)| logs.get(tp).is_some_and(|e| e.dir == dir_index))
                .collect();
            if clean_shutdown {
                // From here on a crash must be treated as unclean.
                fs::remove_file(&marker).at_path(&marker)?;
                checkpoint::sync_dir(path)?;
            }
            dirs.push(LogDir {
                path: path.clone(),
                _lock: lock,
                cleaner_offsets: Mutex::new(cleaner_offsets),
            });
        }
        let inner = Arc::new(Inner {
            config,
            dirs,
            logs: RwLock::new(logs),
            topic_configs: RwLock::new(topic_configs),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            checkpoint_lock: Mutex::new(()),
        });
        // Recovery points moved to the recovered log ends; record them now.
        inner.write_checkpoints()?;
        Ok(LogManager {
            inner,
            threads: Mutex::new(Vec::new()),
            shut_down: Mutex::new(false),
        })
    }

    /// Start the background flusher/retention/checkpoint thread and the cleaner thread.
    pub fn start_background(&self) -> std::io::Result<()> {
        let mut threads = self.threads.lock();
        if !threads.is_empty() {
            return Ok(());
        }
        let inner = self.inner.clone();
        threads.push(
            std::thread::Builder::new()
                .name("log-maintenance".into())
                .spawn(move || inner.maintenance_loop())?,
        );
        if self.inner.config.cleaner_enabled {
            let inner = self.inner.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("log-cleaner".into())
                    .spawn(move || inner.cleaner_loop())?,
            );
        }
        Ok(())
    }

    pub fn log_dirs(&self) -> Vec<PathBuf> {
        self.inner.dirs.iter().map(|d| d.path.clone()).collect()
    }

    pub fn get(&self, tp: &TopicPartition) -> Option<Arc<Log>> {
        self.inner.logs.read().get(tp).map(|e| e.log.clone())
    }

    pub fn all_logs(&self) -> Vec<Arc<Log>> {
        self.inner
            .logs
            .read()
            .values()
            .map(|e| e.log.clone())
            .collect()
    }

    /// The log for `tp`, created in the log directory holding the fewest partitions.
    pub fn get_or_create(&self, tp: &TopicPartition) -> Result<Arc<Log>, StorageError> {
        if let Some(log) = self.get(tp) {
            return Ok(log);
        }
        let mut logs = self.inner.logs.write();
        if let Some(e) = logs.get(tp) {
            return Ok(e.log.clone());
        }
        let mut counts = vec![0usize; self.inner.dirs.len()];
        for e in logs.values() {
            counts[e.dir] += 1;
        }
        let dir = (0..counts.len()).min_by_key(|i| counts[*i]).unwrap_or(0);
        let config = self.inner.config_for(&tp.topic);
        let path = self.inner.dirs[dir].path.join(tp.dir_name());
        let log = Arc::new(Log::open(
            &path,
            tp.clone(),
            config,
            LoadParams::new_log(now_ms()),
        )?);
        checkpoint::sync_dir(&self.inner.dirs[dir].path)?;
        logs.insert(
            tp.clone(),
            Entry {
                log: log.clone(),
                dir,
            },
        );
        Ok(log)
    }

    /// Set a topic's effective config (defaults plus overrides) and apply it to its logs.
    pub fn set_topic_config(&self, topic: &str, config: Arc<LogConfig>) {
        self.inner
            .topic_configs
            .write()
            .insert(topic.to_string(), config.clone());
        for (tp, e) in self.inner.logs.read().iter() {
            if tp.topic == topic {
                e.log.update_config(config.clone());
            }
        }
    }

    /// Delete a partition's log: the directory is renamed `…-delete` (finished at the next
    /// start if we stop now) and then removed. Readers holding data keep their mappings.
    pub fn delete_log(&self, tp: &TopicPartition) -> Result<bool, StorageError> {
        let Some(entry) = self.inner.logs.write().remove(tp) else {
            return Ok(false);
        };
        let dir = &self.inner.dirs[entry.dir];
        dir.cleaner_offsets.lock().remove(tp);
        let from = entry.log.dir().to_path_buf();
        let to = dir.path.join(format!(
            "{}.{:x}{}",
            tp.dir_name(),
            now_ms(),
            DELETE_DIR_SUFFIX
        ));
        fs::rename(&from, &to).at_path(&to)?;
        checkpoint::sync_dir(&dir.path)?;
        fs::remove_dir_all(&to).at_path(&to)?;
        self.inner.write_checkpoints()?;
        Ok(true)
    }

    /// DeleteRecords for one partition; the new log start offset is checkpointed at once so a
    /// restart never resurrects deleted records.
    pub fn delete_records(&self, tp: &TopicPartition, offset: i64) -> Result<i64, StorageError> {
        let log = self
            .get(tp)
            .ok_or_else(|| StorageError::LogOffline(tp.to_string()))?;
        let start = log.delete_records(offset, now_ms())?;
        self.inner.write_checkpoints()?;
        Ok(start)
    }

    /// Write all checkpoints now.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        self.inner.write_checkpoints()
    }

    /// Run one retention pass over every log now (tests and admin tools).
    pub fn run_retention(&self) -> usize {
        self.inner.retention_pass()
    }

    /// Run one compaction pass over every compacted log now.
    pub fn run_cleaner(&self) -> usize {
        self.inner.cleaner_pass()
    }

    /// Stop background work, flush and close every log, write checkpoints and the
    /// clean-shutdown marker. After this the next open skips recovery.
    pub fn shutdown(&self) -> Result<(), StorageError> {
        let mut done = self.shut_down.lock();
        if *done {
            return Ok(());
        }
        self.stop_threads();
        let now = now_ms();
        let mut first_error = None;
        for log in self.all_logs() {
            if let Err(e) = log.close(now) {
                tracing::error!(partition = %log.topic_partition(), error = %e, "failed to close log");
                first_error.get_or_insert(e);
            }
        }
        self.inner.write_checkpoints()?;
        if let Some(e) = first_error {
            // Without every log closed cleanly, the next start must recover.
            return Err(e);
        }
        for dir in &self.inner.dirs {
            let marker = dir.path.join(checkpoint::CLEAN_SHUTDOWN_MARKER);
            let mut f = File::create(&marker).at_path(&marker)?;
            f.write_all(b"{\"version\":0,\"brokerEpoch\":-1}")
                .at_path(&marker)?;
            f.sync_all().at_path(&marker)?;
            checkpoint::sync_dir(&dir.path)?;
        }
        *done = true;
        tracing::info!("log manager shut down cleanly");
        Ok(())
    }

    fn stop_threads(&self) {
        *self.inner.stop.lock() = true;
        self.inner.wake.notify_all();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for LogManager {
    fn drop(&mut self) {
        // Without `shutdown` no marker is written: the next start recovers, as after a crash.
        self.stop_threads();
    }
}

impl Inner {
    fn config_for(&self, topic: &str) -> Arc<LogConfig> {
        self.topic_configs
            .read()
            .get(topic)
            .cloned()
            .unwrap_or_else(|| Arc::new(self.config.default_config.clone()))
    }

    fn entries(&self) -> Vec<(Arc<Log>, usize)> {
        self.logs
            .read()
            .values()
            .map(|e| (e.log.clone(), e.dir))
            .collect()
    }

    /// Sleep up to `d`; true if asked to stop.
    fn sleep(&self, d: Duration) -> bool {
        let mut stop = self.stop.lock();
        if !*stop {
            self.wake.wait_for(&mut stop, d);
        }
        *stop
    }

    fn maintenance_loop(&self) {
        let tick = self
            .config
            .flush_check_interval
            .min(self.config.retention_check_interval)
            .min(self.config.checkpoint_interval)
            .min(self.config.producer_id_expiration_check_interval);
        let (mut last_retention, mut last_checkpoint) = (Instant::now(), Instant::now());
        let mut last_expiry = Instant::now();
        while !self.sleep(tick) {
            let now = now_ms();
            for (log, _) in self.entries() {
                if let Err(e) = log.flush_if_due(now) {
                    tracing::error!(partition = %log.topic_partition(), error = %e, "background flush failed");
                }
            }
            if last_retention.elapsed() >= self.config.retention_check_interval {
                self.retention_pass();
                last_retention = Instant::now();
            }
            if last_expiry.elapsed() >= self.config.producer_id_expiration_check_interval {
                self.expire_producers(now);
                last_expiry = Instant::now();
            }
            if last_checkpoint.elapsed() >= self.config.checkpoint_interval {
                if let Err(e) = self.write_checkpoints() {
                    tracing::error!(error = %e, "writing checkpoints failed");
                }
                last_checkpoint = Instant::now();
            }
        }
    }

    fn expire_producers(&self, now: i64) -> usize {
        let mut removed = 0;
        for (log, _) in self.entries() {
            removed += log.remove_expired_producers(now, self.config.producer_id_expiration_ms);
        }
        if removed > 0 {
            tracing::debug!(removed, "expired idle producer ids");
        }
        removed
    }

    fn retention_pass(&self) -> usize {
        let now = now_ms();
        let mut deleted = 0;
        for (log, _) in self.entries() {
            match log.apply_retention(now) {
                Ok(n) => deleted += n,
                Err(e) => {
                    tracing::error!(partition = %log.topic_partition(), error = %e, "retention failed")
                }
            }
        }
        if deleted > 0
            && let Err(e) = self.write_checkpoints()
        {
            tracing::error!(error = %e, "writing checkpoints failed");
        }
        deleted
    }

    fn cleaner_loop(&self) {
        while !self.sleep(self.config.cleaner_backoff) {
            self.cleaner_pass();
        }
    }

    /// Clean every compacted log that needs it, dirtiest first. Returns logs cleaned.
    fn cleaner_pass(&self) -> usize {
        let now = now_ms();
        let mut candidates = Vec::new();
        for (log, dir) in self.entries() {
            if !log.config().cleanup_policy.compact {
                continue;
            }
            let first_dirty = self.dirs[dir]
                .cleaner_offsets
                .lock()
                .get(log.topic_partition())
                .copied();
            if let Some(c) = cleaner::cleanable(&log, first_dirty, now)
                && cleaner::needs_cleaning(&log, first_dirty, now)
            {
                candidates.push((c.dirty_ratio, log, dir, first_dirty));
            }
        }
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut cleaned = 0;
        for (_, log, dir, first_dirty) in candidates {
            if *self.stop.lock() {
                break;
            }
            match cleaner::clean_log(&log, first_dirty, now, self.config.cleaner_max_map_entries) {
                Ok(stats) => {
                    cleaned += 1;
                    self.dirs[dir]
                        .cleaner_offsets
                        .lock()
                        .insert(log.topic_partition().clone(), stats.end_offset);
                    tracing::info!(partition = %log.topic_partition(), bytes_before = stats.bytes_before, bytes_after = stats.bytes_after, "compacted log");
                }
                Err(e) => {
                    tracing::error!(partition = %log.topic_partition(), error = %e, "compaction failed")
                }
            }
        }
        if cleaned > 0
            && let Err(e) = self.write_checkpoints()
        {
            tracing::error!(error = %e, "writing checkpoints failed");
        }
        cleaned
    }

    /// Write every directory's recovery-point, log-start, high-watermark and cleaner checkpoints.
    fn write_checkpoints(&self) -> Result<(), StorageError> {
        let _one = self.checkpoint_lock.lock();
        let entries = self.entries();
        for (i, dir) in self.dirs.iter().enumerate() {
            let (mut recovery, mut starts, mut hws) =
                (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
            for (log, _) in entries.iter().filter(|(_, d)| *d == i) {
                let tp = log.topic_partition().clone();
                recovery.insert(tp.clone(), log.recovery_point());
                hws.insert(tp.clone(), log.high_watermark());
                // Kafka lists only logs whose start moved past their first segment.
                let start = log.log_start_offset();
                if log
                    .segment_base_offsets()
                    .first()
                    .is_some_and(|b| start > *b)
                {
                    starts.insert(tp, start);
                }
            }
            checkpoint::write_offsets(
                &dir.path.join(checkpoint::RECOVERY_POINT_CHECKPOINT),
                &recovery,
            )?;
            checkpoint::write_offsets(
                &dir.path.join(checkpoint::LOG_START_OFFSET_CHECKPOINT),
                &starts,
            )?;
            checkpoint::write_offsets(
                &dir.path.join(checkpoint::REPLICATION_OFFSET_CHECKPOINT),
                &hws,
            )?;
            let cleaner = dir.cleaner_offsets.lock().clone();
            checkpoint::write_offsets(
                &dir.path.join(checkpoint::CLEANER_OFFSET_CHECKPOINT),
                &cleaner,
            )?;
        }
        Ok(())
    }
}

/// Open logs on up to `threads` threads (recovery is CPU-bound CRC checking).
fn open_parallel(
    partitions: Vec<(TopicPartition, PathBuf)>,
    threads: usize,
    open: impl Fn(&TopicPartition, &Path) -> Result<Log, StorageError> + Sync,
) -> Result<Vec<Log>, StorageError> {
    let chunk = partitions.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = partitions
            .chunks(chunk)
            .map(|part| {
                scope.spawn(|| {
                    part.iter()
                        .map(|(tp, dir)| open(tp, dir))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            match h.join() {
                Ok(logs) => out.extend(logs?),
                Err(_) => {
                    return Err(StorageError::LogOffline(
                        "a log failed to load (loader panicked)".into(),
                    ));
                }
            }
        }
        Ok(out)
    })
}
