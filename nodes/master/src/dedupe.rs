//! Resends this master has already published.
//!
//! After a failover a client sends again every event it has not seen
//! acknowledged, and some of those reached Kafka through this very master
//! (the ack was lost with the sidecar). Publishing them again would only add
//! duplicates, so the master remembers, per client and per numbering
//! incarnation of that client, which sequence numbers Kafka acknowledged and
//! acknowledges such resends without publishing.
//!
//! The key is the event's identity, (client id, incarnation, sequence), the
//! parts its `ce_id` is made of: a client that lost its state file numbers
//! from 1 again under a new incarnation, and those are new events, never
//! resends of the old ones with the same sequence numbers.
//!
//! Only exact matches are skipped: an event that was never acknowledged by
//! Kafka through this master is always published. The memory is bounded:
//! per client the few incarnations seen last, per incarnation a few ranges of
//! sequence numbers (contiguous runs merge), the oldest forgotten first.

use std::collections::HashMap;
use std::sync::Mutex;

/// Ranges kept per incarnation; resends are recent, so a handful is plenty.
const MAX_RANGES: usize = 16;

/// Incarnations kept per client. A client changes incarnation only when its
/// state file is lost, and resends come from the current one or the one
/// before.
const MAX_INCARNATIONS: usize = 4;

/// One event as the resend memory knows it: (client id, incarnation, sequence).
pub type EventKey<'a> = (&'a str, u64, u64);

/// Delivered sequence numbers per client id and incarnation.
///
/// A mutex rather than an owner task: it is taken twice per batch (not per
/// event) by the stream that handles the batch, once to check what was
/// published and once to record what Kafka settled, for a few hundred
/// nanoseconds each, and never across an `.await`.
#[derive(Debug, Default)]
pub struct Delivered {
    clients: Mutex<HashMap<String, Incarnations>>,
}

impl Delivered {
    /// Marks which of `events` were already published.
    pub fn published<'a>(&self, events: impl Iterator<Item = EventKey<'a>>) -> Vec<bool> {
        let clients = match self.clients.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        events
            .map(|(client, incarnation, seq)| {
                clients
                    .get(client)
                    .and_then(|i| i.get(incarnation))
                    .is_some_and(|r| r.contains(seq))
            })
            .collect()
    }

    /// Records events Kafka acknowledged.
    pub fn record<'a>(&self, events: impl Iterator<Item = EventKey<'a>>) {
        let mut clients = match self.clients.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (client, incarnation, seq) in events {
            if !clients.contains_key(client) {
                clients.insert(client.to_string(), Incarnations::default());
            }
            if let Some(incarnations) = clients.get_mut(client) {
                incarnations.get_or_insert(incarnation).insert(seq);
            }
        }
    }
}

/// The ranges of one client's incarnations, the most recently recorded last.
#[derive(Debug, Default)]
struct Incarnations(Vec<(u64, Ranges)>);

impl Incarnations {
    fn get(&self, incarnation: u64) -> Option<&Ranges> {
        self.0
            .iter()
            .rev()
            .find(|(i, _)| *i == incarnation)
            .map(|(_, r)| r)
    }

    fn get_or_insert(&mut self, incarnation: u64) -> &mut Ranges {
        match self.0.iter().rposition(|(i, _)| *i == incarnation) {
            Some(at) => {
                // Keep the incarnation in use last, so the oldest goes first.
                let last = self.0.len() - 1;
                if at != last {
                    let entry = self.0.remove(at);
                    self.0.push(entry);
                }
            }
            None => {
                if self.0.len() >= MAX_INCARNATIONS {
                    self.0.remove(0);
                }
                self.0.push((incarnation, Ranges::default()));
            }
        }
        let last = self.0.len() - 1;
        &mut self.0[last].1
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
        d.record([("a", 1, 1), ("a", 1, 2), ("b", 1, 7)].into_iter());
        let seen = d.published(
            [
                ("a", 1, 2),
                ("a", 1, 3),
                ("b", 1, 2),
                ("b", 1, 7),
                ("c", 1, 1),
            ]
            .into_iter(),
        );
        assert_eq!(seen, vec![true, false, false, true, false]);
    }

    #[test]
    fn a_new_incarnation_is_never_taken_for_a_resend() {
        // The client published 1..=200, lost its state and numbers from 1
        // again under a new incarnation: new events, all of them.
        let d = Delivered::default();
        d.record((1..=200).map(|seq| ("c1", 0xaa, seq)));
        let seen = d.published((1..=200).map(|seq| ("c1", 0xbb, seq)));
        assert!(seen.iter().all(|s| !s), "nothing of 0xbb was published");
        d.record((1..=100).map(|seq| ("c1", 0xbb, seq)));
        // Resends of either incarnation are still recognised.
        let seen =
            d.published([("c1", 0xaa, 200), ("c1", 0xbb, 100), ("c1", 0xbb, 101)].into_iter());
        assert_eq!(seen, vec![true, true, false]);
    }

    #[test]
    fn incarnations_are_bounded_and_the_one_recorded_last_stays() {
        let d = Delivered::default();
        d.record([("c1", 1, 1)].into_iter());
        for incarnation in 2..=(MAX_INCARNATIONS as u64 + 1) {
            d.record([("c1", incarnation, 1)].into_iter());
            // Incarnation 1 keeps being resent: it stays remembered.
            d.record([("c1", 1, incarnation)].into_iter());
        }
        d.record([("c1", 99, 1)].into_iter());
        let seen = d.published([("c1", 1, 1), ("c1", 2, 1), ("c1", 99, 1)].into_iter());
        assert_eq!(
            seen,
            vec![true, false, true],
            "the least recently recorded went"
        );
    }
}
