//! `stdin`: one event per line of standard input; ends at end of input.
//!
//! A line longer than `--max-event-bytes` is not held in memory: it goes to
//! the rejected file through a spill file ([`crate::oversized`]), and
//! reading goes on with the next line.

use std::sync::Arc;

use bytes::Bytes;
use smesh_core::time::now_unix_nanos;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::lines::{BoundedLines, Line};
use super::options::{Options, SourceOption, event_type, text};
use super::{Reading, Source, SourceContext, SourceKind};

pub const DEFAULT_TYPE: &str = "dev.smesh.line";

/// `stdin` in `--source`.
pub(super) const KIND: SourceKind = SourceKind {
    name: "stdin",
    options: &[
        SourceOption::value(
            "content-type",
            "text/plain",
            "the content type of every line",
        ),
        event_type(DEFAULT_TYPE),
    ],
    example: "stdin:content-type=application/json,type=dev.example.line",
    build: |options| Ok(Arc::new(StdinSpec::parse(options)?)),
};

/// A `stdin` source as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct StdinSpec {
    /// CloudEvents `datacontenttype` of every line.
    pub content_type: String,
    /// CloudEvents `type` of every line.
    pub event_type: String,
}

impl StdinSpec {
    fn parse(options: &mut Options) -> Result<Self, String> {
        Ok(Self {
            content_type: options.value("content-type", text)?,
            event_type: options.value("type", text)?,
        })
    }
}

impl Source for StdinSpec {
    fn spawn(&self, context: SourceContext, tasks: &TaskTracker) {
        tasks.spawn(run(self.clone(), context));
    }
}

async fn run(spec: StdinSpec, context: SourceContext) {
    let source: Arc<str> = Arc::from(format!("smesh://{}/stdin", context.client_id));
    let kind: Arc<str> = Arc::from(spec.event_type.as_str());
    let content_type: Arc<str> = Arc::from(spec.content_type.as_str());
    let mut input = BufReader::new(tokio::io::stdin());
    // At most --max-event-bytes of a line in memory; longer ones spill.
    let mut splitter = BoundedLines::new(context.max_event_bytes, context.spill.clone());
    let mut lines = 0u64;
    loop {
        let read = tokio::select! {
            () = context.shutdown.cancelled() => return,
            read = next_line(&mut input, &mut splitter) => read,
        };
        let line = match read {
            Ok(Some(line)) => line,
            Ok(None) => {
                info!(lines, "end of standard input");
                return;
            }
            Err(err) => {
                warn!(%err, "cannot read standard input; stdin source stops");
                return;
            }
        };
        let (data, oversized) = match line {
            Line::Data(data) if data.is_empty() => continue,
            Line::Data(data) => (Bytes::from(data), None),
            Line::Oversized(oversized) => (Bytes::new(), Some(Arc::new(oversized))),
        };
        lines += 1;
        let reading = Reading {
            source: Arc::clone(&source),
            kind: Arc::clone(&kind),
            content_type: Arc::clone(&content_type),
            subject: None,
            data,
            time_unix_nanos: now_unix_nanos(),
            origin: None,
            oversized,
        };
        if context.readings.send(reading).await.is_err() {
            return;
        }
    }
}

/// The next line of `input`; `None` at its end. Cancel-safe: what was
/// taken of an unfinished line stays in `splitter`.
async fn next_line<R: AsyncBufRead + Unpin>(
    input: &mut R,
    splitter: &mut BoundedLines,
) -> std::io::Result<Option<Line>> {
    loop {
        let buf = input.fill_buf().await?;
        if buf.is_empty() {
            return splitter.finish();
        }
        let (took, line) = splitter.push(buf)?;
        input.consume(took);
        if line.is_some() {
            return Ok(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oversized::SpillDir;

    #[tokio::test]
    async fn a_long_line_is_set_aside_and_reading_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut input = b"first\n".to_vec();
        input.extend(std::iter::repeat_n(b'z', 100_000));
        input.extend_from_slice(b"\r\nsecond\nlast");
        let mut input = BufReader::with_capacity(1000, input.as_slice());
        let mut splitter = BoundedLines::new(1000, SpillDir::beside(&dir.path().join("s.csv")));
        let mut got = Vec::new();
        while let Some(line) = next_line(&mut input, &mut splitter).await.expect("read") {
            got.push(match line {
                Line::Data(data) => Ok(data),
                Line::Oversized(o) => Err(o.size),
            });
        }
        assert_eq!(
            got,
            vec![
                Ok(b"first".to_vec()),
                Err(100_000),
                Ok(b"second".to_vec()),
                Ok(b"last".to_vec()),
            ]
        );
    }
}
