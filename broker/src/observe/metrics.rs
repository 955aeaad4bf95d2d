//! Every metric Fjord exports: the names (documented in the README's "Metrics and control
//! API" section), the recorder that renders them in Prometheus' text format, and the calls the
//! request path makes.
//!
//! Nothing is recorded until [`install`] runs (the `metrics` facade is a no-op without a
//! recorder), so a broker without `http.listener` pays one atomic load per call.
//!
//! Counters and histograms are recorded where things happen. Gauges are set by
//! [`crate::observe::sampler`] just before each scrape (scrapes run one at a time), so a gauge
//! the sampler no longer sets (a deleted partition, a group this broker no longer coordinates)
//! drops out of the next scrape taken [`GAUGE_IDLE`] after it was last set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fjord_protocol::kafka_protocol::error::ResponseError;
use fjord_protocol::kafka_protocol::messages::fetch_response::PartitionData;
use fjord_protocol::kafka_protocol::messages::{ApiKey, ResponseKind};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

use crate::partition::Partition;

// Requests (Kafka: kafka.network:type=RequestMetrics RequestsPerSec, ErrorsPerSec, TotalTimeMs).
pub const REQUESTS: &str = "fjord_requests_total";
pub const REQUEST_ERRORS: &str = "fjord_request_errors_total";
pub const REQUEST_DURATION: &str = "fjord_request_duration_seconds";
// Per-topic traffic (Kafka: kafka.server:type=BrokerTopicMetrics).
pub const TOPIC_BYTES_IN: &str = "fjord_topic_bytes_in_total";
pub const TOPIC_RECORDS_IN: &str = "fjord_topic_records_in_total";
pub const TOPIC_BYTES_OUT: &str = "fjord_topic_bytes_out_total";
pub const TOPIC_RECORDS_OUT: &str = "fjord_topic_records_out_total";
pub const REPLICATION_BYTES_OUT: &str = "fjord_replication_bytes_out_total";
// Requests parked until they can be answered (Kafka: DelayedOperationPurgatory PurgatorySize).
pub const PURGATORY_SIZE: &str = "fjord_purgatory_size";
// Storage.
pub const LOG_SIZE: &str = "fjord_log_size_bytes";
pub const LOG_SEGMENTS: &str = "fjord_log_segments";
pub const LOG_START_OFFSET: &str = "fjord_log_start_offset";
pub const LOG_END_OFFSET: &str = "fjord_log_end_offset";
pub const LOG_DIR_SIZE: &str = "fjord_log_dir_size_bytes";
pub const LOG_DIR_CAPACITY: &str = "fjord_log_dir_capacity_bytes";
pub const LOG_DIR_AVAILABLE: &str = "fjord_log_dir_available_bytes";
// Replication (Kafka: ReplicaManager UnderReplicatedPartitions, UnderMinIsrPartitionCount).
pub const LEADER_PARTITIONS: &str = "fjord_leader_partitions";
pub const UNDER_REPLICATED: &str = "fjord_under_replicated_partitions";
pub const UNDER_MIN_ISR: &str = "fjord_under_min_isr_partitions";
// Groups.
pub const CONSUMER_LAG: &str = "fjord_consumer_lag";
pub const CONSUMER_GROUP_LAG: &str = "fjord_consumer_group_lag";
pub const CONSUMER_GROUPS: &str = "fjord_consumer_groups";
pub const REBALANCES: &str = "fjord_rebalances_total";
pub const REBALANCE_RATE: &str = "fjord_rebalance_rate";
// Quotas (none yet: what produce responses tell clients, always 0).
pub const PRODUCER_THROTTLE_TIME: &str = "fjord_producer_throttle_time_ms";
// The metadata quorum and this broker's view of it.
pub const CONTROLLER_ACTIVE: &str = "fjord_controller_active";
pub const CONTROLLER_LEADER_ID: &str = "fjord_controller_leader_id";
pub const CONTROLLER_TERM: &str = "fjord_controller_term";
pub const CONTROLLER_COMMITTED_OFFSET: &str = "fjord_controller_committed_offset";
pub const CONTROLLER_LOG_END_OFFSET: &str = "fjord_controller_log_end_offset";
pub const METADATA_LOG_SIZE: &str = "fjord_metadata_log_size_bytes";
pub const BROKER_METADATA_OFFSET: &str = "fjord_broker_metadata_offset";
pub const BROKER_FENCED: &str = "fjord_broker_fenced";

/// Gauges not set for this long are dropped from the output. The sampler sets every live one
/// right before each render, so only gone partitions and groups age out; short, so they go
/// from the next scrape on.
pub const GAUGE_IDLE: Duration = Duration::from_secs(2);

/// Latency buckets, in seconds: 100 µs up to the longest long poll.
const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
const THROTTLE_BUCKETS: &[f64] = &[0.0, 1.0, 10.0, 100.0, 1000.0, 10_000.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Installs the process-wide recorder (once; later calls return the same handle). Several
/// nodes in one process (tests) therefore share one set of metrics.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = match build() {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    if metrics::set_global_recorder(recorder).is_err() {
                        tracing::warn!(
                            "another metrics recorder is installed; /metrics will stay empty"
                        );
                    }
                    handle
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot configure histogram buckets; using defaults");
                    let recorder = PrometheusBuilder::new().build_recorder();
                    let handle = recorder.handle();
                    let _ = metrics::set_global_recorder(recorder);
                    handle
                }
            };
            describe();
            ENABLED.store(true, Ordering::Release);
            handle
        })
        .clone()
}

fn build() -> Result<metrics_exporter_prometheus::PrometheusRecorder, String> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), DURATION_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(PRODUCER_THROTTLE_TIME.into()),
                THROTTLE_BUCKETS,
            )
        })
        .map_err(|e| e.to_string())?
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
        .build_recorder())
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REQUESTS, "Requests answered, by API");
    describe_counter!(
        REQUEST_ERRORS,
        "Error codes in responses, by API and error (one per failed partition, topic or group, as Kafka counts them)"
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from decoding a request to its response being ready, by API"
    );
    describe_counter!(
        TOPIC_BYTES_IN,
        Unit::Bytes,
        "Record batch bytes appended by producers, by topic"
    );
    describe_counter!(TOPIC_RECORDS_IN, "Records appended by producers, by topic");
    describe_counter!(
        TOPIC_BYTES_OUT,
        Unit::Bytes,
        "Record batch bytes sent to consumers, by topic"
    );
    describe_counter!(TOPIC_RECORDS_OUT, "Records sent to consumers, by topic");
    describe_counter!(
        REPLICATION_BYTES_OUT,
        Unit::Bytes,
        "Record batch bytes sent to follower replicas, by topic"
    );
    describe_gauge!(
        PURGATORY_SIZE,
        "Requests waiting to be answered: produce (acks=all) and fetch (long polls)"
    );
    describe_gauge!(LOG_SIZE, Unit::Bytes, "Size of a partition's log on disk");
    describe_gauge!(LOG_SEGMENTS, "Segments of a partition's log");
    describe_gauge!(LOG_START_OFFSET, "First offset of a partition's log");
    describe_gauge!(
        LOG_END_OFFSET,
        "Offset after the last record of a partition's log"
    );
    describe_gauge!(
        LOG_DIR_SIZE,
        Unit::Bytes,
        "Size of the partition logs in a log directory"
    );
    describe_gauge!(
        LOG_DIR_CAPACITY,
        Unit::Bytes,
        "Size of the file system holding a log directory"
    );
    describe_gauge!(
        LOG_DIR_AVAILABLE,
        Unit::Bytes,
        "Bytes still available to Fjord on the file system holding a log directory"
    );
    describe_gauge!(LEADER_PARTITIONS, "Partitions this broker leads");
    describe_gauge!(
        UNDER_REPLICATED,
        "Partitions this broker leads whose ISR is smaller than their replica set"
    );
    describe_gauge!(
        UNDER_MIN_ISR,
        "Partitions this broker leads whose ISR is smaller than min.insync.replicas"
    );
    describe_gauge!(
        CONSUMER_LAG,
        "High watermark minus committed offset, by group, topic and partition (groups this broker coordinates)"
    );
    describe_gauge!(CONSUMER_GROUP_LAG, "Sum of a group's partition lags");
    describe_gauge!(
        CONSUMER_GROUPS,
        "Groups this broker coordinates, by type and state"
    );
    describe_counter!(
        REBALANCES,
        "Completed rebalances: classic groups reaching a new generation with members, consumer groups computing a new target assignment"
    );
    describe_gauge!(
        REBALANCE_RATE,
        "Rebalances per second over the last minute, by group type"
    );
    describe_histogram!(
        PRODUCER_THROTTLE_TIME,
        "Throttle time produce responses carry; Fjord has no quotas yet, so always 0"
    );
    describe_gauge!(
        CONTROLLER_ACTIVE,
        "1 if this node is the active controller (the metadata quorum's leader)"
    );
    describe_gauge!(
        CONTROLLER_LEADER_ID,
        "Node id of the active controller as this controller sees it, -1 if none"
    );
    describe_gauge!(CONTROLLER_TERM, "The metadata quorum's current term");
    describe_gauge!(
        CONTROLLER_COMMITTED_OFFSET,
        "Last metadata log entry committed and applied on this controller"
    );
    describe_gauge!(
        CONTROLLER_LOG_END_OFFSET,
        "Last metadata log entry on this controller"
    );
    describe_gauge!(
        METADATA_LOG_SIZE,
        Unit::Bytes,
        "Size of the metadata log (and its snapshots) on disk"
    );
    describe_gauge!(
        BROKER_METADATA_OFFSET,
        "Offset of the metadata image this broker serves"
    );
    describe_gauge!(
        BROKER_FENCED,
        "1 while the controller keeps this broker fenced"
    );
}

/// Whether a recorder is installed.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The `api` label of an API key (its Kafka name, e.g. `Produce`).
pub fn api_name(key: ApiKey) -> &'static str {
    static NAMES: OnceLock<HashMap<ApiKey, &'static str>> = OnceLock::new();
    NAMES
        .get_or_init(|| {
            crate::dispatch::HANDLED
                .iter()
                .map(|k| {
                    let name: &'static str = Box::leak(format!("{k:?}").into_boxed_str());
                    (*k, name)
                })
                .collect()
        })
        .get(&key)
        .copied()
        .unwrap_or("Unknown")
}

/// A request was answered (`response` is `None` for acks=0 produces).
pub fn request_done(key: ApiKey, started: Instant, response: Option<&ResponseKind>) {
    if !enabled() {
        return;
    }
    let api = api_name(key);
    counter!(REQUESTS, "api" => api).increment(1);
    histogram!(REQUEST_DURATION, "api" => api).record(started.elapsed().as_secs_f64());
    let Some(response) = response else {
        return;
    };
    crate::observe::errors::for_each_error(response, |code| {
        counter!(REQUEST_ERRORS, "api" => api, "error" => error_name(code)).increment(1);
    });
    if let ResponseKind::Produce(p) = response {
        histogram!(PRODUCER_THROTTLE_TIME).record(f64::from(p.throttle_time_ms));
    }
}

/// A request could not be answered and its connection was closed.
pub fn request_failed(key: ApiKey) {
    if !enabled() {
        return;
    }
    let api = api_name(key);
    counter!(REQUESTS, "api" => api).increment(1);
    counter!(REQUEST_ERRORS, "api" => api, "error" => "ConnectionClosed").increment(1);
}

/// Kafka's name of an error code (`NotLeaderOrFollower`), or `Unknown(<code>)`.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(ResponseError::Unknown(c)) => format!("Unknown({c})"),
        Some(e) => e.to_string(),
        None => "None".to_string(),
    }
}

/// A producer's records were appended to `topic` (not called for duplicates of batches
/// already in the log, which append nothing).
pub fn produced(topic: &str, info: &fjord_storage::log::AppendInfo) {
    if !enabled() || info.duplicate {
        return;
    }
    counter!(TOPIC_BYTES_IN, "topic" => topic.to_string()).increment(info.bytes as u64);
    counter!(TOPIC_RECORDS_IN, "topic" => topic.to_string())
        .increment(info.record_count.max(0) as u64);
}

/// A fetch response is about to carry these partitions' data, to a consumer or (`follower`)
/// a replica (`None`: a partition this broker does not host, answered with an error).
pub fn fetched<'a>(
    parts: impl Iterator<Item = (Option<&'a Arc<Partition>>, &'a PartitionData)>,
    follower: bool,
) {
    if !enabled() {
        return;
    }
    for (p, data) in parts {
        if let (Some(p), Some(records)) = (p, &data.records) {
            fetched_records(&p.tp.topic, records, follower);
        }
    }
}

fn fetched_records(topic: &str, records: &[u8], follower: bool) {
    if records.is_empty() {
        return;
    }
    if follower {
        counter!(REPLICATION_BYTES_OUT, "topic" => topic.to_string())
            .increment(records.len() as u64);
        return;
    }
    let count: u64 = fjord_storage::log::batch_headers(records)
        .map(|h| h.records_count.max(0) as u64)
        .sum();
    counter!(TOPIC_BYTES_OUT, "topic" => topic.to_string()).increment(records.len() as u64);
    counter!(TOPIC_RECORDS_OUT, "topic" => topic.to_string()).increment(count);
}

/// The requests that wait in a purgatory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purgatory {
    /// acks=all produces waiting for the ISR.
    Produce,
    /// Fetches waiting for `min_bytes` (consumer long polls and follower fetches).
    Fetch,
}

static PARKED_PRODUCE: AtomicI64 = AtomicI64::new(0);
static PARKED_FETCH: AtomicI64 = AtomicI64::new(0);

fn parked_count(p: Purgatory) -> &'static AtomicI64 {
    match p {
        Purgatory::Produce => &PARKED_PRODUCE,
        Purgatory::Fetch => &PARKED_FETCH,
    }
}

/// Requests waiting in `p` now.
pub fn purgatory_size(p: Purgatory) -> i64 {
    parked_count(p).load(Ordering::Relaxed)
}

/// Counts a request as waiting in a purgatory while it lives (dropped also when the request's
/// future is cancelled, e.g. when its connection closes).
#[must_use = "the request counts as parked only while the guard lives"]
pub struct Parked(Purgatory);

impl Drop for Parked {
    fn drop(&mut self) {
        parked_count(self.0).fetch_sub(1, Ordering::Relaxed);
    }
}

pub fn parked(p: Purgatory) -> Parked {
    parked_count(p).fetch_add(1, Ordering::Relaxed);
    Parked(p)
}

/// Kinds of groups, for the rebalance counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    Classic,
    Consumer,
}

impl GroupKind {
    pub fn label(self) -> &'static str {
        match self {
            GroupKind::Classic => crate::group::admin::CLASSIC_GROUP_TYPE,
            GroupKind::Consumer => crate::group::consumer::CONSUMER_GROUP_TYPE,
        }
    }
}

static REBALANCES_CLASSIC: AtomicU64 = AtomicU64::new(0);
static REBALANCES_CONSUMER: AtomicU64 = AtomicU64::new(0);

/// Rebalances completed so far in this process, for the rate gauge.
pub fn rebalance_count(kind: GroupKind) -> u64 {
    match kind {
        GroupKind::Classic => REBALANCES_CLASSIC.load(Ordering::Relaxed),
        GroupKind::Consumer => REBALANCES_CONSUMER.load(Ordering::Relaxed),
    }
}

/// A group completed a rebalance.
pub fn rebalance_completed(kind: GroupKind) {
    match kind {
        GroupKind::Classic => REBALANCES_CLASSIC.fetch_add(1, Ordering::Relaxed),
        GroupKind::Consumer => REBALANCES_CONSUMER.fetch_add(1, Ordering::Relaxed),
    };
    if enabled() {
        counter!(REBALANCES, "group_type" => kind.label()).increment(1);
    }
}

/// Sets a gauge (for the sampler).
pub(crate) fn set(name: &'static str, labels: &[(&'static str, String)], value: f64) {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect();
    gauge!(name, labels).set(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_and_error_names_are_kafkas() {
        assert_eq!(api_name(ApiKey::Produce), "Produce");
        assert_eq!(
            api_name(ApiKey::ConsumerGroupHeartbeat),
            "ConsumerGroupHeartbeat"
        );
        assert_eq!(error_name(3), "UnknownTopicOrPartition");
        assert_eq!(error_name(-1), "UnknownServerError");
        assert_eq!(error_name(30_000), "Unknown(30000)");
    }

    #[test]
    fn parked_requests_count_until_dropped() {
        let before = purgatory_size(Purgatory::Fetch);
        let a = parked(Purgatory::Fetch);
        let b = parked(Purgatory::Fetch);
        assert_eq!(purgatory_size(Purgatory::Fetch), before + 2);
        drop(a);
        assert_eq!(purgatory_size(Purgatory::Fetch), before + 1);
        drop(b);
        assert_eq!(purgatory_size(Purgatory::Fetch), before);
    }
}
