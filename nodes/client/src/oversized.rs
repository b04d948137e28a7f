//! Readings larger than `--max-event-bytes`: never held in memory.
//!
//! A source that meets a line (or an HTTP body) larger than the limit writes
//! it, piece by piece as it reads it, into a spill file beside the spool
//! (`safeData.oversized-<n>.tmp`) and hands the pipeline an [`Oversized`]
//! instead of the data. The pipeline gives it an id like any reading and
//! streams it into `safeData.rejected.csv` as a whole spool row (data as
//! text when it is text, else base64; CRC over the row), so the rejected
//! file keeps every byte while the client holds at most a buffer's worth of
//! it. The spill file is removed once the row is written (and at the next
//! start if the client died in between).

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use tracing::warn;

use crate::spool::{Encoding, RejectedFile, is_text};

/// Bytes copied at a time; a multiple of 3 so that base64 pieces join up.
const PIECE_BYTES: usize = 48 * 1024;

/// Where sources put what is too large to hold: beside the spool.
#[derive(Debug, Clone)]
pub struct SpillDir {
    /// The spool's directory.
    dir: PathBuf,
    /// File name prefix: `safeData.oversized-`.
    prefix: String,
}

/// Numbers spill files apart within one process.
static SPILLS: AtomicU64 = AtomicU64::new(0);

impl SpillDir {
    /// Spill files beside `spool` (`safeData.csv` → `safeData.oversized-<n>.tmp`).
    pub fn beside(spool: &Path) -> Self {
        let stem = spool.file_stem().map_or_else(
            || "safeData".to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        let dir = match spool.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Self {
            dir,
            prefix: format!("{stem}.oversized-"),
        }
    }

    /// Starts a spill file for one oversized reading.
    pub fn create(&self) -> io::Result<Spill> {
        let n = SPILLS.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("{}{}-{n}.tmp", self.prefix, std::process::id()));
        let file = File::create(&path)?;
        Ok(Spill {
            file: BufWriter::with_capacity(PIECE_BYTES, file),
            oversized: Some(Oversized {
                path,
                size: 0,
                text: true,
            }),
            held_cr: false,
            partial_char: Vec::new(),
        })
    }

    /// Removes spill files a previous run left behind (it died before it
    /// moved them into the rejected file; their lines are read again).
    pub fn remove_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&self.prefix) && name.ends_with(".tmp") {
                if let Err(err) = std::fs::remove_file(entry.path()) {
                    warn!(path = %entry.path().display(), %err, "cannot remove a leftover spill file");
                }
            }
        }
    }
}

/// A reading too large to hold: its data is in a spill file, removed when
/// this is dropped.
#[derive(Debug)]
pub struct Oversized {
    /// The spill file.
    path: PathBuf,
    /// How many bytes of data.
    pub size: u64,
    /// Whether the data is UTF-8 text without control characters.
    pub text: bool,
}

impl Drop for Oversized {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Oversized {
    /// How the rejected row holds the data.
    pub fn encoding(&self) -> Encoding {
        if self.text {
            Encoding::Utf8
        } else {
            Encoding::Base64
        }
    }

    /// Appends the rejected row: `head` is the spool row up to its data
    /// column ([`crate::spool::RowEncoder::encode_head`] with
    /// [`Self::encoding`]); the data follows from the spill file in pieces,
    /// then the row's CRC. Blocking.
    pub fn write_rejected(
        &self,
        rejected: &mut RejectedFile,
        reason: &str,
        head: &[u8],
    ) -> io::Result<()> {
        let mut spill = File::open(&self.path)?;
        let encoding = self.encoding();
        rejected.write_streamed(reason, |sink| {
            let mut crc = crc32fast::Hasher::new();
            let mut put = |piece: &[u8]| -> io::Result<()> {
                crc.update(piece);
                sink(piece)
            };
            put(head)?;
            if encoding == Encoding::Utf8 {
                put(b"\"")?;
            }
            let mut buf = vec![0u8; PIECE_BYTES];
            let mut encoded = String::new();
            let mut copied = 0u64;
            loop {
                let n = read_full(&mut spill, &mut buf)?;
                if n == 0 {
                    break;
                }
                copied += n as u64;
                let piece = &buf[..n];
                match encoding {
                    Encoding::Utf8 => {
                        for (i, part) in piece.split(|b| *b == b'"').enumerate() {
                            if i > 0 {
                                put(b"\"\"")?;
                            }
                            put(part)?;
                        }
                    }
                    Encoding::Base64 => {
                        encoded.clear();
                        BASE64.encode_string(piece, &mut encoded);
                        put(encoded.as_bytes())?;
                    }
                }
            }
            if copied != self.size {
                return Err(io::Error::other(format!(
                    "spill file {} holds {copied} bytes, not {}",
                    self.path.display(),
                    self.size
                )));
            }
            if encoding == Encoding::Utf8 {
                put(b"\"")?;
            }
            let crc = crc.finalize();
            sink(format!(",{crc:08x}").as_bytes())
        })
    }
}

/// Reads until `buf` is full or the end; base64 pieces must be whole
/// multiples of 3 bytes except the last.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// How often the warning about oversized readings is logged at most.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Keeps a warning that a source can repeat at will (one per oversized
/// line) to one per [`LOG_EVERY`], counting what it left out.
#[derive(Debug, Default)]
pub struct SkipLog {
    /// When the warning was last logged.
    last: Option<Instant>,
    /// Occurrences since then that were not logged.
    unlogged: u64,
}

impl SkipLog {
    /// One more occurrence: `Some(occurrences not logged before it)` when
    /// it is to be logged.
    pub fn tick(&mut self) -> Option<u64> {
        self.tick_at(Instant::now())
    }

    fn tick_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < LOG_EVERY => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }
}

/// An oversized reading being written to its spill file.
#[derive(Debug)]
pub struct Spill {
    file: BufWriter<File>,
    /// What it becomes; `Some` until finished (dropping a `Spill` unfinished
    /// drops this too, and with it the file).
    oversized: Option<Oversized>,
    /// A `\r` at the end of the last piece: part of the data unless the
    /// line ends right after it (`\r\n` line ends are not data).
    held_cr: bool,
    /// The start of a UTF-8 character cut off at the end of the last piece.
    partial_char: Vec<u8>,
}

impl Spill {
    /// Data bytes so far.
    pub fn size(&self) -> u64 {
        self.oversized.as_ref().map_or(0, |o| o.size) + u64::from(self.held_cr)
    }

    /// Appends data (without the line's `\n`).
    pub fn write(&mut self, mut piece: &[u8]) -> io::Result<()> {
        if piece.is_empty() {
            return Ok(());
        }
        if self.held_cr {
            self.held_cr = false;
            self.put(b"\r")?;
        }
        if let Some(rest) = piece.strip_suffix(b"\r") {
            self.held_cr = true;
            piece = rest;
        }
        self.put(piece)
    }

    fn put(&mut self, piece: &[u8]) -> io::Result<()> {
        let Some(oversized) = self.oversized.as_mut() else {
            return Err(io::Error::other("spill file already finished"));
        };
        oversized.size += piece.len() as u64;
        if oversized.text {
            oversized.text = if self.partial_char.is_empty() {
                scan_text(piece, &mut self.partial_char)
            } else {
                let mut joined = std::mem::take(&mut self.partial_char);
                joined.extend_from_slice(piece);
                scan_text(&joined, &mut self.partial_char)
            };
        }
        self.file.write_all(piece)
    }

    /// The whole body is written (not a line: a `\r` at its end is data).
    pub fn finish_body(mut self) -> io::Result<Oversized> {
        if self.held_cr {
            self.held_cr = false;
            self.put(b"\r")?;
        }
        self.finish()
    }

    /// The whole line is written (a `\r` at its end was its line end, not
    /// data): flushes the spill file.
    pub fn finish(mut self) -> io::Result<Oversized> {
        self.file.flush()?;
        let mut oversized = self
            .oversized
            .take()
            .ok_or_else(|| io::Error::other("spill file already finished"))?;
        if !self.partial_char.is_empty() {
            oversized.text = false;
        }
        Ok(oversized)
    }
}

/// Whether `bytes` is text a row may hold as it is; an incomplete UTF-8
/// character at the end is left in `partial` for the next piece.
fn scan_text(bytes: &[u8], partial: &mut Vec<u8>) -> bool {
    partial.clear();
    match std::str::from_utf8(bytes) {
        Ok(text) => is_text(text),
        Err(err) => {
            let (valid, rest) = bytes.split_at(err.valid_up_to());
            let valid = std::str::from_utf8(valid).is_ok_and(is_text);
            if valid && err.error_len().is_none() {
                partial.extend_from_slice(rest);
                true
            } else {
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{Origin, decode_row, rejected_path};
    use smesh_proto::mesh::Event;

    fn spill(dir: &Path, pieces: &[&[u8]]) -> Oversized {
        let mut spill = SpillDir::beside(&dir.join("safeData.csv"))
            .create()
            .expect("spill");
        for piece in pieces {
            spill.write(piece).expect("write");
        }
        spill.finish().expect("finish")
    }

    /// Streams `data` (in `pieces`) into a rejected file and reads its row back.
    fn round_trip(pieces: &[&[u8]]) -> (Oversized, Event) {
        let dir = tempfile::tempdir().expect("tempdir");
        let oversized = spill(dir.path(), pieces);
        let event = Event {
            id: "c1-7".into(),
            source: "smesh://c1/file/in, \"x\"".into(),
            r#type: "t".into(),
            datacontenttype: "text/plain".into(),
            client_id: "c1".into(),
            sequence: 7,
            ..Event::default()
        };
        let origin = Origin {
            key: "file:/in".into(),
            position: 99,
            file: None,
        };
        let mut encoder = crate::spool::RowEncoder::default();
        let head = encoder
            .encode_head(&event, Some(&origin), oversized.encoding())
            .to_vec();
        let mut rejected = RejectedFile::new(rejected_path(&dir.path().join("safeData.csv")));
        oversized
            .write_rejected(&mut rejected, "too large", &head)
            .expect("write");
        let text = std::fs::read(rejected.path()).expect("read");
        let mut reader = csv::Reader::from_reader(text.as_slice());
        let record = reader.byte_records().next().expect("a row").expect("csv");
        assert_eq!(&record[1], b"too large");
        let (back, back_origin) = decode_row(&record[2], "c1").expect("the row decodes");
        assert_eq!(back_origin.map(|o| o.position), Some(99));
        (oversized, back)
    }

    #[test]
    fn text_is_kept_as_text_and_every_byte_survives() {
        let (oversized, event) = round_trip(&[b"ab\"c", "d, \u{fc}".as_bytes(), b"e\r"]);
        assert!(oversized.text);
        assert_eq!(
            &event.data[..],
            "ab\"cd, \u{fc}e".as_bytes(),
            "the \\r\\n end is dropped"
        );
        // A UTF-8 character cut between two pieces is still text.
        let umlaut = "\u{fc}".as_bytes();
        let (oversized, event) = round_trip(&[b"x", &umlaut[..1], &umlaut[1..], b"\ty"]);
        assert!(oversized.text);
        assert_eq!(&event.data[..], "x\u{fc}\ty".as_bytes());
    }

    #[test]
    fn binary_goes_base64_across_pieces() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (a, b) = big.split_at(70_001);
        let (oversized, event) = round_trip(&[a, b"\r", b]);
        assert!(!oversized.text);
        let mut expected = a.to_vec();
        expected.push(b'\r');
        expected.extend_from_slice(b);
        assert_eq!(event.data.len(), expected.len());
        assert!(event.data[..] == expected[..], "every byte, in order");
    }

    #[test]
    fn the_warning_is_logged_once_per_interval_with_what_it_left_out() {
        let mut log = SkipLog::default();
        let start = Instant::now();
        assert_eq!(log.tick_at(start), Some(0));
        assert_eq!(log.tick_at(start + Duration::from_secs(1)), None);
        assert_eq!(log.tick_at(start + Duration::from_secs(2)), None);
        assert_eq!(log.tick_at(start + LOG_EVERY), Some(2));
        assert_eq!(log.tick_at(start + LOG_EVERY), None);
    }

    #[test]
    fn the_spill_file_goes_when_the_reading_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let oversized = spill(dir.path(), &[b"data"]);
        let count = || std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(count(), 1);
        drop(oversized);
        assert_eq!(count(), 0);
        std::fs::write(dir.path().join("safeData.oversized-1-2.tmp"), "old").expect("write");
        std::fs::write(dir.path().join("safeData.csv"), "").expect("write");
        SpillDir::beside(&dir.path().join("safeData.csv")).remove_leftovers();
        assert_eq!(count(), 1, "only the spool is left");
    }
}
