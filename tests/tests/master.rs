//! The master in-process against a real Kafka broker, driven by a raw
//! sidecar stream: a batch is acknowledged only once Kafka acknowledged
//! every event in it.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use smesh_core::peers::Peer;
use smesh_master::Master;
use smesh_proto::admin::GetStatusRequest;
use smesh_proto::admin::admin_client::AdminClient;
use smesh_proto::mesh::downlink::Frame as Down;
use smesh_proto::mesh::uplink::Frame as Up;
use smesh_proto::mesh::{Ack, Hello, NodeKind, Pong, Uplink};
use smesh_testkit::{Next, RawPeer, batch, events};
use smesh_tests::kafka::KafkaBroker;
use smesh_tests::records::{create_topic, judge, read_topic};
use smesh_tests::{eventually, health_of_service, unique_topic};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

/// A master running in-process on ephemeral ports (data plane and admin API),
/// publishing to `topic`.
struct InProcessMaster {
    /// Its data-plane address, for raw sidecar streams.
    peer: Peer,
    /// Its admin API's port.
    admin_port: u16,
    /// Stops it.
    token: CancellationToken,
    /// `Master::run`, to see it stop cleanly.
    task: tokio::task::JoinHandle<Result<(), smesh_master::MasterError>>,
    /// Holds `healthCheckReport.csv`.
    _dir: tempfile::TempDir,
}

impl InProcessMaster {
    /// Starts master `M1` with `kafka_config` passed to librdkafka.
    async fn start(bootstrap: String, topic: &str, kafka_config: Vec<(String, String)>) -> Self {
        Self::start_with(
            bootstrap,
            topic,
            kafka_config,
            Duration::from_secs(60),
            Duration::from_secs(5),
        )
        .await
    }

    /// Starts master `M1` with `kafka_config`, `--delivery-timeout` and
    /// `--kafka-unavailable-after`.
    async fn start_with(
        bootstrap: String,
        topic: &str,
        kafka_config: Vec<(String, String)>,
        delivery_timeout: Duration,
        unavailable_after: Duration,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = smesh_master::Config::builder("M1")
            .kafka_brokers(bootstrap)
            .topic(topic)
            .health_report(dir.path().join("healthCheckReport.csv"))
            .kafka_config(kafka_config)
            .delivery_timeout(delivery_timeout)
            .kafka_unavailable_after(unavailable_after)
            .build()
            .expect("a valid configuration");
        let master = Master::new(config).expect("producer");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin_port = admin.local_addr().expect("address").port();
        let token = CancellationToken::new();
        let task = tokio::spawn(master.run(listener, Some(admin), token.clone()));
        Self {
            peer: Peer::new("M1", "127.0.0.1", port),
            admin_port,
            token,
            task,
            _dir: dir,
        }
    }

    /// A new raw stream, as sidecar `S1`.
    async fn sidecar(&self) -> RawPeer {
        RawPeer::open(&self.peer, Some(sidecar_hello()))
            .await
            .expect("stream")
    }
}

/// The Hello of sidecar `S1`.
fn sidecar_hello() -> Up {
    Up::Hello(Hello {
        node_id: "S1".to_string(),
        kind: NodeKind::Sidecar as i32,
        version: "test".to_string(),
        incarnation: "1".to_string(),
    })
}

/// The next ack; `None` if none came within `wait`. The stream must stay up.
async fn ack_within(sidecar: &mut RawPeer, wait: Duration) -> Option<Ack> {
    match tokio::time::timeout(wait, sidecar.ack_or_end()).await {
        Ok(Next::Ack(ack)) => Some(ack),
        Ok(Next::Ended(why)) => panic!("the stream stays up, yet it ended: {why:?}"),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_acknowledged_only_after_kafka_acknowledged_it() {
    let kafka = KafkaBroker::start().expect("a broker of our own, to freeze");
    let topic = unique_topic("master-ack");
    let master = InProcessMaster::start(kafka.bootstrap(), &topic, Vec::new()).await;
    // The admin API names itself in grpc.health.v1.
    let admin_health = eventually("the admin API's health", Duration::from_secs(10), || {
        health_of_service(master.admin_port, smesh_proto::ADMIN_SERVICE)
    })
    .await;
    assert_eq!(admin_health, ServingStatus::Serving);

    let mut sidecar = master.sidecar().await;
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

    master.token.cancel();
    drop(sidecar);
    tokio::time::timeout(Duration::from_secs(30), master.task)
        .await
        .expect("the master stops")
        .expect("master task")
        .expect("a clean stop");
}

/// The master's totals, through its admin API.
async fn totals(admin_port: u16) -> Option<smesh_proto::admin::Totals> {
    let mut admin = AdminClient::connect(format!("http://127.0.0.1:{admin_port}"))
        .await
        .ok()?;
    let status = admin.get_status(GetStatusRequest::default()).await.ok()?;
    status.into_inner().master?.totals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_kafka_settles_after_their_stream_ended_are_remembered() {
    let kafka = KafkaBroker::start().expect("a broker of our own, to freeze");
    let topic = unique_topic("late-settle");
    let master = InProcessMaster::start(kafka.bootstrap(), &topic, Vec::new()).await;
    let admin_port = master.admin_port;
    let mut first = master.sidecar().await;
    first.send(batch(1, events("c1", 1, 5))).await;
    ack_within(&mut first, Duration::from_secs(60))
        .await
        .expect("batch 1 acknowledged while Kafka runs");

    // Batch 2 reaches the producer while the broker is frozen; then the
    // stream breaks (as when a sidecar dies) before Kafka could answer.
    kafka.freeze();
    first.send(batch(2, events("c1", 6, 5))).await;
    eventually(
        "batch 2 handed to the producer",
        Duration::from_secs(30),
        || async { totals(admin_port).await.filter(|t| t.events_in == 10) },
    )
    .await;
    first.send(batch(9, events("c1", 99, 1))).await;
    let broken = first.next().await;
    assert!(broken.is_err(), "the stream ends with an error: {broken:?}");
    kafka.thaw();
    let records = read_topic(&kafka.bootstrap(), &topic, 10, Duration::from_secs(60));
    assert_eq!(records.len(), 10, "Kafka has every event once");
    eventually(
        "Kafka's late acks recorded",
        Duration::from_secs(30),
        || async { totals(admin_port).await.filter(|t| t.published == 10) },
    )
    .await;

    // The sidecar resends batch 2 on a new stream: acknowledged, not published again.
    let mut second = master.sidecar().await;
    second.send(batch(1, events("c1", 6, 5))).await;
    let ack = ack_within(&mut second, Duration::from_secs(60))
        .await
        .expect("the resend acknowledged");
    assert_eq!(ack.through, 1);
    let totals = totals(admin_port).await.expect("totals");
    assert_eq!(totals.duplicates, 5, "{totals:?}");
    let records = read_topic(&kafka.bootstrap(), &topic, 10, Duration::from_secs(10));
    let sent: Vec<Vec<u8>> = (1..=10)
        .map(|i| format!("reading {i}").into_bytes())
        .collect();
    let verdict = judge(&records, &BTreeMap::from([("c1".to_string(), sent)]));
    verdict.assert_complete("late settlements");
    assert_eq!(verdict.duplicates, 0, "{verdict:?}");
    master.token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_skewed_clock_costs_no_client_anything() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let topic = unique_topic("skewed-clock");
    let master = InProcessMaster::start(kafka.bootstrap(), &topic, Vec::new()).await;
    let mut sidecar = master.sidecar().await;
    // Kafka 4 refuses records stamped more than an hour ahead
    // (log.message.timestamp.after.max.ms); this client's clock is 2 h ahead.
    let two_hours = 2 * 3600 * 1_000_000_000_i64;
    let mut skewed = events("skewed", 1, 50);
    for event in &mut skewed {
        event.time_unix_nanos += two_hours;
    }
    let innocent = events("innocent", 1, 50);
    // Both clients' events in the same batches, as one sidecar forwards them.
    for (seq, (a, b)) in skewed.chunks(10).zip(innocent.chunks(10)).enumerate() {
        let mut mixed = a.to_vec();
        mixed.extend_from_slice(b);
        sidecar.send(batch(seq as u64 + 1, mixed)).await;
    }
    let mut rejected = Vec::new();
    let mut through = 0;
    while through < 5 {
        let ack = ack_within(&mut sidecar, Duration::from_secs(60))
            .await
            .expect("every batch acknowledged");
        through = ack.through;
        rejected.extend(ack.rejected);
    }
    assert!(rejected.is_empty(), "nothing rejected: {rejected:?}");
    let records = read_topic(&kafka.bootstrap(), &topic, 100, Duration::from_secs(30));
    let readings: Vec<Vec<u8>> = (1..=50)
        .map(|i| format!("reading {i}").into_bytes())
        .collect();
    let verdict = judge(
        &records,
        &BTreeMap::from([
            ("skewed".to_string(), readings.clone()),
            ("innocent".to_string(), readings),
        ]),
    );
    verdict.assert_complete("a skewed clock beside an innocent client");
    // The event's own time travels in ce_time, untouched.
    let stamped = records
        .iter()
        .find(|r| r.key == "skewed")
        .and_then(|r| r.header("ce_time"))
        .and_then(smesh_core::time::parse_rfc3339)
        .expect("ce_time");
    assert!(stamped > smesh_core::time::now_unix_nanos() + two_hours / 2);
    master.token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_producer_queue_holds_batches_back_but_not_the_heartbeats() {
    let kafka = KafkaBroker::start().expect("a broker of our own, to freeze");
    let topic = unique_topic("queue-full");
    // librdkafka holds at most 10 records.
    let queue = vec![("queue.buffering.max.messages".to_string(), "10".to_string())];
    let master = InProcessMaster::start(kafka.bootstrap(), &topic, queue).await;
    let mut sidecar = master.sidecar().await;
    sidecar.send(batch(1, events("c1", 1, 5))).await;
    ack_within(&mut sidecar, Duration::from_secs(60))
        .await
        .expect("batch 1 acknowledged while Kafka runs");

    // Frozen broker: two batches fill the queue, two more must wait.
    kafka.freeze();
    for seq in 2..=5 {
        sidecar.send(batch(seq, events("c1", seq * 5 - 4, 5))).await;
    }
    // The master keeps pinging (1 s) though nothing can be taken.
    let mut pings = 0;
    let heartbeats = async {
        while pings < 4 {
            let frame = sidecar.next().await.expect("the stream stays up");
            match frame.and_then(|f| f.frame) {
                Some(Down::Ping(ping)) => {
                    pings += 1;
                    let pong = Up::Pong(Pong {
                        nonce: ping.nonce,
                        sent_unix_nanos: ping.sent_unix_nanos,
                    });
                    let _ = sidecar.tx.send(Uplink { frame: Some(pong) }).await;
                }
                Some(Down::Ack(ack)) => panic!("acknowledged while Kafka was frozen: {ack:?}"),
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    let pinged = tokio::time::timeout(Duration::from_secs(15), heartbeats).await;
    kafka.thaw();
    assert!(pinged.is_ok(), "the master went silent with a full queue");
    let mut through = 0;
    while through < 5 {
        through = ack_within(&mut sidecar, Duration::from_secs(60))
            .await
            .expect("every batch acknowledged once Kafka answers")
            .through;
    }
    let records = read_topic(&kafka.bootstrap(), &topic, 25, Duration::from_secs(30));
    let sent: Vec<Vec<u8>> = (1..=25)
        .map(|i| format!("reading {i}").into_bytes())
        .collect();
    let verdict = judge(&records, &BTreeMap::from([("c1".to_string(), sent)]));
    verdict.assert_complete("a full producer queue");
    assert_eq!(verdict.duplicates, 0, "{verdict:?}");
    master.token.cancel();
}

/// The next ack on `sidecar`; `None` once the stream ended (or nothing
/// came within `wait`).
async fn next_ack(sidecar: &mut RawPeer, wait: Duration) -> Option<Ack> {
    match tokio::time::timeout(wait, sidecar.ack_or_end()).await {
        Ok(Next::Ack(ack)) => Some(ack),
        Ok(Next::Ended(_)) | Err(_) => None,
    }
}

/// Plays a sidecar that resends every unacknowledged batch on a new stream
/// until all of `batches` are acknowledged; returns the events rejected.
async fn deliver_all(
    master: &InProcessMaster,
    batches: Vec<Vec<smesh_proto::mesh::Event>>,
) -> Vec<String> {
    let mut pending: std::collections::VecDeque<_> = batches.into();
    let mut rejected = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !pending.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} batches never acknowledged",
            pending.len()
        );
        let Ok(mut stream) = RawPeer::open(&master.peer, Some(sidecar_hello())).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        for (i, events) in pending.iter().enumerate() {
            let frame = batch(i as u64 + 1, events.clone());
            let _ = stream.tx.send(Uplink { frame: Some(frame) }).await;
        }
        let mut acked = 0;
        while let Some(ack) = next_ack(&mut stream, Duration::from_secs(60)).await {
            rejected.extend(ack.rejected.into_iter().map(|r| r.event_id));
            for _ in acked..ack.through {
                pending.pop_front();
            }
            acked = ack.through;
            if pending.is_empty() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rejected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_kafka_refuses_costs_only_the_event_that_fails_alone() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let topic = unique_topic("batch-refused");
    // The broker refuses record batches over 20000 bytes, so one event of
    // 30000 bytes sinks the whole produce batch it shares with others.
    create_topic(
        &kafka.bootstrap(),
        &topic,
        1,
        &[("max.message.bytes", "20000")],
    )
    .await;
    let master = InProcessMaster::start(kafka.bootstrap(), &topic, Vec::new()).await;
    let innocent = events("innocent", 1, 30);
    let mut hostile = events("hostile", 1, 3);
    // Incompressible, so compression cannot bring it under the limit.
    let mut noise = 0x2545_f491_4f6c_dd1d_u64;
    hostile[1].data = (0..30_000)
        .map(|_| {
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            noise as u8
        })
        .collect::<Vec<u8>>()
        .into();
    // Each batch: ten innocent events and one of the hostile client's, as
    // one sidecar forwards them.
    let batches: Vec<Vec<_>> = innocent
        .chunks(10)
        .zip(&hostile)
        .map(|(innocent, hostile)| {
            let mut mixed = innocent.to_vec();
            mixed.push(hostile.clone());
            mixed
        })
        .collect();
    let rejected = deliver_all(&master, batches).await;
    assert_eq!(
        rejected,
        vec![hostile[1].id.clone()],
        "only the event that fails alone is rejected"
    );
    let records = read_topic(&kafka.bootstrap(), &topic, 32, Duration::from_secs(30));
    let readings = |n: u64| -> Vec<Vec<u8>> {
        (1..=n)
            .map(|i| format!("reading {i}").into_bytes())
            .collect()
    };
    let mut hostile_readings = readings(3);
    hostile_readings.remove(1);
    let verdict = judge(
        &records,
        &BTreeMap::from([
            ("innocent".to_string(), readings(30)),
            ("hostile".to_string(), hostile_readings),
        ]),
    );
    verdict.assert_complete("a batch Kafka refuses for one event's sake");
    // The refusal failed the pipelined producer for good (nothing after the
    // refused batch may be written before it); a new one took its place.
    let admin_port = master.admin_port;
    let totals = eventually("a new producer", Duration::from_secs(10), || async {
        totals(admin_port)
            .await
            .filter(|t| t.producer_replacements >= 1)
    })
    .await;
    assert_eq!(totals.failed, 1, "{totals:?}");
    master.token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_batch_ends_its_stream_only_while_kafka_counts_as_reachable() {
    let kafka = KafkaBroker::start().expect("a broker of our own, to freeze");
    let timeout = Duration::from_secs(2);

    // Kafka counts as reachable for a minute after its last answer: a batch
    // stuck for the delivery timeout ends the stream, for a resend.
    let topic = unique_topic("stuck-reachable");
    let master = InProcessMaster::start_with(
        kafka.bootstrap(),
        &topic,
        Vec::new(),
        timeout,
        Duration::from_secs(60),
    )
    .await;
    let mut sidecar = master.sidecar().await;
    sidecar.send(batch(1, events("c1", 1, 5))).await;
    ack_within(&mut sidecar, Duration::from_secs(60))
        .await
        .expect("batch 1 acknowledged while Kafka runs");
    kafka.freeze();
    sidecar.send(batch(2, events("c1", 6, 5))).await;
    let ended = tokio::time::timeout(Duration::from_secs(20), sidecar.ack_or_end()).await;
    kafka.thaw();
    let ended = match ended.expect("the stream ends once the delivery timeout passed") {
        Next::Ended(Some(status)) => status,
        Next::Ended(None) => panic!("the stream ended without a reason"),
        Next::Ack(ack) => panic!("acknowledged while frozen: {ack:?}"),
    };
    assert!(ended.message().contains("within 2s"), "{}", ended.message());
    master.token.cancel();

    // Kafka counts as unreachable after a second: the master is NOT_SERVING
    // and keeps the stream (a resend would only duplicate what librdkafka
    // still holds); the batch is acknowledged once Kafka answers.
    // (Its probe takes up to 2 s to fail: the delivery timeout is longer.)
    let timeout = Duration::from_secs(5);
    let topic = unique_topic("stuck-unreachable");
    let master = InProcessMaster::start_with(
        kafka.bootstrap(),
        &topic,
        Vec::new(),
        timeout,
        Duration::from_secs(1),
    )
    .await;
    let mut sidecar = master.sidecar().await;
    sidecar.send(batch(1, events("c1", 1, 5))).await;
    ack_within(&mut sidecar, Duration::from_secs(60))
        .await
        .expect("batch 1 acknowledged while Kafka runs");
    kafka.freeze();
    sidecar.send(batch(2, events("c1", 6, 5))).await;
    // Three delivery timeouts: the stream stays up (ack_within fails the
    // test if it ends) and nothing is acknowledged.
    let early = ack_within(&mut sidecar, timeout * 3).await;
    kafka.thaw();
    assert!(
        early.is_none(),
        "acknowledged while Kafka was frozen: {early:?}"
    );
    let second = ack_within(&mut sidecar, Duration::from_secs(60))
        .await
        .expect("batch 2 acknowledged once Kafka answers again");
    assert_eq!(second.through, 2);
    master.token.cancel();
}
