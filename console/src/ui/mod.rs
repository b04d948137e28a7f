//! Rendering of the dashboard: `impl Widget for &App`.
//!
//! The screen, top to bottom: a title bar (every master and the console's
//! link to it), the tab bar, the current view, and a footer (the filter being
//! typed, the last message, or key hints). `?` puts the help on top.
//!
//! Rendering only reads the [`App`]: no clock (ages are measured from
//! `App::now_unix_nanos`) and no I/O, so a `TestBackend` screen is the same
//! on every run. Every number goes through [`crate::format`]; text that does
//! not fit is cut with `…`, never wrapped; no terminal size makes it panic.
//! Status words are always written out ("up", "down"), colour only repeats
//! them.
//!
//! # Layout
//! - `chrome`: title bar, tab bar, footer.
//! - `help`: the help overlay.
//! - one module per view: `overview`, `sidecars`, `clients`,
//!   `heartbeats`, `backlog`, `health`; each holds the description of
//!   its table (a [`ViewTable`](crate::view::ViewTable): columns, cells,
//!   sort keys) and draws what surrounds it.
//! - `table`: draws a view's table from its description.
//! - `text`: status colours, plurals, cutting text to fit.

mod backlog;
mod chrome;
mod clients;
mod health;
mod heartbeats;
mod help;
mod overview;
mod sidecars;
mod table;
mod text;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::widgets::Widget;

use crate::app::App;
use crate::view::View;

pub use self::backlog::{BACKLOG, BacklogSort};
pub use self::clients::{CLIENTS, ClientSort};
pub use self::health::{CheckSort, HEALTH_CHECKS};
pub use self::heartbeats::{HEARTBEATS, HeartbeatSort};
pub use self::overview::{MASTERS, MasterLine};
pub use self::sidecars::{SIDECARS, SidecarSort};

use self::backlog::render_backlog;
use self::chrome::{render_footer, tab_bar, title_bar};
use self::clients::render_clients;
use self::health::render_health;
use self::heartbeats::render_heartbeats;
use self::help::render_help;
use self::overview::render_overview;
use self::sidecars::render_sidecars;
use self::text::fit;

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let [title_area, tabs_area, body_area, footer_area] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(area);
        fit(title_bar(self), title_area.width).render(title_area, buf);
        fit(tab_bar(self.view, tabs_area.width), tabs_area.width).render(tabs_area, buf);
        match self.view {
            View::Overview => render_overview(self, body_area, buf),
            View::Sidecars => render_sidecars(self, body_area, buf),
            View::Clients => render_clients(self, body_area, buf),
            View::Heartbeats => render_heartbeats(self, body_area, buf),
            View::Backlog => render_backlog(self, body_area, buf),
            View::Health => render_health(self, body_area, buf),
        }
        render_footer(self, footer_area, buf);
        if self.show_help {
            render_help(self, area, buf);
        }
    }
}
