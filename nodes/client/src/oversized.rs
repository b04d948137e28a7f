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
//!
//! When the filesystem is full ([`crate::spool::is_full`]) the spill file
//! cannot be written: the rest of the reading is then only counted (its
//! bytes are read and let go, so memory stays bounded and the source reads
//! on), the partial file is removed, and the rejected row says how large the
//! reading was and that its content could not be kept. A full disk thus
//! never stops a source nor makes it read the same line again.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use smesh_core::ratelimit::LogEvery;
use tracing::warn;

use crate::spool::{Encoding, RejectedFile, is_full, is_text};

/// Bytes copied at a time; a multiple of 3 so that base64 pieces join up.
const PIECE_BYTES: usize = 48 * 1024;

/// Where sources put what is too large to hold: beside the spool.
#[derive(Debug, Clone)]
pub struct SpillDir {
    /// The spool's directory.
    dir: PathBuf,
    /// File name prefix: `safeData.oversized-`.
    prefix: String,
    /// Test seam: spill files take this many bytes, then fail as on a full
    /// filesystem (`Some(0)`: they cannot even be created).
    #[cfg(test)]
    full_after: Option<u64>,
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
            #[cfg(test)]
            full_after: None,
        }
    }

    /// Test seam: these spill files fill the filesystem after `bytes`.
    #[cfg(test)]
    pub fn full_after(mut self, bytes: u64) -> Self {
        self.full_after = Some(bytes);
        self
    }

    /// Starts a spill file for one oversized reading. On a full filesystem
    /// the spill only counts what it is given (see the module docs); any
    /// other failure is an error.
    pub fn create(&self) -> io::Result<Spill> {
        let n = SPILLS.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("{}{}-{n}.tmp", self.prefix, std::process::id()));
        let created = File::create(&path);
        #[cfg(test)]
        let created = match self.full_after {
            Some(0) => Err(io::Error::from_raw_os_error(28)),
            _ => created,
        };
        let mut spill = Spill {
            file: None,
            oversized: Some(Oversized {
                path,
                size: 0,
                text: true,
                unkept: None,
            }),
            held_cr: false,
            partial_char: Vec::new(),
            #[cfg(test)]
            full_after: self.full_after,
        };
        match created {
            Ok(file) => spill.file = Some(BufWriter::with_capacity(PIECE_BYTES, file)),
            Err(err) if is_full(&err) => spill.cannot_keep(&err),
            Err(err) => return Err(err),
        }
        Ok(spill)
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
    /// Why the data is not in the spill file (the filesystem was full):
    /// only its size is known.
    pub unkept: Option<String>,
}

impl Drop for Oversized {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Oversized {
    /// How the rejected row holds the data.
    pub fn encoding(&self) -> Encoding {
        if self.text || self.unkept.is_some() {
            Encoding::Utf8
        } else {
            Encoding::Base64
        }
    }

    /// Appends the rejected row: `head` is the spool row up to its data
    /// column ([`crate::spool::RowEncoder::encode_head`] with
    /// [`Self::encoding`]); the data follows from the spill file in pieces,
    /// then the row's CRC. Blocking. Data that could not be kept leaves the
    /// row's data empty and its reason saying why.
    pub fn write_rejected(
        &self,
        rejected: &mut RejectedFile,
        reason: &str,
        head: &[u8],
    ) -> io::Result<()> {
        if let Some(why) = &self.unkept {
            let reason = format!(
                "{reason}; its {} bytes could not be kept: the filesystem was full when it was read ({why})",
                self.size
            );
            return rejected.write_streamed(&reason, |sink| {
                let mut row = head.to_vec();
                row.extend_from_slice(b"\"\"");
                let crc = crc32fast::hash(&row);
                sink(&row)?;
                sink(format!(",{crc:08x}").as_bytes())
            });
        }
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

/// How often the warning about readings a full filesystem kept from their
/// spill files is logged at most (one for every source).
static UNKEPT_LOG: Mutex<LogEvery> = Mutex::new(LogEvery::new(LOG_EVERY));

/// An oversized reading being written to its spill file.
#[derive(Debug)]
pub struct Spill {
    /// `None` once the filesystem was full: the rest is counted, not kept.
    file: Option<BufWriter<File>>,
    /// What it becomes; `Some` until finished (dropping a `Spill` unfinished
    /// drops this too, and with it the file).
    oversized: Option<Oversized>,
    /// A `\r` at the end of the last piece: part of the data unless the
    /// line ends right after it (`\r\n` line ends are not data).
    held_cr: bool,
    /// The start of a UTF-8 character cut off at the end of the last piece.
    partial_char: Vec<u8>,
    /// Test seam: fail as on a full filesystem past this many bytes.
    #[cfg(test)]
    full_after: Option<u64>,
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
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        if oversized.text {
            oversized.text = if self.partial_char.is_empty() {
                scan_text(piece, &mut self.partial_char)
            } else {
                let mut joined = std::mem::take(&mut self.partial_char);
                joined.extend_from_slice(piece);
                scan_text(&joined, &mut self.partial_char)
            };
        }
        let written = file.write_all(piece);
        #[cfg(test)]
        let written = match self.full_after {
            Some(limit) if oversized.size > limit => Err(io::Error::from_raw_os_error(28)),
            _ => written,
        };
        self.kept(written)
    }

    /// A write's outcome: on a full filesystem the spill gives up keeping
    /// the data and goes on counting it.
    fn kept(&mut self, written: io::Result<()>) -> io::Result<()> {
        match written {
            Err(err) if is_full(&err) => {
                self.cannot_keep(&err);
                Ok(())
            }
            other => other,
        }
    }

    /// The filesystem is full: drops the spill file (freeing what it held)
    /// and keeps only the count, with a warning at most every [`LOG_EVERY`].
    fn cannot_keep(&mut self, err: &io::Error) {
        if let Some(file) = self.file.take() {
            // Not flushed: what is buffered goes with the file.
            drop(file.into_parts());
        }
        let Some(oversized) = self.oversized.as_mut() else {
            return;
        };
        let _ = std::fs::remove_file(&oversized.path);
        oversized.unkept = Some(err.to_string());
        let tick = UNKEPT_LOG
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .tick();
        if let Some(unlogged) = tick {
            warn!(%err, read_so_far = oversized.size, also_since_last_log = unlogged, "the filesystem is full: a reading larger than --max-event-bytes cannot be set aside; reading goes on past it, and its row in the rejected file will give only its size (this warning at most every 10s)");
        }
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
        if let Some(file) = self.file.as_mut() {
            let flushed = file.flush();
            self.kept(flushed)?;
        }
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
    fn a_reading_a_full_filesystem_kept_from_disk_is_rejected_with_its_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        for full_after in [0, 100] {
            let mut spill = SpillDir::beside(&dir.path().join("safeData.csv"))
                .full_after(full_after)
                .create()
                .expect("a full filesystem is no error");
            for _ in 0..10 {
                spill.write(&[b'q'; 1000]).expect("counted");
            }
            let oversized = spill.finish().expect("finished");
            assert_eq!(oversized.size, 10_000);
            assert!(oversized.unkept.is_some());
            assert_eq!(
                std::fs::read_dir(dir.path()).expect("dir").count(),
                0,
                "the partial spill file is gone, its space free again"
            );
            let event = Event {
                id: "c1-7".into(),
                client_id: "c1".into(),
                sequence: 7,
                ..Event::default()
            };
            let head = crate::spool::RowEncoder::default()
                .encode_head(&event, None, oversized.encoding())
                .to_vec();
            let mut rejected = RejectedFile::new(rejected_path(&dir.path().join("safeData.csv")));
            oversized
                .write_rejected(&mut rejected, "too large", &head)
                .expect("write");
            let text = std::fs::read(rejected.path()).expect("read");
            std::fs::remove_file(rejected.path()).expect("remove");
            let mut reader = csv::Reader::from_reader(text.as_slice());
            let record = reader.byte_records().next().expect("a row").expect("csv");
            let reason = String::from_utf8_lossy(&record[1]).into_owned();
            assert!(
                reason.starts_with(
                    "too large; its 10000 bytes could not be kept: the filesystem was full"
                ),
                "{reason}"
            );
            let (back, _) = decode_row(&record[2], "c1").expect("the row decodes");
            assert!(back.data.is_empty());
        }
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
