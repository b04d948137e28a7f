//! `smesh-console`: see the crate docs of `smesh_console`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use smesh_console::demo::{self, DemoArgs};
use smesh_core::cli::{self, EX_SOFTWARE, LogArgs};

/// Watch and probe a smesh mesh.
#[derive(Parser, Debug)]
#[command(name = "smesh-console", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a local mesh (1 master, 2 sidecars, 3 clients) on an embedded Kafka.
    Demo {
        #[command(flatten)]
        demo: DemoArgs,
        #[command(flatten)]
        log: LogArgs,
    },
}

fn main() -> ExitCode {
    let cli: Cli = cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("smesh-console: cannot start the async runtime: {err}");
            return ExitCode::from(EX_SOFTWARE as u8);
        }
    };
    let outcome = match cli.command {
        Command::Demo { demo, mut log } => {
            // The summary goes to stdout; only warnings go to stderr unless asked.
            if log.log == "info" {
                log.log = "warn".to_string();
            }
            log.init();
            runtime.block_on(demo::run_headless(&demo))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("smesh-console: {err:#}");
            ExitCode::from(EX_SOFTWARE as u8)
        }
    }
}
