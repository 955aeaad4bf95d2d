//! A Fjord process: the controller (if `process.roles` has it), the broker (if it has that), and
//! their start and stop.
//!
//! Broker start-up: open the logs, follow the metadata image (from the local controller in
//! combined mode, by fetching from the quorum otherwise), register with the controller (fenced),
//! heartbeat until the controller unfences it (it has caught up with the metadata log), and only
//! then accept clients. Stop: stop accepting and drop connections, tell the controller we are
//! going (controlled shutdown), flush and close every log and write the clean-shutdown marker.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fjord_raft::MetadataImage;
use fjord_raft::client::{ControllerClient, fetch_metadata_loop};
use fjord_raft::controller::ControllerConfig;
use fjord_raft::controller::requests::{
    ControllerRequest, ControllerResponse, EndpointSpec, Heartbeat, RegisterBroker,
};
use fjord_raft::node::ControllerNode;
use fjord_raft::quorum::{QuorumConfig, parse_voters};
use fjord_storage::{LogManager, ManagerConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::replicas::ReplicaManager;
use crate::server;

/// How long start-up waits for the controller to register and unfence this broker.
const UNFENCE_TIMEOUT: Duration = Duration::from_secs(60);
/// Heartbeat period while fenced: short, so start-up is quick.
const FENCED_HEARTBEAT: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("config: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("controller quorum: {0}")]
    Quorum(String),
    #[error("storage: {0}")]
    Storage(#[from] fjord_storage::StorageError),
    #[error("cannot listen on {addr} ({name}): {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cluster id: {0}")]
    ClusterId(String),
    #[error("broker registration: {0}")]
    Registration(String),
}

/// A running node.
pub struct Node {
    controller: Option<Arc<ControllerNode>>,
    broker: Option<Arc<Broker>>,
    /// Where each client listener is bound (after resolving port 0).
    pub client_addrs: Vec<(String, SocketAddr)>,
    /// Where `/metrics` and the control API are served (`http.listener`), if anywhere.
    pub http_addr: Option<SocketAddr>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    broker_epoch: i64,
}

impl Node {
    pub async fn start(config: BrokerConfig) -> Result<Node, StartError> {
        let voters = parse_voters(&config.controller_quorum_voters)
            .map_err(|e| StartError::Quorum(e.to_string()))?;
        // A dedicated role, or more than one voter, means other nodes share this cluster.
        let multi_node = voters.len() > 1 || !(config.is_broker() && config.is_controller());
        let cluster_id = load_cluster_id(&config, multi_node)?;
        let controller = if config.is_controller() {
            let listener = config
                .controller_listener()
                .ok_or_else(|| StartError::Quorum("no controller listener".into()))?;
            let addr = listener.socket_addr()?;
            let qcfg = QuorumConfig::new(
                config.node_id as u64,
                voters.clone(),
                addr,
                config.metadata_log_dir.join("__cluster_metadata-0"),
            );
            let ccfg = ControllerConfig {
                num_partitions: config.num_partitions,
                default_replication_factor: config.default_replication_factor,
                session_timeout: config.session_timeout,
                auto_leader_rebalance: config.auto_leader_rebalance,
                leader_imbalance_check_interval: config.leader_imbalance_check_interval,
                leader_imbalance_per_broker_pct: config.leader_imbalance_per_broker_pct,
                ..ControllerConfig::default()
            };
            let node = ControllerNode::start(qcfg, ccfg)
                .await
                .map_err(|e| StartError::Quorum(e.to_string()))?;
            tracing::info!(node_id = config.node_id, %addr, "controller started");
            Some(node)
        } else {
            None
        };
        let mut node = Node {
            controller: controller.clone(),
            broker: None,
            client_addrs: Vec::new(),
            http_addr: None,
            servers: Vec::new(),
            background: Vec::new(),
            broker_epoch: -1,
        };
        // Up before the broker registers, so /healthz and /readyz answer during start-up.
        let mut http = crate::observe::http::start_configured(&config, controller.clone())
            .await
            .map_err(|(addr, source)| StartError::Bind {
                name: "HTTP".into(),
                addr,
                source,
            })?;
        if let Some(h) = &mut http {
            node.http_addr = Some(h.addr);
            node.background.append(&mut h.tasks);
        }
        if !config.is_broker() {
            return Ok(node);
        }

        // Metadata as committed by the quorum.
        let raw_images = match &controller {
            Some(c) => c.images(),
            None => {
                let (tx, rx) = watch::channel(Arc::new(MetadataImage::default()));
                node.background
                    .push(tokio::spawn(fetch_metadata_loop(voters.clone(), tx)));
                rx
            }
        };

        let manager_config = ManagerConfig {
            log_dirs: config.log_dirs.clone(),
            default_config: config.default_log_config()?,
            flush_check_interval: config.flush_check_interval,
            retention_check_interval: config.retention_check_interval,
            checkpoint_interval: config.checkpoint_interval,
            cleaner_enabled: config.cleaner_enabled,
            cleaner_backoff: config.cleaner_backoff,
            recovery_threads: config.recovery_threads,
            producer_id_expiration_ms: config.producer_id_expiration_ms,
            producer_id_expiration_check_interval: config.producer_id_expiration_check_interval,
            ..ManagerConfig::default()
        };
        let logs = tokio::task::spawn_blocking(move || {
            LogManager::open(manager_config, Default::default())
        })
        .await
        .map_err(|e| StartError::Registration(format!("log loading panicked: {e}")))??;
        logs.start_background()
            .map_err(|e| StartError::Registration(format!("cannot start log threads: {e}")))?;
        let logs = Arc::new(logs);
        let replicas = Arc::new(ReplicaManager::new(
            config.node_id,
            logs,
            config.topic_defaults.clone(),
        ));

        // Images after they are applied to the hosted partitions.
        let (applied_tx, applied_rx) = watch::channel(Arc::new(MetadataImage::default()));
        let (unfenced_tx, unfenced_rx) = watch::channel(false);
        node.background.push(tokio::spawn(apply_images(
            replicas.clone(),
            raw_images,
            applied_tx,
            unfenced_rx,
        )));

        // Bind before registering so the advertised ports are known (port 0 is allowed).
        let mut bound = Vec::new();
        let mut advertised = config.advertised_listeners.clone();
        for l in config.client_listeners() {
            let addr = l.socket_addr()?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
                    name: l.name.clone(),
                    addr,
                    source,
                })?;
            let local = listener.local_addr().map_err(|source| StartError::Bind {
                name: l.name.clone(),
                addr,
                source,
            })?;
            for a in advertised
                .iter_mut()
                .filter(|a| a.name == l.name && a.port == 0)
            {
                a.port = local.port();
            }
            node.client_addrs.push((l.name.clone(), local));
            bound.push((l.name.clone(), listener));
        }

        let client = Arc::new(ControllerClient::new(
            voters,
            controller.clone().map(|c| (config.node_id as u64, c)),
        ));
        let endpoints: Vec<EndpointSpec> = advertised
            .iter()
            .map(|l| EndpointSpec {
                name: l.name.clone(),
                host: if l.host.is_empty() {
                    "localhost".into()
                } else {
                    l.host.clone()
                },
                port: l.port,
                security_protocol: fjord_raft::records::security_protocol::PLAINTEXT,
            })
            .collect();
        let registration = RegisterBroker {
            broker_id: config.node_id,
            incarnation_id: Uuid::new_v4(),
            endpoints,
            rack: config.rack.clone(),
        };
        let epoch = register(&client, &registration).await?;
        node.broker_epoch = epoch;
        tracing::info!(broker_epoch = epoch, "registered with the controller");
        node.background.push(tokio::spawn(heartbeat_loop(
            client.clone(),
            registration,
            epoch,
            applied_rx.clone(),
            unfenced_tx,
            config.heartbeat_interval,
        )));
        let mut unfenced = applied_rx.clone();
        let deadline = tokio::time::Instant::now() + UNFENCE_TIMEOUT;
        loop {
            let img = unfenced.borrow_and_update().clone();
            // Our own registration (this epoch), unfenced. The image replayed at start-up still
            // holds the previous incarnation's registration, unfenced, until the controller
            // fences it; serving on that would hand clients partitions about to change leader.
            if img
                .broker(config.node_id)
                .is_some_and(|b| b.epoch == epoch && !b.fenced)
            {
                break;
            }
            if tokio::time::timeout_at(deadline, unfenced.changed())
                .await
                .is_err()
            {
                return Err(StartError::Registration(
                    "the controller did not unfence this broker in time".into(),
                ));
            }
        }
        tracing::info!("broker unfenced");

        let broker = Arc::new(Broker::new(
            config, cluster_id, replicas, client, applied_rx,
        ));
        for (name, listener) in bound {
            tracing::info!(listener = %name, addr = ?listener.local_addr().ok(), "serving clients");
            node.servers
                .push(tokio::spawn(server::serve(broker.clone(), listener, name)));
        }
        node.background.extend(crate::replication::start(&broker));
        if let Some(h) = &http {
            h.set_broker(broker.clone());
        }
        node.broker = Some(broker);
        Ok(node)
    }

    pub fn broker(&self) -> Option<&Arc<Broker>> {
        self.broker.as_ref()
    }

    /// Stops serving, flushes and closes every log (writing the clean-shutdown marker), and
    /// stops the controller.
    pub async fn shutdown(self) -> Result<(), fjord_storage::StorageError> {
        for s in &self.servers {
            s.abort();
        }
        for s in self.servers {
            let _ = s.await;
        }
        let mut result = Ok(());
        if let Some(broker) = &self.broker {
            broker.begin_shutdown();
            // Controlled shutdown: let the controller move leaderships and fence us now rather
            // than after the session times out.
            let _ = broker
                .controller
                .call(
                    ControllerRequest::Heartbeat(Heartbeat {
                        broker_id: broker.node_id,
                        broker_epoch: self.broker_epoch,
                        current_metadata_offset: broker.image().offset,
                        want_fence: true,
                        want_shutdown: true,
                    }),
                    Duration::from_secs(2),
                )
                .await;
        }
        for t in &self.background {
            t.abort();
        }
        for t in self.background {
            let _ = t.await;
        }
        if let Some(broker) = &self.broker {
            let logs = broker.replicas.log_manager().clone();
            result = tokio::task::spawn_blocking(move || logs.shutdown())
                .await
                .unwrap_or_else(|_| {
                    Err(fjord_storage::StorageError::LogOffline(
                        "log shutdown panicked".into(),
                    ))
                });
        }
        if let Some(c) = &self.controller {
            c.shutdown().await;
        }
        result
    }
}

async fn register(client: &ControllerClient, r: &RegisterBroker) -> Result<i64, StartError> {
    let deadline = tokio::time::Instant::now() + UNFENCE_TIMEOUT;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            return Err(StartError::Registration(
                "no controller accepted the registration in time".into(),
            ));
        }
        match client
            .call(ControllerRequest::RegisterBroker(r.clone()), remaining)
            .await
        {
            Ok(ControllerResponse::RegisterBroker(Ok(reg))) => return Ok(reg.broker_epoch),
            Ok(ControllerResponse::RegisterBroker(Err(e))) if e.code == 101 => {
                // The previous incarnation's session has not expired yet.
                tracing::info!(error = %e, "waiting for the previous registration to expire");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(other) => return Err(StartError::Registration(format!("{other:?}"))),
            Err(e) => {
                tracing::debug!(error = %e, "registration attempt failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Applies each new committed image to the hosted partitions, then publishes it to handlers.
async fn apply_images(
    replicas: Arc<ReplicaManager>,
    mut raw: watch::Receiver<Arc<MetadataImage>>,
    applied: watch::Sender<Arc<MetadataImage>>,
    mut unfenced: watch::Receiver<bool>,
) {
    let mut strays_removed = false;
    loop {
        let image = raw.borrow_and_update().clone();
        let remove_strays = !strays_removed && *unfenced.borrow_and_update();
        let r = replicas.clone();
        let img = image.clone();
        if tokio::task::spawn_blocking(move || r.apply_image(&img, remove_strays))
            .await
            .is_err()
        {
            tracing::error!("applying a metadata image panicked");
        }
        strays_removed |= remove_strays;
        applied.send_replace(image);
        tokio::select! {
            changed = raw.changed() => if changed.is_err() { return },
            changed = unfenced.changed(), if !strays_removed => if changed.is_err() { return },
        }
    }
}

async fn heartbeat_loop(
    client: Arc<ControllerClient>,
    registration: RegisterBroker,
    mut epoch: i64,
    applied: watch::Receiver<Arc<MetadataImage>>,
    unfenced: watch::Sender<bool>,
    interval: Duration,
) {
    let id = registration.broker_id;
    loop {
        let offset = applied.borrow().offset;
        let r = client
            .call(
                ControllerRequest::Heartbeat(Heartbeat {
                    broker_id: id,
                    broker_epoch: epoch,
                    current_metadata_offset: offset,
                    want_fence: false,
                    want_shutdown: false,
                }),
                interval.max(Duration::from_secs(1)),
            )
            .await;
        let fenced = match r {
            Ok(ControllerResponse::Heartbeat(Ok(reply))) => reply.is_fenced,
            Ok(ControllerResponse::Heartbeat(Err(e))) if matches!(e.code, 77 | 102) => {
                // Stale epoch or unknown broker: the controller lost our session; register again.
                tracing::warn!(error = %e, "controller does not know this registration; registering again");
                match register(&client, &registration).await {
                    Ok(new_epoch) => epoch = new_epoch,
                    Err(e) => tracing::error!(error = %e, "re-registration failed"),
                }
                true
            }
            Ok(other) => {
                tracing::warn!(answer = ?other, "unexpected heartbeat answer");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                true
            }
        };
        if !fenced {
            unfenced.send_if_modified(|u| !std::mem::replace(u, true));
        }
        tokio::time::sleep(if fenced { FENCED_HEARTBEAT } else { interval }).await;
    }
}

/// The cluster id lives in `<metadata.log.dir>/meta.properties` (Kafka's file and key). It is
/// created on first start from `cluster.id` or at random, and must match `cluster.id` later.
fn load_cluster_id(config: &BrokerConfig, multi_node: bool) -> Result<String, StartError> {
    let dir = &config.metadata_log_dir;
    let path = dir.join("meta.properties");
    let err = |e: std::io::Error| StartError::ClusterId(format!("{}: {e}", path.display()));
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text
                .lines()
                .find_map(|l| l.strip_prefix("cluster.id="))
                .map(|s| s.trim().to_string())
                .ok_or_else(|| {
                    StartError::ClusterId(format!("{} has no cluster.id", path.display()))
                })?;
            if let Some(want) = &config.cluster_id
                && want != &id
            {
                return Err(StartError::ClusterId(format!(
                    "cluster.id {want} does not match {id} stored in {}",
                    path.display()
                )));
            }
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = match &config.cluster_id {
                Some(id) => id.clone(),
                None => {
                    if multi_node {
                        // Every node would pick its own random id, and brokers would report
                        // different cluster ids to clients. Kafka refuses to start unformatted
                        // nodes; Fjord keeps starting but says how to avoid it.
                        tracing::warn!(
                            "no cluster.id configured in a multi-node cluster: this node picks a \
                             random one; set the same cluster.id on every node"
                        );
                    }
                    crate::util::uuid_to_base64(&Uuid::new_v4())
                }
            };
            std::fs::create_dir_all(dir).map_err(err)?;
            write_properties(&path, &id, config.node_id).map_err(err)?;
            Ok(id)
        }
        Err(e) => Err(err(e)),
    }
}

fn write_properties(path: &Path, cluster_id: &str, node_id: i32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n"),
    )?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}
