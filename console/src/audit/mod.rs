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

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use smesh_core::cli::{EX_USAGE, parse_duration, parse_key_value, read_kafka_config_file};

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
