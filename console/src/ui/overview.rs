//! View 1, Overview: the masters, mesh totals and the published-events chart.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Paragraph, RenderDirection, Sparkline, Widget};

use crate::app::App;
use crate::format;
use crate::state::{Connection, MasterRow, PeerState};

use super::health::check_summaries;
use super::table::{Column, TableView, render_table, titled_block};
use super::text::{dim, fit, plural, status_span, status_style};

/// Masters, mesh totals and the published-events sparkline.
pub(super) fn render_overview(app: &App, area: Rect, buf: &mut Buffer) {
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
