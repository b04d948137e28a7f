//! Totals a client keeps since it started; reported upstream once a second.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use smesh_proto::mesh::ClientCounters;

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
}

impl Counters {
    /// Adds `n` to one of the counters.
    pub fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
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
