//! View 4, Heartbeats: RTT per peer with a sparkline of recent samples.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Text};

use crate::app::App;
use crate::format;

use super::table::{
    Column, TableView, empty_text, fitted_columns, render_table, titled_block, view_title,
};

/// Bars of the heartbeat sparklines, lowest first.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

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

pub(super) fn render_heartbeats(app: &App, area: Rect, buf: &mut Buffer) {
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
