//! Replication (issue #7): followers copy their leaders' logs ([`fetcher`]), and leaders move
//! the ISR through the controller ([`isr`]). The leader's side of a follower fetch (reading up
//! to the log end, divergence checks, follower progress) lives in the Fetch handler.

pub mod fetcher;
pub mod isr;
#[cfg(test)]
mod tests;
pub mod throttle;

use std::sync::Arc;

use tokio::task::JoinHandle;

pub use fetcher::ReplicationConfig;

use crate::broker::Broker;

/// The leader's side of KIP-279: a follower whose last record is in `last_fetched_epoch` and
/// whose log ends at `fetch_offset` has a divergent tail when this log ended that epoch
/// earlier, or does not know it (`(epoch, end offset)` to send back), else `None`.
pub fn divergence(
    log: &fjord_storage::Log,
    last_fetched_epoch: i32,
    fetch_offset: i64,
) -> Option<(i32, i64)> {
    if last_fetched_epoch < 0 {
        return None;
    }
    let (epoch, end) = log.end_offset_for_epoch(last_fetched_epoch);
    if epoch >= last_fetched_epoch && end >= fetch_offset {
        return None;
    }
    // No epoch at or below the follower's here: nothing of its log can be trusted past ours.
    let end = if epoch < 0 { log.log_end_offset() } else { end };
    Some((epoch, end))
}

/// The follower's side: where to truncate when the leader says its `epoch` ends at `end`.
/// The follower keeps what both logs share: up to the end of the largest epoch it has at or
/// below the leader's, and never past the leader's end.
pub fn truncation_offset(log: &fjord_storage::Log, epoch: i32, end: i64) -> i64 {
    let (local_epoch, local_end) = log.end_offset_for_epoch(epoch);
    let target = if local_epoch < 0 {
        end
    } else {
        end.min(local_end)
    };
    target.max(0).min(log.log_end_offset())
}

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
