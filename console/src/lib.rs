//! `smesh-console`: the operator's view of a smesh mesh.
//!
//! Connects to one or more masters over their admin API and merges what they
//! know: a ratatui dashboard, a scripted health check (`check`) and a JSON
//! dump (`status`); and `audit`, which reads a topic back from Kafka
//! (feature `audit`). Otherwise the library speaks only the admin API; the binary's
//! `demo` subcommand, a whole mesh in one process, comes from `smesh-demo`
//! with the `demo` feature (on by default), so a console built with
//! `--no-default-features` carries no node and no librdkafka.
//!
//! # Layout
//! - [`remote`]: one watcher task per master (reconnects with backoff).
//! - [`state`]: what the console knows, merged across masters.
//! - [`view`]: the views, and the typed description of each view's table.
//! - [`keymap`]: every key, what it does and what the help says of it.
//! - [`app`]: the dashboard's state, keys and updates (pure).
//! - [`ui`]: rendering, `impl Widget for &App`; each view's table
//!   description beside the code that draws the view.
//! - [`tui`]: the terminal, the event loop, logging to a file.
//! - [`check`]: `smesh-console check`, monitoring-plugin exit codes.
//! - [`audit`]: `smesh-console audit`, a topic read back and judged
//!   (feature `audit`, on by default: it brings librdkafka).
//! - [`trace`]: `smesh-console trace <ce_id>`, one event's hops and place
//!   in Kafka (feature `audit`).
//! - [`status`]: `smesh-console status`.
//! - [`certs`]: `smesh-console certs`, a CA and node certificates.
//! - [`format`](mod@format): numbers for people.

pub mod app;
#[cfg(feature = "audit")]
pub mod audit;
pub mod certs;
pub mod check;
pub mod format;
pub mod keymap;
pub mod remote;
pub mod state;
pub mod status;
#[cfg(feature = "audit")]
pub mod trace;
pub mod tui;
pub mod ui;
pub mod view;
