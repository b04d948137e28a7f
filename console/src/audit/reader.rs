//! Reading a topic with a Kafka consumer, from the start of each partition
//! to the end it had when the read began, and turning records into what
//! the ledger takes.
//!
//! The end of a partition is its high watermark captured at the start (with
//! `read_committed`, librdkafka asks for the last stable offset). A
//! partition is done when a record at or past that end was read, when the
//! consumer's position reaches it (the last offsets may be transaction
//! markers or aborted records, never handed out), or when librdkafka
//! reports the partition's end (`enable.partition.eof`: an open
//! transaction holds the stable end below the watermark). Records past the
//! end are not counted: the audit judges the topic as it was at the start.
//!
//! Errors: a missing topic, refused authorization or authentication end
//! the read at once ([`ReadError`]); anything else (a broker restarting,
//! a connection reset) is retried until the deadline.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use smesh_core::event::parse_event_id;

use super::ledger::{Ledger, Observation};

/// Why a topic could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The topic does not exist (or this principal may not know it does).
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    /// The librdkafka settings are not valid (a usage error).
    #[error("invalid Kafka settings: {0}")]
    Settings(String),
    /// Kafka refused for good: authorization, authentication.
    #[error("Kafka refused to let the audit read {topic}: {reason}")]
    Refused {
        /// The topic.
        topic: String,
        /// What Kafka said.
        reason: String,
    },
    /// Kafka did not answer in time.
    #[error("cannot read the metadata of {topic} from Kafka within {within:?}: {reason}")]
    Unreachable {
        /// The topic.
        topic: String,
        /// How long the audit tried.
        within: Duration,
        /// The last error.
        reason: String,
    },
}

/// `isolation.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    /// Only committed transactions (and records written without one).
    ReadCommitted,
    /// Everything written, aborted transactions included.
    ReadUncommitted,
}

impl Isolation {
    /// The name used in flags and reports.
    pub fn name(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read-committed",
            Isolation::ReadUncommitted => "read-uncommitted",
        }
    }

    fn librdkafka(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

/// How to reach Kafka: the brokers and the operator's librdkafka settings
/// (TLS, SASL, …).
#[derive(Debug, Clone)]
pub struct KafkaAccess {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// librdkafka settings, applied after the audit's own defaults.
    pub settings: Vec<(String, String)>,
}

/// How much librdkafka may prefetch (KiB): the reader's memory bound.
const PREFETCH_KIB: &str = "16384";

impl KafkaAccess {
    /// A consumer that reads by assignment (it joins no group and commits
    /// nothing).
    pub fn consumer(&self, isolation: Isolation) -> Result<BaseConsumer, ReadError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "smesh-console-audit")
            .set("group.id", format!("smesh-audit-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("queued.max.messages.kbytes", PREFETCH_KIB);
        for (key, value) in &self.settings {
            config.set(key, value);
        }
        // What the reading relies on: not the operator's to change.
        config
            .set("enable.partition.eof", "true")
            .set("isolation.level", isolation.librdkafka());
        config
            .create()
            .map_err(|err| ReadError::Settings(err.to_string()))
    }
}

/// A partition and the span of offsets the audit reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSpan {
    /// Its number.
    pub partition: i32,
    /// Its first offset at the start (above 0: older records were deleted).
    pub low: i64,
    /// Its end at the start: the audit reads offsets below it.
    pub high: i64,
}

/// How a read ended.
#[derive(Debug)]
pub struct TopicRead {
    /// The partitions and their spans.
    pub partitions: Vec<PartitionSpan>,
    /// Whether every partition was read to its end.
    pub complete: bool,
}

/// Errors that no retry mends.
fn refusal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication
    )
}

fn unknown_topic(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
    )
}

/// The partitions of `topic` and their spans, asking again until `within`
/// passed while Kafka does not answer. `Ok(None)`: no such topic.
pub fn spans(
    consumer: &BaseConsumer,
    topic: &str,
    within: Duration,
) -> Result<Option<Vec<PartitionSpan>>, ReadError> {
    let deadline = Instant::now() + within;
    let mut last = String::from("no answer");
    loop {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(10));
        if wait.is_zero() {
            return Err(ReadError::Unreachable {
                topic: topic.to_string(),
                within,
                reason: last,
            });
        }
        match try_spans(consumer, topic, wait) {
            Ok(found) => return Ok(found),
            Err(Attempt::Final(err)) => return Err(err),
            Err(Attempt::Again(reason)) => last = reason,
        }
        std::thread::sleep(
            Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now())),
        );
    }
}

enum Attempt {
    Final(ReadError),
    Again(String),
}

fn classify(topic: &str, err: KafkaError) -> Attempt {
    match err.rdkafka_error_code() {
        Some(code) if refusal(code) => Attempt::Final(ReadError::Refused {
            topic: topic.to_string(),
            reason: err.to_string(),
        }),
        _ => Attempt::Again(err.to_string()),
    }
}

fn try_spans(
    consumer: &BaseConsumer,
    topic: &str,
    wait: Duration,
) -> Result<Option<Vec<PartitionSpan>>, Attempt> {
    let metadata = consumer
        .fetch_metadata(Some(topic), wait)
        .map_err(|err| classify(topic, err))?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if let Some(err) = found.error() {
        let code = RDKafkaErrorCode::from(err);
        if unknown_topic(code) {
            return Ok(None);
        }
        return Err(classify(topic, KafkaError::MetadataFetch(code)));
    }
    if found.partitions().is_empty() {
        return Ok(None);
    }
    let mut spans = Vec::with_capacity(found.partitions().len());
    for partition in found.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition.id(), wait)
            .map_err(|err| classify(topic, err))?;
        spans.push(PartitionSpan {
            partition: partition.id(),
            low,
            high,
        });
    }
    spans.sort_by_key(|s| s.partition);
    Ok(Some(spans))
}

/// How long a read may go on without a progress bar.
const QUIET_FOR: Duration = Duration::from_millis(800);

/// The progress bar on stderr: drawn only on a terminal, only when asked
/// for, and only once a read has lasted [`QUIET_FOR`].
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    wanted: bool,
    shown: bool,
    since: Instant,
}

impl Progress {
    /// A bar that shows itself if `wanted` and stderr is a terminal.
    pub fn new(wanted: bool) -> Self {
        Progress {
            bar: ProgressBar::hidden(),
            wanted: wanted && std::io::stderr().is_terminal(),
            shown: false,
            since: Instant::now(),
        }
    }

    fn begin(&mut self, what: &str, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.set_message(what.to_string());
    }

    fn set(&mut self, position: u64) {
        self.bar.set_position(position);
        if !self.shown && self.wanted && self.since.elapsed() >= QUIET_FOR {
            self.shown = true;
            let style = ProgressStyle::with_template(
                "{msg} [{bar:30}] {human_pos}/{human_len} offsets ({percent}%, {eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            self.bar.set_style(style);
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.bar.enable_steady_tick(Duration::from_millis(250));
        }
    }

    /// Takes the bar off the screen.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Reads every partition of `spans` from its start to its end, handing
/// each record to `each` with its partition's span, until `deadline`.
pub fn read(
    consumer: &BaseConsumer,
    topic: &str,
    spans: Vec<PartitionSpan>,
    deadline: Instant,
    progress: &mut Progress,
    mut each: impl FnMut(&BorrowedMessage<'_>, &PartitionSpan),
) -> Result<TopicRead, ReadError> {
    let by_partition: HashMap<i32, PartitionSpan> =
        spans.iter().map(|s| (s.partition, *s)).collect();
    let mut done: HashSet<i32> = spans
        .iter()
        .filter(|s| s.high <= s.low)
        .map(|s| s.partition)
        .collect();
    let mut assignment = TopicPartitionList::new();
    for span in spans.iter().filter(|s| !done.contains(&s.partition)) {
        assignment
            .add_partition_offset(topic, span.partition, Offset::Beginning)
            .map_err(|err| ReadError::Settings(err.to_string()))?;
    }
    let total: u64 = spans.iter().map(|s| (s.high - s.low).max(0) as u64).sum();
    progress.begin(topic, total);
    if done.len() < spans.len() {
        consumer
            .assign(&assignment)
            .map_err(|err| match classify(topic, err) {
                Attempt::Final(err) => err,
                Attempt::Again(reason) => ReadError::Settings(reason),
            })?;
    }
    // Per partition, the offset read up to: the progress bar's position.
    let mut reached: HashMap<i32, i64> = spans.iter().map(|s| (s.partition, s.low)).collect();
    let mut advanced: u64 = 0;
    let mut since_position_check = 0u32;
    while done.len() < spans.len() && Instant::now() < deadline {
        let mut check_positions = false;
        match consumer.poll(Duration::from_millis(200)) {
            None => check_positions = true,
            Some(Ok(message)) => {
                let partition = message.partition();
                let Some(span) = by_partition.get(&partition) else {
                    continue;
                };
                let offset = message.offset();
                if offset < span.high && !done.contains(&partition) {
                    each(&message, span);
                }
                if let Some(at) = reached.get_mut(&partition) {
                    let next = (offset + 1).min(span.high);
                    if next > *at {
                        advanced += (next - *at) as u64;
                        *at = next;
                    }
                }
                if offset + 1 >= span.high {
                    done.insert(partition);
                }
                since_position_check += 1;
                if since_position_check >= 4096 {
                    check_positions = true;
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                done.insert(partition);
            }
            Some(Err(err)) => {
                let code = err.rdkafka_error_code();
                if code.is_some_and(unknown_topic) {
                    return Err(ReadError::UnknownTopic(topic.to_string()));
                }
                if let Attempt::Final(err) = classify(topic, err) {
                    return Err(err);
                }
                // Transient (a broker restarting): librdkafka retries; so do we.
                std::thread::sleep(Duration::from_millis(100));
                check_positions = true;
            }
        }
        if check_positions {
            since_position_check = 0;
            if let Ok(positions) = consumer.position() {
                for element in positions.elements() {
                    if let (Offset::Offset(at), Some(span)) =
                        (element.offset(), by_partition.get(&element.partition()))
                        && at >= span.high
                    {
                        done.insert(element.partition());
                    }
                }
            }
        }
        progress.set(advanced);
    }
    Ok(TopicRead {
        complete: done.len() >= spans.len(),
        partitions: spans,
    })
}

/// Turns a data record into an event of the ledger, or counts it as
/// unparseable (a hostile record is a finding, never a crash).
pub fn take_event(ledger: &mut Ledger, message: &BorrowedMessage<'_>, span: &PartitionSpan) {
    let (partition, offset) = (message.partition(), message.offset());
    let Some(key) = message.key() else {
        ledger.unparseable(partition, offset, "no key (the client id)");
        return;
    };
    let Ok(client) = std::str::from_utf8(key) else {
        ledger.unparseable(partition, offset, "its key is not UTF-8");
        return;
    };
    let Some([id, previous, time]) = headers_named(message, ["ce_id", "smesh-previous", "ce_time"])
    else {
        ledger.unparseable(partition, offset, "a header name is not UTF-8");
        return;
    };
    let Some(id) = id.and_then(|v| std::str::from_utf8(v).ok()) else {
        ledger.unparseable(partition, offset, "no UTF-8 ce_id header");
        return;
    };
    let Some((incarnation, sequence)) = parse_event_id(client, id) else {
        ledger.unparseable(
            partition,
            offset,
            "its ce_id is not <key>-<incarnation>-<sequence>",
        );
        return;
    };
    ledger.observe(&Observation {
        client,
        incarnation,
        sequence,
        previous: previous
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok()),
        partition,
        timestamp_millis: message.timestamp().to_millis(),
        event_time: time.and_then(|v| std::str::from_utf8(v).ok()),
        log_truncated: span.low > 0,
    });
}

/// The values of the headers `names` (the last of each name), or `None`
/// when the record has a header name that is not UTF-8: rdkafka panics on
/// one (it unwraps the conversion), so the panic is caught here (and kept
/// quiet by [`quiet_header_panics`]).
pub fn headers_named<'m, const N: usize>(
    message: &'m BorrowedMessage<'_>,
    names: [&str; N],
) -> Option<[Option<&'m [u8]>; N]> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut found = [None; N];
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                if let Some(slot) = names.iter().position(|name| *name == header.key) {
                    found[slot] = header.value;
                }
            }
        }
        found
    }))
    .ok()
}

/// Keeps the panic that rdkafka raises on a header name that is not UTF-8
/// off stderr ([`take_event`] catches it and counts the record); every
/// other panic goes to the hook that was there.
pub fn quiet_header_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_rdkafka_headers = info
            .location()
            .is_some_and(|at| at.file().contains("rdkafka") && at.file().ends_with("message.rs"));
        if !in_rdkafka_headers {
            previous(info);
        }
    }));
}
