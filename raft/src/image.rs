//! The metadata image: what replaying the metadata log gives.
//!
//! The image is a value built from persistent maps (`imbl`), so cloning it is O(1) and a changed
//! copy shares everything it did not change. Readers hold an `Arc<MetadataImage>` snapshot that
//! never changes under them; the applier publishes a new one after every batch.
//!
//! Replay is total and deterministic: a record that does not fit the current state (a partition
//! of an unknown topic, a fence with a stale epoch, ...) is skipped with a warning on every node
//! alike, never a panic, so all replicas of the log reach the same image.

use imbl::OrdMap;
use uuid::Uuid;

use crate::error::DecodeError;
use crate::records::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub id: i32,
    pub incarnation_id: Uuid,
    pub epoch: i64,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    pub fenced: bool,
}

impl BrokerRegistration {
    pub fn endpoint(&self, listener: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == listener)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRegistration {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Broker id of the leader, or [`NO_LEADER`].
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// A reassignment in progress: replicas being added (catching up) and being removed once
    /// the added ones are in the ISR. Both are part of `replicas`; both empty otherwise.
    pub adding_replicas: Vec<i32>,
    pub removing_replicas: Vec<i32>,
}

impl PartitionRegistration {
    pub fn reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replica set a reassignment is heading for (the current one when none runs).
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
    }

    /// The replica set before the reassignment started (what cancelling returns to).
    pub fn original_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.adding_replicas.contains(r))
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub partitions: OrdMap<i32, PartitionRegistration>,
}

/// Per-resource config overrides, keyed by (resource type, resource name).
pub type ConfigOverrides = OrdMap<String, String>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataImage {
    /// Raft log index of the last batch applied (0 = nothing yet).
    pub offset: u64,
    pub brokers: OrdMap<i32, BrokerRegistration>,
    pub topics: OrdMap<Uuid, TopicImage>,
    pub topic_names: OrdMap<String, Uuid>,
    pub configs: OrdMap<(ConfigResourceType, String), ConfigOverrides>,
    /// The first producer id not yet handed out.
    pub next_producer_id: i64,
    pub features: OrdMap<String, i16>,
}

/// Snapshot format byte.
const SNAPSHOT_FORMAT: u8 = 1;

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topic_names
            .get(name)
            .and_then(|id| self.topics.get(id))
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicImage> {
        self.topics.get(id)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionRegistration> {
        self.topic(topic)?.partitions.get(&partition)
    }

    pub fn broker(&self, id: i32) -> Option<&BrokerRegistration> {
        self.brokers.get(&id)
    }

    pub fn unfenced_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Overrides stored for one resource (topic name, broker id, or "" for cluster defaults).
    pub fn config_overrides(&self, ty: ConfigResourceType, name: &str) -> Option<&ConfigOverrides> {
        self.configs.get(&(ty, name.to_string()))
    }

    /// Apply one committed batch at raft index `offset`.
    pub fn apply_batch(&mut self, offset: u64, records: &[MetadataRecord]) {
        for r in records {
            if let Err(why) = self.apply(r) {
                tracing::warn!(
                    offset,
                    ?r,
                    why,
                    "skipping metadata record that does not apply"
                );
            }
        }
        self.offset = self.offset.max(offset);
    }

    /// Apply one record; `Err` says why it was skipped (the image is unchanged then).
    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), &'static str> {
        use MetadataRecord::*;
        match record {
            RegisterBroker(r) => {
                if let Some(old) = self.brokers.get(&r.broker_id)
                    && old.epoch >= r.broker_epoch
                {
                    return Err("registration epoch not newer than the current one");
                }
                self.brokers.insert(
                    r.broker_id,
                    BrokerRegistration {
                        id: r.broker_id,
                        incarnation_id: r.incarnation_id,
                        epoch: r.broker_epoch,
                        endpoints: r.endpoints.clone(),
                        rack: r.rack.clone(),
                        fenced: r.fenced,
                    },
                );
            }
            UnregisterBroker(r) => {
                self.broker_with_epoch(r)?;
                self.brokers.remove(&r.broker_id);
            }
            FenceBroker(r) | UnfenceBroker(r) => {
                let mut b = self.broker_with_epoch(r)?.clone();
                b.fenced = matches!(record, FenceBroker(_));
                self.brokers.insert(r.broker_id, b);
            }
            Topic(r) => {
                if self.topic_names.contains_key(&r.name) {
                    return Err("topic name already exists");
                }
                if self.topics.contains_key(&r.topic_id) {
                    return Err("topic id already exists");
                }
                self.topic_names.insert(r.name.clone(), r.topic_id);
                self.topics.insert(
                    r.topic_id,
                    TopicImage {
                        name: r.name.clone(),
                        id: r.topic_id,
                        partitions: OrdMap::new(),
                    },
                );
            }
            Partition(r) => {
                let topic = self.topics.get_mut(&r.topic_id).ok_or("unknown topic id")?;
                if r.partition_id < 0 {
                    return Err("negative partition id");
                }
                topic.partitions.insert(
                    r.partition_id,
                    PartitionRegistration {
                        replicas: r.replicas.clone(),
                        adding_replicas: r.adding_replicas.clone(),
                        removing_replicas: r.removing_replicas.clone(),
                        isr: r.isr.clone(),
                        leader: r.leader,
                        leader_epoch: r.leader_epoch,
                        partition_epoch: r.partition_epoch,
                    },
                );
            }
            PartitionChange(r) => {
                let topic = self.topics.get_mut(&r.topic_id).ok_or("unknown topic id")?;
                let p = topic
                    .partitions
                    .get_mut(&r.partition_id)
                    .ok_or("unknown partition")?;
                if let Some(isr) = &r.isr {
                    p.isr = isr.clone();
                }
                if let Some(replicas) = &r.replicas {
                    p.replicas = replicas.clone();
                }
                if let Some(adding) = &r.adding_replicas {
                    p.adding_replicas = adding.clone();
                }
                if let Some(removing) = &r.removing_replicas {
                    p.removing_replicas = removing.clone();
                }
                if r.leader != NO_LEADER_CHANGE && r.leader != p.leader {
                    p.leader = r.leader;
                    p.leader_epoch = p.leader_epoch.wrapping_add(1);
                }
                p.partition_epoch = p.partition_epoch.wrapping_add(1);
            }
            RemoveTopic(r) => {
                let topic = self.topics.remove(&r.topic_id).ok_or("unknown topic id")?;
                self.topic_names.remove(&topic.name);
                self.configs
                    .remove(&(ConfigResourceType::Topic, topic.name.clone()));
            }
            Config(r) => {
                let key = (r.resource_type, r.resource_name.clone());
                let mut overrides = self.configs.get(&key).cloned().unwrap_or_default();
                match &r.value {
                    Some(v) => {
                        overrides.insert(r.name.clone(), v.clone());
                    }
                    None => {
                        overrides.remove(&r.name);
                    }
                }
                if overrides.is_empty() {
                    self.configs.remove(&key);
                } else {
                    self.configs.insert(key, overrides);
                }
            }
            ProducerIds(r) => {
                if r.next_producer_id < self.next_producer_id {
                    return Err("producer id block goes backwards");
                }
                self.next_producer_id = r.next_producer_id;
            }
            FeatureLevel(r) => {
                if r.level == 0 {
                    self.features.remove(&r.name);
                } else {
                    self.features.insert(r.name.clone(), r.level);
                }
            }
            Unknown { .. } => return Err("unknown record type"),
        }
        Ok(())
    }

    fn broker_with_epoch(
        &self,
        r: &BrokerEpochRecord,
    ) -> Result<&BrokerRegistration, &'static str> {
        let b = self.brokers.get(&r.broker_id).ok_or("unknown broker")?;
        if b.epoch != r.broker_epoch {
            return Err("stale broker epoch");
        }
        Ok(b)
    }

    /// The records that rebuild this image from empty, in an order replay accepts.
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut out = Vec::new();
        for (name, level) in &self.features {
            out.push(MetadataRecord::FeatureLevel(FeatureLevelRecord {
                name: name.clone(),
                level: *level,
            }));
        }
        for b in self.brokers.values() {
            out.push(MetadataRecord::RegisterBroker(RegisterBrokerRecord {
                broker_id: b.id,
                incarnation_id: b.incarnation_id,
                broker_epoch: b.epoch,
                endpoints: b.endpoints.clone(),
                rack: b.rack.clone(),
                fenced: b.fenced,
            }));
        }
        for t in self.topics.values() {
            out.push(MetadataRecord::Topic(TopicRecord {
                name: t.name.clone(),
                topic_id: t.id,
            }));
            for (id, p) in &t.partitions {
                out.push(MetadataRecord::Partition(PartitionRecord {
                    topic_id: t.id,
                    partition_id: *id,
                    replicas: p.replicas.clone(),
                    adding_replicas: p.adding_replicas.clone(),
                    removing_replicas: p.removing_replicas.clone(),
                    isr: p.isr.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                }));
            }
        }
        for ((ty, name), overrides) in &self.configs {
            for (k, v) in overrides {
                out.push(MetadataRecord::Config(ConfigRecord {
                    resource_type: *ty,
                    resource_name: name.clone(),
                    name: k.clone(),
                    value: Some(v.clone()),
                }));
            }
        }
        if self.next_producer_id != 0 {
            out.push(MetadataRecord::ProducerIds(ProducerIdsRecord {
                broker_id: -1,
                broker_epoch: -1,
                next_producer_id: self.next_producer_id,
            }));
        }
        out
    }

    /// Serialize the image as a snapshot: the offset it reflects and the records that rebuild it.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let batch = encode_batch(&self.to_records());
        let mut out = Vec::with_capacity(9 + batch.len());
        out.push(SNAPSHOT_FORMAT);
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&batch);
        out
    }

    pub fn decode_snapshot(data: &[u8]) -> Result<MetadataImage, DecodeError> {
        let mut r = crate::codec::Reader::new(data);
        let format = r.u8()?;
        if format != SNAPSHOT_FORMAT {
            return Err(DecodeError::UnsupportedFormat(format));
        }
        let offset = r.u64()?;
        let rest = r.bytes(r.remaining())?;
        let records = decode_batch(rest)?;
        let mut image = MetadataImage::default();
        for rec in &records {
            image
                .apply(rec)
                .map_err(|_| DecodeError::Malformed("snapshot record does not apply"))?;
        }
        image.offset = offset;
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::arb_record;
    use proptest::prelude::*;

    proptest! {
        /// Replaying the whole log, and restoring a snapshot taken at any point then replaying
        /// the tail, give identical images.
        #[test]
        fn snapshot_then_tail_equals_full_replay(
            batches in prop::collection::vec(prop::collection::vec(arb_record(), 1..6), 1..40),
            cut in any::<prop::sample::Index>(),
        ) {
            let cut = cut.index(batches.len() + 1);
            let mut full = MetadataImage::default();
            for (i, b) in batches.iter().enumerate() {
                // Round-trip through the encoding as the log does.
                let decoded = decode_batch(&encode_batch(b)).unwrap();
                full.apply_batch(i as u64 + 1, &decoded);
            }
            let mut head = MetadataImage::default();
            for (i, b) in batches[..cut].iter().enumerate() {
                head.apply_batch(i as u64 + 1, b);
            }
            let mut restored = MetadataImage::decode_snapshot(&head.encode_snapshot()).unwrap();
            prop_assert_eq!(&restored, &head);
            for (i, b) in batches.iter().enumerate().skip(cut) {
                restored.apply_batch(i as u64 + 1, b);
            }
            prop_assert_eq!(restored, full);
        }
    }

    #[test]
    fn partition_changes_bump_epochs() {
        let id = Uuid::from_u128(1);
        let mut img = MetadataImage::default();
        img.apply(&MetadataRecord::Topic(TopicRecord {
            name: "t".into(),
            topic_id: id,
        }))
        .unwrap();
        img.apply(&MetadataRecord::Partition(PartitionRecord {
            topic_id: id,
            partition_id: 0,
            replicas: vec![1, 2],
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
            isr: vec![1, 2],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
        }))
        .unwrap();
        img.apply(&MetadataRecord::PartitionChange(PartitionChangeRecord {
            topic_id: id,
            partition_id: 0,
            leader: NO_LEADER_CHANGE,
            isr: Some(vec![1]),
            replicas: None,
            adding_replicas: None,
            removing_replicas: None,
        }))
        .unwrap();
        let p = img.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 0, 1));
        img.apply(&MetadataRecord::PartitionChange(PartitionChangeRecord {
            topic_id: id,
            partition_id: 0,
            leader: 2,
            isr: Some(vec![2]),
            replicas: None,
            adding_replicas: None,
            removing_replicas: None,
        }))
        .unwrap();
        let p = img.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 1, 2));
        assert_eq!(p.isr, vec![2]);
        // Removing the topic drops its name and configs.
        img.apply(&MetadataRecord::Config(ConfigRecord {
            resource_type: ConfigResourceType::Topic,
            resource_name: "t".into(),
            name: "retention.ms".into(),
            value: Some("1".into()),
        }))
        .unwrap();
        img.apply(&MetadataRecord::RemoveTopic(RemoveTopicRecord {
            topic_id: id,
        }))
        .unwrap();
        assert!(img.topic("t").is_none());
        assert!(img.configs.is_empty());
    }
}
