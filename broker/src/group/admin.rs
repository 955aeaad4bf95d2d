//! ListGroups and DescribeGroups over one shard.

use bytes::Bytes;

use crate::group::classic::GroupState;
use crate::group::codes;
use crate::group::consumer::CONSUMER_GROUP_TYPE;
use crate::group::state::ShardState;

/// The type of classic groups; KIP-848 groups are of type
/// [`crate::group::consumer::CONSUMER_GROUP_TYPE`].
pub const CLASSIC_GROUP_TYPE: &str = "classic";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
    pub group_type: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedGroup {
    pub group_id: String,
    pub error: i16,
    pub error_message: Option<String>,
    pub state: String,
    pub protocol_type: String,
    pub protocol_data: String,
    pub members: Vec<DescribedMember>,
}

impl ShardState {
    /// ListGroups with Kafka's filters: states compared case-insensitively, types by name
    /// (an unknown type matches nothing).
    pub fn list_groups(&self, states: &[String], types: &[String]) -> Vec<ListedGroup> {
        let states: Vec<String> = states.iter().map(|s| s.trim().to_lowercase()).collect();
        let types: Vec<String> = types.iter().map(|s| s.trim().to_lowercase()).collect();
        let wanted = |state: &str, ty: &str| {
            (states.is_empty() || states.contains(&state.to_lowercase()))
                && (types.is_empty() || types.iter().any(|t| t == ty))
        };
        let classic = self
            .groups
            .values()
            .filter(|g| wanted(g.state().name(), CLASSIC_GROUP_TYPE))
            .map(|g| ListedGroup {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state().name(),
                group_type: CLASSIC_GROUP_TYPE,
            });
        let consumer = self
            .consumer_groups
            .values()
            .filter(|g| wanted(g.state().name(), CONSUMER_GROUP_TYPE))
            .map(|g| ListedGroup {
                group_id: g.id.clone(),
                protocol_type: CONSUMER_GROUP_TYPE.to_string(),
                state: g.state().name(),
                group_type: CONSUMER_GROUP_TYPE,
            });
        let mut out: Vec<ListedGroup> = classic.chain(consumer).collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    /// DescribeGroups. Members' metadata and assignments are only given for Stable groups. A
    /// group that does not exist, or is not a classic group (ConsumerGroupDescribe describes
    /// those), is reported Dead, or, from version 6, GROUP_ID_NOT_FOUND.
    pub fn describe_group(&self, group_id: &str, api_version: i16) -> DescribedGroup {
        let Some(g) = self.groups.get(group_id) else {
            let consumer = self.consumer_groups.contains_key(group_id);
            let message = if consumer {
                format!("Group {group_id} is not a classic group.")
            } else {
                format!("Group {group_id} not found.")
            };
            return if api_version >= 6 {
                DescribedGroup {
                    group_id: group_id.to_string(),
                    error: codes::GROUP_ID_NOT_FOUND,
                    error_message: Some(message),
                    // Kafka reports a group of another type as Dead.
                    state: if consumer {
                        GroupState::Dead.name().to_string()
                    } else {
                        String::new()
                    },
                    protocol_type: String::new(),
                    protocol_data: String::new(),
                    members: Vec::new(),
                }
            } else {
                DescribedGroup {
                    group_id: group_id.to_string(),
                    error: codes::NONE,
                    error_message: None,
                    state: GroupState::Dead.name().to_string(),
                    protocol_type: String::new(),
                    protocol_data: String::new(),
                    members: Vec::new(),
                }
            };
        };
        let stable = g.is(GroupState::Stable);
        let protocol = g.protocol_name.clone().unwrap_or_default();
        DescribedGroup {
            group_id: group_id.to_string(),
            error: codes::NONE,
            error_message: None,
            state: g.state().name().to_string(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_data: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members()
                .map(|m| DescribedMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata(&protocol).cloned().unwrap_or_default()
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }
}
