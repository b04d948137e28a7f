//! Certificates for TLS tests, made on the fly with rcgen (through
//! `smesh_console::certs::Ca`, the CA behind `smesh-console certs`) and
//! written into the test's directory; never committed.

use std::path::{Path, PathBuf};

use smesh_console::certs::{Ca, validity};
use smesh_core::tls::{PeerIdentity, Tier};
use time::OffsetDateTime;

/// A CA whose certificates go into one directory.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    name: String,
    ca: Ca,
}

/// A node's three TLS files.
#[derive(Debug, Clone)]
pub struct NodeCerts {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl NodeCerts {
    /// `--tls-cert …, --tls-key …, --tls-ca …` for a node's command line.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
            "--tls-ca".into(),
            self.ca.display().to_string(),
        ]
    }

    /// The same certificate and key, trusting `other`'s CA instead.
    pub fn trusting(&self, other: &Pki) -> NodeCerts {
        NodeCerts {
            ca: other.ca_path(),
            ..self.clone()
        }
    }

    /// Loaded as a node loads them.
    pub fn load(&self) -> smesh_core::tls::NodeTls {
        smesh_core::tls::NodeTls::load(&smesh_core::tls::TlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            ca: self.ca.clone(),
        })
        .expect("test certificates load")
    }
}

impl Pki {
    /// A new CA called `name`, its certificate at `<dir>/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).expect("pki dir");
        let (from, until) = validity(1);
        let ca = Ca::new(&format!("{name} test CA"), from, until).expect("CA");
        let pki = Self {
            dir,
            name: name.to_string(),
            ca,
        };
        std::fs::write(pki.ca_path(), &pki.ca.issued.cert_pem).expect("write CA");
        pki
    }

    /// Where the CA's certificate is.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A certificate for `tier`/`id`, valid now, for 127.0.0.1.
    pub fn issue(&self, tier: Tier, id: &str) -> NodeCerts {
        let (from, until) = validity(1);
        self.issue_valid(tier, id, from, until)
    }

    /// A certificate for `tier`/`id`, valid from `from` to `until`.
    pub fn issue_valid(
        &self,
        tier: Tier,
        id: &str,
        from: OffsetDateTime,
        until: OffsetDateTime,
    ) -> NodeCerts {
        let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
        self.issue_for(tier, id, &hosts, from, until)
    }

    /// A certificate for `tier`/`id`, valid now, naming only `hosts` (DNS
    /// names or IP addresses) as where the node is dialed.
    pub fn issue_for_hosts(&self, tier: Tier, id: &str, hosts: &[&str]) -> NodeCerts {
        let (from, until) = validity(1);
        let hosts: Vec<String> = hosts.iter().map(ToString::to_string).collect();
        self.issue_for(tier, id, &hosts, from, until)
    }

    fn issue_for(
        &self,
        tier: Tier,
        id: &str,
        hosts: &[String],
        from: OffsetDateTime,
        until: OffsetDateTime,
    ) -> NodeCerts {
        let issued = self
            .ca
            .issue(&PeerIdentity::new(tier, id), hosts, from, until)
            .expect("issue");
        let stem = self.dir.join(format!(
            "{}-{tier}-{id}-{}",
            self.name,
            from.unix_timestamp()
        ));
        let cert = stem.with_extension("pem");
        let key = stem.with_extension("key");
        std::fs::write(&cert, issued.cert_pem).expect("write cert");
        std::fs::write(&key, issued.key_pem).expect("write key");
        NodeCerts {
            cert,
            key,
            ca: self.ca_path(),
        }
    }
}
