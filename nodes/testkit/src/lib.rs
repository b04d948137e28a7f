//! In-process pieces for tests of both ends of `Mesh.Stream`.
//!
//! - [`Upstream`]: a [`MeshService`] on `127.0.0.1:0` whose tier hands every
//!   forwarded batch to the test, which decides when and how it settles, and
//!   tells the test what its sessions saw ([`Seen`]).
//! - [`RawPeer`]: a hand-driven downstream peer speaking raw frames, so a
//!   test can also break the protocol.
//!
//! Test code: it panics (with a message) when something does not arrive in
//! time.

#![allow(clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use smesh_core::grpc;
use smesh_core::peers::Peer;
use smesh_core::session::{
    Caller, Handler, MeshService, SessionCommand, SessionSettings, SessionView, Settled,
    Settlement, Tier,
};
use smesh_proto::mesh::downlink::Frame as Down;
use smesh_proto::mesh::mesh_client::MeshClient;
use smesh_proto::mesh::uplink::Frame as Up;
use smesh_proto::mesh::{
    Ack, Batch, Downlink, Event, Hello, NodeKind, Pong, Rejected, Report, Uplink,
};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

/// A batch the upstream received, waiting for the test to settle it.
#[derive(Debug)]
pub struct Forwarded {
    pub batch: Batch,
    pub settle: oneshot::Sender<Result<Vec<Rejected>, Status>>,
}

/// What a session told its tier.
#[derive(Debug)]
pub enum Seen {
    Connected(Caller),
    Report(Report),
    Heartbeat(SessionView),
    Ended(SessionView, String),
}

#[derive(Debug)]
pub struct TestTier {
    ready: Arc<AtomicBool>,
    forwarded: mpsc::UnboundedSender<Forwarded>,
    seen: mpsc::UnboundedSender<Seen>,
    /// Batches the handler may take before `reserve` waits.
    room: Arc<Semaphore>,
}

#[derive(Debug)]
pub struct TestHandler {
    forwarded: mpsc::UnboundedSender<Forwarded>,
    seen: mpsc::UnboundedSender<Seen>,
    room: Arc<Semaphore>,
}

impl Tier for TestTier {
    type Handler = TestHandler;

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    async fn connected(
        &self,
        caller: &Caller,
        _commands: mpsc::Sender<SessionCommand>,
    ) -> Result<TestHandler, Status> {
        let _ = self.seen.send(Seen::Connected(caller.clone()));
        Ok(TestHandler {
            forwarded: self.forwarded.clone(),
            seen: self.seen.clone(),
            room: Arc::clone(&self.room),
        })
    }
}

impl Handler for TestHandler {
    async fn reserve(&mut self, _batch: &Batch) -> Result<(), Status> {
        let permit = self
            .room
            .acquire()
            .await
            .map_err(|_| Status::unavailable("closed"))?;
        permit.forget();
        Ok(())
    }

    async fn forward(&mut self, batch: Batch) -> Result<Settlement, Status> {
        let (settle, settled) = oneshot::channel();
        let _ = self.forwarded.send(Forwarded { batch, settle });
        Ok(settled
            .map(|outcome| {
                outcome
                    .unwrap_or_else(|_| Err(Status::unavailable("test dropped it")))
                    .map(Settled::rejecting)
            })
            .boxed())
    }

    async fn report(&mut self, report: Report) {
        let _ = self.seen.send(Seen::Report(report));
    }

    fn heartbeat(&mut self, view: SessionView) {
        let _ = self.seen.send(Seen::Heartbeat(view));
    }

    async fn ended(self, view: SessionView, reason: String) {
        let _ = self.seen.send(Seen::Ended(view, reason));
    }
}

/// A running upstream.
#[derive(Debug)]
pub struct Upstream {
    pub peer: Peer,
    pub ready: Arc<AtomicBool>,
    pub forwarded: mpsc::UnboundedReceiver<Forwarded>,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    pub room: Arc<Semaphore>,
    pub shutdown: CancellationToken,
    pub served: JoinHandle<()>,
}

pub fn settings() -> SessionSettings {
    SessionSettings {
        window: 100,
        window_bytes: 16 << 20,
        max_event_bytes: 1_000_000,
        heartbeat_interval: Duration::from_secs(1),
        heartbeat_misses: 3,
        hello_timeout: Duration::from_secs(5),
    }
}

impl Upstream {
    /// Serves `settings` as a sidecar named `id` on an ephemeral port.
    pub async fn start(id: &str, settings: SessionSettings) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (forwarded_tx, forwarded) = mpsc::unbounded_channel();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let ready = Arc::new(AtomicBool::new(true));
        let room = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
        let shutdown = CancellationToken::new();
        let tier = TestTier {
            ready: Arc::clone(&ready),
            forwarded: forwarded_tx,
            seen: seen_tx,
            room: Arc::clone(&room),
        };
        let mesh = MeshService::new(
            id.to_string(),
            NodeKind::Sidecar,
            tier,
            settings,
            shutdown.clone(),
        );
        let (_, health, reflection) = grpc::health_and_reflection().expect("health");
        let token = shutdown.clone();
        let served = tokio::spawn(async move {
            let sessions = mesh.sessions();
            let _ = grpc::serve_mesh(mesh, health, reflection, listener, None, token).await;
            sessions.close();
            sessions.wait().await;
        });
        Self {
            peer: Peer::new(id.to_string(), "127.0.0.1", port),
            ready,
            forwarded,
            seen,
            room,
            shutdown,
            served,
        }
    }

    /// The next batch forwarded (within 10 s).
    pub async fn batch(&mut self) -> Forwarded {
        tokio::time::timeout(Duration::from_secs(10), self.forwarded.recv())
            .await
            .expect("a batch in time")
            .expect("the tier is alive")
    }

    /// The next thing a session told its tier that `pick` accepts (within
    /// 10 s).
    pub async fn seen<T>(&mut self, mut pick: impl FnMut(Seen) -> Option<T>) -> T {
        let wanted = async {
            loop {
                let seen = self.seen.recv().await.expect("the tier is alive");
                if let Some(value) = pick(seen) {
                    return value;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wanted)
            .await
            .expect("the expected news from a session in time")
    }
}

/// A hand-driven downstream peer: raw frames, so tests can also break the
/// protocol.
#[derive(Debug)]
pub struct RawPeer {
    pub tx: mpsc::Sender<Uplink>,
    pub inbound: Streaming<Downlink>,
}

impl RawPeer {
    /// Opens a stream and sends `first` (normally a Hello).
    pub async fn open(peer: &Peer, first: Option<Up>) -> Result<Self, Status> {
        Self::open_with(peer, first, None).await
    }

    /// [`RawPeer::open`] through mutual TLS with `tls`.
    pub async fn open_with(
        peer: &Peer,
        first: Option<Up>,
        tls: Option<&tonic::transport::ClientTlsConfig>,
    ) -> Result<Self, Status> {
        let channel = grpc::connect(&peer.uri(), Duration::from_secs(2), tls)
            .await
            .map_err(|e| Status::unavailable(grpc::error_chain(&e)))?;
        let (tx, rx) = mpsc::channel(64);
        if let Some(frame) = first {
            tx.send(Uplink { frame: Some(frame) })
                .await
                .map_err(|_| Status::cancelled("closed"))?;
        }
        let response = MeshClient::new(channel)
            .stream(ReceiverStream::new(rx))
            .await?;
        Ok(Self {
            tx,
            inbound: response.into_inner(),
        })
    }

    pub async fn send(&self, frame: Up) {
        self.tx
            .send(Uplink { frame: Some(frame) })
            .await
            .expect("stream open");
    }

    /// The next frame, or the status the stream ended with.
    pub async fn next(&mut self) -> Result<Option<Downlink>, Status> {
        tokio::time::timeout(Duration::from_secs(30), self.inbound.message())
            .await
            .expect("a frame in time")
    }

    /// Frames until an ack or the end of the stream, answering pings.
    pub async fn ack_or_end(&mut self) -> Next {
        loop {
            match self.inbound.message().await {
                Ok(Some(frame)) => match frame.frame {
                    Some(Down::Ack(ack)) => return Next::Ack(ack),
                    Some(Down::Ping(ping)) => {
                        let pong = Up::Pong(Pong {
                            nonce: ping.nonce,
                            sent_unix_nanos: ping.sent_unix_nanos,
                        });
                        let _ = self.tx.send(Uplink { frame: Some(pong) }).await;
                    }
                    _ => {}
                },
                Ok(None) => return Next::Ended(None),
                Err(status) => return Next::Ended(Some(status)),
            }
        }
    }
}

/// What a stream brings next, pings aside.
#[derive(Debug)]
pub enum Next {
    Ack(Ack),
    /// The upstream ended the stream, with its reason if it gave one.
    Ended(Option<Status>),
}

/// The next event of `link` that is not a readiness change, a probe or a
/// round trip (within 30 s).
pub async fn next_link_event(link: &mut smesh_core::link::Link) -> smesh_core::link::LinkEvent {
    use smesh_core::link::LinkEvent;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), link.next())
            .await
            .expect("a link event in time");
        // Status reports are not the transitions tests wait for.
        if !matches!(
            event,
            LinkEvent::Ready(_) | LinkEvent::Probe(_) | LinkEvent::RoundTrip(_)
        ) {
            return event;
        }
    }
}

pub fn hello(id: &str) -> Up {
    Up::Hello(Hello {
        node_id: id.to_string(),
        kind: NodeKind::Client as i32,
        version: "test".to_string(),
        incarnation: "1".to_string(),
    })
}

/// The incarnation of the events [`events`] makes.
pub const INCARNATION: u64 = 0x5e55_1011;

/// `n` valid events of client `client` (incarnation [`INCARNATION`]),
/// sequences from `first`, each with the data `reading <sequence>`.
pub fn events(client: &str, first: u64, n: usize) -> Vec<Event> {
    (0..n as u64)
        .map(|i| Event {
            id: smesh_core::event::event_id(client, INCARNATION, first + i),
            source: format!("test/{client}"),
            r#type: "dev.smesh.test".to_string(),
            specversion: smesh_core::event::SPEC_VERSION.to_string(),
            time_unix_nanos: smesh_core::time::now_unix_nanos(),
            datacontenttype: "text/plain".to_string(),
            client_id: client.to_string(),
            sequence: first + i,
            incarnation: INCARNATION,
            data: format!("reading {}", first + i).into_bytes().into(),
            ..Event::default()
        })
        .collect()
}

pub fn batch(seq: u64, events: Vec<Event>) -> Up {
    Up::Batch(Batch { seq, events })
}
