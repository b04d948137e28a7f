//! `file`: follows a file of lines, JSON lines or CSV rows; one event each.
//!
//! Reads from the last delivered position (kept in the client's state and
//! spool), then polls for appended data when `follow` is on. With
//! `follow=false` the source ends at the end of the file.
//!
//! A position is remembered with the identity of its file (device, inode,
//! fingerprint of the first bytes: [`FileIdentity`]), so rotation and
//! truncation are recognised while running and across restarts:
//!
//! - rotated (renamed away, a new file at the path): the old file is read to
//!   its end (through the open handle while running; found again by inode in
//!   the same directory after a restart) until it has given nothing new for
//!   [`ROTATED_QUIET`], then the new one from the start;
//! - truncated (the same inode, shorter or with other first bytes, as
//!   copytruncate leaves it): read again from the start, with a warning;
//! - a line longer than `--max-event-bytes` is never held: it goes to a
//!   spill file and from there to the rejected file ([`crate::oversized`]),
//!   and reading goes on with the next line.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;
use smesh_core::time::now_unix_nanos;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::identity::{FileIdentity, Sameness};
use super::lines::{BoundedLines, Line};
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

/// Reads complete lines of one open file from a position on; blocking I/O,
/// run off the runtime.
struct Follower {
    reader: BufReader<File>,
    /// The offset just past the last complete line taken.
    position: u64,
    /// Which file this is; travels with every position read from it.
    identity: FileIdentity,
    header: Option<Vec<String>>,
    /// Splits what is read into lines, holding at most `--max-event-bytes`.
    lines: BoundedLines,
    /// Bytes taken since `position`: an unfinished line.
    taken: u64,
}

/// What became of the file at the path since a [`Follower`] opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Nothing (or it is gone for now: the open file is still read).
    None,
    /// Another file is at the path: the open one was rotated away.
    Rotated,
    /// The open file was cut short (and maybe written again).
    Truncated,
}

impl Follower {
    /// Follows `file` from `position` (from the start if it is shorter).
    fn open(spec: &FileSpec, file: File, position: u64, lines: BoundedLines) -> io::Result<Self> {
        let identity = FileIdentity::of(&file)?;
        let len = file.metadata()?.len();
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        let mut header = None;
        let mut position = if position > len { 0 } else { position };
        if spec.format == FileFormat::Csv {
            let mut line = Vec::new();
            // A header longer than any event could be is not read whole.
            let limit = (lines.max() as u64).saturating_add(1);
            let n = (&mut reader).take(limit).read_until(b'\n', &mut line)?;
            if n > 0 && line.last() == Some(&b'\n') {
                header = Some(parse_csv_header(&line)?);
                position = position.max(n as u64);
            } else if n as u64 >= limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the CSV header is longer than --max-event-bytes",
                ));
            } else {
                // No complete header yet: start over later.
                position = 0;
            }
        }
        reader.seek(SeekFrom::Start(position))?;
        Ok(Self {
            reader,
            position,
            identity,
            header,
            lines,
            taken: 0,
        })
    }

    /// The next complete line and the position after it; `None` at the end.
    /// At the end of a finished file (`eof_is_end`) a last line without a
    /// newline counts as complete. A line still being written is kept (at
    /// most `--max-event-bytes` of it in memory) and finished at a later
    /// call, so no byte is read twice.
    fn next_line(&mut self, eof_is_end: bool) -> io::Result<Option<(Line, u64)>> {
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                if !eof_is_end {
                    return Ok(None);
                }
                return Ok(self.lines.finish()?.map(|line| {
                    self.position += std::mem::take(&mut self.taken);
                    (line, self.position)
                }));
            }
            let (took, line) = self.lines.push(buf)?;
            self.reader.consume(took);
            self.taken += took as u64;
            if let Some(line) = line {
                self.position += std::mem::take(&mut self.taken);
                return Ok(Some((line, self.position)));
            }
        }
    }

    /// What happened to the file at the path meanwhile.
    fn change(&self, path: &Path) -> io::Result<Change> {
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(Change::None);
        };
        if !self.identity.same_inode(&meta) {
            return Ok(Change::Rotated);
        }
        Ok(if self.truncated()? {
            Change::Truncated
        } else {
            Change::None
        })
    }

    /// Whether the open file was cut short: shorter than what was read, or
    /// with other first bytes (cut and written again past where reading
    /// stopped, which must be seen before reading on).
    fn truncated(&self) -> io::Result<bool> {
        let file = self.reader.get_ref();
        if file.metadata()?.len() < self.position + self.taken {
            return Ok(true);
        }
        Ok(self.identity.compare(file)? != Sameness::Same)
    }
}

/// The file a source starts with: the one its saved position is in.
struct Start {
    file: File,
    /// Where to start in it.
    position: u64,
    /// The file was rotated away from the path: read it to its end, then
    /// the file at the path from the start.
    rotated: bool,
}

/// Finds the file `saved` names: the one at the path if it is that file,
/// else the rotated file in the same directory; a truncated or replaced
/// file is read from the start, with a warning. Blocking.
fn start(spec: &FileSpec, position: u64, saved: Option<&FileIdentity>) -> io::Result<Start> {
    let path = &spec.path;
    let current = File::open(path);
    let Some(saved) = saved else {
        // A first start, or a state file from before identities were kept:
        // the offset is all there is.
        let file = current?;
        if position > file.metadata()?.len() {
            warn!(path = %path.display(), position, "file is shorter than where reading stopped; reading it again from the start");
        }
        return Ok(Start {
            file,
            position,
            rotated: false,
        });
    };
    if let Ok(file) = &current {
        match saved.compare(file)? {
            Sameness::Same if position > file.metadata()?.len() => {
                warn!(path = %path.display(), position, "file was truncated while the client was stopped; reading it again from the start");
                let file = current?;
                return Ok(Start {
                    file,
                    position: 0,
                    rotated: false,
                });
            }
            Sameness::Same => {
                if position > 0 {
                    info!(path = %path.display(), position, "resuming file source");
                }
                let file = current?;
                return Ok(Start {
                    file,
                    position,
                    rotated: false,
                });
            }
            Sameness::Truncated => {
                warn!(path = %path.display(), position, "file was truncated while the client was stopped; reading it again from the start");
                let file = current?;
                return Ok(Start {
                    file,
                    position: 0,
                    rotated: false,
                });
            }
            Sameness::Other => {}
        }
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if let Some((rotated, file)) = saved.find_in(dir) {
        info!(path = %path.display(), rotated = %rotated.display(), position, "file was rotated while the client was stopped; finishing the rotated file first");
        return Ok(Start {
            file,
            position,
            rotated: true,
        });
    }
    let file = current?;
    warn!(path = %path.display(), position, "file was replaced while the client was stopped and the old one is not in its directory any more; reading the new file from the start (what the old one had after the saved position is lost)");
    Ok(Start {
        file,
        position: 0,
        rotated: false,
    })
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

/// How long a rotated file must have given nothing new before the source
/// moves on to the new file at the path: its writer may still append to it
/// for a moment (until it reopens its log, e.g. on logrotate's signal).
pub const ROTATED_QUIET: Duration = Duration::from_secs(1);

/// Whether a rotated file, quiet since `rotated`, is done with.
fn finished(rotated: Option<Instant>) -> bool {
    rotated.is_some_and(|quiet_since| quiet_since.elapsed() >= ROTATED_QUIET)
}

/// Lines read at a time off the runtime, at most.
const CHUNK_LINES: usize = 1024;
/// Bytes of lines held at a time, at most (oversized lines count their size
/// although they are on disk).
const CHUNK_BYTES: u64 = 4 * 1024 * 1024;

async fn run(spec: FileSpec, context: SourceContext) {
    let key: Arc<str> = Arc::from(spec.origin_key());
    let source: Arc<str> =
        Arc::from(format!("smesh://{}/file{}", context.client_id, spec.path.display()).as_str());
    let kind: Arc<str> = Arc::from(spec.kind.as_str());
    let text: Arc<str> = Arc::from("text/plain");
    let json: Arc<str> = Arc::from("application/json");
    // Where the next open starts: an offset in a file (when known, which one).
    let mut resume: (u64, Option<FileIdentity>) = (
        context.positions.get(&*key).copied().unwrap_or(0),
        context.files.get(&*key).copied(),
    );
    let mut follower: Option<Follower> = None;
    // The open file is no longer at the path: since when it has given
    // nothing new. Read until it has been quiet for ROTATED_QUIET, then switch.
    let mut rotated: Option<Instant> = None;
    let mut csv = CsvLine::default();
    let mut warned_missing = false;
    loop {
        if context.shutdown.is_cancelled() {
            return;
        }
        if follower.is_none() {
            let opening = {
                let spec = spec.clone();
                let lines = BoundedLines::new(context.max_event_bytes, context.spill.clone());
                let (position, saved) = resume;
                tokio::task::spawn_blocking(move || {
                    let start = start(&spec, position, saved.as_ref())?;
                    let f = Follower::open(&spec, start.file, start.position, lines)?;
                    Ok::<_, io::Error>((f, start.rotated))
                })
                .await
            };
            let Ok(opening) = opening else { return };
            match opening {
                Ok((f, was_rotated)) => {
                    resume = (f.position, Some(f.identity));
                    rotated = was_rotated.then(Instant::now);
                    follower = Some(f);
                    warned_missing = false;
                }
                Err(err) => {
                    if !spec.follow {
                        // Nothing will come of it: the client stops with
                        // this error rather than exit 0 having read nothing.
                        error!(path = %spec.path.display(), %err, "cannot read file; file source stops");
                        context.fail(format!("cannot read {}: {err}", spec.path.display()));
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
        let mut read_any = false;
        if let Some(mut f) = follower.take() {
            let eof_is_end = !spec.follow || finished(rotated);
            let chunk = tokio::task::spawn_blocking(move || {
                let mut lines = Vec::new();
                let mut bytes = 0;
                let mut error = None;
                // copytruncate and new lines since the last look: what is
                // past the old offset now is the middle of other lines.
                match f.truncated() {
                    Ok(false) => {}
                    Ok(true) => return (f, lines, None, true),
                    Err(err) => return (f, lines, Some(err), false),
                }
                while lines.len() < CHUNK_LINES && bytes < CHUNK_BYTES {
                    match f.next_line(eof_is_end) {
                        Ok(Some((line, pos))) => {
                            bytes += match &line {
                                Line::Data(data) => data.len() as u64,
                                Line::Oversized(o) => o.size,
                            };
                            lines.push((line, pos));
                        }
                        Ok(None) => break,
                        Err(err) => {
                            error = Some(err);
                            break;
                        }
                    }
                }
                // A short file that grew: its fingerprint covers more now.
                if error.is_none() {
                    if let Err(err) = f.identity.refresh(f.reader.get_ref()) {
                        error = Some(err);
                    }
                }
                (f, lines, error, false)
            })
            .await;
            let Ok((f, lines, error, truncated)) = chunk else {
                return;
            };
            let identity = f.identity;
            let header = f.header.clone();
            if truncated {
                warn!(path = %spec.path.display(), position = f.position, "file was truncated; reading it again from the start");
                resume = (0, None);
                rotated = None;
                continue;
            }
            if let Some(err) = error {
                warn!(path = %spec.path.display(), %err, "error reading file; reopening");
            } else {
                follower = Some(f);
            }
            read_any = !lines.is_empty();
            for (line, pos) in lines {
                resume = (pos, Some(identity));
                let origin = Some(Origin {
                    key: Arc::clone(&key),
                    position: pos,
                    file: Some(identity),
                });
                let (content_type, data, oversized) = match line {
                    Line::Oversized(oversized) => {
                        (Arc::clone(&text), Bytes::new(), Some(Arc::new(oversized)))
                    }
                    Line::Data(line) if line.is_empty() => continue,
                    Line::Data(line) => {
                        match payload(spec.format, header.as_deref(), &mut csv, &line) {
                            Ok((ct, data)) => (
                                if ct == "text/plain" {
                                    Arc::clone(&text)
                                } else {
                                    Arc::clone(&json)
                                },
                                Bytes::from(data),
                                None,
                            ),
                            Err(reason) => {
                                warn!(path = %spec.path.display(), position = pos, %reason, "malformed line");
                                (Arc::clone(&text), Bytes::from(line), None)
                            }
                        }
                    }
                };
                let reading = Reading {
                    source: Arc::clone(&source),
                    kind: Arc::clone(&kind),
                    content_type,
                    subject: None,
                    data,
                    time_unix_nanos: now_unix_nanos(),
                    origin,
                    oversized,
                };
                tokio::select! {
                    () = context.shutdown.cancelled() => return,
                    sent = context.readings.send(reading) => if sent.is_err() { return },
                }
            }
        }
        if read_any {
            if rotated.is_some() {
                rotated = Some(Instant::now());
            }
            continue;
        }
        if rotated.is_some() && follower.is_some() {
            if !spec.follow || finished(rotated) {
                info!(path = %spec.path.display(), position = resume.0, "finished the rotated file; reading the new one from the start");
                rotated = None;
                follower = None;
                resume = (0, None);
                continue;
            }
            // Its writer may not have moved to the new file yet.
            tokio::select! {
                () = context.shutdown.cancelled() => return,
                () = tokio::time::sleep(spec.poll) => {}
            }
            continue;
        }
        if !spec.follow && follower.is_some() {
            info!(path = %spec.path.display(), position = resume.0, "end of file; file source finished");
            return;
        }
        if let Some(f) = follower.take() {
            let path = spec.path.clone();
            let checked = tokio::task::spawn_blocking(move || {
                let change = f.change(&path);
                (f, change)
            })
            .await;
            let Ok((f, change)) = checked else { return };
            match change {
                Ok(Change::None) => follower = Some(f),
                Ok(Change::Rotated) => {
                    info!(path = %spec.path.display(), position = f.position, "file was rotated; finishing the old one first");
                    rotated = Some(Instant::now());
                    follower = Some(f);
                    continue;
                }
                Ok(Change::Truncated) => {
                    warn!(path = %spec.path.display(), position = f.position, "file was truncated; reading it again from the start");
                    resume = (0, None);
                    continue;
                }
                Err(err) => {
                    warn!(path = %spec.path.display(), %err, "error reading file; reopening");
                    continue;
                }
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
    use crate::oversized::SpillDir;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

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

    fn spec(path: &Path, format: FileFormat, follow: bool) -> FileSpec {
        FileSpec {
            path: path.to_path_buf(),
            format,
            follow,
            poll: Duration::from_millis(10),
            kind: DEFAULT_TYPE.into(),
        }
    }

    fn follower(spec: &FileSpec, position: u64, max: usize) -> Follower {
        let file = File::open(&spec.path).expect("open");
        let spill = SpillDir::beside(&spec.path.with_file_name("safeData.csv"));
        Follower::open(spec, file, position, BoundedLines::new(max, spill)).expect("follow")
    }

    fn data(line: Option<(Line, u64)>) -> Option<(Vec<u8>, u64)> {
        match line {
            Some((Line::Data(data), pos)) => Some((data, pos)),
            Some((Line::Oversized(o), _)) => panic!("oversized line of {}", o.size),
            None => None,
        }
    }

    #[test]
    fn the_follower_resumes_after_the_header_and_waits_for_whole_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in.csv");
        std::fs::write(&path, "a,b\n1,2\n3,").expect("write");
        let spec = spec(&path, FileFormat::Csv, true);
        let mut f = follower(&spec, 0, 1000);
        let line = data(f.next_line(false).expect("read"));
        assert_eq!(line, Some((b"1,2".to_vec(), 8)));
        assert!(
            f.next_line(false).expect("read").is_none(),
            "half a line waits"
        );
        std::fs::write(&path, "a,b\n1,2\n3,4\n").expect("append");
        let line = data(f.next_line(false).expect("read"));
        assert_eq!(line, Some((b"3,4".to_vec(), 12)));
        let mut again = follower(&spec, 8, 1000);
        let line = data(again.next_line(false).expect("read"));
        assert_eq!(line, Some((b"3,4".to_vec(), 12)));
    }

    #[test]
    fn a_line_too_long_to_hold_is_read_once_while_it_is_written() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in.log");
        std::fs::write(&path, "short\n").expect("write");
        let spec = spec(&path, FileFormat::Lines, true);
        let mut f = follower(&spec, 0, 100);
        assert_eq!(
            data(f.next_line(false).expect("read")),
            Some((b"short".to_vec(), 6))
        );
        let mut writer = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        for _ in 0..5 {
            // Half a line so far: nothing, and what was read is not read again.
            writer.write_all(&[b'x'; 300]).expect("write");
            assert!(f.next_line(false).expect("read").is_none());
            assert_eq!(f.taken, f.lines.pending());
        }
        writer.write_all(b"\nafter\n").expect("write");
        match f.next_line(false).expect("read") {
            Some((Line::Oversized(o), pos)) => assert_eq!((o.size, pos), (1500, 6 + 1501)),
            other => panic!("expected the long line set aside, got {other:?}"),
        }
        assert_eq!(
            data(f.next_line(false).expect("read")),
            Some((b"after".to_vec(), 1513))
        );
    }

    /// Runs a file source and collects `n` readings (or fewer after `wait`).
    struct Run {
        readings: mpsc::Receiver<Reading>,
        shutdown: CancellationToken,
    }

    impl Run {
        fn start(spec: &FileSpec, resume: Option<&Origin>) -> Self {
            let spill = SpillDir::beside(&spec.path.with_file_name("safeData.csv"));
            Self::start_spilling(spec, resume, spill)
        }

        fn start_spilling(spec: &FileSpec, resume: Option<&Origin>, spill: SpillDir) -> Self {
            let (tx, readings) = mpsc::channel(16);
            let shutdown = CancellationToken::new();
            let key = spec.origin_key();
            let context = SourceContext {
                client_id: "c1".into(),
                readings: tx,
                positions: resume
                    .map(|o| (key.clone(), o.position))
                    .into_iter()
                    .collect(),
                files: resume
                    .and_then(|o| o.file)
                    .map(|f| (key.clone(), f))
                    .into_iter()
                    .collect(),
                max_event_bytes: 1000,
                spill,
                shutdown: shutdown.clone(),
                failure: Default::default(),
            };
            tokio::spawn(run(spec.clone(), context));
            Self { readings, shutdown }
        }

        /// The next `n` lines read, as text, and the origin of the last.
        async fn take(&mut self, n: usize) -> (Vec<String>, Option<Origin>) {
            let mut lines = Vec::new();
            let mut last = None;
            while lines.len() < n {
                let next =
                    tokio::time::timeout(Duration::from_secs(10), self.readings.recv()).await;
                let Ok(Some(reading)) = next else {
                    panic!("only {lines:?} arrived")
                };
                lines.push(String::from_utf8_lossy(&reading.data).into_owned());
                last = reading.origin;
            }
            (lines, last)
        }

        /// Nothing more arrives for a while.
        async fn quiet(&mut self) {
            let next = tokio::time::timeout(Duration::from_millis(300), self.readings.recv()).await;
            if let Ok(Some(reading)) = next {
                panic!("unexpected {:?}", String::from_utf8_lossy(&reading.data));
            }
        }
    }

    impl Drop for Run {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    fn append(path: &Path, lines: &[&str]) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open");
        for line in lines {
            writeln!(file, "{line}").expect("append");
        }
    }

    fn names(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[tokio::test]
    async fn a_file_rotated_while_running_is_finished_before_the_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in.log");
        append(&path, &["one", "two"]);
        let mut run = Run::start(&spec(&path, FileFormat::Lines, true), None);
        assert_eq!(run.take(2).await.0, names(&["one", "two"]));
        // Written to the old file just before it is renamed away, and by a
        // writer that has not reopened its log yet well after the new file
        // appeared (and the source noticed it).
        append(&path, &["three"]);
        std::fs::rename(&path, dir.path().join("in.log.1")).expect("rotate");
        append(&path, &["five", "six"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        append(&dir.path().join("in.log.1"), &["four"]);
        assert_eq!(
            run.take(4).await.0,
            names(&["three", "four", "five", "six"])
        );
        append(&path, &["seven"]);
        assert_eq!(run.take(1).await.0, names(&["seven"]));
        run.quiet().await;
    }

    #[tokio::test]
    async fn a_file_truncated_while_running_is_read_again_from_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in.log");
        append(&path, &["one", "two", "three"]);
        let mut run = Run::start(&spec(&path, FileFormat::Lines, true), None);
        assert_eq!(run.take(3).await.0, names(&["one", "two", "three"]));
        // copytruncate: emptied in place, then written on.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(0)
            .expect("truncate");
        append(&path, &["four"]);
        assert_eq!(run.take(1).await.0, names(&["four"]));
        // Truncated and written past the old end before the next poll.
        std::fs::write(&path, "").expect("truncate");
        append(&path, &["five, a much longer line than before", "six"]);
        assert_eq!(
            run.take(2).await.0,
            names(&["five, a much longer line than before", "six"])
        );
        run.quiet().await;
    }

    #[tokio::test]
    async fn a_file_rotated_while_stopped_is_finished_then_the_new_one_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in.log");
        append(&path, &["one", "two"]);
        let spec = spec(&path, FileFormat::Lines, false);
        let (lines, last) = Run::start(&spec, None).take(2).await;
        assert_eq!(lines, names(&["one", "two"]));
        // Stopped; the old file grows, is rotated, and a new one is longer.
        append(&path, &["three"]);
        std::fs::rename(&path, dir.path().join("in.log-20261124")).expect("rotate");
        append(&path, &["new 1", "new 2", "new 3", "new 4"]);
        let mut run = Run::start(&spec, last.as_ref());
        let (lines, _) = run.take(5).await;
        assert_eq!(lines, names(&["three", "new 1", "new 2", "new 3", "new 4"]));
        run.quiet().await;

        // The rotated file is gone by the next start: the new file from the start.
        let (_, last) = Run::start(&spec, None).take(4).await;
        std::fs::rename(&path, dir.path().join("gone")).expect("rotate");
        std::fs::remove_file(dir.path().join("gone")).expect("delete");
        append(&path, &["newer"]);
        let mut run = Run::start(&spec, last.as_ref());
        assert_eq!(run.take(1).await.0, names(&["newer"]));
        run.quiet().await;
    }

    #[tokio::test]
    async fn a_file_truncated_while_stopped_is_read_again_from_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in.log");
        append(&path, &["one", "two"]);
        let spec = spec(&path, FileFormat::Lines, false);
        let (_, last) = Run::start(&spec, None).take(2).await;
        // Shorter than the saved offset.
        std::fs::write(&path, "x\n").expect("truncate");
        let (lines, last) = Run::start(&spec, last.as_ref()).take(1).await;
        assert_eq!(lines, names(&["x"]));
        // Longer than the saved offset, other first bytes.
        std::fs::write(&path, "first line\nsecond line\n").expect("truncate");
        let mut run = Run::start(&spec, last.as_ref());
        assert_eq!(run.take(2).await.0, names(&["first line", "second line"]));
        run.quiet().await;
        // Grown, not truncated: only what is new.
        let (_, last) = Run::start(&spec, last.as_ref()).take(2).await;
        append(&path, &["third line"]);
        let mut run = Run::start(&spec, last.as_ref());
        assert_eq!(run.take(1).await.0, names(&["third line"]));
        run.quiet().await;
    }

    #[tokio::test]
    async fn an_oversized_line_is_handed_on_from_disk_between_its_neighbours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in.log");
        let long = "y".repeat(5000);
        append(&path, &["before", &long, "after"]);
        let mut run = Run::start(&spec(&path, FileFormat::Lines, false), None);
        let mut got = Vec::new();
        for _ in 0..3 {
            let reading = tokio::time::timeout(Duration::from_secs(10), run.readings.recv())
                .await
                .expect("in time")
                .expect("a reading");
            got.push((
                String::from_utf8_lossy(&reading.data).into_owned(),
                reading.oversized.map(|o| o.size),
            ));
        }
        assert_eq!(
            got,
            vec![
                ("before".to_string(), None),
                (String::new(), Some(5000)),
                ("after".to_string(), None),
            ]
        );
    }

    #[tokio::test]
    async fn a_full_filesystem_neither_stops_nor_loops_the_source_at_a_long_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in.log");
        let long = "y".repeat(50_000);
        append(&path, &["before", &long, "after"]);
        // The spill file takes 3000 bytes, then the filesystem is full.
        let spill = SpillDir::beside(&dir.path().join("safeData.csv")).full_after(3000);
        let mut run = Run::start_spilling(&spec(&path, FileFormat::Lines, true), None, spill);
        let mut got = Vec::new();
        for _ in 0..3 {
            let reading = tokio::time::timeout(Duration::from_secs(10), run.readings.recv())
                .await
                .expect("in time")
                .expect("a reading");
            got.push((
                String::from_utf8_lossy(&reading.data).into_owned(),
                reading.oversized.map(|o| (o.size, o.unkept.is_some())),
                reading.origin.map(|o| o.position),
            ));
        }
        assert_eq!(
            got,
            vec![
                ("before".to_string(), None, Some(7)),
                (String::new(), Some((50_000, true)), Some(50_008)),
                ("after".to_string(), None, Some(50_014)),
            ]
        );
        // Read once: not again from the start at the next poll.
        run.quiet().await;
        append(&path, &["later"]);
        assert_eq!(run.take(1).await.0, names(&["later"]));
    }
}
