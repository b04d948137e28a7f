//! View 5, Backlog: clients with spooled events.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span, Text};

use crate::app::App;
use crate::format;
use crate::state::{ClientRow, Mesh};
use crate::view::{Column, Order, SortKey, SortValue, View, ViewTable};

use super::table::{Frame, empty_text, render_table, view_title};
use super::text::backlog_style;

/// What `s` sorts the spooling clients by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BacklogSort {
    /// Spooled events, most first.
    Rows,
    /// Spooled bytes, most first.
    Bytes,
    /// The oldest spooled event, oldest first.
    Oldest,
    /// The client's id.
    Id,
}

impl SortKey<ClientRow> for BacklogSort {
    const CYCLE: &'static [Self] = &[
        BacklogSort::Rows,
        BacklogSort::Bytes,
        BacklogSort::Oldest,
        BacklogSort::Id,
    ];

    fn name(self) -> &'static str {
        match self {
            BacklogSort::Rows => "rows",
            BacklogSort::Bytes => "bytes",
            BacklogSort::Oldest => "oldest",
            BacklogSort::Id => "id",
        }
    }

    fn order(self) -> Order {
        match self {
            BacklogSort::Rows | BacklogSort::Bytes => Order::Descending,
            BacklogSort::Oldest | BacklogSort::Id => Order::Ascending,
        }
    }

    fn value(self, row: &ClientRow) -> SortValue<'_> {
        match self {
            BacklogSort::Rows => SortValue::Number(row.backlog_rows),
            BacklogSort::Bytes => SortValue::Number(row.backlog_bytes),
            BacklogSort::Oldest => {
                SortValue::Number(u64::try_from(row.backlog_oldest_unix_nanos).unwrap_or(0))
            }
            BacklogSort::Id => SortValue::Text(&row.id),
        }
    }
}

type BacklogColumn = Column<ClientRow, BacklogSort>;

/// The spooling clients' table.
pub static BACKLOG: ViewTable<ClientRow, BacklogSort> = ViewTable {
    view: View::Backlog,
    rows: Mesh::backlog_rows,
    peer: |c| Some(&c.id),
    columns: &[
        BacklogColumn::text("CLIENT", Constraint::Fill(1), |c| &c.id)
            .sorted_by(BacklogSort::Id)
            .searched(),
        BacklogColumn::text("SIDECAR", Constraint::Fill(1), |c| &c.sidecar)
            .searched()
            .drop_rank(2),
        BacklogColumn::text("MASTER", Constraint::Fill(1), |c| &c.master).drop_rank(3),
        BacklogColumn::state("STATUS", Constraint::Length(8), |c| c.status).drop_rank(2),
        BacklogColumn::number("ROWS", Constraint::Length(8), |c, _| {
            Text::from(Line::styled(
                format::count(c.backlog_rows),
                backlog_style(true),
            ))
        })
        .sorted_by(BacklogSort::Rows),
        BacklogColumn::number("BYTES", Constraint::Length(9), |c, _| {
            Text::from(format::bytes(c.backlog_bytes))
        })
        .sorted_by(BacklogSort::Bytes)
        .drop_rank(1),
        BacklogColumn::number("OLDEST", Constraint::Length(8), |c, cx| {
            Text::from(format::since(
                c.backlog_oldest_unix_nanos,
                cx.now_unix_nanos,
            ))
        })
        .sorted_by(BacklogSort::Oldest)
        .drop_rank(1),
        BacklogColumn::number("LAST SEEN", Constraint::Length(9), |c, cx| {
            Text::from(format::ago(c.last_seen_unix_nanos, cx.now_unix_nanos))
        })
        .drop_rank(2),
    ],
};

pub(super) fn render_backlog(app: &App, area: Rect, buf: &mut Buffer) {
    let backlog = app.rows(&BACKLOG);
    let rows_total = backlog
        .iter()
        .fold(0u64, |sum, c| sum.saturating_add(c.backlog_rows));
    let bytes_total = backlog
        .iter()
        .fold(0u64, |sum, c| sum.saturating_add(c.backlog_bytes));
    let mut title = view_title(app, &BACKLOG, backlog.len());
    if !backlog.is_empty() {
        title.spans.push(Span::raw(format!(
            "· {} rows · {} spooled ",
            format::count(rows_total),
            format::bytes(bytes_total)
        )));
    }
    let frame = Frame {
        title,
        notes: Vec::new(),
        empty: empty_text(
            app,
            "no client has spooled events",
            "no client with spooled events matches",
        ),
    };
    render_table(app, area, buf, &BACKLOG, &backlog, &frame);
}
