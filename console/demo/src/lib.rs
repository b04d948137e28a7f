//! `smesh-console demo`: a whole mesh in one process, for a first look.
//!
//! One master, two sidecars and three clients with synthetic sensors, on
//! loopback ports, publishing into librdkafka's embedded mock cluster (or a
//! real cluster with `--kafka-brokers`). The console's dashboard opens on the
//! master's admin API; with `--headless` a summary line every second shows
//! what each tier has done.
//!
//! Every link is mutual TLS, with certificates from a throw-away CA the
//! demo makes in `<dir>/pki` at each start (`--plaintext` runs it without).
//!
//! The nodes are configured in code, through each node's `Config::builder`,
//! so they run with the defaults the binaries have without flags, and their
//! peers are handed over as values, not written to peer-list files.
//!
//! This is a crate of its own because it is the only part of the console
//! that needs the nodes and librdkafka: the console's library stands on the
//! admin API alone, and only `smesh-console demo` uses this crate, through
//! the console's `demo` feature (on by default).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rdkafka::mocking::MockCluster;
use smesh_core::cli::parse_duration;
use smesh_core::peers::Peer;
use smesh_core::pki::{Ca, validity};
use smesh_core::tls::{NodeTls, PeerIdentity, Tier, TlsFiles};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

/// Flags of `smesh-console demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Print a summary line every second instead of opening the dashboard.
    #[arg(long)]
    pub headless: bool,
    /// Publish to this Kafka cluster instead of the embedded mock cluster.
    #[arg(long, env = "SMESH_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Topic to publish to.
    #[arg(long, env = "SMESH_TOPIC", default_value = smesh_master::config::defaults::TOPIC)]
    pub topic: String,
    /// Number of clients.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub clients: u32,
    /// Number of sidecars.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub sidecars: u32,
    /// Sensor readings per second, per client.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Stop by itself after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Where the clients keep their spools and the demo its throw-away CA
    /// (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run every link in plaintext instead of mutual TLS.
    #[arg(long)]
    pub plaintext: bool,
    /// Serve every node's Prometheus metrics on http://ADDR/metrics, each
    /// under a `node` label (off unless given).
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Counters of every node of the demo mesh, read for the summary line.
#[derive(Debug, Clone)]
pub struct MeshCounters {
    /// One per client: what it read and what was acknowledged.
    pub clients: Vec<Arc<smesh_client::Counters>>,
    /// One per sidecar: what it forwarded to the master.
    pub sidecars: Vec<Arc<smesh_sidecar::UpstreamCounters>>,
    /// What the master published to Kafka.
    pub master: Arc<smesh_master::Counters>,
}

/// Sums for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Readings the clients took from their sources.
    pub read: u64,
    /// Events acknowledged end to end (in Kafka).
    pub acked: u64,
    /// Read but not yet acknowledged (in flight or in a spool).
    pub pending: u64,
    /// Events the sidecars passed on to the master.
    pub forwarded: u64,
    /// Events the master published.
    pub published: u64,
}

impl MeshCounters {
    /// Totals per tier, now.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.clients {
            let read = c.read.load(Relaxed);
            let settled =
                c.acked.load(Relaxed) + c.rejected.load(Relaxed) + c.dropped.load(Relaxed);
            s.read += read;
            s.acked += c.acked.load(Relaxed);
            s.pending += read.saturating_sub(settled);
        }
        for c in &self.sidecars {
            s.forwarded += c.events_forwarded.load(Relaxed);
        }
        s.published = self.master.published.load(Relaxed);
        s
    }
}

/// A running demo mesh.
pub struct DemoMesh {
    /// Every node's counters, for the summary line.
    pub counters: MeshCounters,
    /// The master's registry: whether Kafka is ready.
    pub master: smesh_master::RegistryHandle,
    /// The master's admin API, for the dashboard.
    pub admin_address: String,
    /// The Kafka bootstrap servers the master publishes to, to tell the user.
    pub kafka: String,
    /// The console's certificate for the admin API (`None`: plaintext).
    pub console_tls: Option<TlsFiles>,
    /// Cancelled to stop every node.
    pub token: CancellationToken,
    /// Where every node's Prometheus metrics are served (`--metrics-listen`).
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Every node's task, awaited by [`DemoMesh::stop`].
    tasks: TaskTracker,
    /// The embedded cluster, kept alive as long as the mesh.
    _mock: Option<MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    /// The temporary spool directory, removed when the mesh is dropped.
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for DemoMesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoMesh")
            .field("kafka", &self.kafka)
            .finish()
    }
}

impl DemoMesh {
    /// Stops every node and waits for them to drain.
    pub async fn stop(self) {
        self.token.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(15), self.tasks.wait())
            .await
            .is_err()
        {
            warn!("demo nodes did not stop within 15s");
        }
    }
}

fn loopback(listener: &TcpListener, id: &str) -> anyhow::Result<Peer> {
    let port = listener.local_addr()?.port();
    Ok(Peer::new(id.to_string(), "127.0.0.1", port))
}

/// The demo's throw-away CA: certificates for every node and the console,
/// made afresh at each start, valid for a week, in `<dir>/pki`.
struct DemoPki {
    dir: PathBuf,
    ca: Ca,
    ca_path: PathBuf,
}

impl DemoPki {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let (from, until) = validity(7);
        let ca = Ca::new("smesh demo CA (throw-away)", from, until)?;
        let ca_path = dir.join("ca.pem");
        write(&ca_path, &ca.issued.cert_pem, false)?;
        Ok(Self { dir, ca, ca_path })
    }

    /// The files of `tier` `id`'s certificate (also for 127.0.0.1, where
    /// sidecars and the master are dialed).
    fn files(&self, tier: Tier, id: &str) -> anyhow::Result<TlsFiles> {
        let (from, until) = validity(7);
        let issued = self.ca.issue(
            &PeerIdentity::new(tier, id),
            &["127.0.0.1".to_string()],
            from,
            until,
        )?;
        let files = TlsFiles {
            cert: self.dir.join(format!("{tier}-{id}.pem")),
            key: self.dir.join(format!("{tier}-{id}.key")),
            ca: self.ca_path.clone(),
        };
        write(&files.key, &issued.key_pem, true)?;
        write(&files.cert, &issued.cert_pem, false)?;
        Ok(files)
    }

    /// `tier` `id`'s certificate, loaded as a node loads it.
    fn load(&self, tier: Tier, id: &str) -> anyhow::Result<NodeTls> {
        Ok(NodeTls::load(&self.files(tier, id)?)?)
    }
}

/// Writes (or replaces: the demo's CA is its own) a PEM file; keys `0600`.
fn write(path: &Path, content: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(content.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The master: the defaults, but for Kafka, the topic and where health
/// checks go.
fn master_config(
    args: &DemoArgs,
    kafka: &str,
    dir: &Path,
    tls: Option<NodeTls>,
) -> Result<smesh_master::Config, String> {
    smesh_master::Config::builder("master-1")
        .kafka_brokers(kafka)
        .topic(&args.topic)
        .health_report(dir.join("healthCheckReport.csv"))
        .tls(tls)
        .build()
}

/// A sidecar: the defaults, with the one master.
fn sidecar_config(
    id: &str,
    master: Peer,
    tls: Option<NodeTls>,
) -> Result<smesh_sidecar::Config, String> {
    smesh_sidecar::Config::builder(id, vec![master])
        .tls(tls)
        .build()
}

/// A client: three synthetic sensors at `rate` readings per second, its
/// spool in `own`, its sidecars in the order given.
fn client_config(
    id: &str,
    sidecars: Vec<Peer>,
    rate: f64,
    own: &Path,
    tls: Option<NodeTls>,
) -> Result<smesh_client::Config, String> {
    // A source is made only from its `--source` text.
    let sensors = format!("sensor:rate={rate},sensors=3").parse()?;
    smesh_client::Config::builder(id, sidecars)
        // The demo spreads its few clients itself (one each first).
        .sidecar_order(smesh_core::peers::PeerOrder::Ordered)
        .sources(vec![sensors])
        .spool_file(own.join("safeData.csv"))
        .tls(tls)
        .build()
}

/// Starts the demo mesh.
pub async fn start(args: &DemoArgs) -> anyhow::Result<DemoMesh> {
    let (mock, kafka) = match &args.kafka_brokers {
        Some(brokers) => (None, brokers.clone()),
        None => {
            let mock =
                MockCluster::new(3).context("cannot start the embedded Kafka mock cluster")?;
            let bootstrap = mock.bootstrap_servers();
            (Some(mock), bootstrap)
        }
    };
    let (temp, dir) = match &args.dir {
        Some(dir) => (None, dir.clone()),
        None => {
            let temp = tempfile::Builder::new().prefix("smesh-demo-").tempdir()?;
            let path = temp.path().to_path_buf();
            (Some(temp), path)
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pki = if args.plaintext {
        None
    } else {
        Some(DemoPki::new(&dir)?)
    };
    let tls = |tier: Tier, id: &str| -> anyhow::Result<Option<NodeTls>> {
        pki.as_ref().map(|pki| pki.load(tier, id)).transpose()
    };
    let console_tls = pki
        .as_ref()
        .map(|pki| pki.files(Tier::Console, "demo"))
        .transpose()?;
    let token = CancellationToken::new();
    let tasks = TaskTracker::new();

    let master_listener = TcpListener::bind("127.0.0.1:0").await?;
    let admin_listener = TcpListener::bind("127.0.0.1:0").await?;
    let admin_address = admin_listener.local_addr()?.to_string();
    let master_peer = loopback(&master_listener, "master-1")?;
    let master_config = master_config(args, &kafka, &dir, tls(Tier::Master, "master-1")?)
        .map_err(anyhow::Error::msg)?;
    let master = smesh_master::Master::new(master_config)?;
    let mut collectors = vec![("master-1".to_string(), master.metrics_collector())];
    let master_counters = master.counters();
    let master_handle = master.handle();
    tasks.spawn({
        let token = token.clone();
        async move {
            if let Err(err) = master
                .run(master_listener, Some(admin_listener), token)
                .await
            {
                warn!(%err, "demo master stopped");
            }
        }
    });

    let mut sidecar_peers = Vec::new();
    let mut sidecar_counters = Vec::new();
    for i in 1..=args.sidecars {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let id = format!("sidecar-{i}");
        sidecar_peers.push(loopback(&listener, &id)?);
        let config = sidecar_config(&id, master_peer.clone(), tls(Tier::Sidecar, &id)?)
            .map_err(anyhow::Error::msg)?;
        let sidecar = smesh_sidecar::Sidecar::new(config);
        collectors.push((id.clone(), sidecar.metrics_collector()));
        sidecar_counters.push(sidecar.counters());
        let token = token.clone();
        tasks.spawn(async move {
            if let Err(err) = sidecar.run(listener, token).await {
                warn!(%err, "demo sidecar stopped");
            }
        });
    }

    let mut client_counters = Vec::new();
    for i in 1..=args.clients {
        let id = format!("client-{i}");
        let own = dir.join(&id);
        std::fs::create_dir_all(&own)?;
        // Spread the clients: each prefers a different sidecar first.
        let mut order = sidecar_peers.clone();
        order.rotate_left((i as usize - 1) % sidecar_peers.len());
        let config = client_config(&id, order, args.rate, &own, tls(Tier::Client, &id)?)
            .map_err(anyhow::Error::msg)?;
        let client = smesh_client::Client::new(config);
        collectors.push((id.clone(), client.metrics_collector()));
        client_counters.push(client.counters());
        let token = token.clone();
        tasks.spawn(async move {
            if let Err(err) = client.run(token).await {
                warn!(%err, "demo client stopped");
            }
        });
    }
    let metrics_address = match args.metrics_listen {
        Some(address) => {
            let listener = TcpListener::bind(address)
                .await
                .map_err(|err| anyhow::anyhow!("--metrics-listen {address}: {err}"))?;
            let bound = listener.local_addr()?;
            let registry = Arc::new(smesh_core::metrics::labelled_registry(collectors));
            tasks.spawn(smesh_core::metrics::serve(
                listener,
                registry,
                token.clone(),
            ));
            Some(bound)
        }
        None => None,
    };
    Ok(DemoMesh {
        metrics_address,
        counters: MeshCounters {
            clients: client_counters,
            sidecars: sidecar_counters,
            master: master_counters,
        },
        master: master_handle,
        admin_address,
        kafka,
        console_tls,
        token,
        tasks,
        _mock: mock,
        _dir: temp,
    })
}

/// One summary line: totals per tier and the publish rate since the last line.
pub fn summary_line(now: Summary, before: Summary, elapsed: Duration, kafka_ready: bool) -> String {
    let rate =
        (now.published.saturating_sub(before.published)) as f64 / elapsed.as_secs_f64().max(1e-3);
    format!(
        "clients: read {} acked {} pending {} | sidecars: forwarded {} | master: published {} ({:.0}/s) | kafka: {}",
        now.read,
        now.acked,
        now.pending,
        now.forwarded,
        now.published,
        rate,
        if kafka_ready { "ready" } else { "not ready" }
    )
}

/// Runs the headless demo: prints a summary every second until Ctrl-C or `--duration`.
pub async fn run_headless(args: &DemoArgs) -> anyhow::Result<()> {
    let mesh = start(args).await?;
    println!(
        "smesh demo: 1 master, {} sidecars, {} clients; Kafka at {}{}; {}",
        args.sidecars,
        args.clients,
        mesh.kafka,
        if args.kafka_brokers.is_none() {
            " (embedded mock cluster)"
        } else {
            ""
        },
        match &mesh.console_tls {
            Some(files) => format!(
                "every link mutual TLS (throw-away CA {})",
                files.ca.display()
            ),
            None => "plaintext".to_string(),
        }
    );
    if let Some(address) = mesh.metrics_address {
        println!("smesh demo: Prometheus metrics of every node at http://{address}/metrics");
    }
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut before = mesh.counters.summary();
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            name = smesh_core::shutdown::signal() => {
                println!("{name}: stopping the demo mesh");
                break;
            }
        }
        let now = mesh.counters.summary();
        let ready = mesh.master.kafka.borrow().ready;
        println!("{}", summary_line(now, before, last.elapsed(), ready));
        before = now;
        last = Instant::now();
        if args.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
    }
    mesh.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_configurations_are_valid() {
        let args = DemoArgs {
            headless: true,
            kafka_brokers: None,
            topic: smesh_master::config::defaults::TOPIC.to_string(),
            clients: 1,
            sidecars: 1,
            rate: 20.0,
            duration: None,
            dir: None,
            plaintext: false,
            metrics_listen: None,
        };
        let temp = tempfile::tempdir().expect("tempdir");
        let pki = DemoPki::new(temp.path()).expect("a throw-away CA");
        let tls = |tier, id| Some(pki.load(tier, id).expect("certificates nodes load"));
        let dir = Path::new("/nonexistent/demo");
        let master = master_config(&args, "127.0.0.1:9092", dir, tls(Tier::Master, "master-1"))
            .expect("master");
        assert_eq!(master.report_path, dir.join("healthCheckReport.csv"));
        assert!(master.tls.is_some());
        let peer = |id: &str, port| Peer::new(id.to_string(), "127.0.0.1", port);
        let sidecar = sidecar_config(
            "sidecar-1",
            peer("master-1", 9010),
            tls(Tier::Sidecar, "sidecar-1"),
        )
        .expect("sidecar");
        assert_eq!(
            *sidecar.upstream.link.peers.borrow(),
            vec![peer("master-1", 9010)]
        );
        let client = client_config(
            "client-1",
            vec![peer("sidecar-1", 9000)],
            args.rate,
            dir,
            tls(Tier::Client, "client-1"),
        )
        .expect("client");
        assert_eq!(client.spool_file, dir.join("safeData.csv"));
        assert_eq!(client.sources.len(), 1);
    }

    #[test]
    fn the_summary_line_names_every_tier() {
        let before = Summary::default();
        let now = Summary {
            read: 120,
            acked: 100,
            pending: 20,
            forwarded: 110,
            published: 100,
        };
        let line = summary_line(now, before, Duration::from_secs(2), true);
        assert_eq!(
            line,
            "clients: read 120 acked 100 pending 20 | sidecars: forwarded 110 | master: published 100 (50/s) | kafka: ready"
        );
    }
}
