//! Partition reassignment (Kafka's AlterPartitionReassignments, KIP-455).
//!
//! A reassignment to target replicas `T` of a partition whose replicas are `C` writes
//! `replicas = T ++ (C - T)`, `adding = T - C`, `removing = C - T`: brokers in `adding` create
//! the partition and fetch it like any follower, and the leader adds them to the ISR once they
//! have caught up (AlterPartition). The reassignment completes in the same batch as the ISR
//! change that puts all of `T` in the ISR: `replicas = T`, the ISR loses the removed replicas,
//! and if the leader was one of them a new one is elected from `T`. A removed broker sees the
//! partition leave its replica set and deletes its copy. Cancelling returns to the original
//! replicas (`replicas - adding`) the same way. A new reassignment of a partition that is
//! already moving starts from the original replicas, as Kafka does.

use super::{Batch, ControllerLogic};
use crate::error::ControllerError;
use crate::image::PartitionRegistration;
use crate::records::{MetadataRecord, NO_LEADER_CHANGE, PartitionChangeRecord};

impl ControllerLogic {
    /// One partition of an AlterPartitionReassignments request: `target = None` cancels.
    pub(crate) fn reassign_partition(
        &mut self,
        batch: &mut Batch<'_>,
        topic: &str,
        partition: i32,
        target: Option<&[i32]>,
        allow_replication_factor_change: bool,
    ) -> Result<(), ControllerError> {
        let unknown = || ControllerError::UnknownTopicOrPartition(format!("{topic}-{partition}"));
        let t = batch.image.topic(topic).ok_or_else(unknown)?;
        let topic_id = t.id;
        let part = t.partitions.get(&partition).ok_or_else(unknown)?.clone();
        let original = part.original_replicas();
        let target: Vec<i32> = match target {
            None => {
                if !part.reassigning() {
                    return Err(ControllerError::NoReassignmentInProgress(format!(
                        "{topic}-{partition}"
                    )));
                }
                original.clone()
            }
            Some(target) => {
                self.validate_target(batch, target)?;
                if !allow_replication_factor_change && target.len() != original.len() {
                    return Err(ControllerError::InvalidReplicationFactor(format!(
                        "the reassignment would change the replication factor from {} to {} \
                         and the request does not allow that",
                        original.len(),
                        target.len()
                    )));
                }
                target.to_vec()
            }
        };
        if target == part.replicas && !part.reassigning() {
            return Ok(());
        }
        let adding: Vec<i32> = target
            .iter()
            .copied()
            .filter(|r| !original.contains(r))
            .collect();
        let removing: Vec<i32> = original
            .iter()
            .copied()
            .filter(|r| !target.contains(r))
            .collect();
        let mut replicas = target.clone();
        replicas.extend(removing.iter().copied());
        // Replicas of an earlier reassignment that this one drops leave the ISR too.
        let isr: Vec<i32> = part
            .isr
            .iter()
            .copied()
            .filter(|r| replicas.contains(r))
            .collect();
        if isr.is_empty() {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "{topic}-{partition}: no in-sync replica would remain"
            )));
        }
        let mut change = PartitionChangeRecord {
            topic_id,
            partition_id: partition,
            leader: NO_LEADER_CHANGE,
            isr: Some(isr),
            replicas: Some(replicas),
            adding_replicas: Some(adding),
            removing_replicas: Some(removing),
        };
        let next = PartitionRegistration {
            replicas: change.replicas.clone().unwrap_or_default(),
            isr: change.isr.clone().unwrap_or_default(),
            adding_replicas: change.adding_replicas.clone().unwrap_or_default(),
            removing_replicas: change.removing_replicas.clone().unwrap_or_default(),
            ..part
        };
        if let Some(done) = complete(batch, &next) {
            change = PartitionChangeRecord {
                topic_id,
                partition_id: partition,
                ..done
            };
        }
        tracing::info!(
            topic,
            partition,
            replicas = ?change.replicas,
            adding = ?change.adding_replicas,
            removing = ?change.removing_replicas,
            "partition reassignment"
        );
        batch.emit(MetadataRecord::PartitionChange(change))
    }

    /// Kafka's checks of a manual assignment: not empty, no duplicates, registered brokers.
    fn validate_target(&self, batch: &Batch<'_>, target: &[i32]) -> Result<(), ControllerError> {
        if target.is_empty() {
            return Err(ControllerError::InvalidReplicaAssignment(
                "the target replica list is empty".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for id in target {
            if !seen.insert(*id) {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "broker {id} appears twice in the target replicas"
                )));
            }
            if batch.image.broker(*id).is_none() {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "broker {id} is not registered"
                )));
            }
        }
        Ok(())
    }
}

/// If `part` is reassigning and every target replica is in its ISR, the change that finishes
/// the reassignment (topic id and partition left for the caller): the replicas become the
/// target, the ISR loses the removed replicas, and a removed leader is replaced by the first
/// target replica that is in the ISR and unfenced. `None` while the target is not all in sync,
/// or if no target replica could lead.
pub(crate) fn complete(
    batch: &Batch<'_>,
    part: &PartitionRegistration,
) -> Option<PartitionChangeRecord> {
    if !part.reassigning() {
        return None;
    }
    let target = part.target_replicas();
    if !target.iter().all(|r| part.isr.contains(r)) {
        return None;
    }
    let isr: Vec<i32> = part
        .isr
        .iter()
        .copied()
        .filter(|r| target.contains(r))
        .collect();
    let leader = if target.contains(&part.leader) {
        NO_LEADER_CHANGE
    } else {
        super::brokers::elect(batch.image, &target, &isr, None)?
    };
    Some(PartitionChangeRecord {
        topic_id: uuid::Uuid::nil(),
        partition_id: -1,
        leader,
        isr: Some(isr),
        replicas: Some(target),
        adding_replicas: Some(Vec::new()),
        removing_replicas: Some(Vec::new()),
    })
}
