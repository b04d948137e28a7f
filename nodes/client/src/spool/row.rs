//! One spool row: the codec of `safeData.csv`.
//!
//! A row is one event that is not yet acknowledged end to end, as a CSV line
//! under this header:
//!
//! ```text
//! sequence,id,time,source,type,datacontenttype,subject,extensions,origin,position,encoding,data,crc32
//! ```
//!
//! - `data` is the event data as UTF-8 text when it is text without control
//!   characters (`encoding=utf8`), otherwise base64 (`encoding=base64`), so any
//!   payload round-trips byte for byte and a row never spans lines.
//! - `extensions` is a JSON object; `origin`/`position` say which source and
//!   where in it the event was read (files resume from there after a crash).
//!   A file source's position names its file too: `OFFSET@DEV:INO:LEN:CRC`
//!   (device, inode, fingerprint length and CRC-32, as [`FileIdentity`]),
//!   so a row read back still says which file its offset is in after a
//!   rotation or a copytruncate. Rows written before that have the offset
//!   alone, and still decode.
//! - `crc32` covers the rest of the row: a torn or garbled row is recognised,
//!   never half-trusted.
//! - `sequence` is the event's number, followed by `:PREV` when the client
//!   handed over another event of the same incarnation just before it (the
//!   `previous_sequence` link `smesh-console audit` follows). Rows written
//!   before it have the number alone: no link.
//! - The event's incarnation has no column: it is part of the `id`
//!   (`smesh_core::event::event_id`), read back from there. Rows written
//!   before incarnations existed have ids without one: incarnation 0, the
//!   same format, nothing to migrate.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use smesh_core::event::{LEGACY_INCARNATION, SPEC_VERSION, parse_event_id};
use smesh_core::time::parse_rfc3339;
use smesh_proto::mesh::Event;

use crate::csv_line::CsvLine;
use crate::source::FileIdentity;

/// The header row; also how a spool file is recognised.
pub const HEADER: &str = "sequence,id,time,source,type,datacontenttype,subject,extensions,origin,position,encoding,data,crc32";

const FIELDS: usize = 12;

/// Where in which source an event was read, so the source can resume there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Names the source, e.g. `file:/var/log/readings.jsonl`.
    pub key: Arc<str>,
    /// Byte offset just past the event's line.
    pub position: u64,
    /// Which file `position` is in (file sources), so that a rotated or
    /// truncated file is not resumed at another file's offset. Kept in the
    /// row's `position` column; `None` in rows written before it was.
    pub file: Option<FileIdentity>,
}

/// Why a row could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// The row is not what was written: torn by a crash, or edited.
    #[error("checksum mismatch (torn or edited row)")]
    Checksum,
    /// The line is not a spool row at all.
    #[error("no checksum column")]
    NoChecksum,
    /// The checksum holds but a column does not decode (written by another
    /// version, or a bug): says which and why.
    #[error("{0}")]
    Field(String),
}

/// Encodes rows into a reused buffer (building a `csv::Writer` per row
/// allocates and zeroes 8 KiB, more than the row itself costs).
///
/// Fields are quoted as RFC 4180 and the `csv` crate's reader expect: only
/// when they hold a comma, a quote or a line break, with quotes doubled.
/// Rows stay on one line because attributes never hold control characters
/// (events are validated before they reach the spool, file paths are
/// checked) and data with any is written as base64.
#[derive(Debug, Default)]
pub struct RowEncoder {
    /// The row being encoded, reused from row to row.
    row: Vec<u8>,
    /// The data column (text or base64), reused from row to row.
    data: String,
}

fn push_field(row: &mut Vec<u8>, field: &str) {
    if field
        .bytes()
        .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
    {
        row.push(b'"');
        for b in field.bytes() {
            if b == b'"' {
                row.push(b'"');
            }
            row.push(b);
        }
        row.push(b'"');
    } else {
        row.extend_from_slice(field.as_bytes());
    }
}

impl RowEncoder {
    /// Encodes one row, newline included; the slice lives until the next call.
    pub fn encode(&mut self, event: &Event, origin: Option<&Origin>) -> &[u8] {
        use std::fmt::Write as _;
        self.data.clear();
        let encoding = match std::str::from_utf8(&event.data) {
            Ok(text) if is_text(text) => {
                self.data.push_str(text);
                Encoding::Utf8
            }
            _ => {
                BASE64.encode_string(&event.data, &mut self.data);
                Encoding::Base64
            }
        };
        self.head(event, origin, encoding);
        let row = &mut self.row;
        push_field(row, &self.data);
        let crc = crc32fast::hash(row);
        let _ = writeln!(Buffer(row), ",{crc:08x}");
        row
    }

    /// Encodes a row up to its data column: everything before the data,
    /// the comma before it included. For data too large to hold, which is
    /// written after it in pieces (quoted, or base64) and followed by
    /// `,crc32` over all that precedes it; the slice lives until the next call.
    pub fn encode_head(
        &mut self,
        event: &Event,
        origin: Option<&Origin>,
        encoding: Encoding,
    ) -> &[u8] {
        self.head(event, origin, encoding);
        &self.row
    }

    fn head(&mut self, event: &Event, origin: Option<&Origin>, encoding: Encoding) {
        use std::fmt::Write as _;
        let row = &mut self.row;
        row.clear();
        let _ = match event.previous_sequence {
            0 => write!(Buffer(row), "{},", event.sequence),
            previous => write!(Buffer(row), "{}:{previous},", event.sequence),
        };
        push_field(row, &event.id);
        row.push(b',');
        if event.time_unix_nanos > 0 {
            let _ = write!(
                Buffer(row),
                "{}",
                humantime::format_rfc3339_nanos(smesh_core::time::from_unix_nanos(
                    event.time_unix_nanos
                ))
            );
        }
        for field in [
            event.source.as_str(),
            event.r#type.as_str(),
            event.datacontenttype.as_str(),
            event.subject.as_deref().unwrap_or(""),
        ] {
            row.push(b',');
            push_field(row, field);
        }
        row.push(b',');
        if !event.extensions.is_empty() {
            let sorted: BTreeMap<&String, &String> = event.extensions.iter().collect();
            push_field(row, &serde_json::to_string(&sorted).unwrap_or_default());
        }
        row.push(b',');
        if let Some(origin) = origin {
            push_field(row, &origin.key);
            let _ = write!(Buffer(row), ",{}", origin.position);
            if let Some(file) = &origin.file {
                let _ = write!(
                    Buffer(row),
                    "@{}:{}:{}:{:08x}",
                    file.dev,
                    file.ino,
                    file.fingerprint_len,
                    file.fingerprint
                );
            }
        } else {
            row.push(b',');
        }
        row.push(b',');
        row.extend_from_slice(encoding.name().as_bytes());
        row.push(b',');
    }
}

/// How a row holds its event's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// As it is: UTF-8 text without control characters (tabs allowed).
    Utf8,
    /// Base64, for anything else.
    Base64,
}

impl Encoding {
    /// The `encoding` column's value.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf8",
            Encoding::Base64 => "base64",
        }
    }
}

/// Whether `text` may stand in a row as it is ([`Encoding::Utf8`]).
pub fn is_text(text: &str) -> bool {
    !text.chars().any(|c| c.is_control() && c != '\t')
}

/// `fmt::Write` into a byte buffer.
struct Buffer<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Buffer<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Encodes one row, newline included.
pub fn encode_row(event: &Event, origin: Option<&Origin>) -> Vec<u8> {
    RowEncoder::default().encode(event, origin).to_vec()
}

/// Decodes one row (without its newline).
pub fn decode_row(line: &[u8], client_id: &str) -> Result<(Event, Option<Origin>), RowError> {
    RowDecoder::default().decode(line, client_id)
}

/// Decodes rows with one CSV parser built once (building `csv_core`'s
/// state machine per row took 90% of a replay's time).
#[derive(Debug, Default)]
pub struct RowDecoder {
    csv: CsvLine,
}

impl RowDecoder {
    /// Decodes one row (without its newline).
    pub fn decode(
        &mut self,
        line: &[u8],
        client_id: &str,
    ) -> Result<(Event, Option<Origin>), RowError> {
        let comma = line
            .iter()
            .rposition(|b| *b == b',')
            .ok_or(RowError::NoChecksum)?;
        let (body, crc_text) = (&line[..comma], &line[comma + 1..]);
        let crc = std::str::from_utf8(crc_text)
            .ok()
            .and_then(|t| u32::from_str_radix(t.trim_end_matches('\r'), 16).ok())
            .ok_or(RowError::NoChecksum)?;
        if crc32fast::hash(body) != crc {
            return Err(RowError::Checksum);
        }
        let fields = self.csv.split(body).map_err(RowError::Field)?;
        if fields.len() != FIELDS {
            return Err(RowError::Field(format!(
                "expected {FIELDS} columns, found {}",
                fields.len()
            )));
        }
        let mut text = [""; FIELDS];
        for (i, slot) in text.iter_mut().enumerate() {
            *slot = fields.text(i).map_err(RowError::Field)?;
        }
        let field = |i: usize| text[i];
        let bad = |what: &str| RowError::Field(what.to_string());
        let (sequence, previous) = field(0).split_once(':').unwrap_or((field(0), "0"));
        let sequence: u64 = sequence
            .parse()
            .map_err(|_| bad("sequence is not a number"))?;
        let previous_sequence: u64 = previous
            .parse()
            .ok()
            .filter(|previous| *previous < sequence || *previous == 0)
            .ok_or_else(|| bad("the previous sequence is not a number below the sequence"))?;
        // The id names the incarnation; an id of another form (edited, or a
        // client id changed since) is sent as it is, as incarnation 0.
        let incarnation = match parse_event_id(client_id, field(1)) {
            Some((incarnation, seq)) if seq == sequence => incarnation,
            _ => LEGACY_INCARNATION,
        };
        let time_unix_nanos = match field(2) {
            "" => 0,
            text => parse_rfc3339(text).ok_or_else(|| bad("time is not RFC 3339"))?,
        };
        let extensions = match field(7) {
            "" => HashMap::new(),
            text => serde_json::from_str::<HashMap<String, String>>(text).map_err(|err| {
                RowError::Field(format!("extensions are not a JSON object: {err}"))
            })?,
        };
        let origin = match (field(8), field(9)) {
            ("", _) => None,
            (key, position) => {
                let (position, file) = match position.split_once('@') {
                    Some((position, file)) => (
                        position,
                        Some(parse_file(file).ok_or_else(|| bad("position names no file"))?),
                    ),
                    None => (position, None),
                };
                Some(Origin {
                    key: Arc::from(key),
                    position: position
                        .parse()
                        .map_err(|_| bad("position is not a number"))?,
                    file,
                })
            }
        };
        let data = match field(10) {
            "utf8" => Bytes::copy_from_slice(field(11).as_bytes()),
            "base64" => Bytes::from(
                BASE64
                    .decode(field(11))
                    .map_err(|err| RowError::Field(format!("data is not base64: {err}")))?,
            ),
            other => return Err(RowError::Field(format!("unknown encoding {other:?}"))),
        };
        let event = Event {
            id: field(1).to_string(),
            source: field(3).to_string(),
            r#type: field(4).to_string(),
            specversion: SPEC_VERSION.to_string(),
            time_unix_nanos,
            datacontenttype: field(5).to_string(),
            subject: Some(field(6)).filter(|s| !s.is_empty()).map(str::to_string),
            extensions,
            data,
            client_id: client_id.to_string(),
            sequence,
            incarnation,
            // The sidecar's to say.
            client_authenticated: false,
            previous_sequence,
            // The hops are the sidecar's and the master's to say.
            sidecar_id: String::new(),
            sidecar_received_unix_nanos: 0,
            master_id: String::new(),
            master_received_unix_nanos: 0,
        };
        if event.id.is_empty() {
            return Err(bad("id is empty"));
        }
        Ok((event, origin))
    }
}

/// `DEV:INO:LEN:CRC` of a `position` column, as [`RowEncoder`] writes it.
fn parse_file(text: &str) -> Option<FileIdentity> {
    let mut parts = text.split(':');
    let file = FileIdentity {
        dev: parts.next()?.parse().ok()?,
        ino: parts.next()?.parse().ok()?,
        fingerprint_len: parts.next()?.parse().ok()?,
        fingerprint: u32::from_str_radix(parts.next()?, 16).ok()?,
    };
    parts.next().is_none().then_some(file)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{event, origin};
    use super::*;

    #[test]
    fn rows_round_trip_any_payload() {
        let payloads: Vec<Vec<u8>> = vec![
            b"plain text".to_vec(),
            b"commas, \"quotes\" and\ttabs".to_vec(),
            b"line\nbreak\r\n".to_vec(),
            vec![0, 159, 146, 150, 255, b'\n', b','],
            Vec::new(),
            "ümlaut ✓".as_bytes().to_vec(),
        ];
        for (i, data) in payloads.iter().enumerate() {
            let e = event(i as u64 + 1, data);
            let row = encode_row(&e, Some(&origin(99)));
            assert_eq!(
                row.iter().filter(|b| **b == b'\n').count(),
                1,
                "one line per row"
            );
            let (back, o) = decode_row(&row[..row.len() - 1], "c1").expect("decodes");
            assert_eq!(back, e, "payload {data:?}");
            assert_eq!(o, Some(origin(99)));
        }
    }

    #[test]
    fn random_attribute_text_round_trips() {
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<char> = "ab,\"\n\r\t ;'ü✓\\{}:".chars().collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let text = |rng: &mut rand::rngs::StdRng| -> String {
            let n = rng.random_range(0..12);
            (0..n)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect()
        };
        for seq in 1..500u64 {
            let mut e = event(seq, text(&mut rng).as_bytes());
            e.id = format!("c1-{seq}{}", text(&mut rng));
            e.source = text(&mut rng);
            e.r#type = text(&mut rng);
            e.datacontenttype = text(&mut rng);
            e.subject = Some(text(&mut rng)).filter(|s| !s.is_empty());
            e.extensions.insert("x".into(), text(&mut rng));
            let origin = Origin {
                key: Arc::from(text(&mut rng).as_str()),
                position: seq,
                file: None,
            };
            let origin = (!origin.key.is_empty()).then_some(origin);
            let row = encode_row(&e, origin.as_ref());
            let (back, o) = decode_row(&row[..row.len() - 1], "c1").expect("decodes");
            assert_eq!((back, o), (e, origin));
        }
    }

    #[test]
    fn the_link_to_the_previous_event_round_trips_and_rows_without_it_decode() {
        let mut e = event(7, b"x");
        e.previous_sequence = 5;
        let row = encode_row(&e, None);
        assert!(
            row.starts_with(b"7:5,"),
            "{}",
            String::from_utf8_lossy(&row)
        );
        let (back, _) = decode_row(&row[..row.len() - 1], "c1").expect("decodes");
        assert_eq!(back, e);
        // No link (0): the number alone, as rows written before links.
        let row = encode_row(&event(7, b"x"), None);
        assert!(row.starts_with(b"7,"));
        let (back, _) = decode_row(&row[..row.len() - 1], "c1").expect("decodes");
        assert_eq!(back.previous_sequence, 0);
        // A link at or after the event itself is no link: refused.
        let mut e = event(7, b"x");
        e.previous_sequence = 7;
        let row = encode_row(&e, None);
        assert!(decode_row(&row[..row.len() - 1], "c1").is_err());
    }

    #[test]
    fn the_incarnation_comes_back_from_the_id_and_old_rows_still_decode() {
        let mut e = event(7, b"x");
        e.incarnation = 0x0123_4567_89ab_cdef;
        e.id = smesh_core::event::event_id("c1", e.incarnation, 7);
        let row = encode_row(&e, None);
        let (back, _) = decode_row(&row[..row.len() - 1], "c1").expect("decodes");
        assert_eq!(back.incarnation, 0x0123_4567_89ab_cdef);
        assert_eq!(back, e);
        // A row written before incarnations existed (id `c1-7`).
        let old = encode_row(&event(7, b"x"), None);
        let (back, _) = decode_row(&old[..old.len() - 1], "c1").expect("old row decodes");
        assert_eq!(
            (back.id.as_str(), back.incarnation),
            ("c1-7", LEGACY_INCARNATION)
        );
    }

    #[test]
    fn a_file_sources_position_keeps_its_file_and_old_rows_still_decode() {
        let file = FileIdentity {
            dev: 64769,
            ino: 1_234_567,
            fingerprint_len: 1024,
            fingerprint: 0x3af2_c1d0,
        };
        let with_file = Origin {
            file: Some(file),
            ..origin(81_234)
        };
        let row = encode_row(&event(3, b"x"), Some(&with_file));
        assert!(
            String::from_utf8_lossy(&row).contains(",81234@64769:1234567:1024:3af2c1d0,"),
            "{}",
            String::from_utf8_lossy(&row)
        );
        let (_, back) = decode_row(&row[..row.len() - 1], "c1").expect("decodes");
        assert_eq!(back, Some(with_file));
        // Written before rows named their file: the offset alone.
        let old = encode_row(&event(3, b"x"), Some(&origin(81_234)));
        let (_, back) = decode_row(&old[..old.len() - 1], "c1").expect("old row decodes");
        assert_eq!(back, Some(origin(81_234)));
    }

    #[test]
    fn binary_payloads_are_base64_and_text_stays_readable() {
        let text = encode_row(&event(1, b"{\"t\":21.5}"), None);
        assert!(String::from_utf8_lossy(&text).contains(",utf8,"));
        let binary = encode_row(&event(2, &[0, 1, 2]), None);
        assert!(String::from_utf8_lossy(&binary).contains(",base64,AAEC,"));
    }

    #[test]
    fn a_changed_byte_fails_the_checksum() {
        let mut row = encode_row(&event(1, b"hello"), None);
        let at = row.iter().position(|b| *b == b'h').expect("payload");
        row[at] = b'j';
        assert_eq!(
            decode_row(&row[..row.len() - 1], "c1").map(|_| ()),
            Err(RowError::Checksum)
        );
        assert_eq!(
            decode_row(b"Sidecar1;127.0.0.1;", "c1").map(|_| ()),
            Err(RowError::NoChecksum)
        );
    }
}
