//! `smesh-console trace <ce_id>`: where one event went, and when.
//!
//! The hops come from the record itself: the reading's time at its source
//! (`ce_time`, the client's clock), the sidecar's and the master's receipt
//! (`smesh-sidecar`, `smesh-master`, each node's own clock) and the
//! record's Kafka timestamp (the master's clock when it produced the
//! record, or the broker's for a `LogAppendTime` topic). The ack's side
//! comes from the client's `safeData.placed.csv` (`--placed`): when the ack
//! reached the client, through which sidecar, and where the master said
//! the event went. With it, trace reads just that range of one partition;
//! without it, the whole topic (the event's client's records only).
//!
//! Exit codes as `check` and `audit`: 0 the event is in the topic once,
//! 1 (WARNING) more than once, 2 (CRITICAL) not there, 3 (UNKNOWN) Kafka
//! could not be read; 64 for a bad flag or id.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use smesh_core::cli::parse_duration;
use smesh_core::event::parse_event_id;
use smesh_core::placed::PlacedRow;
use smesh_core::time::{parse_rfc3339, rfc3339_micros};

use crate::audit::KafkaArgs;
use crate::audit::reader::{self, Isolation, Progress, ReadError};
use crate::check::Verdict;

/// Flags of `smesh-console trace`.
#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// The event's id (`ce_id`), e.g. `edge-1-6743a1c09f3e5b2d-1042`.
    pub id: String,
    /// The event's client, for an id that reads two ways: a client id that
    /// itself ends in `-` and 16 hex digits, with an id from before
    /// incarnations (`<client>-<sequence>`). Otherwise taken from the id.
    #[arg(long, value_name = "ID")]
    pub client: Option<String>,
    /// Kafka, and the topic the event went to.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The client's `safeData.placed.csv` (its rotated `.1` is read too):
    /// where the acks said the event went, and when the client got its ack.
    #[arg(long, value_name = "FILE")]
    pub placed: Option<PathBuf>,
    /// What the consumer sees of transactions.
    #[arg(long, value_enum, default_value_t = Isolation::ReadCommitted)]
    pub isolation: Isolation,
    /// How long the read may take; past it the trace is UNKNOWN.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print a JSON document instead of lines.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (it is drawn on stderr, and only on a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// Why no trace could be made.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A flag, the id or the settings file is wrong.
    #[error("{0}")]
    Usage(String),
    /// Kafka could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl TraceError {
    /// 64 for a usage error, 3 (UNKNOWN) when Kafka could not be read.
    pub fn exit_code(&self) -> u8 {
        match self {
            TraceError::Usage(_) | TraceError::Read(ReadError::Settings(_)) => {
                smesh_core::cli::EX_USAGE as u8
            }
            TraceError::Read(_) => Verdict::Unknown.exit_code(),
        }
    }
}

/// A node's receipt of the event, from its hop header.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Hop {
    /// The node's id.
    pub node: String,
    /// When it received the event (its clock), RFC 3339.
    pub at: String,
    #[serde(skip)]
    at_unix_nanos: i64,
}

/// One copy of the event in Kafka.
#[derive(Debug, Clone, Serialize)]
pub struct Copy {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The record's timestamp, RFC 3339 (absent if it has none).
    pub timestamp: Option<String>,
    /// `ce_time`: the reading's time at its source (the client's clock).
    pub read_at: Option<String>,
    /// `smesh-previous`: the sequence its client handed over before it.
    pub previous: Option<u64>,
    /// The sidecar's hop.
    pub sidecar: Option<Hop>,
    /// The master's hop.
    pub master: Option<Hop>,
    #[serde(skip)]
    timestamp_unix_nanos: Option<i64>,
}

/// The client's side, from its placements file.
#[derive(Debug, Clone, Serialize)]
pub struct Acked {
    /// When the ack reached the client (its clock), RFC 3339.
    pub at: String,
    /// The sidecar it came through.
    pub sidecar: String,
    /// The master that wrote the event.
    pub master: String,
    /// When Kafka acknowledged it (or its transaction committed), the
    /// master's clock.
    pub written: String,
    /// Where the master said the event's run went.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The run's offsets: the event is at one of them.
    pub first_offset: i64,
    /// See `first_offset`.
    pub last_offset: i64,
    #[serde(skip)]
    at_unix_nanos: i64,
}

/// What `trace` found.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// `OK`, `WARNING` or `CRITICAL`.
    pub status: &'static str,
    /// The exit code.
    pub exit_code: u8,
    /// The event's id.
    pub id: String,
    /// Its client.
    pub client: String,
    /// Its incarnation, 16 hex digits (0 for ids from before incarnations).
    pub incarnation: String,
    /// Its sequence.
    pub sequence: u64,
    /// Where the client's placements say it went (`--placed`).
    pub acked: Option<Acked>,
    /// Its copies in the topic, oldest first.
    pub copies: Vec<Copy>,
    /// How much was read to find them.
    pub searched: String,
}

/// Splits an event id into client, incarnation and sequence.
pub fn split_id(id: &str) -> Option<(String, u64, u64)> {
    let (rest, _) = id.rsplit_once('-')?;
    // `<client>-<16 hex>-<sequence>`, or the older `<client>-<sequence>`.
    let candidates = [rest.rsplit_once('-').map(|(client, _)| client), Some(rest)];
    candidates.into_iter().flatten().find_map(|client| {
        let (incarnation, sequence) = parse_event_id(client, id)?;
        Some((client.to_string(), incarnation, sequence))
    })
}

/// The placement holding the event, from `file` and its rotated `.1`.
fn placement(file: &Path, incarnation: u64, sequence: u64) -> Result<Option<PlacedRow>, String> {
    let mut older = file.as_os_str().to_owned();
    older.push(".1");
    let mut found = None;
    for path in [PathBuf::from(older), file.to_path_buf()] {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && path != file => continue,
            Err(err) => return Err(format!("--placed {}: {err}", path.display())),
        };
        // The first ack of it counts: a later one is a resend's.
        if let Some(row) = text
            .lines()
            .filter_map(PlacedRow::parse)
            .find(|row| row.holds(incarnation, sequence))
        {
            found = Some(row);
            break;
        }
    }
    Ok(found)
}

/// Runs the trace (blocking: librdkafka's consumer calls block).
pub fn run(args: &TraceArgs) -> Result<Trace, TraceError> {
    let split = match &args.client {
        Some(client) => parse_event_id(client, &args.id)
            .map(|(incarnation, sequence)| (client.clone(), incarnation, sequence)),
        None => split_id(&args.id),
    };
    let Some((client, incarnation, sequence)) = split else {
        return Err(TraceError::Usage(format!(
            "{:?} is not an event id smesh makes (<client>-<incarnation as 16 hex>-<sequence>){}",
            args.id,
            args.client
                .as_ref()
                .map(|c| format!(" of client {c:?}"))
                .unwrap_or_default()
        )));
    };
    let placed = match &args.placed {
        Some(file) => placement(file, incarnation, sequence).map_err(TraceError::Usage)?,
        None => None,
    };
    let access = args.kafka.access().map_err(TraceError::Usage)?;
    let consumer = access.consumer(args.isolation)?;
    reader::quiet_header_panics();
    let deadline = Instant::now() + args.timeout;
    let mut copies = Vec::new();
    let searched;
    match &placed {
        Some(row) => {
            let p = &row.placement;
            searched = format!(
                "{} partition {} offsets {}..={} (from the placements file)",
                p.topic, p.partition, p.first_offset, p.last_offset
            );
            read_range(&consumer, p, deadline, |message| {
                if let Some(copy) = copy_of(message, &client, &args.id) {
                    copies.push(copy);
                }
            })?;
        }
        None => {
            let topic = &args.kafka.topic;
            let Some(spans) = reader::spans(&consumer, topic, args.kafka.connect_timeout)? else {
                return Err(ReadError::UnknownTopic(topic.clone()).into());
            };
            searched = format!("all of {topic}");
            let mut progress = Progress::new(!args.no_progress);
            let read = reader::read(&consumer, topic, spans, deadline, &mut progress, |m, _| {
                if let Some(copy) = copy_of(m, &client, &args.id) {
                    copies.push(copy);
                }
            })?;
            progress.finish();
            if !read.complete {
                return Err(ReadError::Unreachable {
                    topic: topic.clone(),
                    within: args.timeout,
                    reason: "the read did not reach the topic's end in time".into(),
                }
                .into());
            }
        }
    }
    copies.sort_by_key(|c| (c.partition, c.offset));
    let verdict = match copies.len() {
        0 => Verdict::Critical,
        1 => Verdict::Ok,
        _ => Verdict::Warning,
    };
    Ok(Trace {
        status: verdict.word(),
        exit_code: verdict.exit_code(),
        id: args.id.clone(),
        client,
        incarnation: format!("{incarnation:016x}"),
        sequence,
        acked: placed.map(|row| Acked {
            at: rfc3339_micros(row.acked_unix_nanos),
            at_unix_nanos: row.acked_unix_nanos,
            sidecar: row.sidecar,
            master: row.placement.master_id,
            written: rfc3339_micros(row.placement.written_unix_nanos),
            topic: row.placement.topic,
            partition: row.placement.partition,
            first_offset: row.placement.first_offset,
            last_offset: row.placement.last_offset,
        }),
        copies,
        searched,
    })
}

/// Reads one placement's offsets of its partition.
fn read_range(
    consumer: &BaseConsumer,
    placement: &smesh_proto::mesh::Placement,
    deadline: Instant,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> Result<(), ReadError> {
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(
            &placement.topic,
            placement.partition,
            Offset::Offset(placement.first_offset),
        )
        .map_err(|err| ReadError::Settings(err.to_string()))?;
    consumer
        .assign(&assignment)
        .map_err(|err| ReadError::Settings(err.to_string()))?;
    let mut last_error = String::from("no answer");
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                if message.offset() <= placement.last_offset {
                    each(&message);
                }
                if message.offset() >= placement.last_offset {
                    return Ok(());
                }
            }
            // The range's end was a transaction marker or an aborted record.
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(()),
            Some(Err(err)) => last_error = err.to_string(),
            None => {
                let position = consumer.position().ok().and_then(|list| {
                    list.find_partition(&placement.topic, placement.partition)
                        .and_then(|p| match p.offset() {
                            Offset::Offset(at) => Some(at),
                            _ => None,
                        })
                });
                if position.is_some_and(|at| at > placement.last_offset) {
                    return Ok(());
                }
            }
        }
    }
    Err(ReadError::Unreachable {
        topic: placement.topic.clone(),
        within: Duration::ZERO,
        reason: format!("the placement's offsets were not read in time: {last_error}"),
    })
}

/// The record as a copy of event `id` of `client`, if it is one.
fn copy_of(message: &BorrowedMessage<'_>, client: &str, id: &str) -> Option<Copy> {
    if message.key() != Some(client.as_bytes()) {
        return None;
    }
    // A record with a header name that is not UTF-8 is not the one asked for.
    let text = |value: Option<&[u8]>| {
        value
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_string)
    };
    let [ce_id, read_at, previous, sidecar, master] = reader::headers_named(
        message,
        [
            "ce_id",
            "ce_time",
            "smesh-previous",
            "smesh-sidecar",
            "smesh-master",
        ],
    )?
    .map(text);
    if ce_id.as_deref() != Some(id) {
        return None;
    }
    let hop = |value: Option<String>| {
        let value = value?;
        let (node, at) = value.split_once(' ')?;
        Some(Hop {
            node: node.to_string(),
            at: at.to_string(),
            at_unix_nanos: parse_rfc3339(at)?,
        })
    };
    let timestamp_unix_nanos = message
        .timestamp()
        .to_millis()
        .map(|ms| ms.saturating_mul(1_000_000));
    Some(Copy {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp: timestamp_unix_nanos.map(rfc3339_micros),
        timestamp_unix_nanos,
        read_at,
        previous: previous.and_then(|p| p.parse().ok()),
        sidecar: hop(sidecar),
        master: hop(master),
    })
}

impl Trace {
    /// The trace as lines for people: each step with the time since the
    /// one before (clocks of different machines: a negative step is skew).
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "{}: {}", self.status, self.id);
        let _ = writeln!(
            out,
            "  client {}  incarnation {}  sequence {}",
            self.client, self.incarnation, self.sequence
        );
        let step = |out: &mut String,
                    what: &str,
                    detail: String,
                    at: Option<i64>,
                    before: &mut Option<i64>| {
            let delta = match (at, *before) {
                (Some(at), Some(previous)) => format!("  (+{})", millis(at - previous)),
                _ => String::new(),
            };
            let _ = writeln!(out, "  {what:<8} {detail}{delta}");
            if at.is_some() {
                *before = at;
            }
        };
        for (n, copy) in self.copies.iter().enumerate() {
            if self.copies.len() > 1 {
                let _ = writeln!(out, "  copy {} of {}:", n + 1, self.copies.len());
            }
            let mut before = None;
            if let Some(read) = &copy.read_at {
                step(
                    &mut out,
                    "read",
                    format!("{read}  at its source"),
                    parse_rfc3339(read),
                    &mut before,
                );
            }
            for (what, hop) in [("sidecar", &copy.sidecar), ("master", &copy.master)] {
                if let Some(hop) = hop {
                    step(
                        &mut out,
                        what,
                        format!("{} {}", hop.at, hop.node),
                        Some(hop.at_unix_nanos),
                        &mut before,
                    );
                }
            }
            step(
                &mut out,
                "kafka",
                format!(
                    "{} {}/{} offset {}",
                    copy.timestamp.as_deref().unwrap_or("(no timestamp)"),
                    copy.topic,
                    copy.partition,
                    copy.offset
                ),
                copy.timestamp_unix_nanos,
                &mut before,
            );
            if let Some(acked) = &self.acked {
                step(
                    &mut out,
                    "acked",
                    format!(
                        "{} through {} (written by {} at {})",
                        acked.at, acked.sidecar, acked.master, acked.written
                    ),
                    Some(acked.at_unix_nanos),
                    &mut before,
                );
            }
        }
        if self.copies.is_empty() {
            let _ = writeln!(out, "  not found in {}", self.searched);
            if let Some(acked) = &self.acked {
                let _ = writeln!(
                    out,
                    "  the client was told {}/{} offsets {}..={} at {}",
                    acked.topic, acked.partition, acked.first_offset, acked.last_offset, acked.at
                );
            }
        }
        out
    }
}

fn millis(nanos: i64) -> String {
    format!("{:.3} ms", nanos as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_split_into_client_incarnation_and_sequence() {
        assert_eq!(
            split_id("edge-1-6743a1c09f3e5b2d-1042"),
            Some(("edge-1".to_string(), 0x6743_a1c0_9f3e_5b2d, 1042))
        );
        assert_eq!(split_id("c1-7"), Some(("c1".to_string(), 0, 7)));
        assert_eq!(split_id("edge-1-7"), Some(("edge-1".to_string(), 0, 7)));
        assert_eq!(split_id("nothing"), None);
        assert_eq!(split_id("c1-6743a1c09f3e5b2d-"), None);
        assert_eq!(split_id("c1-x"), None);
    }

    #[test]
    fn the_first_placement_holding_the_event_is_found_in_the_rotated_file_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("safeData.placed.csv");
        let row = |first, last, offset, sidecar: &str| PlacedRow {
            acked_unix_nanos: 1_000,
            sidecar: sidecar.into(),
            placement: smesh_proto::mesh::Placement {
                incarnation: 5,
                first_sequence: first,
                last_sequence: last,
                topic: "t".into(),
                first_offset: offset,
                last_offset: offset + 9,
                master_id: "M1".into(),
                ..Default::default()
            },
        };
        let write = |path: &Path, rows: &[PlacedRow]| {
            let mut text = format!("{}\n", smesh_core::placed::HEADER);
            for r in rows {
                text.push_str(&r.encode());
            }
            std::fs::write(path, text).expect("write");
        };
        write(
            &dir.path().join("safeData.placed.csv.1"),
            &[row(1, 10, 0, "S1")],
        );
        write(&file, &[row(11, 20, 10, "S1"), row(11, 20, 30, "S2")]);
        let found = placement(&file, 5, 3).expect("read").expect("found");
        assert_eq!(found.placement.first_offset, 0);
        let found = placement(&file, 5, 15).expect("read").expect("found");
        assert_eq!(found.sidecar, "S1", "the first ack of it counts");
        assert!(placement(&file, 5, 21).expect("read").is_none());
        assert!(placement(&file, 6, 3).expect("read").is_none());
        assert!(placement(&dir.path().join("missing.csv"), 5, 3).is_err());
    }
}
