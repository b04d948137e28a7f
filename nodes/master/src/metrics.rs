//! The master's `/metrics` (`--metrics-listen`): its [`Counters`] read at
//! scrape time, Kafka's readiness, and librdkafka's own statistics. No label
//! per sidecar or client; the only label is `broker` (Kafka brokers are few,
//! and capped at [`MAX_BROKERS_REPORTED`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use smesh_core::metrics::{Collector, DescriptorEncoder, Exposition, Unit};
use smesh_proto::admin::KafkaStatus;
use tokio::sync::watch;

use crate::counters::Counters;
use crate::kafka::{KafkaStats, MAX_BROKERS_REPORTED};

/// Reads a master's numbers when Prometheus scrapes.
#[derive(Debug)]
pub struct MasterMetrics {
    /// Totals since start, and the sessions' gauges.
    pub counters: Arc<Counters>,
    /// Whether Kafka is reachable (what `grpc.health.v1` says).
    pub kafka: watch::Receiver<KafkaStatus>,
    /// What librdkafka last said about its producers.
    pub librdkafka: Arc<KafkaStats>,
}

impl Collector for MasterMetrics {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let c = &self.counters;
        let mut out = Exposition(encoder);
        for (name, help, value) in [
            (
                "smesh_master_events_received",
                "Events received from sidecars.",
                &c.events_in,
            ),
            (
                "smesh_master_events_published",
                "Events Kafka acknowledged.",
                &c.published,
            ),
            (
                "smesh_master_events_failed",
                "Events refused for good (moved to a client's rejected file).",
                &c.failed,
            ),
            (
                "smesh_master_events_duplicate",
                "Resends acknowledged without publishing again.",
                &c.duplicates,
            ),
            (
                "smesh_master_batches_received",
                "Batches received from sidecars.",
                &c.batches_in,
            ),
            (
                "smesh_master_received_bytes",
                "Event data received from sidecars, in bytes.",
                &c.bytes_in,
            ),
            (
                "smesh_master_producer_replacements",
                "Kafka producers replaced after failing for good.",
                &c.producer_replacements,
            ),
            (
                "smesh_master_transactions_committed",
                "Kafka transactions committed (--delivery exactly-once).",
                &c.transactions_committed,
            ),
            (
                "smesh_master_transactions_aborted",
                "Kafka transactions aborted; their batches were resent.",
                &c.transactions_aborted,
            ),
        ] {
            out.counter(name, help, value.load(Relaxed))?;
        }
        out.gauge(
            "smesh_master_sidecars_connected",
            "Sidecar streams open now.",
            None,
            c.sidecars_connected.load(Relaxed) as f64,
        )?;
        let ready = self.kafka.borrow().ready;
        out.gauge(
            "smesh_master_kafka_ready",
            "1 when Kafka answers the readiness probe (the master serves), else 0.",
            None,
            if ready { 1.0 } else { 0.0 },
        )?;
        out.histogram(
            "smesh_master_sidecar_rtt",
            "Round trips of heartbeats to sidecars, all sidecars together.",
            &c.sidecar_rtt,
        )?;
        let [pipelined, alone] = self.librdkafka.latest();
        let queued = |f: fn(&crate::kafka::ProducerStats) -> u64| {
            [&pipelined, &alone]
                .into_iter()
                .flatten()
                .map(f)
                .sum::<u64>() as f64
        };
        out.gauge(
            "smesh_master_kafka_queue_messages",
            "Messages in librdkafka's producer queues (msg_cnt), both producers.",
            None,
            queued(|s| s.queued_messages),
        )?;
        out.gauge(
            "smesh_master_kafka_queue",
            "Bytes of the messages in librdkafka's producer queues (msg_size).",
            Some(&Unit::Bytes),
            queued(|s| s.queued_bytes),
        )?;
        let brokers = pipelined
            .or(alone)
            .map(|s| s.broker_rtt_seconds)
            .unwrap_or_default();
        debug_assert!(brokers.len() <= MAX_BROKERS_REPORTED);
        out.gauge_by(
            "smesh_master_kafka_broker_rtt_avg",
            "librdkafka's average round trip to each broker (pipelined producer).",
            Some(&Unit::Seconds),
            "broker",
            &brokers,
        )
    }
}
