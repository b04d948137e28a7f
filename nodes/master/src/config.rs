//! `smesh-master` flags, and the typed [`ConfigBuilder`] for masters run in
//! process. Every flag also reads an `SMESH_*` variable. Both start from the
//! same [`defaults`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
pub use smesh_core::cli::read_kafka_config_file;
use smesh_core::cli::{
    ConfigArgs, HealthArgs, LogArgs, MetricsArgs, TlsArgs, check_duration, duration_text,
    parse_bytes, parse_duration, parse_key_value, size_flag,
};
use smesh_core::tls::{NodeTls, PeerIdentity, Tier};
use smesh_core::token::AdminToken;

use crate::Config;
use crate::kafka::KafkaConfig;
use crate::transactions::ExactlyOnceSettings;
use smesh_core::session::SessionSettings;

/// The defaults of the flags. `--help` shows them and [`Config::builder`]
/// starts from them, so a master built in process behaves like one started
/// with no flags.
pub mod defaults {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
    use std::time::Duration;

    use super::Compression;

    /// `--id`.
    pub const ID: &str = "master-1";
    /// `--listen`: every interface, on the port sidecars' lists assume.
    pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::UNSPECIFIED,
        smesh_core::MASTER_PORT,
    ));
    /// `--admin-listen`: loopback, because the admin API is an operator's door.
    pub const ADMIN_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::LOCALHOST,
        smesh_core::ADMIN_PORT,
    ));
    /// `--kafka-brokers`: a broker on this machine, where `smesh-kafka`
    /// starts one.
    pub const KAFKA_BROKERS: &str = "127.0.0.1:9092";
    /// `--topic`.
    pub const TOPIC: &str = "smesh.events";
    /// `--compression`.
    pub const COMPRESSION: Compression = Compression::Lz4;
    /// `--delivery-timeout`.
    pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
    /// `--kafka-unavailable-after`.
    pub const KAFKA_UNAVAILABLE_AFTER: Duration = Duration::from_secs(5);
    /// `--delivery`: at least once (see the README for the measured cost
    /// of exactly once).
    pub const DELIVERY: super::Delivery = super::Delivery::AtLeastOnce;
    /// `--transaction-interval`.
    pub const TRANSACTION_INTERVAL: Duration = Duration::from_millis(100);
    /// `--transaction-max-events`.
    pub const TRANSACTION_MAX_EVENTS: usize = 20_000;
    /// `--transaction-timeout`.
    pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);
    /// `--window`: four times the mesh-wide default.
    pub const WINDOW: u32 = smesh_core::DEFAULT_WINDOW * 4;
    /// `--window-bytes`: what one sidecar's stream may hold in the master.
    pub const WINDOW_BYTES: u64 = 64 << 20;
    /// `--max-event-bytes`: the mesh-wide default.
    pub const MAX_EVENT_BYTES: usize = smesh_core::DEFAULT_MAX_EVENT_BYTES;
    /// `--heartbeat-interval`.
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
    /// `--heartbeat-misses`.
    pub const HEARTBEAT_MISSES: u32 = 3;
    /// `--health-report`: relative, beside the example peer lists.
    pub const HEALTH_REPORT: &str = "files/healthCheckReport.csv";
    /// `--probe-timeout`.
    pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
    /// `--grace`.
    pub const GRACE: Duration = Duration::from_secs(10);
}

/// Receives event streams from sidecars and publishes them to Apache Kafka.
#[derive(Parser, Debug, Clone)]
#[command(name = "smesh-master", version, about, max_term_width = 100)]
pub struct MasterArgs {
    /// This master's id, shown to sidecars and the console.
    #[arg(long, env = "SMESH_ID", default_value = defaults::ID)]
    pub id: String,
    /// Address the data plane listens on (sidecars connect here).
    #[arg(long, env = "SMESH_LISTEN", default_value_t = defaults::LISTEN)]
    pub listen: SocketAddr,
    /// Address of the admin API (the console connects here). Keep it on loopback
    /// unless the network in front of it is trusted.
    #[arg(long, env = "SMESH_ADMIN_LISTEN", default_value_t = defaults::ADMIN_LISTEN)]
    pub admin_listen: SocketAddr,
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "SMESH_KAFKA_BROKERS", default_value = defaults::KAFKA_BROKERS)]
    pub kafka_brokers: String,
    /// Topic events are published to.
    #[arg(long, env = "SMESH_TOPIC", default_value = defaults::TOPIC)]
    pub topic: String,
    /// Compression of produced batches.
    #[arg(long, env = "SMESH_COMPRESSION", value_enum, default_value_t = defaults::COMPRESSION)]
    pub compression: Compression,
    /// Extra librdkafka producer setting KEY=VALUE (repeatable; `;`-separated in
    /// the variable), e.g. `security.protocol=SSL`. Applied after smesh's own.
    #[arg(long = "kafka-config", env = "SMESH_KAFKA_CONFIG", value_delimiter = ';', value_parser = parse_key_value)]
    pub kafka_config: Vec<(String, String)>,
    /// A file of librdkafka settings, KEY=VALUE a line (`#` comments), read
    /// before `--kafka-config` (which has the last word): where secrets such
    /// as `sasl.password` belong, out of the command line and environment.
    /// Refused unless only its owner may read it (chmod 600).
    #[arg(long, env = "SMESH_KAFKA_CONFIG_FILE")]
    pub kafka_config_file: Option<PathBuf>,
    /// How long Kafka may take to acknowledge a batch, while it answers the
    /// master's probes, before the master ends the stream so the sidecar
    /// resends it, here or to another master (librdkafka itself never gives
    /// up on a record).
    #[arg(
        long,
        env = "SMESH_DELIVERY_TIMEOUT",
        default_value = duration_text(defaults::DELIVERY_TIMEOUT),
        value_parser = parse_duration
    )]
    pub delivery_timeout: Duration,
    /// How events go into Kafka: `at-least-once` (idempotent producer; a
    /// crash can write an event twice) or `exactly-once` (transactions and
    /// a marks topic: a `read_committed` consumer sees each event once).
    #[arg(long, env = "SMESH_DELIVERY", value_enum, default_value_t = defaults::DELIVERY)]
    pub delivery: Delivery,
    /// Exactly once: the compacted topic of per-client marks and claims
    /// (created if missing). Default: `<topic>.smesh-marks`.
    #[arg(long, env = "SMESH_MARKS_TOPIC", value_name = "TOPIC")]
    pub marks_topic: Option<String>,
    /// Exactly once: the producer's `transactional.id`, unique per master
    /// in the Kafka cluster; a master started again with the same id fences
    /// its earlier run. Default: `smesh-<topic>-<id>`.
    #[arg(long, env = "SMESH_TRANSACTIONAL_ID", value_name = "ID")]
    pub transactional_id: Option<String>,
    /// Exactly once: the longest a transaction stays open before it is
    /// committed (and its batches acknowledged).
    #[arg(
        long,
        env = "SMESH_TRANSACTION_INTERVAL",
        default_value = duration_text(defaults::TRANSACTION_INTERVAL),
        value_parser = parse_duration
    )]
    pub transaction_interval: Duration,
    /// Exactly once: events after which a transaction is committed early.
    #[arg(long, env = "SMESH_TRANSACTION_MAX_EVENTS", default_value_t = defaults::TRANSACTION_MAX_EVENTS)]
    pub transaction_max_events: usize,
    /// Exactly once: Kafka aborts a transaction its producer left open this
    /// long (a killed master's); another master may wait as long to learn
    /// what the dead one committed.
    #[arg(
        long,
        env = "SMESH_TRANSACTION_TIMEOUT",
        default_value = duration_text(defaults::TRANSACTION_TIMEOUT),
        value_parser = parse_duration
    )]
    pub transaction_timeout: Duration,
    /// Report NOT_SERVING once Kafka has been unreachable this long.
    #[arg(
        long,
        env = "SMESH_KAFKA_UNAVAILABLE_AFTER",
        default_value = duration_text(defaults::KAFKA_UNAVAILABLE_AFTER),
        value_parser = parse_duration
    )]
    pub kafka_unavailable_after: Duration,
    /// Events a sidecar may have unacknowledged on its stream.
    #[arg(long, env = "SMESH_WINDOW", default_value_t = defaults::WINDOW)]
    pub window: u32,
    /// A sidecar may send a batch only while it has fewer bytes (encoded
    /// events) than this unacknowledged: what one sidecar can make the
    /// master hold, besides one batch.
    #[arg(
        long,
        env = "SMESH_WINDOW_BYTES",
        default_value = size_flag(defaults::WINDOW_BYTES),
        value_parser = parse_bytes
    )]
    pub window_bytes: u64,
    /// Largest event accepted, in bytes (attributes and data).
    #[arg(long, env = "SMESH_MAX_EVENT_BYTES", default_value_t = defaults::MAX_EVENT_BYTES)]
    pub max_event_bytes: usize,
    /// How often sidecars are pinged.
    #[arg(
        long,
        env = "SMESH_HEARTBEAT_INTERVAL",
        default_value = duration_text(defaults::HEARTBEAT_INTERVAL),
        value_parser = parse_duration
    )]
    pub heartbeat_interval: Duration,
    /// Unanswered pings after which a sidecar counts as down and its stream is closed.
    #[arg(long, env = "SMESH_HEARTBEAT_MISSES", default_value_t = defaults::HEARTBEAT_MISSES)]
    pub heartbeat_misses: u32,
    /// File health checks append their rows to.
    #[arg(
        long,
        env = "SMESH_HEALTH_REPORT",
        default_value = defaults::HEALTH_REPORT
    )]
    pub health_report: PathBuf,
    /// How long a health check waits for each peer.
    #[arg(
        long,
        env = "SMESH_PROBE_TIMEOUT",
        default_value = duration_text(defaults::PROBE_TIMEOUT),
        value_parser = parse_duration
    )]
    pub probe_timeout: Duration,
    /// On SIGTERM/Ctrl-C, how long to wait for Kafka to acknowledge what is in flight.
    #[arg(
        long,
        env = "SMESH_GRACE",
        default_value = duration_text(defaults::GRACE),
        value_parser = parse_duration
    )]
    pub grace: Duration,
    /// Mutual TLS for sidecars and the admin API (`--tls-cert`, `--tls-key`,
    /// `--tls-ca`); the certificate must name `smesh://master/<id>`.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// A file holding the admin API's bearer token (one line, at least 16
    /// bytes; keep it 0600). Calls that carry `authorization: Bearer <token>`
    /// are admitted like a console certificate; without this file only a
    /// console certificate (on TLS) or nothing at all (plaintext) is asked.
    #[arg(long, env = "SMESH_ADMIN_TOKEN_FILE", value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
    /// Serve sidecars (and the admin API) in plaintext on a non-loopback
    /// address, without certificates: anyone on the network can read and
    /// forge the traffic.
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

/// How a master delivers into Kafka (`--delivery`).
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Delivery {
    AtLeastOnce,
    ExactlyOnce,
}

/// `compression.type` values librdkafka knows. (Doc comments on the
/// variants would become lines of `--help`, which lists the names alone.)
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The value librdkafka's `compression.type` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

/// librdkafka settings smesh's delivery guarantees rest on, and why an
/// override is refused.
const GUARDED_KAFKA_SETTINGS: &[(&str, &str)] = &[
    (
        "enable.idempotence",
        "without it retries can reorder and duplicate a client's events",
    ),
    (
        "acks",
        "an event counts as delivered only once every in-sync replica has it",
    ),
    (
        "request.required.acks",
        "an event counts as delivered only once every in-sync replica has it",
    ),
    (
        "max.in.flight",
        "more requests in flight than idempotence allows can reorder events",
    ),
    (
        "max.in.flight.requests.per.connection",
        "more requests in flight than idempotence allows can reorder events",
    ),
    (
        "retries",
        "a delivery that is not retried is lost to the sidecar's resend",
    ),
    (
        "message.send.max.retries",
        "a delivery that is not retried is lost to the sidecar's resend",
    ),
    (
        "message.timeout.ms",
        "a record librdkafka gives up on while younger ones are delivered breaks a client's order; the master never lets it (use --delivery-timeout)",
    ),
    (
        "delivery.timeout.ms",
        "a record librdkafka gives up on while younger ones are delivered breaks a client's order; the master never lets it (use --delivery-timeout)",
    ),
    (
        "enable.gapless.guarantee",
        "without it, events produced after a refused produce batch are written before that batch's events go again",
    ),
];

/// Kafka topic names: 1-249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl MasterArgs {
    /// Checks everything that can be checked before binding a port.
    pub fn into_config(self) -> Result<Config, String> {
        smesh_core::cli::check_id(&self.id)?;
        let tls = self
            .tls
            .load(Some(&PeerIdentity::new(Tier::Master, self.id.clone())))?;
        let secure = tls.is_some();
        let admin_token = self
            .admin_token_file
            .as_deref()
            .map(AdminToken::read)
            .transpose()
            .map_err(|err| err.to_string())?;
        let mut kafka_config = match &self.kafka_config_file {
            Some(path) => read_kafka_config_file(path)?,
            None => Vec::new(),
        };
        kafka_config.extend(self.kafka_config);
        let config = Config::builder(self.id)
            .tls(tls)
            .admin_token(admin_token)
            .kafka_brokers(self.kafka_brokers)
            .topic(self.topic)
            .compression(self.compression)
            .kafka_config(kafka_config)
            .delivery_timeout(self.delivery_timeout)
            .delivery(self.delivery)
            .marks_topic(self.marks_topic)
            .transactional_id(self.transactional_id)
            .transaction_interval(self.transaction_interval)
            .transaction_max_events(self.transaction_max_events)
            .transaction_timeout(self.transaction_timeout)
            .kafka_unavailable_after(self.kafka_unavailable_after)
            .window(self.window)
            .window_bytes(self.window_bytes)
            .max_event_bytes(self.max_event_bytes)
            .heartbeat_interval(self.heartbeat_interval)
            .heartbeat_misses(self.heartbeat_misses)
            .health_report(self.health_report)
            .probe_timeout(self.probe_timeout)
            .build()?;
        smesh_core::cli::distinct_doors(&[
            ("--listen", Some(self.listen)),
            ("--admin-listen", Some(self.admin_listen)),
            ("--metrics-listen", self.metrics.metrics_listen),
            ("--health-listen", self.health.health_listen),
        ])?;
        // Last: every other mistake is named first, whatever the addresses.
        for (flag, address) in [
            ("--listen", self.listen),
            ("--admin-listen", self.admin_listen),
        ] {
            smesh_core::cli::check_plaintext(flag, address, secure, self.insecure_plaintext)?;
        }
        Ok(config)
    }
}

impl Config {
    /// A configuration with every flag's default except the master's id,
    /// which must differ from master to master. For masters run in process
    /// (the demo, tests); set more with the [`ConfigBuilder`]'s methods,
    /// named after the flags, then [`build`](ConfigBuilder::build).
    /// (`--listen`, `--admin-listen` and `--grace` are not here: the caller
    /// binds the listeners and decides how long to wait.)
    pub fn builder(id: impl Into<String>) -> ConfigBuilder {
        ConfigBuilder {
            id: id.into(),
            kafka_brokers: defaults::KAFKA_BROKERS.to_string(),
            topic: defaults::TOPIC.to_string(),
            compression: defaults::COMPRESSION,
            kafka_config: Vec::new(),
            delivery_timeout: defaults::DELIVERY_TIMEOUT,
            delivery: defaults::DELIVERY,
            marks_topic: None,
            transactional_id: None,
            transaction_interval: defaults::TRANSACTION_INTERVAL,
            transaction_max_events: defaults::TRANSACTION_MAX_EVENTS,
            transaction_timeout: defaults::TRANSACTION_TIMEOUT,
            kafka_unavailable_after: defaults::KAFKA_UNAVAILABLE_AFTER,
            window: defaults::WINDOW,
            window_bytes: defaults::WINDOW_BYTES,
            max_event_bytes: defaults::MAX_EVENT_BYTES,
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
            heartbeat_misses: defaults::HEARTBEAT_MISSES,
            health_report: PathBuf::from(defaults::HEALTH_REPORT),
            probe_timeout: defaults::PROBE_TIMEOUT,
            tls: None,
            admin_token: None,
        }
    }
}

/// A master configuration being put together in code. Each field holds the
/// value of the flag of the same name; [`build`](Self::build) checks them as
/// the flags are checked, so a typed configuration is no less valid than a
/// parsed one.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ConfigBuilder {
    id: String,
    kafka_brokers: String,
    topic: String,
    compression: Compression,
    kafka_config: Vec<(String, String)>,
    delivery_timeout: Duration,
    delivery: Delivery,
    marks_topic: Option<String>,
    transactional_id: Option<String>,
    transaction_interval: Duration,
    transaction_max_events: usize,
    transaction_timeout: Duration,
    kafka_unavailable_after: Duration,
    window: u32,
    window_bytes: u64,
    max_event_bytes: usize,
    heartbeat_interval: Duration,
    heartbeat_misses: u32,
    health_report: PathBuf,
    probe_timeout: Duration,
    tls: Option<NodeTls>,
    admin_token: Option<AdminToken>,
}

impl ConfigBuilder {
    /// `--admin-token-file`, read: the bearer token that admits a call to
    /// the admin API (`None`: certificates only, or none in plaintext).
    pub fn admin_token(mut self, token: Option<AdminToken>) -> Self {
        self.admin_token = token;
        self
    }

    /// `--tls-cert`, `--tls-key`, `--tls-ca`, loaded: mutual TLS for
    /// sidecars and the admin API (`None`: plaintext).
    pub fn tls(mut self, tls: Option<NodeTls>) -> Self {
        self.tls = tls;
        self
    }

    /// `--kafka-brokers`: comma-separated `host:port`.
    pub fn kafka_brokers(mut self, brokers: impl Into<String>) -> Self {
        self.kafka_brokers = brokers.into();
        self
    }

    /// `--topic`.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// `--compression`.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// `--kafka-config`, every one of them in order (replaces what was set).
    pub fn kafka_config(mut self, settings: Vec<(String, String)>) -> Self {
        self.kafka_config = settings;
        self
    }

    /// `--delivery-timeout`.
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// `--delivery`.
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// `--marks-topic` (`None`: `<topic>.smesh-marks`).
    pub fn marks_topic(mut self, topic: Option<String>) -> Self {
        self.marks_topic = topic;
        self
    }

    /// `--transactional-id` (`None`: `smesh-<topic>-<id>`).
    pub fn transactional_id(mut self, id: Option<String>) -> Self {
        self.transactional_id = id;
        self
    }

    /// `--transaction-interval`.
    pub fn transaction_interval(mut self, interval: Duration) -> Self {
        self.transaction_interval = interval;
        self
    }

    /// `--transaction-max-events`.
    pub fn transaction_max_events(mut self, events: usize) -> Self {
        self.transaction_max_events = events;
        self
    }

    /// `--transaction-timeout`.
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.transaction_timeout = timeout;
        self
    }

    /// `--kafka-unavailable-after`.
    pub fn kafka_unavailable_after(mut self, after: Duration) -> Self {
        self.kafka_unavailable_after = after;
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

    /// `--health-report`.
    pub fn health_report(mut self, path: impl Into<PathBuf>) -> Self {
        self.health_report = path.into();
        self
    }

    /// `--probe-timeout`.
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// Checks every value as the flags are checked (the messages name the
    /// flags) and makes the configuration.
    pub fn build(self) -> Result<Config, String> {
        smesh_core::cli::check_id(&self.id)?;
        if !valid_topic(&self.topic) {
            return Err(format!(
                "invalid --topic {:?}: Kafka topics are 1-249 characters of a-z, A-Z, 0-9, '.', '_', '-'",
                self.topic
            ));
        }
        let brokers: Vec<&str> = self.kafka_brokers.split(',').map(str::trim).collect();
        if brokers.iter().any(|b| {
            b.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        }) {
            return Err(format!(
                "invalid --kafka-brokers {:?}: expected host:port[,host:port...]",
                self.kafka_brokers
            ));
        }
        if self.window == 0 {
            return Err("--window must be at least 1".to_string());
        }
        if self.max_event_bytes < 1024 {
            return Err("--max-event-bytes must be at least 1024".to_string());
        }
        check_duration("--delivery-timeout", self.delivery_timeout)?;
        check_duration("--kafka-unavailable-after", self.kafka_unavailable_after)?;
        check_duration("--probe-timeout", self.probe_timeout)?;
        if let Some((key, value)) = self
            .kafka_config
            .iter()
            .find(|(key, _)| GUARDED_KAFKA_SETTINGS.iter().any(|(k, _)| k == key))
        {
            let why = GUARDED_KAFKA_SETTINGS
                .iter()
                .find(|(k, _)| k == key)
                .map_or("", |(_, why)| *why);
            return Err(format!(
                "--kafka-config {key}={value}: smesh sets {key} itself; {why}"
            ));
        }
        check_duration("--transaction-interval", self.transaction_interval)?;
        check_duration("--transaction-timeout", self.transaction_timeout)?;
        if self.transaction_max_events == 0 {
            return Err("--transaction-max-events must be at least 1".to_string());
        }
        if self.transaction_timeout < Duration::from_secs(1) {
            return Err("--transaction-timeout must be at least 1s".to_string());
        }
        let marks_topic = self
            .marks_topic
            .unwrap_or_else(|| format!("{}.smesh-marks", self.topic));
        if !valid_topic(&marks_topic) || marks_topic == self.topic {
            return Err(format!(
                "invalid --marks-topic {marks_topic:?}: a Kafka topic name other than --topic"
            ));
        }
        let transactional_id = self
            .transactional_id
            .unwrap_or_else(|| format!("smesh-{}-{}", self.topic, self.id));
        if transactional_id.is_empty() || transactional_id.chars().any(char::is_control) {
            return Err("--transactional-id must be non-empty text".to_string());
        }
        let exactly_once =
            (self.delivery == Delivery::ExactlyOnce).then_some(ExactlyOnceSettings {
                marks_topic,
                transactional_id,
                interval: self.transaction_interval,
                max_events: self.transaction_max_events,
                timeout: self.transaction_timeout,
            });
        let sessions = SessionSettings::new(
            self.window,
            self.max_event_bytes,
            self.heartbeat_interval,
            self.heartbeat_misses,
        )?
        .with_window_bytes(self.window_bytes)?;
        if let Some(tls) = &self.tls {
            tls.check_names(&PeerIdentity::new(Tier::Master, self.id.clone()))?;
        }
        Ok(Config {
            tls: self.tls,
            admin_token: self.admin_token,
            kafka: KafkaConfig {
                brokers: brokers.join(","),
                topic: self.topic,
                compression: self.compression.as_str().to_string(),
                delivery_timeout: self.delivery_timeout,
                unavailable_after: self.kafka_unavailable_after,
                overrides: self.kafka_config,
                client_id: format!("smesh-master-{}", self.id),
            },
            id: self.id,
            sessions,
            report_path: self.health_report,
            probe_timeout: self.probe_timeout,
            exactly_once,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    /// Parses flags as `smesh-master` does, but blind to `SMESH_*` variables,
    /// so that only the flags' own defaults fill in the rest.
    /// (With `--insecure-plaintext`: the default `--listen` is every
    /// interface, refused in plaintext without it; see
    /// `plaintext_beyond_loopback_needs_the_flag`.)
    fn parse_without_env(flags: &[&str]) -> Result<Config, String> {
        let argv = ["smesh-master", "--insecure-plaintext"]
            .into_iter()
            .chain(flags.iter().copied());
        let matches = MasterArgs::command()
            .mut_args(|arg| arg.env(None::<&'static str>))
            .try_get_matches_from(argv)
            .map_err(|e| e.to_string())?;
        MasterArgs::from_arg_matches(&matches)
            .map_err(|e| e.to_string())?
            .into_config()
    }

    // Nothing in `Config` compares; its `Debug` shows every field, so the
    // configurations are compared through it.

    #[test]
    fn the_builder_starts_from_the_flags_defaults() {
        let parsed = parse_without_env(&[]).expect("defaults parse");
        let built = Config::builder(defaults::ID)
            .build()
            .expect("defaults build");
        assert_eq!(format!("{built:?}"), format!("{parsed:?}"));
    }

    #[test]
    fn every_setter_stands_for_its_flag() {
        let parsed = parse_without_env(&[
            "--id",
            "central",
            "--kafka-brokers",
            "k1:9092, k2:9093",
            "--topic",
            "readings",
            "--compression",
            "zstd",
            "--kafka-config",
            "linger.ms=20",
            "--delivery-timeout",
            "30s",
            "--kafka-unavailable-after",
            "8s",
            "--window",
            "100",
            "--max-event-bytes",
            "4096",
            "--heartbeat-interval",
            "500ms",
            "--heartbeat-misses",
            "4",
            "--health-report",
            "/nonexistent/report.csv",
            "--probe-timeout",
            "3s",
        ])
        .expect("flags parse");
        let built = Config::builder("central")
            .kafka_brokers("k1:9092, k2:9093")
            .topic("readings")
            .compression(Compression::Zstd)
            .kafka_config(vec![("linger.ms".to_string(), "20".to_string())])
            .delivery_timeout(Duration::from_secs(30))
            .kafka_unavailable_after(Duration::from_secs(8))
            .window(100)
            .max_event_bytes(4096)
            .heartbeat_interval(Duration::from_millis(500))
            .heartbeat_misses(4)
            .health_report("/nonexistent/report.csv")
            .probe_timeout(Duration::from_secs(3))
            .build()
            .expect("valid");
        assert_eq!(format!("{built:?}"), format!("{parsed:?}"));
    }

    #[test]
    fn the_builder_checks_what_the_flags_check() {
        let err = Config::builder("master-1")
            .topic("bad topic")
            .build()
            .expect_err("bad topic");
        assert!(err.contains("invalid --topic"), "{err}");
        let err = Config::builder("master-1")
            .kafka_brokers("localhost")
            .build()
            .expect_err("bad brokers");
        assert!(err.contains("invalid --kafka-brokers"), "{err}");
    }

    #[test]
    fn plaintext_beyond_loopback_needs_the_flag() {
        let parse = |flags: &[&str]| {
            MasterArgs::try_parse_from(std::iter::once("smesh-master").chain(flags.iter().copied()))
                .map_err(|e| e.to_string())
                .and_then(MasterArgs::into_config)
        };
        let err = parse(&[]).expect_err("0.0.0.0 in plaintext");
        assert!(err.contains("--listen 0.0.0.0:9010"), "{err}");
        let err = parse(&[
            "--listen",
            "127.0.0.1:9010",
            "--admin-listen",
            "0.0.0.0:9011",
        ])
        .expect_err("admin on 0.0.0.0 in plaintext");
        assert!(err.contains("--admin-listen 0.0.0.0:9011"), "{err}");
        assert!(parse(&["--listen", "127.0.0.1:9010"]).is_ok());
        assert!(parse(&["--insecure-plaintext"]).is_ok());
    }

    fn args(extra: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["smesh-master", "--insecure-plaintext"];
        argv.extend_from_slice(extra);
        MasterArgs::try_parse_from(argv)
            .map_err(|e| e.to_string())
            .and_then(MasterArgs::into_config)
    }

    #[test]
    fn defaults_are_usable() {
        let config = args(&[]).expect("defaults");
        assert_eq!(config.kafka.topic, "smesh.events");
        assert_eq!(config.kafka.compression, "lz4");
        assert_eq!(config.kafka.brokers, "127.0.0.1:9092");
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        for (flags, needle) in [
            (&["--topic", "bad topic"][..], "invalid --topic"),
            (
                &["--kafka-brokers", "localhost"][..],
                "invalid --kafka-brokers",
            ),
            (&["--window", "0"][..], "--window"),
            (&["--listen", "127.0.0.1:9011"][..], "both"),
            (&["--kafka-config", "novalue"][..], "KEY=VALUE"),
            (&["--compression", "brotli"][..], "brotli"),
        ] {
            let err = args(flags).expect_err("refused");
            assert!(err.contains(needle), "{flags:?}: {err}");
        }
    }

    fn config_file(mode: u32, text: &str) -> tempfile::NamedTempFile {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write");
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
        file
    }

    #[test]
    fn a_kafka_config_file_comes_before_the_flags() {
        let file = config_file(
            0o600,
            "# SASL for the cluster\nsasl.username = smesh\n\nsasl.password=s3cret=really\nlinger.ms=10\n",
        );
        let path = file.path().display().to_string();
        let config = args(&[
            "--kafka-config-file",
            &path,
            "--kafka-config",
            "linger.ms=20",
        ])
        .expect("valid");
        assert_eq!(
            config.kafka.overrides,
            vec![
                ("sasl.username".to_string(), "smesh".to_string()),
                ("sasl.password".to_string(), "s3cret=really".to_string()),
                ("linger.ms".to_string(), "10".to_string()),
                ("linger.ms".to_string(), "20".to_string()),
            ]
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("(\"sasl.password\", \"<hidden>\")"),
            "{shown}"
        );
    }

    #[test]
    fn a_kafka_config_file_others_may_read_is_refused_without_showing_it() {
        let file = config_file(0o640, "sasl.password=s3cret\n");
        let path = file.path().display().to_string();
        let err = args(&["--kafka-config-file", &path]).expect_err("group-readable");
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");

        let file = config_file(0o600, "sasl.password=s3cret\nnot a setting s3cret\n");
        let path = file.path().display().to_string();
        let err = args(&["--kafka-config-file", &path]).expect_err("bad line");
        assert!(err.contains("line 2: expected KEY=VALUE"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");

        let file = config_file(0o600, "acks=1\n");
        let path = file.path().display().to_string();
        let err = args(&["--kafka-config-file", &path]).expect_err("guarded");
        assert!(err.contains("smesh sets acks itself"), "{err}");

        let err = args(&["--kafka-config-file", "/nonexistent/kafka.conf"]).expect_err("missing");
        assert!(err.contains("cannot open it"), "{err}");
    }

    #[test]
    fn a_token_file_must_hold_a_usable_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, content: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).expect("write");
            path.display().to_string()
        };
        let good = file("good", "0123456789abcdef0123\n");
        let config = args(&["--admin-token-file", &good]).expect("valid");
        assert!(config.admin_token.is_some());
        assert!(
            !format!("{config:?}").contains("0123456789abcdef"),
            "never shown"
        );
        for (path, needle) in [
            (file("empty", ""), "empty"),
            (file("short", "abc\n"), "at least 16"),
            (
                dir.path().join("missing").display().to_string(),
                "cannot read",
            ),
        ] {
            let err = args(&["--admin-token-file", &path]).expect_err("refused");
            assert!(
                err.starts_with("--admin-token-file") && err.contains(needle),
                "{err}"
            );
        }
    }

    #[test]
    fn kafka_overrides_are_kept_in_order() {
        let config = args(&[
            "--kafka-config",
            "linger.ms=20",
            "--kafka-config",
            "batch.size=65536",
        ])
        .expect("valid");
        assert_eq!(
            config.kafka.overrides,
            vec![
                ("linger.ms".to_string(), "20".to_string()),
                ("batch.size".to_string(), "65536".to_string())
            ]
        );
    }
}
