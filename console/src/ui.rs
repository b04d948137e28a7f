//! Rendering of the dashboard: `impl Widget for &App`.
//!
//! The screen, top to bottom: a title bar (every master and the console's
//! link to it), the tab bar, the current view, and a footer (the filter being
//! typed, the last message, or key hints). `?` puts the help on top.
//!
//! Rendering only reads the [`App`]: no clock (ages are measured from
//! `App::now_unix_nanos`) and no I/O, so a `TestBackend` screen is the same
//! on every run. Every number goes through [`crate::format`]; text that does
//! not fit is cut with `…`, never wrapped; no terminal size makes it panic.
//! Status words are always written out ("up", "down"), colour only repeats
//! them.

use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{
    Block, Borders, Clear, HighlightSpacing, Padding, Paragraph, RenderDirection, Row, Sparkline,
    StatefulWidget, Table, TableState, Widget,
};

use crate::app::{App, View};
use crate::format;
use crate::state::{ClientRow, Connection, MasterRow, MasterView, PeerState};

/// Marks the selected row of a table.
const SELECTION_SYMBOL: &str = "▶ ";
/// Columns of [`SELECTION_SYMBOL`], kept free on every row so columns do not shift.
const SELECTION_WIDTH: u16 = 2;
/// Blank columns between two table columns.
const COLUMN_SPACING: u16 = 1;
/// Below this, a column of ids or addresses is not worth showing.
const FILL_COLUMN_MIN_WIDTH: u16 = 10;
/// Longest connection error shown in the title bar.
const TITLE_ERROR_CHARS: usize = 40;
/// Longest master label shown in the title bar.
const TITLE_LABEL_CHARS: usize = 24;
/// Bars of the heartbeat sparklines, lowest first.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let [title_area, tabs_area, body_area, footer_area] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(area);
        fit(title_bar(self), title_area.width).render(title_area, buf);
        fit(tab_bar(self.view, tabs_area.width), tabs_area.width).render(tabs_area, buf);
        match self.view {
            View::Overview => render_overview(self, body_area, buf),
            View::Sidecars => render_sidecars(self, body_area, buf),
            View::Clients => render_clients(self, body_area, buf),
            View::Heartbeats => render_heartbeats(self, body_area, buf),
            View::Backlog => render_backlog(self, body_area, buf),
            View::Health => render_health(self, body_area, buf),
        }
        render_footer(self, footer_area, buf);
        if self.show_help {
            render_help(self, area, buf);
        }
    }
}

// ---------------------------------------------------------------------------
// Title bar, tab bar, footer
// ---------------------------------------------------------------------------

/// "smesh console │ master-a ● connected │ 10.0.0.2:9011 ◌ connecting (attempt 4): Connection refused".
fn title_bar(app: &App) -> Line<'static> {
    let mut spans = vec![Span::styled(
        " smesh console",
        Style::new().add_modifier(Modifier::BOLD),
    )];
    if app.mesh.masters.is_empty() {
        spans.push(Span::styled("  no master to watch", dim()));
    }
    for master in &app.mesh.masters {
        spans.push(Span::styled(" │ ", dim()));
        spans.push(Span::raw(truncate(master_label(master), TITLE_LABEL_CHARS)));
        spans.push(Span::raw(" "));
        spans.push(connection_span(&master.connection));
    }
    Line::from(spans)
}

/// The master's id once known, else the address the console dials.
fn master_label(master: &MasterView) -> &str {
    master
        .id()
        .filter(|id| !id.is_empty())
        .unwrap_or(&master.address)
}

/// Green when connected; yellow while connecting; red once the link has
/// failed more than three times in a row.
fn connection_span(connection: &Connection) -> Span<'static> {
    match connection {
        Connection::Connected => Span::styled("● connected", Style::new().fg(Color::Green)),
        Connection::Connecting { attempt, error } => {
            let color = if error.is_some() && *attempt > 3 {
                Color::Red
            } else {
                Color::Yellow
            };
            let attempt = if *attempt > 0 {
                format!(" (attempt {attempt})")
            } else {
                String::new()
            };
            let cause = error
                .as_deref()
                .map(short_error)
                .filter(|cause| !cause.is_empty())
                .map(|cause| format!(": {cause}"))
                .unwrap_or_default();
            Span::styled(
                format!("◌ connecting{attempt}{cause}"),
                Style::new().fg(color),
            )
        }
    }
}

/// The root cause of a `remote::source_chain` error ("cannot reach x: transport
/// error: … : Connection refused (os error 111)" → "Connection refused"), short.
fn short_error(error: &str) -> String {
    let cause = error.rsplit(": ").next().unwrap_or(error).trim();
    let cause = cause.find(" (os error ").map_or(cause, |at| &cause[..at]);
    truncate(cause, TITLE_ERROR_CHARS)
}

/// " 1 Overview  2 Sidecars … ", the current view reversed. In a narrow
/// terminal only the current view keeps its name: " 1  2  3 Clients  4  5  6 ".
fn tab_bar(current: View, width: u16) -> Line<'static> {
    let tabs = |compact: bool| {
        let mut spans = Vec::with_capacity(View::ALL.len() * 2);
        for (number, view) in (1..).zip(View::ALL) {
            let style = if view == current {
                Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
            } else {
                Style::new()
            };
            let label = if compact && view != current {
                format!(" {number} ")
            } else {
                format!(" {number} {} ", view.title())
            };
            spans.push(Span::styled(label, style));
        }
        Line::from(spans)
    };
    let full = tabs(false);
    if full.width() <= usize::from(width) {
        full
    } else {
        tabs(true)
    }
}

/// Keys and what they do, in the footer.
const KEY_HINTS: [(&str, &str); 9] = [
    ("?", "help"),
    ("q", "quit"),
    ("Tab/1-6", "views"),
    ("j/k", "move"),
    ("/", "filter"),
    ("s", "sort"),
    ("r", "reverse"),
    ("h", "check"),
    ("H", "check all"),
];

/// The filter being typed, else the last message, else key hints; the active
/// filter on the right.
fn render_footer(app: &App, area: Rect, buf: &mut Buffer) {
    let key = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
    let (left, right) = if app.editing_filter {
        let left = Line::from(vec![
            Span::raw(" "),
            Span::styled("/", key),
            Span::raw(app.filter.clone()),
            Span::styled("█", Style::new().add_modifier(Modifier::SLOW_BLINK)),
        ]);
        let right = Line::from(vec![
            Span::styled("Enter", key),
            Span::raw(" keep  "),
            Span::styled("Esc", key),
            Span::raw(" clear "),
        ]);
        (left, right)
    } else {
        let mut right = Vec::new();
        if !app.filter.is_empty() {
            right.push(Span::styled(
                format!("filter: {}", app.filter),
                Style::new().fg(Color::Yellow),
            ));
        }
        let left = match &app.message {
            Some(message) => {
                if !right.is_empty() {
                    right.push(Span::raw("  "));
                }
                right.push(Span::styled("?", key));
                right.push(Span::raw(" help"));
                Line::from(vec![Span::raw(" "), Span::raw(message.clone())])
            }
            None => {
                let mut spans = vec![Span::raw(" ")];
                for (i, (keys, what)) in KEY_HINTS.iter().enumerate() {
                    if i > 0 {
                        spans.push(Span::raw("  "));
                    }
                    spans.push(Span::styled(*keys, key));
                    spans.push(Span::raw(format!(" {what}")));
                }
                Line::from(spans)
            }
        };
        right.push(Span::raw(" "));
        (left, Line::from(right))
    };
    let right_width = u16::try_from(right.width())
        .unwrap_or(u16::MAX)
        .min(area.width / 2);
    let [left_area, right_area] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(right_width)]).areas(area);
    fit(left, left_area.width).render(left_area, buf);
    fit(right, right_area.width)
        .right_aligned()
        .render(right_area, buf);
}

/// A centred popup with every key and where the logs go.
fn render_help(app: &App, area: Rect, buf: &mut Buffer) {
    const KEYS: [(&str, &str); 11] = [
        ("1-6  Tab  Shift-Tab", "switch view"),
        ("j k  ↓ ↑", "move the selection"),
        ("g G  Home End", "first / last row"),
        ("/", "filter rows (Enter keeps it, Esc clears it)"),
        ("Esc", "clear the filter"),
        ("s", "sort by the next column"),
        ("r", "reverse the order"),
        ("h", "health-check the selected sidecar or client"),
        ("H", "health-check every peer"),
        ("?", "this help (any key closes it)"),
        ("q  Ctrl-C", "quit"),
    ];
    let key = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
    let mut lines: Vec<Line<'static>> = KEYS
        .iter()
        .map(|(keys, what)| {
            Line::from(vec![
                Span::styled(format!(" {keys:<20}"), key),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    let mut statuses = vec![Span::raw(" Statuses: ")];
    for (i, state) in PeerState::ALL.into_iter().enumerate() {
        if i > 0 {
            statuses.push(Span::raw(", "));
        }
        statuses.push(status_span(state));
    }
    lines.push(Line::from(statuses));
    lines.push(Line::raw(" Logs go to:"));
    let widest = lines.iter().map(Line::width).max().unwrap_or(0);
    let width = u16::try_from(
        widest
            .max(app.log_path.chars().count().saturating_add(2))
            .saturating_add(3),
    )
    .unwrap_or(u16::MAX)
    .min(area.width);
    lines.push(Line::raw(format!(
        "  {}",
        truncate_front(&app.log_path, usize::from(width.saturating_sub(4)))
    )));
    let height = u16::try_from(lines.len().saturating_add(2))
        .unwrap_or(u16::MAX)
        .min(area.height);
    let popup = area.centered(Constraint::Length(width), Constraint::Length(height));
    Clear.render(popup, buf);
    let block = Block::bordered()
        .title(Line::styled(
            " Help ",
            Style::new().add_modifier(Modifier::BOLD),
        ))
        .title_bottom(Line::styled(" any key closes ", dim()).right_aligned())
        .border_style(Style::new().fg(Color::Cyan));
    let inner = block.inner(popup);
    block.render(popup, buf);
    let inner_width = inner.width;
    Paragraph::new(
        lines
            .into_iter()
            .map(|line| fit(line, inner_width))
            .collect::<Vec<_>>(),
    )
    .render(inner, buf);
}

// ---------------------------------------------------------------------------
// Overview
// ---------------------------------------------------------------------------

/// Masters, mesh totals and the published-events sparkline.
fn render_overview(app: &App, area: Rect, buf: &mut Buffer) {
    let masters = app.mesh.master_rows();
    let summary = mesh_summary(app);
    // Masters first, then the summary, the chart gets what is left.
    let masters_height = u16::try_from(masters.len().saturating_mul(2).saturating_add(3))
        .unwrap_or(u16::MAX)
        .min(area.height);
    let summary_height = u16::try_from(summary.len().saturating_add(2))
        .unwrap_or(u16::MAX)
        .min(area.height.saturating_sub(masters_height));
    let [masters_area, summary_area, chart_area] = Layout::vertical([
        Constraint::Length(masters_height),
        Constraint::Length(summary_height),
        Constraint::Fill(1),
    ])
    .areas(area);
    render_masters(app, &masters, masters_area, buf);
    let block = titled_block(Line::from(" Mesh "));
    let inner = block.inner(summary_area);
    block.render(summary_area, buf);
    let inner_width = inner.width;
    Paragraph::new(
        summary
            .into_iter()
            .map(|line| fit(line, inner_width))
            .collect::<Vec<_>>(),
    )
    .render(inner, buf);
    render_published_chart(app, chart_area, buf);
}

const MASTER_COLUMNS: [Column; 7] = [
    Column::text("MASTER", None, Constraint::Fill(2)),
    Column::text("KAFKA", None, Constraint::Fill(3)),
    Column::number("UPTIME", None, Constraint::Length(6)).drop_rank(3),
    Column::number("EVENTS IN", None, Constraint::Length(9)).drop_rank(1),
    Column::number("PUBLISHED", None, Constraint::Length(9)),
    Column::number("FAILED", None, Constraint::Length(7)).drop_rank(1),
    Column::number("DUPLICATES", None, Constraint::Length(10)).drop_rank(2),
];

/// One two-line row per master: totals above, rates below.
fn render_masters(app: &App, masters: &[MasterRow], area: Rect, buf: &mut Buffer) {
    let rows = masters
        .iter()
        .zip(&app.mesh.masters)
        .map(|(row, view)| {
            // Numbers of a master never reached are unknown, not zero.
            let known = view.status.is_some() || view.stats.is_some();
            let number = |n: u64| {
                if known {
                    format::count(n)
                } else {
                    "–".to_string()
                }
            };
            let label = if row.id.is_empty() {
                row.address.clone()
            } else {
                row.id.clone()
            };
            let mark = match view.connection {
                Connection::Connected => Span::styled("● ", Style::new().fg(Color::Green)),
                Connection::Connecting { .. } => Span::styled("◌ ", Style::new().fg(Color::Yellow)),
            };
            let second_line = if row.id.is_empty() {
                match &view.connection {
                    Connection::Connecting { attempt, .. } if *attempt > 0 => {
                        format!("  connecting (attempt {attempt})")
                    }
                    _ => "  connecting".to_string(),
                }
            } else {
                format!("  {}", row.address)
            };
            let kafka = if !row.connected {
                Line::from(vec![
                    status_span(PeerState::Unknown),
                    Span::styled(" · master not connected", dim()),
                ])
            } else if row.kafka_ready {
                kafka_line("ready", Color::Green, &row.kafka_detail)
            } else {
                kafka_line("not ready", Color::Red, &row.kafka_detail)
            };
            vec![
                Text::from(vec![
                    Line::from(vec![mark, Span::raw(label)]),
                    Line::styled(second_line, dim()),
                ]),
                Text::from(vec![kafka, Line::styled(row.kafka_brokers.clone(), dim())]),
                Text::from(if known {
                    format::duration_secs(row.uptime_secs)
                } else {
                    "–".to_string()
                }),
                two_lines(number(row.events_in), rate_text(known, row.events_in_per_s)),
                two_lines(number(row.published), rate_text(known, row.published_per_s)),
                Text::from(Line::styled(number(row.failed), failure_style(row.failed))),
                Text::from(number(row.duplicates)),
            ]
        })
        .collect();
    let title = Line::from(format!(" Masters ({}) ", masters.len()));
    render_table(
        app,
        area,
        buf,
        &TableView {
            title,
            notes: Vec::new(),
            columns: &MASTER_COLUMNS,
            rows,
            empty: "no master to watch: pass admin addresses on the command line".to_string(),
        },
    );
}

fn kafka_line(word: &'static str, color: Color, detail: &str) -> Line<'static> {
    let mut spans = vec![Span::styled(word, Style::new().fg(color))];
    if !detail.is_empty() {
        spans.push(Span::raw(format!(" · {detail}")));
    }
    Line::from(spans)
}

fn rate_text(known: bool, per_second: f64) -> String {
    if known {
        format::rate(per_second)
    } else {
        String::new()
    }
}

fn two_lines(first: String, second: String) -> Text<'static> {
    Text::from(vec![Line::raw(first), Line::styled(second, dim())])
}

fn failure_style(failed: u64) -> Style {
    if failed > 0 {
        Style::new().fg(Color::Red)
    } else {
        Style::new()
    }
}

/// Sidecars and clients by status, the spooled backlog, the last checks.
fn mesh_summary(app: &App) -> Vec<Line<'static>> {
    let label = Style::new().add_modifier(Modifier::BOLD);
    let sidecars = app.mesh.sidecar_rows();
    let clients = app.mesh.client_rows();
    let mut first = vec![Span::styled(" Sidecars ", label)];
    first.extend(status_tally(sidecars.iter().map(|s| s.status)));
    first.push(Span::styled("    Clients ", label));
    first.extend(status_tally(clients.iter().map(|c| c.status)));

    let backlog = app.mesh.backlog_rows();
    let mut second = vec![Span::styled(" Backlog  ", label)];
    if backlog.is_empty() {
        second.push(Span::raw("nothing spooled"));
    } else {
        let rows = backlog
            .iter()
            .fold(0u64, |sum, c| sum.saturating_add(c.backlog_rows));
        let bytes = backlog
            .iter()
            .fold(0u64, |sum, c| sum.saturating_add(c.backlog_bytes));
        let oldest = backlog
            .iter()
            .map(|c| c.backlog_oldest_unix_nanos)
            .filter(|at| *at > 0)
            .min()
            .unwrap_or(0);
        second.push(Span::styled(
            format!(
                "{} rows · {} spooled by {}, oldest {}",
                format::count(rows),
                format::bytes(bytes),
                plural(backlog.len(), "client", "clients"),
                format::since(oldest, app.now_unix_nanos),
            ),
            Style::new().fg(Color::Yellow),
        ));
    }

    let mut lines = vec![Line::from(first), Line::from(second)];
    let checks = check_summaries(app);
    if checks.is_empty() {
        lines.push(Line::from(vec![
            Span::styled(" Checks   ", label),
            Span::styled("none yet (H checks every peer)", dim()),
        ]));
    }
    for (i, check) in checks.into_iter().enumerate() {
        let heading = if i == 0 { " Checks   " } else { "          " };
        let mut spans = vec![Span::styled(heading, label)];
        spans.extend(check);
        lines.push(Line::from(spans));
    }
    lines
}

/// "2/3 up · 1 down", the problems coloured.
fn status_tally(statuses: impl Iterator<Item = PeerState>) -> Vec<Span<'static>> {
    let statuses: Vec<PeerState> = statuses.collect();
    let count = |state: PeerState| statuses.iter().filter(|s| **s == state).count();
    let total = statuses.len();
    let mut spans = vec![Span::styled(
        format!("{}/{total} up", count(PeerState::Up)),
        status_style(PeerState::Up),
    )];
    for state in PeerState::ALL {
        let n = count(state);
        if state != PeerState::Up && n > 0 {
            spans.push(Span::raw(" · "));
            spans.push(Span::styled(format!("{n} {state}"), status_style(state)));
        }
    }
    if total == 0 {
        spans = vec![Span::styled("none known", dim())];
    }
    spans
}

/// Published events per second over all masters, newest at the right.
fn render_published_chart(app: &App, area: Rect, buf: &mut Buffer) {
    let history = app.mesh.published_history();
    let latest = history.last().copied().unwrap_or(0);
    let peak = history.iter().copied().max().unwrap_or(0);
    let title = if history.is_empty() {
        " Published events/s ".to_string()
    } else {
        format!(
            " Published events/s · now {} · peak {} ",
            format::rate(latest as f64),
            format::rate(peak as f64)
        )
    };
    let block = titled_block(Line::from(title));
    let inner = block.inner(area);
    block.render(area, buf);
    if history.is_empty() {
        Paragraph::new(fit(
            Line::styled(" waiting for the masters' stats…", dim()),
            inner.width,
        ))
        .render(inner, buf);
        return;
    }
    let newest_first: Vec<u64> = history
        .iter()
        .rev()
        .take(usize::from(inner.width))
        .copied()
        .collect();
    Sparkline::default()
        .data(&newest_first)
        .direction(RenderDirection::RightToLeft)
        .style(Style::new().fg(Color::Cyan))
        .render(inner, buf);
}

// ---------------------------------------------------------------------------
// Sidecars, clients, heartbeats, backlog, health checks
// ---------------------------------------------------------------------------

const SIDECAR_COLUMNS: [Column; 11] = [
    Column::text("SIDECAR", Some("id"), Constraint::Fill(1)),
    Column::text("MASTER", None, Constraint::Length(12)).drop_rank(3),
    Column::text("ADDRESS", None, Constraint::Fill(1)).drop_rank(2),
    Column::text("STATUS", Some("status"), Constraint::Length(8)),
    Column::number("RTT", Some("rtt"), Constraint::Length(7)),
    Column::number("AVG", None, Constraint::Length(7)).drop_rank(2),
    Column::number("P99", None, Constraint::Length(7)).drop_rank(1),
    Column::number("EVENTS", Some("events"), Constraint::Length(8)).drop_rank(1),
    Column::number("CLIENTS", Some("clients"), Constraint::Length(9)).drop_rank(1),
    Column::number("CONNECTED", None, Constraint::Length(9)).drop_rank(3),
    Column::number("HEARTBEAT", None, Constraint::Length(9)).drop_rank(1),
];

fn render_sidecars(app: &App, area: Rect, buf: &mut Buffer) {
    let now = app.now_unix_nanos;
    let sidecars = app.sidecar_rows();
    let rows = sidecars
        .iter()
        .map(|s| {
            let connected = if !s.connected {
                "no".to_string()
            } else if s.connected_since_unix_nanos > 0 {
                format!("for {}", format::since(s.connected_since_unix_nanos, now))
            } else {
                "yes".to_string()
            };
            vec![
                Text::from(s.id.clone()),
                Text::from(s.master.clone()),
                Text::from(s.address.clone()),
                Text::from(Line::from(status_span(s.status))),
                Text::from(format::rtt(s.rtt_last_us)),
                Text::from(format::rtt(s.rtt_avg_us)),
                Text::from(format::rtt(s.rtt_p99_us)),
                Text::from(format::count(s.events_forwarded)),
                Text::from(format::count(u64::from(s.clients))),
                Text::from(connected),
                Text::from(format::ago(s.last_heartbeat_unix_nanos, now)),
            ]
        })
        .collect();
    render_table(
        app,
        area,
        buf,
        &TableView {
            title: view_title(
                "Sidecars",
                sidecars.len(),
                app.mesh.sidecar_rows().len(),
                &app.filter,
            ),
            notes: Vec::new(),
            columns: &SIDECAR_COLUMNS,
            rows,
            empty: empty_text(app, "no sidecar known yet", "no sidecar matches"),
        },
    );
}

const CLIENT_COLUMNS: [Column; 11] = [
    Column::text("CLIENT", Some("id"), Constraint::Fill(1)),
    Column::text("SIDECAR", Some("sidecar"), Constraint::Length(10)).drop_rank(1),
    Column::text("ADDRESS", None, Constraint::Fill(1)).drop_rank(3),
    Column::text("STATUS", Some("status"), Constraint::Length(8)),
    Column::number("RTT", Some("rtt"), Constraint::Length(7)).drop_rank(1),
    Column::number("SENT", Some("sent"), Constraint::Length(7)).drop_rank(2),
    Column::number("IN FLIGHT", None, Constraint::Length(9)).drop_rank(3),
    Column::number("BACKLOG", Some("backlog"), Constraint::Length(9)).drop_rank(1),
    Column::number("BYTES", None, Constraint::Length(9)).drop_rank(2),
    Column::number("OLDEST", None, Constraint::Length(6)).drop_rank(2),
    Column::number("SEEN", Some("last seen"), Constraint::Length(8)).drop_rank(1),
];

fn render_clients(app: &App, area: Rect, buf: &mut Buffer) {
    let now = app.now_unix_nanos;
    let clients = app.client_rows();
    let rows = clients
        .iter()
        .map(|c| {
            let spooled = c.backlog_rows > 0;
            vec![
                Text::from(c.id.clone()),
                Text::from(c.sidecar.clone()),
                Text::from(c.address.clone()),
                Text::from(Line::from(status_span(c.status))),
                Text::from(format::rtt(c.rtt_last_us)),
                Text::from(format::count(c.events_sent)),
                Text::from(format::count(c.in_flight)),
                Text::from(Line::styled(
                    format::count(c.backlog_rows),
                    backlog_style(spooled),
                )),
                Text::from(if spooled {
                    format::bytes(c.backlog_bytes)
                } else {
                    "–".to_string()
                }),
                Text::from(if spooled {
                    format::since(c.backlog_oldest_unix_nanos, now)
                } else {
                    "–".to_string()
                }),
                Text::from(format::ago(c.last_seen_unix_nanos, now)),
            ]
        })
        .collect();
    render_table(
        app,
        area,
        buf,
        &TableView {
            title: view_title(
                "Clients",
                clients.len(),
                app.mesh.client_rows().len(),
                &app.filter,
            ),
            notes: Vec::new(),
            columns: &CLIENT_COLUMNS,
            rows,
            empty: empty_text(app, "no client known yet", "no client matches"),
        },
    );
}

fn backlog_style(spooled: bool) -> Style {
    if spooled {
        Style::new().fg(Color::Yellow)
    } else {
        Style::new()
    }
}

const HEARTBEAT_COLUMNS: [Column; 7] = [
    Column::text("TIER", Some("tier"), Constraint::Length(8)).drop_rank(2),
    Column::text("PEER", Some("peer"), Constraint::Fill(1)),
    Column::text("CHECKER", None, Constraint::Fill(1)).drop_rank(3),
    Column::number("LATEST", Some("latest"), Constraint::Length(8)),
    Column::number("AVG", Some("avg"), Constraint::Length(7)).drop_rank(2),
    Column::number("P99", Some("p99"), Constraint::Length(7)).drop_rank(1),
    Column::number(
        "HISTORY (scaled to each row's peak)",
        None,
        Constraint::Fill(3),
    )
    .drop_rank(1),
];

fn render_heartbeats(app: &App, area: Rect, buf: &mut Buffer) {
    let heartbeats = app.heartbeat_rows();
    let inner_width = titled_block(Line::default()).inner(area).width;
    // Zero when a narrow terminal drops the history column.
    let history_width = fitted_columns(&HEARTBEAT_COLUMNS, inner_width)
        .into_iter()
        .find(|(index, _)| *index == HEARTBEAT_COLUMNS.len() - 1)
        .map_or(0, |(_, width)| width);
    let rows = heartbeats
        .iter()
        .map(|h| {
            vec![
                Text::from(h.tier.word()),
                Text::from(h.peer.clone()),
                Text::from(h.checker.clone()),
                Text::from(format::rtt(h.last_us)),
                Text::from(format::rtt(h.avg_us)),
                Text::from(format::rtt(h.p99_us)),
                Text::from(Line::styled(
                    bar_chart(&h.samples, usize::from(history_width)),
                    Style::new().fg(Color::Cyan),
                )),
            ]
        })
        .collect();
    render_table(
        app,
        area,
        buf,
        &TableView {
            title: view_title(
                "Heartbeats",
                heartbeats.len(),
                app.mesh.heartbeat_rows().len(),
                &app.filter,
            ),
            notes: Vec::new(),
            columns: &HEARTBEAT_COLUMNS,
            rows,
            empty: empty_text(app, "no heartbeat measured yet", "no heartbeat matches"),
        },
    );
}

/// The last `width` samples as bars, the highest sample a full block.
fn bar_chart(samples: &[u64], width: usize) -> String {
    let shown = &samples[samples.len().saturating_sub(width)..];
    let peak = u128::from(shown.iter().copied().max().unwrap_or(0));
    let top = BARS.len() - 1;
    shown
        .iter()
        .map(|sample| {
            let level = if peak == 0 {
                0
            } else {
                // Rounded, in u128 so huge samples cannot overflow.
                usize::try_from((u128::from(*sample) * 2 * top as u128 + peak) / (2 * peak))
                    .unwrap_or(top)
            };
            BARS[level.min(top)]
        })
        .collect()
}

const BACKLOG_COLUMNS: [Column; 8] = [
    Column::text("CLIENT", Some("id"), Constraint::Fill(1)),
    Column::text("SIDECAR", None, Constraint::Fill(1)).drop_rank(2),
    Column::text("MASTER", None, Constraint::Fill(1)).drop_rank(3),
    Column::text("STATUS", None, Constraint::Length(8)).drop_rank(2),
    Column::number("ROWS", Some("rows"), Constraint::Length(8)),
    Column::number("BYTES", Some("bytes"), Constraint::Length(9)).drop_rank(1),
    Column::number("OLDEST", Some("oldest"), Constraint::Length(8)).drop_rank(1),
    Column::number("LAST SEEN", None, Constraint::Length(9)).drop_rank(2),
];

fn render_backlog(app: &App, area: Rect, buf: &mut Buffer) {
    let now = app.now_unix_nanos;
    let backlog: Vec<ClientRow> = app.backlog_rows();
    let rows_total = backlog
        .iter()
        .fold(0u64, |sum, c| sum.saturating_add(c.backlog_rows));
    let bytes_total = backlog
        .iter()
        .fold(0u64, |sum, c| sum.saturating_add(c.backlog_bytes));
    let rows = backlog
        .iter()
        .map(|c| {
            vec![
                Text::from(c.id.clone()),
                Text::from(c.sidecar.clone()),
                Text::from(c.master.clone()),
                Text::from(Line::from(status_span(c.status))),
                Text::from(Line::styled(
                    format::count(c.backlog_rows),
                    backlog_style(true),
                )),
                Text::from(format::bytes(c.backlog_bytes)),
                Text::from(format::since(c.backlog_oldest_unix_nanos, now)),
                Text::from(format::ago(c.last_seen_unix_nanos, now)),
            ]
        })
        .collect();
    let mut title = view_title(
        "Backlog",
        backlog.len(),
        app.mesh.backlog_rows().len(),
        &app.filter,
    );
    if !backlog.is_empty() {
        title.spans.push(Span::raw(format!(
            "· {} rows · {} spooled ",
            format::count(rows_total),
            format::bytes(bytes_total)
        )));
    }
    render_table(
        app,
        area,
        buf,
        &TableView {
            title,
            notes: Vec::new(),
            columns: &BACKLOG_COLUMNS,
            rows,
            empty: empty_text(
                app,
                "no client has spooled events",
                "no client with spooled events matches",
            ),
        },
    );
}

const CHECK_COLUMNS: [Column; 8] = [
    Column::text("TIER", Some("tier"), Constraint::Length(8)).drop_rank(2),
    Column::text("PEER", Some("peer"), Constraint::Fill(2)),
    Column::text("CHECKER", None, Constraint::Fill(2)).drop_rank(3),
    Column::text("ADDRESS", None, Constraint::Fill(2)).drop_rank(3),
    Column::text("STATUS", Some("status"), Constraint::Length(8)),
    Column::number("RTT", Some("rtt"), Constraint::Length(7)).drop_rank(1),
    Column::text("DETAIL", None, Constraint::Fill(3)).drop_rank(1),
    Column::number("WHEN", None, Constraint::Length(8)).drop_rank(2),
];

fn render_health(app: &App, area: Rect, buf: &mut Buffer) {
    let now = app.now_unix_nanos;
    let checks = app.check_rows();
    let mut notes: Vec<Line<'static>> = check_summaries(app)
        .into_iter()
        .map(|summary| {
            let mut spans = vec![Span::raw(" ")];
            spans.extend(summary);
            Line::from(spans)
        })
        .collect();
    if app.checks_running > 0 {
        notes.push(Line::styled(
            format!(
                " {} running…",
                plural(app.checks_running, "check", "checks")
            ),
            Style::new().fg(Color::Yellow),
        ));
    }
    let nothing = if app.checks_running > 0 {
        "waiting for the first answer…"
    } else if app.mesh.checks.is_empty() {
        "press H to check every peer, h to check the selected one"
    } else {
        "the last check found no peer"
    };
    let rows = checks
        .iter()
        .map(|c| {
            vec![
                Text::from(c.tier.word()),
                Text::from(c.peer.clone()),
                Text::from(c.checker.clone()),
                Text::from(c.address.clone()),
                Text::from(Line::from(status_span(c.status))),
                Text::from(format::rtt(c.rtt_us)),
                Text::from(c.detail.clone()),
                Text::from(format::ago(c.at_unix_nanos, now)),
            ]
        })
        .collect();
    render_table(
        app,
        area,
        buf,
        &TableView {
            title: view_title(
                "Health checks",
                checks.len(),
                app.mesh.check_rows().len(),
                &app.filter,
            ),
            notes,
            columns: &CHECK_COLUMNS,
            rows,
            empty: empty_text(app, nothing, "no checked peer matches"),
        },
    );
}

/// One line per master's latest check: which, when, how many peers were not
/// up; or why it failed.
fn check_summaries(app: &App) -> Vec<Vec<Span<'static>>> {
    let mut seen: Vec<&str> = Vec::new();
    let mut summaries = Vec::new();
    for outcome in &app.mesh.checks {
        if seen.contains(&outcome.master.as_str()) {
            continue;
        }
        seen.push(&outcome.master);
        let spans = match &outcome.result {
            Ok(report) => {
                let not_up = report
                    .rows
                    .iter()
                    .filter(|r| PeerState::from_wire(r.status) != PeerState::Up)
                    .count();
                let mut spans = vec![Span::raw(format!(
                    "check #{} via {}, {}: {}, ",
                    report.check_id,
                    outcome.master,
                    format::ago(report.finished_unix_nanos, app.now_unix_nanos),
                    plural(report.rows.len(), "peer", "peers"),
                ))];
                if not_up == 0 {
                    spans.push(Span::styled("all up", status_style(PeerState::Up)));
                } else {
                    spans.push(Span::styled(
                        format!("{not_up} not up"),
                        status_style(PeerState::Down),
                    ));
                }
                spans
            }
            Err(err) => vec![Span::styled(
                format!("check via {} failed: {err}", outcome.master),
                status_style(PeerState::Down),
            )],
        };
        summaries.push(spans);
    }
    summaries
}

// ---------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------

/// One column of a table view.
#[derive(Debug, Clone, Copy)]
struct Column {
    title: &'static str,
    /// The `App::sort_column` name that sorts by this column.
    sort: Option<&'static str>,
    width: Constraint,
    /// Numbers right, text left.
    alignment: Alignment,
    /// When the terminal is too narrow for every column, the highest ranks
    /// go first (0: kept while anything is).
    drop_rank: u8,
}

impl Column {
    const fn text(title: &'static str, sort: Option<&'static str>, width: Constraint) -> Self {
        Self {
            title,
            sort,
            width,
            alignment: Alignment::Left,
            drop_rank: 0,
        }
    }

    const fn number(title: &'static str, sort: Option<&'static str>, width: Constraint) -> Self {
        Self {
            title,
            sort,
            width,
            alignment: Alignment::Right,
            drop_rank: 0,
        }
    }

    const fn drop_rank(mut self, rank: u8) -> Self {
        self.drop_rank = rank;
        self
    }
}

/// What a list view puts in its bordered table.
struct TableView<'c> {
    title: Line<'static>,
    /// Lines above the header (what the rows alone do not say).
    notes: Vec<Line<'static>>,
    columns: &'c [Column],
    /// One cell per column; a row is as high as its highest cell.
    rows: Vec<Vec<Text<'static>>>,
    /// Shown under the header when there is no row.
    empty: String,
}

/// A bordered table: sort column marked in the header, cells cut to their
/// column, the selected row highlighted.
fn render_table(app: &App, area: Rect, buf: &mut Buffer, view: &TableView<'_>) {
    let block = titled_block(view.title.clone());
    let inner = block.inner(area);
    block.render(area, buf);
    let notes_height = u16::try_from(view.notes.len()).unwrap_or(u16::MAX);
    let [notes_area, inner] =
        Layout::vertical([Constraint::Length(notes_height), Constraint::Fill(1)]).areas(inner);
    for (line, row) in view.notes.iter().zip(notes_area.rows()) {
        fit(line.clone(), row.width).render(row, buf);
    }
    let fitted = fitted_columns(view.columns, inner.width);
    let sorted_by = app.sort_column();
    let header = Row::new(fitted.iter().map(|(index, width)| {
        let column = &view.columns[*index];
        let sorted = column.sort.is_some() && column.sort == sorted_by;
        let line = if sorted {
            let arrow = if app.sort_descending() { "↓" } else { "↑" };
            Line::styled(
                format!("{} {arrow}", column.title),
                Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            )
        } else {
            Line::styled(column.title, Style::new().add_modifier(Modifier::BOLD))
        };
        fit(line, *width).alignment(column.alignment)
    }));
    let rows: Vec<Row<'static>> = view
        .rows
        .iter()
        .map(|cells| {
            let height = cells
                .iter()
                .map(|cell| cell.lines.len())
                .max()
                .unwrap_or(1)
                .max(1);
            Row::new(fitted.iter().map(|(index, width)| {
                let alignment = view.columns[*index].alignment;
                let lines: Vec<Line<'static>> = cells
                    .get(*index)
                    .map(|cell| {
                        cell.lines
                            .iter()
                            .map(|line| {
                                fit(line.clone().patch_style(cell.style), *width)
                                    .alignment(alignment)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Text::from(lines)
            }))
            .height(u16::try_from(height).unwrap_or(u16::MAX))
        })
        .collect();
    let row_count = rows.len();
    let mut state = TableState::default()
        .with_selected((row_count > 0).then(|| app.selected.min(row_count - 1)));
    let table = Table::new(
        rows,
        fitted.iter().map(|(index, _)| view.columns[*index].width),
    )
    .header(header)
    .column_spacing(COLUMN_SPACING)
    .flex(Flex::Start)
    .highlight_symbol(SELECTION_SYMBOL)
    .highlight_spacing(HighlightSpacing::Always)
    .row_highlight_style(
        Style::new()
            .bg(Color::DarkGray)
            .add_modifier(Modifier::BOLD),
    );
    StatefulWidget::render(table, inner, buf, &mut state);
    if row_count == 0 {
        let [_, message_area] =
            Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(inner);
        fit(
            Line::styled(format!(" {}", view.empty), dim()),
            message_area.width,
        )
        .render(message_area, buf);
    }
}

/// The columns that fit in `width`, by index, and the widths a [`Table`]
/// gives them (same layout). Too narrow for all: the highest drop rank goes
/// first, the rightmost of equals first.
fn fitted_columns(columns: &[Column], width: u16) -> Vec<(usize, u16)> {
    let width = width.saturating_sub(SELECTION_WIDTH);
    let mut kept: Vec<usize> = (0..columns.len()).collect();
    while kept.len() > 1 && least_width(columns, &kept) > width {
        let least_wanted = kept
            .iter()
            .enumerate()
            .max_by_key(|(position, index)| (columns[**index].drop_rank, *position))
            .map(|(position, _)| position);
        if let Some(position) = least_wanted {
            kept.remove(position);
        }
    }
    let widths = Layout::horizontal(kept.iter().map(|index| columns[*index].width))
        .flex(Flex::Start)
        .spacing(COLUMN_SPACING)
        .split(Rect::new(0, 0, width, 1));
    kept.into_iter()
        .zip(widths.iter().map(|area| area.width))
        .collect()
}

/// Columns the `kept` columns need at least, spacing included.
fn least_width(columns: &[Column], kept: &[usize]) -> u16 {
    let spacing = u16::try_from(kept.len().saturating_sub(1))
        .unwrap_or(u16::MAX)
        .saturating_mul(COLUMN_SPACING);
    kept.iter()
        .map(|index| match columns[*index].width {
            Constraint::Length(n) | Constraint::Min(n) => n,
            _ => FILL_COLUMN_MIN_WIDTH,
        })
        .fold(spacing, u16::saturating_add)
}

/// " Sidecars (3) ", or " Sidecars (1 of 3 match "edge-2") " while filtering.
fn view_title(name: &str, shown: usize, total: usize, filter: &str) -> Line<'static> {
    if filter.is_empty() {
        Line::from(format!(" {name} ({total}) "))
    } else {
        Line::from(format!(" {name} ({shown} of {total} match \"{filter}\") "))
    }
}

/// What an empty table says: nothing known, or nothing matching the filter.
fn empty_text(app: &App, nothing: &str, no_match: &str) -> String {
    if app.filter.is_empty() {
        nothing.to_string()
    } else {
        format!("{no_match} \"{}\" (Esc clears the filter)", app.filter)
    }
}

fn titled_block(title: Line<'static>) -> Block<'static> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(dim())
        // Keeps right-aligned numbers off the border.
        .padding(Padding::right(1))
        .title(title.style(Style::new().add_modifier(Modifier::BOLD)))
}

// ---------------------------------------------------------------------------
// Words, colours, cutting text
// ---------------------------------------------------------------------------

/// Up green, degraded yellow, down red, unknown gray.
fn status_style(state: PeerState) -> Style {
    match state {
        PeerState::Up => Style::new().fg(Color::Green),
        PeerState::Degraded => Style::new().fg(Color::Yellow),
        PeerState::Down => Style::new().fg(Color::Red),
        PeerState::Unknown => Style::new().fg(Color::Gray),
    }
}

/// The state's word in its colour: the word says it, the colour repeats it.
fn status_span(state: PeerState) -> Span<'static> {
    Span::styled(state.word(), status_style(state))
}

fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

/// "1 client", "2 clients".
fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// `line` cut to `width` columns, ending with `…` when something was cut.
fn fit(line: Line<'static>, width: u16) -> Line<'static> {
    let width = usize::from(width);
    if line.width() <= width {
        return line;
    }
    let budget = width.saturating_sub(1);
    let mut used = 0usize;
    let mut spans: Vec<Span<'static>> = Vec::new();
    let mut last_style = Style::default();
    for span in &line.spans {
        last_style = span.style;
        let mut kept = String::new();
        let mut full = false;
        for grapheme in span.styled_graphemes(Style::default()) {
            let grapheme_width = Span::raw(grapheme.symbol).width();
            if used.saturating_add(grapheme_width) > budget {
                full = true;
                break;
            }
            used = used.saturating_add(grapheme_width);
            kept.push_str(grapheme.symbol);
        }
        if !kept.is_empty() {
            spans.push(Span::styled(kept, span.style));
        }
        if full {
            break;
        }
    }
    if width > 0 {
        spans.push(Span::styled("…", last_style));
    }
    let mut cut = Line::from(spans);
    cut.style = line.style;
    cut.alignment = line.alignment;
    cut
}

/// `text` cut to `max` characters, ending with `…` when something was cut.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `text` cut to `max` characters from the front (paths keep their file name).
fn truncate_front(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let mut cut = String::from("…");
    cut.extend(
        text.chars()
            .skip(count.saturating_sub(max.saturating_sub(1))),
    );
    cut
}
