//! ElectLeaders: preferred (v0's only kind) and unclean leader elections, decided by the
//! controller (`fjord_raft::controller::elections`). The answer waits, bounded by the
//! request's timeout, until this broker's metadata shows the new leaders, so a client that
//! asks for metadata next sees them.

use std::sync::Arc;
use std::time::Duration;

use fjord_protocol::kafka_protocol::messages::elect_leaders_response::{
    PartitionResult, ReplicaElectionResult,
};
use fjord_protocol::kafka_protocol::messages::{
    ElectLeadersRequest, ElectLeadersResponse, ResponseKind, TopicName,
};
use fjord_raft::controller::requests::{ApiError, ControllerRequest, ControllerResponse};

use crate::broker::Broker;
use crate::codes;
use crate::dispatch::{Reply, RequestContext};
use crate::util::str_bytes;

pub fn handle(broker: &Arc<Broker>, ctx: RequestContext, req: ElectLeadersRequest) -> Reply {
    let broker = broker.clone();
    Reply::later(async move { ResponseKind::ElectLeaders(elect(&broker, &ctx, req).await) })
}

async fn elect(
    broker: &Broker,
    ctx: &RequestContext,
    req: ElectLeadersRequest,
) -> ElectLeadersResponse {
    // v0 has no election type: preferred.
    let election_type = if ctx.version() >= 1 {
        req.election_type
    } else {
        0
    };
    let partitions: Option<Vec<(String, i32)>> = req.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                let name = t.topic.as_str().to_string();
                t.partitions.iter().map(move |p| (name.clone(), *p))
            })
            .collect()
    });
    let timeout =
        Duration::from_millis(req.timeout_ms.max(0) as u64).max(Duration::from_millis(100));
    let call = broker
        .controller
        .call(
            ControllerRequest::ElectLeaders {
                election_type,
                partitions: partitions.clone(),
            },
            timeout,
        )
        .await;
    let results: Vec<(String, i32, Result<(), ApiError>)> = match call {
        Ok(ControllerResponse::ElectLeaders(r)) => r,
        Ok(_) => {
            return ElectLeadersResponse::default().with_error_code(codes::UNKNOWN_SERVER_ERROR);
        }
        Err(e) => {
            let e = ApiError::from(e);
            match partitions {
                Some(list) => list
                    .into_iter()
                    .map(|(t, p)| (t, p, Err(e.clone())))
                    .collect(),
                None => return ElectLeadersResponse::default().with_error_code(e.code),
            }
        }
    };
    // Wait for the elected leaders to reach our image.
    let elected: Vec<(String, i32)> = results
        .iter()
        .filter(|(_, _, r)| r.is_ok())
        .map(|(t, p, _)| (t.clone(), *p))
        .collect();
    let _ = broker
        .wait_for_image(timeout, |img| {
            elected.iter().all(|(t, p)| {
                img.partition(t, *p).is_some_and(|part| {
                    if election_type == 0 {
                        part.replicas.first() == Some(&part.leader)
                    } else {
                        part.leader >= 0
                    }
                })
            })
        })
        .await;
    let mut out: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, partition, r) in results {
        let (code, message) = match r {
            Ok(()) => (codes::NONE, None),
            Err(e) => (e.code, Some(str_bytes(&e.message))),
        };
        let result = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(code)
            .with_error_message(message);
        match out.iter_mut().find(|t| t.topic.as_str() == topic) {
            Some(t) => t.partition_result.push(result),
            None => out.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(str_bytes(&topic)))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(out)
}
