//! Nothing is lost when a sidecar, a master, Kafka or the client itself goes
//! away. Each test reads the topic afterwards and asserts zero events lost and
//! each client's order kept; duplicates are reported, not hidden.

// Test helpers fail loudly, like the tests they serve.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use smesh_proto::admin::admin_client::AdminClient;
use smesh_proto::admin::{GetStatusRequest, RunHealthCheckRequest, Tier};
use smesh_proto::mesh::{Event, PeerStatus};
use smesh_tests::kafka::KafkaBroker;
use smesh_tests::nodes::{self, Feeder, reserve_port};
use smesh_tests::records::{judge, read_topic, read_until_complete};
use smesh_tests::{eventually, health_of, unique_topic};
use tonic_health::pb::health_check_response::ServingStatus;

const DELIVERY: Duration = Duration::from_secs(120);

fn spool_rows(dir: &std::path::Path, client: &str) -> usize {
    std::fs::read_to_string(nodes::spool_path(dir, client))
        .map(|text| text.lines().count().saturating_sub(1))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_spools_while_no_sidecar_runs_and_drains_when_one_starts() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("no-sidecar");
    let sidecar_port = reserve_port();
    let input = dir.path().join("c1.jsonl");
    let lines = nodes::write_lines(&input, "c1", 0..500, 40);
    let mut client = nodes::client(
        dir.path(),
        "c1",
        &[("S1", sidecar_port)],
        &[nodes::file_source(&input, false)],
    )
    .args(["--spool", "on-failure"])
    .spawn()
    .await;
    eventually(
        "every event in the spool",
        Duration::from_secs(30),
        || async { (spool_rows(dir.path(), "c1") == 500).then_some(()) },
    )
    .await;
    assert!(client.is_running());

    let master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let _sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], sidecar_port)
        .spawn()
        .await;
    let status = client.wait_exit(DELIVERY).await;
    assert!(status.success(), "client exited with {status}");
    assert_eq!(spool_rows(dir.path(), "c1"), 0, "the spool ends empty");
    let records = read_topic(&kafka.bootstrap(), &topic, 500, Duration::from_secs(30));
    let verdict = judge(&records, &BTreeMap::from([("c1".to_string(), lines)]));
    verdict.assert_complete("no sidecar at start");
    assert_eq!(verdict.duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_sidecar_moves_the_client_to_the_next_one() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("kill-sidecar");
    let master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let mut s1 = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .spawn()
        .await;
    let s2 = nodes::sidecar(dir.path(), "S2", &[("M1", master.port)], 0)
        .spawn()
        .await;
    let input = dir.path().join("c1.jsonl");
    let mut feeder = Feeder::start(&input, "c1", 4000, 100, Duration::from_millis(100));
    let client = nodes::client(
        dir.path(),
        "c1",
        &[("S1", s1.port), ("S2", s2.port)],
        &[nodes::file_source(&input, true)],
    )
    // S1 first, so that killing S1 is what moves it.
    .args(["--sidecar-order", "ordered"])
    .spawn()
    .await;
    client
        .wait_logged("first acknowledgement from sidecar", DELIVERY)
        .await;
    s1.kill();
    feeder.finish();
    let sent = BTreeMap::from([("c1".to_string(), feeder.lines.clone())]);
    let (_, verdict) = read_until_complete(&kafka.bootstrap(), &topic, &sent, DELIVERY).await;
    verdict.assert_complete("sidecar killed");
    let connected = client.logged_values("connected to sidecar", "sidecar");
    assert!(
        connected.first().is_some_and(|s| s.starts_with("S1"))
            && connected.iter().any(|s| s.starts_with("S2")),
        "client went S1 then S2: {connected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_master_moves_the_sidecar_to_the_next_one() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("kill-master");
    let mut m1 = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let m2 = nodes::master(dir.path(), "M2", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", m1.port), ("M2", m2.port)], 0)
        .spawn()
        .await;
    let input = dir.path().join("c1.jsonl");
    let mut feeder = Feeder::start(&input, "c1", 4000, 100, Duration::from_millis(100));
    let _client = nodes::client(
        dir.path(),
        "c1",
        &[("S1", sidecar.port)],
        &[nodes::file_source(&input, true)],
    )
    .spawn()
    .await;
    sidecar
        .wait_logged("first acknowledgement from master", DELIVERY)
        .await;
    m1.kill();
    feeder.finish();
    let sent = BTreeMap::from([("c1".to_string(), feeder.lines.clone())]);
    let (_, verdict) = read_until_complete(&kafka.bootstrap(), &topic, &sent, DELIVERY).await;
    verdict.assert_complete("master killed");
    assert!(
        !sidecar.log_events("lost the master").is_empty(),
        "the sidecar noticed:\n{}",
        sidecar.log_tail(20)
    );
    let connected = sidecar.logged_values("connected to master", "master");
    assert!(
        connected.iter().any(|m| m.starts_with("M2")),
        "sidecar moved to M2: {connected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_leaves_a_master_that_cannot_reach_kafka_for_one_that_can() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("not-ready");
    let nowhere = format!("127.0.0.1:{}", reserve_port());
    let m1 = nodes::master(dir.path(), "M1", &nowhere, &topic, 0)
        .spawn()
        .await;
    let m2 = nodes::master(dir.path(), "M2", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", m1.port), ("M2", m2.port)], 0)
        .args(["--not-ready-failover-after", "2s"])
        .spawn()
        .await;
    let input = dir.path().join("c1.jsonl");
    let lines = nodes::write_lines(&input, "c1", 0..300, 40);
    let mut client = nodes::client(
        dir.path(),
        "c1",
        &[("S1", sidecar.port)],
        &[nodes::file_source(&input, false)],
    )
    .spawn()
    .await;
    let status = client.wait_exit(DELIVERY).await;
    assert!(status.success(), "client exited with {status}");
    let records = read_topic(&kafka.bootstrap(), &topic, 300, Duration::from_secs(30));
    judge(&records, &BTreeMap::from([("c1".to_string(), lines)]))
        .assert_complete("not-ready master");
    assert!(
        !sidecar.log_events("switching to one that can").is_empty(),
        "the sidecar switched masters:\n{}",
        sidecar.log_tail(20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_outage_mid_stream_loses_nothing() {
    let mut kafka = KafkaBroker::start().expect("a broker of our own");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("kafka-outage");
    let master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .spawn()
        .await;
    let input = dir.path().join("c1.jsonl");
    let mut feeder = Feeder::start(&input, "c1", 3000, 50, Duration::from_millis(50));
    let client = nodes::client(
        dir.path(),
        "c1",
        &[("S1", sidecar.port)],
        &[nodes::file_source(&input, true)],
    )
    .spawn()
    .await;
    client
        .wait_logged("first acknowledgement from sidecar", DELIVERY)
        .await;
    kafka.stop();
    // The outage lasts until the master has given up on Kafka.
    eventually("the master not serving", DELIVERY, || async {
        (health_of(master.port).await == Some(ServingStatus::NotServing)).then_some(())
    })
    .await;
    kafka.restart().expect("restart the broker");
    feeder.finish();
    let sent = BTreeMap::from([("c1".to_string(), feeder.lines.clone())]);
    let (_, verdict) = read_until_complete(&kafka.bootstrap(), &topic, &sent, DELIVERY).await;
    verdict.assert_complete("Kafka outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_in_always_mode_loses_nothing_it_read() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("kill-client");
    let master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .spawn()
        .await;
    let input = dir.path().join("c1.jsonl");
    let mut feeder = Feeder::start(&input, "c1", 4000, 100, Duration::from_millis(100));
    let spec = nodes::client(
        dir.path(),
        "c1",
        &[("S1", sidecar.port)],
        &[nodes::file_source(&input, true)],
    )
    .args(["--spool", "always"]);
    let mut client = spec.clone().spawn().await;
    client
        .wait_logged("first acknowledgement from sidecar", DELIVERY)
        .await;
    client.kill();
    let _restarted = spec.spawn().await;
    feeder.finish();
    let sent = BTreeMap::from([("c1".to_string(), feeder.lines.clone())]);
    let (records, verdict) = read_until_complete(&kafka.bootstrap(), &topic, &sent, DELIVERY).await;
    verdict.assert_complete("client killed");
    let ids: std::collections::HashSet<&str> =
        records.iter().filter_map(|r| r.header("ce_id")).collect();
    assert_eq!(
        ids.len(),
        4000,
        "no event id was given to two different events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stopped_with_sigterm_keeps_the_rest_in_its_spool_and_delivers_it_later() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("sigterm");
    let master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .spawn()
        .await;
    let input = dir.path().join("c1.jsonl");
    let mut feeder = Feeder::start(&input, "c1", 3000, 100, Duration::from_millis(100));
    let spec = nodes::client(
        dir.path(),
        "c1",
        &[("S1", sidecar.port)],
        &[nodes::file_source(&input, true)],
    )
    .args(["--spool", "on-failure"]);
    let mut client = spec.clone().spawn().await;
    client
        .wait_logged("first acknowledgement from sidecar", DELIVERY)
        .await;
    let status = client.stop(Duration::from_secs(20)).await;
    assert!(status.success(), "clean exit after draining: {status}");
    assert!(
        !client.log_events("client stopped").is_empty(),
        "{}",
        client.log_tail(10)
    );
    let _restarted = spec.spawn().await;
    feeder.finish();
    let sent = BTreeMap::from([("c1".to_string(), feeder.lines.clone())]);
    let (_, verdict) = read_until_complete(&kafka.bootstrap(), &topic, &sent, DELIVERY).await;
    verdict.assert_complete("client stopped and restarted");
}

/// One client run that reads `lines` new lines from a file of its own and
/// exits once Kafka has them; returns its stats file.
async fn run_client_to_the_end(
    dir: &std::path::Path,
    sidecar: u16,
    run: usize,
    lines: &mut Vec<Vec<u8>>,
) -> serde_json::Value {
    let input = dir.join(format!("run{run}.jsonl"));
    let first = lines.len() as u64;
    lines.extend(nodes::write_lines(&input, "c1", first..first + 200, 40));
    let stats = dir.join(format!("run{run}-stats.json"));
    let mut client = nodes::client(
        dir,
        "c1",
        &[("S1", sidecar)],
        &[nodes::file_source(&input, false)],
    )
    .args(["--stats-file", &stats.display().to_string()])
    .spawn()
    .await;
    let status = client.wait_exit(DELIVERY).await;
    assert!(status.success(), "run {run} exited with {status}");
    assert_eq!(spool_rows(dir, "c1"), 0, "run {run} left nothing behind");
    serde_json::from_slice(&std::fs::read(&stats).expect("stats file")).expect("stats JSON")
}

/// The `ce_id`s of the records whose payload is one of `payloads`.
fn ids_of<'a>(
    records: &'a [smesh_tests::records::Record],
    payloads: &[Vec<u8>],
) -> std::collections::HashSet<&'a str> {
    records
        .iter()
        .filter(|r| payloads.contains(&r.value))
        .filter_map(|r| r.header("ce_id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_or_unreadable_state_file_never_reuses_an_event_id() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("state-lost");
    let mut master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let master_port = master.port;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master_port)], 0)
        .spawn()
        .await;
    let state = nodes::client_dir(dir.path(), "c1").join("safeData.state");
    let mut lines = Vec::new();

    // Run 1 delivers everything; its spool ends empty (the normal state).
    let stats1 = run_client_to_the_end(dir.path(), sidecar.port, 1, &mut lines).await;
    let run1 = lines.clone();

    // (a) The state file is lost (a re-imaged device) while the master that
    // published run 1 keeps running: run 2 numbers from 1 again, and the
    // master must not take its events for resends of run 1's.
    std::fs::remove_file(&state).expect("delete the state file");
    let stats2 = run_client_to_the_end(dir.path(), sidecar.port, 2, &mut lines).await;
    let run2 = lines[run1.len()..].to_vec();
    let sent = BTreeMap::from([("c1".to_string(), lines.clone())]);
    let (records, verdict) =
        read_until_complete(&kafka.bootstrap(), &topic, &sent, Duration::from_secs(30)).await;
    verdict.assert_complete("state file deleted, master running");
    let (ids1, ids2) = (ids_of(&records, &run1), ids_of(&records, &run2));
    assert!(
        ids1.is_disjoint(&ids2),
        "run 2 reused ids of run 1: {:?}",
        ids1.intersection(&ids2).take(5).collect::<Vec<_>>()
    );
    assert_eq!(stats1["state"]["loaded"], "fresh", "{stats1}");
    assert_eq!(stats2["state"]["loaded"], "fresh", "{stats2}");
    assert_ne!(
        stats1["state"]["incarnation"],
        stats2["state"]["incarnation"]
    );

    // (b) The master restarts (its resend memory is gone), and the state
    // file is found empty, as a rename lost to a power failure can leave it:
    // the ids of run 3 are new to consumers that drop duplicates by id.
    master.kill();
    let _master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, master_port)
        .spawn()
        .await;
    std::fs::write(&state, b"").expect("empty the state file");
    let stats3 = run_client_to_the_end(dir.path(), sidecar.port, 3, &mut lines).await;
    let run3 = lines[run1.len() + run2.len()..].to_vec();
    let sent = BTreeMap::from([("c1".to_string(), lines.clone())]);
    let (records, verdict) = read_until_complete(&kafka.bootstrap(), &topic, &sent, DELIVERY).await;
    verdict.assert_complete("state file unreadable, master restarted");
    let ids3 = ids_of(&records, &run3);
    assert_eq!(ids3.len(), run3.len(), "one id per event of run 3");
    assert!(
        ids3.is_disjoint(&ids1) && ids3.is_disjoint(&ids2),
        "run 3 reused earlier ids"
    );
    assert_eq!(stats3["state"]["loaded"], "unreadable", "{stats3}");
    let client_log = std::fs::read_to_string(nodes::client_dir(dir.path(), "c1").join("c1.log"))
        .expect("client log");
    assert!(
        client_log
            .lines()
            .any(|l| l.contains("\"ERROR\"") && l.contains("client state file unreadable")),
        "an unreadable state file is an error in the log"
    );
}

fn spool_row(seq: u64, payload: &str) -> Vec<u8> {
    let event = Event {
        id: format!("c1-{seq}"),
        source: "smesh://c1/file/old".into(),
        r#type: "dev.smesh.file.record".into(),
        specversion: "1.0".into(),
        time_unix_nanos: 1_795_000_000_000_000_000,
        datacontenttype: "application/json".into(),
        data: bytes::Bytes::from(payload.to_string()),
        client_id: "c1".into(),
        sequence: seq,
        ..Event::default()
    };
    smesh_client::spool::encode_row(&event, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_spool_is_delivered_and_its_garbage_quarantined() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("damaged-spool");
    let spool = nodes::spool_path(dir.path(), "c1");
    std::fs::create_dir_all(spool.parent().expect("dir")).expect("client dir");
    let mut text = format!("{}\n", smesh_client::spool::HEADER).into_bytes();
    let mut payloads = Vec::new();
    for seq in 1..=100u64 {
        let payload = format!("{{\"spooled\":{seq}}}");
        text.extend(spool_row(seq, &payload));
        payloads.push(payload.into_bytes());
        if seq == 50 {
            text.extend_from_slice(b"garbage that is not a spool row\n");
        }
    }
    let torn = spool_row(101, "{\"spooled\":101}");
    text.extend_from_slice(&torn[..torn.len() / 2]);
    std::fs::write(&spool, text).expect("write spool");

    let master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .spawn()
        .await;
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, b"").expect("empty input");
    let mut client = nodes::client(
        dir.path(),
        "c1",
        &[("S1", sidecar.port)],
        &[nodes::file_source(&empty, false)],
    )
    .spawn()
    .await;
    let status = client.wait_exit(DELIVERY).await;
    assert!(
        status.success(),
        "a damaged spool does not stop the client: {status}"
    );
    let records = read_topic(&kafka.bootstrap(), &topic, 100, Duration::from_secs(30));
    let verdict = judge(&records, &BTreeMap::from([("c1".to_string(), payloads)]));
    verdict.assert_complete("damaged spool");
    assert_eq!(records.len(), 100, "the torn row is not delivered");
    let rejected =
        std::fs::read_to_string(nodes::client_dir(dir.path(), "c1").join("safeData.rejected.csv"))
            .expect("rejected file");
    assert!(
        rejected.contains("garbage that is not a spool row"),
        "{rejected}"
    );
    let recovered = client.log_events("recovered the spool");
    assert_eq!(recovered.len(), 1, "{}", client.log_tail(20));
    assert_eq!(recovered[0]["fields"]["quarantined"], 1);
    assert!(
        !client.log_events("torn row").is_empty(),
        "the torn row is reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_measure_every_peer_and_health_checks_write_a_row_per_peer() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("heartbeats");
    let master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let admin_port = master
        .logged_port("admin API listening")
        .expect("admin port");
    let s1 = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .spawn()
        .await;
    let s2 = nodes::sidecar(dir.path(), "S2", &[("M1", master.port)], 0)
        .spawn()
        .await;
    let _c1 = nodes::client(
        dir.path(),
        "c1",
        &[("S1", s1.port)],
        &["sensor:rate=5".to_string()],
    )
    .spawn()
    .await;
    let _c2 = nodes::client(
        dir.path(),
        "c2",
        &[("S2", s2.port)],
        &["sensor:rate=5".to_string()],
    )
    .spawn()
    .await;
    let mut admin = AdminClient::connect(format!("http://127.0.0.1:{admin_port}"))
        .await
        .expect("admin API");

    let status = eventually("RTTs of every peer", Duration::from_secs(30), || {
        let mut admin = admin.clone();
        async move {
            let status = admin
                .get_status(GetStatusRequest::default())
                .await
                .ok()?
                .into_inner();
            let sidecars_measured = status.sidecars.len() == 2
                && status
                    .sidecars
                    .iter()
                    .all(|s| s.rtt.as_ref().is_some_and(|r| r.last_us > 0));
            let clients_measured = status.clients.len() == 2
                && status.clients.iter().all(|c| {
                    c.info.as_ref().is_some_and(|i| {
                        i.backlog.is_some() && i.rtt.as_ref().is_some_and(|r| r.last_us > 0)
                    })
                });
            (sidecars_measured && clients_measured).then_some(status)
        }
    })
    .await;
    for view in &status.clients {
        let info = view.info.as_ref().expect("client info");
        assert!(
            info.backlog.is_some(),
            "{} reports its backlog",
            info.client_id
        );
        assert_eq!(info.status, PeerStatus::Up as i32);
    }

    let report = admin
        .run_health_check(RunHealthCheckRequest::default())
        .await
        .expect("health check")
        .into_inner();
    let mut peers: Vec<(i32, String)> = report
        .rows
        .iter()
        .map(|r| (r.tier, r.peer_id.clone()))
        .collect();
    peers.sort();
    assert_eq!(
        peers,
        vec![
            (Tier::Sidecar as i32, "S1".to_string()),
            (Tier::Sidecar as i32, "S2".to_string()),
            (Tier::Client as i32, "c1".to_string()),
            (Tier::Client as i32, "c2".to_string()),
            (Tier::Kafka as i32, "kafka".to_string()),
        ]
    );
    assert!(
        report
            .rows
            .iter()
            .all(|r| r.status == PeerStatus::Up as i32 && r.rtt_us > 0),
        "{report:?}"
    );

    // SIGUSR1 runs the same check from the command line.
    master.signal("USR1");
    let csv_path = dir.path().join("healthCheckReport.csv");
    let csv = eventually(
        "two checks in the report",
        Duration::from_secs(15),
        || async {
            let text = std::fs::read_to_string(&csv_path).ok()?;
            (text.lines().count() == 11).then_some(text)
        },
    )
    .await;
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("time,check_id,checking_node,tier,peer_id,address,status,rtt_ms,detail")
    );
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields[6], "up", "{line}");
        assert!(
            fields[7].parse::<f64>().is_ok_and(|ms| ms > 0.0),
            "RTT in ms: {line}"
        );
        let checker = match fields[3] {
            "client" if fields[4] == "c1" => "S1",
            "client" => "S2",
            _ => "M1",
        };
        assert_eq!(fields[2], checker, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_holds_sources_back_by_default_and_drops_only_when_asked() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("spool-full");
    let sidecar_port = reserve_port();
    let blocking_input = dir.path().join("blocking.jsonl");
    let blocking_lines = nodes::write_lines(&blocking_input, "blocking", 0..400, 100);
    let dropping_input = dir.path().join("dropping.jsonl");
    nodes::write_lines(&dropping_input, "dropping", 0..400, 100);
    let limit = ["--spool-max-bytes", "20000"];
    let mut blocking = nodes::client(
        dir.path(),
        "blocking",
        &[("S1", sidecar_port)],
        &[nodes::file_source(&blocking_input, false)],
    )
    .args(limit)
    .spawn()
    .await;
    let mut dropping = nodes::client(
        dir.path(),
        "dropping",
        &[("S1", sidecar_port)],
        &[nodes::file_source(&dropping_input, false)],
    )
    .args(limit)
    .args(["--on-spool-full", "drop"])
    .spawn()
    .await;
    // No sidecar yet: both spools fill up to the limit and stop growing.
    let rows = eventually("both spools full", Duration::from_secs(30), || async {
        let (b, d) = (
            spool_rows(dir.path(), "blocking"),
            spool_rows(dir.path(), "dropping"),
        );
        (b > 10 && d > 10).then_some((b, d))
    })
    .await;
    // The dropping client has hit its limit and dropped (and said so).
    dropping
        .wait_logged("spool full: events dropped", DELIVERY)
        .await;
    assert!(
        rows.0 < 400 && spool_rows(dir.path(), "blocking") < 400,
        "the blocking spool stays bounded"
    );
    assert!(
        spool_rows(dir.path(), "dropping") < 400,
        "the dropping spool stays bounded"
    );

    let master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let _sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], sidecar_port)
        .spawn()
        .await;
    for client in [&mut blocking, &mut dropping] {
        let status = client.wait_exit(DELIVERY).await;
        assert!(status.success(), "{} exited with {status}", client.name);
    }
    let records = smesh_tests::records::read_all(&kafka.bootstrap(), &topic);
    let sent = BTreeMap::from([("blocking".to_string(), blocking_lines)]);
    let blocked: Vec<_> = records
        .iter()
        .filter(|r| r.key == "blocking")
        .cloned()
        .collect();
    judge(&blocked, &sent).assert_complete("blocking spool");
    let dropped_delivered = records.iter().filter(|r| r.key == "dropping").count();
    assert!(
        dropped_delivered < 400,
        "some events were dropped: {dropped_delivered} delivered"
    );
    let warnings = dropping.log_events("spool full: events dropped");
    let dropped: u64 = warnings
        .iter()
        .filter_map(|w| w["fields"]["dropped"].as_u64())
        .sum();
    assert_eq!(
        dropped as usize + dropped_delivered,
        400,
        "every drop is counted and logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_freezes_longer_than_the_delivery_timeout_keep_every_clients_order() {
    let kafka = KafkaBroker::start().expect("a broker of our own, to freeze");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("long-freeze");
    // Kafka stalls three times as long as the master waits for a batch.
    let timeout = Duration::from_secs(2);
    let freeze = Duration::from_secs(6);
    let master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .args(["--delivery-timeout", "2s"])
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .spawn()
        .await;
    let mut feeders = Vec::new();
    let mut clients = Vec::new();
    for name in ["c1", "c2"] {
        let input = dir.path().join(format!("{name}.jsonl"));
        // 200 lines a second for about 25 s: through both freezes.
        feeders.push((
            name,
            Feeder::start(&input, name, 5000, 20, Duration::from_millis(100)),
        ));
        let client = nodes::client(
            dir.path(),
            name,
            &[("S1", sidecar.port)],
            &[nodes::file_source(&input, true)],
        )
        .spawn()
        .await;
        clients.push(client);
    }
    for client in &clients {
        client
            .wait_logged("first acknowledgement from sidecar", DELIVERY)
            .await;
    }
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        kafka.freeze();
        tokio::time::sleep(freeze).await;
        kafka.thaw();
    }
    assert!(freeze > timeout * 2);
    let mut sent = BTreeMap::new();
    for (name, mut feeder) in feeders {
        feeder.finish();
        sent.insert(name.to_string(), feeder.lines.clone());
    }
    let (_, verdict) = read_until_complete(&kafka.bootstrap(), &topic, &sent, DELIVERY).await;
    if !verdict.lost.is_empty() {
        // What the nodes saw, for a failure that only shows under load.
        for node in [&master, &sidecar].into_iter().chain(&clients) {
            eprintln!("--- {} ---\n{}", node.name, node.log_tail(60));
        }
    }
    verdict.assert_complete("two broker freezes longer than the delivery timeout");
}
