//! Events caught in a produce batch Kafka refused as a whole.
//!
//! Some refusals are about a whole record batch, not one record: a batch
//! over the topic's `max.message.bytes`, a corrupt request. librdkafka then
//! fails every event of that batch with the same permanent error, whichever
//! client sent it. Rejecting them all would let one client's event cost
//! other clients their data, so the master rejects none: it remembers them
//! here as suspects and fails their streams. When a suspect comes again (the
//! sidecar's resend), its batch is produced one event per request, where a
//! refusal is about that event alone.
//!
//! Bounded: the oldest suspects are forgotten first. A forgotten suspect is
//! produced in the normal way again; if it sinks its batch once more, it
//! becomes a suspect once more.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Suspects remembered at most.
const MAX_SUSPECTS: usize = 100_000;

/// Client id, incarnation and sequence of one event.
type Key = (String, u64, u64);

/// (client id, incarnation, sequence) of events to produce alone next time.
#[derive(Debug, Default)]
pub struct Suspects {
    /// How many there are, so the common case (none) takes no lock.
    len: AtomicUsize,
    inner: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    set: HashSet<Key>,
    /// Insertion order, to forget the oldest.
    order: VecDeque<Key>,
}

impl Suspects {
    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Remembers an event of a refused produce batch.
    pub fn insert(&self, client: &str, incarnation: u64, sequence: u64) {
        let mut inner = self.lock();
        let key = (client.to_string(), incarnation, sequence);
        if inner.set.insert(key.clone()) {
            inner.order.push_back(key);
        }
        while inner.order.len() > MAX_SUSPECTS {
            if let Some(oldest) = inner.order.pop_front() {
                inner.set.remove(&oldest);
            }
        }
        self.len.store(inner.set.len(), Ordering::Relaxed);
    }

    /// Whether any of `events` (client id, incarnation, sequence) is a suspect.
    pub fn any<'a>(&self, mut events: impl Iterator<Item = (&'a str, u64, u64)>) -> bool {
        if self.len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let inner = self.lock();
        events.any(|(client, incarnation, sequence)| {
            inner
                .set
                .contains(&(client.to_string(), incarnation, sequence))
        })
    }

    /// Forgets an event whose fate is known (published or rejected alone).
    pub fn clear(&self, client: &str, incarnation: u64, sequence: u64) {
        if self.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut inner = self.lock();
        if inner
            .set
            .remove(&(client.to_string(), incarnation, sequence))
        {
            inner
                .order
                .retain(|(c, i, s)| !(c == client && *i == incarnation && *s == sequence));
        }
        self.len.store(inner.set.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspects_are_per_client_and_cleared_once_settled() {
        let suspects = Suspects::default();
        assert!(!suspects.any([("a", 7, 1)].into_iter()));
        suspects.insert("a", 7, 1);
        assert!(suspects.any([("b", 7, 1), ("a", 7, 1)].into_iter()));
        assert!(!suspects.any([("b", 7, 1), ("a", 7, 2)].into_iter()));
        assert!(
            !suspects.any([("a", 8, 1)].into_iter()),
            "another incarnation"
        );
        suspects.clear("a", 7, 1);
        assert!(!suspects.any([("a", 7, 1)].into_iter()));
    }

    #[test]
    fn the_oldest_suspects_are_forgotten_first() {
        let suspects = Suspects::default();
        for seq in 0..=MAX_SUSPECTS as u64 {
            suspects.insert("a", 1, seq);
        }
        assert!(!suspects.any([("a", 1, 0)].into_iter()));
        assert!(suspects.any([("a", 1, 1)].into_iter()));
        assert!(suspects.any([("a", 1, MAX_SUSPECTS as u64)].into_iter()));
    }
}
