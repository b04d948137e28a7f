//! gRPC plumbing shared by every node: server and channel settings, and the
//! `grpc.health.v1` and reflection services each server carries.

use std::time::Duration;

use smesh_proto::mesh::downlink::Frame as Down;
use smesh_proto::mesh::mesh_server::{Mesh, MeshServer};
use smesh_proto::mesh::uplink::Frame as Up;
use smesh_proto::mesh::{Downlink, Hello, Uplink, Welcome};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Status, Streaming};
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

/// The health service (all services start NOT_SERVING until the node says
/// otherwise) and the reflection service describing smesh's protocol.
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
/// with Nagle's algorithm off on every accepted socket: small frames (a
/// Welcome, an ack, a pong) otherwise wait ~40 ms for a delayed ACK.
/// (`Server::tcp_nodelay` only applies to listeners tonic binds itself.)
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(30)))
}

/// An endpoint to a peer, with timeouts so a dead peer fails fast.
pub fn endpoint(uri: &str, connect_timeout: Duration) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri.to_string())?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

/// Connects to a peer now (not lazily), so that failover sees failures at once.
pub async fn connect(
    uri: &str,
    connect_timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    endpoint(uri, connect_timeout)?.connect().await
}

/// The accepting side's first step on a data-plane stream: the Hello.
pub async fn read_hello(
    inbound: &mut Streaming<Uplink>,
    timeout: Duration,
) -> Result<Hello, Status> {
    let first = tokio::time::timeout(timeout, inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no Hello within the hello timeout"))??;
    match first.and_then(|u| u.frame) {
        Some(Up::Hello(hello)) if !hello.node_id.is_empty() => Ok(hello),
        Some(Up::Hello(_)) => Err(Status::invalid_argument("Hello without a node id")),
        _ => Err(Status::invalid_argument(
            "the first frame of a stream must be Hello",
        )),
    }
}

/// A downlink frame.
pub fn down(frame: Down) -> Downlink {
    Downlink { frame: Some(frame) }
}

/// The peer's address of a request, for logs and the console.
pub fn remote_address<T>(request: &tonic::Request<T>) -> String {
    request
        .remote_addr()
        .map_or_else(|| "unknown".to_string(), |a| a.to_string())
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

/// Frames to a downstream peer, as a server stream hands them to tonic.
pub type DownlinkStream = ReceiverStream<Result<Downlink, Status>>;

/// A downstream peer that said Hello and was welcomed.
#[derive(Debug)]
pub struct Accepted {
    pub hello: Hello,
    /// The peer's address, for logs and the console.
    pub address: String,
    pub inbound: Streaming<Uplink>,
    /// Frames to the peer; the response stream ends when this is dropped.
    pub out: mpsc::Sender<Result<Downlink, Status>>,
}

/// Frames queued towards a downstream peer before its session waits.
const DOWNLINK_FRAMES: usize = 64;

/// The start of every data-plane stream on the accepting side: read the
/// Hello (within `hello_timeout`) and answer with `welcome`. Returns the
/// session's ends and the response stream to give back to tonic.
pub async fn accept_stream(
    request: Request<Streaming<Uplink>>,
    hello_timeout: Duration,
    welcome: Welcome,
) -> Result<(Accepted, DownlinkStream), Status> {
    let address = remote_address(&request);
    let mut inbound = request.into_inner();
    let hello = read_hello(&mut inbound, hello_timeout).await?;
    let (out, rx) = mpsc::channel(DOWNLINK_FRAMES);
    out.send(Ok(down(Down::Welcome(welcome))))
        .await
        .map_err(|_| Status::cancelled("peer went away"))?;
    Ok((
        Accepted {
            hello,
            address,
            inbound,
            out,
        },
        ReceiverStream::new(rx),
    ))
}

/// Serves the data plane (`mesh`) beside health and reflection on
/// `listener` until `shutdown`, then waits for open streams to end.
pub async fn serve_mesh<S: Mesh>(
    mesh: S,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    reflection: tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    listener: TcpListener,
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
        .serve_with_incoming_shutdown(incoming(listener), shutdown.cancelled_owned())
        .await
}
