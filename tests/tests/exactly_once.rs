//! `--delivery exactly-once`: whatever single node is killed, and when, a
//! `read_committed` consumer sees every event once and each client's
//! events in order. Real processes, a real broker, real `kill -9`s.

// Test helpers fail loudly, like the tests they serve.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use smesh_tests::audit::{audit_json, identity};
use smesh_tests::kafka::KafkaBroker;
use smesh_tests::nodes::{self, Feeder, NodeSpec, Process};
use smesh_tests::records::{
    Isolation, Verdict, assert_placed, judge, read_all_as, read_until_complete_as,
};
use smesh_tests::unique_topic;

const DELIVERY: Duration = Duration::from_secs(120);

/// A master in exactly-once mode, with a short transaction timeout so a
/// killed master's open transaction is aborted within the test.
fn eo_master(dir: &std::path::Path, id: &str, kafka: &str, topic: &str) -> NodeSpec {
    nodes::master(dir, id, kafka, topic, 0)
        .args(["--delivery", &delivery(), "--transaction-timeout", "5s"])
        .args(["--transactional-id", &format!("{topic}-{id}")])
}

/// Starts client `name` following a file fed by a [`Feeder`].
async fn fed_client(
    dir: &std::path::Path,
    name: &str,
    sidecars: &[(&str, u16)],
    total: u64,
) -> (Feeder, Process) {
    let input = dir.join(format!("{name}.jsonl"));
    let feeder = Feeder::start(&input, name, total, 100, Duration::from_millis(100));
    let client = nodes::client(dir, name, sidecars, &[nodes::file_source(&input, true)])
        .spawn()
        .await;
    (feeder, client)
}

/// Ends client c1's feed, waits until a `read_committed` consumer has
/// every line it was fed, then judges the run (showing the logs of `nodes`
/// if it failed).
async fn judge_run(
    kafka: &KafkaBroker,
    topic: &str,
    feeder: &mut Feeder,
    nodes: &[&Process],
    context: &str,
) {
    feeder.finish();
    let sent = BTreeMap::from([("c1".to_string(), feeder.lines.clone())]);
    let (_, verdict) = read_until_complete_as(
        &kafka.bootstrap(),
        topic,
        &sent,
        DELIVERY,
        Isolation::ReadCommitted,
    )
    .await;
    if verdict.duplicates > 0 || !verdict.lost.is_empty() {
        for node in nodes {
            eprintln!("--- {} ---\n{}", node.name, node.log_tail(40));
        }
    }
    assert_exactly_once(&kafka.bootstrap(), topic, &sent, &verdict, context).await;
}

/// One master, one sidecar and client c1 fed 4000 lines, delivering: the
/// stage for a fault.
struct Stage {
    dir: tempfile::TempDir,
    topic: String,
    master: Process,
    sidecar: Process,
    feeder: Feeder,
    _client: Process,
}

impl Stage {
    /// Starts it on `kafka` and returns once the sidecar has had its first
    /// acknowledgement and two seconds more (transactions under way).
    async fn start(kafka: &KafkaBroker, name: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let topic = unique_topic(name);
        let master = eo_master(dir.path(), "M1", &kafka.bootstrap(), &topic)
            .spawn()
            .await;
        let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
            .spawn()
            .await;
        let (feeder, client) = fed_client(dir.path(), "c1", &[("S1", sidecar.port)], 4000).await;
        sidecar
            .wait_logged("first acknowledgement from master", DELIVERY)
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        Self {
            dir,
            topic,
            master,
            sidecar,
            feeder,
            _client: client,
        }
    }
}

/// The two judges: the test's own `read_committed` consumer (`verdict`)
/// and `smesh-console audit` in exactly-once mode, which must say OK and
/// count every event of `sent` once, with no gap and nothing out of order.
async fn assert_exactly_once(
    kafka: &str,
    topic: &str,
    sent: &BTreeMap<String, Vec<Vec<u8>>>,
    verdict: &Verdict,
    context: &str,
) {
    verdict.assert_complete(context);
    assert_eq!(
        verdict.duplicates, 0,
        "{context}: a read_committed consumer saw duplicates"
    );
    let (code, report) = audit_json(kafka, topic, &["--delivery", "exactly-once"]).await;
    assert_eq!(code, 0, "{context}: the audit says OK: {report:#}");
    for (client, lines) in sent {
        let row = identity(&report, client);
        assert_eq!(row["events"], lines.len(), "{context}: {client}: {row:#}");
        assert_eq!(row["records"], lines.len(), "{context}: {client}: {row:#}");
        assert_eq!(row["gap_count"], 0, "{context}: {client}: {row:#}");
        assert_eq!(row["duplicates"], 0, "{context}: {client}: {row:#}");
        assert_eq!(row["order_violations"], 0, "{context}: {client}: {row:#}");
    }
}

/// Freezes the broker, runs `kill` while records are in flight to it (in
/// the open transaction: sent, not committed), and thaws it.
async fn kill_while_records_are_in_flight(kafka: &KafkaBroker, kill: impl FnOnce()) {
    kafka.freeze();
    tokio::time::sleep(Duration::from_secs(1)).await;
    kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    kafka.thaw();
}

/// `--delivery` as the test binary is told (`SMESH_TEST_DELIVERY`), so a
/// run with `at-least-once` shows what these tests catch: duplicates.
fn delivery() -> String {
    std::env::var("SMESH_TEST_DELIVERY").unwrap_or_else(|_| "exactly-once".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_master_mid_transaction_writes_nothing_twice() {
    let kafka = KafkaBroker::start().expect("a broker of our own, to freeze");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("eo-kill-master");
    let mut m1 = eo_master(dir.path(), "M1", &kafka.bootstrap(), &topic)
        .spawn()
        .await;
    let m2 = eo_master(dir.path(), "M2", &kafka.bootstrap(), &topic)
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", m1.port), ("M2", m2.port)], 0)
        .spawn()
        .await;
    let (mut feeder, _client) = fed_client(dir.path(), "c1", &[("S1", sidecar.port)], 4000).await;
    sidecar
        .wait_logged("first acknowledgement from master", DELIVERY)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // What M1 sent before the freeze reaches the broker after M1 is dead:
    // written, never acknowledged, resent through M2.
    kill_while_records_are_in_flight(&kafka, || m1.kill()).await;
    judge_run(
        &kafka,
        &topic,
        &mut feeder,
        &[&m2, &sidecar],
        "active master killed mid-transaction",
    )
    .await;
    let connected = sidecar.logged_values("connected to master", "master");
    assert!(
        connected.iter().any(|m| m.starts_with("M2")),
        "the sidecar moved to M2: {connected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_sidecar_whose_client_moves_to_another_master_writes_nothing_twice() {
    let kafka = KafkaBroker::start().expect("a broker of our own, to freeze");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("eo-kill-sidecar");
    let m1 = eo_master(dir.path(), "M1", &kafka.bootstrap(), &topic)
        .spawn()
        .await;
    let m2 = eo_master(dir.path(), "M2", &kafka.bootstrap(), &topic)
        .spawn()
        .await;
    // Each sidecar on its own master: the client's events change masters
    // with the sidecar, while M1 still holds what S1 had sent it.
    let mut s1 = nodes::sidecar(dir.path(), "S1", &[("M1", m1.port)], 0)
        .spawn()
        .await;
    let s2 = nodes::sidecar(dir.path(), "S2", &[("M2", m2.port)], 0)
        .spawn()
        .await;
    let (mut feeder, client) =
        fed_client(dir.path(), "c1", &[("S1", s1.port), ("S2", s2.port)], 4000).await;
    client
        .wait_logged("first acknowledgement from sidecar", DELIVERY)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // M1 commits what S1 sent once the broker is back, while the client
    // resends the same events through S2 and M2: one of the two must lose.
    kill_while_records_are_in_flight(&kafka, || s1.kill()).await;
    judge_run(
        &kafka,
        &topic,
        &mut feeder,
        &[&m1, &m2, &s2, &client],
        "sidecar killed, client moved to another master",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restarted_with_the_same_identity_fences_its_earlier_run() {
    let kafka = KafkaBroker::start().expect("a broker of our own, to freeze");
    let mut stage = Stage::start(&kafka, "eo-restart-master").await;
    let port = stage.master.port;
    kill_while_records_are_in_flight(&kafka, || stage.master.kill()).await;
    // The same id, transactional id and port: Kafka aborts the earlier
    // run's open transaction when this one starts, long before its timeout.
    let m1 = eo_master(stage.dir.path(), "M1", &kafka.bootstrap(), &stage.topic)
        .with_flag("--listen", format!("127.0.0.1:{port}"))
        .spawn()
        .await;
    judge_run(
        &kafka,
        &stage.topic,
        &mut stage.feeder,
        &[&m1],
        "master restarted with the same identity",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_frozen_longer_than_the_transaction_timeout_writes_nothing_twice() {
    let kafka = KafkaBroker::start().expect("a broker of our own, to freeze");
    let mut stage = Stage::start(&kafka, "eo-freeze").await;
    // Longer than --transaction-timeout (5s): Kafka aborts the open
    // transaction, and the master's commit after the thaw fails.
    kafka.freeze();
    tokio::time::sleep(Duration::from_secs(8)).await;
    kafka.thaw();
    judge_run(
        &kafka,
        &stage.topic,
        &mut stage.feeder,
        &[&stage.master],
        "broker frozen past the transaction timeout",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_transaction_and_restarted_writes_nothing_twice() {
    let mut kafka = KafkaBroker::start().expect("a broker of our own, to kill");
    let mut stage = Stage::start(&kafka, "eo-kill-broker").await;
    // kill -9 of the broker, with a transaction open: the restarted broker
    // finds it in its transaction log and the master's commit or abort
    // meets a coordinator that has to recover it first.
    kafka.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    kafka.restart().expect("restart the broker");
    judge_run(
        &kafka,
        &stage.topic,
        &mut stage.feeder,
        &[&stage.master, &stage.sidecar],
        "broker killed mid-transaction",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_restarted_from_its_spool_writes_nothing_twice() {
    let kafka = KafkaBroker::start().expect("a broker of our own, to freeze");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("eo-restart-client");
    let m1 = eo_master(dir.path(), "M1", &kafka.bootstrap(), &topic)
        .spawn()
        .await;
    let m2 = eo_master(dir.path(), "M2", &kafka.bootstrap(), &topic)
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", m1.port), ("M2", m2.port)], 0)
        .spawn()
        .await;
    let (mut feeder, mut client) =
        fed_client(dir.path(), "c1", &[("S1", sidecar.port)], 4000).await;
    client
        .wait_logged("first acknowledgement from sidecar", DELIVERY)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Its spool holds what reached Kafka unacknowledged; it sends it all
    // again when it starts, as the same identity.
    kill_while_records_are_in_flight(&kafka, || client.kill()).await;
    let input = dir.path().join("c1.jsonl");
    let client = nodes::client(
        dir.path(),
        "c1",
        &[("S1", sidecar.port)],
        &[nodes::file_source(&input, true)],
    )
    .spawn()
    .await;
    judge_run(
        &kafka,
        &topic,
        &mut feeder,
        &[&m1, &m2, &sidecar, &client],
        "client restarted from its spool",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fault_each_client_learns_from_its_acks_where_its_events_are() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("eo-placed");
    let master = eo_master(dir.path(), "M1", &kafka.bootstrap(), &topic)
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .spawn()
        .await;
    let mut sent = BTreeMap::new();
    let mut clients = Vec::new();
    for id in ["c1", "c2"] {
        let input = dir.path().join(format!("{id}.jsonl"));
        sent.insert(id.to_string(), nodes::write_lines(&input, id, 0..1500, 40));
        clients.push(
            nodes::client(
                dir.path(),
                id,
                &[("S1", sidecar.port)],
                &[nodes::file_source(&input, false)],
            )
            .spawn()
            .await,
        );
    }
    for client in &mut clients {
        let status = client.wait_exit(DELIVERY).await;
        assert!(status.success(), "{} exited with {status}", client.name);
    }
    let (b, t) = (kafka.bootstrap(), topic.clone());
    let records =
        tokio::task::spawn_blocking(move || read_all_as(&b, &t, Isolation::ReadCommitted))
            .await
            .expect("reader");
    assert_exactly_once(
        &kafka.bootstrap(),
        &topic,
        &sent,
        &judge(&records, &sent),
        "no fault",
    )
    .await;
    for id in ["c1", "c2"] {
        assert_placed(&nodes::spool_path(dir.path(), id), id, &records);
    }
}
