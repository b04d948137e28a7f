//! File sources survive log rotation and truncation, while the client runs
//! and while it is stopped, and no source holds a line larger than
//! `--max-event-bytes`: such a line goes whole to the rejected file and the
//! lines around it are delivered. Real processes, a real Kafka broker; each
//! test reads the topic back and judges it (lost, first-occurrence order,
//! duplicates).

// Test helpers fail loudly, like the tests they serve.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use smesh_tests::kafka::KafkaBroker;
use smesh_tests::nodes::{self, NodeSpec, Process};
use smesh_tests::records::{Record, read_until_complete};
use smesh_tests::{eventually, unique_topic};

const DELIVERY: Duration = Duration::from_secs(60);

/// A master and a sidecar publishing into a topic of their own.
struct Mesh {
    kafka: &'static KafkaBroker,
    topic: String,
    master: Process,
    sidecar: Process,
}

impl Mesh {
    async fn start(dir: &Path, name: &str) -> Self {
        let kafka = KafkaBroker::shared().expect("Kafka broker");
        let topic = unique_topic(name);
        let master = nodes::master(dir, "M1", &kafka.bootstrap(), &topic, 0)
            .spawn()
            .await;
        let sidecar = nodes::sidecar(dir, "S1", &[("M1", master.port)], 0)
            .spawn()
            .await;
        Self {
            kafka,
            topic,
            master,
            sidecar,
        }
    }

    fn client(&self, dir: &Path, id: &str, sources: &[String]) -> NodeSpec {
        nodes::client(dir, id, &[("S1", self.sidecar.port)], sources)
    }

    /// Waits until every line in `sent` is in the topic; fails on loss,
    /// reordering (by first occurrence) and duplicates.
    async fn assert_delivered(&self, context: &str, client: &str, sent: &[Vec<u8>]) -> Vec<Record> {
        self.assert_all_delivered(context, &[(client, sent)]).await
    }

    /// [`Self::assert_delivered`] for several clients.
    async fn assert_all_delivered(
        &self,
        context: &str,
        sent: &[(&str, &[Vec<u8>])],
    ) -> Vec<Record> {
        let sent: BTreeMap<String, Vec<Vec<u8>>> = sent
            .iter()
            .map(|(client, lines)| (client.to_string(), lines.to_vec()))
            .collect();
        let (records, verdict) =
            read_until_complete(&self.kafka.bootstrap(), &self.topic, &sent, DELIVERY).await;
        verdict.assert_complete(context);
        assert_eq!(verdict.duplicates, 0, "{context}: duplicates");
        records
    }
}

/// Runs a client over `input` with `follow=false` until it exits.
async fn run_to_end(mesh: &Mesh, dir: &Path, input: &Path) -> Process {
    let mut client = mesh
        .client(dir, "c1", &[nodes::file_source(input, false)])
        .spawn()
        .await;
    let status = client.wait_exit(DELIVERY).await;
    assert!(status.success(), "client exited with {status}");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rotated_while_the_client_is_stopped_is_finished_then_the_new_one_read_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = Mesh::start(dir.path(), "rotated-stopped").await;
    let input = dir.path().join("in.jsonl");
    let mut sent = nodes::write_lines(&input, "c1", 0..20, 10);
    run_to_end(&mesh, dir.path(), &input).await;
    // While the client is stopped: the old file gets more lines, is renamed
    // away (logrotate's `create`), and a longer new file takes its path.
    sent.extend(nodes::write_lines(&input, "c1", 20..30, 10));
    std::fs::rename(&input, dir.path().join("in.jsonl.1")).expect("rotate");
    sent.extend(nodes::write_lines(&input, "c1", 30..70, 10));
    let client = run_to_end(&mesh, dir.path(), &input).await;
    mesh.assert_delivered("rotated while stopped", "c1", &sent)
        .await;
    assert!(
        !client.log_events("finishing the rotated file").is_empty(),
        "{}",
        client.log_tail(20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_while_the_client_is_stopped_is_read_again_from_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = Mesh::start(dir.path(), "truncated-stopped").await;
    let input = dir.path().join("in.jsonl");
    let mut sent = nodes::write_lines(&input, "c1", 0..20, 10);
    run_to_end(&mesh, dir.path(), &input).await;
    // Emptied in place and written again, longer than where reading stopped.
    std::fs::write(&input, "").expect("truncate");
    sent.extend(nodes::write_lines(&input, "c1", 100..160, 10));
    let client = run_to_end(&mesh, dir.path(), &input).await;
    mesh.assert_delivered("truncated while stopped", "c1", &sent)
        .await;
    assert!(
        !client.log_events("truncated").is_empty(),
        "a truncation is a warning: {}",
        client.log_tail(20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rotated_while_the_client_runs_is_finished_then_the_new_one_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = Mesh::start(dir.path(), "rotated-running").await;
    let input = dir.path().join("in.jsonl");
    let mut sent = nodes::write_lines(&input, "c1", 0..30, 10);
    let mut client = mesh
        .client(dir.path(), "c1", &[nodes::file_source(&input, true)])
        .spawn()
        .await;
    mesh.assert_delivered("before rotation", "c1", &sent).await;
    // logrotate's `create`: renamed away and a new empty file in its place;
    // the writer goes on appending to the old file for a moment (until it
    // reopens its log), well after the client has seen the new file.
    let rotated = dir.path().join("in.jsonl.1");
    std::fs::rename(&input, &rotated).expect("rotate");
    std::fs::write(&input, "").expect("create");
    tokio::time::sleep(Duration::from_millis(400)).await;
    sent.extend(nodes::write_lines(&rotated, "c1", 30..35, 10));
    tokio::time::sleep(Duration::from_millis(200)).await;
    sent.extend(nodes::write_lines(&rotated, "c1", 35..40, 10));
    sent.extend(nodes::write_lines(&input, "c1", 40..80, 10));
    mesh.assert_delivered("rotated while running", "c1", &sent)
        .await;
    let status = client.stop(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_while_the_client_runs_is_read_again_from_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = Mesh::start(dir.path(), "truncated-running").await;
    let input = dir.path().join("in.jsonl");
    let mut sent = nodes::write_lines(&input, "c1", 0..30, 10);
    let mut client = mesh
        .client(dir.path(), "c1", &[nodes::file_source(&input, true)])
        .spawn()
        .await;
    mesh.assert_delivered("before truncation", "c1", &sent)
        .await;
    // copytruncate: copied away, emptied in place, and written on past the
    // old end before the client looks again.
    std::fs::copy(&input, dir.path().join("in.jsonl.1")).expect("copy");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&input)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    sent.extend(nodes::write_lines(&input, "c1", 100..160, 10));
    mesh.assert_delivered("truncated while running", "c1", &sent)
        .await;
    let status = client.stop(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
}

/// copytruncate: copied away, then emptied in place.
fn copytruncate(input: &Path, copy: &Path) {
    std::fs::copy(input, copy).expect("copy");
    std::fs::OpenOptions::new()
        .write(true)
        .open(input)
        .expect("open")
        .set_len(0)
        .expect("truncate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_while_the_client_runs_resumes_in_its_new_content_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mesh = Mesh::start(dir.path(), "truncated-restarted").await;
    let input = dir.path().join("in.jsonl");
    let source = [nodes::file_source(&input, true)];
    let client = |mesh: &Mesh| {
        mesh.client(dir.path(), "c1", &source)
            .args(["--grace", "2s"])
    };
    let mut sent = nodes::write_lines(&input, "c1", 0..60, 10);
    let mut running = client(&mesh).spawn().await;
    mesh.assert_delivered("before truncation", "c1", &sent)
        .await;

    // Truncated while running; the client delivers the new, shorter content
    // and stops. While it is stopped the file grows past where the old
    // content ended: the client must resume where it stopped in the new
    // content, not at the old content's end.
    copytruncate(&input, &dir.path().join("in.jsonl.1"));
    sent.extend(nodes::write_lines(&input, "c1", 100..110, 10));
    mesh.assert_delivered("truncated while running", "c1", &sent)
        .await;
    let status = running.stop(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    sent.extend(nodes::write_lines(&input, "c1", 110..200, 10));
    let mut running = client(&mesh).spawn().await;
    let records = mesh
        .assert_delivered("restarted after a truncation", "c1", &sent)
        .await;
    assert_eq!(records.len(), sent.len(), "each line once, with one id");

    // Again, with the new content still in the spool when the client stops
    // (no sidecar to take it): where it resumes comes from the spool's rows.
    mesh.sidecar.kill();
    copytruncate(&input, &dir.path().join("in.jsonl.2"));
    sent.extend(nodes::write_lines(&input, "c1", 200..210, 10));
    let spool = nodes::spool_path(dir.path(), "c1");
    eventually("the new content in the spool", DELIVERY, || async {
        let rows = std::fs::read_to_string(&spool).unwrap_or_default();
        rows.contains(r#"""n"":209,"#).then_some(())
    })
    .await;
    let status = running.stop(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    sent.extend(nodes::write_lines(&input, "c1", 210..300, 10));
    mesh.sidecar = nodes::sidecar(
        dir.path(),
        "S1",
        &[("M1", mesh.master.port)],
        mesh.sidecar.port,
    )
    .spawn()
    .await;
    let mut running = client(&mesh).spawn().await;
    let records = mesh
        .assert_delivered(
            "restarted with a truncated file's lines spooled",
            "c1",
            &sent,
        )
        .await;
    assert_eq!(records.len(), sent.len(), "each line once, with one id");
    let status = running.stop(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_line_between_two_normal_ones_goes_whole_to_the_rejected_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = Mesh::start(dir.path(), "oversized-line").await;
    // Thirty times the limit: a source that held it would have to.
    let huge = format!("{{\"huge\":\"{}\"}}", "h".repeat(3_000_000));
    let mut text = Vec::new();
    let before = br#"{"line":"before"}"#.to_vec();
    let after = br#"{"line":"after"}"#.to_vec();
    for line in [&before, huge.as_bytes(), &after] {
        text.extend_from_slice(line);
        text.push(b'\n');
    }
    let limit = ["--max-event-bytes", "100000"];

    // A followed file, and standard input.
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, &text).expect("write");
    let mut file_client = mesh
        .client(dir.path(), "c1", &[nodes::file_source(&input, true)])
        .args(limit)
        .spawn()
        .await;
    let piped = dir.path().join("stdin.jsonl");
    std::fs::write(&piped, &text).expect("write");
    let mut stdin_client = mesh
        .client(dir.path(), "c2", &["stdin".to_string()])
        .args(limit)
        .stdin_from(piped)
        .spawn()
        .await;
    let status = stdin_client.wait_exit(DELIVERY).await;
    assert!(status.success(), "stdin client exited with {status}");

    let sent = vec![before.clone(), after.clone()];
    let records = mesh
        .assert_all_delivered("the neighbours", &[("c1", &sent), ("c2", &sent)])
        .await;
    assert_eq!(
        records.len(),
        4,
        "only the four normal lines reach Kafka, once each"
    );
    let status = file_client.stop(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");

    for (client, process) in [("c1", &file_client), ("c2", &stdin_client)] {
        let path = nodes::client_dir(dir.path(), client).join("safeData.rejected.csv");
        let rejected = std::fs::read_to_string(&path).expect("rejected file");
        assert_eq!(
            rejected
                .matches("more than the limit of 100000 bytes")
                .count(),
            1,
            "{client}: one rejected row, with its reason"
        );
        assert!(
            rejected.contains(&"h".repeat(3_000_000)),
            "{client}: the rejected row holds every byte of the line"
        );
        assert!(
            !process
                .log_events("larger than --max-event-bytes")
                .is_empty(),
            "{client} logs the rejection: {}",
            process.log_tail(20)
        );
        let leftovers: Vec<_> = std::fs::read_dir(nodes::client_dir(dir.path(), client))
            .expect("client dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("oversized"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{client}: spill files left: {leftovers:?}"
        );
    }
}
