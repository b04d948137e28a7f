//! What the master knows about its peers, kept by one task.
//!
//! Stream handlers (one per sidecar) and the admin API talk to the registry
//! through [`RegistryEvent`]s on a bounded channel; nothing here is shared
//! behind a lock. The registry also computes per-second rates and runs
//! health checks.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use smesh_core::time::now_unix_nanos;
use smesh_proto::admin::{
    ClientView, HealthCheckReport, HealthCheckRow, HeartbeatSample, KafkaStatus, MasterInfo, Rates,
    SidecarInfo, Stats, Status, Tier, Totals,
};
use smesh_proto::mesh::{ClientInfo, Hello, PeerStatus, ProbeRequest, Report, RttStats};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::counters::Counters;
use crate::kafka::KafkaSink;
use crate::report;

pub use smesh_core::session::{ConnId, SessionCommand};

/// Health checks kept for the admin API's `recent_checks`.
const RECENT_CHECKS: usize = 10;

/// Everything that changes what the registry knows, or asks it something.
#[derive(Debug)]
pub enum RegistryEvent {
    Connected {
        conn: ConnId,
        hello: Hello,
        address: String,
        commands: mpsc::Sender<SessionCommand>,
    },
    /// Sent by the stream handler once per heartbeat interval.
    Heartbeat {
        conn: ConnId,
        rtt: RttStats,
        status: PeerStatus,
        last_pong_unix_nanos: i64,
        events_forwarded: u64,
    },
    Report {
        conn: ConnId,
        report: Report,
    },
    Disconnected {
        conn: ConnId,
        reason: String,
    },
    GetStatus {
        reply: oneshot::Sender<Status>,
    },
    HealthCheck {
        peer: String,
        timeout: Duration,
        reply: oneshot::Sender<Result<HealthCheckReport, CheckError>>,
    },
    CheckDone(HealthCheckReport),
}

/// Why a health check could not run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CheckError {
    #[error("no sidecar or client named {0:?} is known to this master")]
    UnknownPeer(String),
    #[error("the master is shutting down")]
    ShuttingDown,
}

/// Static facts about this master.
#[derive(Clone, Debug)]
pub struct MasterIdentity {
    pub id: String,
    pub address: String,
    pub started_unix_nanos: i64,
    pub started: Instant,
    pub report_path: PathBuf,
}

/// A handle to the registry task: cheap to clone, used by streams and the admin API.
#[derive(Clone, Debug)]
pub struct RegistryHandle {
    pub events: mpsc::Sender<RegistryEvent>,
    pub stats: watch::Receiver<Stats>,
    pub heartbeats: broadcast::Sender<HeartbeatSample>,
    pub kafka: watch::Receiver<KafkaStatus>,
}

impl RegistryHandle {
    /// The merged view of this master and its peers.
    pub async fn status(&self) -> Option<Status> {
        let (reply, answer) = oneshot::channel();
        self.events
            .send(RegistryEvent::GetStatus { reply })
            .await
            .ok()?;
        answer.await.ok()
    }

    /// Probes every peer (empty `peer`) or one, and appends the rows to the report.
    pub async fn health_check(
        &self,
        peer: String,
        timeout: Duration,
    ) -> Result<HealthCheckReport, CheckError> {
        let (reply, answer) = oneshot::channel();
        self.events
            .send(RegistryEvent::HealthCheck {
                peer,
                timeout,
                reply,
            })
            .await
            .map_err(|_| CheckError::ShuttingDown)?;
        answer.await.map_err(|_| CheckError::ShuttingDown)?
    }
}

#[derive(Debug)]
struct SidecarRecord {
    id: String,
    address: String,
    version: String,
    connected: Option<Connection>,
    connected_since: i64,
    last_heartbeat: i64,
    status: PeerStatus,
    rtt: RttStats,
    events_forwarded: u64,
    clients: Vec<ClientInfo>,
}

#[derive(Debug)]
struct Connection {
    conn: ConnId,
    commands: mpsc::Sender<SessionCommand>,
}

/// The registry task's state.
pub struct Registry {
    identity: MasterIdentity,
    sink: KafkaSink,
    counters: Arc<Counters>,
    events_tx: mpsc::Sender<RegistryEvent>,
    events: mpsc::Receiver<RegistryEvent>,
    stats: watch::Sender<Stats>,
    heartbeats: broadcast::Sender<HeartbeatSample>,
    kafka: watch::Receiver<KafkaStatus>,
    /// By sidecar id; kept after disconnects so the operator sees who is gone.
    sidecars: BTreeMap<String, SidecarRecord>,
    conns: HashMap<ConnId, String>,
    recent_checks: Vec<HealthCheckReport>,
    next_check: u64,
    last_totals: (Instant, Totals),
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("id", &self.identity.id)
            .field("sidecars", &self.sidecars.len())
            .finish()
    }
}

impl Registry {
    pub fn new(
        identity: MasterIdentity,
        sink: KafkaSink,
        counters: Arc<Counters>,
        kafka: watch::Receiver<KafkaStatus>,
    ) -> (Self, RegistryHandle) {
        let (events_tx, events) = mpsc::channel(1024);
        let (stats, stats_rx) = watch::channel(Stats::default());
        let (heartbeats, _) = broadcast::channel(1024);
        let handle = RegistryHandle {
            events: events_tx.clone(),
            stats: stats_rx,
            heartbeats: heartbeats.clone(),
            kafka: kafka.clone(),
        };
        let totals = counters.totals();
        let registry = Self {
            identity,
            sink,
            counters,
            events_tx,
            events,
            stats,
            heartbeats,
            kafka,
            sidecars: BTreeMap::new(),
            conns: HashMap::new(),
            recent_checks: Vec::new(),
            next_check: 1,
            last_totals: (Instant::now(), totals),
        };
        (registry, handle)
    }

    /// The data-plane address, once the listener is known.
    pub fn set_address(&mut self, address: String) {
        self.identity.address = address;
    }

    /// Runs until `shutdown`; answers queries until then.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => self.publish_stats(),
                event = self.events.recv() => match event {
                    Some(event) => self.handle(event),
                    None => break,
                },
            }
        }
        // Callers still waiting get a clear answer rather than a hang.
        self.events.close();
        while let Some(event) = self.events.recv().await {
            if let RegistryEvent::HealthCheck { reply, .. } = event {
                let _ = reply.send(Err(CheckError::ShuttingDown));
            }
        }
    }

    fn handle(&mut self, event: RegistryEvent) {
        match event {
            RegistryEvent::Connected {
                conn,
                hello,
                address,
                commands,
            } => self.connected(conn, hello, address, commands),
            RegistryEvent::Heartbeat {
                conn,
                rtt,
                status,
                last_pong_unix_nanos,
                events_forwarded,
            } => {
                if let Some(record) = self.record_mut(conn) {
                    record.rtt = rtt;
                    record.status = status;
                    record.last_heartbeat = last_pong_unix_nanos;
                    record.events_forwarded = events_forwarded;
                }
            }
            RegistryEvent::Report { conn, report } => self.report(conn, report),
            RegistryEvent::Disconnected { conn, reason } => {
                if let Some(id) = self.conns.remove(&conn) {
                    if let Some(record) = self.sidecars.get_mut(&id) {
                        if record.connected.as_ref().is_some_and(|c| c.conn == conn) {
                            record.connected = None;
                            record.status = PeerStatus::Down;
                            for client in &mut record.clients {
                                client.status = PeerStatus::Down as i32;
                            }
                            info!(sidecar = %id, %reason, "sidecar disconnected");
                        }
                    }
                }
            }
            RegistryEvent::GetStatus { reply } => {
                let _ = reply.send(self.status());
            }
            RegistryEvent::HealthCheck {
                peer,
                timeout,
                reply,
            } => self.start_check(peer, timeout, reply),
            RegistryEvent::CheckDone(report) => {
                self.recent_checks.insert(0, report);
                self.recent_checks.truncate(RECENT_CHECKS);
            }
        }
    }

    fn record_mut(&mut self, conn: ConnId) -> Option<&mut SidecarRecord> {
        let id = self.conns.get(&conn)?;
        self.sidecars.get_mut(id)
    }

    fn connected(
        &mut self,
        conn: ConnId,
        hello: Hello,
        address: String,
        commands: mpsc::Sender<SessionCommand>,
    ) {
        let now = now_unix_nanos();
        let record = self
            .sidecars
            .entry(hello.node_id.clone())
            .or_insert_with(|| SidecarRecord {
                id: hello.node_id.clone(),
                address: String::new(),
                version: String::new(),
                connected: None,
                connected_since: now,
                last_heartbeat: 0,
                status: PeerStatus::Up,
                rtt: RttStats::default(),
                events_forwarded: 0,
                clients: Vec::new(),
            });
        if let Some(previous) = &record.connected {
            // The same id on two live streams: usually a reconnect racing the
            // old stream's end; if it persists, two sidecars share an id.
            warn!(sidecar = %hello.node_id, old = previous.conn, new = conn, "sidecar id connected again; following the newest stream");
            self.conns.remove(&previous.conn);
        }
        record.address = address;
        record.version = hello.version;
        record.connected = Some(Connection { conn, commands });
        record.connected_since = now;
        record.status = PeerStatus::Up;
        record.events_forwarded = 0;
        self.conns.insert(conn, hello.node_id);
    }

    fn report(&mut self, conn: ConnId, report: Report) {
        let Some(id) = self.conns.get(&conn).cloned() else {
            return;
        };
        let now = now_unix_nanos();
        for client in &report.clients {
            let connected = client.status != PeerStatus::Down as i32;
            if let Some(rtt) = client.rtt.as_ref().filter(|r| r.last_us > 0 && connected) {
                let _ = self.heartbeats.send(HeartbeatSample {
                    at_unix_nanos: now,
                    checker_id: id.clone(),
                    tier: Tier::Client as i32,
                    peer_id: client.client_id.clone(),
                    rtt_us: rtt.last_us,
                });
            }
        }
        if let Some(record) = self.sidecars.get_mut(&id) {
            record.clients = report.clients;
        }
    }

    fn master_info(&self) -> MasterInfo {
        let stats = self.stats.borrow();
        MasterInfo {
            id: self.identity.id.clone(),
            version: smesh_core::VERSION.to_string(),
            address: self.identity.address.clone(),
            started_unix_nanos: self.identity.started_unix_nanos,
            uptime_ms: u64::try_from(self.identity.started.elapsed().as_millis())
                .unwrap_or(u64::MAX),
            kafka: Some(self.kafka.borrow().clone()),
            totals: Some(self.counters.totals()),
            rates: stats.rates,
        }
    }

    fn status(&self) -> Status {
        let mut sidecars = Vec::with_capacity(self.sidecars.len());
        let mut clients = Vec::new();
        for record in self.sidecars.values() {
            let connected_clients = record
                .clients
                .iter()
                .filter(|c| c.status != PeerStatus::Down as i32)
                .count();
            sidecars.push(SidecarInfo {
                id: record.id.clone(),
                address: record.address.clone(),
                version: record.version.clone(),
                status: if record.connected.is_some() {
                    record.status as i32
                } else {
                    PeerStatus::Down as i32
                },
                connected: record.connected.is_some(),
                connected_since_unix_nanos: record.connected_since,
                last_heartbeat_unix_nanos: record.last_heartbeat,
                rtt: Some(record.rtt.clone()),
                events_forwarded: record.events_forwarded,
                clients: u32::try_from(connected_clients).unwrap_or(u32::MAX),
            });
            for client in &record.clients {
                clients.push(ClientView {
                    sidecar_id: record.id.clone(),
                    info: Some(client.clone()),
                });
            }
        }
        Status {
            master: Some(self.master_info()),
            sidecars,
            clients: merge_client_views(clients),
            recent_checks: self.recent_checks.clone(),
        }
    }

    fn publish_stats(&mut self) {
        let now = Instant::now();
        let totals = self.counters.totals();
        let (then, before) = &self.last_totals;
        let secs = now.duration_since(*then).as_secs_f64().max(1e-3);
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
        let rates = Rates {
            events_in_per_s: rate(totals.events_in, before.events_in),
            published_per_s: rate(totals.published, before.published),
            failed_per_s: rate(totals.failed, before.failed),
            duplicates_per_s: rate(totals.duplicates, before.duplicates),
        };
        self.last_totals = (now, totals);
        self.stats.send_replace(Stats {
            at_unix_nanos: now_unix_nanos(),
            totals: Some(totals),
            rates: Some(rates),
            kafka_ready: self.kafka.borrow().ready,
        });
    }

    fn start_check(
        &mut self,
        peer: String,
        timeout: Duration,
        reply: oneshot::Sender<Result<HealthCheckReport, CheckError>>,
    ) {
        let mut targets = Vec::new();
        for record in self.sidecars.values() {
            let client_filter = if peer.is_empty() || peer == record.id {
                Some(String::new())
            } else if record.clients.iter().any(|c| c.client_id == peer) {
                Some(peer.clone())
            } else {
                None
            };
            let Some(client_filter) = client_filter else {
                continue;
            };
            targets.push(CheckTarget {
                sidecar_id: record.id.clone(),
                address: record.address.clone(),
                check_sidecar: peer.is_empty() || peer == record.id,
                client_filter,
                commands: record.connected.as_ref().map(|c| c.commands.clone()),
                known_clients: record.clients.clone(),
            });
        }
        if !peer.is_empty() && targets.is_empty() {
            let _ = reply.send(Err(CheckError::UnknownPeer(peer)));
            return;
        }
        let check_id = self.next_check;
        self.next_check += 1;
        let check = HealthCheck {
            check_id,
            master_id: self.identity.id.clone(),
            targets,
            kafka: peer.is_empty().then(|| self.sink.clone()),
            kafka_brokers: self.kafka.borrow().brokers.clone(),
            timeout,
            report_path: self.identity.report_path.clone(),
        };
        let done = self.events_tx.clone();
        tokio::spawn(async move {
            let report = check.run().await;
            let _ = done.send(RegistryEvent::CheckDone(report.clone())).await;
            let _ = reply.send(Ok(report));
        });
    }
}

/// A client that moved between sidecars is reported by both (as down by the
/// old one): keep, per client id, the view that is connected, else the
/// most recently seen.
fn merge_client_views(views: Vec<ClientView>) -> Vec<ClientView> {
    let mut by_id: BTreeMap<String, ClientView> = BTreeMap::new();
    for view in views {
        let Some(info) = view.info.as_ref() else {
            continue;
        };
        let rank = |v: &ClientView| {
            v.info.as_ref().map_or((false, 0), |i| {
                (i.status != PeerStatus::Down as i32, i.last_seen_unix_nanos)
            })
        };
        match by_id.get(&info.client_id) {
            Some(existing) if rank(existing) >= rank(&view) => {}
            _ => {
                by_id.insert(info.client_id.clone(), view);
            }
        }
    }
    by_id.into_values().collect()
}

#[derive(Debug)]
struct CheckTarget {
    sidecar_id: String,
    address: String,
    /// Probe the sidecar itself (false when only one of its clients is checked).
    check_sidecar: bool,
    /// Empty: all of its clients.
    client_filter: String,
    commands: Option<mpsc::Sender<SessionCommand>>,
    known_clients: Vec<ClientInfo>,
}

struct HealthCheck {
    check_id: u64,
    master_id: String,
    targets: Vec<CheckTarget>,
    kafka: Option<KafkaSink>,
    kafka_brokers: String,
    timeout: Duration,
    report_path: PathBuf,
}

impl HealthCheck {
    async fn run(self) -> HealthCheckReport {
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
    let now = now_unix_nanos();
    let Some(commands) = target.commands else {
        let mut rows = Vec::new();
        if target.check_sidecar {
            rows.push(HealthCheckRow {
                at_unix_nanos: now,
                checker_id: master_id,
                tier: Tier::Sidecar as i32,
                peer_id: target.sidecar_id.clone(),
                address: target.address,
                status: PeerStatus::Down as i32,
                rtt_us: 0,
                detail: "not connected".to_string(),
            });
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
        let (answer, rtt) = oneshot::channel();
        let sent = commands
            .send(SessionCommand::Probe { answer })
            .await
            .is_ok();
        let outcome = if sent {
            tokio::time::timeout(timeout, rtt)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        Some(match outcome {
            Some(rtt) => HealthCheckRow {
                at_unix_nanos: now_unix_nanos(),
                checker_id: master_id.clone(),
                tier: Tier::Sidecar as i32,
                peer_id: target.sidecar_id.clone(),
                address: target.address.clone(),
                status: PeerStatus::Up as i32,
                rtt_us: u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1),
                detail: String::new(),
            },
            None => HealthCheckRow {
                at_unix_nanos: now_unix_nanos(),
                checker_id: master_id.clone(),
                tier: Tier::Sidecar as i32,
                peer_id: target.sidecar_id.clone(),
                address: target.address.clone(),
                status: PeerStatus::Down as i32,
                rtt_us: 0,
                detail: format!("no answer within {timeout:?}"),
            },
        })
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
