//! The dashboard's views, and the typed description of the table each one
//! shows.
//!
//! A [`ViewTable`] lists its [`Column`]s: the header, the width, how a row's
//! cell is drawn, which [`SortKey`] `s` marks on it and whether `/` searches
//! it. That one description drives the header, the cells, the order of the
//! rows and the filter, so a column is added or renamed in one place and a
//! sort key that does not exist does not compile.
//!
//! Everything here is pure: the tables read the [`Mesh`] handed to them.

use std::cmp::Ordering;

use ratatui::layout::{Alignment, Constraint};
use ratatui::text::Text;

use crate::state::{Mesh, PeerState};

/// The dashboard's views, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Masters, mesh totals, the published-events chart.
    Overview,
    /// Every master's sidecars, merged.
    Sidecars,
    /// Every sidecar's clients, merged.
    Clients,
    /// Round trips of every peer, with their recent history.
    Heartbeats,
    /// Clients with spooled events.
    Backlog,
    /// The latest health check of each master.
    Health,
}

impl View {
    /// Every view, in tab order. The tabs, the number keys (`1` is the
    /// first) and the help all count from this list.
    pub const ALL: [View; 6] = [
        View::Overview,
        View::Sidecars,
        View::Clients,
        View::Heartbeats,
        View::Backlog,
        View::Health,
    ];

    /// How many views there are.
    pub const COUNT: usize = View::ALL.len();

    /// The name on its tab and above its table.
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

    /// Its position in [`View::ALL`].
    pub fn index(self) -> usize {
        View::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }

    /// The number that selects it: its position in [`View::ALL`], from 1.
    pub fn number(self) -> usize {
        self.index() + 1
    }

    /// The view a number key selects (`'1'` the first), if there is one.
    pub fn numbered(key: char) -> Option<View> {
        let number = usize::try_from(key.to_digit(10)?).ok()?;
        View::ALL.get(number.checked_sub(1)?).copied()
    }

    /// The next view in tab order, the first after the last.
    pub fn next(self) -> View {
        View::ALL[(self.index() + 1) % View::COUNT]
    }

    /// The previous view in tab order, the last before the first.
    pub fn previous(self) -> View {
        View::ALL[(self.index() + View::COUNT - 1) % View::COUNT]
    }

    /// The table this view shows (the overview's is its masters).
    pub fn table(self) -> &'static dyn ListView {
        use crate::ui;
        match self {
            View::Overview => &ui::MASTERS,
            View::Sidecars => &ui::SIDECARS,
            View::Clients => &ui::CLIENTS,
            View::Heartbeats => &ui::HEARTBEATS,
            View::Backlog => &ui::BACKLOG,
            View::Health => &ui::HEALTH_CHECKS,
        }
    }
}

/// Which way a sort key orders rows before `r` reverses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Smallest first: names, round trips, ages of the oldest event.
    Ascending,
    /// Largest first: counts and sizes, where the big ones matter.
    Descending,
}

/// The value a row is sorted by. One sort key always yields the same
/// variant, so rows compare like with like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortValue<'r> {
    /// A count, a size, a round trip, a time.
    Number(u64),
    /// A name, compared byte by byte.
    Text(&'r str),
    /// A rank first (problems first, say), then a name among equals.
    Ranked(u8, &'r str),
}

/// What `s` can sort a table's rows by: one enum per view, its variants in
/// the order `s` cycles through them.
pub trait SortKey<R>: Copy + Eq + Sync + std::fmt::Debug + 'static {
    /// Every key, in the order `s` cycles through them; the first is the
    /// view's default.
    const CYCLE: &'static [Self];

    /// What the footer says after `s`: "sorted by {name}".
    fn name(self) -> &'static str;

    /// Its natural direction.
    fn order(self) -> Order;

    /// The value `row` is sorted by.
    fn value(self, row: &R) -> SortValue<'_>;

    /// `a` against `b` in this key's natural direction.
    fn compare(self, a: &R, b: &R) -> Ordering {
        let ordering = self.value(a).cmp(&self.value(b));
        match self.order() {
            Order::Ascending => ordering,
            Order::Descending => ordering.reverse(),
        }
    }
}

/// The sort key of a table that is not sorted (the overview's masters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsorted {}

impl<R> SortKey<R> for Unsorted {
    const CYCLE: &'static [Self] = &[];

    fn name(self) -> &'static str {
        match self {}
    }

    fn order(self) -> Order {
        match self {}
    }

    fn value(self, _: &R) -> SortValue<'_> {
        match self {}
    }
}

/// What a cell needs besides its row.
#[derive(Debug, Clone, Copy)]
pub struct CellContext {
    /// The screen's clock (ns since the epoch), for ages.
    pub now_unix_nanos: i64,
    /// Columns the cell has, for cells that fill them (sparklines).
    pub width: u16,
}

/// How a column shows a row.
#[derive(Debug)]
pub enum Cell<R> {
    /// Text the row holds (an id, an address), shown as it is.
    Text(fn(&R) -> &str),
    /// A peer's state: its word, in its colour.
    State(fn(&R) -> PeerState),
    /// Anything else (numbers, ages, several lines, colours), drawn by the
    /// view.
    Drawn(fn(&R, &CellContext) -> Text<'static>),
}

/// One column of a view's table.
#[derive(Debug)]
pub struct Column<R, S> {
    /// The header, in capitals.
    pub header: &'static str,
    /// Its room: a fixed `Length`, or a `Fill` share of what is left.
    pub width: Constraint,
    /// Numbers right, text left.
    pub alignment: Alignment,
    /// When the terminal is too narrow for every column, the highest ranks
    /// go first (0: kept while anything is).
    pub drop_rank: u8,
    /// What a row shows here.
    pub cell: Cell<R>,
    /// The sort key whose column this is: its header carries the arrow.
    pub sort: Option<S>,
    /// Whether `/` finds rows by this column's text (text and state cells
    /// only: a drawn cell has no text to search).
    pub searched: bool,
}

impl<R, S: Copy> Column<R, S> {
    const fn new(
        header: &'static str,
        width: Constraint,
        alignment: Alignment,
        cell: Cell<R>,
    ) -> Self {
        Self {
            header,
            width,
            alignment,
            drop_rank: 0,
            cell,
            sort: None,
            searched: false,
        }
    }

    /// Text the row holds, left-aligned.
    pub const fn text(header: &'static str, width: Constraint, text: fn(&R) -> &str) -> Self {
        Self::new(header, width, Alignment::Left, Cell::Text(text))
    }

    /// A peer's state, left-aligned.
    pub const fn state(
        header: &'static str,
        width: Constraint,
        state: fn(&R) -> PeerState,
    ) -> Self {
        Self::new(header, width, Alignment::Left, Cell::State(state))
    }

    /// A drawn cell, left-aligned.
    pub const fn drawn(
        header: &'static str,
        width: Constraint,
        draw: fn(&R, &CellContext) -> Text<'static>,
    ) -> Self {
        Self::new(header, width, Alignment::Left, Cell::Drawn(draw))
    }

    /// A drawn cell, right-aligned like every number.
    pub const fn number(
        header: &'static str,
        width: Constraint,
        draw: fn(&R, &CellContext) -> Text<'static>,
    ) -> Self {
        Self::new(header, width, Alignment::Right, Cell::Drawn(draw))
    }

    /// Marks it as the column `sort` orders by.
    pub const fn sorted_by(mut self, sort: S) -> Self {
        self.sort = Some(sort);
        self
    }

    /// Lets `/` find rows by its text.
    pub const fn searched(mut self) -> Self {
        self.searched = true;
        self
    }

    /// Sets when it goes in a narrow terminal (see [`Column::drop_rank`]).
    pub const fn drop_rank(mut self, rank: u8) -> Self {
        self.drop_rank = rank;
        self
    }

    /// The text `/` searches in `row`, if the column is searched and has text.
    pub fn search_text<'r>(&self, row: &'r R) -> Option<&'r str> {
        if !self.searched {
            return None;
        }
        match self.cell {
            Cell::Text(text) => Some(text(row)),
            Cell::State(state) => Some(state(row).word()),
            Cell::Drawn(_) => None,
        }
    }
}

/// How the user wants a view's rows: what `/`, `s` and `r` set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    /// Rows whose searched text contains this, ignoring case; empty: all.
    pub filter: &'a str,
    /// Index into the table's [`SortKey::CYCLE`].
    pub sort: usize,
    /// The sort key's order reversed (`r`).
    pub reverse: bool,
}

/// The description of the table a view shows.
#[derive(Debug)]
pub struct ViewTable<R: 'static, S: 'static> {
    /// The view that shows it; the app keeps a sort key per view.
    pub view: View,
    /// Every row before `/`, `s` and `r`: the mesh's merged rows.
    pub rows: fn(&Mesh) -> Vec<R>,
    /// Left to right.
    pub columns: &'static [Column<R, S>],
    /// The sidecar or client a row is about, for `h`; `None` where there is
    /// nothing `h` can check.
    pub peer: fn(&R) -> Option<&str>,
}

impl<R, S: SortKey<R>> ViewTable<R, S> {
    /// The sort key a query's index stands for.
    pub fn sort_key(&self, query: &Query<'_>) -> Option<S> {
        S::CYCLE.get(query.sort).copied()
    }

    /// Whether rows come largest first: the key's order, flipped by `r`.
    pub fn descending(&self, query: &Query<'_>) -> bool {
        let natural = self
            .sort_key(query)
            .is_some_and(|key| key.order() == Order::Descending);
        natural != query.reverse
    }

    /// Whether `/` applies: a table without searched columns (the masters)
    /// shows every row whatever the filter.
    pub fn searchable(&self) -> bool {
        self.columns.iter().any(|column| column.searched)
    }

    /// Whether `row` contains `needle` (already lower case) in a searched
    /// column.
    fn matches(&self, row: &R, needle: &str) -> bool {
        self.columns
            .iter()
            .filter_map(|column| column.search_text(row))
            .any(|text| text.to_lowercase().contains(needle))
    }

    /// The rows the view shows: those matching the filter, in the order of
    /// the sort key, reversed by `r`. Unsorted tables keep the mesh's order.
    pub fn select(&self, mesh: &Mesh, query: &Query<'_>) -> Vec<R> {
        let mut rows = (self.rows)(mesh);
        if !query.filter.is_empty() && self.searchable() {
            let needle = query.filter.to_lowercase();
            rows.retain(|row| self.matches(row, &needle));
        }
        if let Some(key) = self.sort_key(query) {
            // Stable: rows equal by the key keep the mesh's order.
            rows.sort_by(|a, b| key.compare(a, b));
            if query.reverse {
                rows.reverse();
            }
        }
        rows
    }
}

/// A view's table with its row type hidden: what the app does alike in
/// every view (move the selection, cycle the sort key, check a peer).
pub trait ListView: Sync {
    /// The view that shows it.
    fn view(&self) -> View;

    /// How many keys `s` cycles through.
    fn sort_count(&self) -> usize;

    /// The name of the sort key `query` selects ("sorted by …").
    fn sort_name(&self, query: &Query<'_>) -> Option<&'static str>;

    /// How many rows the view shows.
    fn row_count(&self, mesh: &Mesh, query: &Query<'_>) -> usize;

    /// The peer of the `index`th row shown, for `h`.
    fn peer(&self, mesh: &Mesh, query: &Query<'_>, index: usize) -> Option<String>;
}

impl<R, S: SortKey<R>> ListView for ViewTable<R, S> {
    fn view(&self) -> View {
        self.view
    }

    fn sort_count(&self) -> usize {
        S::CYCLE.len()
    }

    fn sort_name(&self, query: &Query<'_>) -> Option<&'static str> {
        self.sort_key(query).map(SortKey::name)
    }

    fn row_count(&self, mesh: &Mesh, query: &Query<'_>) -> usize {
        self.select(mesh, query).len()
    }

    fn peer(&self, mesh: &Mesh, query: &Query<'_>, index: usize) -> Option<String> {
        self.select(mesh, query)
            .get(index)
            .and_then(|row| (self.peer)(row))
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use smesh_proto::admin::{HealthCheckReport, HealthCheckRow, HeartbeatSample, Tier};
    use smesh_proto::mesh::{Backlog, PeerStatus, RttStats};

    use super::*;
    use crate::state::CheckOutcome;
    use crate::state::fixtures::*;
    use crate::ui::{
        BACKLOG, BacklogSort, CLIENTS, CheckSort, ClientSort, HEALTH_CHECKS, HEARTBEATS,
        HeartbeatSort, MASTERS, SIDECARS, SidecarSort,
    };

    fn query(filter: &str, sort: usize, reverse: bool) -> Query<'_> {
        Query {
            filter,
            sort,
            reverse,
        }
    }

    /// The rows' ids when `table` is filtered and sorted as asked.
    fn shown<R, S: SortKey<R>>(
        table: &ViewTable<R, S>,
        mesh: &Mesh,
        query: &Query<'_>,
        id: fn(&R) -> &str,
    ) -> Vec<String> {
        table
            .select(mesh, query)
            .iter()
            .map(|row| id(row).to_string())
            .collect()
    }

    /// `table`'s rows sorted by each key, in the order `s` reaches them,
    /// and reversed by `r` (ties too: `r` turns the whole list around).
    fn assert_sorts<R, S: SortKey<R>>(
        table: &ViewTable<R, S>,
        mesh: &Mesh,
        id: fn(&R) -> &str,
        expected: &[(S, &[&str])],
    ) {
        let keys: Vec<S> = expected.iter().map(|(key, _)| *key).collect();
        assert_eq!(keys, S::CYCLE, "the keys in the order `s` reaches them");
        for (index, (key, ids)) in expected.iter().enumerate() {
            let sorted = shown(table, mesh, &query("", index, false), id);
            assert_eq!(sorted, *ids, "sorted by {key:?}");
            let mut reversed = shown(table, mesh, &query("", index, true), id);
            reversed.reverse();
            assert_eq!(reversed, *ids, "sorted by {key:?}, reversed");
        }
    }

    /// Every key `s` reaches marks exactly one column (its header gets the
    /// arrow), every marked column is reachable, and only columns with text
    /// are searched.
    fn assert_well_formed<R, S: SortKey<R>>(table: &ViewTable<R, S>) {
        let view = table.view;
        for (i, key) in S::CYCLE.iter().enumerate() {
            let marked = table
                .columns
                .iter()
                .filter(|column| column.sort == Some(*key))
                .count();
            assert_eq!(marked, 1, "{view:?}: {key:?} marks {marked} columns");
            assert!(
                !S::CYCLE[..i].contains(key),
                "{view:?}: {key:?} twice in the cycle"
            );
            assert!(
                !S::CYCLE[..i].iter().any(|k| k.name() == key.name()),
                "{view:?}: two keys are called {:?}",
                key.name()
            );
        }
        for column in table.columns {
            if let Some(key) = column.sort {
                assert!(
                    S::CYCLE.contains(&key),
                    "{view:?}: {} is sorted by {key:?}, which `s` never reaches",
                    column.header
                );
            }
            assert!(
                !(column.searched && matches!(column.cell, Cell::Drawn(_))),
                "{view:?}: {} is searched but has no text",
                column.header
            );
        }
    }

    #[test]
    fn every_view_has_its_own_well_formed_table() {
        for view in View::ALL {
            assert_eq!(view.table().view(), view);
        }
        assert_well_formed(&MASTERS);
        assert_well_formed(&SIDECARS);
        assert_well_formed(&CLIENTS);
        assert_well_formed(&HEARTBEATS);
        assert_well_formed(&BACKLOG);
        assert_well_formed(&HEALTH_CHECKS);
    }

    fn rtt(last_us: u64) -> Option<RttStats> {
        Some(RttStats {
            last_us,
            ..RttStats::default()
        })
    }

    /// Four clients behind two sidecars, with every status and ties in the
    /// backlog, so each sort key puts them in another order.
    fn clients_mesh() -> Mesh {
        let client = |sidecar: &str,
                      id: &str,
                      status: PeerStatus,
                      seen_ago: i64,
                      rtt_us: u64,
                      sent: u64,
                      backlog: u64| {
            let mut view = client(sidecar, id, status, seen_ago);
            if let Some(info) = view.info.as_mut() {
                info.address = format!("10.0.2.{}:5000", id.len() + sent as usize);
                info.rtt = rtt(rtt_us);
                info.events_forwarded = sent;
                info.backlog = Some(Backlog {
                    rows: backlog,
                    bytes: backlog * 100 + sent,
                    oldest_unix_nanos: if backlog > 0 {
                        NOW - (sent as i64) * SECOND
                    } else {
                        0
                    },
                });
            }
            view
        };
        masters(vec![status(
            "master-a",
            vec![],
            vec![
                client("s1", "c-b", PeerStatus::Up, 5, 300, 10, 0),
                client("s2", "c-a", PeerStatus::Down, 1, 100, 30, 7),
                client("s1", "c-c", PeerStatus::Degraded, 9, 200, 20, 7),
                client("s2", "c-d", PeerStatus::Unspecified, 3, 0, 0, 0),
            ],
        )])
    }

    #[test]
    fn clients_sort_by_every_key_s_reaches() {
        let mesh = clients_mesh();
        assert_sorts(
            &CLIENTS,
            &mesh,
            |c| &c.id,
            &[
                (ClientSort::Id, &["c-a", "c-b", "c-c", "c-d"]),
                // Ties keep the merged (id) order.
                (ClientSort::Sidecar, &["c-b", "c-c", "c-a", "c-d"]),
                // Problems first: down, degraded, unknown, up.
                (ClientSort::Status, &["c-a", "c-c", "c-d", "c-b"]),
                (ClientSort::Rtt, &["c-d", "c-a", "c-c", "c-b"]),
                (ClientSort::Sent, &["c-a", "c-c", "c-b", "c-d"]),
                (ClientSort::Backlog, &["c-a", "c-c", "c-b", "c-d"]),
                (ClientSort::LastSeen, &["c-a", "c-d", "c-b", "c-c"]),
            ],
        );
    }

    #[test]
    fn backlog_sorts_only_the_spooling_clients() {
        let spooling = |id: &str, rows: u64, bytes: u64, oldest_ago: i64| {
            let mut view = client("s1", id, PeerStatus::Up, 1);
            if let Some(info) = view.info.as_mut() {
                info.backlog = Some(Backlog {
                    rows,
                    bytes,
                    oldest_unix_nanos: NOW - oldest_ago * SECOND,
                });
            }
            view
        };
        let mesh = masters(vec![status(
            "master-a",
            vec![],
            vec![
                spooling("b-x", 5, 9_000, 10),
                spooling("b-y", 50, 100, 60),
                spooling("b-z", 5, 500, 90),
                client("s1", "b-idle", PeerStatus::Up, 1),
            ],
        )]);
        assert_sorts(
            &BACKLOG,
            &mesh,
            |c| &c.id,
            &[
                // Equal rows keep the mesh's order: oldest first.
                (BacklogSort::Rows, &["b-y", "b-z", "b-x"]),
                (BacklogSort::Bytes, &["b-x", "b-z", "b-y"]),
                (BacklogSort::Oldest, &["b-z", "b-y", "b-x"]),
                (BacklogSort::Id, &["b-x", "b-y", "b-z"]),
            ],
        );
    }

    #[test]
    fn sidecars_sort_by_every_key_s_reaches() {
        let sidecar = |id: &str, status: PeerStatus, rtt_us: u64, events: u64, clients: u32| {
            let mut info = sidecar(id, status, true);
            info.rtt = rtt(rtt_us);
            info.events_forwarded = events;
            info.clients = clients;
            info
        };
        let mesh = masters(vec![status(
            "master-a",
            vec![
                sidecar("s-a", PeerStatus::Up, 900, 5, 1),
                sidecar("s-b", PeerStatus::Down, 300, 50, 0),
                sidecar("s-c", PeerStatus::Degraded, 600, 500, 9),
            ],
            vec![],
        )]);
        assert_sorts(
            &SIDECARS,
            &mesh,
            |s| &s.id,
            &[
                (SidecarSort::Id, &["s-a", "s-b", "s-c"]),
                (SidecarSort::Status, &["s-b", "s-c", "s-a"]),
                (SidecarSort::Rtt, &["s-b", "s-c", "s-a"]),
                (SidecarSort::Events, &["s-c", "s-b", "s-a"]),
                (SidecarSort::Clients, &["s-c", "s-a", "s-b"]),
            ],
        );
    }

    #[test]
    fn heartbeats_sort_by_every_key_s_reaches() {
        let mut mesh = Mesh::default();
        for (tier, peer, samples) in [
            (Tier::Sidecar, "p-a", [100, 100, 700]),
            (Tier::Client, "p-b", [500, 500, 500]),
            (Tier::Sidecar, "p-c", [50, 900, 200]),
        ] {
            for rtt_us in samples {
                mesh.apply_heartbeat(HeartbeatSample {
                    at_unix_nanos: NOW,
                    checker_id: "master-a".into(),
                    tier: tier as i32,
                    peer_id: peer.into(),
                    rtt_us,
                });
            }
        }
        assert_sorts(
            &HEARTBEATS,
            &mesh,
            |h| &h.peer,
            &[
                (HeartbeatSort::Peer, &["p-a", "p-b", "p-c"]),
                // By the word: "client" before "sidecar".
                (HeartbeatSort::Tier, &["p-b", "p-a", "p-c"]),
                (HeartbeatSort::Latest, &["p-a", "p-b", "p-c"]),
                (HeartbeatSort::Avg, &["p-b", "p-c", "p-a"]),
                (HeartbeatSort::P99, &["p-c", "p-a", "p-b"]),
            ],
        );
    }

    /// A check that found a bit of everything, in no particular order.
    fn checked_mesh() -> Mesh {
        let row = |tier: Tier, peer: &str, status: PeerStatus, rtt_us: u64| HealthCheckRow {
            checker_id: "Master-A".into(),
            tier: tier as i32,
            peer_id: peer.into(),
            status: status as i32,
            rtt_us,
            ..HealthCheckRow::default()
        };
        let mut mesh = Mesh::default();
        mesh.apply_check(CheckOutcome {
            master: "master-a".into(),
            result: Ok(HealthCheckReport {
                check_id: 1,
                rows: vec![
                    row(Tier::Client, "a-client", PeerStatus::Up, 400),
                    row(Tier::Sidecar, "z-sidecar", PeerStatus::Degraded, 900),
                    row(Tier::Kafka, "kafka", PeerStatus::Up, 20_000),
                    row(Tier::Sidecar, "b-sidecar", PeerStatus::Down, 0),
                    row(Tier::Unspecified, "0-odd", PeerStatus::Up, 10),
                ],
                ..HealthCheckReport::default()
            }),
        });
        mesh
    }

    #[test]
    fn health_checks_sort_by_every_key_s_reaches() {
        let mesh = checked_mesh();
        assert_sorts(
            &HEALTH_CHECKS,
            &mesh,
            |c| &c.peer,
            &[
                // Kafka, sidecars, then clients and unknown tiers by peer.
                (
                    CheckSort::Tier,
                    &["kafka", "b-sidecar", "z-sidecar", "0-odd", "a-client"],
                ),
                (
                    CheckSort::Peer,
                    &["0-odd", "a-client", "b-sidecar", "kafka", "z-sidecar"],
                ),
                (
                    CheckSort::Status,
                    &["b-sidecar", "z-sidecar", "a-client", "kafka", "0-odd"],
                ),
                (
                    CheckSort::Rtt,
                    &["kafka", "z-sidecar", "a-client", "0-odd", "b-sidecar"],
                ),
            ],
        );
        // `h` checks sidecars and clients only.
        let peers: Vec<Option<String>> = (0..5)
            .map(|i| HEALTH_CHECKS.peer(&mesh, &query("", 0, false), i))
            .collect();
        assert_eq!(
            peers,
            [
                None,
                Some("b-sidecar".into()),
                Some("z-sidecar".into()),
                None,
                Some("a-client".into()),
            ]
        );
    }

    #[test]
    fn the_filter_searches_the_columns_marked_searched_ignoring_case() {
        let mesh = clients_mesh();
        let clients = |filter| shown(&CLIENTS, &mesh, &query(filter, 0, false), |c| &c.id);
        assert_eq!(clients("S2"), ["c-a", "c-d"], "sidecar, any case");
        assert_eq!(clients("degraded"), ["c-c"], "status word");
        assert_eq!(clients("10.0.2.23:"), ["c-c"], "address");
        assert_eq!(clients("C-B"), ["c-b"], "id");
        assert!(clients("master-a").is_empty(), "no master column here");
        assert!(clients("300").is_empty(), "numbers are not searched");
        assert_eq!(clients("").len(), 4);

        // The backlog shows statuses but does not search them.
        let backlog = |filter| shown(&BACKLOG, &mesh, &query(filter, 0, false), |c| &c.id);
        assert!(backlog("down").is_empty());
        assert_eq!(backlog("s1"), ["c-c"]);

        let checked = checked_mesh();
        let checks = |filter| {
            shown(&HEALTH_CHECKS, &checked, &query(filter, 0, false), |c| {
                &c.peer
            })
        };
        assert_eq!(checks("KAFKA"), ["kafka"], "tier word");
        assert_eq!(checks("down"), ["b-sidecar"], "status word");
        assert_eq!(checks("master-a").len(), 5, "checker, any case");
    }

    #[test]
    fn the_overview_shows_every_master_whatever_the_filter_and_order() {
        let mesh = two_masters(
            status("master-b", vec![], vec![]),
            status("master-a", vec![], vec![]),
        );
        let ids = |query: &Query<'_>| {
            MASTERS
                .select(&mesh, query)
                .into_iter()
                .map(|m| m.row.id)
                .collect::<Vec<_>>()
        };
        let given = ["master-b", "master-a"];
        assert_eq!(ids(&query("", 0, false)), given);
        assert_eq!(ids(&query("zzz", 0, true)), given);
        assert_eq!(MASTERS.row_count(&mesh, &query("zzz", 3, true)), 2);
        assert_eq!(MASTERS.sort_name(&query("", 0, false)), None);
        assert_eq!(MASTERS.peer(&mesh, &query("", 0, false), 0), None);
    }

    #[test]
    fn the_arrow_points_the_way_the_rows_run() {
        let by = |sort, reverse| CLIENTS.descending(&query("", sort, reverse));
        // Id ascends, Sent descends; `r` flips both.
        assert!(!by(0, false));
        assert!(by(0, true));
        assert!(by(4, false));
        assert!(!by(4, true));
        // Past the last key nothing is sorted: no direction but `r`'s.
        assert!(!by(99, false));
    }

    #[test]
    fn views_are_numbered_and_cycle_in_tab_order() {
        for (i, view) in View::ALL.into_iter().enumerate() {
            assert_eq!(view.index(), i);
            let key = char::from_digit(u32::try_from(view.number()).unwrap_or(0), 10);
            assert_eq!(key.and_then(View::numbered), Some(view));
            assert_eq!(view.next().previous(), view);
            assert_eq!(View::ALL[(i + 1) % View::COUNT], view.next());
        }
        assert_eq!(View::numbered('0'), None);
        assert_eq!(View::numbered('x'), None);
        assert_eq!(
            View::numbered(char::from(b'1' + u8::try_from(View::COUNT).unwrap_or(0))),
            None
        );
    }
}
