//! Forgetting peers that left: a table of peers keyed by id keeps a
//! disconnected one for a while (the operator sees who is gone), but not
//! for ever and not without bound (ids that come and go, or a peer making
//! them up, must not grow a node).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Removes the entries gone (per `gone_since`) for `after` or longer, then
/// the longest gone beyond `max_gone`. Returns how many were removed.
pub fn forget_gone<K: Ord + Clone, V>(
    table: &mut BTreeMap<K, V>,
    now: Instant,
    after: Duration,
    max_gone: usize,
    gone_since: impl Fn(&V) -> Option<Instant>,
) -> usize {
    let before = table.len();
    table
        .retain(|_, entry| gone_since(entry).is_none_or(|since| now.duration_since(since) < after));
    let gone_count = table
        .values()
        .filter(|entry| gone_since(entry).is_some())
        .count();
    if gone_count > max_gone {
        let mut gone: Vec<(Instant, K)> = table
            .iter()
            .filter_map(|(key, entry)| gone_since(entry).map(|since| (since, key.clone())))
            .collect();
        gone.sort_unstable_by_key(|(since, _)| *since);
        for (_, key) in gone.iter().take(gone_count - max_gone) {
            table.remove(key);
        }
    }
    before - table.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_and_the_excess_gone_are_forgotten_the_present_kept() {
        let start = Instant::now();
        let at = |s: u64| Some(start + Duration::from_secs(s));
        let mut table = BTreeMap::from([
            ("here", None),
            ("old", at(0)),
            ("a", at(100)),
            ("b", at(101)),
            ("c", at(102)),
        ]);
        let now = start + Duration::from_secs(150);
        let forgotten = forget_gone(&mut table, now, Duration::from_secs(120), 2, |e| *e);
        assert_eq!(forgotten, 2);
        assert_eq!(
            table.keys().copied().collect::<Vec<_>>(),
            vec!["b", "c", "here"]
        );
    }
}
