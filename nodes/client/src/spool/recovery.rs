//! Opening a spool left by an earlier run, whatever state it is in.
//!
//! On open, a torn last row (the process died mid-append) is cut off, rows
//! that do not decode are moved to `safeData.rejected.csv` with the reason,
//! and rows already acknowledged (by sequence number, from the client's
//! state file) are dropped. A damaged spool never stops the client. What
//! was found is reported as a [`Recovery`], which also tells the client
//! where its sequence numbers and file sources continue.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use tracing::warn;

use super::{HEADER, RejectedFile, RowDecoder, write_fresh};

/// What opening the spool found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Unacknowledged rows kept.
    pub live_rows: u64,
    /// Rows dropped because the state file says they were acknowledged.
    pub acknowledged_rows: u64,
    /// Rows moved to the rejected file.
    pub quarantined_rows: u64,
    /// Bytes of a torn last row that were cut off.
    pub torn_bytes: u64,
    /// Highest sequence number in the file.
    pub max_sequence: Option<u64>,
    /// Furthest position per source seen in the file.
    pub positions: HashMap<String, u64>,
    /// The header was missing or different (not our format): it was rewritten.
    pub header_rewritten: bool,
}

/// Scans the file once, decides what to keep, and rewrites it if anything
/// must go.
pub(super) fn recover(
    path: &Path,
    client_id: &str,
    acked_through: u64,
    rejected: &mut RejectedFile,
) -> io::Result<Recovery> {
    let mut recovery = Recovery::default();
    let mut decoder = RowDecoder::default();
    let mut reader = BufReader::with_capacity(256 * 1024, File::open(path)?);
    let mut line = Vec::with_capacity(1024);
    let mut offset = 0u64;
    // Byte ranges of rows to keep, contiguous runs merged.
    let mut keep: Vec<(u64, u64)> = Vec::new();
    let mut dropped_any = false;
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
            dropped_any = true;
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
            dropped_any = true;
            if body.is_empty() {
                continue;
            }
        }
        if body.is_empty() {
            dropped_any = true;
            continue;
        }
        match decoder.decode(body, client_id) {
            Ok((event, origin)) => {
                recovery.max_sequence = Some(
                    recovery
                        .max_sequence
                        .map_or(event.sequence, |m| m.max(event.sequence)),
                );
                if let Some(origin) = origin {
                    let entry = recovery
                        .positions
                        .entry(origin.key.to_string())
                        .or_insert(0);
                    *entry = (*entry).max(origin.position);
                }
                if event.sequence <= acked_through {
                    recovery.acknowledged_rows += 1;
                    dropped_any = true;
                    continue;
                }
                recovery.live_rows += 1;
                match keep.last_mut() {
                    Some(range) if range.1 == start => range.1 = end,
                    _ => keep.push((start, end)),
                }
            }
            Err(err) => {
                recovery.quarantined_rows += 1;
                dropped_any = true;
                warn!(path = %path.display(), offset = start, %err, rejected = %rejected.path().display(), "spool row cannot be decoded; moving it to the rejected file");
                rejected.write(&format!("undecodable spool row: {err}"), &line)?;
            }
        }
    }
    if dropped_any {
        // The old file stays readable until the new one replaces it.
        write_fresh(path, &keep, Some(path))?;
    }
    Ok(recovery)
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
        let rows = spool.read(spool.head(), 100, usize::MAX).expect("read");
        assert_eq!(
            rows.iter().map(|r| r.event.sequence).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        let rejected = std::fs::read_to_string(rejected_path(&path)).expect("rejected file");
        assert!(rejected.starts_with("time,reason,row\n"));
        assert!(rejected.contains("this is not a spool row"));
        assert!(rejected.contains("unbalanced,quote"));
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
