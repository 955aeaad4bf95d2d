//! CreateTopics, DeleteTopics and CreatePartitions: forwarded to the controller, answered once
//! this broker's applied image shows the change (bounded by the request's timeout), so a
//! client that creates a topic and then produces finds it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fjord_protocol::kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use fjord_protocol::kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use fjord_protocol::kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use fjord_protocol::kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, ResponseKind, TopicName,
};
use fjord_raft::controller::requests::{
    ApiError, ApiResult, ControllerRequest, ControllerResponse, CreatableTopic, CreatedTopic,
    NewPartitions, TopicRef,
};
use uuid::Uuid;

use crate::broker::Broker;
use crate::codes;
use crate::dispatch::{Reply, RequestContext};
use crate::util::str_bytes;

fn timeout_of(ms: i32) -> Duration {
    Duration::from_millis(ms.max(0) as u64).max(Duration::from_millis(100))
}

fn api_error(code: i16, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        message: message.into(),
    }
}

/// Sends CreateTopics to the controller; one result per topic, in order.
pub async fn create_via_controller(
    broker: &Broker,
    topics: Vec<CreatableTopic>,
    validate_only: bool,
    timeout: Duration,
) -> Vec<(String, ApiResult<CreatedTopic>)> {
    let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
    let r = broker
        .controller
        .call(
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
            },
            timeout,
        )
        .await;
    match r {
        Ok(ControllerResponse::CreateTopics(results)) => results,
        Ok(other) => names
            .into_iter()
            .map(|n| {
                let e = api_error(
                    codes::UNKNOWN_SERVER_ERROR,
                    format!("unexpected controller answer {other:?}"),
                );
                (n, Err(e))
            })
            .collect(),
        Err(e) => {
            let e = ApiError::from(e);
            names.into_iter().map(|n| (n, Err(e.clone()))).collect()
        }
    }
}

pub fn handle_create_topics(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    req: CreateTopicsRequest,
) -> Reply {
    let broker = broker.clone();
    Reply::later(async move { ResponseKind::CreateTopics(create_topics(&broker, &ctx, req).await) })
}

async fn create_topics(
    broker: &Broker,
    ctx: &RequestContext,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let timeout = timeout_of(req.timeout_ms);
    let topics: Vec<CreatableTopic> = req
        .topics
        .iter()
        .map(|t| CreatableTopic {
            name: t.name.as_str().to_string(),
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: t
                .assignments
                .iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.iter().map(|b| b.0).collect(),
                    )
                })
                .collect(),
            configs: t
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.as_str().to_string(),
                        c.value.as_ref().map(|v| v.as_str().to_string()),
                    )
                })
                .collect(),
        })
        .collect();
    let results = create_via_controller(broker, topics, req.validate_only, timeout).await;
    if !req.validate_only {
        let created: Vec<(String, Uuid, i32)> = results
            .iter()
            .filter_map(|(n, r)| {
                r.as_ref()
                    .ok()
                    .map(|c| (n.clone(), c.topic_id, c.num_partitions))
            })
            .collect();
        let (_, ok) = broker
            .wait_for_image(timeout, |img| {
                created.iter().all(|(n, id, count)| {
                    img.topic(n)
                        .is_some_and(|t| t.id == *id && t.partitions.len() == *count as usize)
                })
            })
            .await;
        if !ok {
            tracing::warn!("created topics did not reach this broker's metadata in time");
        }
    }
    let out = results
        .into_iter()
        .map(|(name, r)| {
            let base = CreatableTopicResult::default().with_name(TopicName(str_bytes(&name)));
            match r {
                Ok(c) => {
                    let mut t = base
                        .with_error_code(codes::NONE)
                        .with_num_partitions(c.num_partitions)
                        .with_replication_factor(c.replication_factor);
                    if ctx.version() >= 7 {
                        t = t.with_topic_id(c.topic_id);
                    }
                    t
                }
                Err(e) => base
                    .with_error_code(e.code)
                    .with_error_message(Some(str_bytes(&e.message))),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(out)
}

pub fn handle_delete_topics(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    req: DeleteTopicsRequest,
) -> Reply {
    let broker = broker.clone();
    Reply::later(async move { ResponseKind::DeleteTopics(delete_topics(&broker, &ctx, req).await) })
}

async fn delete_topics(
    broker: &Broker,
    ctx: &RequestContext,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let timeout = timeout_of(req.timeout_ms);
    // v0-5 name topics in `topic_names`; v6 uses `topics` with a name or an id.
    let refs: Vec<TopicRef> = if ctx.version() >= 6 {
        req.topics
            .iter()
            .map(|t| TopicRef {
                name: t.name.as_ref().map(|n| n.as_str().to_string()),
                id: (!t.topic_id.is_nil()).then_some(t.topic_id),
            })
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| TopicRef {
                name: Some(n.as_str().to_string()),
                id: None,
            })
            .collect()
    };
    let r = broker
        .controller
        .call(ControllerRequest::DeleteTopics(refs.clone()), timeout)
        .await;
    let results: Vec<(TopicRef, ApiResult<_>)> = match r {
        Ok(ControllerResponse::DeleteTopics(results)) => results,
        Ok(_) => refs
            .into_iter()
            .map(|r| {
                (
                    r,
                    Err(api_error(codes::UNKNOWN_SERVER_ERROR, "unexpected answer")),
                )
            })
            .collect(),
        Err(e) => {
            let e = ApiError::from(e);
            refs.into_iter().map(|r| (r, Err(e.clone()))).collect()
        }
    };
    let deleted: Vec<Uuid> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().map(|d| d.topic_id))
        .collect();
    broker
        .wait_for_image(timeout, |img| {
            deleted.iter().all(|id| img.topic_by_id(id).is_none())
        })
        .await;
    let out = results
        .into_iter()
        .map(|(tref, r)| {
            let mut entry = DeletableTopicResult::default();
            match r {
                Ok(d) => {
                    entry = entry.with_name(Some(TopicName(str_bytes(&d.name))));
                    if ctx.version() >= 6 {
                        entry = entry.with_topic_id(d.topic_id);
                    }
                }
                Err(e) => {
                    entry = entry
                        .with_name(tref.name.as_deref().map(|n| TopicName(str_bytes(n))))
                        .with_error_code(e.code);
                    if ctx.version() >= 5 {
                        entry = entry.with_error_message(Some(str_bytes(&e.message)));
                    }
                    if ctx.version() >= 6 {
                        entry = entry.with_topic_id(tref.id.unwrap_or_default());
                    }
                }
            }
            entry
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(out)
}

pub fn handle_create_partitions(
    broker: &Arc<Broker>,
    _ctx: RequestContext,
    req: CreatePartitionsRequest,
) -> Reply {
    let broker = broker.clone();
    Reply::later(
        async move { ResponseKind::CreatePartitions(create_partitions(&broker, req).await) },
    )
}

async fn create_partitions(
    broker: &Broker,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let timeout = timeout_of(req.timeout_ms);
    let topics: Vec<NewPartitions> = req
        .topics
        .iter()
        .map(|t| NewPartitions {
            topic: t.name.as_str().to_string(),
            count: t.count,
            assignments: t
                .assignments
                .iter()
                .flatten()
                .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                .collect(),
        })
        .collect();
    let wanted: HashMap<String, i32> = topics.iter().map(|t| (t.topic.clone(), t.count)).collect();
    let r = broker
        .controller
        .call(
            ControllerRequest::CreatePartitions {
                topics: topics.clone(),
                validate_only: req.validate_only,
            },
            timeout,
        )
        .await;
    let results: Vec<(String, ApiResult<()>)> = match r {
        Ok(ControllerResponse::CreatePartitions(results)) => results,
        Ok(_) => topics
            .into_iter()
            .map(|t| {
                (
                    t.topic,
                    Err(api_error(codes::UNKNOWN_SERVER_ERROR, "unexpected answer")),
                )
            })
            .collect(),
        Err(e) => {
            let e = ApiError::from(e);
            topics
                .into_iter()
                .map(|t| (t.topic, Err(e.clone())))
                .collect()
        }
    };
    if !req.validate_only {
        let grown: Vec<(String, i32)> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .filter_map(|(n, _)| wanted.get(n).map(|c| (n.clone(), *c)))
            .collect();
        broker
            .wait_for_image(timeout, |img| {
                grown.iter().all(|(n, c)| {
                    img.topic(n)
                        .is_some_and(|t| t.partitions.len() >= *c as usize)
                })
            })
            .await;
    }
    let out = results
        .into_iter()
        .map(|(name, r)| {
            let base =
                CreatePartitionsTopicResult::default().with_name(TopicName(str_bytes(&name)));
            match r {
                Ok(()) => base,
                Err(e) => base
                    .with_error_code(e.code)
                    .with_error_message(Some(str_bytes(&e.message))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(out)
}
