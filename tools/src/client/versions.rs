//! API version negotiation: for each API, the highest version that both the broker (from its
//! ApiVersions answer) and this tool support.
//!
//! Our range for an API is kafka-protocol's range for the request, raised to a floor below which
//! the requests we build would need fields that do not exist yet (kafka-protocol refuses to
//! encode a non-default field in a version that lacks it). The floors are versions every Kafka
//! release since 2.1 supports.

use std::collections::HashMap;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::protocol::Request;

use super::error::ClientError;

/// Lowest version of each API this tool sends.
fn floor(key: ApiKey) -> i16 {
    match key {
        // allow_auto_topic_creation (v4) must be sendable as false.
        ApiKey::Metadata => 4,
        ApiKey::Produce => 3,
        ApiKey::Fetch => 4,
        ApiKey::ListOffsets => 1,
        ApiKey::CreateTopics => 2,
        ApiKey::DeleteTopics => 1,
        ApiKey::DescribeConfigs => 1,
        ApiKey::OffsetCommit => 2,
        ApiKey::OffsetFetch => 1,
        // rebalance_timeout_ms (v1) is needed for a member that may process slowly.
        ApiKey::JoinGroup => 1,
        _ => 0,
    }
}

/// The versions a connected broker supports, as it advertised them.
#[derive(Debug, Clone, Default)]
pub struct VersionTable {
    ranges: HashMap<i16, (i16, i16)>,
}

impl VersionTable {
    pub fn from_response(resp: &ApiVersionsResponse) -> VersionTable {
        VersionTable {
            ranges: resp
                .api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect(),
        }
    }

    pub fn broker_range(&self, key: i16) -> Option<(i16, i16)> {
        self.ranges.get(&key).copied()
    }

    /// True when the broker advertises `R` in a version we can send.
    pub fn supports<R: Request>(&self) -> bool {
        self.pick::<R>("").is_ok()
    }

    /// The version to send `R` at: the highest both sides support.
    pub fn pick<R: Request>(&self, broker: &str) -> Result<i16, ClientError> {
        let key = ApiKey::try_from(R::KEY).ok();
        let ours_lo = key.map(floor).unwrap_or(0).max(R::VERSIONS.min);
        let ours_hi = R::VERSIONS.max;
        let api = api_name(R::KEY);
        let Some((lo, hi)) = self.broker_range(R::KEY) else {
            return Err(ClientError::Unsupported {
                broker: broker.to_string(),
                api,
                broker_range: "none".into(),
                ours: format!("{ours_lo}-{ours_hi}"),
            });
        };
        let v = hi.min(ours_hi);
        if v < lo.max(ours_lo) {
            return Err(ClientError::Unsupported {
                broker: broker.to_string(),
                api,
                broker_range: format!("{lo}-{hi}"),
                ours: format!("{ours_lo}-{ours_hi}"),
            });
        }
        Ok(v)
    }
}

/// A readable API name for messages, e.g. "Metadata".
pub fn api_name(key: i16) -> &'static str {
    match ApiKey::try_from(key) {
        Ok(k) => api_key_name(k),
        Err(()) => "unknown API",
    }
}

fn api_key_name(k: ApiKey) -> &'static str {
    use ApiKey::*;
    match k {
        Produce => "Produce",
        Fetch => "Fetch",
        ListOffsets => "ListOffsets",
        Metadata => "Metadata",
        OffsetCommit => "OffsetCommit",
        OffsetFetch => "OffsetFetch",
        FindCoordinator => "FindCoordinator",
        JoinGroup => "JoinGroup",
        Heartbeat => "Heartbeat",
        LeaveGroup => "LeaveGroup",
        SyncGroup => "SyncGroup",
        DescribeGroups => "DescribeGroups",
        ListGroups => "ListGroups",
        ApiVersions => "ApiVersions",
        CreateTopics => "CreateTopics",
        DeleteTopics => "DeleteTopics",
        DescribeConfigs => "DescribeConfigs",
        CreatePartitions => "CreatePartitions",
        DeleteGroups => "DeleteGroups",
        IncrementalAlterConfigs => "IncrementalAlterConfigs",
        OffsetDelete => "OffsetDelete",
        DescribeCluster => "DescribeCluster",
        DescribeQuorum => "DescribeQuorum",
        AlterPartitionReassignments => "AlterPartitionReassignments",
        ListPartitionReassignments => "ListPartitionReassignments",
        _ => "request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{FetchRequest, MetadataRequest, ProduceRequest};

    fn table(entries: &[(i16, i16, i16)]) -> VersionTable {
        let resp = ApiVersionsResponse::default().with_api_keys(
            entries
                .iter()
                .map(|&(k, lo, hi)| {
                    ApiVersion::default()
                        .with_api_key(k)
                        .with_min_version(lo)
                        .with_max_version(hi)
                })
                .collect(),
        );
        VersionTable::from_response(&resp)
    }

    #[test]
    fn picks_highest_common_version() {
        let t = table(&[(3, 0, 99), (0, 0, 9), (1, 4, 11)]);
        assert_eq!(t.pick::<MetadataRequest>("b").unwrap(), 13);
        assert_eq!(t.pick::<ProduceRequest>("b").unwrap(), 9);
        assert_eq!(t.pick::<FetchRequest>("b").unwrap(), 11);
    }

    #[test]
    fn refuses_when_ranges_do_not_meet() {
        // A broker offering only Metadata v0-3 is below our floor of 4.
        let t = table(&[(3, 0, 3)]);
        let err = t.pick::<MetadataRequest>("b:1").unwrap_err();
        assert!(err.to_string().contains("Metadata"), "{err}");
        assert!(t.pick::<ProduceRequest>("b:1").is_err());
    }
}
