//! The bordered table every list view is drawn with: columns that drop
//! out when the terminal is narrow, the sort column marked, the selection.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Text};
use ratatui::widgets::{
    Block, Borders, HighlightSpacing, Padding, Row, StatefulWidget, Table, TableState, Widget,
};

use crate::app::App;
use crate::view::{Cell, CellContext, Column, SortKey, ViewTable};

use super::text::{dim, fit, status_span};

/// Marks the selected row of a table.
const SELECTION_SYMBOL: &str = "▶ ";

/// Columns of [`SELECTION_SYMBOL`], kept free on every row so columns do not shift.
const SELECTION_WIDTH: u16 = 2;

/// Blank columns between two table columns.
const COLUMN_SPACING: u16 = 1;

/// Below this, a column of ids or addresses is not worth showing.
const FILL_COLUMN_MIN_WIDTH: u16 = 10;

/// What a view puts around its table.
pub(super) struct Frame {
    /// In the top border: the view's name and counts.
    pub(super) title: Line<'static>,
    /// Lines above the header (what the rows alone do not say).
    pub(super) notes: Vec<Line<'static>>,
    /// Shown under the header when there is no row.
    pub(super) empty: String,
}

/// `table`'s `rows` in a bordered table: the sort column marked in the
/// header, cells cut to their column, the selected row highlighted.
pub(super) fn render_table<R, S: SortKey<R>>(
    app: &App,
    area: Rect,
    buf: &mut Buffer,
    table: &ViewTable<R, S>,
    rows: &[R],
    frame: &Frame,
) {
    let block = titled_block(frame.title.clone());
    let inner = block.inner(area);
    block.render(area, buf);
    let notes_height = u16::try_from(frame.notes.len()).unwrap_or(u16::MAX);
    let [notes_area, inner] =
        Layout::vertical([Constraint::Length(notes_height), Constraint::Fill(1)]).areas(inner);
    for (line, row) in frame.notes.iter().zip(notes_area.rows()) {
        fit(line.clone(), row.width).render(row, buf);
    }
    let fitted = fitted_columns(table.columns, inner.width);
    let query = app.query(table.view);
    let sorted_by = table.sort_key(&query);
    let header = Row::new(fitted.iter().map(|(column, width)| {
        let sorted = column.sort.is_some() && column.sort == sorted_by;
        let line = if sorted {
            let arrow = if table.descending(&query) {
                "↓"
            } else {
                "↑"
            };
            Line::styled(
                format!("{} {arrow}", column.header),
                Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            )
        } else {
            Line::styled(column.header, Style::new().add_modifier(Modifier::BOLD))
        };
        fit(line, *width).alignment(column.alignment)
    }));
    let rows: Vec<Row<'static>> = rows
        .iter()
        .map(|row| {
            let cells: Vec<Text<'static>> = fitted
                .iter()
                .map(|(column, width)| {
                    let context = CellContext {
                        now_unix_nanos: app.now_unix_nanos,
                        width: *width,
                    };
                    let cell = draw_cell(&column.cell, row, &context);
                    let lines: Vec<Line<'static>> = cell
                        .lines
                        .iter()
                        .map(|line| {
                            fit(line.clone().patch_style(cell.style), *width)
                                .alignment(column.alignment)
                        })
                        .collect();
                    Text::from(lines)
                })
                .collect();
            // As high as its highest cell.
            let height = cells
                .iter()
                .map(|cell| cell.lines.len())
                .max()
                .unwrap_or(1)
                .max(1);
            Row::new(cells).height(u16::try_from(height).unwrap_or(u16::MAX))
        })
        .collect();
    let row_count = rows.len();
    let mut state = TableState::default()
        .with_selected((row_count > 0).then(|| app.selected.min(row_count - 1)));
    let table = Table::new(rows, fitted.iter().map(|(column, _)| column.width))
        .header(header)
        .column_spacing(COLUMN_SPACING)
        .flex(Flex::Start)
        .highlight_symbol(SELECTION_SYMBOL)
        .highlight_spacing(HighlightSpacing::Always)
        .row_highlight_style(
            Style::new()
                .bg(Color::DarkGray)
                .add_modifier(Modifier::BOLD),
        );
    StatefulWidget::render(table, inner, buf, &mut state);
    if row_count == 0 {
        let [_, message_area] =
            Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(inner);
        fit(
            Line::styled(format!(" {}", frame.empty), dim()),
            message_area.width,
        )
        .render(message_area, buf);
    }
}

/// What `cell` shows for `row`.
fn draw_cell<R>(cell: &Cell<R>, row: &R, context: &CellContext) -> Text<'static> {
    match cell {
        Cell::Text(text) => Text::from(text(row).to_string()),
        Cell::State(state) => Text::from(Line::from(status_span(state(row)))),
        Cell::Drawn(draw) => draw(row, context),
    }
}

/// The columns that fit in `width`, and the widths a [`Table`] gives them
/// (same layout). Too narrow for all: the highest drop rank goes first, the
/// rightmost of equals first.
pub(super) fn fitted_columns<R, S>(
    columns: &[Column<R, S>],
    width: u16,
) -> Vec<(&Column<R, S>, u16)> {
    let width = width.saturating_sub(SELECTION_WIDTH);
    let mut kept: Vec<&Column<R, S>> = columns.iter().collect();
    while kept.len() > 1 && least_width(&kept) > width {
        let least_wanted = kept
            .iter()
            .enumerate()
            .max_by_key(|(position, column)| (column.drop_rank, *position))
            .map(|(position, _)| position);
        if let Some(position) = least_wanted {
            kept.remove(position);
        }
    }
    let widths = Layout::horizontal(kept.iter().map(|column| column.width))
        .flex(Flex::Start)
        .spacing(COLUMN_SPACING)
        .split(Rect::new(0, 0, width, 1));
    kept.into_iter()
        .zip(widths.iter().map(|area| area.width))
        .collect()
}

/// Columns the `kept` columns need at least, spacing included.
fn least_width<R, S>(kept: &[&Column<R, S>]) -> u16 {
    let spacing = u16::try_from(kept.len().saturating_sub(1))
        .unwrap_or(u16::MAX)
        .saturating_mul(COLUMN_SPACING);
    kept.iter()
        .map(|column| match column.width {
            Constraint::Length(n) | Constraint::Min(n) => n,
            _ => FILL_COLUMN_MIN_WIDTH,
        })
        .fold(spacing, u16::saturating_add)
}

/// " Sidecars (3) ", or " Sidecars (1 of 3 match "edge-2") " while filtering.
pub(super) fn view_title<R, S>(app: &App, table: &ViewTable<R, S>, shown: usize) -> Line<'static> {
    let name = table.view.title();
    let total = (table.rows)(&app.mesh).len();
    if app.filter.is_empty() {
        Line::from(format!(" {name} ({total}) "))
    } else {
        Line::from(format!(
            " {name} ({shown} of {total} match \"{}\") ",
            app.filter
        ))
    }
}

/// What an empty table says: nothing known, or nothing matching the filter.
pub(super) fn empty_text(app: &App, nothing: &str, no_match: &str) -> String {
    if app.filter.is_empty() {
        nothing.to_string()
    } else {
        format!("{no_match} \"{}\" (Esc clears the filter)", app.filter)
    }
}

pub(super) fn titled_block(title: Line<'static>) -> Block<'static> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(dim())
        // Keeps right-aligned numbers off the border.
        .padding(Padding::right(1))
        .title(title.style(Style::new().add_modifier(Modifier::BOLD)))
}
