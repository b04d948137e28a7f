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

/// How the console's link to one master stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    Connecting { attempt: u32, error: Option<String> },
    Connected,
}

/// One master as the console sees it.
#[derive(Debug, Clone)]
pub struct MasterView {
    /// The admin address the console dials.
    pub address: String,
    pub connection: Connection,
    pub status: Option<Status>,
    pub stats: Option<Stats>,
    /// Published events per second, oldest first.
    pub published_history: VecDeque<u64>,
}

impl MasterView {
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
    pub tier: i32,
    pub checker: String,
    pub samples: VecDeque<u64>,
    pub last_at: i64,
}

/// A finished (or failed) health check.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    pub master: String,
    pub result: Result<HealthCheckReport, String>,
}

/// Everything the console knows.
#[derive(Debug, Clone, Default)]
pub struct Mesh {
    pub masters: Vec<MasterView>,
    /// By (tier, peer id).
    pub rtt: BTreeMap<(i32, String), PeerRtt>,
    /// Newest first.
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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MasterRow {
    pub address: String,
    pub connected: bool,
    pub error: Option<String>,
    pub id: String,
    pub version: String,
    pub uptime_secs: u64,
    pub kafka_ready: bool,
    pub kafka_brokers: String,
    pub kafka_detail: String,
    pub events_in: u64,
    pub published: u64,
    pub failed: u64,
    pub duplicates: u64,
    pub published_per_s: f64,
    pub events_in_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SidecarRow {
    pub id: String,
    pub master: String,
    pub address: String,
    pub status: PeerState,
    pub connected: bool,
    pub connected_since_unix_nanos: i64,
    pub last_heartbeat_unix_nanos: i64,
    pub rtt_last_us: u64,
    pub rtt_avg_us: u64,
    pub rtt_p99_us: u64,
    pub events_forwarded: u64,
    pub clients: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientRow {
    pub id: String,
    pub sidecar: String,
    pub master: String,
    pub address: String,
    pub status: PeerState,
    pub first_seen_unix_nanos: i64,
    pub last_seen_unix_nanos: i64,
    pub events_sent: u64,
    pub events_acked: u64,
    pub in_flight: u64,
    pub rtt_last_us: u64,
    pub rtt_avg_us: u64,
    pub rtt_p99_us: u64,
    pub backlog_rows: u64,
    pub backlog_bytes: u64,
    pub backlog_oldest_unix_nanos: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeartbeatRow {
    pub tier: PeerTier,
    pub peer: String,
    pub checker: String,
    pub last_us: u64,
    pub avg_us: u64,
    pub p99_us: u64,
    #[serde(skip)]
    pub samples: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckRow {
    pub master: String,
    pub check_id: u64,
    pub at_unix_nanos: i64,
    pub checker: String,
    pub tier: PeerTier,
    pub peer: String,
    pub address: String,
    pub status: PeerState,
    pub rtt_us: u64,
    pub detail: String,
}

impl Mesh {
    pub fn new(addresses: Vec<String>) -> Self {
        Self {
            masters: addresses.into_iter().map(MasterView::new).collect(),
            rtt: BTreeMap::new(),
            checks: Vec::new(),
        }
    }

    pub fn apply_status(&mut self, master: usize, status: Status) {
        if let Some(view) = self.masters.get_mut(master) {
            view.status = Some(status);
        }
    }

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

    pub fn apply_check(&mut self, outcome: CheckOutcome) {
        self.checks.insert(0, outcome);
        self.checks.truncate(20);
    }

    pub fn set_connection(&mut self, master: usize, connection: Connection) {
        if let Some(view) = self.masters.get_mut(master) {
            view.connection = connection;
        }
    }

    fn master_label(view: &MasterView) -> String {
        view.id()
            .map_or_else(|| view.address.clone(), str::to_string)
    }

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
                }
            })
            .collect()
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
