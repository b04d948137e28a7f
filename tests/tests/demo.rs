//! The README's first command: `smesh-console demo` runs a whole mesh on the
//! embedded Kafka, over mutual TLS with a throw-away CA, and shows events
//! moving through every tier.

// Test helpers fail loudly, like the tests they serve.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;

use smesh_tests::nodes;

#[test]
fn the_headless_demo_moves_events_through_every_tier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(nodes::binary("smesh-console"))
        .args(["demo", "--headless", "--duration", "5s", "--rate", "50"])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let first = stdout.lines().next().expect("a first line");
    assert!(first.contains("every link mutual TLS"), "{first}");
    assert!(dir.path().join("pki").join("ca.pem").exists(), "{first}");
    let last = stdout.lines().last().expect("summary lines");
    // clients: read R acked A pending P | sidecars: forwarded F | master: published N (…/s) | kafka: ready
    let numbers: Vec<u64> = last
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    let (read, acked, forwarded, published) = (numbers[0], numbers[1], numbers[3], numbers[4]);
    assert!(read >= 300, "3 clients × 50/s for 5 s: {last}");
    assert!(
        acked > 0 && forwarded >= acked && published >= acked,
        "{last}"
    );
    assert!(last.ends_with("kafka: ready"), "{last}");
    for client in ["client-1", "client-2", "client-3"] {
        assert!(
            dir.path().join(client).join("safeData.csv").exists(),
            "{client} has a spool"
        );
    }
}

/// `GET /metrics` on `address`, the body.
fn scrape(address: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("HTTP head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The value of the sample that starts with `name_and_labels`.
fn sample(body: &str, name_and_labels: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(name_and_labels))
        .and_then(|rest| rest.trim().split(' ').next())
        .and_then(|value| value.parse().ok())
}

#[test]
fn the_demo_serves_every_nodes_metrics_for_prometheus() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut demo = Command::new(nodes::binary("smesh-console"))
        .args(["demo", "--headless", "--duration", "8s", "--rate", "50"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the demo");
    let mut lines = std::io::BufReader::new(demo.stdout.take().expect("stdout")).lines();
    let address = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix("smesh demo: Prometheus metrics of every node at http://")
                .and_then(|rest| rest.strip_suffix("/metrics"))
                .map(str::to_string)
        })
        .expect("the demo says where its metrics are");
    // Wait for acknowledgements, as Prometheus would scrape again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let body = loop {
        let body = scrape(&address);
        if sample(&body, "smesh_client_events_acked_total{node=\"client-3\"}").unwrap_or(0.0) > 0.0
        {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "no acks:\n{body}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    for node in ["client-1", "client-2", "client-3"] {
        let acked = sample(
            &body,
            &format!("smesh_client_events_acked_total{{node=\"{node}\"}}"),
        );
        assert!(acked.is_some(), "{node} is in the scrape:\n{body}");
    }
    assert!(
        sample(
            &body,
            "smesh_sidecar_events_forwarded_total{node=\"sidecar-1\"}"
        )
        .is_some(),
        "{body}"
    );
    assert_eq!(
        sample(&body, "smesh_master_kafka_ready{node=\"master-1\"}"),
        Some(1.0),
        "{body}"
    );
    for _ in lines {}
    assert!(demo.wait().expect("demo exit").success());
}
