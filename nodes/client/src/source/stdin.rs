//! `stdin`: one event per line of standard input; ends at end of input.

use std::sync::Arc;

use bytes::Bytes;
use smesh_core::time::now_unix_nanos;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

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
    let mut line = Vec::new();
    let mut lines = 0u64;
    loop {
        line.clear();
        let read = tokio::select! {
            () = context.shutdown.cancelled() => return,
            read = input.read_until(b'\n', &mut line) => read,
        };
        match read {
            Ok(0) => {
                info!(lines, "end of standard input");
                return;
            }
            Ok(_) => {
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                if text.is_empty() {
                    continue;
                }
                lines += 1;
                let reading = Reading {
                    source: Arc::clone(&source),
                    kind: Arc::clone(&kind),
                    content_type: Arc::clone(&content_type),
                    subject: None,
                    data: Bytes::copy_from_slice(text),
                    time_unix_nanos: now_unix_nanos(),
                    origin: None,
                };
                if context.readings.send(reading).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                warn!(%err, "cannot read standard input; stdin source stops");
                return;
            }
        }
    }
}
