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
//! - the dialing end ([`NodeTls::client_config`]), used by
//!   [`crate::grpc::connect`]: the server's certificate must be signed by the
//!   CA and name the host dialed (a DNS or IP SAN, as on the web), and this
//!   node presents its own certificate.
//!
//! rustls does the work, with the `ring` provider (no OpenSSL at run time).
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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use smesh_proto::mesh::NodeKind;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use x509_parser::extensions::GeneralName;

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

/// Both ends of mutual TLS for one node, made once from its files.
#[derive(Clone)]
pub struct NodeTls {
    server: Arc<ServerConfig>,
    /// The same, but a peer may also come without a certificate (it must
    /// then prove itself otherwise: the admin API's bearer token).
    server_certificate_optional: Arc<ServerConfig>,
    client: ClientTlsConfig,
    identities: Vec<PeerIdentity>,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTls")
            .field("identities", &self.identities)
            .finish_non_exhaustive()
    }
}

impl NodeTls {
    /// Reads and checks the three files: the certificate chain, the key that
    /// goes with it, and at least one CA certificate.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let cert_pem = read("certificate", &files.cert)?;
        let key_pem = read("key", &files.key)?;
        let ca_pem = read("CA bundle", &files.ca)?;
        let chain = certificates("certificate", &files.cert, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| TlsError::Invalid {
            what: "key",
            path: files.key.clone(),
            problem: format!("holds no usable PEM private key ({err})"),
        })?;
        let mut roots = RootCertStore::empty();
        for ca in certificates("CA bundle", &files.ca, &ca_pem)? {
            roots.add(ca).map_err(|err| TlsError::Invalid {
                what: "CA bundle",
                path: files.ca.clone(),
                problem: format!("holds a certificate that cannot be a trust anchor: {err}"),
            })?;
        }
        let pair = |reason: String| TlsError::Pair {
            cert: files.cert.clone(),
            key: files.key.clone(),
            reason,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(roots);
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
            WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .allow_unauthenticated()
                .build()
                .map_err(verifier_error)?;
        let identities = chain
            .first()
            .map(|leaf| identities_of(leaf))
            .unwrap_or_default();
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
        let client = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca_pem))
            .identity(Identity::from_pem(&cert_pem, &key_pem));
        // tonic checks its configuration only when an endpoint takes it:
        // check it now, before any port is bound.
        tonic::transport::Endpoint::from_static("https://localhost")
            .tls_config(client.clone())
            .map_err(|err| pair(crate::grpc::error_chain(&err)))?;
        Ok(Self {
            server,
            server_certificate_optional,
            client,
            identities,
        })
    }

    /// The accepting end: requires a client certificate from the CA.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.server))
    }

    /// An accepting end where a client certificate is optional: one that
    /// is presented must still be signed by the CA, and a connection
    /// without one has no identity ([`crate::accept::ConnectionInfo`]'s
    /// `certified` is empty). For the admin API when it also takes a
    /// bearer token.
    pub fn acceptor_certificate_optional(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.server_certificate_optional))
    }

    /// The dialing end: verifies the server against the CA and presents
    /// this node's certificate.
    pub fn client_config(&self) -> ClientTlsConfig {
        self.client.clone()
    }

    /// The identities this node's own certificate names.
    pub fn identities(&self) -> &[PeerIdentity] {
        &self.identities
    }

    /// Refuses a certificate that does not name `identity`: peers would
    /// refuse every stream this node opens, so it should not start.
    pub fn check_names(&self, identity: &PeerIdentity) -> Result<(), String> {
        if self.identities.contains(identity) {
            return Ok(());
        }
        Err(format!(
            "the certificate given with --tls-cert is not for {identity} (it names {}): issue one for this node, e.g. `smesh-console certs issue --tier {} --id {}`",
            names(&self.identities),
            identity.tier,
            identity.id
        ))
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
}
