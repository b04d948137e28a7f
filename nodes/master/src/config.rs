//! `smesh-master` flags. Every flag also reads an `SMESH_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use smesh_core::cli::{LogArgs, parse_duration};

use crate::Config;
use crate::kafka::KafkaConfig;
use smesh_core::session::SessionSettings;

/// Receives event streams from sidecars and publishes them to Apache Kafka.
#[derive(Parser, Debug, Clone)]
#[command(name = "smesh-master", version, about, max_term_width = 100)]
pub struct MasterArgs {
    /// This master's id, shown to sidecars and the console.
    #[arg(long, env = "SMESH_ID", default_value = "master-1")]
    pub id: String,
    /// Address the data plane listens on (sidecars connect here).
    #[arg(long, env = "SMESH_LISTEN", default_value = "0.0.0.0:9010")]
    pub listen: SocketAddr,
    /// Address of the admin API (the console connects here). Keep it on loopback
    /// unless the network in front of it is trusted.
    #[arg(long, env = "SMESH_ADMIN_LISTEN", default_value = "127.0.0.1:9011")]
    pub admin_listen: SocketAddr,
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "SMESH_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Topic events are published to.
    #[arg(long, env = "SMESH_TOPIC", default_value = "smesh.events")]
    pub topic: String,
    /// Compression of produced batches.
    #[arg(long, env = "SMESH_COMPRESSION", value_enum, default_value_t = Compression::Lz4)]
    pub compression: Compression,
    /// Extra librdkafka producer setting KEY=VALUE (repeatable; `;`-separated in
    /// the variable), e.g. `security.protocol=SSL`. Applied after smesh's own.
    #[arg(long = "kafka-config", env = "SMESH_KAFKA_CONFIG", value_delimiter = ';', value_parser = parse_key_value)]
    pub kafka_config: Vec<(String, String)>,
    /// How long Kafka may take to acknowledge an event before the sidecar is
    /// told to resend it (librdkafka `message.timeout.ms`).
    #[arg(long, env = "SMESH_DELIVERY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub delivery_timeout: Duration,
    /// Report NOT_SERVING once Kafka has been unreachable this long.
    #[arg(long, env = "SMESH_KAFKA_UNAVAILABLE_AFTER", default_value = "5s", value_parser = parse_duration)]
    pub kafka_unavailable_after: Duration,
    /// Events a sidecar may have unacknowledged on its stream.
    #[arg(long, env = "SMESH_WINDOW", default_value_t = smesh_core::DEFAULT_WINDOW * 4)]
    pub window: u32,
    /// Largest event accepted, in bytes (attributes and data).
    #[arg(long, env = "SMESH_MAX_EVENT_BYTES", default_value_t = smesh_core::DEFAULT_MAX_EVENT_BYTES)]
    pub max_event_bytes: usize,
    /// How often sidecars are pinged.
    #[arg(long, env = "SMESH_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// Unanswered pings after which a sidecar counts as down and its stream is closed.
    #[arg(long, env = "SMESH_HEARTBEAT_MISSES", default_value_t = 3)]
    pub heartbeat_misses: u32,
    /// File health checks append their rows to.
    #[arg(
        long,
        env = "SMESH_HEALTH_REPORT",
        default_value = "files/healthCheckReport.csv"
    )]
    pub health_report: PathBuf,
    /// How long a health check waits for each peer.
    #[arg(long, env = "SMESH_PROBE_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub probe_timeout: Duration,
    /// On SIGTERM/Ctrl-C, how long to wait for Kafka to acknowledge what is in flight.
    #[arg(long, env = "SMESH_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub grace: Duration,
    #[command(flatten)]
    pub log: LogArgs,
}

/// `compression.type` values librdkafka knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
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

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

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
    /// Parses flags as `smesh-master` would, for in-process nodes (demo, tests).
    pub fn config_from_flags<I, S>(flags: I) -> Result<Config, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        smesh_core::cli::config_from_flags("smesh-master", flags, Self::into_config)
    }

    /// Checks everything that can be checked before binding a port.
    pub fn into_config(self) -> Result<Config, String> {
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
        if self.heartbeat_interval < Duration::from_millis(10) || self.heartbeat_misses == 0 {
            return Err(
                "--heartbeat-interval must be at least 10ms and --heartbeat-misses at least 1"
                    .to_string(),
            );
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return Err(format!(
                "--listen and --admin-listen are both {}",
                self.listen
            ));
        }
        Ok(Config {
            id: self.id.clone(),
            kafka: KafkaConfig {
                brokers: brokers.join(","),
                topic: self.topic,
                compression: self.compression.as_str().to_string(),
                delivery_timeout: self.delivery_timeout,
                unavailable_after: self.kafka_unavailable_after,
                overrides: self.kafka_config,
                client_id: format!("smesh-master-{}", self.id),
            },
            sessions: SessionSettings {
                window: self.window,
                max_event_bytes: self.max_event_bytes,
                heartbeat_interval: self.heartbeat_interval,
                heartbeat_misses: self.heartbeat_misses,
                hello_timeout: Duration::from_secs(10),
            },
            report_path: self.health_report,
            probe_timeout: self.probe_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["smesh-master"];
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
