//! Options of a `--source`: how a kind declares them, and how
//! `KIND:key=value,…` is split into them and read.
//!
//! The declarations are the only list of options there is: they decide where
//! the text is split, which options are unknown, and what an option that is
//! not given means.

use std::str::FromStr;
use std::time::Duration;

use super::{KINDS, SourceKind};

/// One option of a kind, declared once.
#[derive(Debug, Clone, Copy)]
pub(super) struct SourceOption {
    /// The `key` in `key=value`.
    pub(super) name: &'static str,
    /// What the option means when it is not given.
    pub(super) default: OptionDefault,
    /// For people: what the option does (the README's table says the same).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "read by people and checked by the tests")
    )]
    pub(super) help: &'static str,
    /// The value may itself hold commas (URLs, paths): then only a comma
    /// followed by one of this kind's own options ends it, so another
    /// kind's option name inside a URL cannot cut it short.
    pub(super) free_text: bool,
}

/// What an option means when `--source` does not give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OptionDefault {
    /// The source cannot run without it (an empty value counts as missing).
    Required,
    /// No value; the kind says in the help what that means (no `count`: no end).
    Absent,
    /// This text, read exactly as if it had been given.
    Value(&'static str),
}

impl SourceOption {
    /// An option the source cannot run without.
    pub(super) const fn required(name: &'static str, help: &'static str) -> Self {
        Self::new(name, OptionDefault::Required, help)
    }

    /// An option that has no value unless given.
    pub(super) const fn absent(name: &'static str, help: &'static str) -> Self {
        Self::new(name, OptionDefault::Absent, help)
    }

    /// An option with a default value.
    pub(super) const fn value(
        name: &'static str,
        default: &'static str,
        help: &'static str,
    ) -> Self {
        Self::new(name, OptionDefault::Value(default), help)
    }

    const fn new(name: &'static str, default: OptionDefault, help: &'static str) -> Self {
        Self {
            name,
            default,
            help,
            free_text: false,
        }
    }

    /// Marks the value as one that may hold commas (see `free_text`).
    pub(super) const fn free_text(self) -> Self {
        Self {
            free_text: true,
            ..self
        }
    }
}

/// The `type` option every kind takes, with the kind's own default.
pub(super) const fn event_type(default: &'static str) -> SourceOption {
    SourceOption::value("type", default, "the CloudEvents type of every event")
}

/// Whether any kind declares an option called `name`.
fn any_kind_declares(name: &str) -> bool {
    KINDS.iter().any(|kind| kind.option(name).is_some())
}

/// The options of one `--source`, taken one by one as its kind reads them.
#[derive(Debug)]
pub(super) struct Options {
    /// Whose options these are: names the kind in errors and holds the
    /// declarations that defaults come from.
    kind: &'static SourceKind,
    /// Options given and not yet taken, in the order given, so that the
    /// first one left over is the one reported.
    given: Vec<(String, String)>,
}

impl Options {
    /// Splits `a=1,b=2,url=http://x/?q=a,b` into options. A comma followed by
    /// `key=` starts a new option when `key` is an option of this kind, or,
    /// unless the value so far is free text, an option of any kind (so that
    /// `sensor:rate=1,every=5s` names `every` as unknown). Every other comma
    /// belongs to the value.
    pub(super) fn split(kind: &'static SourceKind, text: &str) -> Result<Self, String> {
        let mut parts: Vec<String> = Vec::new();
        if !text.is_empty() {
            for piece in text.split(',') {
                let key = piece.split_once('=').map(|(key, _)| key);
                let starts_option = match (parts.last(), key) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(last), Some(key)) => {
                        let last_free_text = last
                            .split_once('=')
                            .and_then(|(last_key, _)| kind.option(last_key))
                            .is_some_and(|option| option.free_text);
                        kind.option(key).is_some() || (!last_free_text && any_kind_declares(key))
                    }
                };
                match parts.last_mut() {
                    Some(last) if !starts_option => {
                        last.push(',');
                        last.push_str(piece);
                    }
                    _ => parts.push(piece.to_string()),
                }
            }
        }
        let mut given: Vec<(String, String)> = Vec::with_capacity(parts.len());
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{} source: expected key=value, got {part:?}", kind.name))?;
            if given.iter().any(|(seen, _)| seen == key) {
                return Err(format!("{} source: option {key:?} given twice", kind.name));
            }
            given.push((key.to_string(), value.to_string()));
        }
        Ok(Self { kind, given })
    }

    /// The option's text: as given, else its declared default. A required
    /// option that is missing or empty is an error, and so is reading an
    /// option the kind does not declare (a mistake in the kind).
    fn take(&mut self, name: &str) -> Result<Option<String>, String> {
        let kind = self.kind.name;
        let option = self.kind.option(name).ok_or_else(|| {
            format!("{kind} source reads option {name:?} but does not declare it")
        })?;
        let given = self
            .given
            .iter()
            .position(|(key, _)| key == name)
            .map(|at| self.given.remove(at).1);
        match (given, option.default) {
            (Some(text), OptionDefault::Required) if text.is_empty() => {
                Err(format!("{kind} source needs {name}=…"))
            }
            (Some(text), _) => Ok(Some(text)),
            (None, OptionDefault::Value(default)) => Ok(Some(default.to_string())),
            (None, OptionDefault::Absent) => Ok(None),
            (None, OptionDefault::Required) => Err(format!("{kind} source needs {name}=…")),
        }
    }

    /// The option read by `read`, if it has a value. `read`'s error is
    /// appended to `KIND source: invalid NAME="TEXT"`.
    pub(super) fn optional<T>(
        &mut self,
        name: &str,
        read: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        let Some(text) = self.take(name)? else {
            return Ok(None);
        };
        read(&text)
            .map(Some)
            .map_err(|detail| format!("{} source: invalid {name}={text:?}{detail}", self.kind.name))
    }

    /// Like [`Options::optional`], for an option that always has a value
    /// (required, or with a default).
    pub(super) fn value<T>(
        &mut self,
        name: &str,
        read: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, String> {
        self.optional(name, read)?
            .ok_or_else(|| format!("{} source needs {name}=…", self.kind.name))
    }

    /// Unknown options are mistakes, not things to ignore.
    pub(super) fn finish(self) -> Result<(), String> {
        match self.given.first() {
            None => Ok(()),
            Some((key, _)) => Err(format!("{} source has no option {key:?}", self.kind.name)),
        }
    }
}

/// Reads an option as text, as given.
pub(super) fn text(value: &str) -> Result<String, String> {
    Ok(value.to_string())
}

/// Reads an option with [`FromStr`]; the error says only that it is invalid.
pub(super) fn parsed<T: FromStr>(value: &str) -> Result<T, String> {
    value.parse().map_err(|_| String::new())
}

/// Reads a duration such as `250ms` or `10s`.
pub(super) fn duration(value: &str) -> Result<Duration, String> {
    let duration = smesh_core::cli::parse_duration(value).map_err(|err| format!(": {err}"))?;
    if duration < smesh_core::cli::MIN_DURATION {
        return Err(format!(
            " (at least {})",
            smesh_core::cli::duration_text(smesh_core::cli::MIN_DURATION)
        ));
    }
    Ok(duration)
}

#[cfg(test)]
impl Options {
    /// The options given and not yet taken.
    pub(super) fn given(&self) -> &[(String, String)] {
        &self.given
    }
}

#[cfg(test)]
mod tests {
    use super::super::{SourceSpec, file, http, sensor};
    use super::*;

    fn split(kind: &'static SourceKind, text: &str) -> Vec<(String, String)> {
        Options::split(kind, text).expect("splits").given
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn a_value_with_commas_is_kept_whole() {
        assert_eq!(
            split(&http::KIND, "url=https://x.example/api?a=1,b=2,every=5s"),
            pairs(&[("url", "https://x.example/api?a=1,b=2"), ("every", "5s")])
        );
        assert_eq!(
            split(&sensor::KIND, "location=Wien, Stadt,rate=2"),
            pairs(&[("location", "Wien, Stadt"), ("rate", "2")])
        );
        assert!(
            "http:url=https://x.example/?a=1,b=2"
                .parse::<SourceSpec>()
                .is_ok()
        );
    }

    #[test]
    fn one_kinds_option_names_do_not_split_another_kinds_values() {
        let mut checked = 0;
        for kind in KINDS {
            for free in kind.options.iter().filter(|option| option.free_text) {
                for other in KINDS.iter().flat_map(|other| other.options) {
                    if kind.option(other.name).is_some() {
                        continue;
                    }
                    let text = format!("{}=a,{}=b", free.name, other.name);
                    let value = format!("a,{}=b", other.name);
                    assert_eq!(
                        split(kind, &text),
                        pairs(&[(free.name, &value)]),
                        "{}:{text}",
                        kind.name
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 0, "some kind has a free-text option");
        // The kind's own options still end such a value.
        assert_eq!(
            split(&file::KIND, "path=/data/a,count=3.jsonl,follow=false"),
            pairs(&[("path", "/data/a,count=3.jsonl"), ("follow", "false")])
        );
        assert!(
            "http:url=https://x.example/?q=1,rate=5,every=5s"
                .parse::<SourceSpec>()
                .is_ok()
        );
        let spec: SourceSpec = "file:path=/data/a,count=3.jsonl,follow=false"
            .parse()
            .expect("a path with another kind's option in it");
        assert_eq!(
            spec.origin_key().as_deref(),
            Some("file:/data/a,count=3.jsonl")
        );
    }
}
