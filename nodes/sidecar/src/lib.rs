//! The smesh sidecar: a proxy between clients and masters.
//!
//! Clients stream batches to it ([`session`]); one task owns the link to a
//! master and every batch in transit ([`upstream`]), resending what is
//! unacknowledged when it fails over to another master. A table task keeps
//! what the sidecar knows about its clients ([`clients`]) and reports it to
//! the master once per heartbeat.
//!
//! # Layout
//! - [`config`]: flags and their validation.
//! - [`session`]: what the sidecar does with its clients' streams.
//! - [`upstream`]: the master link, failover, ack routing.
//! - [`clients`]: the client table, probes for health checks.
//! - [`metrics`]: `/metrics` (`--metrics-listen`), read from [`UpstreamCounters`].

pub mod clients;
pub mod config;
pub mod metrics;
pub mod session;
pub mod upstream;

use std::sync::Arc;

use smesh_core::grpc;
use smesh_core::live_peers::{LivePeers, Reloads, no_reloads};
use smesh_core::session::{MeshService, SessionSettings};
use smesh_core::tls::{PeerIdentity, Tier};
use smesh_proto::mesh::NodeKind;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use upstream::UpstreamCounters;

use crate::clients::{ClientTable, TableHandle};
use crate::session::ClientStreams;
use crate::upstream::{Upstream, UpstreamSettings};

/// A validated sidecar configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The sidecar's id, in its Welcome and its reports.
    pub id: String,
    /// How client streams are served.
    pub sessions: SessionSettings,
    /// The master link.
    pub upstream: UpstreamSettings,
    /// Mutual TLS for client streams (the master link has its own copy in
    /// `upstream`); `None`: plaintext.
    pub tls: Option<smesh_core::tls::NodeTls>,
    /// `--masters`, followed while running (`None`: the list in `upstream`
    /// stays as given; its names are still resolved).
    pub masters_file: Option<std::path::PathBuf>,
}

/// Why a sidecar stopped.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("cannot serve gRPC: {0}")]
    /// The listener failed.
    Transport(#[from] tonic::transport::Error),
    #[error("cannot build the reflection service: {0}")]
    /// The protocol description for gRPC reflection did not load.
    Reflection(#[from] tonic_reflection::server::Error),
}

/// A per-process id, so a master can tell a restart from a reconnect.
pub fn incarnation() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        smesh_core::time::now_unix_nanos()
    )
}

/// A sidecar, ready to run.
#[derive(Debug)]
pub struct Sidecar {
    config: Config,
    counters: Arc<UpstreamCounters>,
    table: ClientTable,
    table_handle: TableHandle,
    /// "Reload the master list now" from the binary (SIGHUP).
    reloads: Reloads,
    /// The plaintext health door (`--health-listen`), if any.
    health_door: Option<TcpListener>,
}

impl Sidecar {
    /// A sidecar with an empty client table; nothing runs until [`Sidecar::run`].
    pub fn new(config: Config) -> Self {
        let (table, table_handle) = ClientTable::new(config.id.clone());
        Self {
            config,
            counters: Arc::new(UpstreamCounters::default()),
            table,
            table_handle,
            reloads: no_reloads(),
            health_door: None,
        }
    }

    /// Rereads the master list whenever `reloads` fires (the binary sends
    /// on SIGHUP); it is also looked at every few seconds regardless.
    pub fn reload_on(mut self, reloads: Reloads) -> Self {
        self.reloads = reloads;
        self
    }

    /// Also serves `grpc.health.v1`, alone and in plaintext, on `listener`
    /// (`--health-listen`, see [`grpc::serve_health`]).
    pub fn health_on(mut self, listener: Option<TcpListener>) -> Self {
        self.health_door = listener;
        self
    }

    /// Totals of the master link.
    pub fn counters(&self) -> Arc<UpstreamCounters> {
        Arc::clone(&self.counters)
    }

    /// Its Prometheus metrics, for `smesh_core::metrics::serve`.
    pub fn metrics(&self) -> smesh_core::metrics::Registry {
        smesh_core::metrics::registry(self.collector())
    }

    /// The collector behind [`Sidecar::metrics`], for a registry of several
    /// nodes (the demo's).
    pub fn metrics_collector(&self) -> Box<dyn smesh_core::metrics::Collector> {
        Box::new(self.collector())
    }

    fn collector(&self) -> metrics::SidecarMetrics {
        metrics::SidecarMetrics {
            counters: Arc::clone(&self.counters),
            max_pending_bytes: self.config.upstream.max_pending_bytes,
        }
    }

    /// Serves clients on `listener` until `shutdown`, then drains: client
    /// streams stop taking batches and end once what they sent is
    /// acknowledged by a master.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), SidecarError> {
        let Self {
            config,
            counters,
            table,
            table_handle,
            reloads,
            health_door,
        } = self;
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let tasks = TaskTracker::new();
        let (health, health_service, reflection) = grpc::health_and_reflection()?;
        if let Some(door) = health_door {
            tasks.spawn(grpc::serve_health(
                health_service.clone(),
                door,
                shutdown.clone(),
            ));
        }
        let (ready_tx, ready) = watch::channel(false);
        let (upstream_tx, inbox) = mpsc::channel(256);

        tasks.spawn(table.run(shutdown.clone()));
        if let Some(tls) = &config.tls {
            let own = PeerIdentity::new(Tier::Sidecar, config.id.clone());
            tasks.spawn(tls.clone().keep_fresh(Some(own), shutdown.clone()));
        }
        let rows = config.upstream.link.peers.borrow().clone();
        let (mut masters, peers) =
            LivePeers::new(config.masters_file.clone(), smesh_core::MASTER_PORT, rows);
        masters.resolve_now().await;
        let mut settings = config.upstream.clone();
        settings.link.peers = peers;
        let master_count = settings.link.peers.borrow().len();
        tasks.spawn(masters.run(reloads, shutdown.clone()));
        let upstream = Upstream::new(
            settings,
            inbox,
            table_handle.clone(),
            ready_tx,
            Arc::clone(&counters),
        );
        let upstream_done = CancellationToken::new();
        {
            let upstream_done = upstream_done.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                upstream.run(shutdown).await;
                upstream_done.cancel();
            });
        }
        // SERVING only while a master that can deliver is linked.
        tasks.spawn(grpc::follow_readiness(
            health,
            ready.clone(),
            |ready: &bool| *ready,
            shutdown.clone(),
        ));
        let mesh = MeshService::new(
            config.id.clone(),
            NodeKind::Sidecar,
            ClientStreams {
                node_id: config.id.clone(),
                upstream: upstream_tx,
                ready,
                table: table_handle,
                counters: Arc::clone(&counters),
            },
            config.sessions.clone(),
            shutdown.clone(),
        );
        let sessions = mesh.sessions();
        info!(id = %config.id, %address, masters = master_count, tls = config.tls.is_some(), "sidecar listening");
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
        upstream_done.cancelled().await;
        tasks.close();
        tasks.wait().await;
        info!(id = %config.id, "sidecar stopped");
        served.map_err(SidecarError::from)
    }
}
