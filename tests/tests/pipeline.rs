//! Events flow client → sidecar → master → Kafka, and bad input is refused
//! clearly without losing anything. Real processes, a real Kafka broker.

// Test helpers fail loudly, like the tests they serve.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use smesh_tests::kafka::KafkaBroker;
use smesh_tests::nodes::{self, reserve_port};
use smesh_tests::records::{assert_placed, judge, read_topic};
use smesh_tests::{eventually, health_of, unique_topic};
use tonic_health::pb::health_check_response::ServingStatus;

const EVENTS_PER_CLIENT: u64 = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_through_two_sidecars_reach_kafka_exactly_once_and_in_order() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("flow");
    let _master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let master_port = _master.port;
    let s1 = nodes::sidecar(dir.path(), "S1", &[("M1", master_port)], 0)
        .spawn()
        .await;
    let s2 = nodes::sidecar(dir.path(), "S2", &[("M1", master_port)], 0)
        .spawn()
        .await;

    let mut sent = BTreeMap::new();
    let mut clients = Vec::new();
    for (i, id) in ["c1", "c2", "c3"].into_iter().enumerate() {
        let input = dir.path().join(format!("{id}.jsonl"));
        sent.insert(
            id.to_string(),
            nodes::write_lines(&input, id, 0..EVENTS_PER_CLIENT, 40),
        );
        // c1 and c3 prefer S1, c2 prefers S2: both sidecars carry traffic.
        let sidecars = if i == 1 {
            [("S2", s2.port), ("S1", s1.port)]
        } else {
            [("S1", s1.port), ("S2", s2.port)]
        };
        let source = nodes::file_source(&input, false);
        clients.push(
            nodes::client(dir.path(), id, &sidecars, &[source])
                .spawn()
                .await,
        );
    }
    // A client whose sources are finished exits 0 once Kafka has everything.
    for client in &mut clients {
        let status = client.wait_exit(Duration::from_secs(120)).await;
        assert!(status.success(), "{} exited with {status}", client.name);
    }
    let records = read_topic(
        &kafka.bootstrap(),
        &topic,
        sent.values().map(Vec::len).sum(),
        Duration::from_secs(30),
    );
    let verdict = judge(&records, &sent);
    verdict.assert_complete("three clients");
    assert_eq!(verdict.duplicates, 0, "no fault, so no duplicates");
    assert_eq!(records.len(), 3 * EVENTS_PER_CLIENT as usize);

    // CloudEvents binary mode: attributes in headers, data as the value.
    let record = records.iter().find(|r| r.key == "c2").expect("a c2 record");
    let sequence = record.sequence().expect("ce_id carries the sequence");
    let incarnation = record.incarnation().expect("ce_id carries the incarnation");
    assert_ne!(incarnation, 0);
    assert_eq!(
        record.header("ce_id"),
        Some(format!("c2-{incarnation:016x}-{sequence}").as_str())
    );
    assert_eq!(record.header("ce_specversion"), Some("1.0"));
    assert_eq!(record.header("ce_type"), Some("dev.smesh.file.record"));
    assert!(
        record
            .header("ce_source")
            .is_some_and(|s| s.starts_with("smesh://c2/file"))
    );
    assert!(record.header("ce_time").is_some_and(|t| t.ends_with('Z')));
    assert_eq!(record.header("content-type"), Some("application/json"));
    // Each client knows where its events went, and the records name
    // their hops.
    for id in ["c1", "c2", "c3"] {
        assert_placed(&nodes::spool_path(dir.path(), id), id, &records);
    }
    // Nothing is left in any spool.
    for id in ["c1", "c2", "c3"] {
        let spool = std::fs::read_to_string(nodes::spool_path(dir.path(), id)).expect("spool");
        assert_eq!(
            spool.lines().count(),
            1,
            "{id}'s spool holds only its header"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_is_not_serving_until_its_broker_is_up_and_then_delivers_what_waited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kafka_port = reserve_port();
    let bootstrap = format!("127.0.0.1:{kafka_port}");
    let topic = unique_topic("late-kafka");
    let master = nodes::master(dir.path(), "M1", &bootstrap, &topic, 0)
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .spawn()
        .await;
    // Readings arrive while Kafka is unreachable: nothing can be acknowledged.
    let input = dir.path().join("c1.jsonl");
    let lines = nodes::write_lines(&input, "c1", 0..200, 10);
    let source = nodes::file_source(&input, false);
    let mut client = nodes::client(dir.path(), "c1", &[("S1", sidecar.port)], &[source])
        .spawn()
        .await;

    let status = eventually("a health answer", Duration::from_secs(20), || {
        health_of(master.port)
    })
    .await;
    assert_eq!(status, ServingStatus::NotServing);
    // The client has read and spooled every line, and still nothing is acknowledged.
    eventually("every line spooled", Duration::from_secs(30), || async {
        let spool = std::fs::read_to_string(nodes::spool_path(dir.path(), "c1")).ok()?;
        (spool.lines().count() > 200).then_some(())
    })
    .await;
    assert_eq!(
        health_of(master.port).await,
        Some(ServingStatus::NotServing)
    );
    assert!(
        client.is_running(),
        "nothing is acknowledged, so the client waits"
    );
    let spool = std::fs::read_to_string(nodes::spool_path(dir.path(), "c1")).expect("spool");
    assert_eq!(spool.lines().count(), 201, "every event waits in the spool");

    let kafka =
        KafkaBroker::start_with_port(Some(kafka_port)).expect("start Kafka on the reserved port");
    eventually("SERVING", Duration::from_secs(60), || async {
        (health_of(master.port).await == Some(ServingStatus::Serving)).then_some(())
    })
    .await;
    let status = client.wait_exit(Duration::from_secs(90)).await;
    assert!(status.success(), "client exited with {status}");
    let records = read_topic(
        &kafka.bootstrap(),
        &topic,
        lines.len(),
        Duration::from_secs(30),
    );
    judge(&records, &BTreeMap::from([("c1".to_string(), lines)])).assert_complete("late Kafka");
    assert!(
        master.log().contains("Kafka unreachable"),
        "the master says why it is not serving:\n{}",
        master.log_tail(20)
    );
}

/// Runs a binary that should refuse to start; after 20 s it is killed (a
/// node that starts where it should have refused fails the test, it does
/// not hang it).
fn run_to_exit(binary: &str, dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    let mut child = std::process::Command::new(nodes::binary(binary))
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run binary");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("collect output");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn malformed_peer_lists_and_flags_exit_64_with_one_line_naming_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clients = dir.path().join("clientCon.csv");
    std::fs::write(
        &clients,
        "# sidecars\nSidecar1;127.0.0.1:9000;\nSidecar2;127.0.0.1:90000;\n",
    )
    .expect("write");
    let (code, stderr) = run_to_exit(
        "smesh-client",
        dir.path(),
        &["--sidecars", clients.to_str().expect("utf8")],
    );
    assert_eq!(code, 64, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("clientCon.csv:3:") && stderr.contains("invalid port"),
        "{stderr}"
    );

    let masters = dir.path().join("sidecarCon.csv");
    std::fs::write(&masters, "Master1;127.0.0.1;\nMaster2\n").expect("write");
    let (code, stderr) = run_to_exit(
        "smesh-sidecar",
        dir.path(),
        &["--masters", masters.to_str().expect("utf8")],
    );
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("sidecarCon.csv:2:") && stderr.contains("has 1 fields"),
        "{stderr}"
    );

    let (code, stderr) = run_to_exit(
        "smesh-sidecar",
        dir.path(),
        &["--masters", "/nonexistent/sidecarCon.csv"],
    );
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("/nonexistent/sidecarCon.csv"), "{stderr}");

    let (code, stderr) = run_to_exit(
        "smesh-master",
        dir.path(),
        &["--kafka-brokers", "no-port-here"],
    );
    assert_eq!((code, stderr.lines().count()), (64, 1), "{stderr}");
    assert!(stderr.contains("--kafka-brokers"), "{stderr}");

    let (code, stderr) = run_to_exit("smesh-master", dir.path(), &["--no-such-flag"]);
    assert_eq!((code, stderr.lines().count()), (64, 1), "{stderr}");

    let (code, stderr) = run_to_exit("smesh-client", dir.path(), &["--source", "sensor:rate=-1"]);
    assert_eq!((code, stderr.lines().count()), (64, 1), "{stderr}");
    assert!(stderr.contains("invalid rate"), "{stderr}");

    let (code, stderr) = run_to_exit(
        "smesh-master",
        dir.path(),
        // (On loopback: in plaintext the default 0.0.0.0 is refused first.)
        &[
            "--kafka-config",
            "no.such.property=1",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    assert_eq!((code, stderr.lines().count()), (64, 1), "{stderr}");
    assert!(stderr.contains("no.such.property"), "{stderr}");
}

#[test]
fn durations_rates_and_unsafe_kafka_overrides_are_refused_before_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clients = dir.path().join("clientCon.csv");
    std::fs::write(&clients, "S1;127.0.0.1:9000;\n").expect("write");
    let masters = dir.path().join("sidecarCon.csv");
    std::fs::write(&masters, "M1;127.0.0.1:9010;\n").expect("write");
    let client = |flags: &[&str]| {
        let mut args = vec!["--sidecars", clients.to_str().expect("utf8")];
        args.extend_from_slice(flags);
        run_to_exit("smesh-client", dir.path(), &args)
    };
    let sidecar = |flags: &[&str]| {
        let mut args = vec!["--masters", masters.to_str().expect("utf8")];
        args.extend_from_slice(flags);
        run_to_exit("smesh-sidecar", dir.path(), &args)
    };
    let master = |flags: &[&str]| run_to_exit("smesh-master", dir.path(), flags);
    let cases: Vec<(&str, (i32, String), &str)> = vec![
        (
            "client --report-interval 0s",
            client(&["--report-interval", "0s"]),
            "--report-interval",
        ),
        (
            "client --heartbeat-timeout 0s",
            client(&["--heartbeat-timeout", "0s"]),
            "--heartbeat-timeout",
        ),
        (
            "client --connect-timeout 0s",
            client(&["--connect-timeout", "0s"]),
            "--connect-timeout",
        ),
        (
            "http every=0s",
            client(&["--source", "http:url=http://127.0.0.1:1/x,every=0s"]),
            "every",
        ),
        (
            "http timeout=0s",
            client(&["--source", "http:url=http://127.0.0.1:1/x,timeout=0s"]),
            "timeout",
        ),
        (
            "sensor rate=1e-30",
            client(&["--source", "sensor:rate=1e-30"]),
            "rate",
        ),
        (
            "file poll=0s",
            client(&["--source", "file:path=x.txt,poll=0s"]),
            "poll",
        ),
        (
            "sidecar --heartbeat-timeout 0s",
            sidecar(&["--heartbeat-timeout", "0s"]),
            "--heartbeat-timeout",
        ),
        (
            "sidecar --connect-timeout 0s",
            sidecar(&["--connect-timeout", "0s"]),
            "--connect-timeout",
        ),
        (
            "sidecar --not-ready-failover-after 0s",
            sidecar(&["--not-ready-failover-after", "0s"]),
            "--not-ready-failover-after",
        ),
        (
            "master --delivery-timeout 0s",
            master(&["--delivery-timeout", "0s"]),
            "--delivery-timeout",
        ),
        (
            "master --probe-timeout 0s",
            master(&["--probe-timeout", "0s"]),
            "--probe-timeout",
        ),
        (
            "master --kafka-unavailable-after 0s",
            master(&["--kafka-unavailable-after", "0s"]),
            "--kafka-unavailable-after",
        ),
        (
            "enable.idempotence=false",
            master(&["--kafka-config", "enable.idempotence=false"]),
            "enable.idempotence",
        ),
        ("acks=1", master(&["--kafka-config", "acks=1"]), "acks"),
        (
            "max.in.flight=50",
            master(&["--kafka-config", "max.in.flight.requests.per.connection=50"]),
            "max.in.flight",
        ),
        (
            "retries=0",
            master(&["--kafka-config", "retries=0"]),
            "retries",
        ),
        (
            "message.timeout.ms",
            master(&["--kafka-config", "message.timeout.ms=1"]),
            "--delivery-timeout",
        ),
        (
            "enable.gapless.guarantee=false",
            master(&["--kafka-config", "enable.gapless.guarantee=false"]),
            "enable.gapless.guarantee",
        ),
    ];
    for (case, (code, stderr), needle) in cases {
        assert_eq!((code, stderr.lines().count()), (64, 1), "{case}: {stderr}");
        assert!(stderr.contains(needle), "{case}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_events_are_rejected_with_a_reason_and_the_rest_delivered() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("oversized");
    // The master accepts less than the client: its refusal travels back.
    let master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .args(["--max-event-bytes", "20000"])
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .spawn()
        .await;
    let input = dir.path().join("c1.jsonl");
    let mut lines = nodes::write_lines(&input, "c1", 0..50, 10);
    // Too large for the client itself (limit 100000) …
    let huge = format!("{{\"huge\":\"{}\"}}", "h".repeat(200_000));
    // … and too large for the master only.
    let large = format!("{{\"large\":\"{}\"}}", "l".repeat(50_000));
    std::fs::write(&input, {
        let mut text = std::fs::read_to_string(&input).expect("read");
        text.push_str(&huge);
        text.push('\n');
        text.push_str(&large);
        text.push('\n');
        text
    })
    .expect("write");
    lines.extend(nodes::write_lines(&input, "c1", 50..100, 10));
    let source = nodes::file_source(&input, false);
    let mut client = nodes::client(dir.path(), "c1", &[("S1", sidecar.port)], &[source])
        .args(["--max-event-bytes", "100000"])
        .spawn()
        .await;
    let status = client.wait_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "client exited with {status}");
    let records = read_topic(
        &kafka.bootstrap(),
        &topic,
        lines.len(),
        Duration::from_secs(30),
    );
    judge(&records, &BTreeMap::from([("c1".to_string(), lines)])).assert_complete("oversized");
    assert_eq!(
        records.len(),
        100,
        "the two oversized events are not in Kafka"
    );

    let rejected_path = nodes::client_dir(dir.path(), "c1").join("safeData.rejected.csv");
    let rejected = std::fs::read_to_string(&rejected_path).expect("rejected file");
    assert!(
        rejected.contains("more than the limit of 100000 bytes"),
        "client-side reason"
    );
    assert!(
        rejected.contains("more than the limit of 20000 bytes"),
        "master-side reason"
    );
    assert!(
        rejected.contains(&"h".repeat(200_000)),
        "the huge payload is kept whole"
    );
    assert!(
        rejected.contains(&"l".repeat(50_000)),
        "the large payload is kept whole"
    );
    assert!(
        !client.log_events("can never be delivered").is_empty(),
        "the client logs the refusal:\n{}",
        client.log_tail(20)
    );
}

/// Serves `body` as JSON to every request, like an open-data API.
async fn serve_json(body: &'static str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_stdin_sources_deliver_what_they_read() {
    const AMPEL: &str = r#"[{"Stand":"2021-03-04T18:00:00Z","Warnstufen":[{"Region":"Stadt","GKZ":"90001","Name":"Wien","Warnstufe":"3"},{"Region":"Bezirk","GKZ":"30101","Name":"Krems","Warnstufe":"2"},{"Region":"Bezirk","GKZ":"60101","Name":"Graz","Warnstufe":"1"}]}]"#;
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("sources");
    let master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .spawn()
        .await;

    let port = serve_json(AMPEL).await;
    let url = format!("http://127.0.0.1:{port}/ampel.json");
    let source = format!("http:url={url},every=1s,pointer=/0/Warnstufen");
    let _poller = nodes::client(dir.path(), "ampel", &[("S1", sidecar.port)], &[source])
        .spawn()
        .await;

    let input = dir.path().join("stdin.txt");
    let lines: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("line {i}, with a comma").into_bytes())
        .collect();
    let mut text = lines.join(&b"\n"[..]);
    text.push(b'\n');
    std::fs::write(&input, text).expect("write stdin");
    let mut piped = nodes::client(
        dir.path(),
        "piped",
        &[("S1", sidecar.port)],
        &["stdin".to_string()],
    )
    .stdin_from(input)
    .spawn()
    .await;
    let status = piped.wait_exit(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "a stdin client exits once its input is delivered: {status}"
    );

    // Two polls of the open-data API: three events each.
    let records = eventually("two polls in Kafka", Duration::from_secs(30), || {
        let (bootstrap, topic) = (kafka.bootstrap(), topic.clone());
        async move {
            let records = tokio::task::spawn_blocking(move || {
                smesh_tests::records::read_all(&bootstrap, &topic)
            })
            .await
            .ok()?;
            (records.iter().filter(|r| r.key == "ampel").count() >= 6).then_some(records)
        }
    })
    .await;
    // Each poll splits the array at the pointer: one event per element, in
    // order, each carrying exactly that element.
    let ampel: serde_json::Value = serde_json::from_str(AMPEL).expect("fixture");
    let elements = ampel
        .pointer("/0/Warnstufen")
        .and_then(serde_json::Value::as_array)
        .expect("the fixture has an array at the pointer");
    let polled: Vec<_> = records.iter().filter(|r| r.key == "ampel").collect();
    for (n, record) in polled.iter().take(2 * elements.len()).enumerate() {
        let i = n % elements.len();
        let element = serde_json::to_vec(&elements[i]).expect("encode");
        assert_eq!(
            String::from_utf8_lossy(&record.value),
            String::from_utf8_lossy(&element),
            "event {n} of the polls carries element {i}"
        );
        let subject = format!("/0/Warnstufen/{i}");
        assert_eq!(record.header("ce_subject"), Some(subject.as_str()));
        assert_eq!(record.header("ce_source"), Some(url.as_str()));
        assert_eq!(record.header("content-type"), Some("application/json"));
    }

    let piped_records: Vec<_> = records
        .iter()
        .filter(|r| r.key == "piped")
        .cloned()
        .collect();
    judge(
        &piped_records,
        &BTreeMap::from([("piped".to_string(), lines)]),
    )
    .assert_complete("stdin");
    assert_eq!(piped_records[0].header("content-type"), Some("text/plain"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_body_larger_than_the_limit_goes_whole_to_the_rejected_file() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("http-oversized");
    let master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .spawn()
        .await;
    // An open-data API whose answer outgrew the client's limit.
    let body: &'static str =
        Box::leak(format!("{{\"big\":\"{}\"}}", "b".repeat(5_000)).into_boxed_str());
    let port = serve_json(body).await;
    let source = format!("http:url=http://127.0.0.1:{port}/big.json,every=1s");
    let poller = nodes::client(dir.path(), "big", &[("S1", sidecar.port)], &[source])
        .args(["--max-event-bytes", "2000"])
        .spawn()
        .await;
    let rejected_path = nodes::client_dir(dir.path(), "big").join("safeData.rejected.csv");
    // Two polls, two rejections: the source goes on after the first.
    let rejected = eventually("two rejected bodies", Duration::from_secs(30), || {
        let path = rejected_path.clone();
        async move {
            let text = std::fs::read_to_string(path).ok()?;
            (text.matches("more than the limit of 2000 bytes").count() >= 2).then_some(text)
        }
    })
    .await;
    assert!(
        rejected.contains(&"b".repeat(5_000)),
        "the body is kept whole"
    );
    assert!(
        !poller
            .log_events("larger than --max-event-bytes")
            .is_empty(),
        "the client says so:\n{}",
        poller.log_tail(20)
    );
    let records = smesh_tests::records::read_all(&kafka.bootstrap(), &topic);
    assert!(
        records.is_empty(),
        "nothing of it in Kafka: {}",
        records.len()
    );
}

#[test]
fn a_file_source_that_cannot_read_its_file_stops_the_client_with_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clients = dir.path().join("clientCon.csv");
    std::fs::write(&clients, "S1;127.0.0.1:9;\n").expect("write");
    let missing = dir.path().join("missing.jsonl");
    let source = format!("file:path={},follow=false", missing.display());
    let (code, stderr) = run_to_exit(
        "smesh-client",
        dir.path(),
        &[
            "--sidecars",
            clients.to_str().expect("utf8"),
            "--spool-file",
            dir.path().join("safeData.csv").to_str().expect("utf8"),
            "--source",
            &source,
        ],
    );
    assert_eq!(code, 70, "not exit 0 having read nothing: {stderr}");
    assert!(stderr.contains("missing.jsonl"), "{stderr}");
}
