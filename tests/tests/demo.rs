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
