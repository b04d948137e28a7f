//! Splitting a byte stream into lines without holding a long one.
//!
//! [`BoundedLines`] is fed whatever a reader has buffered and hands back
//! complete lines. A line is held in memory up to `max` bytes; past that it
//! goes, piece by piece, into a spill file ([`crate::oversized`]) and comes
//! back as [`Line::Oversized`], so a source holds at most about `max` bytes
//! of any line however long it is, and reads each byte once.

use std::io;

use crate::oversized::{Oversized, Spill, SpillDir};

/// One line, without its `\n` (or `\r\n`).
#[derive(Debug)]
pub enum Line {
    /// At most `max` bytes, in memory.
    Data(Vec<u8>),
    /// Longer than `max`: on disk.
    Oversized(Oversized),
}

/// Splits bytes into lines of at most `max` bytes held in memory.
#[derive(Debug)]
pub struct BoundedLines {
    /// Longest line kept in memory (`--max-event-bytes`).
    max: usize,
    /// Where longer lines go.
    spill_dir: SpillDir,
    /// The line so far while it fits.
    partial: Vec<u8>,
    /// The line so far once it did not.
    spill: Option<Spill>,
}

impl BoundedLines {
    /// Lines of at most `max` bytes in memory; longer ones spill into `spill_dir`.
    pub fn new(max: usize, spill_dir: SpillDir) -> Self {
        Self {
            max,
            spill_dir,
            partial: Vec::new(),
            spill: None,
        }
    }

    /// The longest line held in memory.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes the bytes of `buf` up to and including its first newline.
    /// Returns how many it took (always all of them when there is no
    /// newline) and the line they ended, if they did.
    pub fn push(&mut self, buf: &[u8]) -> io::Result<(usize, Option<Line>)> {
        match buf.iter().position(|b| *b == b'\n') {
            Some(newline) => {
                self.append(&buf[..newline])?;
                Ok((newline + 1, Some(self.take_line()?)))
            }
            None => {
                self.append(buf)?;
                Ok((buf.len(), None))
            }
        }
    }

    /// The end of the input: what is pending, if anything, is the last line.
    pub fn finish(&mut self) -> io::Result<Option<Line>> {
        if self.pending() == 0 {
            return Ok(None);
        }
        self.take_line().map(Some)
    }

    /// Bytes of an unfinished line taken so far.
    pub fn pending(&self) -> u64 {
        match &self.spill {
            Some(spill) => spill.size(),
            None => self.partial.len() as u64,
        }
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(spill) = self.spill.as_mut() {
            return spill.write(bytes);
        }
        if self.partial.len() + bytes.len() <= self.max {
            self.partial.extend_from_slice(bytes);
            return Ok(());
        }
        let mut spill = self.spill_dir.create()?;
        spill.write(&self.partial)?;
        spill.write(bytes)?;
        self.partial = Vec::new();
        self.spill = Some(spill);
        Ok(())
    }

    fn take_line(&mut self) -> io::Result<Line> {
        if let Some(spill) = self.spill.take() {
            return spill.finish().map(Line::Oversized);
        }
        let mut line = std::mem::take(&mut self.partial);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(Line::Data(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(max: usize, input: &[u8], piece: usize) -> Vec<Result<Vec<u8>, u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut splitter = BoundedLines::new(max, SpillDir::beside(&dir.path().join("s.csv")));
        let mut out = Vec::new();
        let mut seen = |line: Line| match line {
            Line::Data(data) => out.push(Ok(data)),
            Line::Oversized(o) => out.push(Err(o.size)),
        };
        for chunk in input.chunks(piece) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let (took, line) = splitter.push(rest).expect("push");
                rest = &rest[took..];
                if let Some(line) = line {
                    seen(line);
                }
            }
        }
        if let Some(line) = splitter.finish().expect("finish") {
            seen(line);
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "no spill file is left behind"
        );
        out
    }

    #[test]
    fn a_long_line_between_short_ones_is_set_aside_whatever_the_pieces() {
        let mut input = b"short\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 5000));
        input.extend_from_slice(b"\r\nnext\nlast without newline");
        for piece in [1, 7, 100, 4096, input.len()] {
            assert_eq!(
                lines(100, &input, piece),
                vec![
                    Ok(b"short".to_vec()),
                    Err(5000),
                    Ok(b"next".to_vec()),
                    Ok(b"last without newline".to_vec()),
                ],
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn a_line_of_exactly_max_bytes_stays_in_memory() {
        assert_eq!(
            lines(4, b"abcd\nabcde\n", 3),
            vec![Ok(b"abcd".to_vec()), Err(5)]
        );
    }
}
