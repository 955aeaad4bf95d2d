//! ConsumerGroupHeartbeat (API 68) and ConsumerGroupDescribe (API 69): the KIP-848 consumer
//! group protocol. The work is `crate::group::consumer`'s; these handlers decode, validate as
//! Kafka does before routing, find the group's coordinator shard and shape the answers.

use std::sync::Arc;

use fjord_protocol::kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member,
    TopicPartitions as DescribedTopicPartitions,
};
use fjord_protocol::kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment as HeartbeatAssignment, TopicPartitions,
};
use fjord_protocol::kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, GroupId, ResponseKind, TopicName,
};

use crate::broker::Broker;
use crate::dispatch::{Reply, RequestContext};
use crate::group::codes;
use crate::group::consumer::describe::{DescribedConsumerGroup, NamedPartitions};
use crate::group::consumer::heartbeat::{HeartbeatError, HeartbeatRequest, validate};
use crate::group::consumer::{Assignment, normalized};
use crate::handlers::groups::{GROUP_AUTHORIZED_OPERATIONS, client_host};
use crate::util::str_bytes;

/// ConsumerGroupDescribe v1 reports how each member speaks: 1 for the consumer protocol.
const MEMBER_TYPE_CONSUMER: i8 = 1;

fn client_id(ctx: &RequestContext) -> String {
    ctx.header
        .client_id
        .as_ref()
        .map(|c| c.as_str().to_string())
        .unwrap_or_default()
}

// ------------------------------------------------------------------------ ConsumerGroupHeartbeat

pub fn handle_consumer_group_heartbeat(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    req: ConsumerGroupHeartbeatRequest,
) -> Reply {
    let broker = broker.clone();
    Reply::later(async move {
        let resp = match heartbeat(&broker, &ctx, req).await {
            Ok(r) => r,
            Err(e) => {
                let message = e.message.or_else(|| {
                    Some(codes::message(e.code))
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                });
                ConsumerGroupHeartbeatResponse::default()
                    .with_error_code(e.code)
                    .with_error_message(message.as_deref().map(str_bytes))
            }
        };
        ResponseKind::ConsumerGroupHeartbeat(resp)
    })
}

async fn heartbeat(
    broker: &Broker,
    ctx: &RequestContext,
    req: ConsumerGroupHeartbeatRequest,
) -> Result<ConsumerGroupHeartbeatResponse, HeartbeatError> {
    let version = ctx.version();
    let owned = req.topic_partitions.as_ref().map(|tps| {
        let mut a = Assignment::new();
        for tp in tps {
            a.entry(tp.topic_id)
                .or_default()
                .extend(tp.partitions.iter().copied());
        }
        normalized(a)
    });
    let hb = HeartbeatRequest {
        group_id: req.group_id.as_str().to_string(),
        member_id: req.member_id.as_str().to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|s| s.as_str().to_string()),
        rack_id: req.rack_id.as_ref().map(|s| s.as_str().to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        client_id: client_id(ctx),
        client_host: client_host(ctx),
        subscribed_topic_names: req
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.as_str().to_string()).collect()),
        subscribed_topic_regex: if version >= 1 {
            req.subscribed_topic_regex
                .as_ref()
                .map(|s| s.as_str().to_string())
        } else {
            None
        },
        server_assignor: req.server_assignor.as_ref().map(|s| s.as_str().to_string()),
        owned,
        api_version: version,
    };
    validate(&hb, &broker.groups.config().consumer_assignors)?;
    let image = broker.image();
    let shard = broker
        .groups
        .shard_for(&hb.group_id, &image)
        .map_err(HeartbeatError::code)?;
    let answer = shard
        .write(|st| st.consumer_group_heartbeat(&hb, &image))
        .map_err(HeartbeatError::code)??;
    shard
        .committed(answer.end)
        .await
        .map_err(HeartbeatError::code)?;
    let assignment = answer.assignment.map(|a| {
        HeartbeatAssignment::default().with_topic_partitions(
            a.into_iter()
                .map(|(id, ps)| {
                    TopicPartitions::default()
                        .with_topic_id(id)
                        .with_partitions(ps.into_iter().collect())
                })
                .collect(),
        )
    });
    Ok(ConsumerGroupHeartbeatResponse::default()
        .with_member_id(Some(str_bytes(&answer.member_id)))
        .with_member_epoch(answer.member_epoch)
        .with_heartbeat_interval_ms(answer.heartbeat_interval_ms)
        .with_assignment(assignment))
}

// ------------------------------------------------------------------------ ConsumerGroupDescribe

fn described_partitions(parts: NamedPartitions) -> DescribedAssignment {
    DescribedAssignment::default().with_topic_partitions(
        parts
            .into_iter()
            .map(|(id, name, ps)| {
                DescribedTopicPartitions::default()
                    .with_topic_id(id)
                    .with_topic_name(TopicName(str_bytes(&name)))
                    .with_partitions(ps)
            })
            .collect(),
    )
}

pub fn handle_consumer_group_describe(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    req: ConsumerGroupDescribeRequest,
) -> Reply {
    let version = ctx.version();
    let image = broker.image();
    let default_assignor = broker
        .groups
        .config()
        .consumer_assignors
        .first()
        .cloned()
        .unwrap_or_else(|| "uniform".to_string());
    let groups = req
        .group_ids
        .iter()
        .map(|g| {
            let id = g.as_str();
            let d = if id.is_empty() {
                DescribedConsumerGroup::error(id, codes::INVALID_GROUP_ID, None)
            } else {
                broker
                    .groups
                    .shard_for(id, &image)
                    .and_then(|s| {
                        s.read(|st| st.describe_consumer_group(id, &image, &default_assignor))
                    })
                    .unwrap_or_else(|code| {
                        DescribedConsumerGroup::error(
                            id,
                            code,
                            Some(codes::message(code).to_string()).filter(|m| !m.is_empty()),
                        )
                    })
            };
            let mut out = DescribedGroup::default()
                .with_group_id(GroupId(str_bytes(&d.group_id)))
                .with_error_code(d.error)
                .with_error_message(d.error_message.as_deref().map(str_bytes))
                .with_group_state(str_bytes(d.state))
                .with_group_epoch(d.group_epoch)
                .with_assignment_epoch(d.assignment_epoch)
                .with_assignor_name(str_bytes(&d.assignor_name));
            if d.error == codes::NONE {
                out = out.with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            let member = Member::default()
                                .with_member_id(str_bytes(&m.member_id))
                                .with_instance_id(m.instance_id.as_deref().map(str_bytes))
                                .with_rack_id(m.rack_id.as_deref().map(str_bytes))
                                .with_member_epoch(m.member_epoch)
                                .with_client_id(str_bytes(&m.client_id))
                                .with_client_host(str_bytes(&m.client_host))
                                .with_subscribed_topic_names(
                                    m.subscribed_topic_names
                                        .iter()
                                        .map(|t| TopicName(str_bytes(t)))
                                        .collect(),
                                )
                                .with_subscribed_topic_regex(
                                    m.subscribed_topic_regex.as_deref().map(str_bytes),
                                )
                                .with_assignment(described_partitions(m.assignment))
                                .with_target_assignment(described_partitions(m.target_assignment));
                            if version >= 1 {
                                member.with_member_type(MEMBER_TYPE_CONSUMER)
                            } else {
                                member
                            }
                        })
                        .collect(),
                );
                if req.include_authorized_operations {
                    out = out.with_authorized_operations(GROUP_AUTHORIZED_OPERATIONS);
                }
            }
            out
        })
        .collect();
    Reply::now(ResponseKind::ConsumerGroupDescribe(
        ConsumerGroupDescribeResponse::default().with_groups(groups),
    ))
}
