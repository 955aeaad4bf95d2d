//! The state request handlers share: config, the applied metadata image, hosted partitions,
//! the controller client.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fjord_protocol::SupportedApis;
use fjord_raft::MetadataImage;
use fjord_raft::client::ControllerClient;
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::replicas::ReplicaManager;

/// Longest an admin request waits for its change to reach this broker's image, whatever
/// timeout the client asked for.
pub const MAX_ADMIN_WAIT: Duration = Duration::from_secs(30);

pub struct Broker {
    pub config: BrokerConfig,
    pub node_id: i32,
    pub cluster_id: String,
    pub apis: SupportedApis,
    pub replicas: Arc<ReplicaManager>,
    pub controller: Arc<ControllerClient>,
    /// The group coordinator (consumer groups and committed offsets).
    pub groups: Arc<crate::group::GroupCoordinator>,
    /// Producer ids for InitProducerId.
    pub producer_ids: crate::producer_ids::ProducerIdManager,
    /// Incremental fetch sessions (KIP-227).
    pub fetch_sessions: crate::fetch_session::FetchSessionCache,
    /// Images after they were applied to [`ReplicaManager`].
    images: watch::Receiver<Arc<MetadataImage>>,
    shutting_down: AtomicBool,
}

impl Broker {
    pub fn new(
        config: BrokerConfig,
        cluster_id: String,
        replicas: Arc<ReplicaManager>,
        controller: Arc<ControllerClient>,
        images: watch::Receiver<Arc<MetadataImage>>,
    ) -> Broker {
        let groups = crate::group::GroupCoordinator::new(
            config.group_coordinator.clone(),
            replicas.clone(),
            controller.clone(),
        );
        groups.start(images.clone());
        let fetch_session_slots = config.fetch_session_cache_slots;
        Broker {
            node_id: config.node_id,
            config,
            cluster_id,
            apis: crate::dispatch::supported_apis(),
            replicas,
            controller,
            groups,
            producer_ids: crate::producer_ids::ProducerIdManager::new(),
            fetch_sessions: crate::fetch_session::FetchSessionCache::new(fetch_session_slots),
            images,
            shutting_down: AtomicBool::new(false),
        }
    }

    /// A receiver of applied images, for tasks that follow them.
    pub fn image_updates(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.images.clone()
    }

    /// The latest applied metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.images.borrow().clone()
    }

    /// Waits (bounded by `timeout`) until an applied image satisfies `ready`; returns the last
    /// image seen either way and whether it satisfied `ready`.
    pub async fn wait_for_image(
        &self,
        timeout: Duration,
        ready: impl Fn(&MetadataImage) -> bool,
    ) -> (Arc<MetadataImage>, bool) {
        let mut rx = self.images.clone();
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_ADMIN_WAIT);
        loop {
            let image = rx.borrow_and_update().clone();
            if ready(&image) {
                return (image, true);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return (image, false),
            }
        }
    }

    /// The consumer lag of `group_id` per partition (committed offset against the high
    /// watermark). Errors are Kafka codes: NOT_COORDINATOR when another broker coordinates the
    /// group, COORDINATOR_LOAD_IN_PROGRESS, GROUP_ID_NOT_FOUND.
    pub fn group_lag(&self, group_id: &str) -> Result<crate::group::lag::GroupLag, i16> {
        crate::group::lag::group_lag(&self.groups, &self.replicas, &self.image(), group_id)
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.groups.shutdown();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// The controller id Metadata and DescribeCluster report. Clients cannot reach KRaft
    /// controllers, so, as Kafka does, a live broker stands in: this one while it is unfenced.
    pub fn reported_controller_id(&self, image: &MetadataImage) -> i32 {
        if image.broker(self.node_id).is_some_and(|b| !b.fenced) {
            return self.node_id;
        }
        image.unfenced_brokers().next().map_or(-1, |b| b.id)
    }
}
