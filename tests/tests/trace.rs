//! `smesh-console trace <ce_id>` on a topic a real mesh wrote: the hops and
//! the place in Kafka of one event, from the record and from the client's
//! placements file; a copy written twice, an id never written, a bad id.

// Test helpers fail loudly, like the tests they serve.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use smesh_tests::kafka::KafkaBroker;
use smesh_tests::records::{judge, read_topic};
use smesh_tests::{nodes, unique_topic};

/// Runs `smesh-console trace` and hands back its exit code and stdout.
async fn trace(kafka: &str, topic: &str, args: &[&str]) -> (i32, String) {
    let output = tokio::process::Command::new(nodes::binary("smesh-console"))
        .args([
            "trace",
            "--kafka-brokers",
            kafka,
            "--topic",
            topic,
            "--timeout",
            "60s",
        ])
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), output)
        .await
        .expect("trace ends within 90 s")
        .expect("run smesh-console trace");
    (
        output.status.code().expect("exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

async fn trace_json(kafka: &str, topic: &str, args: &[&str]) -> (i32, Value) {
    let mut flags = vec!["--json"];
    flags.extend_from_slice(args);
    let (code, out) = trace(kafka, topic, &flags).await;
    let json = serde_json::from_str(&out).unwrap_or_else(|err| panic!("no JSON ({err}): {out}"));
    (code, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_shows_where_an_event_went_and_when_and_counts_its_copies() {
    let kafka = KafkaBroker::shared().expect("Kafka broker").bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("trace");
    let master = nodes::master(dir.path(), "M1", &kafka, &topic, 0)
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .spawn()
        .await;
    let input = dir.path().join("c1.jsonl");
    let sent = BTreeMap::from([(
        "c1".to_string(),
        nodes::write_lines(&input, "c1", 0..300, 40),
    )]);
    let mut client = nodes::client(
        dir.path(),
        "c1",
        &[("S1", sidecar.port)],
        &[nodes::file_source(&input, false)],
    )
    .spawn()
    .await;
    let status = client.wait_exit(Duration::from_secs(120)).await;
    assert!(status.success(), "c1 exited with {status}");
    let records = read_topic(&kafka, &topic, 300, Duration::from_secs(30));
    judge(&records, &sent).assert_complete("trace");
    let record = records
        .iter()
        .find(|r| r.sequence() == Some(150))
        .expect("event 150");
    let id = record.header("ce_id").expect("ce_id").to_string();
    let placed = smesh_client::placed::placed_path(&nodes::spool_path(dir.path(), "c1"));
    let placed = placed.display().to_string();

    // With the client's placements: just that range is read.
    let (code, found) = trace_json(&kafka, &topic, &[&id, "--placed", &placed]).await;
    assert_eq!(code, 0, "found once: {found:#}");
    let copies = found["copies"].as_array().expect("copies");
    assert_eq!(copies.len(), 1, "{found:#}");
    assert_eq!(copies[0]["partition"], record.partition);
    assert_eq!(copies[0]["offset"], record.offset);
    assert_eq!(copies[0]["sidecar"]["node"], "S1", "{found:#}");
    assert_eq!(copies[0]["master"]["node"], "M1", "{found:#}");
    assert_eq!(copies[0]["previous"], 149);
    assert_eq!(found["acked"]["sidecar"], "S1");
    assert_eq!(found["acked"]["master"], "M1");
    assert!(
        found["searched"]
            .as_str()
            .is_some_and(|s| s.contains("placements")),
        "{found:#}"
    );
    // The same in lines for people: every hop, in order.
    let (code, text) = trace(&kafka, &topic, &[&id, "--placed", &placed]).await;
    assert_eq!(code, 0, "{text}");
    let steps: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        steps,
        [
            "OK:", "client", "read", "sidecar", "master", "kafka", "acked"
        ],
        "{text}"
    );

    // Without them: the whole topic; a second copy makes it a WARNING.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .create()
        .expect("producer");
    let mut headers = OwnedHeaders::new();
    for (key, value) in &record.headers {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    producer
        .send(
            BaseRecord::to(&topic)
                .partition(record.partition)
                .key(record.key.as_bytes())
                .payload(record.value.as_slice())
                .headers(headers),
        )
        .map_err(|(err, _)| err)
        .expect("queue the copy");
    producer
        .flush(Duration::from_secs(30))
        .expect("copy written");
    let (code, found) = trace_json(&kafka, &topic, &[&id]).await;
    assert_eq!(code, 1, "two copies: {found:#}");
    assert_eq!(
        found["copies"].as_array().map(Vec::len),
        Some(2),
        "{found:#}"
    );
    assert!(found["acked"].is_null());

    // An id never written is CRITICAL; one smesh never makes is a usage error.
    let incarnation = record.incarnation().expect("incarnation");
    let absent = smesh_core::event::event_id("c1", incarnation, 100_000);
    let (code, found) = trace_json(&kafka, &topic, &[&absent]).await;
    assert_eq!(code, 2, "not found: {found:#}");
    let (code, found) = trace_json(&kafka, &topic, &[&id, "--client", "c1"]).await;
    assert_eq!(
        (code, found["client"].as_str()),
        (1, Some("c1")),
        "{found:#}"
    );
    let (code, out) = trace(&kafka, &topic, &[&id, "--client", "c2"]).await;
    assert_eq!(code, 64, "not an id of c2: {out}");
    let (code, out) = trace(&kafka, &topic, &["not an id"]).await;
    assert_eq!(code, 64, "{out}");
    assert_eq!(out.lines().count(), 1, "one line: {out}");
}
