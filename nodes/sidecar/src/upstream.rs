//! The sidecar's link to a master, with failover.
//!
//! One task owns the link and every batch the sidecar holds. Batches from
//! client sessions are queued in arrival order, sent while the master's
//! window allows, and kept until the master acknowledges them; then the
//! client that sent each one is told. When the link dies (stream error,
//! silence past the heartbeat timeout) the task moves to the next master in
//! `sidecarCon.csv` and sends every unacknowledged batch again, in the same
//! order. A master that says it cannot deliver (Kafka down) for too long is
//! left for another master that can, if there is one.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use smesh_core::heartbeat::{Liveness, answer};
use smesh_core::link::{self, Link, LinkTimeouts, PeerWalk};
use smesh_core::peers::Peer;
use smesh_proto::mesh::downlink::Frame as Down;
use smesh_proto::mesh::uplink::Frame as Up;
use smesh_proto::mesh::{Batch, Event, Hello, NodeKind, Rejected, Report, Uplink};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::clients::TableHandle;

/// A client batch handed to the master link.
#[derive(Debug)]
pub struct Forward {
    /// The batch's number on the client's stream, echoed in its ack.
    pub client_seq: u64,
    pub events: Vec<Event>,
    /// Where the client's session waits for the outcome.
    pub settle: mpsc::UnboundedSender<Settle>,
}

/// The outcome of a client batch: everything through `through` is settled.
#[derive(Debug)]
pub struct Settle {
    pub through: u64,
    pub rejected: Vec<Rejected>,
}

/// Settings of the master link.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    pub node_id: String,
    pub incarnation: String,
    pub masters: Vec<Peer>,
    pub timeouts: LinkTimeouts,
    /// Silence after which the master is presumed dead.
    pub heartbeat_timeout: Duration,
    /// Events held at most (sent or waiting); sessions wait beyond that.
    pub max_pending_events: usize,
    pub report_interval: Duration,
    /// How long a master may report "not ready" before another is sought.
    pub not_ready_failover_after: Duration,
}

/// Totals of the master link.
#[derive(Debug, Default)]
pub struct UpstreamCounters {
    pub events_forwarded: AtomicU64,
    pub events_acked: AtomicU64,
    pub events_resent: AtomicU64,
    pub failovers: AtomicU64,
}

struct Pending {
    forward: Forward,
    /// Stream batch number on the current link, once sent.
    seq: u64,
}

enum LinkEnd {
    /// Shutdown and nothing left to deliver.
    Done,
    Lost(String),
    /// A better master was found while this one could not deliver.
    Switch(usize, Box<Link>),
}

/// The master link task.
pub struct Upstream {
    settings: UpstreamSettings,
    inbox: mpsc::Receiver<Forward>,
    table: TableHandle,
    ready: watch::Sender<bool>,
    counters: Arc<UpstreamCounters>,
    pending: VecDeque<Pending>,
    pending_events: usize,
    /// `pending[..sent]` went out on the current link.
    sent: usize,
    sent_events: usize,
    next_seq: u64,
    stopping: bool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("pending_events", &self.pending_events)
            .finish()
    }
}

impl Upstream {
    pub fn new(
        settings: UpstreamSettings,
        inbox: mpsc::Receiver<Forward>,
        table: TableHandle,
        ready: watch::Sender<bool>,
        counters: Arc<UpstreamCounters>,
    ) -> Self {
        Self {
            settings,
            inbox,
            table,
            ready,
            counters,
            pending: VecDeque::new(),
            pending_events: 0,
            sent: 0,
            sent_events: 0,
            next_seq: 1,
            stopping: false,
        }
    }

    fn hello(&self) -> Hello {
        Hello {
            node_id: self.settings.node_id.clone(),
            kind: NodeKind::Sidecar as i32,
            version: smesh_core::VERSION.to_string(),
            incarnation: self.settings.incarnation.clone(),
        }
    }

    fn room(&self) -> bool {
        self.pending_events < self.settings.max_pending_events
    }

    fn push(&mut self, forward: Forward) {
        self.pending_events += forward.events.len();
        self.counters
            .events_forwarded
            .fetch_add(forward.events.len() as u64, Relaxed);
        self.pending.push_back(Pending { forward, seq: 0 });
    }

    fn done(&self) -> bool {
        self.stopping && self.pending.is_empty() && self.inbox.is_empty()
    }

    /// Runs until shutdown and everything held was delivered (or the binary's
    /// grace period ends it).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut walk = PeerWalk::new(
            self.settings.masters.clone(),
            smesh_core::backoff::Backoff::default(),
        );
        let mut next_link: Option<Link> = None;
        loop {
            let link = match next_link.take() {
                Some(link) => link,
                None => match self.connect(&mut walk, &shutdown).await {
                    Some(link) => link,
                    None => return,
                },
            };
            let master = link.peer.clone();
            match self.serve(link, &walk, &shutdown).await {
                LinkEnd::Done => {
                    info!("every held event was acknowledged; master link closed");
                    return;
                }
                LinkEnd::Lost(reason) => {
                    self.ready.send_replace(false);
                    self.counters.failovers.fetch_add(1, Relaxed);
                    warn!(%master, %reason, unacknowledged = self.pending_events, "lost the master; failing over");
                    walk.lost();
                }
                LinkEnd::Switch(index, link) => {
                    self.counters.failovers.fetch_add(1, Relaxed);
                    info!(from = %master, to = %link.peer, "master cannot deliver; switching to one that can");
                    walk.switch_to(index);
                    next_link = Some(*link);
                }
            }
        }
    }

    /// Walks the masters until one accepts a stream; keeps taking batches
    /// meanwhile. `None` on shutdown with nothing left to deliver.
    async fn connect(&mut self, walk: &mut PeerWalk, shutdown: &CancellationToken) -> Option<Link> {
        loop {
            let peer = walk.current()?.clone();
            let attempt = link::open(&peer, self.hello(), self.settings.timeouts);
            tokio::pin!(attempt);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut attempt => break outcome,
                    Some(forward) = self.inbox.recv(), if self.room() => self.push(forward),
                    () = shutdown.cancelled(), if !self.stopping => {
                        self.stopping = true;
                    }
                }
                if self.done() {
                    return None;
                }
            };
            match outcome {
                Ok(link) => {
                    walk.succeeded();
                    info!(master = %peer, ready = link.welcome.ready, window = link.welcome.window, "connected to master");
                    return Some(link);
                }
                Err(err) => {
                    warn!(master = %peer, %err, "master unavailable");
                    if let Some(pause) = walk.failed() {
                        debug!(?pause, "every master failed; backing off");
                        let sleep = tokio::time::sleep(pause);
                        tokio::pin!(sleep);
                        loop {
                            tokio::select! {
                                () = &mut sleep => break,
                                Some(forward) = self.inbox.recv(), if self.room() => self.push(forward),
                                () = shutdown.cancelled(), if !self.stopping => self.stopping = true,
                            }
                            if self.done() {
                                return None;
                            }
                        }
                    }
                }
            }
        }
    }

    async fn serve(
        &mut self,
        mut link: Link,
        walk: &PeerWalk,
        shutdown: &CancellationToken,
    ) -> LinkEnd {
        // Everything unacknowledged goes out again, renumbered for this stream.
        let resent = self.pending_events;
        if resent > 0 {
            self.counters
                .events_resent
                .fetch_add(resent as u64, Relaxed);
            info!(master = %link.peer, events = resent, "resending unacknowledged events");
        }
        self.sent = 0;
        self.sent_events = 0;
        self.next_seq = 1;
        let window = link.welcome.window.max(1) as usize;
        let mut master_ready = link.welcome.ready;
        let mut not_ready_since = (!master_ready).then(Instant::now);
        self.ready.send_replace(master_ready);
        let mut liveness = Liveness::new(self.settings.heartbeat_timeout, Instant::now());
        let mut report = tokio::time::interval(self.settings.report_interval);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut scout: Option<BoxFuture<'static, Option<(usize, Link)>>> = None;
        let linked_at = Instant::now();
        let mut acked = false;
        let mut last_scout: Option<Instant> = None;

        if let Err(reason) = self.send_more(&mut link, window).await {
            return LinkEnd::Lost(reason);
        }
        loop {
            let deadline = tokio::time::Instant::from_std(liveness.deadline());
            tokio::select! {
                biased;
                frame = link.inbound.message() => {
                    liveness.heard(Instant::now());
                    match frame {
                        Ok(Some(downlink)) => match downlink.frame {
                            Some(Down::Ack(ack)) => {
                                if !acked {
                                    acked = true;
                                    let after_ms = linked_at.elapsed().as_secs_f64() * 1e3;
                                    info!(master = %link.peer, after_ms, "first acknowledgement from master");
                                }
                                self.on_ack(ack.through, ack.rejected);
                            }
                            Some(Down::Ping(ping)) => {
                                if ping.ready != master_ready {
                                    master_ready = ping.ready;
                                    not_ready_since = (!master_ready).then(Instant::now);
                                    self.ready.send_replace(master_ready);
                                    info!(master = %link.peer, ready = master_ready, "master readiness changed");
                                }
                                let pong = Uplink { frame: Some(Up::Pong(answer(&ping))) };
                                if let Err(reason) = self.send(&mut link, pong).await {
                                    return LinkEnd::Lost(reason);
                                }
                            }
                            Some(Down::ProbeRequest(request)) => {
                                let table = self.table.clone();
                                let tx = link.tx.clone();
                                tokio::spawn(async move {
                                    if let Some(response) = table.probe(request).await {
                                        let _ = tx.send(Uplink { frame: Some(Up::ProbeResponse(response)) }).await;
                                    }
                                });
                            }
                            Some(Down::Welcome(_)) | None => {}
                        },
                        Ok(None) => return LinkEnd::Lost("the master closed the stream".to_string()),
                        Err(status) => return LinkEnd::Lost(format!("stream failed: {}", status.message())),
                    }
                }
                Some(forward) = self.inbox.recv(), if self.room() => self.push(forward),
                () = tokio::time::sleep_until(deadline) => {
                    return LinkEnd::Lost(format!("no heartbeat for {:?}", self.settings.heartbeat_timeout));
                }
                _ = report.tick() => {
                    let clients = self.table.snapshot().await;
                    let frame = Uplink { frame: Some(Up::Report(Report { clients, ..Report::default() })) };
                    if let Err(reason) = self.send(&mut link, frame).await {
                        return LinkEnd::Lost(reason);
                    }
                }
                found = async { match scout.as_mut() { Some(s) => s.await, None => std::future::pending().await } } => {
                    scout = None;
                    if let Some((index, better)) = found {
                        return LinkEnd::Switch(index, Box::new(better));
                    }
                }
                () = shutdown.cancelled(), if !self.stopping => self.stopping = true,
            }
            if self.done() {
                return LinkEnd::Done;
            }
            if let Err(reason) = self.send_more(&mut link, window).await {
                return LinkEnd::Lost(reason);
            }
            let stuck = not_ready_since
                .is_some_and(|t| t.elapsed() >= self.settings.not_ready_failover_after);
            let rested =
                last_scout.is_none_or(|t| t.elapsed() >= self.settings.not_ready_failover_after);
            if stuck && rested && scout.is_none() && walk.peers().len() > 1 {
                last_scout = Some(Instant::now());
                scout = Some(
                    scout_ready_master(
                        walk.peers().to_vec(),
                        walk.index(),
                        self.hello(),
                        self.settings.timeouts,
                    )
                    .boxed(),
                );
            }
        }
    }

    async fn send(&self, link: &mut Link, frame: Uplink) -> Result<(), String> {
        match tokio::time::timeout(self.settings.heartbeat_timeout, link.tx.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("the stream to the master closed".to_string()),
            Err(_) => Err(format!(
                "the master took no data for {:?}",
                self.settings.heartbeat_timeout
            )),
        }
    }

    /// Sends waiting batches while the master's window has room.
    async fn send_more(&mut self, link: &mut Link, window: usize) -> Result<(), String> {
        while self.sent < self.pending.len() {
            let n = self.pending[self.sent].forward.events.len();
            // A batch larger than the whole window still goes alone.
            if self.sent_events > 0 && self.sent_events + n > window {
                break;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            let pending = &mut self.pending[self.sent];
            pending.seq = seq;
            let batch = Batch {
                seq,
                events: pending.forward.events.clone(),
            };
            self.sent += 1;
            self.sent_events += n;
            self.send(
                link,
                Uplink {
                    frame: Some(Up::Batch(batch)),
                },
            )
            .await?;
        }
        Ok(())
    }

    fn on_ack(&mut self, through: u64, rejected: Vec<Rejected>) {
        let mut rejected_ids: HashSet<String> = HashSet::new();
        let mut reasons = Vec::new();
        for r in rejected {
            rejected_ids.insert(r.event_id.clone());
            reasons.push(r);
        }
        while self.sent > 0 {
            let Some(front) = self.pending.front() else {
                break;
            };
            if front.seq > through {
                break;
            }
            let Some(done) = self.pending.pop_front() else {
                break;
            };
            let n = done.forward.events.len();
            self.sent -= 1;
            self.sent_events -= n;
            self.pending_events -= n;
            self.counters.events_acked.fetch_add(n as u64, Relaxed);
            let rejected = if rejected_ids.is_empty() {
                Vec::new()
            } else {
                let ids: HashSet<&str> =
                    done.forward.events.iter().map(|e| e.id.as_str()).collect();
                reasons
                    .iter()
                    .filter(|r| ids.contains(r.event_id.as_str()))
                    .cloned()
                    .collect()
            };
            // The session may be gone; its client will resend and be acked then.
            let _ = done.forward.settle.send(Settle {
                through: done.forward.client_seq,
                rejected,
            });
        }
    }
}

/// Looks for another master that can deliver now; returns its index and link.
async fn scout_ready_master(
    masters: Vec<Peer>,
    current: usize,
    hello: Hello,
    timeouts: LinkTimeouts,
) -> Option<(usize, Link)> {
    let n = masters.len();
    for step in 1..n {
        let index = (current + step) % n;
        if let Ok(link) = link::open(&masters[index], hello.clone(), timeouts).await {
            if link.welcome.ready {
                return Some((index, link));
            }
        }
    }
    None
}
