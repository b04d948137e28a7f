//! Signals turned into cancellation.
//!
//! Libraries never trap signals: they are handed a `CancellationToken`. The
//! binaries call [`drive`], which cancels the token on SIGTERM or Ctrl-C and
//! gives the node a bounded grace period to drain.

use std::future::Future;
use std::time::Duration;

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
