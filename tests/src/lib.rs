//! Cross-crate and real-client tests for Fjord.
