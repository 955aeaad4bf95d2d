//! Which API versions exist, which the broker serves, and the ApiVersions
//! answers built from them.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::Message;

use crate::encode::encode_response;
use crate::error::{EncodeError, UNSUPPORTED_VERSION};

/// An inclusive range of versions of one API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRange {
    pub api_key: ApiKey,
    pub min: i16,
    pub max: i16,
}

const fn r(api_key: ApiKey, min: i16, max: i16) -> ApiRange {
    ApiRange { api_key, min, max }
}

/// Every API an Apache Kafka 4.1 broker listens for, with its stable versions.
///
/// Sources, in apache/kafka at tag 4.1.0,
/// `clients/src/main/resources/common/message/<Name>Request.json`:
/// - `validVersions` minus the last version when `latestVersionUnstable` is
///   true. kafka-protocol 0.18 is generated from that same tag and drops an
///   unstable latest version the same way, so its request messages decode
///   exactly these ranges; the tests check every entry against
///   [`codec_range`]. No clamp was needed: kafka-protocol 0.18 decodes and
///   encodes every stable 4.1 version.
///
///   Beware `ApiKey::valid_versions()`: it reports the *response* range, and
///   response schemas carry no `latestVersionUnstable` flag, so it claims
///   OffsetCommit v10, OffsetFetch v10 and InitProducerId v6. Those request
///   versions are unstable in 4.1 (topic-id offset APIs, KIP-939 two-phase
///   commit) and kafka-protocol cannot decode them; they are left out here.
///   APIs whose only 4.1 version is unstable (StreamsGroupHeartbeat 88,
///   StreamsGroupDescribe 89, early-access KIP-1071) are absent from both.
/// - `listeners` containing `"broker"`. Controller-only APIs (Vote,
///   BeginQuorumEpoch, EndQuorumEpoch, AlterPartition, Envelope, FetchSnapshot,
///   BrokerRegistration, BrokerHeartbeat, AllocateProducerIds,
///   ControllerRegistration, AssignReplicasToDirs, UpdateRaftVoter) are left
///   out. Kafka 4.0 removed the ZooKeeper-era inter-broker APIs (LeaderAndIsr,
///   StopReplica, UpdateMetadata, ControlledShutdown); kafka-protocol 0.18 has
///   no schema for them either.
///
/// This is a catalogue, not an advertisement: the broker passes the subset it
/// implements to [`SupportedApis::new`]. Share-group APIs (76-79, 83-87,
/// 90-92, KIP-932) are stable in 4.1 but Kafka only serves them when the
/// `share.version` feature is enabled.
pub const KAFKA_41_BROKER_APIS: &[ApiRange] = &[
    r(ApiKey::Produce, 3, 13),
    r(ApiKey::Fetch, 4, 18),
    r(ApiKey::ListOffsets, 1, 10),
    r(ApiKey::Metadata, 0, 13),
    r(ApiKey::OffsetCommit, 2, 9),
    r(ApiKey::OffsetFetch, 1, 9),
    r(ApiKey::FindCoordinator, 0, 6),
    r(ApiKey::JoinGroup, 0, 9),
    r(ApiKey::Heartbeat, 0, 4),
    r(ApiKey::LeaveGroup, 0, 5),
    r(ApiKey::SyncGroup, 0, 5),
    r(ApiKey::DescribeGroups, 0, 6),
    r(ApiKey::ListGroups, 0, 5),
    r(ApiKey::SaslHandshake, 0, 1),
    r(ApiKey::ApiVersions, 0, 4),
    r(ApiKey::CreateTopics, 2, 7),
    r(ApiKey::DeleteTopics, 1, 6),
    r(ApiKey::DeleteRecords, 0, 2),
    r(ApiKey::InitProducerId, 0, 5),
    r(ApiKey::OffsetForLeaderEpoch, 2, 4),
    r(ApiKey::AddPartitionsToTxn, 0, 5),
    r(ApiKey::AddOffsetsToTxn, 0, 4),
    r(ApiKey::EndTxn, 0, 5),
    r(ApiKey::WriteTxnMarkers, 1, 1),
    r(ApiKey::TxnOffsetCommit, 0, 5),
    r(ApiKey::DescribeAcls, 1, 3),
    r(ApiKey::CreateAcls, 1, 3),
    r(ApiKey::DeleteAcls, 1, 3),
    r(ApiKey::DescribeConfigs, 1, 4),
    r(ApiKey::AlterConfigs, 0, 2),
    r(ApiKey::AlterReplicaLogDirs, 1, 2),
    r(ApiKey::DescribeLogDirs, 1, 4),
    r(ApiKey::SaslAuthenticate, 0, 2),
    r(ApiKey::CreatePartitions, 0, 3),
    r(ApiKey::CreateDelegationToken, 1, 3),
    r(ApiKey::RenewDelegationToken, 1, 2),
    r(ApiKey::ExpireDelegationToken, 1, 2),
    r(ApiKey::DescribeDelegationToken, 1, 3),
    r(ApiKey::DeleteGroups, 0, 2),
    r(ApiKey::ElectLeaders, 0, 2),
    r(ApiKey::IncrementalAlterConfigs, 0, 1),
    r(ApiKey::AlterPartitionReassignments, 0, 1),
    r(ApiKey::ListPartitionReassignments, 0, 0),
    r(ApiKey::OffsetDelete, 0, 0),
    r(ApiKey::DescribeClientQuotas, 0, 1),
    r(ApiKey::AlterClientQuotas, 0, 1),
    r(ApiKey::DescribeUserScramCredentials, 0, 0),
    r(ApiKey::AlterUserScramCredentials, 0, 0),
    r(ApiKey::DescribeQuorum, 0, 2),
    r(ApiKey::UpdateFeatures, 0, 2),
    r(ApiKey::DescribeCluster, 0, 2),
    r(ApiKey::DescribeProducers, 0, 0),
    r(ApiKey::UnregisterBroker, 0, 0),
    r(ApiKey::DescribeTransactions, 0, 0),
    r(ApiKey::ListTransactions, 0, 2),
    r(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    r(ApiKey::ConsumerGroupDescribe, 0, 1),
    r(ApiKey::GetTelemetrySubscriptions, 0, 0),
    r(ApiKey::PushTelemetry, 0, 0),
    r(ApiKey::ListConfigResources, 0, 1),
    r(ApiKey::DescribeTopicPartitions, 0, 0),
    r(ApiKey::ShareGroupHeartbeat, 1, 1),
    r(ApiKey::ShareGroupDescribe, 1, 1),
    r(ApiKey::ShareFetch, 1, 1),
    r(ApiKey::ShareAcknowledge, 1, 1),
    r(ApiKey::AddRaftVoter, 0, 0),
    r(ApiKey::RemoveRaftVoter, 0, 0),
    r(ApiKey::InitializeShareGroupState, 0, 0),
    r(ApiKey::ReadShareGroupState, 0, 0),
    r(ApiKey::WriteShareGroupState, 0, 0),
    r(ApiKey::DeleteShareGroupState, 0, 0),
    r(ApiKey::ReadShareGroupStateSummary, 0, 0),
    r(ApiKey::DescribeShareGroupOffsets, 0, 0),
    r(ApiKey::AlterShareGroupOffsets, 0, 0),
    r(ApiKey::DeleteShareGroupOffsets, 0, 0),
];

/// The versions kafka-protocol can both decode (request) and encode
/// (response) for `api_key`; `min > max` if there are none.
pub fn codec_range(api_key: ApiKey) -> (i16, i16) {
    let Some((req_lo, req_hi)) = crate::schema::request_versions(api_key as i16) else {
        return (0, -1);
    };
    let resp = response_versions(api_key);
    (req_lo.max(resp.0), req_hi.min(resp.1))
}

/// The APIs and versions one broker serves; what it advertises in ApiVersions
/// and what the header parser accepts.
#[derive(Debug, Clone)]
pub struct SupportedApis {
    /// Sorted by key, no duplicates, every range non-empty.
    ranges: Vec<ApiRange>,
}

impl SupportedApis {
    /// Builds the table from the ranges the broker implements. Each range is
    /// clamped to what kafka-protocol can decode and encode ([`codec_range`]);
    /// ranges left empty are dropped, and a later duplicate of a key replaces an
    /// earlier one.
    pub fn new(ranges: impl IntoIterator<Item = ApiRange>) -> Self {
        let mut out: Vec<ApiRange> = Vec::new();
        for mut range in ranges {
            let (lo, hi) = codec_range(range.api_key);
            range.min = range.min.max(lo);
            range.max = range.max.min(hi);
            out.retain(|x| x.api_key != range.api_key);
            if range.min <= range.max {
                out.push(range);
            }
        }
        out.sort_by_key(|x| x.api_key as i16);
        SupportedApis { ranges: out }
    }

    /// Everything a Kafka 4.1 broker serves ([`KAFKA_41_BROKER_APIS`]).
    pub fn kafka_41_broker() -> Self {
        Self::new(KAFKA_41_BROKER_APIS.iter().copied())
    }

    pub fn ranges(&self) -> &[ApiRange] {
        &self.ranges
    }

    pub fn get(&self, api_key: ApiKey) -> Option<ApiRange> {
        self.ranges
            .binary_search_by_key(&(api_key as i16), |x| x.api_key as i16)
            .ok()
            .map(|i| self.ranges[i])
    }

    pub fn supports(&self, api_key: ApiKey, version: i16) -> bool {
        self.get(api_key)
            .is_some_and(|r| r.min <= version && version <= r.max)
    }
}

fn api_version_entries(apis: &SupportedApis) -> Vec<ApiVersion> {
    apis.ranges()
        .iter()
        .map(|r| {
            ApiVersion::default()
                .with_api_key(r.api_key as i16)
                .with_min_version(r.min)
                .with_max_version(r.max)
        })
        .collect()
}

/// A successful ApiVersionsResponse listing `apis`. It is valid at every
/// version; set features (v3+) or throttle time (v1+) with its `with_*`
/// methods before encoding.
pub fn api_versions_response(apis: &SupportedApis) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(0)
        .with_api_keys(api_version_entries(apis))
}

/// The answer to an ApiVersions request whose version we do not support:
/// UNSUPPORTED_VERSION plus the supported ranges, meant to be encoded as v0.
///
/// Kafka builds this answer with version 0 whatever version was asked (so it
/// carries no throttle time and no tagged fields) and, like every ApiVersions
/// response, with response header v0; clients parse it as v0, read the
/// ApiVersions entry and retry with a version in it (KIP-511). Kafka lists
/// only the ApiVersions entry; listing every supported range, as Fjord does,
/// is equally valid to clients.
pub fn unsupported_api_versions_response(apis: &SupportedApis) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(UNSUPPORTED_VERSION)
        .with_api_keys(api_version_entries(apis))
}

/// The complete frame answering an unsupported ApiVersions version.
pub fn encode_unsupported_api_versions(
    correlation_id: i32,
    apis: &SupportedApis,
) -> Result<Bytes, EncodeError> {
    encode_response(0, correlation_id, &unsupported_api_versions_response(apis))
}

/// The version range of the response message kafka-protocol has for `api_key`.
fn response_versions(api_key: ApiKey) -> (i16, i16) {
    use kafka_protocol::messages::*;
    macro_rules! range {
        ($($key:ident => $resp:ty,)*) => {
            match api_key {
                $(ApiKey::$key => (<$resp as Message>::VERSIONS.min, <$resp as Message>::VERSIONS.max),)*
            }
        };
    }
    range! {
        Produce => ProduceResponse,
        Fetch => FetchResponse,
        ListOffsets => ListOffsetsResponse,
        Metadata => MetadataResponse,
        OffsetCommit => OffsetCommitResponse,
        OffsetFetch => OffsetFetchResponse,
        FindCoordinator => FindCoordinatorResponse,
        JoinGroup => JoinGroupResponse,
        Heartbeat => HeartbeatResponse,
        LeaveGroup => LeaveGroupResponse,
        SyncGroup => SyncGroupResponse,
        DescribeGroups => DescribeGroupsResponse,
        ListGroups => ListGroupsResponse,
        SaslHandshake => SaslHandshakeResponse,
        ApiVersions => ApiVersionsResponse,
        CreateTopics => CreateTopicsResponse,
        DeleteTopics => DeleteTopicsResponse,
        DeleteRecords => DeleteRecordsResponse,
        InitProducerId => InitProducerIdResponse,
        OffsetForLeaderEpoch => OffsetForLeaderEpochResponse,
        AddPartitionsToTxn => AddPartitionsToTxnResponse,
        AddOffsetsToTxn => AddOffsetsToTxnResponse,
        EndTxn => EndTxnResponse,
        WriteTxnMarkers => WriteTxnMarkersResponse,
        TxnOffsetCommit => TxnOffsetCommitResponse,
        DescribeAcls => DescribeAclsResponse,
        CreateAcls => CreateAclsResponse,
        DeleteAcls => DeleteAclsResponse,
        DescribeConfigs => DescribeConfigsResponse,
        AlterConfigs => AlterConfigsResponse,
        AlterReplicaLogDirs => AlterReplicaLogDirsResponse,
        DescribeLogDirs => DescribeLogDirsResponse,
        SaslAuthenticate => SaslAuthenticateResponse,
        CreatePartitions => CreatePartitionsResponse,
        CreateDelegationToken => CreateDelegationTokenResponse,
        RenewDelegationToken => RenewDelegationTokenResponse,
        ExpireDelegationToken => ExpireDelegationTokenResponse,
        DescribeDelegationToken => DescribeDelegationTokenResponse,
        DeleteGroups => DeleteGroupsResponse,
        ElectLeaders => ElectLeadersResponse,
        IncrementalAlterConfigs => IncrementalAlterConfigsResponse,
        AlterPartitionReassignments => AlterPartitionReassignmentsResponse,
        ListPartitionReassignments => ListPartitionReassignmentsResponse,
        OffsetDelete => OffsetDeleteResponse,
        DescribeClientQuotas => DescribeClientQuotasResponse,
        AlterClientQuotas => AlterClientQuotasResponse,
        DescribeUserScramCredentials => DescribeUserScramCredentialsResponse,
        AlterUserScramCredentials => AlterUserScramCredentialsResponse,
        Vote => VoteResponse,
        BeginQuorumEpoch => BeginQuorumEpochResponse,
        EndQuorumEpoch => EndQuorumEpochResponse,
        DescribeQuorum => DescribeQuorumResponse,
        AlterPartition => AlterPartitionResponse,
        UpdateFeatures => UpdateFeaturesResponse,
        Envelope => EnvelopeResponse,
        FetchSnapshot => FetchSnapshotResponse,
        DescribeCluster => DescribeClusterResponse,
        DescribeProducers => DescribeProducersResponse,
        BrokerRegistration => BrokerRegistrationResponse,
        BrokerHeartbeat => BrokerHeartbeatResponse,
        UnregisterBroker => UnregisterBrokerResponse,
        DescribeTransactions => DescribeTransactionsResponse,
        ListTransactions => ListTransactionsResponse,
        AllocateProducerIds => AllocateProducerIdsResponse,
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatResponse,
        ConsumerGroupDescribe => ConsumerGroupDescribeResponse,
        ControllerRegistration => ControllerRegistrationResponse,
        GetTelemetrySubscriptions => GetTelemetrySubscriptionsResponse,
        PushTelemetry => PushTelemetryResponse,
        AssignReplicasToDirs => AssignReplicasToDirsResponse,
        ListConfigResources => ListConfigResourcesResponse,
        DescribeTopicPartitions => DescribeTopicPartitionsResponse,
        ShareGroupHeartbeat => ShareGroupHeartbeatResponse,
        ShareGroupDescribe => ShareGroupDescribeResponse,
        ShareFetch => ShareFetchResponse,
        ShareAcknowledge => ShareAcknowledgeResponse,
        AddRaftVoter => AddRaftVoterResponse,
        RemoveRaftVoter => RemoveRaftVoterResponse,
        UpdateRaftVoter => UpdateRaftVoterResponse,
        InitializeShareGroupState => InitializeShareGroupStateResponse,
        ReadShareGroupState => ReadShareGroupStateResponse,
        WriteShareGroupState => WriteShareGroupStateResponse,
        DeleteShareGroupState => DeleteShareGroupStateResponse,
        ReadShareGroupStateSummary => ReadShareGroupStateSummaryResponse,
        DescribeShareGroupOffsets => DescribeShareGroupOffsetsResponse,
        AlterShareGroupOffsets => AlterShareGroupOffsetsResponse,
        DeleteShareGroupOffsets => DeleteShareGroupOffsetsResponse,
    }
}
