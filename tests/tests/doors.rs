//! The doors of a node under a hostile crowd, with real processes: sockets
//! that never speak, beyond the node's file descriptors, do not lock out a
//! real client, and the accept loop does not spin meanwhile.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use smesh_tests::kafka::KafkaBroker;
use smesh_tests::nodes::{self, Process};
use smesh_tests::records::read_until_complete;
use smesh_tests::unique_topic;

/// CPU time (user + system) the process has used, from /proc.
fn cpu_time(process: &Process) -> Duration {
    let pid = process.pid().expect("running");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces) start at ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 (1-based), 12 and 13 after ')'.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_beyond_the_file_descriptor_limit_do_not_lock_out_a_real_client() {
    let kafka = KafkaBroker::shared().expect("Kafka broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique_topic("doors");
    let master = nodes::master(dir.path(), "M1", &kafka.bootstrap(), &topic, 0)
        .spawn()
        .await;
    // A sidecar with few file descriptors, as on a small device.
    let sidecar = nodes::sidecar(dir.path(), "S1", &[("M1", master.port)], 0)
        .wrapped(vec![
            "prlimit".into(),
            "--nofile=128:128".into(),
            "--".into(),
        ])
        .spawn()
        .await;

    // More silent connections than the sidecar has descriptors.
    // (A connection the kernel cannot queue any more is given up.)
    let mut silent = Vec::new();
    for _ in 0..300 {
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", sidecar.port));
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(1), connect).await {
            silent.push(stream);
        }
    }
    assert!(silent.len() > 128, "only {} connections", silent.len());
    let cpu_before = cpu_time(&sidecar);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let spent = cpu_time(&sidecar) - cpu_before;
    assert!(
        spent < Duration::from_millis(2500),
        "out of descriptors, the sidecar used {spent:?} of CPU in 5 s: its accept loop spins"
    );
    sidecar
        .wait_logged_text("backing off", Duration::from_secs(5))
        .await;

    // A real client gets through and delivers everything.
    let input = dir.path().join("c1.jsonl");
    let sent = BTreeMap::from([(
        "c1".to_string(),
        nodes::write_lines(&input, "c1", 0..500, 40),
    )]);
    let mut client = nodes::client(
        dir.path(),
        "c1",
        &[("S1", sidecar.port)],
        &[nodes::file_source(&input, false)],
    )
    .spawn()
    .await;
    let (_, verdict) =
        read_until_complete(&kafka.bootstrap(), &topic, &sent, Duration::from_secs(120)).await;
    verdict.assert_complete("behind 300 silent sockets");
    let status = client.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "the client exited with {status}");
    drop(silent);
}
