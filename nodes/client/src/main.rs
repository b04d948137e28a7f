//! `smesh-client`: see the crate docs of `smesh_client`.

use std::process::ExitCode;
use std::time::Duration;

use smesh_client::Client;
use smesh_client::config::ClientArgs;
use smesh_core::cli::{self, EX_SOFTWARE, EX_UNAVAILABLE};
use smesh_core::shutdown;
use tokio_util::sync::CancellationToken;
use tracing::error;

fn main() -> ExitCode {
    let args: ClientArgs = cli::parse();
    args.log.init();
    // The client drains for --grace itself, then makes the spool durable.
    let grace = args.grace + Duration::from_secs(5);
    let metrics = args.metrics.clone();
    let checking = args.config.clone();
    let config = match args.into_config() {
        Ok(config) => config,
        Err(reason) => cli::usage_error(&reason),
    };
    checking.exit_if_checking();
    let runtime = cli::runtime("smesh-client");
    runtime.block_on(async move {
        let token = CancellationToken::new();
        let client = Client::new(config).reload_on(shutdown::hangups());
        if let Err(reason) = metrics.serve(|| client.metrics(), token.clone()).await {
            eprintln!("smesh-client: {reason}");
            return ExitCode::from(EX_UNAVAILABLE as u8);
        }
        match shutdown::drive(client.run(token.clone()), token, grace).await {
            Some(Ok(())) => ExitCode::SUCCESS,
            Some(Err(err)) => {
                error!(%err, "client stopped");
                eprintln!("smesh-client: {err}");
                ExitCode::from(EX_SOFTWARE as u8)
            }
            None => ExitCode::from(EX_SOFTWARE as u8),
        }
    })
}
