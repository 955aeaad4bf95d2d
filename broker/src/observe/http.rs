//! The HTTP listener (`http.listener`): `/metrics`, `/healthz`, `/readyz` and the control API
//! ([`crate::observe::control`]), served with axum. It starts before the broker registers, so
//! `/healthz` answers while the broker is still being unfenced and `/readyz` says why it is not
//! ready yet.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fjord_raft::node::ControllerNode;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::observe::control::{self, ApiError};
use crate::observe::metrics;
use crate::observe::sampler::Sampler;

/// How often histograms are drained and the rebalance rate's window is advanced, whether or
/// not anyone scrapes (so memory stays bounded between scrapes).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// What the HTTP handlers share.
pub struct Observe {
    pub node_id: i32,
    metrics: PrometheusHandle,
    sampler: Sampler,
    /// Set once the broker is unfenced and serving (never on a controller-only node).
    broker: OnceLock<Arc<Broker>>,
    controller: Option<Arc<ControllerNode>>,
    is_broker: bool,
    /// One scrape at a time: a render must follow its own sampling, or gauges another scrape
    /// just rendered would look idle.
    scraping: tokio::sync::Mutex<()>,
}

impl Observe {
    /// The broker, or why the control API cannot use one.
    pub fn broker(&self) -> Result<&Arc<Broker>, ApiError> {
        match self.broker.get() {
            Some(b) => Ok(b),
            None if !self.is_broker => Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "NotABroker",
                "this node has only the controller role; ask a broker",
            )),
            None => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NotReady",
                "the broker is still starting",
            )),
        }
    }
}

/// A running HTTP listener.
pub struct HttpServer {
    pub addr: SocketAddr,
    pub state: Arc<Observe>,
    pub tasks: Vec<JoinHandle<()>>,
}

impl HttpServer {
    /// Hands the serving broker to the handlers (after it is unfenced).
    pub fn set_broker(&self, broker: Arc<Broker>) {
        let _ = self.state.broker.set(broker);
    }
}

/// What the listener needs from the node's configuration.
pub struct HttpConfig {
    pub addr: SocketAddr,
    pub node_id: i32,
    pub is_broker: bool,
    pub metadata_log_dir: PathBuf,
    pub log_dirs: Vec<PathBuf>,
}

/// Starts the listener `http.listener` names, if it names one; on failure, the address that
/// could not be bound and why.
pub async fn start_configured(
    config: &BrokerConfig,
    controller: Option<Arc<ControllerNode>>,
) -> Result<Option<HttpServer>, (SocketAddr, std::io::Error)> {
    let Some(addr) = config.http_listener else {
        return Ok(None);
    };
    let http_config = HttpConfig {
        addr,
        node_id: config.node_id,
        is_broker: config.is_broker(),
        metadata_log_dir: config.metadata_log_dir.clone(),
        log_dirs: config.log_dirs.clone(),
    };
    start(http_config, controller)
        .await
        .map(Some)
        .map_err(|e| (addr, e))
}

/// Binds `config.addr` and serves until the returned tasks are aborted.
pub async fn start(
    config: HttpConfig,
    controller: Option<Arc<ControllerNode>>,
) -> std::io::Result<HttpServer> {
    let listener = TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    let handle = metrics::install();
    let state = Arc::new(Observe {
        node_id: config.node_id,
        metrics: handle,
        sampler: Sampler::new(controller.clone(), config.metadata_log_dir, config.log_dirs),
        broker: OnceLock::new(),
        controller,
        is_broker: config.is_broker,
        scraping: tokio::sync::Mutex::new(()),
    });
    let app = router(state.clone());
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the HTTP listener stopped");
        }
    });
    let upkeep_state = state.clone();
    let upkeep = tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            upkeep_state.metrics.run_upkeep();
            upkeep_state.sampler.tick();
        }
    });
    tracing::info!(%addr, "HTTP listener (metrics and control API) serving");
    Ok(HttpServer {
        addr,
        state,
        tasks: vec![server, upkeep],
    })
}

pub fn router(state: Arc<Observe>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/v1/topics",
            get(control::list_topics).post(control::create_topic),
        )
        .route("/v1/groups/{group}/lag", get(control::group_lag))
        .route("/v1/groups/{group}/rebalance", post(control::rebalance))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn scrape(axum::extract::State(state): axum::extract::State<Arc<Observe>>) -> Response {
    let _one_at_a_time = state.scraping.lock().await;
    let s = state.clone();
    // File system calls and shard locks: off the worker threads.
    let sampled = tokio::task::spawn_blocking(move || {
        s.sampler.sample(s.broker.get());
    })
    .await;
    if sampled.is_err() {
        tracing::error!("sampling metrics panicked");
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> Response {
    control::json(StatusCode::OK, serde_json::json!({"status": "ok"}))
}

/// Ready when this node does its job: a broker registered, unfenced and serving clients (not
/// shutting down); a controller-only node once its quorum has a leader.
async fn readyz(axum::extract::State(state): axum::extract::State<Arc<Observe>>) -> Response {
    match readiness(&state) {
        Ok(detail) => control::json(StatusCode::OK, detail),
        Err(e) => e.into_response(),
    }
}

fn readiness(state: &Observe) -> Result<serde_json::Value, ApiError> {
    let not_ready = |why: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NotReady", why);
    if !state.is_broker {
        let leader = state
            .controller
            .as_ref()
            .and_then(|c| c.quorum().status().leader);
        return match leader {
            Some(l) => Ok(
                serde_json::json!({"status": "ready", "node_id": state.node_id, "controller_leader": l}),
            ),
            None => Err(not_ready("the metadata quorum has no leader".into())),
        };
    }
    let broker = state
        .broker
        .get()
        .ok_or_else(|| not_ready("the broker is not registered and unfenced yet".into()))?;
    if broker.is_shutting_down() {
        return Err(not_ready("the broker is shutting down".into()));
    }
    let image = broker.image();
    match image.broker(broker.node_id) {
        Some(b) if !b.fenced => Ok(serde_json::json!({
            "status": "ready",
            "node_id": broker.node_id,
            "broker_epoch": b.epoch,
            "metadata_offset": image.offset,
        })),
        Some(_) => Err(not_ready("the controller has fenced this broker".into())),
        None => Err(not_ready(
            "the metadata image has no registration for this broker".into(),
        )),
    }
}

async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("no such endpoint: {}", uri.path()),
    )
    .into_response()
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observe(is_broker: bool) -> Observe {
        Observe {
            node_id: 1,
            metrics: metrics::install(),
            sampler: Sampler::new(None, PathBuf::new(), Vec::new()),
            broker: OnceLock::new(),
            controller: None,
            is_broker,
            scraping: tokio::sync::Mutex::new(()),
        }
    }

    #[test]
    fn not_ready_until_a_broker_serves() {
        let starting = observe(true);
        assert_eq!(
            readiness(&starting).unwrap_err().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            starting.broker().err().map(|e| e.status()),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        // A controller-only node never has a broker to serve the control API.
        let controller_only = observe(false);
        assert_eq!(
            controller_only.broker().err().map(|e| e.status()),
            Some(StatusCode::NOT_IMPLEMENTED)
        );
        // ... and is ready once its quorum has a leader (here: no quorum at all).
        assert_eq!(
            readiness(&controller_only).unwrap_err().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
