//! What every binary does before and around its node: flags, exit codes, logs.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use tracing::warn;
use tracing_subscriber::EnvFilter;

use crate::tls::{NodeTls, PeerIdentity, TlsFiles};

/// Exit code for bad flags, bad config files or unusable peer lists (EX_USAGE).
pub const EX_USAGE: i32 = 64;
/// Exit code when a node stops on an internal error (EX_SOFTWARE).
pub const EX_SOFTWARE: i32 = 70;
/// Exit code when a node could not bind its port or reach what it must (EX_UNAVAILABLE).
pub const EX_UNAVAILABLE: i32 = 69;

/// Parses flags (and their `SMESH_*` variables, and the file `--config`
/// names when the command has [`ConfigArgs`]: see [`crate::config_file`]).
/// `--help` and `--version` print and exit 0; anything wrong prints one
/// line on stderr and exits 64.
pub fn parse<T: Parser>() -> T {
    parse_from(std::env::args_os())
}

/// [`parse`] on given arguments (the first is the program name).
pub fn parse_from<T: Parser, I, A>(args: I) -> T
where
    I: IntoIterator<Item = A>,
    A: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let args = match crate::config_file::merge(&T::command(), args) {
        Ok(args) => args,
        Err(reason) => usage_error(&reason),
    };
    match T::try_parse_from(args) {
        Ok(parsed) => parsed,
        Err(err) => match err.kind() {
            clap::error::ErrorKind::DisplayHelp
            | clap::error::ErrorKind::DisplayVersion
            | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                let _ = err.print();
                std::process::exit(0)
            }
            _ => usage_error(&clap_line(&err)),
        },
    }
}

/// The shortest duration a timer flag takes: below it a node would spin or
/// flap (and tokio refuses an interval of zero).
pub const MIN_DURATION: Duration = Duration::from_millis(10);

/// Refuses a timer flag shorter than [`MIN_DURATION`], naming the flag.
pub fn check_duration(flag: &str, value: Duration) -> Result<(), String> {
    if value < MIN_DURATION {
        return Err(format!(
            "{flag} must be at least {} (got {})",
            duration_text(MIN_DURATION),
            duration_text(value)
        ));
    }
    Ok(())
}

/// A duration as flags write it (`5s`, `500ms`), for defaults shown in
/// `--help` that come from typed constants.
pub fn duration_text(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}ns", duration.as_nanos())
    }
}

/// Checks a node's `--id`: 1-200 characters, no blanks, control characters,
/// commas or semicolons (ids appear in CSV files and in event ids).
pub fn check_id(id: &str) -> Result<(), String> {
    match crate::ids::id_problem(id) {
        Some(problem) => Err(format!(
            "invalid --id {}: it {problem}; use letters, digits, '-' or '_'",
            crate::ids::quote(id)
        )),
        None => Ok(()),
    }
}

/// The multi-threaded runtime every binary runs on; on failure, the reason
/// on stderr and exit code 70.
pub fn runtime(program: &str) -> tokio::runtime::Runtime {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{program}: cannot start the async runtime: {err}");
            std::process::exit(EX_SOFTWARE)
        }
    }
}

/// Prints `<program>: <reason>` and exits 64.
pub fn usage_error(reason: &str) -> ! {
    eprintln!("{}: {reason}", program_name());
    std::process::exit(EX_USAGE)
}

/// clap's first line, without the `error: ` prefix, plus a pointer to --help.
pub fn clap_line(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let mut lines = rendered.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // "the following required arguments were not provided:" lists them below.
    match (first.ends_with(':'), lines.next()) {
        (true, Some(next)) => format!("{first} {} (see --help)", next.trim()),
        _ => format!("{first} (see --help)"),
    }
}

fn program_name() -> String {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "smesh".to_string())
}

/// Parses durations such as `250ms`, `5s`, `1m 30s` for flags.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("{err} (examples: 500ms, 5s, 1m)"))
}

/// TLS flags every node takes (the console too, for the admin API).
/// Given all three, every link the node accepts or dials is mutual TLS.
#[derive(Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// This node's certificate, followed by any intermediates (PEM). With
    /// --tls-key and --tls-ca, every link is mutual TLS.
    #[arg(long, env = "SMESH_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, env = "SMESH_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// The CA certificates peers must be signed by (PEM).
    #[arg(long, env = "SMESH_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The three files, when all three are given; an error when only some are.
    pub fn files(&self) -> Result<Option<TlsFiles>, String> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })),
            _ => Err(
                "--tls-cert, --tls-key and --tls-ca go together: give all three or none"
                    .to_string(),
            ),
        }
    }

    /// Loads and checks the files (see [`NodeTls::load`]); with `identity`,
    /// also that the certificate names it. `None` when no file is given.
    pub fn load(&self, identity: Option<&PeerIdentity>) -> Result<Option<NodeTls>, String> {
        let Some(files) = self.files()? else {
            return Ok(None);
        };
        let tls = NodeTls::load(&files).map_err(|err| err.to_string())?;
        if let Some(identity) = identity {
            tls.check_names(identity)?;
        }
        Ok(Some(tls))
    }
}

/// Secure by default: refuses to serve plaintext on `address` (given with
/// `flag`) unless it is a loopback address or the operator said
/// `--insecure-plaintext`.
pub fn check_plaintext(
    flag: &str,
    address: SocketAddr,
    tls: bool,
    insecure_plaintext: bool,
) -> Result<(), String> {
    if tls && insecure_plaintext {
        return Err(
            "--insecure-plaintext and --tls-cert exclude each other: choose one".to_string(),
        );
    }
    if tls || insecure_plaintext || address.ip().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "{flag} {address} is not a loopback address and no certificate is given: give --tls-cert, --tls-key and --tls-ca (see `smesh-console certs`), or --insecure-plaintext to let anyone on the network read and forge this node's traffic"
    ))
}

/// Warns, once at start, that `address` serves plaintext beyond this host.
pub fn warn_plaintext(flag: &str, address: SocketAddr, tls: bool) {
    if !tls && !address.ip().is_loopback() {
        warn!(%address, flag, "serving plaintext beyond loopback (--insecure-plaintext): anyone who reaches this port can read and forge traffic");
    }
}

/// `--config` and `--check-config`, which every node takes.
#[derive(Args, Clone, Debug, Default)]
pub struct ConfigArgs {
    /// A TOML file of settings: the long flags without `--` as keys
    /// (`max-event-bytes = 1000000`, `source = ["sensor:rate=5"]`). Flags
    /// and `SMESH_*` variables win over it; it wins over the defaults.
    #[arg(long, env = "SMESH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check the flags, variables and `--config` file (peer lists, TLS
    /// files, tokens…), print one line and exit: 0 when the node would
    /// start, 64 when not. Binds nothing. (A flag only, without a variable:
    /// a variable left behind would keep a service from ever starting.)
    #[arg(long)]
    pub check_config: bool,
}

impl ConfigArgs {
    /// With `--check-config`, says the configuration is good and exits 0.
    pub fn exit_if_checking(&self) {
        if self.check_config {
            self.confirm()
        }
    }

    /// Prints that the configuration is good and exits 0.
    pub fn confirm(&self) -> ! {
        match &self.config {
            Some(path) => println!(
                "{}: configuration OK (--config {})",
                program_name(),
                path.display()
            ),
            None => println!("{}: configuration OK", program_name()),
        }
        std::process::exit(0)
    }
}

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event. `plain` is accepted as its
    /// earlier name.
    #[default]
    #[value(alias = "plain")]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The Prometheus flag every node takes.
#[derive(Args, Clone, Debug, Default)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics on `http://ADDR/metrics` (plain HTTP; off
    /// when not given). Prefer a loopback or private address: the numbers
    /// are not secret, but the door is unauthenticated.
    #[arg(
        long = "metrics-listen",
        env = "SMESH_METRICS_LISTEN",
        value_name = "ADDR"
    )]
    pub metrics_listen: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Binds `--metrics-listen`, if given: `Err` with a one-line reason when
    /// the address cannot be bound (the binary exits with EX_UNAVAILABLE).
    /// Call it inside the runtime, before the node runs.
    pub async fn bind(&self) -> Result<Option<tokio::net::TcpListener>, String> {
        bind_door(
            self.metrics_listen,
            "--metrics-listen",
            "metrics listening on /metrics",
        )
        .await
    }

    /// Binds `--metrics-listen`, if given, and serves the node's `registry`
    /// there until `shutdown` (see [`crate::metrics::serve`]). `Err` as
    /// [`MetricsArgs::bind`].
    pub async fn serve(
        &self,
        registry: impl FnOnce() -> crate::metrics::Registry,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<(), String> {
        if let Some(listener) = self.bind().await? {
            let registry = std::sync::Arc::new(registry());
            tokio::spawn(crate::metrics::serve(listener, registry, shutdown));
        }
        Ok(())
    }
}

/// `Err` naming the first two of `doors` (flag, address) given the same
/// address: the second bind would fail later with a less clear reason.
/// Port 0 (any free port) never clashes.
pub fn distinct_doors(doors: &[(&str, Option<SocketAddr>)]) -> Result<(), String> {
    let given: Vec<(&str, SocketAddr)> = doors
        .iter()
        .filter_map(|(flag, address)| address.map(|a| (*flag, a)))
        .filter(|(_, address)| address.port() != 0)
        .collect();
    for (i, (first, address)) in given.iter().enumerate() {
        if let Some((second, _)) = given[i + 1..].iter().find(|(_, other)| other == address) {
            return Err(format!("{first} and {second} are both {address}"));
        }
    }
    Ok(())
}

/// The plaintext health door of masters and sidecars (`--health-listen`).
#[derive(Args, Clone, Debug, Default)]
pub struct HealthArgs {
    /// Serve `grpc.health.v1` alone, in plaintext, on ADDR (off when not
    /// given): for probes that cannot speak mutual TLS, such as the
    /// kubelet's `grpc:` readiness probe. It answers SERVING or NOT_SERVING
    /// as the node's own port does, and nothing else.
    #[arg(
        long = "health-listen",
        env = "SMESH_HEALTH_LISTEN",
        value_name = "ADDR"
    )]
    pub health_listen: Option<SocketAddr>,
}

impl HealthArgs {
    /// Binds `--health-listen`, if given; `Err` as [`MetricsArgs::bind`].
    pub async fn bind(&self) -> Result<Option<tokio::net::TcpListener>, String> {
        bind_door(self.health_listen, "--health-listen", "health listening").await
    }
}

/// Binds an optional side door (`flag`) and logs `message` with the bound
/// address; `Err` with a one-line reason when it cannot be bound.
async fn bind_door(
    address: Option<SocketAddr>,
    flag: &str,
    message: &'static str,
) -> Result<Option<tokio::net::TcpListener>, String> {
    let Some(address) = address else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|err| format!("cannot listen on {address} ({flag}): {err}"))?;
    let bound = listener.local_addr().map_or(address, |a| a);
    tracing::info!(address = %bound, "{message}");
    Ok(Some(listener))
}

/// Logging flags every binary takes.
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, env = "SMESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter in `RUST_LOG` syntax, e.g. `info` or `smesh_client=debug,info`.
    #[arg(long, env = "SMESH_LOG", default_value = "info")]
    pub log: String,
}

impl LogArgs {
    /// Logs to stderr. `RUST_LOG`, when set, wins over `--log`.
    pub fn init(&self) {
        let filter = EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&self.log))
            .unwrap_or_else(|_| EnvFilter::new("info"));
        // Colours only on a terminal: not in files, journald or a shipper.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr);
        // A second init (tests, the in-process demo) keeps the first subscriber.
        let _ = match self.log_format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
    }
}

/// A default size as a flag would be written (`1GiB`, `1MiB`, `4096`), for
/// `--help`; [`parse_bytes`] reads it back to the same number.
pub fn size_flag(bytes: u64) -> String {
    for (unit, factor) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= factor && bytes % factor == 0 {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

/// Parses `1GiB`, `512MiB`, `100MB`, `4096`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?} (examples: 4096, 100MB, 1GiB)"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (B, KB, KiB, MB, MiB, GB, GiB)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// `--kafka-config KEY=VALUE`: a librdkafka setting.
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// Reads `--kafka-config-file` (the master's, the console's `audit` and
/// `trace`): `KEY=VALUE` lines, blank lines and `#` comments, in order. The
/// file may hold secrets, so it must not be readable (or writable) by
/// anyone but its owner, and no error repeats a line's text.
pub fn read_kafka_config_file(path: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| format!("--kafka-config-file {shown}: cannot open it: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file
            .metadata()
            .map_err(|e| format!("--kafka-config-file {shown}: cannot read its permissions: {e}"))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "--kafka-config-file {shown}: its group or others may use it (mode {:03o}); it can hold secrets, so make it the owner's alone: chmod 600 {shown}",
                mode & 0o777
            ));
        }
    }
    let text = std::io::read_to_string(file)
        .map_err(|e| format!("--kafka-config-file {shown}: cannot read it: {e}"))?;
    let mut settings = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                settings.push((key.trim().to_string(), value.trim().to_string()));
            }
            _ => {
                return Err(format!(
                    "--kafka-config-file {shown} line {}: expected KEY=VALUE",
                    number + 1
                ));
            }
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser, Debug)]
    struct Demo {
        #[arg(long, value_parser = parse_duration)]
        every: Duration,
    }

    #[test]
    fn two_doors_on_one_address_are_named() {
        let a: SocketAddr = "127.0.0.1:9010".parse().unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(
            distinct_doors(&[
                ("--listen", Some(a)),
                ("--metrics-listen", None),
                ("--health-listen", Some(a))
            ]),
            Err("--listen and --health-listen are both 127.0.0.1:9010".to_string())
        );
        assert_eq!(
            distinct_doors(&[("--listen", Some(any)), ("--health-listen", Some(any))]),
            Ok(())
        );
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("edge-7_b").is_ok());
        for bad in ["", "a b", "a,b", "a;b", "tab\t", &"x".repeat(201)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plaintext_is_served_only_on_loopback_unless_said() {
        let any: SocketAddr = "0.0.0.0:9000".parse().expect("address");
        let loopback: SocketAddr = "127.0.0.1:9000".parse().expect("address");
        let err = check_plaintext("--listen", any, false, false).expect_err("refused");
        assert!(err.contains("--insecure-plaintext"), "{err}");
        assert!(check_plaintext("--listen", loopback, false, false).is_ok());
        assert!(check_plaintext("--listen", any, true, false).is_ok());
        assert!(check_plaintext("--listen", any, false, true).is_ok());
        assert!(check_plaintext("--listen", any, true, true).is_err());
    }

    #[test]
    fn tls_files_come_all_three_or_none() {
        assert_eq!(TlsArgs::default().files(), Ok(None));
        let partial = TlsArgs {
            tls_cert: Some("c.pem".into()),
            ..TlsArgs::default()
        };
        assert!(partial.files().is_err());
        let missing = TlsArgs {
            tls_cert: Some("/nonexistent/c.pem".into()),
            tls_key: Some("/nonexistent/k.pem".into()),
            tls_ca: Some("/nonexistent/ca.pem".into()),
        };
        let err = missing.load(None).expect_err("unreadable");
        assert!(
            err.contains("cannot read the certificate /nonexistent/c.pem"),
            "{err}"
        );
    }

    #[test]
    fn durations_parse_in_human_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn log_format_takes_text_json_and_the_old_plain() {
        #[derive(Parser)]
        struct Logs {
            #[command(flatten)]
            log: LogArgs,
        }
        for (given, format) in [
            ("text", LogFormat::Text),
            ("plain", LogFormat::Text),
            ("json", LogFormat::Json),
        ] {
            let logs = Logs::try_parse_from(["logs", "--log-format", given]).expect(given);
            assert_eq!(logs.log.log_format, format, "{given}");
        }
        assert!(Logs::try_parse_from(["logs", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn clap_errors_become_one_line() {
        let err = Demo::try_parse_from(["demo", "--every", "soon"]).expect_err("bad duration");
        let line = clap_line(&err);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("--every"), "{line}");
        assert!(line.ends_with("(see --help)"), "{line}");
    }

    fn settings_file(mode: u32, text: &str) -> tempfile::NamedTempFile {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write");
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
        file
    }

    #[test]
    fn a_settings_file_is_read_in_order_and_guarded() {
        let file = settings_file(
            0o600,
            "# TLS\nsecurity.protocol = SSL\n\nsasl.password=a=b\n",
        );
        assert_eq!(
            read_kafka_config_file(file.path()).expect("read"),
            [
                ("security.protocol".to_string(), "SSL".to_string()),
                ("sasl.password".to_string(), "a=b".to_string()),
            ]
        );
        let open = settings_file(0o644, "sasl.password=s3cret\n");
        let err = read_kafka_config_file(open.path()).expect_err("readable by others");
        assert!(
            err.contains("chmod 600") && !err.contains("s3cret"),
            "{err}"
        );
        let bad = settings_file(0o600, "not a setting s3cret\n");
        let err = read_kafka_config_file(bad.path()).expect_err("bad line");
        assert!(err.contains("line 1") && !err.contains("s3cret"), "{err}");
    }

    #[test]
    fn key_values_need_a_key() {
        assert_eq!(
            parse_key_value("a.b = c"),
            Ok(("a.b".to_string(), "c".to_string()))
        );
        assert!(parse_key_value("=c").is_err());
        assert!(parse_key_value("novalue").is_err());
    }
}
