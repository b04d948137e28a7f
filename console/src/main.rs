//! `smesh-console`: see the crate docs of `smesh_console`.

#[cfg(feature = "demo")]
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
#[cfg(feature = "audit")]
use smesh_console::audit::{self, AuditArgs};
use smesh_console::certs::{self, CertsArgs};
use smesh_console::check::{self, CheckArgs};
use smesh_console::status::{self, MasterSelection, StatusArgs};
#[cfg(feature = "audit")]
use smesh_console::trace::{self, TraceArgs};
use smesh_console::tui;
#[cfg(feature = "demo")]
use smesh_core::cli::LogArgs;
use smesh_core::cli::{self, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE, parse_duration};
#[cfg(feature = "demo")]
use smesh_demo::DemoArgs;

/// Watch and probe a smesh mesh: a dashboard over one or more masters'
/// admin APIs, scripted health checks, and a local demo mesh.
#[derive(Parser, Debug)]
#[command(name = "smesh-console", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    dashboard: DashboardArgs,
}

/// Flags of the dashboard (no subcommand).
#[derive(Args, Debug, Clone)]
struct DashboardArgs {
    #[command(flatten)]
    masters: MasterSelection,
    /// Where the dashboard logs (it owns the screen). Default: smesh-console.log in the temp directory.
    #[arg(long, env = "SMESH_CONSOLE_LOG_FILE", global = true)]
    log_file: Option<PathBuf>,
    /// How long a health check waits for each peer.
    #[arg(long, default_value = "2s", value_parser = parse_duration, global = true)]
    check_timeout: Duration,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a health check through each master; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    Check(CheckArgs),
    /// Print the merged view of every master (add --json for scripts).
    Status(StatusArgs),
    /// Read a topic back and judge it per client: gaps, duplicates, order, lost tails;
    /// exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    #[cfg(feature = "audit")]
    Audit(AuditArgs),
    /// Not in this build: it was built without the `audit` feature.
    #[cfg(not(feature = "audit"))]
    Audit {
        /// Whatever the audit's flags were: the answer is the same.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        flags: Vec<std::ffi::OsString>,
    },
    /// Show one event's hops, times and place in Kafka (by its ce_id); exit 0 found once,
    /// 1 found more than once, 2 not found, 3 UNKNOWN.
    #[cfg(feature = "audit")]
    Trace(TraceArgs),
    /// Not in this build: it was built without the `audit` feature.
    #[cfg(not(feature = "audit"))]
    Trace {
        /// Whatever the trace's flags were: the answer is the same.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        flags: Vec<std::ffi::OsString>,
    },
    /// Make a CA and node certificates for a first deployment (mutual TLS).
    Certs(CertsArgs),
    /// Run a local mesh (1 master, 2 sidecars, 3 clients) on an embedded Kafka and open the dashboard on it.
    #[cfg(feature = "demo")]
    Demo {
        #[command(flatten)]
        demo: DemoArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Not in this build: it was built without the `demo` feature.
    #[cfg(not(feature = "demo"))]
    Demo {
        /// Whatever the demo's flags were: the answer is the same.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        flags: Vec<std::ffi::OsString>,
    },
}

fn main() -> ExitCode {
    let cli: Cli = cli::parse();
    let runtime = cli::runtime("smesh-console");
    let log_path = cli
        .dashboard
        .log_file
        .clone()
        .unwrap_or_else(tui::default_log_path);
    match cli.command {
        None => {
            let (dialer, addresses) = match cli
                .dashboard
                .masters
                .dialer()
                .and_then(|dialer| Ok((dialer, cli.dashboard.masters.addresses()?)))
            {
                Ok(both) => both,
                Err(reason) => cli::usage_error(&reason),
            };
            if let Err(err) =
                tui::check_terminal().and_then(|()| tui::log_to_file(&log_path, "info"))
            {
                eprintln!("smesh-console: {err}");
                return ExitCode::from(EX_USAGE as u8);
            }
            finish(
                runtime
                    .block_on(tui::run(
                        dialer,
                        addresses,
                        &log_path,
                        cli.dashboard.check_timeout,
                    ))
                    .map_err(Into::into),
            )
        }
        Some(Command::Check(args)) => {
            let (dialer, addresses) = match args
                .masters
                .dialer()
                .and_then(|dialer| Ok((dialer, args.masters.addresses()?)))
            {
                Ok(both) => both,
                Err(reason) => cli::usage_error(&reason),
            };
            let outcome = runtime.block_on(check::run(&dialer, &args, &addresses));
            if args.json {
                match serde_json::to_string_pretty(&outcome) {
                    Ok(json) => println!("{json}"),
                    Err(err) => {
                        eprintln!("smesh-console: cannot encode the result: {err}");
                        return ExitCode::from(check::Verdict::Unknown.exit_code());
                    }
                }
            } else {
                println!("{}", outcome.summary);
            }
            ExitCode::from(outcome.exit_code)
        }
        Some(Command::Status(args)) => {
            let (dialer, addresses) = match args
                .masters
                .dialer()
                .and_then(|dialer| Ok((dialer, args.masters.addresses()?)))
            {
                Ok(both) => both,
                Err(reason) => cli::usage_error(&reason),
            };
            let mesh = runtime.block_on(status::gather(&dialer, &addresses, args.timeout));
            let document = status::StatusDocument::from_mesh(&mesh);
            if args.json {
                match serde_json::to_string_pretty(&document) {
                    Ok(json) => println!("{json}"),
                    Err(err) => {
                        eprintln!("smesh-console: cannot encode the status: {err}");
                        return ExitCode::from(EX_SOFTWARE as u8);
                    }
                }
            } else {
                print!("{}", document.text(smesh_core::time::now_unix_nanos()));
            }
            if document.masters.iter().all(|m| m.connected) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EX_UNAVAILABLE as u8)
            }
        }
        #[cfg(feature = "audit")]
        Some(Command::Audit(args)) => run_audit(&args),
        #[cfg(not(feature = "audit"))]
        Some(Command::Audit { .. }) => cli::usage_error(
            "this build has no audit: it was built without the `audit` feature \
             (on by default; build with `--features audit`)",
        ),
        #[cfg(feature = "audit")]
        Some(Command::Trace(args)) => run_trace(&args),
        #[cfg(not(feature = "audit"))]
        Some(Command::Trace { .. }) => cli::usage_error(
            "this build has no trace: it was built without the `audit` feature \
             (on by default; build with `--features audit`)",
        ),
        Some(Command::Certs(args)) => match certs::run(&args) {
            Ok(lines) => {
                for line in lines {
                    println!("{line}");
                }
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("smesh-console: certs: {err}");
                ExitCode::from(err.exit_code())
            }
        },
        #[cfg(not(feature = "demo"))]
        Some(Command::Demo { .. }) => cli::usage_error(
            "this build has no demo: it was built without the `demo` feature \
             (on by default; build with `--features demo`)",
        ),
        #[cfg(feature = "demo")]
        Some(Command::Demo { demo, mut log }) => {
            if demo.headless {
                // The summary goes to stdout; only warnings to stderr unless asked.
                if log.log == "info" {
                    log.log = "warn".to_string();
                }
                log.init();
                finish(runtime.block_on(smesh_demo::run_headless(&demo)))
            } else {
                if let Err(err) = tui::check_terminal() {
                    eprintln!("smesh-console: {err}; or run `smesh-console demo --headless`");
                    return ExitCode::from(EX_USAGE as u8);
                }
                if let Err(err) = tui::log_to_file(&log_path, &log.log) {
                    eprintln!("smesh-console: {err}");
                    return ExitCode::from(EX_USAGE as u8);
                }
                finish(runtime.block_on(run_demo_dashboard(&demo, &log_path)))
            }
        }
    }
}

/// Runs the demo mesh with the dashboard on its master until `q`.
#[cfg(feature = "demo")]
async fn run_demo_dashboard(args: &DemoArgs, log_path: &Path) -> anyhow::Result<()> {
    tui::check_terminal()?;
    let mesh = smesh_demo::start(args).await?;
    let tls = match &mesh.console_tls {
        Some(files) => Some(smesh_core::tls::NodeTls::load(files)?.client_config()),
        None => None,
    };
    let outcome = tui::run(
        smesh_console::remote::AdminDialer::new(tls, None),
        vec![mesh.admin_address.clone()],
        log_path,
        Duration::from_secs(2),
    )
    .await;
    mesh.stop().await;
    outcome.map_err(anyhow::Error::from)
}

/// `smesh-console audit`: the report on stdout (a table, or JSON with
/// `--json`), the monitoring-plugin exit code; a topic that cannot be read
/// is UNKNOWN (3) with a one-line reason, a bad flag 64.
#[cfg(feature = "audit")]
fn run_audit(args: &AuditArgs) -> ExitCode {
    match audit::run(args) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(err) => {
                        eprintln!("smesh-console: cannot encode the audit: {err}");
                        return ExitCode::from(check::Verdict::Unknown.exit_code());
                    }
                }
            } else {
                print!("{}", report.text());
            }
            ExitCode::from(report.exit_code)
        }
        Err(err) => {
            let code = err.exit_code();
            if code == EX_USAGE as u8 {
                cli::usage_error(&format!("audit: {err}"));
            }
            let summary = format!("UNKNOWN: {err}");
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"status": "UNKNOWN", "exit_code": code, "summary": summary})
                );
            } else {
                println!("{summary}");
            }
            ExitCode::from(code)
        }
    }
}

fn finish(outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("smesh-console: {err:#}");
            ExitCode::from(EX_SOFTWARE as u8)
        }
    }
}

/// `smesh-console trace`: the event's hops on stdout (lines, or JSON with
/// `--json`), exit 0 found once, 1 more than once, 2 not found; a topic
/// that cannot be read is UNKNOWN (3) with a one-line reason, a bad flag
/// or id 64.
#[cfg(feature = "audit")]
fn run_trace(args: &TraceArgs) -> ExitCode {
    match trace::run(args) {
        Ok(found) => {
            if args.json {
                match serde_json::to_string_pretty(&found) {
                    Ok(json) => println!("{json}"),
                    Err(err) => {
                        eprintln!("smesh-console: cannot encode the trace: {err}");
                        return ExitCode::from(check::Verdict::Unknown.exit_code());
                    }
                }
            } else {
                print!("{}", found.text());
            }
            ExitCode::from(found.exit_code)
        }
        Err(err) => {
            let code = err.exit_code();
            if code == EX_USAGE as u8 {
                cli::usage_error(&format!("trace: {err}"));
            }
            println!("UNKNOWN: {err}");
            ExitCode::from(code)
        }
    }
}
