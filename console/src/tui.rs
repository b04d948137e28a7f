//! The dashboard's runner: terminal set-up and restore, logging to a file,
//! and the event loop that feeds keys, ticks and master updates to the
//! [`App`](crate::app::App) in the dashboard.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossterm::event::{Event as TermEvent, EventStream, KeyEventKind};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::{Action, App};
use crate::remote::{self, RemoteEvent};
use crate::state::Mesh;

/// How often the screen is redrawn without input.
const TICK: Duration = Duration::from_millis(250);

/// Everything that wakes the event loop.
#[derive(Debug)]
pub enum Event {
    /// Time to redraw (ages and rates move without input).
    Tick,
    /// A key was pressed.
    Input(crossterm::event::KeyEvent),
    /// A master said something.
    Remote(RemoteEvent),
}

/// Why the dashboard did not run.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error(
        "standard output is not a terminal; for scripts use `smesh-console status --json` or `smesh-console check`"
    )]
    /// Standard output is not a terminal.
    NotATerminal,
    /// The log file cannot be opened (the screen is no place for logs).
    #[error("cannot open the log file {path}: {source}")]
    Log {
        /// The log file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The terminal could not be set up or drawn to.
    #[error("terminal error: {0}")]
    Terminal(#[from] std::io::Error),
}

/// The default log file: the dashboard owns the screen, logs go here.
pub fn default_log_path() -> PathBuf {
    std::env::temp_dir().join("smesh-console.log")
}

/// Whether the dashboard can run here.
pub fn check_terminal() -> Result<(), DashboardError> {
    if std::io::stdout().is_terminal() && std::io::stdin().is_terminal() {
        Ok(())
    } else {
        Err(DashboardError::NotATerminal)
    }
}

/// Sends tracing output to `path` (appending), never to the screen.
pub fn log_to_file(path: &Path, filter: &str) -> Result<(), DashboardError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| DashboardError::Log {
            path: path.display().to_string(),
            source,
        })?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(())
}

/// Restores the terminal when dropped, also on early returns. (ratatui's
/// own panic hook restores it on a panic.)
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs the dashboard on `addresses` (admin APIs) until `q`/Ctrl-C.
pub async fn run(
    dialer: remote::AdminDialer,
    addresses: Vec<String>,
    log_path: &Path,
    check_timeout: Duration,
) -> Result<(), DashboardError> {
    check_terminal()?;
    let shutdown = CancellationToken::new();
    let (remote_tx, mut remote_rx) = mpsc::channel(1024);
    remote::spawn_watchers(&dialer, &addresses, remote_tx.clone(), &shutdown);

    let mut app = App::new(
        Mesh::new(addresses.clone()),
        smesh_core::time::now_unix_nanos(),
        log_path.display().to_string(),
    );
    let mut terminal = ratatui::try_init()?;
    let _guard = TerminalGuard;
    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        app.now_unix_nanos = smesh_core::time::now_unix_nanos();
        terminal.draw(|frame| frame.render_widget(&app, frame.area()))?;
        let event = tokio::select! {
            _ = tick.tick() => Event::Tick,
            Some(remote) = remote_rx.recv() => Event::Remote(remote),
            key = keys.next() => match key {
                Some(Ok(TermEvent::Key(key))) if key.kind != KeyEventKind::Release => Event::Input(key),
                Some(Ok(_)) => Event::Tick,
                Some(Err(err)) => return Err(err.into()),
                None => break,
            },
        };
        match event {
            Event::Tick => {}
            Event::Remote(remote) => {
                app.on_remote(remote);
                // Take whatever else arrived before drawing again.
                while let Ok(more) = remote_rx.try_recv() {
                    app.on_remote(more);
                }
            }
            Event::Input(key) => match app.on_key(key) {
                Action::None => {}
                Action::Quit => break,
                Action::HealthCheck(peer) => {
                    let targets = app.mesh.masters_for(peer.as_deref());
                    if targets.is_empty() {
                        app.checks_running = app.checks_running.saturating_sub(1);
                        app.message = Some("no connected master to run the check".to_string());
                    }
                    // One check is counted already; count the others too.
                    app.checks_running += targets.len().saturating_sub(1);
                    for master in targets {
                        let address = addresses[master].clone();
                        let peer = peer.clone();
                        let tx = remote_tx.clone();
                        let dialer = dialer.clone();
                        tokio::spawn(async move {
                            let result =
                                remote::health_check(&dialer, &address, peer, check_timeout)
                                    .await
                                    .map_err(|e| e.to_string());
                            let _ = tx.send(RemoteEvent::CheckDone { master, result }).await;
                        });
                    }
                }
            },
        }
    }
    shutdown.cancel();
    Ok(())
}
