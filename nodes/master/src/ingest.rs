//! The data plane of a master: one stream per sidecar, events into Kafka,
//! acknowledgements back once Kafka has them.
//!
//! Each stream is served by one [`Session`] task. Batches are handed to the
//! producer as they arrive; their delivery futures wait in arrival order, so
//! the cumulative ack for batch `n` goes out only when batches `1..=n` are
//! all settled. A delivery that fails for a transient reason (Kafka
//! unreachable past the delivery timeout) ends the stream: the sidecar then
//! resends everything unacknowledged, here or to another master.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use smesh_core::event;
use smesh_core::grpc::{self, down};
use smesh_core::heartbeat::Heartbeat;
use smesh_core::time::now_unix_nanos;
use smesh_proto::admin::{HeartbeatSample, KafkaStatus, Tier};
use smesh_proto::mesh::downlink::Frame as Down;
use smesh_proto::mesh::mesh_server::Mesh;
use smesh_proto::mesh::uplink::Frame as Up;
use smesh_proto::mesh::{
    Ack, Batch, Downlink, NodeKind, PeerStatus, ProbeRequest, ProbeResponse, Rejected, Uplink,
    Welcome,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::counters::Counters;
use crate::dedupe::Delivered;
use crate::kafka::{KafkaSink, PublishError, classify};
use crate::registry::{ConnId, RegistryEvent, SessionCommand};

/// Per-stream settings, from the master's configuration.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    pub window: u32,
    pub max_event_bytes: usize,
    pub heartbeat_interval: Duration,
    pub heartbeat_misses: u32,
    /// How long a new stream may take to say Hello.
    pub hello_timeout: Duration,
}

/// What every session shares.
#[derive(Debug)]
pub struct Ingest {
    pub node_id: String,
    pub sink: KafkaSink,
    pub kafka: watch::Receiver<KafkaStatus>,
    pub registry: mpsc::Sender<RegistryEvent>,
    pub heartbeats: broadcast::Sender<HeartbeatSample>,
    pub counters: Arc<Counters>,
    pub delivered: Arc<Delivered>,
    pub settings: StreamSettings,
    pub shutdown: CancellationToken,
    pub next_conn: AtomicU64,
}

/// The `smesh.mesh.v1.Mesh` service as a master serves it.
#[derive(Clone, Debug)]
pub struct MeshService {
    ingest: Arc<Ingest>,
}

impl MeshService {
    pub fn new(ingest: Arc<Ingest>) -> Self {
        Self { ingest }
    }
}

type DownlinkResult = Result<Downlink, Status>;

#[tonic::async_trait]
impl Mesh for MeshService {
    type StreamStream = grpc::DownlinkStream;

    async fn stream(
        &self,
        request: Request<Streaming<Uplink>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let ingest = &self.ingest;
        if ingest.shutdown.is_cancelled() {
            return Err(Status::unavailable("master is shutting down"));
        }
        let welcome = Welcome {
            node_id: ingest.node_id.clone(),
            kind: NodeKind::Master as i32,
            version: smesh_core::VERSION.to_string(),
            window: ingest.settings.window,
            max_event_bytes: u32::try_from(ingest.settings.max_event_bytes).unwrap_or(u32::MAX),
            ready: ingest.kafka.borrow().ready,
        };
        let (accepted, response) =
            grpc::accept_stream(request, ingest.settings.hello_timeout, welcome).await?;
        let grpc::Accepted {
            hello,
            address,
            inbound,
            out,
        } = accepted;
        let conn = ingest.next_conn.fetch_add(1, Ordering::Relaxed);
        let (commands_tx, commands) = mpsc::channel(16);
        info!(peer = %hello.node_id, %address, conn, "stream opened");
        ingest
            .registry
            .send(RegistryEvent::Connected {
                conn,
                hello: hello.clone(),
                address: address.clone(),
                commands: commands_tx,
            })
            .await
            .map_err(|_| Status::unavailable("master is shutting down"))?;
        let session = Session {
            conn,
            peer: hello.node_id,
            ingest: Arc::clone(ingest),
            inbound,
            out,
            commands,
            heartbeat: Heartbeat::new(ingest.settings.heartbeat_misses),
            pending: FuturesOrdered::new(),
            in_flight: 0,
            next_seq: 1,
            events_forwarded: 0,
            probe_waiters: HashMap::new(),
            next_probe: 0,
        };
        tokio::spawn(session.run());
        Ok(Response::new(response))
    }
}

/// A record header's value as text (for the id of a refused record).
fn header(message: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::{Headers, Message};
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// How one batch ended.
#[derive(Debug)]
struct Settled {
    seq: u64,
    events: usize,
    /// Client ids of the batch (one, unless a peer mixed clients).
    clients: Vec<String>,
    /// Published (index into `clients`, sequence).
    published: Vec<(usize, u64)>,
    rejected: Vec<Rejected>,
    /// Set when Kafka did not take every event and may later: resend all.
    transient: Option<String>,
}

struct Session {
    conn: ConnId,
    peer: String,
    ingest: Arc<Ingest>,
    inbound: Streaming<Uplink>,
    out: mpsc::Sender<DownlinkResult>,
    commands: mpsc::Receiver<SessionCommand>,
    heartbeat: Heartbeat,
    /// Batches handed to Kafka, in arrival order.
    pending: FuturesOrdered<BoxFuture<'static, Settled>>,
    /// Events received and not yet acknowledged.
    in_flight: usize,
    next_seq: u64,
    events_forwarded: u64,
    /// Health checks waiting for the sidecar's ProbeResponse, by probe id.
    probe_waiters: HashMap<u64, oneshot::Sender<ProbeResponse>>,
    next_probe: u64,
}

impl Session {
    async fn run(mut self) {
        let outcome = self.serve().await;
        let reason = match &outcome {
            Ok(()) => "stream closed".to_string(),
            Err(status) => status.message().to_string(),
        };
        if let Err(status) = outcome {
            if status.code() != tonic::Code::Cancelled {
                warn!(peer = %self.peer, conn = self.conn, error = %status.message(), "ending stream");
            }
            let _ = self.out.send(Err(status)).await;
        } else {
            debug!(peer = %self.peer, conn = self.conn, "stream ended");
        }
        let _ = self
            .ingest
            .registry
            .send(RegistryEvent::Disconnected {
                conn: self.conn,
                reason,
            })
            .await;
    }

    async fn serve(&mut self) -> Result<(), Status> {
        let settings = self.ingest.settings.clone();
        let mut ticker = tokio::time::interval(settings.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.ingest.shutdown.clone();
        let mut draining = false;
        loop {
            tokio::select! {
                biased;
                Some(settled) = self.pending.next(), if !self.pending.is_empty() => {
                    self.settle(settled).await?;
                }
                () = shutdown.cancelled(), if !draining => {
                    debug!(peer = %self.peer, pending = self.pending.len(), "draining before shutdown");
                    draining = true;
                }
                _ = ticker.tick() => self.heartbeat_tick().await?,
                Some(command) = self.commands.recv() => self.command(command).await?,
                frame = self.inbound.message(), if !draining => match frame {
                    Ok(Some(uplink)) => self.on_frame(uplink).await?,
                    Ok(None) => draining = true,
                    Err(status) => {
                        debug!(peer = %self.peer, %status, "peer broke the stream");
                        return Err(Status::cancelled("peer broke the stream"));
                    }
                },
            }
            if draining && self.pending.is_empty() {
                return Ok(());
            }
        }
    }

    async fn send(&mut self, frame: Down) -> Result<(), Status> {
        self.out
            .send(Ok(down(frame)))
            .await
            .map_err(|_| Status::cancelled("peer went away"))
    }

    async fn on_frame(&mut self, uplink: Uplink) -> Result<(), Status> {
        match uplink.frame {
            Some(Up::Batch(batch)) => self.accept(batch).await,
            Some(Up::Pong(pong)) => {
                if let Some(rtt) = self.heartbeat.pong(&pong, Instant::now()) {
                    let _ = self.ingest.heartbeats.send(HeartbeatSample {
                        at_unix_nanos: now_unix_nanos(),
                        checker_id: self.ingest.node_id.clone(),
                        tier: Tier::Sidecar as i32,
                        peer_id: self.peer.clone(),
                        rtt_us: u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX),
                    });
                }
                Ok(())
            }
            Some(Up::Report(report)) => {
                let _ = self
                    .ingest
                    .registry
                    .send(RegistryEvent::Report {
                        conn: self.conn,
                        report,
                    })
                    .await;
                Ok(())
            }
            Some(Up::ProbeResponse(response)) => {
                if let Some(waiter) = self.probe_waiters.remove(&response.check_id) {
                    let _ = waiter.send(response);
                }
                Ok(())
            }
            Some(Up::Hello(_)) => Err(Status::invalid_argument("Hello sent twice on one stream")),
            None => Err(Status::invalid_argument("empty frame")),
        }
    }

    /// Hands a batch to Kafka and queues its settlement.
    async fn accept(&mut self, batch: Batch) -> Result<(), Status> {
        let settings = &self.ingest.settings;
        if batch.seq != self.next_seq {
            return Err(Status::invalid_argument(format!(
                "batch {} out of order, expected {}",
                batch.seq, self.next_seq
            )));
        }
        self.next_seq += 1;
        let n = batch.events.len();
        if self.in_flight + n > settings.window as usize {
            return Err(Status::resource_exhausted(format!(
                "window exceeded: {} events unacknowledged, window is {}",
                self.in_flight + n,
                settings.window
            )));
        }
        self.in_flight += n;
        self.events_forwarded += n as u64;
        let counters = &self.ingest.counters;
        Counters::add(&counters.events_in, n as u64);
        Counters::add(&counters.batches_in, 1);
        let bytes: usize = batch.events.iter().map(|e| e.data.len()).sum();
        Counters::add(&counters.bytes_in, bytes as u64);

        let seen = self.ingest.delivered.published(
            batch
                .events
                .iter()
                .map(|e| (e.client_id.as_str(), e.sequence)),
        );
        // Per event only a sequence and an index into `clients` are kept
        // (batches come from one client): no string copies on the hot path.
        let mut clients: Vec<String> = Vec::with_capacity(1);
        let mut deliveries = Vec::with_capacity(n);
        let mut rejected = Vec::new();
        let mut duplicates = 0u64;
        for (event, seen) in batch.events.iter().zip(seen) {
            if seen {
                duplicates += 1;
                continue;
            }
            if let Err(invalid) = event::validate(event, settings.max_event_bytes) {
                warn!(peer = %self.peer, event = %event.id, reason = %invalid, "rejecting event");
                rejected.push(Rejected {
                    event_id: event.id.clone(),
                    reason: invalid.to_string(),
                });
                continue;
            }
            loop {
                match self.ingest.sink.publish(event) {
                    Ok(delivery) => {
                        if clients.last() != Some(&event.client_id) {
                            clients.push(event.client_id.clone());
                        }
                        deliveries.push((clients.len() - 1, event.sequence, delivery));
                        break;
                    }
                    Err(PublishError::QueueFull) => {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err(PublishError::Permanent(reason)) => {
                        warn!(peer = %self.peer, event = %event.id, %reason, "rejecting event");
                        rejected.push(Rejected {
                            event_id: event.id.clone(),
                            reason,
                        });
                        break;
                    }
                    Err(PublishError::Transient(reason)) => {
                        return Err(Status::unavailable(format!(
                            "cannot publish to Kafka: {reason}"
                        )));
                    }
                }
            }
        }
        Counters::add(&counters.duplicates, duplicates);
        let seq = batch.seq;
        self.pending.push_back(Box::pin(async move {
            let mut settled = Settled {
                seq,
                events: n,
                clients,
                published: Vec::with_capacity(deliveries.len()),
                rejected,
                transient: None,
            };
            for (client, sequence, delivery) in deliveries {
                match delivery.await {
                    Ok(Ok(_)) => settled.published.push((client, sequence)),
                    Ok(Err((err, message))) => match classify(&err) {
                        PublishError::Permanent(reason) => settled.rejected.push(Rejected {
                            event_id: header(&message, "ce_id").unwrap_or_default(),
                            reason,
                        }),
                        other => {
                            settled.transient.get_or_insert_with(|| other.to_string());
                        }
                    },
                    Err(_canceled) => {
                        settled
                            .transient
                            .get_or_insert_with(|| "the producer went away".to_string());
                    }
                }
            }
            settled
        }));
        Ok(())
    }

    async fn settle(&mut self, settled: Settled) -> Result<(), Status> {
        let counters = &self.ingest.counters;
        let clients = &settled.clients;
        self.ingest.delivered.record(
            settled
                .published
                .iter()
                .filter_map(|(c, s)| clients.get(*c).map(|c| (c.as_str(), *s))),
        );
        Counters::add(&counters.published, settled.published.len() as u64);
        Counters::add(&counters.failed, settled.rejected.len() as u64);
        if let Some(reason) = settled.transient {
            return Err(Status::unavailable(format!(
                "Kafka did not acknowledge batch {}: {reason}",
                settled.seq
            )));
        }
        self.in_flight = self.in_flight.saturating_sub(settled.events);
        self.send(Down::Ack(Ack {
            through: settled.seq,
            rejected: settled.rejected,
        }))
        .await
    }

    async fn heartbeat_tick(&mut self) -> Result<(), Status> {
        let now = Instant::now();
        let ping = self.heartbeat.tick(now, self.ingest.kafka.borrow().ready);
        let status = self.heartbeat.status();
        let last_pong = self.heartbeat.last_pong().map_or(0, |at| {
            now_unix_nanos() - i64::try_from((now - at).as_nanos()).unwrap_or(0)
        });
        // State, not a log: skipping one when the registry is busy is fine.
        let _ = self.ingest.registry.try_send(RegistryEvent::Heartbeat {
            conn: self.conn,
            rtt: self.heartbeat.rtt().stats(),
            status,
            last_pong_unix_nanos: last_pong,
            events_forwarded: self.events_forwarded,
        });
        if status == PeerStatus::Down {
            return Err(Status::deadline_exceeded(format!(
                "peer missed {} heartbeats",
                self.heartbeat.missed()
            )));
        }
        self.send(Down::Ping(ping)).await
    }

    async fn command(&mut self, command: SessionCommand) -> Result<(), Status> {
        match command {
            SessionCommand::Probe { answer } => {
                let ready = self.ingest.kafka.borrow().ready;
                let ping = self.heartbeat.probe(Instant::now(), ready, answer);
                self.send(Down::Ping(ping)).await
            }
            SessionCommand::ProbeClients { request, answer } => {
                self.probe_clients(request, answer).await
            }
        }
    }

    async fn probe_clients(
        &mut self,
        mut request: ProbeRequest,
        answer: oneshot::Sender<ProbeResponse>,
    ) -> Result<(), Status> {
        self.next_probe += 1;
        request.check_id = self.next_probe;
        // Forget waiters whose health check already gave up.
        self.probe_waiters.retain(|_, waiter| !waiter.is_closed());
        self.probe_waiters.insert(request.check_id, answer);
        self.send(Down::ProbeRequest(request)).await
    }
}
