//! `--stats-file`: what a client says about its run when it stops.
//!
//! One JSON document: the counters, the backlog left in the spool, when the
//! first reading was taken and the last ack arrived, percentiles of the
//! ack latency (from a reading's time at its source to its end-to-end
//! acknowledgement), and how the state file was found (an unreadable one
//! shows here as well as in the log). The benchmark reads it to measure throughput and
//! latency from outside the process.
//!
//! The pipeline feeds a [`Timings`] while it runs; at the end it makes the
//! [`Stats`] and writes them.

use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;
use tracing::warn;

use crate::counters::Counters;
use crate::placed::PlacedSpan;
use crate::state::{Loaded, StateFile};

/// Longest ack latency recorded exactly, in microseconds (an hour); longer
/// ones count as this.
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// What the stats file measures, recorded by the pipeline while it runs.
#[derive(Debug)]
pub struct Timings {
    /// From a reading's time to its end-to-end ack, in microseconds. `None`
    /// only if the histogram could not be built (it cannot with these
    /// bounds; no stats are worth a panic).
    latency: Option<Histogram<u64>>,
    /// When the first reading was taken (ns since the epoch, 0 = never).
    first_read: i64,
    /// When the last ack arrived (ns since the epoch, 0 = never).
    last_ack: i64,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            // Three significant figures up to an hour. (`Histogram::new`
            // would saturate `saturating_record` at 2.)
            latency: Histogram::new_with_max(LATENCY_MAX_US, 3).ok(),
            first_read: 0,
            last_ack: 0,
        }
    }
}

impl Timings {
    /// A reading taken at `time_unix_nanos` got its sequence number.
    pub fn read(&mut self, time_unix_nanos: i64) {
        if self.first_read == 0 {
            self.first_read = time_unix_nanos;
        }
    }

    /// An event read at `read_unix_nanos` was acknowledged at `now_unix_nanos`.
    /// Events without a time (0) count for nothing.
    pub fn acked(&mut self, read_unix_nanos: i64, now_unix_nanos: i64) {
        if read_unix_nanos <= 0 {
            return;
        }
        if let Some(latency) = self.latency.as_mut() {
            let micros = (now_unix_nanos - read_unix_nanos).max(1) / 1_000;
            latency.saturating_record(u64::try_from(micros).unwrap_or(1).max(1));
        }
    }

    /// An ack that delivered at least one event arrived at `now_unix_nanos`.
    pub fn ack_arrived(&mut self, now_unix_nanos: i64) {
        self.last_ack = now_unix_nanos;
    }
}

/// What `--stats-file` receives when the client stops.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// Which client wrote it: several clients' files are read together.
    pub client_id: String,
    /// The client's totals.
    pub counters: StatsCounters,
    /// Rows left in the spool for the next start.
    pub backlog_rows: u64,
    /// When the first reading was taken and the last ack arrived (ns since
    /// the epoch, 0 = never): the span a throughput is measured over.
    pub first_read_unix_nanos: i64,
    /// See `first_read_unix_nanos`.
    pub last_ack_unix_nanos: i64,
    /// From a reading's time at its source to its end-to-end acknowledgement.
    pub ack_latency_us: LatencySummary,
    /// Times the spool's filesystem was full during the run.
    pub spool_full: SpoolFullStats,
    /// How the state file was found, and the numbering this run used.
    pub state: StateSummary,
    /// Where this run's acknowledged events went in Kafka, per topic and
    /// partition, as the acks told (see `safeData.placed.csv` for each).
    pub placed: Vec<PlacedSpan>,
}

/// When the spool's filesystem had no room (see `pipeline`'s full state).
#[derive(Debug, Default, Clone, Serialize)]
pub struct SpoolFullStats {
    /// How often a write found the filesystem full.
    pub episodes: u64,
    /// Seconds spent full, all episodes together.
    pub seconds: f64,
    /// Still full when the client stopped.
    pub at_exit: bool,
}

/// The state file as the run found it.
#[derive(Debug, Default, Serialize)]
pub struct StateSummary {
    /// `found`, `fresh` (none: a first start, or lost), `upgraded` (written
    /// before incarnations) or `unreadable`.
    pub loaded: &'static str,
    /// Why the file was unreadable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The incarnation this run's event ids carry, as in the ids.
    pub incarnation: String,
}

impl Stats {
    /// The stats of a run, as it stops with `backlog_rows` left in the spool.
    pub fn new(client_id: &str, counters: &Counters, backlog_rows: u64, timings: &Timings) -> Self {
        Self {
            client_id: client_id.to_string(),
            counters: StatsCounters::from(counters.snapshot()),
            backlog_rows,
            first_read_unix_nanos: timings.first_read,
            last_ack_unix_nanos: timings.last_ack,
            ack_latency_us: timings
                .latency
                .as_ref()
                .map(LatencySummary::from)
                .unwrap_or_default(),
            spool_full: SpoolFullStats::default(),
            state: StateSummary::default(),
            placed: Vec::new(),
        }
    }

    /// With where the run's events went in Kafka.
    pub fn with_placed(self, placed: Vec<PlacedSpan>) -> Self {
        Self { placed, ..self }
    }

    /// With what the run saw of a full filesystem.
    pub fn spool_full(self, spool_full: SpoolFullStats) -> Self {
        Self { spool_full, ..self }
    }

    /// Adds how the state file was found and the run's incarnation.
    pub fn with_state(mut self, state: &StateFile) -> Self {
        self.state = StateSummary {
            loaded: state.loaded().as_str(),
            reason: match state.loaded() {
                Loaded::Unreadable(reason) => Some(reason.clone()),
                _ => None,
            },
            incarnation: format!("{:016x}", state.incarnation()),
        };
        self
    }

    /// Writes the stats to `path` as JSON (off the runtime's threads). A
    /// failure is logged, not returned: the stats are a report, and the
    /// spool is already safe.
    pub async fn write(&self, path: &Path) {
        match serde_json::to_vec_pretty(self) {
            Ok(json) => {
                if let Err(err) = tokio::fs::write(path, json).await {
                    warn!(path = %path.display(), %err, "cannot write the stats file");
                }
            }
            Err(err) => warn!(%err, "cannot encode the stats"),
        }
    }
}

/// The client's counters, by name.
#[derive(Debug, Serialize)]
pub struct StatsCounters {
    /// Readings taken from sources.
    pub read: u64,
    /// Events sent (resends included).
    pub sent: u64,
    /// Events acknowledged end to end.
    pub acked: u64,
    /// Events written to the spool.
    pub spooled: u64,
    /// Events moved to the rejected file.
    pub rejected: u64,
    /// Events dropped because the spool was full.
    pub dropped: u64,
    /// Events sent again after a link was lost.
    pub resent: u64,
}

impl From<smesh_proto::mesh::ClientCounters> for StatsCounters {
    fn from(c: smesh_proto::mesh::ClientCounters) -> Self {
        Self {
            read: c.events_read,
            sent: c.events_sent,
            acked: c.events_acked,
            spooled: c.events_spooled,
            rejected: c.events_rejected,
            dropped: c.events_dropped,
            resent: c.events_resent,
        }
    }
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Default, Serialize)]
pub struct LatencySummary {
    /// How many latencies were recorded.
    pub count: u64,
    /// The median.
    pub p50: u64,
    /// The 90th percentile.
    pub p90: u64,
    /// The 99th percentile.
    pub p99: u64,
    /// The 99.9th percentile.
    pub p999: u64,
    /// The largest.
    pub max: u64,
}

impl From<&Histogram<u64>> for LatencySummary {
    fn from(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;

    #[tokio::test]
    async fn an_unreadable_state_file_shows_in_the_stats() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state_path = dir.path().join("safeData.state");
        std::fs::write(&state_path, "{ torn").expect("write");
        let (state, _) = StateFile::load(&state_path, "c1");
        let path = dir.path().join("stats.json");
        Stats::new("c1", &Counters::default(), 0, &Timings::default())
            .with_state(&state)
            .write(&path)
            .await;
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("written")).expect("JSON");
        assert_eq!(written["state"]["loaded"], "unreadable");
        assert!(
            written["state"]["reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty())
        );
        assert_eq!(
            written["state"]["incarnation"],
            format!("{:016x}", state.incarnation())
        );
    }

    #[tokio::test]
    async fn the_file_keeps_its_shape() {
        let counters = Counters::default();
        counters.read.store(3, Relaxed);
        counters.acked.store(2, Relaxed);
        let mut timings = Timings::default();
        timings.read(1_000_000_000);
        timings.read(5_000_000_000);
        timings.acked(1_000_000_000, 1_002_000_000);
        timings.acked(0, 1_002_000_000);
        timings.ack_arrived(1_002_000_000);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stats.json");
        Stats::new("c1", &counters, 1, &timings)
            .with_placed(vec![crate::placed::PlacedSpan {
                topic: "t".into(),
                partition: 1,
                first_offset: 10,
                last_offset: 12,
                events: 2,
            }])
            .write(&path)
            .await;

        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("written")).expect("JSON");
        let expected = serde_json::json!({
            "client_id": "c1",
            "counters": {
                "read": 3, "sent": 0, "acked": 2, "spooled": 0,
                "rejected": 0, "dropped": 0, "resent": 0
            },
            "backlog_rows": 1,
            "first_read_unix_nanos": 1_000_000_000,
            "last_ack_unix_nanos": 1_002_000_000,
            "ack_latency_us": {
                "count": 1, "p50": 2000, "p90": 2000, "p99": 2000, "p999": 2000, "max": 2000
            },
            "spool_full": { "episodes": 0, "seconds": 0.0, "at_exit": false },
            "state": { "loaded": "", "incarnation": "" },
            "placed": [
                { "topic": "t", "partition": 1, "first_offset": 10, "last_offset": 12, "events": 2 }
            ]
        });
        assert_eq!(written, expected);
    }
}
