//! The help overlay: every key, the status words, where the logs go.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Widget};

use crate::app::App;
use crate::state::PeerState;

use super::text::{dim, fit, status_span, truncate_front};

/// A centred popup with every key and where the logs go.
pub(super) fn render_help(app: &App, area: Rect, buf: &mut Buffer) {
    const KEYS: [(&str, &str); 11] = [
        ("1-6  Tab  Shift-Tab", "switch view"),
        ("j k  ↓ ↑", "move the selection"),
        ("g G  Home End", "first / last row"),
        ("/", "filter rows (Enter keeps it, Esc clears it)"),
        ("Esc", "clear the filter"),
        ("s", "sort by the next column"),
        ("r", "reverse the order"),
        ("h", "health-check the selected sidecar or client"),
        ("H", "health-check every peer"),
        ("?", "this help (any key closes it)"),
        ("q  Ctrl-C", "quit"),
    ];
    let key = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
    let mut lines: Vec<Line<'static>> = KEYS
        .iter()
        .map(|(keys, what)| {
            Line::from(vec![
                Span::styled(format!(" {keys:<20}"), key),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    let mut statuses = vec![Span::raw(" Statuses: ")];
    for (i, state) in PeerState::ALL.into_iter().enumerate() {
        if i > 0 {
            statuses.push(Span::raw(", "));
        }
        statuses.push(status_span(state));
    }
    lines.push(Line::from(statuses));
    lines.push(Line::raw(" Logs go to:"));
    let widest = lines.iter().map(Line::width).max().unwrap_or(0);
    let width = u16::try_from(
        widest
            .max(app.log_path.chars().count().saturating_add(2))
            .saturating_add(3),
    )
    .unwrap_or(u16::MAX)
    .min(area.width);
    lines.push(Line::raw(format!(
        "  {}",
        truncate_front(&app.log_path, usize::from(width.saturating_sub(4)))
    )));
    let height = u16::try_from(lines.len().saturating_add(2))
        .unwrap_or(u16::MAX)
        .min(area.height);
    let popup = area.centered(Constraint::Length(width), Constraint::Length(height));
    Clear.render(popup, buf);
    let block = Block::bordered()
        .title(Line::styled(
            " Help ",
            Style::new().add_modifier(Modifier::BOLD),
        ))
        .title_bottom(Line::styled(" any key closes ", dim()).right_aligned())
        .border_style(Style::new().fg(Color::Cyan));
    let inner = block.inner(popup);
    block.render(popup, buf);
    let inner_width = inner.width;
    Paragraph::new(
        lines
            .into_iter()
            .map(|line| fit(line, inner_width))
            .collect::<Vec<_>>(),
    )
    .render(inner, buf);
}
