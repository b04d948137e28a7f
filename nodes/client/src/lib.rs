//! The smesh client: reads data sources and streams their readings as
//! CloudEvents to a sidecar, without losing any.
//!
//! # Layout
//! - [`config`]: flags, spool modes.
//! - [`source`]: sensor, http, file and stdin sources.
//! - [`spool`]: `safeData.csv`, the durable spool, and its recovery.
//! - [`csv_line`]: splitting CSV lines with a parser built once.
//! - [`oversized`]: readings larger than `--max-event-bytes`, kept on disk
//!   on their way to the rejected file.
//! - [`state`]: sequence numbers that survive restarts, the incarnation
//!   event ids carry, delivered positions.
//! - [`pipeline`]: the task that owns the spool, the window and the link.
//! - [`stats`]: `--stats-file`, what a client says about its run when it stops.
//! - [`counters`]: totals reported upstream.
//! - [`metrics`]: the same totals, the backlog and the ack latency for
//!   Prometheus (`--metrics-listen`).
//! - `blocking`: file work that waits for the disk, run on tokio's blocking
//!   pool and awaited in place, so it never stalls a runtime thread.
//!
//! The pipeline's link to a sidecar is a [`smesh_core::link::Link`]: it walks
//! `clientCon.csv` in the client's order (`--sidecar-order`: spread by a
//! hash of the client's id, or as listed; next sidecar on failure, backoff
//! after a full round), follows edits of the file
//! ([`smesh_core::live_peers`]) and, spread, goes back to its first-ranked
//! sidecar between batches when it answers again.

mod blocking;
pub mod config;
pub mod counters;
pub mod csv_line;
pub mod metrics;
pub mod oversized;
pub mod pipeline;
pub mod placed;
pub mod source;
pub mod spool;
pub mod state;
pub mod stats;

use std::sync::Arc;

use smesh_core::backoff::Backoff;
use smesh_core::link::{Link, LinkSettings};
use smesh_core::live_peers::{LivePeers, Reloads, no_reloads};
use smesh_core::peers::PeerOrder;
use smesh_core::tls::{PeerIdentity, Tier};
use smesh_proto::mesh::{Hello, NodeKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

pub use config::Config;
pub use counters::Counters;

use crate::oversized::SpillDir;
use crate::pipeline::{Pipeline, PipelineError};
use crate::source::{SourceContext, SourceFailure};
use crate::spool::Spool;
use crate::state::{Loaded, StateFile, state_path};

/// Readings a source may hand over before the pipeline takes them.
pub const READINGS_QUEUE: usize = 1024;

/// Why a client stopped before delivering everything.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The spool or its state file could not be opened or recovered.
    #[error("cannot open the spool {path}: {source}")]
    Open {
        /// `safeData.csv`.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Spool I/O failed while running.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A source could not go on (the client drained what it had read).
    #[error("{0}")]
    Source(String),
}

/// A client, ready to run.
#[derive(Debug)]
pub struct Client {
    config: Arc<Config>,
    counters: Arc<Counters>,
    /// "Reload the sidecar list now" from the binary (SIGHUP).
    reloads: Reloads,
}

impl Client {
    /// A client with zeroed counters; nothing runs until [`Client::run`].
    pub fn new(config: Config) -> Self {
        Self {
            config: Arc::new(config),
            counters: Arc::new(Counters::default()),
            reloads: no_reloads(),
        }
    }

    /// Rereads the sidecar list whenever `reloads` fires (the binary sends
    /// on SIGHUP); it is also looked at every few seconds regardless.
    pub fn reload_on(mut self, reloads: Reloads) -> Self {
        self.reloads = reloads;
        self
    }

    /// Its totals, readable while it runs (the demo's summary line).
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Its Prometheus metrics, for `smesh_core::metrics::serve`.
    pub fn metrics(&self) -> smesh_core::metrics::Registry {
        smesh_core::metrics::registry(metrics::ClientMetrics(Arc::clone(&self.counters)))
    }

    /// The collector behind [`Client::metrics`], for a registry of several
    /// nodes (the demo's).
    pub fn metrics_collector(&self) -> Box<dyn smesh_core::metrics::Collector> {
        Box::new(metrics::ClientMetrics(Arc::clone(&self.counters)))
    }

    /// Runs until every source has finished and everything read has been
    /// delivered, or until `shutdown` (then drains for `--grace` and leaves
    /// the rest in the spool).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ClientError> {
        let config = Arc::clone(&self.config);
        let spool_path = config.spool_file.clone();
        let client_id = config.id.clone();
        let opened = tokio::task::spawn_blocking(move || {
            // A spool without a state file: the state file was lost.
            let spool_existed = spool_path.exists();
            let (mut state, loaded) = StateFile::load(&state_path(&spool_path), &client_id);
            let acked = state.state().acked_through;
            let (spool, recovery) = Spool::open(&spool_path, &client_id, acked)?;
            // Oversized readings a previous run did not finish are read again.
            SpillDir::beside(&spool_path).remove_leftovers();
            if let Some(max) = recovery.max_sequence {
                state.continue_after(max);
            }
            Ok::<_, std::io::Error>((state, loaded, spool_existed, spool, recovery))
        })
        .await;
        let open_error = |source| ClientError::Open {
            path: config.spool_file.display().to_string(),
            source,
        };
        let (state, loaded, spool_existed, spool, recovery) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(err)) => return Err(open_error(err)),
            Err(err) => return Err(open_error(std::io::Error::other(err))),
        };
        let incarnation = format!("{:016x}", state.incarnation());
        match &loaded {
            Loaded::Unreadable(reason) => {
                error!(%reason, %incarnation, path = %state_path(&config.spool_file).display(), "client state file unreadable (kept as safeData.state.unreadable): event ids continue under a new incarnation, sequence numbers after the spool's highest");
            }
            Loaded::Fresh if spool_existed => {
                warn!(%incarnation, path = %state_path(&config.spool_file).display(), "client state file missing beside an existing spool: event ids continue under a new incarnation");
            }
            Loaded::Upgraded => {
                info!(%incarnation, "client state file from before incarnations: event ids continue under a new incarnation");
            }
            Loaded::Fresh | Loaded::Found => {}
        }
        if recovery.live_rows > 0 || recovery.quarantined_rows > 0 || recovery.torn_bytes > 0 {
            info!(
                spooled = recovery.live_rows,
                already_delivered = recovery.acknowledged_rows,
                quarantined = recovery.quarantined_rows,
                torn_bytes = recovery.torn_bytes,
                "recovered the spool"
            );
        }
        // Past what is delivered and what waits in the spool, in the file
        // each position is in.
        let resume = state.state().resume_points(&recovery.newest);
        let spill = SpillDir::beside(&config.spool_file);

        let tasks = TaskTracker::new();
        // Stops sources and the pipeline: at shutdown, or when a source fails.
        let stop = shutdown.child_token();
        let failure = SourceFailure::default();
        if let Some(tls) = &config.tls {
            let own = PeerIdentity::new(Tier::Client, config.id.clone());
            tasks.spawn(tls.clone().keep_fresh(Some(own), stop.clone()));
        }
        // Small: readings waiting here are not yet in the spool.
        let (readings_tx, readings) = mpsc::channel(READINGS_QUEUE);
        source::spawn_all(
            &config.sources,
            SourceContext {
                client_id: config.id.clone(),
                readings: readings_tx,
                positions: resume.positions,
                files: resume.files,
                max_event_bytes: config.max_event_bytes,
                spill,
                shutdown: stop.clone(),
                failure: failure.clone(),
            },
            &tasks,
        );
        let (mut sidecars, peers) = LivePeers::new(
            config.sidecars_file.clone(),
            smesh_core::SIDECAR_PORT,
            config.sidecars.clone(),
        );
        sidecars.resolve_now().await;
        let sidecar_count = peers.borrow().len();
        tasks.spawn(sidecars.run(self.reloads, stop.clone()));
        let link = Link::new(LinkSettings {
            hello: hello(&config.id),
            peers,
            order: config.sidecar_order,
            rebalance_every: (config.sidecar_order == PeerOrder::Spread)
                .then_some(config.rebalance_interval),
            timeouts: config.timeouts,
            heartbeat_timeout: config.heartbeat_timeout,
            window: config.window as usize,
            not_ready_failover_after: None,
            backoff: Backoff::default(),
            tls: config.tls.clone(),
        });
        info!(id = %config.id, %incarnation, state = loaded.as_str(), sidecars = sidecar_count, order = config.sidecar_order.as_str(), sources = config.sources.len(), mode = ?config.spool_mode, "client started");
        // The newest event a previous run of this incarnation handed over:
        // the first new event links to it (see `Event.previous_sequence`).
        let handed_before = match loaded {
            Loaded::Found => recovery
                .last_row
                .filter(|(incarnation, _)| *incarnation == state.incarnation())
                .map_or(0, |(_, sequence)| sequence)
                .max(state.state().acked_through),
            _ => 0,
        };
        let pipeline = Pipeline::new(
            Arc::clone(&config),
            Arc::clone(&self.counters),
            spool,
            state,
            readings,
            link,
        )
        .handed_after(handed_before);
        let outcome = pipeline.run(stop.clone()).await;
        stop.cancel();
        tasks.close();
        tasks.wait().await;
        outcome?;
        match failure.reason() {
            Some(reason) => Err(ClientError::Source(reason.to_string())),
            None => Ok(()),
        }
    }
}

fn hello(id: &str) -> Hello {
    Hello {
        node_id: id.to_string(),
        kind: NodeKind::Client as i32,
        version: smesh_core::VERSION.to_string(),
        incarnation: format!(
            "{}-{}",
            std::process::id(),
            smesh_core::time::now_unix_nanos()
        ),
    }
}
