//! `smesh-console certs`: a CA and node certificates for a first deployment.
//!
//! `certs init --dir DIR` makes a CA (`ca.pem`, `ca.key`); `certs issue
//! --tier client --id c1 --dir DIR` makes `client-c1.pem` and
//! `client-c1.key`, signed by that CA, naming `smesh://client/c1` in a URI
//! SAN (see `smesh_core::tls`) and, with `--host`, the DNS names or IP
//! addresses the node is dialed at (a sidecar's or master's clients check
//! them). Keys are written `0600`; nothing is ever overwritten.
//!
//! The same [`Ca`] ([`smesh_core::pki`]) makes the demo's and the
//! end-to-end tests' certificates.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
pub use smesh_core::pki::{Ca, IssueError, Issued, validity};
use smesh_core::tls::{PeerIdentity, Tier};

/// File name of the CA's certificate in `--dir`.
pub const CA_CERT: &str = "ca.pem";
/// File name of the CA's key in `--dir`.
pub const CA_KEY: &str = "ca.key";

/// Flags of `smesh-console certs`.
#[derive(Args, Debug, Clone)]
pub struct CertsArgs {
    /// What to make.
    #[command(subcommand)]
    pub command: CertsCommand,
}

/// `certs init` or `certs issue`.
#[derive(Subcommand, Debug, Clone)]
pub enum CertsCommand {
    /// Create a CA in --dir (ca.pem, ca.key).
    Init {
        /// Where the CA's files go (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// How long the CA is valid, in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a node's certificate with the CA in --dir (<tier>-<id>.pem, <tier>-<id>.key).
    Issue {
        /// Where the CA is and the files go.
        #[arg(long)]
        dir: PathBuf,
        /// client, sidecar, master or console.
        #[arg(long, value_parser = parse_tier)]
        tier: Tier,
        /// The node's --id (a console's: any name).
        #[arg(long)]
        id: String,
        /// A DNS name or IP address the node is dialed at (repeatable; for
        /// sidecars and masters).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// How long the certificate is valid, in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

fn parse_tier(text: &str) -> Result<Tier, String> {
    Tier::parse(text)
        .ok_or_else(|| format!("unknown tier {text:?}: client, sidecar, master or console"))
}

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate could not be made.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// A file that is not to be overwritten.
    #[error("{0}")]
    Invalid(String),
}

impl CertsError {
    /// The exit code: 64 for what the operator can fix (a file, a value),
    /// 70 when rcgen fails.
    pub fn exit_code(&self) -> u8 {
        match self {
            CertsError::Io { .. }
            | CertsError::Invalid(_)
            | CertsError::Issue(IssueError::Invalid(_)) => 64,
            CertsError::Issue(IssueError::Rcgen(_)) => 70,
        }
    }
}

/// Runs `certs init` or `certs issue`; returns the lines to print.
pub fn run(args: &CertsArgs) -> Result<Vec<String>, CertsError> {
    match &args.command {
        CertsCommand::Init { dir, days } => {
            create_dir(dir)?;
            let (from, until) = validity(*days);
            let ca = Ca::new("smesh CA", from, until)?;
            let key = dir.join(CA_KEY);
            let cert = dir.join(CA_CERT);
            write_new(&key, &ca.issued.key_pem, true)?;
            write_new(&cert, &ca.issued.cert_pem, false)?;
            Ok(vec![
                format!(
                    "CA certificate: {} (give it to every node as --tls-ca)",
                    cert.display()
                ),
                format!(
                    "CA key:         {} (keep it offline; it issues identities)",
                    key.display()
                ),
            ])
        }
        CertsCommand::Issue {
            dir,
            tier,
            id,
            hosts,
            days,
        } => {
            let ca = Ca::load(&read(&dir.join(CA_CERT))?, &read(&dir.join(CA_KEY))?)?;
            let identity = PeerIdentity::new(*tier, id.clone());
            let (from, until) = validity(*days);
            let issued = ca.issue(&identity, hosts, from, until)?;
            let cert = dir.join(format!("{tier}-{id}.pem"));
            let key = dir.join(format!("{tier}-{id}.key"));
            write_new(&key, &issued.key_pem, true)?;
            write_new(&cert, &issued.cert_pem, false)?;
            Ok(vec![format!(
                "{identity}: --tls-cert {} --tls-key {} --tls-ca {}",
                cert.display(),
                key.display(),
                dir.join(CA_CERT).display()
            )])
        }
    }
}

fn create_dir(dir: &Path) -> Result<(), CertsError> {
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Result<String, CertsError> {
    std::fs::read_to_string(path).map_err(|source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a file that must not exist yet; `secret` ones readable by the
/// owner only (0600).
fn write_new(path: &Path, content: &str, secret: bool) -> Result<(), CertsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::AlreadyExists => CertsError::Invalid(format!(
                "{} already exists: nothing is overwritten; move it away first",
                path.display()
            )),
            _ => io(err),
        })?;
    file.write_all(content.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn init_then_issue_makes_files_nodes_load() {
        let dir = tempfile::tempdir().expect("dir");
        let dir = dir.path().join("pki");
        run(&CertsArgs {
            command: CertsCommand::Init {
                dir: dir.clone(),
                days: 30,
            },
        })
        .expect("init");
        run(&CertsArgs {
            command: CertsCommand::Issue {
                dir: dir.clone(),
                tier: Tier::Sidecar,
                id: "s1".into(),
                hosts: vec!["127.0.0.1".into(), "edge.example".into()],
                days: 30,
            },
        })
        .expect("issue");
        for key in [CA_KEY, "sidecar-s1.key"] {
            let mode = std::fs::metadata(dir.join(key))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let tls = smesh_core::tls::NodeTls::load(&smesh_core::tls::TlsFiles {
            cert: dir.join("sidecar-s1.pem"),
            key: dir.join("sidecar-s1.key"),
            ca: dir.join(CA_CERT),
        })
        .expect("a node loads what was issued");
        assert_eq!(tls.identities(), [PeerIdentity::new(Tier::Sidecar, "s1")]);
        // Nothing is overwritten.
        let again = run(&CertsArgs {
            command: CertsCommand::Init { dir, days: 30 },
        });
        assert!(again.is_err());
    }
}
