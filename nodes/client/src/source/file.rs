//! `file`: follows a file of lines, JSON lines or CSV rows; one event each.
//!
//! Reads from the last delivered position (kept in the client's state and
//! spool), then polls for appended data when `follow` is on. A file that
//! shrinks or is replaced (log rotation) is read again from the start, with
//! a warning. With `follow=false` the source ends at the end of the file.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use smesh_core::time::now_unix_nanos;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::options::{Options, SourceOption, duration, event_type, parsed, text};
use super::{Reading, Source, SourceContext, SourceKind};
use crate::csv_line::CsvLine;
use crate::spool::Origin;

pub const DEFAULT_TYPE: &str = "dev.smesh.file.record";

/// `file` in `--source`.
pub(super) const KIND: SourceKind = SourceKind {
    name: "file",
    options: &[
        SourceOption::required("path", "the file to read").free_text(),
        SourceOption::absent(
            "format",
            "lines, jsonl or csv (without it: by extension, .csv, .jsonl/.json/.ndjson, else lines)",
        ),
        SourceOption::value(
            "follow",
            "true",
            "keep reading what is appended; false ends at the end",
        ),
        SourceOption::value("poll", "250ms", "how often to look for appended data"),
        event_type(DEFAULT_TYPE),
    ],
    example: "file:path=/var/log/a,b.csv,format=csv,follow=false,poll=1s,type=dev.example.record",
    build: |options| Ok(Arc::new(FileSpec::parse(options)?)),
};

/// How a file's lines become events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Each line as text.
    Lines,
    /// Each line is a JSON document.
    JsonLines,
    /// The first row names the columns; each later row becomes a JSON object.
    Csv,
}

/// A `file` source as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSpec {
    /// The file; also names the source in events and in resume positions.
    pub path: PathBuf,
    /// How its lines become events.
    pub format: FileFormat,
    /// Keep reading appended data; `false` ends the source at the end.
    pub follow: bool,
    /// How often to look for appended data.
    pub poll: Duration,
    /// CloudEvents `type` of every event.
    pub kind: String,
}

impl FileSpec {
    fn parse(options: &mut Options) -> Result<Self, String> {
        let path = PathBuf::from(options.value("path", text)?);
        if path.to_string_lossy().chars().any(char::is_control) {
            // The path names the source in spool rows, which are one line each.
            return Err("file source: path must not contain control characters".to_string());
        }
        let format = match options.optional("format", text)?.as_deref() {
            Some("lines") => FileFormat::Lines,
            Some("jsonl") | Some("json") => FileFormat::JsonLines,
            Some("csv") => FileFormat::Csv,
            Some(other) => {
                return Err(format!(
                    "file source: unknown format={other:?} (lines, jsonl or csv)"
                ));
            }
            None => match path.extension().and_then(|e| e.to_str()) {
                Some("csv") => FileFormat::Csv,
                Some("jsonl" | "json" | "ndjson") => FileFormat::JsonLines,
                _ => FileFormat::Lines,
            },
        };
        Ok(Self {
            path,
            format,
            follow: options.value("follow", parsed::<bool>)?,
            poll: options.value("poll", duration)?,
            kind: options.value("type", text)?,
        })
    }

    /// The key of this file's resume position.
    pub fn origin_key(&self) -> String {
        format!("file:{}", self.path.display())
    }
}

impl Source for FileSpec {
    fn origin_key(&self) -> Option<String> {
        Some(FileSpec::origin_key(self))
    }

    fn spawn(&self, context: SourceContext, tasks: &TaskTracker) {
        tasks.spawn(run(self.clone(), context));
    }
}

/// Reads complete lines from a position on; blocking I/O, run off the runtime.
struct Follower {
    reader: BufReader<std::fs::File>,
    position: u64,
    identity: Option<(u64, u64)>,
    header: Option<Vec<String>>,
}

#[cfg(unix)]
fn identity(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn identity(_meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

impl Follower {
    fn open(spec: &FileSpec, position: u64) -> std::io::Result<Self> {
        let file = std::fs::File::open(&spec.path)?;
        let meta = file.metadata()?;
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        let mut header = None;
        let mut position = if position > meta.len() { 0 } else { position };
        if spec.format == FileFormat::Csv {
            let mut line = Vec::new();
            let n = reader.read_until(b'\n', &mut line)?;
            if n > 0 && line.last() == Some(&b'\n') {
                header = Some(parse_csv_header(&line)?);
                position = position.max(n as u64);
            } else {
                // No complete header yet: start over later.
                position = 0;
            }
        }
        reader.seek(SeekFrom::Start(position))?;
        Ok(Self {
            reader,
            position,
            identity: identity(&meta),
            header,
        })
    }

    /// The next complete line and the position after it; `None` at the end.
    /// At the end of a finished file (`eof_is_end`) a last line without a
    /// newline counts as complete.
    fn next_line(&mut self, eof_is_end: bool) -> std::io::Result<Option<(Vec<u8>, u64)>> {
        let mut line = Vec::new();
        let n = self.reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(None);
        }
        if line.last() != Some(&b'\n') && !eof_is_end {
            // A line still being written: come back for all of it.
            self.reader.seek(SeekFrom::Start(self.position))?;
            return Ok(None);
        }
        self.position += n as u64;
        Ok(Some((line, self.position)))
    }

    /// Whether the file was truncated or replaced since it was opened.
    fn replaced(&self, spec: &FileSpec) -> bool {
        match std::fs::metadata(&spec.path) {
            Ok(meta) => meta.len() < self.position || identity(&meta) != self.identity,
            Err(_) => false,
        }
    }
}

/// The column names of a CSV file's first line.
fn parse_csv_header(line: &[u8]) -> std::io::Result<Vec<String>> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let mut csv = CsvLine::default();
    let fields = csv.split(line).map_err(invalid)?;
    Ok(fields
        .texts()
        .map_err(invalid)?
        .into_iter()
        .map(str::to_string)
        .collect())
}

/// Turns a line into (content type, data).
fn payload(
    format: FileFormat,
    header: Option<&[String]>,
    csv: &mut CsvLine,
    line: &[u8],
) -> Result<(&'static str, Vec<u8>), String> {
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    match format {
        FileFormat::Lines => Ok(("text/plain", text.to_vec())),
        FileFormat::JsonLines => match serde_json::from_slice::<serde_json::Value>(text) {
            Ok(_) => Ok(("application/json", text.to_vec())),
            Err(err) => Err(format!("not JSON ({err}); sent as text/plain")),
        },
        FileFormat::Csv => {
            let fields = csv
                .split(text)
                .map_err(|e| format!("{e}; sent as text/plain"))?;
            let row = fields
                .texts()
                .map_err(|e| format!("{e}; sent as text/plain"))?;
            let header = header.ok_or("no CSV header")?;
            if row.len() != header.len() {
                return Err(format!(
                    "{} columns where the header has {}; sent as text/plain",
                    row.len(),
                    header.len()
                ));
            }
            let object: serde_json::Map<String, serde_json::Value> = header
                .iter()
                .zip(row)
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.to_string())))
                .collect();
            serde_json::to_vec(&object)
                .map(|data| ("application/json", data))
                .map_err(|e| e.to_string())
        }
    }
}

async fn run(spec: FileSpec, context: SourceContext) {
    let key: Arc<str> = Arc::from(spec.origin_key());
    let source: Arc<str> =
        Arc::from(format!("smesh://{}/file{}", context.client_id, spec.path.display()).as_str());
    let kind: Arc<str> = Arc::from(spec.kind.as_str());
    let text: Arc<str> = Arc::from("text/plain");
    let json: Arc<str> = Arc::from("application/json");
    let mut position = context.positions.get(&*key).copied().unwrap_or(0);
    if position > 0 {
        info!(path = %spec.path.display(), position, "resuming file source");
    }
    let mut follower: Option<Follower> = None;
    let mut csv = CsvLine::default();
    let mut warned_missing = false;
    loop {
        if context.shutdown.is_cancelled() {
            return;
        }
        if follower.is_none() {
            match Follower::open(&spec, position) {
                Ok(f) => {
                    if f.position < position {
                        warn!(path = %spec.path.display(), "file is shorter than where reading stopped; reading it again from the start");
                    }
                    position = f.position;
                    follower = Some(f);
                    warned_missing = false;
                }
                Err(err) => {
                    if !spec.follow {
                        warn!(path = %spec.path.display(), %err, "cannot read file; file source stops");
                        return;
                    }
                    if !warned_missing {
                        warn!(path = %spec.path.display(), %err, "cannot read file yet; waiting for it");
                        warned_missing = true;
                    }
                }
            }
        }
        // Read what is there, in chunks, off the async runtime.
        let mut sent_any = false;
        if let Some(mut f) = follower.take() {
            let eof_is_end = !spec.follow;
            let chunk = tokio::task::spawn_blocking(move || {
                let mut lines = Vec::new();
                let mut bytes = 0;
                while lines.len() < 1024 && bytes < 4 * 1024 * 1024 {
                    match f.next_line(eof_is_end) {
                        Ok(Some((line, pos))) => {
                            bytes += line.len();
                            lines.push((line, pos));
                        }
                        Ok(None) => break,
                        Err(err) => return (f, lines, Some(err)),
                    }
                }
                (f, lines, None)
            })
            .await;
            let Ok((f, lines, error)) = chunk else { return };
            if let Some(err) = error {
                warn!(path = %spec.path.display(), %err, "error reading file; reopening");
                follower = None;
            } else {
                follower = Some(f);
            }
            for (line, pos) in lines {
                position = pos;
                let trimmed = line.strip_suffix(b"\n").unwrap_or(&line);
                if trimmed.is_empty() || trimmed == b"\r" {
                    continue;
                }
                let header = follower.as_ref().and_then(|f| f.header.as_deref());
                let (content_type, data) = match payload(spec.format, header, &mut csv, &line) {
                    Ok((ct, data)) => (
                        if ct == "text/plain" {
                            Arc::clone(&text)
                        } else {
                            Arc::clone(&json)
                        },
                        data,
                    ),
                    Err(reason) => {
                        warn!(path = %spec.path.display(), position = pos, %reason, "malformed line");
                        (
                            Arc::clone(&text),
                            trimmed.strip_suffix(b"\r").unwrap_or(trimmed).to_vec(),
                        )
                    }
                };
                let reading = Reading {
                    source: Arc::clone(&source),
                    kind: Arc::clone(&kind),
                    content_type,
                    subject: None,
                    data: Bytes::from(data),
                    time_unix_nanos: now_unix_nanos(),
                    origin: Some(Origin {
                        key: Arc::clone(&key),
                        position: pos,
                    }),
                };
                tokio::select! {
                    () = context.shutdown.cancelled() => return,
                    sent = context.readings.send(reading) => if sent.is_err() { return },
                }
                sent_any = true;
            }
        }
        if sent_any {
            continue;
        }
        if !spec.follow && follower.is_some() {
            info!(path = %spec.path.display(), position, "end of file; file source finished");
            return;
        }
        if let Some(f) = &follower {
            if f.replaced(&spec) {
                warn!(path = %spec.path.display(), "file was truncated or replaced; reading it from the start");
                position = 0;
                follower = None;
                continue;
            }
        }
        tokio::select! {
            () = context.shutdown.cancelled() => return,
            () = tokio::time::sleep(spec.poll) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_become_json_objects() {
        let header = parse_csv_header(b"GKZ,Name,Warnstufe\n").expect("header");
        let mut csv = CsvLine::default();
        let (ct, data) = payload(
            FileFormat::Csv,
            Some(&header),
            &mut csv,
            b"90001,\"Wien, Stadt\",3\n",
        )
        .expect("row");
        assert_eq!(ct, "application/json");
        let value: serde_json::Value = serde_json::from_slice(&data).expect("json");
        assert_eq!(value["Name"], "Wien, Stadt");
        assert_eq!(value["Warnstufe"], "3");
        let err =
            payload(FileFormat::Csv, Some(&header), &mut csv, b"1,2\n").expect_err("short row");
        assert!(err.contains("2 columns where the header has 3"), "{err}");
    }

    #[test]
    fn json_lines_are_checked_and_kept_verbatim() {
        let (ct, data) = payload(
            FileFormat::JsonLines,
            None,
            &mut CsvLine::default(),
            b"{\"a\": 1}\r\n",
        )
        .expect("json");
        assert_eq!(
            (ct, data.as_slice()),
            ("application/json", &b"{\"a\": 1}"[..])
        );
        assert!(
            payload(
                FileFormat::JsonLines,
                None,
                &mut CsvLine::default(),
                b"{oops\n"
            )
            .is_err()
        );
    }

    #[test]
    fn the_follower_resumes_after_the_header_and_waits_for_whole_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in.csv");
        std::fs::write(&path, "a,b\n1,2\n3,").expect("write");
        let spec = FileSpec {
            path: path.clone(),
            format: FileFormat::Csv,
            follow: true,
            poll: Duration::from_millis(10),
            kind: DEFAULT_TYPE.into(),
        };
        let mut f = Follower::open(&spec, 0).expect("open");
        let (line, pos) = f.next_line(false).expect("read").expect("a line");
        assert_eq!((line.as_slice(), pos), (&b"1,2\n"[..], 8));
        assert!(
            f.next_line(false).expect("read").is_none(),
            "half a line waits"
        );
        std::fs::write(&path, "a,b\n1,2\n3,4\n").expect("append");
        let (line, pos) = f.next_line(false).expect("read").expect("the rest");
        assert_eq!((line.as_slice(), pos), (&b"3,4\n"[..], 12));
        let mut again = Follower::open(&spec, 8).expect("reopen");
        assert_eq!(
            again.next_line(false).expect("read").map(|(l, _)| l),
            Some(b"3,4\n".to_vec())
        );
    }
}
