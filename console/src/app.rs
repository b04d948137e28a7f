//! The dashboard's state and how keys and remote updates change it. Pure:
//! no I/O, no clock (the time is handed in), so tests drive it with keys.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::remote::RemoteEvent;
use crate::state::{CheckOutcome, Mesh, PeerState};
use crate::view::{Query, SortKey, View, ViewTable};

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
    /// Per view, the index of its sort key in the `s` cycle.
    pub sort: [usize; View::COUNT],
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
            sort: [0; View::COUNT],
            reverse: false,
            show_help: false,
            checks_running: 0,
            message: None,
            now_unix_nanos,
            log_path,
        }
    }

    /// How `view`'s rows are filtered and ordered now.
    pub fn query(&self, view: View) -> Query<'_> {
        Query {
            filter: &self.filter,
            sort: self.sort.get(view.index()).copied().unwrap_or(0),
            reverse: self.reverse,
        }
    }

    /// The rows `table` shows: filtered by `/`, ordered by `s` and `r`.
    pub fn rows<R, S: SortKey<R>>(&self, table: &ViewTable<R, S>) -> Vec<R> {
        table.select(&self.mesh, &self.query(table.view))
    }

    /// The key `table` is sorted by.
    pub fn sorted_by<R, S: SortKey<R>>(&self, table: &ViewTable<R, S>) -> Option<S> {
        table.sort_key(&self.query(table.view))
    }

    /// The name of the key the current view is sorted by.
    pub fn sort_name(&self) -> Option<&'static str> {
        self.view.table().sort_name(&self.query(self.view))
    }

    /// Rows in the current view (for moving the selection).
    pub fn row_count(&self) -> usize {
        self.view
            .table()
            .row_count(&self.mesh, &self.query(self.view))
    }

    /// The peer id of the selected row, for `h`.
    pub fn selected_peer(&self) -> Option<String> {
        self.view
            .table()
            .peer(&self.mesh, &self.query(self.view), self.selected)
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
                let keys = self.view.table().sort_count();
                if let Some(sort) = self.sort.get_mut(self.view.index()) {
                    if keys > 0 {
                        *sort = (*sort + 1) % keys;
                        self.message = self.sort_name().map(|name| format!("sorted by {name}"));
                    }
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
