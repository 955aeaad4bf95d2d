//! Produce: validate and append each partition's batches as the leader, in request order, then
//! answer at once (acks=1), never (acks=0), or once the high watermark covers the append
//! (acks=-1, after checking `min.insync.replicas` against the ISR).
//!
//! Idempotent batches (producer id >= 0) are checked against the partition's producer state in
//! the same step as the append (see `fjord_storage::producer_state`): a retry of one of the
//! producer's last five batches is answered with its original offsets and not appended (and,
//! with acks=-1, still waits for the high watermark to cover it); a sequence gap answers
//! OUT_OF_ORDER_SEQUENCE_NUMBER and an older epoch INVALID_PRODUCER_EPOCH.
//!
//! A topic whose `compression.type` names a codec has each batch in another codec rebuilt in
//! that codec before the append (`fjord_storage::recompress`); sequence numbers are kept, so
//! the duplicate check above sees the batch the producer sent.

use std::sync::Arc;
use std::time::Duration;

use fjord_protocol::kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use fjord_protocol::kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};

use crate::broker::Broker;
use crate::codes;
use crate::dispatch::{Reply, RequestContext};
use crate::partition::{Commit, Partition, PartitionError};
use crate::replicas::TopicSettings;
use crate::util::{is_internal_topic, str_bytes};

/// What an acks=-1 answer waits for: records below `offset`, written in `epoch`, committed
/// with at least `min_isr` replicas in sync.
struct Wait {
    partition: Arc<Partition>,
    offset: i64,
    epoch: i32,
    min_isr: usize,
}

/// A partition's answer, plus what an acks=-1 request still has to wait for.
struct Outcome {
    response: PartitionProduceResponse,
    wait: Option<Wait>,
}

fn failed(index: i32, e: PartitionError) -> Outcome {
    // Versions before 8 have neither field; the encoder leaves them out there.
    let record_errors = e
        .record_errors
        .iter()
        .map(|r| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(r.index)
                .with_batch_index_error_message(Some(str_bytes(&r.message)))
        })
        .collect();
    Outcome {
        response: PartitionProduceResponse::default()
            .with_index(index)
            .with_error_code(e.code)
            .with_base_offset(-1)
            .with_log_append_time_ms(-1)
            .with_log_start_offset(-1)
            .with_record_errors(record_errors)
            .with_error_message(e.message.as_deref().map(str_bytes)),
        wait: None,
    }
}

pub fn handle(broker: &Arc<Broker>, ctx: RequestContext, req: ProduceRequest) -> Reply {
    let acks = req.acks;
    // Appends that may fsync or recompress run with the worker thread handed over to the
    // runtime's other tasks, so connections sharing the thread keep being served. They stay
    // synchronous so a connection's pipelined produces append in the order they were sent.
    let resolved = resolve_topics(broker, &ctx, &req);
    let mut topics = if resolved
        .iter()
        .any(|(_, s)| s.as_ref().is_some_and(|s| s.appends_may_block))
    {
        in_blocking_section(|| append_all(broker, &ctx, &req, resolved))
    } else {
        append_all(broker, &ctx, &req, resolved)
    };
    if acks == 0 {
        return Reply::Now(None);
    }
    let needs_wait = topics
        .iter()
        .any(|(_, o)| o.iter().any(|o| o.wait.is_some()));
    if !needs_wait {
        return Reply::now(ResponseKind::Produce(assemble(topics)));
    }
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
    Reply::later(async move {
        let _parked = crate::observe::metrics::parked(crate::observe::metrics::Purgatory::Produce);
        for (_, outcomes) in topics.iter_mut() {
            for o in outcomes.iter_mut() {
                let Some(w) = o.wait.take() else {
                    continue;
                };
                // Kafka's DelayedProduce: REQUEST_TIMED_OUT when the ISR did not catch up in
                // time, NOT_LEADER_OR_FOLLOWER if leadership moved (the records may be gone),
                // NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below the minimum.
                let code = match w
                    .partition
                    .wait_for_commit(w.offset, w.epoch, timeout)
                    .await
                {
                    Commit::Committed if w.partition.isr_len() < w.min_isr => {
                        codes::NOT_ENOUGH_REPLICAS_AFTER_APPEND
                    }
                    Commit::Committed => codes::NONE,
                    Commit::NotLeader => codes::NOT_LEADER_OR_FOLLOWER,
                    Commit::TimedOut => codes::REQUEST_TIMED_OUT,
                };
                if code != codes::NONE {
                    o.response = failed(o.response.index, PartitionError::code(code)).response;
                }
            }
        }
        ResponseKind::Produce(assemble(topics))
    })
}

/// Validates and appends every partition's records; the answers, plus what acks=-1 waits for.
/// Each request topic's name (v13 names topics by id only) and settings, looked up once.
type Resolved = Vec<(Option<String>, Option<Arc<TopicSettings>>)>;

fn resolve_topics(broker: &Broker, ctx: &RequestContext, req: &ProduceRequest) -> Resolved {
    let image = broker.image();
    req.topic_data
        .iter()
        .map(|t| {
            let name = if ctx.version() >= 13 {
                image.topic_by_id(&t.topic_id).map(|t| t.name.clone())
            } else {
                Some(t.name.as_str().to_string())
            };
            let settings = name
                .as_deref()
                .and_then(|n| broker.replicas.topic_settings(n));
            (name, settings)
        })
        .collect()
}

fn append_all(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: &ProduceRequest,
    resolved: Resolved,
) -> Vec<(TopicProduceResponse, Vec<Outcome>)> {
    let acks = req.acks;
    let image = broker.image();
    // Kafka refuses transactional batches unless the request carries a transactional id the
    // client may use (KafkaApis: TRANSACTIONAL_ID_AUTHORIZATION_FAILED); transactions are not
    // served yet (InitProducerId refuses transactional ids), so any transactional write is.
    let transactional = req.transactional_id.is_some() || has_transactional_batches(req);
    let mut topics: Vec<(TopicProduceResponse, Vec<Outcome>)> =
        Vec::with_capacity(req.topic_data.len());
    for (topic, (name, settings)) in req.topic_data.iter().zip(resolved) {
        let mut outcomes = Vec::with_capacity(topic.partition_data.len());
        for p in &topic.partition_data {
            let outcome = (|| {
                if !matches!(acks, -1..=1) {
                    return Err(PartitionError::code(codes::INVALID_REQUIRED_ACKS));
                }
                if transactional {
                    return Err(PartitionError::new(
                        codes::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                        "transactions are not supported",
                    ));
                }
                let unknown = if ctx.version() >= 13 {
                    codes::UNKNOWN_TOPIC_ID
                } else {
                    codes::UNKNOWN_TOPIC_OR_PARTITION
                };
                let name = name.as_deref().ok_or(PartitionError::code(unknown))?;
                // Only the coordinators write their internal topics (Kafka: ReplicaManager
                // refuses client appends to them).
                if is_internal_topic(name) {
                    return Err(PartitionError::new(
                        codes::INVALID_TOPIC_EXCEPTION,
                        format!("cannot append to internal topic {name}"),
                    ));
                }
                let partition = broker.replicas.get(name, p.index).ok_or_else(|| {
                    // A partition the image knows but this broker does not host.
                    if image.partition(name, p.index).is_some() {
                        PartitionError::code(codes::NOT_LEADER_OR_FOLLOWER)
                    } else {
                        PartitionError::code(codes::UNKNOWN_TOPIC_OR_PARTITION)
                    }
                })?;
                if broker.is_shutting_down() {
                    return Err(PartitionError::code(codes::NOT_LEADER_OR_FOLLOWER));
                }
                let records = match &p.records {
                    Some(r) if !r.is_empty() => r,
                    _ => {
                        return Err(PartitionError::new(
                            codes::INVALID_RECORD,
                            "produce request without records",
                        ));
                    }
                };
                // A follower answers before spending CPU on recompression, as Kafka does.
                if !partition.is_leader() {
                    return Err(PartitionError::code(codes::NOT_LEADER_OR_FOLLOWER));
                }
                // compression.type other than `producer`: batches in another codec are rebuilt
                // (the same Bytes come back otherwise).
                let records =
                    fjord_storage::recompress::for_log(records, &partition.log().config())
                        .map_err(|e| PartitionError::storage(&e))?;
                let min_isr = settings.as_ref().map_or(1, |s| s.min_insync_replicas);
                let (info, epoch) = partition.append_in_epoch(&records, acks, min_isr)?;
                crate::observe::metrics::produced(name, &info);
                Ok((partition, info, epoch, min_isr))
            })();
            outcomes.push(match outcome {
                Ok((partition, info, epoch, min_isr)) => Outcome {
                    response: PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_base_offset(info.first_offset)
                        .with_log_append_time_ms(info.log_append_time)
                        .with_log_start_offset(info.log_start_offset),
                    wait: (acks == -1).then_some(Wait {
                        partition,
                        offset: info.last_offset + 1,
                        epoch,
                        min_isr,
                    }),
                },
                Err(e) => {
                    tracing::debug!(topic = ?name, partition = p.index, code = e.code, message = ?e.message, "produce failed");
                    failed(p.index, e)
                }
            });
        }
        let head = if ctx.version() >= 13 {
            TopicProduceResponse::default().with_topic_id(topic.topic_id)
        } else {
            TopicProduceResponse::default().with_name(topic.name.clone())
        };
        topics.push((head, outcomes));
    }
    topics
}

/// Runs `f` on this worker thread after handing the thread's other tasks to the runtime
/// (`block_in_place`); a current-thread runtime (unit tests) just runs it.
fn in_blocking_section<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn has_transactional_batches(req: &ProduceRequest) -> bool {
    req.topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .filter_map(|p| p.records.as_deref())
        .any(|records| fjord_storage::log::batch_headers(records).any(|h| h.is_transactional()))
}

fn assemble(topics: Vec<(TopicProduceResponse, Vec<Outcome>)>) -> ProduceResponse {
    ProduceResponse::default().with_responses(
        topics
            .into_iter()
            .map(|(head, outcomes)| {
                head.with_partition_responses(outcomes.into_iter().map(|o| o.response).collect())
            })
            .collect(),
    )
}
