//! Talking to masters' admin APIs: one watcher task per master keeps a
//! connection (reconnecting with backoff), polls the status, follows the
//! stats and heartbeat streams, and sends what it learns as [`RemoteEvent`]s.

use std::time::Duration;

use smesh_core::backoff::Backoff;
use smesh_core::token::AdminToken;
use smesh_proto::admin::admin_client::AdminClient;
use smesh_proto::admin::{
    GetStatusRequest, HealthCheckReport, HeartbeatSample, RunHealthCheckRequest, Stats, Status,
    WatchHeartbeatsRequest, WatchStatsRequest,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig};
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

/// How this console dials masters' admin APIs: mutual TLS (or TLS that
/// only verifies the master, for a token) and the bearer token. Made once
/// from the flags ([`crate::status::MasterSelection::dialer`]) and handed to
/// every connection.
#[derive(Debug, Clone, Default)]
pub struct AdminDialer {
    /// TLS to the admin APIs; `None`: plaintext.
    tls: Option<ClientTlsConfig>,
    /// Sent on every call as `authorization: Bearer <token>`.
    token: Option<AdminToken>,
}

impl AdminDialer {
    /// A dialer with `tls` (`None`: plaintext) sending `token`, if any.
    pub fn new(tls: Option<ClientTlsConfig>, token: Option<AdminToken>) -> Self {
        Self { tls, token }
    }

    /// Connects to a master's admin API.
    pub async fn connect(
        &self,
        address: &str,
        timeout: Duration,
    ) -> Result<AdminConnection, RemoteError> {
        let channel = smesh_core::grpc::endpoint(&admin_uri(address), timeout, self.tls.as_ref())
            .map_err(|e| RemoteError::Unreachable(format!("invalid address {address:?}: {e}")))?
            .timeout(timeout.max(Duration::from_secs(30)))
            .connect()
            .await
            .map_err(|e| {
                RemoteError::Unreachable(format!("cannot reach {address}: {}", source_chain(&e)))
            })?;
        let credentials = Credentials(self.token.as_ref().map(AdminToken::header_value));
        Ok(AdminClient::with_interceptor(channel, credentials)
            .max_decoding_message_size(smesh_core::grpc::MAX_MESSAGE_BYTES))
    }
}

/// A connection to one master's admin API, with the console's credentials.
pub type AdminConnection = AdminClient<InterceptedService<Channel, Credentials>>;

/// Puts the bearer token, if any, on every call.
#[derive(Debug, Clone)]
pub struct Credentials(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert(smesh_core::token::AUTHORIZATION, value.clone());
        }
        Ok(request)
    }
}

/// Why a master could not be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// No connection (refused, timed out, TLS failed).
    #[error("{0}")]
    Unreachable(String),
    /// The master answered, but not to this console: its credentials
    /// (certificate or token) were missing or not accepted.
    #[error("refused the console: {code}: {message}")]
    Refused {
        /// `UNAUTHENTICATED` or `PERMISSION_DENIED`.
        code: &'static str,
        /// What the master said (it says what to give).
        message: String,
    },
    /// The call failed otherwise (the master's reason).
    #[error("{0}")]
    Failed(String),
}

impl RemoteError {
    /// The error of a call to `address` that ended with `status`.
    pub fn from_status(address: &str, status: &tonic::Status) -> Self {
        match status.code() {
            tonic::Code::Unauthenticated => Self::Refused {
                code: "UNAUTHENTICATED",
                message: status.message().to_string(),
            },
            tonic::Code::PermissionDenied => Self::Refused {
                code: "PERMISSION_DENIED",
                message: status.message().to_string(),
            },
            _ => Self::Failed(format!("{address}: {}", status.message())),
        }
    }

    /// Whether the master refused the console (as opposed to not answering).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }
}

/// How a [`RemoteError::Refused`] begins, for what prints it.
pub const REFUSED: &str = "refused the console";

/// Clients asked for per `GetStatus` page.
pub const STATUS_PAGE_CLIENTS: u32 = 2_000;

/// Most clients the console fetches from one master (the pages after it
/// are not asked for; the status says how many were left out).
pub const MAX_CLIENTS_FETCHED: usize = 20_000;

/// `host:port` or a URI → a URI tonic can dial.
pub fn admin_uri(address: &str) -> String {
    if address.starts_with("http://") || address.starts_with("https://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
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
    dialer: &AdminDialer,
    address: &str,
    peer: Option<String>,
    timeout: Duration,
) -> Result<HealthCheckReport, RemoteError> {
    let mut client = dialer.connect(address, timeout).await?;
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
        .map_err(|status| RemoteError::from_status(address, &status))
}

/// Fetches one master's status, every page of it (up to
/// [`MAX_CLIENTS_FETCHED`] clients).
pub async fn status(
    dialer: &AdminDialer,
    address: &str,
    timeout: Duration,
) -> Result<Status, RemoteError> {
    let mut client = dialer.connect(address, timeout).await?;
    fetch_status(&mut client, address, Some(timeout)).await
}

/// The pages of a master's status, merged into one: the first page's
/// master, sidecars and checks with the clients of every page, up to
/// [`MAX_CLIENTS_FETCHED`] (`clients_total` says how many there are).
pub async fn fetch_status(
    client: &mut AdminConnection,
    address: &str,
    timeout: Option<Duration>,
) -> Result<Status, RemoteError> {
    let ask = |page_token: String| {
        let mut call = tonic::Request::new(GetStatusRequest {
            max_clients: STATUS_PAGE_CLIENTS,
            page_token,
        });
        if let Some(timeout) = timeout {
            call.set_timeout(timeout);
        }
        call
    };
    let mut status = client
        .get_status(ask(String::new()))
        .await
        .map_err(|s| RemoteError::from_status(address, &s))?
        .into_inner();
    while !status.next_page_token.is_empty() && status.clients.len() < MAX_CLIENTS_FETCHED {
        let page = client
            .get_status(ask(std::mem::take(&mut status.next_page_token)))
            .await
            .map_err(|s| RemoteError::from_status(address, &s))?
            .into_inner();
        status.clients.extend(page.clients);
        status.next_page_token = page.next_page_token;
        status.clients_total = page.clients_total;
    }
    status.clients.truncate(MAX_CLIENTS_FETCHED);
    Ok(status)
}

/// Starts one watcher per master.
pub fn spawn_watchers(
    dialer: &AdminDialer,
    addresses: &[String],
    events: mpsc::Sender<RemoteEvent>,
    shutdown: &CancellationToken,
) {
    for (master, address) in addresses.iter().enumerate() {
        tokio::spawn(watch_master(
            dialer.clone(),
            master,
            address.clone(),
            events.clone(),
            shutdown.clone(),
        ));
    }
}

async fn watch_master(
    dialer: AdminDialer,
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
            outcome = follow(&dialer, master, &address, &events, &mut backoff, &mut attempt) => outcome,
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
    dialer: &AdminDialer,
    master: usize,
    address: &str,
    events: &mpsc::Sender<RemoteEvent>,
    backoff: &mut Backoff,
    attempt: &mut u32,
) -> Result<(), String> {
    let client = dialer
        .connect(address, Duration::from_secs(3))
        .await
        .map_err(|e| e.to_string())?;
    let mut status_client = client.clone();
    let first = fetch_status(&mut status_client, address, None)
        .await
        .map_err(|e| e.to_string())?;
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
                let status = fetch_status(&mut status_client, address, None)
                    .await
                    .map_err(|e| e.to_string())?;
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
