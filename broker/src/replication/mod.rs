//! Replication (issue #7): followers copy their leaders' logs ([`fetcher`]), and leaders move
//! the ISR through the controller ([`isr`]). The leader's side of a follower fetch (reading up
//! to the log end, divergence checks, follower progress) lives in the Fetch handler.

pub mod fetcher;
pub mod isr;

use std::sync::Arc;

use tokio::task::JoinHandle;

pub use fetcher::ReplicationConfig;

use crate::broker::Broker;

/// Starts the replica fetchers and the ISR shrink check for `broker`.
pub fn start(broker: &Arc<Broker>) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(fetcher::FetcherManager::run(
            broker.clone(),
            broker.image_updates(),
        )),
        tokio::spawn(isr::shrink_loop(broker.clone())),
    ]
}
