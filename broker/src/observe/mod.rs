//! Observability and operations over HTTP (issue #6): Prometheus metrics and a small control
//! API on the listener named by `http.listener`.
//!
//! - [`metrics`]: every metric name, the recorder, and the calls the request path makes
//!   (requests, per-topic traffic, purgatories, rebalances).
//! - [`errors`]: the error codes in a response, counted per API as Kafka counts them.
//! - [`sampler`]: gauges read from the broker's state before each scrape (log sizes,
//!   replication health, consumer lag, the metadata quorum).
//! - [`http`]: the axum server (`/metrics`, `/healthz`, `/readyz`); [`control`]: the
//!   `/v1/...` routes.

pub mod control;
pub mod errors;
pub mod http;
pub mod metrics;
pub mod sampler;
