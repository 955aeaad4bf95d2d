//! Replica placement for new partitions: spread replicas and leaders evenly over the unfenced
//! brokers, alternating racks, in the manner of Kafka's classic rack-aware assignment.

use std::collections::BTreeMap;

use crate::error::ControllerError;
use crate::image::MetadataImage;

/// Brokers ordered so that consecutive entries are on different racks where possible:
/// the first broker of each rack, then the second of each, and so on.
fn rack_alternated(image: &MetadataImage) -> Vec<i32> {
    let mut by_rack: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for b in image.unfenced_brokers() {
        by_rack
            .entry(b.rack.as_deref().unwrap_or(""))
            .or_default()
            .push(b.id);
    }
    let racks: Vec<Vec<i32>> = by_rack.into_values().collect();
    let longest = racks.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::new();
    for i in 0..longest {
        for rack in &racks {
            if let Some(id) = rack.get(i) {
                out.push(*id);
            }
        }
    }
    out
}

/// Replica lists for partitions `first_partition..first_partition + count`.
///
/// `start` and `shift` come from the caller's randomness so that successive topics do not all
/// lead on the same broker; the result is a pure function of them and the image.
pub fn place(
    image: &MetadataImage,
    first_partition: i32,
    count: i32,
    replication_factor: i16,
    start: usize,
    shift: usize,
) -> Result<Vec<Vec<i32>>, ControllerError> {
    let brokers = rack_alternated(image);
    let n = brokers.len();
    if replication_factor <= 0 {
        return Err(ControllerError::InvalidReplicationFactor(
            "replication factor must be larger than 0".into(),
        ));
    }
    let rf = replication_factor as usize;
    if rf > n {
        return Err(ControllerError::InvalidReplicationFactor(format!(
            "unable to replicate the partition {rf} time(s): the target replication factor of \
             {rf} cannot be reached because only {n} broker(s) are registered and unfenced"
        )));
    }
    let start = start % n;
    let mut next_shift = shift % n;
    let mut out = Vec::with_capacity(count.max(0) as usize);
    for p in first_partition..first_partition.saturating_add(count) {
        let p = p as usize;
        if p > 0 && p.is_multiple_of(n) {
            next_shift += 1;
        }
        let first = (p + start) % n;
        let mut replicas = Vec::with_capacity(rf);
        replicas.push(brokers[first]);
        for j in 0..rf - 1 {
            // Shifts 1..n-1 are distinct for j < n-1, so replicas never repeat a broker.
            let s = 1 + (next_shift + j) % (n - 1);
            replicas.push(brokers[(first + s) % n]);
        }
        out.push(replicas);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{MetadataRecord, RegisterBrokerRecord};
    use std::collections::{HashMap, HashSet};

    fn image(brokers: &[(i32, &str)]) -> MetadataImage {
        let mut img = MetadataImage::default();
        for (id, rack) in brokers {
            img.apply(&MetadataRecord::RegisterBroker(RegisterBrokerRecord {
                broker_id: *id,
                incarnation_id: uuid::Uuid::from_u128(*id as u128),
                broker_epoch: 1,
                endpoints: vec![],
                rack: Some(rack.to_string()),
                fenced: false,
            }))
            .unwrap();
        }
        img
    }

    #[test]
    fn replicas_are_distinct_leaders_balanced_and_racks_spread() {
        let img = image(&[(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")]);
        let rack: HashMap<i32, &str> = [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")]
            .into_iter()
            .collect();
        for start in 0..6 {
            let placed = place(&img, 0, 12, 3, start, start * 7).unwrap();
            let mut leaders: HashMap<i32, usize> = HashMap::new();
            for r in &placed {
                assert_eq!(r.iter().collect::<HashSet<_>>().len(), 3, "{r:?}");
                let racks: HashSet<_> = r.iter().map(|b| rack[b]).collect();
                assert!(racks.len() >= 2, "replicas {r:?} all on one rack");
                *leaders.entry(r[0]).or_default() += 1;
            }
            assert!(leaders.values().all(|&c| c == 2), "{leaders:?}");
        }
    }

    #[test]
    fn too_few_brokers_is_an_invalid_replication_factor() {
        let img = image(&[(1, "a")]);
        assert_eq!(place(&img, 0, 1, 2, 0, 0).unwrap_err().code(), 38);
        assert_eq!(place(&img, 0, 3, 1, 0, 0).unwrap(), vec![vec![1]; 3]);
    }
}
