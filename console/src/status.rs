//! `smesh-console status`: the merged view of every master, for scripts
//! (`--json`) or a quick look.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use smesh_core::cli::parse_duration;
use smesh_core::token::AdminToken;
use tonic::transport::{Certificate, ClientTlsConfig};

use crate::format;
use crate::remote;
use crate::state::{ClientRow, Connection, MasterRow, Mesh, SidecarRow};

/// Which masters to talk to; shared by the dashboard, `check` and `status`.
#[derive(Args, Debug, Clone, Default)]
pub struct MasterSelection {
    /// Admin address of a master, host:port (repeatable; `;`-separated in the
    /// variable). Default 127.0.0.1:9011.
    #[arg(long = "master", env = "SMESH_CONSOLE_MASTERS", value_delimiter = ';')]
    pub masters: Vec<String>,
    /// A file listing masters' admin addresses, `<id>;host:port;` per line
    /// (no port means 9011).
    #[arg(long, env = "SMESH_CONSOLE_MASTERS_FILE")]
    pub masters_file: Option<PathBuf>,
    /// Mutual TLS to the admin APIs (`--tls-cert`, `--tls-key`, `--tls-ca`),
    /// with a console's certificate (`smesh://console/<name>`).
    /// With --admin-token-file alone, `--tls-ca` may come without a
    /// certificate: the master is verified, the token proves the console.
    #[command(flatten)]
    pub tls: smesh_core::cli::TlsArgs,
    /// A file holding the masters' admin bearer token (as given to their
    /// --admin-token-file); sent on every call instead of, or beside, a
    /// console certificate.
    #[arg(long, env = "SMESH_ADMIN_TOKEN_FILE", value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
}

impl MasterSelection {
    /// How to dial the admin APIs: loads the TLS files and the token, if
    /// given. Errors name the flag (for exit 64).
    pub fn dialer(&self) -> Result<remote::AdminDialer, String> {
        let token = self
            .admin_token_file
            .as_deref()
            .map(AdminToken::read)
            .transpose()
            .map_err(|err| err.to_string())?;
        let tls = match (&self.tls.tls_cert, &self.tls.tls_key, &self.tls.tls_ca) {
            (None, None, Some(ca)) if token.is_some() => Some(verify_only(ca)?),
            _ => self.tls.load(None)?.map(|tls| tls.client_config()),
        };
        Ok(remote::AdminDialer::new(tls, token))
    }

    /// The admin addresses to dial, in order, without repeats.
    pub fn addresses(&self) -> Result<Vec<String>, String> {
        let mut addresses: Vec<String> = Vec::new();
        for master in &self.masters {
            let master = master.trim();
            if master.is_empty() {
                continue;
            }
            if master
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(format!("invalid --master {master:?}: expected host:port"));
            }
            addresses.push(master.to_string());
        }
        if let Some(path) = &self.masters_file {
            let peers =
                smesh_core::peers::load(path, smesh_core::ADMIN_PORT).map_err(|e| e.to_string())?;
            addresses.extend(peers.iter().map(smesh_core::peers::Peer::address));
        }
        if addresses.is_empty() {
            addresses.push(format!("127.0.0.1:{}", smesh_core::ADMIN_PORT));
        }
        let mut seen = std::collections::HashSet::new();
        addresses.retain(|a| seen.insert(a.clone()));
        Ok(addresses)
    }
}

/// TLS that verifies the master against the CA in `ca` and shows no
/// certificate of its own (a token proves who calls).
fn verify_only(ca: &std::path::Path) -> Result<ClientTlsConfig, String> {
    let pem = std::fs::read(ca).map_err(|err| format!("--tls-ca {}: {err}", ca.display()))?;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
    // tonic checks the PEM only when an endpoint takes it: check it now.
    tonic::transport::Endpoint::from_static("https://localhost")
        .tls_config(tls.clone())
        .map_err(|err| {
            format!(
                "--tls-ca {}: {}",
                ca.display(),
                smesh_core::grpc::error_chain(&err)
            )
        })?;
    Ok(tls)
}

/// Flags of `smesh-console status`.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Which masters to ask (`--master`, `--masters-file`).
    #[command(flatten)]
    pub masters: MasterSelection,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for each master.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// The merged view, as `status --json` prints it.
#[derive(Debug, Serialize)]
pub struct StatusDocument {
    /// Every master asked, reachable or not.
    pub masters: Vec<MasterRow>,
    /// Every sidecar any master knows.
    pub sidecars: Vec<SidecarRow>,
    /// Every client, merged across masters.
    pub clients: Vec<ClientRow>,
}

/// Asks every master at once; unreachable ones are marked, not fatal.
pub async fn gather(dialer: &remote::AdminDialer, addresses: &[String], timeout: Duration) -> Mesh {
    let mut mesh = Mesh::new(addresses.to_vec());
    let answers =
        futures::future::join_all(addresses.iter().map(|a| remote::status(dialer, a, timeout)))
            .await;
    for (i, answer) in answers.into_iter().enumerate() {
        match answer {
            Ok(status) => {
                mesh.set_connection(i, Connection::Connected);
                mesh.apply_status(i, status);
            }
            Err(error) => mesh.set_connection(
                i,
                Connection::Connecting {
                    attempt: 1,
                    error: Some(error.to_string()),
                },
            ),
        }
    }
    mesh
}

impl StatusDocument {
    /// The document for the merged view `mesh`.
    pub fn from_mesh(mesh: &Mesh) -> Self {
        Self {
            masters: mesh.master_rows(),
            sidecars: mesh.sidecar_rows(),
            clients: mesh.client_rows(),
        }
    }

    /// A short human-readable rendering.
    pub fn text(&self, now_unix_nanos: i64) -> String {
        let mut out = String::new();
        for m in &self.masters {
            if m.connected {
                out.push_str(&format!(
                    "master {} ({}): kafka {}, published {} ({}), failed {}, duplicates {}{}\n",
                    m.id,
                    m.address,
                    if m.kafka_ready { "ready" } else { "NOT READY" },
                    format::count(m.published),
                    format::rate(m.published_per_s),
                    format::count(m.failed),
                    format::count(m.duplicates),
                    certificate(m.certificate_not_after_unix_nanos, now_unix_nanos),
                ));
            } else {
                let error = m.error.as_deref().unwrap_or("no answer");
                // A refusal is the console's problem (its credentials), not the master's.
                let state = if error.starts_with(remote::REFUSED) {
                    "REFUSED"
                } else {
                    "UNREACHABLE"
                };
                out.push_str(&format!("master {}: {state} ({error})\n", m.address));
            }
            if m.clients_not_shown > 0 {
                out.push_str(&format!(
                    "  ({} more clients of master {} not shown: the console fetches at most {} per master)\n",
                    m.clients_not_shown,
                    m.id,
                    remote::MAX_CLIENTS_FETCHED
                ));
            }
            if m.sidecars_not_shown > 0 {
                out.push_str(&format!(
                    "  ({} more sidecars of master {} not shown: they did not fit in its answer)\n",
                    m.sidecars_not_shown, m.id
                ));
            }
        }
        for s in &self.sidecars {
            out.push_str(&format!(
                "  sidecar {:<16} {:<8} rtt {:>8}  forwarded {:>6}  clients {}{}\n",
                s.id,
                s.status,
                format::rtt(s.rtt_last_us),
                format::count(s.events_forwarded),
                s.clients,
                certificate(s.certificate_not_after_unix_nanos, now_unix_nanos),
            ));
        }
        for c in &self.clients {
            out.push_str(&format!(
                "  client  {:<16} {:<8} rtt {:>8}  sent {:>6}  backlog {} rows ({}, oldest {})  via {}{}\n",
                c.id,
                c.status,
                format::rtt(c.rtt_last_us),
                format::count(c.events_sent),
                format::count(c.backlog_rows),
                format::bytes(c.backlog_bytes),
                format::ago(c.backlog_oldest_unix_nanos, now_unix_nanos),
                c.sidecar,
                certificate(c.certificate_not_after_unix_nanos, now_unix_nanos),
            ));
        }
        out
    }
}

/// `, certificate expires in 90d` (`expired`), or nothing without TLS.
fn certificate(not_after_unix_nanos: i64, now_unix_nanos: i64) -> String {
    match format::expires(not_after_unix_nanos, now_unix_nanos).as_str() {
        "–" => String::new(),
        "expired" => ", certificate EXPIRED".to_string(),
        left => format!(", certificate expires in {left}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_flags_and_file_without_repeats() {
        let dir = std::env::temp_dir().join(format!("smesh-console-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("masters.csv");
        std::fs::write(&file, "Master1;10.0.0.1;\nMaster2;10.0.0.2:9999;\n").expect("write");
        let selection = MasterSelection {
            masters: vec!["10.0.0.1:9011".into(), "127.0.0.1:7000".into()],
            masters_file: Some(file),
            ..MasterSelection::default()
        };
        assert_eq!(
            selection.addresses().expect("valid"),
            vec!["10.0.0.1:9011", "127.0.0.1:7000", "10.0.0.2:9999"]
        );
        assert_eq!(
            MasterSelection::default().addresses().expect("default"),
            vec!["127.0.0.1:9011"]
        );
        let bad = MasterSelection {
            masters: vec!["nohost".into()],
            masters_file: None,
            ..MasterSelection::default()
        };
        assert!(bad.addresses().expect_err("invalid").contains("host:port"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
