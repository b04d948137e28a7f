//! gRPC plumbing shared by every node: server and channel settings, and the
//! `grpc.health.v1` and reflection services each server carries.

use std::time::Duration;

use smesh_proto::mesh::mesh_server::{Mesh, MeshServer};

use crate::accept::{Admitted, DoorLimits, admit};
use crate::peers::Peer;
use crate::tls::{NodeTls, PeerCertificates, Tier};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Server};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Largest gRPC message a node decodes: a batch of events. Batches are cut
/// well below this (see each node's `--batch-max-bytes`).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// A server with the transport settings every node uses. (Socket options
/// of accepted connections are set by [`incoming`].)
pub fn server() -> Server {
    Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
}

/// The health service and the reflection service describing smesh's
/// protocol. tonic-health reports the server as a whole (`""`) SERVING from
/// the start; a node that has a readiness condition hands the reporter to
/// [`follow_readiness`], which sets both `""` and the mesh service.
pub fn health_and_reflection() -> Result<
    (
        HealthReporter,
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(smesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Ok((reporter, health, reflection))
}

/// The listener as a stream of connections for `serve_with_incoming_shutdown`,
/// within the default [`DoorLimits`] (see [`crate::accept`]), with Nagle's
/// algorithm off on every accepted socket: small frames (a Welcome, an ack,
/// a pong) otherwise wait ~40 ms for a delayed ACK. (`Server::tcp_nodelay`
/// only applies to listeners tonic binds itself.) With `tls`, every
/// connection is mutual TLS (see [`crate::tls`]).
pub fn incoming(
    listener: TcpListener,
    tls: Option<&NodeTls>,
) -> ReceiverStream<std::io::Result<Admitted>> {
    incoming_through(
        listener,
        tls.map(|tls| (tls.clone(), PeerCertificates::Required)),
    )
}

/// [`incoming`] with the peers' certificates required or optional
/// ([`PeerCertificates`]); `None`: plaintext.
pub fn incoming_through(
    listener: TcpListener,
    tls: Option<(NodeTls, PeerCertificates)>,
) -> ReceiverStream<std::io::Result<Admitted>> {
    admit(listener, DoorLimits::default(), tls)
}

/// An endpoint to a peer, with timeouts so a dead peer fails fast. With
/// `tls` the peer is dialed through TLS (an `http://` URI becomes
/// `https://`), the handshake bounded by `connect_timeout` as well.
pub fn endpoint(
    uri: &str,
    connect_timeout: Duration,
    tls: Option<&ClientTlsConfig>,
) -> Result<Endpoint, tonic::transport::Error> {
    let uri = match (tls, uri.strip_prefix("http://")) {
        (Some(_), Some(rest)) => format!("https://{rest}"),
        _ => uri.to_string(),
    };
    let endpoint = Endpoint::from_shared(uri)?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    match tls {
        Some(tls) => endpoint.tls_config(tls.clone().timeout(connect_timeout)),
        None => Ok(endpoint),
    }
}

/// Connects to a peer now (not lazily), so that failover sees failures at once.
pub async fn connect(
    uri: &str,
    connect_timeout: Duration,
    tls: Option<&ClientTlsConfig>,
) -> Result<Channel, tonic::transport::Error> {
    endpoint(uri, connect_timeout, tls)?.connect().await
}

/// Connects to `peer` now: in plaintext without `tls`, else through mutual
/// TLS with the certificates of the moment, refusing a peer whose
/// certificate does not name `smesh://<tier>/<peer id>` for one of
/// `upstream` (see [`NodeTls::dial`]).
pub async fn connect_peer(
    peer: &Peer,
    connect_timeout: Duration,
    tls: Option<&NodeTls>,
    upstream: &'static [Tier],
) -> Result<Channel, tonic::transport::Error> {
    let Some(tls) = tls else {
        return connect(&peer.uri(), connect_timeout, None).await;
    };
    let (tls, target) = (tls.clone(), peer.clone());
    // TLS is done by the connector, so the endpoint itself stays `http://`.
    endpoint(&peer.uri(), connect_timeout, None)?
        .connect_with_connector(tower::service_fn(move |_: tonic::codegen::http::Uri| {
            let (tls, target) = (tls.clone(), target.clone());
            async move {
                tls.dial(&target, upstream, connect_timeout)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
}

/// An error with the errors under it, `outer: inner: innermost`: tonic's
/// transport errors say only "transport error" at the top, and the reason
/// (refused, a certificate refused, plaintext met TLS) is below.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let line = inner.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = inner.source();
    }
    text
}

/// Keeps `grpc.health.v1` (the mesh service and the server as a whole) in
/// step with `state`: SERVING while `ready(state)`, NOT_SERVING otherwise
/// and after `shutdown`.
pub async fn follow_readiness<T>(
    health: HealthReporter,
    mut state: watch::Receiver<T>,
    ready: impl Fn(&T) -> bool,
    shutdown: CancellationToken,
) {
    let set = |status| {
        let health = health.clone();
        async move {
            health
                .set_service_status(smesh_proto::MESH_SERVICE, status)
                .await;
            health.set_service_status("", status).await;
        }
    };
    loop {
        let status = if ready(&state.borrow_and_update()) {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        set(status).await;
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = state.changed() => if changed.is_err() { break },
        }
    }
    set(ServingStatus::NotServing).await;
}

/// Serves the data plane (`mesh`) beside health and reflection on
/// `listener` (through mutual TLS with `tls`) until `shutdown`, then waits
/// for open streams to end.
pub async fn serve_mesh<S: Mesh>(
    mesh: S,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    reflection: tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    listener: TcpListener,
    tls: Option<&NodeTls>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    server()
        .add_service(health)
        .add_service(reflection)
        .add_service(
            MeshServer::new(mesh)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(incoming(listener, tls), shutdown.cancelled_owned())
        .await
}

/// Serves `health` alone, in plaintext, on `listener` until `shutdown`: the
/// `--health-listen` door for probes that cannot speak mutual TLS (the
/// kubelet's). Pass a clone of the node's own health service, so both doors
/// answer the same. Connections pass the default [`DoorLimits`].
pub async fn serve_health(
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    let served = server()
        .add_service(health)
        .serve_with_incoming_shutdown(incoming(listener, None), shutdown.cancelled_owned())
        .await;
    if let Err(err) = served {
        tracing::warn!(error = %error_chain(&err), "health door stopped");
    }
}
