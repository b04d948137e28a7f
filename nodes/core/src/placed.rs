//! `safeData.placed.csv`: where a client's acknowledged events went.
//!
//! The master's ack says, per run of one client identity's events, the
//! topic, partition and offsets they were written at (see
//! `smesh.mesh.v1.Placement`). A client appends each to this file beside
//! its spool, one line a placement, `;`-separated like its other files:
//!
//! ```text
//! acked;incarnation;first_sequence;last_sequence;topic;partition;first_offset;last_offset;master;written;sidecar
//! 2026-12-07T12:00:00.127000Z;6743a1c09f3e5b2d;1001;1064;smesh.events;0;52310;52377;M1;2026-12-07T12:00:00.126000Z;S1
//! ```
//!
//! `smesh-console trace <ce_id> --placed FILE` finds an event's line here
//! and reads the record at those offsets. The client writes it and the
//! console reads it, so the format lives here.

use smesh_proto::mesh::Placement;

use crate::time::{parse_rfc3339, rfc3339_micros};

/// The file's first line.
pub const HEADER: &str = "acked;incarnation;first_sequence;last_sequence;topic;partition;first_offset;last_offset;master;written;sidecar";

/// One line: a placement, when its ack reached the client, and through
/// which sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedRow {
    /// When the client received the ack (its clock).
    pub acked_unix_nanos: i64,
    /// The sidecar the ack came through.
    pub sidecar: String,
    /// What the master said.
    pub placement: Placement,
}

impl PlacedRow {
    /// Whether event `sequence` of `incarnation` is in this run.
    pub fn holds(&self, incarnation: u64, sequence: u64) -> bool {
        self.placement.incarnation == incarnation
            && (self.placement.first_sequence..=self.placement.last_sequence).contains(&sequence)
    }

    /// The line, with its newline. A `;` or a line break in a name (never
    /// in a valid id or topic) becomes `_`, so a line stays a line.
    pub fn encode(&self) -> String {
        let p = &self.placement;
        format!(
            "{};{:016x};{};{};{};{};{};{};{};{};{}\n",
            rfc3339_micros(self.acked_unix_nanos),
            p.incarnation,
            p.first_sequence,
            p.last_sequence,
            field(&p.topic),
            p.partition,
            p.first_offset,
            p.last_offset,
            field(&p.master_id),
            rfc3339_micros(p.written_unix_nanos),
            field(&self.sidecar),
        )
    }

    /// A line as [`Self::encode`] writes it (without its newline), or
    /// `None` for the header and anything else.
    pub fn parse(line: &str) -> Option<Self> {
        let fields: Vec<&str> = line.trim_end_matches(['\r', '\n']).split(';').collect();
        let [
            acked,
            incarnation,
            first_sequence,
            last_sequence,
            topic,
            partition,
            first_offset,
            last_offset,
            master,
            written,
            sidecar,
        ] = fields.as_slice()
        else {
            return None;
        };
        Some(Self {
            acked_unix_nanos: parse_rfc3339(acked)?,
            sidecar: (*sidecar).to_string(),
            placement: Placement {
                client_id: String::new(),
                incarnation: u64::from_str_radix(incarnation, 16).ok()?,
                first_sequence: first_sequence.parse().ok()?,
                last_sequence: last_sequence.parse().ok()?,
                topic: (*topic).to_string(),
                partition: partition.parse().ok()?,
                first_offset: first_offset.parse().ok()?,
                last_offset: last_offset.parse().ok()?,
                master_id: (*master).to_string(),
                written_unix_nanos: parse_rfc3339(written)?,
            },
        })
    }
}

fn field(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains([';', '\n', '\r']) {
        text.replace([';', '\n', '\r'], "_").into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> PlacedRow {
        PlacedRow {
            acked_unix_nanos: 1_795_000_000_127_000_000,
            sidecar: "S1".into(),
            placement: Placement {
                client_id: String::new(),
                incarnation: 0x6743_a1c0_9f3e_5b2d,
                first_sequence: 1001,
                last_sequence: 1064,
                topic: "smesh.events".into(),
                partition: 0,
                first_offset: 52310,
                last_offset: 52377,
                master_id: "M1".into(),
                written_unix_nanos: 1_795_000_000_126_000_000,
            },
        }
    }

    #[test]
    fn a_line_reads_back_as_written() {
        let line = row().encode();
        assert_eq!(
            line,
            "2026-11-18T11:06:40.127000Z;6743a1c09f3e5b2d;1001;1064;smesh.events;0;52310;52377;M1;2026-11-18T11:06:40.126000Z;S1\n"
        );
        assert_eq!(PlacedRow::parse(&line), Some(row()));
        assert_eq!(HEADER.split(';').count(), line.split(';').count());
    }

    #[test]
    fn the_header_and_broken_lines_are_not_rows() {
        assert_eq!(PlacedRow::parse(HEADER), None);
        assert_eq!(PlacedRow::parse(""), None);
        let line = row().encode();
        assert_eq!(PlacedRow::parse(&line.replace(";0;", ";zero;")), None);
        assert_eq!(
            PlacedRow::parse(&format!("{};extra", line.trim_end())),
            None
        );
    }

    #[test]
    fn a_separator_in_a_name_cannot_split_a_line() {
        let mut hostile = row();
        hostile.sidecar = "S1;\nfake".into();
        let line = hostile.encode();
        assert_eq!(line.lines().count(), 1);
        assert_eq!(
            PlacedRow::parse(&line).map(|r| r.sidecar),
            Some("S1__fake".into())
        );
    }

    #[test]
    fn a_row_holds_its_incarnations_sequences() {
        let row = row();
        assert!(row.holds(0x6743_a1c0_9f3e_5b2d, 1001));
        assert!(row.holds(0x6743_a1c0_9f3e_5b2d, 1064));
        assert!(!row.holds(0x6743_a1c0_9f3e_5b2d, 1065));
        assert!(!row.holds(1, 1010));
    }
}
