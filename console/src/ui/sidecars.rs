//! View 2, Sidecars: every master's sidecars, merged.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Text;

use crate::app::App;
use crate::format;
use crate::state::{Mesh, SidecarRow};
use crate::view::{Column, Order, SortKey, SortValue, View, ViewTable};

use super::table::{Frame, empty_text, render_table, view_title};
use super::text::expiry_text;

/// What `s` sorts the sidecars by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarSort {
    /// The sidecar's id.
    Id,
    /// Problems first.
    Status,
    /// The last round trip, fastest first.
    Rtt,
    /// Events forwarded, most first.
    Events,
    /// Connected clients, most first.
    Clients,
}

impl SortKey<SidecarRow> for SidecarSort {
    const CYCLE: &'static [Self] = &[
        SidecarSort::Id,
        SidecarSort::Status,
        SidecarSort::Rtt,
        SidecarSort::Events,
        SidecarSort::Clients,
    ];

    fn name(self) -> &'static str {
        match self {
            SidecarSort::Id => "id",
            SidecarSort::Status => "status",
            SidecarSort::Rtt => "rtt",
            SidecarSort::Events => "events",
            SidecarSort::Clients => "clients",
        }
    }

    fn order(self) -> Order {
        match self {
            SidecarSort::Id | SidecarSort::Status | SidecarSort::Rtt => Order::Ascending,
            SidecarSort::Events | SidecarSort::Clients => Order::Descending,
        }
    }

    fn value(self, row: &SidecarRow) -> SortValue<'_> {
        match self {
            SidecarSort::Id => SortValue::Text(&row.id),
            SidecarSort::Status => SortValue::Number(row.status.problems_first().into()),
            SidecarSort::Rtt => SortValue::Number(row.rtt_last_us),
            SidecarSort::Events => SortValue::Number(row.events_forwarded),
            SidecarSort::Clients => SortValue::Number(row.clients.into()),
        }
    }
}

type SidecarColumn = Column<SidecarRow, SidecarSort>;

/// The sidecars' table.
pub static SIDECARS: ViewTable<SidecarRow, SidecarSort> = ViewTable {
    view: View::Sidecars,
    rows: Mesh::sidecar_rows,
    peer: |s| Some(&s.id),
    columns: &[
        SidecarColumn::text("SIDECAR", Constraint::Fill(1), |s| &s.id)
            .sorted_by(SidecarSort::Id)
            .searched(),
        SidecarColumn::text("MASTER", Constraint::Length(12), |s| &s.master)
            .searched()
            .drop_rank(3),
        SidecarColumn::text("ADDRESS", Constraint::Fill(1), |s| &s.address)
            .searched()
            .drop_rank(2),
        SidecarColumn::state("STATUS", Constraint::Length(8), |s| s.status)
            .sorted_by(SidecarSort::Status)
            .searched(),
        SidecarColumn::number("RTT", Constraint::Length(7), |s, _| {
            Text::from(format::rtt(s.rtt_last_us))
        })
        .sorted_by(SidecarSort::Rtt),
        SidecarColumn::number("AVG", Constraint::Length(7), |s, _| {
            Text::from(format::rtt(s.rtt_avg_us))
        })
        .drop_rank(2),
        SidecarColumn::number("P99", Constraint::Length(7), |s, _| {
            Text::from(format::rtt(s.rtt_p99_us))
        })
        .drop_rank(1),
        SidecarColumn::number("EVENTS", Constraint::Length(8), |s, _| {
            Text::from(format::count(s.events_forwarded))
        })
        .sorted_by(SidecarSort::Events)
        .drop_rank(1),
        SidecarColumn::number("CLIENTS", Constraint::Length(9), |s, _| {
            Text::from(format::count(u64::from(s.clients)))
        })
        .sorted_by(SidecarSort::Clients)
        .drop_rank(1),
        SidecarColumn::number("CONNECTED", Constraint::Length(9), |s, cx| {
            Text::from(if !s.connected {
                "no".to_string()
            } else if s.connected_since_unix_nanos > 0 {
                format!(
                    "for {}",
                    format::since(s.connected_since_unix_nanos, cx.now_unix_nanos)
                )
            } else {
                "yes".to_string()
            })
        })
        .drop_rank(3),
        SidecarColumn::number("CERT", Constraint::Length(7), |s, cx| {
            expiry_text(s.certificate_not_after_unix_nanos, cx.now_unix_nanos)
        })
        .drop_rank(2),
        SidecarColumn::number("HEARTBEAT", Constraint::Length(9), |s, cx| {
            Text::from(format::ago(s.last_heartbeat_unix_nanos, cx.now_unix_nanos))
        })
        .drop_rank(1),
    ],
};

pub(super) fn render_sidecars(app: &App, area: Rect, buf: &mut Buffer) {
    let sidecars = app.rows(&SIDECARS);
    let frame = Frame {
        title: view_title(app, &SIDECARS, sidecars.len()),
        notes: Vec::new(),
        empty: empty_text(app, "no sidecar known yet", "no sidecar matches"),
    };
    render_table(app, area, buf, &SIDECARS, &sidecars, &frame);
}
