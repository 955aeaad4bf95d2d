//! Consumer lag: for each partition a group has committed an offset for or has assigned to a
//! member, how far the committed offset is behind the partition's high watermark (the end
//! consumers can read), as `kafka-consumer-groups --describe` reports it. Used by the CLI, the
//! `consumer_lag` metrics and the lag HTTP endpoint through [`crate::broker::Broker::group_lag`].
//!
//! The group's state comes from its coordinator, which must be this broker; the end offsets
//! come from the partitions this broker hosts (a follower's high watermark may trail the
//! leader's a little; partitions hosted elsewhere have no end offset here).

use std::collections::BTreeMap;

use fjord_raft::MetadataImage;

use crate::group::GroupCoordinator;
use crate::group::admin::CLASSIC_GROUP_TYPE;
use crate::group::classic::GroupState;
use crate::group::codes;
use crate::group::consumer::CONSUMER_GROUP_TYPE;
use crate::group::records::assignment_partitions;
use crate::group::state::ShardState;
use crate::replicas::ReplicaManager;

/// The member a partition is assigned to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LagOwner {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset, if it has one.
    pub committed_offset: Option<i64>,
    /// The partition's high watermark, if this broker hosts the partition.
    pub high_watermark: Option<i64>,
    /// The partition's log end offset, if this broker hosts the partition.
    pub log_end_offset: Option<i64>,
    /// `high_watermark - committed_offset` (never negative), when both are known.
    pub lag: Option<i64>,
    pub owner: Option<LagOwner>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupLag {
    pub group_id: String,
    /// The group's state by Kafka's name (`Stable`, `Empty`, ...).
    pub state: String,
    /// `classic` or `consumer`.
    pub group_type: &'static str,
    /// By topic, then partition.
    pub partitions: Vec<PartitionLag>,
}

impl GroupLag {
    /// The sum of the known lags.
    pub fn total_lag(&self) -> i64 {
        self.partitions.iter().filter_map(|p| p.lag).sum()
    }
}

/// What the coordinator knows of a group for its lag.
struct LagInputs {
    state: String,
    group_type: &'static str,
    committed: BTreeMap<(String, i32), i64>,
    owners: BTreeMap<(String, i32), LagOwner>,
}

impl ShardState {
    fn lag_inputs(&self, group_id: &str, image: &MetadataImage) -> Result<LagInputs, i16> {
        let mut owners = BTreeMap::new();
        let (state, group_type) = if let Some(g) = self.consumer_groups.get(group_id) {
            for m in g.members() {
                for (id, ps) in &m.assigned {
                    let Some(t) = image.topic_by_id(id) else {
                        continue;
                    };
                    for p in ps {
                        owners.insert(
                            (t.name.clone(), *p),
                            LagOwner {
                                member_id: m.member_id.clone(),
                                client_id: m.client_id.clone(),
                                client_host: m.client_host.clone(),
                            },
                        );
                    }
                }
            }
            (g.state().name().to_string(), CONSUMER_GROUP_TYPE)
        } else if let Some(g) = self
            .groups
            .get(group_id)
            .filter(|g| !g.is(GroupState::Dead))
        {
            // Assignments of classic groups are opaque to the coordinator unless they use the
            // consumer protocol.
            if g.uses_consumer_protocol() && g.is(GroupState::Stable) {
                for m in g.members() {
                    for (t, ps) in assignment_partitions(&m.assignment).unwrap_or_default() {
                        for p in ps {
                            owners.insert(
                                (t.clone(), p),
                                LagOwner {
                                    member_id: m.member_id.clone(),
                                    client_id: m.client_id.clone(),
                                    client_host: m.client_host.clone(),
                                },
                            );
                        }
                    }
                }
            }
            (g.state().name().to_string(), CLASSIC_GROUP_TYPE)
        } else {
            return Err(codes::GROUP_ID_NOT_FOUND);
        };
        let committed = self
            .offsets
            .group(group_id)
            .map(|topics| {
                topics
                    .iter()
                    .flat_map(|(t, ps)| {
                        ps.iter()
                            .map(move |(p, o)| ((t.clone(), *p), o.committed_offset))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(LagInputs {
            state,
            group_type,
            committed,
            owners,
        })
    }
}

/// The lag of `group_id`. Errors are Kafka codes: NOT_COORDINATOR (this broker does not
/// coordinate the group), COORDINATOR_LOAD_IN_PROGRESS, GROUP_ID_NOT_FOUND.
pub fn group_lag(
    coordinator: &GroupCoordinator,
    replicas: &ReplicaManager,
    image: &MetadataImage,
    group_id: &str,
) -> Result<GroupLag, i16> {
    let shard = coordinator.shard_for(group_id, image)?;
    let inputs = shard.read(|st| st.lag_inputs(group_id, image))??;
    let mut keys: Vec<(String, i32)> = inputs.committed.keys().cloned().collect();
    keys.extend(inputs.owners.keys().cloned());
    keys.sort();
    keys.dedup();
    let partitions = keys
        .into_iter()
        .map(|(topic, partition)| {
            let committed = inputs.committed.get(&(topic.clone(), partition)).copied();
            let local = replicas.get(&topic, partition);
            let high_watermark = local.as_ref().map(|p| p.high_watermark());
            let log_end_offset = local.as_ref().map(|p| p.log().log_end_offset());
            let lag = match (high_watermark, committed) {
                (Some(hw), Some(c)) => Some((hw - c).max(0)),
                _ => None,
            };
            PartitionLag {
                owner: inputs.owners.get(&(topic.clone(), partition)).cloned(),
                topic,
                partition,
                committed_offset: committed,
                high_watermark,
                log_end_offset,
                lag,
            }
        })
        .collect();
    Ok(GroupLag {
        group_id: group_id.to_string(),
        state: inputs.state,
        group_type: inputs.group_type,
        partitions,
    })
}
