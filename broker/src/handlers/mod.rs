//! Request handlers, one module per API family.

pub mod api_versions;
pub mod configs;
pub mod consumer_groups;
pub mod delete_records;
pub mod describe_topic_partitions;
pub mod elect_leaders;
pub mod fetch;
pub mod groups;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod reassignments;
pub mod topics;
