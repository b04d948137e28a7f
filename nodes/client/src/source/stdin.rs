//! `stdin`: one event per line of standard input; ends at end of input.

use std::sync::Arc;

use bytes::Bytes;
use smesh_core::time::now_unix_nanos;
use tokio::io::{AsyncBufReadExt, BufReader};
use tracing::{info, warn};

use super::{Options, Reading, SourceContext};

pub const DEFAULT_TYPE: &str = "dev.smesh.line";

#[derive(Debug, Clone, PartialEq)]
pub struct StdinSpec {
    pub content_type: String,
    pub event_type: String,
}

impl StdinSpec {
    pub(super) fn parse(options: &mut Options) -> Result<Self, String> {
        Ok(Self {
            content_type: options.take_or("content-type", "text/plain"),
            event_type: options.take_or("type", DEFAULT_TYPE),
        })
    }
}

pub(super) async fn run(spec: StdinSpec, context: SourceContext) {
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
