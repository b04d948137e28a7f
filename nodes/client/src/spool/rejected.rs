//! `safeData.rejected.csv`: events that can never be delivered, with why.
//!
//! A CSV file beside the spool with the columns `time,reason,row`: when the
//! event was rejected, why (invalid, e.g. too large; refused upstream; its
//! spool row no longer decodes), and its spool row. Each row is synced on
//! its own, since a rejected event exists nowhere else.
//!
//! On a full filesystem rows wait in memory (up to [`WAITING_MAX_BYTES`],
//! oldest first) and are written, whole and in order, at the next write or
//! [`RejectedFile::retry`]; rows beyond that bound are counted and logged
//! as lost, never a reason to stop the client.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use smesh_core::time::{now_unix_nanos, rfc3339_millis};
use tracing::{error, warn};

use super::is_full;

/// Most bytes of rejected rows held in memory while the file cannot take them.
pub const WAITING_MAX_BYTES: usize = 16 * 1024 * 1024;

/// `safeData.rejected.csv`: events that can never be delivered, with why.
#[derive(Debug)]
pub struct RejectedFile {
    /// Where the file is; log lines name it so people can look.
    path: PathBuf,
    /// Opened at the first rejection, so a client that rejects nothing
    /// leaves no file behind.
    file: Option<File>,
    /// Encoded CSV records not yet (completely) in the file, oldest first.
    waiting: VecDeque<Vec<u8>>,
    /// Bytes of the first waiting record already in the file.
    written: usize,
    /// Bytes in `waiting`.
    waiting_bytes: usize,
    /// Rows given up because too many waited.
    lost: u64,
}

impl RejectedFile {
    /// The rejected file at `path`; nothing is created until a row is written.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: None,
            waiting: VecDeque::new(),
            written: 0,
            waiting_bytes: 0,
            lost: 0,
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a row and syncs it: rejected events exist nowhere else. On a
    /// full filesystem the row waits in memory and `Ok` is returned; only
    /// other I/O errors are.
    pub fn write(&mut self, reason: &str, row: &[u8]) -> io::Result<()> {
        let row = row.strip_suffix(b"\n").unwrap_or(row);
        let record = encode([
            rfc3339_millis(now_unix_nanos()).as_bytes(),
            reason.as_bytes(),
            row,
        ])?;
        if self.waiting_bytes + record.len() > WAITING_MAX_BYTES {
            self.lost += 1;
            error!(path = %self.path.display(), lost = self.lost, "rejected file: the filesystem is full and too many rows wait; this one is lost");
            return self.retry();
        }
        self.waiting_bytes += record.len();
        self.waiting.push_back(record);
        self.retry()
    }

    /// Writes the rows waiting for room. A full filesystem leaves them
    /// waiting and is not an error.
    pub fn retry(&mut self) -> io::Result<()> {
        match self.write_waiting() {
            Err(err) if is_full(&err) => {
                warn!(path = %self.path.display(), waiting = self.waiting.len(), %err, "rejected file: the filesystem is full; rows wait in memory");
                Ok(())
            }
            other => other,
        }
    }

    /// Appends a row whose spool row is too large to hold in memory: `row`
    /// is called with a sink and feeds it the spool row in pieces (without
    /// its newline). The row column is quoted as the `csv` crate quotes it,
    /// so the file reads back like any other; synced like [`Self::write`].
    /// Rows waiting for room go first; if the file cannot take them (or
    /// this row), the error is returned and a partly written row is cut
    /// off again, so the file stays whole.
    pub fn write_streamed(
        &mut self,
        reason: &str,
        row: impl FnOnce(&mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()>,
    ) -> io::Result<()> {
        self.open()?;
        self.write_waiting()?;
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("rejected file not open"));
        };
        let start = file.metadata()?.len();
        let streamed = (|| {
            let mut out = io::BufWriter::with_capacity(64 * 1024, &*file);
            out.write_all(rfc3339_millis(now_unix_nanos()).as_bytes())?;
            out.write_all(b",")?;
            write_quoted(&mut out, reason.as_bytes(), needs_quotes(reason.as_bytes()))?;
            out.write_all(b",\"")?;
            row(&mut |piece: &[u8]| write_quoted(&mut out, piece, false))?;
            out.write_all(b"\"\n")?;
            out.flush()?;
            file.sync_data()
        })();
        if streamed.is_err() {
            let _ = file.set_len(start);
        }
        streamed
    }

    /// Opens (creates) the file, queueing its header if it is new.
    fn open(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            if file.metadata()?.len() == 0 {
                self.waiting
                    .push_front(encode([b"time", b"reason", b"row"])?);
                self.written = 0;
            }
            self.file = Some(file);
        }
        Ok(())
    }

    fn write_waiting(&mut self) -> io::Result<()> {
        if self.waiting.is_empty() {
            return Ok(());
        }
        self.open()?;
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        while let Some(record) = self.waiting.front() {
            match file.write(&record[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
            if self.written == record.len() {
                self.waiting_bytes = self.waiting_bytes.saturating_sub(record.len());
                self.waiting.pop_front();
                self.written = 0;
            }
        }
        file.sync_data()
    }
}

impl Drop for RejectedFile {
    fn drop(&mut self) {
        if !self.waiting.is_empty() {
            error!(path = %self.path.display(), rows = self.waiting.len(), "rejected rows could not be written (the filesystem stayed full) and are lost");
        }
    }
}

/// One CSV record, quoted as the `csv` crate does, newline included.
fn encode<const N: usize>(fields: [&[u8]; N]) -> io::Result<Vec<u8>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(fields)?;
    writer
        .into_inner()
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Whether the `csv` crate would quote `field` (its `QuoteStyle::Necessary`).
fn needs_quotes(field: &[u8]) -> bool {
    field.is_empty()
        || field
            .iter()
            .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
}

/// Writes `field` with its quotes doubled, inside quotes if `quote`.
fn write_quoted(out: &mut impl io::Write, field: &[u8], quote: bool) -> io::Result<()> {
    if quote {
        out.write_all(b"\"")?;
    }
    for (i, part) in field.split(|b| *b == b'"').enumerate() {
        if i > 0 {
            out.write_all(b"\"\"")?;
        }
        out.write_all(part)?;
    }
    if quote {
        out.write_all(b"\"")?;
    }
    Ok(())
}

/// The rejected-file path beside a spool: `safeData.csv` → `safeData.rejected.csv`.
pub fn rejected_path(spool: &Path) -> PathBuf {
    let stem = spool.file_stem().map_or_else(
        || "safeData".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    spool.with_file_name(format!("{stem}.rejected.csv"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_their_reason_under_one_header_beside_the_spool() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = rejected_path(&dir.path().join("safeData.csv"));
        assert_eq!(path, dir.path().join("safeData.rejected.csv"));
        let mut first = RejectedFile::new(path.clone());
        assert!(!path.exists(), "nothing rejected, no file");
        first
            .write("too large", b"1,c1-1,\"a, \"\"quoted\"\" row\"\n")
            .expect("write");
        drop(first);
        // A later client run appends to the same file.
        let mut second = RejectedFile::new(path.clone());
        second.write("undecodable", b"garbage").expect("write");

        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.matches("time,reason,row").count(), 1, "{text}");
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(
            reader.headers().expect("header"),
            vec!["time", "reason", "row"]
        );
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
        let fields: Vec<(&str, &str)> = rows.iter().map(|r| (&r[1], &r[2])).collect();
        assert_eq!(
            fields,
            vec![
                ("too large", "1,c1-1,\"a, \"\"quoted\"\" row\""),
                ("undecodable", "garbage"),
            ]
        );
    }

    #[test]
    fn a_streamed_row_reads_back_like_a_written_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = rejected_path(&dir.path().join("safeData.csv"));
        let mut rejected = RejectedFile::new(path.clone());
        rejected.write("first", b"plain").expect("write");
        let row = b"2,c1-2,\"a, \"\"quoted\"\" row\"";
        rejected
            .write_streamed("too large, by far", |sink| {
                for piece in row.chunks(3) {
                    sink(piece)?;
                }
                Ok(())
            })
            .expect("streamed");
        rejected.write("last", b"x").expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
        let fields: Vec<(&str, &str)> = rows.iter().map(|r| (&r[1], &r[2])).collect();
        assert_eq!(
            fields,
            vec![
                ("first", "plain"),
                ("too large, by far", std::str::from_utf8(row).expect("utf8")),
                ("last", "x"),
            ]
        );
    }
}
