//! The door of every server: accepted connections, bounded.
//!
//! A peer that opens sockets and never speaks must not exhaust a node's
//! file descriptors, and an accept error (out of descriptors) must not spin
//! the accept loop. So, before tonic sees a connection:
//! - at most [`DoorLimits::max_connections`] are open at once, and at most
//!   [`DoorLimits::max_per_address`] from one IP address; connections
//!   beyond are closed at once;
//! - a connection that sends nothing within
//!   [`DoorLimits::first_bytes_within`] is closed (what comes after the
//!   first bytes has its own deadlines: the HTTP/2 keepalive, the Hello);
//! - accept errors back off (10 ms doubling to 1 s);
//! - with TLS, the handshake runs here, on the admitted connection and
//!   within [`DoorLimits::handshake_within`]; a peer whose certificate is
//!   refused, or that speaks plaintext, is closed with a warning naming
//!   why. The identities its certificate names travel with the connection
//!   ([`ConnectionInfo`]) to the session that reads its Hello.
//!
//! Each refusal is a warning at most every 10 s, with the count left out.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::ratelimit::LogEvery;
use crate::tls::{NodeTls, PeerCertificates, PeerIdentity, identities_of, not_after_of};

/// The first byte of a TLS connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The bounds of a server's door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoorLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_per_address: usize,
    /// How long a new connection may stay silent.
    pub first_bytes_within: Duration,
    /// How long the TLS handshake may take, from the first bytes.
    pub handshake_within: Duration,
}

impl Default for DoorLimits {
    /// 4096 connections, 1024 from one address (sidecars and NATed sites
    /// bring many), 10 s to say something, 10 s more for the TLS handshake.
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_per_address: 1024,
            first_bytes_within: Duration::from_secs(10),
            handshake_within: Duration::from_secs(10),
        }
    }
}

/// What a server knows about a connection: handed to tonic as its connect
/// info, so a service finds it in each request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub remote: SocketAddr,
    /// `None` for a plaintext connection; with TLS, the identities the
    /// peer's certificate (verified against the CA) names.
    pub certified: Option<Arc<[PeerIdentity]>>,
    /// With TLS, when the peer's certificate expires (shown to operators).
    pub certified_until: Option<std::time::SystemTime>,
}

impl ConnectionInfo {
    /// The connection info of a request, if it came through [`admit`].
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&ConnectionInfo> {
        request.extensions().get::<ConnectionInfo>()
    }
}

/// An accepted connection that holds its place in the limits until dropped.
#[derive(Debug)]
pub struct Admitted {
    stream: Io,
    info: ConnectionInfo,
    _slot: OwnedSemaphorePermit,
    _address: AddressSlot,
}

/// The bytes of a connection: as they come, or through TLS.
#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One connection's count against its IP address.
#[derive(Debug)]
struct AddressSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl AddressSlot {
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<Self> {
        let mut map = match counts.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let count = map.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Self {
            counts: Arc::clone(counts),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = match self.counts.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Connected for Admitted {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Io::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Io::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.stream {
            Io::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Io::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Io::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Io::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Io::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Io::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.stream {
            Io::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Io::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Io::Plain(stream) => stream.is_write_vectored(),
            Io::Tls(stream) => stream.is_write_vectored(),
        }
    }
}

/// The listener's connections within `limits`, as a stream for tonic's
/// `serve_with_incoming_shutdown`, through TLS when `tls` is given. The
/// accept loop ends when the stream is dropped.
pub fn admit(
    listener: TcpListener,
    limits: DoorLimits,
    tls: Option<(NodeTls, PeerCertificates)>,
) -> ReceiverStream<io::Result<Admitted>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, limits, tls, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    limits: DoorLimits,
    tls: Option<(NodeTls, PeerCertificates)>,
    admitted: mpsc::Sender<io::Result<Admitted>>,
) {
    let refusals_logs: RefusalLogs =
        Arc::new(Mutex::new(std::array::from_fn(|_| LogEvery::default())));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(Mutex::new(HashMap::new()));
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    let mut accept_errors = LogEvery::default();
    let mut refusals = LogEvery::default();
    loop {
        let (stream, peer) = tokio::select! {
            () = admitted.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff.reset();
                    accepted
                }
                Err(err) => {
                    let pause = backoff.next_delay();
                    if let Some(unlogged) = accept_errors.tick() {
                        warn!(%err, also_since_last_log = unlogged, ?pause, "cannot accept connections (out of file descriptors?); backing off");
                    }
                    tokio::time::sleep(pause).await;
                    continue;
                }
            },
        };
        let refuse = |why: &str, refusals: &mut LogEvery| {
            if let Some(unlogged) = refusals.tick() {
                warn!(address = %peer, why, also_since_last_log = unlogged, "connection refused at the door");
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refuse("the connection limit is reached", &mut refusals);
            continue;
        };
        let Some(address) = AddressSlot::take(&per_address, peer.ip(), limits.max_per_address)
        else {
            refuse(
                "the limit of connections from one address is reached",
                &mut refusals,
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let admitted = admitted.clone();
        // The certificates of the moment: a reload applies from the next
        // connection on.
        let tls = tls.as_ref().map(|(tls, peers)| tls.acceptor_with(*peers));
        let refusal_logs = Arc::clone(&refusals_logs);
        tokio::spawn(async move {
            let Some(first) = speaks_within(&stream, limits.first_bytes_within, peer).await else {
                return;
            };
            let (stream, certified, certified_until) = match tls {
                None => (Io::Plain(stream), None, None),
                Some(tls) => match handshake(tls, stream, first, limits.handshake_within).await {
                    Ok((stream, identities, until)) => {
                        (Io::Tls(Box::new(stream)), Some(identities), until)
                    }
                    Err((refusal, detail)) => {
                        log_refusal(&refusal_logs, peer, refusal, &detail);
                        return;
                    }
                },
            };
            let _ = admitted
                .send(Ok(Admitted {
                    stream,
                    info: ConnectionInfo {
                        remote: peer,
                        certified,
                        certified_until,
                    },
                    _slot: slot,
                    _address: address,
                }))
                .await;
        });
    }
}

/// The peer's first byte, if it sends one in time (it stays unread).
async fn speaks_within(stream: &TcpStream, within: Duration, peer: SocketAddr) -> Option<u8> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(within, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => Some(first[0]),
        Ok(_) => None,
        Err(_) => {
            debug!(%peer, ?within, "closing a connection that said nothing");
            None
        }
    }
}

/// Why a TLS handshake was refused. Each reason is logged at its own
/// rate, so a flood of one (port scanners speaking plaintext) does not hide
/// another (certificates that expired).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Plaintext,
    UnknownCa,
    Validity,
    NoCertificate,
    Timeout,
    Other,
}

impl Refusal {
    const COUNT: usize = 6;

    /// What an operator can do about it.
    fn hint(self) -> &'static str {
        match self {
            Refusal::Plaintext => {
                "the peer speaks plaintext to a TLS listener (give it --tls-cert, --tls-key and --tls-ca)"
            }
            Refusal::UnknownCa => "the peer's certificate is not signed by this node's --tls-ca",
            Refusal::Validity => "the peer's certificate is outside its validity period",
            Refusal::NoCertificate => {
                "the peer presented no certificate (give it --tls-cert and --tls-key)"
            }
            Refusal::Timeout => "the handshake did not finish in time",
            Refusal::Other => "the handshake failed",
        }
    }

    fn of(err: &io::Error) -> Self {
        use tokio_rustls::rustls::{CertificateError, Error};
        match err.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
            Some(Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            )) => Refusal::UnknownCa,
            Some(Error::InvalidCertificate(
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. },
            )) => Refusal::Validity,
            Some(Error::NoCertificatesPresented) => Refusal::NoCertificate,
            _ => Refusal::Other,
        }
    }
}

/// One log rate per [`Refusal`].
type RefusalLogs = Arc<Mutex<[LogEvery; Refusal::COUNT]>>;

/// Logs a refused handshake, at most once per 10 s for each reason.
fn log_refusal(logs: &RefusalLogs, peer: SocketAddr, refusal: Refusal, detail: &str) {
    let mut logs = match logs.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(unlogged) = logs[refusal as usize].tick() {
        warn!(address = %peer, why = refusal.hint(), error = detail, also_since_last_log = unlogged, "TLS handshake refused; connection closed");
    }
}

/// The server's side of the TLS handshake, within `within`; on success the
/// stream, the identities the peer's certificate names and when it expires.
async fn handshake(
    tls: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    first: u8,
    within: Duration,
) -> Result<Handshaken, (Refusal, String)> {
    if first != TLS_HANDSHAKE_RECORD {
        return Err((
            Refusal::Plaintext,
            format!("first byte {first:#04x}, not a TLS handshake"),
        ));
    }
    let stream = match tokio::time::timeout(within, tls.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Err((Refusal::of(&err), err.to_string())),
        Err(_) => return Err((Refusal::Timeout, format!("not done within {within:?}"))),
    };
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first());
    let identities = leaf.map(|leaf| identities_of(leaf)).unwrap_or_default();
    let until = leaf.and_then(|leaf| not_after_of(leaf));
    Ok((stream, identities.into(), until))
}

/// A finished handshake: the stream, the identities of the peer's
/// certificate and its expiry.
type Handshaken = (
    TlsStream<TcpStream>,
    Arc<[PeerIdentity]>,
    Option<std::time::SystemTime>,
);

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::panic)]

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    async fn door(limits: DoorLimits) -> (SocketAddr, ReceiverStream<io::Result<Admitted>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        (address, admit(listener, limits, None))
    }

    /// Whether the door closed `stream` (EOF or reset within a second).
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 8];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn silent_connections_are_closed_and_free_their_places() {
        let limits = DoorLimits {
            max_connections: 3,
            max_per_address: 3,
            first_bytes_within: Duration::from_millis(300),
            ..DoorLimits::default()
        };
        let (address, mut admitted) = door(limits).await;
        let mut silent = Vec::new();
        for _ in 0..3 {
            silent.push(TcpStream::connect(address).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Every place taken: the next one is closed at once, even speaking.
        let mut refused = TcpStream::connect(address).await.expect("connect");
        let _ = refused.write_all(b"PRI * HTTP/2.0").await;
        assert!(closed(&mut refused).await, "over the limit, closed");
        // The silent ones are closed after their time, and free their places.
        for stream in &mut silent {
            assert!(closed(stream).await, "silent, closed");
        }
        let mut speaking = TcpStream::connect(address).await.expect("connect");
        speaking.write_all(b"PRI * HTTP/2.0").await.expect("write");
        let got = tokio::time::timeout(Duration::from_secs(2), admitted.next())
            .await
            .expect("admitted in time")
            .expect("a connection")
            .expect("no error");
        assert_eq!(
            got.connect_info().remote,
            speaking.local_addr().expect("address")
        );
    }

    /// A node's TLS from a throw-away CA (rcgen), files in `dir`.
    fn node_tls(dir: &std::path::Path) -> crate::tls::NodeTls {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("certificate");
        let files = crate::tls::TlsFiles {
            cert: dir.join("node.pem"),
            key: dir.join("node.key"),
            ca: dir.join("ca.pem"),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write");
        std::fs::write(&files.key, key.serialize_pem()).expect("write");
        std::fs::write(&files.ca, ca_cert.pem()).expect("write");
        crate::tls::NodeTls::load(&files).expect("loads")
    }

    #[tokio::test]
    async fn a_tls_handshake_that_stalls_is_closed_at_its_deadline() {
        let dir = tempfile::tempdir().expect("dir");
        let tls = node_tls(dir.path());
        let limits = DoorLimits {
            handshake_within: Duration::from_millis(300),
            ..DoorLimits::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let _admitted = admit(listener, limits, Some((tls, PeerCertificates::Required)));
        // The first byte of a TLS record, then nothing.
        let mut stalled = TcpStream::connect(address).await.expect("connect");
        stalled
            .write_all(&[TLS_HANDSHAKE_RECORD])
            .await
            .expect("write");
        let started = std::time::Instant::now();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(3), stalled.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "closed, not left open: {read:?}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "not before its deadline"
        );
    }

    #[tokio::test]
    async fn one_address_cannot_take_every_place() {
        let limits = DoorLimits {
            max_connections: 10,
            max_per_address: 2,
            first_bytes_within: Duration::from_secs(5),
            ..DoorLimits::default()
        };
        let (address, mut admitted) = door(limits).await;
        let mut kept = Vec::new();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            stream.write_all(b"x").await.expect("write");
            let connection = admitted.next().await;
            kept.push((stream, connection));
        }
        let mut third = TcpStream::connect(address).await.expect("connect");
        let _ = third.write_all(b"x").await;
        assert!(closed(&mut third).await, "a third from 127.0.0.1 is closed");
    }
}
