//! The marks topic of exactly-once mode (`<topic>.smesh-marks`, written by
//! the master's transactor, `nodes/master/src/transactions.rs`): per
//! identity, the highest sequence the master committed.
//!
//! Keys are `<client>/<incarnation as 16 hex>` (a mark, value
//! `{"through":N,"master":..,"written_unix_nanos":..}`) or
//! `<client>/<incarnation>/claim` (a claim, which the audit ignores). The
//! topic is compacted and read to its end, so memory is one entry per
//! identity.

use std::collections::HashMap;

use serde::Deserialize;

use super::ledger::Identity;

/// The value of a mark record (other fields are ignored).
#[derive(Debug, Deserialize)]
struct MarkValue {
    through: u64,
}

/// What one record of the marks topic is.
#[derive(Debug, PartialEq, Eq)]
pub enum MarkRecord {
    /// A mark: the identity was committed through this sequence.
    Mark(Identity, u64),
    /// A claim: who publishes an identity; nothing for the audit.
    Claim,
    /// Not a record a master writes.
    Unparseable(String),
}

/// Reads one record of the marks topic.
pub fn parse(key: Option<&[u8]>, value: Option<&[u8]>) -> MarkRecord {
    let Some(key) = key.and_then(|k| std::str::from_utf8(k).ok()) else {
        return MarkRecord::Unparseable("its key is missing or not UTF-8".into());
    };
    if key.ends_with("/claim") {
        return MarkRecord::Claim;
    }
    let Some((client, incarnation)) = key.rsplit_once('/') else {
        return MarkRecord::Unparseable("its key is not <client>/<incarnation>".into());
    };
    let incarnation = match u64::from_str_radix(incarnation, 16) {
        Ok(n) if incarnation.len() == 16 && !client.is_empty() => n,
        _ => {
            return MarkRecord::Unparseable("its key is not <client>/<16 hex digits>".into());
        }
    };
    let Some(value) = value else {
        return MarkRecord::Unparseable("a mark without a value".into());
    };
    match serde_json::from_slice::<MarkValue>(value) {
        Ok(mark) => MarkRecord::Mark((client.to_string(), incarnation), mark.through),
        Err(_) => MarkRecord::Unparseable("its value is not {\"through\":N,..}".into()),
    }
}

/// Every identity's mark, as read.
#[derive(Debug, Default)]
pub struct Marks {
    /// Highest `through` per identity (a later mark never lowers it; the
    /// master's never do).
    through: HashMap<Identity, u64>,
    /// Records that were neither marks nor claims.
    unparseable: u64,
}

impl Marks {
    /// Takes one record of the marks topic.
    pub fn take(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) {
        match parse(key, value) {
            MarkRecord::Mark(identity, through) => {
                let known = self.through.entry(identity).or_insert(through);
                *known = (*known).max(through);
            }
            MarkRecord::Claim => {}
            MarkRecord::Unparseable(_) => self.unparseable += 1,
        }
    }

    /// The mark of an identity.
    pub fn through(&self, identity: &Identity) -> Option<u64> {
        self.through.get(identity).copied()
    }

    /// Every mark.
    pub fn iter(&self) -> impl Iterator<Item = (&Identity, u64)> {
        self.through.iter().map(|(identity, &n)| (identity, n))
    }

    /// Records that were neither marks nor claims.
    pub fn unparseable(&self) -> u64 {
        self.unparseable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_claims_and_garbage() {
        let mark = br#"{"through":42,"master":"M1","written_unix_nanos":1}"#;
        assert_eq!(
            parse(Some(b"edge/7/0000000000000003"), Some(mark)),
            MarkRecord::Mark(("edge/7".into(), 3), 42)
        );
        assert_eq!(
            parse(
                Some(b"edge/0000000000000003/claim"),
                Some(br#"{"master":"M1","nonce":9}"#)
            ),
            MarkRecord::Claim
        );
        for (key, value) in [
            (None, Some(&mark[..])),
            (Some(&b"\xff\xfe"[..]), Some(&mark[..])),
            (Some(&b"edge"[..]), Some(&mark[..])),
            (Some(&b"edge/3"[..]), Some(&mark[..])),
            (Some(&b"/0000000000000003"[..]), Some(&mark[..])),
            (Some(&b"edge/0000000000000003"[..]), None),
            (
                Some(&b"edge/0000000000000003"[..]),
                Some(&b"{\"through\":-1}"[..]),
            ),
            (
                Some(&b"edge/0000000000000003"[..]),
                Some(&b"\x00garbage"[..]),
            ),
        ] {
            assert!(
                matches!(parse(key, value), MarkRecord::Unparseable(_)),
                "{key:?} {value:?}"
            );
        }
    }

    #[test]
    fn the_highest_mark_of_an_identity_counts() {
        let mut marks = Marks::default();
        let key = Some(&b"c/0000000000000001"[..]);
        marks.take(key, Some(br#"{"through":10}"#));
        marks.take(key, Some(br#"{"through":30}"#));
        marks.take(key, Some(br#"{"through":20}"#));
        marks.take(Some(b"c/0000000000000001/claim"), Some(b"{}"));
        marks.take(Some(b"junk"), None);
        assert_eq!(marks.through(&("c".into(), 1)), Some(30));
        assert_eq!(marks.iter().count(), 1);
        assert_eq!(marks.unparseable(), 1);
    }
}
