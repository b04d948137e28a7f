//! Data sources: where readings come from.
//!
//! Each `--source` is `KIND[:key=value,key=value…]`:
//!
//! | kind     | options |
//! |----------|---------|
//! | `sensor` | `rate` (readings/s, or `max`), `sensors`, `kind`, `location`, `count` (stop after), `size` (pad JSON to bytes) |
//! | `http`   | `url` (required), `every` (10s), `pointer` (JSON pointer to the array or object to send), `timeout` |
//! | `file`   | `path` (required), `format` (`lines`, `jsonl`, `csv`; by extension), `follow` (true), `poll` (250ms) |
//! | `stdin`  | `content-type` (text/plain) |
//!
//! Every kind also takes `type` (the CloudEvents type). Each source runs as
//! its own task and sends [`Reading`]s into one bounded channel: when the
//! client cannot keep up, sources wait (a file is read later, a sensor
//! samples less often), nothing is dropped here.

mod file;
mod http;
mod sensor;
mod stdin;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::spool::Origin;

/// One reading from a source, before it becomes an event.
#[derive(Debug, Clone)]
pub struct Reading {
    /// CloudEvents `source`.
    pub source: Arc<str>,
    /// CloudEvents `type`.
    pub kind: Arc<str>,
    pub content_type: Arc<str>,
    pub subject: Option<String>,
    pub data: Bytes,
    /// When the reading was taken (ns since the epoch).
    pub time_unix_nanos: i64,
    /// Where to resume after a restart (file sources).
    pub origin: Option<Origin>,
}

/// A parsed `--source`.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    Sensor(sensor::SensorSpec),
    Http(http::HttpSpec),
    File(file::FileSpec),
    Stdin(stdin::StdinSpec),
}

/// Options of one `--source`, consumed as they are read.
struct Options {
    kind: &'static str,
    values: HashMap<String, String>,
}

impl Options {
    fn take(&mut self, key: &str) -> Option<String> {
        self.values.remove(key)
    }

    fn take_or(&mut self, key: &str, default: &str) -> String {
        self.take(key).unwrap_or_else(|| default.to_string())
    }

    fn parse<T: FromStr>(&mut self, key: &str, default: T) -> Result<T, String> {
        match self.take(key) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| format!("{} source: invalid {key}={text:?}", self.kind)),
        }
    }

    fn duration(&mut self, key: &str, default: Duration) -> Result<Duration, String> {
        match self.take(key) {
            None => Ok(default),
            Some(text) => smesh_core::cli::parse_duration(&text)
                .map_err(|err| format!("{} source: invalid {key}={text:?}: {err}", self.kind)),
        }
    }

    fn required(&mut self, key: &str) -> Result<String, String> {
        self.take(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{} source needs {key}=…", self.kind))
    }

    /// Unknown options are mistakes, not things to ignore.
    fn finish(self) -> Result<(), String> {
        match self.values.keys().next() {
            None => Ok(()),
            Some(key) => Err(format!("{} source has no option {key:?}", self.kind)),
        }
    }
}

/// Every option name of every kind: a comma followed by one of these starts
/// a new option, any other comma belongs to the value (URLs have commas).
const OPTION_NAMES: &[&str] = &[
    "rate",
    "sensors",
    "kind",
    "location",
    "count",
    "size",
    "type",
    "url",
    "every",
    "pointer",
    "timeout",
    "path",
    "format",
    "follow",
    "poll",
    "content-type",
];

/// Splits `a=1,b=2,url=http://x/?q=a,b` at commas that start a known `key=`.
fn split_options(text: &str) -> Result<HashMap<String, String>, String> {
    let mut values = HashMap::new();
    if text.is_empty() {
        return Ok(values);
    }
    let mut parts: Vec<String> = Vec::new();
    for piece in text.split(',') {
        let starts_key = piece
            .split_once('=')
            .is_some_and(|(k, _)| OPTION_NAMES.contains(&k));
        match parts.last_mut() {
            Some(last) if !starts_key => {
                last.push(',');
                last.push_str(piece);
            }
            _ => parts.push(piece.to_string()),
        }
    }
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("expected key=value, got {part:?}"))?;
        if values.insert(key.to_string(), value.to_string()).is_some() {
            return Err(format!("option {key:?} given twice"));
        }
    }
    Ok(values)
}

impl FromStr for SourceSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (kind, rest) = text.split_once(':').unwrap_or((text, ""));
        let kind: &'static str = match kind {
            "sensor" => "sensor",
            "http" => "http",
            "file" => "file",
            "stdin" => "stdin",
            other => {
                return Err(format!(
                    "unknown source kind {other:?} (expected sensor, http, file or stdin)"
                ));
            }
        };
        let mut options = Options {
            kind,
            values: split_options(rest).map_err(|e| format!("{kind} source: {e}"))?,
        };
        let spec = match kind {
            "sensor" => Self::Sensor(sensor::SensorSpec::parse(&mut options)?),
            "http" => Self::Http(http::HttpSpec::parse(&mut options)?),
            "file" => Self::File(file::FileSpec::parse(&mut options)?),
            _ => Self::Stdin(stdin::StdinSpec::parse(&mut options)?),
        };
        options.finish()?;
        Ok(spec)
    }
}

impl SourceSpec {
    /// The key under which the source's resume position is kept, if it has one.
    pub fn origin_key(&self) -> Option<String> {
        match self {
            Self::File(spec) => Some(spec.origin_key()),
            _ => None,
        }
    }
}

/// What sources need from the client.
#[derive(Debug, Clone)]
pub struct SourceContext {
    pub client_id: String,
    pub readings: mpsc::Sender<Reading>,
    /// Resume positions by origin key.
    pub positions: HashMap<String, u64>,
    pub shutdown: CancellationToken,
}

/// Starts every source on `tasks`. The readings channel closes when all ended.
pub fn spawn_all(specs: &[SourceSpec], context: SourceContext, tasks: &TaskTracker) {
    for spec in specs {
        let context = context.clone();
        match spec.clone() {
            SourceSpec::Sensor(spec) => tasks.spawn(sensor::run(spec, context)),
            SourceSpec::Http(spec) => tasks.spawn(http::run(spec, context)),
            SourceSpec::File(spec) => tasks.spawn(file::run(spec, context)),
            SourceSpec::Stdin(spec) => tasks.spawn(stdin::run(spec, context)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_only_at_new_keys() {
        let values = split_options("url=https://x.example/api?a=1,b=2,every=5s").expect("valid");
        assert_eq!(
            values.get("url").map(String::as_str),
            Some("https://x.example/api?a=1,b=2")
        );
        assert_eq!(values.get("every").map(String::as_str), Some("5s"));
    }

    #[test]
    fn specs_parse_with_defaults() {
        let spec: SourceSpec = "sensor:rate=50,count=10".parse().expect("sensor");
        let SourceSpec::Sensor(sensor) = spec else {
            panic!("not a sensor")
        };
        assert_eq!(sensor.rate, Some(50.0));
        assert_eq!(sensor.count, Some(10));
        assert!("stdin".parse::<SourceSpec>().is_ok());
        let file: SourceSpec = "file:path=/tmp/x.csv,follow=false".parse().expect("file");
        assert_eq!(file.origin_key().as_deref(), Some("file:/tmp/x.csv"));
    }

    #[test]
    fn mistakes_are_named() {
        for (text, needle) in [
            ("camera", "unknown source kind"),
            ("sensor:rate=fast", "invalid rate"),
            ("sensor:colour=red", "no option \"colour\""),
            ("sensor:rate=1,every=5s", "no option \"every\""),
            ("http:every=5s", "needs url"),
            ("file:format=xml,path=/x", "format"),
            ("sensor:rate=1,rate=2", "twice"),
            ("http:url=ftp://x", "http:// or https://"),
        ] {
            let err = text.parse::<SourceSpec>().expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
