//! Resends this master has already published.
//!
//! After a failover a client sends again every event it has not seen
//! acknowledged, and some of those reached Kafka through this very master
//! (the ack was lost with the sidecar). Publishing them again would only add
//! duplicates, so the master remembers, per client, which sequence numbers
//! Kafka acknowledged and acknowledges such resends without publishing.
//!
//! Only exact matches are skipped: a sequence number that was never
//! acknowledged by Kafka through this master is always published. The memory
//! is bounded: per client a few ranges of sequence numbers (contiguous runs
//! merge), the oldest forgotten first.

use std::collections::HashMap;
use std::sync::Mutex;

/// Ranges kept per client; resends are recent, so a handful is plenty.
const MAX_RANGES: usize = 16;

/// Delivered sequence numbers per client id.
///
/// A mutex rather than an owner task: it is taken twice per batch (not per
/// event) by the stream that handles the batch, once to check what was
/// published and once to record what Kafka settled, for a few hundred
/// nanoseconds each, and never across an `.await`.
#[derive(Debug, Default)]
pub struct Delivered {
    clients: Mutex<HashMap<String, Ranges>>,
}

impl Delivered {
    /// Marks which of `events` (client id, sequence) were already published.
    pub fn published<'a>(&self, events: impl Iterator<Item = (&'a str, u64)>) -> Vec<bool> {
        let clients = match self.clients.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        events
            .map(|(client, seq)| clients.get(client).is_some_and(|r| r.contains(seq)))
            .collect()
    }

    /// Records sequence numbers Kafka acknowledged.
    pub fn record<'a>(&self, events: impl Iterator<Item = (&'a str, u64)>) {
        let mut clients = match self.clients.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (client, seq) in events {
            match clients.get_mut(client) {
                Some(ranges) => ranges.insert(seq),
                None => {
                    let mut ranges = Ranges::default();
                    ranges.insert(seq);
                    clients.insert(client.to_string(), ranges);
                }
            }
        }
    }
}

/// Disjoint, sorted, inclusive ranges.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    fn contains(&self, seq: u64) -> bool {
        let i = self.0.partition_point(|&(_, end)| end < seq);
        self.0.get(i).is_some_and(|&(start, _)| start <= seq)
    }

    fn insert(&mut self, seq: u64) {
        // Fast path: the next number of the newest run.
        if let Some(last) = self.0.last_mut() {
            if last.1.checked_add(1) == Some(seq) {
                last.1 = seq;
                return;
            }
            if last.0 <= seq && seq <= last.1 {
                return;
            }
        }
        let i = self
            .0
            .partition_point(|&(_, end)| end.saturating_add(1) < seq);
        match self.0.get_mut(i) {
            Some(range) if range.0 <= seq.saturating_add(1) => {
                range.0 = range.0.min(seq);
                range.1 = range.1.max(seq);
                // Joining two runs?
                if let Some(&(next_start, next_end)) = self.0.get(i + 1) {
                    if self.0[i].1.saturating_add(1) >= next_start {
                        self.0[i].1 = self.0[i].1.max(next_end);
                        self.0.remove(i + 1);
                    }
                }
            }
            _ => self.0.insert(i, (seq, seq)),
        }
        if self.0.len() > MAX_RANGES {
            self.0.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_numbers_merge_into_one_range() {
        let mut r = Ranges::default();
        for seq in 1..=1000 {
            r.insert(seq);
        }
        assert_eq!(r.0, vec![(1, 1000)]);
        assert!(r.contains(1) && r.contains(500) && r.contains(1000));
        assert!(!r.contains(0) && !r.contains(1001));
    }

    #[test]
    fn gaps_stay_unknown_and_fill_in() {
        let mut r = Ranges::default();
        for seq in [1, 2, 3, 7, 8, 5] {
            r.insert(seq);
        }
        assert_eq!(r.0, vec![(1, 3), (5, 5), (7, 8)]);
        assert!(!r.contains(4) && !r.contains(6));
        r.insert(4);
        r.insert(6);
        assert_eq!(r.0, vec![(1, 8)]);
    }

    #[test]
    fn memory_is_bounded_by_forgetting_the_oldest_ranges() {
        let mut r = Ranges::default();
        for seq in (0..100u64).map(|i| i * 10) {
            r.insert(seq);
        }
        assert_eq!(r.0.len(), MAX_RANGES);
        assert!(!r.contains(0), "oldest range forgotten");
        assert!(r.contains(990));
    }

    #[test]
    fn delivered_is_per_client() {
        let d = Delivered::default();
        d.record([("a", 1), ("a", 2), ("b", 7)].into_iter());
        let seen = d.published([("a", 2), ("a", 3), ("b", 2), ("b", 7), ("c", 1)].into_iter());
        assert_eq!(seen, vec![true, false, false, true, false]);
    }
}
