//! Talking to masters' admin APIs: one watcher task per master keeps a
//! connection (reconnecting with backoff), polls the status, follows the
//! stats and heartbeat streams, and sends what it learns as [`RemoteEvent`]s.

use std::time::Duration;

use smesh_core::backoff::Backoff;
use smesh_proto::admin::admin_client::AdminClient;
use smesh_proto::admin::{
    GetStatusRequest, HealthCheckReport, HeartbeatSample, RunHealthCheckRequest, Stats, Status,
    WatchHeartbeatsRequest, WatchStatsRequest,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{debug, info};

use crate::state::Connection;

/// Something a master told the console (or failed to).
#[derive(Debug, Clone)]
pub enum RemoteEvent {
    /// The connection to a master changed (connected, retrying, why).
    Connection {
        /// Which master, by its position in the console's list.
        master: usize,
        /// Its connection now.
        connection: Connection,
    },
    /// A master's merged view of its sidecars and clients.
    Status {
        /// Which master.
        master: usize,
        /// Its view.
        status: Box<Status>,
    },
    /// A master's totals and rates (once a second).
    Stats {
        /// Which master.
        master: usize,
        /// Its figures.
        stats: Stats,
    },
    /// One RTT sample, as the master measured it.
    Heartbeat {
        /// Which master.
        master: usize,
        /// The sample.
        sample: HeartbeatSample,
    },
    /// A health check the console asked for finished.
    CheckDone {
        /// Which master ran it.
        master: usize,
        /// Its report, or why it failed.
        result: Result<HealthCheckReport, String>,
    },
}

/// Mutual TLS for every admin connection of this process, set once from the
/// flags before the first one (a console has one identity).
static ADMIN_TLS: std::sync::OnceLock<tonic::transport::ClientTlsConfig> =
    std::sync::OnceLock::new();

/// Makes every admin connection from now on use mutual TLS with `tls`
/// (the first call wins).
pub fn use_tls(tls: tonic::transport::ClientTlsConfig) {
    let _ = ADMIN_TLS.set(tls);
}

/// `host:port` or a URI → a URI tonic can dial.
pub fn admin_uri(address: &str) -> String {
    if address.starts_with("http://") || address.starts_with("https://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

/// Connects to a master's admin API.
pub async fn connect(address: &str, timeout: Duration) -> Result<AdminClient<Channel>, String> {
    let channel = smesh_core::grpc::endpoint(&admin_uri(address), timeout, ADMIN_TLS.get())
        .map_err(|e| format!("invalid address {address:?}: {e}"))?
        .timeout(timeout.max(Duration::from_secs(30)))
        .connect()
        .await
        .map_err(|e| format!("cannot reach {address}: {}", source_chain(&e)))?;
    Ok(AdminClient::new(channel).max_decoding_message_size(smesh_core::grpc::MAX_MESSAGE_BYTES))
}

/// An error and its causes on one line (tonic's top-level message alone is
/// often just "transport error").
pub fn source_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Runs a health check through one master.
pub async fn health_check(
    address: &str,
    peer: Option<String>,
    timeout: Duration,
) -> Result<HealthCheckReport, String> {
    let mut client = connect(address, timeout).await?;
    let request = RunHealthCheckRequest {
        peer_id: peer.unwrap_or_default(),
        timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
    };
    // The master waits `timeout` per probe; leave room for the round trip.
    let mut call = tonic::Request::new(request);
    call.set_timeout(timeout * 3);
    client
        .run_health_check(call)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| format!("{}: {}", address, status.message()))
}

/// Fetches one master's status.
pub async fn status(address: &str, timeout: Duration) -> Result<Status, String> {
    let mut client = connect(address, timeout).await?;
    let mut call = tonic::Request::new(GetStatusRequest {});
    call.set_timeout(timeout);
    client
        .get_status(call)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| format!("{}: {}", address, status.message()))
}

/// Starts one watcher per master.
pub fn spawn_watchers(
    addresses: &[String],
    events: mpsc::Sender<RemoteEvent>,
    shutdown: &CancellationToken,
) {
    for (master, address) in addresses.iter().enumerate() {
        tokio::spawn(watch_master(
            master,
            address.clone(),
            events.clone(),
            shutdown.clone(),
        ));
    }
}

async fn watch_master(
    master: usize,
    address: String,
    events: mpsc::Sender<RemoteEvent>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = follow(master, &address, &events, &mut backoff, &mut attempt) => outcome,
        };
        let error = match outcome {
            Ok(()) => "the master closed the connection".to_string(),
            Err(err) => err,
        };
        debug!(%address, %error, "admin connection lost");
        if events
            .send(RemoteEvent::Connection {
                master,
                connection: Connection::Connecting {
                    attempt,
                    error: Some(error),
                },
            })
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// One connection's life: status every second, stats and heartbeats streamed.
async fn follow(
    master: usize,
    address: &str,
    events: &mpsc::Sender<RemoteEvent>,
    backoff: &mut Backoff,
    attempt: &mut u32,
) -> Result<(), String> {
    let client = connect(address, Duration::from_secs(3)).await?;
    let mut status_client = client.clone();
    let first = status_client
        .get_status(GetStatusRequest {})
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    info!(%address, "connected to master");
    backoff.reset();
    *attempt = 0;
    let send = |event| async move {
        events
            .send(event)
            .await
            .map_err(|_| "console closing".to_string())
    };
    send(RemoteEvent::Connection {
        master,
        connection: Connection::Connected,
    })
    .await?;
    send(RemoteEvent::Status {
        master,
        status: Box::new(first),
    })
    .await?;
    let mut stats = client
        .clone()
        .watch_stats(WatchStatsRequest {})
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let mut heartbeats = client
        .clone()
        .watch_heartbeats(WatchHeartbeatsRequest { history: 60 })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    poll.tick().await;
    loop {
        tokio::select! {
            _ = poll.tick() => {
                let status = status_client
                    .get_status(GetStatusRequest {})
                    .await
                    .map_err(|s| s.message().to_string())?
                    .into_inner();
                send(RemoteEvent::Status { master, status: Box::new(status) }).await?;
            }
            message = stats.message() => match message.map_err(|s| s.message().to_string())? {
                Some(stats) => send(RemoteEvent::Stats { master, stats }).await?,
                None => return Ok(()),
            },
            message = heartbeats.message() => match message.map_err(|s| s.message().to_string())? {
                Some(sample) => send(RemoteEvent::Heartbeat { master, sample }).await?,
                None => return Ok(()),
            },
        }
    }
}
