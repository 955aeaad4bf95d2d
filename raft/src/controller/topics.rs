//! CreateTopics, DeleteTopics and CreatePartitions.

use std::collections::HashSet;

use uuid::Uuid;

use super::{Batch, ControllerLogic};
use crate::configs::validate_topic_config;
use crate::controller::placement::place;
use crate::controller::requests::*;
use crate::error::ControllerError;
use crate::image::MetadataImage;
use crate::records::*;

/// Kafka's limit on topic name length (`Topic.MAX_NAME_LENGTH`).
const MAX_TOPIC_NAME: usize = 249;

pub fn validate_topic_name(name: &str) -> Result<(), ControllerError> {
    if name.is_empty() {
        return Err(ControllerError::InvalidTopic("topic name is empty".into()));
    }
    if name == "." || name == ".." {
        return Err(ControllerError::InvalidTopic(format!(
            "topic name cannot be '{name}'"
        )));
    }
    if name.len() > MAX_TOPIC_NAME {
        return Err(ControllerError::InvalidTopic(format!(
            "topic name is longer than {MAX_TOPIC_NAME} characters"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ControllerError::InvalidTopic(format!(
            "topic name '{name}' contains '{c}'; legal characters are ASCII alphanumerics, \
             '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// Topic names that differ only in '.' versus '_' collide in metric names (Kafka refuses them).
fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

fn colliding_topic(image: &MetadataImage, name: &str) -> Option<String> {
    let key = collision_key(name);
    image
        .topic_names
        .keys()
        .find(|existing| existing.as_str() != name && collision_key(existing) == key)
        .cloned()
}

/// Leader and ISR for a fresh partition: the unfenced replicas, led by the first of them.
fn initial_state(image: &MetadataImage, replicas: &[i32]) -> Option<(i32, Vec<i32>)> {
    let isr: Vec<i32> = replicas
        .iter()
        .copied()
        .filter(|id| image.broker(*id).is_some_and(|b| !b.fenced))
        .collect();
    Some((*isr.first()?, isr))
}

fn check_assignment(
    image: &MetadataImage,
    partition: i32,
    replicas: &[i32],
    rf: Option<usize>,
) -> Result<(), ControllerError> {
    let bad = |why: String| ControllerError::InvalidReplicaAssignment(why);
    if replicas.is_empty() {
        return Err(bad(format!("partition {partition} has no replicas")));
    }
    if let Some(rf) = rf
        && replicas.len() != rf
    {
        return Err(bad(format!(
            "partition {partition} has {} replicas; all partitions must have the same number",
            replicas.len()
        )));
    }
    let mut seen = HashSet::new();
    for id in replicas {
        if !seen.insert(id) {
            return Err(bad(format!(
                "partition {partition} lists broker {id} more than once"
            )));
        }
        if image.broker(*id).is_none() {
            return Err(bad(format!(
                "partition {partition} uses broker {id}, which is not registered"
            )));
        }
    }
    if initial_state(image, replicas).is_none() {
        return Err(bad(format!(
            "all brokers in the assignment of partition {partition} are fenced"
        )));
    }
    Ok(())
}

impl ControllerLogic {
    pub(crate) fn create_topic(
        &mut self,
        batch: &mut Batch<'_>,
        t: &CreatableTopic,
    ) -> Result<CreatedTopic, ControllerError> {
        validate_topic_name(&t.name)?;
        if batch.image.topic(&t.name).is_some() {
            return Err(ControllerError::TopicAlreadyExists(t.name.clone()));
        }
        if let Some(other) = colliding_topic(batch.image, &t.name) {
            return Err(ControllerError::InvalidTopic(format!(
                "topic '{}' collides with existing topic '{other}'",
                t.name
            )));
        }
        let mut configs = Vec::new();
        for (k, v) in &t.configs {
            if let Some(v) = v {
                validate_topic_config(k, v)?;
                configs.push((k.clone(), v.clone()));
            }
        }
        let assignments: Vec<Vec<i32>> = if t.assignments.is_empty() {
            let count = if t.num_partitions == -1 {
                self.cfg.num_partitions
            } else {
                t.num_partitions
            };
            if count <= 0 {
                return Err(ControllerError::InvalidPartitions(
                    "number of partitions must be larger than 0".into(),
                ));
            }
            self.spend_partitions(i64::from(count))?;
            let rf = if t.replication_factor == -1 {
                self.cfg.default_replication_factor
            } else {
                t.replication_factor
            };
            let (start, shift) = self.random_start();
            place(batch.image, 0, count, rf, start, shift)?
        } else {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                return Err(ControllerError::InvalidRequest(
                    "both replica assignments and a partition count or replication factor \
                     were given"
                        .into(),
                ));
            }
            self.spend_partitions(t.assignments.len() as i64)?;
            let mut sorted = t.assignments.clone();
            sorted.sort_by_key(|(p, _)| *p);
            let rf = sorted[0].1.len();
            for (i, (p, replicas)) in sorted.iter().enumerate() {
                if *p != i as i32 {
                    return Err(ControllerError::InvalidReplicaAssignment(
                        "partitions must be numbered consecutively from 0".into(),
                    ));
                }
                check_assignment(batch.image, *p, replicas, Some(rf))?;
            }
            sorted.into_iter().map(|(_, r)| r).collect()
        };
        let topic_id = self.new_topic_id(batch.image);
        let replication_factor = assignments[0].len() as i16;
        let num_partitions = assignments.len() as i32;
        batch.emit(MetadataRecord::Topic(TopicRecord {
            name: t.name.clone(),
            topic_id,
        }))?;
        for (k, v) in configs {
            batch.emit(MetadataRecord::Config(ConfigRecord {
                resource_type: ConfigResourceType::Topic,
                resource_name: t.name.clone(),
                name: k,
                value: Some(v),
            }))?;
        }
        emit_new_partitions(batch, topic_id, 0, assignments)?;
        Ok(CreatedTopic {
            topic_id,
            num_partitions,
            replication_factor,
        })
    }

    fn new_topic_id(&mut self, image: &MetadataImage) -> Uuid {
        loop {
            let id = Uuid::from_u128(self.rng_u128());
            // Kafka reserves the zero UUID and ids whose string starts with '-' (command-line
            // ambiguity); skip them and, absurdly unlikely, an id already taken.
            if !id.is_nil() && !image.topics.contains_key(&id) && !id.to_string().starts_with('-') {
                return id;
            }
        }
    }

    pub(crate) fn delete_topic(
        &mut self,
        batch: &mut Batch<'_>,
        r: &TopicRef,
    ) -> Result<DeletedTopic, ControllerError> {
        let topic = match (&r.id, &r.name) {
            (Some(id), _) if !id.is_nil() => batch
                .image
                .topic_by_id(id)
                .ok_or(ControllerError::UnknownTopicId(*id))?,
            (_, Some(name)) => batch
                .image
                .topic(name)
                .ok_or_else(|| ControllerError::UnknownTopicOrPartition(name.clone()))?,
            _ => {
                return Err(ControllerError::InvalidRequest(
                    "neither a topic name nor a topic id was given".into(),
                ));
            }
        };
        let deleted = DeletedTopic {
            name: topic.name.clone(),
            topic_id: topic.id,
        };
        batch.emit(MetadataRecord::RemoveTopic(RemoveTopicRecord {
            topic_id: deleted.topic_id,
        }))?;
        Ok(deleted)
    }

    pub(crate) fn create_partitions(
        &mut self,
        batch: &mut Batch<'_>,
        req: &NewPartitions,
    ) -> Result<(), ControllerError> {
        let topic = batch
            .image
            .topic(&req.topic)
            .ok_or_else(|| ControllerError::UnknownTopicOrPartition(req.topic.clone()))?
            .clone();
        let current = topic.partitions.len() as i32;
        if req.count < current {
            return Err(ControllerError::InvalidPartitions(format!(
                "topic currently has {current} partitions, which is higher than the requested {}",
                req.count
            )));
        }
        if req.count == current {
            return Err(ControllerError::InvalidPartitions(format!(
                "topic already has {current} partitions"
            )));
        }
        let added = req.count - current;
        self.spend_partitions(i64::from(added))?;
        let rf = topic
            .partitions
            .values()
            .next()
            .map_or(1, |p| p.replicas.len());
        let assignments = if req.assignments.is_empty() {
            let (start, shift) = self.random_start();
            place(batch.image, current, added, rf as i16, start, shift)?
        } else {
            if req.assignments.len() != added as usize {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "{} assignments given for {added} new partitions",
                    req.assignments.len()
                )));
            }
            for (i, replicas) in req.assignments.iter().enumerate() {
                check_assignment(batch.image, current + i as i32, replicas, Some(rf))?;
            }
            req.assignments.clone()
        };
        emit_new_partitions(batch, topic.id, current, assignments)
    }
}

/// Partition records for new partitions `first..`, led by their first unfenced replica.
fn emit_new_partitions(
    batch: &mut Batch<'_>,
    topic_id: Uuid,
    first: i32,
    assignments: Vec<Vec<i32>>,
) -> Result<(), ControllerError> {
    for (i, replicas) in assignments.into_iter().enumerate() {
        let (leader, isr) = initial_state(batch.image, &replicas).ok_or_else(|| {
            ControllerError::InvalidReplicaAssignment("no unfenced replica".into())
        })?;
        batch.emit(MetadataRecord::Partition(PartitionRecord {
            topic_id,
            partition_id: first + i as i32,
            replicas,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
            isr,
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
        }))?;
    }
    Ok(())
}
