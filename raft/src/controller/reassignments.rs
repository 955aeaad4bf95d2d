//! Partition reassignment (Kafka's AlterPartitionReassignments, KIP-455).
//!
//! A reassignment to target replicas `T` of a partition whose replicas are `C` writes
//! `replicas = T ++ (C - T)`, `adding = T - C`, `removing = C - T`: brokers in `adding` create
//! the partition and fetch it like any follower, and the leader adds them to the ISR once they
//! have caught up (AlterPartition). The reassignment completes in the same batch as the ISR
//! change that puts all of `T` in the ISR: `replicas = T`, the ISR loses the removed replicas,
//! and if the leader was one of them a new one is elected from `T`. A removed broker sees the
//! partition leave its replica set and deletes its copy. Cancelling returns to the original
//! replicas (`replicas - adding`), dropping the adding replicas from the ISR. A new target for
//! a partition that is already moving is merged with its current (merged) replica list, as in
//! Kafka's KRaft controller, so nothing in sync leaves the ISR before the move completes.
//! Whenever a change leaves the leader outside the replicas or the ISR, a new leader is
//! elected from them (none: the partition waits leaderless for one to come back). Fencing and
//! unfencing also finish moves whose target is in sync (`complete_all`).

use super::{Batch, ControllerLogic};
use crate::error::ControllerError;
use crate::image::PartitionRegistration;
use crate::records::{MetadataRecord, NO_LEADER, NO_LEADER_CHANGE, PartitionChangeRecord};

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
        let cancelling = target.is_none();
        let target: Vec<i32> = match target {
            None => {
                if !part.reassigning() {
                    return Err(ControllerError::NoReassignmentInProgress(format!(
                        "{topic}-{partition}"
                    )));
                }
                part.original_replicas()
            }
            Some(target) => {
                self.validate_target(batch, target)?;
                let heading_for = part.target_replicas().len();
                if !allow_replication_factor_change && target.len() != heading_for {
                    return Err(ControllerError::InvalidReplicationFactor(format!(
                        "the reassignment would change the replication factor from \
                         {heading_for} to {} and the request does not allow that",
                        target.len()
                    )));
                }
                target.to_vec()
            }
        };
        if target == part.replicas && !part.reassigning() {
            return Ok(());
        }
        // Cancelling reverts to the original replicas; a new target is merged with the
        // current replica list (which, mid-move, includes the replicas being added).
        let (replicas, adding, removing) = if cancelling {
            (target.clone(), Vec::new(), Vec::new())
        } else {
            let adding: Vec<i32> = target
                .iter()
                .copied()
                .filter(|r| !part.replicas.contains(r))
                .collect();
            let removing: Vec<i32> = part
                .replicas
                .iter()
                .copied()
                .filter(|r| !target.contains(r))
                .collect();
            let mut replicas = target.clone();
            replicas.extend(removing.iter().copied());
            (replicas, adding, removing)
        };
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
        let next = PartitionRegistration {
            replicas: replicas.clone(),
            isr: isr.clone(),
            adding_replicas: adding.clone(),
            removing_replicas: removing.clone(),
            ..part.clone()
        };
        let change = match complete(batch, &next) {
            Some(done) => PartitionChangeRecord {
                topic_id,
                partition_id: partition,
                ..done
            },
            None => PartitionChangeRecord {
                topic_id,
                partition_id: partition,
                leader: leader_for(batch, &next),
                isr: Some(isr),
                replicas: Some(replicas),
                adding_replicas: Some(adding),
                removing_replicas: Some(removing),
            },
        };
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
/// target replica that is in the ISR and unfenced (or none). `None` while the target is not
/// all in sync.
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
        // As in Kafka, the move completes even if no target replica can lead now: the
        // partition waits leaderless until one is unfenced.
        super::brokers::elect(batch.image, &target, &isr, None).unwrap_or(NO_LEADER)
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

/// The leader `part` should have after a change: unchanged while the current one is still a
/// replica in the ISR, else the first in-sync unfenced replica, else none.
fn leader_for(batch: &Batch<'_>, part: &PartitionRegistration) -> i32 {
    if part.leader == NO_LEADER
        || (part.replicas.contains(&part.leader) && part.isr.contains(&part.leader))
    {
        return NO_LEADER_CHANGE;
    }
    super::brokers::elect(batch.image, &part.replicas, &part.isr, None).unwrap_or(NO_LEADER)
}

/// Finishes every move whose target is now in sync (after fencing or unfencing changed
/// leaders or the ISR: no AlterPartition may come for them).
pub(crate) fn complete_all(batch: &mut Batch<'_>) -> Result<(), ControllerError> {
    let mut done = Vec::new();
    for t in batch.image.topics.values() {
        for (p, part) in &t.partitions {
            if let Some(c) = complete(batch, part) {
                done.push(PartitionChangeRecord {
                    topic_id: t.id,
                    partition_id: *p,
                    ..c
                });
            }
        }
    }
    for c in done {
        batch.emit(MetadataRecord::PartitionChange(c))?;
    }
    Ok(())
}
