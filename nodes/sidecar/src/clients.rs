//! The sidecar's table of clients, kept by one task.
//!
//! Client sessions tell it when they connect and disconnect and send it a
//! fresh [`ClientInfo`] once per heartbeat; the master link reads snapshots
//! for its reports and asks it to probe clients for health checks.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::future::join_all;
use smesh_core::ratelimit::LogEvery;
use smesh_core::session::{self, SessionCommand};
use smesh_core::time::now_unix_nanos;
use smesh_proto::mesh::{ClientInfo, PeerStatus, ProbeRequest, ProbeResponse, ProbeResult};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub use smesh_core::session::ConnId;

/// Everything that changes the table, or asks it something.
#[derive(Debug)]
pub enum TableEvent {
    /// A client stream was welcomed.
    Connected {
        /// The stream.
        conn: ConnId,
        /// The client's first row.
        info: ClientInfo,
        /// Reaches the client's session (for probes).
        commands: mpsc::Sender<SessionCommand>,
    },
    /// A session's row once per heartbeat interval.
    Update {
        /// The stream.
        conn: ConnId,
        /// The client's row now.
        info: ClientInfo,
    },
    /// A client stream ended.
    Disconnected {
        /// The stream.
        conn: ConnId,
        /// The client's last row.
        info: ClientInfo,
    },
    /// Every client's row, for the report to the master.
    Snapshot {
        /// Where the rows go.
        reply: oneshot::Sender<Vec<ClientInfo>>,
    },
    /// Probe clients for a master's health check.
    Probe {
        /// Which clients, and how long to wait.
        request: ProbeRequest,
        /// Where the results go.
        reply: oneshot::Sender<ProbeResponse>,
    },
}

/// Handle for sessions and the master link.
#[derive(Clone, Debug)]
pub struct TableHandle {
    events: mpsc::Sender<TableEvent>,
}

impl TableHandle {
    /// Hands an event to the table, waiting for room.
    pub async fn send(&self, event: TableEvent) {
        // Only fails when the table stopped, i.e. during shutdown.
        let _ = self.events.send(event).await;
    }

    /// Best effort, for periodic updates that the next one supersedes.
    pub fn try_send(&self, event: TableEvent) {
        let _ = self.events.try_send(event);
    }

    /// Every client's row (empty once the table stopped).
    pub async fn snapshot(&self) -> Vec<ClientInfo> {
        let (reply, answer) = oneshot::channel();
        self.send(TableEvent::Snapshot { reply }).await;
        answer.await.unwrap_or_default()
    }

    /// Probes the matching clients; answers after each answered or timed out.
    pub async fn probe(&self, request: ProbeRequest) -> Option<ProbeResponse> {
        let (reply, answer) = oneshot::channel();
        self.send(TableEvent::Probe { request, reply }).await;
        answer.await.ok()
    }
}

/// How long a disconnected client stays in the table (and in reports to
/// the master) before it is forgotten.
pub const FORGET_DISCONNECTED_AFTER: Duration = Duration::from_secs(3600);

/// Most bytes of client rows in one report to the master, well below
/// gRPC's message limit.
pub const MAX_REPORT_BYTES: usize = 4 * 1024 * 1024;

/// Most disconnected clients kept; beyond it the longest gone are forgotten
/// first, so ids that come and go (or a peer making them up) cannot grow the
/// table and the reports without bound.
pub const MAX_DISCONNECTED_CLIENTS: usize = 10_000;

struct Entry {
    info: ClientInfo,
    live: Option<(ConnId, mpsc::Sender<SessionCommand>)>,
    /// When the client's last stream ended (`None` while connected).
    gone_since: Option<Instant>,
}

/// The table task.
pub struct ClientTable {
    sidecar_id: String,
    events: mpsc::Receiver<TableEvent>,
    clients: BTreeMap<String, Entry>,
    conns: HashMap<ConnId, String>,
    /// Keeps the warning about a cut report to one per interval.
    report_cut_log: LogEvery,
}

impl std::fmt::Debug for ClientTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTable")
            .field("clients", &self.clients.len())
            .finish()
    }
}

impl ClientTable {
    /// The table task for sidecar `sidecar_id`, and its handle.
    pub fn new(sidecar_id: String) -> (Self, TableHandle) {
        let (tx, events) = mpsc::channel(1024);
        (
            Self {
                sidecar_id,
                events,
                clients: BTreeMap::new(),
                conns: HashMap::new(),
                report_cut_log: LogEvery::default(),
            },
            TableHandle { events: tx },
        )
    }

    /// Runs until `shutdown` or until every handle is gone.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut sweep = tokio::time::interval(Duration::from_secs(60));
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => break,
                _ = sweep.tick() => {
                    self.forget(Instant::now());
                    continue;
                }
                event = self.events.recv() => match event {
                    Some(event) => event,
                    None => break,
                },
            };
            self.handle(event);
        }
    }

    /// Forgets clients gone longer than [`FORGET_DISCONNECTED_AFTER`], and
    /// the longest gone beyond [`MAX_DISCONNECTED_CLIENTS`].
    fn forget(&mut self, now: Instant) {
        let forgotten = smesh_core::retention::forget_gone(
            &mut self.clients,
            now,
            FORGET_DISCONNECTED_AFTER,
            MAX_DISCONNECTED_CLIENTS,
            |entry| entry.gone_since,
        );
        if forgotten > 0 {
            debug!(
                forgotten,
                known = self.clients.len(),
                "disconnected clients forgotten"
            );
        }
    }

    fn handle(&mut self, event: TableEvent) {
        match event {
            TableEvent::Connected {
                conn,
                mut info,
                commands,
            } => {
                let id = info.client_id.clone();
                if let Some(existing) = self.clients.get(&id) {
                    // Keep history across reconnects.
                    info.first_seen_unix_nanos = existing.info.first_seen_unix_nanos;
                    if let Some((old, _)) = &existing.live {
                        let host = |address: &str| {
                            address
                                .rsplit_once(':')
                                .map_or(address, |(h, _)| h)
                                .to_string()
                        };
                        if host(&existing.info.address) != host(&info.address) {
                            // A reconnect comes from the same host; this is two devices.
                            warn!(
                                client = %id,
                                peer = %id,
                                address = %info.address,
                                first = %existing.info.address,
                                second = %info.address,
                                "two clients use the same id: ids must be unique, or their events look like resends of each other"
                            );
                        }
                        self.conns.remove(old);
                    }
                }
                self.conns.insert(conn, id.clone());
                self.clients.insert(
                    id,
                    Entry {
                        info,
                        live: Some((conn, commands)),
                        gone_since: None,
                    },
                );
            }
            TableEvent::Update { conn, info } => {
                if let Some(entry) = self.entry_mut(conn) {
                    let first_seen = entry.info.first_seen_unix_nanos;
                    entry.info = info;
                    entry.info.first_seen_unix_nanos = first_seen;
                }
            }
            TableEvent::Disconnected { conn, info } => {
                if let Some(entry) = self.entry_mut(conn) {
                    let first_seen = entry.info.first_seen_unix_nanos;
                    entry.info = info;
                    entry.info.first_seen_unix_nanos = first_seen;
                    entry.info.status = PeerStatus::Down as i32;
                    entry.live = None;
                    entry.gone_since = Some(Instant::now());
                }
                self.conns.remove(&conn);
                self.forget(Instant::now());
            }
            TableEvent::Snapshot { reply } => {
                let _ = reply.send(self.report_rows());
            }
            TableEvent::Probe { request, reply } => self.probe(request, reply),
        }
    }

    /// The rows for the report to the master, within [`MAX_REPORT_BYTES`]:
    /// connected clients first, then the most recently gone. Telemetry must
    /// never make the data stream that carries it too large to send.
    fn report_rows(&mut self) -> Vec<ClientInfo> {
        let mut entries: Vec<&Entry> = self.clients.values().collect();
        // Connected first (gone_since None), then the most recently gone.
        entries.sort_by_key(|e| (e.gone_since.is_some(), std::cmp::Reverse(e.gone_since)));
        let mut rows = Vec::with_capacity(entries.len());
        let mut bytes = 0;
        for entry in &entries {
            let size = prost::Message::encoded_len(&entry.info) + 4;
            if bytes + size > MAX_REPORT_BYTES {
                break;
            }
            bytes += size;
            rows.push(entry.info.clone());
        }
        let left_out = entries.len() - rows.len();
        if left_out > 0 {
            if let Some(unlogged) = self.report_cut_log.tick() {
                warn!(
                    left_out,
                    reported = rows.len(),
                    also_since_last_log = unlogged,
                    "the report to the master is cut at its size limit; the longest gone clients are left out"
                );
            }
        }
        rows
    }

    fn entry_mut(&mut self, conn: ConnId) -> Option<&mut Entry> {
        let id = self.conns.get(&conn)?;
        self.clients.get_mut(id)
    }

    fn probe(&self, request: ProbeRequest, reply: oneshot::Sender<ProbeResponse>) {
        let timeout = Duration::from_millis(u64::from(request.timeout_ms.max(1)));
        let targets: Vec<(ClientInfo, Option<mpsc::Sender<SessionCommand>>)> = self
            .clients
            .values()
            .filter(|e| request.client_id.is_empty() || e.info.client_id == request.client_id)
            // A full check covers connected clients; a targeted one answers even for a gone client.
            .filter(|e| e.live.is_some() || !request.client_id.is_empty())
            .map(|e| (e.info.clone(), e.live.as_ref().map(|(_, tx)| tx.clone())))
            .collect();
        let checker_id = self.sidecar_id.clone();
        tokio::spawn(async move {
            let probes = targets.into_iter().map(|(info, commands)| async move {
                let rtt = match commands {
                    Some(commands) => session::probe(&commands, timeout).await,
                    None => None,
                };
                let (status, rtt_us, detail) = match rtt {
                    Some(rtt) => (
                        PeerStatus::Up,
                        u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1),
                        String::new(),
                    ),
                    None if info.status == PeerStatus::Down as i32 => {
                        (PeerStatus::Down, 0, "not connected".to_string())
                    }
                    None => (PeerStatus::Down, 0, format!("no answer within {timeout:?}")),
                };
                ProbeResult {
                    peer_id: info.client_id,
                    address: info.address,
                    status: status as i32,
                    rtt_us,
                    detail,
                    at_unix_nanos: now_unix_nanos(),
                }
            });
            let results = join_all(probes).await;
            let _ = reply.send(ProbeResponse {
                check_id: request.check_id,
                checker_id,
                results,
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(table: &mut ClientTable, conn: ConnId, id: &str) {
        let (commands, _) = mpsc::channel(1);
        table.handle(TableEvent::Connected {
            conn,
            info: ClientInfo {
                client_id: id.to_string(),
                ..ClientInfo::default()
            },
            commands,
        });
    }

    fn disconnect(table: &mut ClientTable, conn: ConnId, id: &str) {
        table.handle(TableEvent::Disconnected {
            conn,
            info: ClientInfo {
                client_id: id.to_string(),
                ..ClientInfo::default()
            },
        });
    }

    #[test]
    fn disconnected_clients_are_forgotten_after_the_retention() {
        let (mut table, _handle) = ClientTable::new("S1".to_string());
        connect(&mut table, 1, "gone");
        connect(&mut table, 2, "here");
        disconnect(&mut table, 1, "gone");
        table.forget(Instant::now());
        assert_eq!(table.clients.len(), 2, "kept for a while after it left");
        table.forget(Instant::now() + FORGET_DISCONNECTED_AFTER + Duration::from_secs(1));
        assert_eq!(table.clients.keys().collect::<Vec<_>>(), vec!["here"]);
    }

    #[test]
    fn the_report_stays_within_its_size_connected_and_recent_first() {
        let (mut table, _handle) = ClientTable::new("S1".to_string());
        let now = Instant::now();
        let big = |id: &str| ClientInfo {
            client_id: id.to_string(),
            version: "v".repeat(64),
            rtt: Some(smesh_proto::mesh::RttStats {
                recent_us: vec![u64::MAX; 120],
                ..Default::default()
            }),
            ..ClientInfo::default()
        };
        // About 1.3 KB each: 5000 gone clients are more than one report holds.
        for i in 0..5000u64 {
            let id = format!("gone{i:04}");
            let entry = Entry {
                info: big(&id),
                live: None,
                gone_since: Some(now + Duration::from_millis(i)),
            };
            table.clients.insert(id, entry);
        }
        connect(&mut table, 1, "live");
        let rows = table.report_rows();
        let bytes: usize = rows
            .iter()
            .map(|r| prost::Message::encoded_len(r) + 4)
            .sum();
        assert!(bytes <= MAX_REPORT_BYTES, "{bytes}");
        assert!(rows.len() < 5001, "cut");
        assert_eq!(rows[0].client_id, "live", "connected clients first");
        assert_eq!(rows[1].client_id, "gone4999", "then the most recently gone");
        assert!(!rows.iter().any(|r| r.client_id == "gone0000"));
    }

    #[test]
    fn the_longest_gone_are_forgotten_beyond_the_cap() {
        let (mut table, _handle) = ClientTable::new("S1".to_string());
        let n = MAX_DISCONNECTED_CLIENTS + 5;
        for i in 0..n {
            let id = format!("c{i:05}");
            connect(&mut table, i as ConnId, &id);
            disconnect(&mut table, i as ConnId, &id);
        }
        assert_eq!(table.clients.len(), MAX_DISCONNECTED_CLIENTS);
        assert!(
            !table.clients.contains_key("c00000"),
            "the first gone is forgotten"
        );
        assert!(table.clients.contains_key(&format!("c{:05}", n - 1)));
    }
}
