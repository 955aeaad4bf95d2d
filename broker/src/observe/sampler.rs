//! Gauges read from the broker's state rather than counted as things happen: log sizes,
//! replication health, consumer lag, purgatories, the metadata quorum. [`Sampler::sample`] runs
//! before each scrape (so values are as fresh as the scrape and nothing is computed while no one
//! scrapes); [`Sampler::tick`] runs every few seconds to keep the rebalance rate's window.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_raft::node::ControllerNode;
use parking_lot::Mutex;

use crate::broker::Broker;
use crate::observe::metrics::{self as m, GroupKind, Purgatory, set};

/// The window of the rebalance rate (Kafka's meters use windows of this order).
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Most directory entries visited when sizing the metadata log (it holds a handful of files).
const MAX_METADATA_ENTRIES: usize = 10_000;

pub struct Sampler {
    controller: Option<Arc<ControllerNode>>,
    metadata_log_dir: PathBuf,
    log_dirs: Vec<PathBuf>,
    /// (when, classic rebalances, consumer rebalances) over the last [`RATE_WINDOW`].
    window: Mutex<VecDeque<(Instant, u64, u64)>>,
}

impl Sampler {
    pub fn new(
        controller: Option<Arc<ControllerNode>>,
        metadata_log_dir: PathBuf,
        log_dirs: Vec<PathBuf>,
    ) -> Sampler {
        Sampler {
            controller,
            metadata_log_dir,
            log_dirs,
            window: Mutex::new(VecDeque::new()),
        }
    }

    /// Records the rebalance counts now; returns the per-second rates (classic, consumer) over
    /// the window.
    pub fn tick(&self) -> (f64, f64) {
        let now = Instant::now();
        let classic = m::rebalance_count(GroupKind::Classic);
        let consumer = m::rebalance_count(GroupKind::Consumer);
        let mut w = self.window.lock();
        w.push_back((now, classic, consumer));
        // Keep the newest sample at or before the window's start as the base.
        while w.len() > 1
            && w.get(1)
                .is_some_and(|s| now.duration_since(s.0) >= RATE_WINDOW)
        {
            w.pop_front();
        }
        let Some(&(t0, c0, k0)) = w.front() else {
            return (0.0, 0.0);
        };
        let secs = now.duration_since(t0).as_secs_f64();
        if secs <= 0.0 {
            return (0.0, 0.0);
        }
        (
            classic.saturating_sub(c0) as f64 / secs,
            consumer.saturating_sub(k0) as f64 / secs,
        )
    }

    /// Sets every gauge. Blocking (file system calls, shard locks): run it off the runtime's
    /// worker threads.
    pub fn sample(&self, broker: Option<&Arc<Broker>>) {
        set(
            m::PURGATORY_SIZE,
            &[("purgatory", "produce".into())],
            m::purgatory_size(Purgatory::Produce) as f64,
        );
        set(
            m::PURGATORY_SIZE,
            &[("purgatory", "fetch".into())],
            m::purgatory_size(Purgatory::Fetch) as f64,
        );
        let (classic, consumer) = self.tick();
        set(
            m::REBALANCE_RATE,
            &[("group_type", GroupKind::Classic.label().into())],
            classic,
        );
        set(
            m::REBALANCE_RATE,
            &[("group_type", GroupKind::Consumer.label().into())],
            consumer,
        );
        self.sample_controller();
        if let Some(b) = broker {
            sample_broker(b, &self.log_dirs);
        }
    }

    fn sample_controller(&self) {
        let Some(c) = &self.controller else {
            return;
        };
        let s = c.quorum().status();
        let leader = s.leader.map_or(-1.0, |l| l as f64);
        set(
            m::CONTROLLER_ACTIVE,
            &[],
            if s.leader == Some(s.node_id) {
                1.0
            } else {
                0.0
            },
        );
        set(m::CONTROLLER_LEADER_ID, &[], leader);
        set(m::CONTROLLER_TERM, &[], s.term as f64);
        set(
            m::CONTROLLER_COMMITTED_OFFSET,
            &[],
            s.last_applied.map_or(-1.0, |i| i as f64),
        );
        set(
            m::CONTROLLER_LOG_END_OFFSET,
            &[],
            s.last_log_index.map_or(-1.0, |i| i as f64),
        );
        let dir = self.metadata_log_dir.join("__cluster_metadata-0");
        let mut budget = MAX_METADATA_ENTRIES;
        set(
            m::METADATA_LOG_SIZE,
            &[],
            dir_size(&dir, 3, &mut budget) as f64,
        );
    }
}

fn sample_broker(broker: &Arc<Broker>, log_dirs: &[PathBuf]) {
    let image = broker.image();
    set(m::BROKER_METADATA_OFFSET, &[], image.offset as f64);
    let fenced = image.broker(broker.node_id).is_none_or(|b| b.fenced);
    set(m::BROKER_FENCED, &[], if fenced { 1.0 } else { 0.0 });

    let mut dir_sizes: BTreeMap<PathBuf, u64> =
        log_dirs.iter().map(|d| (d.clone(), 0u64)).collect();
    let (mut leaders, mut under_replicated, mut under_min_isr) = (0u64, 0u64, 0u64);
    for p in broker.replicas.all() {
        let log = p.log();
        let labels = [
            ("topic", p.tp.topic.clone()),
            ("partition", p.tp.partition.to_string()),
        ];
        let size = log.size_in_bytes();
        set(m::LOG_SIZE, &labels, size as f64);
        set(m::LOG_SEGMENTS, &labels, log.num_segments() as f64);
        set(m::LOG_START_OFFSET, &labels, log.log_start_offset() as f64);
        set(m::LOG_END_OFFSET, &labels, log.log_end_offset() as f64);
        if let Some(parent) = log.dir().parent() {
            *dir_sizes.entry(parent.to_path_buf()).or_default() += size;
        }
        let state = p.state();
        if state.leader != broker.node_id {
            continue;
        }
        leaders += 1;
        if state.isr.len() < state.replicas.len() {
            under_replicated += 1;
        }
        let min_isr = broker
            .replicas
            .topic_settings(&p.tp.topic)
            .map_or(1, |s| s.min_insync_replicas);
        if state.isr.len() < min_isr {
            under_min_isr += 1;
        }
    }
    set(m::LEADER_PARTITIONS, &[], leaders as f64);
    set(m::UNDER_REPLICATED, &[], under_replicated as f64);
    set(m::UNDER_MIN_ISR, &[], under_min_isr as f64);
    for (dir, size) in &dir_sizes {
        let label = [("dir", dir.display().to_string())];
        set(m::LOG_DIR_SIZE, &label, *size as f64);
        if let Some((capacity, available)) = fs_space(dir) {
            set(m::LOG_DIR_CAPACITY, &label, capacity as f64);
            set(m::LOG_DIR_AVAILABLE, &label, available as f64);
        }
    }
    sample_groups(broker);
}

fn sample_groups(broker: &Arc<Broker>) {
    let mut counts: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
    for shard in broker.groups.shards() {
        // A shard still loading (or just unloaded) has nothing to report yet.
        let Ok(groups) = shard.read(|st| st.list_groups(&[], &[])) else {
            continue;
        };
        for g in groups {
            *counts.entry((g.group_type, g.state)).or_default() += 1;
            let Ok(lag) = broker.group_lag(&g.group_id) else {
                continue;
            };
            let mut total = 0i64;
            for p in &lag.partitions {
                let Some(l) = p.lag else {
                    continue;
                };
                total += l;
                set(
                    m::CONSUMER_LAG,
                    &[
                        ("group", g.group_id.clone()),
                        ("topic", p.topic.clone()),
                        ("partition", p.partition.to_string()),
                    ],
                    l as f64,
                );
            }
            set(
                m::CONSUMER_GROUP_LAG,
                &[("group", g.group_id.clone())],
                total as f64,
            );
        }
    }
    for ((group_type, state), n) in counts {
        set(
            m::CONSUMER_GROUPS,
            &[("group_type", group_type.into()), ("state", state.into())],
            n as f64,
        );
    }
}

/// Bytes in regular files under `dir`, `depth` levels down at most, visiting at most `budget`
/// entries (the metadata log directory holds a few segment and snapshot files).
fn dir_size(dir: &Path, depth: usize, budget: &mut usize) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_file() {
            total += meta.len();
        } else if meta.is_dir() && depth > 0 {
            total += dir_size(&entry.path(), depth - 1, budget);
        }
    }
    total
}

/// (total, available to unprivileged users) bytes of the file system holding `path`.
fn fs_space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value of the plain C struct.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `s` a valid, exclusively borrowed out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let block = s.f_frsize as u64;
    Some((
        (s.f_blocks as u64).saturating_mul(block),
        (s.f_bavail as u64).saturating_mul(block),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_size_sums_files_within_the_budget() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), [0u8; 10]).unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/b"), [0u8; 5]).unwrap();
        let mut budget = 100;
        assert_eq!(dir_size(d.path(), 3, &mut budget), 15);
        let mut budget = 100;
        assert_eq!(dir_size(d.path(), 0, &mut budget), 10);
        assert_eq!(dir_size(&d.path().join("missing"), 3, &mut budget), 0);
    }

    #[test]
    fn file_system_space_is_known_for_a_directory() {
        let d = tempfile::tempdir().unwrap();
        let (total, available) = fs_space(d.path()).unwrap();
        assert!(total > 0 && available <= total);
    }

    #[test]
    fn rebalance_rate_covers_the_window() {
        let s = Sampler::new(None, PathBuf::new(), Vec::new());
        let (c0, _) = s.tick();
        assert_eq!(c0, 0.0);
        std::thread::sleep(Duration::from_millis(20));
        m::rebalance_completed(GroupKind::Classic);
        let (c1, _) = s.tick();
        // Other tests may complete rebalances concurrently; at least ours counts.
        assert!(c1 > 0.0, "{c1}");
    }
}
