//! View 4, Heartbeats: RTT per peer with a sparkline of recent samples.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Text};

use crate::app::App;
use crate::format;
use crate::state::{HeartbeatRow, Mesh};
use crate::view::{Column, Order, SortKey, SortValue, View, ViewTable};

use super::table::{Frame, empty_text, render_table, view_title};

/// Bars of the heartbeat sparklines, lowest first.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// What `s` sorts the heartbeats by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatSort {
    /// The peer's id.
    Peer,
    /// The tier's word.
    Tier,
    /// The latest round trip, slowest first.
    Latest,
    /// The average round trip, slowest first.
    Avg,
    /// The 99th percentile round trip, slowest first.
    P99,
}

impl SortKey<HeartbeatRow> for HeartbeatSort {
    const CYCLE: &'static [Self] = &[
        HeartbeatSort::Peer,
        HeartbeatSort::Tier,
        HeartbeatSort::Latest,
        HeartbeatSort::Avg,
        HeartbeatSort::P99,
    ];

    fn name(self) -> &'static str {
        match self {
            HeartbeatSort::Peer => "peer",
            HeartbeatSort::Tier => "tier",
            HeartbeatSort::Latest => "latest",
            HeartbeatSort::Avg => "avg",
            HeartbeatSort::P99 => "p99",
        }
    }

    fn order(self) -> Order {
        match self {
            HeartbeatSort::Peer | HeartbeatSort::Tier => Order::Ascending,
            HeartbeatSort::Latest | HeartbeatSort::Avg | HeartbeatSort::P99 => Order::Descending,
        }
    }

    fn value(self, row: &HeartbeatRow) -> SortValue<'_> {
        match self {
            HeartbeatSort::Peer => SortValue::Text(&row.peer),
            HeartbeatSort::Tier => SortValue::Text(row.tier.word()),
            HeartbeatSort::Latest => SortValue::Number(row.last_us),
            HeartbeatSort::Avg => SortValue::Number(row.avg_us),
            HeartbeatSort::P99 => SortValue::Number(row.p99_us),
        }
    }
}

type HeartbeatColumn = Column<HeartbeatRow, HeartbeatSort>;

/// The heartbeats' table.
pub static HEARTBEATS: ViewTable<HeartbeatRow, HeartbeatSort> = ViewTable {
    view: View::Heartbeats,
    rows: Mesh::heartbeat_rows,
    peer: |h| Some(&h.peer),
    columns: &[
        HeartbeatColumn::text("TIER", Constraint::Length(8), |h| h.tier.word())
            .sorted_by(HeartbeatSort::Tier)
            .searched()
            .drop_rank(2),
        HeartbeatColumn::text("PEER", Constraint::Fill(1), |h| &h.peer)
            .sorted_by(HeartbeatSort::Peer)
            .searched(),
        HeartbeatColumn::text("CHECKER", Constraint::Fill(1), |h| &h.checker)
            .searched()
            .drop_rank(3),
        HeartbeatColumn::number("LATEST", Constraint::Length(8), |h, _| {
            Text::from(format::rtt(h.last_us))
        })
        .sorted_by(HeartbeatSort::Latest),
        HeartbeatColumn::number("AVG", Constraint::Length(7), |h, _| {
            Text::from(format::rtt(h.avg_us))
        })
        .sorted_by(HeartbeatSort::Avg)
        .drop_rank(2),
        HeartbeatColumn::number("P99", Constraint::Length(7), |h, _| {
            Text::from(format::rtt(h.p99_us))
        })
        .sorted_by(HeartbeatSort::P99)
        .drop_rank(1),
        HeartbeatColumn::number(
            "HISTORY (scaled to each row's peak)",
            Constraint::Fill(3),
            |h, cx| {
                Text::from(Line::styled(
                    bar_chart(&h.samples, usize::from(cx.width)),
                    Style::new().fg(Color::Cyan),
                ))
            },
        )
        .drop_rank(1),
    ],
};

pub(super) fn render_heartbeats(app: &App, area: Rect, buf: &mut Buffer) {
    let heartbeats = app.rows(&HEARTBEATS);
    let frame = Frame {
        title: view_title(app, &HEARTBEATS, heartbeats.len()),
        notes: Vec::new(),
        empty: empty_text(app, "no heartbeat measured yet", "no heartbeat matches"),
    };
    render_table(app, area, buf, &HEARTBEATS, &heartbeats, &frame);
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
