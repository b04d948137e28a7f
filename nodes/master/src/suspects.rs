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
//! Bounded in number and age: the oldest suspects are forgotten first, and
//! none is kept longer than ten minutes. A forgotten suspect is
//! produced in the normal way again; if it sinks its batch once more, it
//! becomes a suspect once more.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Suspects remembered at most.
const MAX_SUSPECTS: usize = 100_000;

/// How long a suspect is remembered: its resend comes within seconds,
/// unless it went to another master (which then learns on its own).
const REMEMBER_FOR: Duration = Duration::from_secs(600);

/// (client id, incarnation, sequence) of events to produce alone next time.
#[derive(Debug, Default)]
pub struct Suspects {
    /// How many there are, so the common case (none) takes no lock.
    len: AtomicUsize,
    inner: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    /// Per client id (looked up by `&str`): incarnation and sequence.
    by_client: HashMap<String, HashSet<(u64, u64)>>,
    /// Insertion order and time, to forget the oldest. Entries cleared
    /// since are skipped when they come up.
    order: VecDeque<(Instant, String, u64, u64)>,
    /// Suspects in `by_client`.
    len: usize,
}

impl Remembered {
    fn remove(&mut self, client: &str, incarnation: u64, sequence: u64) {
        if let Some(set) = self.by_client.get_mut(client) {
            if set.remove(&(incarnation, sequence)) {
                self.len -= 1;
            }
            if set.is_empty() {
                self.by_client.remove(client);
            }
        }
    }

    /// Forgets suspects older than [`REMEMBER_FOR`], and the oldest beyond
    /// [`MAX_SUSPECTS`].
    fn expire(&mut self, now: Instant) {
        while let Some((at, ..)) = self.order.front() {
            if now.duration_since(*at) < REMEMBER_FOR && self.order.len() <= MAX_SUSPECTS {
                break;
            }
            if let Some((_, client, incarnation, sequence)) = self.order.pop_front() {
                self.remove(&client, incarnation, sequence);
            }
        }
        if self.len == 0 {
            self.order.clear();
        }
    }
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
        let now = Instant::now();
        let new = inner
            .by_client
            .entry(client.to_string())
            .or_default()
            .insert((incarnation, sequence));
        if new {
            inner.len += 1;
            inner
                .order
                .push_back((now, client.to_string(), incarnation, sequence));
        }
        inner.expire(now);
        self.len.store(inner.len, Ordering::Relaxed);
    }

    /// Whether any of `events` (client id, incarnation, sequence) is a suspect.
    pub fn any<'a>(&self, mut events: impl Iterator<Item = (&'a str, u64, u64)>) -> bool {
        if self.len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut inner = self.lock();
        inner.expire(Instant::now());
        self.len.store(inner.len, Ordering::Relaxed);
        events.any(|(client, incarnation, sequence)| {
            inner
                .by_client
                .get(client)
                .is_some_and(|set| set.contains(&(incarnation, sequence)))
        })
    }

    /// Forgets an event whose fate is known (published or rejected alone).
    pub fn clear(&self, client: &str, incarnation: u64, sequence: u64) {
        if self.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut inner = self.lock();
        inner.remove(client, incarnation, sequence);
        if inner.len == 0 {
            inner.order.clear();
        }
        self.len.store(inner.len, Ordering::Relaxed);
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
    fn a_cleared_suspect_costs_nothing_once_all_are_cleared() {
        let suspects = Suspects::default();
        suspects.insert("a", 1, 1);
        suspects.insert("a", 1, 2);
        suspects.clear("a", 1, 1);
        assert!(suspects.any([("a", 1, 2)].into_iter()));
        suspects.clear("a", 1, 2);
        assert_eq!(
            suspects.len.load(Ordering::Relaxed),
            0,
            "back to the lock-free path"
        );
        assert!(suspects.lock().order.is_empty());
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
