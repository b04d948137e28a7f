//! The sidecar's link to a master, and every batch in transit.
//!
//! One task owns the [`Link`] (failover, window, acks: see
//! [`smesh_core::link`]) and every batch the sidecar holds. Batches from
//! client sessions are queued in arrival order, sent while the master's
//! window allows, and kept until the master acknowledges them; then the
//! session that sent each one is told. When the link fails over, every
//! unacknowledged batch is sent again, in the same order, to the next
//! master. A master that says it cannot deliver (Kafka down) for too long is
//! left for another master that can, if there is one.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use smesh_core::link::{Link, LinkEvent, LinkSettings};
use smesh_core::session::Settled;
use smesh_proto::mesh::uplink::Frame as Up;
use smesh_proto::mesh::{Event, Placement, ProbeRequest, Rejected, Report, Uplink};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clients::TableHandle;

/// A client batch handed to the master link.
#[derive(Debug)]
pub struct Forward {
    /// The batch's events, in the client's order.
    pub events: Vec<Event>,
    /// Their encoded size, counted against `--max-pending-bytes`.
    pub bytes: u64,
    /// Told the batch's rejected events, and where the others went, once
    /// the master acknowledged it.
    pub settled: oneshot::Sender<Settled>,
}

/// Settings of the master link.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// The masters, the sidecar's Hello, timeouts and the not-ready failover.
    pub link: LinkSettings,
    /// Events held at most (sent or waiting); sessions wait beyond that.
    pub max_pending_events: usize,
    /// Bytes (encoded events) held at most, for every client together.
    pub max_pending_bytes: u64,
    /// How often the client table is reported to the master.
    pub report_interval: Duration,
}

/// Totals of the master link.
#[derive(Debug, Default)]
pub struct UpstreamCounters {
    /// Events taken from client sessions.
    pub events_forwarded: AtomicU64,
    /// Events a master acknowledged.
    pub events_acked: AtomicU64,
    /// Events sent again after a master was lost or left.
    pub events_resent: AtomicU64,
    /// Masters lost or left.
    pub failovers: AtomicU64,
    /// Streams opened to a master.
    pub links_opened: AtomicU64,
    /// Events held for the master link (sent or not, unacknowledged).
    pub pending_events: AtomicU64,
    /// Their encoded bytes, counted against `--max-pending-bytes`.
    pub pending_bytes: AtomicU64,
    /// Whether the master link can deliver now (0 or 1).
    pub upstream_ready: AtomicU64,
    /// Client streams open now.
    pub clients_connected: AtomicU64,
    /// Round trips to clients (no label per client: many clients, one histogram).
    pub client_rtt: smesh_core::metrics::Histogram,
    /// Round trips of the master link, as the master's heartbeats measure them.
    pub master_rtt: smesh_core::metrics::Histogram,
}

impl UpstreamCounters {
    fn held(&self, events: usize, bytes: u64) {
        self.pending_events.store(events as u64, Relaxed);
        self.pending_bytes.store(bytes, Relaxed);
    }
}

/// The master link task.
pub struct Upstream {
    link: Link,
    max_pending_events: usize,
    max_pending_bytes: u64,
    report_interval: Duration,
    inbox: mpsc::Receiver<Forward>,
    table: TableHandle,
    ready: watch::Sender<bool>,
    counters: Arc<UpstreamCounters>,
    /// Every batch held, oldest first; `pending[..sent]` went out on the
    /// current stream.
    pending: VecDeque<Forward>,
    pending_events: usize,
    /// The encoded size of the events held.
    pending_bytes: u64,
    sent: usize,
    stopping: bool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("link", &self.link)
            .field("pending_events", &self.pending_events)
            .field("pending_bytes", &self.pending_bytes)
            .finish()
    }
}

impl Upstream {
    /// The task; `ready` follows whether the linked master can deliver.
    pub fn new(
        settings: UpstreamSettings,
        inbox: mpsc::Receiver<Forward>,
        table: TableHandle,
        ready: watch::Sender<bool>,
        counters: Arc<UpstreamCounters>,
    ) -> Self {
        Self {
            link: Link::new(settings.link),
            max_pending_events: settings.max_pending_events,
            max_pending_bytes: settings.max_pending_bytes,
            report_interval: settings.report_interval,
            inbox,
            table,
            ready,
            counters,
            pending: VecDeque::new(),
            pending_events: 0,
            pending_bytes: 0,
            sent: 0,
            stopping: false,
        }
    }

    /// Whether another batch may be taken: both budgets have room (a
    /// batch may go over them, as a window may).
    fn room(&self) -> bool {
        self.pending_events < self.max_pending_events && self.pending_bytes < self.max_pending_bytes
    }

    fn push(&mut self, forward: Forward) {
        self.pending_events += forward.events.len();
        self.pending_bytes += forward.bytes;
        self.counters.held(self.pending_events, self.pending_bytes);
        self.counters
            .events_forwarded
            .fetch_add(forward.events.len() as u64, Relaxed);
        self.pending.push_back(forward);
    }

    fn done(&self) -> bool {
        self.stopping && self.pending.is_empty() && self.inbox.is_empty()
    }

    /// Runs until shutdown and everything held was delivered (or the binary's
    /// grace period ends it).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut report = tokio::time::interval(self.report_interval);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                event = self.link.next() => self.on_link(event),
                Some(forward) = self.inbox.recv(), if self.room() => self.push(forward),
                _ = report.tick(), if self.link.is_up() => {
                    let clients = self.table.snapshot().await;
                    let report = Report { clients, ..Report::default() };
                    // A failure is reported by the link's next event.
                    let _ = self.link.send(Up::Report(report)).await;
                }
                () = shutdown.cancelled(), if !self.stopping => self.stopping = true,
            }
            if self.done() {
                info!("every held event was acknowledged; master link closed");
                return;
            }
            self.send_more().await;
        }
    }

    fn on_link(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Up { peer, welcome } => {
                self.counters.links_opened.fetch_add(1, Relaxed);
                self.set_ready(welcome.ready);
                info!(master = %peer, ready = welcome.ready, window = welcome.window, "connected to master");
                if self.pending_events > 0 {
                    info!(master = %peer, events = self.pending_events, "sending held events");
                }
            }
            LinkEvent::Down {
                peer,
                reason,
                switching_to,
                drained,
            } => {
                self.counters.failovers.fetch_add(1, Relaxed);
                let resent: usize = self
                    .pending
                    .iter()
                    .take(self.sent)
                    .map(|f| f.events.len())
                    .sum();
                self.counters
                    .events_resent
                    .fetch_add(resent as u64, Relaxed);
                self.sent = 0;
                match switching_to {
                    None if drained => {
                        info!(master = %peer, %reason, "left the master between batches");
                    }
                    Some(to) => {
                        info!(from = %peer, %to, %reason, "master cannot deliver; switching to one that can");
                    }
                    None => {
                        self.set_ready(false);
                        warn!(master = %peer, peer = %peer.id, address = %peer.address(), %reason, unacknowledged = resent, "lost the master; failing over");
                    }
                }
            }
            LinkEvent::Acked {
                batches,
                rejected,
                placed,
                ..
            } => self.on_ack(batches, &rejected, &placed),
            LinkEvent::Ready(ready) => {
                self.set_ready(ready);
                info!(master = ?self.link.peer().map(ToString::to_string), ready, "master readiness changed");
            }
            LinkEvent::Probe(request) => self.probe(request),
            LinkEvent::RoundTrip(rtt) => self.counters.master_rtt.observe(rtt),
        }
    }

    fn set_ready(&self, ready: bool) {
        self.ready.send_replace(ready);
        self.counters
            .upstream_ready
            .store(u64::from(ready), Relaxed);
    }

    /// Probes the clients for a master's health check, beside the data flow.
    fn probe(&self, request: ProbeRequest) {
        let Some(tx) = self.link.sender() else {
            return;
        };
        let table = self.table.clone();
        tokio::spawn(async move {
            if let Some(response) = table.probe(request).await {
                let frame = Uplink {
                    frame: Some(Up::ProbeResponse(response)),
                };
                let _ = tx.send(frame).await;
            }
        });
    }

    /// Sends waiting batches while the master's window has room.
    async fn send_more(&mut self) {
        while let Some(next) = self.pending.get(self.sent) {
            if !self.link.fits(next.events.len()) {
                break;
            }
            let events = next.events.clone();
            self.sent += 1;
            if self.link.send_batch(events).await.is_err() {
                // The link reports the loss next; everything sent goes again.
                break;
            }
        }
    }

    /// The oldest `batches` batches sent are settled: tell their sessions.
    fn on_ack(&mut self, batches: usize, rejected: &[Rejected], placed: &[Placement]) {
        let rejected_ids: HashSet<&str> = rejected.iter().map(|r| r.event_id.as_str()).collect();
        for _ in 0..batches.min(self.sent) {
            let Some(done) = self.pending.pop_front() else {
                break;
            };
            let n = done.events.len();
            self.sent -= 1;
            self.pending_events -= n;
            self.pending_bytes -= done.bytes;
            self.counters.held(self.pending_events, self.pending_bytes);
            self.counters.events_acked.fetch_add(n as u64, Relaxed);
            let mine = if rejected_ids.is_empty() {
                Vec::new()
            } else {
                let ids: HashSet<&str> = done.events.iter().map(|e| e.id.as_str()).collect();
                rejected
                    .iter()
                    .filter(|r| ids.contains(r.event_id.as_str()))
                    .cloned()
                    .collect()
            };
            let placed = placements_of(&done.events, placed);
            // The session may be gone; its client will resend and be acked then.
            let _ = done.settled.send(Settled {
                rejected: mine,
                placed,
            });
        }
    }
}

/// The placements of a master's ack that fall on `events` (one client
/// batch: one identity, sequences in order).
fn placements_of(events: &[Event], placed: &[Placement]) -> Vec<Placement> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Vec::new();
    };
    placed
        .iter()
        .filter(|p| {
            p.client_id == first.client_id
                && p.incarnation == first.incarnation
                && p.first_sequence <= last.sequence
                && p.last_sequence >= first.sequence
        })
        .cloned()
        .collect()
}
