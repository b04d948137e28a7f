//! `smesh-sidecar`: see the crate docs of `smesh_sidecar`.

use std::process::ExitCode;

use smesh_core::cli::{self, EX_SOFTWARE, EX_UNAVAILABLE};
use smesh_core::shutdown;
use smesh_sidecar::Sidecar;
use smesh_sidecar::config::SidecarArgs;
use tokio_util::sync::CancellationToken;
use tracing::error;

fn main() -> ExitCode {
    let args: SidecarArgs = cli::parse();
    args.log.init();
    let grace = args.grace;
    let listen = args.listen;
    let metrics = args.metrics.clone();
    let health = args.health.clone();
    let checking = args.config.clone();
    let config = match args.into_config() {
        Ok(config) => config,
        Err(reason) => cli::usage_error(&reason),
    };
    checking.exit_if_checking();
    cli::warn_plaintext("--listen", listen, config.tls.is_some());
    let runtime = cli::runtime("smesh-sidecar");
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("smesh-sidecar: cannot listen on {listen}: {err}");
                return ExitCode::from(EX_UNAVAILABLE as u8);
            }
        };
        let token = CancellationToken::new();
        let health_door = match health.bind().await {
            Ok(door) => door,
            Err(reason) => {
                eprintln!("smesh-sidecar: {reason}");
                return ExitCode::from(EX_UNAVAILABLE as u8);
            }
        };
        let sidecar = Sidecar::new(config)
            .reload_on(shutdown::hangups())
            .health_on(health_door);
        if let Err(reason) = metrics.serve(|| sidecar.metrics(), token.clone()).await {
            eprintln!("smesh-sidecar: {reason}");
            return ExitCode::from(EX_UNAVAILABLE as u8);
        }
        match shutdown::drive(sidecar.run(listener, token.clone()), token, grace).await {
            Some(Ok(())) | None => ExitCode::SUCCESS,
            Some(Err(err)) => {
                error!(%err, "sidecar stopped");
                ExitCode::from(EX_SOFTWARE as u8)
            }
        }
    })
}
