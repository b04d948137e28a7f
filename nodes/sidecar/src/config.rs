//! `smesh-sidecar` flags, and the typed [`ConfigBuilder`] for sidecars run in
//! process. Every flag also reads an `SMESH_*` variable. Both start from the
//! same [`defaults`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use smesh_core::backoff::Backoff;
use smesh_core::cli::{
    ConfigArgs, HealthArgs, LogArgs, MetricsArgs, TlsArgs, check_duration, duration_text,
    parse_bytes, parse_duration, size_flag,
};
use smesh_core::link::{LinkSettings, LinkTimeouts};
use smesh_core::live_peers;
use smesh_core::peers::{self, Peer, PeerOrder};
use smesh_core::session::SessionSettings;
use smesh_core::tls::{NodeTls, PeerIdentity, Tier};
use smesh_proto::mesh::{Hello, NodeKind};

use crate::Config;
use crate::upstream::UpstreamSettings;

/// The defaults of the flags. `--help` shows them and [`Config::builder`]
/// starts from them, so a sidecar built in process behaves like one started
/// with no flags.
pub mod defaults {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
    use std::time::Duration;

    /// `--id`.
    pub const ID: &str = "sidecar-1";
    /// `--listen`: every interface, on the port clients' lists assume.
    pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::UNSPECIFIED,
        smesh_core::SIDECAR_PORT,
    ));
    /// `--masters`: relative, so a sidecar started at the repository root
    /// finds the example list.
    pub const MASTERS: &str = "files/sidecarCon.csv";
    /// `--window`: the mesh-wide default.
    pub const WINDOW: u32 = smesh_core::DEFAULT_WINDOW;
    /// `--window-bytes`: what one client's stream may hold in the sidecar.
    pub const WINDOW_BYTES: u64 = 16 << 20;
    /// `--max-pending-events`.
    pub const MAX_PENDING_EVENTS: usize = 200_000;
    /// `--max-pending-bytes`.
    pub const MAX_PENDING_BYTES: u64 = 256 << 20;
    /// `--max-event-bytes`: the mesh-wide default.
    pub const MAX_EVENT_BYTES: usize = smesh_core::DEFAULT_MAX_EVENT_BYTES;
    /// `--heartbeat-interval`.
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
    /// `--heartbeat-misses`.
    pub const HEARTBEAT_MISSES: u32 = 3;
    /// `--heartbeat-timeout`.
    pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
    /// `--connect-timeout`.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// `--not-ready-failover-after`.
    pub const NOT_READY_FAILOVER_AFTER: Duration = Duration::from_secs(5);
    /// `--grace`.
    pub const GRACE: Duration = Duration::from_secs(10);
}

/// Proxies client event streams to a master and fails over between masters.
#[derive(Parser, Debug, Clone)]
#[command(name = "smesh-sidecar", version, about, max_term_width = 100)]
pub struct SidecarArgs {
    /// This sidecar's id, shown to masters, clients and the console.
    #[arg(long, env = "SMESH_ID", default_value = defaults::ID)]
    pub id: String,
    /// Address clients connect to.
    #[arg(long, env = "SMESH_LISTEN", default_value_t = defaults::LISTEN)]
    pub listen: SocketAddr,
    /// Masters this sidecar may use, in order of preference
    /// (`<id>;host:port;` per line; no port means 9010). Re-read when it
    /// changes and on SIGHUP; a host name that resolves to several
    /// addresses counts as one master per address.
    #[arg(long, env = "SMESH_MASTERS", default_value = defaults::MASTERS)]
    pub masters: PathBuf,
    /// Events a client may have unacknowledged on its stream.
    #[arg(long, env = "SMESH_WINDOW", default_value_t = defaults::WINDOW)]
    pub window: u32,
    /// A client may send a batch only while it has fewer bytes (encoded
    /// events) than this unacknowledged: what one client can make the
    /// sidecar hold, besides one batch.
    #[arg(
        long,
        env = "SMESH_WINDOW_BYTES",
        default_value = size_flag(defaults::WINDOW_BYTES),
        value_parser = parse_bytes
    )]
    pub window_bytes: u64,
    /// Events the sidecar holds at most for all its clients together; client
    /// streams wait while it is full.
    #[arg(long, env = "SMESH_MAX_PENDING_EVENTS", default_value_t = defaults::MAX_PENDING_EVENTS)]
    pub max_pending_events: usize,
    /// Bytes (encoded events) the sidecar holds at most for all its clients
    /// together on their way to a master; client streams wait while it is
    /// full.
    #[arg(
        long,
        env = "SMESH_MAX_PENDING_BYTES",
        default_value = size_flag(defaults::MAX_PENDING_BYTES),
        value_parser = parse_bytes
    )]
    pub max_pending_bytes: u64,
    /// Largest event a client may send, in bytes.
    #[arg(long, env = "SMESH_MAX_EVENT_BYTES", default_value_t = defaults::MAX_EVENT_BYTES)]
    pub max_event_bytes: usize,
    /// How often clients are pinged.
    #[arg(
        long,
        env = "SMESH_HEARTBEAT_INTERVAL",
        default_value = duration_text(defaults::HEARTBEAT_INTERVAL),
        value_parser = parse_duration
    )]
    pub heartbeat_interval: Duration,
    /// Unanswered pings after which a client counts as down and its stream is closed.
    #[arg(long, env = "SMESH_HEARTBEAT_MISSES", default_value_t = defaults::HEARTBEAT_MISSES)]
    pub heartbeat_misses: u32,
    /// Silence from the master after which it is presumed dead.
    #[arg(
        long,
        env = "SMESH_HEARTBEAT_TIMEOUT",
        default_value = duration_text(defaults::HEARTBEAT_TIMEOUT),
        value_parser = parse_duration
    )]
    pub heartbeat_timeout: Duration,
    /// Time allowed to connect to a master.
    #[arg(
        long,
        env = "SMESH_CONNECT_TIMEOUT",
        default_value = duration_text(defaults::CONNECT_TIMEOUT),
        value_parser = parse_duration
    )]
    pub connect_timeout: Duration,
    /// How long a master may say it cannot deliver (Kafka down) before the
    /// sidecar looks for another master that can.
    #[arg(
        long,
        env = "SMESH_NOT_READY_FAILOVER_AFTER",
        default_value = duration_text(defaults::NOT_READY_FAILOVER_AFTER),
        value_parser = parse_duration
    )]
    pub not_ready_failover_after: Duration,
    /// On SIGTERM/Ctrl-C, how long to wait for held events to be acknowledged.
    #[arg(
        long,
        env = "SMESH_GRACE",
        default_value = duration_text(defaults::GRACE),
        value_parser = parse_duration
    )]
    pub grace: Duration,
    /// Mutual TLS towards clients and masters (`--tls-cert`, `--tls-key`,
    /// `--tls-ca`); the certificate must name `smesh://sidecar/<id>`.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Serve clients in plaintext on a non-loopback --listen address, without
    /// certificates: anyone on the network can read and forge the traffic.
    #[arg(long, env = "SMESH_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
    /// Log format and filter (`--log`, `--log-format`).
    #[command(flatten)]
    pub log: LogArgs,
    /// Prometheus metrics (`--metrics-listen`; off unless given).
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// The plaintext health door (`--health-listen`; off unless given).
    #[command(flatten)]
    pub health: HealthArgs,
    /// A TOML file of these settings, and checking them without starting
    /// (`--config`, `--check-config`).
    #[command(flatten)]
    pub config: ConfigArgs,
}

impl SidecarArgs {
    /// Reads the master list and checks every value before a port is bound.
    pub fn into_config(self) -> Result<Config, String> {
        // The id before the list, as always: with both wrong, the same error.
        smesh_core::cli::check_id(&self.id)?;
        let masters =
            peers::load(&self.masters, smesh_core::MASTER_PORT).map_err(|e| e.to_string())?;
        let tls = self
            .tls
            .load(Some(&PeerIdentity::new(Tier::Sidecar, self.id.clone())))?;
        let secure = tls.is_some();
        let config = Config::builder(self.id, masters)
            .masters_file(self.masters)
            .tls(tls)
            .window(self.window)
            .window_bytes(self.window_bytes)
            .max_pending_events(self.max_pending_events)
            .max_pending_bytes(self.max_pending_bytes)
            .max_event_bytes(self.max_event_bytes)
            .heartbeat_interval(self.heartbeat_interval)
            .heartbeat_misses(self.heartbeat_misses)
            .heartbeat_timeout(self.heartbeat_timeout)
            .connect_timeout(self.connect_timeout)
            .not_ready_failover_after(self.not_ready_failover_after)
            .build()?;
        smesh_core::cli::distinct_doors(&[
            ("--listen", Some(self.listen)),
            ("--metrics-listen", self.metrics.metrics_listen),
            ("--health-listen", self.health.health_listen),
        ])?;
        // Last: every other mistake is named first, whatever the address.
        smesh_core::cli::check_plaintext("--listen", self.listen, secure, self.insecure_plaintext)?;
        Ok(config)
    }
}

impl Config {
    /// A configuration with every flag's default except the two that differ
    /// from sidecar to sidecar: its id and its masters. For sidecars run in
    /// process (the demo, tests); set more with the [`ConfigBuilder`]'s
    /// methods, named after the flags, then [`build`](ConfigBuilder::build).
    /// (`--listen` and `--grace` are not here: the caller binds the listener
    /// and decides how long to wait.)
    pub fn builder(id: impl Into<String>, masters: Vec<Peer>) -> ConfigBuilder {
        ConfigBuilder {
            id: id.into(),
            masters,
            masters_file: None,
            window: defaults::WINDOW,
            window_bytes: defaults::WINDOW_BYTES,
            max_pending_events: defaults::MAX_PENDING_EVENTS,
            max_pending_bytes: defaults::MAX_PENDING_BYTES,
            max_event_bytes: defaults::MAX_EVENT_BYTES,
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
            heartbeat_misses: defaults::HEARTBEAT_MISSES,
            heartbeat_timeout: defaults::HEARTBEAT_TIMEOUT,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            not_ready_failover_after: defaults::NOT_READY_FAILOVER_AFTER,
            tls: None,
        }
    }
}

/// A sidecar configuration being put together in code. Each field holds the
/// value of the flag of the same name; [`build`](Self::build) checks them as
/// the flags are checked, so a typed configuration is no less valid than a
/// parsed one.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ConfigBuilder {
    id: String,
    masters: Vec<Peer>,
    masters_file: Option<PathBuf>,
    window: u32,
    window_bytes: u64,
    max_pending_events: usize,
    max_pending_bytes: u64,
    max_event_bytes: usize,
    heartbeat_interval: Duration,
    heartbeat_misses: u32,
    heartbeat_timeout: Duration,
    connect_timeout: Duration,
    not_ready_failover_after: Duration,
    tls: Option<NodeTls>,
}

impl ConfigBuilder {
    /// `--masters`: the file the masters were read from, followed while
    /// the sidecar runs (without it the list stays as given).
    pub fn masters_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.masters_file = Some(path.into());
        self
    }

    /// `--tls-cert`, `--tls-key`, `--tls-ca`, loaded: mutual TLS towards
    /// clients and masters (`None`: plaintext).
    pub fn tls(mut self, tls: Option<NodeTls>) -> Self {
        self.tls = tls;
        self
    }

    /// `--window`.
    pub fn window(mut self, events: u32) -> Self {
        self.window = events;
        self
    }

    /// `--window-bytes`.
    pub fn window_bytes(mut self, bytes: u64) -> Self {
        self.window_bytes = bytes;
        self
    }

    /// `--max-pending-events`.
    pub fn max_pending_events(mut self, events: usize) -> Self {
        self.max_pending_events = events;
        self
    }

    /// `--max-pending-bytes`.
    pub fn max_pending_bytes(mut self, bytes: u64) -> Self {
        self.max_pending_bytes = bytes;
        self
    }

    /// `--max-event-bytes`.
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }

    /// `--heartbeat-interval`.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// `--heartbeat-misses`.
    pub fn heartbeat_misses(mut self, misses: u32) -> Self {
        self.heartbeat_misses = misses;
        self
    }

    /// `--heartbeat-timeout`.
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }

    /// `--connect-timeout`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// `--not-ready-failover-after`.
    pub fn not_ready_failover_after(mut self, after: Duration) -> Self {
        self.not_ready_failover_after = after;
        self
    }

    /// Checks every value as the flags are checked (the messages name the
    /// flags) and makes the configuration, with a new incarnation.
    pub fn build(self) -> Result<Config, String> {
        smesh_core::cli::check_id(&self.id)?;
        if self.masters.is_empty() {
            return Err("no masters: a sidecar needs at least one".to_string());
        }
        if self.window == 0 || self.max_pending_events == 0 || self.max_pending_bytes == 0 {
            return Err(
                "--window, --max-pending-events and --max-pending-bytes must be at least 1"
                    .to_string(),
            );
        }
        check_duration("--heartbeat-timeout", self.heartbeat_timeout)?;
        check_duration("--connect-timeout", self.connect_timeout)?;
        check_duration("--not-ready-failover-after", self.not_ready_failover_after)?;
        let sessions = SessionSettings::new(
            self.window,
            self.max_event_bytes,
            self.heartbeat_interval,
            self.heartbeat_misses,
        )?
        .with_window_bytes(self.window_bytes)?;
        if let Some(tls) = &self.tls {
            tls.check_names(&PeerIdentity::new(Tier::Sidecar, self.id.clone()))?;
        }
        Ok(Config {
            id: self.id.clone(),
            sessions,
            tls: self.tls.clone(),
            masters_file: self.masters_file,
            upstream: UpstreamSettings {
                link: LinkSettings {
                    hello: Hello {
                        node_id: self.id,
                        kind: NodeKind::Sidecar as i32,
                        version: smesh_core::VERSION.to_string(),
                        incarnation: crate::incarnation(),
                    },
                    peers: live_peers::fixed(self.masters),
                    // Masters are few and each takes every sidecar: the
                    // listed order, no moving back.
                    order: PeerOrder::Ordered,
                    rebalance_every: None,
                    timeouts: LinkTimeouts {
                        connect: self.connect_timeout,
                        welcome: self.connect_timeout * 2,
                    },
                    heartbeat_timeout: self.heartbeat_timeout,
                    // The master's window applies.
                    window: usize::MAX,
                    not_ready_failover_after: Some(self.not_ready_failover_after),
                    backoff: Backoff::default(),
                    tls: self.tls.clone(),
                },
                max_pending_events: self.max_pending_events,
                max_pending_bytes: self.max_pending_bytes,
                report_interval: self.heartbeat_interval,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    /// Parses flags as `smesh-sidecar` does, but blind to `SMESH_*`
    /// variables, so that only the flags' own defaults fill in the rest.
    /// (With `--insecure-plaintext`: the default `--listen` is every
    /// interface, refused in plaintext without it.)
    fn parse_without_env(flags: &[&str]) -> Result<Config, String> {
        let argv = ["smesh-sidecar", "--insecure-plaintext"]
            .into_iter()
            .chain(flags.iter().copied());
        let matches = SidecarArgs::command()
            .mut_args(|arg| arg.env(None::<&'static str>))
            .try_get_matches_from(argv)
            .map_err(|e| e.to_string())?;
        SidecarArgs::from_arg_matches(&matches)
            .map_err(|e| e.to_string())?
            .into_config()
    }

    /// `Debug`, without the one thing that differs between two
    /// configurations made alike: the incarnation (nothing in `Config`
    /// compares, so the configurations are compared through their `Debug`).
    fn alike(mut config: Config) -> String {
        config.upstream.link.hello.incarnation.clear();
        format!("{config:?}")
    }

    /// The example master list, where the default `--masters` points when
    /// a sidecar starts at the repository root (unit tests start elsewhere).
    fn example_masters() -> (&'static str, Vec<Peer>) {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../files/sidecarCon.csv");
        let peers = peers::load(path.as_ref(), smesh_core::MASTER_PORT).expect("example list");
        (path, peers)
    }

    #[test]
    fn the_builder_starts_from_the_flags_defaults() {
        let (list, peers) = example_masters();
        let parsed = parse_without_env(&["--masters", list]).expect("defaults parse");
        let built = Config::builder(defaults::ID, peers)
            .masters_file(list)
            .build()
            .expect("defaults build");
        assert_eq!(alike(built), alike(parsed));
    }

    #[test]
    fn every_setter_stands_for_its_flag() {
        let (list, peers) = example_masters();
        let parsed = parse_without_env(&[
            "--id",
            "edge-sidecar",
            "--masters",
            list,
            "--window",
            "10",
            "--max-pending-events",
            "100",
            "--max-event-bytes",
            "2000",
            "--heartbeat-interval",
            "250ms",
            "--heartbeat-misses",
            "5",
            "--heartbeat-timeout",
            "4s",
            "--connect-timeout",
            "1s",
            "--not-ready-failover-after",
            "7s",
        ])
        .expect("flags parse");
        let built = Config::builder("edge-sidecar", peers)
            .masters_file(list)
            .window(10)
            .max_pending_events(100)
            .max_event_bytes(2000)
            .heartbeat_interval(Duration::from_millis(250))
            .heartbeat_misses(5)
            .heartbeat_timeout(Duration::from_secs(4))
            .connect_timeout(Duration::from_secs(1))
            .not_ready_failover_after(Duration::from_secs(7))
            .build()
            .expect("valid");
        assert_eq!(alike(built), alike(parsed));
    }

    #[test]
    fn the_builder_checks_what_the_flags_check() {
        let err = Config::builder("sidecar-1", Vec::new())
            .build()
            .expect_err("no masters");
        assert!(err.contains("no masters"), "{err}");
        let (_, peers) = example_masters();
        let err = Config::builder("sidecar-1", peers)
            .heartbeat_misses(0)
            .build()
            .expect_err("no misses");
        assert!(err.contains("--heartbeat-misses"), "{err}");
    }
}
