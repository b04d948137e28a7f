//! View 5, Backlog: clients with spooled events.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span, Text};

use crate::app::App;
use crate::format;
use crate::state::ClientRow;

use super::table::{Column, TableView, empty_text, render_table, view_title};
use super::text::{backlog_style, status_span};

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

pub(super) fn render_backlog(app: &App, area: Rect, buf: &mut Buffer) {
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
