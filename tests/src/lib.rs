//! Cross-crate and real-client tests for Fjord. This library is the harness: it starts the
//! `fjord` binary on free loopback ports with a temporary data directory, and runs real Kafka
//! clients (librdkafka through confluent-kafka, and kafka-python) against it.

pub mod broker;
pub mod clients;
pub mod wire;
