//! View 6, Health checks: the latest check of each master.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span, Text};

use crate::app::App;
use crate::format;
use crate::state::PeerState;

use super::table::{Column, TableView, empty_text, render_table, view_title};
use super::text::{plural, status_span, status_style};

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

pub(super) fn render_health(app: &App, area: Rect, buf: &mut Buffer) {
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
pub(super) fn check_summaries(app: &App) -> Vec<Vec<Span<'static>>> {
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
