//! The group coordinator of a broker: which `__consumer_offsets` partitions it leads (one
//! [`Shard`] each, loaded when leadership arrives and dropped when it goes), which shard a
//! group belongs to, and the creation of `__consumer_offsets` through the controller the first
//! time a client looks for a coordinator.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fjord_raft::MetadataImage;
use fjord_raft::client::ControllerClient;
use fjord_raft::controller::requests::{ControllerRequest, ControllerResponse, CreatableTopic};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::group::codes;
use crate::group::shard::Shard;
use crate::group::{GroupCoordinatorConfig, OFFSETS_TOPIC, partition_for};
use crate::replicas::ReplicaManager;

/// Least time between two attempts to create `__consumer_offsets` (clients retry
/// FindCoordinator often; a creation the controller refuses should not be retried as often).
const CREATE_BACKOFF: Duration = Duration::from_secs(1);
/// Bound on one creation request to the controller.
const CREATE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct GroupCoordinator {
    config: Arc<GroupCoordinatorConfig>,
    replicas: Arc<ReplicaManager>,
    controller: Arc<ControllerClient>,
    shards: RwLock<HashMap<i32, Arc<Shard>>>,
    /// When the topic's creation was last attempted, and whether one is in flight.
    creation: Mutex<(Option<Instant>, bool)>,
    watcher: Mutex<Option<JoinHandle<()>>>,
}

impl GroupCoordinator {
    pub fn new(
        config: GroupCoordinatorConfig,
        replicas: Arc<ReplicaManager>,
        controller: Arc<ControllerClient>,
    ) -> Arc<GroupCoordinator> {
        Arc::new(GroupCoordinator {
            config: Arc::new(config),
            replicas,
            controller,
            shards: RwLock::new(HashMap::new()),
            creation: Mutex::new((None, false)),
            watcher: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &GroupCoordinatorConfig {
        &self.config
    }

    /// Follows the applied metadata images: loads the partitions this broker comes to lead
    /// and unloads the ones it stops leading.
    pub fn start(self: &Arc<Self>, mut images: watch::Receiver<Arc<MetadataImage>>) {
        let this = self.clone();
        let handle = tokio::spawn(async move {
            loop {
                let image = images.borrow_and_update().clone();
                this.reconcile(&image);
                if images.changed().await.is_err() {
                    return;
                }
            }
        });
        if let Some(old) = self.watcher.lock().replace(handle) {
            old.abort();
        }
    }

    /// Stops following leadership and unloads every shard.
    pub fn shutdown(&self) {
        if let Some(w) = self.watcher.lock().take() {
            w.abort();
        }
        let shards: Vec<Arc<Shard>> = self.shards.write().drain().map(|(_, s)| s).collect();
        for s in shards {
            s.unload();
        }
    }

    /// The number of `__consumer_offsets` partitions: the topic's, or the configured count
    /// before it exists.
    pub fn partition_count(&self, image: &MetadataImage) -> i32 {
        image
            .topic(OFFSETS_TOPIC)
            .map(|t| t.partitions.len() as i32)
            .filter(|n| *n > 0)
            .unwrap_or(self.config.offsets_topic_num_partitions)
    }

    pub fn partition_for(&self, group_id: &str, image: &MetadataImage) -> i32 {
        partition_for(group_id, self.partition_count(image))
    }

    /// The loaded shard that owns `group_id`: NOT_COORDINATOR if this broker does not lead
    /// its partition, COORDINATOR_LOAD_IN_PROGRESS while it loads.
    pub fn shard_for(&self, group_id: &str, image: &MetadataImage) -> Result<Arc<Shard>, i16> {
        let p = self.partition_for(group_id, image);
        self.shards
            .read()
            .get(&p)
            .cloned()
            .ok_or(codes::NOT_COORDINATOR)
    }

    /// Every shard, loaded or not.
    pub fn shards(&self) -> Vec<Arc<Shard>> {
        let mut v: Vec<Arc<Shard>> = self.shards.read().values().cloned().collect();
        v.sort_by_key(|s| s.index);
        v
    }

    fn reconcile(&self, image: &MetadataImage) {
        let count = self.partition_count(image);
        let mut shards = self.shards.write();
        let exists = image.topic(OFFSETS_TOPIC).is_some();
        let stale: Vec<i32> = shards
            .iter()
            .filter(|(p, s)| {
                let current = self.replicas.get(OFFSETS_TOPIC, **p);
                !exists
                    || **p >= count
                    || !current.as_ref().is_some_and(|c| {
                        c.is_leader()
                            && Arc::ptr_eq(c, s.partition())
                            && c.leader_epoch() == s.leader_epoch
                    })
            })
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            if let Some(s) = shards.remove(&p) {
                tracing::info!(
                    partition = p,
                    "no longer the group coordinator for this partition; unloading"
                );
                s.unload();
            }
        }
        if !exists {
            return;
        }
        for p in 0..count {
            if shards.contains_key(&p) {
                continue;
            }
            let Some(partition) = self.replicas.get(OFFSETS_TOPIC, p) else {
                continue;
            };
            if !partition.is_leader() {
                continue;
            }
            tracing::info!(
                partition = p,
                leader_epoch = partition.leader_epoch(),
                "became the group coordinator for a partition; loading it"
            );
            let shard = Shard::new(p, partition, self.replicas.clone(), self.config.clone());
            shard.start();
            shards.insert(p, shard);
        }
    }

    /// Asks the controller to create `__consumer_offsets` (in the background, at most one
    /// request at a time). As in Kafka, the caller answers COORDINATOR_NOT_AVAILABLE
    /// meanwhile; with fewer live brokers than `offsets.topic.replication.factor` the
    /// controller refuses and the topic stays absent.
    pub fn request_offsets_topic(self: &Arc<Self>) {
        {
            let mut c = self.creation.lock();
            let (last, in_flight) = *c;
            if in_flight || last.is_some_and(|t| t.elapsed() < CREATE_BACKOFF) {
                return;
            }
            *c = (Some(Instant::now()), true);
        }
        let this = self.clone();
        tokio::spawn(async move {
            let topic = CreatableTopic {
                name: OFFSETS_TOPIC.to_string(),
                num_partitions: this.config.offsets_topic_num_partitions,
                replication_factor: this.config.offsets_topic_replication_factor,
                assignments: Vec::new(),
                configs: vec![
                    ("cleanup.policy".into(), Some("compact".into())),
                    ("compression.type".into(), Some("producer".into())),
                    (
                        "segment.bytes".into(),
                        Some(this.config.offsets_topic_segment_bytes.to_string()),
                    ),
                ],
            };
            let r = this
                .controller
                .call(
                    ControllerRequest::CreateTopics {
                        topics: vec![topic],
                        validate_only: false,
                    },
                    CREATE_TIMEOUT,
                )
                .await;
            match r {
                Ok(ControllerResponse::CreateTopics(results)) => {
                    for (name, res) in results {
                        match res {
                            Ok(t) => {
                                tracing::info!(topic = %name, partitions = t.num_partitions, replication_factor = t.replication_factor, "created the offsets topic")
                            }
                            // Another broker created it first.
                            Err(e) if e.code == 36 => {}
                            Err(e) => {
                                tracing::warn!(topic = %name, code = e.code, error = %e.message, "the controller did not create the offsets topic")
                            }
                        }
                    }
                }
                Ok(other) => {
                    tracing::warn!(answer = ?other, "unexpected controller answer to the offsets topic's creation")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not ask the controller to create the offsets topic")
                }
            }
            this.creation.lock().1 = false;
        });
    }
}
