//! Totals a master keeps since it started. Plain atomics: every stream
//! handler bumps them on the hot path, the registry reads them once a second.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use smesh_proto::admin::Totals;

/// The master's totals (see `smesh.admin.v1.Totals`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Events received from sidecars.
    pub events_in: AtomicU64,
    /// Events Kafka acknowledged.
    pub published: AtomicU64,
    /// Events refused for good.
    pub failed: AtomicU64,
    /// Resends acknowledged without publishing again.
    pub duplicates: AtomicU64,
    /// Event data received, in bytes.
    pub bytes_in: AtomicU64,
    /// Batches received.
    pub batches_in: AtomicU64,
    /// Producers replaced after failing for good.
    pub producer_replacements: AtomicU64,
    /// Kafka transactions committed (`--delivery exactly-once`).
    pub transactions_committed: AtomicU64,
    /// Kafka transactions aborted; their batches were resent.
    pub transactions_aborted: AtomicU64,
    /// Sidecar streams open now (for `/metrics`).
    pub sidecars_connected: AtomicU64,
    /// Round trips of heartbeats to sidecars, all together: no label per
    /// sidecar (for `/metrics`; per-sidecar detail is in the admin API).
    pub sidecar_rtt: smesh_core::metrics::Histogram,
}

impl Counters {
    /// Adds `n` to one of the counters.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// A snapshot of every counter.
    pub fn totals(&self) -> Totals {
        Totals {
            events_in: self.events_in.load(Relaxed),
            published: self.published.load(Relaxed),
            failed: self.failed.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            batches_in: self.batches_in.load(Relaxed),
            producer_replacements: self.producer_replacements.load(Relaxed),
        }
    }
}
