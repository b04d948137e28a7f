//! The dialing end of `Mesh.Stream` against in-process upstreams on
//! 127.0.0.1: failover, resend after a loss, the window, liveness, and
//! leaving an upstream that cannot deliver.

#![allow(clippy::expect_used, clippy::panic)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use smesh_core::backoff::Backoff;
use smesh_core::link::{Link, LinkEvent, LinkSettings, LinkTimeouts};
use smesh_core::live_peers::fixed;
use smesh_core::peers::{Peer, PeerOrder};
use smesh_core::session::SessionSettings;
use smesh_proto::mesh::{Hello, NodeKind, PeerStatus, Rejected};
use smesh_testkit::{Seen, Upstream, events, next_link_event as next, settings};
use tonic::Status;

fn link_to(peers: &[&Peer], window: usize, not_ready_failover_after: Option<Duration>) -> Link {
    Link::new(LinkSettings {
        hello: Hello {
            node_id: "c1".to_string(),
            kind: NodeKind::Client as i32,
            version: "test".to_string(),
            incarnation: "1".to_string(),
        },
        peers: fixed(peers.iter().map(|p| (*p).clone()).collect()),
        order: PeerOrder::Ordered,
        rebalance_every: None,
        timeouts: LinkTimeouts {
            connect: Duration::from_secs(2),
            welcome: Duration::from_secs(5),
        },
        heartbeat_timeout: Duration::from_secs(3),
        window,
        not_ready_failover_after,
        backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(50)),
        tls: None,
    })
}

fn up_peer(event: &LinkEvent) -> Option<&str> {
    match event {
        LinkEvent::Up { peer, .. } => Some(peer.id.as_str()),
        _ => None,
    }
}

#[tokio::test]
async fn a_lost_upstream_fails_over_and_the_owner_resends_on_the_next() {
    let mut s1 = Upstream::start("S1", settings()).await;
    let mut s2 = Upstream::start("S2", settings()).await;
    let mut link = link_to(&[&s1.peer, &s2.peer], 1000, None);
    assert_eq!(up_peer(&next(&mut link).await), Some("S1"));
    link.send_batch(events("c1", 1, 3)).await.expect("sent");
    link.send_batch(events("c1", 4, 2)).await.expect("sent");
    assert_eq!(link.in_flight_events(), 5);
    let first = s1.batch().await;
    let _second = s1.batch().await;
    // S1 fails the first batch: the stream ends, nothing is acknowledged.
    let _ = first.settle.send(Err(Status::unavailable("broker gone")));
    match next(&mut link).await {
        LinkEvent::Down {
            peer,
            reason,
            switching_to,
            ..
        } => {
            assert_eq!(peer.id, "S1");
            assert!(reason.contains("broker gone"), "{reason}");
            assert!(switching_to.is_none());
        }
        other => panic!("expected Down, got {other:?}"),
    }
    assert_eq!(link.in_flight_events(), 0, "a lost stream holds nothing");
    assert_eq!(up_peer(&next(&mut link).await), Some("S2"));
    // The owner sends everything again; the new stream numbers from 1.
    link.send_batch(events("c1", 1, 3)).await.expect("sent");
    link.send_batch(events("c1", 4, 2)).await.expect("sent");
    let again = s2.batch().await;
    assert_eq!(again.batch.seq, 1);
    assert_eq!(
        again.batch.events[0].id,
        smesh_core::event::event_id("c1", smesh_testkit::INCARNATION, 1)
    );
    let rejected = Rejected {
        event_id: "c1-2".to_string(),
        reason: "no".to_string(),
    };
    let last = s2.batch().await;
    assert_eq!(last.batch.seq, 2);
    // Acks settle the oldest batches, and only those.
    let _ = again.settle.send(Ok(vec![rejected.clone()]));
    match next(&mut link).await {
        LinkEvent::Acked {
            batches,
            events,
            rejected: said,
            ..
        } => {
            assert_eq!((batches, events), (1, 3));
            assert_eq!(said, vec![rejected]);
        }
        other => panic!("expected an ack, got {other:?}"),
    }
    assert_eq!(link.in_flight_events(), 2);
    let _ = last.settle.send(Ok(Vec::new()));
    match next(&mut link).await {
        LinkEvent::Acked {
            batches, events, ..
        } => assert_eq!((batches, events), (1, 2)),
        other => panic!("expected an ack, got {other:?}"),
    }
    assert_eq!(link.in_flight_events(), 0);
}

#[tokio::test]
async fn the_window_is_the_smaller_of_ours_and_the_upstreams() {
    let mut s1 = Upstream::start("S1", settings()).await;
    let mut link = link_to(&[&s1.peer], 1000, None);
    assert_eq!(up_peer(&next(&mut link).await), Some("S1"));
    // The upstream's window (100) is the smaller.
    assert_eq!(link.room(), 100);
    link.send_batch(events("c1", 1, 60)).await.expect("sent");
    assert_eq!(link.room(), 40);
    assert!(link.fits(40) && !link.fits(41));
    let _ = s1.batch().await.settle.send(Ok(Vec::new()));
    match next(&mut link).await {
        LinkEvent::Acked {
            batches, events, ..
        } => assert_eq!((batches, events), (1, 60)),
        other => panic!("expected an ack, got {other:?}"),
    }
    assert_eq!(link.room(), 100);
    // A batch larger than the whole window still goes alone.
    assert!(link.fits(150));

    let s2 = Upstream::start("S2", settings()).await;
    let mut small = link_to(&[&s2.peer], 10, None);
    assert_eq!(up_peer(&next(&mut small).await), Some("S2"));
    assert_eq!(small.room(), 10, "our own window is the smaller");
}

#[tokio::test]
async fn no_batch_goes_while_the_byte_window_is_full() {
    let mut s1 = Upstream::start(
        "S1",
        SessionSettings {
            window_bytes: 2000,
            ..settings()
        },
    )
    .await;
    let mut link = link_to(&[&s1.peer], 1000, None);
    assert_eq!(up_peer(&next(&mut link).await), Some("S1"));
    let batch = events("c1", 1, 10);
    let bytes = smesh_core::event::batch_bytes(&batch);
    assert!(bytes < 1000, "{bytes}");
    link.send_batch(batch).await.expect("sent");
    assert_eq!(link.room(), 90, "bytes left: the event window decides");
    link.send_batch(events("c1", 11, 20)).await.expect("sent");
    assert_eq!(link.room(), 0, "the byte window is full");
    assert!(!link.fits(1));
    let _ = s1.batch().await.settle.send(Ok(Vec::new()));
    let _ = s1.batch().await.settle.send(Ok(Vec::new()));
    let mut acked = 0;
    while acked < 30 {
        match next(&mut link).await {
            LinkEvent::Acked { events, .. } => acked += events,
            other => panic!("expected an ack, got {other:?}"),
        }
    }
    assert_eq!(link.room(), 100, "acknowledged bytes free the byte window");
}

#[tokio::test]
async fn pings_are_answered_so_the_upstream_sees_the_link_up() {
    let mut s1 = Upstream::start("S1", settings()).await;
    let mut link = link_to(&[&s1.peer], 1000, None);
    assert_eq!(up_peer(&next(&mut link).await), Some("S1"));
    let (told_tx, mut told) = tokio::sync::mpsc::unbounded_channel();
    let pump = tokio::spawn(async move {
        loop {
            if let LinkEvent::RoundTrip(rtt) = link.next().await {
                let _ = told_tx.send(rtt);
            }
        }
    });
    let view = s1
        .seen(|seen| match seen {
            Seen::Heartbeat(view) if view.rtt.recent_us.len() >= 2 => Some(view),
            _ => None,
        })
        .await;
    assert_eq!(view.status, PeerStatus::Up);
    // The dialing end learns the round trip the upstream measured.
    let rtt = tokio::time::timeout(Duration::from_secs(10), told.recv())
        .await
        .expect("a round trip reported within 10s")
        .expect("the pump runs");
    let micros = u64::try_from(rtt.as_micros()).expect("micros");
    assert!(micros > 0);
    // ... one of the samples it measured, not a figure of its own.
    tokio::time::timeout(
        Duration::from_secs(10),
        s1.seen(|seen| match seen {
            Seen::Heartbeat(view) if view.rtt.recent_us.contains(&micros) => Some(()),
            _ => None,
        }),
    )
    .await
    .expect("the reported round trip is one the upstream measured");
    pump.abort();
}

#[tokio::test]
async fn a_silent_upstream_is_presumed_dead_after_the_heartbeat_timeout() {
    // This upstream never pings.
    let mut quiet = settings();
    quiet.heartbeat_interval = Duration::from_secs(3600);
    let s1 = Upstream::start("S1", quiet).await;
    let mut link = link_to(&[&s1.peer], 1000, None);
    assert_eq!(up_peer(&next(&mut link).await), Some("S1"));
    tokio::time::pause();
    match next(&mut link).await {
        LinkEvent::Down { peer, reason, .. } => {
            assert_eq!(peer.id, "S1");
            assert!(
                reason.contains("no word from the sidecar for 3s"),
                "{reason}"
            );
        }
        other => panic!("expected Down, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_peer_is_skipped() {
    let s2 = Upstream::start("S2", settings()).await;
    // Port 1 on loopback: nothing listens there.
    let nobody = Peer::new("S1", "127.0.0.1", 1);
    let mut link = link_to(&[&nobody, &s2.peer], 1000, None);
    assert_eq!(up_peer(&next(&mut link).await), Some("S2"));
}

#[tokio::test]
async fn an_upstream_that_cannot_deliver_is_left_for_one_that_can() {
    let s1 = Upstream::start("S1", settings()).await;
    let s2 = Upstream::start("S2", settings()).await;
    s1.ready.store(false, Ordering::Relaxed);
    let mut link = link_to(
        &[&s1.peer, &s2.peer],
        1000,
        Some(Duration::from_millis(300)),
    );
    match next(&mut link).await {
        LinkEvent::Up { peer, welcome } => {
            assert_eq!(peer.id, "S1");
            assert!(!welcome.ready);
        }
        other => panic!("expected Up, got {other:?}"),
    }
    match next(&mut link).await {
        LinkEvent::Down {
            peer, switching_to, ..
        } => {
            assert_eq!(peer.id, "S1");
            assert_eq!(switching_to.map(|p| p.id), Some("S2".to_string()));
        }
        other => panic!("expected a switch, got {other:?}"),
    }
    assert_eq!(up_peer(&next(&mut link).await), Some("S2"));

    // Without the setting, the link stays.
    let mut staying = link_to(&[&s1.peer, &s2.peer], 1000, None);
    assert_eq!(up_peer(&next(&mut staying).await), Some("S1"));
    let stayed = tokio::time::timeout(Duration::from_millis(1500), next(&mut staying)).await;
    assert!(stayed.is_err(), "no switch without the setting: {stayed:?}");
}

/// An upstream that welcomes, then acknowledges more batches than it got.
struct Forger {
    /// How many batches beyond the first one received it claims.
    beyond: u64,
}

#[tonic::async_trait]
impl smesh_proto::mesh::mesh_server::Mesh for Forger {
    type StreamStream =
        tokio_stream::wrappers::ReceiverStream<Result<smesh_proto::mesh::Downlink, Status>>;

    async fn stream(
        &self,
        request: tonic::Request<tonic::Streaming<smesh_proto::mesh::Uplink>>,
    ) -> Result<tonic::Response<Self::StreamStream>, Status> {
        use smesh_proto::mesh::downlink::Frame as Down;
        use smesh_proto::mesh::uplink::Frame as Up;
        use smesh_proto::mesh::{Ack, Downlink, Welcome};
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let beyond = self.beyond;
        tokio::spawn(async move {
            let down = |frame| Ok(Downlink { frame: Some(frame) });
            while let Ok(Some(up)) = inbound.message().await {
                match up.frame {
                    Some(Up::Hello(_)) => {
                        let welcome = Welcome {
                            node_id: "forger".to_string(),
                            kind: NodeKind::Sidecar as i32,
                            version: "test".to_string(),
                            window: 1000,
                            max_event_bytes: 1_000_000,
                            ready: true,
                            // As an upstream from before byte windows.
                            window_bytes: 0,
                        };
                        let _ = tx.send(down(Down::Welcome(welcome))).await;
                    }
                    Some(Up::Batch(batch)) => {
                        // More placements than events, as only a broken
                        // upstream would send.
                        let placed = (0..batch.events.len() + 5)
                            .map(|i| smesh_proto::mesh::Placement {
                                client_id: "c1".to_string(),
                                first_sequence: i as u64,
                                last_sequence: i as u64,
                                ..Default::default()
                            })
                            .collect();
                        let ack = Ack {
                            through: batch.seq + beyond,
                            rejected: Vec::new(),
                            placed,
                        };
                        let _ = tx.send(down(Down::Ack(ack))).await;
                    }
                    _ => {}
                }
            }
        });
        Ok(tonic::Response::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
    }
}

async fn forger(beyond: u64) -> Peer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(smesh_proto::mesh::mesh_server::MeshServer::new(Forger {
                beyond,
            }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Peer::new("F", "127.0.0.1", port)
}

#[tokio::test]
async fn an_ack_beyond_the_batches_sent_ends_the_stream_and_settles_nothing() {
    let peer = forger(5).await;
    let mut link = link_to(&[&peer], 1000, None);
    assert_eq!(up_peer(&next(&mut link).await), Some("F"));
    link.send_batch(events("c1", 1, 3)).await.expect("sent");
    match next(&mut link).await {
        LinkEvent::Down { reason, .. } => {
            assert!(
                reason.contains("acknowledged batch 6 but only 1"),
                "{reason}"
            );
        }
        other => panic!("a forged ack must not settle anything: {other:?}"),
    }
}

#[tokio::test]
async fn an_honest_cumulative_ack_still_settles() {
    let peer = forger(0).await;
    let mut link = link_to(&[&peer], 1000, None);
    assert_eq!(up_peer(&next(&mut link).await), Some("F"));
    link.send_batch(events("c1", 1, 3)).await.expect("sent");
    match next(&mut link).await {
        LinkEvent::Acked {
            batches,
            events,
            placed,
            ..
        } => {
            assert_eq!((batches, events), (1, 3));
            assert_eq!(placed.len(), 3, "no more placements than events");
        }
        other => panic!("expected an ack, got {other:?}"),
    }
}
