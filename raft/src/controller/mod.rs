//! Controller logic: turns requests into metadata records, validated against the image.
//!
//! [`ControllerLogic`] is synchronous and deterministic given its inputs (the image, the clock
//! and its random source). It runs only on the Raft leader, one request at a time, against a
//! *working* image that already includes the records of requests still being committed, so a
//! request always sees the effect of the ones before it. The records of one request form one
//! Raft entry and are applied atomically; if the commit fails, the runtime throws the working
//! image away and starts again from the committed one.

pub mod alter_configs;
pub mod brokers;
pub mod elections;
pub mod placement;
pub mod reassignments;
pub mod requests;
pub mod topics;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::error::ControllerError;
use crate::image::MetadataImage;
use crate::records::MetadataRecord;
use requests::*;

/// Most partitions one CreateTopics or CreatePartitions request may create (Kafka's
/// `MAX_PARTITIONS_PER_BATCH`); more is refused with POLICY_VIOLATION before any allocation.
pub const MAX_PARTITIONS_PER_REQUEST: i64 = 10_000;

#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// `num.partitions`: partitions of a topic created without a count.
    pub num_partitions: i32,
    /// `default.replication.factor`
    pub default_replication_factor: i16,
    /// `broker.session.timeout.ms`: a broker silent this long is fenced.
    pub session_timeout: Duration,
    /// Producer ids handed to a broker per AllocateProducerIds.
    pub producer_id_block_size: i32,
    /// `auto.leader.rebalance.enable`
    pub auto_leader_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds`
    pub leader_imbalance_check_interval: Duration,
    /// `leader.imbalance.per.broker.percentage`
    pub leader_imbalance_per_broker_pct: u32,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            num_partitions: 1,
            default_replication_factor: 1,
            session_timeout: Duration::from_millis(9000),
            producer_id_block_size: 1000,
            auto_leader_rebalance: true,
            leader_imbalance_check_interval: Duration::from_secs(300),
            leader_imbalance_per_broker_pct: 10,
        }
    }
}

/// What the controller knows of a broker's liveness (in memory only, like Kafka's).
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub last_heartbeat: Instant,
    /// Raft index at which the broker's registration was committed.
    pub registered_offset: Option<u64>,
    /// Whether this controller has heard from the broker itself (a registration or a
    /// heartbeat), rather than only granted it a grace period on becoming active.
    pub heard: bool,
}

/// Records produced by one request, applied to the working image as they are emitted.
pub struct Batch<'a> {
    pub image: &'a mut MetadataImage,
    pub records: Vec<MetadataRecord>,
}

impl<'a> Batch<'a> {
    pub fn new(image: &'a mut MetadataImage) -> Self {
        Batch {
            image,
            records: Vec::new(),
        }
    }

    pub(crate) fn emit(&mut self, r: MetadataRecord) -> Result<(), ControllerError> {
        // Requests are validated before they emit, so a record that does not apply is a bug in
        // the controller; refuse the request rather than commit a record replay would skip.
        self.image.apply(&r).map_err(|why| {
            ControllerError::InvalidRequest(format!("internal error: record does not apply: {why}"))
        })?;
        self.records.push(r);
        Ok(())
    }
}

pub struct ControllerLogic {
    pub cfg: ControllerConfig,
    pub(crate) sessions: HashMap<i32, Session>,
    /// The committed offset when this controller became leader; brokers that registered with an
    /// earlier leader are caught up once they reach it.
    pub(crate) leader_start_offset: u64,
    pub(crate) max_epoch_seen: i64,
    /// Partitions the current request may still create (Kafka's per-request cap).
    pub(crate) partition_budget: i64,
    /// When the last preferred-leader rebalance check ran (the first waits one interval).
    last_rebalance: Option<Instant>,
    rng: StdRng,
}

impl ControllerLogic {
    pub fn new(cfg: ControllerConfig) -> Self {
        ControllerLogic {
            cfg,
            sessions: HashMap::new(),
            leader_start_offset: 0,
            max_epoch_seen: 0,
            partition_budget: MAX_PARTITIONS_PER_REQUEST,
            last_rebalance: None,
            rng: StdRng::from_entropy(),
        }
    }

    /// With a fixed seed, for tests that need repeatable placement and ids.
    pub fn with_seed(cfg: ControllerConfig, seed: u64) -> Self {
        ControllerLogic {
            rng: StdRng::seed_from_u64(seed),
            ..ControllerLogic::new(cfg)
        }
    }

    /// Called when this node becomes the active controller, with the committed image. Every
    /// broker gets a new session: its heartbeats went to the old leader. The session counts as
    /// already half over, so a broker that died with the old controller (the usual case in
    /// combined mode) is fenced half a timeout after the takeover rather than a whole one;
    /// live brokers find the new leader and heartbeat well within that.
    pub fn become_leader(&mut self, image: &MetadataImage, now: Instant) {
        self.leader_start_offset = image.offset;
        self.sessions.clear();
        let started = now.checked_sub(self.cfg.session_timeout / 2).unwrap_or(now);
        for b in image.brokers.values() {
            self.sessions.insert(
                b.id,
                Session {
                    last_heartbeat: started,
                    registered_offset: None,
                    heard: false,
                },
            );
        }
    }

    /// The runtime tells us where a registration was committed, for the caught-up check.
    pub fn registration_committed(&mut self, broker_id: i32, offset: u64) {
        if let Some(s) = self.sessions.get_mut(&broker_id) {
            s.registered_offset = Some(offset);
        }
    }

    pub(crate) fn rng_u128(&mut self) -> u128 {
        self.rng.r#gen()
    }

    pub(crate) fn random_start(&mut self) -> (usize, usize) {
        (
            self.rng.gen_range(0..1 << 16),
            self.rng.gen_range(0..1 << 16),
        )
    }

    /// Handle one request against the working image. Returns the answer to send once the
    /// records (applied to `image` already) are committed.
    pub fn handle(
        &mut self,
        image: &mut MetadataImage,
        req: &ControllerRequest,
        now: Instant,
    ) -> (ControllerResponse, Vec<MetadataRecord>) {
        use ControllerRequest as Q;
        use ControllerResponse as A;
        // Validate-only requests run against a throwaway copy (an O(1) clone).
        let validate_only = matches!(
            req,
            Q::CreateTopics {
                validate_only: true,
                ..
            } | Q::CreatePartitions {
                validate_only: true,
                ..
            } | Q::AlterConfigs {
                validate_only: true,
                ..
            }
        );
        let mut scratch;
        let target = if validate_only {
            scratch = image.clone();
            &mut scratch
        } else {
            image
        };
        let mut batch = Batch::new(target);
        self.partition_budget = MAX_PARTITIONS_PER_REQUEST;
        let answer = match req {
            Q::CreateTopics { topics, .. } => {
                let mut out = Vec::with_capacity(topics.len());
                let mut seen = std::collections::HashSet::new();
                for t in topics {
                    let r = if !seen.insert(t.name.as_str()) {
                        Err(ControllerError::InvalidRequest(format!(
                            "topic '{}' appears more than once in the request",
                            t.name
                        )))
                    } else {
                        self.atomically(&mut batch, |c, b| c.create_topic(b, t))
                    };
                    out.push((t.name.clone(), r.map_err(ApiError::from)));
                }
                A::CreateTopics(out)
            }
            Q::DeleteTopics(refs) => A::DeleteTopics(
                refs.iter()
                    .map(|r| {
                        (
                            r.clone(),
                            self.atomically(&mut batch, |c, b| c.delete_topic(b, r))
                                .map_err(ApiError::from),
                        )
                    })
                    .collect(),
            ),
            Q::CreatePartitions { topics, .. } => A::CreatePartitions(
                topics
                    .iter()
                    .map(|t| {
                        (
                            t.topic.clone(),
                            self.atomically(&mut batch, |c, b| c.create_partitions(b, t))
                                .map_err(ApiError::from),
                        )
                    })
                    .collect(),
            ),
            Q::AlterConfigs { changes, .. } => A::AlterConfigs(
                changes
                    .iter()
                    .map(|c| {
                        (
                            c.resource.clone(),
                            self.atomically(&mut batch, |l, b| l.alter_configs(b, c))
                                .map_err(ApiError::from),
                        )
                    })
                    .collect(),
            ),
            Q::RegisterBroker(r) => A::RegisterBroker(
                self.atomically(&mut batch, |c, b| c.register_broker(b, r, now))
                    .map_err(ApiError::from),
            ),
            Q::Heartbeat(h) => A::Heartbeat(
                self.atomically(&mut batch, |c, b| c.heartbeat(b, h, now))
                    .map_err(ApiError::from),
            ),
            Q::AlterPartition(a) => A::AlterPartition(
                self.atomically(&mut batch, |c, b| c.alter_partition(b, a))
                    .map_err(ApiError::from),
            ),
            Q::ElectLeaders {
                election_type,
                partitions,
            } => A::ElectLeaders(
                self.elect_leaders(&mut batch, *election_type, partitions.as_deref())
                    .into_iter()
                    .map(|(t, p, r)| {
                        (
                            t,
                            p,
                            r.map_err(|(code, message)| ApiError { code, message }),
                        )
                    })
                    .collect(),
            ),
            Q::AlterPartitionReassignments {
                partitions,
                allow_replication_factor_change,
            } => A::AlterPartitionReassignments(
                partitions
                    .iter()
                    .map(|(topic, partition, target)| {
                        let r = self
                            .atomically(&mut batch, |c, b| {
                                c.reassign_partition(
                                    b,
                                    topic,
                                    *partition,
                                    target.as_deref(),
                                    *allow_replication_factor_change,
                                )
                            })
                            .map_err(ApiError::from);
                        (topic.clone(), *partition, r)
                    })
                    .collect(),
            ),
            Q::AllocateProducerIds {
                broker_id,
                broker_epoch,
            } => A::AllocateProducerIds(
                self.atomically(&mut batch, |c, b| {
                    c.allocate_producer_ids(b, *broker_id, *broker_epoch)
                })
                .map_err(ApiError::from),
            ),
        };
        let records = if validate_only {
            Vec::new()
        } else {
            batch.records
        };
        (answer, records)
    }

    /// Run one operation so that a failure leaves neither records nor image changes behind.
    pub(crate) fn atomically<T>(
        &mut self,
        batch: &mut Batch<'_>,
        op: impl FnOnce(&mut Self, &mut Batch<'_>) -> Result<T, ControllerError>,
    ) -> Result<T, ControllerError> {
        let saved = batch.image.clone();
        let mark = batch.records.len();
        let r = op(self, batch);
        if r.is_err() {
            *batch.image = saved;
            batch.records.truncate(mark);
        }
        r
    }

    /// Take `n` partitions from this request's budget.
    pub(crate) fn spend_partitions(&mut self, n: i64) -> Result<(), ControllerError> {
        if n > self.partition_budget {
            return Err(ControllerError::PolicyViolation(format!(
                "a request may create at most {MAX_PARTITIONS_PER_REQUEST} partitions"
            )));
        }
        self.partition_budget -= n;
        Ok(())
    }

    /// Periodic work on the leader: fence brokers whose sessions expired, and now and then
    /// give partitions back to their preferred leaders.
    pub fn tick(&mut self, image: &mut MetadataImage, now: Instant) -> Vec<MetadataRecord> {
        let mut batch = Batch::new(image);
        self.expire_sessions(&mut batch, now);
        if self.cfg.auto_leader_rebalance {
            let last = *self.last_rebalance.get_or_insert(now);
            if now.duration_since(last) >= self.cfg.leader_imbalance_check_interval {
                self.last_rebalance = Some(now);
                self.rebalance_leaders(&mut batch, self.cfg.leader_imbalance_per_broker_pct);
            }
        }
        batch.records
    }
}

#[cfg(test)]
mod tests;
