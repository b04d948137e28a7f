//! `smesh-client` flags, and the typed [`ConfigBuilder`] for clients run in
//! process. Every flag also reads an `SMESH_*` variable. Both start from the
//! same [`defaults`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use smesh_core::cli::{
    ConfigArgs, LogArgs, MetricsArgs, TlsArgs, check_duration, duration_text, parse_bytes,
    parse_duration, size_flag,
};
use smesh_core::link::LinkTimeouts;
use smesh_core::peers::{self, Peer, PeerOrder};
use smesh_core::tls::{NodeTls, PeerIdentity, Tier};

use crate::source::SourceSpec;

/// The defaults of the flags. `--help` shows them and [`Config::builder`]
/// starts from them, so a client built in process behaves like one started
/// with no flags.
pub mod defaults {
    use std::time::Duration;

    use super::{SpoolFull, SpoolMode};

    /// `--id`.
    pub const ID: &str = "client-1";
    /// `--sidecars`: relative, so a client started at the repository root
    /// finds the example list.
    pub const SIDECARS: &str = "files/clientCon.csv";
    /// `--source`: one synthetic sensor, so a bare client has something to send.
    pub const SOURCE: &str = "sensor";
    /// `--spool`: nothing read is lost unless asked for.
    pub const SPOOL_MODE: SpoolMode = SpoolMode::Always;
    /// `--spool-file`, beside the example sidecar list.
    pub const SPOOL_FILE: &str = "files/safeData.csv";
    /// `--spool-max-bytes` (1GiB).
    pub const SPOOL_MAX_BYTES: u64 = 1 << 30;
    /// `--on-spool-full`: sources wait rather than lose readings (nothing
    /// read is lost; a file source simply resumes later).
    pub const ON_SPOOL_FULL: SpoolFull = SpoolFull::Hold;
    /// `--window`: the mesh-wide default.
    pub const WINDOW: u32 = smesh_core::DEFAULT_WINDOW;
    /// `--batch-max`.
    pub const BATCH_MAX: usize = 512;
    /// `--batch-max-bytes` (1MiB).
    pub const BATCH_MAX_BYTES: u64 = 1 << 20;
    /// `--max-event-bytes`: the mesh-wide default.
    pub const MAX_EVENT_BYTES: usize = smesh_core::DEFAULT_MAX_EVENT_BYTES;
    /// `--heartbeat-timeout`.
    pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
    /// `--connect-timeout`.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// `--report-interval`.
    pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
    /// `--grace`.
    pub const GRACE: Duration = Duration::from_secs(10);
    /// `--sidecar-order`: clients spread over their sidecars.
    pub const SIDECAR_ORDER: smesh_core::peers::PeerOrder = smesh_core::peers::PeerOrder::Spread;
    /// `--rebalance-interval`: minutes, so that a sidecar coming back gets
    /// its share back gradually, not in one burst of reconnects.
    pub const REBALANCE_INTERVAL: Duration = Duration::from_secs(5 * 60);
}

/// When events are written to `safeData.csv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SpoolMode {
    /// Every event is appended (and synced) before it is sent: nothing read is
    /// lost even on `kill -9` or power loss.
    Always,
    /// Events are spooled only when they cannot be delivered, and on shutdown.
    /// Faster; `kill -9` loses events that were in memory.
    OnFailure,
}

/// What happens to new readings while the spool cannot take them: it
/// reached `--spool-max-bytes`, or its filesystem is full. Either way the
/// client goes on delivering what the spool holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SpoolFull {
    /// Sources wait until there is room again (nothing is lost). `block`
    /// is accepted as its earlier name.
    #[value(alias = "block")]
    Hold,
    /// New events are dropped, counted and logged.
    Drop,
}

/// Reads data sources and streams them as CloudEvents to a sidecar, spooling
/// to safeData.csv what cannot be delivered.
#[derive(Parser, Debug, Clone)]
#[command(name = "smesh-client", version, about, max_term_width = 100)]
pub struct ClientArgs {
    /// This client's id: the Kafka record key and the prefix of its event ids.
    /// Must be unique in the mesh.
    #[arg(long, env = "SMESH_ID", default_value = defaults::ID)]
    pub id: String,
    /// Sidecars this client may use (`<id>;host:port;` per line; no port
    /// means 9000). Re-read when it changes and on SIGHUP; a host name
    /// that resolves to several addresses counts as one sidecar per address.
    #[arg(long, env = "SMESH_SIDECARS", default_value = defaults::SIDECARS)]
    pub sidecars: PathBuf,
    /// How this client ranks its sidecars: `spread` (its own order, by a
    /// hash of its id and theirs, so clients spread evenly) or `ordered`
    /// (as listed: every client takes the first). Failover goes down the
    /// ranking either way.
    #[arg(long, env = "SMESH_SIDECAR_ORDER", value_enum, default_value_t = defaults::SIDECAR_ORDER)]
    pub sidecar_order: PeerOrder,
    /// With `--sidecar-order spread`: how often (±50 % jitter) a client not
    /// on its first-ranked sidecar looks whether it answers again, and moves
    /// back between batches if so.
    #[arg(
        long,
        env = "SMESH_REBALANCE_INTERVAL",
        default_value = duration_text(defaults::REBALANCE_INTERVAL),
        value_parser = parse_duration
    )]
    pub rebalance_interval: Duration,
    /// A data source, `KIND[:key=value,…]` (repeatable; `;`-separated in the
    /// variable). Kinds: sensor, http, file, stdin. See the README.
    #[arg(
        long = "source",
        env = "SMESH_SOURCES",
        value_delimiter = ';',
        default_value = defaults::SOURCE
    )]
    pub sources: Vec<SourceSpec>,
    /// When events are written to the spool.
    #[arg(long = "spool", env = "SMESH_SPOOL", value_enum, default_value_t = defaults::SPOOL_MODE)]
    pub spool_mode: SpoolMode,
    /// The spool file. Its state file (`.state`) and rejected file
    /// (`.rejected.csv`) live beside it.
    #[arg(long, env = "SMESH_SPOOL_FILE", default_value = defaults::SPOOL_FILE)]
    pub spool_file: PathBuf,
    /// Most unacknowledged data the spool may hold (e.g. 512MiB, 2GB).
    #[arg(
        long,
        env = "SMESH_SPOOL_MAX_BYTES",
        default_value = size_flag(defaults::SPOOL_MAX_BYTES),
        value_parser = parse_bytes
    )]
    pub spool_max_bytes: u64,
    /// What to do when the spool is full.
    #[arg(long, env = "SMESH_ON_SPOOL_FULL", value_enum, default_value_t = defaults::ON_SPOOL_FULL)]
    pub on_spool_full: SpoolFull,
    /// Most events unacknowledged at once (the sidecar may allow fewer).
    #[arg(long, env = "SMESH_WINDOW", default_value_t = defaults::WINDOW)]
    pub window: u32,
    /// Most events per batch.
    #[arg(long, env = "SMESH_BATCH_MAX", default_value_t = defaults::BATCH_MAX)]
    pub batch_max: usize,
    /// Most data bytes per batch.
    #[arg(
        long,
        env = "SMESH_BATCH_MAX_BYTES",
        default_value = size_flag(defaults::BATCH_MAX_BYTES),
        value_parser = parse_bytes
    )]
    pub batch_max_bytes: u64,
    /// Largest event, in bytes; larger ones go to the rejected file.
    #[arg(long, env = "SMESH_MAX_EVENT_BYTES", default_value_t = defaults::MAX_EVENT_BYTES)]
    pub max_event_bytes: usize,
    /// Silence from the sidecar after which it is presumed dead.
    #[arg(
        long,
        env = "SMESH_HEARTBEAT_TIMEOUT",
        default_value = duration_text(defaults::HEARTBEAT_TIMEOUT),
        value_parser = parse_duration
    )]
    pub heartbeat_timeout: Duration,
    /// Time allowed to connect to a sidecar.
    #[arg(
        long,
        env = "SMESH_CONNECT_TIMEOUT",
        default_value = duration_text(defaults::CONNECT_TIMEOUT),
        value_parser = parse_duration
    )]
    pub connect_timeout: Duration,
    /// How often the backlog and counters are reported to the sidecar.
    #[arg(
        long,
        env = "SMESH_REPORT_INTERVAL",
        default_value = duration_text(defaults::REPORT_INTERVAL),
        value_parser = parse_duration
    )]
    pub report_interval: Duration,
    /// On SIGTERM/Ctrl-C, how long to wait for in-flight events to be
    /// acknowledged before the rest is left in the spool.
    #[arg(
        long,
        env = "SMESH_GRACE",
        default_value = duration_text(defaults::GRACE),
        value_parser = parse_duration
    )]
    pub grace: Duration,
    /// Write counters and ack-latency percentiles (JSON) here when stopping.
    #[arg(long, env = "SMESH_STATS_FILE")]
    pub stats_file: Option<PathBuf>,
    /// Mutual TLS to the sidecars (`--tls-cert`, `--tls-key`, `--tls-ca`);
    /// the certificate must name `smesh://client/<id>`.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Log format and filter (`--log`, `--log-format`).
    #[command(flatten)]
    pub log: LogArgs,
    /// Prometheus metrics (`--metrics-listen`; off unless given).
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// A TOML file of these settings, and checking them without starting
    /// (`--config`, `--check-config`).
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// A validated client configuration: from flags ([`ClientArgs::into_config`])
/// or built in process ([`Config::builder`]).
#[derive(Clone, Debug)]
pub struct Config {
    /// The Kafka record key and the prefix of every event id.
    pub id: String,
    /// The sidecars, as listed (not empty).
    pub sidecars: Vec<Peer>,
    /// The file they were read from, followed while running (`None`: the
    /// list stays as given; its names are still resolved).
    pub sidecars_file: Option<PathBuf>,
    /// How the sidecars are ranked.
    pub sidecar_order: PeerOrder,
    /// How often a client off its first-ranked sidecar looks whether it
    /// can go back (with [`PeerOrder::Spread`]).
    pub rebalance_interval: Duration,
    /// What produces the readings.
    pub sources: Vec<SourceSpec>,
    /// When events are written to the spool.
    pub spool_mode: SpoolMode,
    /// The spool; its state and rejected files live beside it.
    pub spool_file: PathBuf,
    /// Most unacknowledged data the spool may hold.
    pub spool_max_bytes: u64,
    /// What happens when the spool is full.
    pub on_spool_full: SpoolFull,
    /// Most events unacknowledged at once.
    pub window: u32,
    /// Most events per batch.
    pub batch_max: usize,
    /// Most data bytes per batch.
    pub batch_max_bytes: usize,
    /// Largest event; larger ones go to the rejected file.
    pub max_event_bytes: usize,
    /// How long connecting to a sidecar and its Welcome may take.
    pub timeouts: LinkTimeouts,
    /// Silence after which the sidecar is presumed dead.
    pub heartbeat_timeout: Duration,
    /// How often the backlog and counters go upstream.
    pub report_interval: Duration,
    /// How long a shutdown waits for in-flight events.
    pub drain_timeout: Duration,
    /// Where counters and latency percentiles go on exit, if anywhere.
    pub stats_file: Option<PathBuf>,
    /// Mutual TLS to the sidecars; `None`: plaintext.
    pub tls: Option<NodeTls>,
}

impl Config {
    /// A configuration with every flag's default except the two that differ
    /// from client to client: its id and its sidecars. For clients run in
    /// process (the demo, tests); set more with the [`ConfigBuilder`]'s
    /// methods, named after the flags, then [`build`](ConfigBuilder::build).
    pub fn builder(id: impl Into<String>, sidecars: Vec<Peer>) -> ConfigBuilder {
        ConfigBuilder {
            id: id.into(),
            sidecars,
            sidecars_file: None,
            sidecar_order: defaults::SIDECAR_ORDER,
            rebalance_interval: defaults::REBALANCE_INTERVAL,
            sources: None,
            spool_mode: defaults::SPOOL_MODE,
            spool_file: PathBuf::from(defaults::SPOOL_FILE),
            spool_max_bytes: defaults::SPOOL_MAX_BYTES,
            on_spool_full: defaults::ON_SPOOL_FULL,
            window: defaults::WINDOW,
            batch_max: defaults::BATCH_MAX,
            batch_max_bytes: defaults::BATCH_MAX_BYTES,
            max_event_bytes: defaults::MAX_EVENT_BYTES,
            heartbeat_timeout: defaults::HEARTBEAT_TIMEOUT,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            report_interval: defaults::REPORT_INTERVAL,
            grace: defaults::GRACE,
            stats_file: None,
            tls: None,
        }
    }
}

/// A client configuration being put together in code. Each field holds the
/// value of the flag of the same name; [`build`](Self::build) checks them as
/// the flags are checked, so a typed configuration is no less valid than a
/// parsed one.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ConfigBuilder {
    id: String,
    sidecars: Vec<Peer>,
    sidecars_file: Option<PathBuf>,
    sidecar_order: PeerOrder,
    rebalance_interval: Duration,
    /// `None` until set: [`defaults::SOURCE`], parsed in `build` (a source
    /// exists only as parsed text).
    sources: Option<Vec<SourceSpec>>,
    spool_mode: SpoolMode,
    spool_file: PathBuf,
    spool_max_bytes: u64,
    on_spool_full: SpoolFull,
    window: u32,
    batch_max: usize,
    batch_max_bytes: u64,
    max_event_bytes: usize,
    heartbeat_timeout: Duration,
    connect_timeout: Duration,
    report_interval: Duration,
    grace: Duration,
    tls: Option<NodeTls>,
    stats_file: Option<PathBuf>,
}

impl ConfigBuilder {
    /// `--sidecars`: the file the sidecars were read from, followed while
    /// the client runs (without it the list stays as given).
    pub fn sidecars_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.sidecars_file = Some(path.into());
        self
    }

    /// `--sidecar-order`.
    pub fn sidecar_order(mut self, order: PeerOrder) -> Self {
        self.sidecar_order = order;
        self
    }

    /// `--rebalance-interval`.
    pub fn rebalance_interval(mut self, interval: Duration) -> Self {
        self.rebalance_interval = interval;
        self
    }

    /// `--source`, every one of them (replaces the default).
    pub fn sources(mut self, sources: Vec<SourceSpec>) -> Self {
        self.sources = Some(sources);
        self
    }

    /// `--spool`.
    pub fn spool_mode(mut self, mode: SpoolMode) -> Self {
        self.spool_mode = mode;
        self
    }

    /// `--spool-file`.
    pub fn spool_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.spool_file = path.into();
        self
    }

    /// `--spool-max-bytes`.
    pub fn spool_max_bytes(mut self, bytes: u64) -> Self {
        self.spool_max_bytes = bytes;
        self
    }

    /// `--on-spool-full`.
    pub fn on_spool_full(mut self, full: SpoolFull) -> Self {
        self.on_spool_full = full;
        self
    }

    /// `--window`.
    pub fn window(mut self, events: u32) -> Self {
        self.window = events;
        self
    }

    /// `--batch-max`.
    pub fn batch_max(mut self, events: usize) -> Self {
        self.batch_max = events;
        self
    }

    /// `--batch-max-bytes`.
    pub fn batch_max_bytes(mut self, bytes: u64) -> Self {
        self.batch_max_bytes = bytes;
        self
    }

    /// `--max-event-bytes`.
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
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

    /// `--report-interval`.
    pub fn report_interval(mut self, interval: Duration) -> Self {
        self.report_interval = interval;
        self
    }

    /// `--grace`.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// `--stats-file`.
    pub fn stats_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.stats_file = Some(path.into());
        self
    }

    /// `--tls-cert`, `--tls-key`, `--tls-ca`, loaded: mutual TLS to the
    /// sidecars (`None`: plaintext).
    pub fn tls(mut self, tls: Option<NodeTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Checks every value as the flags are checked (the messages name the
    /// flags) and makes the configuration.
    pub fn build(self) -> Result<Config, String> {
        smesh_core::cli::check_id(&self.id)?;
        if self.sidecars.is_empty() {
            return Err("no sidecars: a client needs at least one".to_string());
        }
        let sources = match self.sources {
            Some(sources) => sources,
            None => vec![defaults::SOURCE.parse()?],
        };
        if self.window == 0 || self.batch_max == 0 {
            return Err("--window and --batch-max must be at least 1".to_string());
        }
        if self.max_event_bytes < 256 {
            return Err("--max-event-bytes must be at least 256".to_string());
        }
        check_duration("--heartbeat-timeout", self.heartbeat_timeout)?;
        check_duration("--connect-timeout", self.connect_timeout)?;
        check_duration("--report-interval", self.report_interval)?;
        check_duration("--rebalance-interval", self.rebalance_interval)?;
        let mut keys = std::collections::HashSet::new();
        for source in &sources {
            if let Some(key) = source.origin_key() {
                if !keys.insert(key.clone()) {
                    return Err(format!("source {key} is given twice"));
                }
            }
        }
        if self.spool_file.is_dir() {
            return Err(format!(
                "--spool-file {} is a directory",
                self.spool_file.display()
            ));
        }
        if let Some(tls) = &self.tls {
            tls.check_names(&PeerIdentity::new(Tier::Client, self.id.clone()))?;
        }
        Ok(Config {
            tls: self.tls,
            id: self.id,
            sidecars: self.sidecars,
            sidecars_file: self.sidecars_file,
            sidecar_order: self.sidecar_order,
            rebalance_interval: self.rebalance_interval,
            sources,
            spool_mode: self.spool_mode,
            spool_file: self.spool_file,
            spool_max_bytes: self.spool_max_bytes,
            on_spool_full: self.on_spool_full,
            window: self.window,
            batch_max: self.batch_max,
            batch_max_bytes: usize::try_from(self.batch_max_bytes).unwrap_or(usize::MAX),
            max_event_bytes: self.max_event_bytes,
            timeouts: LinkTimeouts {
                connect: self.connect_timeout,
                welcome: self.connect_timeout * 2,
            },
            heartbeat_timeout: self.heartbeat_timeout,
            report_interval: self.report_interval,
            drain_timeout: self.grace,
            stats_file: self.stats_file,
        })
    }
}

impl ClientArgs {
    /// Reads the sidecar list and checks every value before anything starts.
    pub fn into_config(self) -> Result<Config, String> {
        // The id before the list, as always: with both wrong, the same error.
        smesh_core::cli::check_id(&self.id)?;
        let sidecars =
            peers::load(&self.sidecars, smesh_core::SIDECAR_PORT).map_err(|e| e.to_string())?;
        let tls = self
            .tls
            .load(Some(&PeerIdentity::new(Tier::Client, self.id.clone())))?;
        let builder = Config::builder(self.id, sidecars)
            .sidecars_file(self.sidecars)
            .sidecar_order(self.sidecar_order)
            .rebalance_interval(self.rebalance_interval)
            .tls(tls)
            .sources(self.sources)
            .spool_mode(self.spool_mode)
            .spool_file(self.spool_file)
            .spool_max_bytes(self.spool_max_bytes)
            .on_spool_full(self.on_spool_full)
            .window(self.window)
            .batch_max(self.batch_max)
            .batch_max_bytes(self.batch_max_bytes)
            .max_event_bytes(self.max_event_bytes)
            .heartbeat_timeout(self.heartbeat_timeout)
            .connect_timeout(self.connect_timeout)
            .report_interval(self.report_interval)
            .grace(self.grace);
        match self.stats_file {
            Some(path) => builder.stats_file(path),
            None => builder,
        }
        .build()
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    /// Parses flags as `smesh-client` does, but blind to `SMESH_*` variables,
    /// so that only the flags' own defaults fill in the rest.
    fn parse_without_env(flags: &[&str]) -> Result<Config, String> {
        let argv = std::iter::once("smesh-client").chain(flags.iter().copied());
        let matches = ClientArgs::command()
            .mut_args(|arg| arg.env(None::<&'static str>))
            .try_get_matches_from(argv)
            .map_err(|e| e.to_string())?;
        ClientArgs::from_arg_matches(&matches)
            .map_err(|e| e.to_string())?
            .into_config()
    }

    /// The example sidecar list, where the default `--sidecars` points when
    /// a client starts at the repository root (unit tests start elsewhere).
    fn example_sidecars() -> (&'static str, Vec<Peer>) {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../files/clientCon.csv");
        let peers = peers::load(path.as_ref(), smesh_core::SIDECAR_PORT).expect("example list");
        (path, peers)
    }

    // `Config` holds sources, which cannot be compared; their `Debug` shows
    // every field, so the configurations are compared through it.

    #[test]
    fn the_builder_starts_from_the_flags_defaults() {
        let (list, peers) = example_sidecars();
        let parsed = parse_without_env(&["--sidecars", list]).expect("defaults parse");
        let built = Config::builder(defaults::ID, peers)
            .sidecars_file(list)
            .build()
            .expect("defaults build");
        assert_eq!(format!("{built:?}"), format!("{parsed:?}"));
    }

    #[test]
    fn every_setter_stands_for_its_flag() {
        let (list, peers) = example_sidecars();
        // Neither file is opened by the configuration.
        let spool = "/nonexistent/spool.csv";
        let stats = "/nonexistent/stats.json";
        let parsed = parse_without_env(&[
            "--id",
            "edge-7",
            "--sidecars",
            list,
            "--source",
            "sensor:rate=20,sensors=3",
            "--spool",
            "on-failure",
            "--spool-file",
            spool,
            "--spool-max-bytes",
            "2MiB",
            "--on-spool-full",
            "drop",
            "--window",
            "10",
            "--batch-max",
            "5",
            "--batch-max-bytes",
            "4096",
            "--max-event-bytes",
            "300",
            "--heartbeat-timeout",
            "4s",
            "--connect-timeout",
            "1500ms",
            "--report-interval",
            "2s",
            "--grace",
            "3s",
            "--stats-file",
            stats,
            "--sidecar-order",
            "ordered",
            "--rebalance-interval",
            "90s",
        ])
        .expect("flags parse");
        let built = Config::builder("edge-7", peers)
            .sidecars_file(list)
            .sidecar_order(PeerOrder::Ordered)
            .rebalance_interval(Duration::from_secs(90))
            .sources(vec!["sensor:rate=20,sensors=3".parse().expect("source")])
            .spool_mode(SpoolMode::OnFailure)
            .spool_file(spool)
            .spool_max_bytes(2 << 20)
            .on_spool_full(SpoolFull::Drop)
            .window(10)
            .batch_max(5)
            .batch_max_bytes(4096)
            .max_event_bytes(300)
            .heartbeat_timeout(Duration::from_secs(4))
            .connect_timeout(Duration::from_millis(1500))
            .report_interval(Duration::from_secs(2))
            .grace(Duration::from_secs(3))
            .stats_file(stats)
            .build()
            .expect("valid");
        assert_eq!(format!("{built:?}"), format!("{parsed:?}"));
    }

    #[test]
    fn the_builder_checks_what_the_flags_check() {
        let (_, peers) = example_sidecars();
        let err = Config::builder("edge 1", peers.clone())
            .build()
            .expect_err("bad id");
        assert!(err.contains("invalid --id"), "{err}");
        let err = Config::builder("edge-1", Vec::new())
            .build()
            .expect_err("no sidecars");
        assert!(err.contains("no sidecars"), "{err}");
        let err = Config::builder("edge-1", peers)
            .window(0)
            .build()
            .expect_err("no window");
        assert!(err.contains("--window"), "{err}");
    }

    #[test]
    fn default_texts_read_back_to_their_values() {
        for bytes in [4096, 1500, 1 << 20, 3 << 30] {
            assert_eq!(parse_bytes(&size_flag(bytes)), Ok(bytes));
        }
        for duration in [
            Duration::from_secs(10),
            Duration::from_millis(500),
            Duration::from_micros(1500),
        ] {
            assert_eq!(parse_duration(&duration_text(duration)), Ok(duration));
        }
    }

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("100MB"), Ok(100_000_000));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert!(parse_bytes("1 parsec").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
    }

    #[test]
    fn a_bad_sidecar_list_names_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = dir.path().join("clientCon.csv");
        std::fs::write(&list, "S1;127.0.0.1:9000;\nS2;127.0.0.1:port;\n").expect("write");
        let args = ClientArgs::try_parse_from([
            "smesh-client",
            "--sidecars",
            list.to_str().expect("utf8"),
        ])
        .expect("flags parse");
        let err = args.into_config().expect_err("bad row");
        assert!(
            err.contains("clientCon.csv:2:") && err.contains("invalid port"),
            "{err}"
        );
    }

    #[test]
    fn bad_sources_are_flag_errors() {
        let err = ClientArgs::try_parse_from(["smesh-client", "--source", "camera"])
            .expect_err("bad source");
        assert!(err.to_string().contains("unknown source kind"), "{err}");
    }
}
