//! Mutual TLS on every link, and the identities certificates carry.
//!
//! Every node is given three PEM files ([`TlsFiles`]): its certificate
//! chain, its private key and the operator's CA bundle. From them
//! [`NodeTls::load`] makes both ends of a link:
//!
//! - the accepting end ([`NodeTls::acceptor`]), used by
//!   [`crate::accept::admit`] on connections it admitted: a client
//!   certificate signed by the CA is required, and the handshake has a
//!   deadline ([`crate::accept::DoorLimits::handshake_within`]);
//! - the dialing end ([`NodeTls::dial`]), used by
//!   [`crate::grpc::connect_peer`]: the server's certificate must be signed
//!   by the CA, name the host dialed (a DNS or IP SAN, as on the web) and
//!   name the id the peer list gives the peer, and this node presents its
//!   own certificate. ([`NodeTls::client_config`] is the same for tonic's
//!   own TLS, without the id: the console's.)
//!
//! rustls does the work, with the `ring` provider (no OpenSSL at run time).
//!
//! # Rotation
//!
//! A [`NodeTls`] holds the certificates of the moment; [`NodeTls::keep_fresh`]
//! reloads them when the files change. Each connection takes the
//! certificates in use when it is opened or accepted, so open streams are
//! never dropped for a reload.
//!
//! # Identities
//!
//! A certificate says who its holder is with a URI SAN
//! `smesh://<tier>/<id>` ([`PeerIdentity`]), e.g. `smesh://client/c1`,
//! `smesh://sidecar/edge-7`, `smesh://master/m1`,
//! `smesh://console/ops`: the tier is bound as well as the id, so a device
//! certificate cannot be used to say Hello as a sidecar. The accepting end
//! of a stream ([`crate::session`]) accepts a Hello only for an identity the
//! peer's certificate names.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use smesh_proto::mesh::NodeKind;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tracing::{info, warn};
use x509_parser::extensions::GeneralName;

use crate::peers::Peer;
use crate::ratelimit::LogEvery;

/// The URI scheme of identities in certificates.
pub const IDENTITY_SCHEME: &str = "smesh";

/// The protocol both ends agree on in the TLS handshake (ALPN).
const ALPN_H2: &[u8] = b"h2";

/// What a certificate may be issued to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// A device at the edge.
    Client,
    /// A sidecar (accepts clients, dials masters).
    Sidecar,
    /// A master (accepts sidecars and the console).
    Master,
    /// An operator's console (dials masters' admin API).
    Console,
}

impl Tier {
    /// Every tier, in the order of the data path.
    pub const ALL: [Tier; 4] = [Tier::Client, Tier::Sidecar, Tier::Master, Tier::Console];

    /// The tier's name in identities and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Client => "client",
            Tier::Sidecar => "sidecar",
            Tier::Master => "master",
            Tier::Console => "console",
        }
    }

    /// The tier a Hello's `kind` claims (`None` for an unspecified kind).
    pub fn of(kind: NodeKind) -> Option<Tier> {
        match kind {
            NodeKind::Client => Some(Tier::Client),
            NodeKind::Sidecar => Some(Tier::Sidecar),
            NodeKind::Master => Some(Tier::Master),
            NodeKind::Unspecified => None,
        }
    }

    /// The tiers a node of this tier dials: a client its sidecars (or a
    /// master directly), a sidecar its masters, a console the masters'
    /// admin API; a master dials none.
    pub fn upstream(self) -> &'static [Tier] {
        match self {
            Tier::Client => &[Tier::Sidecar, Tier::Master],
            Tier::Sidecar | Tier::Console => &[Tier::Master],
            Tier::Master => &[],
        }
    }

    /// The tier named `name` (`client`, `sidecar`, `master`, `console`).
    pub fn parse(name: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a certificate says its holder is: a tier and an id, written in the
/// certificate as the URI SAN `smesh://<tier>/<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    /// The tier the holder may speak as.
    pub tier: Tier,
    /// The id the holder may use in its Hello.
    pub id: String,
}

impl PeerIdentity {
    /// The identity of `id` in `tier`.
    pub fn new(tier: Tier, id: impl Into<String>) -> Self {
        Self {
            tier,
            id: id.into(),
        }
    }

    /// The URI SAN that names this identity.
    pub fn uri(&self) -> String {
        format!("{IDENTITY_SCHEME}://{}/{}", self.tier, self.id)
    }

    /// The identity a URI SAN names, if it is a valid smesh identity.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix(IDENTITY_SCHEME)?.strip_prefix("://")?;
        let (tier, id) = rest.split_once('/')?;
        if crate::ids::id_problem(id).is_some() {
            return None;
        }
        Some(Self::new(Tier::parse(tier)?, id))
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{IDENTITY_SCHEME}://{}/{}", self.tier, self.id)
    }
}

/// The identities a certificate (DER) names in its URI SANs; empty when it
/// names none or cannot be parsed.
pub fn identities_of(certificate: &[u8]) -> Vec<PeerIdentity> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate) else {
        return Vec::new();
    };
    let Ok(Some(names)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => PeerIdentity::from_uri(uri),
            _ => None,
        })
        .collect()
}

/// Where a node's certificate, key and CA bundle are (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The node's certificate, followed by any intermediates.
    pub cert: PathBuf,
    /// The node's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificates peers' certificates must be signed by.
    pub ca: PathBuf,
}

/// Why TLS could not be set up from the files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        /// Which of the files.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file was read but does not hold what it should.
    #[error("the {what} {path} {problem}")]
    Invalid {
        /// Which of the files.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The certificate and key cannot be used together.
    #[error("cannot use the certificate {cert} with the key {key}: {reason}")]
    Pair {
        /// The certificate's path.
        cert: PathBuf,
        /// The key's path.
        key: PathBuf,
        /// rustls's or tonic's reason.
        reason: String,
    },
}

/// Whether a server's peers must present a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerCertificates {
    /// Every peer must (the data plane).
    Required,
    /// A peer may come without one and prove itself otherwise (the admin
    /// API's bearer token); one that is presented must still be signed by
    /// the CA, and a connection without one has no identity
    /// ([`crate::accept::ConnectionInfo`]'s `certified` is empty).
    Optional,
}

/// How often a node looks at its certificate files for a change.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// How long before its certificate expires a node starts warning (once a
/// day), and `smesh-console check` by default.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Both ends of mutual TLS for one node, from its files, kept fresh.
///
/// Cloning is cheap and every clone sees the same certificates: once
/// [`NodeTls::keep_fresh`] runs, a change of the files (a rotated
/// certificate, a new CA bundle) is taken by every connection opened or
/// accepted after it, while open connections go on undisturbed.
#[derive(Clone)]
pub struct NodeTls {
    files: TlsFiles,
    current: Arc<watch::Sender<Arc<Loaded>>>,
}

/// One reading of the three files, and what was made of it.
struct Loaded {
    /// The files' bytes (certificate, key, CA bundle), to see a change.
    contents: [Vec<u8>; 3],
    server: Arc<ServerConfig>,
    /// The same, but a peer may also come without a certificate (it must
    /// then prove itself otherwise: the admin API's bearer token).
    server_certificate_optional: Arc<ServerConfig>,
    dialer: Arc<ClientConfig>,
    client: ClientTlsConfig,
    identities: Vec<PeerIdentity>,
    not_after: Option<SystemTime>,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current.borrow();
        f.debug_struct("NodeTls")
            .field("files", &self.files)
            .field("identities", &current.identities)
            .field("not_after", &current.not_after)
            .finish_non_exhaustive()
    }
}

impl NodeTls {
    /// Reads and checks the three files: the certificate chain, the key that
    /// goes with it, and at least one CA certificate.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let contents = [
            read("certificate", &files.cert)?,
            read("key", &files.key)?,
            read("CA bundle", &files.ca)?,
        ];
        let loaded = Loaded::make(files, contents)?;
        Ok(Self {
            files: files.clone(),
            current: Arc::new(watch::channel(Arc::new(loaded)).0),
        })
    }

    fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.borrow())
    }

    /// The accepting end: requires a client certificate from the CA.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor_with(PeerCertificates::Required)
    }

    /// The accepting end, with or without a client certificate required.
    pub fn acceptor_with(&self, peers: PeerCertificates) -> TlsAcceptor {
        let current = self.current();
        TlsAcceptor::from(Arc::clone(match peers {
            PeerCertificates::Required => &current.server,
            PeerCertificates::Optional => &current.server_certificate_optional,
        }))
    }

    /// The dialing end as tonic takes it: verifies the server against the CA
    /// and the host dialed, and presents this node's certificate. (Links
    /// between nodes use [`NodeTls::dial`], which also checks the server's
    /// identity.)
    pub fn client_config(&self) -> ClientTlsConfig {
        self.current().client.clone()
    }

    /// Opens a TLS connection to `peer` within `within` (to its resolved
    /// address if it has one, else to its host): its certificate must be
    /// signed by the CA, name the peer's host (a DNS or IP SAN) and name
    /// the identity the peer list gives it, `smesh://<tier>/<peer id>` for
    /// one of `tiers`; this node presents its own certificate.
    pub async fn dial(
        &self,
        peer: &Peer,
        tiers: &[Tier],
        within: Duration,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let loaded = self.current();
        let name = ServerName::try_from(peer.host.clone()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not a host name or IP address TLS can verify",
                    peer.host
                ),
            )
        })?;
        let connector = TlsConnector::from(Arc::clone(&loaded.dialer));
        let connecting = async {
            // A row's name that resolved to several addresses is dialed at
            // the address; the certificate is still checked against the
            // name (and the row's id, below).
            let tcp = match peer.resolved {
                Some(address) => TcpStream::connect(address).await?,
                None => TcpStream::connect((peer.host.as_str(), peer.port)).await?,
            };
            tcp.set_nodelay(true)?;
            connector.connect(name, tcp).await
        };
        let stream = tokio::time::timeout(within, connecting)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no TLS connection within {within:?}"),
                )
            })??;
        let presented = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| identities_of(leaf))
            .unwrap_or_default();
        let expected: Vec<PeerIdentity> = tiers
            .iter()
            .map(|tier| PeerIdentity::new(*tier, peer.id.clone()))
            .collect();
        if expected.iter().any(|identity| presented.contains(identity)) {
            return Ok(stream);
        }
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the certificate of {peer} is for {}, not {}: the id in the peer list and the peer's certificate must agree",
                names(&presented),
                expected
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ))
    }

    /// The identities this node's own certificate names.
    pub fn identities(&self) -> Vec<PeerIdentity> {
        self.current().identities.clone()
    }

    /// When this node's own certificate expires (`None` if it cannot be
    /// read from the certificate).
    pub fn not_after(&self) -> Option<SystemTime> {
        self.current().not_after
    }

    /// Refuses a certificate that does not name `identity`: peers would
    /// refuse every stream this node opens, so it should not start.
    pub fn check_names(&self, identity: &PeerIdentity) -> Result<(), String> {
        names_identity(&self.current().identities, identity)
    }

    /// Keeps the certificates fresh until `shutdown`: looks at the files
    /// every [`RELOAD_POLL`] and, when their bytes changed, loads them for
    /// every connection opened from then on. A change that cannot be used
    /// (a key that does not match its certificate, e.g. half-way through an
    /// update, or a certificate that does not name `own`) is reported, at
    /// most every 10 s, and the certificates in use are kept. Warns once a
    /// day from [`EXPIRY_WARNING`] before the certificate expires.
    pub async fn keep_fresh(self, own: Option<PeerIdentity>, shutdown: CancellationToken) {
        let mut refusals = LogEvery::default();
        let mut expiry = LogEvery::new(Duration::from_secs(24 * 3600));
        let mut interval = tokio::time::interval(RELOAD_POLL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            match self.reload(own.as_ref()).await {
                Ok(false) => {}
                Ok(true) => {
                    let current = self.current();
                    info!(
                        cert = %self.files.cert.display(),
                        identities = %names(&current.identities),
                        not_after = %current.not_after.map(when).unwrap_or_default(),
                        "TLS certificates reloaded; new connections use them, open ones go on"
                    );
                    expiry = LogEvery::new(Duration::from_secs(24 * 3600));
                }
                Err(problem) => {
                    if let Some(unlogged) = refusals.tick() {
                        warn!(%problem, also_since_last_log = unlogged, "TLS files changed but cannot be used; keeping the certificates in use");
                    }
                }
            }
            if let Some(problem) =
                expiry_problem(self.not_after(), SystemTime::now(), EXPIRY_WARNING)
                && expiry.tick().is_some()
            {
                warn!(cert = %self.files.cert.display(), %problem, "renew this node's certificate");
            }
        }
    }

    /// Loads the files if their bytes changed: `Ok(true)` when new
    /// certificates are in use.
    async fn reload(&self, own: Option<&PeerIdentity>) -> Result<bool, String> {
        let read = |what: &'static str, path: PathBuf| async move {
            tokio::fs::read(&path)
                .await
                .map_err(|source| TlsError::Read { what, path, source })
        };
        let contents = [
            read("certificate", self.files.cert.clone()).await,
            read("key", self.files.key.clone()).await,
            read("CA bundle", self.files.ca.clone()).await,
        ];
        let [Ok(cert), Ok(key), Ok(ca)] = contents else {
            let errors = contents.into_iter().filter_map(Result::err);
            return Err(errors
                .map(|err| err.to_string())
                .collect::<Vec<_>>()
                .join("; "));
        };
        let contents = [cert, key, ca];
        if contents == self.current.borrow().contents {
            return Ok(false);
        }
        let loaded = Loaded::make(&self.files, contents).map_err(|err| err.to_string())?;
        if let Some(own) = own {
            names_identity(&loaded.identities, own)?;
        }
        self.current.send_replace(Arc::new(loaded));
        Ok(true)
    }
}

impl Loaded {
    fn make(files: &TlsFiles, contents: [Vec<u8>; 3]) -> Result<Self, TlsError> {
        let [cert_pem, key_pem, ca_pem] = &contents;
        let chain = certificates("certificate", &files.cert, cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| TlsError::Invalid {
            what: "key",
            path: files.key.clone(),
            problem: format!("holds no usable PEM private key ({err})"),
        })?;
        let mut roots = RootCertStore::empty();
        for ca in certificates("CA bundle", &files.ca, ca_pem)? {
            roots.add(ca).map_err(|err| TlsError::Invalid {
                what: "CA bundle",
                path: files.ca.clone(),
                problem: format!("holds a certificate that cannot be a trust anchor: {err}"),
            })?;
        }
        let roots = Arc::new(roots);
        let pair = |reason: String| TlsError::Pair {
            cert: files.cert.clone(),
            key: files.key.clone(),
            reason,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier_error = |err: rustls::server::VerifierBuilderError| TlsError::Invalid {
            what: "CA bundle",
            path: files.ca.clone(),
            problem: format!("cannot verify peers: {err}"),
        };
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(verifier_error)?;
        let optional_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .allow_unauthenticated()
                .build()
                .map_err(verifier_error)?;
        let leaf = chain.first();
        let identities = leaf.map(|leaf| identities_of(leaf)).unwrap_or_default();
        let not_after = leaf.and_then(|leaf| not_after_of(leaf));
        let server_with = |verifier| {
            let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .map_err(|err| pair(err.to_string()))?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|err| pair(err.to_string()))?;
            server.alpn_protocols = vec![ALPN_H2.to_vec()];
            Ok::<_, TlsError>(Arc::new(server))
        };
        let server = server_with(verifier)?;
        let server_certificate_optional = server_with(optional_verifier)?;
        let mut dialer = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| pair(err.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|err| pair(err.to_string()))?;
        dialer.alpn_protocols = vec![ALPN_H2.to_vec()];
        let client = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .identity(Identity::from_pem(cert_pem, key_pem));
        // tonic checks its configuration only when an endpoint takes it:
        // check it now, before any port is bound.
        tonic::transport::Endpoint::from_static("https://localhost")
            .tls_config(client.clone())
            .map_err(|err| pair(crate::grpc::error_chain(&err)))?;
        Ok(Self {
            contents,
            server,
            server_certificate_optional,
            dialer: Arc::new(dialer),
            client,
            identities,
            not_after,
        })
    }
}

fn names_identity(identities: &[PeerIdentity], identity: &PeerIdentity) -> Result<(), String> {
    if identities.contains(identity) {
        return Ok(());
    }
    Err(format!(
        "the certificate given with --tls-cert is not for {identity} (it names {}): issue one for this node, e.g. `smesh-console certs issue --tier {} --id {}`",
        names(identities),
        identity.tier,
        identity.id
    ))
}

/// A moment as RFC 3339, for messages.
fn when(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// When a certificate (DER) expires, if it can be parsed.
pub fn not_after_of(certificate: &[u8]) -> Option<SystemTime> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let seconds = u64::try_from(parsed.validity().not_after.timestamp()).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// What to say of a certificate that expires at `not_after`, seen at `now`:
/// `None` while it has more than `warn_within` to live.
pub fn expiry_problem(
    not_after: Option<SystemTime>,
    now: SystemTime,
    warn_within: Duration,
) -> Option<String> {
    let not_after = not_after?;
    match not_after.duration_since(now) {
        Err(_) => Some(format!("the certificate expired at {}", when(not_after))),
        Ok(left) if left <= warn_within => Some(format!(
            "the certificate expires in {} days, at {}",
            left.as_secs() / (24 * 3600),
            when(not_after)
        )),
        Ok(_) => None,
    }
}

/// Identities for a message: `smesh://client/c1, smesh://client/c2`, or
/// `no smesh identity` when there are none.
pub fn names(identities: &[PeerIdentity]) -> String {
    if identities.is_empty() {
        return "no smesh identity (no URI SAN smesh://<tier>/<id>)".to_string();
    }
    identities
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |problem: String| TlsError::Invalid {
        what,
        path: path.to_path_buf(),
        problem,
    };
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| invalid(format!("is not valid PEM ({err})")))?;
    if certificates.is_empty() {
        return Err(invalid("holds no PEM certificate".to_string()));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use super::*;

    #[test]
    fn identities_are_uri_sans_with_tier_and_id() {
        let identity = PeerIdentity::new(Tier::Sidecar, "edge-7");
        assert_eq!(identity.uri(), "smesh://sidecar/edge-7");
        assert_eq!(PeerIdentity::from_uri(&identity.uri()), Some(identity));
        for bad in [
            "smesh://device/c1",
            "smesh://client/",
            "smesh://client/a b",
            "https://client/c1",
            "smesh:/client/c1",
        ] {
            assert_eq!(PeerIdentity::from_uri(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_certificate_names_its_identities() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "smesh://client/c1".try_into().expect("uri"),
        ));
        params.subject_alt_names.push(rcgen::SanType::URI(
            "https://example.org/".try_into().expect("uri"),
        ));
        let cert = params.self_signed(&key).expect("certificate");
        assert_eq!(
            identities_of(cert.der()),
            vec![PeerIdentity::new(Tier::Client, "c1")]
        );
        assert!(identities_of(b"not a certificate").is_empty());
    }

    /// Writes `issued` as the node's certificate and key in `files`.
    fn write(files: &TlsFiles, issued: &crate::pki::Issued) {
        std::fs::write(&files.key, &issued.key_pem).expect("write key");
        std::fs::write(&files.cert, &issued.cert_pem).expect("write cert");
    }

    #[tokio::test]
    async fn changed_files_are_taken_only_when_they_can_be_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (from, until) = crate::pki::validity(1);
        let ca = crate::pki::Ca::new("test", from, until).expect("CA");
        let issue = |id: &str| {
            ca.issue(
                &PeerIdentity::new(Tier::Sidecar, id),
                &["127.0.0.1".to_string()],
                from,
                until,
            )
            .expect("issue")
        };
        let files = TlsFiles {
            cert: dir.path().join("node.pem"),
            key: dir.path().join("node.key"),
            ca: dir.path().join("ca.pem"),
        };
        std::fs::write(&files.ca, &ca.issued.cert_pem).expect("write CA");
        write(&files, &issue("s1"));
        let tls = NodeTls::load(&files).expect("loads");
        let own = PeerIdentity::new(Tier::Sidecar, "s1");
        assert_eq!(tls.reload(Some(&own)).await, Ok(false), "nothing changed");

        // Half-way through an update: a new key beside the old certificate.
        let renewed = issue("s1");
        std::fs::write(&files.key, &renewed.key_pem).expect("write key");
        let half = tls
            .reload(Some(&own))
            .await
            .expect_err("a key without its certificate");
        assert!(half.contains("cannot use the certificate"), "{half}");
        assert_eq!(
            tls.identities(),
            std::slice::from_ref(&own),
            "the old pair stays"
        );
        // And done: the new pair is taken, by every clone.
        let clone = tls.clone();
        std::fs::write(&files.cert, &renewed.cert_pem).expect("write cert");
        assert_eq!(tls.reload(Some(&own)).await, Ok(true));
        assert_eq!(
            clone.current().contents[0],
            renewed.cert_pem.as_bytes(),
            "clones see the reload"
        );

        // A certificate for another node is not taken.
        write(&files, &issue("s2"));
        let other = tls.reload(Some(&own)).await.expect_err("another id");
        assert!(other.contains("not for smesh://sidecar/s1"), "{other}");
        assert_eq!(tls.identities(), [own]);
        // A file that went missing keeps what is in use, too.
        std::fs::remove_file(&files.key).expect("remove key");
        let gone = tls.reload(None).await.expect_err("no key");
        assert!(gone.contains("cannot read the key"), "{gone}");
    }

    #[test]
    fn expiry_is_reported_within_the_warning_period_and_after() {
        let day = Duration::from_secs(24 * 3600);
        let now = SystemTime::UNIX_EPOCH + 1000 * day;
        let warn = 14 * day;
        assert_eq!(expiry_problem(None, now, warn), None);
        assert_eq!(expiry_problem(Some(now + 30 * day), now, warn), None);
        let soon = expiry_problem(Some(now + 3 * day + Duration::from_secs(60)), now, warn)
            .expect("within the period");
        assert!(
            soon.starts_with("the certificate expires in 3 days"),
            "{soon}"
        );
        let past = expiry_problem(Some(now - day), now, warn).expect("expired");
        assert!(past.starts_with("the certificate expired at"), "{past}");
    }
}
