//! Cross-crate and real-client tests for Fjord. This library is the harness: it starts the
//! `fjord` binary on free loopback ports with a temporary data directory, and runs real Kafka
//! clients (librdkafka through confluent-kafka, and kafka-python) against it. [`cluster`] starts
//! several nodes behind test-controlled proxies ([`proxy`]) for replication and chaos tests,
//! whose results [`consistency`] checks against the replicas' logs ([`replica_log`]).

pub mod admin;
pub mod broker;
pub mod clients;
pub mod cluster;
pub mod consistency;
pub mod proxy;
pub mod replica_log;
pub mod wire;
