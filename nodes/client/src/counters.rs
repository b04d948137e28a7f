//! Totals a client keeps since it started; reported upstream once a second.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use smesh_core::metrics::Histogram;

use smesh_proto::mesh::{Backlog, ClientCounters};

/// The client's totals (see `smesh.mesh.v1.ClientCounters`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Readings taken from sources (each got a sequence number).
    pub read: AtomicU64,
    /// Sent to a sidecar (resends included).
    pub sent: AtomicU64,
    /// Acknowledged end to end (in Kafka).
    pub acked: AtomicU64,
    /// Written to safeData.csv.
    pub spooled: AtomicU64,
    /// Moved to safeData.rejected.csv: can never be delivered.
    pub rejected: AtomicU64,
    /// Dropped because the spool was full and `--on-spool-full drop` was chosen.
    pub dropped: AtomicU64,
    /// Sent again after a link was lost.
    pub resent: AtomicU64,
    /// Rows in the spool not yet acknowledged, as of the last report tick.
    pub spool_rows: AtomicU64,
    /// Their bytes, as of the last report tick.
    pub spool_bytes: AtomicU64,
    /// The time of the oldest of them (ns since the epoch; 0 = none), as of
    /// the last report tick: `/metrics` turns it into an age.
    pub spool_oldest_unix_nanos: AtomicI64,
    /// Streams opened to a sidecar.
    pub links_opened: AtomicU64,
    /// Streams to a sidecar lost or left for another (failovers).
    pub links_lost: AtomicU64,
    /// From a reading's time at its source to its end-to-end ack.
    pub ack_latency: Histogram,
    /// Round trips of the sidecar link, as the sidecar's heartbeats measure them.
    pub sidecar_rtt: Histogram,
    /// Acknowledged events whose place in Kafka the ack told.
    pub placed: AtomicU64,
    /// The partition of the newest placement (meaningful once `placed > 0`).
    pub kafka_partition: AtomicI64,
    /// The offset of the newest placement's last event.
    pub kafka_offset: AtomicI64,
}

impl Counters {
    /// Adds `n` to one of the counters.
    pub fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// The spool's backlog, for `/metrics`.
    pub fn publish_backlog(&self, backlog: &Backlog) {
        self.spool_rows.store(backlog.rows, Relaxed);
        self.spool_bytes.store(backlog.bytes, Relaxed);
        self.spool_oldest_unix_nanos
            .store(backlog.oldest_unix_nanos, Relaxed);
    }

    /// Every counter now, as reports carry them.
    pub fn snapshot(&self) -> ClientCounters {
        ClientCounters {
            events_read: self.read.load(Relaxed),
            events_sent: self.sent.load(Relaxed),
            events_acked: self.acked.load(Relaxed),
            events_spooled: self.spooled.load(Relaxed),
            events_rejected: self.rejected.load(Relaxed),
            events_dropped: self.dropped.load(Relaxed),
            events_resent: self.resent.load(Relaxed),
        }
    }
}
