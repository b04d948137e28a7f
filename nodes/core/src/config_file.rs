//! `--config FILE`: a node's flags written as TOML, one key per long flag.
//!
//! The file is turned into flags before clap parses for real, so a value
//! from the file goes through the same value parser, with the same message,
//! as the flag would. Precedence is flag > environment (`SMESH_*`) > file >
//! default: a key is taken from the file only when clap says its value did
//! not come from the command line or a variable ([`ArgMatches::value_source`]).
//!
//! ```toml
//! id = "edge-7"
//! max-event-bytes = 1000000          # numbers as numbers or as strings
//! source = ["sensor:rate=5"]         # a repeatable flag takes an array
//! insecure-plaintext = false         # a switch takes true or false
//! ```
//!
//! Every error names the file and the line: a key no flag has, a value its
//! flag refuses, a list given to a flag that takes one value.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The id of the flag that names the file (`--config`, `SMESH_CONFIG`).
pub const CONFIG_ID: &str = "config";
/// The id of `--check-config`, which a file cannot set.
pub const CHECK_CONFIG_ID: &str = "check_config";

/// `args` (the program name first) with the flags `--config` names put in
/// front of the given ones. Unchanged when `command` has no `--config` or
/// none is given; when the given flags do not parse on their own, unchanged
/// too, so that clap's own parse reports them.
pub fn merge(command: &Command, args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    if !command.get_arguments().any(|arg| arg.get_id() == CONFIG_ID) {
        return Ok(args);
    }
    // Required flags may come from the file: this first parse only looks
    // for the file and at where each given value came from.
    let mut lenient = command.clone().mut_args(|arg| arg.required(false));
    let Ok(matches) = lenient.try_get_matches_from_mut(args.iter().cloned()) else {
        return Ok(args);
    };
    let Some(path) = matches.get_one::<std::path::PathBuf>(CONFIG_ID) else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("--config {}: cannot read it: {err}", path.display()))?;
    let from_file = file_flags(&lenient, &matches, path, &text)?;
    let mut merged = Vec::with_capacity(args.len() + from_file.len());
    let mut given = args.into_iter();
    merged.extend(given.next());
    merged.extend(from_file);
    merged.extend(given);
    Ok(merged)
}

/// The flags the file `path` (holding `text`) stands for, leaving out every
/// key `matches` already has from the command line or the environment.
/// `command` must be built (it has been used to get `matches`).
pub fn file_flags(
    command: &Command,
    matches: &ArgMatches,
    path: &Path,
    text: &str,
) -> Result<Vec<OsString>, String> {
    let shown = path.display();
    let table = DeTable::parse(text).map_err(|err| {
        let line = err
            .span()
            .map(|span| format!(" line {}", line_of(text, span.start)))
            .unwrap_or_default();
        let message = err.message().lines().next().unwrap_or("invalid TOML");
        format!("{shown}{line}: {message}")
    })?;
    let mut flags = Vec::new();
    for (key, value) in table.get_ref() {
        let name: &str = key.get_ref();
        let here = format!("{shown} line {}", line_of(text, key.span().start));
        let Some(arg) = command.get_arguments().find(|arg| {
            arg.get_long() == Some(name) && !matches!(arg.get_id().as_str(), "help" | "version")
        }) else {
            return Err(format!(
                "{here}: unknown key `{name}` (keys are the long flags without `--`; see --help)"
            ));
        };
        let id = arg.get_id().as_str();
        if id == CONFIG_ID || id == CHECK_CONFIG_ID {
            return Err(format!(
                "{here}: `{name}` cannot be set in a config file, only as a flag"
            ));
        }
        if matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        flags.extend(flags_of(
            command,
            arg,
            name,
            value,
            text,
            &shown.to_string(),
        )?);
    }
    Ok(flags)
}

/// The flags one key stands for, each value checked by the flag's parser.
fn flags_of(
    command: &Command,
    arg: &Arg,
    name: &str,
    value: &Spanned<DeValue<'_>>,
    text: &str,
    shown: &str,
) -> Result<Vec<OsString>, String> {
    let here = |span: std::ops::Range<usize>| format!("{shown} line {}", line_of(text, span.start));
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => {
            let Some(on) = value.get_ref().as_bool() else {
                return Err(format!(
                    "{}: `{name}` is a switch: write true or false",
                    here(value.span())
                ));
            };
            // A switch is on when named; false is what it is without the file.
            let named = on == matches!(arg.get_action(), ArgAction::SetTrue);
            Ok(if named {
                vec![OsString::from(format!("--{name}"))]
            } else {
                Vec::new()
            })
        }
        ArgAction::Append => {
            let items: Vec<&Spanned<DeValue<'_>>> = match value.get_ref().as_array() {
                Some(array) => array.iter().collect(),
                None => vec![value],
            };
            items
                .into_iter()
                .map(|item| one_flag(command, arg, name, item, &here(item.span())))
                .collect()
        }
        _ => {
            if value.get_ref().is_array() {
                return Err(format!(
                    "{}: `{name}` takes one value, not a list",
                    here(value.span())
                ));
            }
            Ok(vec![one_flag(
                command,
                arg,
                name,
                value,
                &here(value.span()),
            )?])
        }
    }
}

/// `--name=value`, once the flag's own parser took the value.
fn one_flag(
    command: &Command,
    arg: &Arg,
    name: &str,
    value: &Spanned<DeValue<'_>>,
    here: &str,
) -> Result<OsString, String> {
    let text = match value.get_ref() {
        DeValue::String(text) => text.to_string(),
        DeValue::Integer(number) => i128::from_str_radix(number.as_str(), number.radix())
            .map(|n| n.to_string())
            .map_err(|err| format!("{here}: `{name}`: {err}"))?,
        DeValue::Float(number) => number.as_str().to_string(),
        DeValue::Boolean(on) => on.to_string(),
        DeValue::Datetime(when) => when.to_string(),
        DeValue::Array(_) | DeValue::Table(_) => {
            return Err(format!(
                "{here}: `{name}` takes a string, number or boolean, not a {}",
                value.get_ref().type_str()
            ));
        }
    };
    // The flag alone, as clap would parse it: the same parser, value name
    // and message (its links to other flags left out).
    let mut alone = Arg::new(arg.get_id().clone())
        .long(name.to_string())
        .action(arg.get_action().clone())
        .value_parser(arg.get_value_parser().clone());
    if let Some(names) = arg.get_value_names() {
        alone = alone.value_names(names.iter().cloned());
    }
    if let Some(delimiter) = arg.get_value_delimiter() {
        alone = alone.value_delimiter(delimiter);
    }
    let flag = OsString::from(format!("--{name}={text}"));
    Command::new(command.get_name().to_string())
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(alone)
        .try_get_matches_from([flag.clone()])
        .map_err(|err| format!("{here}: {}", crate::cli::clap_line(&err)))?;
    Ok(flag)
}

/// The 1-based line of the byte at `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use clap::{Args, CommandFactory, Parser};

    use super::*;
    use crate::cli::{ConfigArgs, parse_duration};

    /// A node's flags in small: a value with a default, a required one, a
    /// repeatable one, a switch, one with a parser of its own, and one whose
    /// variable cargo sets for every test it runs (tests cannot set
    /// variables: `set_var` is unsafe, and unsafe code is forbidden).
    #[derive(Parser, Debug)]
    #[command(name = "demo")]
    struct Demo {
        #[arg(long, default_value_t = 10)]
        window: u32,
        #[arg(long)]
        id: String,
        #[arg(long = "source", value_delimiter = ';')]
        sources: Vec<String>,
        #[arg(long)]
        insecure_plaintext: bool,
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        grace: Duration,
        #[arg(long, env = "CARGO_PKG_NAME", default_value = "none")]
        package: String,
        #[command(flatten)]
        config: ConfigArgs,
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).expect("write config");
        (dir, path)
    }

    fn parse(path: &Path, flags: &[&str]) -> Result<Demo, String> {
        let mut args: Vec<OsString> = vec!["demo".into(), "--config".into(), path.into()];
        args.extend(flags.iter().map(OsString::from));
        let merged = merge(&Demo::command(), args)?;
        Demo::try_parse_from(merged).map_err(|err| crate::cli::clap_line(&err))
    }

    #[test]
    fn flag_beats_environment_beats_file_beats_default() {
        let (_dir, path) = file(
            "id = \"from-file\"\nwindow = 20\npackage = \"from-file\"\nsource = [\"a\", \"b\"]\ninsecure-plaintext = true\n",
        );
        let demo = parse(&path, &[]).expect("file alone");
        assert_eq!(demo.id, "from-file");
        assert_eq!(demo.window, 20, "file over default");
        assert_eq!(demo.sources, ["a", "b"]);
        assert!(demo.insecure_plaintext);
        assert_eq!(demo.grace, Duration::from_secs(1), "default without a key");
        assert_eq!(demo.package, "smesh-core", "environment over file");

        let demo = parse(
            &path,
            &["--window", "30", "--source", "c", "--package", "flag"],
        )
        .expect("flags and file");
        assert_eq!(demo.window, 30, "flag over file");
        assert_eq!(
            demo.sources,
            ["c"],
            "a repeated flag replaces the file's list"
        );
        assert_eq!(demo.package, "flag", "flag over environment");
        assert_eq!(demo.id, "from-file");
    }

    #[test]
    fn a_required_flag_may_come_from_the_file_and_is_still_required() {
        let (_dir, path) = file("window = 5\n");
        let err = parse(&path, &[]).expect_err("no id anywhere");
        assert!(err.contains("--id"), "{err}");
        let demo = parse(&path, &["--id", "x"]).expect("id as flag");
        assert_eq!((demo.id.as_str(), demo.window), ("x", 5));
    }

    #[test]
    fn an_unknown_key_is_named_with_file_and_line() {
        let (_dir, path) = file("id = \"a\"\n\n# comment\nwindoww = 3\n");
        let err = parse(&path, &[]).expect_err("unknown key");
        let expected = format!("{} line 4: unknown key `windoww`", path.display());
        assert!(err.starts_with(&expected), "{err}");
        let (_dir, path) = file("id = \"a\"\n[tls]\ncert = \"c.pem\"\n");
        let err = parse(&path, &[]).expect_err("a table is no flag");
        assert!(err.contains("line 2: unknown key `tls`"), "{err}");
    }

    #[test]
    fn a_bad_value_gets_the_flags_own_message_with_file_and_line() {
        let (_dir, path) = file("id = \"a\"\nwindow = \"many\"\n");
        let err = parse(&path, &[]).expect_err("bad number");
        let flag_err = Demo::try_parse_from(["demo", "--id", "a", "--window", "many"])
            .map(|_| ())
            .map_err(|err| crate::cli::clap_line(&err))
            .expect_err("bad flag");
        assert_eq!(err, format!("{} line 2: {flag_err}", path.display()));

        let (_dir, path) = file("id = \"a\"\ngrace = \"soon\"\n");
        let err = parse(&path, &[]).expect_err("bad duration");
        assert!(
            err.contains("line 2: invalid value 'soon' for '--grace"),
            "{err}"
        );

        let (_dir, path) = file("id = \"a\"\nsource = [\"ok\",\n  3,\n  [\"nested\"]]\n");
        let err = parse(&path, &[]).expect_err("nested list");
        assert!(err.contains("line 4: `source` takes a string"), "{err}");

        let (_dir, path) = file("id = [\"a\", \"b\"]\n");
        let err = parse(&path, &[]).expect_err("list for one value");
        assert!(
            err.contains("line 1: `id` takes one value, not a list"),
            "{err}"
        );

        let (_dir, path) = file("id = \"a\"\ninsecure-plaintext = \"yes\"\n");
        let err = parse(&path, &[]).expect_err("switch");
        assert!(
            err.contains("line 2: `insecure-plaintext` is a switch"),
            "{err}"
        );

        let (_dir, path) = file("id = \"a\"\nwindow = = 3\n");
        let err = parse(&path, &[]).expect_err("not TOML");
        assert!(
            err.starts_with(&format!("{} line 2: ", path.display())),
            "{err}"
        );
    }

    #[test]
    fn the_file_cannot_name_itself_or_switch_to_checking() {
        let (_dir, path) = file("config = \"other.toml\"\n");
        let err = parse(&path, &["--id", "a"]).expect_err("config in config");
        assert!(err.contains("line 1: `config` cannot be set"), "{err}");
        let (_dir, path) = file("check-config = true\n");
        let err = parse(&path, &["--id", "a"]).expect_err("check in config");
        assert!(err.contains("`check-config` cannot be set"), "{err}");
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let err = parse(Path::new("/nonexistent/node.toml"), &["--id", "a"]).expect_err("no file");
        assert!(
            err.starts_with("--config /nonexistent/node.toml: cannot read it"),
            "{err}"
        );
    }

    #[test]
    fn without_config_the_arguments_are_untouched() {
        #[derive(Parser)]
        struct Plain {
            #[command(flatten)]
            _inner: Inner,
        }
        #[derive(Args)]
        struct Inner {
            #[arg(long)]
            _x: Option<String>,
        }
        let args: Vec<OsString> = vec!["plain".into(), "--x".into(), "1".into()];
        assert_eq!(merge(&Plain::command(), args.clone()), Ok(args));
    }
}
