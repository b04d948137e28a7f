//! View 1, Overview: the masters, mesh totals and the published-events chart.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Paragraph, RenderDirection, Sparkline, Widget};

use crate::app::App;
use crate::format;
use crate::keymap::{Command, key_for};
use crate::state::{Connection, MasterRow, Mesh, PeerState};
use crate::view::{Column, Unsorted, View, ViewTable};

use super::health::check_summaries;
use super::table::{Frame, render_table, titled_block};
use super::text::{dim, fit, plural, status_span, status_style};

/// Masters, mesh totals and the published-events sparkline.
pub(super) fn render_overview(app: &App, area: Rect, buf: &mut Buffer) {
    let summary = mesh_summary(app);
    // Masters first, then the summary, the chart gets what is left.
    let masters_height = u16::try_from(app.mesh.masters.len().saturating_mul(2).saturating_add(3))
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
    render_masters(app, masters_area, buf);
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

/// A master's row and what its cells need besides the numbers.
#[derive(Debug, Clone)]
pub struct MasterLine {
    /// The master's numbers, merged from its status and stats.
    pub row: MasterRow,
    /// Whether it ever answered: numbers of a master never reached are
    /// unknown, not zero.
    pub known: bool,
    /// The console's link to it, for the mark before its name.
    pub connection: Connection,
}

impl MasterLine {
    /// One line per watched master, in the order they were given.
    fn all(mesh: &Mesh) -> Vec<MasterLine> {
        mesh.master_rows()
            .into_iter()
            .zip(&mesh.masters)
            .map(|(row, view)| MasterLine {
                row,
                known: view.status.is_some() || view.stats.is_some(),
                connection: view.connection.clone(),
            })
            .collect()
    }

    /// `n` for people, or `–` while unknown.
    fn count(&self, n: u64) -> String {
        if self.known {
            format::count(n)
        } else {
            "–".to_string()
        }
    }

    /// A rate for people, or nothing while unknown.
    fn rate(&self, per_second: f64) -> String {
        if self.known {
            format::rate(per_second)
        } else {
            String::new()
        }
    }
}

type MasterColumn = Column<MasterLine, Unsorted>;

/// The masters' table: one two-line row per master, totals above, rates
/// below. Neither sorted nor filtered.
pub static MASTERS: ViewTable<MasterLine, Unsorted> = ViewTable {
    view: View::Overview,
    rows: MasterLine::all,
    peer: |_| None,
    columns: &[
        MasterColumn::drawn("MASTER", Constraint::Fill(2), |m, _| master_cell(m)),
        MasterColumn::drawn("KAFKA", Constraint::Fill(3), |m, _| kafka_cell(&m.row)),
        MasterColumn::number("UPTIME", Constraint::Length(6), |m, _| {
            Text::from(if m.known {
                format::duration_secs(m.row.uptime_secs)
            } else {
                "–".to_string()
            })
        })
        .drop_rank(3),
        MasterColumn::number("EVENTS IN", Constraint::Length(9), |m, _| {
            two_lines(m.count(m.row.events_in), m.rate(m.row.events_in_per_s))
        })
        .drop_rank(1),
        MasterColumn::number("PUBLISHED", Constraint::Length(9), |m, _| {
            two_lines(m.count(m.row.published), m.rate(m.row.published_per_s))
        }),
        MasterColumn::number("FAILED", Constraint::Length(7), |m, _| {
            Text::from(Line::styled(
                m.count(m.row.failed),
                failure_style(m.row.failed),
            ))
        })
        .drop_rank(1),
        MasterColumn::number("DUPLICATES", Constraint::Length(10), |m, _| {
            Text::from(m.count(m.row.duplicates))
        })
        .drop_rank(2),
    ],
};

/// The connection mark and the master's id (its address until known); the
/// address (or the connection attempt) below.
fn master_cell(master: &MasterLine) -> Text<'static> {
    let row = &master.row;
    let label = if row.id.is_empty() {
        row.address.clone()
    } else {
        row.id.clone()
    };
    let mark = match master.connection {
        Connection::Connected => Span::styled("● ", Style::new().fg(Color::Green)),
        Connection::Connecting { .. } => Span::styled("◌ ", Style::new().fg(Color::Yellow)),
    };
    let second_line = if row.id.is_empty() {
        match &master.connection {
            Connection::Connecting { attempt, .. } if *attempt > 0 => {
                format!("  connecting (attempt {attempt})")
            }
            _ => "  connecting".to_string(),
        }
    } else {
        format!("  {}", row.address)
    };
    Text::from(vec![
        Line::from(vec![mark, Span::raw(label)]),
        Line::styled(second_line, dim()),
    ])
}

/// Whether Kafka is ready and why, the brokers below.
fn kafka_cell(row: &MasterRow) -> Text<'static> {
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
    Text::from(vec![kafka, Line::styled(row.kafka_brokers.clone(), dim())])
}

fn render_masters(app: &App, area: Rect, buf: &mut Buffer) {
    let masters = app.rows(&MASTERS);
    let frame = Frame {
        title: Line::from(format!(" Masters ({}) ", masters.len())),
        notes: Vec::new(),
        empty: "no master to watch: pass admin addresses on the command line".to_string(),
    };
    render_table(app, area, buf, &MASTERS, &masters, &frame);
}

fn kafka_line(word: &'static str, color: Color, detail: &str) -> Line<'static> {
    let mut spans = vec![Span::styled(word, Style::new().fg(color))];
    if !detail.is_empty() {
        spans.push(Span::raw(format!(" · {detail}")));
    }
    Line::from(spans)
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
            Span::styled(
                format!(
                    "none yet ({} checks every peer)",
                    key_for(Command::CheckAll)
                ),
                dim(),
            ),
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
