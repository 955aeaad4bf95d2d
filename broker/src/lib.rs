//! `fjord-broker`: the Kafka protocol server, its request handlers and the partition state they
//! act on (issue #4).
//!
//! - [`config`]: broker configuration with Kafka's property names.
//! - [`node`]: start and stop a process (controller, broker, or both).
//! - [`server`]: connections, framing, pipelining; [`dispatch`]: the API table.
//! - [`handlers`]: one module per API family.
//! - [`replicas`] and [`partition`]: hosted partitions kept in step with the metadata image.
//! - [`observe`]: Prometheus metrics and the HTTP control API.

pub mod broker;
pub mod codes;
pub mod config;
pub mod dispatch;
pub mod fetch_session;
pub mod group;
pub mod handlers;
pub mod node;
pub mod observe;
pub mod partition;
pub mod producer_ids;
pub mod replicas;
pub mod replication;
pub mod server;
pub mod util;

pub use config::BrokerConfig;
pub use node::{Node, StartError};
