//! What the master knows about its peers, kept by one task.
//!
//! Stream handlers (one per sidecar) and the admin API talk to the registry
//! through [`RegistryEvent`]s on a bounded channel; nothing here is shared
//! behind a lock. The registry also computes per-second rates and starts
//! health checks ([`crate::health`] runs them).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use smesh_core::time::now_unix_nanos;
use smesh_proto::admin::{
    ClientView, HealthCheckReport, HeartbeatSample, KafkaStatus, MasterInfo, Rates, SidecarInfo,
    Stats, Status, Tier, Totals,
};
use smesh_proto::mesh::{ClientInfo, Hello, PeerStatus, Report, RttStats};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::counters::Counters;
use crate::health::{CheckTarget, HealthCheck};
use crate::kafka::KafkaSink;

pub use crate::health::CheckError;
pub use smesh_core::session::{ConnId, SessionCommand};

/// Health checks kept for the admin API's `recent_checks`.
const RECENT_CHECKS: usize = 10;

/// Clients in a `GetStatus` page when the caller does not say (an old
/// console asks for none in particular).
pub const DEFAULT_STATUS_CLIENTS: usize = 1_000;
/// Most clients in a `GetStatus` page, whatever the caller asks.
pub const MAX_STATUS_CLIENTS: usize = 5_000;
/// Most bytes of clients in a `GetStatus` page (encoded).
pub const MAX_STATUS_CLIENT_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes of sidecars in a `GetStatus` answer (encoded); beyond them the
/// answer says how many there are (`sidecars_total`).
pub const MAX_STATUS_SIDECAR_BYTES: usize = 6 * 1024 * 1024;
/// Most bytes of recent health checks in a `GetStatus` answer (encoded);
/// older reports go first, then rows of the newest.
pub const MAX_STATUS_CHECK_BYTES: usize = 2 * 1024 * 1024;

/// Which page of the merged view a `GetStatus` asks for. With the bounds
/// above, an answer stays below 13 MiB, under gRPC's 16 MiB.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusPage {
    /// Clients at most (0: [`DEFAULT_STATUS_CLIENTS`]; at most [`MAX_STATUS_CLIENTS`]).
    pub max_clients: usize,
    /// `None`: the first page, with sidecars and recent checks. Otherwise
    /// the clients whose id comes after this one.
    pub after: Option<String>,
}

impl StatusPage {
    /// The clients this page may hold.
    fn limit(&self) -> usize {
        match self.max_clients {
            0 => DEFAULT_STATUS_CLIENTS,
            n => n.min(MAX_STATUS_CLIENTS),
        }
    }
}

/// Everything that changes what the registry knows, or asks it something.
#[derive(Debug)]
pub enum RegistryEvent {
    /// A sidecar stream was welcomed.
    Connected {
        /// The stream.
        conn: ConnId,
        /// What the sidecar said about itself.
        hello: Hello,
        /// Its address.
        address: String,
        /// When the certificate it connected with expires (0: plaintext).
        certificate_not_after_unix_nanos: i64,
        /// Reaches the sidecar's session (probes for health checks).
        commands: mpsc::Sender<SessionCommand>,
    },
    /// Sent by the stream handler once per heartbeat interval.
    Heartbeat {
        /// The stream.
        conn: ConnId,
        /// Round trips of its pings.
        rtt: RttStats,
        /// Up, degraded or down.
        status: PeerStatus,
        /// When it last answered (0 = never).
        last_pong_unix_nanos: i64,
        /// Events taken on this stream.
        events_forwarded: u64,
    },
    /// A sidecar's periodic report (its clients).
    Report {
        /// The stream.
        conn: ConnId,
        /// What it said.
        report: Report,
    },
    /// A sidecar stream ended.
    Disconnected {
        /// The stream.
        conn: ConnId,
        /// Why, for the log.
        reason: String,
    },
    /// The merged view, for the admin API: one page of it.
    GetStatus {
        /// Which clients.
        page: StatusPage,
        /// Where it goes.
        reply: oneshot::Sender<Status>,
    },
    /// Run a health check.
    HealthCheck {
        /// One sidecar or client id, or empty for every peer.
        peer: String,
        /// Per probe.
        timeout: Duration,
        /// Where the report goes.
        reply: oneshot::Sender<Result<HealthCheckReport, CheckError>>,
    },
    /// A health check finished (kept for `recent_checks`).
    CheckDone {
        /// Which peer was checked (empty: all).
        peer: String,
        /// What it found.
        report: HealthCheckReport,
    },
}

/// Different health checks running at once at most; asking for a running
/// one again joins it.
pub const MAX_CHECKS_IN_FLIGHT: usize = 4;

/// Static facts about this master.
#[derive(Clone, Debug)]
pub struct MasterIdentity {
    /// The master's id.
    pub id: String,
    /// Its data-plane address, once bound.
    pub address: String,
    /// When it started (wall clock), for the console.
    pub started_unix_nanos: i64,
    /// When it started (monotonic), for the uptime.
    pub started: Instant,
    /// `healthCheckReport.csv`.
    pub report_path: PathBuf,
    /// Its certificates (`None`: plaintext), for when they expire.
    pub tls: Option<smesh_core::tls::NodeTls>,
}

/// A handle to the registry task: cheap to clone, used by streams and the admin API.
#[derive(Clone, Debug)]
pub struct RegistryHandle {
    /// Events into the registry task.
    pub events: mpsc::Sender<RegistryEvent>,
    /// Totals and rates, refreshed once a second.
    pub stats: watch::Receiver<Stats>,
    /// Every RTT sample as it is measured (sidecars, and clients through them).
    pub heartbeats: broadcast::Sender<HeartbeatSample>,
    /// Whether Kafka answers.
    pub kafka: watch::Receiver<KafkaStatus>,
}

impl RegistryHandle {
    /// The merged view of this master and its peers: the first page (at
    /// most [`DEFAULT_STATUS_CLIENTS`] clients).
    pub async fn status(&self) -> Option<Status> {
        self.status_page(StatusPage::default()).await
    }

    /// One page of the merged view (see [`StatusPage`]).
    pub async fn status_page(&self, page: StatusPage) -> Option<Status> {
        let (reply, answer) = oneshot::channel();
        self.events
            .send(RegistryEvent::GetStatus { page, reply })
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
    /// When its last stream ended (`None` while connected).
    gone_since: Option<Instant>,
    /// When the certificate of its stream expires (0: plaintext).
    certificate_not_after: i64,
}

/// How long a disconnected sidecar (and the clients it reported) stays in
/// the registry, for the operator to see who is gone.
pub const FORGET_DISCONNECTED_AFTER: Duration = Duration::from_secs(3600);

/// Most disconnected sidecars kept; beyond it the longest gone are
/// forgotten first, so made-up sidecar ids cannot grow the master.
pub const MAX_DISCONNECTED_SIDECARS: usize = 1000;

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
    /// Running checks by peer (empty: all), with everyone waiting for each.
    checks_in_flight: HashMap<String, Vec<oneshot::Sender<Result<HealthCheckReport, CheckError>>>>,
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
    /// The registry task and its handle.
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
            checks_in_flight: HashMap::new(),
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
                certificate_not_after_unix_nanos,
                commands,
            } => {
                self.connected(conn, hello, address, commands);
                if let Some(record) = self.record_mut(conn) {
                    record.certificate_not_after = certificate_not_after_unix_nanos;
                }
            }
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
                            record.gone_since = Some(Instant::now());
                            record.status = PeerStatus::Down;
                            for client in &mut record.clients {
                                client.status = PeerStatus::Down as i32;
                            }
                            info!(sidecar = %id, %reason, "sidecar disconnected");
                        }
                    }
                }
            }
            RegistryEvent::GetStatus { page, reply } => {
                let _ = reply.send(self.status(&page));
            }
            RegistryEvent::HealthCheck {
                peer,
                timeout,
                reply,
            } => self.start_check(peer, timeout, reply),
            RegistryEvent::CheckDone { peer, report } => {
                for reply in self.checks_in_flight.remove(&peer).unwrap_or_default() {
                    let _ = reply.send(Ok(report.clone()));
                }
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
                gone_since: None,
                certificate_not_after: 0,
            });
        if let Some(previous) = &record.connected {
            // The same id on two live streams: usually a reconnect racing the
            // old stream's end; if it persists, two sidecars share an id.
            warn!(sidecar = %hello.node_id, peer = %hello.node_id, %address, old = previous.conn, new = conn, "sidecar id connected again; following the newest stream");
            self.conns.remove(&previous.conn);
        }
        record.address = address;
        record.version = hello.version;
        record.connected = Some(Connection { conn, commands });
        record.gone_since = None;
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
            certificate_not_after_unix_nanos: self
                .identity
                .tls
                .as_ref()
                .and_then(smesh_core::tls::NodeTls::not_after)
                .map_or(0, smesh_core::time::unix_nanos),
        }
    }

    /// One page of the merged view, within the `MAX_STATUS_*` bounds.
    fn status(&self, page: &StatusPage) -> Status {
        let first = page.after.is_none();
        let mut sidecars = Vec::new();
        let mut sidecar_bytes = 0;
        if first {
            for record in self.sidecars.values() {
                let info = sidecar_info(record);
                let size = info.encoded_len();
                if sidecar_bytes + size > MAX_STATUS_SIDECAR_BYTES {
                    break;
                }
                sidecar_bytes += size;
                sidecars.push(info);
            }
        }
        let merged = merge_clients(self.sidecars.values());
        let after = match &page.after {
            Some(after) => Bound::Excluded(after.as_str()),
            None => Bound::Unbounded,
        };
        let mut rest = merged.range::<str, _>((after, Bound::Unbounded)).peekable();
        let (limit, mut clients, mut client_bytes) = (page.limit(), Vec::new(), 0);
        while let Some((_, (sidecar, info))) = rest.peek() {
            let view = ClientView {
                sidecar_id: (*sidecar).to_string(),
                info: Some((*info).clone()),
            };
            let size = view.encoded_len();
            // A page holds one client at least, so paging always ends.
            if clients.len() >= limit
                || (!clients.is_empty() && client_bytes + size > MAX_STATUS_CLIENT_BYTES)
            {
                break;
            }
            client_bytes += size;
            clients.push(view);
            rest.next();
        }
        let next_page_token = match (rest.peek(), clients.last()) {
            (Some(_), Some(last)) => last
                .info
                .as_ref()
                .map(|i| i.client_id.clone())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let (recent_checks, check_rows_left_out) = if first {
            bounded_checks(&self.recent_checks, MAX_STATUS_CHECK_BYTES)
        } else {
            (Vec::new(), 0)
        };
        Status {
            master: Some(self.master_info()),
            sidecars,
            clients,
            recent_checks,
            clients_total: u32::try_from(merged.len()).unwrap_or(u32::MAX),
            next_page_token,
            sidecars_total: u32::try_from(self.sidecars.len()).unwrap_or(u32::MAX),
            check_rows_left_out,
        }
    }

    /// Forgets sidecars gone longer than [`FORGET_DISCONNECTED_AFTER`], and
    /// the longest gone beyond [`MAX_DISCONNECTED_SIDECARS`].
    fn forget(&mut self, now: Instant) {
        smesh_core::retention::forget_gone(
            &mut self.sidecars,
            now,
            FORGET_DISCONNECTED_AFTER,
            MAX_DISCONNECTED_SIDECARS,
            |record| record.gone_since,
        );
    }

    fn publish_stats(&mut self) {
        let now = Instant::now();
        self.forget(now);
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
        // The same check asked again while it runs joins it: a check fans
        // out to every peer and appends a row per peer to the report.
        if let Some(waiting) = self.checks_in_flight.get_mut(&peer) {
            waiting.push(reply);
            return;
        }
        if self.checks_in_flight.len() >= MAX_CHECKS_IN_FLIGHT {
            let _ = reply.send(Err(CheckError::Busy(self.checks_in_flight.len())));
            return;
        }
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
        self.checks_in_flight.insert(peer.clone(), vec![reply]);
        let done = self.events_tx.clone();
        tokio::spawn(async move {
            let report = check.run().await;
            let _ = done.send(RegistryEvent::CheckDone { peer, report }).await;
        });
    }
}

/// What the admin API says of one sidecar.
fn sidecar_info(record: &SidecarRecord) -> SidecarInfo {
    let connected_clients = record
        .clients
        .iter()
        .filter(|c| c.status != PeerStatus::Down as i32)
        .count();
    SidecarInfo {
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
        certificate_not_after_unix_nanos: record.certificate_not_after,
    }
}

/// Every client by id, with the sidecar that reports it (borrowed: only a
/// page is copied). A client that moved between sidecars is reported by
/// both (as down by the old one): keep, per client id, the view that is
/// connected, else the most recently seen.
fn merge_clients<'a>(
    sidecars: impl Iterator<Item = &'a SidecarRecord>,
) -> BTreeMap<&'a str, (&'a str, &'a ClientInfo)> {
    let rank = |i: &ClientInfo| (i.status != PeerStatus::Down as i32, i.last_seen_unix_nanos);
    let mut by_id: BTreeMap<&str, (&str, &ClientInfo)> = BTreeMap::new();
    for record in sidecars {
        for info in &record.clients {
            match by_id.get(info.client_id.as_str()) {
                Some((_, existing)) if rank(existing) >= rank(info) => {}
                _ => {
                    by_id.insert(info.client_id.as_str(), (record.id.as_str(), info));
                }
            }
        }
    }
    by_id
}

/// The newest reports that fit in `max_bytes` (encoded), and how many rows
/// were left out: older reports go whole, the newest loses its last rows.
fn bounded_checks(
    reports: &[HealthCheckReport],
    max_bytes: usize,
) -> (Vec<HealthCheckReport>, u32) {
    let (mut kept, mut bytes, mut left_out, mut full) = (Vec::new(), 0, 0usize, false);
    for report in reports {
        let size = report.encoded_len();
        if !full && bytes + size <= max_bytes {
            bytes += size;
            kept.push(report.clone());
            continue;
        }
        let newest = kept.is_empty() && !full;
        full = true;
        if newest {
            let mut partial = HealthCheckReport {
                rows: Vec::new(),
                ..report.clone()
            };
            bytes += partial.encoded_len();
            for row in &report.rows {
                // A row's share of the report: itself, its tag and length.
                let size = row.encoded_len() + 8;
                if bytes + size > max_bytes {
                    break;
                }
                bytes += size;
                partial.rows.push(row.clone());
            }
            left_out += report.rows.len() - partial.rows.len();
            kept.push(partial);
        } else {
            left_out += report.rows.len();
        }
    }
    (kept, u32::try_from(left_out).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use smesh_proto::mesh::{NodeKind, PeerStatus};

    use crate::kafka::KafkaConfig;

    /// A registry task fed only through its handle, as streams feed it.
    fn registry() -> (RegistryHandle, CancellationToken) {
        registry_reporting(PathBuf::from("unused.csv"))
    }

    fn registry_reporting(report_path: PathBuf) -> (RegistryHandle, CancellationToken) {
        let config = KafkaConfig {
            // Nothing listens there; the producer is never used in these tests.
            brokers: "127.0.0.1:1".to_string(),
            topic: "t".to_string(),
            compression: "none".to_string(),
            delivery_timeout: Duration::from_secs(1),
            unavailable_after: Duration::from_secs(1),
            overrides: Vec::new(),
            client_id: "test".to_string(),
        };
        let sink = KafkaSink::new(&config).expect("a producer");
        let (_kafka_tx, kafka) = watch::channel(KafkaStatus::default());
        let identity = MasterIdentity {
            id: "M1".to_string(),
            address: String::new(),
            started_unix_nanos: 0,
            started: Instant::now(),
            report_path,
            tls: None,
        };
        let (registry, handle) =
            Registry::new(identity, sink, Arc::new(Counters::default()), kafka);
        let token = CancellationToken::new();
        tokio::spawn(registry.run(token.clone()));
        (handle, token)
    }

    async fn connect(handle: &RegistryHandle, conn: ConnId, sidecar: &str) {
        let (commands, _) = mpsc::channel(1);
        handle
            .events
            .send(RegistryEvent::Connected {
                conn,
                hello: Hello {
                    node_id: sidecar.to_string(),
                    kind: NodeKind::Sidecar as i32,
                    version: "v".to_string(),
                    incarnation: String::new(),
                },
                address: format!("127.0.0.1:{conn}"),
                certificate_not_after_unix_nanos: 0,
                commands,
            })
            .await
            .expect("registry running");
    }

    async fn report(handle: &RegistryHandle, conn: ConnId, clients: Vec<ClientInfo>) {
        handle
            .events
            .send(RegistryEvent::Report {
                conn,
                report: Report {
                    clients,
                    ..Report::default()
                },
            })
            .await
            .expect("registry running");
    }

    fn client(id: &str, status: PeerStatus, last_seen: i64) -> ClientInfo {
        ClientInfo {
            client_id: id.to_string(),
            status: status as i32,
            last_seen_unix_nanos: last_seen,
            ..ClientInfo::default()
        }
    }

    /// (client id, sidecar id, status) of every client in the merged view.
    fn clients(status: &Status) -> Vec<(String, String, i32)> {
        status
            .clients
            .iter()
            .map(|v| {
                let info = v.info.clone().unwrap_or_default();
                (info.client_id, v.sidecar_id.clone(), info.status)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_client_seen_by_two_sidecars_shows_where_it_is_connected() {
        let (handle, _token) = registry();
        connect(&handle, 1, "S1").await;
        connect(&handle, 2, "S2").await;
        // c1 moved from S1 to S2: S1 still reports it (down, seen later).
        report(
            &handle,
            1,
            vec![
                client("c1", PeerStatus::Down, 200),
                client("c2", PeerStatus::Up, 100),
            ],
        )
        .await;
        report(&handle, 2, vec![client("c1", PeerStatus::Up, 150)]).await;
        let status = handle.status().await.expect("status");
        assert_eq!(
            clients(&status),
            vec![
                ("c1".to_string(), "S2".to_string(), PeerStatus::Up as i32),
                ("c2".to_string(), "S1".to_string(), PeerStatus::Up as i32),
            ]
        );
        let connected: Vec<(String, u32)> = status
            .sidecars
            .iter()
            .map(|s| (s.id.clone(), s.clients))
            .collect();
        assert_eq!(
            connected,
            vec![("S1".to_string(), 1), ("S2".to_string(), 1)]
        );

        // When nobody has it connected, the latest sighting wins.
        report(&handle, 2, vec![client("c1", PeerStatus::Down, 150)]).await;
        let status = handle.status().await.expect("status");
        assert_eq!(clients(&status)[0].1, "S1", "seen last through S1");
    }

    #[tokio::test]
    async fn a_report_replaces_the_sidecars_client_list() {
        let (handle, _token) = registry();
        connect(&handle, 1, "S1").await;
        report(&handle, 1, vec![client("c1", PeerStatus::Up, 1)]).await;
        report(&handle, 1, vec![client("c2", PeerStatus::Up, 2)]).await;
        let status = handle.status().await.expect("status");
        let ids: Vec<String> = clients(&status).into_iter().map(|c| c.0).collect();
        assert_eq!(ids, vec!["c2".to_string()]);
    }

    #[tokio::test]
    async fn a_running_check_is_joined_and_different_checks_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (handle, _token) = registry_reporting(dir.path().join("report.csv"));
        // A sidecar that never answers: a check of it lasts its whole timeout.
        let (commands, _unanswered) = mpsc::channel(64);
        handle
            .events
            .send(RegistryEvent::Connected {
                conn: 1,
                hello: Hello {
                    node_id: "S1".to_string(),
                    kind: NodeKind::Sidecar as i32,
                    version: "v".to_string(),
                    incarnation: String::new(),
                },
                address: "127.0.0.1:1".to_string(),
                certificate_not_after_unix_nanos: 0,
                commands,
            })
            .await
            .expect("registry running");
        let clients = (0..=MAX_CHECKS_IN_FLIGHT)
            .map(|i| client(&format!("c{i}"), PeerStatus::Up, 1))
            .collect();
        report(&handle, 1, clients).await;
        let timeout = Duration::from_millis(500);

        // Asked twice at once: one check, one set of rows.
        let (first, second) = tokio::join!(
            handle.health_check(String::new(), timeout),
            handle.health_check(String::new(), timeout)
        );
        let (first, second) = (first.expect("a report"), second.expect("a report"));
        assert_eq!(
            first.check_id, second.check_id,
            "the second joined the first"
        );
        let rows = std::fs::read_to_string(dir.path().join("report.csv")).expect("report");
        assert_eq!(
            rows.lines().filter(|l| l.contains(",sidecar,S1,")).count(),
            1
        );

        // Different checks at once: bounded, the one too many told why.
        let checks = (0..=MAX_CHECKS_IN_FLIGHT).map(|i| {
            let handle = handle.clone();
            async move { handle.health_check(format!("c{i}"), timeout).await }
        });
        let outcomes = futures::future::join_all(checks).await;
        let busy = outcomes
            .iter()
            .filter(|o| matches!(o, Err(CheckError::Busy(_))))
            .count();
        assert_eq!(busy, 1, "{outcomes:?}");
    }

    #[tokio::test]
    async fn the_longest_gone_sidecars_are_forgotten_beyond_the_cap() {
        let (handle, _token) = registry();
        let n = MAX_DISCONNECTED_SIDECARS + 5;
        for i in 0..n {
            let conn = i as ConnId + 1;
            connect(&handle, conn, &format!("S{i:04}")).await;
            handle
                .events
                .send(RegistryEvent::Disconnected {
                    conn,
                    reason: "gone".to_string(),
                })
                .await
                .expect("registry running");
        }
        connect(&handle, 9999, "live").await;
        // Forgetting runs with the once-a-second stats.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let status = handle.status().await.expect("status");
        assert_eq!(status.sidecars.len(), MAX_DISCONNECTED_SIDECARS + 1);
        let ids: Vec<&str> = status.sidecars.iter().map(|s| s.id.as_str()).collect();
        assert!(!ids.contains(&"S0000"), "the first gone is forgotten");
        assert!(ids.contains(&"live") && ids.contains(&"S1004"));
    }

    #[tokio::test]
    async fn a_disconnect_marks_the_sidecar_and_its_clients_down() {
        let (handle, _token) = registry();
        connect(&handle, 1, "S1").await;
        report(&handle, 1, vec![client("c1", PeerStatus::Up, 1)]).await;
        handle
            .events
            .send(RegistryEvent::Disconnected {
                conn: 1,
                reason: "gone".to_string(),
            })
            .await
            .expect("registry running");
        let status = handle.status().await.expect("status");
        let sidecar = &status.sidecars[0];
        assert!(!sidecar.connected);
        assert_eq!(sidecar.status, PeerStatus::Down as i32);
        assert_eq!(clients(&status)[0].2, PeerStatus::Down as i32);
    }

    #[tokio::test]
    async fn the_newest_stream_of_a_sidecar_wins_over_its_old_one() {
        let (handle, _token) = registry();
        connect(&handle, 1, "S1").await;
        // A reconnect races the old stream's end.
        connect(&handle, 2, "S1").await;
        report(&handle, 1, vec![client("stale", PeerStatus::Up, 1)]).await;
        handle
            .events
            .send(RegistryEvent::Disconnected {
                conn: 1,
                reason: "old stream ended".to_string(),
            })
            .await
            .expect("registry running");
        handle
            .events
            .send(RegistryEvent::Heartbeat {
                conn: 2,
                rtt: RttStats {
                    last_us: 42,
                    ..RttStats::default()
                },
                status: PeerStatus::Up,
                last_pong_unix_nanos: 7,
                events_forwarded: 9,
            })
            .await
            .expect("registry running");
        let status = handle.status().await.expect("status");
        let sidecar = &status.sidecars[0];
        assert!(
            sidecar.connected,
            "the old stream's end does not unlink the new one"
        );
        assert_eq!(sidecar.address, "127.0.0.1:2");
        assert_eq!(sidecar.rtt.as_ref().map(|r| r.last_us), Some(42));
        assert_eq!(sidecar.events_forwarded, 9);
        assert!(
            status.clients.is_empty(),
            "the old stream's report is ignored"
        );
    }

    #[tokio::test]
    async fn status_comes_in_pages_that_cover_every_client_once() {
        let (handle, _token) = registry();
        for (conn, sidecar) in [(1, "S1"), (2, "S2")] {
            connect(&handle, conn, sidecar).await;
            let clients = (0..2500)
                .map(|i| client(&format!("{sidecar}-c{i:05}"), PeerStatus::Up, 1))
                .collect();
            report(&handle, conn, clients).await;
        }
        let mut seen = Vec::new();
        let mut page = StatusPage::default();
        let mut pages = 0;
        loop {
            let status = handle.status_page(page.clone()).await.expect("status");
            pages += 1;
            assert_eq!(status.clients_total, 5000);
            assert!(status.clients.len() <= DEFAULT_STATUS_CLIENTS);
            // Sidecars and checks come with the first page only.
            assert_eq!(status.sidecars.len(), if pages == 1 { 2 } else { 0 });
            assert_eq!(status.sidecars_total, 2);
            seen.extend(clients(&status).into_iter().map(|c| c.0));
            if status.next_page_token.is_empty() {
                break;
            }
            page.after = Some(status.next_page_token);
        }
        assert_eq!(pages, 5);
        let mut expected = seen.clone();
        expected.sort();
        expected.dedup();
        assert_eq!(seen, expected, "in id order, each once");
        assert_eq!(seen.len(), 5000);

        let page = StatusPage {
            max_clients: 1_000_000,
            after: None,
        };
        let status = handle.status_page(page).await.expect("status");
        assert_eq!(status.clients.len(), MAX_STATUS_CLIENTS);
        assert!(status.next_page_token.is_empty());
    }

    #[tokio::test]
    async fn a_page_stays_within_its_bytes() {
        let (handle, _token) = registry();
        connect(&handle, 1, "S1").await;
        // Clients with long (valid) ids and full RTT histories.
        let clients = (0..MAX_STATUS_CLIENTS)
            .map(|i| ClientInfo {
                rtt: Some(RttStats {
                    recent_us: vec![u64::MAX; 120],
                    ..RttStats::default()
                }),
                version: "v".repeat(64),
                ..client(&format!("{i:05}{}", "x".repeat(190)), PeerStatus::Up, 1)
            })
            .collect();
        report(&handle, 1, clients).await;
        let page = StatusPage {
            max_clients: u32::MAX as usize,
            after: None,
        };
        let status = handle.status_page(page).await.expect("status");
        let bytes: usize = status.clients.iter().map(Message::encoded_len).sum();
        assert!(bytes <= MAX_STATUS_CLIENT_BYTES, "{bytes}");
        assert!(status.clients.len() < MAX_STATUS_CLIENTS);
        assert!(!status.next_page_token.is_empty());
        assert!(status.encoded_len() < smesh_core::grpc::MAX_MESSAGE_BYTES);
    }

    #[test]
    fn recent_checks_lose_old_reports_then_rows_of_the_newest() {
        let report = |id, rows| HealthCheckReport {
            check_id: id,
            rows: (0..rows)
                .map(|i| smesh_proto::admin::HealthCheckRow {
                    peer_id: format!("peer-{i:06}"),
                    detail: "d".repeat(100),
                    ..Default::default()
                })
                .collect(),
            ..HealthCheckReport::default()
        };
        let reports = vec![report(3, 100), report(2, 100), report(1, 100)];
        let one = reports[0].encoded_len();
        let (kept, left_out) = bounded_checks(&reports, one * 2 + 10);
        assert_eq!(kept.iter().map(|r| r.check_id).collect::<Vec<_>>(), [3, 2]);
        assert_eq!(left_out, 100);
        let (kept, left_out) = bounded_checks(&reports, one / 2);
        assert_eq!(kept.len(), 1);
        assert!(kept[0].encoded_len() <= one / 2);
        assert_eq!(left_out as usize, 300 - kept[0].rows.len());
        assert!(kept[0].rows.len() > 10, "{}", kept[0].rows.len());
    }
}
