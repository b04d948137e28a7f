//! The accepting end of `Mesh.Stream`, written once for every tier that
//! accepts streams: a sidecar for its clients, a master for its sidecars.
//!
//! [`MeshService`] serves the gRPC method. Each stream becomes one
//! [`Session`] task that reads the Hello (within the hello timeout), answers
//! with a Welcome, and then runs the protocol: batches numbered from 1 and
//! within the window, cumulative acks in batch order, pings every heartbeat
//! interval (the peer is down after too many misses), reports, and health
//! probes. What differs between tiers is plugged in through two traits:
//!
//! - [`Tier`]: whether the node can deliver now, and what happens when a
//!   peer connects (register it, return its [`Handler`]).
//! - [`Handler`]: per stream, what a batch is forwarded to and how its
//!   settlement is awaited, what a report updates, what the periodic
//!   [`SessionView`] and the end of the stream tell the rest of the node.
//!
//! With TLS, a Hello is accepted only for an identity the peer's
//! certificate names (`smesh://<tier>/<id>`, see [`crate::tls`]): a peer
//! cannot speak for another id or another tier (`PERMISSION_DENIED`).
//!
//! A batch is acknowledged only once the handler's settlement of it, and of
//! every batch before it, resolved; a settlement that fails ends the stream
//! (the peer sends everything unacknowledged again, here or elsewhere).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use smesh_proto::mesh::downlink::Frame as Down;
use smesh_proto::mesh::mesh_server::Mesh;
use smesh_proto::mesh::uplink::Frame as Up;
use smesh_proto::mesh::{
    Ack, Batch, Downlink, Hello, NodeKind, PeerStatus, Placement, ProbeRequest, ProbeResponse,
    Rejected, Report, RttStats, Uplink, Welcome,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::accept::ConnectionInfo;
use crate::event;
use crate::heartbeat::Heartbeat;
use crate::ids;
use crate::ratelimit::LogEvery;
use crate::time::now_unix_nanos;
use crate::tls::{self, PeerIdentity};

/// Identifies one accepted stream for the lifetime of the node.
pub type ConnId = u64;

/// Frames queued towards a downstream peer before its session waits.
const DOWNLINK_FRAMES: usize = 64;

/// Commands a session takes from its tier while it runs (health checks).
const SESSION_COMMANDS: usize = 16;

/// Settings every accepted stream of a node shares.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// Events a peer may have sent and not yet seen acknowledged.
    pub window: u32,
    /// A peer may send a batch only while it has fewer encoded bytes than
    /// this unacknowledged (so one stream holds at most this plus a batch).
    pub window_bytes: u64,
    /// Largest encoded event accepted, told to the peer in the Welcome.
    pub max_event_bytes: usize,
    /// How often the peer is pinged.
    pub heartbeat_interval: Duration,
    /// Consecutive unanswered pings after which the peer is down.
    pub heartbeat_misses: u32,
    /// How long a new stream may take to say Hello.
    pub hello_timeout: Duration,
}

/// The byte window of [`SessionSettings::new`]: 16 MiB a stream.
pub const DEFAULT_WINDOW_BYTES: u64 = 16 * 1024 * 1024;

/// How long a new stream may take to say Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The shortest heartbeat interval a session keeps.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(10);

impl SessionSettings {
    /// Settings from a tier's flags. Refuses heartbeats a session cannot
    /// keep: an interval under [`MIN_HEARTBEAT_INTERVAL`], or no miss allowed.
    pub fn new(
        window: u32,
        max_event_bytes: usize,
        heartbeat_interval: Duration,
        heartbeat_misses: u32,
    ) -> Result<Self, String> {
        if heartbeat_interval < MIN_HEARTBEAT_INTERVAL || heartbeat_misses == 0 {
            return Err(
                "--heartbeat-interval must be at least 10ms and --heartbeat-misses at least 1"
                    .to_string(),
            );
        }
        Ok(Self {
            window,
            window_bytes: DEFAULT_WINDOW_BYTES,
            max_event_bytes,
            heartbeat_interval,
            heartbeat_misses,
            hello_timeout: HELLO_TIMEOUT,
        })
    }

    /// The same with a byte window of `bytes` (at least 1).
    pub fn with_window_bytes(mut self, bytes: u64) -> Result<Self, String> {
        if bytes == 0 {
            return Err("--window-bytes must be at least 1".to_string());
        }
        self.window_bytes = bytes;
        Ok(self)
    }
}

/// A peer that said Hello and was welcomed.
#[derive(Clone, Debug)]
pub struct Caller {
    /// This stream's number.
    pub conn: ConnId,
    /// What the peer said about itself.
    pub hello: Hello,
    /// The peer's address, for logs and the console.
    pub address: String,
    /// The identity its certificate proved (`None` on a plaintext link).
    pub identity: Option<PeerIdentity>,
    /// When that certificate expires (`None` on a plaintext link), for
    /// operators to renew it in time.
    pub certified_until: Option<std::time::SystemTime>,
}

/// What a session knows about its peer, given to the [`Handler`] once per
/// heartbeat interval and when the stream ends.
#[derive(Clone, Debug)]
pub struct SessionView {
    /// Up, degraded after a missed ping, down after too many.
    pub status: PeerStatus,
    /// Round trips of the pings on this stream.
    pub rtt: RttStats,
    /// When the last pong arrived (0 = none yet).
    pub last_pong_unix_nanos: i64,
    /// When the peer last sent any frame.
    pub last_seen_unix_nanos: i64,
    /// Events taken from the peer on this stream.
    pub events_forwarded: u64,
    /// Batches taken from the peer on this stream.
    pub batches_forwarded: u64,
    /// Events taken and not yet acknowledged.
    pub in_flight: u64,
}

/// What the rest of a node can ask of a running session.
#[derive(Debug)]
pub enum SessionCommand {
    /// Send a probe ping; `answer` receives the round trip.
    Probe {
        /// Where the round trip goes (dropped if the peer does not answer).
        answer: oneshot::Sender<Duration>,
    },
    /// Ask the peer to probe its own downstream peers (a sidecar its clients).
    ProbeDownstream {
        /// The probe to forward; its `check_id` is replaced by the session's own.
        request: ProbeRequest,
        /// Where the peer's answer goes.
        answer: oneshot::Sender<ProbeResponse>,
    },
}

/// Asks the session behind `commands` for a probe ping; the round trip, or
/// `None` if the session is gone or the peer did not answer within `timeout`.
pub async fn probe(commands: &mpsc::Sender<SessionCommand>, timeout: Duration) -> Option<Duration> {
    let (answer, rtt) = oneshot::channel();
    commands.send(SessionCommand::Probe { answer }).await.ok()?;
    tokio::time::timeout(timeout, rtt).await.ok()?.ok()
}

/// How one batch ends: settled (see [`Settled`]), or a status that ends the
/// stream (nothing of the batch may be counted as delivered; the peer sends
/// it again).
pub type Settlement = BoxFuture<'static, Result<Settled, Status>>;

/// A settled batch: the events in it that can never be delivered, and
/// where in Kafka the others went (as far as known).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Settled {
    /// Events that will never be delivered, and why.
    pub rejected: Vec<Rejected>,
    /// Runs of events written to Kafka, with their partitions and offsets.
    pub placed: Vec<Placement>,
}

impl Settled {
    /// Settled with these rejected events and no placements.
    pub fn rejecting(rejected: Vec<Rejected>) -> Self {
        Self {
            rejected,
            placed: Vec::new(),
        }
    }

    fn extend(&mut self, other: Self) {
        self.rejected.extend(other.rejected);
        self.placed.extend(other.placed);
    }
}

/// What a tier does with the streams it accepts.
pub trait Tier: Send + Sync + 'static {
    /// The per-stream half.
    type Handler: Handler;

    /// Whether this node can deliver now (sent in the Welcome and every ping).
    fn ready(&self) -> bool;

    /// A peer was welcomed: register it and return its handler. `commands`
    /// reaches the session for as long as it runs. An error ends the stream.
    fn connected(
        &self,
        caller: &Caller,
        commands: mpsc::Sender<SessionCommand>,
    ) -> impl Future<Output = Result<Self::Handler, Status>> + Send;
}

/// The tier-specific half of one accepted stream.
pub trait Handler: Send + 'static {
    /// Checks a batch as soon as it is read, before it waits for room. An
    /// error ends the stream.
    fn check(&self, _batch: &Batch) -> Result<(), Status> {
        Ok(())
    }

    /// Waits until `batch`, the oldest waiting, can be forwarded. Batches read meanwhile
    /// wait in the session (at most the window's worth of events: the peer
    /// can send no more), and the session keeps reading the peer's pongs
    /// and reports, pinging and acknowledging.
    fn reserve(&mut self, _batch: &Batch) -> impl Future<Output = Result<(), Status>> + Send {
        async { Ok(()) }
    }

    /// Forwards a batch that passed the sequence, window and [`Handler::check`]
    /// checks; the returned future settles it.
    fn forward(&mut self, batch: Batch) -> impl Future<Output = Result<Settlement, Status>> + Send;

    /// The peer's periodic report.
    fn report(&mut self, report: Report) -> impl Future<Output = ()> + Send;

    /// A pong arrived with this round trip.
    fn rtt(&mut self, _rtt: Duration) {}

    /// Once per heartbeat interval, before the ping goes out.
    fn heartbeat(&mut self, view: SessionView);

    /// The stream ended (`reason` says why).
    fn ended(self, view: SessionView, reason: String) -> impl Future<Output = ()> + Send;
}

/// What every session of a node shares.
#[derive(Debug)]
struct Shared<T> {
    node_id: String,
    kind: NodeKind,
    tier: T,
    settings: SessionSettings,
    shutdown: CancellationToken,
    /// Every session task, so a node can wait for them to drain.
    sessions: TaskTracker,
    next_conn: AtomicU64,
    /// Hellos refused for their identity, logged at most every 10 s (a
    /// peer can repeat them at will).
    refused: std::sync::Mutex<LogEvery>,
}

/// The `smesh.mesh.v1.Mesh` service as a tier serves it.
#[derive(Debug)]
pub struct MeshService<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for MeshService<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T: Tier> MeshService<T> {
    /// A service for node `node_id` of `kind`. After `shutdown` new streams
    /// are refused and open ones stop reading and drain.
    pub fn new(
        node_id: String,
        kind: NodeKind,
        tier: T,
        settings: SessionSettings,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                node_id,
                kind,
                tier,
                settings,
                shutdown,
                sessions: TaskTracker::new(),
                next_conn: AtomicU64::new(1),
                refused: std::sync::Mutex::new(LogEvery::default()),
            }),
        }
    }

    /// The session tasks; `close()` and `wait()` on it to let them drain.
    pub fn sessions(&self) -> TaskTracker {
        self.shared.sessions.clone()
    }
}

/// Frames to a downstream peer, as a server stream hands them to tonic.
pub type DownlinkStream = ReceiverStream<Result<Downlink, Status>>;

#[tonic::async_trait]
impl<T: Tier> Mesh for MeshService<T> {
    type StreamStream = DownlinkStream;

    async fn stream(
        &self,
        request: Request<Streaming<Uplink>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let shared = &self.shared;
        let me = kind_name(shared.kind);
        if shared.shutdown.is_cancelled() {
            return Err(Status::unavailable(format!("{me} is shutting down")));
        }
        let connection = ConnectionInfo::of(&request).cloned();
        let address = connection
            .as_ref()
            .map_or_else(|| "unknown".to_string(), |c| c.remote.to_string());
        let mut inbound = request.into_inner();
        let hello = read_hello(&mut inbound, shared.settings.hello_timeout).await?;
        let identity = match authenticate(&hello, connection.as_ref()) {
            Ok(identity) => identity,
            Err(status) => {
                let mut refused = match shared.refused.lock() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if let Some(unlogged) = refused.tick() {
                    warn!(peer = %crate::ids::quote(&hello.node_id), %address, error = %status.message(), also_since_last_log = unlogged, "stream refused");
                }
                return Err(status);
            }
        };
        let welcome = Welcome {
            node_id: shared.node_id.clone(),
            kind: shared.kind as i32,
            version: crate::VERSION.to_string(),
            window: shared.settings.window,
            max_event_bytes: u32::try_from(shared.settings.max_event_bytes).unwrap_or(u32::MAX),
            ready: shared.tier.ready(),
            window_bytes: shared.settings.window_bytes,
        };
        let (out, rx) = mpsc::channel(DOWNLINK_FRAMES);
        out.send(Ok(down(Down::Welcome(welcome))))
            .await
            .map_err(|_| Status::cancelled("peer went away"))?;
        let caller = Caller {
            conn: shared.next_conn.fetch_add(1, Ordering::Relaxed),
            hello,
            address,
            identity,
            certified_until: connection.as_ref().and_then(|c| c.certified_until),
        };
        let (commands_tx, commands) = mpsc::channel(SESSION_COMMANDS);
        let handler = shared.tier.connected(&caller, commands_tx).await?;
        let peer_kind = NodeKind::try_from(caller.hello.kind).unwrap_or(NodeKind::Unspecified);
        info!(peer = %caller.hello.node_id, address = %caller.address, conn = caller.conn, "{} connected", kind_name(peer_kind));
        let session = Session {
            peer_kind,
            caller,
            shared: Arc::clone(shared),
            handler,
            inbound,
            out,
            commands,
            heartbeat: Heartbeat::new(shared.settings.heartbeat_misses),
            pending: FuturesOrdered::new(),
            in_flight: 0,
            in_flight_bytes: 0,
            next_seq: 1,
            waiting: VecDeque::new(),
            refused_log: LogEvery::default(),
            events_forwarded: 0,
            batches_forwarded: 0,
            last_seen_unix_nanos: now_unix_nanos(),
            probe_waiters: HashMap::new(),
            next_probe: 0,
        };
        shared.sessions.spawn(session.run());
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A batch's settlement, with what the session needs to acknowledge it.
/// A forwarded batch once settled: its number, events, bytes and outcome.
type SettledBatch = (u64, usize, u64, Result<Settled, Status>);
type Pending = BoxFuture<'static, SettledBatch>;

/// One accepted stream.
struct Session<T: Tier> {
    /// The peer's tier, for logs.
    peer_kind: NodeKind,
    caller: Caller,
    shared: Arc<Shared<T>>,
    handler: T::Handler,
    inbound: Streaming<Uplink>,
    /// Frames to the peer; the response stream ends when this is dropped.
    out: mpsc::Sender<Result<Downlink, Status>>,
    commands: mpsc::Receiver<SessionCommand>,
    heartbeat: Heartbeat,
    /// Forwarded batches in arrival order, each resolving to (seq, events,
    /// settlement): acks go out in this order.
    pending: FuturesOrdered<Pending>,
    /// Events taken and not yet acknowledged.
    in_flight: usize,
    /// Their encoded size.
    in_flight_bytes: u64,
    next_seq: u64,
    /// Batches read from the peer that the handler has no room for yet,
    /// oldest first; bounded by the window.
    waiting: VecDeque<Waiting>,
    /// Keeps the warning about refused events to one per interval.
    refused_log: LogEvery,
    events_forwarded: u64,
    batches_forwarded: u64,
    last_seen_unix_nanos: i64,
    /// Health checks waiting for the peer's ProbeResponse, by probe id.
    probe_waiters: HashMap<u64, oneshot::Sender<ProbeResponse>>,
    next_probe: u64,
}

impl<T: Tier> Session<T> {
    async fn run(mut self) {
        let outcome = self.serve().await;
        let reason = match &outcome {
            Ok(()) => "stream closed".to_string(),
            Err(status) => status.message().to_string(),
        };
        if let Err(status) = outcome {
            if status.code() != tonic::Code::Cancelled {
                warn!(peer = %self.caller.hello.node_id, address = %self.caller.address, conn = self.caller.conn, error = %status.message(), "ending stream");
            }
            let _ = self.out.send(Err(status)).await;
        }
        info!(peer = %self.caller.hello.node_id, address = %self.caller.address, conn = self.caller.conn, unacknowledged = self.in_flight, "{} disconnected", kind_name(self.peer_kind));
        let view = self.view();
        self.handler.ended(view, reason).await;
    }

    async fn serve(&mut self) -> Result<(), Status> {
        let mut ticker = tokio::time::interval(self.shared.settings.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.shared.shutdown.clone();
        // Draining: no new batches, but pongs and reports are still read
        // (a peer that answers is not presumed dead while acks are awaited).
        let mut draining = false;
        // Whether the peer may still send (it has not half-closed).
        let mut reading = true;
        loop {
            tokio::select! {
                biased;
                Some(settled) = self.pending.next(), if !self.pending.is_empty() => {
                    self.settle(settled).await?;
                }
                reserved = reserve_for(&mut self.handler, &self.waiting), if !self.waiting.is_empty() => {
                    reserved?;
                    if let Some(waiting) = self.waiting.pop_front() {
                        self.forward(waiting).await?;
                    }
                }
                () = shutdown.cancelled(), if !draining => {
                    debug!(peer = %self.caller.hello.node_id, pending = self.pending.len(), "draining before shutdown");
                    draining = true;
                }
                _ = ticker.tick() => self.heartbeat_tick().await?,
                Some(command) = self.commands.recv() => self.command(command).await?,
                frame = self.inbound.message(), if reading => match frame {
                    Ok(Some(uplink)) => self.on_frame(uplink, draining).await?,
                    Ok(None) => {
                        reading = false;
                        draining = true;
                    }
                    Err(status) => {
                        debug!(peer = %self.caller.hello.node_id, %status, "peer broke the stream");
                        return Err(Status::cancelled("peer broke the stream"));
                    }
                },
            }
            if draining && self.waiting.is_empty() && self.pending.is_empty() {
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

    async fn on_frame(&mut self, uplink: Uplink, draining: bool) -> Result<(), Status> {
        self.last_seen_unix_nanos = now_unix_nanos();
        match uplink.frame {
            Some(Up::Batch(batch)) if draining => {
                // Never acknowledged: the peer sends it again elsewhere.
                debug!(peer = %self.caller.hello.node_id, seq = batch.seq, "draining: batch not taken");
                Ok(())
            }
            Some(Up::Batch(batch)) => self.accept(batch),
            Some(Up::Pong(pong)) => {
                if let Some(rtt) = self.heartbeat.pong(&pong, Instant::now()) {
                    self.handler.rtt(rtt);
                }
                Ok(())
            }
            Some(Up::Report(report)) => {
                self.handler.report(report).await;
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

    /// Checks a batch read from the peer; it waits in `waiting` for room.
    /// Batches read while draining are never taken (see `on_frame`).
    fn accept(&mut self, mut batch: Batch) -> Result<(), Status> {
        if batch.seq != self.next_seq {
            return Err(Status::invalid_argument(format!(
                "batch {} out of order, expected {}",
                batch.seq, self.next_seq
            )));
        }
        self.next_seq += 1;
        let n = batch.events.len();
        let window = self.shared.settings.window as usize;
        if self.in_flight + n > window {
            return Err(Status::resource_exhausted(format!(
                "window exceeded: {} events unacknowledged, window is {window}",
                self.in_flight + n
            )));
        }
        let window_bytes = self.shared.settings.window_bytes;
        if self.in_flight_bytes >= window_bytes {
            return Err(Status::resource_exhausted(format!(
                "byte window exceeded: a batch sent while {} bytes were unacknowledged, window is {window_bytes} bytes",
                self.in_flight_bytes
            )));
        }
        let bytes = event::batch_bytes(&batch.events);
        self.handler.check(&batch)?;
        // The Welcome said how large an event may be: larger ones are
        // refused here, each on its own (the peer keeps them in its
        // rejected file), and dropped before they wait for anything.
        let max = self.shared.settings.max_event_bytes;
        let mut refused = Vec::new();
        batch.events.retain(|event| {
            let size = event::limited_len(event);
            if size <= max {
                return true;
            }
            refused.push(Rejected {
                event_id: event.id.clone(),
                reason: event::InvalidEvent::TooLarge {
                    id: event.id.clone(),
                    size,
                    max,
                }
                .to_string(),
            });
            false
        });
        if !refused.is_empty() {
            let peer = &self.caller.hello.node_id;
            if let Some(unlogged) = self.refused_log.tick() {
                warn!(%peer, address = %self.caller.address, refused = refused.len(), also_since_last_log = unlogged, max_event_bytes = max, "events larger than this node's limit refused (this warning at most every 10 s)");
            }
        }
        self.in_flight += n;
        self.in_flight_bytes += bytes;
        self.events_forwarded += n as u64;
        self.batches_forwarded += 1;
        self.waiting.push_back(Waiting {
            batch,
            refused,
            bytes,
        });
        Ok(())
    }

    async fn forward(
        &mut self,
        Waiting {
            batch,
            refused,
            bytes,
        }: Waiting,
    ) -> Result<(), Status> {
        let seq = batch.seq;
        let n = batch.events.len() + refused.len();
        let settlement: Settlement = if batch.events.is_empty() {
            Box::pin(std::future::ready(Ok(Settled::default())))
        } else {
            self.handler.forward(batch).await?
        };
        let settlement = settlement.map(move |outcome| {
            outcome.map(|mut settled| {
                settled.rejected.extend(refused);
                settled
            })
        });
        self.pending.push_back(Box::pin(
            settlement.map(move |outcome| (seq, n, bytes, outcome)),
        ));
        Ok(())
    }

    /// Acknowledges settled batches as one cumulative ack (several may be
    /// settled at once).
    async fn settle(&mut self, (seq, n, bytes, outcome): SettledBatch) -> Result<(), Status> {
        let mut through = seq;
        let mut settled = outcome?;
        self.in_flight = self.in_flight.saturating_sub(n);
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(bytes);
        while let Some(Some((seq, n, bytes, outcome))) = self.pending.next().now_or_never() {
            settled.extend(outcome?);
            through = seq;
            self.in_flight = self.in_flight.saturating_sub(n);
            self.in_flight_bytes = self.in_flight_bytes.saturating_sub(bytes);
        }
        let Settled { rejected, placed } = settled;
        self.send(Down::Ack(Ack {
            through,
            rejected,
            placed,
        }))
        .await
    }

    fn view(&self) -> SessionView {
        let now = Instant::now();
        let last_pong_unix_nanos = self.heartbeat.last_pong().map_or(0, |at| {
            now_unix_nanos() - i64::try_from((now - at).as_nanos()).unwrap_or(0)
        });
        SessionView {
            status: self.heartbeat.status(),
            rtt: self.heartbeat.rtt().stats(),
            last_pong_unix_nanos,
            last_seen_unix_nanos: self.last_seen_unix_nanos,
            events_forwarded: self.events_forwarded,
            batches_forwarded: self.batches_forwarded,
            in_flight: self.in_flight as u64,
        }
    }

    async fn heartbeat_tick(&mut self) -> Result<(), Status> {
        let ping = self
            .heartbeat
            .tick(Instant::now(), self.shared.tier.ready());
        let view = self.view();
        let status = view.status;
        self.handler.heartbeat(view);
        if status == PeerStatus::Down {
            return Err(Status::deadline_exceeded(format!(
                "{} missed {} heartbeats",
                kind_name(self.peer_kind),
                self.heartbeat.missed()
            )));
        }
        self.send(Down::Ping(ping)).await
    }

    async fn command(&mut self, command: SessionCommand) -> Result<(), Status> {
        match command {
            SessionCommand::Probe { answer } => {
                let ping = self
                    .heartbeat
                    .probe(Instant::now(), self.shared.tier.ready(), answer);
                self.send(Down::Ping(ping)).await
            }
            SessionCommand::ProbeDownstream {
                mut request,
                answer,
            } => {
                self.next_probe += 1;
                request.check_id = self.next_probe;
                // Forget waiters whose health check already gave up.
                self.probe_waiters.retain(|_, waiter| !waiter.is_closed());
                self.probe_waiters.insert(request.check_id, answer);
                self.send(Down::ProbeRequest(request)).await
            }
        }
    }
}

/// A batch read and checked, waiting for the handler to have room.
struct Waiting {
    /// The events to forward.
    batch: Batch,
    /// Events refused at the door (too large); acknowledged as rejected
    /// with the batch.
    refused: Vec<Rejected>,
    /// The batch's encoded events as read, refused ones included: what it
    /// counts against the byte window.
    bytes: u64,
}

/// Waits until the handler can take the oldest waiting batch.
async fn reserve_for<H: Handler>(
    handler: &mut H,
    waiting: &VecDeque<Waiting>,
) -> Result<(), Status> {
    match waiting.front() {
        Some(waiting) => handler.reserve(&waiting.batch).await,
        None => std::future::pending().await,
    }
}

/// The accepting side's first step on a stream: the Hello.
async fn read_hello(inbound: &mut Streaming<Uplink>, timeout: Duration) -> Result<Hello, Status> {
    let first = tokio::time::timeout(timeout, inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no Hello within the hello timeout"))??;
    match first.and_then(|u| u.frame) {
        Some(Up::Hello(hello)) => {
            check_hello(&hello)?;
            Ok(hello)
        }
        _ => Err(Status::invalid_argument(
            "the first frame of a stream must be Hello",
        )),
    }
}

/// Refuses a Hello whose id, version or incarnation could not be shown or
/// stored safely (see [`crate::ids`]).
fn check_hello(hello: &Hello) -> Result<(), Status> {
    if let Some(problem) = ids::id_problem(&hello.node_id) {
        return Err(Status::invalid_argument(format!(
            "Hello: node id {} {problem}",
            ids::quote(&hello.node_id)
        )));
    }
    for (what, text) in [
        ("version", &hello.version),
        ("incarnation", &hello.incarnation),
    ] {
        if let Some(problem) = ids::label_problem(text) {
            return Err(Status::invalid_argument(format!(
                "Hello: {what} {} {problem}",
                ids::quote(text)
            )));
        }
    }
    Ok(())
}

/// The identity a Hello may use on this connection: on a TLS connection,
/// only one the peer's certificate names; `None` on a plaintext one.
fn authenticate(
    hello: &Hello,
    connection: Option<&ConnectionInfo>,
) -> Result<Option<PeerIdentity>, Status> {
    let Some(certified) = connection.and_then(|c| c.certified.as_ref()) else {
        return Ok(None);
    };
    let kind = NodeKind::try_from(hello.kind).unwrap_or(NodeKind::Unspecified);
    let Some(tier) = tls::Tier::of(kind) else {
        return Err(Status::permission_denied(
            "Hello names no tier (client or sidecar): refused on a TLS link",
        ));
    };
    let claimed = PeerIdentity::new(tier, hello.node_id.clone());
    if certified.contains(&claimed) {
        return Ok(Some(claimed));
    }
    Err(Status::permission_denied(format!(
        "Hello as {claimed}, but the peer's certificate is for {}: a node may only use the id and tier its certificate names",
        tls::names(certified)
    )))
}

/// A downlink frame.
fn down(frame: Down) -> Downlink {
    Downlink { frame: Some(frame) }
}

/// A tier's name in log lines and messages.
pub fn kind_name(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Client => "client",
        NodeKind::Sidecar => "sidecar",
        NodeKind::Master => "master",
        NodeKind::Unspecified => "peer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::Tier;

    #[test]
    fn a_hello_may_use_only_an_identity_its_certificate_names() {
        let hello = |kind: NodeKind, id: &str| Hello {
            node_id: id.into(),
            kind: kind as i32,
            ..Hello::default()
        };
        let over_tls = ConnectionInfo {
            remote: "127.0.0.1:1".parse().expect("address"),
            certified: Some(vec![PeerIdentity::new(Tier::Client, "c1")].into()),
            certified_until: None,
        };
        let plaintext = ConnectionInfo {
            certified: None,
            certified_until: None,
            ..over_tls.clone()
        };
        assert_eq!(
            authenticate(&hello(NodeKind::Client, "c1"), Some(&over_tls)).expect("its own"),
            Some(PeerIdentity::new(Tier::Client, "c1"))
        );
        for (kind, id) in [
            (NodeKind::Client, "c2"),
            (NodeKind::Sidecar, "c1"),
            (NodeKind::Unspecified, "c1"),
        ] {
            let refused = authenticate(&hello(kind, id), Some(&over_tls)).expect_err("refused");
            assert_eq!(
                refused.code(),
                tonic::Code::PermissionDenied,
                "{kind:?} {id}"
            );
        }
        assert_eq!(
            authenticate(&hello(NodeKind::Client, "c2"), Some(&plaintext)).expect("plaintext"),
            None
        );
    }

    #[test]
    fn settings_refuse_heartbeats_a_session_cannot_keep() {
        let settings = SessionSettings::new(10, 1000, Duration::from_secs(1), 3).expect("valid");
        assert_eq!(settings.hello_timeout, HELLO_TIMEOUT);
        for (interval, misses) in [(Duration::from_millis(9), 3), (Duration::from_secs(1), 0)] {
            let err = SessionSettings::new(10, 1000, interval, misses).expect_err("refused");
            assert!(err.contains("--heartbeat-interval"), "{err}");
        }
        assert!(SessionSettings::new(10, 1000, MIN_HEARTBEAT_INTERVAL, 1).is_ok());
    }
}
