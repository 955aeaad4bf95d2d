//! Metadata (with topic auto-creation) and DescribeCluster, both answered from the applied
//! metadata image.

use std::sync::Arc;
use std::time::Duration;

use fjord_protocol::kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use fjord_protocol::kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use fjord_protocol::kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    ResponseKind, TopicName,
};
use fjord_raft::controller::requests::CreatableTopic;
use fjord_raft::controller::topics::validate_topic_name;
use fjord_raft::{MetadataImage, TopicImage};

use crate::broker::Broker;
use crate::codes;
use crate::dispatch::{Reply, RequestContext};
use crate::handlers::topics::create_via_controller;
use crate::util::is_internal_topic;
use crate::util::str_bytes;

/// How long a Metadata request waits for topics it auto-created to appear with leaders.
const AUTO_CREATE_WAIT: Duration = Duration::from_secs(5);

pub fn handle(broker: &Arc<Broker>, ctx: RequestContext, req: MetadataRequest) -> Reply {
    let broker = broker.clone();
    Reply::later(async move { ResponseKind::Metadata(metadata(&broker, &ctx, req).await) })
}

async fn metadata(broker: &Broker, ctx: &RequestContext, req: MetadataRequest) -> MetadataResponse {
    let mut image = broker.image();
    // v0 used an empty list for "all topics"; later versions use null.
    let all_topics = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && ctx.version() == 0,
    };
    let auto_create = req.allow_auto_topic_creation && broker.config.auto_create_topics_enable;

    if !all_topics && auto_create {
        let missing: Vec<String> = req
            .topics
            .iter()
            .flatten()
            .filter_map(|t| t.name.as_ref())
            .map(|n| n.as_str().to_string())
            .filter(|n| image.topic(n).is_none() && validate_topic_name(n).is_ok())
            .filter(|n| !is_internal_topic(n))
            .collect();
        if !missing.is_empty() {
            image = auto_create_topics(broker, missing, image).await;
        }
    }

    let mut topics = Vec::new();
    if all_topics {
        for t in image.topics.values() {
            topics.push(describe_topic(&image, t));
        }
    } else {
        for wanted in req.topics.iter().flatten() {
            let found = match &wanted.name {
                Some(name) => match image.topic(name.as_str()) {
                    Some(t) => Ok(t),
                    None if validate_topic_name(name.as_str()).is_err() => {
                        Err(codes::INVALID_TOPIC_EXCEPTION)
                    }
                    None if auto_create && !is_internal_topic(name.as_str()) => {
                        Err(codes::LEADER_NOT_AVAILABLE)
                    }
                    None => Err(codes::UNKNOWN_TOPIC_OR_PARTITION),
                },
                None => image
                    .topic_by_id(&wanted.topic_id)
                    .ok_or(codes::UNKNOWN_TOPIC_ID),
            };
            topics.push(match found {
                Ok(t) => describe_topic(&image, t),
                Err(code) => MetadataResponseTopic::default()
                    .with_error_code(code)
                    .with_name(wanted.name.clone())
                    .with_topic_id(wanted.topic_id),
            });
        }
    }

    let mut brokers = Vec::new();
    for b in image.unfenced_brokers() {
        if let Some(ep) = b.endpoint(&ctx.listener) {
            brokers.push(
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.id))
                    .with_host(str_bytes(&ep.host))
                    .with_port(i32::from(ep.port))
                    .with_rack(b.rack.as_deref().map(str_bytes)),
            );
        }
    }
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(&broker.cluster_id)))
        .with_controller_id(BrokerId(broker.reported_controller_id(&image)))
        .with_topics(topics)
}

fn describe_topic(image: &MetadataImage, t: &TopicImage) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .map(|(id, p)| {
            let error = if p.leader < 0 {
                codes::LEADER_NOT_AVAILABLE
            } else {
                codes::NONE
            };
            let offline: Vec<BrokerId> = p
                .replicas
                .iter()
                .filter(|r| image.broker(**r).is_none())
                .map(|r| BrokerId(*r))
                .collect();
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(*id)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().map(|r| BrokerId(*r)).collect())
                .with_isr_nodes(p.isr.iter().map(|r| BrokerId(*r)).collect())
                .with_offline_replicas(offline)
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(codes::NONE)
        .with_name(Some(TopicName(str_bytes(&t.name))))
        .with_topic_id(t.id)
        .with_is_internal(is_internal_topic(&t.name))
        .with_partitions(partitions)
}

/// Creates `names` with the cluster defaults, then waits (bounded) until they show up here with
/// leaders. Returns the newest image either way; topics that are not there yet are reported as
/// LEADER_NOT_AVAILABLE and the client retries, as with Kafka.
async fn auto_create_topics(
    broker: &Broker,
    names: Vec<String>,
    image: Arc<MetadataImage>,
) -> Arc<MetadataImage> {
    let topics = names
        .iter()
        .map(|n| CreatableTopic {
            name: n.clone(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: Vec::new(),
            configs: Vec::new(),
        })
        .collect();
    let results = create_via_controller(broker, topics, false, AUTO_CREATE_WAIT).await;
    for (name, r) in &results {
        match r {
            Ok(_) => tracing::info!(topic = %name, "auto-created topic"),
            // Another client won the race: the topic exists, which is all we wanted.
            Err(e) if e.code == 36 => {}
            Err(e) => tracing::warn!(topic = %name, error = %e, "auto-create failed"),
        }
    }
    let (latest, _) = broker
        .wait_for_image(AUTO_CREATE_WAIT, |img| {
            names.iter().all(|n| {
                img.topic(n)
                    .is_some_and(|t| t.partitions.values().all(|p| p.leader >= 0))
            })
        })
        .await;
    if latest.offset >= image.offset {
        latest
    } else {
        image
    }
}

pub fn handle_describe_cluster(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    req: DescribeClusterRequest,
) -> Reply {
    let image = broker.image();
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(&broker.cluster_id))
        .with_controller_id(BrokerId(broker.reported_controller_id(&image)))
        .with_endpoint_type(1);
    if req.endpoint_type != 1 {
        // Kafka answers controller-endpoint queries only on controller listeners.
        return Reply::now(ResponseKind::DescribeCluster(
            resp.with_error_code(114).with_error_message(Some(str_bytes(
                "brokers answer DescribeCluster only for endpoint type 1 (brokers)",
            ))),
        ));
    }
    let mut brokers = Vec::new();
    for b in image.brokers.values() {
        if b.fenced && !req.include_fenced_brokers {
            continue;
        }
        if let Some(ep) = b.endpoint(&ctx.listener) {
            let mut entry = DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(str_bytes(&ep.host))
                .with_port(i32::from(ep.port))
                .with_rack(b.rack.as_deref().map(str_bytes));
            if ctx.version() >= 2 {
                entry = entry.with_is_fenced(b.fenced);
            }
            brokers.push(entry);
        }
    }
    resp = resp.with_brokers(brokers);
    Reply::now(ResponseKind::DescribeCluster(resp))
}
