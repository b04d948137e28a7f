//! Opening a spool left by an earlier run, whatever state it is in.
//!
//! On open, a torn last row (the process died mid-append) is cut off, rows
//! that do not decode are moved to `safeData.rejected.csv` with the reason,
//! and rows already acknowledged (by sequence number, from the client's
//! state file) are passed over. A damaged spool never stops the client.
//! What was found is reported as a [`Recovery`], which also tells the client
//! where its sequence numbers and file sources continue.
//!
//! All of it is done in place, so it works on a full filesystem: the torn
//! row is cut by truncating the file, rows set aside are overwritten with
//! blanks (same length, so no new space), and acknowledged rows at the
//! front stay where they are as the spool's dead prefix, reclaimed later
//! like any acknowledged row. Only a file that is not a spool at all (a
//! foreign header) with rows worth keeping is copied.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;

use tracing::warn;

use super::{HEADER, Origin, RejectedFile, RowDecoder, is_blank, write_fresh};

/// What opening the spool found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Unacknowledged rows kept.
    pub live_rows: u64,
    /// Rows passed over because the state file says they were acknowledged.
    pub acknowledged_rows: u64,
    /// Rows moved to the rejected file.
    pub quarantined_rows: u64,
    /// Bytes of a torn last row that were cut off.
    pub torn_bytes: u64,
    /// Highest sequence number in the file.
    pub max_sequence: Option<u64>,
    /// (incarnation, sequence) of the file's last good row, acknowledged or
    /// not: the newest event a previous run handed over through the spool.
    pub last_row: Option<(u64, u64)>,
    /// Per source, where its newest unacknowledged row was read (the row
    /// with the highest sequence): everything it read before is delivered
    /// or in the spool, so it resumes there, in the file the origin names.
    pub newest: HashMap<String, (u64, Origin)>,
    /// The header was missing or different (not our format): it was rewritten.
    pub header_rewritten: bool,
}

/// Scans the file once and repairs it in place. Returns what was found and
/// the physical offset of the first unacknowledged row (the spool's head).
pub(super) fn recover(
    path: &Path,
    client_id: &str,
    acked_through: u64,
    rejected: &mut RejectedFile,
) -> io::Result<(Recovery, u64)> {
    let header_len = HEADER.len() as u64 + 1;
    let mut recovery = Recovery::default();
    let mut decoder = RowDecoder::default();
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let mut reader = BufReader::with_capacity(256 * 1024, &file);
    let mut line = Vec::with_capacity(1024);
    let mut offset = 0u64;
    // Byte ranges of rows to keep, contiguous runs merged (for a copy).
    let mut keep: Vec<(u64, u64)> = Vec::new();
    // Rows to overwrite with blanks: set aside, or acknowledged behind a live row.
    let mut blank: Vec<(u64, u64)> = Vec::new();
    // Where the first live row starts.
    let mut head = None;
    // Where a torn last row starts.
    let mut torn_at = None;
    let mut first = true;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)? as u64;
        if n == 0 {
            break;
        }
        let (start, end) = (offset, offset + n);
        offset = end;
        if line.last() != Some(&b'\n') {
            recovery.torn_bytes = n;
            torn_at = Some(start);
            warn!(path = %path.display(), bytes = n, "spool ends in a torn row (the client died mid-append); cutting it off");
            break;
        }
        let body = &line[..line.len() - 1];
        if first {
            first = false;
            if body == HEADER.as_bytes() {
                continue;
            }
            recovery.header_rewritten = true;
            if body.is_empty() {
                continue;
            }
        }
        if is_blank(body) {
            continue;
        }
        match decoder.decode(body, client_id) {
            Ok((event, origin)) => {
                recovery.last_row = Some((event.incarnation, event.sequence));
                recovery.max_sequence = Some(
                    recovery
                        .max_sequence
                        .map_or(event.sequence, |m| m.max(event.sequence)),
                );
                if let Some(origin) = origin.filter(|_| event.sequence > acked_through) {
                    match recovery.newest.entry(origin.key.to_string()) {
                        Entry::Occupied(mut newest) if newest.get().0 < event.sequence => {
                            newest.insert((event.sequence, origin));
                        }
                        Entry::Occupied(_) => {}
                        Entry::Vacant(slot) => {
                            slot.insert((event.sequence, origin));
                        }
                    }
                }
                if event.sequence <= acked_through {
                    recovery.acknowledged_rows += 1;
                    if head.is_some() {
                        blank.push((start, end));
                    }
                    continue;
                }
                recovery.live_rows += 1;
                head.get_or_insert(start);
                match keep.last_mut() {
                    Some(range) if range.1 == start => range.1 = end,
                    _ => keep.push((start, end)),
                }
            }
            Err(err) => {
                recovery.quarantined_rows += 1;
                warn!(path = %path.display(), offset = start, %err, rejected = %rejected.path().display(), "spool row cannot be decoded; moving it to the rejected file");
                rejected.write(&format!("undecodable spool row: {err}"), &line)?;
                blank.push((start, end));
            }
        }
    }
    drop(reader);
    if recovery.header_rewritten && recovery.live_rows > 0 {
        // Not our header, yet rows of ours: the one case that copies.
        write_fresh(path, &keep, Some(path))?;
        return Ok((recovery, header_len));
    }
    if recovery.header_rewritten || torn_at == Some(0) || offset == 0 {
        // Nothing worth keeping, or no complete header: start the file
        // over. Truncating first frees the space the header needs.
        file.set_len(0)?;
        let mut header = HEADER.as_bytes().to_vec();
        header.push(b'\n');
        file.write_all_at(&header, 0)?;
        file.sync_all()?;
        return Ok((recovery, header_len));
    }
    let mut end = torn_at.unwrap_or(offset);
    let mut repaired = torn_at.is_some();
    for &(start, stop) in &blank {
        if stop <= end {
            file.write_all_at(&vec![b' '; (stop - start - 1) as usize], start)?;
            repaired = true;
        }
    }
    if recovery.live_rows == 0 && end > header_len {
        // Everything is acknowledged or set aside.
        end = header_len;
    }
    if end < file.metadata()?.len() {
        file.set_len(end)?;
        repaired = true;
    }
    if repaired {
        file.sync_all()?;
    }
    Ok((recovery, head.unwrap_or(end).min(end)))
}

/// The file's inode, to tell in tests that a repair happened in place.
#[cfg(test)]
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{append_all, event};
    use super::super::{Spool, encode_row, rejected_path};
    use super::*;

    #[tokio::test]
    async fn a_torn_last_row_is_cut_and_garbage_is_quarantined() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("safeData.csv");
        let (mut spool, _) = Spool::open(&path, "c1", 0).expect("open");
        append_all(&mut spool, 1..=4).await;
        drop(spool);
        let mut text = std::fs::read(&path).expect("read");
        // Garbage between rows 2 and 3, and half a row at the end.
        let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
        let mut damaged = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            damaged.extend_from_slice(line);
            if i == 2 {
                damaged.extend_from_slice(b"this is not a spool row\n\"unbalanced,quote\n");
            }
        }
        let torn = encode_row(&event(5, b"torn"), None);
        damaged.extend_from_slice(&torn[..torn.len() / 2]);
        text = damaged;
        std::fs::write(&path, &text).expect("write");

        let (mut spool, recovery) = Spool::open(&path, "c1", 0).expect("recover");
        assert_eq!(recovery.live_rows, 4);
        assert_eq!(recovery.quarantined_rows, 2);
        assert_eq!(recovery.torn_bytes, (torn.len() / 2) as u64);
        let (rows, _) = spool
            .read(spool.head(), u64::MAX, 100, usize::MAX)
            .expect("read");
        assert_eq!(
            rows.iter().map(|r| r.event.sequence).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        let rejected = std::fs::read_to_string(rejected_path(&path)).expect("rejected file");
        assert!(rejected.starts_with("time,reason,row\n"));
        assert!(rejected.contains("this is not a spool row"));
        assert!(rejected.contains("unbalanced,quote"));
        drop(spool);

        // Set aside once: a second open finds blanks, not garbage.
        let (_, again) = Spool::open(&path, "c1", 0).expect("reopen");
        assert_eq!(again.quarantined_rows, 0);
        assert_eq!(again.live_rows, 4);
        let rejected_again = std::fs::read_to_string(rejected_path(&path)).expect("rejected file");
        assert_eq!(rejected_again, rejected);
    }

    /// Recovery must work on a full filesystem: it may cut and overwrite
    /// the file, never copy it (a copy needs as much free space as the
    /// spool holds).
    #[tokio::test]
    async fn a_torn_tail_is_cut_in_place_without_a_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("safeData.csv");
        let (mut spool, _) = Spool::open(&path, "c1", 0).expect("open");
        append_all(&mut spool, 1..=3).await;
        drop(spool);
        let whole = std::fs::read(&path).expect("read");
        let torn = encode_row(&event(4, b"torn"), None);
        let mut damaged = whole.clone();
        damaged.extend_from_slice(&torn[..torn.len() - 5]);
        // Rows 1 and 2 were acknowledged, row 3 was not.
        std::fs::write(&path, &damaged).expect("write");
        let before = inode(&path);

        let (mut spool, recovery) = Spool::open(&path, "c1", 2).expect("recover");
        assert_eq!(recovery.torn_bytes, (torn.len() - 5) as u64);
        assert_eq!(recovery.acknowledged_rows, 2);
        assert_eq!(recovery.live_rows, 1);
        assert_eq!(inode(&path), before, "the same file, repaired in place");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            whole,
            "only the torn row was cut; the acknowledged rows wait to be reclaimed"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("safeData.csv")],
            "no copy, no temporary file"
        );
        let (rows, _) = spool
            .read(spool.head(), u64::MAX, 10, usize::MAX)
            .expect("read");
        assert_eq!(
            rows.iter().map(|r| r.event.sequence).collect::<Vec<_>>(),
            vec![3]
        );
        assert_eq!(spool.backlog().rows, 1);
    }

    #[tokio::test]
    async fn a_spool_of_acknowledged_rows_is_truncated_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("safeData.csv");
        let (mut spool, _) = Spool::open(&path, "c1", 0).expect("open");
        append_all(&mut spool, 1..=3).await;
        drop(spool);
        let mut text = std::fs::read(&path).expect("read");
        text.extend_from_slice(b"sequence,id");
        std::fs::write(&path, &text).expect("write");
        let before = inode(&path);
        let (spool, recovery) = Spool::open(&path, "c1", 3).expect("recover");
        assert_eq!(recovery.acknowledged_rows, 3);
        assert_eq!(spool.live_rows(), 0);
        assert_eq!(inode(&path), before);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("{HEADER}\n")
        );
    }

    #[test]
    fn a_torn_header_starts_the_file_over_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("safeData.csv");
        std::fs::write(&path, &HEADER.as_bytes()[..10]).expect("write");
        let before = inode(&path);
        let (spool, recovery) = Spool::open(&path, "c1", 0).expect("recover");
        assert_eq!(recovery.torn_bytes, 10);
        assert_eq!(spool.live_rows(), 0);
        assert_eq!(inode(&path), before);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("{HEADER}\n")
        );
    }

    #[test]
    fn a_foreign_header_is_replaced_and_its_rows_kept_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("safeData.csv");
        std::fs::write(&path, "S1;172.0.0.1;sensor;21\nS2;172.0.0.2;sensor;22\n").expect("write");
        let (spool, recovery) = Spool::open(&path, "c1", 0).expect("recover");
        assert!(recovery.header_rewritten);
        assert_eq!(
            recovery.quarantined_rows, 2,
            "both foreign rows are kept aside, none dropped"
        );
        assert_eq!(spool.live_rows(), 0);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("{HEADER}\n")
        );
    }
}
