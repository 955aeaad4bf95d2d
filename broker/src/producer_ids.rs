//! Producer ids for InitProducerId, from blocks the controller allocates (Kafka's
//! `RPCProducerIdManager`): the controller commits each block to the metadata log, so ids are
//! unique across brokers and restarts. The next block is fetched in the background once 90% of
//! the current one is used, so a request seldom waits for the controller.

use std::sync::Arc;
use std::time::Duration;

use fjord_raft::controller::requests::{ControllerRequest, ControllerResponse};
use parking_lot::Mutex;

use crate::broker::Broker;

/// Bound on one block request to the controller.
const ALLOCATE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    /// No id can be handed out now (Kafka answers COORDINATOR_LOAD_IN_PROGRESS, which clients
    /// retry).
    #[error("no producer id block available: {0}")]
    Unavailable(String),
}

/// Ids `[next, end)` still to hand out from one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    first: i64,
    next: i64,
    end: i64,
}

impl Block {
    fn new(first: i64, len: i32) -> Option<Block> {
        let end = first.checked_add(i64::from(len))?;
        (first >= 0 && len > 0).then_some(Block {
            first,
            next: first,
            end,
        })
    }

    /// Past 90% of the block (Kafka's `PidPrefetchThreshold`).
    fn mostly_used(&self) -> bool {
        (self.next - self.first) * 10 >= (self.end - self.first) * 9
    }
}

#[derive(Debug, Default)]
struct Blocks {
    current: Option<Block>,
    next: Option<Block>,
    prefetching: bool,
    /// End of the highest block ever installed: a block below it would repeat ids.
    high_water: i64,
}

impl Blocks {
    /// Takes an id; the flag says whether a prefetch of the next block should start now.
    fn claim(&mut self) -> Option<(i64, bool)> {
        if self.current.is_none_or(|b| b.next >= b.end) {
            self.current = Some(self.next.take()?);
        }
        let block = self.current.as_mut()?;
        let id = block.next;
        block.next += 1;
        let prefetch = block.mostly_used() && self.next.is_none() && !self.prefetching;
        if prefetch {
            self.prefetching = true;
        }
        Some((id, prefetch))
    }

    fn has_ids(&self) -> bool {
        self.current.is_some_and(|b| b.next < b.end) || self.next.is_some()
    }

    fn install(&mut self, block: Block) -> Result<(), ProducerIdError> {
        if block.first < self.high_water {
            return Err(ProducerIdError::Unavailable(format!(
                "the controller handed out block {}..{} below ids already used (up to {})",
                block.first, block.end, self.high_water
            )));
        }
        self.high_water = block.end;
        if self.current.is_none_or(|b| b.next >= b.end) {
            self.current = Some(block);
        } else {
            self.next = Some(block);
        }
        Ok(())
    }
}

#[derive(Default)]
pub struct ProducerIdManager {
    blocks: Mutex<Blocks>,
    /// One block request at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl ProducerIdManager {
    pub fn new() -> Self {
        ProducerIdManager::default()
    }

    /// A producer id never handed out before.
    pub async fn generate(&self, broker: &Arc<Broker>) -> Result<i64, ProducerIdError> {
        // Bounded: each round either claims an id or installs a fresh block.
        for _ in 0..3 {
            let claimed = self.blocks.lock().claim();
            if let Some((id, prefetch)) = claimed {
                if prefetch {
                    let broker = broker.clone();
                    tokio::spawn(async move { broker.producer_ids.prefetch(&broker).await });
                }
                return Ok(id);
            }
            let _one = self.fetching.lock().await;
            if self.blocks.lock().has_ids() {
                continue; // another request installed a block while we waited
            }
            let block = allocate(broker).await?;
            self.blocks.lock().install(block)?;
        }
        Err(ProducerIdError::Unavailable(
            "blocks were used up as fast as they arrived".into(),
        ))
    }

    async fn prefetch(&self, broker: &Arc<Broker>) {
        let _one = self.fetching.lock().await;
        let needed = self.blocks.lock().next.is_none();
        let result = if needed {
            match allocate(broker).await {
                Ok(block) => self.blocks.lock().install(block),
                Err(e) => Err(e),
            }
        } else {
            Ok(())
        };
        if let Err(e) = result {
            // The next claim past the block's end fetches again, in the foreground.
            tracing::warn!(error = %e, "could not prefetch a producer id block");
        }
        self.blocks.lock().prefetching = false;
    }
}

/// Asks the controller for a block, as this broker in its current registration epoch.
async fn allocate(broker: &Broker) -> Result<Block, ProducerIdError> {
    let broker_epoch = broker
        .image()
        .broker(broker.node_id)
        .map(|b| b.epoch)
        .ok_or_else(|| {
            ProducerIdError::Unavailable("this broker is not registered in the metadata".into())
        })?;
    let req = ControllerRequest::AllocateProducerIds {
        broker_id: broker.node_id,
        broker_epoch,
    };
    match broker.controller.call(req, ALLOCATE_TIMEOUT).await {
        Ok(ControllerResponse::AllocateProducerIds(Ok(b))) => {
            tracing::info!(first = b.first, len = b.len, "got a producer id block");
            Block::new(b.first, b.len).ok_or_else(|| {
                ProducerIdError::Unavailable(format!(
                    "the controller returned an unusable block {}+{}",
                    b.first, b.len
                ))
            })
        }
        Ok(ControllerResponse::AllocateProducerIds(Err(e))) => Err(ProducerIdError::Unavailable(
            format!("controller refused ({}): {}", e.code, e.message),
        )),
        Ok(other) => Err(ProducerIdError::Unavailable(format!(
            "unexpected controller answer {other:?}"
        ))),
        Err(e) => Err(ProducerIdError::Unavailable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_blocks_in_order_with_a_prefetch_at_ninety_percent() {
        let mut b = Blocks::default();
        assert_eq!(b.claim(), None);
        b.install(Block::new(100, 10).unwrap()).unwrap();
        let mut prefetch_at = None;
        for i in 0..10 {
            let (id, prefetch) = b.claim().unwrap();
            assert_eq!(id, 100 + i);
            if prefetch {
                assert!(prefetch_at.is_none(), "one prefetch per block");
                prefetch_at = Some(id);
            }
        }
        assert_eq!(prefetch_at, Some(108), "after 9 of 10 ids");
        // The prefetch has not landed: no id until a block arrives.
        assert_eq!(b.claim(), None);
        b.prefetching = false;
        b.install(Block::new(110, 10).unwrap()).unwrap();
        assert_eq!(b.claim(), Some((110, false)));
    }

    #[test]
    fn a_prefetched_block_waits_until_the_current_one_is_used() {
        let mut b = Blocks::default();
        b.install(Block::new(0, 2).unwrap()).unwrap();
        assert_eq!(b.claim(), Some((0, false)));
        b.install(Block::new(2, 2).unwrap()).unwrap();
        assert_eq!(b.claim().map(|c| c.0), Some(1));
        assert_eq!(b.claim().map(|c| c.0), Some(2));
        assert_eq!(b.claim().map(|c| c.0), Some(3));
        assert!(!b.has_ids());
    }

    #[test]
    fn blocks_that_would_repeat_ids_are_refused() {
        let mut b = Blocks::default();
        b.install(Block::new(1000, 100).unwrap()).unwrap();
        assert!(b.install(Block::new(1050, 100).unwrap()).is_err());
        assert!(Block::new(-5, 10).is_none());
        assert!(Block::new(0, 0).is_none());
        assert!(Block::new(i64::MAX - 1, 10).is_none());
    }
}
