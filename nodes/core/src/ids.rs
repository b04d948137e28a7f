//! What a node id, a version and an incarnation may look like. They come
//! from peers (Hello) and operators (`--id`), and end up in CSV files, log
//! lines, event ids and the console, so each has a bound on its length and
//! on its characters.

/// Longest node id, in bytes.
pub const MAX_ID_BYTES: usize = 200;

/// Longest version or incarnation text a peer may announce, in bytes.
pub const MAX_LABEL_BYTES: usize = 64;

/// Why `id` cannot be a node id: empty, longer than [`MAX_ID_BYTES`], or
/// holding blanks, control characters, commas or semicolons (separators of
/// the CSV files ids appear in).
pub fn id_problem(id: &str) -> Option<&'static str> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || c == ',' || c == ';';
    if id.is_empty() {
        Some("is empty")
    } else if id.len() > MAX_ID_BYTES {
        Some("is longer than 200 bytes")
    } else if id.chars().any(bad) {
        Some("holds blanks, control characters, commas or semicolons")
    } else {
        None
    }
}

/// Why `label` (a version, an incarnation) cannot be shown as it is:
/// longer than [`MAX_LABEL_BYTES`] or holding control characters.
pub fn label_problem(label: &str) -> Option<&'static str> {
    if label.len() > MAX_LABEL_BYTES {
        Some("is longer than 64 bytes")
    } else if label.chars().any(char::is_control) {
        Some("holds control characters")
    } else {
        None
    }
}

/// The start of a text a peer sent, safe to quote in a message or a log
/// line: at most 40 characters, escaped.
pub fn quote(text: &str) -> String {
    let head: String = text.chars().take(40).collect();
    if head.len() < text.len() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bounded_and_free_of_separators() {
        assert_eq!(id_problem("edge-7_b"), None);
        assert_eq!(id_problem(""), Some("is empty"));
        assert!(id_problem(&"x".repeat(201)).is_some());
        assert_eq!(id_problem(&"x".repeat(200)), None);
        for bad in ["a b", "a\nb", "a,b", "a;b", "a\u{7}b"] {
            assert!(id_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn labels_are_bounded_and_printable() {
        assert_eq!(label_problem("0.1.0"), None);
        assert_eq!(label_problem(""), None);
        assert!(label_problem(&"v".repeat(65)).is_some());
        assert!(label_problem("1.0\nforged log line").is_some());
    }

    #[test]
    fn quotes_are_short_and_escaped() {
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        assert_eq!(quote(&"x".repeat(100)), format!("{:?}…", "x".repeat(40)));
    }
}
