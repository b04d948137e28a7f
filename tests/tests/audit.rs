//! `smesh-console audit` against a real broker: topics written record by
//! record with a known gap, duplicate, order violation, lost tail and
//! garbage, judged by the real binary (exit code and JSON); and a real
//! mesh in exactly-once mode whose topic the audit passes.

// Test helpers fail loudly, like the tests they serve.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use smesh_tests::audit::{audit, audit_json, identity};
use smesh_tests::kafka::KafkaBroker;
use smesh_tests::records::create_topic;
use smesh_tests::{eventually, nodes, unique_topic};

fn producer(kafka: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("linger.ms", "0")
        .create()
        .expect("create producer")
}

/// A record as a master writes one: key = client, `ce_id`, `smesh-previous`.
fn event(
    producer: &BaseProducer,
    topic: &str,
    partition: i32,
    client: &str,
    incarnation: u64,
    sequence: u64,
    previous: u64,
) {
    let id = smesh_core::event::event_id(client, incarnation, sequence);
    let previous = previous.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "ce_id",
            value: Some(id.as_bytes()),
        })
        .insert(Header {
            key: "ce_time",
            value: Some("2026-12-07T12:00:00Z"),
        })
        .insert(Header {
            key: "smesh-previous",
            value: Some(previous.as_bytes()),
        });
    raw(
        producer,
        BaseRecord::to(topic)
            .partition(partition)
            .key(client.as_bytes())
            .payload(b"{}".as_slice())
            .headers(headers),
    );
}

fn raw(producer: &BaseProducer, record: BaseRecord<'_, [u8], [u8]>) {
    producer
        .send(record)
        .map_err(|(err, _)| err)
        .expect("queue a record");
    producer
        .flush(Duration::from_secs(30))
        .expect("records delivered");
}

/// A chain `sequences` of one identity, each linking to the one before.
fn chain(producer: &BaseProducer, topic: &str, partition: i32, client: &str, sequences: &[u64]) {
    let mut previous = 0;
    for &sequence in sequences {
        event(producer, topic, partition, client, 1, sequence, previous);
        previous = sequence;
    }
}

fn mark(producer: &BaseProducer, marks_topic: &str, client: &str, incarnation: u64, through: u64) {
    let key = format!("{client}/{incarnation:016x}");
    let value = format!(r#"{{"through":{through},"master":"M1","written_unix_nanos":1}}"#);
    raw(
        producer,
        BaseRecord::to(marks_topic)
            .key(key.as_bytes())
            .payload(value.as_bytes()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_duplicates_order_lost_tails_and_garbage_are_found() {
    let kafka = KafkaBroker::shared().expect("broker").bootstrap();
    let topic = unique_topic("audit-broken");
    let marks_topic = format!("{topic}.smesh-marks");
    create_topic(&kafka, &topic, 2, &[]).await;
    create_topic(&kafka, &marks_topic, 1, &[]).await;
    let p = producer(&kafka);
    // whole: 1..=5, with a numbering jump (6 refused at the client) that
    // its links bridge: no gap. Marked through 7.
    chain(&p, &topic, 0, "whole", &[1, 2, 3, 4, 5, 7]);
    mark(&p, &marks_topic, "whole", 1, 7);
    // gap: 4 names 3, which is not there.
    chain(&p, &topic, 1, "gap", &[1, 2]);
    event(&p, &topic, 1, "gap", 1, 4, 3);
    // dup: 2 written twice.
    chain(&p, &topic, 0, "dup", &[1, 2, 3]);
    event(&p, &topic, 0, "dup", 1, 2, 1);
    // order: 3 before 2 (links intact: no gap once both are read).
    event(&p, &topic, 1, "order", 1, 1, 0);
    event(&p, &topic, 1, "order", 1, 3, 2);
    event(&p, &topic, 1, "order", 1, 2, 1);
    // tail: marked through 4, only 1..=3 in the topic.
    chain(&p, &topic, 0, "tail", &[1, 2, 3]);
    mark(&p, &marks_topic, "tail", 1, 4);
    // A claim is not a mark.
    raw(
        &p,
        BaseRecord::to(&marks_topic)
            .key(b"tail/0000000000000001/claim".as_slice())
            .payload(br#"{"master":"M2","nonce":1}"#.as_slice()),
    );
    // Garbage: no key; a key that is not UTF-8; a ce_id of another client.
    raw(
        &p,
        BaseRecord::to(&topic)
            .partition(0)
            .payload(b"no key".as_slice()),
    );
    raw(
        &p,
        BaseRecord::to(&topic)
            .partition(0)
            .key(b"\xff\xfe".as_slice())
            .payload(b"bad key".as_slice()),
    );
    raw(
        &p,
        BaseRecord::to(&topic)
            .partition(1)
            .key(b"whole".as_slice())
            .payload(b"x".as_slice())
            .headers(OwnedHeaders::new().insert(Header {
                key: "ce_id",
                value: Some("other-1"),
            })),
    );

    let (code, report) = audit_json(&kafka, &topic, &[]).await;
    assert_eq!(code, 2, "CRITICAL: {report:#}");
    assert_eq!(report["status"], "CRITICAL");
    assert_eq!(report["delivery"], "exactly-once", "marks topic found");
    assert_eq!(report["complete"], true);
    assert_eq!(report["marks_topic"], marks_topic.as_str());
    assert_eq!(report["totals"]["unparseable"], 3, "{report:#}");

    let whole = identity(&report, "whole");
    assert_eq!(whole["events"], 6);
    assert_eq!(whole["ranges"], serde_json::json!([[1, 5], [7, 7]]));
    assert_eq!(whole["gap_count"], 0);
    assert_eq!(whole["mark_through"], 7);
    assert_eq!(whole["tail_lost"], false);
    assert_eq!(whole["incarnation"], "0000000000000001");
    assert_eq!(whole["newest"]["sequence"], 7);
    assert_eq!(whole["newest"]["event_time"], "2026-12-07T12:00:00Z");
    assert!(whole["newest"]["age_seconds"].as_u64().expect("age") < 600);

    let gap = identity(&report, "gap");
    assert_eq!(gap["gap_count"], 1);
    assert_eq!(
        gap["gaps"],
        serde_json::json!([{"missing": 3, "named_by": 4, "possibly_from": 3}])
    );
    let dup = identity(&report, "dup");
    assert_eq!(
        (dup["records"].clone(), dup["events"].clone()),
        (4.into(), 3.into())
    );
    assert_eq!(dup["duplicates"], 1);
    assert_eq!(dup["order_violations"], 0);
    let order = identity(&report, "order");
    assert_eq!(order["order_violations"], 1);
    assert_eq!(order["gap_count"], 0);
    assert_eq!(order["duplicates"], 0);
    let tail = identity(&report, "tail");
    assert_eq!(tail["mark_through"], 4);
    assert_eq!(tail["tail_lost"], true);
    assert_eq!(report["totals"]["lost_tails"], 1);

    // The table says the same to people.
    let output = audit(&kafka, &topic, &[]).await;
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("CRITICAL: "), "{text}");
    assert!(text.contains("1-5,7"), "{text}");
    assert!(text.contains("the tail was lost"), "{text}");
    assert!(text.contains("3 (named by 4"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_counted_and_order_warns_in_at_least_once_mode() {
    let kafka = KafkaBroker::shared().expect("broker").bootstrap();
    let dups = unique_topic("audit-alo-dups");
    create_topic(&kafka, &dups, 1, &[]).await;
    let p = producer(&kafka);
    chain(&p, &dups, 0, "c", &[1, 2, 3]);
    chain(&p, &dups, 0, "c", &[2, 3]);
    // No marks topic: `auto` judges as at-least-once.
    let (code, report) = audit_json(&kafka, &dups, &[]).await;
    assert_eq!(code, 0, "duplicates alone are OK: {report:#}");
    assert_eq!(report["delivery"], "at-least-once");
    assert_eq!(report["totals"]["duplicates"], 2);
    // The same topic judged as exactly-once: CRITICAL.
    let (code, _) = audit_json(&kafka, &dups, &["--delivery", "exactly-once"]).await;
    assert_eq!(code, 2);

    let order = unique_topic("audit-alo-order");
    create_topic(&kafka, &order, 1, &[]).await;
    event(&p, &order, 0, "c", 1, 1, 0);
    event(&p, &order, 0, "c", 1, 3, 2);
    event(&p, &order, 0, "c", 1, 2, 1);
    let (code, report) = audit_json(&kafka, &order, &[]).await;
    assert_eq!(code, 1, "WARNING: {report:#}");
    assert_eq!(report["status"], "WARNING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_unknown_and_a_bad_flag_is_a_usage_error() {
    let kafka = KafkaBroker::shared().expect("broker").bootstrap();
    let output = audit(&kafka, &unique_topic("audit-missing"), &[]).await;
    assert_eq!(output.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("UNKNOWN: topic ") && stdout.contains("does not exist"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");

    // Nothing listens on port 1: UNKNOWN once --connect-timeout passed.
    let output = audit("127.0.0.1:1", "t", &["--connect-timeout", "2s"]).await;
    assert_eq!(output.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("UNKNOWN: cannot read"), "{stdout}");

    let output = audit(&kafka, "t", &["--delivery", "twice"]).await;
    assert_eq!(output.status.code(), Some(64));
    let output = audit(&kafka, "t", &["--kafka-config", "no.such.setting=1"]).await;
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no.such.setting"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_delivering_exactly_once_passes_the_audit() {
    let kafka = KafkaBroker::shared().expect("broker").bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("audit-mesh");
    let master = nodes::master(dir.path(), "M1", &kafka, &topic, 0)
        .args(["--delivery", "exactly-once"])
        .spawn()
        .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .spawn()
        .await;
    const EVENTS: u64 = 500;
    let input = dir.path().join("c1.jsonl");
    nodes::write_lines(&input, "c1", 0..EVENTS, 32);
    let _client = nodes::client(
        dir.path(),
        "c1",
        &[("S1", sidecar.port)],
        &[nodes::file_source(&input, true)],
    )
    .spawn()
    .await;
    eventually(
        "the audit sees every event",
        Duration::from_secs(120),
        || {
            let (kafka, topic) = (kafka.clone(), topic.clone());
            async move {
                let (_, report) = audit_json(&kafka, &topic, &[]).await;
                let events = report["totals"]["events"].as_u64().unwrap_or(0);
                (events >= EVENTS).then_some(())
            }
        },
    )
    .await;
    // Every event is committed now: a run from here reads the last mark too.
    let (code, report) = audit_json(&kafka, &topic, &[]).await;
    assert_eq!(code, 0, "OK: {report:#}");
    assert_eq!(report["delivery"], "exactly-once");
    let c1 = identity(&report, "c1");
    assert_eq!(c1["events"], EVENTS, "{report:#}");
    assert_eq!(c1["records"], EVENTS);
    assert_eq!(c1["range_count"], 1);
    assert_eq!(c1["gap_count"], 0);
    assert_eq!(c1["unlinked"], 0, "every record links to its predecessor");
    assert_eq!(
        c1["mark_through"], c1["newest"]["sequence"],
        "the mark names the newest event: {report:#}"
    );
    drop(sidecar);
    drop(master);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_into_records_deleted_by_retention_is_no_gap() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::{Offset, TopicPartitionList};
    let kafka = KafkaBroker::shared().expect("broker").bootstrap();
    let topic = unique_topic("audit-retention");
    create_topic(&kafka, &topic, 1, &[]).await;
    let p = producer(&kafka);
    chain(&p, &topic, 0, "c", &[1, 2, 3, 4, 5, 6]);
    // What retention does: the oldest records go, offsets 0..3.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .create()
        .expect("admin client");
    let mut before = TopicPartitionList::new();
    before
        .add_partition_offset(&topic, 0, Offset::Offset(3))
        .expect("offset");
    admin
        .delete_records(&before, &AdminOptions::new())
        .await
        .expect("records deleted");
    let (code, report) = audit_json(&kafka, &topic, &[]).await;
    assert_eq!(code, 0, "OK: {report:#}");
    assert_eq!(report["partitions"][0]["log_start"], 3);
    let c = identity(&report, "c");
    assert_eq!(c["ranges"], serde_json::json!([[4, 6]]));
    assert_eq!(c["gap_count"], 0);
    assert_eq!(c["before_log_start"], 1, "4 names 3, deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_cut_short_by_the_timeout_is_unknown() {
    let kafka = KafkaBroker::shared().expect("broker").bootstrap();
    let topic = unique_topic("audit-timeout");
    create_topic(&kafka, &topic, 1, &[]).await;
    let p = producer(&kafka);
    chain(&p, &topic, 0, "c", &[1, 2, 3]);
    let (code, report) = audit_json(&kafka, &topic, &["--timeout", "0s"]).await;
    assert_eq!(code, 3, "UNKNOWN: {report:#}");
    assert_eq!(report["status"], "UNKNOWN");
    assert_eq!(report["complete"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_written_through_a_master_killed_mid_stream_passes_the_audit() {
    use smesh_tests::nodes::Feeder;
    // A broker of our own, to freeze while records are in flight.
    let kafka = KafkaBroker::start().expect("broker");
    let bootstrap = kafka.bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("audit-kill");
    let eo_master = |id: &str| {
        nodes::master(dir.path(), id, &bootstrap, &topic, 0)
            .args(["--delivery", "exactly-once", "--transaction-timeout", "5s"])
            .args(["--transactional-id", &format!("{topic}-{id}")])
    };
    let mut m1 = eo_master("M1").spawn().await;
    let m2 = eo_master("M2").spawn().await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", m1.port), ("M2", m2.port)], 0)
        .spawn()
        .await;
    const EVENTS: u64 = 4000;
    let input = dir.path().join("c1.jsonl");
    let mut feeder = Feeder::start(&input, "c1", EVENTS, 100, Duration::from_millis(100));
    let _client = nodes::client(
        dir.path(),
        "c1",
        &[("S1", sidecar.port)],
        &[nodes::file_source(&input, true)],
    )
    .spawn()
    .await;
    sidecar
        .wait_logged(
            "first acknowledgement from master",
            Duration::from_secs(120),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // What M1 sent before the freeze may land in a transaction nobody
    // commits; the sidecar resends it through M2.
    kafka.freeze();
    tokio::time::sleep(Duration::from_secs(1)).await;
    m1.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    kafka.thaw();
    feeder.finish();
    eventually(
        "the audit sees every event",
        Duration::from_secs(120),
        || {
            let bootstrap = bootstrap.clone();
            let topic = topic.clone();
            async move {
                let (_, report) = audit_json(&bootstrap, &topic, &[]).await;
                let events = report["totals"]["events"].as_u64().unwrap_or(0);
                (events >= EVENTS).then_some(())
            }
        },
    )
    .await;
    let (code, report) = audit_json(&bootstrap, &topic, &[]).await;
    assert_eq!(code, 0, "OK: {report:#}");
    assert_eq!(report["complete"], true);
    let c1 = identity(&report, "c1");
    assert_eq!(c1["events"], EVENTS, "{report:#}");
    assert_eq!(c1["records"], EVENTS, "no duplicate committed: {report:#}");
    drop(m2);
}

/// A transactional producer of the test's own.
fn transactional(kafka: &str, id: &str) -> BaseProducer {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("transactional.id", id)
        .create()
        .expect("create transactional producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init transactions");
    producer.begin_transaction().expect("begin");
    producer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_and_open_transactions_are_read_past_and_only_committed_events_count() {
    let kafka = KafkaBroker::shared().expect("broker").bootstrap();
    let topic = unique_topic("audit-transactions");
    let marks_topic = format!("{topic}.smesh-marks");
    create_topic(&kafka, &topic, 1, &[]).await;
    create_topic(&kafka, &marks_topic, 1, &[]).await;
    let p = producer(&kafka);
    chain(&p, &topic, 0, "c", &[1, 2, 3]);
    mark(&p, &marks_topic, "c", 1, 3);
    // Copies of 2 and 3 in an aborted transaction.
    let aborted = transactional(&kafka, &format!("{topic}-aborted"));
    event(&aborted, &topic, 0, "c", 1, 2, 1);
    event(&aborted, &topic, 0, "c", 1, 3, 2);
    aborted
        .abort_transaction(Duration::from_secs(30))
        .expect("abort");
    // 4 in a transaction left open while the audit runs: the last stable
    // offset stays before it while the high watermark is past it, and a
    // read_committed audit must still end.
    let open = transactional(&kafka, &format!("{topic}-open"));
    event(&open, &topic, 0, "c", 1, 4, 3);

    let (code, report) = audit_json(&kafka, &topic, &[]).await;
    assert_eq!(code, 0, "read committed: OK {report:#}");
    assert_eq!(report["complete"], true);
    let c = identity(&report, "c");
    assert_eq!(
        (c["records"].clone(), c["events"].clone()),
        (3.into(), 3.into())
    );

    let (code, report) = audit_json(&kafka, &topic, &["--isolation", "read-uncommitted"]).await;
    assert_eq!(
        code, 2,
        "aborted copies are duplicates to a plain consumer: {report:#}"
    );
    let c = identity(&report, "c");
    assert_eq!(c["duplicates"], 2, "{report:#}");
    assert_eq!(c["events"], 4, "the open transaction's event too");
    open.abort_transaction(Duration::from_secs(30))
        .expect("abort the open one");
}
