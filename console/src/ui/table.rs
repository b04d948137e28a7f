//! The bordered table every list view is drawn with: columns that drop
//! out when the terminal is narrow, the sort column marked, the selection.

use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Text};
use ratatui::widgets::{
    Block, Borders, HighlightSpacing, Padding, Row, StatefulWidget, Table, TableState, Widget,
};

use crate::app::App;

use super::text::{dim, fit};

/// Marks the selected row of a table.
const SELECTION_SYMBOL: &str = "▶ ";

/// Columns of [`SELECTION_SYMBOL`], kept free on every row so columns do not shift.
const SELECTION_WIDTH: u16 = 2;

/// Blank columns between two table columns.
const COLUMN_SPACING: u16 = 1;

/// Below this, a column of ids or addresses is not worth showing.
const FILL_COLUMN_MIN_WIDTH: u16 = 10;

/// One column of a table view.
#[derive(Debug, Clone, Copy)]
pub(super) struct Column {
    title: &'static str,
    /// The `App::sort_column` name that sorts by this column.
    sort: Option<&'static str>,
    width: Constraint,
    /// Numbers right, text left.
    alignment: Alignment,
    /// When the terminal is too narrow for every column, the highest ranks
    /// go first (0: kept while anything is).
    drop_rank: u8,
}

impl Column {
    pub(super) const fn text(
        title: &'static str,
        sort: Option<&'static str>,
        width: Constraint,
    ) -> Self {
        Self {
            title,
            sort,
            width,
            alignment: Alignment::Left,
            drop_rank: 0,
        }
    }

    pub(super) const fn number(
        title: &'static str,
        sort: Option<&'static str>,
        width: Constraint,
    ) -> Self {
        Self {
            title,
            sort,
            width,
            alignment: Alignment::Right,
            drop_rank: 0,
        }
    }

    pub(super) const fn drop_rank(mut self, rank: u8) -> Self {
        self.drop_rank = rank;
        self
    }
}

/// What a list view puts in its bordered table.
pub(super) struct TableView<'c> {
    pub(super) title: Line<'static>,
    /// Lines above the header (what the rows alone do not say).
    pub(super) notes: Vec<Line<'static>>,
    pub(super) columns: &'c [Column],
    /// One cell per column; a row is as high as its highest cell.
    pub(super) rows: Vec<Vec<Text<'static>>>,
    /// Shown under the header when there is no row.
    pub(super) empty: String,
}

/// A bordered table: sort column marked in the header, cells cut to their
/// column, the selected row highlighted.
pub(super) fn render_table(app: &App, area: Rect, buf: &mut Buffer, view: &TableView<'_>) {
    let block = titled_block(view.title.clone());
    let inner = block.inner(area);
    block.render(area, buf);
    let notes_height = u16::try_from(view.notes.len()).unwrap_or(u16::MAX);
    let [notes_area, inner] =
        Layout::vertical([Constraint::Length(notes_height), Constraint::Fill(1)]).areas(inner);
    for (line, row) in view.notes.iter().zip(notes_area.rows()) {
        fit(line.clone(), row.width).render(row, buf);
    }
    let fitted = fitted_columns(view.columns, inner.width);
    let sorted_by = app.sort_column();
    let header = Row::new(fitted.iter().map(|(index, width)| {
        let column = &view.columns[*index];
        let sorted = column.sort.is_some() && column.sort == sorted_by;
        let line = if sorted {
            let arrow = if app.sort_descending() { "↓" } else { "↑" };
            Line::styled(
                format!("{} {arrow}", column.title),
                Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            )
        } else {
            Line::styled(column.title, Style::new().add_modifier(Modifier::BOLD))
        };
        fit(line, *width).alignment(column.alignment)
    }));
    let rows: Vec<Row<'static>> = view
        .rows
        .iter()
        .map(|cells| {
            let height = cells
                .iter()
                .map(|cell| cell.lines.len())
                .max()
                .unwrap_or(1)
                .max(1);
            Row::new(fitted.iter().map(|(index, width)| {
                let alignment = view.columns[*index].alignment;
                let lines: Vec<Line<'static>> = cells
                    .get(*index)
                    .map(|cell| {
                        cell.lines
                            .iter()
                            .map(|line| {
                                fit(line.clone().patch_style(cell.style), *width)
                                    .alignment(alignment)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Text::from(lines)
            }))
            .height(u16::try_from(height).unwrap_or(u16::MAX))
        })
        .collect();
    let row_count = rows.len();
    let mut state = TableState::default()
        .with_selected((row_count > 0).then(|| app.selected.min(row_count - 1)));
    let table = Table::new(
        rows,
        fitted.iter().map(|(index, _)| view.columns[*index].width),
    )
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
            Line::styled(format!(" {}", view.empty), dim()),
            message_area.width,
        )
        .render(message_area, buf);
    }
}

/// The columns that fit in `width`, by index, and the widths a [`Table`]
/// gives them (same layout). Too narrow for all: the highest drop rank goes
/// first, the rightmost of equals first.
pub(super) fn fitted_columns(columns: &[Column], width: u16) -> Vec<(usize, u16)> {
    let width = width.saturating_sub(SELECTION_WIDTH);
    let mut kept: Vec<usize> = (0..columns.len()).collect();
    while kept.len() > 1 && least_width(columns, &kept) > width {
        let least_wanted = kept
            .iter()
            .enumerate()
            .max_by_key(|(position, index)| (columns[**index].drop_rank, *position))
            .map(|(position, _)| position);
        if let Some(position) = least_wanted {
            kept.remove(position);
        }
    }
    let widths = Layout::horizontal(kept.iter().map(|index| columns[*index].width))
        .flex(Flex::Start)
        .spacing(COLUMN_SPACING)
        .split(Rect::new(0, 0, width, 1));
    kept.into_iter()
        .zip(widths.iter().map(|area| area.width))
        .collect()
}

/// Columns the `kept` columns need at least, spacing included.
fn least_width(columns: &[Column], kept: &[usize]) -> u16 {
    let spacing = u16::try_from(kept.len().saturating_sub(1))
        .unwrap_or(u16::MAX)
        .saturating_mul(COLUMN_SPACING);
    kept.iter()
        .map(|index| match columns[*index].width {
            Constraint::Length(n) | Constraint::Min(n) => n,
            _ => FILL_COLUMN_MIN_WIDTH,
        })
        .fold(spacing, u16::saturating_add)
}

/// " Sidecars (3) ", or " Sidecars (1 of 3 match "edge-2") " while filtering.
pub(super) fn view_title(name: &str, shown: usize, total: usize, filter: &str) -> Line<'static> {
    if filter.is_empty() {
        Line::from(format!(" {name} ({total}) "))
    } else {
        Line::from(format!(" {name} ({shown} of {total} match \"{filter}\") "))
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
