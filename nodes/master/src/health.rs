//! Health checks: every peer probed at once, one row per peer.
//!
//! The registry decides what to probe (a [`CheckTarget`] per sidecar, with
//! the clients it last reported) and hands a [`HealthCheck`] to its own
//! task. The master pings each sidecar over its stream, each sidecar pings
//! its clients (a `ProbeRequest`), and the master asks Kafka for metadata;
//! the rows are appended to `healthCheckReport.csv` ([`crate::report`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::future::join_all;
use smesh_core::time::now_unix_nanos;
use smesh_proto::admin::{HealthCheckReport, HealthCheckRow, Tier};
use smesh_proto::mesh::{ClientInfo, PeerStatus, ProbeRequest};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::kafka::KafkaSink;
use crate::report;
use smesh_core::session::{self, SessionCommand};

/// Why a health check could not run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CheckError {
    #[error("no sidecar or client named {0:?} is known to this master")]
    /// No sidecar or client has this id.
    UnknownPeer(String),
    #[error("the master is shutting down")]
    /// The registry stopped.
    ShuttingDown,
    #[error("{0} health checks of other peers are running; try again when they are done")]
    /// Too many different checks at once (the same check asked again
    /// meanwhile joins the running one instead).
    Busy(usize),
}

/// One sidecar to probe, and which of its clients.
#[derive(Debug)]
pub(crate) struct CheckTarget {
    pub(crate) sidecar_id: String,
    pub(crate) address: String,
    /// Probe the sidecar itself (false when only one of its clients is checked).
    pub(crate) check_sidecar: bool,
    /// Empty: all of its clients.
    pub(crate) client_filter: String,
    /// The sidecar's session, if it is connected.
    pub(crate) commands: Option<mpsc::Sender<SessionCommand>>,
    /// Its clients as last reported, for rows when it cannot answer.
    pub(crate) known_clients: Vec<ClientInfo>,
}

/// One health check, ready to run on its own task.
pub(crate) struct HealthCheck {
    pub(crate) check_id: u64,
    pub(crate) master_id: String,
    pub(crate) targets: Vec<CheckTarget>,
    /// Set when Kafka is probed too (a check of every peer).
    pub(crate) kafka: Option<KafkaSink>,
    pub(crate) kafka_brokers: String,
    /// Per probe.
    pub(crate) timeout: Duration,
    /// `healthCheckReport.csv`.
    pub(crate) report_path: PathBuf,
}

impl HealthCheck {
    /// Probes every target and Kafka at once, appends the rows to the report.
    pub(crate) async fn run(self) -> HealthCheckReport {
        let started = now_unix_nanos();
        let timeout = self.timeout;
        let master_id = self.master_id.clone();
        let probes = self
            .targets
            .into_iter()
            .map(|target| probe_target(target, master_id.clone(), timeout));
        let kafka_row = async {
            match self.kafka {
                Some(sink) => {
                    Some(probe_kafka(sink, &self.master_id, &self.kafka_brokers, timeout).await)
                }
                None => None,
            }
        };
        let (rows, kafka_row) = tokio::join!(join_all(probes), kafka_row);
        let mut rows: Vec<HealthCheckRow> = rows.into_iter().flatten().collect();
        rows.extend(kafka_row);
        let report = HealthCheckReport {
            check_id: self.check_id,
            master_id: self.master_id,
            started_unix_nanos: started,
            finished_unix_nanos: now_unix_nanos(),
            rows,
        };
        let path = self.report_path.clone();
        let rows = report.rows.clone();
        let check_id = report.check_id;
        match tokio::task::spawn_blocking(move || report::append(&path, check_id, &rows)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                warn!(path = %self.report_path.display(), %err, "cannot append to the health check report")
            }
            Err(err) => warn!(%err, "health check report writer failed"),
        }
        let down = report
            .rows
            .iter()
            .filter(|r| r.status != PeerStatus::Up as i32)
            .count();
        info!(
            check = report.check_id,
            peers = report.rows.len(),
            not_up = down,
            "health check finished"
        );
        report
    }
}

async fn probe_target(
    target: CheckTarget,
    master_id: String,
    timeout: Duration,
) -> Vec<HealthCheckRow> {
    let Some(commands) = target.commands.clone() else {
        let mut rows = Vec::new();
        if target.check_sidecar {
            rows.push(sidecar_row(
                &master_id,
                &target,
                Err("not connected".to_string()),
            ));
        }
        rows.extend(unanswered_clients(
            &target.sidecar_id,
            &target.known_clients,
            &target.client_filter,
            "its sidecar is not connected",
        ));
        return rows;
    };
    let sidecar_probe = async {
        if !target.check_sidecar {
            return None;
        }
        let rtt = session::probe(&commands, timeout)
            .await
            .ok_or_else(|| format!("no answer within {timeout:?}"));
        Some(sidecar_row(&master_id, &target, rtt))
    };
    let clients_probe = async {
        let (answer, response) = oneshot::channel();
        let request = ProbeRequest {
            check_id: 0,
            client_id: target.client_filter.clone(),
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        };
        let sent = commands
            .send(SessionCommand::ProbeDownstream { request, answer })
            .await
            .is_ok();
        // The sidecar waits `timeout` for its clients; allow it that plus the trip.
        let response = if sent {
            tokio::time::timeout(timeout * 2, response)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        match response {
            Some(response) => response
                .results
                .into_iter()
                .map(|r| HealthCheckRow {
                    at_unix_nanos: r.at_unix_nanos,
                    checker_id: response.checker_id.clone(),
                    tier: Tier::Client as i32,
                    peer_id: r.peer_id,
                    address: r.address,
                    status: r.status,
                    rtt_us: r.rtt_us,
                    detail: r.detail,
                })
                .collect(),
            None => unanswered_clients(
                &target.sidecar_id,
                &target.known_clients,
                &target.client_filter,
                "its sidecar did not answer the probe request",
            ),
        }
    };
    let (sidecar_row, client_rows) = tokio::join!(sidecar_probe, clients_probe);
    sidecar_row.into_iter().chain(client_rows).collect()
}

/// The row of `target`'s sidecar: up with its round trip, or down and why.
fn sidecar_row(
    master_id: &str,
    target: &CheckTarget,
    probed: Result<Duration, String>,
) -> HealthCheckRow {
    let (status, rtt_us, detail) = match probed {
        Ok(rtt) => (
            PeerStatus::Up,
            u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1),
            String::new(),
        ),
        Err(why) => (PeerStatus::Down, 0, why),
    };
    HealthCheckRow {
        at_unix_nanos: now_unix_nanos(),
        checker_id: master_id.to_string(),
        tier: Tier::Sidecar as i32,
        peer_id: target.sidecar_id.clone(),
        address: target.address.clone(),
        status: status as i32,
        rtt_us,
        detail,
    }
}

fn unanswered_clients(
    sidecar_id: &str,
    known: &[ClientInfo],
    filter: &str,
    detail: &str,
) -> Vec<HealthCheckRow> {
    known
        .iter()
        .filter(|c| filter.is_empty() || c.client_id == filter)
        .filter(|c| c.status != PeerStatus::Down as i32 || !filter.is_empty())
        .map(|c| HealthCheckRow {
            at_unix_nanos: now_unix_nanos(),
            checker_id: sidecar_id.to_string(),
            tier: Tier::Client as i32,
            peer_id: c.client_id.clone(),
            address: c.address.clone(),
            status: PeerStatus::Down as i32,
            rtt_us: 0,
            detail: detail.to_string(),
        })
        .collect()
}

async fn probe_kafka(
    sink: KafkaSink,
    master_id: &str,
    brokers: &str,
    timeout: Duration,
) -> HealthCheckRow {
    let started = Instant::now();
    let outcome = tokio::task::spawn_blocking(move || sink.probe(timeout)).await;
    let rtt = started.elapsed();
    let (status, rtt_us, detail) = match outcome {
        Ok(Ok((brokers, partitions))) => (
            PeerStatus::Up,
            u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1),
            format!("{brokers} broker(s), {partitions} partition(s)"),
        ),
        Ok(Err(err)) => (PeerStatus::Down, 0, err.to_string()),
        Err(err) => (PeerStatus::Down, 0, err.to_string()),
    };
    HealthCheckRow {
        at_unix_nanos: now_unix_nanos(),
        checker_id: master_id.to_string(),
        tier: Tier::Kafka as i32,
        peer_id: "kafka".to_string(),
        address: brokers.to_string(),
        status: status as i32,
        rtt_us,
        detail,
    }
}
