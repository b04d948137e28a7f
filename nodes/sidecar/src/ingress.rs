//! Client streams: one session task per connected client.
//!
//! A session reads the client's batches and hands them to the master link
//! (bounded: when the link is full the session stops reading, and HTTP/2
//! flow control pushes back on the client), relays the link's settlements as
//! cumulative acks, pings the client every heartbeat interval and keeps the
//! client's row in the [`ClientTable`](crate::clients::ClientTable) fresh.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use smesh_core::grpc::{self, down};
use smesh_core::heartbeat::Heartbeat;
use smesh_core::time::now_unix_nanos;
use smesh_proto::mesh::downlink::Frame as Down;
use smesh_proto::mesh::mesh_server::Mesh;
use smesh_proto::mesh::uplink::Frame as Up;
use smesh_proto::mesh::{
    Ack, Batch, ClientInfo, Downlink, Hello, NodeKind, PeerStatus, Uplink, Welcome,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::clients::{ClientCommand, ConnId, TableEvent, TableHandle};
use crate::upstream::{Forward, Settle};

/// Settings every client stream shares.
#[derive(Clone, Debug)]
pub struct IngressSettings {
    /// Events a client may have unacknowledged.
    pub window: u32,
    pub max_event_bytes: usize,
    pub heartbeat_interval: Duration,
    pub heartbeat_misses: u32,
    pub hello_timeout: Duration,
}

/// What every session shares.
#[derive(Debug)]
pub struct Ingress {
    pub node_id: String,
    pub settings: IngressSettings,
    pub upstream: mpsc::Sender<Forward>,
    /// Whether the master link can deliver right now.
    pub ready: watch::Receiver<bool>,
    pub table: TableHandle,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    pub next_conn: AtomicU64,
}

/// The `smesh.mesh.v1.Mesh` service as a sidecar serves it.
#[derive(Clone, Debug)]
pub struct IngressService {
    ingress: Arc<Ingress>,
}

impl IngressService {
    pub fn new(ingress: Arc<Ingress>) -> Self {
        Self { ingress }
    }
}

type DownlinkResult = Result<Downlink, Status>;

#[tonic::async_trait]
impl Mesh for IngressService {
    type StreamStream = grpc::DownlinkStream;

    async fn stream(
        &self,
        request: Request<Streaming<Uplink>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let ingress = &self.ingress;
        if ingress.shutdown.is_cancelled() {
            return Err(Status::unavailable("sidecar is shutting down"));
        }
        let welcome = Welcome {
            node_id: ingress.node_id.clone(),
            kind: NodeKind::Sidecar as i32,
            version: smesh_core::VERSION.to_string(),
            window: ingress.settings.window,
            max_event_bytes: u32::try_from(ingress.settings.max_event_bytes).unwrap_or(u32::MAX),
            ready: *ingress.ready.borrow(),
        };
        let (accepted, response) =
            grpc::accept_stream(request, ingress.settings.hello_timeout, welcome).await?;
        let grpc::Accepted {
            hello,
            address,
            inbound,
            out,
        } = accepted;
        let conn = ingress.next_conn.fetch_add(1, Ordering::Relaxed);
        let (commands_tx, commands) = mpsc::channel(16);
        let (settle_tx, settles) = mpsc::unbounded_channel();
        let now = now_unix_nanos();
        let info = ClientInfo {
            client_id: hello.node_id.clone(),
            address: address.clone(),
            first_seen_unix_nanos: now,
            last_seen_unix_nanos: now,
            status: PeerStatus::Up as i32,
            version: hello.version.clone(),
            ..ClientInfo::default()
        };
        info!(client = %hello.node_id, %address, conn, "client connected");
        ingress
            .table
            .send(TableEvent::Connected {
                conn,
                info: info.clone(),
                commands: commands_tx,
            })
            .await;
        let session = Session {
            conn,
            hello,
            ingress: Arc::clone(ingress),
            inbound,
            out,
            commands,
            settle_tx,
            settles,
            heartbeat: Heartbeat::new(ingress.settings.heartbeat_misses),
            info,
            next_seq: 1,
            unsettled: VecDeque::new(),
            in_flight: 0,
            waiting: None,
        };
        ingress.tasks.spawn(session.run());
        Ok(Response::new(response))
    }
}

struct Session {
    conn: ConnId,
    hello: Hello,
    ingress: Arc<Ingress>,
    inbound: Streaming<Uplink>,
    out: mpsc::Sender<DownlinkResult>,
    commands: mpsc::Receiver<ClientCommand>,
    /// Given to the master link with every batch; bounded by the window.
    settle_tx: mpsc::UnboundedSender<Settle>,
    settles: mpsc::UnboundedReceiver<Settle>,
    heartbeat: Heartbeat,
    info: ClientInfo,
    next_seq: u64,
    /// Batches forwarded and not yet settled: (client batch seq, events).
    unsettled: VecDeque<(u64, usize)>,
    in_flight: usize,
    /// A batch read from the client that the master link has no room for yet.
    waiting: Option<Forward>,
}

impl Session {
    async fn run(mut self) {
        let outcome = self.serve().await;
        if let Err(status) = outcome {
            if status.code() != tonic::Code::Cancelled {
                warn!(client = %self.hello.node_id, conn = self.conn, error = %status.message(), "ending client stream");
            }
            let _ = self.out.send(Err(status)).await;
        }
        info!(client = %self.hello.node_id, conn = self.conn, unacknowledged = self.in_flight, "client disconnected");
        self.info.status = PeerStatus::Down as i32;
        self.info.in_flight = self.in_flight as u64;
        self.ingress
            .table
            .send(TableEvent::Disconnected {
                conn: self.conn,
                info: self.info.clone(),
            })
            .await;
    }

    async fn serve(&mut self) -> Result<(), Status> {
        let settings = self.ingress.settings.clone();
        let mut ticker = tokio::time::interval(settings.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.ingress.shutdown.clone();
        let upstream = self.ingress.upstream.clone();
        let mut draining = false;
        loop {
            tokio::select! {
                biased;
                Some(settle) = self.settles.recv() => self.settle(settle).await?,
                permit = upstream.reserve(), if self.waiting.is_some() => {
                    let permit = permit.map_err(|_| Status::unavailable("sidecar is shutting down"))?;
                    if let Some(forward) = self.waiting.take() {
                        permit.send(forward);
                    }
                }
                () = shutdown.cancelled(), if !draining => draining = true,
                _ = ticker.tick() => self.heartbeat_tick().await?,
                Some(command) = self.commands.recv() => match command {
                    ClientCommand::Probe { answer } => {
                        let ping = self.heartbeat.probe(Instant::now(), *self.ingress.ready.borrow(), answer);
                        self.send(Down::Ping(ping)).await?;
                    }
                },
                frame = self.inbound.message(), if self.waiting.is_none() && !draining => match frame {
                    Ok(Some(uplink)) => self.on_frame(uplink)?,
                    Ok(None) => draining = true,
                    Err(status) => {
                        debug!(client = %self.hello.node_id, %status, "client broke the stream");
                        return Err(Status::cancelled("client broke the stream"));
                    }
                },
            }
            if draining && self.waiting.is_none() && self.unsettled.is_empty() {
                return Ok(());
            }
        }
    }

    async fn send(&mut self, frame: Down) -> Result<(), Status> {
        self.out
            .send(Ok(down(frame)))
            .await
            .map_err(|_| Status::cancelled("client went away"))
    }

    fn on_frame(&mut self, uplink: Uplink) -> Result<(), Status> {
        self.info.last_seen_unix_nanos = now_unix_nanos();
        match uplink.frame {
            Some(Up::Batch(batch)) => self.accept(batch),
            Some(Up::Pong(pong)) => {
                self.heartbeat.pong(&pong, Instant::now());
                Ok(())
            }
            Some(Up::Report(report)) => {
                self.info.backlog = report.backlog;
                self.info.counters = report.counters;
                Ok(())
            }
            Some(Up::ProbeResponse(_)) => Ok(()),
            Some(Up::Hello(_)) => Err(Status::invalid_argument("Hello sent twice on one stream")),
            None => Err(Status::invalid_argument("empty frame")),
        }
    }

    fn accept(&mut self, batch: Batch) -> Result<(), Status> {
        if batch.seq != self.next_seq {
            return Err(Status::invalid_argument(format!(
                "batch {} out of order, expected {}",
                batch.seq, self.next_seq
            )));
        }
        self.next_seq += 1;
        let n = batch.events.len();
        let window = self.ingress.settings.window as usize;
        if self.in_flight + n > window {
            return Err(Status::resource_exhausted(format!(
                "window exceeded: {} events unacknowledged, window is {window}",
                self.in_flight + n
            )));
        }
        if let Some(foreign) = batch
            .events
            .iter()
            .find(|e| e.client_id != self.hello.node_id)
        {
            return Err(Status::invalid_argument(format!(
                "event {} claims client {:?} on the stream of client {:?}",
                foreign.id, foreign.client_id, self.hello.node_id
            )));
        }
        self.in_flight += n;
        self.unsettled.push_back((batch.seq, n));
        self.info.events_forwarded += n as u64;
        self.info.batches_forwarded += 1;
        self.waiting = Some(Forward {
            client_seq: batch.seq,
            events: batch.events,
            settle: self.settle_tx.clone(),
        });
        Ok(())
    }

    /// Relays settlements as one cumulative ack (several may be queued).
    async fn settle(&mut self, first: Settle) -> Result<(), Status> {
        let mut through = first.through;
        let mut rejected = first.rejected;
        while let Ok(more) = self.settles.try_recv() {
            through = through.max(more.through);
            rejected.extend(more.rejected);
        }
        while let Some(&(seq, n)) = self.unsettled.front() {
            if seq > through {
                break;
            }
            self.unsettled.pop_front();
            self.in_flight -= n;
        }
        self.send(Down::Ack(Ack { through, rejected })).await
    }

    async fn heartbeat_tick(&mut self) -> Result<(), Status> {
        let ping = self
            .heartbeat
            .tick(Instant::now(), *self.ingress.ready.borrow());
        let status = self.heartbeat.status();
        self.info.status = status as i32;
        self.info.rtt = Some(self.heartbeat.rtt().stats());
        self.info.in_flight = self.in_flight as u64;
        self.ingress.table.try_send(TableEvent::Update {
            conn: self.conn,
            info: self.info.clone(),
        });
        if status == PeerStatus::Down {
            return Err(Status::deadline_exceeded(format!(
                "client missed {} heartbeats",
                self.heartbeat.missed()
            )));
        }
        self.send(Down::Ping(ping)).await
    }
}
