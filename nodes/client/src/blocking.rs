//! Blocking file work (fsync, writing and renaming the state file,
//! truncating or rewriting the spool) runs on tokio's blocking pool, so the
//! runtime's worker threads keep serving the link, its heartbeats and the
//! sources meanwhile.
//!
//! The pipeline awaits each piece before it goes on: order is kept exactly as
//! if the work were done in line, only the thread it runs on differs.

use std::io;

/// Runs `work` on the blocking pool and waits for it. A task that panicked,
/// or was cancelled because the runtime is shutting down, comes back as an
/// I/O error: the caller fails like on any other spool error.
pub(crate) async fn run<T>(work: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T>
where
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done,
        Err(err) => Err(io::Error::other(format!(
            "file work on the blocking pool did not finish: {err}"
        ))),
    }
}
