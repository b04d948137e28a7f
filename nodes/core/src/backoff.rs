//! Exponential backoff with jitter for reconnect loops.
//!
//! Each delay is drawn uniformly from `[cap/2, cap]` where `cap` doubles per
//! failed attempt up to `max`: half the delay keeps a node from hammering a
//! peer, the random half keeps a hundred clients that lost the same sidecar
//! from coming back in lock-step.

use std::time::Duration;

use rand::Rng;

/// Delay generator; call [`Backoff::next_delay`] after each failure and
/// [`Backoff::reset`] after a success.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `base`, never waits longer than `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The delay before the next attempt; grows with each call.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.current_cap();
        self.attempt = self.attempt.saturating_add(1);
        let half = cap / 2;
        let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::rng().random_range(0..=jitter_nanos))
    }

    /// Forgets earlier failures.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failed attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    fn current_cap(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        self.base.saturating_mul(factor).min(self.max)
    }
}

impl Default for Backoff {
    /// 100 ms doubling up to 5 s: fast enough for failover, slow enough for a dead peer.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_stay_in_the_jitter_band() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let caps = [100u64, 200, 400, 800, 1600, 2000, 2000, 2000];
        for cap in caps {
            let delay = backoff.next_delay();
            let cap = Duration::from_millis(cap);
            assert!(
                delay >= cap / 2 && delay <= cap,
                "{delay:?} outside [{:?}, {cap:?}]",
                cap / 2
            );
        }
        assert_eq!(backoff.attempts(), 8);
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn delays_are_spread_out() {
        let delays: std::collections::HashSet<Duration> = (0..20)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay())
            .collect();
        assert!(
            delays.len() > 10,
            "jitter produced only {} distinct delays",
            delays.len()
        );
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..200 {
            assert!(backoff.next_delay() <= Duration::from_secs(30));
        }
    }
}
