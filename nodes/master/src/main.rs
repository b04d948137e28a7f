//! `smesh-master`: see the crate docs of `smesh_master`.

use std::process::ExitCode;

use smesh_core::cli::{self, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE};
use smesh_core::shutdown;
use smesh_master::Master;
use smesh_master::config::MasterArgs;
use tokio_util::sync::CancellationToken;
use tracing::error;

/// mimalloc on the master: it handles every event of a site, and glibc's
/// malloc/free were about a quarter of its profile. (Clients and sidecars
/// keep the system allocator: with mimalloc an idle sidecar's RSS went from
/// 6.7 to 16.4 MiB and each connected client cost 72 instead of 42 KiB,
/// which matters more at the edge than their throughput.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: MasterArgs = cli::parse();
    args.log.init();
    let grace = args.grace;
    let config = match args.clone().into_config() {
        Ok(config) => config,
        Err(reason) => cli::usage_error(&reason),
    };
    if !args.config.check_config {
        cli::warn_plaintext("--listen", args.listen, config.tls.is_some());
        cli::warn_plaintext("--admin-listen", args.admin_listen, config.tls.is_some());
    }
    let runtime = cli::runtime("smesh-master");
    runtime.block_on(async move {
        // The Kafka producers are made (librdkafka checks their settings)
        // before anything is bound, also by --check-config.
        let master = match Master::new(config) {
            Ok(master) => master,
            Err(err) => {
                eprintln!("smesh-master: {err}");
                return ExitCode::from(EX_USAGE as u8);
            }
        };
        if args.config.check_config {
            drop(master);
            args.config.confirm();
        }
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("smesh-master: cannot listen on {}: {err}", args.listen);
                return ExitCode::from(EX_UNAVAILABLE as u8);
            }
        };
        let admin = match tokio::net::TcpListener::bind(args.admin_listen).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!(
                    "smesh-master: cannot listen on {} (admin API): {err}",
                    args.admin_listen
                );
                return ExitCode::from(EX_UNAVAILABLE as u8);
            }
        };
        let token = CancellationToken::new();
        // SIGHUP (`systemctl reload`) must not end the master: it has no
        // peer list, and re-reads its certificates by itself.
        let _hangups = shutdown::hangups();
        if let Err(reason) = args.metrics.serve(|| master.metrics(), token.clone()).await {
            eprintln!("smesh-master: {reason}");
            return ExitCode::from(EX_UNAVAILABLE as u8);
        }
        let master = match args.health.bind().await {
            Ok(door) => master.health_on(door),
            Err(reason) => {
                eprintln!("smesh-master: {reason}");
                return ExitCode::from(EX_UNAVAILABLE as u8);
            }
        };
        // SIGUSR1 runs a health check of every peer (the console does it through the admin API).
        tokio::spawn(health_check_on_sigusr1(
            master.handle(),
            args.probe_timeout,
            token.clone(),
        ));
        match shutdown::drive(
            master.run(listener, Some(admin), token.clone()),
            token,
            grace,
        )
        .await
        {
            Some(Ok(())) | None => ExitCode::SUCCESS,
            Some(Err(err)) => {
                error!(%err, "master stopped");
                ExitCode::from(EX_SOFTWARE as u8)
            }
        }
    })
}

#[cfg(unix)]
async fn health_check_on_sigusr1(
    registry: smesh_master::RegistryHandle,
    timeout: std::time::Duration,
    token: CancellationToken,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        return;
    };
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            received = usr1.recv() => if received.is_none() { return },
        }
        match registry.health_check(String::new(), timeout).await {
            Ok(report) => tracing::info!(
                check = report.check_id,
                rows = report.rows.len(),
                "SIGUSR1 health check written"
            ),
            Err(err) => tracing::warn!(%err, "SIGUSR1 health check failed"),
        }
    }
}

#[cfg(not(unix))]
async fn health_check_on_sigusr1(
    _registry: smesh_master::RegistryHandle,
    _timeout: std::time::Duration,
    _token: CancellationToken,
) {
}
