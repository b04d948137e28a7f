//! Log lines: `--log-format json|text` (and the older `plain`), and a
//! peer's trouble logged with the peer's id and address as fields.

// Test helpers fail loudly, like the tests they serve.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use smesh_tests::kafka::KafkaBroker;
use smesh_tests::nodes::{self, reserve_port};
use smesh_tests::{eventually, unique_topic};

/// The first JSON log line of `process` whose message contains `needle`.
async fn logged(process: &nodes::Process, needle: &str) -> serde_json::Value {
    let what = format!("{} to log {needle:?}", process.name);
    eventually(&what, Duration::from_secs(30), || async {
        process.log_events(needle).into_iter().next()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_trouble_is_logged_with_its_id_and_address() {
    let dir = tempfile::tempdir().expect("tempdir");

    // A sidecar nobody listens for: the client's dialing end names it.
    let closed = reserve_port();
    let client = nodes::client(dir.path(), "c1", &[("S-gone", closed)], &[])
        .spawn()
        .await;
    let line = logged(&client, "unavailable").await;
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["fields"]["peer"], "S-gone", "{line}");
    assert_eq!(
        line["fields"]["address"],
        format!("127.0.0.1:{closed}"),
        "{line}"
    );

    // A master lost: the sidecar names it.
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let mut master = nodes::master(
        dir.path(),
        "M1",
        &kafka.bootstrap(),
        &unique_topic("logs"),
        0,
    )
    .spawn()
    .await;
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .spawn()
        .await;
    logged(&sidecar, "connected to master").await;
    master.kill();
    let line = logged(&sidecar, "lost the master").await;
    assert_eq!(line["fields"]["peer"], "M1", "{line}");
    assert_eq!(
        line["fields"]["address"],
        format!("127.0.0.1:{}", master.port),
        "{line}"
    );
}

#[test]
fn log_format_text_and_the_older_plain_write_text_lines_with_the_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = reserve_port();
    let list = dir.path().join("clientCon.csv");
    nodes::write_peers(&list, &[("S-gone", closed)]);
    for format in ["text", "plain"] {
        let log = dir.path().join(format!("{format}.log"));
        let mut child = Command::new(nodes::binary("smesh-client"))
            .args(["--id", "c1", "--log-format", format, "--sidecars"])
            .arg(&list)
            .arg("--spool-file")
            .arg(dir.path().join(format!("{format}-spool.csv")))
            .env_remove("RUST_LOG")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start client");
        let deadline = Instant::now() + Duration::from_secs(30);
        let line = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("unavailable")) {
                break line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{format}: no warning; log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            serde_json::from_str::<serde_json::Value>(&line).is_err(),
            "{format}: {line}"
        );
        assert!(
            !line.contains('\x1b'),
            "{format}: no colours in a file: {line}"
        );
        assert!(line.contains("WARN"), "{format}: {line}");
        assert!(line.contains("peer=S-gone"), "{format}: {line}");
        assert!(
            line.contains(&format!("address=127.0.0.1:{closed}")),
            "{format}: {line}"
        );
    }
}
