//! `safeData.csv`: the client's durable spool.
//!
//! One row per event that is not yet acknowledged end to end, oldest first,
//! as a CSV file with a header; the row format is in `row`.
//!
//! Rows are appended at the end. Acknowledged rows are not removed one by one:
//! the spool remembers where the first unacknowledged row starts (`head`), and
//! [`Spool::maintain`] later truncates the file when everything is
//! acknowledged, or rewrites only the unacknowledged tail when the dead prefix
//! has grown larger than it. Either costs O(1) amortised per event.
//!
//! On open, what an earlier run left is recovered (`recovery`): torn and
//! undecodable rows are set aside and acknowledged ones dropped.
//!
//! Offsets handed out are *logical*: they keep growing across truncation and
//! compaction, so callers can hold them while the file is rewritten.
//!
//! Appends go to a buffer in memory ([`Spool::append`] cannot fail); they
//! reach the file in [`Spool::flush`] and the disk in [`Spool::sync`]. What
//! waits for the disk (the fsync of [`Spool::sync`], truncating or rewriting
//! the file in [`Spool::maintain`]) runs on the blocking pool through a
//! shared handle; both methods keep `&mut self` until that work is done, so
//! nothing is appended meanwhile and one sync covers every row appended
//! before it.
//!
//! # A full filesystem
//!
//! A write that fails because the filesystem is full ([`is_full`]: ENOSPC,
//! EDQUOT, EFBIG) loses nothing: the spool knows exactly how many bytes
//! reached the file, and the rest stays buffered (whole rows, from the first
//! one not completely written) until a later flush succeeds. Rows completely
//! in the file are synced and can be sent and acknowledged meanwhile; once
//! every one of them is acknowledged, [`Spool::maintain`] truncates the file
//! (which frees space without needing any) and the buffered rows follow in
//! the emptied file. Compaction, the one operation that needs free space, is
//! not started while rows wait for space, and a failed one leaves the spool
//! as it was. Recovery (`recovery`) works in place.
//!
//! # Layout
//! - `row`: one row, the file's format (header, encoder, decoder).
//! - `recovery`: what opening a spool left by an earlier run does.
//! - `rejected`: `safeData.rejected.csv`, events that can never be delivered.
//! - this file: the [`Spool`] itself (append, read, settle, compact).
//!
//! Everything other modules use is re-exported here.

mod recovery;
mod rejected;
mod row;

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use smesh_proto::mesh::{Backlog, Event};
use tracing::warn;

use crate::blocking;
pub use recovery::Recovery;
use recovery::recover;
pub use rejected::{RejectedFile, rejected_path};
pub use row::{
    Encoding, HEADER, Origin, RowDecoder, RowEncoder, RowError, decode_row, encode_row, is_text,
};

/// Rewrite the file once the acknowledged prefix is at least this large and
/// larger than the unacknowledged rest.
const COMPACT_MIN_BYTES: u64 = 8 * 1024 * 1024;

/// Buffered rows past this size are written to the file at the next
/// [`Spool::flush_if_large`].
const FLUSH_AT_BYTES: usize = 256 * 1024;

/// Whether `err` means the filesystem (or the user's quota, or the file
/// size limit) has no room: a condition that passes, not a broken disk.
pub fn is_full(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge
    ) || matches!(err.raw_os_error(), Some(28 | 122 | 27))
}

/// A line that is not a row and holds nothing: blank, or blanked in place
/// by recovery (spaces), skipped without a word.
fn is_blank(body: &[u8]) -> bool {
    body.iter().all(|b| *b == b' ')
}

/// An event read back from the spool.
#[derive(Debug, Clone)]
pub struct SpooledEvent {
    /// The event, to be sent (again).
    pub event: Event,
    /// Where its source read it, so the source's position advances when the
    /// event is acknowledged.
    pub origin: Option<Origin>,
    /// Logical offset just past the event's row.
    pub end: u64,
}

/// The spool file.
#[derive(Debug)]
pub struct Spool {
    /// The file, reopened after compaction and named in warnings.
    path: PathBuf,
    /// Encodes appended rows into one reused buffer.
    encoder: RowEncoder,
    /// Decodes rows read back with one parser built once.
    decoder: RowDecoder,
    /// Where rows that no longer decode go.
    rejected: RejectedFile,
    /// Rows do not store the client id; decoded events get it from here.
    client_id: String,
    /// The file, opened to append (`O_APPEND`); shared with the blocking
    /// pool to sync or truncate it.
    file: Arc<File>,
    /// Rows appended and not yet completely in the file: the physical bytes
    /// `[pending_start, len)`, of which `[pending_start, flushed)` were
    /// written already. Whole rows, so they can follow a truncation.
    pending: Vec<u8>,
    /// Physical offset where `pending` starts (a row boundary).
    pending_start: u64,
    /// Reads rows back for sending; kept open to avoid a seek per batch.
    reader: BufReader<File>,
    /// Physical position of `reader`, if known.
    reader_pos: Option<u64>,
    /// logical = physical + base.
    base: u64,
    /// Bytes of the header line: where the first row starts.
    header_len: u64,
    /// Physical end, including rows still in `pending`.
    len: u64,
    /// Physical end of what was written to the OS (readable through `reader`).
    flushed: u64,
    /// Physical end of what is on disk (survives a power loss).
    synced: u64,
    /// Physical offset of the first unacknowledged row.
    head: u64,
    /// Unacknowledged rows, for the backlog report.
    live_rows: u64,
    /// Time of the row at `head`, once looked up: (head, time).
    oldest: Option<(u64, i64)>,
    /// Whether the last compaction failed for lack of space; it is tried
    /// again only after the file was emptied by truncation.
    compaction_failed: bool,
}

impl Spool {
    /// Opens (or creates) the spool and recovers it; rows with a sequence
    /// number up to `acked_through` are dropped as already delivered.
    pub fn open(path: &Path, client_id: &str, acked_through: u64) -> io::Result<(Self, Recovery)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut rejected = RejectedFile::new(rejected_path(path));
        let header_len = HEADER.len() as u64 + 1;
        let (recovery, head) = if path.exists() {
            recover(path, client_id, acked_through, &mut rejected)?
        } else {
            write_fresh(path, &[], None)?;
            (Recovery::default(), header_len)
        };
        let handles = Handles::open(path)?;
        let spool = Self {
            path: path.to_path_buf(),
            encoder: RowEncoder::default(),
            decoder: RowDecoder::default(),
            rejected,
            client_id: client_id.to_string(),
            file: handles.append,
            pending: Vec::new(),
            pending_start: handles.len,
            reader: BufReader::with_capacity(256 * 1024, handles.read),
            reader_pos: None,
            base: 0,
            header_len,
            len: handles.len,
            flushed: handles.len,
            synced: handles.len,
            head: head.clamp(header_len, handles.len.max(header_len)),
            live_rows: recovery.live_rows,
            oldest: None,
            compaction_failed: false,
        };
        Ok((spool, recovery))
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rejected file beside the spool, for events that can never be delivered.
    pub fn rejected(&mut self) -> &mut RejectedFile {
        &mut self.rejected
    }

    /// Logical offset of the first unacknowledged row.
    pub fn head(&self) -> u64 {
        self.head + self.base
    }

    /// Logical end of the file.
    pub fn end(&self) -> u64 {
        self.len + self.base
    }

    /// Bytes of unacknowledged rows.
    pub fn live_bytes(&self) -> u64 {
        self.len - self.head
    }

    /// Unacknowledged rows.
    pub fn live_rows(&self) -> u64 {
        self.live_rows
    }

    /// Logical end of what [`Spool::sync`] made durable: rows ending at or
    /// before it survive a power loss.
    pub fn synced_end(&self) -> u64 {
        self.synced + self.base
    }

    /// Whether appended rows wait in memory because the file could not take
    /// them (or because they were appended since the last flush).
    pub fn has_unwritten(&self) -> bool {
        self.flushed < self.len
    }

    /// Bytes of appended rows not yet in the file.
    pub fn unwritten_bytes(&self) -> u64 {
        self.len - self.flushed
    }

    /// Appends a row to the buffer (see [`Spool::flush`], [`Spool::sync`]).
    /// Returns its logical start and end. Cannot fail: the row is kept in
    /// memory until the file takes it.
    pub fn append(&mut self, event: &Event, origin: Option<&Origin>) -> (u64, u64) {
        let row = self.encoder.encode(event, origin);
        self.pending.extend_from_slice(row);
        let start = self.len + self.base;
        self.len += row.len() as u64;
        self.live_rows += 1;
        (start, self.len + self.base)
    }

    /// Writes buffered rows to the OS (not to disk). On an error, exactly
    /// what reached the file counts as flushed and the rest stays buffered
    /// for the next call: a full filesystem tears nothing.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.flushed < self.len {
            let from =
                usize::try_from(self.flushed - self.pending_start).map_err(io::Error::other)?;
            match (&*self.file).write(&self.pending[from..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.flushed += n as u64,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        self.pending.clear();
        self.pending_start = self.len;
        Ok(())
    }

    /// [`Spool::flush`] once enough rows are buffered to be worth a write.
    pub fn flush_if_large(&mut self) -> io::Result<()> {
        if self.pending.len() >= FLUSH_AT_BYTES {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// Makes every row appended so far durable: writes the buffer to the OS
    /// here, then waits for an fdatasync on the blocking pool. Cancel-safe:
    /// rows count as synced only once the fdatasync returned.
    ///
    /// When the file cannot take every row (a full filesystem), what did
    /// reach it is still synced, so complete rows can be sent, and the
    /// flush's error is returned.
    pub async fn sync(&mut self) -> io::Result<()> {
        if self.synced >= self.len {
            return Ok(());
        }
        let flushed = self.flush();
        if self.synced < self.flushed {
            let through = self.flushed;
            let file = Arc::clone(&self.file);
            blocking::run(move || file.sync_data()).await?;
            self.synced = through;
        }
        flushed
    }

    /// Reads up to `max_events` rows (and about `max_bytes`) starting at the
    /// logical offset `from`, none ending past the logical offset `through`
    /// (nor past what is in the file). Returns them and the logical offset
    /// after the last line consumed. Rows that no longer decode (the file
    /// was edited) are moved to the rejected file and skipped; blank lines
    /// are skipped.
    pub fn read(
        &mut self,
        from: u64,
        through: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> io::Result<(Vec<SpooledEvent>, u64)> {
        if let Err(err) = self.flush() {
            // What is in the file can still be read; the writer retries.
            if !is_full(&err) {
                return Err(err);
            }
        }
        let limit = self
            .flushed
            .min(through.saturating_sub(self.base))
            .max(self.header_len);
        let mut pos = from.saturating_sub(self.base).max(self.header_len);
        let mut rows = Vec::new();
        if pos >= limit {
            return Ok((rows, from));
        }
        if self.reader_pos != Some(pos) {
            self.reader.seek(SeekFrom::Start(pos))?;
        }
        let mut bytes = 0usize;
        let mut line = Vec::with_capacity(512);
        while rows.len() < max_events && bytes < max_bytes && pos < limit {
            line.clear();
            let n = self.reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') || pos + n as u64 > limit {
                // A row not completely in the file yet, or past `through`:
                // not this time. Re-seek next time.
                self.reader_pos = None;
                return Ok((rows, pos + self.base));
            }
            pos += n as u64;
            bytes += n;
            if is_blank(&line[..n - 1]) {
                continue;
            }
            match self.decoder.decode(&line[..n - 1], &self.client_id) {
                Ok((event, origin)) => rows.push(SpooledEvent {
                    event,
                    origin,
                    end: pos + self.base,
                }),
                Err(err) => {
                    warn!(path = %self.path.display(), %err, "spool row no longer decodes; moving it to the rejected file");
                    self.rejected
                        .write(&format!("undecodable spool row: {err}"), &line)?;
                    self.live_rows = self.live_rows.saturating_sub(1);
                }
            }
        }
        self.reader_pos = Some(pos);
        Ok((rows, pos + self.base))
    }

    /// Marks rows up to the logical offset `end` as acknowledged; `rows` of
    /// them were live until now.
    pub fn settle(&mut self, end: u64, rows: u64) {
        let end = end.saturating_sub(self.base).min(self.len);
        if end > self.head {
            self.head = end;
        }
        self.live_rows = self.live_rows.saturating_sub(rows);
    }

    /// Backlog for reports: rows, bytes and the time of the oldest row.
    pub fn backlog(&mut self) -> Backlog {
        let oldest = if self.head >= self.len {
            0
        } else {
            match self.oldest {
                Some((at, time)) if at == self.head => time,
                _ => {
                    let time = self.time_at(self.head).unwrap_or(0);
                    self.oldest = Some((self.head, time));
                    time
                }
            }
        };
        Backlog {
            rows: self.live_rows,
            bytes: self.live_bytes(),
            oldest_unix_nanos: oldest,
        }
    }

    fn time_at(&mut self, physical: u64) -> Option<i64> {
        if physical >= self.flushed {
            return None;
        }
        let mut file = File::open(&self.path).ok()?;
        file.seek(SeekFrom::Start(physical)).ok()?;
        let mut line = Vec::new();
        BufReader::new(file).read_until(b'\n', &mut line).ok()?;
        let line = line.strip_suffix(b"\n")?;
        self.decoder
            .decode(line, &self.client_id)
            .ok()
            .map(|(e, _)| e.time_unix_nanos)
    }

    /// Reclaims acknowledged rows: truncates the file when every row in it
    /// is acknowledged (rows still waiting in memory then follow in the
    /// emptied file), or rewrites the unacknowledged tail once the
    /// acknowledged prefix outweighs it. Call periodically, after the state
    /// file recorded the acknowledgements.
    ///
    /// Truncating frees space and needs none. Compaction needs room for the
    /// live rows: it is not started while rows wait for the file, and when
    /// it fails the spool goes on with the file as it was (and does not try
    /// again until the file was emptied); only errors other than a full
    /// filesystem are returned.
    ///
    /// The file work runs on the blocking pool. Not cancel-safe: once
    /// started it must be awaited to the end, or the spool's idea of the
    /// file and the file part ways (the pipeline always awaits it).
    pub async fn maintain(&mut self) -> io::Result<()> {
        let dead = self.head - self.header_len;
        if dead == 0 {
            return Ok(());
        }
        if self.head >= self.pending_start {
            // Every row completely in the file is acknowledged. What is
            // buffered from `head` on is kept and written afresh.
            let file = Arc::clone(&self.file);
            let header_len = self.header_len;
            blocking::run(move || {
                file.set_len(header_len)?;
                file.sync_all()
            })
            .await?;
            let acked_pending = usize::try_from(self.head - self.pending_start)
                .map_err(io::Error::other)?
                .min(self.pending.len());
            self.pending.drain(..acked_pending);
            self.base += self.head - self.header_len;
            self.len = self.header_len + self.pending.len() as u64;
            self.pending_start = self.header_len;
            self.flushed = self.header_len;
            self.synced = self.header_len;
            self.head = self.header_len;
            self.reader_pos = None;
            // New rows start at the same physical offset as the old head.
            self.oldest = None;
            self.compaction_failed = false;
            if self.len == self.header_len {
                self.live_rows = 0;
            }
            return Ok(());
        }
        if dead >= COMPACT_MIN_BYTES
            && dead >= self.len - self.head
            && !self.has_unwritten()
            && !self.compaction_failed
        {
            self.sync().await?;
            let path = self.path.clone();
            let live = (self.head, self.len);
            let rewritten = blocking::run(move || {
                write_fresh(&path, &[live], Some(&path))?;
                Handles::open(&path)
            })
            .await;
            let handles = match rewritten {
                Ok(handles) => handles,
                Err(err) if is_full(&err) => {
                    // write_fresh removed its temporary file; the old file
                    // and handles are untouched.
                    warn!(path = %self.path.display(), %err, "cannot compact the spool: the filesystem is full; going on with the file as it is");
                    self.compaction_failed = true;
                    return Ok(());
                }
                Err(err) => return Err(err),
            };
            // The old handles name the replaced file; nothing is buffered
            // (synced above), so dropping them loses nothing.
            self.file = handles.append;
            self.reader = BufReader::with_capacity(256 * 1024, handles.read);
            self.reader_pos = None;
            self.base += dead;
            self.len = handles.len;
            self.pending_start = handles.len;
            self.flushed = handles.len;
            self.synced = handles.len;
            self.head = self.header_len;
            self.oldest = None;
        }
        Ok(())
    }
}

/// The handles a spool file is used through, opened together (blocking).
struct Handles {
    /// Appends rows (`O_APPEND`), syncs and truncates.
    append: Arc<File>,
    /// Reads rows back.
    read: File,
    /// The file's length when opened.
    len: u64,
}

impl Handles {
    fn open(path: &Path) -> io::Result<Self> {
        let append = OpenOptions::new().append(true).open(path)?;
        let len = append.metadata()?.len();
        let read = File::open(path)?;
        Ok(Self {
            append: Arc::new(append),
            read,
            len,
        })
    }
}

/// Writes a new spool file: the header, then the byte ranges of `source`.
/// Done in a temporary file that replaces `path` atomically; when that
/// fails (a full filesystem), the temporary file is removed and `path` is
/// untouched.
fn write_fresh(path: &Path, ranges: &[(u64, u64)], source: Option<&Path>) -> io::Result<()> {
    let tmp = path.with_extension("csv.tmp");
    let written = write_copy(&tmp, ranges, source);
    if let Err(err) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename itself durable.
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// The body of [`write_fresh`]: the header and the ranges, into `tmp`, synced.
fn write_copy(tmp: &Path, ranges: &[(u64, u64)], source: Option<&Path>) -> io::Result<()> {
    {
        let mut out = BufWriter::new(File::create(tmp)?);
        out.write_all(HEADER.as_bytes())?;
        out.write_all(b"\n")?;
        if let Some(source) = source {
            let mut input = File::open(source)?;
            for &(start, end) in ranges {
                input.seek(SeekFrom::Start(start))?;
                io::copy(&mut (&mut input).take(end - start), &mut out)?;
            }
        }
        out.flush()?;
        out.get_ref().sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use smesh_core::event::SPEC_VERSION;

    use super::*;

    pub(super) fn event(seq: u64, data: &[u8]) -> Event {
        let mut event = Event {
            id: format!("c1-{seq}"),
            source: "smesh://c1/file".into(),
            r#type: "dev.smesh.line".into(),
            specversion: SPEC_VERSION.into(),
            time_unix_nanos: 1_795_000_000_000_000_000 + seq as i64,
            datacontenttype: "text/plain".into(),
            subject: Some("s, \"quoted\"".into()),
            data: Bytes::copy_from_slice(data),
            client_id: "c1".into(),
            sequence: seq,
            ..Event::default()
        };
        event
            .extensions
            .insert("location".into(), "vienna, AT".into());
        event
    }

    pub(super) fn origin(position: u64) -> Origin {
        Origin {
            key: Arc::from("file:/tmp/in.jsonl"),
            position,
            file: None,
        }
    }

    pub(super) async fn append_all(
        spool: &mut Spool,
        seqs: std::ops::RangeInclusive<u64>,
    ) -> Vec<u64> {
        let mut ends = Vec::new();
        for seq in seqs {
            let (_, end) = spool.append(
                &event(seq, format!("payload {seq}").as_bytes()),
                Some(&origin(seq * 10)),
            );
            ends.push(end);
        }
        spool.sync().await.expect("sync");
        ends
    }

    #[tokio::test]
    async fn appended_rows_read_back_in_order_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("safeData.csv");
        let (mut spool, recovery) = Spool::open(&path, "c1", 0).expect("open");
        assert_eq!(recovery, Recovery::default());
        let ends = append_all(&mut spool, 1..=5).await;
        let (rows, _) = spool
            .read(spool.head(), u64::MAX, 3, usize::MAX)
            .expect("read");
        assert_eq!(
            rows.iter().map(|r| r.event.sequence).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(rows[2].end, ends[2]);
        let (rest, _) = spool
            .read(rows[2].end, u64::MAX, 10, usize::MAX)
            .expect("read rest");
        assert_eq!(
            rest.iter().map(|r| r.event.sequence).collect::<Vec<_>>(),
            vec![4, 5]
        );
        drop(spool);

        let (mut spool, recovery) = Spool::open(&path, "c1", 2).expect("reopen");
        assert_eq!(recovery.live_rows, 3);
        assert_eq!(recovery.acknowledged_rows, 2);
        assert_eq!(recovery.max_sequence, Some(5));
        assert_eq!(
            recovery.newest.get("file:/tmp/in.jsonl"),
            Some(&(5, origin(50))),
            "where the newest unacknowledged row was read"
        );
        assert_eq!(spool.live_rows(), 3);
        let (rows, _) = spool
            .read(spool.head(), u64::MAX, 10, usize::MAX)
            .expect("read after reopen");
        assert_eq!(
            rows.iter().map(|r| r.event.sequence).collect::<Vec<_>>(),
            vec![3, 4, 5],
            "acknowledged rows are passed over"
        );
        let text = std::fs::read_to_string(&path).expect("read file");
        assert!(text.starts_with(HEADER));
    }

    #[tokio::test]
    async fn settling_everything_truncates_and_offsets_stay_valid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("safeData.csv");
        let (mut spool, _) = Spool::open(&path, "c1", 0).expect("open");
        let ends = append_all(&mut spool, 1..=3).await;
        spool.settle(ends[1], 2);
        assert_eq!(spool.live_rows(), 1);
        spool.maintain().await.expect("maintain");
        assert_eq!(spool.live_rows(), 1, "a live row keeps the file");
        spool.settle(ends[2], 1);
        spool.maintain().await.expect("maintain");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("{HEADER}\n")
        );
        assert_eq!(spool.end(), ends[2], "logical offsets keep growing");
        let more = append_all(&mut spool, 4..=4).await;
        let (rows, _) = spool.read(ends[2], u64::MAX, 10, usize::MAX).expect("read");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].end, more[0]);
        assert_eq!(rows[0].event.sequence, 4);
    }

    #[tokio::test]
    async fn the_oldest_row_is_looked_up_again_after_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("safeData.csv");
        let (mut spool, _) = Spool::open(&path, "c1", 0).expect("open");
        let ends = append_all(&mut spool, 1..=1).await;
        assert_eq!(
            spool.backlog().oldest_unix_nanos,
            event(1, b"").time_unix_nanos
        );
        spool.settle(ends[0], 1);
        spool.maintain().await.expect("truncate");
        // The next row starts where the first one did.
        append_all(&mut spool, 2..=2).await;
        assert_eq!(
            spool.backlog().oldest_unix_nanos,
            event(2, b"").time_unix_nanos,
            "not the time of the row that was truncated away"
        );
    }

    #[tokio::test]
    async fn compaction_rewrites_only_the_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("safeData.csv");
        let (mut spool, _) = Spool::open(&path, "c1", 0).expect("open");
        let big = vec![b'x'; 64 * 1024];
        let mut ends = Vec::new();
        for seq in 1..=200u64 {
            let (_, end) = spool.append(&event(seq, &big), None);
            ends.push(end);
        }
        spool.sync().await.expect("sync");
        spool.settle(ends[149], 150);
        spool.maintain().await.expect("compact");
        let size = std::fs::metadata(&path).expect("stat").len();
        assert!(
            size < 50 * 70 * 1024,
            "file holds only the 50 live rows: {size} bytes"
        );
        let (rows, _) = spool
            .read(ends[149], u64::MAX, 100, usize::MAX)
            .expect("read after compaction");
        assert_eq!(rows.len(), 50);
        assert_eq!(rows[0].event.sequence, 151);
        assert_eq!(rows[49].end, ends[199]);
        assert_eq!(spool.backlog().rows, 50);
        assert_eq!(
            spool.backlog().oldest_unix_nanos,
            event(151, b"").time_unix_nanos
        );
    }
}
