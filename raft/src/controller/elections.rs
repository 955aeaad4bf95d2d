//! Leader elections beyond fencing (`brokers.rs`): Kafka's ElectLeaders (preferred and
//! unclean), unclean elections when a partition loses its last in-sync leader and the topic
//! allows it (`unclean.leader.election.enable`), and the periodic preferred-leader rebalance
//! (`auto.leader.rebalance.enable`, `leader.imbalance.per.broker.percentage`).

use std::collections::HashMap;

use uuid::Uuid;

use super::{Batch, ControllerLogic};
use crate::error::ControllerError;
use crate::image::{MetadataImage, PartitionRegistration};
use crate::records::{
    ConfigResourceType, MetadataRecord, NO_LEADER, NO_LEADER_CHANGE, PartitionChangeRecord,
};

/// Kafka's `ElectionType`.
pub const PREFERRED: i8 = 0;
pub const UNCLEAN: i8 = 1;

/// Kafka error codes of ElectLeaders.
pub const ELECTION_NOT_NEEDED: i16 = 84;
pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const INVALID_REQUEST: i16 = 42;

/// One partition's election outcome: `Err((kafka error code, message))` on failure.
pub type ElectionResult = (String, i32, Result<(), (i16, String)>);

/// Whether `topic` may elect a leader from outside its ISR: the topic's own setting, else the
/// cluster-wide dynamic broker default, else Kafka's default (false).
pub fn unclean_allowed(image: &MetadataImage, topic: &str) -> bool {
    let key = "unclean.leader.election.enable";
    let from = |kind, name: &str| {
        image
            .config_overrides(kind, name)
            .and_then(|c| c.get(key))
            .map(|v| v.trim().eq_ignore_ascii_case("true"))
    };
    from(ConfigResourceType::Topic, topic)
        .or_else(|| from(ConfigResourceType::Broker, ""))
        .unwrap_or(false)
}

fn unfenced(image: &MetadataImage, id: i32) -> bool {
    image.broker(id).is_some_and(|b| !b.fenced)
}

/// An out-of-ISR leader for a leaderless partition: the first unfenced replica other than
/// `excluding`. Its ISR becomes itself alone, as in Kafka.
pub fn unclean_leader(
    image: &MetadataImage,
    part: &PartitionRegistration,
    excluding: Option<i32>,
) -> Option<i32> {
    part.replicas
        .iter()
        .copied()
        .find(|id| Some(*id) != excluding && unfenced(image, *id))
}

impl ControllerLogic {
    /// ElectLeaders for `partitions` (`None`: every partition). Returns one result per
    /// partition asked for; with `None`, only partitions that were changed or failed.
    pub(crate) fn elect_leaders(
        &mut self,
        batch: &mut Batch<'_>,
        election_type: i8,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<ElectionResult> {
        if election_type != PREFERRED && election_type != UNCLEAN {
            let all = partitions.unwrap_or_default();
            return all
                .iter()
                .map(|(t, p)| {
                    let e = (
                        INVALID_REQUEST,
                        format!("unknown election type {election_type}"),
                    );
                    (t.clone(), *p, Err(e))
                })
                .collect();
        }
        let wanted: Vec<(String, i32, bool)> = match partitions {
            Some(list) => list.iter().map(|(t, p)| (t.clone(), *p, true)).collect(),
            None => batch
                .image
                .topics
                .values()
                .flat_map(|t| t.partitions.keys().map(|p| (t.name.clone(), *p, false)))
                .collect(),
        };
        let mut out = Vec::new();
        for (topic, partition, explicit) in wanted {
            let r = self.elect_one(batch, election_type, &topic, partition);
            let quiet = matches!(&r, Err((ELECTION_NOT_NEEDED, _)))
                || (!explicit && matches!(&r, Err((PREFERRED_LEADER_NOT_AVAILABLE, _))));
            if explicit || !quiet {
                out.push((topic, partition, r));
            }
        }
        out
    }

    fn elect_one(
        &mut self,
        batch: &mut Batch<'_>,
        election_type: i8,
        topic: &str,
        partition: i32,
    ) -> Result<(), (i16, String)> {
        let unknown = || {
            (
                UNKNOWN_TOPIC_OR_PARTITION,
                format!("{topic}-{partition} does not exist"),
            )
        };
        let t = batch.image.topic(topic).ok_or_else(unknown)?;
        let topic_id = t.id;
        let part = t.partitions.get(&partition).ok_or_else(unknown)?.clone();
        let change = if election_type == PREFERRED {
            let preferred = *part.replicas.first().ok_or_else(unknown)?;
            if part.leader == preferred {
                return Err((ELECTION_NOT_NEEDED, "the preferred replica leads".into()));
            }
            if !part.isr.contains(&preferred) || !unfenced(batch.image, preferred) {
                return Err((
                    PREFERRED_LEADER_NOT_AVAILABLE,
                    format!("preferred replica {preferred} is not in the ISR or is fenced"),
                ));
            }
            change(topic_id, partition, preferred, None)
        } else {
            if part.leader != NO_LEADER {
                return Err((ELECTION_NOT_NEEDED, "the partition has a leader".into()));
            }
            match super::brokers::elect(batch.image, &part.replicas, &part.isr, None) {
                Some(leader) => change(topic_id, partition, leader, None),
                None => {
                    let leader = unclean_leader(batch.image, &part, None).ok_or((
                        ELIGIBLE_LEADERS_NOT_AVAILABLE,
                        "no live replica can lead".to_string(),
                    ))?;
                    tracing::warn!(topic, partition, leader, "unclean leader election");
                    change(topic_id, partition, leader, Some(vec![leader]))
                }
            }
        };
        batch
            .emit(MetadataRecord::PartitionChange(change))
            .map_err(|e: ControllerError| (e.code(), e.to_string()))
    }

    /// Preferred elections for brokers leading too few of the partitions they prefer (Kafka's
    /// `leader.imbalance.per.broker.percentage`, default 10).
    pub(crate) fn rebalance_leaders(&mut self, batch: &mut Batch<'_>, max_imbalance_pct: u32) {
        let mut preferred: HashMap<i32, (u32, u32)> = HashMap::new();
        let mut candidates: Vec<(i32, String, i32)> = Vec::new();
        for t in batch.image.topics.values() {
            for (p, part) in &t.partitions {
                let Some(first) = part.replicas.first().copied() else {
                    continue;
                };
                let e = preferred.entry(first).or_default();
                e.0 += 1;
                if part.leader != first {
                    e.1 += 1;
                    if part.isr.contains(&first) && unfenced(batch.image, first) {
                        candidates.push((first, t.name.clone(), *p));
                    }
                }
            }
        }
        for (broker, topic, partition) in candidates {
            let (total, not_leading) = preferred.get(&broker).copied().unwrap_or((1, 0));
            if not_leading * 100 > total * max_imbalance_pct {
                let r = self.atomically(batch, |c, b| {
                    c.elect_one(b, PREFERRED, &topic, partition)
                        .map_err(|(_, m)| ControllerError::InvalidRequest(m))
                });
                if r.is_ok() {
                    tracing::info!(
                        topic,
                        partition,
                        leader = broker,
                        "preferred leader restored"
                    );
                }
            }
        }
    }
}

fn change(
    topic_id: Uuid,
    partition: i32,
    leader: i32,
    isr: Option<Vec<i32>>,
) -> PartitionChangeRecord {
    debug_assert_ne!(leader, NO_LEADER_CHANGE);
    PartitionChangeRecord {
        topic_id,
        partition_id: partition,
        leader,
        isr,
        replicas: None,
        adding_replicas: None,
        removing_replicas: None,
    }
}
