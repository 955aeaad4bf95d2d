//! A small async Kafka client on kafka-protocol: connections with version negotiation and
//! pipelining, cluster metadata and routing, record batches, and a consumer-group member.
//! Nothing here assumes the broker is Fjord.

pub mod admin;
pub mod cluster;
pub mod conn;
pub mod error;
pub mod fetcher;
pub mod groups;
pub mod member;
pub mod partitioner;
pub mod producer;
pub mod reassignments;
pub mod records;
pub mod throttle;
pub mod versions;

pub use cluster::{Client, PartitionInfo, TopicInfo};
pub use conn::{ConnOptions, Connection};
pub use error::ClientError;
