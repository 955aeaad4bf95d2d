//! ConsumerGroupDescribe over one shard (Kafka's `ConsumerGroup.asDescribedGroup`).

use fjord_raft::MetadataImage;
use uuid::Uuid;

use crate::group::codes;
use crate::group::consumer::Assignment;
use crate::group::state::ShardState;

/// Topic partitions as ConsumerGroupDescribe reports them: id, name, partitions.
pub type NamedPartitions = Vec<(Uuid, String, Vec<i32>)>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: NamedPartitions,
    pub target_assignment: NamedPartitions,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedConsumerGroup {
    pub group_id: String,
    pub error: i16,
    pub error_message: Option<String>,
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor_name: String,
    pub members: Vec<DescribedConsumerMember>,
}

impl DescribedConsumerGroup {
    pub fn error(group_id: &str, code: i16, message: Option<String>) -> DescribedConsumerGroup {
        DescribedConsumerGroup {
            group_id: group_id.to_string(),
            error: code,
            error_message: message,
            state: "",
            group_epoch: 0,
            assignment_epoch: 0,
            assignor_name: String::new(),
            members: Vec::new(),
        }
    }
}

/// Names the topics of `a`; topics the metadata no longer has are left out, as Kafka does.
fn named(a: &Assignment, image: &MetadataImage) -> NamedPartitions {
    a.iter()
        .filter_map(|(id, ps)| {
            let t = image.topic_by_id(id)?;
            Some((*id, t.name.clone(), ps.iter().copied().collect()))
        })
        .collect()
}

impl ShardState {
    pub fn describe_consumer_group(
        &self,
        group_id: &str,
        image: &MetadataImage,
        default_assignor: &str,
    ) -> DescribedConsumerGroup {
        let Some(g) = self.consumer_groups.get(group_id) else {
            let message = if self.groups.contains_key(group_id) {
                format!("Group {group_id} is not a consumer group.")
            } else {
                format!("Group {group_id} not found.")
            };
            return DescribedConsumerGroup::error(
                group_id,
                codes::GROUP_ID_NOT_FOUND,
                Some(message),
            );
        };
        DescribedConsumerGroup {
            group_id: group_id.to_string(),
            error: codes::NONE,
            error_message: None,
            state: g.state().name(),
            group_epoch: g.group_epoch,
            assignment_epoch: g.assignment_epoch,
            assignor_name: g
                .preferred_assignor(None)
                .unwrap_or_else(|| default_assignor.to_string()),
            members: g
                .members()
                .map(|m| DescribedConsumerMember {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.member_epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.subscribed_topic_names.iter().cloned().collect(),
                    subscribed_topic_regex: m.subscribed_topic_regex.clone(),
                    assignment: named(&m.assigned, image),
                    target_assignment: named(
                        &g.target_of(&m.member_id, m.instance_id.as_deref()),
                        image,
                    ),
                })
                .collect(),
        }
    }
}
