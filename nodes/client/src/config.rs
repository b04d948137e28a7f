//! `smesh-client` flags. Every flag also reads an `SMESH_*` variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use smesh_core::cli::{LogArgs, parse_duration};
use smesh_core::link::LinkTimeouts;
use smesh_core::peers::{self, Peer};

use crate::source::SourceSpec;

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

/// What happens when the spool reaches `--spool-max-bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SpoolFull {
    /// Sources wait until there is room again (nothing is lost).
    Block,
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
    #[arg(long, env = "SMESH_ID", default_value = "client-1")]
    pub id: String,
    /// Sidecars this client may use, in order of preference
    /// (`<id>;host:port;` per line; no port means 9000).
    #[arg(long, env = "SMESH_SIDECARS", default_value = "files/clientCon.csv")]
    pub sidecars: PathBuf,
    /// A data source, `KIND[:key=value,…]` (repeatable; `;`-separated in the
    /// variable). Kinds: sensor, http, file, stdin. See the README.
    #[arg(
        long = "source",
        env = "SMESH_SOURCES",
        value_delimiter = ';',
        default_value = "sensor"
    )]
    pub sources: Vec<SourceSpec>,
    /// When events are written to the spool.
    #[arg(long = "spool", env = "SMESH_SPOOL", value_enum, default_value_t = SpoolMode::Always)]
    pub spool_mode: SpoolMode,
    /// The spool file. Its state file (`.state`) and rejected file
    /// (`.rejected.csv`) live beside it.
    #[arg(long, env = "SMESH_SPOOL_FILE", default_value = "files/safeData.csv")]
    pub spool_file: PathBuf,
    /// Most unacknowledged data the spool may hold (e.g. 512MiB, 2GB).
    #[arg(long, env = "SMESH_SPOOL_MAX_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub spool_max_bytes: u64,
    /// What to do when the spool is full.
    #[arg(long, env = "SMESH_ON_SPOOL_FULL", value_enum, default_value_t = SpoolFull::Block)]
    pub on_spool_full: SpoolFull,
    /// Most events unacknowledged at once (the sidecar may allow fewer).
    #[arg(long, env = "SMESH_WINDOW", default_value_t = smesh_core::DEFAULT_WINDOW)]
    pub window: u32,
    /// Most events per batch.
    #[arg(long, env = "SMESH_BATCH_MAX", default_value_t = 512)]
    pub batch_max: usize,
    /// Most data bytes per batch.
    #[arg(long, env = "SMESH_BATCH_MAX_BYTES", default_value = "1MiB", value_parser = parse_bytes)]
    pub batch_max_bytes: u64,
    /// Largest event, in bytes; larger ones go to the rejected file.
    #[arg(long, env = "SMESH_MAX_EVENT_BYTES", default_value_t = smesh_core::DEFAULT_MAX_EVENT_BYTES)]
    pub max_event_bytes: usize,
    /// Silence from the sidecar after which it is presumed dead.
    #[arg(long, env = "SMESH_HEARTBEAT_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,
    /// Time allowed to connect to a sidecar.
    #[arg(long, env = "SMESH_CONNECT_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// How often the backlog and counters are reported to the sidecar.
    #[arg(long, env = "SMESH_REPORT_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub report_interval: Duration,
    /// On SIGTERM/Ctrl-C, how long to wait for in-flight events to be
    /// acknowledged before the rest is left in the spool.
    #[arg(long, env = "SMESH_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Write counters and ack-latency percentiles (JSON) here when stopping.
    #[arg(long, env = "SMESH_STATS_FILE")]
    pub stats_file: Option<PathBuf>,
    #[command(flatten)]
    pub log: LogArgs,
}

/// A validated client configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub id: String,
    pub sidecars: Vec<Peer>,
    pub sources: Vec<SourceSpec>,
    pub spool_mode: SpoolMode,
    pub spool_file: PathBuf,
    pub spool_max_bytes: u64,
    pub on_spool_full: SpoolFull,
    pub window: u32,
    pub batch_max: usize,
    pub batch_max_bytes: usize,
    pub max_event_bytes: usize,
    pub timeouts: LinkTimeouts,
    pub heartbeat_timeout: Duration,
    pub report_interval: Duration,
    pub drain_timeout: Duration,
    pub stats_file: Option<PathBuf>,
}

/// Parses `1GiB`, `512MiB`, `100MB`, `4096`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?} (examples: 4096, 100MB, 1GiB)"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (B, KB, KiB, MB, MiB, GB, GiB)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

impl ClientArgs {
    /// Parses flags as `smesh-client` would, for in-process nodes (demo, tests).
    pub fn config_from_flags<I, S>(flags: I) -> Result<Config, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        smesh_core::cli::config_from_flags("smesh-client", flags, Self::into_config)
    }

    /// Reads the sidecar list and checks every value before anything starts.
    pub fn into_config(self) -> Result<Config, String> {
        smesh_core::cli::check_id(&self.id)?;
        let sidecars =
            peers::load(&self.sidecars, smesh_core::SIDECAR_PORT).map_err(|e| e.to_string())?;
        if self.window == 0 || self.batch_max == 0 {
            return Err("--window and --batch-max must be at least 1".to_string());
        }
        if self.max_event_bytes < 256 {
            return Err("--max-event-bytes must be at least 256".to_string());
        }
        let mut keys = std::collections::HashSet::new();
        for source in &self.sources {
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
        Ok(Config {
            id: self.id,
            sidecars,
            sources: self.sources,
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

#[cfg(test)]
mod tests {
    use super::*;

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
