//! What the audit found: the verdict, a table for people and a JSON
//! document for scripts.
//!
//! Verdict (monitoring-plugin exit codes, like `check`):
//! - CRITICAL (2): a gap (an event names a predecessor absent from the
//!   topic); a lost tail (a mark says committed through N, N is absent);
//!   in exactly-once mode also any duplicate and any order violation;
//! - WARNING (1): in at-least-once mode an order violation (a zombie
//!   master's late writes can cause one); records that are not smesh
//!   events; unreadable marks; a mark whose identity has no event left in
//!   a topic whose oldest records were deleted; exactly-once asked for but
//!   no marks topic (tails unchecked);
//! - OK (0): otherwise. Duplicates in at-least-once mode are expected
//!   (resends) and only counted;
//! - UNKNOWN (3): the topic could not be read to its end (what was found so
//!   far is still reported, but a gap may be a predecessor not read yet).

use serde::Serialize;

use super::ledger::{Gap, Identity, Ledger, Stream, Unparseable};
use super::marks::Marks;
use super::reader::PartitionSpan;
use crate::check::{Problem, Verdict};
use crate::format;

/// The delivery mode the topic is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Duplicates and order violations are CRITICAL; marks are checked.
    ExactlyOnce,
    /// Duplicates are counted, order violations are a WARNING.
    AtLeastOnce,
}

/// How many problems are listed one by one (all are counted).
const MAX_PROBLEMS_LISTED: usize = 50;

/// The newest event of an identity.
#[derive(Debug, Clone, Serialize)]
pub struct NewestReport {
    /// Its sequence.
    pub sequence: u64,
    /// Its Kafka record timestamp, ms since the epoch.
    pub record_unix_millis: Option<i64>,
    /// Seconds from that timestamp to the audit (0 if in the future).
    pub age_seconds: Option<u64>,
    /// Its `ce_time` as written: the event's own clock, which may be skewed.
    pub event_time: Option<String>,
}

/// One identity (client id, incarnation), as `audit --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityReport {
    /// The client id.
    pub client: String,
    /// The incarnation, 16 hex digits as in event ids.
    pub incarnation: String,
    /// Records read, duplicates included.
    pub records: u64,
    /// Distinct sequences present.
    pub events: u64,
    /// How many ranges the sequences present form.
    pub range_count: usize,
    /// The first `--max-ranges` of them, `[first, last]` inclusive.
    pub ranges: Vec<[u64; 2]>,
    /// How many predecessors are missing (lost events).
    pub gap_count: usize,
    /// The first `--max-ranges` of them.
    pub gaps: Vec<Gap>,
    /// Predecessors missing at a partition's truncated log start
    /// (deleted by retention, most likely; not counted as gaps).
    pub before_log_start: usize,
    /// Records of a sequence already present.
    pub duplicates: u64,
    /// New sequences below the highest read before them in their partition.
    pub order_violations: u64,
    /// Events without a usable `smesh-previous`: gaps before them cannot be told.
    pub unlinked: u64,
    /// The mark: committed through this sequence (exactly-once mode).
    pub mark_through: Option<u64>,
    /// The mark's sequence is absent: the tail was lost.
    pub tail_lost: bool,
    /// The newest event (highest sequence); absent when only a mark names
    /// the identity.
    pub newest: Option<NewestReport>,
}

/// A partition as read.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    /// Its number.
    pub partition: i32,
    /// Its first offset when the audit started (above 0: older records deleted).
    pub log_start: i64,
    /// The end read to, captured when the audit started.
    pub end: i64,
}

/// Sums over every identity.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Identities (with events or a mark).
    pub identities: usize,
    /// Data records read.
    pub records: u64,
    /// Distinct events.
    pub events: u64,
    /// Missing predecessors.
    pub gaps: u64,
    /// Identities whose mark's sequence is absent.
    pub lost_tails: u64,
    /// Duplicate records.
    pub duplicates: u64,
    /// Order violations.
    pub order_violations: u64,
    /// Events without a usable `smesh-previous`.
    pub unlinked: u64,
    /// Records that are not smesh events.
    pub unparseable: u64,
}

/// The whole finding, as `audit --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// OK, WARNING, CRITICAL or UNKNOWN.
    pub status: Verdict,
    /// The exit code (0, 1, 2, 3).
    pub exit_code: u8,
    /// The one-line summary.
    pub summary: String,
    /// The data topic.
    pub topic: String,
    /// The marks topic, when one was read.
    pub marks_topic: Option<String>,
    /// The mode the topic was judged by.
    pub delivery: Mode,
    /// `read-committed` or `read-uncommitted`.
    pub isolation: String,
    /// Whether every partition was read to its end.
    pub complete: bool,
    /// The partitions read.
    pub partitions: Vec<PartitionReport>,
    /// Sums.
    pub totals: Totals,
    /// The first records that are not smesh events.
    pub unparseable_examples: Vec<Unparseable>,
    /// Records of the marks topic that are neither marks nor claims.
    pub marks_unparseable: u64,
    /// Per identity, by client then incarnation.
    pub identities: Vec<IdentityReport>,
    /// What lowered the verdict, worst first (the first 50).
    pub problems: Vec<Problem>,
    /// How many problems there are in all.
    pub problem_count: usize,
}

/// What the report is made from.
#[derive(Debug)]
pub struct Findings<'a> {
    /// The data topic's name.
    pub topic: &'a str,
    /// The marks topic's name and its marks, when it was read.
    pub marks: Option<(&'a str, &'a Marks)>,
    /// The mode to judge by.
    pub mode: Mode,
    /// `read-committed` / `read-uncommitted`.
    pub isolation: &'a str,
    /// The data topic's partitions.
    pub partitions: &'a [PartitionSpan],
    /// Whether the read reached every partition's end.
    pub complete: bool,
    /// The events read.
    pub ledger: &'a Ledger,
    /// How many ranges and gaps to list per identity.
    pub max_ranges: usize,
    /// The audit's clock, ms since the epoch (for ages).
    pub now_unix_millis: i64,
}

impl Findings<'_> {
    /// Judges what was read.
    pub fn report(&self) -> Report {
        let log_truncated = self.partitions.iter().any(|p| p.low > 0);
        let mut problems: Vec<Problem> = Vec::new();
        let mut totals = Totals::default();
        let mut identities: Vec<(&Identity, Option<&Stream>, Option<u64>)> = self
            .ledger
            .streams()
            .map(|(identity, stream)| {
                let mark = self.marks.and_then(|(_, marks)| marks.through(identity));
                (identity, Some(stream), mark)
            })
            .collect();
        if let Some((_, marks)) = self.marks {
            for (identity, through) in marks.iter() {
                if self.ledger.stream(&identity.0, identity.1).is_none() {
                    identities.push((identity, None, Some(through)));
                }
            }
        }
        identities.sort_by(|a, b| a.0.cmp(b.0));
        let strict = self.mode == Mode::ExactlyOnce;
        let mut rows = Vec::with_capacity(identities.len());
        for (identity, stream, mark) in identities {
            let name = format!("{}/{:016x}", identity.0, identity.1);
            let row = self.identity(identity, stream, mark);
            totals.records += row.records;
            totals.events += row.events;
            totals.gaps += row.gap_count as u64;
            totals.duplicates += row.duplicates;
            totals.order_violations += row.order_violations;
            totals.unlinked += row.unlinked;
            if row.gap_count > 0 {
                let shown: Vec<String> = row
                    .gaps
                    .iter()
                    .take(3)
                    .map(|g| {
                        if g.possibly_from < g.missing {
                            format!(
                                "{} (named by {}; the lost run may start as low as {})",
                                g.missing, g.named_by, g.possibly_from
                            )
                        } else {
                            format!("{} (named by {})", g.missing, g.named_by)
                        }
                    })
                    .collect();
                problems.push(problem(
                    Verdict::Critical,
                    format!(
                        "{name}: {} missing predecessor(s): {}{}",
                        row.gap_count,
                        shown.join(", "),
                        if row.gap_count > shown.len() {
                            ", …"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            if let Some(through) = row.mark_through
                && stream.is_none_or(|s| !s.present().contains(through))
            {
                match stream.and_then(|s| s.present().highest()) {
                    Some(highest) => {
                        totals.lost_tails += 1;
                        problems.push(problem(
                            Verdict::Critical,
                            format!(
                                "{name}: marked committed through {through}, which is absent (highest present {highest}): the tail was lost"
                            ),
                        ));
                    }
                    None if log_truncated => problems.push(problem(
                        Verdict::Warning,
                        format!(
                            "{name}: marked committed through {through} but no event is left (the topic's oldest records were deleted)"
                        ),
                    )),
                    None => {
                        totals.lost_tails += 1;
                        problems.push(problem(
                            Verdict::Critical,
                            format!(
                                "{name}: marked committed through {through}, but none of its events is in the topic"
                            ),
                        ));
                    }
                }
            }
            if row.duplicates > 0 && strict {
                problems.push(problem(
                    Verdict::Critical,
                    format!(
                        "{name}: {} duplicate record(s) in exactly-once mode",
                        row.duplicates
                    ),
                ));
            }
            if row.order_violations > 0 {
                problems.push(problem(
                    if strict {
                        Verdict::Critical
                    } else {
                        Verdict::Warning
                    },
                    format!("{name}: {} event(s) out of order", row.order_violations),
                ));
            }
            rows.push(row);
        }
        totals.identities = rows.len();
        totals.unparseable = self.ledger.unparseable_count();
        if totals.unparseable > 0 {
            problems.push(problem(
                Verdict::Warning,
                format!(
                    "{} record(s) are not smesh events (first: {})",
                    totals.unparseable,
                    self.ledger
                        .unparseable_examples()
                        .first()
                        .map(|u| format!(
                            "partition {} offset {}: {}",
                            u.partition, u.offset, u.reason
                        ))
                        .unwrap_or_default()
                ),
            ));
        }
        let marks_unparseable = self.marks.map_or(0, |(_, marks)| marks.unparseable());
        if marks_unparseable > 0 {
            problems.push(problem(
                Verdict::Warning,
                format!(
                    "{marks_unparseable} record(s) of the marks topic are neither marks nor claims"
                ),
            ));
        }
        if strict && self.marks.is_none() {
            problems.push(problem(
                Verdict::Warning,
                "exactly-once mode but no marks topic: lost tails cannot be told".to_string(),
            ));
        }
        if !self.complete {
            problems.push(problem(
                Verdict::Unknown,
                "the topic was not read to its end in time (--timeout): findings are partial, and a gap may be an event not read yet".to_string(),
            ));
        }
        problems.sort_by_key(|p| std::cmp::Reverse(p.severity));
        let status = if self.complete {
            problems
                .iter()
                .map(|p| p.severity)
                .max()
                .unwrap_or(Verdict::Ok)
        } else {
            Verdict::Unknown
        };
        let summary = summary(status, self.topic, &totals, self.mode);
        let problem_count = problems.len();
        problems.truncate(MAX_PROBLEMS_LISTED);
        Report {
            status,
            exit_code: status.exit_code(),
            summary,
            topic: self.topic.to_string(),
            marks_topic: self.marks.map(|(name, _)| name.to_string()),
            delivery: self.mode,
            isolation: self.isolation.to_string(),
            complete: self.complete,
            partitions: self
                .partitions
                .iter()
                .map(|p| PartitionReport {
                    partition: p.partition,
                    log_start: p.low,
                    end: p.high,
                })
                .collect(),
            totals,
            unparseable_examples: self.ledger.unparseable_examples().to_vec(),
            marks_unparseable,
            identities: rows,
            problems,
            problem_count,
        }
    }

    fn identity(
        &self,
        identity: &Identity,
        stream: Option<&Stream>,
        mark: Option<u64>,
    ) -> IdentityReport {
        let mut row = IdentityReport {
            client: identity.0.clone(),
            incarnation: format!("{:016x}", identity.1),
            records: 0,
            events: 0,
            range_count: 0,
            ranges: Vec::new(),
            gap_count: 0,
            gaps: Vec::new(),
            before_log_start: 0,
            duplicates: 0,
            order_violations: 0,
            unlinked: 0,
            mark_through: mark,
            tail_lost: false,
            newest: None,
        };
        let Some(stream) = stream else {
            row.tail_lost = !self.partitions.iter().any(|p| p.low > 0);
            return row;
        };
        row.records = stream.records();
        row.events = stream.present().len();
        row.range_count = stream.present().range_count();
        row.ranges = stream
            .present()
            .iter()
            .take(self.max_ranges)
            .map(|(first, last)| [first, last])
            .collect();
        row.gap_count = stream.gap_count();
        row.gaps = stream.gaps().take(self.max_ranges).collect();
        row.before_log_start = stream.before_log_start().count();
        row.duplicates = stream.duplicates();
        row.order_violations = stream.order_violations();
        row.unlinked = stream.unlinked();
        row.tail_lost = mark.is_some_and(|through| {
            !stream.present().contains(through) && stream.present().highest().is_some()
        });
        row.newest = stream.newest().map(|newest| NewestReport {
            sequence: newest.sequence,
            record_unix_millis: newest.timestamp_millis,
            age_seconds: newest
                .timestamp_millis
                .map(|t| (self.now_unix_millis.saturating_sub(t).max(0) / 1000) as u64),
            event_time: newest.event_time.clone(),
        });
        row
    }
}

fn problem(severity: Verdict, message: String) -> Problem {
    Problem { severity, message }
}

fn summary(status: Verdict, topic: &str, totals: &Totals, mode: Mode) -> String {
    let mut found = Vec::new();
    let mut note = |n: u64, what: &str| {
        if n > 0 {
            found.push(format!("{n} {what}"));
        }
    };
    note(totals.gaps, "missing predecessor(s)");
    note(totals.lost_tails, "lost tail(s)");
    note(totals.duplicates, "duplicate(s)");
    note(totals.order_violations, "out of order");
    note(totals.unparseable, "unparseable record(s)");
    let found = if found.is_empty() {
        "no gaps, no duplicates, in order".to_string()
    } else {
        found.join(", ")
    };
    let mode = match mode {
        Mode::ExactlyOnce => "exactly-once",
        Mode::AtLeastOnce => "at-least-once",
    };
    format!(
        "{}: {topic}: {found} ({} identities, {} events, {mode})",
        status.word(),
        totals.identities,
        totals.events,
    )
}

impl Report {
    /// The report for people: the summary, a table per identity, the problems.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n", self.summary);
        if !self.identities.is_empty() {
            let header = [
                "CLIENT",
                "INCARNATION",
                "EVENTS",
                "RANGES",
                "GAPS",
                "DUPS",
                "ORDER",
                "MARK",
                "NEWEST AGE",
            ];
            let rows: Vec<[String; 9]> = self
                .identities
                .iter()
                .map(|row| {
                    [
                        row.client.clone(),
                        row.incarnation.clone(),
                        row.events.to_string(),
                        ranges_text(&row.ranges, row.range_count),
                        row.gap_count.to_string(),
                        row.duplicates.to_string(),
                        row.order_violations.to_string(),
                        row.mark_through.map_or("-".into(), |m| m.to_string()),
                        row.newest
                            .as_ref()
                            .and_then(|n| n.age_seconds)
                            .map_or("-".into(), format::duration_secs),
                    ]
                })
                .collect();
            let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
            for row in &rows {
                for (width, cell) in widths.iter_mut().zip(row) {
                    *width = (*width).max(cell.chars().count());
                }
            }
            let line = |cells: Vec<&str>| {
                let mut text = String::new();
                for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
                    if i + 1 == cells.len() {
                        text.push_str(cell);
                    } else {
                        text.push_str(&format!("{cell:<width$}  "));
                    }
                }
                text.trim_end().to_string() + "\n"
            };
            out.push('\n');
            out.push_str(&line(header.to_vec()));
            for row in &rows {
                out.push_str(&line(row.iter().map(String::as_str).collect()));
            }
        }
        if !self.problems.is_empty() {
            out.push('\n');
            for problem in &self.problems {
                out.push_str(&format!(
                    "{} {}\n",
                    problem.severity.word(),
                    problem.message
                ));
            }
            if self.problem_count > self.problems.len() {
                out.push_str(&format!(
                    "… and {} more (see --json)\n",
                    self.problem_count - self.problems.len()
                ));
            }
        }
        out.push_str(
            "\nNEWEST AGE: from the newest event's Kafka record timestamp. Gaps: events whose smesh-previous names an absent event.\n",
        );
        out
    }
}

/// `1-500,502-900`, with `,…(+N)` when more ranges than listed exist.
fn ranges_text(ranges: &[[u64; 2]], total: usize) -> String {
    if total == 0 {
        return "-".into();
    }
    let mut text: Vec<String> = ranges
        .iter()
        .map(|[first, last]| {
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect();
    if total > ranges.len() {
        text.push(format!("…(+{})", total - ranges.len()));
    }
    text.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::ledger::Observation;

    fn span(low: i64) -> Vec<PartitionSpan> {
        vec![PartitionSpan {
            partition: 0,
            low,
            high: 100,
        }]
    }

    fn ledger(events: &[(u64, u64)]) -> Ledger {
        let mut ledger = Ledger::default();
        for &(sequence, previous) in events {
            ledger.observe(&Observation {
                client: "c",
                incarnation: 1,
                sequence,
                previous: Some(previous),
                partition: 0,
                timestamp_millis: Some(1_000),
                event_time: None,
                log_truncated: false,
            });
        }
        ledger
    }

    fn judge(ledger: &Ledger, marks: Option<&Marks>, mode: Mode, complete: bool) -> Report {
        let partitions = span(0);
        Findings {
            topic: "t",
            marks: marks.map(|m| ("t.smesh-marks", m)),
            mode,
            isolation: "read-committed",
            partitions: &partitions,
            complete,
            ledger,
            max_ranges: 2,
            now_unix_millis: 61_000,
        }
        .report()
    }

    fn marks(through: u64) -> Marks {
        let mut marks = Marks::default();
        marks.take(
            Some(b"c/0000000000000001"),
            Some(format!("{{\"through\":{through}}}").as_bytes()),
        );
        marks
    }

    #[test]
    fn a_whole_stream_is_ok_and_says_so() {
        let ledger = ledger(&[(1, 0), (2, 1), (3, 2)]);
        let report = judge(&ledger, Some(&marks(3)), Mode::ExactlyOnce, true);
        assert_eq!((report.status, report.exit_code), (Verdict::Ok, 0));
        assert!(
            report.summary.starts_with("OK: t: no gaps"),
            "{}",
            report.summary
        );
        let row = &report.identities[0];
        assert_eq!(row.ranges, [[1, 3]]);
        assert_eq!(row.newest.as_ref().and_then(|n| n.age_seconds), Some(60));
        let text = report.text();
        assert!(text.contains("0000000000000001  3       1-3"), "{text}");
    }

    #[test]
    fn duplicates_are_critical_only_in_exactly_once_mode() {
        let ledger = ledger(&[(1, 0), (2, 1), (2, 1)]);
        let strict = judge(&ledger, Some(&marks(2)), Mode::ExactlyOnce, true);
        assert_eq!(strict.status, Verdict::Critical);
        let lenient = judge(&ledger, None, Mode::AtLeastOnce, true);
        assert_eq!(lenient.status, Verdict::Ok);
        assert_eq!(lenient.totals.duplicates, 1);
    }

    #[test]
    fn order_violations_are_a_warning_in_at_least_once_mode() {
        let ledger = ledger(&[(1, 0), (3, 2), (2, 1)]);
        assert_eq!(
            judge(&ledger, None, Mode::AtLeastOnce, true).status,
            Verdict::Warning
        );
        assert_eq!(
            judge(&ledger, Some(&marks(3)), Mode::ExactlyOnce, true).status,
            Verdict::Critical
        );
    }

    #[test]
    fn gaps_and_lost_tails_are_critical_in_any_mode() {
        let gap = ledger(&[(1, 0), (3, 2)]);
        let report = judge(&gap, None, Mode::AtLeastOnce, true);
        assert_eq!(report.status, Verdict::Critical);
        assert_eq!(report.totals.gaps, 1);
        let whole = ledger(&[(1, 0), (2, 1)]);
        let report = judge(&whole, Some(&marks(3)), Mode::ExactlyOnce, true);
        assert_eq!(report.status, Verdict::Critical);
        assert!(report.identities[0].tail_lost);
        assert_eq!(report.totals.lost_tails, 1);
        // A mark of an identity none of whose events is there.
        let mut other = Marks::default();
        other.take(Some(b"gone/0000000000000002"), Some(b"{\"through\":5}"));
        let report = judge(&whole, Some(&other), Mode::ExactlyOnce, true);
        assert_eq!(report.status, Verdict::Critical);
        assert_eq!(report.identities.len(), 2);
        assert!(report.identities[1].tail_lost);
    }

    #[test]
    fn exactly_once_without_marks_warns_that_tails_are_unchecked() {
        let whole = ledger(&[(1, 0), (2, 1)]);
        let report = judge(&whole, None, Mode::ExactlyOnce, true);
        assert_eq!(report.status, Verdict::Warning);
        assert!(report.problems[0].message.contains("no marks topic"));
    }

    #[test]
    fn an_incomplete_read_is_unknown_whatever_was_found() {
        let gap = ledger(&[(1, 0), (3, 2)]);
        let report = judge(&gap, None, Mode::AtLeastOnce, false);
        assert_eq!((report.status, report.exit_code), (Verdict::Unknown, 3));
        assert!(!report.complete);
    }

    #[test]
    fn long_range_lists_are_cut() {
        let broken = ledger(&[(1, 0), (3, 0), (5, 0), (7, 0)]);
        let report = judge(&broken, None, Mode::AtLeastOnce, true);
        let row = &report.identities[0];
        assert_eq!((row.range_count, row.ranges.len()), (4, 2));
        assert_eq!(ranges_text(&row.ranges, row.range_count), "1,3,…(+2)");
    }
}
