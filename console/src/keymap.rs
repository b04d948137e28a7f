//! Every key of the dashboard, written once: [`KEY_MAP`] says which key
//! does which [`Command`] and how the help describes it. The app handles
//! keys by looking them up here, the help overlay lists these lines, and
//! the footer's hints and the messages that name a key take their labels
//! from here, so a key cannot do one thing and be documented as another.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::view::View;

/// A key as the map names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A character, whatever the modifiers (Shift-g arrives as `G`).
    Char(char),
    /// A character with Ctrl held.
    Ctrl(char),
    /// Tab.
    Tab,
    /// Shift-Tab.
    BackTab,
    /// The up arrow.
    Up,
    /// The down arrow.
    Down,
    /// Home.
    Home,
    /// End.
    End,
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Backspace.
    Backspace,
    /// A view's number: `1` for the first of [`View::ALL`], and so on.
    ViewNumber,
}

impl Key {
    /// Whether `event` is this key.
    pub fn matches(self, event: &KeyEvent) -> bool {
        match self {
            Key::Char(c) => event.code == KeyCode::Char(c),
            Key::Ctrl(c) => {
                event.code == KeyCode::Char(c) && event.modifiers.contains(KeyModifiers::CONTROL)
            }
            Key::Tab => event.code == KeyCode::Tab,
            Key::BackTab => event.code == KeyCode::BackTab,
            Key::Up => event.code == KeyCode::Up,
            Key::Down => event.code == KeyCode::Down,
            Key::Home => event.code == KeyCode::Home,
            Key::End => event.code == KeyCode::End,
            Key::Enter => event.code == KeyCode::Enter,
            Key::Esc => event.code == KeyCode::Esc,
            Key::Backspace => event.code == KeyCode::Backspace,
            Key::ViewNumber => match event.code {
                KeyCode::Char(c) => View::numbered(c).is_some(),
                _ => false,
            },
        }
    }

    /// How the help and the footer write it.
    pub fn label(self) -> String {
        match self {
            Key::Char(c) => c.to_string(),
            Key::Ctrl(c) => format!("Ctrl-{}", c.to_ascii_uppercase()),
            Key::Tab => "Tab".to_string(),
            Key::BackTab => "Shift-Tab".to_string(),
            Key::Up => "↑".to_string(),
            Key::Down => "↓".to_string(),
            Key::Home => "Home".to_string(),
            Key::End => "End".to_string(),
            Key::Enter => "Enter".to_string(),
            Key::Esc => "Esc".to_string(),
            Key::Backspace => "Backspace".to_string(),
            Key::ViewNumber => format!("1-{}", View::COUNT),
        }
    }

    /// Whether it still acts while a filter is typed: keys that type text
    /// are text then, Ctrl chords are not.
    pub fn acts_while_typing(self) -> bool {
        matches!(self, Key::Ctrl(_))
    }
}

/// What a key asks the dashboard to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Show the view whose number was pressed.
    NumberedView,
    /// Show the next view in tab order.
    NextView,
    /// Show the previous view in tab order.
    PreviousView,
    /// Select the row below.
    Down,
    /// Select the row above.
    Up,
    /// Select the first row.
    First,
    /// Select the last row.
    Last,
    /// Start typing a filter.
    EditFilter,
    /// Drop the filter.
    ClearFilter,
    /// Sort by the view's next sort key.
    NextSort,
    /// Reverse the order of the rows.
    Reverse,
    /// Health-check the selected sidecar or client.
    CheckSelected,
    /// Health-check every peer.
    CheckAll,
    /// Open the help.
    Help,
    /// Leave the dashboard.
    Quit,
}

/// One key and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The key.
    pub key: Key,
    /// What it does.
    pub command: Command,
}

const fn bind(key: Key, command: Command) -> Binding {
    Binding { key, command }
}

/// One line of the help: keys and what they do.
#[derive(Debug)]
pub struct HelpLine {
    /// The keys, in groups: the help separates groups with two spaces and
    /// keys within a group with one ("j k  ↓ ↑").
    pub keys: &'static [&'static [Binding]],
    /// What the keys do, in the help's words.
    pub help: &'static str,
}

impl HelpLine {
    /// The keys as the help writes them: "j k  ↓ ↑".
    pub fn keys_label(&self) -> String {
        self.keys
            .iter()
            .map(|group| {
                group
                    .iter()
                    .map(|binding| binding.key.label())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("  ")
    }

    /// Every binding on the line.
    pub fn bindings(&self) -> impl Iterator<Item = &'static Binding> + use<> {
        let keys: &'static [&'static [Binding]] = self.keys;
        keys.iter().flat_map(|group| group.iter())
    }
}

/// Every key outside the filter prompt, as the help lists them.
pub const KEY_MAP: &[HelpLine] = &[
    HelpLine {
        keys: &[
            &[bind(Key::ViewNumber, Command::NumberedView)],
            &[bind(Key::Tab, Command::NextView)],
            &[bind(Key::BackTab, Command::PreviousView)],
        ],
        help: "switch view",
    },
    HelpLine {
        keys: &[
            &[
                bind(Key::Char('j'), Command::Down),
                bind(Key::Char('k'), Command::Up),
            ],
            &[bind(Key::Down, Command::Down), bind(Key::Up, Command::Up)],
        ],
        help: "move the selection",
    },
    HelpLine {
        keys: &[
            &[
                bind(Key::Char('g'), Command::First),
                bind(Key::Char('G'), Command::Last),
            ],
            &[
                bind(Key::Home, Command::First),
                bind(Key::End, Command::Last),
            ],
        ],
        help: "first / last row",
    },
    HelpLine {
        keys: &[&[bind(Key::Char('/'), Command::EditFilter)]],
        help: "filter rows (Enter keeps it, Esc clears it)",
    },
    HelpLine {
        keys: &[&[bind(Key::Esc, Command::ClearFilter)]],
        help: "clear the filter",
    },
    HelpLine {
        keys: &[&[bind(Key::Char('s'), Command::NextSort)]],
        help: "sort by the next column",
    },
    HelpLine {
        keys: &[&[bind(Key::Char('r'), Command::Reverse)]],
        help: "reverse the order",
    },
    HelpLine {
        keys: &[&[bind(Key::Char('h'), Command::CheckSelected)]],
        help: "health-check the selected sidecar or client",
    },
    HelpLine {
        keys: &[&[bind(Key::Char('H'), Command::CheckAll)]],
        help: "health-check every peer",
    },
    HelpLine {
        keys: &[&[bind(Key::Char('?'), Command::Help)]],
        help: "this help (any key closes it)",
    },
    HelpLine {
        keys: &[
            &[bind(Key::Char('q'), Command::Quit)],
            &[bind(Key::Ctrl('c'), Command::Quit)],
        ],
        help: "quit",
    },
];

/// The binding of `event` in [`KEY_MAP`], if it has one.
pub fn binding_for(event: &KeyEvent) -> Option<Binding> {
    binding_in(KEY_MAP, event)
}

/// The binding of `event` in `map`. A Ctrl chord wins over the plain
/// character it is typed with.
fn binding_in(map: &[HelpLine], event: &KeyEvent) -> Option<Binding> {
    let bindings = || map.iter().flat_map(HelpLine::bindings);
    bindings()
        .find(|binding| binding.key.acts_while_typing() && binding.key.matches(event))
        .or_else(|| bindings().find(|binding| binding.key.matches(event)))
        .copied()
}

/// The label of the first key that does `command` ("H"), for hints and
/// messages that name it; empty if no key does.
pub fn key_for(command: Command) -> String {
    KEY_MAP
        .iter()
        .flat_map(HelpLine::bindings)
        .find(|binding| binding.command == command)
        .map(|binding| binding.key.label())
        .unwrap_or_default()
}

/// A reminder in the footer: the first key of each command, and a word.
#[derive(Debug)]
pub struct Hint {
    /// Commands whose keys the hint shows, joined by `/` ("Tab/1-6").
    pub commands: &'static [Command],
    /// What they do, in a word or two.
    pub what: &'static str,
}

impl Hint {
    /// The keys as the footer writes them: "Tab/1-6".
    pub fn keys_label(&self) -> String {
        self.commands
            .iter()
            .map(|command| key_for(*command))
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// The footer's reminders, most useful first.
pub const HINTS: &[Hint] = &[
    Hint {
        commands: &[Command::Help],
        what: "help",
    },
    Hint {
        commands: &[Command::Quit],
        what: "quit",
    },
    Hint {
        commands: &[Command::NextView, Command::NumberedView],
        what: "views",
    },
    Hint {
        commands: &[Command::Down, Command::Up],
        what: "move",
    },
    Hint {
        commands: &[Command::EditFilter],
        what: "filter",
    },
    Hint {
        commands: &[Command::NextSort],
        what: "sort",
    },
    Hint {
        commands: &[Command::Reverse],
        what: "reverse",
    },
    Hint {
        commands: &[Command::CheckSelected],
        what: "check",
    },
    Hint {
        commands: &[Command::CheckAll],
        what: "check all",
    },
];

/// What a key does while a filter is typed (other characters are text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterEdit {
    /// Stop typing, keep the filter.
    Keep,
    /// Stop typing, drop the filter.
    Clear,
    /// Delete the last character.
    DeleteLast,
}

/// A key of the filter prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterKey {
    /// The key.
    pub key: Key,
    /// What it does to the filter.
    pub edit: FilterEdit,
    /// Its word in the footer while typing; `None` keeps it out.
    pub hint: Option<&'static str>,
}

/// The keys of the filter prompt; the footer shows those with a hint.
pub const FILTER_KEYS: &[FilterKey] = &[
    FilterKey {
        key: Key::Enter,
        edit: FilterEdit::Keep,
        hint: Some("keep"),
    },
    FilterKey {
        key: Key::Esc,
        edit: FilterEdit::Clear,
        hint: Some("clear"),
    },
    FilterKey {
        key: Key::Backspace,
        edit: FilterEdit::DeleteLast,
        hint: None,
    },
];

/// What `event` does to the filter being typed, if it is not text.
pub fn filter_edit_for(event: &KeyEvent) -> Option<FilterEdit> {
    FILTER_KEYS
        .iter()
        .find(|filter_key| filter_key.key.matches(event))
        .map(|filter_key| filter_key.edit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_bindings() -> Vec<Binding> {
        KEY_MAP
            .iter()
            .flat_map(HelpLine::bindings)
            .copied()
            .collect()
    }

    #[test]
    fn no_key_does_two_things() {
        let bindings = all_bindings();
        for (i, a) in bindings.iter().enumerate() {
            for b in &bindings[i + 1..] {
                assert_ne!(a.key, b.key, "{:?} is bound twice", a.key);
            }
            if let Key::Char(c) = a.key {
                assert!(
                    View::numbered(c).is_none(),
                    "{c} both selects a view and does {:?}",
                    a.command
                );
            }
        }
        for filter_key in FILTER_KEYS {
            assert!(
                !filter_key.key.acts_while_typing() && !matches!(filter_key.key, Key::Char(_)),
                "{:?} would not reach the filter prompt",
                filter_key.key
            );
        }
    }

    #[test]
    fn the_number_keys_are_as_many_as_the_views() {
        let press = |c| KeyEvent::from(KeyCode::Char(c));
        let numbers: Vec<char> = ('0'..='9')
            .filter(|c| Key::ViewNumber.matches(&press(*c)))
            .collect();
        let expected: Vec<char> = View::ALL
            .iter()
            .filter_map(|view| char::from_digit(u32::try_from(view.number()).ok()?, 10))
            .collect();
        assert_eq!(numbers, expected);
        assert_eq!(Key::ViewNumber.label(), format!("1-{}", View::COUNT));
    }

    #[test]
    fn a_ctrl_chord_wins_over_its_letter_and_letters_ignore_modifiers() {
        // The letter first, so the order of the map cannot be what decides.
        const MAP: [HelpLine; 1] = [HelpLine {
            keys: &[&[
                bind(Key::Char('c'), Command::Help),
                bind(Key::Ctrl('c'), Command::Quit),
            ]],
            help: "",
        }];
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        let c = KeyEvent::from(KeyCode::Char('c'));
        assert_eq!(
            binding_in(&MAP, &ctrl_c).map(|b| b.command),
            Some(Command::Quit)
        );
        assert_eq!(binding_in(&MAP, &c).map(|b| b.command), Some(Command::Help));

        assert_eq!(binding_for(&ctrl_c).map(|b| b.key), Some(Key::Ctrl('c')));
        let shift_g = KeyEvent::new(KeyCode::Char('G'), KeyModifiers::SHIFT);
        assert_eq!(
            binding_for(&shift_g).map(|b| b.command),
            Some(Command::Last)
        );
        assert_eq!(binding_for(&KeyEvent::from(KeyCode::Char('x'))), None);
    }

    #[test]
    fn hints_and_messages_name_bound_keys() {
        for hint in HINTS {
            assert!(!hint.commands.is_empty(), "{:?} names no key", hint.what);
            for (i, command) in hint.commands.iter().enumerate() {
                assert!(
                    !hint.commands[..i].contains(command),
                    "{:?} names {command:?} twice",
                    hint.what
                );
                assert!(
                    !key_for(*command).is_empty(),
                    "the {:?} hint names {command:?}, which no key does",
                    hint.what
                );
            }
        }
        assert_eq!(key_for(Command::CheckAll), "H");
        assert_eq!(HINTS[2].keys_label(), format!("Tab/1-{}", View::COUNT));
        assert_eq!(KEY_MAP[1].keys_label(), "j k  ↓ ↑");
        assert_eq!(KEY_MAP[10].keys_label(), "q  Ctrl-C");
    }

    #[test]
    fn the_filter_help_names_the_prompt_keys() {
        let filter_line = KEY_MAP
            .iter()
            .find(|line| line.bindings().any(|b| b.command == Command::EditFilter))
            .map(|line| line.help)
            .unwrap_or_default();
        for filter_key in FILTER_KEYS.iter().filter(|k| k.hint.is_some()) {
            let label = filter_key.key.label();
            assert!(
                filter_line.contains(&format!("{label} ")),
                "the help of the filter does not mention {label}: {filter_line:?}"
            );
        }
    }
}
