//! A `__consumer_offsets` partition this broker leads: its [`ShardState`] behind a lock, its
//! loading, and the background task that fires its deadlines and completes writes once they
//! are committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::group::GroupCoordinatorConfig;
use crate::group::codes;
use crate::group::log::{PartitionLog, load};
use crate::group::state::ShardState;
use crate::partition::Partition;
use crate::replicas::ReplicaManager;

const LOADING: u8 = 0;
const ACTIVE: u8 = 1;
const UNLOADED: u8 = 2;

pub struct Shard {
    pub index: i32,
    pub leader_epoch: i32,
    partition: Arc<Partition>,
    config: Arc<GroupCoordinatorConfig>,
    state: Mutex<ShardState>,
    status: AtomicU8,
    /// Wakes the background task to look at the deadlines again.
    wake: Notify,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Shard {
    /// A shard for `partition`, loading until [`Shard::start`] has replayed the partition.
    pub fn new(
        index: i32,
        partition: Arc<Partition>,
        replicas: Arc<ReplicaManager>,
        config: Arc<GroupCoordinatorConfig>,
    ) -> Arc<Shard> {
        let log = PartitionLog::new(partition.clone(), replicas);
        Arc::new(Shard {
            index,
            leader_epoch: partition.leader_epoch(),
            state: Mutex::new(ShardState::new(config.clone(), Box::new(log))),
            partition,
            config,
            status: AtomicU8::new(LOADING),
            wake: Notify::new(),
            task: Mutex::new(None),
        })
    }

    pub fn partition(&self) -> &Arc<Partition> {
        &self.partition
    }

    /// Loads the partition in the background, then serves.
    pub fn start(self: &Arc<Self>) {
        let shard = self.clone();
        let handle = tokio::spawn(async move {
            let loader = shard.clone();
            let started = std::time::Instant::now();
            let loaded = tokio::task::spawn_blocking(move || {
                let mut st = loader.state.lock();
                let r = load(&loader.partition, &mut st);
                if r.is_ok() {
                    st.on_loaded();
                }
                r
            })
            .await;
            match loaded {
                Ok(Ok(stats)) => {
                    tracing::info!(
                        partition = shard.index,
                        records = stats.records,
                        skipped = stats.skipped,
                        end_offset = stats.end_offset,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "loaded group coordinator partition"
                    );
                    // An unload may have happened meanwhile; it wins.
                    let _ = shard.status.compare_exchange(
                        LOADING,
                        ACTIVE,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                }
                // As in Kafka, a partition that fails to load is not served (NOT_COORDINATOR)
                // until leadership changes.
                Ok(Err(e)) => {
                    tracing::error!(partition = shard.index, error = %e, "could not load group coordinator partition");
                    shard.status.store(UNLOADED, Ordering::SeqCst);
                    return;
                }
                Err(e) => {
                    tracing::error!(partition = shard.index, error = %e, "loading a group coordinator partition panicked");
                    shard.status.store(UNLOADED, Ordering::SeqCst);
                    return;
                }
            }
            shard.drive().await;
        });
        *self.task.lock() = Some(handle);
    }

    /// Stops serving: parked requests get NOT_COORDINATOR and the state is dropped.
    pub fn unload(self: &Arc<Self>) {
        self.status.store(UNLOADED, Ordering::SeqCst);
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
        match self.state.try_lock() {
            Some(mut st) => st.on_unloaded(),
            None => {
                // A load still holds the lock; do not block this thread until it ends.
                let shard = self.clone();
                tokio::task::spawn_blocking(move || shard.state.lock().on_unloaded());
            }
        }
    }

    fn check(&self) -> Result<(), i16> {
        match self.status.load(Ordering::SeqCst) {
            ACTIVE => Ok(()),
            LOADING => Err(codes::COORDINATOR_LOAD_IN_PROGRESS),
            _ => Err(codes::NOT_COORDINATOR),
        }
    }

    /// Runs an operation that may change the state.
    pub fn write<R>(&self, op: impl FnOnce(&mut ShardState) -> R) -> Result<R, i16> {
        self.check()?;
        let r = {
            let mut st = self.state.lock();
            // Unloaded while waiting for the lock.
            self.check()?;
            let r = op(&mut st);
            st.settle();
            r
        };
        // Deadlines or pending writes may have changed.
        self.wake.notify_one();
        Ok(r)
    }

    /// Runs a read-only operation.
    pub fn read<R>(&self, op: impl FnOnce(&ShardState) -> R) -> Result<R, i16> {
        self.check()?;
        let st = self.state.lock();
        self.check()?;
        Ok(op(&st))
    }

    /// Waits until the log is committed up to `end` (an answer that depends on a write must
    /// not be sent earlier), bounded by `offsets.commit.timeout.ms`.
    pub async fn committed(&self, end: i64) -> Result<(), i16> {
        if self
            .partition
            .wait_for_high_watermark(end, self.config.offsets_commit_timeout)
            .await
        {
            Ok(())
        } else if self.partition.is_leader() {
            Err(codes::COORDINATOR_NOT_AVAILABLE)
        } else {
            Err(codes::NOT_COORDINATOR)
        }
    }

    /// Fires deadlines and completes committed writes until the shard is unloaded.
    async fn drive(self: &Arc<Self>) {
        loop {
            let hw = self.partition.hw_advanced();
            tokio::pin!(hw);
            hw.as_mut().enable();
            let wake = self.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let (next, pending_writes) = {
                let mut st = self.state.lock();
                st.fire_timers();
                st.settle();
                (st.next_wakeup(), st.has_deferred())
            };
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut hw, if pending_writes => {}
                _ = &mut wake => {}
                _ = sleep => {}
            }
        }
    }
}
