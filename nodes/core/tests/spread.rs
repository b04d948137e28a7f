//! How links choose among their peers, against in-process upstreams on
//! 127.0.0.1: spread by rendezvous hashing or as listed, a live peer list
//! (a peer added, a peer removed and drained), and going back to a
//! preferred peer between batches.

#![allow(clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use smesh_core::backoff::Backoff;
use smesh_core::link::{Link, LinkEvent, LinkSettings, LinkTimeouts};
use smesh_core::live_peers::fixed;
use smesh_core::peers::{Peer, PeerOrder, preference};
use smesh_proto::mesh::{Hello, NodeKind};
use smesh_testkit::{Upstream, events, next_link_event as next, settings};
use tokio::sync::watch;

fn link(
    id: &str,
    peers: watch::Receiver<Vec<Peer>>,
    order: PeerOrder,
    rebalance_every: Option<Duration>,
) -> Link {
    Link::new(LinkSettings {
        hello: Hello {
            node_id: id.to_string(),
            kind: NodeKind::Client as i32,
            version: "test".to_string(),
            incarnation: "1".to_string(),
        },
        peers,
        order,
        rebalance_every,
        timeouts: LinkTimeouts::default(),
        heartbeat_timeout: Duration::from_secs(10),
        window: 1000,
        not_ready_failover_after: None,
        backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(50)),
        tls: None,
    })
}

async fn up(link: &mut Link) -> String {
    match next(link).await {
        LinkEvent::Up { peer, .. } => peer.id,
        other => panic!("expected Up, got {other:?}"),
    }
}

async fn sidecars(n: usize) -> Vec<Upstream> {
    let mut started = Vec::new();
    for i in 1..=n {
        started.push(Upstream::start(&format!("S{i}"), settings()).await);
    }
    started
}

/// Where 200 clients' links land, by sidecar id.
async fn landing(peers: &[Peer], order: PeerOrder) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let mut links = Vec::new();
    for n in 0..200 {
        let mut link = link(&format!("client-{n}"), fixed(peers.to_vec()), order, None);
        *counts.entry(up(&mut link).await).or_insert(0) += 1;
        // Kept open until every client landed, as a fleet's would be.
        links.push(link);
    }
    counts
}

#[tokio::test]
async fn two_hundred_clients_spread_over_four_sidecars_within_20_percent() {
    let sidecars = sidecars(4).await;
    let peers: Vec<Peer> = sidecars.iter().map(|s| s.peer.clone()).collect();
    let spread = landing(&peers, PeerOrder::Spread).await;
    println!("spread: {spread:?}");
    assert_eq!(spread.len(), 4, "every sidecar takes a share: {spread:?}");
    for (id, count) in &spread {
        assert!(
            (40..=60).contains(count),
            "{id} has {count} of 200 clients, outside 50 ± 20 %: {spread:?}"
        );
    }
    let ordered = landing(&peers, PeerOrder::Ordered).await;
    assert_eq!(ordered, BTreeMap::from([("S1".to_string(), 200)]));
}

/// A client id whose first choice among `peers` is `want`.
fn client_preferring(peers: &[Peer], want: &str) -> String {
    (0..)
        .map(|n| format!("client-{n}"))
        .find(|id| preference(peers, PeerOrder::Spread, id)[0].id == want)
        .expect("some client prefers it")
}

#[tokio::test]
async fn an_added_preferred_sidecar_is_taken_between_batches_with_nothing_resent() {
    let mut sidecars = sidecars(2).await;
    let all: Vec<Peer> = sidecars.iter().map(|s| s.peer.clone()).collect();
    let id = client_preferring(&all, "S2");
    // S2 is not listed yet: the client takes S1.
    let (list, peers) = watch::channel(vec![all[0].clone()]);
    let mut link = link(
        &id,
        peers,
        PeerOrder::Spread,
        Some(Duration::from_millis(200)),
    );
    assert_eq!(up(&mut link).await, "S1");
    link.send_batch(events(&id, 1, 3)).await.expect("sent");
    let in_flight = sidecars[0].batch().await;
    // S2 is added: the link finds it answers, and stops sending while the
    // batch on S1 is in flight.
    list.send_replace(all.clone());
    let waited = tokio::time::timeout(Duration::from_secs(2), next(&mut link)).await;
    assert!(waited.is_err(), "nothing happens while S1 holds the batch");
    assert!(link.is_leaving(), "a preferred sidecar answered: draining");
    assert_eq!(link.room(), 0, "no new batch while draining");
    assert!(!link.fits(1));
    let _ = in_flight.settle.send(Ok(Vec::new()));
    match next(&mut link).await {
        LinkEvent::Acked { events, .. } => assert_eq!(events, 3),
        other => panic!("expected the ack first, got {other:?}"),
    }
    match next(&mut link).await {
        LinkEvent::Down {
            peer,
            switching_to,
            drained,
            ..
        } => {
            assert_eq!(peer.id, "S1");
            assert_eq!(switching_to.map(|p| p.id).as_deref(), Some("S2"));
            assert!(drained, "switched between batches");
        }
        other => panic!("expected the switch, got {other:?}"),
    }
    assert_eq!(up(&mut link).await, "S2");
    assert_eq!(link.in_flight_events(), 0, "nothing to resend");
    link.send_batch(events(&id, 4, 1)).await.expect("sent");
    let batch = sidecars[1].batch().await;
    assert_eq!(batch.batch.events[0].sequence, 4);
}

#[tokio::test]
async fn without_rebalancing_a_client_stays_where_it_is() {
    let sidecars = sidecars(2).await;
    let all: Vec<Peer> = sidecars.iter().map(|s| s.peer.clone()).collect();
    let id = client_preferring(&all, "S2");
    let (list, peers) = watch::channel(vec![all[0].clone()]);
    let mut link = link(&id, peers, PeerOrder::Spread, None);
    assert_eq!(up(&mut link).await, "S1");
    list.send_replace(all);
    let waited = tokio::time::timeout(Duration::from_secs(1), next(&mut link)).await;
    assert!(waited.is_err(), "no switch: {waited:?}");
    assert!(!link.is_leaving());
}

#[tokio::test]
async fn a_removed_sidecar_is_drained_then_left_for_the_first_of_the_new_list() {
    let mut sidecars = sidecars(3).await;
    let all: Vec<Peer> = sidecars.iter().map(|s| s.peer.clone()).collect();
    let (list, peers) = watch::channel(all.clone());
    let mut link = link("c1", peers, PeerOrder::Ordered, None);
    assert_eq!(up(&mut link).await, "S1");
    link.send_batch(events("c1", 1, 2)).await.expect("sent");
    let in_flight = sidecars[0].batch().await;
    list.send_replace(vec![all[2].clone(), all[1].clone()]);
    let waited = tokio::time::timeout(Duration::from_millis(300), next(&mut link)).await;
    assert!(
        waited.is_err(),
        "S1 keeps the stream while it holds a batch"
    );
    assert!(link.is_leaving());
    assert_eq!(link.room(), 0);
    assert!(!link.fits(1));
    let _ = in_flight.settle.send(Ok(Vec::new()));
    match next(&mut link).await {
        LinkEvent::Acked { events, .. } => assert_eq!(events, 2),
        other => panic!("expected the ack first, got {other:?}"),
    }
    match next(&mut link).await {
        LinkEvent::Down {
            peer,
            reason,
            switching_to,
            drained,
        } => {
            assert_eq!(peer.id, "S1");
            assert!(reason.contains("no longer in the peer list"), "{reason}");
            assert!(switching_to.is_none());
            assert!(drained);
        }
        other => panic!("expected S1 left, got {other:?}"),
    }
    assert_eq!(up(&mut link).await, "S3", "the first of the new list");
    // Removing a peer the link is not on changes nothing on the stream.
    list.send_replace(vec![all[2].clone()]);
    let waited = tokio::time::timeout(Duration::from_millis(300), next(&mut link)).await;
    assert!(waited.is_err(), "{waited:?}");
    assert!(!link.is_leaving());
    assert!(link.room() > 0);
}
