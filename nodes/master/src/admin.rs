//! The admin API (`smesh.admin.v1.Admin`): what the console shows and what
//! scripts check. Served on its own listener, loopback by default.

use std::pin::Pin;
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
use smesh_core::tls::{self, Tier};

use crate::registry::{CheckError, RegistryHandle};

type ServerStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

/// Longest per-probe timeout a caller may ask for.
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The admin service of one master.
#[derive(Debug, Clone)]
pub struct AdminService {
    registry: RegistryHandle,
    probe_timeout: Duration,
    shutdown: CancellationToken,
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
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn get_status(
        &self,
        _request: Request<GetStatusRequest>,
    ) -> Result<Response<Status>, tonic::Status> {
        self.registry
            .status()
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
        let history = request.into_inner().history as usize;
        let mut samples = self.registry.heartbeats.subscribe();
        let backlog = if history > 0 {
            self.registry
                .status()
                .await
                .map(|s| history_samples(&s, history))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let shutdown = self.shutdown.clone();
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
                    // A slow watcher skips samples rather than slowing the master.
                    Err(RecvError::Lagged(_)) => {}
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

/// Recent RTT samples already measured, oldest first, `per_peer` at most per peer.
fn history_samples(status: &Status, per_peer: usize) -> Vec<HeartbeatSample> {
    let master = status
        .master
        .as_ref()
        .map(|m| m.id.clone())
        .unwrap_or_default();
    let mut samples = Vec::new();
    let mut push =
        |checker: &str, tier, peer: &str, rtt: Option<&smesh_proto::mesh::RttStats>, at: i64| {
            let Some(rtt) = rtt else { return };
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
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// The admin API's door on a TLS listener: only a console's certificate
/// (`smesh://console/<name>`) may call it; a device's or a sidecar's,
/// though signed by the same CA, gets `PERMISSION_DENIED`. On a plaintext
/// listener (loopback, or `--insecure-plaintext`) every call passes.
#[allow(clippy::result_large_err)] // tonic's interceptor signature
pub(crate) fn only_consoles(request: Request<()>) -> Result<Request<()>, tonic::Status> {
    let certified = ConnectionInfo::of(&request).and_then(|c| c.certified.as_ref());
    match certified {
        Some(identities) if !identities.iter().any(|i| i.tier == Tier::Console) => {
            Err(tonic::Status::permission_denied(format!(
                "the admin API answers consoles only (a certificate for smesh://console/<name>); this one is for {}",
                tls::names(identities)
            )))
        }
        _ => Ok(request),
    }
}
