//! A certificate authority that issues smesh certificates (rcgen): the CA
//! behind `smesh-console certs`, the demo's throw-away CA and the tests'.
//!
//! A node's certificate names it with a URI SAN `smesh://<tier>/<id>` (see
//! [`crate::tls`]) and, for sidecars and masters, the DNS names or IP
//! addresses they are dialed at; it serves both ends of mutual TLS.

use ::time::OffsetDateTime;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::tls::PeerIdentity;

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// rcgen refused (a bad host name, a CA it cannot parse).
    #[error("{0}")]
    Rcgen(#[from] rcgen::Error),
    /// A value that cannot go into a certificate.
    #[error("{0}")]
    Invalid(String),
}

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// A certificate authority that issues smesh certificates.
#[derive(Debug)]
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's own certificate and key.
    pub issued: Issued,
}

impl Ca {
    /// A new CA named `name`, valid from `not_before` to `not_after`.
    pub fn new(
        name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Self, IssueError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, name);
        params.distinguished_name = subject;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.self_signed(&key)?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Self {
            issuer: Issuer::new(params, key),
            issued,
        })
    }

    /// The CA whose certificate and key are given (PEM).
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, IssueError> {
        let issuer = Issuer::from_ca_cert_pem(cert_pem, KeyPair::from_pem(key_pem)?)?;
        Ok(Self {
            issuer,
            issued: Issued {
                cert_pem: cert_pem.to_string(),
                key_pem: key_pem.to_string(),
            },
        })
    }

    /// A certificate for `identity` (its URI SAN), also naming `hosts`
    /// (DNS names or IP addresses), for both ends of mutual TLS.
    pub fn issue(
        &self,
        identity: &PeerIdentity,
        hosts: &[String],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Issued, IssueError> {
        if crate::ids::id_problem(&identity.id).is_some() {
            return Err(IssueError::Invalid(format!(
                "invalid id {}: use letters, digits, '-' or '_'",
                crate::ids::quote(&identity.id)
            )));
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(hosts.to_vec())?;
        let uri = identity
            .uri()
            .try_into()
            .map_err(|_| IssueError::Invalid(format!("{identity} cannot be a URI SAN")))?;
        params.subject_alt_names.push(SanType::URI(uri));
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, identity.uri());
        params.distinguished_name = subject;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// From now (less a minute, for clocks a little behind) for `days` days.
pub fn validity(days: u32) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now - time::Duration::minutes(1),
        now + time::Duration::days(i64::from(days)),
    )
}
