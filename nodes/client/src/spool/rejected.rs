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

    /// Appends a row and syncs it: rejected events exist nowhere else.
    pub fn write(&mut self, reason: &str, row: &[u8]) -> io::Result<()> {
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
}
