//! The admin API (`smesh.admin.v1.Admin`): what the console shows and what
//! scripts check. Served on its own listener, loopback by default.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smesh_proto::admin::admin_server::Admin;
use smesh_proto::admin::{
    GetStatusRequest, HealthCheckReport, HeartbeatSample, RunHealthCheckRequest, Stats, Status,
    WatchHeartbeatsRequest, WatchStatsRequest,
};
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response};

use smesh_core::accept::ConnectionInfo;
use smesh_core::ratelimit::LogEvery;
use smesh_core::tls::{self, Tier};
use smesh_core::token::{AdminToken, Presented};
use tracing::warn;

use crate::registry::{CheckError, RegistryHandle, StatusPage};

type ServerStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

/// Longest per-probe timeout a caller may ask for.
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most samples per peer a `WatchHeartbeats` sends from history.
pub const MAX_HISTORY_PER_PEER: usize = 60;

/// Most samples a `WatchHeartbeats` sends from history in all (sidecars
/// first, then clients in id order, until it is reached).
pub const MAX_HISTORY_SAMPLES: usize = 10_000;

/// Answers in flight per stream of `WatchStats` and `WatchHeartbeats`: the
/// stream waits for a slow watcher (HTTP/2 flow control) instead of
/// buffering for it.
const STREAM_BUFFER: usize = 16;

/// The admin service of one master.
#[derive(Debug, Clone)]
pub struct AdminService {
    registry: RegistryHandle,
    probe_timeout: Duration,
    shutdown: CancellationToken,
    /// Heartbeat watchers that fell behind, logged once per interval.
    lagging: Arc<Mutex<LogEvery>>,
}

impl AdminService {
    /// The API over `registry`; checks wait at most `default_timeout` per
    /// probe unless the request says otherwise.
    pub fn new(
        registry: RegistryHandle,
        probe_timeout: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            registry,
            probe_timeout,
            shutdown,
            lagging: Arc::default(),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn get_status(
        &self,
        request: Request<GetStatusRequest>,
    ) -> Result<Response<Status>, tonic::Status> {
        let request = request.into_inner();
        // Tokens are client ids this master handed out.
        if request.page_token.len() > smesh_core::ids::MAX_ID_BYTES {
            return Err(tonic::Status::invalid_argument(format!(
                "page_token is {} bytes; a token from a previous answer is at most {}",
                request.page_token.len(),
                smesh_core::ids::MAX_ID_BYTES
            )));
        }
        let page = StatusPage {
            max_clients: usize::try_from(request.max_clients).unwrap_or(usize::MAX),
            after: (!request.page_token.is_empty()).then_some(request.page_token),
        };
        self.registry
            .status_page(page)
            .await
            .map(Response::new)
            .ok_or_else(|| tonic::Status::unavailable("the master is shutting down"))
    }

    type WatchStatsStream = ServerStream<Stats>;

    async fn watch_stats(
        &self,
        _request: Request<WatchStatsRequest>,
    ) -> Result<Response<Self::WatchStatsStream>, tonic::Status> {
        let mut stats = self.registry.stats.clone();
        let shutdown = self.shutdown.clone();
        let stream = async_stream(move |tx| async move {
            loop {
                let current = *stats.borrow_and_update();
                if tx.send(Ok(current)).await.is_err() {
                    return;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = stats.changed() => if changed.is_err() { return },
                }
            }
        });
        Ok(Response::new(stream))
    }

    type WatchHeartbeatsStream = ServerStream<HeartbeatSample>;

    async fn watch_heartbeats(
        &self,
        request: Request<WatchHeartbeatsRequest>,
    ) -> Result<Response<Self::WatchHeartbeatsStream>, tonic::Status> {
        let history = usize::try_from(request.into_inner().history)
            .unwrap_or(usize::MAX)
            .min(MAX_HISTORY_PER_PEER);
        let mut samples = self.registry.heartbeats.subscribe();
        let backlog = if history > 0 {
            self.registry
                .status()
                .await
                .map(|s| history_samples(&s, history, MAX_HISTORY_SAMPLES))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let shutdown = self.shutdown.clone();
        let lagging = Arc::clone(&self.lagging);
        let stream = async_stream(move |tx| async move {
            for sample in backlog {
                if tx.send(Ok(sample)).await.is_err() {
                    return;
                }
            }
            loop {
                let sample = tokio::select! {
                    () = shutdown.cancelled() => return,
                    sample = samples.recv() => sample,
                };
                match sample {
                    Ok(sample) => {
                        if tx.send(Ok(sample)).await.is_err() {
                            return;
                        }
                    }
                    // A slow watcher skips samples rather than slowing the
                    // master: the broadcast channel keeps the newest 1,024
                    // and this stream's channel 16, whatever the watcher does.
                    Err(RecvError::Lagged(skipped)) => {
                        let logged = lagging.lock().ok().and_then(|mut l| l.tick());
                        if let Some(unlogged) = logged {
                            warn!(
                                skipped,
                                unlogged, "a heartbeat watcher is too slow; it skips samples"
                            );
                        }
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn run_health_check(
        &self,
        request: Request<RunHealthCheckRequest>,
    ) -> Result<Response<HealthCheckReport>, tonic::Status> {
        let request = request.into_inner();
        let timeout = match request.timeout_ms {
            0 => self.probe_timeout,
            ms => Duration::from_millis(u64::from(ms)).min(MAX_PROBE_TIMEOUT),
        };
        match self.registry.health_check(request.peer_id, timeout).await {
            Ok(report) => Ok(Response::new(report)),
            Err(err @ CheckError::UnknownPeer(_)) => Err(tonic::Status::not_found(err.to_string())),
            Err(err @ CheckError::ShuttingDown) => Err(tonic::Status::unavailable(err.to_string())),
            Err(err @ CheckError::Busy(_)) => {
                Err(tonic::Status::resource_exhausted(err.to_string()))
            }
        }
    }
}

/// Recent RTT samples already measured, oldest first, `per_peer` at most
/// per peer and `at_most` in all.
fn history_samples(status: &Status, per_peer: usize, at_most: usize) -> Vec<HeartbeatSample> {
    let master = status
        .master
        .as_ref()
        .map(|m| m.id.clone())
        .unwrap_or_default();
    let mut samples = Vec::new();
    let mut push =
        |checker: &str, tier, peer: &str, rtt: Option<&smesh_proto::mesh::RttStats>, at: i64| {
            let Some(rtt) = rtt else { return };
            let room = at_most.saturating_sub(samples.len());
            let per_peer = per_peer.min(room);
            let recent = &rtt.recent_us[rtt.recent_us.len().saturating_sub(per_peer)..];
            for rtt_us in recent {
                samples.push(HeartbeatSample {
                    at_unix_nanos: at,
                    checker_id: checker.to_string(),
                    tier,
                    peer_id: peer.to_string(),
                    rtt_us: *rtt_us,
                });
            }
        };
    for sidecar in &status.sidecars {
        push(
            &master,
            smesh_proto::admin::Tier::Sidecar as i32,
            &sidecar.id,
            sidecar.rtt.as_ref(),
            sidecar.last_heartbeat_unix_nanos,
        );
    }
    for view in &status.clients {
        if let Some(info) = &view.info {
            push(
                &view.sidecar_id,
                smesh_proto::admin::Tier::Client as i32,
                &info.client_id,
                info.rtt.as_ref(),
                info.last_seen_unix_nanos,
            );
        }
    }
    samples
}

/// A server stream fed by a task through a small channel.
fn async_stream<T, F, Fut>(produce: F) -> ServerStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, tonic::Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Who may call the admin API, checked on every call (a tonic interceptor).
///
/// - A connection whose certificate names a console (`smesh://console/<name>`)
///   is admitted.
/// - With a token (`--admin-token-file`), a call carrying
///   `authorization: Bearer <token>` is admitted too, on TLS or plaintext; a
///   call with neither a console certificate nor the token gets
///   `UNAUTHENTICATED` (no certificate, or a wrong token) or
///   `PERMISSION_DENIED` (another tier's certificate).
/// - Without a token, a plaintext listener admits every call (it is on
///   loopback unless `--insecure-plaintext`), and a TLS listener only console
///   certificates (others get `PERMISSION_DENIED`).
///
/// Each refusal is logged, at most one line per reason every 10 s.
#[derive(Debug, Clone)]
pub struct AdminDoor {
    token: Option<Arc<AdminToken>>,
    refusals: Arc<Mutex<Refusals>>,
}

/// One log line per refusal reason and interval.
#[derive(Debug, Default)]
struct Refusals {
    no_credentials: LogEvery,
    wrong_token: LogEvery,
    not_a_console: LogEvery,
}

impl AdminDoor {
    /// The door; with `token`, a call may bring it instead of a console certificate.
    pub fn new(token: Option<AdminToken>) -> Self {
        Self {
            token: token.map(Arc::new),
            refusals: Arc::default(),
        }
    }

    /// Admits or refuses one call (see [`AdminDoor`]).
    #[allow(clippy::result_large_err)] // tonic's interceptor signature
    pub fn admit<T>(&self, request: &Request<T>) -> Result<(), tonic::Status> {
        let info = ConnectionInfo::of(request);
        let certified = info.and_then(|c| c.certified.as_deref());
        if certified.is_some_and(|ids| ids.iter().any(|i| i.tier == Tier::Console)) {
            return Ok(());
        }
        let presented = self.token.as_ref().map(|t| t.judge(request.metadata()));
        let refusal = match (presented, certified) {
            (Some(Presented::Valid), _) => return Ok(()),
            // No token configured: plaintext admits everyone (loopback).
            (None, None) => return Ok(()),
            // Without a token, TLS required a certificate: it is not a console's.
            (None, Some(ids)) => Refusal::NotAConsole(tls::names(ids)),
            (Some(_), Some(ids)) if !ids.is_empty() => Refusal::NotAConsole(tls::names(ids)),
            (Some(Presented::Wrong), _) => Refusal::WrongToken,
            (Some(Presented::Nothing), _) => Refusal::NoCredentials,
        };
        let peer = info.map(|c| c.remote.to_string()).unwrap_or_default();
        self.log(&refusal, &peer);
        Err(refusal.status(self.token.is_some()))
    }

    fn log(&self, refusal: &Refusal, address: &str) {
        let Ok(mut refusals) = self.refusals.lock() else {
            return;
        };
        let (every, reason) = match refusal {
            Refusal::NoCredentials => (&mut refusals.no_credentials, "no credentials"),
            Refusal::WrongToken => (&mut refusals.wrong_token, "a wrong token"),
            Refusal::NotAConsole(_) => (&mut refusals.not_a_console, "not a console certificate"),
        };
        if let Some(unlogged) = every.tick() {
            warn!(%address, reason, unlogged, "admin API call refused");
        }
    }
}

impl tonic::service::Interceptor for AdminDoor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, tonic::Status> {
        self.admit(&request).map(|()| request)
    }
}

/// Why a call was refused.
#[derive(Debug)]
enum Refusal {
    /// No console certificate and no token.
    NoCredentials,
    /// A token that is not the master's.
    WrongToken,
    /// A certificate of another tier (its identities), and no valid token.
    NotAConsole(String),
}

impl Refusal {
    /// The status the caller reads: what was wrong and what to give.
    fn status(&self, token_configured: bool) -> tonic::Status {
        let what_to_give = if token_configured {
            "give a console certificate (smesh-console --tls-cert for smesh://console/<name>) or the master's token (smesh-console --admin-token-file, or `authorization: Bearer <token>` metadata)"
        } else {
            "give a console certificate (smesh-console --tls-cert for smesh://console/<name>)"
        };
        match self {
            Self::NoCredentials => tonic::Status::unauthenticated(format!(
                "the admin API needs credentials: {what_to_give}"
            )),
            Self::WrongToken => tonic::Status::unauthenticated(format!(
                "the admin API refused the bearer token given: {what_to_give}"
            )),
            Self::NotAConsole(names) => tonic::Status::permission_denied(format!(
                "the admin API answers consoles only (a certificate for smesh://console/<name>); this one is for {names}: {what_to_give}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use smesh_core::tls::PeerIdentity;
    use tonic::metadata::MetadataValue;

    use super::*;

    const TOKEN: &str = "0123456789abcdef0123";

    /// A call on a connection with `certified` identities (`None`:
    /// plaintext), carrying `authorization` if given.
    fn call(certified: Option<Vec<PeerIdentity>>, authorization: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        request.extensions_mut().insert(ConnectionInfo {
            remote: SocketAddr::from(([127, 0, 0, 1], 4000)),
            certified: certified.map(Into::into),
            certified_until: None,
        });
        if let Some(value) = authorization {
            let value: MetadataValue<_> = value.parse().expect("ascii");
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    fn console() -> Option<Vec<PeerIdentity>> {
        Some(vec![PeerIdentity::new(Tier::Console, "ops")])
    }

    fn device() -> Option<Vec<PeerIdentity>> {
        Some(vec![PeerIdentity::new(Tier::Client, "c1")])
    }

    fn door(token: bool) -> AdminDoor {
        AdminDoor::new(token.then(|| AdminToken::parse(TOKEN.as_bytes()).expect("token")))
    }

    fn code(door: &AdminDoor, request: &Request<()>) -> tonic::Code {
        door.admit(request)
            .err()
            .map_or(tonic::Code::Ok, |s| s.code())
    }

    #[test]
    fn without_a_token_plaintext_admits_all_and_tls_consoles_only() {
        let door = door(false);
        assert_eq!(code(&door, &call(None, None)), tonic::Code::Ok);
        assert_eq!(code(&door, &call(console(), None)), tonic::Code::Ok);
        assert_eq!(
            code(&door, &call(device(), None)),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn with_a_token_a_console_certificate_or_the_token_admits() {
        let door = door(true);
        let bearer = format!("Bearer {TOKEN}");
        // Plaintext: the token is required.
        assert_eq!(code(&door, &call(None, None)), tonic::Code::Unauthenticated);
        assert_eq!(
            code(&door, &call(None, Some("Bearer wrong-token-0123456789"))),
            tonic::Code::Unauthenticated
        );
        assert_eq!(code(&door, &call(None, Some(&bearer))), tonic::Code::Ok);
        // TLS: a console certificate, or no certificate and the token.
        assert_eq!(code(&door, &call(console(), None)), tonic::Code::Ok);
        assert_eq!(
            code(&door, &call(Some(Vec::new()), Some(&bearer))),
            tonic::Code::Ok
        );
        assert_eq!(
            code(&door, &call(Some(Vec::new()), None)),
            tonic::Code::Unauthenticated
        );
        assert_eq!(code(&door, &call(device(), Some(&bearer))), tonic::Code::Ok);
        assert_eq!(
            code(&door, &call(device(), None)),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn a_refusal_says_what_to_give_and_never_echoes_a_token() {
        let door = door(true);
        let refused = door
            .admit(&call(None, Some("Bearer a-guess-that-is-long-enough")))
            .expect_err("refused");
        assert!(
            refused.message().contains("--admin-token-file"),
            "{}",
            refused.message()
        );
        assert!(
            !refused.message().contains("a-guess"),
            "{}",
            refused.message()
        );
        assert!(!refused.message().contains(TOKEN), "{}", refused.message());
    }

    #[test]
    fn history_is_capped_per_peer_and_in_all() {
        let rtt = smesh_proto::mesh::RttStats {
            recent_us: (1..=120).collect(),
            ..Default::default()
        };
        let status = Status {
            sidecars: (0..100)
                .map(|i| smesh_proto::admin::SidecarInfo {
                    id: format!("S{i}"),
                    rtt: Some(rtt.clone()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let samples = history_samples(&status, 60, 1000);
        assert_eq!(samples.len(), 1000);
        assert_eq!(samples.iter().filter(|s| s.peer_id == "S0").count(), 60);
        assert_eq!(samples[0].rtt_us, 61, "the newest 60 of S0");
    }
}
