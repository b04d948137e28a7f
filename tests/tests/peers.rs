//! Live peer lists, end to end: a client's `clientCon.csv` edited while it
//! runs (a broken edit, a sidecar added, the one in use removed, by the
//! file's poll and by SIGHUP) loses nothing; the topic is read back. A row
//! naming a host name is dialed at the address it resolves to, and over
//! TLS checked against the name.

// Test helpers fail loudly, like the tests they serve.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use smesh_core::tls::Tier;
use smesh_tests::kafka::KafkaBroker;
use smesh_tests::nodes::{self, Feeder, Process};
use smesh_tests::pki::Pki;
use smesh_tests::records::read_until_complete;
use smesh_tests::unique_topic;

const DELIVERY: Duration = Duration::from_secs(120);

/// The sidecars the client connected to, in order (ids as logged).
fn connections(client: &Process) -> Vec<String> {
    client
        .logged_values("connected to sidecar", "sidecar")
        .iter()
        .map(|s| s.split(' ').next().unwrap_or_default().to_string())
        .collect()
}

async fn wait_connected(client: &Process, id: &str) {
    smesh_tests::eventually(
        &format!("the client on {id}"),
        Duration::from_secs(30),
        || async { (connections(client).last().map(String::as_str) == Some(id)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_list_edited_while_running_loses_nothing() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("live-peers");
    let master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let mut sidecars = Vec::new();
    for id in ["S1", "S2", "S3"] {
        sidecars.push(
            nodes::sidecar(dir.path(), id, &[("M1", master.port)], 0)
                .spawn()
                .await,
        );
    }
    let port = |i: usize| sidecars[i].port;
    let input = dir.path().join("c1.jsonl");
    let mut feeder = Feeder::start(&input, "c1", 6000, 50, Duration::from_millis(100));
    let client = nodes::client(
        dir.path(),
        "c1",
        &[("S1", port(0))],
        &[nodes::file_source(&input, true)],
    )
    .spawn()
    .await;
    let list = nodes::client_dir(dir.path(), "c1").join("clientCon.csv");
    wait_connected(&client, "S1").await;

    // A broken edit is reported with file and line; S1 stays in use.
    std::fs::write(
        &list,
        format!("S1;127.0.0.1:{};\nS2;127.0.0.1:99999;\n", port(0)),
    )
    .expect("edit");
    client
        .wait_logged(
            "peer list changed but cannot be used",
            Duration::from_secs(10),
        )
        .await;
    let refusal = &client.log_events("peer list changed but cannot be used")[0];
    let problem = refusal["fields"]["problem"].as_str().unwrap_or_default();
    assert!(
        problem.contains("clientCon.csv:2:") && problem.contains("invalid port"),
        "{problem}"
    );

    // S1 removed and S2 added, told by SIGHUP: S1 is drained, then left.
    nodes::write_peers(&list, &[("S2", port(1))]);
    client.signal("HUP");
    wait_connected(&client, "S2").await;
    client
        .wait_logged("removed from the peer list", Duration::from_secs(10))
        .await;

    // S3 added and S2 removed, found by the poll alone.
    nodes::write_peers(&list, &[("S3", port(2))]);
    wait_connected(&client, "S3").await;

    feeder.finish();
    let sent = BTreeMap::from([("c1".to_string(), feeder.lines.clone())]);
    let (_, verdict) = read_until_complete(&kafka.bootstrap(), &topic, &sent, DELIVERY).await;
    verdict.assert_complete("sidecar list edited while running");
    assert_eq!(
        verdict.duplicates, 0,
        "a removed sidecar is drained, not abandoned: nothing is sent twice"
    );
    assert_eq!(connections(&client), ["S1", "S2", "S3"]);
    assert!(
        client.log_events("lost the sidecar").is_empty(),
        "every move was planned: {}",
        client.log_tail(30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_sidecar_is_dialed_at_its_address_and_checked_by_its_name_over_tls() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("named-peer");
    let pki = Pki::new(dir.path(), "ops");
    let master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .args(pki.issue(Tier::Master, "M1").flags())
        .spawn()
        .await;
    // The sidecar's certificate names `localhost` only, not 127.0.0.1.
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .args(
            pki.issue_for_hosts(Tier::Sidecar, "S1", &["localhost"])
                .flags(),
        )
        .spawn()
        .await;
    let input = dir.path().join("c1.jsonl");
    let sent = BTreeMap::from([(
        "c1".to_string(),
        nodes::write_lines(&input, "c1", 0..500, 40),
    )]);
    let spec = nodes::client(
        dir.path(),
        "c1",
        &[("S1", sidecar.port)],
        &[nodes::file_source(&input, false)],
    )
    .args(pki.issue(Tier::Client, "c1").flags());
    std::fs::write(
        nodes::client_dir(dir.path(), "c1").join("clientCon.csv"),
        format!("S1;localhost:{};\n", sidecar.port),
    )
    .expect("list");
    let mut client = spec.spawn().await;
    let status = client.wait_exit(DELIVERY).await;
    assert!(status.success(), "{}", client.log_tail(30));
    let (_, verdict) = read_until_complete(&kafka.bootstrap(), &topic, &sent, DELIVERY).await;
    verdict.assert_complete("a sidecar named by a host name");
    let on = client.log_events("connected to sidecar");
    let shown = on[0]["fields"]["sidecar"].as_str().unwrap_or_default();
    assert!(
        shown.starts_with("S1@127.0.0.1:") && shown.contains("(localhost:"),
        "dialed at the resolved address, shown with its name: {shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_list_edited_while_running_loses_nothing() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("live-masters");
    let m1 = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let m2 = nodes::master(dir.path(), "M2", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", m1.port)], 0)
        .spawn()
        .await;
    let input = dir.path().join("c1.jsonl");
    let mut feeder = Feeder::start(&input, "c1", 3000, 50, Duration::from_millis(100));
    let _client = nodes::client(
        dir.path(),
        "c1",
        &[("S1", sidecar.port)],
        &[nodes::file_source(&input, true)],
    )
    .spawn()
    .await;
    sidecar
        .wait_logged("first acknowledgement from master", Duration::from_secs(30))
        .await;
    // M1 replaced by M2: the sidecar drains M1, then takes M2.
    nodes::write_peers(&dir.path().join("S1-sidecarCon.csv"), &[("M2", m2.port)]);
    sidecar
        .wait_logged("left the master between batches", Duration::from_secs(30))
        .await;
    feeder.finish();
    let sent = BTreeMap::from([("c1".to_string(), feeder.lines.clone())]);
    let (_, verdict) = read_until_complete(&kafka.bootstrap(), &topic, &sent, DELIVERY).await;
    verdict.assert_complete("master list edited while running");
    assert_eq!(verdict.duplicates, 0, "M1 was drained, not abandoned");
    let masters = sidecar.logged_values("connected to master", "master");
    assert!(
        masters.len() == 2 && masters[0].starts_with("M1") && masters[1].starts_with("M2"),
        "{masters:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_ends_no_node() {
    // `systemctl reload` sends SIGHUP to every node; its default action would
    // end a process that does not handle it.
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("sighup");
    let mut master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let mut sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .spawn()
        .await;
    let input = dir.path().join("c1.jsonl");
    nodes::write_lines(&input, "c1", 0..10, 40);
    let mut client = nodes::client(
        dir.path(),
        "c1",
        &[("S1", sidecar.port)],
        &[nodes::file_source(&input, true)],
    )
    .spawn()
    .await;
    client
        .wait_logged(
            "first acknowledgement from sidecar",
            Duration::from_secs(30),
        )
        .await;
    for node in [&master, &sidecar, &client] {
        node.signal("HUP");
    }
    for node in [&master, &sidecar, &client] {
        node.wait_logged_text("SIGHUP: reloading", Duration::from_secs(10))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(master.is_running(), "SIGHUP ended the master");
    assert!(sidecar.is_running(), "SIGHUP ended the sidecar");
    assert!(client.is_running(), "SIGHUP ended the client");
}
