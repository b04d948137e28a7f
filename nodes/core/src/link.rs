//! The dialing end of `Mesh.Stream`, written once for every tier that opens
//! streams: a client to its sidecars, a sidecar to its masters.
//!
//! A [`Link`] walks the node's peer list ([`PeerWalk`]: the node's order of
//! preference, [`PeerOrder`], the next peer after a failure, a backoff pause
//! after a whole round failed), keeps one stream open, and runs the dialing side of the
//! protocol on it: Hello and Welcome, batches numbered from 1 on each
//! stream, the window of unacknowledged events, cumulative acks, pongs to
//! the upstream's pings, and silence past the heartbeat timeout taken as
//! death. Optionally it leaves an upstream that keeps saying it cannot
//! deliver for one that can.
//!
//! The peer list is live (a `watch` channel, see [`crate::live_peers`]):
//! when it changes the walk takes the new list in the node's order. A
//! stream to a peer no longer listed is drained: no new batch goes on it,
//! and once everything sent on it is acknowledged the link leaves it (with
//! a [`LinkEvent::Down`]) for the first peer of the new list. If the peer
//! dies first, the owner resends what was in flight as after any loss.
//!
//! With `rebalance_every`, a link that is not on its first choice (another
//! peer failed over to, or a peer added since) looks, once per jittered
//! interval, whether a peer it prefers can deliver; if one can, it stops
//! sending, waits until everything in flight is acknowledged, and switches
//! between batches: nothing is resent, and a rejoining peer gets its share
//! back spread over the interval instead of all at once.
//!
//! The node that owns the link drives it from its own task: it awaits
//! [`Link::next`] beside its other work (the future is cancel-safe) and
//! reacts to [`LinkEvent`]s, and it sends batches with [`Link::send_batch`]
//! while [`Link::room`] allows. What it keeps for resending is its own
//! business: when a stream is lost ([`LinkEvent::Down`]) every batch sent on
//! it counts as unacknowledged, and the next stream starts empty.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use rand::Rng;
use smesh_proto::mesh::downlink::Frame as Down;
use smesh_proto::mesh::mesh_client::MeshClient;
use smesh_proto::mesh::uplink::Frame as Up;
use smesh_proto::mesh::{
    Batch, Downlink, Event, Hello, NodeKind, Placement, Pong, ProbeRequest, Rejected, Uplink,
    Welcome,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::event;
use crate::grpc;
use crate::heartbeat::{Liveness, answer};
use crate::peers::{Peer, PeerOrder, preference};
use crate::session::kind_name;
use crate::tls::{NodeTls, Tier};

/// Frames queued towards the peer before the sender waits (HTTP/2 flow
/// control and the event window bound what is really in flight).
const OUTBOUND_FRAMES: usize = 64;

/// A stream to an upstream peer, past the Hello/Welcome exchange.
#[derive(Debug)]
pub struct OpenStream {
    /// Who answered.
    pub peer: Peer,
    /// Frames to the peer; the stream ends when this is dropped.
    pub tx: mpsc::Sender<Uplink>,
    /// Frames from the peer.
    pub inbound: Streaming<Downlink>,
    /// What the peer said about itself and its window.
    pub welcome: Welcome,
}

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// TCP, TLS or HTTP/2 failed (nobody listens, unreachable, timed out,
    /// a certificate refused).
    #[error("cannot connect to {peer}: {}", crate::grpc::error_chain(source))]
    Connect {
        /// The peer, as `id (host:port)`.
        peer: String,
        /// The transport's error.
        source: tonic::transport::Error,
    },
    /// The peer answered the stream with an error status (e.g. shutting
    /// down, or refusing this node's identity), or the connection broke
    /// before it answered (e.g. a TLS alert).
    #[error("{peer} refused the stream: {}", status_text(status))]
    Refused {
        /// The peer, as `id (host:port)`.
        peer: String,
        /// Its answer.
        status: tonic::Status,
    },
    /// A plaintext connection broke before any answer: most likely the peer
    /// serves TLS only.
    #[error(
        "{peer} closed a plaintext connection: {reason}; if it requires TLS, give this node --tls-cert, --tls-key and --tls-ca"
    )]
    Plaintext {
        /// The peer, as `id (host:port)`.
        peer: String,
        /// What the transport said.
        reason: String,
    },
    /// No Welcome within the timeout.
    #[error("{peer} did not answer within {timeout:?}")]
    Timeout {
        /// The peer, as `id (host:port)`.
        peer: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// The stream ended before the Welcome.
    #[error("{peer} ended the stream before its Welcome")]
    Closed {
        /// The peer, as `id (host:port)`.
        peer: String,
    },
    /// The first frame was not a Welcome.
    #[error("{peer} answered with something other than Welcome")]
    Protocol {
        /// The peer, as `id (host:port)`.
        peer: String,
    },
}

/// A status as one line: its message, then what is under it (a transport
/// error's cause, such as the TLS alert the peer sent).
fn status_text(status: &tonic::Status) -> String {
    use std::error::Error as _;
    match status.source() {
        Some(source) => {
            let chain = grpc::error_chain(source);
            if chain.starts_with(status.message()) {
                chain
            } else {
                format!("{}: {chain}", status.message())
            }
        }
        None => format!("{} ({:?})", status.message(), status.code()),
    }
}

/// Timeouts for opening a link.
#[derive(Clone, Copy, Debug)]
pub struct LinkTimeouts {
    /// TCP + HTTP/2 connect.
    pub connect: Duration,
    /// From Hello to Welcome.
    pub welcome: Duration,
}

impl Default for LinkTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            welcome: Duration::from_secs(5),
        }
    }
}

/// Dials `peer` (through mutual TLS with `tls`), says `hello` and waits for
/// the Welcome.
pub async fn open(
    peer: &Peer,
    hello: Hello,
    timeouts: LinkTimeouts,
    tls: Option<&NodeTls>,
) -> Result<OpenStream, LinkError> {
    let name = peer.to_string();
    let upstream = Tier::of(hello.kind()).map_or(&[][..], Tier::upstream);
    let channel = grpc::connect_peer(peer, timeouts.connect, tls, upstream)
        .await
        .map_err(|source| LinkError::Connect {
            peer: name.clone(),
            source,
        })?;
    let mut client = MeshClient::new(channel)
        .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(grpc::MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel(OUTBOUND_FRAMES);
    tx.send(Uplink {
        frame: Some(Up::Hello(hello)),
    })
    .await
    .map_err(|_| LinkError::Closed { peer: name.clone() })?;
    let timeout = |_| LinkError::Timeout {
        peer: name.clone(),
        timeout: timeouts.welcome,
    };
    let response = tokio::time::timeout(timeouts.welcome, client.stream(ReceiverStream::new(rx)))
        .await
        .map_err(timeout)?
        .map_err(|status| {
            // A status the peer sent has no source; one made from a broken
            // connection has the transport error under it.
            if tls.is_none() && std::error::Error::source(&status).is_some() {
                LinkError::Plaintext {
                    peer: name.clone(),
                    reason: status_text(&status),
                }
            } else {
                LinkError::Refused {
                    peer: name.clone(),
                    status,
                }
            }
        })?;
    let mut inbound = response.into_inner();
    let first = tokio::time::timeout(timeouts.welcome, inbound.message())
        .await
        .map_err(timeout)?
        .map_err(|status| LinkError::Refused {
            peer: name.clone(),
            status,
        })?;
    match first {
        Some(Downlink {
            frame: Some(Down::Welcome(welcome)),
        }) => Ok(OpenStream {
            peer: peer.clone(),
            tx,
            inbound,
            welcome,
        }),
        Some(_) => Err(LinkError::Protocol { peer: name }),
        None => Err(LinkError::Closed { peer: name }),
    }
}

/// Which peer to try next.
#[derive(Debug)]
pub struct PeerWalk {
    peers: Vec<Peer>,
    current: usize,
    failures_in_round: usize,
    backoff: Backoff,
}

impl PeerWalk {
    /// `peers` must not be empty (peer lists refuse to load empty).
    pub fn new(peers: Vec<Peer>, backoff: Backoff) -> Self {
        Self {
            peers,
            current: 0,
            failures_in_round: 0,
            backoff,
        }
    }

    /// Every peer, in the listed order.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// The peer to try now.
    pub fn current(&self) -> Option<&Peer> {
        self.peers.get(self.current)
    }

    /// Index of [`PeerWalk::current`].
    pub fn index(&self) -> usize {
        self.current
    }

    /// The attempt on the current peer failed (or its link died): move on.
    /// Returns a pause to take first when every peer failed in this round.
    pub fn failed(&mut self) -> Option<Duration> {
        self.advance();
        self.failures_in_round += 1;
        if self.failures_in_round >= self.peers.len() {
            self.failures_in_round = 0;
            Some(self.backoff.next_delay())
        } else {
            None
        }
    }

    /// A link to the current peer is up.
    pub fn succeeded(&mut self) {
        self.failures_in_round = 0;
        self.backoff.reset();
    }

    /// A working link to the current peer was lost: try the next peer at once.
    pub fn lost(&mut self) {
        self.advance();
        self.failures_in_round = 0;
    }

    /// Takes a new list (in order of preference). Returns whether the
    /// current peer is still in it; it stays current if so, else the first
    /// peer is.
    pub fn replace(&mut self, peers: Vec<Peer>) -> bool {
        let kept = self
            .current()
            .and_then(|current| peers.iter().position(|p| p == current));
        self.peers = peers;
        self.current = kept.unwrap_or(0);
        self.failures_in_round = 0;
        kept.is_some()
    }

    /// Back to the first peer, after leaving one that is no longer listed.
    pub fn restart(&mut self) {
        self.current = 0;
        self.failures_in_round = 0;
    }

    /// Makes `index` the current peer (after switching to it by other means).
    pub fn switch_to(&mut self, index: usize) {
        if index < self.peers.len() {
            self.current = index;
            self.succeeded();
        }
    }

    fn advance(&mut self) {
        if !self.peers.is_empty() {
            self.current = (self.current + 1) % self.peers.len();
        }
    }
}

/// What a node's link to its upstream is set up with.
#[derive(Clone, Debug)]
pub struct LinkSettings {
    /// Said to every peer: who this node is.
    pub hello: Hello,
    /// The upstream peers, as listed (not empty), kept current by
    /// [`crate::live_peers::LivePeers`] or [`crate::live_peers::fixed`].
    pub peers: watch::Receiver<Vec<Peer>>,
    /// How the peers are ranked: as listed, or spread by this node's id.
    pub order: PeerOrder,
    /// How often (jittered ±50 %) a link that is not on its preferred
    /// peer looks whether it can go back (`None`: stay until the stream
    /// breaks).
    pub rebalance_every: Option<Duration>,
    /// How long dialing and the Welcome may take.
    pub timeouts: LinkTimeouts,
    /// Silence after which the upstream is presumed dead; also how long a
    /// frame may wait for room on the stream.
    pub heartbeat_timeout: Duration,
    /// This node's own cap on unacknowledged events; the smaller of it and
    /// the upstream's `Welcome.window` applies.
    pub window: usize,
    /// Leave an upstream that has said it cannot deliver for this long for
    /// another one that can (`None`: stay).
    pub not_ready_failover_after: Option<Duration>,
    /// Pauses after a round in which every peer failed.
    pub backoff: Backoff,
    /// Mutual TLS to every peer (`None`: plaintext); each dial takes the
    /// certificates of the moment, and checks that the peer's certificate
    /// names the id its peer list gives it.
    pub tls: Option<NodeTls>,
}

/// What happened on a link, as [`Link::next`] reports it.
#[derive(Debug)]
pub enum LinkEvent {
    /// A stream to `peer` is open; nothing is in flight on it yet.
    Up {
        /// Who answered.
        peer: Peer,
        /// What it said: its window, whether it can deliver.
        welcome: Welcome,
    },
    /// The stream to `peer` is gone, and with it every batch in flight on
    /// it: they are unacknowledged and must be sent again.
    Down {
        /// The peer left.
        peer: Peer,
        /// Why, for the log.
        reason: String,
        /// Set when the peer was left for one that can deliver; an
        /// [`LinkEvent::Up`] for it follows at once. Otherwise the link
        /// walks on down the list.
        switching_to: Option<Peer>,
        /// Set when the stream was left on purpose once everything sent on
        /// it was acknowledged (its peer was removed from the list, or a
        /// preferred peer was waiting): nothing to resend.
        drained: bool,
    },
    /// The oldest `batches` batches in flight are settled end to end.
    Acked {
        /// How many batches, oldest first.
        batches: usize,
        /// How many events they held.
        events: usize,
        /// Events among them that can never be delivered, and why.
        rejected: Vec<Rejected>,
        /// Where in Kafka the others went, as far as the upstream says.
        placed: Vec<Placement>,
    },
    /// The upstream says it can (`true`) or cannot deliver now.
    Ready(bool),
    /// The upstream asks for a probe of this node's own downstream peers.
    Probe(ProbeRequest),
    /// The round trip of this link, as the upstream measured it with its
    /// latest answered heartbeat.
    RoundTrip(Duration),
}

/// The longest round trip an upstream's Ping may report; beyond it the
/// figure is ignored (a buggy or hostile upstream cannot poison metrics).
const MAX_REPORTED_RTT: Duration = Duration::from_secs(3600);

/// A send failed because the stream is gone; [`Link::next`] reports the
/// [`LinkEvent::Down`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LinkDown(pub String);

/// The dialing end of `Mesh.Stream`, with failover over the peer list.
pub struct Link {
    settings: LinkSettings,
    /// The live peer list (a clone of `settings.peers`, marked as read).
    peers: watch::Receiver<Vec<Peer>>,
    /// The upstream tier's name, for logs ("sidecar", "master").
    upstream: &'static str,
    walk: PeerWalk,
    state: State,
    /// Events to report before anything else.
    queued: VecDeque<LinkEvent>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("upstream", &self.upstream)
            .field("peer", &self.peer().map(|p| p.to_string()))
            .field("in_flight_events", &self.in_flight_events())
            .finish()
    }
}

enum State {
    /// Dial the current peer next.
    Idle,
    Dialing {
        peer: Peer,
        attempt: BoxFuture<'static, Result<OpenStream, LinkError>>,
    },
    /// Every peer failed in this round.
    Pausing(Pin<Box<tokio::time::Sleep>>),
    Open(Box<Stream>),
}

/// One open stream and the protocol state on it.
struct Stream {
    open: OpenStream,
    /// Most events unacknowledged on this stream.
    window: usize,
    next_seq: u64,
    /// Most encoded bytes unacknowledged before a batch may no longer go.
    window_bytes: u64,
    /// Batches sent and not yet acknowledged, oldest first: (seq, events,
    /// bytes).
    in_flight: VecDeque<(u64, usize, u64)>,
    in_flight_events: usize,
    in_flight_bytes: u64,
    liveness: Liveness,
    opened: Instant,
    /// Whether the first ack arrived (it is logged: the failover time).
    acked: bool,
    /// Whether the upstream says it can deliver.
    ready: bool,
    ready_changed: bool,
    /// The round trip the upstream last measured, not yet reported.
    round_trip: Option<Duration>,
    not_ready_since: Option<Instant>,
    /// A look for an upstream that can deliver, while this one cannot, or
    /// for a preferred one (`rebalancing`).
    scout: Option<BoxFuture<'static, Option<(usize, OpenStream)>>>,
    last_scout: Option<Instant>,
    /// When to look for a preferred peer next (with `rebalance_every`).
    rebalance_at: Option<Instant>,
    /// Whether the running scout looks for a preferred peer.
    rebalancing: bool,
    /// Set when this stream is being left: no new batch goes on it, and it
    /// ends once nothing is in flight.
    leaving: Option<Leaving>,
    /// The answer to the last ping, until there is room to send it (kept
    /// here so that [`Link::next`] stays cancel-safe).
    pong: Option<Pong>,
}

/// Why a stream is being left once its batches are acknowledged.
enum Leaving {
    /// The peer is no longer in the list: then go to the first peer.
    Removed,
    /// A preferred peer can deliver: (its index, its stream).
    To(usize, Box<OpenStream>),
}

/// How serving an open stream ended.
enum End {
    Lost(String),
    /// The stream was drained and left (its peer is no longer listed).
    Left(String),
    /// A peer that can deliver was found: (its index, its stream).
    Switch(usize, Box<OpenStream>),
}

impl Link {
    /// A link that dials `settings.peers` in the order `settings.order`
    /// gives them; nothing happens until [`Link::next`] is awaited.
    pub fn new(settings: LinkSettings) -> Self {
        let upstream = kind_name(upstream_of(
            NodeKind::try_from(settings.hello.kind).unwrap_or(NodeKind::Unspecified),
        ));
        let mut peers = settings.peers.clone();
        let ranked = preference(
            &peers.borrow_and_update(),
            settings.order,
            &settings.hello.node_id,
        );
        Self {
            walk: PeerWalk::new(ranked, settings.backoff.clone()),
            peers,
            settings,
            upstream,
            state: State::Idle,
            queued: VecDeque::new(),
        }
    }

    /// The next thing that happened: dials, fails over, answers pings and
    /// watches for silence meanwhile. Cancel-safe: dropping the future
    /// loses nothing, the next call goes on where it stopped.
    pub async fn next(&mut self) -> LinkEvent {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return event;
            }
            if self.peers.has_changed().unwrap_or(false) {
                self.take_peer_list();
                continue;
            }
            match &mut self.state {
                State::Idle => {
                    let Some(peer) = self.walk.current().cloned() else {
                        // Peer lists refuse to load empty; nothing to dial.
                        return std::future::pending().await;
                    };
                    let (target, hello, timeouts, tls) = (
                        peer.clone(),
                        self.settings.hello.clone(),
                        self.settings.timeouts,
                        self.settings.tls.clone(),
                    );
                    let attempt =
                        async move { open(&target, hello, timeouts, tls.as_ref()).await }.boxed();
                    self.state = State::Dialing { peer, attempt };
                }
                State::Dialing { peer, attempt } => match tokio::select! {
                    attempt = attempt.as_mut() => Some(attempt),
                    () = list_changed(&mut self.peers) => None,
                } {
                    None => self.take_peer_list(),
                    Some(attempt) => match attempt {
                        Ok(open) => {
                            self.walk.succeeded();
                            let (peer, welcome) = (open.peer.clone(), open.welcome.clone());
                            self.state = State::Open(Box::new(Stream::new(open, &self.settings)));
                            return LinkEvent::Up { peer, welcome };
                        }
                        Err(err) => {
                            warn!(peer = %peer.id, address = %peer.address(), %err, "{} unavailable", self.upstream);
                            self.state = match self.walk.failed() {
                                Some(pause) => {
                                    debug!(?pause, "every {} failed; backing off", self.upstream);
                                    State::Pausing(Box::pin(tokio::time::sleep(pause)))
                                }
                                None => State::Idle,
                            };
                        }
                    },
                },
                State::Pausing(sleep) => {
                    let slept = tokio::select! {
                        () = sleep.as_mut() => true,
                        () = list_changed(&mut self.peers) => false,
                    };
                    if slept {
                        self.state = State::Idle;
                    } else {
                        self.take_peer_list();
                    }
                }
                State::Open(stream) => {
                    let end = tokio::select! {
                        end = stream.next(&self.settings, &self.walk, self.upstream) => Some(end),
                        () = list_changed(&mut self.peers) => None,
                    };
                    let Some(end) = end else {
                        self.take_peer_list();
                        continue;
                    };
                    match end {
                        Ok(event) => return event,
                        Err(End::Left(reason)) => {
                            let State::Open(stream) =
                                std::mem::replace(&mut self.state, State::Idle)
                            else {
                                continue;
                            };
                            self.walk.restart();
                            info!(peer = %stream.open.peer, "{reason}");
                            return LinkEvent::Down {
                                peer: stream.open.peer,
                                reason,
                                switching_to: None,
                                drained: true,
                            };
                        }
                        Err(End::Lost(reason)) => {
                            if let Some(event) = self.lose(reason) {
                                return event;
                            }
                        }
                        Err(End::Switch(index, open)) => {
                            let old = stream.open.peer.clone();
                            let drained = stream.in_flight.is_empty();
                            let old_index = self.walk.index();
                            self.walk.switch_to(index);
                            let (peer, welcome) = (open.peer.clone(), open.welcome.clone());
                            self.state = State::Open(Box::new(Stream::new(*open, &self.settings)));
                            self.queued.push_back(LinkEvent::Up {
                                peer: peer.clone(),
                                welcome,
                            });
                            let reason = if self.walk.index() < old_index {
                                format!("going back to a preferred {}", self.upstream)
                            } else {
                                format!("the {} cannot deliver", self.upstream)
                            };
                            info!(from = %old, to = %peer, "{reason}");
                            return LinkEvent::Down {
                                peer: old,
                                reason,
                                switching_to: Some(peer),
                                drained,
                            };
                        }
                    }
                }
            }
        }
    }

    /// Takes the newest peer list into the walk, marking it as read. A
    /// dial or pause under way stops if its peer is gone or peers came;
    /// an open stream to a peer that is gone is drained and left.
    fn take_peer_list(&mut self) {
        let listed = self.peers.borrow_and_update().clone();
        if listed.is_empty() {
            // Live lists never publish an empty list; keep the old one.
            return;
        }
        let ranked = preference(&listed, self.settings.order, &self.settings.hello.node_id);
        let kept = self.walk.replace(ranked);
        match &mut self.state {
            State::Open(stream) => {
                if !kept {
                    if !matches!(stream.leaving, Some(Leaving::Removed)) {
                        info!(peer = %stream.open.peer, in_flight = stream.in_flight_events, "{} removed from the peer list: draining the stream, then leaving it", self.upstream);
                        stream.leaving = Some(Leaving::Removed);
                    }
                } else if matches!(stream.leaving, Some(Leaving::To(..))) {
                    // Its index is of the old list: look again later.
                    stream.leaving = None;
                }
                // The current peer's place in the list may have moved.
                stream.scout = None;
            }
            State::Dialing { .. } if kept => {}
            State::Dialing { .. } | State::Pausing(_) => self.state = State::Idle,
            State::Idle => {}
        }
    }

    /// Drops the open stream; the walk moves on to the next peer.
    fn lose(&mut self, reason: String) -> Option<LinkEvent> {
        let State::Open(stream) = std::mem::replace(&mut self.state, State::Idle) else {
            return None;
        };
        self.walk.lost();
        Some(LinkEvent::Down {
            peer: stream.open.peer,
            reason,
            switching_to: None,
            drained: false,
        })
    }

    fn stream(&self) -> Option<&Stream> {
        match &self.state {
            State::Open(stream) => Some(stream),
            _ => None,
        }
    }

    /// Whether a stream is open.
    pub fn is_up(&self) -> bool {
        self.stream().is_some()
    }

    /// The peer of the open stream.
    pub fn peer(&self) -> Option<&Peer> {
        self.stream().map(|s| &s.open.peer)
    }

    /// Events sent on the open stream and not yet acknowledged.
    pub fn in_flight_events(&self) -> usize {
        self.stream().map_or(0, |s| s.in_flight_events)
    }

    /// Whether the open stream is being drained to be left (its peer was
    /// removed from the list, or a preferred peer is waiting).
    pub fn is_leaving(&self) -> bool {
        self.stream().is_some_and(|s| s.leaving.is_some())
    }

    /// How many more events the window allows now (0 without a stream,
    /// while the byte window is full, or while the stream is being left).
    pub fn room(&self) -> usize {
        self.stream().map_or(0, |s| {
            if s.in_flight_bytes >= s.window_bytes || s.leaving.is_some() {
                0
            } else {
                s.window.saturating_sub(s.in_flight_events)
            }
        })
    }

    /// Whether a batch of `events` may go now: it fits the window and the
    /// byte window is not full, or nothing is in flight (a batch larger than
    /// the window goes alone); never while the stream is being left.
    pub fn fits(&self, events: usize) -> bool {
        self.stream().is_some_and(|s| {
            s.leaving.is_none()
                && (s.in_flight_events == 0
                    || (s.in_flight_events + events <= s.window
                        && s.in_flight_bytes < s.window_bytes))
        })
    }

    /// A sender for frames that go out beside the owner's own (probe
    /// responses from another task).
    pub fn sender(&self) -> Option<mpsc::Sender<Uplink>> {
        self.stream().map(|s| s.open.tx.clone())
    }

    /// Sends `events` as the next batch on the open stream.
    pub async fn send_batch(&mut self, events: Vec<Event>) -> Result<(), LinkDown> {
        let State::Open(stream) = &mut self.state else {
            return Err(LinkDown(format!("no {} is linked", self.upstream)));
        };
        let seq = stream.next_seq;
        stream.next_seq += 1;
        let bytes = event::batch_bytes(&events);
        stream.in_flight.push_back((seq, events.len(), bytes));
        stream.in_flight_events += events.len();
        stream.in_flight_bytes += bytes;
        self.send(Up::Batch(Batch { seq, events })).await
    }

    /// Sends one frame on the open stream, waiting at most the heartbeat
    /// timeout for room. On failure the stream is dropped.
    pub async fn send(&mut self, frame: Up) -> Result<(), LinkDown> {
        let timeout = self.settings.heartbeat_timeout;
        let State::Open(stream) = &mut self.state else {
            return Err(LinkDown(format!("no {} is linked", self.upstream)));
        };
        let sent =
            tokio::time::timeout(timeout, stream.open.tx.send(Uplink { frame: Some(frame) })).await;
        let reason = match sent {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => format!("the stream to the {} closed", self.upstream),
            Err(_) => format!("the {} took no data for {timeout:?}", self.upstream),
        };
        if let Some(event) = self.lose(reason.clone()) {
            self.queued.push_back(event);
        }
        Err(LinkDown(reason))
    }
}

impl Stream {
    fn new(open: OpenStream, settings: &LinkSettings) -> Self {
        let now = Instant::now();
        let ready = open.welcome.ready;
        Self {
            window: (open.welcome.window as usize).min(settings.window).max(1),
            // 0: an upstream from before byte windows.
            window_bytes: match open.welcome.window_bytes {
                0 => u64::MAX,
                bytes => bytes,
            },
            open,
            next_seq: 1,
            in_flight: VecDeque::new(),
            in_flight_events: 0,
            in_flight_bytes: 0,
            liveness: Liveness::new(settings.heartbeat_timeout, now),
            opened: now,
            acked: false,
            ready,
            ready_changed: false,
            round_trip: None,
            not_ready_since: (!ready).then_some(now),
            scout: None,
            last_scout: None,
            rebalance_at: settings.rebalance_every.map(|every| now + jittered(every)),
            rebalancing: false,
            leaving: None,
            pong: None,
        }
    }

    async fn next(
        &mut self,
        settings: &LinkSettings,
        walk: &PeerWalk,
        upstream: &'static str,
    ) -> Result<LinkEvent, End> {
        loop {
            if self.pong.is_some() {
                let permit =
                    tokio::time::timeout(settings.heartbeat_timeout, self.open.tx.reserve())
                        .await
                        .map_err(|_| {
                            End::Lost(format!(
                                "the {upstream} took no data for {:?}",
                                settings.heartbeat_timeout
                            ))
                        })?
                        .map_err(|_| End::Lost(format!("the stream to the {upstream} closed")))?;
                if let Some(pong) = self.pong.take() {
                    permit.send(Uplink {
                        frame: Some(Up::Pong(pong)),
                    });
                }
            }
            if self.ready_changed {
                self.ready_changed = false;
                return Ok(LinkEvent::Ready(self.ready));
            }
            if let Some(rtt) = self.round_trip.take() {
                return Ok(LinkEvent::RoundTrip(rtt));
            }
            if self.in_flight.is_empty() {
                match self.leaving.take() {
                    Some(Leaving::To(index, open)) => return Err(End::Switch(index, open)),
                    Some(Leaving::Removed) => {
                        return Err(End::Left(format!(
                            "left the {upstream}, no longer in the peer list, after it acknowledged everything sent to it"
                        )));
                    }
                    None => {}
                }
            }
            let scout_at = self.scout_at(settings, walk);
            let rebalance_at = self.rebalance_due(walk);
            let silent_at = tokio::time::Instant::from_std(self.liveness.deadline());
            let inbound = &mut self.open.inbound;
            let scout = &mut self.scout;
            tokio::select! {
                biased;
                frame = inbound.message() => {
                    self.liveness.heard(Instant::now());
                    match frame {
                        Ok(Some(Downlink { frame: Some(frame) })) => {
                            if let Some(event) = self.on_frame(frame, upstream)? {
                                return Ok(event);
                            }
                        }
                        Ok(Some(Downlink { frame: None })) => {}
                        Ok(None) => return Err(End::Lost(format!("the {upstream} closed the stream"))),
                        Err(status) => {
                            return Err(End::Lost(format!("stream failed: {}", status.message())));
                        }
                    }
                }
                () = tokio::time::sleep_until(silent_at) => {
                    return Err(End::Lost(format!(
                        "no word from the {upstream} for {:?}",
                        settings.heartbeat_timeout
                    )));
                }
                found = async {
                    match scout.as_mut() {
                        Some(s) => s.await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.scout = None;
                    match found {
                        Some((index, open)) if self.rebalancing => {
                            // Between batches: stop sending, switch once
                            // everything in flight is acknowledged.
                            debug!(to = %open.peer, in_flight = self.in_flight_events, "a preferred {upstream} can deliver: draining before the switch");
                            if self.leaving.is_none() {
                                self.leaving = Some(Leaving::To(index, Box::new(open)));
                            }
                        }
                        Some((index, open)) => return Err(End::Switch(index, Box::new(open))),
                        None => {}
                    }
                }
                () = async {
                    match rebalance_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.rebalance_at = settings
                        .rebalance_every
                        .map(|every| Instant::now() + jittered(every));
                    self.rebalancing = true;
                    let preferred = walk.peers()[..walk.index()]
                        .iter()
                        .cloned()
                        .enumerate()
                        .collect();
                    self.scout = Some(
                        scout_ready_peer(
                            preferred,
                            settings.hello.clone(),
                            settings.timeouts,
                            settings.tls.clone(),
                        )
                        .boxed(),
                    );
                }
                () = async {
                    match scout_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.last_scout = Some(Instant::now());
                    self.rebalancing = false;
                    let (peers, current) = (walk.peers(), walk.index());
                    let others = (1..peers.len())
                        .map(|step| (current + step) % peers.len())
                        .map(|index| (index, peers[index].clone()))
                        .collect();
                    self.scout = Some(
                        scout_ready_peer(
                            others,
                            settings.hello.clone(),
                            settings.timeouts,
                            settings.tls.clone(),
                        )
                        .boxed(),
                    );
                }
            }
        }
    }

    fn on_frame(&mut self, frame: Down, upstream: &'static str) -> Result<Option<LinkEvent>, End> {
        Ok(match frame {
            Down::Ack(ack) => {
                // An ack for a batch never sent would settle (and let the
                // owner delete) events the upstream never had.
                let sent = self.next_seq - 1;
                if ack.through > sent {
                    return Err(End::Lost(format!(
                        "protocol error: the {upstream} acknowledged batch {} but only {sent} were sent on this stream; nothing is taken as acknowledged",
                        ack.through
                    )));
                }
                let (mut batches, mut events) = (0, 0);
                while let Some(&(seq, n, bytes)) = self.in_flight.front() {
                    if seq > ack.through {
                        break;
                    }
                    self.in_flight.pop_front();
                    batches += 1;
                    events += n;
                    self.in_flight_bytes -= bytes;
                }
                self.in_flight_events -= events;
                if !self.acked {
                    self.acked = true;
                    let after_ms = self.opened.elapsed().as_secs_f64() * 1e3;
                    info!(peer = %self.open.peer, after_ms, "first acknowledgement from {upstream}");
                }
                // An honest upstream places each event at most once: more
                // placements than events are not worth anyone's time.
                let mut placed = ack.placed;
                placed.truncate(events);
                Some(LinkEvent::Acked {
                    batches,
                    events,
                    rejected: ack.rejected,
                    placed,
                })
            }
            Down::Ping(ping) => {
                if ping.ready != self.ready {
                    self.ready = ping.ready;
                    self.ready_changed = true;
                    self.not_ready_since = (!ping.ready).then(Instant::now);
                }
                self.pong = Some(answer(&ping));
                // Reported after the pong is on its way. Beyond an hour it
                // is no round trip a live stream has: ignored.
                self.round_trip = Some(Duration::from_micros(ping.last_rtt_micros))
                    .filter(|rtt| !rtt.is_zero() && *rtt <= MAX_REPORTED_RTT);
                None
            }
            Down::ProbeRequest(request) => Some(LinkEvent::Probe(request)),
            Down::Welcome(_) => None,
        })
    }

    /// When to look for a preferred peer: with `rebalance_every`, while
    /// this one is not the first of the walk, nothing else is looked for
    /// and the stream is not being left.
    fn rebalance_due(&self, walk: &PeerWalk) -> Option<tokio::time::Instant> {
        if walk.index() == 0 || self.scout.is_some() || self.leaving.is_some() {
            return None;
        }
        self.rebalance_at.map(tokio::time::Instant::from_std)
    }

    /// When to look for another upstream, while this one cannot deliver:
    /// `not_ready_failover_after` past the later of when it said so and the
    /// last look.
    fn scout_at(&self, settings: &LinkSettings, walk: &PeerWalk) -> Option<tokio::time::Instant> {
        let after = settings.not_ready_failover_after?;
        if self.ready || self.scout.is_some() || self.leaving.is_some() || walk.peers().len() < 2 {
            return None;
        }
        let since = self.not_ready_since?;
        let from = self.last_scout.map_or(since, |last| last.max(since));
        Some(tokio::time::Instant::from_std(from + after))
    }
}

/// Looks, in the order given, for a peer among `candidates` (each with its
/// index in the walk) that can deliver now; returns its index and stream.
async fn scout_ready_peer(
    candidates: Vec<(usize, Peer)>,
    hello: Hello,
    timeouts: LinkTimeouts,
    tls: Option<NodeTls>,
) -> Option<(usize, OpenStream)> {
    for (index, peer) in candidates {
        if let Ok(open) = open(&peer, hello.clone(), timeouts, tls.as_ref()).await
            && open.welcome.ready
        {
            return Some((index, open));
        }
    }
    None
}

/// `every`, jittered uniformly by ±50 %, so that links that started
/// together do not look (and move) together.
fn jittered(every: Duration) -> Duration {
    every.mul_f64(rand::rng().random_range(0.5..1.5))
}

/// Resolves when the peer list has a new value; never once its sender is
/// gone (a fixed list).
async fn list_changed(peers: &mut watch::Receiver<Vec<Peer>>) {
    if peers.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The tier a node of `kind` dials.
fn upstream_of(kind: NodeKind) -> NodeKind {
    match kind {
        NodeKind::Client => NodeKind::Sidecar,
        NodeKind::Sidecar => NodeKind::Master,
        NodeKind::Master | NodeKind::Unspecified => NodeKind::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: u16) -> Vec<Peer> {
        (0..n)
            .map(|i| Peer::new(format!("S{i}"), "127.0.0.1", 9000 + i))
            .collect()
    }

    #[test]
    fn walks_in_order_and_pauses_after_a_full_round() {
        let mut walk = PeerWalk::new(
            peers(3),
            Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
        );
        assert_eq!(walk.current().map(|p| p.id.as_str()), Some("S0"));
        assert_eq!(walk.failed(), None);
        assert_eq!(walk.current().map(|p| p.id.as_str()), Some("S1"));
        assert_eq!(walk.failed(), None);
        let pause = walk.failed().expect("a full round failed");
        assert!(pause <= Duration::from_millis(100));
        assert_eq!(walk.current().map(|p| p.id.as_str()), Some("S0"));
    }

    #[test]
    fn losing_a_working_peer_moves_to_the_next_without_pause() {
        let mut walk = PeerWalk::new(peers(2), Backoff::default());
        walk.succeeded();
        walk.lost();
        assert_eq!(walk.current().map(|p| p.id.as_str()), Some("S1"));
        assert_eq!(walk.failed(), None);
        assert_eq!(walk.current().map(|p| p.id.as_str()), Some("S0"));
    }

    #[test]
    fn a_single_peer_pauses_after_every_failure() {
        let mut walk = PeerWalk::new(peers(1), Backoff::default());
        assert!(walk.failed().is_some());
        assert!(walk.failed().is_some());
        assert_eq!(walk.index(), 0);
    }

    #[tokio::test]
    async fn opening_a_link_to_nobody_fails_fast_and_names_the_peer() {
        // Port 1 on loopback: nothing listens there.
        let peer = Peer::new("S9", "127.0.0.1", 1);
        let err = open(&peer, Hello::default(), LinkTimeouts::default(), None)
            .await
            .expect_err("nobody listens");
        assert!(err.to_string().contains("S9 (127.0.0.1:1)"), "{err}");
    }
}
