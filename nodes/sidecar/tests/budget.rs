//! The sidecar's budget for every client together: it takes a client's
//! batch only while what it holds for the master is below
//! `--max-pending-bytes`, whoever sent it. In process, with a master whose
//! settlements the test controls.

#![allow(clippy::expect_used, clippy::panic)]

use std::time::Duration;

use smesh_core::event::batch_bytes;
use smesh_core::peers::Peer;
use smesh_sidecar::{Config, Sidecar};
use smesh_testkit::{RawPeer, Upstream, batch, events, hello, settings};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn clients_wait_while_the_sidecar_holds_its_byte_budget() {
    let mut master = Upstream::start("M1", settings()).await;
    let config = Config::builder("S1", vec![master.peer.clone()])
        .max_pending_bytes(5000)
        .build()
        .expect("config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sidecar = Peer::new(
        "S1",
        "127.0.0.1",
        listener.local_addr().expect("address").port(),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(Sidecar::new(config).run(listener, shutdown.clone()));

    // Two batches of c1 bring the sidecar to its budget (each is < 5000
    // bytes, both together more).
    let per_batch = batch_bytes(&events("c1", 1, 30));
    assert!(per_batch < 5000 && 2 * per_batch >= 5000, "{per_batch}");
    let c1 = RawPeer::open(&sidecar, Some(hello("c1")))
        .await
        .expect("c1");
    for seq in 0..3 {
        c1.send(batch(seq + 1, events("c1", 1 + seq * 30, 30)))
            .await;
    }
    let first = master.batch().await;
    let second = master.batch().await;
    assert_eq!(first.batch.events[0].client_id, "c1");
    assert_eq!(second.batch.events[0].client_id, "c1");
    // Now no client gets anything more past the sidecar: not c1, not c2.
    let c2 = RawPeer::open(&sidecar, Some(hello("c2")))
        .await
        .expect("c2");
    c2.send(batch(1, events("c2", 1, 1))).await;
    let held = tokio::time::timeout(Duration::from_secs(1), master.forwarded.recv()).await;
    assert!(held.is_err(), "the sidecar went over its budget: {held:?}");

    // The master settles one: there is room for the next.
    let _ = first.settle.send(Ok(Vec::new()));
    let next = master.batch().await;
    assert!(!next.batch.events.is_empty());

    // (Not drained: the master holds unsettled batches on purpose.)
    shutdown.cancel();
    master.shutdown.cancel();
    running.abort();
}
