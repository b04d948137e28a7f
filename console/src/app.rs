//! The dashboard's state and how keys and remote updates change it. Pure:
//! no I/O, no clock (the time is handed in), so tests drive it with keys.

use crossterm::event::{KeyCode, KeyEvent};

use crate::keymap::{self, Command, FilterEdit};
use crate::remote::RemoteEvent;
use crate::state::{CheckOutcome, Mesh, PeerState};
use crate::view::{Query, SortKey, View, ViewTable};

/// What the app asks its runner to do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond redrawing.
    None,
    /// Restore the terminal and leave.
    Quit,
    /// Health-check one peer (`Some(id)`) or every peer.
    HealthCheck(Option<String>),
}

/// The dashboard: what it knows of the mesh and what the operator chose
/// to look at.
#[derive(Debug, Clone)]
pub struct App {
    /// Every master's view, merged into rows on demand.
    pub mesh: Mesh,
    /// The view on screen.
    pub view: View,
    /// Selected row in the current view.
    pub selected: usize,
    /// Rows must contain this (`/`); empty shows all.
    pub filter: String,
    /// Typing into the filter (after `/`): keys are text, not commands.
    pub editing_filter: bool,
    /// Per view, the index of its sort key in the `s` cycle.
    pub sort: [usize; View::COUNT],
    /// The sort order is reversed (`r`), in every view.
    pub reverse: bool,
    /// The help is on top (`?`).
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
    /// A dashboard on `mesh`, showing the overview.
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

    /// Shows `view` from its first row.
    fn switch(&mut self, view: View) {
        if self.view != view {
            self.view = view;
            self.selected = 0;
        }
    }

    /// Keeps the selection on a row that exists.
    fn clamp_selection(&mut self) {
        let count = self.row_count();
        self.selected = self.selected.min(count.saturating_sub(1));
    }

    /// Applies a key; returns what the runner should do.
    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        // A message answers the previous key; the next one clears it.
        self.message = None;
        let binding = keymap::binding_for(&key);
        if self.editing_filter && !binding.is_some_and(|b| b.key.acts_while_typing()) {
            self.edit_filter(&key);
            return Action::None;
        }
        if self.show_help {
            // Any key closes the help; the quit keys still quit.
            self.show_help = false;
            if binding.is_none_or(|b| b.command != Command::Quit) {
                return Action::None;
            }
        }
        match binding {
            Some(binding) => self.run(binding.command, &key),
            None => Action::None,
        }
    }

    /// A key typed into the filter.
    fn edit_filter(&mut self, key: &KeyEvent) {
        match keymap::filter_edit_for(key) {
            Some(FilterEdit::Keep) => self.editing_filter = false,
            Some(FilterEdit::Clear) => {
                self.editing_filter = false;
                self.filter.clear();
            }
            Some(FilterEdit::DeleteLast) => {
                self.filter.pop();
            }
            None => {
                if let KeyCode::Char(c) = key.code {
                    self.filter.push(c);
                }
            }
        }
        self.selected = 0;
    }

    /// Does what `command` says; `key` is the key that asked for it.
    fn run(&mut self, command: Command, key: &KeyEvent) -> Action {
        match command {
            Command::Quit => return Action::Quit,
            Command::Help => self.show_help = true,
            Command::NextView => self.switch(self.view.next()),
            Command::PreviousView => self.switch(self.view.previous()),
            Command::NumberedView => {
                if let Some(view) = numbered_view(key) {
                    self.switch(view);
                }
            }
            Command::Down => {
                self.selected = self.selected.saturating_add(1);
                self.clamp_selection();
            }
            Command::Up => self.selected = self.selected.saturating_sub(1),
            Command::First => self.selected = 0,
            Command::Last => {
                self.selected = usize::MAX;
                self.clamp_selection();
            }
            Command::EditFilter => self.editing_filter = true,
            Command::ClearFilter => self.filter.clear(),
            Command::NextSort => {
                let keys = self.view.table().sort_count();
                if let Some(sort) = self.sort.get_mut(self.view.index()) {
                    if keys > 0 {
                        *sort = (*sort + 1) % keys;
                        self.message = self.sort_name().map(|name| format!("sorted by {name}"));
                    }
                }
            }
            Command::Reverse => {
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
            Command::CheckSelected => match self.selected_peer() {
                Some(peer) => {
                    self.checks_running = self.checks_running.saturating_add(1);
                    self.message = Some(format!("checking {peer}…"));
                    return Action::HealthCheck(Some(peer));
                }
                None => {
                    self.message = Some(format!(
                        "select a sidecar or client to check it ({} checks all)",
                        keymap::key_for(Command::CheckAll)
                    ));
                }
            },
            Command::CheckAll => {
                self.checks_running = self.checks_running.saturating_add(1);
                self.message = Some("checking every peer…".to_string());
                return Action::HealthCheck(None);
            }
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

/// The view a number key names.
fn numbered_view(key: &KeyEvent) -> Option<View> {
    match key.code {
        KeyCode::Char(c) => View::numbered(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crossterm::event::KeyModifiers;
    use smesh_proto::mesh::PeerStatus;

    use super::*;
    use crate::keymap::{FILTER_KEYS, HelpLine, KEY_MAP, Key};
    use crate::state::fixtures::*;
    use crate::ui::{SIDECARS, SidecarSort};

    /// Five sidecars, on the Sidecars view with the middle one selected and
    /// a filter every row matches, so each key has something to change.
    fn app() -> App {
        let ids = ["s-a", "s-b", "s-c", "s-d", "s-e"];
        let sidecars = ids
            .iter()
            .map(|id| sidecar(id, PeerStatus::Up, true))
            .collect();
        let mut app = App::new(
            masters(vec![status("m", sidecars, vec![])]),
            NOW,
            "log".into(),
        );
        app.view = View::Sidecars;
        app.selected = 2;
        app.filter = "s-".into();
        app
    }

    /// Every event that presses `key`.
    fn events(key: Key) -> Vec<KeyEvent> {
        let press = |code| KeyEvent::from(code);
        match key {
            Key::Char(c) => vec![press(KeyCode::Char(c))],
            Key::Ctrl(c) => vec![KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)],
            Key::Tab => vec![press(KeyCode::Tab)],
            Key::BackTab => vec![press(KeyCode::BackTab)],
            Key::Up => vec![press(KeyCode::Up)],
            Key::Down => vec![press(KeyCode::Down)],
            Key::Home => vec![press(KeyCode::Home)],
            Key::End => vec![press(KeyCode::End)],
            Key::Enter => vec![press(KeyCode::Enter)],
            Key::Esc => vec![press(KeyCode::Esc)],
            Key::Backspace => vec![press(KeyCode::Backspace)],
            Key::ViewNumber => View::ALL
                .iter()
                .filter_map(|view| char::from_digit(u32::try_from(view.number()).ok()?, 10))
                .map(|c| press(KeyCode::Char(c)))
                .collect(),
        }
    }

    /// How the help starts the line of a command's keys.
    fn help_of(command: Command) -> &'static str {
        match command {
            Command::NumberedView | Command::NextView | Command::PreviousView => "switch view",
            Command::Down | Command::Up => "move the selection",
            Command::First | Command::Last => "first / last row",
            Command::EditFilter => "filter rows",
            Command::ClearFilter => "clear the filter",
            Command::NextSort => "sort by the next column",
            Command::Reverse => "reverse the order",
            Command::CheckSelected => "health-check the selected",
            Command::CheckAll => "health-check every peer",
            Command::Help => "this help",
            Command::Quit => "quit",
        }
    }

    /// The app after `command`, pressed with `event` on [`app`], and what it
    /// asks the runner to do.
    fn expected(command: Command, event: &KeyEvent) -> (App, Action) {
        let mut app = app();
        let mut action = Action::None;
        match command {
            Command::NumberedView => {
                let view = numbered_view(event).unwrap_or(app.view);
                if view != app.view {
                    app.view = view;
                    app.selected = 0;
                }
            }
            Command::NextView => (app.view, app.selected) = (View::Clients, 0),
            Command::PreviousView => (app.view, app.selected) = (View::Overview, 0),
            Command::Down => app.selected = 3,
            Command::Up => app.selected = 1,
            Command::First => app.selected = 0,
            Command::Last => app.selected = 4,
            Command::EditFilter => app.editing_filter = true,
            Command::ClearFilter => app.filter.clear(),
            Command::NextSort => {
                app.sort[View::Sidecars.index()] = 1;
                app.message = Some("sorted by status".into());
            }
            Command::Reverse => {
                app.reverse = true;
                app.message = Some("order reversed".into());
            }
            Command::CheckSelected => {
                app.checks_running = 1;
                app.message = Some("checking s-c…".into());
                action = Action::HealthCheck(Some("s-c".into()));
            }
            Command::CheckAll => {
                app.checks_running = 1;
                app.message = Some("checking every peer…".into());
                action = Action::HealthCheck(None);
            }
            Command::Help => app.show_help = true,
            Command::Quit => action = Action::Quit,
        }
        (app, action)
    }

    #[test]
    fn every_key_in_the_map_does_what_its_help_line_says() {
        let mut pressed = 0;
        for line in KEY_MAP {
            for binding in line.bindings() {
                assert!(
                    line.help.starts_with(help_of(binding.command)),
                    "{:?} does {:?} but its help says {:?}",
                    binding.key,
                    binding.command,
                    line.help
                );
                for event in events(binding.key) {
                    let mut app = app();
                    let action = app.on_key(event);
                    let (want, want_action) = expected(binding.command, &event);
                    assert_eq!(action, want_action, "{:?}", binding.key);
                    // Everything else stays as it was.
                    assert_eq!(format!("{app:?}"), format!("{want:?}"), "{:?}", binding.key);
                    pressed += 1;
                }
            }
        }
        // The number keys are one binding.
        let bindings = KEY_MAP.iter().flat_map(HelpLine::bindings).count();
        assert_eq!(pressed, bindings - 1 + View::COUNT, "every key was pressed");
    }

    #[test]
    fn keys_typed_into_the_filter_are_text_except_ctrl_chords() {
        let typing = || {
            let mut app = app();
            app.on_key(KeyEvent::from(KeyCode::Char('/')));
            app.filter = "x".into();
            app.selected = 0;
            app
        };
        for binding in KEY_MAP.iter().flat_map(HelpLine::bindings) {
            for event in events(binding.key) {
                let mut app = typing();
                let action = app.on_key(event);
                let mut want = typing();
                if binding.key.acts_while_typing() {
                    assert_eq!(binding.command, Command::Quit);
                    assert_eq!(action, Action::Quit);
                } else if let KeyCode::Char(c) = event.code {
                    assert_eq!(action, Action::None);
                    want.filter.push(c);
                } else if keymap::filter_edit_for(&event).is_some() {
                    // The prompt's own keys: see the next test.
                    continue;
                } else {
                    assert_eq!(action, Action::None);
                }
                assert_eq!(format!("{app:?}"), format!("{want:?}"), "{:?}", binding.key);
            }
        }
    }

    #[test]
    fn the_filter_prompt_keeps_clears_and_deletes() {
        let typed = |text: &str| {
            let mut app = app();
            app.on_key(KeyEvent::from(KeyCode::Char('/')));
            app.filter.clear();
            for c in text.chars() {
                app.on_key(KeyEvent::from(KeyCode::Char(c)));
            }
            app
        };
        for filter_key in FILTER_KEYS {
            let mut app = typed("s-b");
            for event in events(filter_key.key) {
                assert_eq!(app.on_key(event), Action::None);
            }
            let (filter, editing) = match filter_key.edit {
                FilterEdit::Keep => ("s-b", false),
                FilterEdit::Clear => ("", false),
                FilterEdit::DeleteLast => ("s-", true),
            };
            assert_eq!((app.filter.as_str(), app.editing_filter), (filter, editing));
            assert_eq!(app.selected, 0, "the rows changed");
        }
    }

    #[test]
    fn the_help_closes_on_any_key_and_the_quit_keys_still_quit() {
        for binding in KEY_MAP.iter().flat_map(HelpLine::bindings) {
            for event in events(binding.key) {
                let mut helped = app();
                helped.show_help = true;
                let action = helped.on_key(event);
                // Closed, and nothing else done.
                let want = app();
                let want_action = if binding.command == Command::Quit {
                    Action::Quit
                } else {
                    Action::None
                };
                assert_eq!(action, want_action, "{:?}", binding.key);
                assert_eq!(
                    format!("{helped:?}"),
                    format!("{want:?}"),
                    "{:?}",
                    binding.key
                );
            }
        }
    }

    #[test]
    fn s_cycles_each_views_keys_on_its_own() {
        let mut app = app();
        let s = KeyEvent::from(KeyCode::Char('s'));
        let mut seen = Vec::new();
        for _ in 0..SidecarSort::CYCLE.len() {
            seen.push(app.sorted_by(&SIDECARS));
            app.on_key(s);
        }
        let cycle: Vec<Option<SidecarSort>> =
            SidecarSort::CYCLE.iter().copied().map(Some).collect();
        assert_eq!(seen, cycle, "in order");
        assert_eq!(app.sorted_by(&SIDECARS), Some(SidecarSort::Id), "and round");

        app.on_key(s);
        app.on_key(KeyEvent::from(KeyCode::Tab));
        app.on_key(s);
        assert_eq!(app.sort_name(), Some("sidecar"), "the clients' second key");
        assert_eq!(app.sorted_by(&SIDECARS), Some(SidecarSort::Status), "kept");
        app.view = View::Overview;
        assert_eq!(app.on_key(s), Action::None);
        assert_eq!(app.message, None, "the overview has nothing to sort");
    }
}
