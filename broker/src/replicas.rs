//! The partitions this broker hosts, kept in step with the metadata image.
//!
//! Each committed image is applied here: a partition whose replica set names this broker gets
//! a [`Partition`] (and a log), its leader/epoch/ISR follow the image, topic config overrides
//! reach the log, and a partition that leaves the image (topic deleted, replica moved) has its
//! log deleted. Handlers only see an image after it has been applied, so a topic visible in
//! Metadata always has its partition here.
//!
//! Each partition directory carries Kafka's `partition.metadata` file with the topic id, so a
//! topic deleted and re-created under the same name while this broker was down is recognised
//! and its old data dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use fjord_raft::MetadataImage;
use fjord_raft::configs::topic_config_for_broker_key;
use fjord_raft::records::ConfigResourceType;
use fjord_storage::{LogConfig, LogManager, StorageError, TopicPartition};
use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use crate::partition::{Partition, ReplicaState};

const PARTITION_METADATA: &str = "partition.metadata";

/// Settings of a topic that are the broker's business rather than the log's.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicSettings {
    pub min_insync_replicas: usize,
    /// Appends may fsync (a finite `flush.messages`) or recompress (`compression.type` other
    /// than `producer`): work that should not hold an async worker thread.
    pub appends_may_block: bool,
    /// Every effective config of the topic (defaults resolved), by topic config name.
    pub effective: BTreeMap<String, String>,
}

pub struct ReplicaManager {
    local_id: i32,
    logs: Arc<LogManager>,
    /// Topic-config defaults from the broker's static config (topic names).
    static_defaults: BTreeMap<String, String>,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    settings: RwLock<HashMap<String, Arc<TopicSettings>>>,
    /// The log config last given to each topic, to skip unchanged updates.
    log_configs: Mutex<HashMap<String, Arc<LogConfig>>>,
    /// Replication throttle rates, from the dynamic broker configs.
    pub replication_quotas: crate::replication::throttle::ReplicationQuotas,
}

impl ReplicaManager {
    pub fn new(
        local_id: i32,
        logs: Arc<LogManager>,
        static_defaults: BTreeMap<String, String>,
    ) -> Self {
        ReplicaManager {
            local_id,
            logs,
            static_defaults,
            partitions: RwLock::new(HashMap::new()),
            settings: RwLock::new(HashMap::new()),
            log_configs: Mutex::new(HashMap::new()),
            replication_quotas: Default::default(),
        }
    }

    pub fn log_manager(&self) -> &Arc<LogManager> {
        &self.logs
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        // Building a TopicPartition allocates; acceptable next to a network round trip.
        self.partitions
            .read()
            .get(&TopicPartition::new(topic, partition))
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().values().cloned().collect()
    }

    /// How the replication throttle applies to this broker's side (leader or follower, by the
    /// topic config `key`) of `partition` for the replica `broker`: `None` when the topic's
    /// `*.replication.throttled.replicas` does not name it; else whether the replica is
    /// outside the ISR. As in Kafka, named replicas' bytes count against the rate, and only
    /// those outside the ISR are held back.
    pub fn replication_throttle(
        &self,
        partition: &Partition,
        key: &str,
        broker: i32,
    ) -> Option<bool> {
        let settings = self.topic_settings(&partition.tp.topic)?;
        crate::replication::throttle::names_replica(
            settings.effective.get(key),
            partition.tp.partition,
            self.local_id,
        )
        .then(|| !partition.state().isr.contains(&broker))
    }

    pub fn topic_settings(&self, topic: &str) -> Option<Arc<TopicSettings>> {
        self.settings.read().get(topic).cloned()
    }

    /// Broker-level defaults for topic configs in force now: static file values, then the
    /// cluster-wide dynamic defaults, then this broker's dynamic overrides. Values carry the
    /// source they came from (Kafka's `ConfigSource` id).
    pub fn broker_defaults(&self, image: &MetadataImage) -> BTreeMap<String, (String, i8)> {
        use crate::codes::config_source::*;
        let mut out: BTreeMap<String, (String, i8)> = self
            .static_defaults
            .iter()
            .map(|(k, v)| (k.clone(), (v.clone(), STATIC_BROKER_CONFIG)))
            .collect();
        let layers = [
            ("".to_string(), DYNAMIC_DEFAULT_BROKER_CONFIG),
            (self.local_id.to_string(), DYNAMIC_BROKER_CONFIG),
        ];
        for (name, source) in layers {
            if let Some(overrides) = image.config_overrides(ConfigResourceType::Broker, &name) {
                for (k, v) in overrides {
                    if let Some(def) = topic_config_for_broker_key(k) {
                        out.insert(def.name.to_string(), (v.clone(), source));
                    }
                }
            }
        }
        out
    }

    /// Brings hosted partitions in line with `image`. `remove_strays` also deletes local logs
    /// the image does not assign here; pass it only once the image is known to be caught up
    /// (after the controller unfenced this broker), never for the empty image at startup.
    pub fn apply_image(&self, image: &MetadataImage, remove_strays: bool) {
        self.replication_quotas.update(image, self.local_id);
        let defaults = self.broker_defaults(image);
        let mut wanted: HashSet<TopicPartition> = HashSet::new();
        let mut new_settings = HashMap::new();
        for topic in image.topics.values() {
            let mut effective: BTreeMap<String, String> = defaults
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect();
            if let Some(overrides) = image.config_overrides(ConfigResourceType::Topic, &topic.name)
            {
                for (k, v) in overrides {
                    effective.insert(k.clone(), v.clone());
                }
            }
            self.apply_log_config(&topic.name, &effective);
            let min_insync_replicas = effective
                .get("min.insync.replicas")
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(1)
                .max(1);
            let flushes = effective
                .get("flush.messages")
                .and_then(|v| v.trim().parse::<i64>().ok())
                .is_some_and(|n| n < i64::MAX);
            let recompresses = effective
                .get("compression.type")
                .is_some_and(|c| c.trim() != "producer");
            new_settings.insert(
                topic.name.clone(),
                Arc::new(TopicSettings {
                    min_insync_replicas,
                    appends_may_block: flushes || recompresses,
                    effective,
                }),
            );
            for (id, reg) in &topic.partitions {
                if !reg.replicas.contains(&self.local_id) {
                    continue;
                }
                let tp = TopicPartition::new(&topic.name, *id);
                wanted.insert(tp.clone());
                let existing = self.partitions.read().get(&tp).cloned();
                match existing {
                    Some(p) if p.topic_id == topic.id => p.update(ReplicaState::from(reg)),
                    other => {
                        if let Some(old) = other {
                            // Same name, new topic id: the old topic's data must go.
                            self.remove(&old.tp);
                        }
                        match self.create(&tp, topic.id, ReplicaState::from(reg)) {
                            Ok(p) => {
                                self.partitions.write().insert(tp, p);
                            }
                            Err(e) => {
                                tracing::error!(partition = %tp, error = %e, "could not create the partition's log");
                            }
                        }
                    }
                }
            }
        }
        *self.settings.write() = new_settings;
        let gone: Vec<TopicPartition> = self
            .partitions
            .read()
            .keys()
            .filter(|tp| !wanted.contains(*tp))
            .cloned()
            .collect();
        for tp in gone {
            self.remove(&tp);
        }
        if remove_strays {
            for log in self.logs.all_logs() {
                let tp = log.topic_partition().clone();
                if !wanted.contains(&tp) {
                    tracing::info!(partition = %tp, "deleting a log the metadata does not assign to this broker");
                    if let Err(e) = self.logs.delete_log(&tp) {
                        tracing::error!(partition = %tp, error = %e, "could not delete stray log");
                    }
                }
            }
        }
        self.log_configs
            .lock()
            .retain(|topic, _| image.topic_names.contains_key(topic));
    }

    fn apply_log_config(&self, topic: &str, effective: &BTreeMap<String, String>) {
        let mut config = LogConfig::default();
        for (k, v) in effective {
            if let Err(e) = config.set(k, v) {
                // The controller validated it; a value the log still refuses keeps its default.
                tracing::warn!(topic, key = %k, error = %e, "ignoring topic config");
            }
        }
        let mut cache = self.log_configs.lock();
        if cache.get(topic).is_some_and(|c| **c == config) {
            return;
        }
        let config = Arc::new(config);
        cache.insert(topic.to_string(), config.clone());
        self.logs.set_topic_config(topic, config);
    }

    fn create(
        &self,
        tp: &TopicPartition,
        topic_id: Uuid,
        state: ReplicaState,
    ) -> Result<Arc<Partition>, StorageError> {
        if let Some(log) = self.logs.get(tp) {
            match read_topic_id(log.dir()) {
                Some(id) if id != topic_id => {
                    tracing::info!(partition = %tp, "log belongs to an earlier topic of the same name; deleting it");
                    self.logs.delete_log(tp)?;
                }
                _ => {}
            }
        }
        let log = self.logs.get_or_create(tp)?;
        if read_topic_id(log.dir()) != Some(topic_id) {
            write_topic_id(log.dir(), topic_id)?;
        }
        tracing::info!(partition = %tp, leader = state.leader, leader_epoch = state.leader_epoch, "hosting partition");
        Ok(Partition::new(
            tp.clone(),
            topic_id,
            self.local_id,
            log,
            state,
        ))
    }

    fn remove(&self, tp: &TopicPartition) {
        let Some(p) = self.partitions.write().remove(tp) else {
            return;
        };
        p.wake_all();
        tracing::info!(partition = %tp, "partition removed; deleting its log");
        if let Err(e) = self.logs.delete_log(tp) {
            tracing::error!(partition = %tp, error = %e, "could not delete log");
        }
    }
}

/// Kafka's `partition.metadata`: `version: 0` and the topic id in URL-safe base64.
fn read_topic_id(dir: &Path) -> Option<Uuid> {
    let text = std::fs::read_to_string(dir.join(PARTITION_METADATA)).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("topic_id:"))?;
    crate::util::uuid_from_base64(line.trim())
}

fn write_topic_id(dir: &Path, id: Uuid) -> Result<(), StorageError> {
    let path = dir.join(PARTITION_METADATA);
    let tmp = dir.join(format!("{PARTITION_METADATA}.tmp"));
    let body = format!(
        "version: 0\ntopic_id: {}\n",
        crate::util::uuid_to_base64(&id)
    );
    let io = |source| StorageError::Io {
        path: path.clone(),
        source,
    };
    std::fs::write(&tmp, body).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(())
}
