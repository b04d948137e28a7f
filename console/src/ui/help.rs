//! The help overlay: every key, the status words, where the logs go.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Widget};

use crate::app::App;
use crate::keymap::KEY_MAP;
use crate::state::PeerState;

use super::text::{dim, fit, status_span, truncate_front};

/// A centred popup with every key of the [`KEY_MAP`], the status words and
/// where the logs go.
pub(super) fn render_help(app: &App, area: Rect, buf: &mut Buffer) {
    let key = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
    let mut lines: Vec<Line<'static>> = KEY_MAP
        .iter()
        .map(|line| {
            Line::from(vec![
                Span::styled(format!(" {:<20}", line.keys_label()), key),
                Span::raw(line.help),
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
