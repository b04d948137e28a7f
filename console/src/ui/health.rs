//! View 6, Health checks: the latest check of each master.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span, Text};

use crate::app::App;
use crate::format;
use crate::keymap::{Command, key_for};
use crate::state::{CheckRow, Mesh, PeerState, PeerTier};
use crate::view::{Column, Order, SortKey, SortValue, View, ViewTable};

use super::table::{Frame, empty_text, render_table, view_title};
use super::text::{plural, status_style};

/// What `s` sorts the checked peers by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckSort {
    /// Kafka, masters, sidecars, clients (the way a check walks the mesh),
    /// then by peer.
    Tier,
    /// The peer's id.
    Peer,
    /// Problems first.
    Status,
    /// The probe's round trip, slowest first.
    Rtt,
}

impl SortKey<CheckRow> for CheckSort {
    const CYCLE: &'static [Self] = &[
        CheckSort::Tier,
        CheckSort::Peer,
        CheckSort::Status,
        CheckSort::Rtt,
    ];

    fn name(self) -> &'static str {
        match self {
            CheckSort::Tier => "tier",
            CheckSort::Peer => "peer",
            CheckSort::Status => "status",
            CheckSort::Rtt => "rtt",
        }
    }

    fn order(self) -> Order {
        match self {
            CheckSort::Tier | CheckSort::Peer | CheckSort::Status => Order::Ascending,
            CheckSort::Rtt => Order::Descending,
        }
    }

    fn value(self, row: &CheckRow) -> SortValue<'_> {
        match self {
            CheckSort::Tier => SortValue::Ranked(walk_order(row.tier), &row.peer),
            CheckSort::Peer => SortValue::Text(&row.peer),
            CheckSort::Status => SortValue::Number(row.status.problems_first().into()),
            CheckSort::Rtt => SortValue::Number(row.rtt_us),
        }
    }
}

/// Kafka first, then masters, sidecars, and clients with anything unknown.
fn walk_order(tier: PeerTier) -> u8 {
    match tier {
        PeerTier::Kafka => 0,
        PeerTier::Master => 1,
        PeerTier::Sidecar => 2,
        PeerTier::Client | PeerTier::Unknown => 3,
    }
}

type CheckColumn = Column<CheckRow, CheckSort>;

/// The checked peers' table.
pub static HEALTH_CHECKS: ViewTable<CheckRow, CheckSort> = ViewTable {
    view: View::Health,
    rows: Mesh::check_rows,
    // Only sidecars and clients can be checked one by one.
    peer: |c| matches!(c.tier, PeerTier::Sidecar | PeerTier::Client).then_some(c.peer.as_str()),
    columns: &[
        CheckColumn::text("TIER", Constraint::Length(8), |c| c.tier.word())
            .sorted_by(CheckSort::Tier)
            .searched()
            .drop_rank(2),
        CheckColumn::text("PEER", Constraint::Fill(2), |c| &c.peer)
            .sorted_by(CheckSort::Peer)
            .searched(),
        CheckColumn::text("CHECKER", Constraint::Fill(2), |c| &c.checker)
            .searched()
            .drop_rank(3),
        CheckColumn::text("ADDRESS", Constraint::Fill(2), |c| &c.address).drop_rank(3),
        CheckColumn::state("STATUS", Constraint::Length(8), |c| c.status)
            .sorted_by(CheckSort::Status)
            .searched(),
        CheckColumn::number("RTT", Constraint::Length(7), |c, _| {
            Text::from(format::rtt(c.rtt_us))
        })
        .sorted_by(CheckSort::Rtt)
        .drop_rank(1),
        CheckColumn::text("DETAIL", Constraint::Fill(3), |c| &c.detail).drop_rank(1),
        CheckColumn::number("WHEN", Constraint::Length(8), |c, cx| {
            Text::from(format::ago(c.at_unix_nanos, cx.now_unix_nanos))
        })
        .drop_rank(2),
    ],
};

pub(super) fn render_health(app: &App, area: Rect, buf: &mut Buffer) {
    let checks = app.rows(&HEALTH_CHECKS);
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
        "waiting for the first answer…".to_string()
    } else if app.mesh.checks.is_empty() {
        format!(
            "press {} to check every peer, {} to check the selected one",
            key_for(Command::CheckAll),
            key_for(Command::CheckSelected)
        )
    } else {
        "the last check found no peer".to_string()
    };
    let frame = Frame {
        title: view_title(app, &HEALTH_CHECKS, checks.len()),
        notes,
        empty: empty_text(app, &nothing, "no checked peer matches"),
    };
    render_table(app, area, buf, &HEALTH_CHECKS, &checks, &frame);
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
