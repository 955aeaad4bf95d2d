//! `fjord-raft`: the KRaft-style metadata quorum (issue #3).
//!
//! - [`records`]: typed, versioned metadata records and their compact encoding.
//! - [`image`]: the metadata image that replaying those records gives.
//! - `quorum`: the Raft group on openraft that replicates and persists the metadata log.

pub mod applier;
pub mod client;
mod codec;
pub mod configs;
pub mod controller;
pub mod error;
pub mod image;
pub mod node;
pub mod quorum;
pub mod records;

pub use error::{ControllerError, DecodeError};
pub use image::{BrokerRegistration, MetadataImage, PartitionRegistration, TopicImage};
