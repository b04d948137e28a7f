//! Where this client's acknowledged events went in Kafka: the placements
//! its acks carry, appended to `safeData.placed.csv` beside the spool (the
//! format is `smesh_core::placed`'s), summed up for the stats file, and the
//! newest one shown in the metrics.
//!
//! The file is a record for people and `smesh-console trace`, not state:
//! it is bounded (past [`MAX_BYTES`] it becomes `….placed.csv.1`, replacing
//! the one before, and a fresh file starts), it is not synced, and a line
//! that cannot be written (a full disk) is left out with a rate-limited
//! warning. It never holds up an ack.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;
use smesh_core::placed::{HEADER, PlacedRow};
use smesh_core::ratelimit::LogEvery;
use smesh_proto::mesh::Placement;
use tracing::warn;

use crate::counters::Counters;

/// Bytes after which the file is rotated: with the one older file, the
/// record never takes more than twice this.
pub const MAX_BYTES: u64 = 4 * 1024 * 1024;

/// The placements file beside a spool: `safeData.csv` → `safeData.placed.csv`.
pub fn placed_path(spool: &Path) -> PathBuf {
    let stem = spool.file_stem().map_or_else(
        || "safeData".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    spool.with_file_name(format!("{stem}.placed.csv"))
}

/// Where a run's events went, per topic and partition (for the stats file).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlacedSpan {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The lowest offset of this run's acknowledged events there.
    pub first_offset: i64,
    /// The highest.
    pub last_offset: i64,
    /// Events placed (acknowledged as written now, not as written before).
    pub events: u64,
}

/// The placements log of one client.
#[derive(Debug)]
pub struct PlacedLog {
    path: PathBuf,
    max_bytes: u64,
    /// Opened at the first placement (and again after a rotation or an
    /// error), so a client that is never acknowledged leaves no file.
    file: Option<BufWriter<File>>,
    bytes: u64,
    trouble: LogEvery,
    spans: BTreeMap<(String, i32), PlacedSpan>,
}

impl PlacedLog {
    /// The log at `path`, rotated past `max_bytes`.
    pub fn new(path: PathBuf, max_bytes: u64) -> Self {
        Self {
            path,
            max_bytes,
            file: None,
            bytes: 0,
            trouble: LogEvery::default(),
            spans: BTreeMap::new(),
        }
    }

    /// Records the placements of an ack that came through `sidecar` at
    /// `acked_unix_nanos`.
    pub fn record(
        &mut self,
        acked_unix_nanos: i64,
        sidecar: &str,
        placed: Vec<Placement>,
        counters: &Counters,
    ) {
        if placed.is_empty() {
            return;
        }
        let mut lines = String::new();
        for placement in placed {
            let events = placement
                .last_sequence
                .saturating_sub(placement.first_sequence)
                .saturating_add(1);
            let span = self
                .spans
                .entry((placement.topic.clone(), placement.partition))
                .or_insert_with(|| PlacedSpan {
                    topic: placement.topic.clone(),
                    partition: placement.partition,
                    first_offset: placement.first_offset,
                    last_offset: placement.last_offset,
                    events: 0,
                });
            span.first_offset = span.first_offset.min(placement.first_offset);
            span.last_offset = span.last_offset.max(placement.last_offset);
            span.events = span.events.saturating_add(events);
            Counters::bump(&counters.placed, events);
            counters
                .kafka_partition
                .store(i64::from(placement.partition), Relaxed);
            counters.kafka_offset.store(placement.last_offset, Relaxed);
            lines.push_str(
                &PlacedRow {
                    acked_unix_nanos,
                    sidecar: sidecar.to_string(),
                    placement,
                }
                .encode(),
            );
        }
        if let Err(err) = self.append(lines.as_bytes()) {
            self.file = None;
            if let Some(unlogged) = self.trouble.tick() {
                warn!(path = %self.path.display(), %err, also_since_last_log = unlogged, "cannot write where acknowledged events went; lines left out (this warning at most every 10 s)");
            }
        }
    }

    /// Where this run's events went, per topic and partition.
    pub fn spans(&self) -> Vec<PlacedSpan> {
        self.spans.values().cloned().collect()
    }

    /// Writes what is buffered (at each ack: a reader sees whole acks).
    fn append(&mut self, lines: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() || self.bytes >= self.max_bytes {
            self.open()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.write_all(lines)?;
        file.flush()?;
        self.bytes += lines.len() as u64;
        Ok(())
    }

    /// Opens the file for appending, rotating it first when it is full;
    /// a new file starts with the header.
    fn open(&mut self) -> std::io::Result<()> {
        self.file = None;
        let mut bytes = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if bytes >= self.max_bytes {
            let mut older = self.path.clone().into_os_string();
            older.push(".1");
            std::fs::rename(&self.path, older)?;
            bytes = 0;
        }
        let mut file = BufWriter::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?,
        );
        if bytes == 0 {
            file.write_all(HEADER.as_bytes())?;
            file.write_all(b"\n")?;
            bytes = HEADER.len() as u64 + 1;
        }
        self.bytes = bytes;
        self.file = Some(file);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(first: u64, last: u64, offset: i64) -> Placement {
        Placement {
            client_id: "c1".into(),
            incarnation: 7,
            first_sequence: first,
            last_sequence: last,
            topic: "t".into(),
            partition: 2,
            first_offset: offset,
            last_offset: offset + i64::try_from(last - first).unwrap_or(0),
            master_id: "M1".into(),
            written_unix_nanos: 1_000,
        }
    }

    #[test]
    fn every_placement_is_a_line_under_one_header_and_sums_up_per_partition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = placed_path(&dir.path().join("safeData.csv"));
        assert_eq!(path, dir.path().join("safeData.placed.csv"));
        let counters = Counters::default();
        let mut log = PlacedLog::new(path.clone(), MAX_BYTES);
        log.record(2_000, "S1", vec![placement(1, 10, 100)], &counters);
        log.record(3_000, "S2", vec![placement(11, 12, 200)], &counters);
        let text = std::fs::read_to_string(&path).expect("placed file");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER);
        let rows: Vec<PlacedRow> = lines[1..]
            .iter()
            .filter_map(|l| PlacedRow::parse(l))
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].sidecar, "S2");
        assert!(rows[0].holds(7, 10) && !rows[0].holds(7, 11));
        assert_eq!(
            log.spans(),
            [PlacedSpan {
                topic: "t".into(),
                partition: 2,
                first_offset: 100,
                last_offset: 201,
                events: 12,
            }]
        );
        assert_eq!(counters.kafka_partition.load(Relaxed), 2);
        assert_eq!(counters.kafka_offset.load(Relaxed), 201);
        assert_eq!(counters.placed.load(Relaxed), 12);
    }

    #[test]
    fn past_its_bound_the_file_turns_over_and_one_older_file_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("safeData.placed.csv");
        let counters = Counters::default();
        let mut log = PlacedLog::new(path.clone(), 400);
        for i in 0..20 {
            log.record(
                2_000,
                "S1",
                vec![placement(i * 10 + 1, i * 10 + 10, 0)],
                &counters,
            );
        }
        let now = std::fs::metadata(&path).expect("file").len();
        let older = std::fs::metadata(dir.path().join("safeData.placed.csv.1"))
            .expect("older")
            .len();
        // A file turns over once it is past the bound: one ack's lines more at most.
        assert!(now < 400 + 200 && older < 400 + 200, "{now} {older}");
        let text = std::fs::read_to_string(&path).expect("placed file");
        assert!(
            text.starts_with(HEADER),
            "a new file starts with the header"
        );
        assert!(text.lines().skip(1).all(|l| PlacedRow::parse(l).is_some()));
    }

    #[test]
    fn a_file_that_cannot_be_written_costs_the_ack_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory where the file should be: every open fails.
        let path = dir.path().join("safeData.placed.csv");
        std::fs::create_dir(&path).expect("dir");
        let counters = Counters::default();
        let mut log = PlacedLog::new(path, MAX_BYTES);
        log.record(2_000, "S1", vec![placement(1, 1, 5)], &counters);
        assert_eq!(log.spans().len(), 1, "the stats still know");
        assert_eq!(counters.kafka_offset.load(Relaxed), 5);
    }
}
