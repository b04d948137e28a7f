//! How words look on screen: status colours, plurals, text cut to fit.

use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span, Text};

use crate::state::PeerState;

/// Up green, degraded yellow, down red, unknown gray.
pub(super) fn status_style(state: PeerState) -> Style {
    match state {
        PeerState::Up => Style::new().fg(Color::Green),
        PeerState::Degraded => Style::new().fg(Color::Yellow),
        PeerState::Down => Style::new().fg(Color::Red),
        PeerState::Unknown => Style::new().fg(Color::Gray),
    }
}

pub(super) fn backlog_style(spooled: bool) -> Style {
    if spooled {
        Style::new().fg(Color::Yellow)
    } else {
        Style::new()
    }
}

/// The state's word in its colour: the word says it, the colour repeats it.
pub(super) fn status_span(state: PeerState) -> Span<'static> {
    Span::styled(state.word(), status_style(state))
}

/// A certificate's time left: red once expired, yellow within the warning
/// period (see `smesh_core::tls::EXPIRY_WARNING`), plain otherwise.
fn expiry_style(not_after_unix_nanos: i64, now_unix_nanos: i64) -> Style {
    let warn = i64::try_from(smesh_core::tls::EXPIRY_WARNING.as_nanos()).unwrap_or(i64::MAX);
    if not_after_unix_nanos <= 0 {
        Style::new()
    } else if not_after_unix_nanos <= now_unix_nanos {
        Style::new().fg(Color::Red)
    } else if not_after_unix_nanos - now_unix_nanos <= warn {
        Style::new().fg(Color::Yellow)
    } else {
        Style::new()
    }
}

/// A certificate's time left, in its colour: the CERT columns' cell.
pub(super) fn expiry_text(not_after_unix_nanos: i64, now_unix_nanos: i64) -> Text<'static> {
    Text::styled(
        crate::format::expires(not_after_unix_nanos, now_unix_nanos),
        expiry_style(not_after_unix_nanos, now_unix_nanos),
    )
}

pub(super) fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

/// "1 client", "2 clients".
pub(super) fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// `line` cut to `width` columns, ending with `…` when something was cut.
pub(super) fn fit(line: Line<'static>, width: u16) -> Line<'static> {
    let width = usize::from(width);
    if line.width() <= width {
        return line;
    }
    let budget = width.saturating_sub(1);
    let mut used = 0usize;
    let mut spans: Vec<Span<'static>> = Vec::new();
    let mut last_style = Style::default();
    for span in &line.spans {
        last_style = span.style;
        let mut kept = String::new();
        let mut full = false;
        for grapheme in span.styled_graphemes(Style::default()) {
            let grapheme_width = Span::raw(grapheme.symbol).width();
            if used.saturating_add(grapheme_width) > budget {
                full = true;
                break;
            }
            used = used.saturating_add(grapheme_width);
            kept.push_str(grapheme.symbol);
        }
        if !kept.is_empty() {
            spans.push(Span::styled(kept, span.style));
        }
        if full {
            break;
        }
    }
    if width > 0 {
        spans.push(Span::styled("…", last_style));
    }
    let mut cut = Line::from(spans);
    cut.style = line.style;
    cut.alignment = line.alignment;
    cut
}

/// `text` cut to `max` characters, ending with `…` when something was cut.
pub(super) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `text` cut to `max` characters from the front (paths keep their file name).
pub(super) fn truncate_front(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let mut cut = String::from("…");
    cut.extend(
        text.chars()
            .skip(count.saturating_sub(max.saturating_sub(1))),
    );
    cut
}
