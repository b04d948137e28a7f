//! Machinery every smesh node shares.
//!
//! Nothing here knows about a particular tier: the client, sidecar and master
//! crates assemble these pieces into nodes.
//!
//! # Layout
//! - [`peers`]: `clientCon.csv` / `sidecarCon.csv`, the lists of upstream
//!   peers; their order per node (spread by rendezvous hashing); names
//!   resolved to one peer per address.
//! - [`live_peers`]: a peer list that follows its file (and SIGHUP) and its
//!   names while the node runs, keeping the last good list.
//! - [`backoff`]: exponential backoff with jitter for reconnect loops.
//! - [`heartbeat`]: ping/pong bookkeeping, round-trip statistics, liveness.
//! - [`link`]: the dialing end of a data-plane stream: failover over the
//!   peer list, the window, acks, pongs, liveness.
//! - [`session`]: the accepting end of a data-plane stream: Hello/Welcome,
//!   sequence and window checks, acks in order, pings, probes.
//! - [`event`]: validation of events crossing a node boundary.
//! - [`ids`]: what node ids, versions and incarnations may look like.
//! - [`accept`]: the door of every server: connection limits, silent peers.
//! - [`tls`]: mutual TLS from PEM files; identities in certificates.
//! - [`token`]: the admin API's bearer token, read from a file.
//! - [`pki`]: a CA that issues smesh certificates (rcgen).
//! - [`grpc`]: server and channel settings, health and reflection services.
//! - [`metrics`]: the `/metrics` door (`--metrics-listen`) and lock-free
//!   histograms; each tier's collector reads its own atomics.
//! - [`ratelimit`]: log lines a peer can repeat, one per interval.
//! - [`retention`]: forgetting peers that left, after a while and beyond a count.
//! - [`shutdown`]: signals turned into a cancellation token.
//! - [`cli`]: flag parsing that exits 64 with one line, logging set-up.
//! - [`config_file`]: `--config FILE`, a node's flags as TOML.
//! - [`time`]: wall-clock helpers.

pub mod accept;
pub mod backoff;
pub mod cli;
pub mod config_file;
pub mod event;
pub mod grpc;
pub mod heartbeat;
pub mod ids;
pub mod link;
pub mod live_peers;
pub mod metrics;
pub mod peers;
pub mod pki;
pub mod placed;
pub mod ratelimit;
pub mod retention;
pub mod session;
pub mod shutdown;
pub mod time;
pub mod tls;
pub mod token;

/// Version of this smesh build, sent in every Hello/Welcome.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default data-plane port of a sidecar.
pub const SIDECAR_PORT: u16 = 9000;
/// Default data-plane port of a master.
pub const MASTER_PORT: u16 = 9010;
/// Default admin-API port of a master.
pub const ADMIN_PORT: u16 = 9011;

/// Largest event (data plus attributes) a node accepts by default. Kafka's
/// default `message.max.bytes` is about 1 MiB, so larger events could never
/// be published anyway.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1_000_000;

/// Default number of events a downstream may have unacknowledged per stream.
pub const DEFAULT_WINDOW: u32 = 8192;
