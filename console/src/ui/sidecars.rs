//! View 2, Sidecars.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Text};

use crate::app::App;
use crate::format;

use super::table::{Column, TableView, empty_text, render_table, view_title};
use super::text::status_span;

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

pub(super) fn render_sidecars(app: &App, area: Rect, buf: &mut Buffer) {
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
