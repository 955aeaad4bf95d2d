//! Kafka wire protocol framing and helpers for Fjord (issue #4).
