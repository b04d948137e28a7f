//! View 3, Clients.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Text};

use crate::app::App;
use crate::format;

use super::table::{Column, TableView, empty_text, render_table, view_title};
use super::text::{backlog_style, status_span};

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

pub(super) fn render_clients(app: &App, area: Rect, buf: &mut Buffer) {
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
