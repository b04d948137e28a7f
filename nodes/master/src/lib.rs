//! The smesh master: the tier that writes to Kafka.
//!
//! Sidecars open one bidirectional stream each ([`session`]); every event is
//! published with an idempotent producer ([`kafka`]) as a CloudEvent in
//! binary mode ([`cloudevents`]), and a batch is acknowledged only once Kafka
//! acknowledged all of it. A [`registry`] task keeps what the master knows
//! about its sidecars and, through their reports, their clients; it runs
//! health checks and writes `healthCheckReport.csv` ([`report`]).
//!
//! The library never binds ports or traps signals: [`Master::run`] is handed
//! its listeners and a cancellation token.
//!
//! # Layout
//! - [`config`]: flags and their validation.
//! - [`kafka`]: the producer and the readiness probe behind `grpc.health.v1`.
//! - [`session`]: what the master does with its sidecars' streams.
//! - [`dedupe`]: resends already published through this master.
//! - [`registry`]: peers, rates; starts health checks.
//! - [`health`]: health checks: probes of every peer, rows for the report.
//! - [`admin`]: the admin API the console uses, on its own listener.
//! - [`counters`]: totals since start.
//! - [`metrics`]: `/metrics` (`--metrics-listen`): the counters, Kafka's
//!   readiness and librdkafka's own statistics.

pub mod admin;
pub mod cloudevents;
pub mod config;
pub mod counters;
pub mod dedupe;
pub mod health;
pub mod kafka;
pub mod metrics;
pub mod placement;
pub mod registry;
pub mod report;
pub mod session;
pub mod suspects;
pub mod transactions;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smesh_core::grpc;
use smesh_core::session::{MeshService, SessionSettings};
use smesh_core::time::now_unix_nanos;
use smesh_core::tls::{PeerCertificates, PeerIdentity, Tier};
use smesh_proto::admin::KafkaStatus;
use smesh_proto::admin::admin_server::AdminServer;
use smesh_proto::mesh::NodeKind;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use counters::Counters;
pub use registry::RegistryHandle;

use crate::admin::AdminService;
use crate::dedupe::Delivered;
use crate::kafka::{KafkaConfig, KafkaSink};
use crate::registry::{MasterIdentity, Registry};
use crate::session::SidecarStreams;
use crate::suspects::Suspects;

/// A validated master configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The master's id, in its Welcome, health checks and the console.
    pub id: String,
    /// The producer and the readiness probe.
    pub kafka: KafkaConfig,
    /// How sidecar streams are served.
    pub sessions: SessionSettings,
    /// `healthCheckReport.csv`.
    pub report_path: PathBuf,
    /// Default wait per peer in a health check.
    pub probe_timeout: Duration,
    /// Mutual TLS for sidecars and the admin API; `None`: plaintext.
    pub tls: Option<smesh_core::tls::NodeTls>,
    /// The admin API's bearer token (`--admin-token-file`); `None`: the
    /// admin API takes console certificates only (or, in plaintext, anyone).
    pub admin_token: Option<smesh_core::token::AdminToken>,
    /// `--delivery exactly-once` and its settings; `None`: at least once.
    pub exactly_once: Option<transactions::ExactlyOnceSettings>,
}

/// Why a master could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("invalid Kafka producer settings: {0}")]
    /// librdkafka refused the producer settings.
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot serve gRPC: {0}")]
    /// The data-plane listener failed.
    Transport(#[from] tonic::transport::Error),
    #[error("cannot build the reflection service: {0}")]
    /// The protocol description for gRPC reflection did not load.
    Reflection(#[from] tonic_reflection::server::Error),
}

/// A master, ready to run.
#[derive(Debug)]
pub struct Master {
    config: Config,
    sink: KafkaSink,
    counters: Arc<Counters>,
    kafka_tx: watch::Sender<KafkaStatus>,
    registry: Registry,
    handle: RegistryHandle,
    /// The plaintext health door (`--health-listen`), if any.
    health_door: Option<TcpListener>,
    /// The transactor (`--delivery exactly-once`).
    transactions: Option<transactions::Transactions>,
}

impl Master {
    /// Creates the Kafka producer (no I/O yet) and the registry.
    pub fn new(config: Config) -> Result<Self, MasterError> {
        let sink = KafkaSink::new(&config.kafka)?;
        let counters = Arc::new(Counters::default());
        let (kafka_tx, kafka_rx) = watch::channel(KafkaStatus {
            ready: false,
            brokers: config.kafka.brokers.clone(),
            topic: config.kafka.topic.clone(),
            detail: "connecting".to_string(),
            since_unix_nanos: now_unix_nanos(),
        });
        let identity = MasterIdentity {
            id: config.id.clone(),
            address: String::new(),
            started_unix_nanos: now_unix_nanos(),
            started: Instant::now(),
            report_path: config.report_path.clone(),
            tls: config.tls.clone(),
        };
        let (registry, handle) =
            Registry::new(identity, sink.clone(), Arc::clone(&counters), kafka_rx);
        let transactions = config
            .exactly_once
            .as_ref()
            .map(|settings| {
                transactions::Transactions::start(
                    &config.kafka,
                    settings,
                    &config.id,
                    Arc::clone(&counters),
                )
            })
            .transpose()?;
        Ok(Self {
            config,
            sink,
            counters,
            kafka_tx,
            registry,
            handle,
            health_door: None,
            transactions,
        })
    }

    /// Also serves `grpc.health.v1`, alone and in plaintext, on `listener`
    /// (`--health-listen`, see [`grpc::serve_health`]).
    pub fn health_on(mut self, listener: Option<TcpListener>) -> Self {
        self.health_door = listener;
        self
    }

    /// Queries and health checks, for the admin API, the demo and signals.
    pub fn handle(&self) -> RegistryHandle {
        self.handle.clone()
    }

    /// Totals since start.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Its Prometheus metrics, for `smesh_core::metrics::serve`.
    pub fn metrics(&self) -> smesh_core::metrics::Registry {
        smesh_core::metrics::registry(self.collector())
    }

    /// The collector behind [`Master::metrics`], for a registry of several
    /// nodes (the demo's).
    pub fn metrics_collector(&self) -> Box<dyn smesh_core::metrics::Collector> {
        Box::new(self.collector())
    }

    fn collector(&self) -> metrics::MasterMetrics {
        metrics::MasterMetrics {
            counters: Arc::clone(&self.counters),
            kafka: self.kafka_tx.subscribe(),
            librdkafka: self.sink.stats(),
        }
    }

    /// Serves sidecars on `listener` and the admin API on `admin` until
    /// `shutdown`, then drains: streams stop taking batches, in-flight events
    /// are acknowledged as Kafka confirms them, and the producer is flushed.
    pub async fn run(
        self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> Result<(), MasterError> {
        let Self {
            config,
            sink,
            counters,
            kafka_tx,
            mut registry,
            handle,
            health_door,
            transactions,
        } = self;
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        registry.set_address(address.clone());
        let tasks = TaskTracker::new();
        let (health, health_service, reflection) = grpc::health_and_reflection()?;
        if let Some(door) = health_door {
            tasks.spawn(grpc::serve_health(
                health_service.clone(),
                door,
                shutdown.clone(),
            ));
        }
        tasks.spawn(kafka::watch_readiness(
            sink.clone(),
            config.kafka.clone(),
            kafka_tx,
            Arc::clone(&counters),
            shutdown.clone(),
        ));
        tasks.spawn(registry.run(shutdown.clone()));
        if let Some(tls) = &config.tls {
            let own = PeerIdentity::new(Tier::Master, config.id.clone());
            tasks.spawn(tls.clone().keep_fresh(Some(own), shutdown.clone()));
        }
        // SERVING only while Kafka answers and, in exactly-once mode, the
        // transactional producer is ready: what the Welcome and pings say.
        let (serving_tx, serving) = watch::channel(false);
        tasks.spawn(serving_while_ready(
            handle.kafka.clone(),
            transactions
                .as_ref()
                .map(transactions::Transactions::readiness),
            serving_tx,
            shutdown.clone(),
        ));
        tasks.spawn(grpc::follow_readiness(
            health,
            serving,
            |serving: &bool| *serving,
            shutdown.clone(),
        ));

        let mesh = MeshService::new(
            config.id.clone(),
            NodeKind::Master,
            SidecarStreams {
                node_id: config.id.clone(),
                sink: sink.clone(),
                kafka: handle.kafka.clone(),
                registry: handle.events.clone(),
                heartbeats: handle.heartbeats.clone(),
                counters,
                delivered: Arc::new(Delivered::default()),
                suspects: Arc::new(Suspects::default()),
                max_event_bytes: config.sessions.max_event_bytes,
                delivery_timeout: config.kafka.delivery_timeout,
                transactions: transactions.clone(),
            },
            config.sessions.clone(),
            shutdown.clone(),
        );
        let sessions = mesh.sessions();
        if let Some(admin) = admin {
            let admin_address = admin
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let (admin_reporter, admin_health, admin_reflection) = grpc::health_and_reflection()?;
            let service = AdminService::new(handle.clone(), config.probe_timeout, shutdown.clone());
            let shutdown = shutdown.clone();
            // With a token, a TLS client need not bring a certificate: the
            // token proves it instead (see `admin::AdminDoor`).
            let peers = if config.admin_token.is_some() {
                PeerCertificates::Optional
            } else {
                PeerCertificates::Required
            };
            let acceptor = config.tls.clone().map(|tls| (tls, peers));
            let door = admin::AdminDoor::new(config.admin_token.clone());
            info!(address = %admin_address, tls = acceptor.is_some(), token = config.admin_token.is_some(), "admin API listening");
            tasks.spawn(async move {
                // The admin API answers whether Kafka is up or not: SERVING
                // for as long as it listens (so probes can name the service).
                admin_reporter
                    .set_serving::<AdminServer<AdminService>>()
                    .await;
                let served = grpc::server()
                    .add_service(admin_health)
                    .add_service(admin_reflection)
                    .add_service(AdminServer::with_interceptor(service, door))
                    .serve_with_incoming_shutdown(
                        grpc::incoming_through(admin, acceptor),
                        shutdown.cancelled_owned(),
                    )
                    .await;
                if let Err(err) = served {
                    warn!(%err, "admin API stopped");
                }
            });
        }
        info!(id = %config.id, %address, tls = config.tls.is_some(), exactly_once = config.exactly_once.is_some(), brokers = %config.kafka.brokers, topic = %config.kafka.topic, "master listening");
        let served = grpc::serve_mesh(
            mesh,
            health_service,
            reflection,
            listener,
            config.tls.as_ref(),
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        sessions.close();
        sessions.wait().await;
        tasks.close();
        tasks.wait().await;
        if let Some(transactions) = &transactions {
            transactions.stop();
        }
        let flush_sink = sink.clone();
        match tokio::task::spawn_blocking(move || flush_sink.flush(Duration::from_secs(5))).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                warn!(%err, "events still queued for Kafka at exit; their sidecars will resend them")
            }
            Err(err) => warn!(%err, "producer flush failed"),
        }
        info!(id = %config.id, "master stopped");
        served.map_err(MasterError::from)
    }
}

/// Keeps `serving` true while Kafka is ready and the transactor, if any, is.
async fn serving_while_ready(
    mut kafka: watch::Receiver<KafkaStatus>,
    mut transactor: Option<watch::Receiver<bool>>,
    serving: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    loop {
        let ready = kafka.borrow_and_update().ready
            && transactor
                .as_mut()
                .is_none_or(|ready| *ready.borrow_and_update());
        serving.send_replace(ready);
        let transactor_changed = async {
            match transactor.as_mut() {
                Some(ready) => ready.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = kafka.changed() => if changed.is_err() { break },
            changed = transactor_changed => if changed.is_err() { break },
        }
    }
}
