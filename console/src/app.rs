//! The dashboard's state and how keys and remote updates change it. Pure:
//! no I/O, no clock (the time is handed in), so tests drive it with keys.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::remote::RemoteEvent;
use crate::state::{
    CheckOutcome, CheckRow, ClientRow, HeartbeatRow, Mesh, PeerState, PeerTier, SidecarRow,
};

/// The dashboard's views, in tab order (number keys 1-6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Overview,
    Sidecars,
    Clients,
    Heartbeats,
    Backlog,
    Health,
}

impl View {
    pub const ALL: [View; 6] = [
        View::Overview,
        View::Sidecars,
        View::Clients,
        View::Heartbeats,
        View::Backlog,
        View::Health,
    ];

    pub fn title(self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Sidecars => "Sidecars",
            View::Clients => "Clients",
            View::Heartbeats => "Heartbeats",
            View::Backlog => "Backlog",
            View::Health => "Health checks",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }

    /// Column names `s` cycles through, first is the default.
    pub fn sort_columns(self) -> &'static [&'static str] {
        match self {
            View::Overview => &[],
            View::Sidecars => &["id", "status", "rtt", "events", "clients"],
            View::Clients => &[
                "id",
                "sidecar",
                "status",
                "rtt",
                "sent",
                "backlog",
                "last seen",
            ],
            View::Heartbeats => &["peer", "tier", "latest", "avg", "p99"],
            View::Backlog => &["rows", "bytes", "oldest", "id"],
            View::Health => &["tier", "peer", "status", "rtt"],
        }
    }
}

/// What the app asks its runner to do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    /// Health-check one peer (`Some(id)`) or every peer.
    HealthCheck(Option<String>),
}

/// The dashboard.
#[derive(Debug, Clone)]
pub struct App {
    pub mesh: Mesh,
    pub view: View,
    /// Selected row in the current list view.
    pub selected: usize,
    pub filter: String,
    /// Typing into the filter (after `/`).
    pub editing_filter: bool,
    /// Sort column index per view.
    pub sort: [usize; 6],
    pub reverse: bool,
    pub show_help: bool,
    /// Health checks asked for and not answered yet.
    pub checks_running: usize,
    /// A short message for the footer.
    pub message: Option<String>,
    /// The time the screen shows (ns since the epoch); set by the runner.
    pub now_unix_nanos: i64,
    /// Where logs go, shown in the help.
    pub log_path: String,
}

impl App {
    pub fn new(mesh: Mesh, now_unix_nanos: i64, log_path: String) -> Self {
        Self {
            mesh,
            view: View::Overview,
            selected: 0,
            filter: String::new(),
            editing_filter: false,
            sort: [0; 6],
            reverse: false,
            show_help: false,
            checks_running: 0,
            message: None,
            now_unix_nanos,
            log_path,
        }
    }

    pub fn sort_column(&self) -> Option<&'static str> {
        self.view
            .sort_columns()
            .get(self.sort[self.view.index()])
            .copied()
    }

    /// Whether the rows run largest first (counts and sizes do, names and
    /// round trips do not), after `r`.
    pub fn sort_descending(&self) -> bool {
        let descending = self
            .sort_column()
            .is_some_and(|column| descending_column(self.view, column));
        descending != self.reverse
    }

    fn matches(&self, fields: &[&str]) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        let needle = self.filter.to_lowercase();
        fields.iter().any(|f| f.to_lowercase().contains(&needle))
    }

    pub fn sidecar_rows(&self) -> Vec<SidecarRow> {
        let mut rows: Vec<SidecarRow> = self
            .mesh
            .sidecar_rows()
            .into_iter()
            .filter(|r| self.matches(&[&r.id, &r.address, &r.master, r.status.word()]))
            .collect();
        sort_rows(
            &mut rows,
            self.sort_column(),
            self.reverse,
            |r, column| match column {
                "status" => Key::Text(status_rank(r.status).to_string()),
                "rtt" => Key::Num(r.rtt_last_us),
                "events" => Key::NumDesc(r.events_forwarded),
                "clients" => Key::NumDesc(u64::from(r.clients)),
                _ => Key::Text(r.id.clone()),
            },
        );
        rows
    }

    pub fn client_rows(&self) -> Vec<ClientRow> {
        let mut rows: Vec<ClientRow> = self
            .mesh
            .client_rows()
            .into_iter()
            .filter(|r| self.matches(&[&r.id, &r.address, &r.sidecar, r.status.word()]))
            .collect();
        sort_rows(
            &mut rows,
            self.sort_column(),
            self.reverse,
            |r, column| match column {
                "sidecar" => Key::Text(r.sidecar.clone()),
                "status" => Key::Text(status_rank(r.status).to_string()),
                "rtt" => Key::Num(r.rtt_last_us),
                "sent" => Key::NumDesc(r.events_sent),
                "backlog" => Key::NumDesc(r.backlog_rows),
                "last seen" => Key::NumDesc(u64::try_from(r.last_seen_unix_nanos).unwrap_or(0)),
                _ => Key::Text(r.id.clone()),
            },
        );
        rows
    }

    pub fn heartbeat_rows(&self) -> Vec<HeartbeatRow> {
        let mut rows: Vec<HeartbeatRow> = self
            .mesh
            .heartbeat_rows()
            .into_iter()
            .filter(|r| self.matches(&[&r.peer, r.tier.word(), &r.checker]))
            .collect();
        sort_rows(
            &mut rows,
            self.sort_column(),
            self.reverse,
            |r, column| match column {
                "tier" => Key::Text(r.tier.word().to_string()),
                "latest" => Key::NumDesc(r.last_us),
                "avg" => Key::NumDesc(r.avg_us),
                "p99" => Key::NumDesc(r.p99_us),
                _ => Key::Text(r.peer.clone()),
            },
        );
        rows
    }

    pub fn backlog_rows(&self) -> Vec<ClientRow> {
        let mut rows: Vec<ClientRow> = self
            .mesh
            .backlog_rows()
            .into_iter()
            .filter(|r| self.matches(&[&r.id, &r.sidecar]))
            .collect();
        sort_rows(
            &mut rows,
            self.sort_column(),
            self.reverse,
            |r, column| match column {
                "bytes" => Key::NumDesc(r.backlog_bytes),
                "oldest" => Key::Num(u64::try_from(r.backlog_oldest_unix_nanos).unwrap_or(0)),
                "id" => Key::Text(r.id.clone()),
                _ => Key::NumDesc(r.backlog_rows),
            },
        );
        rows
    }

    pub fn check_rows(&self) -> Vec<CheckRow> {
        let mut rows: Vec<CheckRow> = self
            .mesh
            .check_rows()
            .into_iter()
            .filter(|r| self.matches(&[&r.peer, r.tier.word(), r.status.word(), &r.checker]))
            .collect();
        sort_rows(
            &mut rows,
            self.sort_column(),
            self.reverse,
            |r, column| match column {
                "peer" => Key::Text(r.peer.clone()),
                "status" => Key::Text(status_rank(r.status).to_string()),
                "rtt" => Key::NumDesc(r.rtt_us),
                _ => Key::Text(format!("{}{}", tier_rank(r.tier), r.peer)),
            },
        );
        rows
    }

    /// Rows in the current view (for moving the selection).
    pub fn row_count(&self) -> usize {
        match self.view {
            View::Overview => self.mesh.masters.len(),
            View::Sidecars => self.sidecar_rows().len(),
            View::Clients => self.client_rows().len(),
            View::Heartbeats => self.heartbeat_rows().len(),
            View::Backlog => self.backlog_rows().len(),
            View::Health => self.check_rows().len(),
        }
    }

    /// The peer id of the selected row, for `h`.
    pub fn selected_peer(&self) -> Option<String> {
        let i = self.selected;
        match self.view {
            View::Overview => None,
            View::Sidecars => self.sidecar_rows().get(i).map(|r| r.id.clone()),
            View::Clients => self.client_rows().get(i).map(|r| r.id.clone()),
            View::Heartbeats => self.heartbeat_rows().get(i).map(|r| r.peer.clone()),
            View::Backlog => self.backlog_rows().get(i).map(|r| r.id.clone()),
            View::Health => self
                .check_rows()
                .get(i)
                .filter(|r| matches!(r.tier, PeerTier::Sidecar | PeerTier::Client))
                .map(|r| r.peer.clone()),
        }
    }

    fn switch(&mut self, view: View) {
        if self.view != view {
            self.view = view;
            self.selected = 0;
        }
    }

    fn clamp_selection(&mut self) {
        let count = self.row_count();
        self.selected = self.selected.min(count.saturating_sub(1));
    }

    /// Applies a key; returns what the runner should do.
    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        // A message answers the previous key; the next one clears it.
        self.message = None;
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Action::Quit;
        }
        if self.editing_filter {
            match key.code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.selected = 0;
            return Action::None;
        }
        if self.show_help {
            // Any key closes the help; q still quits.
            self.show_help = false;
            if key.code != KeyCode::Char('q') {
                return Action::None;
            }
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('?') => self.show_help = true,
            KeyCode::Tab => self.switch(View::ALL[(self.view.index() + 1) % View::ALL.len()]),
            KeyCode::BackTab => {
                self.switch(View::ALL[(self.view.index() + View::ALL.len() - 1) % View::ALL.len()]);
            }
            KeyCode::Char(c @ '1'..='6') => {
                let index = usize::from(c as u8 - b'1');
                self.switch(View::ALL[index]);
            }
            KeyCode::Char('j') | KeyCode::Down => {
                self.selected = self.selected.saturating_add(1);
                self.clamp_selection();
            }
            KeyCode::Char('k') | KeyCode::Up => self.selected = self.selected.saturating_sub(1),
            KeyCode::Char('g') | KeyCode::Home => self.selected = 0,
            KeyCode::Char('G') | KeyCode::End => {
                self.selected = usize::MAX;
                self.clamp_selection();
            }
            KeyCode::Char('/') => {
                self.editing_filter = true;
            }
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Char('s') => {
                let columns = self.view.sort_columns().len();
                if columns > 0 {
                    let i = self.view.index();
                    self.sort[i] = (self.sort[i] + 1) % columns;
                    self.message = self.sort_column().map(|c| format!("sorted by {c}"));
                }
            }
            KeyCode::Char('r') => {
                self.reverse = !self.reverse;
                self.message = Some(
                    if self.reverse {
                        "order reversed"
                    } else {
                        "order restored"
                    }
                    .to_string(),
                );
            }
            KeyCode::Char('h') => match self.selected_peer() {
                Some(peer) => {
                    self.checks_running += 1;
                    self.message = Some(format!("checking {peer}…"));
                    return Action::HealthCheck(Some(peer));
                }
                None => {
                    self.message =
                        Some("select a sidecar or client to check it (H checks all)".to_string())
                }
            },
            KeyCode::Char('H') => {
                self.checks_running += 1;
                self.message = Some("checking every peer…".to_string());
                return Action::HealthCheck(None);
            }
            _ => {}
        }
        Action::None
    }

    /// Applies an update from a master.
    pub fn on_remote(&mut self, event: RemoteEvent) {
        match event {
            RemoteEvent::Connection { master, connection } => {
                self.mesh.set_connection(master, connection)
            }
            RemoteEvent::Status { master, status } => self.mesh.apply_status(master, *status),
            RemoteEvent::Stats { master, stats } => self.mesh.apply_stats(master, stats),
            RemoteEvent::Heartbeat { sample, .. } => self.mesh.apply_heartbeat(sample),
            RemoteEvent::CheckDone { master, result } => {
                self.checks_running = self.checks_running.saturating_sub(1);
                let label = self.mesh.masters.get(master).map_or_else(
                    || format!("master {master}"),
                    |m| m.id().unwrap_or(&m.address).to_string(),
                );
                self.message = Some(match &result {
                    Ok(report) => {
                        let down = report
                            .rows
                            .iter()
                            .filter(|r| PeerState::from_wire(r.status) != PeerState::Up)
                            .count();
                        format!(
                            "health check via {label}: {} peers, {down} not up",
                            report.rows.len()
                        )
                    }
                    Err(err) => format!("health check via {label} failed: {err}"),
                });
                self.mesh.apply_check(CheckOutcome {
                    master: label,
                    result,
                });
                if self.view != View::Health {
                    self.switch(View::Health);
                }
            }
        }
        self.clamp_selection();
    }
}

/// A sort key: text ascending, numbers ascending or descending.
enum Key {
    Text(String),
    Num(u64),
    NumDesc(u64),
}

fn compare(a: &Key, b: &Key) -> std::cmp::Ordering {
    match (a, b) {
        (Key::Text(a), Key::Text(b)) => a.cmp(b),
        (Key::Num(a), Key::Num(b)) => a.cmp(b),
        (Key::NumDesc(a), Key::NumDesc(b)) => b.cmp(a),
        _ => std::cmp::Ordering::Equal,
    }
}

fn sort_rows<T>(
    rows: &mut [T],
    column: Option<&str>,
    reverse: bool,
    key: impl Fn(&T, &str) -> Key,
) {
    if let Some(column) = column {
        rows.sort_by(|a, b| compare(&key(a, column), &key(b, column)));
    }
    if reverse {
        rows.reverse();
    }
}

/// Columns whose natural order is largest first (see the `Key::NumDesc`
/// keys in the row functions above).
fn descending_column(view: View, column: &str) -> bool {
    matches!(
        (view, column),
        (View::Sidecars, "events" | "clients")
            | (View::Clients, "sent" | "backlog" | "last seen")
            | (View::Heartbeats, "latest" | "avg" | "p99")
            | (View::Backlog, "rows" | "bytes")
            | (View::Health, "rtt")
    )
}

/// Problems first when sorting by status.
fn status_rank(status: PeerState) -> u8 {
    match status {
        PeerState::Down => 0,
        PeerState::Degraded => 1,
        PeerState::Unknown => 2,
        PeerState::Up => 3,
    }
}

fn tier_rank(tier: PeerTier) -> u8 {
    match tier {
        PeerTier::Kafka => 0,
        PeerTier::Master => 1,
        PeerTier::Sidecar => 2,
        PeerTier::Client | PeerTier::Unknown => 3,
    }
}
