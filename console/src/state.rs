//! What the console knows: per master, the last status, stats and heartbeat
//! samples; merged across masters into rows for the views.
//!
//! Everything here is plain data and pure functions, so the dashboard, the
//! `status` command and the tests share one view of the mesh.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use smesh_proto::admin::{HealthCheckReport, HeartbeatSample, Stats, Status, Tier};
use smesh_proto::mesh::PeerStatus;

/// Samples kept per peer and per rate sparkline.
pub const HISTORY: usize = 120;

/// Finished health checks kept (the views show each master's latest).
pub const CHECKS_KEPT: usize = 20;

/// How the console's link to one master stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// Not connected yet, or lost and being retried with backoff.
    Connecting {
        /// Failed attempts in a row (0 before the first one fails).
        attempt: u32,
        /// Why the last attempt failed, for the title bar.
        error: Option<String>,
    },
    /// Connected: status, stats and heartbeats are flowing.
    Connected,
}

/// One master as the console sees it.
#[derive(Debug, Clone)]
pub struct MasterView {
    /// The admin address the console dials.
    pub address: String,
    /// The console's link to it.
    pub connection: Connection,
    /// Its last status (sidecars, clients, Kafka); kept while it is away,
    /// so a master that goes away does not empty the screen.
    pub status: Option<Status>,
    /// Its last totals and rates from the stats stream.
    pub stats: Option<Stats>,
    /// Published events per second, oldest first.
    pub published_history: VecDeque<u64>,
}

impl MasterView {
    /// A master at `address` that has not answered yet.
    pub fn new(address: String) -> Self {
        Self {
            address,
            connection: Connection::Connecting {
                attempt: 0,
                error: None,
            },
            status: None,
            stats: None,
            published_history: VecDeque::new(),
        }
    }

    /// The master's own id, once known.
    pub fn id(&self) -> Option<&str> {
        self.status.as_ref()?.master.as_ref().map(|m| m.id.as_str())
    }
}

/// RTT samples of one peer, as streamed by a master.
#[derive(Debug, Clone, Default)]
pub struct PeerRtt {
    /// The peer's tier, as the wire numbers it.
    pub tier: i32,
    /// Who measured it: the master, or the sidecar in front of a client.
    pub checker: String,
    /// The last [`HISTORY`] round trips in µs, oldest first.
    pub samples: VecDeque<u64>,
    /// When the last sample was taken (ns since the epoch).
    pub last_at: i64,
}

/// A finished (or failed) health check.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    /// The master that ran it (its id, else its address).
    pub master: String,
    /// Its report, or why it could not run.
    pub result: Result<HealthCheckReport, String>,
}

/// Everything the console knows.
#[derive(Debug, Clone, Default)]
pub struct Mesh {
    /// Every watched master, in the order they were given.
    pub masters: Vec<MasterView>,
    /// By (tier, peer id).
    pub rtt: BTreeMap<(i32, String), PeerRtt>,
    /// Finished health checks, newest first, at most [`CHECKS_KEPT`].
    pub checks: Vec<CheckOutcome>,
}

/// How a peer is doing, as the console shows it.
///
/// The wire carries a `PeerStatus` number; it becomes a `PeerState` once,
/// where rows are built ([`PeerState::from_wire`]), so views, sorting and
/// checks compare variants, never words. Serialises as its word (`"up"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// Answering heartbeats.
    Up,
    /// Missed a heartbeat, not yet presumed dead.
    Degraded,
    /// Presumed dead (too many missed heartbeats, or not connected).
    Down,
    /// Not reported, or a number this console does not know.
    Unknown,
}

impl PeerState {
    /// Every state, healthiest first: the order of tallies and of the help.
    pub const ALL: [PeerState; 4] = [
        PeerState::Up,
        PeerState::Degraded,
        PeerState::Down,
        PeerState::Unknown,
    ];

    /// The state a `PeerStatus` number stands for; unknown numbers are
    /// [`PeerState::Unknown`].
    pub fn from_wire(status: i32) -> Self {
        match PeerStatus::try_from(status) {
            Ok(PeerStatus::Up) => PeerState::Up,
            Ok(PeerStatus::Degraded) => PeerState::Degraded,
            Ok(PeerStatus::Down) => PeerState::Down,
            _ => PeerState::Unknown,
        }
    }

    /// Problems first: down, degraded, unknown, up (how a status column
    /// sorts).
    pub fn problems_first(self) -> u8 {
        match self {
            PeerState::Down => 0,
            PeerState::Degraded => 1,
            PeerState::Unknown => 2,
            PeerState::Up => 3,
        }
    }

    /// The word people and JSON read.
    pub fn word(self) -> &'static str {
        match self {
            PeerState::Up => "up",
            PeerState::Degraded => "degraded",
            PeerState::Down => "down",
            PeerState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so `{:<8}` lines the words up in `status`.
        f.pad(self.word())
    }
}

/// Which tier a peer belongs to, converted once from the wire's `Tier`
/// number ([`PeerTier::from_wire`]). Serialises as its word (`"sidecar"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerTier {
    /// A master (publishes to Kafka).
    Master,
    /// A sidecar (between clients and masters).
    Sidecar,
    /// A client (reads sources, spools).
    Client,
    /// The Kafka cluster a master publishes to.
    Kafka,
    /// Not reported, or a number this console does not know.
    Unknown,
}

impl PeerTier {
    /// The tier a `Tier` number stands for; unknown numbers are
    /// [`PeerTier::Unknown`].
    pub fn from_wire(tier: i32) -> Self {
        match Tier::try_from(tier) {
            Ok(Tier::Master) => PeerTier::Master,
            Ok(Tier::Sidecar) => PeerTier::Sidecar,
            Ok(Tier::Client) => PeerTier::Client,
            Ok(Tier::Kafka) => PeerTier::Kafka,
            _ => PeerTier::Unknown,
        }
    }

    /// The word people and JSON read.
    pub fn word(self) -> &'static str {
        match self {
            PeerTier::Master => "master",
            PeerTier::Sidecar => "sidecar",
            PeerTier::Client => "client",
            PeerTier::Kafka => "kafka",
            PeerTier::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for PeerTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.word())
    }
}

/// One master, as the overview and `status` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MasterRow {
    /// The admin address the console dials.
    pub address: String,
    /// Whether the console is connected to it now.
    pub connected: bool,
    /// Why the last connection attempt failed.
    pub error: Option<String>,
    /// Its id; empty until it answered.
    pub id: String,
    /// Its version.
    pub version: String,
    /// How long it has run.
    pub uptime_secs: u64,
    /// Whether it can publish to Kafka.
    pub kafka_ready: bool,
    /// The Kafka bootstrap servers it publishes to.
    pub kafka_brokers: String,
    /// What it says about Kafka (brokers seen, the last error).
    pub kafka_detail: String,
    /// Events received from sidecars.
    pub events_in: u64,
    /// Events Kafka acknowledged.
    pub published: u64,
    /// Events Kafka refused for good.
    pub failed: u64,
    /// Resent events it recognised and did not publish again.
    pub duplicates: u64,
    /// Published events per second, lately.
    pub published_per_s: f64,
    /// Received events per second, lately.
    pub events_in_per_s: f64,
    /// Clients it knows that the console did not fetch (beyond
    /// `remote::MAX_CLIENTS_FETCHED`), so not in the client rows.
    pub clients_not_shown: u64,
    /// Sidecars it knows that did not fit in its answer.
    pub sidecars_not_shown: u64,
    /// When the master's own certificate expires (0: no TLS).
    pub certificate_not_after_unix_nanos: i64,
}

/// One sidecar, merged across masters (see [`Mesh::sidecar_rows`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SidecarRow {
    /// Its id.
    pub id: String,
    /// The master whose view this row is.
    pub master: String,
    /// Where its stream to that master comes from.
    pub address: String,
    /// How its heartbeats go.
    pub status: PeerState,
    /// Whether its stream to that master is open.
    pub connected: bool,
    /// Since when (ns since the epoch; 0 unknown).
    pub connected_since_unix_nanos: i64,
    /// Its last heartbeat answer (ns since the epoch; 0 none).
    pub last_heartbeat_unix_nanos: i64,
    /// The last round trip (µs; 0 unknown).
    pub rtt_last_us: u64,
    /// The average round trip (µs).
    pub rtt_avg_us: u64,
    /// The 99th percentile round trip (µs).
    pub rtt_p99_us: u64,
    /// Events it forwarded to that master.
    pub events_forwarded: u64,
    /// Clients it reports as connected.
    pub clients: u32,
    /// When the certificate it connected with expires (0: plaintext).
    pub certificate_not_after_unix_nanos: i64,
}

/// One client, merged across masters (see [`Mesh::client_rows`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientRow {
    /// Its id (the Kafka record key).
    pub id: String,
    /// The sidecar that reports it.
    pub sidecar: String,
    /// The master that sidecar reports to.
    pub master: String,
    /// Where its stream to the sidecar comes from.
    pub address: String,
    /// How its heartbeats go.
    pub status: PeerState,
    /// When the sidecar first saw it (ns since the epoch).
    pub first_seen_unix_nanos: i64,
    /// When the sidecar last heard from it (ns since the epoch).
    pub last_seen_unix_nanos: i64,
    /// Its events the sidecar forwarded.
    pub events_sent: u64,
    /// Its events acknowledged end to end, as the client counts them.
    pub events_acked: u64,
    /// Its events forwarded and not acknowledged yet.
    pub in_flight: u64,
    /// The last round trip (µs; 0 unknown).
    pub rtt_last_us: u64,
    /// The average round trip (µs).
    pub rtt_avg_us: u64,
    /// The 99th percentile round trip (µs).
    pub rtt_p99_us: u64,
    /// Events waiting in its spool.
    pub backlog_rows: u64,
    /// Bytes of its spool.
    pub backlog_bytes: u64,
    /// Its oldest spooled event (ns since the epoch; 0 spool empty).
    pub backlog_oldest_unix_nanos: i64,
    /// When the certificate it connected with expires (0: plaintext).
    pub certificate_not_after_unix_nanos: i64,
}

/// Round trips of one peer, from the heartbeats the masters stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeartbeatRow {
    /// The peer's tier.
    pub tier: PeerTier,
    /// The peer's id.
    pub peer: String,
    /// Who measured it.
    pub checker: String,
    /// The latest round trip (µs).
    pub last_us: u64,
    /// The average of the kept samples (µs).
    pub avg_us: u64,
    /// The 99th percentile of the kept samples (µs).
    pub p99_us: u64,
    /// The kept samples (µs), oldest first, for the sparkline.
    #[serde(skip)]
    pub samples: Vec<u64>,
}

/// One peer of a master's latest health check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckRow {
    /// The master that ran the check.
    pub master: String,
    /// The check's number at that master.
    pub check_id: u64,
    /// When the peer was probed (ns since the epoch).
    pub at_unix_nanos: i64,
    /// Who probed it: the master, or the sidecar in front of a client.
    pub checker: String,
    /// The peer's tier.
    pub tier: PeerTier,
    /// The peer's id.
    pub peer: String,
    /// Where the peer was reached.
    pub address: String,
    /// What the probe found.
    pub status: PeerState,
    /// The probe's round trip (µs; 0 unanswered).
    pub rtt_us: u64,
    /// What the checker added (why it is down, Kafka's brokers).
    pub detail: String,
}

impl Mesh {
    /// Masters at these admin addresses, none heard from yet.
    pub fn new(addresses: Vec<String>) -> Self {
        Self {
            masters: addresses.into_iter().map(MasterView::new).collect(),
            rtt: BTreeMap::new(),
            checks: Vec::new(),
        }
    }

    /// A master's new status replaces its last one.
    pub fn apply_status(&mut self, master: usize, status: Status) {
        if let Some(view) = self.masters.get_mut(master) {
            view.status = Some(status);
        }
    }

    /// A master's new stats replace its last ones and extend its rate history.
    pub fn apply_stats(&mut self, master: usize, stats: Stats) {
        if let Some(view) = self.masters.get_mut(master) {
            let published = stats.rates.as_ref().map_or(0.0, |r| r.published_per_s);
            if view.published_history.len() == HISTORY {
                view.published_history.pop_front();
            }
            view.published_history
                .push_back(published.round().max(0.0) as u64);
            view.stats = Some(stats);
        }
    }

    /// A round trip a master measured (or had measured), kept per peer.
    pub fn apply_heartbeat(&mut self, sample: HeartbeatSample) {
        let entry = self
            .rtt
            .entry((sample.tier, sample.peer_id.clone()))
            .or_default();
        entry.tier = sample.tier;
        entry.checker = sample.checker_id;
        entry.last_at = sample.at_unix_nanos;
        if entry.samples.len() == HISTORY {
            entry.samples.pop_front();
        }
        entry.samples.push_back(sample.rtt_us);
    }

    /// A finished health check, the newest first.
    pub fn apply_check(&mut self, outcome: CheckOutcome) {
        self.checks.insert(0, outcome);
        self.checks.truncate(CHECKS_KEPT);
    }

    /// The console's link to a master changed.
    pub fn set_connection(&mut self, master: usize, connection: Connection) {
        if let Some(view) = self.masters.get_mut(master) {
            view.connection = connection;
        }
    }

    fn master_label(view: &MasterView) -> String {
        view.id()
            .map_or_else(|| view.address.clone(), str::to_string)
    }

    /// Every master, in the order they were given.
    pub fn master_rows(&self) -> Vec<MasterRow> {
        self.masters
            .iter()
            .map(|view| {
                let master = view.status.as_ref().and_then(|s| s.master.as_ref());
                let kafka = master.and_then(|m| m.kafka.as_ref());
                let totals = view
                    .stats
                    .as_ref()
                    .and_then(|s| s.totals)
                    .or_else(|| master.and_then(|m| m.totals))
                    .unwrap_or_default();
                let rates = view
                    .stats
                    .as_ref()
                    .and_then(|s| s.rates)
                    .unwrap_or_default();
                MasterRow {
                    address: view.address.clone(),
                    connected: view.connection == Connection::Connected,
                    error: match &view.connection {
                        Connection::Connecting { error, .. } => error.clone(),
                        Connection::Connected => None,
                    },
                    id: master.map(|m| m.id.clone()).unwrap_or_default(),
                    version: master.map(|m| m.version.clone()).unwrap_or_default(),
                    uptime_secs: master.map_or(0, |m| m.uptime_ms / 1000),
                    kafka_ready: view
                        .stats
                        .as_ref()
                        .map_or_else(|| kafka.is_some_and(|k| k.ready), |s| s.kafka_ready),
                    kafka_brokers: kafka.map(|k| k.brokers.clone()).unwrap_or_default(),
                    kafka_detail: kafka.map(|k| k.detail.clone()).unwrap_or_default(),
                    events_in: totals.events_in,
                    published: totals.published,
                    failed: totals.failed,
                    duplicates: totals.duplicates,
                    published_per_s: rates.published_per_s,
                    events_in_per_s: rates.events_in_per_s,
                    clients_not_shown: view.status.as_ref().map_or(0, |s| {
                        u64::from(s.clients_total).saturating_sub(s.clients.len() as u64)
                    }),
                    sidecars_not_shown: view.status.as_ref().map_or(0, |s| {
                        u64::from(s.sidecars_total).saturating_sub(s.sidecars.len() as u64)
                    }),
                    certificate_not_after_unix_nanos: master
                        .map_or(0, |m| m.certificate_not_after_unix_nanos),
                }
            })
            .collect()
    }

    /// Clients the masters know that the console did not fetch, in all.
    pub fn clients_not_shown(&self) -> u64 {
        self.master_rows()
            .iter()
            .fold(0u64, |sum, m| sum.saturating_add(m.clients_not_shown))
    }

    /// Sidecars of every master; a sidecar known to several masters shows
    /// once, as the master it is connected to sees it.
    pub fn sidecar_rows(&self) -> Vec<SidecarRow> {
        let mut rows: BTreeMap<String, SidecarRow> = BTreeMap::new();
        for view in &self.masters {
            let Some(status) = &view.status else { continue };
            let master = Self::master_label(view);
            for s in &status.sidecars {
                let rtt = s.rtt.clone().unwrap_or_default();
                let row = SidecarRow {
                    id: s.id.clone(),
                    master: master.clone(),
                    address: s.address.clone(),
                    status: PeerState::from_wire(s.status),
                    connected: s.connected,
                    connected_since_unix_nanos: s.connected_since_unix_nanos,
                    last_heartbeat_unix_nanos: s.last_heartbeat_unix_nanos,
                    rtt_last_us: rtt.last_us,
                    rtt_avg_us: rtt.avg_us,
                    rtt_p99_us: rtt.p99_us,
                    events_forwarded: s.events_forwarded,
                    clients: s.clients,
                    certificate_not_after_unix_nanos: s.certificate_not_after_unix_nanos,
                };
                match rows.get(&s.id) {
                    Some(existing) if existing.connected && !row.connected => {}
                    _ => {
                        rows.insert(s.id.clone(), row);
                    }
                }
            }
        }
        rows.into_values().collect()
    }

    /// Clients of every master's sidecars, one row per client id (the
    /// connected view wins, else the most recently seen).
    pub fn client_rows(&self) -> Vec<ClientRow> {
        let mut rows: BTreeMap<String, ClientRow> = BTreeMap::new();
        for view in &self.masters {
            let Some(status) = &view.status else { continue };
            let master = Self::master_label(view);
            for c in &status.clients {
                let Some(info) = &c.info else { continue };
                let rtt = info.rtt.clone().unwrap_or_default();
                let backlog = info.backlog.unwrap_or_default();
                let counters = info.counters.unwrap_or_default();
                let row = ClientRow {
                    id: info.client_id.clone(),
                    sidecar: c.sidecar_id.clone(),
                    master: master.clone(),
                    address: info.address.clone(),
                    status: PeerState::from_wire(info.status),
                    first_seen_unix_nanos: info.first_seen_unix_nanos,
                    last_seen_unix_nanos: info.last_seen_unix_nanos,
                    events_sent: info.events_forwarded,
                    events_acked: counters.events_acked,
                    in_flight: info.in_flight,
                    rtt_last_us: rtt.last_us,
                    rtt_avg_us: rtt.avg_us,
                    rtt_p99_us: rtt.p99_us,
                    backlog_rows: backlog.rows,
                    backlog_bytes: backlog.bytes,
                    backlog_oldest_unix_nanos: backlog.oldest_unix_nanos,
                    certificate_not_after_unix_nanos: info.certificate_not_after_unix_nanos,
                };
                let rank = |r: &ClientRow| (r.status != PeerState::Down, r.last_seen_unix_nanos);
                match rows.get(&row.id) {
                    Some(existing) if rank(existing) >= rank(&row) => {}
                    _ => {
                        rows.insert(row.id.clone(), row);
                    }
                }
            }
        }
        rows.into_values().collect()
    }

    /// Clients with spooled events, largest backlog first, then oldest.
    pub fn backlog_rows(&self) -> Vec<ClientRow> {
        let mut rows: Vec<ClientRow> = self
            .client_rows()
            .into_iter()
            .filter(|c| c.backlog_rows > 0)
            .collect();
        rows.sort_by(|a, b| {
            b.backlog_rows.cmp(&a.backlog_rows).then(
                a.backlog_oldest_unix_nanos
                    .cmp(&b.backlog_oldest_unix_nanos),
            )
        });
        rows
    }

    /// Every peer with heartbeats, by tier and id.
    pub fn heartbeat_rows(&self) -> Vec<HeartbeatRow> {
        self.rtt
            .iter()
            .map(|((tier, peer), rtt)| {
                let samples: Vec<u64> = rtt.samples.iter().copied().collect();
                let mut sorted = samples.clone();
                sorted.sort_unstable();
                let avg = if sorted.is_empty() {
                    0
                } else {
                    sorted.iter().fold(0u64, |a, b| a.saturating_add(*b)) / sorted.len() as u64
                };
                HeartbeatRow {
                    tier: PeerTier::from_wire(*tier),
                    peer: peer.clone(),
                    checker: rtt.checker.clone(),
                    last_us: samples.last().copied().unwrap_or(0),
                    avg_us: avg,
                    p99_us: smesh_core::heartbeat::percentile(&sorted, 0.99),
                    samples,
                }
            })
            .collect()
    }

    /// Rows of the most recent health check of each master, newest first.
    pub fn check_rows(&self) -> Vec<CheckRow> {
        let mut rows = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for outcome in &self.checks {
            if !seen.insert(outcome.master.clone()) {
                continue;
            }
            if let Ok(report) = &outcome.result {
                for r in &report.rows {
                    rows.push(CheckRow {
                        master: outcome.master.clone(),
                        check_id: report.check_id,
                        at_unix_nanos: r.at_unix_nanos,
                        checker: r.checker_id.clone(),
                        tier: PeerTier::from_wire(r.tier),
                        peer: r.peer_id.clone(),
                        address: r.address.clone(),
                        status: PeerState::from_wire(r.status),
                        rtt_us: r.rtt_us,
                        detail: r.detail.clone(),
                    });
                }
            }
        }
        rows
    }

    /// Connected masters that can check `peer` (all connected ones for `None`).
    pub fn masters_for(&self, peer: Option<&str>) -> Vec<usize> {
        self.masters
            .iter()
            .enumerate()
            .filter(|(_, m)| m.connection == Connection::Connected)
            .filter(|(_, m)| match (peer, &m.status) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(peer), Some(status)) => {
                    status.sidecars.iter().any(|s| s.id == peer)
                        || status
                            .clients
                            .iter()
                            .filter_map(|c| c.info.as_ref())
                            .any(|i| i.client_id == peer)
                }
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Published events per second over all masters, oldest first.
    pub fn published_history(&self) -> Vec<u64> {
        let len = self
            .masters
            .iter()
            .map(|m| m.published_history.len())
            .max()
            .unwrap_or(0);
        (0..len)
            .map(|i| {
                self.masters
                    .iter()
                    .map(|m| {
                        let offset = len - m.published_history.len();
                        if i >= offset {
                            m.published_history[i - offset]
                        } else {
                            0
                        }
                    })
                    .fold(0u64, u64::saturating_add)
            })
            .collect()
    }
}

/// Builders of masters' answers, for the tests of the state and of the views.
#[cfg(test)]
pub(crate) mod fixtures {
    use smesh_proto::admin::{ClientView, MasterInfo, SidecarInfo, Status};
    use smesh_proto::mesh::{ClientInfo, PeerStatus};

    use super::{Connection, Mesh};

    pub(crate) const SECOND: i64 = 1_000_000_000;
    /// The clock of every fixture.
    pub(crate) const NOW: i64 = 1_750_000_000 * SECOND;
    pub(crate) const A: usize = 0;
    pub(crate) const B: usize = 1;

    pub(crate) fn sidecar(id: &str, status: PeerStatus, connected: bool) -> SidecarInfo {
        SidecarInfo {
            id: id.to_string(),
            address: format!("{id}.example:9000"),
            status: status as i32,
            connected,
            ..SidecarInfo::default()
        }
    }

    pub(crate) fn client(sidecar: &str, id: &str, status: PeerStatus, seen_ago: i64) -> ClientView {
        ClientView {
            sidecar_id: sidecar.to_string(),
            info: Some(ClientInfo {
                client_id: id.to_string(),
                status: status as i32,
                last_seen_unix_nanos: NOW - seen_ago * SECOND,
                ..ClientInfo::default()
            }),
        }
    }

    pub(crate) fn status(
        master: &str,
        sidecars: Vec<SidecarInfo>,
        clients: Vec<ClientView>,
    ) -> Status {
        Status {
            master: Some(MasterInfo {
                id: master.to_string(),
                ..MasterInfo::default()
            }),
            sidecars_total: u32::try_from(sidecars.len()).unwrap_or(u32::MAX),
            clients_total: u32::try_from(clients.len()).unwrap_or(u32::MAX),
            sidecars,
            clients,
            ..Status::default()
        }
    }

    /// Masters, all connected, each reporting its status.
    pub(crate) fn masters(statuses: Vec<Status>) -> Mesh {
        let mut mesh = Mesh::new(
            (1..=statuses.len())
                .map(|i| format!("10.0.0.{i}:9011"))
                .collect(),
        );
        for (master, status) in statuses.into_iter().enumerate() {
            mesh.set_connection(master, Connection::Connected);
            mesh.apply_status(master, status);
        }
        mesh
    }

    /// Two masters, both connected, reporting what is given.
    pub(crate) fn two_masters(a: Status, b: Status) -> Mesh {
        masters(vec![a, b])
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use smesh_proto::admin::{ClientView, HealthCheckRow, KafkaStatus, Rates, Totals};
    use smesh_proto::mesh::Backlog;

    fn ids<R>(rows: &[R], id: impl Fn(&R) -> &str) -> Vec<String> {
        rows.iter().map(|r| id(r).to_string()).collect()
    }

    #[test]
    fn a_sidecar_two_masters_know_shows_once_as_its_connected_master_sees_it() {
        use PeerStatus::{Down, Up};
        let a = || {
            status(
                "master-a",
                vec![sidecar("s2", Up, true), sidecar("s1", Down, false)],
                Vec::new(),
            )
        };
        let b = || {
            status(
                "master-b",
                vec![sidecar("s1", Up, true), sidecar("s3", Up, true)],
                vec![],
            )
        };
        // Whichever master reports first, the connected view of s1 wins.
        for mesh in [two_masters(a(), b()), two_masters(b(), a())] {
            let rows = mesh.sidecar_rows();
            assert_eq!(
                ids(&rows, |r| &r.id),
                ["s1", "s2", "s3"],
                "one row each, by id"
            );
            let s1 = &rows[0];
            assert_eq!(
                (s1.master.as_str(), s1.status, s1.connected),
                ("master-b", PeerState::Up, true)
            );
            assert_eq!(rows[1].master, "master-a");
        }
    }

    #[test]
    fn a_client_two_masters_know_shows_its_live_report_then_its_newest() {
        use PeerStatus::{Down, Up};
        let a = status(
            "master-a",
            Vec::new(),
            vec![
                // Seen more recently, but down: the other report is live.
                client("s1", "c1", Down, 1),
                client("s1", "c2", Up, 2),
                client("s1", "c3", Up, 5),
            ],
        );
        let b = status(
            "master-b",
            Vec::new(),
            vec![
                client("s2", "c1", Up, 30),
                // Up on both: the newer report (master-a's) wins.
                client("s2", "c2", Up, 20),
                // Clients without info are not counted.
                ClientView {
                    sidecar_id: "s2".into(),
                    info: None,
                },
            ],
        );
        let rows = two_masters(a, b).client_rows();
        assert_eq!(ids(&rows, |r| &r.id), ["c1", "c2", "c3"]);
        let seen: Vec<(&str, &str, PeerState)> = rows
            .iter()
            .map(|r| (r.sidecar.as_str(), r.master.as_str(), r.status))
            .collect();
        assert_eq!(
            seen,
            [
                ("s2", "master-b", PeerState::Up),
                ("s1", "master-a", PeerState::Up),
                ("s1", "master-a", PeerState::Up),
            ]
        );
    }

    #[test]
    fn a_master_that_goes_away_keeps_its_last_view_but_is_not_asked_to_check() {
        use PeerStatus::Up;
        let mut mesh = two_masters(
            status(
                "master-a",
                vec![sidecar("s1", Up, true)],
                vec![client("s1", "c1", Up, 1)],
            ),
            status(
                "master-b",
                vec![sidecar("s2", Up, true)],
                vec![client("s2", "c2", Up, 1)],
            ),
        );
        assert_eq!(mesh.masters_for(Some("c1")), [A]);
        mesh.set_connection(
            A,
            Connection::Connecting {
                attempt: 1,
                error: Some("connection refused".into()),
            },
        );

        let masters = mesh.master_rows();
        assert!(!masters[A].connected);
        assert_eq!(masters[A].error.as_deref(), Some("connection refused"));
        assert_eq!(masters[A].id, "master-a", "its id is still known");
        assert!(masters[B].connected);
        // Its last report stays on screen rather than the mesh shrinking.
        assert_eq!(ids(&mesh.sidecar_rows(), |r| &r.id), ["s1", "s2"]);
        assert_eq!(ids(&mesh.client_rows(), |r| &r.id), ["c1", "c2"]);
        // But only connected masters are asked to run checks.
        assert_eq!(mesh.masters_for(None), [B]);
        assert_eq!(mesh.masters_for(Some("c1")), Vec::<usize>::new());
        assert_eq!(mesh.masters_for(Some("s2")), [B]);
    }

    #[test]
    fn a_new_status_replaces_the_old_one_and_unknown_masters_are_ignored() {
        use PeerStatus::Up;
        let mut mesh = two_masters(
            status(
                "master-a",
                vec![sidecar("s1", Up, true), sidecar("s2", Up, true)],
                vec![],
            ),
            status("master-b", vec![], vec![]),
        );
        mesh.apply_status(A, status("master-a", vec![sidecar("s2", Up, true)], vec![]));
        assert_eq!(ids(&mesh.sidecar_rows(), |r| &r.id), ["s2"], "s1 left");

        // Updates for a master the console does not watch change nothing.
        mesh.apply_status(7, status("ghost", vec![sidecar("s9", Up, true)], vec![]));
        mesh.apply_stats(7, Stats::default());
        mesh.set_connection(7, Connection::Connected);
        assert_eq!(ids(&mesh.sidecar_rows(), |r| &r.id), ["s2"]);
        assert_eq!(mesh.masters.len(), 2);
        assert!(mesh.masters.iter().all(|m| m.stats.is_none()));
    }

    #[test]
    fn rows_of_a_master_that_never_answered_are_labelled_by_address() {
        let mut mesh = Mesh::new(vec!["10.0.0.9:9011".into()]);
        let mut anonymous = status("", vec![sidecar("s1", PeerStatus::Up, true)], vec![]);
        anonymous.master = None;
        mesh.apply_status(A, anonymous);
        assert_eq!(mesh.sidecar_rows()[0].master, "10.0.0.9:9011");
        let master = &mesh.master_rows()[A];
        assert_eq!((master.id.as_str(), master.connected), ("", false));
    }

    #[test]
    fn master_rows_take_totals_and_kafka_from_the_stats_stream_when_there_is_one() {
        let mut mesh = Mesh::new(vec!["10.0.0.1:9011".into()]);
        let mut with_kafka = status("master-a", vec![], vec![]);
        if let Some(master) = with_kafka.master.as_mut() {
            master.kafka = Some(KafkaStatus {
                ready: true,
                ..KafkaStatus::default()
            });
            master.totals = Some(Totals {
                published: 10,
                ..Totals::default()
            });
        }
        mesh.apply_status(A, with_kafka);
        let row = &mesh.master_rows()[A];
        assert_eq!((row.published, row.kafka_ready), (10, true), "status alone");

        mesh.apply_stats(
            A,
            Stats {
                totals: Some(Totals {
                    published: 25,
                    ..Totals::default()
                }),
                rates: Some(Rates {
                    published_per_s: 4.0,
                    ..Rates::default()
                }),
                kafka_ready: false,
                ..Stats::default()
            },
        );
        let row = &mesh.master_rows()[A];
        assert_eq!(
            (row.published, row.kafka_ready),
            (25, false),
            "stats are newer"
        );
        assert_eq!(row.published_per_s, 4.0);
    }

    fn stats(published_per_s: f64) -> Stats {
        Stats {
            rates: Some(Rates {
                published_per_s,
                ..Rates::default()
            }),
            ..Stats::default()
        }
    }

    #[test]
    fn published_history_adds_masters_up_aligned_at_the_newest_second() {
        let mut mesh = Mesh::new(vec!["a:1".into(), "b:1".into()]);
        for rate in [1.0, 2.0, 3.0] {
            mesh.apply_stats(A, stats(rate));
        }
        // master-b answered only lately; the rates are rounded, never negative.
        for rate in [9.6, -5.0] {
            mesh.apply_stats(B, stats(rate));
        }
        assert_eq!(mesh.published_history(), [1, 12, 3]);

        for i in 0..(HISTORY as u64 + 5) {
            mesh.apply_stats(A, stats(i as f64));
        }
        let history = mesh.published_history();
        assert_eq!(history.len(), HISTORY, "bounded");
        assert_eq!(history.last(), Some(&(HISTORY as u64 + 4)), "newest kept");
    }

    #[test]
    fn heartbeat_rows_keep_the_last_samples_of_each_peer() {
        let mut mesh = Mesh::default();
        let sample = |tier: Tier, peer: &str, rtt_us: u64| HeartbeatSample {
            at_unix_nanos: NOW,
            checker_id: "master-a".into(),
            tier: tier as i32,
            peer_id: peer.into(),
            rtt_us,
        };
        for rtt_us in 1..=(HISTORY as u64 + 30) {
            mesh.apply_heartbeat(sample(Tier::Sidecar, "s1", rtt_us));
        }
        // The same id in another tier is another peer.
        mesh.apply_heartbeat(sample(Tier::Client, "s1", 7));
        let rows = mesh.heartbeat_rows();
        assert_eq!(rows.len(), 2);
        let sidecar = rows
            .iter()
            .find(|r| r.tier == PeerTier::Sidecar)
            .expect("the sidecar's row");
        assert_eq!(sidecar.samples.len(), HISTORY, "bounded");
        assert_eq!(sidecar.samples.first(), Some(&31), "oldest dropped");
        assert_eq!(sidecar.last_us, HISTORY as u64 + 30);
        assert_eq!(sidecar.avg_us, (31 + HISTORY as u64 + 30) / 2);
        let client = rows
            .iter()
            .find(|r| r.tier == PeerTier::Client)
            .expect("the client's row");
        assert_eq!((client.last_us, client.avg_us, client.p99_us), (7, 7, 7));
    }

    fn check(master: &str, check_id: u64, peers: &[&str]) -> CheckOutcome {
        CheckOutcome {
            master: master.to_string(),
            result: Ok(HealthCheckReport {
                check_id,
                master_id: master.to_string(),
                rows: peers
                    .iter()
                    .map(|peer| HealthCheckRow {
                        peer_id: peer.to_string(),
                        tier: Tier::Client as i32,
                        status: PeerStatus::Degraded as i32,
                        ..HealthCheckRow::default()
                    })
                    .collect(),
                ..HealthCheckReport::default()
            }),
        }
    }

    #[test]
    fn only_the_latest_check_of_each_master_shows() {
        let mut mesh = Mesh::default();
        mesh.apply_check(check("master-a", 1, &["old"]));
        mesh.apply_check(check("master-b", 2, &["b1", "b2"]));
        mesh.apply_check(check("master-a", 3, &["a1"]));
        let rows = mesh.check_rows();
        let seen: Vec<(&str, u64, &str)> = rows
            .iter()
            .map(|r| (r.master.as_str(), r.check_id, r.peer.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("master-a", 3, "a1"),
                ("master-b", 2, "b1"),
                ("master-b", 2, "b2")
            ],
            "newest first"
        );
        assert_eq!(
            (rows[0].tier, rows[0].status),
            (PeerTier::Client, PeerState::Degraded)
        );

        // A failed check hides the older answer of the same master.
        mesh.apply_check(CheckOutcome {
            master: "master-b".into(),
            result: Err("unreachable".into()),
        });
        assert_eq!(ids(&mesh.check_rows(), |r| &r.peer), ["a1"]);

        for id in 0..30 {
            mesh.apply_check(check(&format!("m{id}"), id, &[]));
        }
        assert_eq!(mesh.checks.len(), 20, "bounded");
    }

    #[test]
    fn backlog_rows_are_the_spooling_clients_largest_then_oldest_first() {
        let spooling = |id: &str, rows: u64, oldest_ago: i64| {
            let mut view = client("s1", id, PeerStatus::Up, 1);
            if let Some(info) = view.info.as_mut() {
                info.backlog = Some(Backlog {
                    rows,
                    bytes: rows * 100,
                    oldest_unix_nanos: NOW - oldest_ago * SECOND,
                });
            }
            view
        };
        let mesh = two_masters(
            status(
                "master-a",
                vec![],
                vec![
                    spooling("small", 5, 60),
                    spooling("empty", 0, 0),
                    spooling("big-new", 50, 10),
                ],
            ),
            status("master-b", vec![], vec![spooling("big-old", 50, 90)]),
        );
        assert_eq!(
            ids(&mesh.backlog_rows(), |r| &r.id),
            ["big-old", "big-new", "small"]
        );
    }

    #[test]
    fn states_and_tiers_come_from_wire_numbers_and_read_as_words() {
        assert_eq!(
            PeerState::from_wire(PeerStatus::Down as i32),
            PeerState::Down
        );
        assert_eq!(
            PeerState::from_wire(PeerStatus::Unspecified as i32),
            PeerState::Unknown
        );
        assert_eq!(PeerState::from_wire(42), PeerState::Unknown);
        assert_eq!(PeerTier::from_wire(Tier::Kafka as i32), PeerTier::Kafka);
        assert_eq!(PeerTier::from_wire(-1), PeerTier::Unknown);
        // `status --json` and `check --json` print words.
        for state in PeerState::ALL {
            assert_eq!(
                serde_json::to_value(state).ok(),
                Some(serde_json::Value::from(state.word()))
            );
        }
        assert_eq!(
            serde_json::to_value(PeerTier::Sidecar).ok(),
            Some(serde_json::Value::from("sidecar"))
        );
        // `status` pads them into columns.
        assert_eq!(format!("[{:<8}]", PeerState::Up), "[up      ]");
        assert_eq!(format!("[{:>6}]", PeerTier::Kafka), "[ kafka]");
    }
}
