//! The master in-process against a real Kafka broker, driven by a raw
//! sidecar stream: a batch is acknowledged only once Kafka acknowledged
//! every event in it.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use smesh_core::peers::Peer;
use smesh_master::Master;
use smesh_proto::mesh::downlink::Frame as Down;
use smesh_proto::mesh::uplink::Frame as Up;
use smesh_proto::mesh::{Ack, Hello, NodeKind, Pong, Uplink};
use smesh_testkit::{RawPeer, batch, events};
use smesh_tests::kafka::KafkaBroker;
use smesh_tests::records::{judge, read_topic};
use smesh_tests::{eventually, health_of_service, unique_topic};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

/// Frames until an ack, answering pings; `None` if none came within `wait`.
async fn ack_within(sidecar: &mut RawPeer, wait: Duration) -> Option<Ack> {
    let frames = async {
        loop {
            match sidecar.next().await.expect("the stream stays up") {
                Some(frame) => match frame.frame {
                    Some(Down::Ack(ack)) => return ack,
                    Some(Down::Ping(ping)) => {
                        let pong = Up::Pong(Pong {
                            nonce: ping.nonce,
                            sent_unix_nanos: ping.sent_unix_nanos,
                        });
                        let _ = sidecar.tx.send(Uplink { frame: Some(pong) }).await;
                    }
                    _ => {}
                },
                None => panic!("the master closed the stream"),
            }
        }
    };
    tokio::time::timeout(wait, frames).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_acknowledged_only_after_kafka_acknowledged_it() {
    let kafka = KafkaBroker::start().expect("a broker of our own, to freeze");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("master-ack");
    let report = dir.path().join("healthCheckReport.csv");
    let config = smesh_master::Config::builder("M1")
        .kafka_brokers(kafka.bootstrap())
        .topic(&topic)
        .health_report(report)
        .build()
        .expect("a valid configuration");
    let master = Master::new(config).expect("producer");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin_port = admin.local_addr().expect("address").port();
    let token = CancellationToken::new();
    let running = tokio::spawn(master.run(listener, Some(admin), token.clone()));
    // The admin API names itself in grpc.health.v1.
    let admin_health = eventually("the admin API's health", Duration::from_secs(10), || {
        health_of_service(admin_port, smesh_proto::ADMIN_SERVICE)
    })
    .await;
    assert_eq!(admin_health, ServingStatus::Serving);

    let peer = Peer {
        id: "M1".to_string(),
        host: "127.0.0.1".to_string(),
        port,
    };
    let hello = Up::Hello(Hello {
        node_id: "S1".to_string(),
        kind: NodeKind::Sidecar as i32,
        version: "test".to_string(),
        incarnation: "1".to_string(),
    });
    let mut sidecar = RawPeer::open(&peer, Some(hello)).await.expect("stream");
    sidecar.send(batch(1, events("c1", 1, 5))).await;
    let first = ack_within(&mut sidecar, Duration::from_secs(60))
        .await
        .expect("batch 1 acknowledged while Kafka runs");
    assert_eq!(first.through, 1);
    assert!(first.rejected.is_empty(), "{first:?}");

    // While the broker is frozen, Kafka acknowledges nothing: neither may the master.
    kafka.freeze();
    sidecar.send(batch(2, events("c1", 6, 5))).await;
    let early = ack_within(&mut sidecar, Duration::from_secs(3)).await;
    kafka.thaw();
    assert!(
        early.is_none(),
        "acknowledged while Kafka was frozen: {early:?}"
    );
    let second = ack_within(&mut sidecar, Duration::from_secs(60))
        .await
        .expect("batch 2 acknowledged once Kafka answers again");
    assert_eq!(second.through, 2);

    let records = read_topic(&kafka.bootstrap(), &topic, 10, Duration::from_secs(30));
    let sent: Vec<Vec<u8>> = (1..=10)
        .map(|i| format!("reading {i}").into_bytes())
        .collect();
    let verdict = judge(&records, &BTreeMap::from([("c1".to_string(), sent)]));
    verdict.assert_complete("acks after a frozen broker");
    assert_eq!(verdict.duplicates, 0, "{verdict:?}");

    token.cancel();
    drop(sidecar);
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the master stops")
        .expect("master task")
        .expect("a clean stop");
}
