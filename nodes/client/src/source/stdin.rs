//! `stdin`: one event per line of standard input; ends at end of input.
//!
//! A line longer than `--max-event-bytes` is not held in memory: it goes to
//! the rejected file through a spill file ([`crate::oversized`]), and
//! reading goes on with the next line (also when the filesystem is too full
//! for the spill file: the rejected row then gives only the line's size).
//! Standard input that cannot be read stops the client with an error.

use std::sync::Arc;

use bytes::Bytes;
use smesh_core::time::now_unix_nanos;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio_util::task::TaskTracker;
use tracing::{error, info};

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
        tasks.spawn(run(self.clone(), context, tokio::io::stdin()));
    }
}

async fn run<R: AsyncRead + Unpin>(spec: StdinSpec, context: SourceContext, input: R) {
    let source: Arc<str> = Arc::from(format!("smesh://{}/stdin", context.client_id));
    let kind: Arc<str> = Arc::from(spec.event_type.as_str());
    let content_type: Arc<str> = Arc::from(spec.content_type.as_str());
    let mut input = BufReader::new(input);
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
                // The rest of the input is never read: not an end, a failure.
                error!(%err, lines, "cannot read standard input; the client stops");
                context.fail(format!(
                    "stdin source: cannot read standard input after {lines} lines: {err}"
                ));
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
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncReadExt, ReadBuf};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    /// Runs the source over `input` to its end; its readings and context.
    async fn read_all<R: AsyncRead + Unpin + Send + 'static>(
        input: R,
        spill: SpillDir,
    ) -> (Vec<Reading>, SourceContext) {
        let (tx, mut rx) = mpsc::channel(16);
        let context = SourceContext {
            client_id: "c1".into(),
            readings: tx,
            positions: Default::default(),
            files: Default::default(),
            max_event_bytes: 1000,
            spill,
            shutdown: CancellationToken::new(),
            failure: Default::default(),
        };
        let spec = StdinSpec {
            content_type: "text/plain".into(),
            event_type: DEFAULT_TYPE.into(),
        };
        let task = tokio::spawn(run(spec, context.clone(), input));
        let mut readings = Vec::new();
        while let Ok(Some(reading)) =
            tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await
        {
            readings.push(reading);
            if task.is_finished() && rx.is_empty() {
                break;
            }
        }
        tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("the source ends")
            .expect("no panic");
        (readings, context)
    }

    #[tokio::test]
    async fn a_full_filesystem_does_not_stop_the_source_at_a_long_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The spill file takes 5000 bytes, then the filesystem is full.
        for full_after in [0, 5000] {
            let spill = SpillDir::beside(&dir.path().join("s.csv")).full_after(full_after);
            let mut input = b"first\n".to_vec();
            input.extend(std::iter::repeat_n(b'z', 100_000));
            input.extend_from_slice(b"\nsecond\n");
            let (readings, context) = read_all(std::io::Cursor::new(input), spill).await;
            let got: Vec<_> = readings
                .iter()
                .map(|r| {
                    (
                        String::from_utf8_lossy(&r.data).into_owned(),
                        r.oversized.as_ref().map(|o| (o.size, o.unkept.is_some())),
                    )
                })
                .collect();
            assert_eq!(
                got,
                vec![
                    ("first".to_string(), None),
                    (String::new(), Some((100_000, true))),
                    ("second".to_string(), None),
                ],
                "full after {full_after} bytes"
            );
            assert_eq!(
                context.failure.reason(),
                None,
                "the end of input, no failure"
            );
            drop(readings);
            assert_eq!(
                std::fs::read_dir(dir.path()).expect("dir").count(),
                0,
                "no spill file is left"
            );
        }
    }

    /// Input that breaks after what it was given.
    struct Broken;

    impl AsyncRead for Broken {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(Err(std::io::Error::other("input/output error")))
        }
    }

    #[tokio::test]
    async fn input_that_cannot_be_read_stops_the_client_with_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = (&b"first\n"[..]).chain(Broken);
        let (readings, context) =
            read_all(input, SpillDir::beside(&dir.path().join("s.csv"))).await;
        assert_eq!(readings.len(), 1, "what was read before is handed on");
        let reason = context.failure.reason().expect("a failure, not an end");
        assert!(reason.contains("input/output error"), "{reason}");
        assert!(context.shutdown.is_cancelled(), "the client stops");
    }

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
