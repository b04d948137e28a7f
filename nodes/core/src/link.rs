//! The downstream end of a data-plane stream, and the walk over the peers a
//! node may use.
//!
//! Clients open links to sidecars and sidecars open links to masters in the
//! same way: dial, send Hello, wait for Welcome. [`PeerWalk`] decides which
//! peer to try next: the peers in their listed order, the next one after a
//! failure, and a backoff pause after a whole round failed.

use std::time::Duration;

use smesh_proto::mesh::downlink::Frame as Down;
use smesh_proto::mesh::mesh_client::MeshClient;
use smesh_proto::mesh::uplink::Frame as Up;
use smesh_proto::mesh::{Downlink, Hello, Uplink, Welcome};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::backoff::Backoff;
use crate::grpc;
use crate::peers::Peer;

/// Frames queued towards the peer before the sender waits (HTTP/2 flow
/// control and the event window bound what is really in flight).
const OUTBOUND_FRAMES: usize = 64;

/// An open stream to an upstream peer, past the Hello/Welcome exchange.
#[derive(Debug)]
pub struct Link {
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
    #[error("cannot connect to {peer}: {source}")]
    Connect {
        peer: String,
        source: tonic::transport::Error,
    },
    #[error("{peer} refused the stream: {status}")]
    Refused { peer: String, status: tonic::Status },
    #[error("{peer} did not answer within {timeout:?}")]
    Timeout { peer: String, timeout: Duration },
    #[error("{peer} ended the stream before its Welcome")]
    Closed { peer: String },
    #[error("{peer} answered with something other than Welcome")]
    Protocol { peer: String },
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

/// Dials `peer`, says `hello` and waits for the Welcome.
pub async fn open(peer: &Peer, hello: Hello, timeouts: LinkTimeouts) -> Result<Link, LinkError> {
    let name = peer.to_string();
    let channel = grpc::connect(&peer.uri(), timeouts.connect)
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
        .map_err(|status| LinkError::Refused {
            peer: name.clone(),
            status,
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
        }) => Ok(Link {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: u16) -> Vec<Peer> {
        (0..n)
            .map(|i| Peer {
                id: format!("S{i}"),
                host: "127.0.0.1".into(),
                port: 9000 + i,
            })
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
        let peer = Peer {
            id: "S9".into(),
            host: "127.0.0.1".into(),
            port: 1,
        };
        let err = open(&peer, Hello::default(), LinkTimeouts::default())
            .await
            .expect_err("nobody listens");
        assert!(err.to_string().contains("S9 (127.0.0.1:1)"), "{err}");
    }
}
