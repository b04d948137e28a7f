//! Signals turned into cancellation.
//!
//! Libraries never trap signals: they are handed a `CancellationToken`. The
//! binaries call [`drive`], which cancels the token on SIGTERM or Ctrl-C and
//! gives the node a bounded grace period to drain, and [`hangups`], which
//! turns SIGHUP into a "reload now" the node's library is handed.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Resolves on the first SIGTERM or SIGINT, naming it.
pub async fn signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "Ctrl-C"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Runs `node` until it ends by itself or a signal arrives. On a signal the
/// token is cancelled and the node gets `grace` to finish draining; a second
/// signal or the end of the grace period stops waiting (returns `None`).
pub async fn drive<T>(
    node: impl Future<Output = T>,
    token: CancellationToken,
    grace: Duration,
) -> Option<T> {
    tokio::pin!(node);
    tokio::select! {
        out = &mut node => return Some(out),
        name = signal() => {
            info!(signal = name, grace = ?grace, "shutting down: draining in-flight events");
            token.cancel();
        }
        () = token.cancelled() => {}
    }
    tokio::select! {
        out = &mut node => Some(out),
        () = tokio::time::sleep(grace) => {
            warn!(grace = ?grace, "grace period ran out before draining finished; exiting anyway");
            None
        }
        name = signal() => {
            warn!(signal = name, "second signal: exiting without finishing the drain");
            None
        }
    }
}

/// A tick on every SIGHUP, for [`crate::live_peers::LivePeers::run`] ("re-read
/// the peer list now"). Call it inside the runtime, before the node runs:
/// from then on SIGHUP no longer ends the process. If the handler cannot be
/// installed the channel simply never ticks (the files are polled anyway).
pub fn hangups() -> watch::Receiver<()> {
    let (tx, rx) = watch::channel(());
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => {
                tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        info!("SIGHUP: reloading peer lists (certificates are re-read every 2 s)");
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                });
            }
            Err(err) => {
                warn!(%err, "cannot watch for SIGHUP; peer lists are still re-read when they change")
            }
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}
