//! Heartbeats on the data-plane streams.
//!
//! The upstream side of a stream (a sidecar for its clients, a master for its
//! sidecars) sends a `Ping` every interval; the downstream answers with a
//! `Pong` at once. [`Heartbeat`] keeps the pings in flight, turns pongs into
//! round-trip samples and counts misses. The downstream side uses
//! [`Liveness`]: an upstream that has said nothing for several intervals is
//! presumed dead, even if TCP has not noticed yet.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use smesh_proto::mesh::{PeerStatus, Ping, Pong, RttStats};
use tokio::sync::oneshot;

use crate::time::now_unix_nanos;

/// How many round-trip samples a peer keeps for averages, p99 and sparklines.
pub const RTT_HISTORY: usize = 120;

/// The last [`RTT_HISTORY`] round trips of one peer.
#[derive(Clone, Debug, Default)]
pub struct RttWindow {
    samples: VecDeque<Duration>,
}

impl RttWindow {
    /// Adds a sample, forgetting the oldest beyond [`RTT_HISTORY`].
    pub fn record(&mut self, rtt: Duration) {
        if self.samples.len() == RTT_HISTORY {
            self.samples.pop_front();
        }
        self.samples.push_back(rtt);
    }

    /// The newest sample.
    pub fn last(&self) -> Option<Duration> {
        self.samples.back().copied()
    }

    /// Last, mean and 99th percentile over the window, plus the samples
    /// themselves, in microseconds.
    pub fn stats(&self) -> RttStats {
        let recent_us: Vec<u64> = self.samples.iter().map(|d| micros(*d)).collect();
        let mut sorted = recent_us.clone();
        sorted.sort_unstable();
        let avg_us = match sorted.len() {
            0 => 0,
            n => sorted.iter().sum::<u64>() / n as u64,
        };
        RttStats {
            last_us: recent_us.last().copied().unwrap_or(0),
            avg_us,
            p99_us: percentile(&sorted, 0.99),
            recent_us,
        }
    }
}

/// Nearest-rank percentile of sorted samples (0 when empty).
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The pinging side of one stream.
#[derive(Debug)]
pub struct Heartbeat {
    misses_allowed: u32,
    next_nonce: u64,
    /// Pings sent and not yet answered, oldest first.
    outstanding: VecDeque<(u64, Instant)>,
    /// Health-check probes waiting for their pong.
    probes: HashMap<u64, (Instant, oneshot::Sender<Duration>)>,
    /// Consecutive pings that went unanswered for a whole interval.
    missed: u32,
    rtt: RttWindow,
    last_pong: Option<Instant>,
}

impl Heartbeat {
    /// A peer counts as down after `misses_allowed` consecutive unanswered pings.
    pub fn new(misses_allowed: u32) -> Self {
        Self {
            misses_allowed: misses_allowed.max(1),
            next_nonce: 1,
            outstanding: VecDeque::new(),
            probes: HashMap::new(),
            missed: 0,
            rtt: RttWindow::default(),
            last_pong: None,
        }
    }

    /// The regular ping of this interval. Pings still unanswered from the
    /// previous interval count as missed.
    pub fn tick(&mut self, now: Instant, ready: bool) -> Ping {
        if !self.outstanding.is_empty() {
            self.missed = self.missed.saturating_add(1);
            // Keep only a few so that a silent peer costs bounded memory.
            while self.outstanding.len() > self.misses_allowed as usize + 1 {
                self.outstanding.pop_front();
            }
        }
        self.ping(now, ready, false)
    }

    /// A probe for a health check; `answer` receives the round trip.
    pub fn probe(&mut self, now: Instant, ready: bool, answer: oneshot::Sender<Duration>) -> Ping {
        let ping = self.ping(now, ready, true);
        self.probes.insert(ping.nonce, (now, answer));
        ping
    }

    fn ping(&mut self, now: Instant, ready: bool, probe: bool) -> Ping {
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        if !probe {
            self.outstanding.push_back((nonce, now));
        } else {
            // Probes are timed like pings but do not count towards misses.
            self.probes.retain(|_, (_, tx)| !tx.is_closed());
        }
        Ping {
            nonce,
            sent_unix_nanos: now_unix_nanos(),
            probe,
            ready,
            last_rtt_micros: self.rtt.last().map_or(0, micros),
        }
    }

    /// Records an answer; returns the round trip when the pong matched a
    /// ping of ours. Round trips are timed with our own monotonic clock.
    pub fn pong(&mut self, pong: &Pong, now: Instant) -> Option<Duration> {
        if let Some((sent, answer)) = self.probes.remove(&pong.nonce) {
            let rtt = now.saturating_duration_since(sent);
            // The prober may have given up already; the sample still counts.
            let _ = answer.send(rtt);
            self.rtt.record(rtt);
            self.last_pong = Some(now);
            return Some(rtt);
        }
        let pos = self
            .outstanding
            .iter()
            .position(|(n, _)| *n == pong.nonce)?;
        let (_, sent) = self.outstanding[pos];
        // Everything older than the answered ping is answered by implication.
        self.outstanding.drain(..=pos);
        self.missed = 0;
        self.last_pong = Some(now);
        let rtt = now.saturating_duration_since(sent);
        self.rtt.record(rtt);
        Some(rtt)
    }

    /// Up while answering, degraded after a miss, down after `misses_allowed`.
    pub fn status(&self) -> PeerStatus {
        match self.missed {
            0 => PeerStatus::Up,
            n if n < self.misses_allowed => PeerStatus::Degraded,
            _ => PeerStatus::Down,
        }
    }

    /// Consecutive pings that went unanswered.
    pub fn missed(&self) -> u32 {
        self.missed
    }

    /// The round trips measured on this stream.
    pub fn rtt(&self) -> &RttWindow {
        &self.rtt
    }

    /// When the last answer arrived.
    pub fn last_pong(&self) -> Option<Instant> {
        self.last_pong
    }
}

/// The answering side's view of its upstream: when did it last hear anything?
#[derive(Clone, Copy, Debug)]
pub struct Liveness {
    timeout: Duration,
    last_heard: Instant,
}

impl Liveness {
    /// Presumes the peer dead after `timeout` of silence.
    pub fn new(timeout: Duration, now: Instant) -> Self {
        Self {
            timeout,
            last_heard: now,
        }
    }

    /// The peer said something at `now`.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// When the peer will be presumed dead unless it speaks first.
    pub fn deadline(&self) -> Instant {
        self.last_heard + self.timeout
    }

    /// Whether the peer has been silent for the whole timeout at `now`.
    pub fn is_dead(&self, now: Instant) -> bool {
        now >= self.deadline()
    }
}

/// The answer to a ping, sent straight back.
pub fn answer(ping: &Ping) -> Pong {
    Pong {
        nonce: ping.nonce,
        sent_unix_nanos: ping.sent_unix_nanos,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pongs_produce_rtt_samples() {
        let start = Instant::now();
        let mut hb = Heartbeat::new(3);
        let ping = hb.tick(start, true);
        let rtt = hb.pong(&answer(&ping), start + Duration::from_millis(7));
        assert_eq!(rtt, Some(Duration::from_millis(7)));
        assert_eq!(hb.status(), PeerStatus::Up);
        let stats = hb.rtt().stats();
        assert_eq!(stats.last_us, 7000);
        assert_eq!(stats.recent_us, vec![7000]); // The first ping knew no round trip; the next one tells it.
        assert_eq!(ping.last_rtt_micros, 0);
        assert_eq!(hb.tick(start, true).last_rtt_micros, 7000);
    }

    #[test]
    fn unknown_pongs_are_ignored() {
        let mut hb = Heartbeat::new(3);
        let now = Instant::now();
        assert_eq!(
            hb.pong(
                &Pong {
                    nonce: 99,
                    sent_unix_nanos: 0
                },
                now
            ),
            None
        );
        assert!(hb.rtt().last().is_none());
    }

    #[test]
    fn misses_degrade_then_down_and_a_pong_recovers() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(3);
        let first = hb.tick(t0, true);
        assert_eq!(hb.status(), PeerStatus::Up);
        hb.tick(t0 + Duration::from_secs(1), true);
        assert_eq!(hb.status(), PeerStatus::Degraded);
        hb.tick(t0 + Duration::from_secs(2), true);
        hb.tick(t0 + Duration::from_secs(3), true);
        assert_eq!(hb.status(), PeerStatus::Down);
        assert_eq!(hb.missed(), 3);
        // A late answer still proves the peer alive, and shows how late it was.
        let late = hb.pong(&answer(&first), t0 + Duration::from_secs(3));
        assert_eq!(late, Some(Duration::from_secs(3)));
        assert_eq!(hb.status(), PeerStatus::Up);
    }

    #[test]
    fn a_silent_peer_costs_bounded_memory() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(2);
        let first = hb.tick(t0, true);
        for s in 1..50 {
            hb.tick(t0 + Duration::from_secs(s), true);
        }
        assert_eq!(hb.pong(&answer(&first), t0 + Duration::from_secs(50)), None);
        assert_eq!(hb.status(), PeerStatus::Down);
    }

    #[test]
    fn probes_answer_their_waiter_and_do_not_count_as_misses() {
        let now = Instant::now();
        let mut hb = Heartbeat::new(2);
        let (tx, mut rx) = oneshot::channel();
        let probe = hb.probe(now, true, tx);
        assert!(probe.probe);
        hb.tick(now, true);
        assert_eq!(hb.status(), PeerStatus::Up);
        assert!(hb.pong(&answer(&probe), now).is_some());
        assert!(rx.try_recv().is_ok());
    }

    #[test]
    fn stats_compute_mean_and_p99_over_the_window() {
        let mut window = RttWindow::default();
        for ms in 1..=200u64 {
            window.record(Duration::from_millis(ms));
        }
        let stats = window.stats();
        // Only the last 120 samples (81..=200 ms) remain.
        assert_eq!(stats.recent_us.len(), RTT_HISTORY);
        assert_eq!(stats.recent_us[0], 81_000);
        assert_eq!(stats.last_us, 200_000);
        assert_eq!(stats.avg_us, 140_500);
        assert_eq!(stats.p99_us, 199_000);
    }

    #[test]
    fn percentile_uses_nearest_rank() {
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(percentile(&[5], 0.99), 5);
        assert_eq!(percentile(&[1, 2, 3, 4], 0.5), 2);
        assert_eq!(percentile(&[1, 2, 3, 4], 1.0), 4);
    }

    #[test]
    fn liveness_expires_after_silence() {
        let t0 = Instant::now();
        let mut live = Liveness::new(Duration::from_secs(3), t0);
        assert!(!live.is_dead(t0 + Duration::from_secs(2)));
        live.heard(t0 + Duration::from_secs(2));
        assert!(!live.is_dead(t0 + Duration::from_secs(4)));
        assert!(live.is_dead(t0 + Duration::from_secs(5)));
    }
}
