//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455).
//!
//! The controller decides (`fjord_raft::controller::reassignments`); an alter is answered once
//! this broker's metadata image shows each accepted change, so a List that follows sees it.
//! List reads this broker's image, which the controller's commits reach within one metadata
//! propagation.

use std::sync::Arc;
use std::time::Duration;

use fjord_protocol::kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use fjord_protocol::kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use fjord_protocol::kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, ResponseKind, TopicName,
};
use fjord_raft::controller::requests::{ApiError, ControllerRequest, ControllerResponse};
use fjord_raft::image::PartitionRegistration;

use crate::broker::Broker;
use crate::codes;
use crate::dispatch::{Reply, RequestContext};
use crate::util::str_bytes;

pub fn handle_alter(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    req: AlterPartitionReassignmentsRequest,
) -> Reply {
    let broker = broker.clone();
    Reply::later(async move {
        ResponseKind::AlterPartitionReassignments(alter(&broker, &ctx, req).await)
    })
}

async fn alter(
    broker: &Broker,
    ctx: &RequestContext,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    // v0 has no such field; Kafka's default is to allow it.
    let allow_rf_change = ctx.version() < 1 || req.allow_replication_factor_change;
    let partitions: Vec<(String, i32, Option<Vec<i32>>)> = req
        .topics
        .iter()
        .flat_map(|t| {
            let name = t.name.as_str().to_string();
            t.partitions.iter().map(move |p| {
                let target = p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect());
                (name.clone(), p.partition_index, target)
            })
        })
        .collect();
    let timeout =
        Duration::from_millis(req.timeout_ms.max(0) as u64).max(Duration::from_millis(100));
    let call = broker
        .controller
        .call(
            ControllerRequest::AlterPartitionReassignments {
                partitions: partitions.clone(),
                allow_replication_factor_change: allow_rf_change,
            },
            timeout,
        )
        .await;
    let response = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change);
    // A failure of the whole request is also reported on every partition, as Kafka does
    // (some clients read only the per-partition results).
    let (results, top) = match call {
        Ok(ControllerResponse::AlterPartitionReassignments(r)) => (r, None),
        Ok(_) => (
            Vec::new(),
            Some(ApiError {
                code: codes::UNKNOWN_SERVER_ERROR,
                message: "unexpected controller answer".into(),
            }),
        ),
        Err(e) => (Vec::new(), Some(ApiError::from(e))),
    };
    if let Some(e) = top {
        let results = partitions
            .iter()
            .map(|(t, p, _)| (t.clone(), *p, Err(e.clone())))
            .collect();
        return response
            .with_error_code(e.code)
            .with_error_message(Some(str_bytes(&e.message)))
            .with_responses(partition_responses(results));
    }
    // Wait until our image shows every accepted change.
    let accepted: Vec<(String, i32, Option<Vec<i32>>)> = partitions
        .iter()
        .zip(&results)
        .filter(|(_, (_, _, r))| r.is_ok())
        .map(|(p, _)| p.clone())
        .collect();
    let _ = broker
        .wait_for_image(timeout, |img| {
            accepted.iter().all(|(t, p, target)| {
                img.partition(t, *p).is_some_and(|part| match target {
                    Some(target) => &part.target_replicas() == target,
                    None => !part.reassigning(),
                })
            })
        })
        .await;
    response.with_responses(partition_responses(results))
}

fn partition_responses(
    results: Vec<(String, i32, Result<(), ApiError>)>,
) -> Vec<ReassignableTopicResponse> {
    let mut out: Vec<ReassignableTopicResponse> = Vec::new();
    for (topic, partition, r) in results {
        let (code, message) = match r {
            Ok(()) => (codes::NONE, None),
            Err(e) => (e.code, Some(str_bytes(&e.message))),
        };
        let result = ReassignablePartitionResponse::default()
            .with_partition_index(partition)
            .with_error_code(code)
            .with_error_message(message);
        match out.iter_mut().find(|t| t.name.as_str() == topic) {
            Some(t) => t.partitions.push(result),
            None => out.push(
                ReassignableTopicResponse::default()
                    .with_name(TopicName(str_bytes(&topic)))
                    .with_partitions(vec![result]),
            ),
        }
    }
    out
}

pub fn handle_list(
    broker: &Arc<Broker>,
    _ctx: RequestContext,
    req: ListPartitionReassignmentsRequest,
) -> Reply {
    let image = broker.image();
    let ongoing = |id: i32, p: &PartitionRegistration| {
        let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
        OngoingPartitionReassignment::default()
            .with_partition_index(id)
            .with_replicas(ids(&p.replicas))
            .with_adding_replicas(ids(&p.adding_replicas))
            .with_removing_replicas(ids(&p.removing_replicas))
    };
    let mut topics = Vec::new();
    match &req.topics {
        // Every reassignment in progress.
        None => {
            for t in image.topics.values() {
                let partitions: Vec<_> = t
                    .partitions
                    .iter()
                    .filter(|(_, p)| p.reassigning())
                    .map(|(id, p)| ongoing(*id, p))
                    .collect();
                if !partitions.is_empty() {
                    topics.push(
                        OngoingTopicReassignment::default()
                            .with_name(TopicName(str_bytes(&t.name)))
                            .with_partitions(partitions),
                    );
                }
            }
        }
        // Only the named partitions that are moving; unknown ones are left out, as Kafka does.
        Some(asked) => {
            for t in asked {
                let Some(topic) = image.topic(t.name.as_str()) else {
                    continue;
                };
                let partitions: Vec<_> = t
                    .partition_indexes
                    .iter()
                    .filter_map(|id| {
                        let p = topic.partitions.get(id)?;
                        p.reassigning().then(|| ongoing(*id, p))
                    })
                    .collect();
                if !partitions.is_empty() {
                    topics.push(
                        OngoingTopicReassignment::default()
                            .with_name(t.name.clone())
                            .with_partitions(partitions),
                    );
                }
            }
        }
    }
    Reply::now(ResponseKind::ListPartitionReassignments(
        ListPartitionReassignmentsResponse::default().with_topics(topics),
    ))
}
