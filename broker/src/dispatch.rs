//! The one table from API key to handler. The same table gives the versions ApiVersions
//! advertises, so Fjord advertises exactly the APIs it serves: Kafka 4.1's stable ranges
//! (`fjord_protocol::KAFKA_41_BROKER_APIS`), clamped to what kafka-protocol can decode.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use fjord_protocol::kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use fjord_protocol::{KAFKA_41_BROKER_APIS, RequestHeader, SupportedApis};

use crate::broker::Broker;
use crate::handlers;

/// What a request was received with besides its body.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub header: RequestHeader,
    /// The listener the connection came in on (Metadata answers with that listener's
    /// endpoints).
    pub listener: String,
    /// The client's address (the group coordinator reports it as the member's host).
    pub peer: Option<std::net::SocketAddr>,
}

impl RequestContext {
    pub fn version(&self) -> i16 {
        self.header.api_version
    }
}

pub type ReplyFuture = Pin<Box<dyn Future<Output = Option<ResponseKind>> + Send>>;

/// A handler's answer. `None` means no response at all (Produce with acks=0).
pub enum Reply {
    /// Answered during dispatch, in request order.
    Now(Option<Box<ResponseKind>>),
    /// Answered later; runs concurrently with the connection's next requests.
    Later(ReplyFuture),
    /// No answer can be given; close the connection.
    Close,
}

impl Reply {
    pub fn now(r: ResponseKind) -> Reply {
        Reply::Now(Some(Box::new(r)))
    }

    pub fn later(f: impl Future<Output = ResponseKind> + Send + 'static) -> Reply {
        Reply::Later(Box::pin(async move { Some(f.await) }))
    }
}

macro_rules! api_table {
    ($($key:ident => $handler:path,)*) => {
        /// Every API key Fjord serves.
        pub const HANDLED: &[ApiKey] = &[$(ApiKey::$key,)*];

        /// Runs the handler for `body`.
        pub fn dispatch(broker: &Arc<Broker>, ctx: RequestContext, body: RequestKind) -> Reply {
            match body {
                $(RequestKind::$key(req) => $handler(broker, ctx, req),)*
                other => {
                    // The header parser only accepts advertised keys, so this is a bug; close
                    // the connection rather than leave the client waiting.
                    tracing::error!(api_key = ?ctx.header.api_key, "no handler for {:?}", std::mem::discriminant(&other));
                    Reply::Close
                }
            }
        }
    };
}

api_table! {
    ApiVersions => handlers::api_versions::handle,
    Metadata => handlers::metadata::handle,
    Produce => handlers::produce::handle,
    Fetch => handlers::fetch::handle,
    ListOffsets => handlers::list_offsets::handle,
    OffsetForLeaderEpoch => handlers::list_offsets::handle_offset_for_leader_epoch,
    CreateTopics => handlers::topics::handle_create_topics,
    DeleteTopics => handlers::topics::handle_delete_topics,
    CreatePartitions => handlers::topics::handle_create_partitions,
    DescribeConfigs => handlers::configs::handle_describe_configs,
    AlterConfigs => handlers::configs::handle_alter_configs,
    IncrementalAlterConfigs => handlers::configs::handle_incremental_alter_configs,
    DescribeCluster => handlers::metadata::handle_describe_cluster,
    DeleteRecords => handlers::delete_records::handle,
    DescribeTopicPartitions => handlers::describe_topic_partitions::handle,
    ElectLeaders => handlers::elect_leaders::handle,
    AlterPartitionReassignments => handlers::reassignments::handle_alter,
    ListPartitionReassignments => handlers::reassignments::handle_list,
    InitProducerId => handlers::init_producer_id::handle,
    FindCoordinator => handlers::groups::handle_find_coordinator,
    JoinGroup => handlers::groups::handle_join_group,
    SyncGroup => handlers::groups::handle_sync_group,
    Heartbeat => handlers::groups::handle_heartbeat,
    LeaveGroup => handlers::groups::handle_leave_group,
    ListGroups => handlers::groups::handle_list_groups,
    DescribeGroups => handlers::groups::handle_describe_groups,
    DeleteGroups => handlers::groups::handle_delete_groups,
    OffsetCommit => handlers::offsets::handle_offset_commit,
    OffsetFetch => handlers::offsets::handle_offset_fetch,
    OffsetDelete => handlers::offsets::handle_offset_delete,
    ConsumerGroupHeartbeat => handlers::consumer_groups::handle_consumer_group_heartbeat,
    ConsumerGroupDescribe => handlers::consumer_groups::handle_consumer_group_describe,
}

/// The APIs and versions this broker advertises.
pub fn supported_apis() -> SupportedApis {
    SupportedApis::new(
        KAFKA_41_BROKER_APIS
            .iter()
            .filter(|r| HANDLED.contains(&r.api_key))
            .copied(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handled_api_is_advertised_with_kafka_41_versions() {
        let apis = supported_apis();
        assert_eq!(apis.ranges().len(), HANDLED.len());
        for key in HANDLED {
            let r = apis.get(*key).unwrap();
            let k = KAFKA_41_BROKER_APIS
                .iter()
                .find(|x| x.api_key == *key)
                .unwrap();
            assert_eq!((r.min, r.max), (k.min, k.max), "{key:?}");
        }
        // The versions old clients still send (kafkajs 2.2.4).
        assert!(apis.supports(ApiKey::Produce, 7));
        assert!(apis.supports(ApiKey::Fetch, 11));
        assert!(apis.supports(ApiKey::Metadata, 6));
        assert!(apis.supports(ApiKey::JoinGroup, 0));
        assert!(apis.supports(ApiKey::OffsetFetch, 8));
    }
}
