//! Totals a master keeps since it started. Plain atomics: every stream
//! handler bumps them on the hot path, the registry reads them once a second.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use smesh_proto::admin::Totals;

#[derive(Debug, Default)]
pub struct Counters {
    pub events_in: AtomicU64,
    pub published: AtomicU64,
    pub failed: AtomicU64,
    pub duplicates: AtomicU64,
    pub bytes_in: AtomicU64,
    pub batches_in: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn totals(&self) -> Totals {
        Totals {
            events_in: self.events_in.load(Relaxed),
            published: self.published.load(Relaxed),
            failed: self.failed.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            batches_in: self.batches_in.load(Relaxed),
        }
    }
}
