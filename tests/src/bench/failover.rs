//! Failover time: from `kill -9` of the active sidecar (or master) to the
//! next acknowledged event, read from the survivors' logs ("first
//! acknowledgement from …", logged with a wall-clock timestamp).

use std::time::{Duration, SystemTime};

use crate::nodes::{self, Process};

use super::mesh::MeshUnderTest;

/// Wall-clock time of the first log line saying `message` after `since`.
fn logged_after(process: &Process, message: &str, since: i64) -> Option<i64> {
    process.log_events(message).iter().find_map(|event| {
        let at = smesh_core::time::parse_rfc3339(event["timestamp"].as_str()?)?;
        (at > since).then_some(at)
    })
}

async fn wait_logged(process: &Process, message: &str, since: i64) -> i64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(at) = logged_after(process, message, since) {
            return at;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {message:?} in {}'s log; tail:\n{}",
            process.name,
            process.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn now() -> i64 {
    smesh_core::time::unix_nanos(SystemTime::now())
}

/// Kills the client's sidecar `kills` times; milliseconds to the next ack each time.
pub async fn sidecar(kafka: &str, topic: &str, kills: usize) -> Vec<f64> {
    let mut mesh = MeshUnderTest::start(kafka, topic, 2).await;
    let peers = mesh.sidecar_peers();
    let peers: Vec<(&str, u16)> = peers
        .iter()
        .map(|(id, port)| (id.as_str(), *port))
        .collect();
    let client = nodes::client(
        mesh.dir.path(),
        "failover",
        &peers,
        &["sensor:rate=2000,size=256".to_string()],
    )
    .spawn()
    .await;
    wait_logged(&client, "first acknowledgement from sidecar", 0).await;
    let mut times = Vec::new();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The active sidecar is the one the client connected to last.
        let active = client
            .log_events("connected to sidecar")
            .last()
            .and_then(|e| e["fields"]["sidecar"].as_str().map(str::to_string))
            .unwrap_or_default();
        let index = if active.starts_with("S2") { 1 } else { 0 };
        let killed_at = now();
        mesh.sidecars[index].kill();
        let acked_at = wait_logged(&client, "first acknowledgement from sidecar", killed_at).await;
        times.push((acked_at - killed_at) as f64 / 1e6);
        // Bring it back on its port for the next round.
        let (id, port) = (format!("S{}", index + 1), mesh.sidecars[index].port);
        mesh.sidecars[index] =
            nodes::sidecar(mesh.dir.path(), &id, &[("M1", mesh.master.port)], port)
                .spawn()
                .await;
    }
    times
}

/// Kills the sidecar's master `kills` times; milliseconds to the next ack each time.
pub async fn master(kafka: &str, topic: &str, kills: usize) -> Vec<f64> {
    let dir = tempfile::Builder::new()
        .prefix("smesh-bench-")
        .tempdir()
        .expect("tempdir");
    let mut masters = [
        nodes::master(dir.path(), "M1", kafka, topic, 0)
            .spawn()
            .await,
        nodes::master(dir.path(), "M2", kafka, topic, 0)
            .spawn()
            .await,
    ];
    let list = [("M1", masters[0].port), ("M2", masters[1].port)];
    let sidecar = nodes::sidecar(dir.path(), "S1", &list, 0).spawn().await;
    let _client = nodes::client(
        dir.path(),
        "failover",
        &[("S1", sidecar.port)],
        &["sensor:rate=2000,size=256".to_string()],
    )
    .spawn()
    .await;
    wait_logged(&sidecar, "first acknowledgement from master", 0).await;
    let mut times = Vec::new();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let active = sidecar
            .log_events("connected to master")
            .last()
            .and_then(|e| e["fields"]["master"].as_str().map(str::to_string))
            .unwrap_or_default();
        let index = if active.starts_with("M2") { 1 } else { 0 };
        let killed_at = now();
        masters[index].kill();
        let acked_at = wait_logged(&sidecar, "first acknowledgement from master", killed_at).await;
        times.push((acked_at - killed_at) as f64 / 1e6);
        let (id, port) = (format!("M{}", index + 1), masters[index].port);
        masters[index] = nodes::master(dir.path(), &id, kafka, topic, port)
            .spawn()
            .await;
    }
    times
}
