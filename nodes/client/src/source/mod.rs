//! Data sources: where readings come from.
//!
//! Each `--source` is `KIND[:key=value,key=value…]`. A kind is one file in
//! this folder that declares a [`SourceKind`] (its name, its options with
//! their defaults and help, and how it builds its source) and one line in
//! [`KINDS`]. The declared options are the only list there is: they decide
//! where `key=value,…` is split, which options are unknown, and what an option
//! that is not given means. The README's table of sources says the same for
//! users.
//!
//! Every kind also takes `type` (the CloudEvents type). Each source runs as
//! its own task and sends [`Reading`]s into one bounded channel: when the
//! client cannot keep up, sources wait (a file is read later, a sensor
//! samples less often), nothing is dropped here.

mod file;
mod http;
mod identity;
mod lines;
mod options;
mod sensor;
mod stdin;

use bytes::Bytes;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::oversized::{Oversized, SpillDir};
use crate::spool::Origin;
pub use identity::FileIdentity;
use options::{Options, SourceOption};

/// Every kind of source `--source` knows, in the order error messages list
/// them. A new kind is its file plus one line here.
const KINDS: &[&SourceKind] = &[&sensor::KIND, &http::KIND, &file::KIND, &stdin::KIND];

/// One reading from a source, before it becomes an event.
#[derive(Debug, Clone)]
pub struct Reading {
    /// CloudEvents `source`.
    pub source: Arc<str>,
    /// CloudEvents `type`.
    pub kind: Arc<str>,
    /// CloudEvents `datacontenttype`: how consumers read `data`.
    pub content_type: Arc<str>,
    /// CloudEvents `subject`: which part of the source this is (a sensor,
    /// an array element), when the source has parts.
    pub subject: Option<String>,
    /// The payload, as the source read it.
    pub data: Bytes,
    /// When the reading was taken (ns since the epoch).
    pub time_unix_nanos: i64,
    /// Where to resume after a restart (file sources).
    pub origin: Option<Origin>,
    /// Set when the reading is larger than `--max-event-bytes`: its data is
    /// then not in `data` (which is empty) but in a spill file, bound for
    /// the rejected file.
    pub oversized: Option<Arc<Oversized>>,
}

/// A parsed `--source`, ready to start.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// The source as its kind built it; shared because flags and the
    /// configuration are cloned.
    source: Arc<dyn Source>,
}

/// A configured source, as a kind builds it from its options.
trait Source: std::fmt::Debug + Send + Sync {
    /// The key under which the source's resume position is kept, if it has
    /// one (two sources with one key would overwrite each other's position).
    fn origin_key(&self) -> Option<String> {
        None
    }

    /// Starts the source on `tasks`; it runs until it ends or shuts down.
    fn spawn(&self, context: SourceContext, tasks: &TaskTracker);
}

/// One kind of source: what `KIND` in `--source KIND:…` stands for.
#[derive(Debug)]
struct SourceKind {
    /// The `KIND` in `--source`.
    name: &'static str,
    /// Every option the kind takes: nothing else is accepted, and nothing
    /// else splits `key=value,…`.
    options: &'static [SourceOption],
    /// A `--source` that gives every option a valid value: shows the syntax,
    /// and lets the tests check that every declared option is read.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "only the tests run the examples")
    )]
    example: &'static str,
    /// Builds the source from its options; the caller rejects what is left.
    build: fn(&mut Options) -> Result<Arc<dyn Source>, String>,
}

impl SourceKind {
    fn option(&self, name: &str) -> Option<&'static SourceOption> {
        self.options.iter().find(|option| option.name == name)
    }
}

/// `sensor, http, file or stdin`, for the unknown-kind message.
fn kind_names() -> String {
    let names: Vec<&str> = KINDS.iter().map(|kind| kind.name).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

impl FromStr for SourceSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (name, rest) = text.split_once(':').unwrap_or((text, ""));
        let kind = KINDS
            .iter()
            .copied()
            .find(|kind| kind.name == name)
            .ok_or_else(|| format!("unknown source kind {name:?} (expected {})", kind_names()))?;
        let mut options = Options::split(kind, rest)?;
        let source = (kind.build)(&mut options)?;
        options.finish()?;
        Ok(Self { source })
    }
}

impl SourceSpec {
    /// The key under which the source's resume position is kept, if it has one.
    pub fn origin_key(&self) -> Option<String> {
        self.source.origin_key()
    }
}

/// What sources need from the client.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// Names the client in sources' CloudEvents `source`.
    pub client_id: String,
    /// Where readings go; bounded, so a source waits when the client is behind.
    pub readings: mpsc::Sender<Reading>,
    /// Resume positions by origin key.
    pub positions: HashMap<String, u64>,
    /// Which file each resume position is in, by origin key (file sources;
    /// missing in state files written before identities were kept).
    pub files: HashMap<String, FileIdentity>,
    /// `--max-event-bytes`: sources hold no larger reading in memory.
    pub max_event_bytes: usize,
    /// Where larger readings wait for the rejected file.
    pub spill: SpillDir,
    /// Tells sources to stop reading.
    pub shutdown: CancellationToken,
    /// Where a source that cannot go on says why ([`SourceContext::fail`]).
    pub failure: SourceFailure,
}

impl SourceContext {
    /// The source cannot go on: records why (the first failure counts) and
    /// stops the client, which ends with that error instead of exit 0.
    pub fn fail(&self, reason: String) {
        let _ = self.failure.0.set(reason);
        self.shutdown.cancel();
    }
}

/// The first failure of a source that could not go on, if any.
#[derive(Debug, Clone, Default)]
pub struct SourceFailure(Arc<std::sync::OnceLock<String>>);

impl SourceFailure {
    /// Why a source failed, if one did.
    pub fn reason(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// Starts every source on `tasks`. The readings channel closes when all ended.
pub fn spawn_all(specs: &[SourceSpec], context: SourceContext, tasks: &TaskTracker) {
    for spec in specs {
        spec.source.spawn(context.clone(), tasks);
    }
}

#[cfg(test)]
mod tests {
    use super::options::OptionDefault;
    use super::*;

    fn split(kind: &'static SourceKind, text: &str) -> Vec<(String, String)> {
        Options::split(kind, text).expect("splits").given().to_vec()
    }

    /// The kind's example with only its required options.
    fn required_only(kind: &'static SourceKind) -> String {
        let (_, rest) = kind.example.split_once(':').unwrap_or((kind.example, ""));
        let required: Vec<String> = split(kind, rest)
            .into_iter()
            .filter(|(key, _)| {
                kind.option(key)
                    .is_some_and(|option| option.default == OptionDefault::Required)
            })
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        format!("{}:{}", kind.name, required.join(","))
    }

    #[test]
    fn every_kind_reads_every_option_it_declares() {
        for kind in KINDS {
            let (name, rest) = kind.example.split_once(':').expect("KIND:options");
            assert_eq!(name, kind.name, "{}'s example is of its kind", kind.name);
            let mut given: Vec<String> =
                split(kind, rest).into_iter().map(|(key, _)| key).collect();
            let mut declared: Vec<String> =
                kind.options.iter().map(|o| o.name.to_string()).collect();
            given.sort();
            declared.sort();
            assert_eq!(
                given, declared,
                "{}'s example gives every option",
                kind.name
            );
            assert!(
                kind.option("type").is_some(),
                "every kind takes type ({})",
                kind.name
            );
            assert!(
                kind.options.iter().all(|option| !option.help.is_empty()),
                "{}: every option says what it does",
                kind.name
            );
            let parsed = kind.example.parse::<SourceSpec>();
            assert!(parsed.is_ok(), "{}: {parsed:?}", kind.example);
            // Without the options that have defaults, the defaults are read.
            let minimal = required_only(kind);
            let parsed = minimal.parse::<SourceSpec>();
            assert!(parsed.is_ok(), "{minimal}: {parsed:?}");
        }
    }

    #[test]
    fn an_unknown_option_is_named_with_its_kind() {
        for kind in KINDS {
            // Given with what the kind requires, so that only the unknown
            // option is wrong.
            let required = required_only(kind);
            let text = match required.split_once(':') {
                Some((name, "")) => format!("{name}:colour=red"),
                Some((name, rest)) => format!("{name}:colour=red,{rest}"),
                None => format!("{required}:colour=red"),
            };
            let err = text.parse::<SourceSpec>().expect_err(&text);
            let expected = format!("{} source has no option \"colour\"", kind.name);
            assert_eq!(err, expected, "{text}");
        }
        // After a value that is not free text, another kind's option is named
        // too, rather than glued onto the value.
        let err = "sensor:rate=1,every=5s"
            .parse::<SourceSpec>()
            .expect_err("every");
        assert_eq!(err, "sensor source has no option \"every\"");
    }

    #[test]
    fn the_readme_documents_every_option_and_its_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let readme = std::fs::read_to_string(path).expect("README.md");
        assert!(readme.contains("every kind also takes `type=`"));
        for kind in KINDS {
            let start = format!("| `{}` |", kind.name);
            let row = readme
                .lines()
                .find(|line| line.starts_with(&start))
                .unwrap_or_else(|| panic!("the README's table of sources has no {start}"));
            for option in kind.options.iter().filter(|option| option.name != "type") {
                let at = row
                    .find(&format!("`{}` (", option.name))
                    .unwrap_or_else(|| panic!("README: {} lacks `{}` (…)", kind.name, option.name));
                let entry = &row[at..];
                let entry = &entry[..entry.find(')').map_or(entry.len(), |end| end + 1)];
                match option.default {
                    OptionDefault::Required => assert!(entry.contains("required"), "{entry}"),
                    OptionDefault::Value(default) => {
                        assert!(
                            entry.contains(default),
                            "README: {entry} (default {default})"
                        )
                    }
                    OptionDefault::Absent => {}
                }
            }
        }
    }

    #[test]
    fn specs_parse_with_defaults() {
        assert!("sensor".parse::<SourceSpec>().is_ok());
        assert!("stdin".parse::<SourceSpec>().is_ok());
        let file: SourceSpec = "file:path=/tmp/x.csv,follow=false".parse().expect("file");
        assert_eq!(file.origin_key().as_deref(), Some("file:/tmp/x.csv"));
        let sensor: SourceSpec = "sensor:rate=50,count=10".parse().expect("sensor");
        assert_eq!(sensor.origin_key(), None);
    }

    #[test]
    fn mistakes_are_named() {
        for (text, needle) in [
            (
                "camera",
                "unknown source kind \"camera\" (expected sensor, http, file or stdin)",
            ),
            ("sensor:rate=fast", "invalid rate"),
            ("sensor:colour=red", "no option \"colour\""),
            ("sensor:rate=1,every=5s", "no option \"every\""),
            ("http:every=5s", "needs url"),
            ("http:url=,every=5s", "needs url"),
            ("file:format=xml,path=/x", "format"),
            ("sensor:rate=1,rate=2", "twice"),
            ("http:url=ftp://x", "http:// or https://"),
            (
                "http:url=http://x,every=soon",
                "http source: invalid every=\"soon\": ",
            ),
            ("sensor:sensors=0", "sensors must be at least 1"),
            ("sensor:,rate=1", "expected key=value"),
        ] {
            let err = text.parse::<SourceSpec>().expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
