//! The mesh under test: real release binaries on loopback, one master,
//! sidecars, and clients whose `--stats-file` says when they read their
//! first event, when the last ack came, and how long acks took.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use smesh_proto::mesh::Event;

use smesh_core::tls::Tier;

use tonic_health::pb::health_check_response::ServingStatus;

use super::{Latency, PATIENCE};
use crate::nodes::{self, Process};
use crate::pki::Pki;

/// What a client's `--stats-file` holds (the parts the bench reads).
#[derive(Debug, Clone, Deserialize)]
pub struct ClientStats {
    pub counters: Counters,
    pub first_read_unix_nanos: i64,
    pub last_ack_unix_nanos: i64,
    pub ack_latency_us: Latency,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Counters {
    pub acked: u64,
}

/// How a mesh under test is set up, for comparisons of two set-ups.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    /// Mutual TLS on both hops.
    pub tls: bool,
    /// The master's `--delivery`.
    pub delivery: &'static str,
}

impl Default for Variant {
    fn default() -> Self {
        Self {
            tls: false,
            delivery: "at-least-once",
        }
    }
}

/// A master and sidecars on a topic of their own.
#[derive(Debug)]
pub struct MeshUnderTest {
    pub dir: tempfile::TempDir,
    pub master: Process,
    pub sidecars: Vec<Process>,
    /// With mutual TLS on both hops: the CA every node's certificate comes
    /// from (made with rcgen in `dir`), also for the clients'.
    pub pki: Option<Pki>,
}

impl MeshUnderTest {
    /// In plaintext.
    pub async fn start(kafka: &str, topic: &str, sidecars: usize) -> Self {
        Self::start_with(kafka, topic, sidecars, Variant::default()).await
    }

    /// A variant of the mesh: mutual TLS on both hops (client → sidecar →
    /// master) when `variant.tls`, the master in `variant.delivery` mode.
    pub async fn start_with(kafka: &str, topic: &str, sidecars: usize, variant: Variant) -> Self {
        let tls = variant.tls;
        let dir = tempfile::Builder::new()
            .prefix("smesh-bench-")
            .tempdir()
            .expect("tempdir");
        let pki = tls.then(|| Pki::new(dir.path(), "bench"));
        let certs = |tier: Tier, id: &str| {
            pki.as_ref()
                .map(|pki| pki.issue(tier, id).flags())
                .unwrap_or_default()
        };
        let master = nodes::master(dir.path(), "M1", kafka, topic, 0)
            .args(certs(Tier::Master, "M1"))
            .args(["--delivery", variant.delivery])
            .spawn()
            .await;
        let mut list = Vec::new();
        for i in 1..=sidecars {
            let id = format!("S{i}");
            // A plaintext health door, also for a mesh on mutual TLS.
            let health = nodes::reserve_port();
            list.push(
                nodes::sidecar(dir.path(), &id, &[("M1", master.port)], 0)
                    .args(certs(Tier::Sidecar, &id))
                    .args(["--health-listen".to_string(), format!("127.0.0.1:{health}")])
                    .spawn()
                    .await,
            );
            // Measured from when it can deliver (its master SERVING, in
            // exactly-once mode with transactions initialised): start-up
            // is not what the figures are about.
            crate::eventually("the sidecar SERVING", PATIENCE, || async move {
                (crate::health_of(health).await == Some(ServingStatus::Serving)).then_some(())
            })
            .await;
        }
        Self {
            dir,
            master,
            sidecars: list,
            pki,
        }
    }

    /// Peer list entries of the sidecars, in order.
    pub fn sidecar_peers(&self) -> Vec<(String, u16)> {
        self.sidecars
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("S{}", i + 1), s.port))
            .collect()
    }

    /// Starts `clients` clients with `source` and `extra` flags; waits until
    /// every one has exited and returns their stats.
    pub async fn run_clients(
        &self,
        clients: u64,
        source: &str,
        extra: &[&str],
    ) -> Vec<ClientStats> {
        let peers = self.sidecar_peers();
        let peers: Vec<(&str, u16)> = peers
            .iter()
            .map(|(id, port)| (id.as_str(), *port))
            .collect();
        let mut running = Vec::new();
        for i in 0..clients {
            let id = format!("bench-{i}");
            let stats = stats_path(self.dir.path(), &id);
            let mut order = peers.clone();
            let turn = i as usize % order.len().max(1);
            order.rotate_left(turn);
            let tls = self
                .pki
                .as_ref()
                .map(|pki| pki.issue(Tier::Client, &id).flags())
                .unwrap_or_default();
            let process = nodes::client(self.dir.path(), &id, &order, &[source.to_string()])
                .args(tls)
                .args(extra.iter().copied())
                .args(["--stats-file", &stats.display().to_string()])
                .spawn()
                .await;
            running.push((process, stats));
        }
        let mut all = Vec::new();
        for (mut process, stats) in running {
            let status = process.wait_exit(PATIENCE).await;
            assert!(status.success(), "{} exited with {status}", process.name);
            let text = std::fs::read_to_string(&stats).expect("client stats file");
            all.push(serde_json::from_str(&text).expect("client stats JSON"));
        }
        all
    }
}

pub fn stats_path(dir: &Path, client: &str) -> PathBuf {
    nodes::client_dir(dir, client).join("stats.json")
}

/// Events/s over all clients: acked events over first read to last ack.
pub fn throughput(stats: &[ClientStats]) -> f64 {
    let acked: u64 = stats.iter().map(|s| s.counters.acked).sum();
    let first = stats
        .iter()
        .map(|s| s.first_read_unix_nanos)
        .filter(|t| *t > 0)
        .min()
        .unwrap_or(0);
    let last = stats
        .iter()
        .map(|s| s.last_ack_unix_nanos)
        .max()
        .unwrap_or(0);
    let secs = (last - first) as f64 / 1e9;
    if secs > 0.0 { acked as f64 / secs } else { 0.0 }
}

/// Mesh throughput: `events` in total from `clients` clients as fast as they go.
pub async fn mesh_throughput(
    kafka: &str,
    topic: &str,
    clients: u64,
    events: u64,
    payload: usize,
    mode: &str,
) -> f64 {
    let mesh = MeshUnderTest::start(kafka, topic, 1).await;
    let per_client = events / clients;
    let source = format!("sensor:rate=max,count={per_client},size={payload}");
    let stats = mesh.run_clients(clients, &source, &["--spool", mode]).await;
    throughput(&stats)
}

/// Ack latency of one client offering `rate` events/s for `secs`.
pub async fn mesh_latency(
    kafka: &str,
    topic: &str,
    rate: u64,
    secs: u64,
    payload: usize,
    mode: &str,
) -> Latency {
    let mesh = MeshUnderTest::start(kafka, topic, 1).await;
    let source = format!("sensor:rate={rate},count={},size={payload}", rate * secs);
    let stats = mesh.run_clients(1, &source, &["--spool", mode]).await;
    stats.first().map(|s| s.ack_latency_us).unwrap_or_default()
}

/// The mesh with one client and one sidecar set up as `variant`:
/// throughput of `events` as fast as the client goes, and the ack latency
/// of a client offering `rate` events/s for `secs`.
pub async fn variant_round(
    kafka: &str,
    variant: Variant,
    events: u64,
    rate: u64,
    secs: u64,
    payload: usize,
) -> (f64, Latency) {
    let mode = ["--spool", "on-failure"];
    let topic = || crate::unique_topic("bench-variant");
    let mesh = MeshUnderTest::start_with(kafka, &topic(), 1, variant).await;
    let source = format!("sensor:rate=max,count={events},size={payload}");
    let rate_of = throughput(&mesh.run_clients(1, &source, &mode).await);
    drop(mesh);
    settle().await;
    let mesh = MeshUnderTest::start_with(kafka, &topic(), 1, variant).await;
    let source = format!("sensor:rate={rate},count={},size={payload}", rate * secs);
    let stats = mesh.run_clients(1, &source, &mode).await;
    let latency = stats.first().map(|s| s.ack_latency_us).unwrap_or_default();
    (rate_of, latency)
}

/// Writes a spool of `rows` events with `payload`-byte data for client `client`.
pub fn write_spool(path: &Path, client: &str, rows: u64, payload: usize) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    out.write_all(smesh_client::spool::HEADER.as_bytes())?;
    out.write_all(b"\n")?;
    let data = super::direct::payload(payload);
    let now = smesh_core::time::now_unix_nanos();
    for sequence in 1..=rows {
        let event = Event {
            id: format!("{client}-{sequence}"),
            source: format!("smesh://{client}/sensor/s1"),
            r#type: "dev.smesh.sensor.reading".to_string(),
            specversion: "1.0".to_string(),
            time_unix_nanos: now,
            datacontenttype: "application/json".to_string(),
            data: data.clone(),
            client_id: client.to_string(),
            sequence,
            ..Event::default()
        };
        out.write_all(&smesh_client::spool::encode_row(&event, None))?;
    }
    out.flush()
}

/// Events/s at which a client drains a spool of `rows` rows.
pub async fn replay(kafka: &str, topic: &str, rows: u64, payload: usize) -> f64 {
    let mesh = MeshUnderTest::start(kafka, topic, 1).await;
    let client = "bench-replay";
    let spool = nodes::spool_path(mesh.dir.path(), client);
    let written = {
        let spool = spool.clone();
        tokio::task::spawn_blocking(move || write_spool(&spool, client, rows, payload)).await
    };
    assert!(
        matches!(written, Ok(Ok(()))),
        "cannot write the spool: {written:?}"
    );
    let empty = mesh.dir.path().join("empty.jsonl");
    std::fs::write(&empty, b"").expect("empty input");
    let peers = mesh.sidecar_peers();
    let stats_file = stats_path(mesh.dir.path(), client);
    let started = smesh_core::time::now_unix_nanos();
    let mut process = nodes::client(
        mesh.dir.path(),
        client,
        &[(peers[0].0.as_str(), peers[0].1)],
        &[nodes::file_source(&empty, false)],
    )
    .args(["--stats-file", &stats_file.display().to_string()])
    .spawn()
    .await;
    let status = process.wait_exit(PATIENCE).await;
    assert!(status.success(), "replay client exited with {status}");
    let stats: ClientStats =
        serde_json::from_str(&std::fs::read_to_string(&stats_file).expect("stats"))
            .expect("stats JSON");
    let secs = (stats.last_ack_unix_nanos - started) as f64 / 1e9;
    assert_eq!(
        stats.counters.acked, rows,
        "every spooled row was delivered"
    );
    rows as f64 / secs.max(1e-9)
}

/// Pause between runs so the broker settles.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}
