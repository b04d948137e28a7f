//! Log lines a peer or a source can repeat at will, kept to one per
//! interval, counting what was left out.

use std::time::{Duration, Instant};

/// The interval a [`LogEvery::default`] keeps: ten seconds.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(10);

/// One log line per `every` at most.
#[derive(Debug)]
pub struct LogEvery {
    every: Duration,
    /// When the line was last logged.
    last: Option<Instant>,
    /// Occurrences since then that were not logged.
    unlogged: u64,
}

impl Default for LogEvery {
    fn default() -> Self {
        Self::new(DEFAULT_EVERY)
    }
}

impl LogEvery {
    /// At most one line per `every`.
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            unlogged: 0,
        }
    }

    /// One more occurrence: `Some(occurrences not logged before it)` when
    /// it is to be logged.
    pub fn tick(&mut self) -> Option<u64> {
        self.tick_at(Instant::now())
    }

    fn tick_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_left_out() {
        let mut log = LogEvery::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(log.tick_at(start), Some(0));
        assert_eq!(log.tick_at(start + Duration::from_secs(1)), None);
        assert_eq!(log.tick_at(start + Duration::from_secs(2)), None);
        assert_eq!(log.tick_at(start + Duration::from_secs(11)), Some(2));
        assert_eq!(log.tick_at(start + Duration::from_secs(12)), None);
    }
}
