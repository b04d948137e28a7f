//! `smesh-console audit`: reads a topic the masters wrote, and its marks,
//! with a Kafka consumer, and reports per event stream (client id,
//! incarnation) the events present as sequence ranges, gaps, duplicates,
//! order violations, the mark, and the newest event's age. Exit codes as
//! `check`: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (see [`report`] for
//! what is which); 64 for bad flags.
//!
//! Operators run it after an incident; the end-to-end tests use it as a
//! judge (`tests/tests/audit.rs`).
//!
//! # Layout
//! - [`ledger`]: the bookkeeping, pure: ranges, links, counters. Memory is
//!   O(identities × (ranges + unresolved links)), not O(events).
//! - [`marks`]: the marks topic of exactly-once mode.
//! - [`reader`]: the consumer, reading each partition to the end it had at
//!   the start; records into the ledger; the progress bar.
//! - [`report`]: the verdict, the table, the JSON document.
//!
//! The marks are read before the data: a mark is then never newer than the
//! events it names (the master commits both in one transaction), so an
//! absent marked event is a lost one, not one written after the read.

pub mod ledger;
pub mod marks;
pub mod reader;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use smesh_core::cli::{EX_USAGE, parse_duration};

use self::ledger::Ledger;
use self::marks::Marks;
use self::reader::{Isolation, KafkaAccess, Progress, ReadError};
use self::report::{Findings, Mode, Report};

/// How `audit` and `trace` reach Kafka and which topic they read.
#[derive(Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated host:port (as the master's).
    #[arg(
        long = "kafka-brokers",
        visible_alias = "brokers",
        env = "SMESH_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// The topic the masters write (their `--topic`).
    #[arg(long, env = "SMESH_TOPIC", default_value = "smesh.events")]
    pub topic: String,
    /// A librdkafka consumer setting KEY=VALUE (repeatable; `;`-separated in
    /// the variable), e.g. `security.protocol=SSL`. librdkafka ignores the
    /// producer settings the master's variable may hold.
    #[arg(short = 'X', long = "kafka-config", env = "SMESH_KAFKA_CONFIG", value_delimiter = ';', value_parser = parse_key_value)]
    pub kafka_config: Vec<(String, String)>,
    /// A file of librdkafka settings, KEY=VALUE a line (`#` comments), read
    /// before `--kafka-config`; refused unless only its owner may read it.
    #[arg(long, env = "SMESH_KAFKA_CONFIG_FILE")]
    pub kafka_config_file: Option<PathBuf>,
    /// How long Kafka may take to answer the first questions (which
    /// partitions, where they end).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

impl KafkaArgs {
    /// The brokers and the settings (the file's, then the flags').
    pub fn access(&self) -> Result<KafkaAccess, String> {
        let mut settings = match &self.kafka_config_file {
            Some(path) => read_kafka_config_file(path)?,
            None => Vec::new(),
        };
        settings.extend(self.kafka_config.iter().cloned());
        Ok(KafkaAccess {
            brokers: self.brokers.clone(),
            settings,
        })
    }
}

/// Flags of `smesh-console audit`.
#[derive(Args, Debug, Clone)]
pub struct AuditArgs {
    /// Kafka, and the topic to audit.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The marks topic of exactly-once mode. Default: `<topic>.smesh-marks`.
    #[arg(long, env = "SMESH_MARKS_TOPIC", value_name = "TOPIC")]
    pub marks_topic: Option<String>,
    /// How the masters delivered: duplicates and order violations are
    /// CRITICAL in exactly-once mode, counted (duplicates) or a WARNING
    /// (order) in at-least-once mode. `auto`: exactly-once if the marks
    /// topic exists.
    #[arg(long, env = "SMESH_DELIVERY", value_enum, default_value_t = DeliveryArg::Auto)]
    pub delivery: DeliveryArg,
    /// What the consumer sees of transactions (the marks are always read
    /// committed).
    #[arg(long, value_enum, default_value_t = Isolation::ReadCommitted)]
    pub isolation: Isolation,
    /// How long the whole read may take; past it the audit is UNKNOWN.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How many sequence ranges and gaps to list per identity (all are counted).
    #[arg(long, default_value_t = 10)]
    pub max_ranges: usize,
    /// Print a JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (it is drawn on stderr, and only on a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// `--delivery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeliveryArg {
    /// Exactly-once if the marks topic exists, else at-least-once.
    Auto,
    /// Judge as exactly-once.
    ExactlyOnce,
    /// Judge as at-least-once.
    AtLeastOnce,
}

/// Why no report could be made.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A flag or the settings file is wrong.
    #[error("{0}")]
    Usage(String),
    /// Kafka could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl AuditError {
    /// 64 for a usage error, 3 (UNKNOWN) when Kafka could not be read.
    pub fn exit_code(&self) -> u8 {
        match self {
            AuditError::Usage(_) | AuditError::Read(ReadError::Settings(_)) => EX_USAGE as u8,
            AuditError::Read(_) => crate::check::Verdict::Unknown.exit_code(),
        }
    }
}

/// Runs the audit (blocking: librdkafka's consumer calls block).
pub fn run(args: &AuditArgs) -> Result<Report, AuditError> {
    let access = args.kafka.access().map_err(AuditError::Usage)?;
    let topic = &args.kafka.topic;
    let connect_timeout = args.kafka.connect_timeout;
    let data = access.consumer(args.isolation)?;
    reader::quiet_header_panics();
    let deadline = Instant::now() + args.timeout;
    let mut progress = Progress::new(!args.no_progress);
    // Fail on a missing data topic before anything else is read.
    if reader::spans(&data, topic, connect_timeout)?.is_none() {
        return Err(ReadError::UnknownTopic(topic.clone()).into());
    }
    let marks_topic = args
        .marks_topic
        .clone()
        .unwrap_or_else(|| format!("{topic}.smesh-marks"));
    let mut marks_complete = true;
    let marks = if args.delivery == DeliveryArg::AtLeastOnce {
        None
    } else {
        let consumer = access.consumer(Isolation::ReadCommitted)?;
        match reader::spans(&consumer, &marks_topic, connect_timeout)? {
            None => None,
            Some(spans) => {
                let mut marks = Marks::default();
                let read = reader::read(
                    &consumer,
                    &marks_topic,
                    spans,
                    deadline,
                    &mut progress,
                    |m, _| {
                        marks.take(rdkafka::Message::key(m), rdkafka::Message::payload(m));
                    },
                )?;
                marks_complete = read.complete;
                Some(marks)
            }
        }
    };
    let mode = match (args.delivery, &marks) {
        (DeliveryArg::ExactlyOnce, _) | (DeliveryArg::Auto, Some(_)) => Mode::ExactlyOnce,
        (DeliveryArg::AtLeastOnce, _) | (DeliveryArg::Auto, None) => Mode::AtLeastOnce,
    };
    let Some(spans) = reader::spans(&data, topic, connect_timeout)? else {
        return Err(ReadError::UnknownTopic(topic.clone()).into());
    };
    let mut ledger = Ledger::default();
    let read = reader::read(
        &data,
        topic,
        spans,
        deadline,
        &mut progress,
        |message, span| reader::take_event(&mut ledger, message, span),
    )?;
    progress.finish();
    let now_unix_millis = smesh_core::time::now_unix_nanos() / 1_000_000;
    Ok(Findings {
        topic,
        marks: marks.as_ref().map(|m| (marks_topic.as_str(), m)),
        mode,
        isolation: args.isolation.name(),
        partitions: &read.partitions,
        complete: read.complete && marks_complete,
        ledger: &ledger,
        max_ranges: args.max_ranges,
        now_unix_millis,
    }
    .report())
}

/// `--kafka-config KEY=VALUE`.
fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// Reads `--kafka-config-file` as the master does (the same format and
/// checks as `smesh_master::config::read_kafka_config_file`; the console
/// does not depend on the master): `KEY=VALUE` lines, blank lines and `#`
/// comments, refused if its group or others may use it; no error repeats a
/// line's text (it may hold a secret).
pub fn read_kafka_config_file(path: &Path) -> Result<Vec<(String, String)>, String> {
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| format!("--kafka-config-file {shown}: cannot open it: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file
            .metadata()
            .map_err(|e| format!("--kafka-config-file {shown}: cannot read its permissions: {e}"))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "--kafka-config-file {shown}: its group or others may use it (mode {:03o}); it can hold secrets, so make it the owner's alone: chmod 600 {shown}",
                mode & 0o777
            ));
        }
    }
    let text = std::io::read_to_string(file)
        .map_err(|e| format!("--kafka-config-file {shown}: cannot read it: {e}"))?;
    let mut settings = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                settings.push((key.trim().to_string(), value.trim().to_string()));
            }
            _ => {
                return Err(format!(
                    "--kafka-config-file {shown} line {}: expected KEY=VALUE",
                    number + 1
                ));
            }
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn settings_file(mode: u32, text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write");
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
        file
    }

    #[test]
    fn a_settings_file_is_read_in_order_and_guarded() {
        let file = settings_file(
            0o600,
            "# TLS\nsecurity.protocol = SSL\n\nsasl.password=a=b\n",
        );
        assert_eq!(
            read_kafka_config_file(file.path()).expect("read"),
            [
                ("security.protocol".to_string(), "SSL".to_string()),
                ("sasl.password".to_string(), "a=b".to_string()),
            ]
        );
        let open = settings_file(0o644, "sasl.password=s3cret\n");
        let err = read_kafka_config_file(open.path()).expect_err("readable by others");
        assert!(
            err.contains("chmod 600") && !err.contains("s3cret"),
            "{err}"
        );
        let bad = settings_file(0o600, "not a setting s3cret\n");
        let err = read_kafka_config_file(bad.path()).expect_err("bad line");
        assert!(err.contains("line 1") && !err.contains("s3cret"), "{err}");
    }

    #[test]
    fn key_values_need_a_key() {
        assert_eq!(
            parse_key_value("a.b = c"),
            Ok(("a.b".to_string(), "c".to_string()))
        );
        assert!(parse_key_value("=c").is_err());
        assert!(parse_key_value("novalue").is_err());
    }
}
