//! Kafka protocol server and request handlers for Fjord (issue #4).
