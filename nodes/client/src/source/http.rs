//! `http`: polls a URL and turns its JSON into events, the way the
//! prototype polled an open-data API every ten seconds.
//!
//! With `pointer` (an RFC 6901 JSON pointer) the selected part of the
//! document is sent instead of the whole; when that part is an array, each
//! element becomes one event. A failed poll is logged and tried again at the
//! next interval.
//!
//! A body larger than `--max-event-bytes` is not held in memory: it goes
//! whole to the rejected file through a spill file ([`crate::oversized`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use smesh_core::time::now_unix_nanos;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::options::{Options, SourceOption, duration, event_type, text};
use super::{Reading, Source, SourceContext, SourceKind};
use crate::oversized::{Oversized, Spill, SpillDir};

pub const DEFAULT_TYPE: &str = "dev.smesh.http.document";

/// `http` in `--source`.
pub(super) const KIND: SourceKind = SourceKind {
    name: "http",
    options: &[
        SourceOption::required("url", "the URL to poll (http:// or https://)").free_text(),
        SourceOption::value("every", "10s", "time between polls"),
        SourceOption::absent(
            "pointer",
            "JSON pointer to the part to send (without it: the whole document); an array gives one event per element",
        )
        .free_text(),
        SourceOption::value("timeout", "10s", "longest a poll may take"),
        event_type(DEFAULT_TYPE),
    ],
    example: "http:url=https://example.org/a.json?x=1,y=2,every=5s,pointer=/0/Warnstufen,timeout=2s,type=dev.example.document",
    build: |options| Ok(Arc::new(HttpSpec::parse(options)?)),
};

/// An `http` source as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSpec {
    /// What to poll; also the CloudEvents `source`.
    pub url: String,
    /// Time between polls.
    pub every: Duration,
    /// The part of the document to send (RFC 6901); `None` sends all of it.
    pub pointer: Option<String>,
    /// Longest a poll may take before it counts as failed.
    pub timeout: Duration,
    /// CloudEvents `type` of every event.
    pub event_type: String,
}

impl HttpSpec {
    fn parse(options: &mut Options) -> Result<Self, String> {
        let url = options.value("url", text)?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "http source: url {url:?} must start with http:// or https://"
            ));
        }
        let pointer = options.optional("pointer", text)?;
        if let Some(pointer) = &pointer {
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err(format!(
                    "http source: pointer {pointer:?} must start with '/' (RFC 6901)"
                ));
            }
        }
        Ok(Self {
            url,
            every: options.value("every", duration)?,
            pointer,
            timeout: options.value("timeout", duration)?,
            event_type: options.value("type", text)?,
        })
    }
}

impl Source for HttpSpec {
    fn spawn(&self, context: SourceContext, tasks: &TaskTracker) {
        tasks.spawn(run(self.clone(), context));
    }
}

/// One event's worth of a fetched document: its subject (the JSON pointer of
/// an array element) and its JSON.
pub type Document = (Option<String>, Vec<u8>);

/// Splits a fetched document into event payloads.
pub fn documents(body: &[u8], pointer: Option<&str>) -> Result<Vec<Document>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|err| format!("response is not JSON: {err}"))?;
    let pointer = pointer.unwrap_or("");
    let selected = value
        .pointer(pointer)
        .ok_or_else(|| format!("JSON pointer {pointer:?} selects nothing in the response"))?;
    let encode = |v: &serde_json::Value| serde_json::to_vec(v).map_err(|e| e.to_string());
    match selected {
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| Ok((Some(format!("{pointer}/{i}")), encode(item)?)))
            .collect(),
        other => Ok(vec![(None, encode(other)?)]),
    }
}

/// A response body, read without holding more than `--max-event-bytes`.
enum Body {
    /// Small enough to become events.
    Whole(Vec<u8>),
    /// Larger: on disk, bound for the rejected file whole.
    Oversized(Oversized),
}

/// What one poll gave.
enum Polled {
    /// The events of the document.
    Documents(Vec<Document>),
    /// A body larger than `--max-event-bytes`.
    Oversized(Oversized),
}

/// Reads the body piece by piece; past `max` bytes it goes to a spill file.
async fn read_body(
    mut response: reqwest::Response,
    max: usize,
    spill_dir: &SpillDir,
) -> Result<Body, String> {
    let spill_error = |err: std::io::Error| format!("cannot set aside a large response: {err}");
    let mut body = Vec::new();
    let mut spill: Option<Spill> = None;
    while let Some(piece) = response.chunk().await.map_err(|e| e.to_string())? {
        if let Some(spill) = spill.as_mut() {
            spill.write(&piece).map_err(spill_error)?;
        } else if body.len() + piece.len() > max {
            let mut started = spill_dir.create().map_err(spill_error)?;
            started.write(&body).map_err(spill_error)?;
            started.write(&piece).map_err(spill_error)?;
            body = Vec::new();
            spill = Some(started);
        } else {
            body.extend_from_slice(&piece);
        }
    }
    match spill {
        Some(spill) => spill
            .finish_body()
            .map(Body::Oversized)
            .map_err(spill_error),
        None => Ok(Body::Whole(body)),
    }
}

async fn run(spec: HttpSpec, context: SourceContext) {
    let client = match reqwest::Client::builder()
        .timeout(spec.timeout)
        .user_agent(concat!("smesh-client/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            warn!(%err, url = %spec.url, "cannot create an HTTP client; http source stops");
            return;
        }
    };
    let source: Arc<str> = Arc::from(spec.url.as_str());
    let kind: Arc<str> = Arc::from(spec.event_type.as_str());
    let content_type: Arc<str> = Arc::from("application/json");
    let mut tick = tokio::time::interval(spec.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = context.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let fetched = async {
            let response = client
                .get(&spec.url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("HTTP {status}"));
            }
            match read_body(response, context.max_event_bytes, &context.spill).await? {
                Body::Whole(body) => {
                    documents(&body, spec.pointer.as_deref()).map(Polled::Documents)
                }
                Body::Oversized(oversized) => Ok(Polled::Oversized(oversized)),
            }
        };
        let documents = tokio::select! {
            () = context.shutdown.cancelled() => return,
            fetched = fetched => fetched,
        };
        match documents {
            Ok(Polled::Oversized(oversized)) => {
                // Rejected (and logged) by the pipeline, with its size.
                debug!(url = %spec.url, size = oversized.size, "response larger than --max-event-bytes");
                let reading = Reading {
                    source: Arc::clone(&source),
                    kind: Arc::clone(&kind),
                    content_type: Arc::clone(&content_type),
                    subject: None,
                    data: Bytes::new(),
                    time_unix_nanos: now_unix_nanos(),
                    origin: None,
                    oversized: Some(Arc::new(oversized)),
                };
                if context.readings.send(reading).await.is_err() {
                    return;
                }
            }
            Ok(Polled::Documents(documents)) => {
                debug!(url = %spec.url, events = documents.len(), "polled");
                let now = now_unix_nanos();
                for (subject, data) in documents {
                    let reading = Reading {
                        source: Arc::clone(&source),
                        kind: Arc::clone(&kind),
                        content_type: Arc::clone(&content_type),
                        subject,
                        data: Bytes::from(data),
                        time_unix_nanos: now,
                        origin: None,
                        oversized: None,
                    };
                    if context.readings.send(reading).await.is_err() {
                        return;
                    }
                }
            }
            Err(err) => {
                warn!(url = %spec.url, %err, "poll failed; trying again at the next interval")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMPEL: &str = r#"[{"Stand":"2021-03-04T18:00:00Z","Warnstufen":[
        {"Region":"Stadt","GKZ":"90001","Name":"Wien","Warnstufe":"3"},
        {"Region":"Bezirk","GKZ":"30101","Name":"Krems","Warnstufe":"2"}]}]"#;

    #[test]
    fn an_array_at_the_pointer_becomes_one_event_per_element() {
        let ampel: serde_json::Value = serde_json::from_str(AMPEL).expect("fixture");
        let elements = ampel
            .pointer("/0/Warnstufen")
            .and_then(serde_json::Value::as_array)
            .expect("the fixture has an array at the pointer");
        assert_eq!(elements.len(), 2, "splitting needs more than one element");
        let expected: Vec<Document> = elements
            .iter()
            .enumerate()
            .map(|(i, element)| {
                let bytes = serde_json::to_vec(element).expect("encode");
                (Some(format!("/0/Warnstufen/{i}")), bytes)
            })
            .collect();
        let docs = documents(AMPEL.as_bytes(), Some("/0/Warnstufen")).expect("documents");
        assert_eq!(docs, expected, "one event per element, each with its bytes");
    }

    #[test]
    fn without_a_pointer_a_top_level_array_is_split_too() {
        let docs = documents(br#"[{"a":1},{"b":[2,3]}]"#, None).expect("documents");
        assert_eq!(
            docs,
            vec![
                (Some("/0".to_string()), br#"{"a":1}"#.to_vec()),
                (Some("/1".to_string()), br#"{"b":[2,3]}"#.to_vec()),
            ]
        );
    }

    #[test]
    fn anything_but_an_array_is_one_event() {
        let docs = documents(AMPEL.as_bytes(), Some("/0/Warnstufen/1")).expect("documents");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].0, None);
        let only: serde_json::Value = serde_json::from_slice(&docs[0].1).expect("json");
        assert_eq!(only["Name"], "Krems");
        let docs = documents(br#"{"a":1}"#, None).expect("documents");
        assert_eq!(docs, vec![(None, br#"{"a":1}"#.to_vec())]);
    }

    #[test]
    fn bad_documents_and_pointers_say_why() {
        assert!(
            documents(b"<html>", None)
                .expect_err("not json")
                .contains("not JSON")
        );
        assert!(
            documents(AMPEL.as_bytes(), Some("/9"))
                .expect_err("nothing")
                .contains("selects nothing")
        );
    }
}
