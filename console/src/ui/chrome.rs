//! The frame around every view: the title bar (each master and the
//! console's link to it), the tab bar and the footer.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use crate::app::App;
use crate::keymap::{FILTER_KEYS, HINTS};
use crate::state::{Connection, MasterView};
use crate::view::View;

use super::text::{dim, fit, truncate};

/// Longest connection error shown in the title bar.
const TITLE_ERROR_CHARS: usize = 40;

/// Longest master label shown in the title bar.
const TITLE_LABEL_CHARS: usize = 24;

/// "smesh console │ master-a ● connected │ 10.0.0.2:9011 ◌ connecting (attempt 4): Connection refused".
pub(super) fn title_bar(app: &App) -> Line<'static> {
    let mut spans = vec![Span::styled(
        " smesh console",
        Style::new().add_modifier(Modifier::BOLD),
    )];
    if app.mesh.masters.is_empty() {
        spans.push(Span::styled("  no master to watch", dim()));
    }
    for master in &app.mesh.masters {
        spans.push(Span::styled(" │ ", dim()));
        spans.push(Span::raw(truncate(master_label(master), TITLE_LABEL_CHARS)));
        spans.push(Span::raw(" "));
        spans.push(connection_span(&master.connection));
    }
    Line::from(spans)
}

/// The master's id once known, else the address the console dials.
fn master_label(master: &MasterView) -> &str {
    master
        .id()
        .filter(|id| !id.is_empty())
        .unwrap_or(&master.address)
}

/// Green when connected; yellow while connecting; red once the link has
/// failed more than three times in a row.
fn connection_span(connection: &Connection) -> Span<'static> {
    match connection {
        Connection::Connected => Span::styled("● connected", Style::new().fg(Color::Green)),
        Connection::Connecting { attempt, error } => {
            let color = if error.is_some() && *attempt > 3 {
                Color::Red
            } else {
                Color::Yellow
            };
            let attempt = if *attempt > 0 {
                format!(" (attempt {attempt})")
            } else {
                String::new()
            };
            let cause = error
                .as_deref()
                .map(short_error)
                .filter(|cause| !cause.is_empty())
                .map(|cause| format!(": {cause}"))
                .unwrap_or_default();
            Span::styled(
                format!("◌ connecting{attempt}{cause}"),
                Style::new().fg(color),
            )
        }
    }
}

/// The root cause of a `remote::source_chain` error ("cannot reach x: transport
/// error: … : Connection refused (os error 111)" → "Connection refused"), short.
fn short_error(error: &str) -> String {
    let cause = error.rsplit(": ").next().unwrap_or(error).trim();
    let cause = cause.find(" (os error ").map_or(cause, |at| &cause[..at]);
    truncate(cause, TITLE_ERROR_CHARS)
}

/// " 1 Overview  2 Sidecars … ", the current view reversed. In a narrow
/// terminal only the current view keeps its name: " 1  2  3 Clients  4 … ".
pub(super) fn tab_bar(current: View, width: u16) -> Line<'static> {
    let tabs = |compact: bool| {
        let mut spans = Vec::with_capacity(View::ALL.len() * 2);
        for view in View::ALL {
            let number = view.number();
            let style = if view == current {
                Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
            } else {
                Style::new()
            };
            let label = if compact && view != current {
                format!(" {number} ")
            } else {
                format!(" {number} {} ", view.title())
            };
            spans.push(Span::styled(label, style));
        }
        Line::from(spans)
    };
    let full = tabs(false);
    if full.width() <= usize::from(width) {
        full
    } else {
        tabs(true)
    }
}

/// The filter being typed, else the last message, else key hints; the active
/// filter on the right.
pub(super) fn render_footer(app: &App, area: Rect, buf: &mut Buffer) {
    let key = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
    let (left, right) = if app.editing_filter {
        let left = Line::from(vec![
            Span::raw(" "),
            Span::styled("/", key),
            Span::raw(app.filter.clone()),
            Span::styled("█", Style::new().add_modifier(Modifier::SLOW_BLINK)),
        ]);
        let mut right = Vec::new();
        for (i, (filter_key, hint)) in FILTER_KEYS
            .iter()
            .filter_map(|filter_key| Some((filter_key, filter_key.hint?)))
            .enumerate()
        {
            if i > 0 {
                right.push(Span::raw("  "));
            }
            right.push(Span::styled(filter_key.key.label(), key));
            right.push(Span::raw(format!(" {hint}")));
        }
        right.push(Span::raw(" "));
        let right = Line::from(right);
        (left, right)
    } else {
        let mut right = Vec::new();
        if !app.filter.is_empty() {
            right.push(Span::styled(
                format!("filter: {}", app.filter),
                Style::new().fg(Color::Yellow),
            ));
        }
        let left = match &app.message {
            Some(message) => {
                if !right.is_empty() {
                    right.push(Span::raw("  "));
                }
                right.push(Span::styled("?", key));
                right.push(Span::raw(" help"));
                Line::from(vec![Span::raw(" "), Span::raw(message.clone())])
            }
            None => {
                let mut spans = vec![Span::raw(" ")];
                for (i, hint) in HINTS.iter().enumerate() {
                    if i > 0 {
                        spans.push(Span::raw("  "));
                    }
                    spans.push(Span::styled(hint.keys_label(), key));
                    spans.push(Span::raw(format!(" {}", hint.what)));
                }
                Line::from(spans)
            }
        };
        right.push(Span::raw(" "));
        (left, Line::from(right))
    };
    let right_width = u16::try_from(right.width())
        .unwrap_or(u16::MAX)
        .min(area.width / 2);
    let [left_area, right_area] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(right_width)]).areas(area);
    fit(left, left_area.width).render(left_area, buf);
    fit(right, right_area.width)
        .right_aligned()
        .render(right_area, buf);
}
