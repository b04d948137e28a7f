//! The accepting end of `Mesh.Stream`, driven by a raw peer over real gRPC
//! on 127.0.0.1, with a tier whose settlements the test controls.

#![allow(clippy::expect_used, clippy::panic)]

use std::time::Duration;

use smesh_core::session::SessionSettings;
use smesh_proto::mesh::downlink::Frame as Down;
use smesh_proto::mesh::uplink::Frame as Up;
use smesh_proto::mesh::{Ack, PeerStatus, Pong, Rejected};
use smesh_testkit::{RawPeer, Seen, Upstream, batch, events, hello, settings};
use tonic::{Code, Status};

/// Opens a stream as client `id` and returns it past the Welcome.
async fn welcomed(upstream: &Upstream, id: &str) -> RawPeer {
    let mut peer = RawPeer::open(&upstream.peer, Some(hello(id)))
        .await
        .expect("stream");
    match peer.next().await.expect("frame").and_then(|d| d.frame) {
        Some(Down::Welcome(welcome)) => {
            assert_eq!(welcome.window, settings().window);
        }
        other => panic!("expected a Welcome, got {other:?}"),
    }
    peer
}

/// The next ack (within 10 s), answering pings on the way.
async fn next_ack(peer: &mut RawPeer) -> Ack {
    tokio::time::timeout(Duration::from_secs(10), ack_after_pings(peer))
        .await
        .expect("an ack in time")
}

async fn ack_after_pings(peer: &mut RawPeer) -> Ack {
    loop {
        match peer.next().await.expect("no error").and_then(|d| d.frame) {
            Some(Down::Ack(ack)) => return ack,
            Some(Down::Ping(ping)) => {
                // Best effort: a draining upstream no longer reads.
                let _ = peer
                    .tx
                    .send(smesh_proto::mesh::Uplink {
                        frame: Some(Up::Pong(Pong {
                            nonce: ping.nonce,
                            sent_unix_nanos: ping.sent_unix_nanos,
                        })),
                    })
                    .await;
            }
            other => panic!("expected an ack, got {other:?}"),
        }
    }
}

/// The status the stream ends with (within 60 s), skipping frames before it.
async fn end_status(peer: &mut RawPeer) -> Status {
    let end = async {
        loop {
            match peer.next().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream ended without an error"),
                Err(status) => return status,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), end)
        .await
        .expect("the stream ends in time")
}

#[tokio::test]
async fn acks_go_out_in_batch_order_once_each_batch_is_settled() {
    let mut upstream = Upstream::start("S1", settings()).await;
    let mut peer = welcomed(&upstream, "c1").await;
    for seq in 1..=3 {
        peer.send(batch(seq, events("c1", seq * 10, 2))).await;
    }
    let first = upstream.batch().await;
    let second = upstream.batch().await;
    let third = upstream.batch().await;
    assert_eq!(
        (first.batch.seq, second.batch.seq, third.batch.seq),
        (1, 2, 3)
    );
    // Later batches settle first: nothing may be acknowledged yet.
    let _ = third.settle.send(Ok(Vec::new()));
    let rejected = Rejected {
        event_id: "c1-20".to_string(),
        reason: "too odd".to_string(),
    };
    let _ = second.settle.send(Ok(vec![rejected.clone()]));
    let early = tokio::time::timeout(Duration::from_millis(300), next_ack(&mut peer)).await;
    assert!(early.is_err(), "acked before batch 1 settled: {early:?}");
    let _ = first.settle.send(Ok(Vec::new()));
    let mut through = 0;
    let mut all_rejected = Vec::new();
    while through < 3 {
        let ack = next_ack(&mut peer).await;
        assert!(ack.through > through, "acks only move forward");
        through = ack.through;
        all_rejected.extend(ack.rejected);
    }
    assert_eq!(through, 3);
    assert_eq!(all_rejected, vec![rejected]);
}

#[tokio::test]
async fn a_failed_settlement_ends_the_stream_without_an_ack() {
    let mut upstream = Upstream::start("S1", settings()).await;
    let mut peer = welcomed(&upstream, "c1").await;
    peer.send(batch(1, events("c1", 1, 3))).await;
    let forwarded = upstream.batch().await;
    let _ = forwarded
        .settle
        .send(Err(Status::unavailable("Kafka did not take it")));
    let status = end_status(&mut peer).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("Kafka did not take it"),
        "{status:?}"
    );
    let (view, reason) = upstream
        .seen(|seen| match seen {
            Seen::Ended(view, reason) => Some((view, reason)),
            _ => None,
        })
        .await;
    assert_eq!(
        view.in_flight, 3,
        "nothing of the batch counts as delivered"
    );
    assert!(reason.contains("Kafka did not take it"), "{reason}");
}

#[tokio::test]
async fn protocol_violations_end_the_stream_with_a_clear_status() {
    let mut upstream = Upstream::start("S1", settings()).await;
    // Batches must be numbered 1, 2, …
    let mut peer = welcomed(&upstream, "c1").await;
    peer.send(batch(2, events("c1", 1, 1))).await;
    let status = end_status(&mut peer).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("out of order"), "{status:?}");

    // No more events in flight than the window.
    let mut peer = welcomed(&upstream, "c2").await;
    peer.send(batch(1, events("c2", 1, 60))).await;
    peer.send(batch(2, events("c2", 61, 41))).await;
    let status = end_status(&mut peer).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("window is 100"), "{status:?}");
    assert_eq!(upstream.batch().await.batch.seq, 1, "the first batch fit");

    // A batch only while fewer bytes than the byte window are in flight.
    let mut small = Upstream::start(
        "S2",
        SessionSettings {
            window_bytes: 2000,
            ..settings()
        },
    )
    .await;
    let mut peer = welcomed(&small, "c4").await;
    let first = events("c4", 1, 30);
    assert!(smesh_core::event::batch_bytes(&first) > 2000);
    peer.send(batch(1, first)).await;
    peer.send(batch(2, events("c4", 31, 1))).await;
    let status = end_status(&mut peer).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("window is 2000 bytes"),
        "{status:?}"
    );
    assert_eq!(
        small.batch().await.batch.seq,
        1,
        "a batch over the byte window fits when nothing is in flight"
    );

    // Hello comes first, and once.
    let refused = RawPeer::open(&upstream.peer, Some(batch(1, Vec::new()))).await;
    let status = refused.expect_err("no stream without a Hello");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("must be Hello"), "{status:?}");
    let mut peer = welcomed(&upstream, "c3").await;
    peer.send(hello("c3")).await;
    let status = end_status(&mut peer).await;
    assert!(status.message().contains("Hello sent twice"), "{status:?}");
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_down_after_the_allowed_misses() {
    let mut upstream = Upstream::start("S1", settings()).await;
    let mut peer = welcomed(&upstream, "c1").await;
    // Answer the first ping, so the peer is known up with an RTT.
    match peer.next().await.expect("frame").and_then(|d| d.frame) {
        Some(Down::Ping(ping)) => {
            peer.send(Up::Pong(Pong {
                nonce: ping.nonce,
                sent_unix_nanos: ping.sent_unix_nanos,
            }))
            .await;
        }
        other => panic!("expected a ping, got {other:?}"),
    }
    let view = upstream
        .seen(|seen| match seen {
            Seen::Heartbeat(view) if !view.rtt.recent_us.is_empty() => Some(view),
            _ => None,
        })
        .await;
    assert_eq!(view.status, PeerStatus::Up);
    // From here on the peer is silent: only the clock moves.
    tokio::time::pause();
    let status = end_status(&mut peer).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("missed 3 heartbeats"),
        "{status:?}"
    );
    let degraded = upstream
        .seen(|seen| match seen {
            Seen::Heartbeat(view) if view.status == PeerStatus::Degraded => Some(view),
            _ => None,
        })
        .await;
    assert!(degraded.last_pong_unix_nanos > 0);
}

#[tokio::test]
async fn a_full_handler_holds_batches_and_keeps_the_peer_alive() {
    let mut quick = settings();
    quick.heartbeat_interval = Duration::from_millis(100);
    let mut upstream = Upstream::start("S1", quick).await;
    // Room for one batch only.
    upstream.room.forget_permits(usize::MAX);
    upstream.room.add_permits(1);
    let mut peer = welcomed(&upstream, "c1").await;
    peer.send(batch(1, events("c1", 1, 1))).await;
    peer.send(batch(2, events("c1", 2, 1))).await;
    let first = upstream.batch().await;
    // Batch 2 waits for room far longer than the allowed misses (3 x 100 ms)
    // while the peer answers every ping: it must stay up.
    let idle = tokio::time::timeout(Duration::from_millis(1000), ack_after_pings(&mut peer)).await;
    assert!(idle.is_err(), "nothing to acknowledge yet: {idle:?}");
    assert!(
        upstream.forwarded.try_recv().is_err(),
        "batch 2 must wait for room"
    );
    let _ = first.settle.send(Ok(Vec::new()));
    assert_eq!(next_ack(&mut peer).await.through, 1);
    upstream.room.add_permits(1);
    let second = upstream.batch().await;
    assert_eq!(second.batch.seq, 2);
    let _ = second.settle.send(Ok(Vec::new()));
    assert_eq!(next_ack(&mut peer).await.through, 2);
    let view = upstream
        .seen(|seen| match seen {
            Seen::Heartbeat(view) => Some(view),
            _ => None,
        })
        .await;
    assert_eq!(view.status, PeerStatus::Up, "{view:?}");
}

#[tokio::test]
async fn shutdown_drains_open_streams_and_takes_no_new_batches() {
    let mut quick = settings();
    quick.heartbeat_interval = Duration::from_millis(100);
    let mut upstream = Upstream::start("S1", quick).await;
    let mut peer = welcomed(&upstream, "c1").await;
    peer.send(batch(1, events("c1", 1, 2))).await;
    let forwarded = upstream.batch().await;
    upstream.shutdown.cancel();
    // Let the session see the shutdown before anything else happens.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    // Not taken while draining: it stays unacknowledged.
    peer.send(batch(2, events("c1", 3, 1))).await;
    // Longer than the allowed misses: a draining session still hears pongs.
    let idle = tokio::time::timeout(Duration::from_millis(600), ack_after_pings(&mut peer)).await;
    assert!(idle.is_err(), "nothing to acknowledge yet: {idle:?}");
    // The batch in flight is still acknowledged, then the stream closes.
    let _ = forwarded.settle.send(Ok(Vec::new()));
    assert_eq!(next_ack(&mut peer).await.through, 1);
    let end = async {
        loop {
            match peer.next().await {
                Ok(Some(frame)) => {
                    if let Some(Down::Ack(ack)) = frame.frame {
                        panic!("batch 2 was never taken, yet acknowledged: {ack:?}");
                    }
                }
                Ok(None) => break,
                Err(status) => panic!("a drained stream ends cleanly, not with {status:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), end)
        .await
        .expect("the stream closes once drained");
    assert!(
        upstream.forwarded.try_recv().is_err(),
        "nothing is forwarded while draining"
    );
    tokio::time::timeout(Duration::from_secs(10), upstream.served)
        .await
        .expect("the server stops once its streams drained")
        .expect("server task");
}

#[tokio::test]
async fn reports_reach_the_tier() {
    let mut upstream = Upstream::start("S1", settings()).await;
    let peer = welcomed(&upstream, "c1").await;
    let caller = upstream
        .seen(|seen| match seen {
            Seen::Connected(caller) => Some(caller),
            _ => None,
        })
        .await;
    assert_eq!(caller.hello.node_id, "c1");
    assert!(
        caller.address.starts_with("127.0.0.1:"),
        "{}",
        caller.address
    );
    peer.send(Up::Report(smesh_proto::mesh::Report {
        backlog: Some(smesh_proto::mesh::Backlog {
            rows: 7,
            ..Default::default()
        }),
        ..Default::default()
    }))
    .await;
    let report = upstream
        .seen(|seen| match seen {
            Seen::Report(report) => Some(report),
            _ => None,
        })
        .await;
    assert_eq!(report.backlog.map(|b| b.rows), Some(7));
}

#[tokio::test]
async fn a_hello_with_an_unfit_id_version_or_incarnation_is_refused() {
    let upstream = Upstream::start("S1", settings()).await;
    let with = |edit: fn(&mut smesh_proto::mesh::Hello)| {
        let mut hello = match hello("c1") {
            Up::Hello(hello) => hello,
            other => panic!("not a Hello: {other:?}"),
        };
        edit(&mut hello);
        Up::Hello(hello)
    };
    let cases: [(&str, Up, &str); 5] = [
        (
            "empty id",
            with(|h| h.node_id.clear()),
            "node id \"\" is empty",
        ),
        (
            "newline in id",
            with(|h| h.node_id = "c1\nforged".to_string()),
            "node id \"c1\\nforged\" holds",
        ),
        (
            "long id",
            with(|h| h.node_id = "c".repeat(300)),
            "longer than 200 bytes",
        ),
        // Five of these once broke a sidecar's master link for good.
        (
            "4 MB version",
            with(|h| h.version = "v".repeat(4 << 20)),
            "version \"vvvv",
        ),
        (
            "control in incarnation",
            with(|h| h.incarnation = "1\u{1b}[2J".to_string()),
            "incarnation",
        ),
    ];
    for (case, first, needle) in cases {
        let refused = RawPeer::open(&upstream.peer, Some(first)).await;
        let status = refused.expect_err(case);
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert!(status.message().contains(needle), "{case}: {status:?}");
        assert!(
            status.message().len() < 200,
            "{case}: the reason quotes the peer briefly"
        );
    }
    // A fit Hello still gets in.
    welcomed(&upstream, "c1").await;
}

#[tokio::test]
async fn events_larger_than_the_limit_are_refused_at_the_door_each_on_its_own() {
    let mut upstream = Upstream::start(
        "S1",
        smesh_core::session::SessionSettings {
            max_event_bytes: 2_000,
            ..settings()
        },
    )
    .await;
    let mut peer = welcomed(&upstream, "c1").await;
    let mut mixed = events("c1", 1, 3);
    mixed[1].data = vec![b'x'; 5_000].into();
    let oversized_id = mixed[1].id.clone();
    peer.send(batch(1, mixed)).await;
    // Only what fits reaches the tier …
    let forwarded = upstream.batch().await;
    let ids: Vec<u64> = forwarded.batch.events.iter().map(|e| e.sequence).collect();
    assert_eq!(ids, vec![1, 3]);
    let _ = forwarded.settle.send(Ok(Vec::new()));
    // … and the ack names the refused event, with why.
    let ack = next_ack(&mut peer).await;
    assert_eq!(ack.through, 1);
    assert_eq!(ack.rejected.len(), 1, "{ack:?}");
    assert_eq!(ack.rejected[0].event_id, oversized_id);
    assert!(
        ack.rejected[0]
            .reason
            .contains("more than the limit of 2000 bytes"),
        "{ack:?}"
    );
    // A batch of nothing but oversized events is answered without the tier.
    let mut alone = events("c1", 4, 1);
    alone[0].data = vec![b'y'; 5_000].into();
    peer.send(batch(2, alone)).await;
    let ack = next_ack(&mut peer).await;
    assert_eq!((ack.through, ack.rejected.len()), (2, 1), "{ack:?}");
}
