//! The sidecar's `/metrics` (`--metrics-listen`): its [`UpstreamCounters`]
//! read at scrape time. No label per client: a sidecar may serve
//! thousands; per-client detail stays in the master's admin API.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use smesh_core::metrics::{Collector, DescriptorEncoder, Exposition, Unit};

use crate::upstream::UpstreamCounters;

/// Reads a sidecar's counters when Prometheus scrapes.
#[derive(Debug)]
pub struct SidecarMetrics {
    /// The master link's totals and the sessions' gauges.
    pub counters: Arc<UpstreamCounters>,
    /// `--max-pending-bytes`, exported beside what is held against it.
    pub max_pending_bytes: u64,
}

impl Collector for SidecarMetrics {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let c = &self.counters;
        let mut out = Exposition(encoder);
        for (name, help, value) in [
            (
                "smesh_sidecar_events_forwarded",
                "Events taken from client streams for the master link.",
                &c.events_forwarded,
            ),
            (
                "smesh_sidecar_events_acked",
                "Events a master acknowledged.",
                &c.events_acked,
            ),
            (
                "smesh_sidecar_events_resent",
                "Events sent again after a master was lost or left.",
                &c.events_resent,
            ),
            (
                "smesh_sidecar_link_connects",
                "Streams opened to a master.",
                &c.links_opened,
            ),
            (
                "smesh_sidecar_link_failovers",
                "Streams to a master lost or left for another.",
                &c.failovers,
            ),
        ] {
            out.counter(name, help, value.load(Relaxed))?;
        }
        out.gauge(
            "smesh_sidecar_clients_connected",
            "Client streams open now.",
            None,
            c.clients_connected.load(Relaxed) as f64,
        )?;
        out.gauge(
            "smesh_sidecar_pending_events",
            "Events held for the master link, not yet acknowledged.",
            None,
            c.pending_events.load(Relaxed) as f64,
        )?;
        out.gauge(
            "smesh_sidecar_pending",
            "Bytes of the events held for the master link.",
            Some(&Unit::Bytes),
            c.pending_bytes.load(Relaxed) as f64,
        )?;
        out.gauge(
            "smesh_sidecar_pending_limit",
            "--max-pending-bytes: the most the sidecar holds before clients wait.",
            Some(&Unit::Bytes),
            self.max_pending_bytes as f64,
        )?;
        out.gauge(
            "smesh_sidecar_upstream_ready",
            "1 when the master link can deliver to Kafka, else 0.",
            None,
            c.upstream_ready.load(Relaxed) as f64,
        )?;
        out.histogram(
            "smesh_sidecar_client_rtt",
            "Round trips of heartbeats to clients, all clients together.",
            &c.client_rtt,
        )?;
        out.histogram(
            "smesh_sidecar_master_rtt",
            "Round trips of the link to the master, measured by the master's heartbeats.",
            &c.master_rtt,
        )
    }
}
