//! Broker lifecycle: registration, heartbeats, fencing and unfencing, and the leader elections
//! that fencing and unfencing cause.

use std::time::Instant;

use super::{Batch, ControllerLogic, Session};
use crate::controller::requests::*;
use crate::error::ControllerError;
use crate::image::MetadataImage;
use crate::records::*;

impl ControllerLogic {
    pub(crate) fn register_broker(
        &mut self,
        batch: &mut Batch<'_>,
        r: &RegisterBroker,
        now: Instant,
    ) -> Result<Registered, ControllerError> {
        if r.broker_id < 0 {
            return Err(ControllerError::InvalidRequest(format!(
                "invalid broker id {}",
                r.broker_id
            )));
        }
        if let Some(old) = batch.image.broker(r.broker_id) {
            if old.incarnation_id == r.incarnation_id {
                // A retried registration of the same process: same answer.
                return Ok(Registered {
                    broker_epoch: old.epoch,
                });
            }
            // Only a session this controller has heard from blocks a new incarnation: after a
            // controller change (or a whole-node restart) the old process may be long gone.
            let alive = self.sessions.get(&r.broker_id).is_some_and(|s| {
                s.heard && now.duration_since(s.last_heartbeat) < self.cfg.session_timeout
            });
            if !old.fenced && alive {
                return Err(ControllerError::DuplicateBrokerRegistration(r.broker_id));
            }
        }
        // Broker epochs only grow, across all brokers, so an epoch is never reused.
        let broker_epoch = batch
            .image
            .brokers
            .values()
            .map(|b| b.epoch)
            .max()
            .unwrap_or(0)
            .max(self.max_epoch_seen)
            .checked_add(1)
            .ok_or_else(|| ControllerError::InvalidRequest("broker epochs exhausted".into()))?;
        self.max_epoch_seen = broker_epoch;
        let fence_old = batch.image.broker(r.broker_id).is_some_and(|b| !b.fenced);
        if fence_old {
            // The previous incarnation is gone: move its leaderships first.
            self.fence(batch, r.broker_id)?;
        }
        batch.emit(MetadataRecord::RegisterBroker(RegisterBrokerRecord {
            broker_id: r.broker_id,
            incarnation_id: r.incarnation_id,
            broker_epoch,
            endpoints: r.endpoints.iter().map(Endpoint::from).collect(),
            rack: r.rack.clone(),
            fenced: true,
        }))?;
        self.sessions.insert(
            r.broker_id,
            Session {
                last_heartbeat: now,
                registered_offset: None,
                heard: true,
            },
        );
        Ok(Registered { broker_epoch })
    }

    fn check_epoch(image: &MetadataImage, id: i32, epoch: i64) -> Result<(), ControllerError> {
        let b = image
            .broker(id)
            .ok_or(ControllerError::BrokerIdNotRegistered(id))?;
        if b.epoch != epoch {
            return Err(ControllerError::StaleBrokerEpoch(id));
        }
        Ok(())
    }

    pub(crate) fn heartbeat(
        &mut self,
        batch: &mut Batch<'_>,
        h: &Heartbeat,
        now: Instant,
    ) -> Result<HeartbeatReply, ControllerError> {
        Self::check_epoch(batch.image, h.broker_id, h.broker_epoch)?;
        let fallback = self.leader_start_offset;
        let session = self.sessions.entry(h.broker_id).or_insert(Session {
            last_heartbeat: now,
            registered_offset: None,
            heard: true,
        });
        session.last_heartbeat = now;
        session.heard = true;
        // Caught up = has applied the metadata log at least to where its registration was
        // committed (or, after a controller change, to where this controller took over).
        let caught_up = h.current_metadata_offset >= session.registered_offset.unwrap_or(fallback);
        let fenced = batch.image.broker(h.broker_id).is_some_and(|b| b.fenced);
        if h.want_shutdown {
            if !fenced {
                self.fence(batch, h.broker_id)?;
            }
            return Ok(HeartbeatReply {
                is_caught_up: caught_up,
                is_fenced: true,
                should_shut_down: true,
            });
        }
        if h.want_fence {
            if !fenced {
                self.fence(batch, h.broker_id)?;
            }
        } else if fenced && caught_up {
            self.unfence(batch, h.broker_id)?;
        }
        Ok(HeartbeatReply {
            is_caught_up: caught_up,
            is_fenced: batch.image.broker(h.broker_id).is_some_and(|b| b.fenced),
            should_shut_down: false,
        })
    }

    /// Fence every unfenced broker whose session expired.
    pub(crate) fn expire_sessions(&mut self, batch: &mut Batch<'_>, now: Instant) {
        let expired: Vec<i32> = batch
            .image
            .unfenced_brokers()
            .filter(|b| {
                self.sessions.get(&b.id).is_none_or(|s| {
                    now.duration_since(s.last_heartbeat) >= self.cfg.session_timeout
                })
            })
            .map(|b| b.id)
            .collect();
        for id in expired {
            tracing::info!(broker = id, "broker session expired; fencing it");
            if let Err(e) = self.fence(batch, id) {
                tracing::warn!(broker = id, error = %e, "could not fence broker");
            }
        }
    }

    /// Fence `id`: take it out of every ISR it is in (unless it is the last member) and give
    /// its leaderships to the next unfenced ISR member.
    pub(crate) fn fence(&mut self, batch: &mut Batch<'_>, id: i32) -> Result<(), ControllerError> {
        let epoch = batch
            .image
            .broker(id)
            .ok_or(ControllerError::BrokerIdNotRegistered(id))?
            .epoch;
        let mut changes = Vec::new();
        for t in batch.image.topics.values() {
            for (p, part) in &t.partitions {
                if !part.isr.contains(&id) && part.leader != id {
                    continue;
                }
                let mut isr: Vec<i32> = part.isr.iter().copied().filter(|b| *b != id).collect();
                if isr.is_empty() {
                    // Kafka keeps the last in-sync replica in the ISR so that it can lead
                    // again without data loss once it comes back.
                    isr = part.isr.clone();
                }
                let mut leader = if part.leader == id {
                    elect(batch.image, &part.replicas, &isr, Some(id)).unwrap_or(NO_LEADER)
                } else {
                    NO_LEADER_CHANGE
                };
                if leader == NO_LEADER
                    && super::elections::unclean_allowed(batch.image, &t.name)
                    && let Some(l) = super::elections::unclean_leader(batch.image, part, Some(id))
                {
                    tracing::warn!(topic = %t.name, partition = p, leader = l, "unclean leader election");
                    leader = l;
                    isr = vec![l];
                }
                if isr == part.isr && leader == NO_LEADER_CHANGE {
                    continue;
                }
                changes.push(PartitionChangeRecord {
                    topic_id: t.id,
                    partition_id: *p,
                    leader,
                    isr: (isr != part.isr).then_some(isr),
                    replicas: None,
                    adding_replicas: None,
                    removing_replicas: None,
                });
            }
        }
        for c in changes {
            batch.emit(MetadataRecord::PartitionChange(c))?;
        }
        batch.emit(MetadataRecord::FenceBroker(BrokerEpochRecord {
            broker_id: id,
            broker_epoch: epoch,
        }))?;
        super::reassignments::complete_all(batch)
    }

    /// Unfence `id` and let it lead the leaderless partitions whose ISR it is in.
    pub(crate) fn unfence(
        &mut self,
        batch: &mut Batch<'_>,
        id: i32,
    ) -> Result<(), ControllerError> {
        let epoch = batch
            .image
            .broker(id)
            .ok_or(ControllerError::BrokerIdNotRegistered(id))?
            .epoch;
        batch.emit(MetadataRecord::UnfenceBroker(BrokerEpochRecord {
            broker_id: id,
            broker_epoch: epoch,
        }))?;
        let mut changes = Vec::new();
        for t in batch.image.topics.values() {
            for (p, part) in &t.partitions {
                if part.leader != NO_LEADER {
                    continue;
                }
                if let Some(leader) = elect(batch.image, &part.replicas, &part.isr, None) {
                    changes.push(PartitionChangeRecord {
                        topic_id: t.id,
                        partition_id: *p,
                        leader,
                        isr: None,
                        replicas: None,
                        adding_replicas: None,
                        removing_replicas: None,
                    });
                } else if part.replicas.contains(&id)
                    && super::elections::unclean_allowed(batch.image, &t.name)
                {
                    tracing::warn!(topic = %t.name, partition = p, leader = id, "unclean leader election");
                    changes.push(PartitionChangeRecord {
                        topic_id: t.id,
                        partition_id: *p,
                        leader: id,
                        isr: Some(vec![id]),
                        replicas: None,
                        adding_replicas: None,
                        removing_replicas: None,
                    });
                }
            }
        }
        for c in changes {
            batch.emit(MetadataRecord::PartitionChange(c))?;
        }
        super::reassignments::complete_all(batch)
    }

    pub(crate) fn allocate_producer_ids(
        &mut self,
        batch: &mut Batch<'_>,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<ProducerIdBlock, ControllerError> {
        Self::check_epoch(batch.image, broker_id, broker_epoch)?;
        let first = batch.image.next_producer_id;
        let len = self.cfg.producer_id_block_size;
        batch.emit(MetadataRecord::ProducerIds(ProducerIdsRecord {
            broker_id,
            broker_epoch,
            next_producer_id: first + i64::from(len),
        }))?;
        Ok(ProducerIdBlock { first, len })
    }

    /// AlterPartition from a partition leader: change the ISR, with Kafka's epoch checks.
    pub(crate) fn alter_partition(
        &mut self,
        batch: &mut Batch<'_>,
        a: &AlterPartition,
    ) -> Result<PartitionState, ControllerError> {
        Self::check_epoch(batch.image, a.broker_id, a.broker_epoch)?;
        let topic = batch
            .image
            .topic_by_id(&a.topic_id)
            .ok_or(ControllerError::UnknownTopicId(a.topic_id))?;
        let part = topic.partitions.get(&a.partition).ok_or_else(|| {
            ControllerError::UnknownTopicOrPartition(format!("{}-{}", topic.name, a.partition))
        })?;
        // Kafka's order: a request from the future means this controller is behind.
        if a.leader_epoch > part.leader_epoch || a.partition_epoch > part.partition_epoch {
            return Err(ControllerError::NotController { leader: None });
        }
        if a.leader_epoch < part.leader_epoch {
            return Err(ControllerError::FencedLeaderEpoch);
        }
        if part.leader != a.broker_id {
            return Err(ControllerError::InvalidRequest(format!(
                "broker {} is not the leader of the partition",
                a.broker_id
            )));
        }
        if a.partition_epoch < part.partition_epoch {
            return Err(ControllerError::InvalidUpdateVersion);
        }
        let mut seen = std::collections::HashSet::new();
        for id in &a.new_isr {
            if !seen.insert(*id) {
                return Err(ControllerError::InvalidRequest(format!(
                    "broker {id} appears twice in the new ISR"
                )));
            }
            if !part.replicas.contains(id) {
                return Err(ControllerError::InvalidRequest(format!(
                    "broker {id} in the new ISR is not a replica"
                )));
            }
        }
        if !a.new_isr.contains(&a.broker_id) {
            return Err(ControllerError::InvalidRequest(
                "the new ISR must contain the leader".into(),
            ));
        }
        for id in &a.new_isr {
            if batch.image.broker(*id).is_none_or(|b| b.fenced) {
                return Err(ControllerError::IneligibleReplica(format!(
                    "broker {id} is fenced"
                )));
            }
        }
        let isr = a.new_isr.clone();
        let state = |p: &crate::image::PartitionRegistration| PartitionState {
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            isr: p.isr.clone(),
            partition_epoch: p.partition_epoch,
        };
        if isr == part.isr {
            return Ok(state(part));
        }
        let (topic_id, partition) = (a.topic_id, a.partition);
        // The ISR change that brings a reassignment's last target replica in sync also
        // finishes the reassignment, in the same record.
        let next = crate::image::PartitionRegistration {
            isr: isr.clone(),
            ..part.clone()
        };
        let change = match super::reassignments::complete(batch, &next) {
            Some(done) => PartitionChangeRecord {
                topic_id,
                partition_id: partition,
                ..done
            },
            None => PartitionChangeRecord {
                topic_id,
                partition_id: partition,
                leader: NO_LEADER_CHANGE,
                isr: Some(isr),
                replicas: None,
                adding_replicas: None,
                removing_replicas: None,
            },
        };
        batch.emit(MetadataRecord::PartitionChange(change))?;
        let part = batch
            .image
            .topic_by_id(&topic_id)
            .and_then(|t| t.partitions.get(&partition))
            .ok_or(ControllerError::UnknownTopicId(topic_id))?;
        Ok(state(part))
    }
}

/// The first replica (in replica order) that is in `isr`, unfenced and not `excluding`.
pub(crate) fn elect(
    image: &MetadataImage,
    replicas: &[i32],
    isr: &[i32],
    excluding: Option<i32>,
) -> Option<i32> {
    replicas.iter().copied().find(|id| {
        Some(*id) != excluding && isr.contains(id) && image.broker(*id).is_some_and(|b| !b.fenced)
    })
}
