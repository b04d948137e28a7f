//! `safeData.rejected.csv`: events that can never be delivered, with why.
//!
//! A CSV file beside the spool with the columns `time,reason,row`: when the
//! event was rejected, why (invalid, e.g. too large; refused upstream; its
//! spool row no longer decodes), and its spool row. Each row is synced on
//! its own, since a rejected event exists nowhere else.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use smesh_core::time::{now_unix_nanos, rfc3339_millis};

/// `safeData.rejected.csv`: events that can never be delivered, with why.
#[derive(Debug)]
pub struct RejectedFile {
    /// Where the file is; log lines name it so people can look.
    path: PathBuf,
    /// Opened at the first rejection, so a client that rejects nothing
    /// leaves no file behind.
    writer: Option<csv::Writer<File>>,
}

impl RejectedFile {
    /// The rejected file at `path`; nothing is created until a row is written.
    pub fn new(path: PathBuf) -> Self {
        Self { path, writer: None }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn writer(&mut self) -> io::Result<&mut csv::Writer<File>> {
        if self.writer.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let empty = file.metadata()?.len() == 0;
            let mut writer = csv::Writer::from_writer(file);
            if empty {
                writer.write_record(["time", "reason", "row"])?;
            }
            self.writer = Some(writer);
        }
        self.writer
            .as_mut()
            .ok_or_else(|| io::Error::other("rejected file not open"))
    }

    /// Appends a row whose spool row is too large to hold in memory: `row`
    /// is called with a sink and feeds it the spool row in pieces (without
    /// its newline). The row column is quoted as the `csv` crate quotes it,
    /// so the file reads back like any other; synced like [`Self::write`].
    pub fn write_streamed(
        &mut self,
        reason: &str,
        row: impl FnOnce(&mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()>,
    ) -> io::Result<()> {
        use std::io::Write;
        let writer = self.writer()?;
        writer.flush()?;
        let mut out = io::BufWriter::with_capacity(64 * 1024, writer.get_ref());
        out.write_all(rfc3339_millis(now_unix_nanos()).as_bytes())?;
        out.write_all(b",")?;
        write_quoted(&mut out, reason.as_bytes(), needs_quotes(reason.as_bytes()))?;
        out.write_all(b",\"")?;
        row(&mut |piece: &[u8]| write_quoted(&mut out, piece, false))?;
        out.write_all(b"\"\n")?;
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_data()
    }

    /// Appends a row and syncs it: rejected events exist nowhere else.
    pub fn write(&mut self, reason: &str, row: &[u8]) -> io::Result<()> {
        self.writer()?;
        let row = row.strip_suffix(b"\n").unwrap_or(row);
        if let Some(writer) = self.writer.as_mut() {
            writer.write_record([
                rfc3339_millis(now_unix_nanos()).as_bytes(),
                reason.as_bytes(),
                row,
            ])?;
            writer.flush()?;
            writer.get_ref().sync_data()?;
        }
        Ok(())
    }
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
