//! View 3, Clients: every sidecar's clients, merged.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span, Text};

use crate::app::App;
use crate::format;
use crate::state::{ClientRow, Mesh};
use crate::view::{Column, Order, SortKey, SortValue, View, ViewTable};

use super::table::{Frame, empty_text, render_table, view_title};
use super::text::{backlog_style, expiry_text};

/// What `s` sorts the clients by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSort {
    /// The client's id.
    Id,
    /// The sidecar it streams through.
    Sidecar,
    /// Problems first.
    Status,
    /// The last round trip, fastest first.
    Rtt,
    /// Events sent, most first.
    Sent,
    /// Spooled events, most first.
    Backlog,
    /// Most recently seen first.
    LastSeen,
}

impl SortKey<ClientRow> for ClientSort {
    const CYCLE: &'static [Self] = &[
        ClientSort::Id,
        ClientSort::Sidecar,
        ClientSort::Status,
        ClientSort::Rtt,
        ClientSort::Sent,
        ClientSort::Backlog,
        ClientSort::LastSeen,
    ];

    fn name(self) -> &'static str {
        match self {
            ClientSort::Id => "id",
            ClientSort::Sidecar => "sidecar",
            ClientSort::Status => "status",
            ClientSort::Rtt => "rtt",
            ClientSort::Sent => "sent",
            ClientSort::Backlog => "backlog",
            ClientSort::LastSeen => "last seen",
        }
    }

    fn order(self) -> Order {
        match self {
            ClientSort::Id | ClientSort::Sidecar | ClientSort::Status | ClientSort::Rtt => {
                Order::Ascending
            }
            ClientSort::Sent | ClientSort::Backlog | ClientSort::LastSeen => Order::Descending,
        }
    }

    fn value(self, row: &ClientRow) -> SortValue<'_> {
        match self {
            ClientSort::Id => SortValue::Text(&row.id),
            ClientSort::Sidecar => SortValue::Text(&row.sidecar),
            ClientSort::Status => SortValue::Number(row.status.problems_first().into()),
            ClientSort::Rtt => SortValue::Number(row.rtt_last_us),
            ClientSort::Sent => SortValue::Number(row.events_sent),
            ClientSort::Backlog => SortValue::Number(row.backlog_rows),
            ClientSort::LastSeen => {
                SortValue::Number(u64::try_from(row.last_seen_unix_nanos).unwrap_or(0))
            }
        }
    }
}

type ClientColumn = Column<ClientRow, ClientSort>;

/// The clients' table.
pub static CLIENTS: ViewTable<ClientRow, ClientSort> = ViewTable {
    view: View::Clients,
    rows: Mesh::client_rows,
    peer: |c| Some(&c.id),
    columns: &[
        ClientColumn::text("CLIENT", Constraint::Fill(1), |c| &c.id)
            .sorted_by(ClientSort::Id)
            .searched(),
        ClientColumn::text("SIDECAR", Constraint::Length(10), |c| &c.sidecar)
            .sorted_by(ClientSort::Sidecar)
            .searched()
            .drop_rank(1),
        ClientColumn::text("ADDRESS", Constraint::Fill(1), |c| &c.address)
            .searched()
            .drop_rank(3),
        ClientColumn::state("STATUS", Constraint::Length(8), |c| c.status)
            .sorted_by(ClientSort::Status)
            .searched(),
        ClientColumn::number("RTT", Constraint::Length(7), |c, _| {
            Text::from(format::rtt(c.rtt_last_us))
        })
        .sorted_by(ClientSort::Rtt)
        .drop_rank(1),
        ClientColumn::number("SENT", Constraint::Length(7), |c, _| {
            Text::from(format::count(c.events_sent))
        })
        .sorted_by(ClientSort::Sent)
        .drop_rank(2),
        ClientColumn::number("IN FLIGHT", Constraint::Length(9), |c, _| {
            Text::from(format::count(c.in_flight))
        })
        .drop_rank(3),
        ClientColumn::number("BACKLOG", Constraint::Length(9), |c, _| {
            Text::from(Line::styled(
                format::count(c.backlog_rows),
                backlog_style(c.backlog_rows > 0),
            ))
        })
        .sorted_by(ClientSort::Backlog)
        .drop_rank(1),
        ClientColumn::number("BYTES", Constraint::Length(9), |c, _| {
            Text::from(if c.backlog_rows > 0 {
                format::bytes(c.backlog_bytes)
            } else {
                "–".to_string()
            })
        })
        .drop_rank(2),
        ClientColumn::number("OLDEST", Constraint::Length(6), |c, cx| {
            Text::from(if c.backlog_rows > 0 {
                format::since(c.backlog_oldest_unix_nanos, cx.now_unix_nanos)
            } else {
                "–".to_string()
            })
        })
        .drop_rank(2),
        ClientColumn::number("CERT", Constraint::Length(7), |c, cx| {
            expiry_text(c.certificate_not_after_unix_nanos, cx.now_unix_nanos)
        })
        .drop_rank(2),
        ClientColumn::number("SEEN", Constraint::Length(8), |c, cx| {
            Text::from(format::ago(c.last_seen_unix_nanos, cx.now_unix_nanos))
        })
        .sorted_by(ClientSort::LastSeen)
        .drop_rank(1),
    ],
};

pub(super) fn render_clients(app: &App, area: Rect, buf: &mut Buffer) {
    let clients = app.rows(&CLIENTS);
    let mut title = view_title(app, &CLIENTS, clients.len());
    let not_shown = app.mesh.clients_not_shown();
    if not_shown > 0 {
        // Beyond what the console fetches from a master (see `remote`).
        title
            .spans
            .push(Span::raw(format!("· {not_shown} more not shown ")));
    }
    let frame = Frame {
        title,
        notes: Vec::new(),
        empty: empty_text(app, "no client known yet", "no client matches"),
    };
    render_table(app, area, buf, &CLIENTS, &clients, &frame);
}
