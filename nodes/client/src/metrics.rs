//! The client's `/metrics` (`--metrics-listen`): its [`Counters`] read at
//! scrape time. One client, no labels.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use smesh_core::metrics::{Collector, DescriptorEncoder, Exposition, Unit};

use crate::counters::Counters;

/// Reads a client's counters when Prometheus scrapes.
#[derive(Debug)]
pub struct ClientMetrics(pub Arc<Counters>);

impl Collector for ClientMetrics {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let c = &self.0;
        let mut out = Exposition(encoder);
        for (name, help, value) in [
            (
                "smesh_client_events_read",
                "Readings taken from sources.",
                &c.read,
            ),
            (
                "smesh_client_events_sent",
                "Events sent to a sidecar, resends included.",
                &c.sent,
            ),
            (
                "smesh_client_events_acked",
                "Events acknowledged end to end (in Kafka).",
                &c.acked,
            ),
            (
                "smesh_client_events_spooled",
                "Events written to the spool.",
                &c.spooled,
            ),
            (
                "smesh_client_events_rejected",
                "Events moved to the rejected file: never deliverable.",
                &c.rejected,
            ),
            (
                "smesh_client_events_dropped",
                "Events dropped because the spool was full (--on-spool-full drop).",
                &c.dropped,
            ),
            (
                "smesh_client_events_resent",
                "Events sent again after a link was lost.",
                &c.resent,
            ),
            (
                "smesh_client_link_connects",
                "Streams opened to a sidecar.",
                &c.links_opened,
            ),
            (
                "smesh_client_link_failovers",
                "Streams to a sidecar lost or left for another.",
                &c.links_lost,
            ),
            (
                "smesh_client_events_placed",
                "Acknowledged events whose Kafka partition and offset the ack told.",
                &c.placed,
            ),
        ] {
            out.counter(name, help, value.load(Relaxed))?;
        }
        out.gauge(
            "smesh_client_spool_rows",
            "Spool rows not yet acknowledged (updated every --report-interval).",
            None,
            c.spool_rows.load(Relaxed) as f64,
        )?;
        out.gauge(
            "smesh_client_spool",
            "Bytes of the spool rows not yet acknowledged (updated every --report-interval).",
            Some(&Unit::Bytes),
            c.spool_bytes.load(Relaxed) as f64,
        )?;
        let oldest = c.spool_oldest_unix_nanos.load(Relaxed);
        let age = if oldest > 0 {
            (smesh_core::time::now_unix_nanos() - oldest).max(0) as f64 / 1e9
        } else {
            0.0
        };
        out.gauge(
            "smesh_client_oldest_unacked_age",
            "Age of the oldest unacknowledged event in the spool (0 when empty).",
            Some(&Unit::Seconds),
            age,
        )?;
        if c.placed.load(Relaxed) > 0 {
            out.gauge(
                "smesh_client_kafka_partition",
                "The Kafka partition of the newest acknowledged event (absent until an ack told one).",
                None,
                c.kafka_partition.load(Relaxed) as f64,
            )?;
            out.gauge(
                "smesh_client_kafka_offset",
                "The Kafka offset of the newest acknowledged event (absent until an ack told one).",
                None,
                c.kafka_offset.load(Relaxed) as f64,
            )?;
        }
        out.histogram(
            "smesh_client_ack_latency",
            "From a reading's time at its source to its end-to-end acknowledgement.",
            &c.ack_latency,
        )?;
        out.histogram(
            "smesh_client_sidecar_rtt",
            "Round trips of the link to the sidecar, measured by the sidecar's heartbeats.",
            &c.sidecar_rtt,
        )
    }
}
