//! `smesh-sidecar` flags. Every flag also reads an `SMESH_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use smesh_core::backoff::Backoff;
use smesh_core::cli::{LogArgs, parse_duration};
use smesh_core::link::{LinkSettings, LinkTimeouts};
use smesh_core::peers;
use smesh_core::session::SessionSettings;
use smesh_proto::mesh::{Hello, NodeKind};

use crate::Config;
use crate::upstream::UpstreamSettings;

/// Proxies client event streams to a master and fails over between masters.
#[derive(Parser, Debug, Clone)]
#[command(name = "smesh-sidecar", version, about, max_term_width = 100)]
pub struct SidecarArgs {
    /// This sidecar's id, shown to masters, clients and the console.
    #[arg(long, env = "SMESH_ID", default_value = "sidecar-1")]
    pub id: String,
    /// Address clients connect to.
    #[arg(long, env = "SMESH_LISTEN", default_value = "0.0.0.0:9000")]
    pub listen: SocketAddr,
    /// Masters this sidecar may use, in order of preference
    /// (`<id>;host:port;` per line; no port means 9010).
    #[arg(long, env = "SMESH_MASTERS", default_value = "files/sidecarCon.csv")]
    pub masters: PathBuf,
    /// Events a client may have unacknowledged on its stream.
    #[arg(long, env = "SMESH_WINDOW", default_value_t = smesh_core::DEFAULT_WINDOW)]
    pub window: u32,
    /// Events the sidecar holds at most for all its clients together; client
    /// streams wait while it is full.
    #[arg(long, env = "SMESH_MAX_PENDING_EVENTS", default_value_t = 200_000)]
    pub max_pending_events: usize,
    /// Largest event a client may send, in bytes.
    #[arg(long, env = "SMESH_MAX_EVENT_BYTES", default_value_t = smesh_core::DEFAULT_MAX_EVENT_BYTES)]
    pub max_event_bytes: usize,
    /// How often clients are pinged.
    #[arg(long, env = "SMESH_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// Unanswered pings after which a client counts as down and its stream is closed.
    #[arg(long, env = "SMESH_HEARTBEAT_MISSES", default_value_t = 3)]
    pub heartbeat_misses: u32,
    /// Silence from the master after which it is presumed dead.
    #[arg(long, env = "SMESH_HEARTBEAT_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,
    /// Time allowed to connect to a master.
    #[arg(long, env = "SMESH_CONNECT_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// How long a master may say it cannot deliver (Kafka down) before the
    /// sidecar looks for another master that can.
    #[arg(long, env = "SMESH_NOT_READY_FAILOVER_AFTER", default_value = "5s", value_parser = parse_duration)]
    pub not_ready_failover_after: Duration,
    /// On SIGTERM/Ctrl-C, how long to wait for held events to be acknowledged.
    #[arg(long, env = "SMESH_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub grace: Duration,
    #[command(flatten)]
    pub log: LogArgs,
}

impl SidecarArgs {
    /// Parses flags as `smesh-sidecar` would, for in-process nodes (demo, tests).
    pub fn config_from_flags<I, S>(flags: I) -> Result<Config, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        smesh_core::cli::config_from_flags("smesh-sidecar", flags, Self::into_config)
    }

    /// Reads the master list and checks every value before a port is bound.
    pub fn into_config(self) -> Result<Config, String> {
        smesh_core::cli::check_id(&self.id)?;
        let masters =
            peers::load(&self.masters, smesh_core::MASTER_PORT).map_err(|e| e.to_string())?;
        if self.window == 0 || self.max_pending_events == 0 {
            return Err("--window and --max-pending-events must be at least 1".to_string());
        }
        if self.heartbeat_interval < Duration::from_millis(10) || self.heartbeat_misses == 0 {
            return Err(
                "--heartbeat-interval must be at least 10ms and --heartbeat-misses at least 1"
                    .to_string(),
            );
        }
        Ok(Config {
            id: self.id.clone(),
            sessions: SessionSettings {
                window: self.window,
                max_event_bytes: self.max_event_bytes,
                heartbeat_interval: self.heartbeat_interval,
                heartbeat_misses: self.heartbeat_misses,
                hello_timeout: Duration::from_secs(10),
            },
            upstream: UpstreamSettings {
                link: LinkSettings {
                    hello: Hello {
                        node_id: self.id,
                        kind: NodeKind::Sidecar as i32,
                        version: smesh_core::VERSION.to_string(),
                        incarnation: crate::incarnation(),
                    },
                    peers: masters,
                    timeouts: LinkTimeouts {
                        connect: self.connect_timeout,
                        welcome: self.connect_timeout * 2,
                    },
                    heartbeat_timeout: self.heartbeat_timeout,
                    // The master's window applies.
                    window: usize::MAX,
                    not_ready_failover_after: Some(self.not_ready_failover_after),
                    backoff: Backoff::default(),
                },
                max_pending_events: self.max_pending_events,
                report_interval: self.heartbeat_interval,
            },
        })
    }
}
