//! Fetch for consumers, with long polling: a request that finds fewer than `min_bytes` waits
//! for any of its partitions' high watermarks to advance (each partition wakes its waiters on
//! append; nothing polls), up to `max_wait_ms`.
//!
//! Limits: `max_bytes` over the response and `partition_max_bytes` per partition; the first
//! batch of the first partition with data is returned even when larger, so a consumer always
//! makes progress (Kafka's rule). Consumers read up to the high watermark; the last stable
//! offset equals it until transactions exist.
//!
//! Incremental fetch sessions (KIP-227) follow `crate::fetch_session`: a session's requests
//! list only changed partitions, and its responses only partitions with something new.
//! Follower fetches arrive with replication.
//!
//! Follower reads (KIP-392): a consumer's Fetch v11+ may be served by any replica, and a
//! follower answers from its own log up to its own high watermark (the leader's, as its last
//! fetch response carried it), so a consumer never sees a record the leader has not committed.
//! With `replica.selector.class` set to Kafka's rack-aware selector, a leader asked by a
//! consumer whose `rack_id` names another replica's rack answers that partition with
//! `preferred_read_replica` and no records ([`read_replica`]); the client then fetches there.
//! Older fetches and replicas' fetches are served by the leader only.

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use fjord_protocol::kafka_protocol::messages::fetch_response::{
    EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use fjord_protocol::kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ResponseKind, TopicName,
};
use fjord_storage::StorageError;
use tokio::sync::futures::Notified;
use uuid::Uuid;

use crate::broker::Broker;
use crate::codes;
use crate::config::ReplicaSelector;
use crate::dispatch::{Reply, RequestContext};
use crate::fetch_session::{Answered, CachedPartition, FetchContext, SessionError, TopicKey};
use crate::partition::{Partition, PartitionError};
use crate::replication::throttle;
use crate::util::str_bytes;

mod read_replica;
#[cfg(test)]
mod tests;

use read_replica::ClientMetadata;

/// Upper bound on one long poll, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(300);

pub fn handle(broker: &Arc<Broker>, ctx: RequestContext, req: FetchRequest) -> Reply {
    let broker = broker.clone();
    Reply::later(async move { ResponseKind::Fetch(fetch(&broker, &ctx, req).await) })
}

struct Wanted {
    key: TopicKey,
    partition_index: i32,
    fetch_offset: i64,
    max_bytes: i32,
    current_leader_epoch: i32,
    /// The epoch of a follower's last record (Fetch v12+; -1 when not given).
    last_fetched_epoch: i32,
    /// Where a follower's log starts (Fetch v5+; -1 when not given).
    log_start_offset: i64,
    target: Result<Arc<Partition>, i16>,
}

fn topic_key(uses_ids: bool, name: &TopicName, id: Uuid) -> TopicKey {
    if uses_ids {
        TopicKey::Id(id)
    } else {
        TopicKey::Name(name.as_str().to_string())
    }
}

fn session_error_code(e: SessionError) -> i16 {
    match e {
        SessionError::NotFound => codes::FETCH_SESSION_ID_NOT_FOUND,
        SessionError::InvalidEpoch => codes::INVALID_FETCH_SESSION_EPOCH,
        SessionError::TopicIdMismatch => codes::FETCH_SESSION_TOPIC_ID_ERROR,
    }
}

async fn fetch(broker: &Arc<Broker>, ctx: &RequestContext, req: FetchRequest) -> FetchResponse {
    let version = ctx.version();
    let uses_ids = version >= 13;
    let replica_id = if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let replica = (replica_id >= 0).then_some(replica_id);
    let requested: Vec<CachedPartition> = req
        .topics
        .iter()
        .flat_map(|t| {
            let key = topic_key(uses_ids, &t.topic, t.topic_id);
            t.partitions.iter().map(move |p| {
                CachedPartition::new(
                    key.clone(),
                    p.partition,
                    p.fetch_offset,
                    p.partition_max_bytes,
                    p.current_leader_epoch,
                )
            })
        })
        .collect();
    // Sessions arrived with v7.
    let context = if version >= 7 {
        let forgotten: Vec<(TopicKey, i32)> = req
            .forgotten_topics_data
            .iter()
            .flat_map(|t| {
                let key = topic_key(uses_ids, &t.topic, t.topic_id);
                t.partitions.iter().map(move |p| (key.clone(), *p))
            })
            .collect();
        match broker.fetch_sessions.begin(
            req.session_id,
            req.session_epoch,
            uses_ids,
            requested.clone(),
            &forgotten,
        ) {
            Ok(c) => c,
            Err(e) => {
                return FetchResponse::default().with_error_code(session_error_code(e));
            }
        }
    } else {
        FetchContext::Sessionless
    };
    let to_read = match &context {
        FetchContext::Incremental { partitions, .. } => partitions.clone(),
        _ => requested,
    };
    // Followers say where their log's last epoch is and where it starts; sessions do not
    // remember either.
    let from_follower: HashMap<(TopicKey, i32), (i32, i64)> = match replica {
        Some(_) => req
            .topics
            .iter()
            .flat_map(|t| {
                let key = topic_key(uses_ids, &t.topic, t.topic_id);
                t.partitions.iter().map(move |p| {
                    let epoch = if version >= 12 {
                        p.last_fetched_epoch
                    } else {
                        -1
                    };
                    ((key.clone(), p.partition), (epoch, p.log_start_offset))
                })
            })
            .collect(),
        None => HashMap::new(),
    };
    let image = broker.image();
    let wanted: Vec<Wanted> = to_read
        .iter()
        .map(|c| {
            let name = match &c.topic {
                TopicKey::Name(n) => Some(n.clone()),
                TopicKey::Id(id) => image.topic_by_id(id).map(|t| t.name.clone()),
            };
            let target = match &name {
                None => Err(codes::UNKNOWN_TOPIC_ID),
                Some(n) => broker.replicas.get(n, c.partition).ok_or_else(|| {
                    if image.partition(n, c.partition).is_some() {
                        codes::NOT_LEADER_OR_FOLLOWER
                    } else {
                        codes::UNKNOWN_TOPIC_OR_PARTITION
                    }
                }),
            };
            // A follower must be one of the partition's replicas.
            let target = match (target, replica) {
                (Ok(p), Some(r)) if !p.state().replicas.contains(&r) => {
                    Err(codes::NOT_LEADER_OR_FOLLOWER)
                }
                (t, _) => t,
            };
            let (last_fetched_epoch, log_start_offset) = from_follower
                .get(&(c.topic.clone(), c.partition))
                .copied()
                .unwrap_or((-1, -1));
            Wanted {
                key: c.topic.clone(),
                partition_index: c.partition,
                fetch_offset: c.fetch_offset,
                max_bytes: c.max_bytes,
                current_leader_epoch: c.current_leader_epoch,
                last_fetched_epoch,
                log_start_offset,
                target,
            }
        })
        .collect();
    let read_committed = version >= 4 && req.isolation_level == 1;
    let max_bytes = if version >= 3 {
        req.max_bytes.max(0) as usize
    } else {
        usize::MAX
    };
    // Kafka's ClientMetadata: consumers from Fetch v11 may read from followers and be sent to
    // one. Replicas always fetch from the leader.
    let client = (replica.is_none() && version >= 11).then(|| ClientMetadata {
        rack: req.rack_id.as_str().to_string(),
        listener: ctx.listener.clone(),
    });
    let params = ReadParams {
        max_bytes,
        read_committed,
        replica,
        client: client.as_ref(),
        selector: broker.config.replica_selector,
        image: &image,
        replicas: Some(&broker.replicas),
    };
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + max_wait;
    let hosted: Vec<Arc<Partition>> = wanted
        .iter()
        .filter_map(|w| w.target.as_ref().ok().cloned())
        .collect();

    loop {
        // Listen before reading, so an append between the read and the wait wakes us.
        let mut wakeups: Vec<Pin<Box<Notified<'_>>>> = hosted
            .iter()
            .map(|p| {
                // Followers read up to the log end, consumers up to the high watermark.
                Box::pin(if replica.is_some() {
                    p.appended()
                } else {
                    p.hw_advanced()
                })
            })
            .collect();
        for w in wakeups.iter_mut() {
            w.as_mut().enable();
        }
        let (parts, bytes, errors) = read_all(&wanted, &params);
        if let Some(r) = replica {
            follower_progress(broker, r, &wanted, &parts);
        }
        // A follower told to truncate should hear it now, and a consumer sent to another
        // replica should go there now (Kafka answers both at once).
        let diverged = parts.iter().any(|d| d.diverging_epoch.end_offset >= 0);
        let redirected = parts.iter().any(|d| d.preferred_read_replica.0 >= 0);
        let done = bytes >= min_bytes
            || errors
            || diverged
            || redirected
            || wanted.is_empty()
            || hosted.is_empty()
            || tokio::time::Instant::now() >= deadline;
        if done {
            crate::observe::metrics::fetched(
                wanted.iter().map(|w| w.target.as_ref().ok()).zip(&parts),
                replica.is_some(),
            );
            return respond(broker, &context, uses_ids, to_read, &wanted, parts);
        }
        let any = poll_fn(|cx| {
            for w in wakeups.iter_mut() {
                if w.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        });
        let _parked = crate::observe::metrics::parked(crate::observe::metrics::Purgatory::Fetch);
        tokio::select! {
            _ = any => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Builds the response for `context`: every partition for full fetches (opening a session
/// for epoch 0), the changed ones for incremental fetches.
fn respond(
    broker: &Broker,
    context: &FetchContext,
    uses_ids: bool,
    read: Vec<CachedPartition>,
    wanted: &[Wanted],
    parts: Vec<PartitionData>,
) -> FetchResponse {
    let answered = |d: &PartitionData| Answered {
        // Kafka's sessions always include a partition naming a preferred read replica, as
        // they do one with records: the client must hear where to go.
        has_records: d.records.as_ref().is_some_and(|r| !r.is_empty())
            || d.preferred_read_replica.0 >= 0,
        error: d.error_code != codes::NONE,
        high_watermark: d.high_watermark,
        last_stable_offset: d.last_stable_offset,
        log_start_offset: d.log_start_offset,
    };
    let (session_id, include) = match context {
        FetchContext::Sessionless => (0, vec![true; parts.len()]),
        FetchContext::Full => {
            let cached = read
                .into_iter()
                .zip(&parts)
                .map(|(c, d)| (c, answered(d)))
                .collect();
            (
                broker.fetch_sessions.create(uses_ids, cached),
                vec![true; parts.len()],
            )
        }
        FetchContext::Incremental { session_id, .. } => {
            let answers: Vec<(TopicKey, i32, Answered)> = wanted
                .iter()
                .zip(&parts)
                .map(|(w, d)| (w.key.clone(), w.partition_index, answered(d)))
                .collect();
            (
                *session_id,
                broker.fetch_sessions.finish(*session_id, &answers),
            )
        }
    };
    // One entry per topic, in the order topics first appear.
    let mut topics: Vec<(TopicKey, FetchableTopicResponse)> = Vec::new();
    for ((w, data), keep) in wanted.iter().zip(parts).zip(include) {
        if !keep {
            continue;
        }
        let at = match topics.iter().position(|(k, _)| *k == w.key) {
            Some(i) => i,
            None => {
                let head = match &w.key {
                    TopicKey::Id(id) => FetchableTopicResponse::default().with_topic_id(*id),
                    TopicKey::Name(n) => {
                        FetchableTopicResponse::default().with_topic(TopicName(str_bytes(n)))
                    }
                };
                topics.push((w.key.clone(), head));
                topics.len() - 1
            }
        };
        topics[at].1.partitions.push(data);
    }
    FetchResponse::default()
        .with_session_id(session_id)
        .with_responses(topics.into_iter().map(|(_, t)| t).collect())
}

/// A follower fetch tells the leader where the follower's log ends: move the high watermark
/// and propose the follower for the ISR once it has caught up.
fn follower_progress(
    broker: &Arc<Broker>,
    replica: i32,
    wanted: &[Wanted],
    parts: &[PartitionData],
) {
    let now = fjord_storage::now_ms();
    for (w, data) in wanted.iter().zip(parts) {
        let Ok(p) = &w.target else {
            continue;
        };
        if data.error_code != codes::NONE || data.diverging_epoch.end_offset >= 0 {
            continue;
        }
        let leo = p.log().log_end_offset();
        p.on_follower_log_start(replica, w.log_start_offset);
        if let Some(proposal) = p.on_follower_fetch(replica, w.fetch_offset, leo, now) {
            tracing::info!(partition = %p.tp, replica, isr = ?proposal.isr, "follower caught up; expanding the ISR");
            crate::replication::isr::propose(broker, p.clone(), proposal);
        }
    }
}

/// What one fetch request asks of every partition it reads.
struct ReadParams<'a> {
    max_bytes: usize,
    read_committed: bool,
    /// The fetching follower's broker id; `None` for consumers.
    replica: Option<i32>,
    /// Consumers' Fetch v11+ (they may read from followers); `None` otherwise.
    client: Option<&'a ClientMetadata>,
    selector: ReplicaSelector,
    image: &'a fjord_raft::MetadataImage,
    /// For the replication throttle (`None`: no throttle, in unit tests).
    replicas: Option<&'a crate::replicas::ReplicaManager>,
}

/// One pass over every partition: the data, total bytes, and whether any partition failed.
fn read_all(wanted: &[Wanted], params: &ReadParams<'_>) -> (Vec<PartitionData>, usize, bool) {
    let mut out = Vec::with_capacity(wanted.len());
    let mut total = 0usize;
    let mut errors = false;
    for w in wanted {
        let data = match &w.target {
            Err(code) => {
                errors = true;
                error_data(w.partition_index, *code)
            }
            Ok(p) => match read_partition(
                p,
                w,
                params,
                params.max_bytes.saturating_sub(total),
                total == 0,
            ) {
                Ok((data, n)) => {
                    total += n;
                    if params.read_committed {
                        data.with_aborted_transactions(Some(Vec::new()))
                    } else {
                        data
                    }
                }
                Err(e) => {
                    errors = true;
                    let mut d = error_data(w.partition_index, e.code);
                    d.high_watermark = p.high_watermark();
                    d.last_stable_offset = d.high_watermark;
                    d.log_start_offset = p.log().log_start_offset();
                    d
                }
            },
        };
        out.push(data);
    }
    (out, total, errors)
}

fn error_data(index: i32, code: i16) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(code)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_records(Some(Bytes::new()))
}

fn read_partition(
    p: &Partition,
    w: &Wanted,
    params: &ReadParams<'_>,
    remaining: usize,
    first: bool,
) -> Result<(PartitionData, usize), PartitionError> {
    let for_replica = params.replica.is_some();
    // Kafka's fetchOnlyLeader: replicas and pre-KIP-392 consumers need the leader.
    let leader = p.is_leader();
    if !leader && params.client.is_none() {
        return Err(PartitionError::code(codes::NOT_LEADER_OR_FOLLOWER));
    }
    // On a follower this is the epoch of the leader it follows: a client with a newer or
    // older view of the leadership is told so, as the leader would.
    p.check_leader_epoch(w.current_leader_epoch)?;
    let log = p.log();
    // On a follower, the leader's high watermark as last heard: the bound of what it serves.
    let hw = p.high_watermark();
    if leader
        && let Some(client) = params.client
        && let Some(to) = read_replica::preferred_read_replica(
            params.selector,
            client,
            params.image,
            p.local_id(),
            &p.in_sync_followers(),
            w.fetch_offset,
            fjord_storage::now_ms(),
        )
    {
        // No records: the consumer fetches them from `to` (Kafka skips the read too).
        let data = PartitionData::default()
            .with_partition_index(w.partition_index)
            .with_high_watermark(hw)
            .with_last_stable_offset(hw)
            .with_log_start_offset(log.log_start_offset())
            .with_preferred_read_replica(BrokerId(to))
            .with_records(Some(Bytes::new()));
        return Ok((data, 0));
    }
    // KIP-279: a follower whose last epoch ends earlier here (or is unknown here) has a
    // divergent tail; tell it where the epoch ends instead of sending records.
    if for_replica
        && let Some((epoch, end)) =
            crate::replication::divergence(log, w.last_fetched_epoch, w.fetch_offset)
    {
        let data = PartitionData::default()
            .with_partition_index(w.partition_index)
            .with_high_watermark(hw)
            .with_last_stable_offset(hw)
            .with_log_start_offset(log.log_start_offset())
            .with_diverging_epoch(
                EpochEndOffset::default()
                    .with_epoch(epoch)
                    .with_end_offset(end),
            )
            .with_records(Some(Bytes::new()));
        return Ok((data, 0));
    }
    // Replication throttle (`replication::throttle`): a throttled follower outside the ISR
    // gets no records while this leader's rate is spent.
    // (quota, whether to hold back) for a throttled replica.
    let throttle = params.replica.zip(params.replicas).and_then(|(r, m)| {
        m.replication_throttle(p, throttle::LEADER_REPLICAS, r)
            .map(|out_of_sync| (&m.replication_quotas.leader, out_of_sync))
    });
    if throttle.is_some_and(|(q, out_of_sync)| out_of_sync && q.exceeded()) {
        let data = PartitionData::default()
            .with_partition_index(w.partition_index)
            .with_high_watermark(hw)
            .with_last_stable_offset(hw)
            .with_log_start_offset(log.log_start_offset())
            .with_records(Some(Bytes::new()));
        return Ok((data, 0));
    }
    // Followers copy everything the leader has; consumers see only committed records.
    let max_offset = if for_replica {
        log.log_end_offset()
    } else {
        hw
    };
    let limit = remaining.min(w.max_bytes.max(0) as usize);
    let mut records = Bytes::new();
    let mut log_start = log.log_start_offset();
    if limit > 0 || first {
        match log.read(w.fetch_offset, limit.max(1), max_offset) {
            Ok(r) => {
                log_start = r.log_start_offset;
                // The storage always returns at least one batch; only the first partition
                // with data may exceed the limits.
                if r.records.len() <= limit || (first && w.max_bytes > 0) {
                    records = r.records;
                }
            }
            Err(e @ StorageError::OffsetOutOfRange { .. }) => {
                return Err(PartitionError::code(codes::storage_error_code(&e)));
            }
            Err(e) => {
                return Err(PartitionError::storage(&e));
            }
        }
    }
    let n = records.len();
    if let Some((q, _)) = throttle {
        q.record(n as u64);
    }
    Ok((
        PartitionData::default()
            .with_partition_index(w.partition_index)
            .with_high_watermark(hw)
            .with_last_stable_offset(hw)
            .with_log_start_offset(log_start)
            .with_records(Some(records)),
        n,
    ))
}
