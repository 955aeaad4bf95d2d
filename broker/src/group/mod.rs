//! The group coordinator: classic consumer groups (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup) and committed offsets, with the semantics of Apache Kafka's group coordinator.
//!
//! Groups are spread over the partitions of the compacted `__consumer_offsets` topic: a group
//! belongs to partition `abs(hash(group id)) % partitions`, and the broker leading that
//! partition is the group's coordinator. Each led partition is a [`shard::Shard`] that owns the
//! groups and offsets of that partition. Every change that must survive a restart is appended
//! to the partition as a record in Kafka's own key/value formats ([`records`]), so Kafka's
//! tools can read the topic, and a broker that becomes leader rebuilds the shard by replaying
//! the partition ([`log`]).
//!
//! - [`member`] and [`classic`]: one member and one classic group (state machine, protocol
//!   selection).
//! - [`state`]: one partition's groups, offsets, deadlines and log; [`rebalance`] (JoinGroup,
//!   SyncGroup, Heartbeat, LeaveGroup), [`commits`] (offsets) and [`admin`] (ListGroups,
//!   DescribeGroups) operate on it.
//! - [`offsets`]: the committed offsets; [`timers`]: session, join and sync deadlines.
//! - [`log`]: writing records to the partition and loading a shard from it.
//! - [`shard`]: a loaded partition, its lock and its background task.
//! - [`consumer`]: KIP-848 consumer groups (ConsumerGroupHeartbeat, ConsumerGroupDescribe).
//! - [`lag`]: consumer lag from committed offsets and high watermarks; [`force`]: operator-forced
//!   rebalances.
//! - [`coordinator`]: leadership tracking, shard routing and the topic's creation.

pub mod admin;
pub mod classic;
pub mod codes;
pub mod commits;
pub mod consumer;
pub mod coordinator;
pub mod force;
pub mod lag;
pub mod log;
pub mod member;
pub mod offsets;
pub mod rebalance;
pub mod records;
pub mod shard;
pub mod state;
pub mod timers;

#[cfg(test)]
mod shard_tests;

use std::time::Duration;

pub use coordinator::GroupCoordinator;

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The member id of a member that does not have one yet.
pub const UNKNOWN_MEMBER_ID: &str = "";

/// Settings of the group coordinator, by Kafka property (see `config.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupCoordinatorConfig {
    /// `offsets.topic.num.partitions`.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.topic.replication.factor`: as in Kafka, the topic is not created with fewer
    /// live brokers than this.
    pub offsets_topic_replication_factor: i16,
    /// `offsets.topic.segment.bytes`.
    pub offsets_topic_segment_bytes: i32,
    /// `offsets.commit.timeout.ms`: how long a write waits to be replicated.
    pub offsets_commit_timeout: Duration,
    /// `offsets.retention.minutes`.
    pub offsets_retention: Duration,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval: Duration,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_max_bytes: usize,
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: i32,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.max.size`.
    pub max_size: usize,
    /// `group.consumer.session.timeout.ms`: how long a consumer group member may go without a
    /// heartbeat.
    pub consumer_session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms`: the interval consumer group members are told to
    /// heartbeat at.
    pub consumer_heartbeat_interval_ms: i32,
    /// `group.consumer.max.size`.
    pub consumer_max_size: usize,
    /// `group.consumer.assignors`: the server assignors members may name; the first is the
    /// default.
    pub consumer_assignors: Vec<String>,
}

impl Default for GroupCoordinatorConfig {
    /// Kafka's defaults.
    fn default() -> Self {
        GroupCoordinatorConfig {
            offsets_topic_num_partitions: 50,
            offsets_topic_replication_factor: 3,
            offsets_topic_segment_bytes: 100 * 1024 * 1024,
            offsets_commit_timeout: Duration::from_millis(5000),
            offsets_retention: Duration::from_secs(7 * 24 * 60 * 60),
            offsets_retention_check_interval: Duration::from_millis(600_000),
            offset_metadata_max_bytes: 4096,
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            max_size: i32::MAX as usize,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
            consumer_max_size: i32::MAX as usize,
            consumer_assignors: vec!["uniform".into(), "range".into()],
        }
    }
}

/// Java's `String.hashCode`: the polynomial hash over UTF-16 code units with wrapping `int`
/// arithmetic. Kafka picks a group's partition with it, so Fjord must too for clients and tools
/// that compute the partition themselves.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The `__consumer_offsets` partition of a group: Kafka's `Utils.abs(hash) % partitions`,
/// where `Utils.abs(Integer.MIN_VALUE)` is 0.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let h = java_string_hash(group_id);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// Milliseconds since the epoch (the clock of commit and state timestamps).
pub(crate) fn now_ms() -> i64 {
    fjord_storage::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_java_string_hash_code() {
        // Values computed by java.lang.String#hashCode.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("my-group"), -1_906_497_762);
        // Wraps like Java int arithmetic.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        // Characters outside the BMP hash as two UTF-16 code units.
        assert_eq!(java_string_hash("😀"), 1_772_899);
    }

    #[test]
    fn partition_uses_kafka_abs() {
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        assert_eq!(partition_for("my-group", 50), 1_906_497_762 % 50);
        for g in ["a", "b", "group-1", "consumers", "😀"] {
            let p = partition_for(g, 50);
            assert!((0..50).contains(&p), "{g}: {p}");
        }
    }
}
