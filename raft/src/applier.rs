//! The quorum's state machine for metadata: applies committed record batches to the image,
//! publishes each new image, and keeps the most recent batches for brokers that fetch them.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::image::MetadataImage;
use crate::quorum::Applier;
use crate::records::decode_batch;

/// Recently applied batches, so brokers can fetch the log tail instead of a whole snapshot.
#[derive(Default)]
pub struct RecentBatches {
    batches: VecDeque<(u64, Bytes)>,
    capacity: usize,
}

impl RecentBatches {
    pub fn new(capacity: usize) -> Self {
        RecentBatches {
            batches: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
        }
    }

    fn push(&mut self, index: u64, payload: Bytes) {
        if self.batches.len() == self.capacity {
            self.batches.pop_front();
        }
        self.batches.push_back((index, payload));
    }

    /// Batches after `offset`, if the tail still reaches back that far; at most `max` of them.
    /// `offset` may fall between indexes (Raft's own entries are not kept).
    pub fn since(&self, offset: u64, max: usize) -> Option<Vec<(u64, Bytes)>> {
        let first = self.batches.front()?.0;
        if offset + 1 < first {
            return None;
        }
        Some(
            self.batches
                .iter()
                .filter(|(i, _)| *i > offset)
                .take(max)
                .cloned()
                .collect(),
        )
    }
}

pub struct MetadataApplier {
    image: MetadataImage,
    publish: watch::Sender<Arc<MetadataImage>>,
    recent: Arc<Mutex<RecentBatches>>,
}

impl MetadataApplier {
    pub fn new(
        publish: watch::Sender<Arc<MetadataImage>>,
        recent: Arc<Mutex<RecentBatches>>,
    ) -> Self {
        MetadataApplier {
            image: MetadataImage::default(),
            publish,
            recent,
        }
    }
}

impl Applier for MetadataApplier {
    fn apply(&mut self, index: u64, payload: &[u8]) {
        match decode_batch(payload) {
            Ok(records) => self.image.apply_batch(index, &records),
            Err(e) => {
                // Every replica decodes the same bytes the same way, so skipping keeps them equal.
                tracing::error!(index, error = %e, "undecodable metadata batch skipped");
                self.image.offset = self.image.offset.max(index);
            }
        }
        self.recent
            .lock()
            .push(index, Bytes::copy_from_slice(payload));
        self.publish.send_replace(Arc::new(self.image.clone()));
    }

    fn snapshot(&self) -> Vec<u8> {
        self.image.encode_snapshot()
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), String> {
        let mut image = MetadataImage::decode_snapshot(data).map_err(|e| e.to_string())?;
        image.offset = image.offset.max(index);
        self.image = image;
        // The tail no longer connects to the new state.
        let cap = self.recent.lock().capacity;
        *self.recent.lock() = RecentBatches::new(cap);
        self.publish.send_replace(Arc::new(self.image.clone()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_batches_know_when_they_no_longer_reach_back() {
        let mut r = RecentBatches::new(3);
        for i in [2u64, 3, 5, 6] {
            r.push(i, Bytes::from(vec![i as u8]));
        }
        // Holds 3, 5, 6 now.
        assert!(r.since(1, 10).is_none());
        let got: Vec<u64> = r.since(2, 10).unwrap().iter().map(|(i, _)| *i).collect();
        assert_eq!(got, vec![3, 5, 6]);
        let got: Vec<u64> = r.since(4, 1).unwrap().iter().map(|(i, _)| *i).collect();
        assert_eq!(got, vec![5]);
        assert!(r.since(6, 10).unwrap().is_empty());
    }
}
