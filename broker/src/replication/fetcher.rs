//! Replica fetchers: this broker's followers copying their leaders' logs with the Fetch API,
//! as Kafka's `ReplicaFetcherThread` does.
//!
//! One fetcher per leader broker fetches every partition this broker follows there, in one
//! request (Fetch v13: topic ids, `replica_id`, `last_fetched_epoch`). Each partition asks
//! from its log end offset, which tells the leader where the follower is (the leader moves
//! its high watermark and ISR from that). Records are appended with the leader's offsets
//! and epochs (`append_as_follower`), and the follower's high watermark follows the leader's.
//!
//! Divergence (KIP-279): the request carries the epoch of the follower's last record; a leader
//! that ended that epoch earlier answers `diverging_epoch`, and the follower truncates to the
//! end of the last epoch both logs share before fetching again, so no replica keeps a record
//! the leader does not have. OFFSET_OUT_OF_RANGE below the leader's log start restarts the
//! log there; above the leader's end truncates to the leader's high watermark.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use fjord_protocol::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use fjord_protocol::kafka_protocol::messages::fetch_response::PartitionData;
use fjord_protocol::kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, RequestHeader, ResponseHeader,
};
use fjord_protocol::kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use fjord_storage::{StorageError, TopicPartition};
use parking_lot::Mutex;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::codes;
use crate::partition::Partition;
use crate::replication::throttle;

/// The Fetch version followers send: topic ids, last fetched epoch, top-level replica id.
const FETCH_VERSION: i16 = 13;
/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a partition rests after the leader refused it for leadership reasons (the
/// metadata image usually catches up within this).
const LEADERSHIP_BACKOFF: Duration = Duration::from_millis(100);

/// Keeps one fetcher task per leader broker, following the metadata image.
pub struct FetcherManager {
    fetchers: Mutex<HashMap<i32, Fetcher>>,
}

struct Fetcher {
    partitions: Arc<Mutex<Vec<Arc<Partition>>>>,
    task: JoinHandle<()>,
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FetcherManager {
    /// Runs until the image channel closes: after every image, partitions this broker follows
    /// are grouped by leader and handed to that leader's fetcher.
    pub async fn run(
        broker: Arc<Broker>,
        mut images: watch::Receiver<Arc<fjord_raft::MetadataImage>>,
    ) {
        let manager = FetcherManager {
            fetchers: Mutex::new(HashMap::new()),
        };
        loop {
            manager.reconcile(&broker);
            if images.changed().await.is_err() || broker.is_shutting_down() {
                manager.fetchers.lock().clear();
                return;
            }
        }
    }

    fn reconcile(&self, broker: &Arc<Broker>) {
        let mut by_leader: HashMap<i32, Vec<Arc<Partition>>> = HashMap::new();
        for p in broker.replicas.all() {
            let s = p.state();
            if s.leader >= 0 && s.leader != broker.node_id && s.replicas.contains(&broker.node_id) {
                by_leader.entry(s.leader).or_default().push(p);
            }
        }
        let mut fetchers = self.fetchers.lock();
        fetchers.retain(|leader, _| by_leader.contains_key(leader));
        for (leader, partitions) in by_leader {
            match fetchers.get(&leader) {
                Some(f) => *f.partitions.lock() = partitions,
                None => {
                    let shared = Arc::new(Mutex::new(partitions));
                    let task = tokio::spawn(fetch_loop(broker.clone(), leader, shared.clone()));
                    tracing::info!(leader, "started a replica fetcher");
                    fetchers.insert(
                        leader,
                        Fetcher {
                            partitions: shared,
                            task,
                        },
                    );
                }
            }
        }
    }
}

/// A connection to a leader.
struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_correlation_id: i32,
}

impl Connection {
    async fn open(addr: &str) -> Result<Connection, String> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        Ok(Connection {
            reader: BufReader::with_capacity(64 * 1024, r),
            writer: w,
            next_correlation_id: 1,
        })
    }

    async fn fetch(
        &mut self,
        req: &FetchRequest,
        client_id: &str,
        timeout: Duration,
        max_frame: usize,
    ) -> Result<FetchResponse, String> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Fetch as i16)
            .with_request_api_version(FETCH_VERSION)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0);
        header
            .encode(
                &mut buf,
                ApiKey::Fetch.request_header_version(FETCH_VERSION),
            )
            .map_err(|e| format!("encoding a fetch header: {e}"))?;
        req.encode(&mut buf, FETCH_VERSION)
            .map_err(|e| format!("encoding a fetch request: {e}"))?;
        let len = i32::try_from(buf.len() - 4).map_err(|_| "fetch request too large")?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let exchange = async {
            self.writer
                .write_all(&buf)
                .await
                .map_err(|e| format!("sending a fetch: {e}"))?;
            let frame = fjord_protocol::read_frame(&mut self.reader, max_frame)
                .await
                .map_err(|e| format!("reading a fetch response: {e}"))?
                .ok_or("the leader closed the connection")?;
            Ok::<Bytes, String>(frame)
        };
        let mut frame = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| "fetch timed out".to_string())??;
        let header = ResponseHeader::decode(
            &mut frame,
            ApiKey::Fetch.response_header_version(FETCH_VERSION),
        )
        .map_err(|e| format!("decoding a fetch response header: {e}"))?;
        if header.correlation_id != correlation_id {
            return Err(format!(
                "response correlation id {} for request {correlation_id}",
                header.correlation_id
            ));
        }
        FetchResponse::decode(&mut frame, FETCH_VERSION)
            .map_err(|e| format!("decoding a fetch response: {e}"))
    }
}

/// Fetches from `leader` for as long as the task lives.
async fn fetch_loop(broker: Arc<Broker>, leader: i32, partitions: Arc<Mutex<Vec<Arc<Partition>>>>) {
    let cfg = broker.config.replication.clone();
    let client_id = format!("fjord-replica-{}", broker.node_id);
    let mut conn: Option<Connection> = None;
    // Partitions resting after a leadership error, until the given instant.
    let mut resting: HashMap<TopicPartition, Instant> = HashMap::new();
    loop {
        if broker.is_shutting_down() {
            return;
        }
        let now = Instant::now();
        resting.retain(|_, until| *until > now);
        // Over the follower throttle, throttled partitions sit this round out (Kafka leaves
        // them out of the fetch request too).
        let quota = &broker.replicas.replication_quotas.follower;
        let over_quota = quota.exceeded();
        // Some(out of sync) for partitions the follower throttle names.
        let throttled = |p: &Partition| {
            broker
                .replicas
                .replication_throttle(p, throttle::FOLLOWER_REPLICAS, broker.node_id)
        };
        let current: Vec<Arc<Partition>> = partitions
            .lock()
            .iter()
            .filter(|p| p.state().leader == leader && !resting.contains_key(&p.tp))
            .filter(|p| !over_quota || throttled(p) != Some(true))
            .cloned()
            .collect();
        if current.is_empty() {
            tokio::time::sleep(LEADERSHIP_BACKOFF).await;
            continue;
        }
        if conn.is_none() {
            let image = broker.image();
            let addr = image
                .broker(leader)
                .and_then(|b| b.endpoint(&cfg.listener))
                .map(|e| format!("{}:{}", e.host, e.port));
            let Some(addr) = addr else {
                tracing::debug!(leader, listener = %cfg.listener, "leader has no endpoint for the inter-broker listener");
                tokio::time::sleep(cfg.backoff).await;
                continue;
            };
            match Connection::open(&addr).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::debug!(leader, error = %e, "cannot reach the leader");
                    tokio::time::sleep(cfg.backoff).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            continue;
        };
        let req = build_request(&broker, &current, &cfg);
        let timeout = cfg.wait_max + Duration::from_secs(30);
        let resp = match c
            .fetch(
                &req,
                &client_id,
                timeout,
                broker.config.socket_request_max_bytes,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(leader, error = %e, "replica fetch failed; reconnecting");
                conn = None;
                tokio::time::sleep(cfg.backoff).await;
                continue;
            }
        };
        if resp.error_code != codes::NONE {
            tracing::debug!(leader, code = resp.error_code, "replica fetch refused");
            tokio::time::sleep(cfg.backoff).await;
            continue;
        }
        if quota.rate() != u64::MAX {
            let mut bytes = 0usize;
            for t in &resp.responses {
                for d in &t.partitions {
                    let p = current
                        .iter()
                        .find(|p| p.topic_id == t.topic_id && p.tp.partition == d.partition_index);
                    if p.is_some_and(|p| throttled(p).is_some()) {
                        bytes += d.records.as_ref().map_or(0, |r| r.len());
                    }
                }
            }
            quota.record(bytes as u64);
        }
        // Appends and truncations touch the disk.
        let outcome = tokio::task::spawn_blocking(move || apply_response(&current, resp)).await;
        match outcome {
            Ok(rest) => {
                for tp in rest {
                    resting.insert(tp, Instant::now() + LEADERSHIP_BACKOFF);
                }
            }
            Err(e) => {
                tracing::error!(leader, error = %e, "applying a fetch response panicked");
                tokio::time::sleep(cfg.backoff).await;
            }
        }
    }
}

fn build_request(
    broker: &Broker,
    partitions: &[Arc<Partition>],
    cfg: &ReplicationConfig,
) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for p in partitions {
        let log = p.log();
        let fp = FetchPartition::default()
            .with_partition(p.tp.partition)
            .with_current_leader_epoch(p.leader_epoch())
            .with_fetch_offset(log.log_end_offset())
            .with_last_fetched_epoch(log.latest_epoch().unwrap_or(-1))
            .with_log_start_offset(log.log_start_offset())
            .with_partition_max_bytes(cfg.fetch_max_bytes);
        match topics.iter_mut().find(|t| t.topic_id == p.topic_id) {
            Some(t) => t.partitions.push(fp),
            None => topics.push(
                FetchTopic::default()
                    .with_topic_id(p.topic_id)
                    .with_partitions(vec![fp]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(broker.node_id))
        .with_max_wait_ms(cfg.wait_max.as_millis() as i32)
        .with_min_bytes(1)
        .with_max_bytes(cfg.response_max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// Applies a leader's answer; returns the partitions to rest for a while.
fn apply_response(asked: &[Arc<Partition>], resp: FetchResponse) -> Vec<TopicPartition> {
    let mut rest = Vec::new();
    for topic in resp.responses {
        for data in topic.partitions {
            let Some(p) = asked
                .iter()
                .find(|p| p.topic_id == topic.topic_id && p.tp.partition == data.partition_index)
            else {
                continue;
            };
            if let Err(e) = apply_partition(p, &data) {
                match e {
                    Apply::Rest => rest.push(p.tp.clone()),
                    Apply::Storage(e) => {
                        tracing::warn!(partition = %p.tp, error = %e, "follower append failed");
                        rest.push(p.tp.clone());
                    }
                }
            }
        }
    }
    rest
}

pub(super) enum Apply {
    Rest,
    Storage(StorageError),
}

impl From<StorageError> for Apply {
    fn from(e: StorageError) -> Self {
        Apply::Storage(e)
    }
}

pub(super) fn apply_partition(p: &Partition, data: &PartitionData) -> Result<(), Apply> {
    let log = p.log();
    let now = fjord_storage::now_ms();
    match data.error_code {
        codes::NONE => {}
        codes::OFFSET_OUT_OF_RANGE => {
            let leo = log.log_end_offset();
            if data.log_start_offset >= 0 && leo < data.log_start_offset {
                tracing::info!(partition = %p.tp, leader_log_start = data.log_start_offset, "behind the leader's log start; restarting the log there");
                log.truncate_fully_and_start_at(data.log_start_offset, now)?;
            } else if data.high_watermark >= 0 && leo > data.high_watermark {
                tracing::warn!(partition = %p.tp, leo, leader_hw = data.high_watermark, "ahead of the leader; truncating to its high watermark");
                log.truncate_to(data.high_watermark, now)?;
            }
            return Ok(());
        }
        code => {
            tracing::debug!(partition = %p.tp, code, "leader refused the partition");
            return Err(Apply::Rest);
        }
    }
    if data.diverging_epoch.epoch >= 0 || data.diverging_epoch.end_offset >= 0 {
        let div = &data.diverging_epoch;
        let target = super::truncation_offset(log, div.epoch, div.end_offset);
        tracing::info!(partition = %p.tp, diverging_epoch = div.epoch, leader_end_offset = div.end_offset, target, "truncating a divergent tail");
        log.truncate_to(target, now)?;
        return Ok(());
    }
    if let Some(records) = data.records.as_ref().filter(|r| !r.is_empty()) {
        // The answer is for the offset we asked from; a truncation since then voids it.
        let first = fjord_storage::log::batch_headers(records)
            .next()
            .map(|h| h.base_offset);
        let leo = log.log_end_offset();
        match first {
            Some(base) if base <= leo => {
                let skip = skip_below(records, leo);
                if !skip.is_empty() {
                    log.append_as_follower(&skip, now)?;
                }
            }
            Some(base) => {
                tracing::warn!(partition = %p.tp, base, leo, "leader sent records past our log end; ignoring them");
                return Err(Apply::Rest);
            }
            None => {}
        }
    }
    // Through the partition, so consumers reading from this follower are woken.
    p.follow_high_watermark(data.high_watermark);
    if data.log_start_offset > log.log_start_offset() {
        let target = data.log_start_offset.min(log.high_watermark());
        if target > log.log_start_offset() {
            log.delete_records(target, now)?;
        }
    }
    Ok(())
}

/// The batches of `records` that end at or after `from` (a leader answers with whole batches,
/// the first of which may start before the offset asked for).
fn skip_below(records: &Bytes, from: i64) -> Bytes {
    let mut at = 0usize;
    for h in fjord_storage::log::batch_headers(records) {
        if h.last_offset() >= from {
            break;
        }
        at += h.size();
    }
    records.slice(at.min(records.len())..)
}

/// Replication settings (Kafka's `replica.*` properties).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// `inter.broker.listener.name`: the leader listener followers fetch from.
    pub listener: String,
    /// `replica.fetch.wait.max.ms`
    pub wait_max: Duration,
    /// `replica.fetch.max.bytes` (per partition)
    pub fetch_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`
    pub response_max_bytes: i32,
    /// `replica.fetch.backoff.ms`
    pub backoff: Duration,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            listener: "PLAINTEXT".into(),
            wait_max: Duration::from_millis(500),
            fetch_max_bytes: 1024 * 1024,
            response_max_bytes: 10 * 1024 * 1024,
            backoff: Duration::from_millis(1000),
        }
    }
}
