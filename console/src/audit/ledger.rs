//! The audit's bookkeeping, pure: what was read of each event stream, kept
//! as ranges so that memory follows the breaks in a topic, not its size.
//!
//! An event stream is an *identity*: (client id, incarnation). Per identity
//! the ledger keeps
//! - the sequence numbers present, as sorted disjoint ranges ([`Ranges`]);
//!   a healthy stream is one range however long it is;
//! - the predecessors named by a `smesh-previous` header and not present
//!   (yet): each one is a gap unless it turns up later in the read (records
//!   of one identity may come from several partitions, read interleaved);
//! - counters (records, duplicates, order violations, events without a
//!   usable link) and the newest event.
//!
//! So memory is O(identities × (ranges + unresolved links)), not O(events):
//! a topic of a billion healthy events of 1 000 clients costs 1 000 entries
//! of a few ranges each.
//!
//! What counts as what:
//! - **duplicate**: a sequence already present in its identity;
//! - **order violation**: a new sequence below the highest one read of its
//!   identity in the same partition (a partition's log is the order Kafka
//!   hands a consumer; one identity normally lives in one partition);
//! - **gap**: an event names (`smesh-previous`) a predecessor that is absent
//!   from the whole read. Sequence numbers alone may skip (a client numbers
//!   events it could not deliver or that were refused), so a hole between
//!   ranges is *not* a gap by itself; `0` names no predecessor (a chain
//!   start). The first record of an identity in a partition whose oldest
//!   records were deleted (retention, compaction) may name one that was
//!   deleted: such a link is counted as `before_log_start`, not as a gap;
//! - a **mark** (exactly-once mode) says the master committed an identity
//!   through sequence N: N absent means the tail was lost, something no
//!   link can show (nothing comes after the newest event to name it).

use std::collections::{BTreeMap, HashMap};

/// Sorted, disjoint, non-adjacent inclusive ranges of sequence numbers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ranges {
    /// First number of each range → its last number (inclusive).
    starts: BTreeMap<u64, u64>,
}

impl Ranges {
    /// Whether `n` is in one of the ranges.
    pub fn contains(&self, n: u64) -> bool {
        self.range_of(n).is_some()
    }

    /// The range holding `n`, if any.
    fn range_of(&self, n: u64) -> Option<(u64, u64)> {
        self.starts
            .range(..=n)
            .next_back()
            .map(|(&start, &end)| (start, end))
            .filter(|&(_, end)| end >= n)
    }

    /// Adds `n`, merging with the ranges it touches; `false` if it was
    /// already there.
    pub fn insert(&mut self, n: u64) -> bool {
        let below = self
            .starts
            .range(..=n)
            .next_back()
            .map(|(&start, &end)| (start, end));
        if below.is_some_and(|(_, end)| end >= n) {
            return false;
        }
        let joins_below = below.filter(|&(_, end)| end.checked_add(1) == Some(n));
        let joins_above = n
            .checked_add(1)
            .and_then(|next| self.starts.get(&next).map(|&end| (next, end)));
        match (joins_below, joins_above) {
            (Some((start, _)), Some((next, end))) => {
                self.starts.remove(&next);
                self.starts.insert(start, end);
            }
            (Some((start, _)), None) => {
                self.starts.insert(start, n);
            }
            (None, Some((next, end))) => {
                self.starts.remove(&next);
                self.starts.insert(n, end);
            }
            (None, None) => {
                self.starts.insert(n, n);
            }
        }
        true
    }

    /// Removes `n`, splitting its range; `false` if it was not there.
    pub fn remove(&mut self, n: u64) -> bool {
        let Some((start, end)) = self.range_of(n) else {
            return false;
        };
        self.starts.remove(&start);
        if start < n {
            self.starts.insert(start, n - 1);
        }
        if n < end {
            self.starts.insert(n + 1, end);
        }
        true
    }

    /// How many ranges (what the memory of this set grows with).
    pub fn range_count(&self) -> usize {
        self.starts.len()
    }

    /// How many numbers the ranges hold together.
    pub fn len(&self) -> u64 {
        self.starts
            .iter()
            .map(|(&start, &end)| (end - start).saturating_add(1))
            .fold(0, u64::saturating_add)
    }

    /// Whether no number is held.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The ranges, lowest first, as (first, last) inclusive.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.starts.iter().map(|(&start, &end)| (start, end))
    }

    /// The highest number held.
    pub fn highest(&self) -> Option<u64> {
        self.starts.values().next_back().copied()
    }

    /// The highest number held below `n`.
    pub fn highest_below(&self, n: u64) -> Option<u64> {
        let (&start, &end) = self.starts.range(..n).next_back()?;
        Some(end.min(n - 1).max(start))
    }
}

/// One parsed data record, as the reader hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The record key: the client id.
    pub client: &'a str,
    /// From `ce_id`.
    pub incarnation: u64,
    /// From `ce_id`.
    pub sequence: u64,
    /// `smesh-previous`; `None` when missing or not a number.
    pub previous: Option<u64>,
    /// The partition it was read from.
    pub partition: i32,
    /// The record's timestamp (ms since the epoch), if it has one.
    pub timestamp_millis: Option<i64>,
    /// `ce_time`, as written (the event's own clock).
    pub event_time: Option<&'a str>,
    /// Whether the partition's oldest records were deleted (its log starts
    /// after offset 0), so the first record of an identity there may name
    /// a predecessor that is gone for that reason.
    pub log_truncated: bool,
}

/// The longest `ce_time` kept (it is only shown).
const MAX_EVENT_TIME_CHARS: usize = 64;

/// The newest event of an identity (highest sequence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Newest {
    /// Its sequence number.
    pub sequence: u64,
    /// Its record timestamp (ms since the epoch).
    pub timestamp_millis: Option<i64>,
    /// Its `ce_time`.
    pub event_time: Option<String>,
}

/// A predecessor named but not (yet) read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Awaited {
    /// The lowest sequence that named it.
    named_by: u64,
    /// Named by an identity's first record in a partition whose log was
    /// truncated: likely deleted by retention, not lost.
    before_log_start: bool,
}

/// What the ledger knows of one identity.
#[derive(Debug, Default, Clone)]
pub struct Stream {
    /// Sequences present.
    present: Ranges,
    /// Predecessors named and not present, by sequence.
    awaited: BTreeMap<u64, Awaited>,
    /// Records read, duplicates included.
    records: u64,
    /// Records whose sequence was already present.
    duplicates: u64,
    /// New sequences below the highest read in their partition.
    order_violations: u64,
    /// Events without a usable `smesh-previous` (missing, not a number, or
    /// not below the event's own sequence): their links prove nothing.
    unlinked: u64,
    /// Highest sequence read per partition (almost always one entry).
    highest_by_partition: Vec<(i32, u64)>,
    /// The event with the highest sequence.
    newest: Option<Newest>,
    /// Partitions it was read from (almost always one).
    partitions: Vec<i32>,
}

impl Stream {
    fn observe(&mut self, event: &Observation<'_>) {
        self.records += 1;
        let first_in_partition = !self.partitions.contains(&event.partition);
        if first_in_partition {
            self.partitions.push(event.partition);
        }
        let sequence = event.sequence;
        if !self.present.insert(sequence) {
            self.duplicates += 1;
            return;
        }
        match self
            .highest_by_partition
            .iter_mut()
            .find(|(partition, _)| *partition == event.partition)
        {
            Some((_, highest)) => {
                if sequence < *highest {
                    self.order_violations += 1;
                }
                *highest = (*highest).max(sequence);
            }
            None => self.highest_by_partition.push((event.partition, sequence)),
        }
        self.awaited.remove(&sequence);
        match event.previous {
            Some(0) => {}
            Some(previous) if previous < sequence => {
                if !self.present.contains(previous) {
                    let named = Awaited {
                        named_by: sequence,
                        before_log_start: first_in_partition && event.log_truncated,
                    };
                    self.awaited
                        .entry(previous)
                        .and_modify(|known| {
                            if sequence < known.named_by {
                                *known = named;
                            }
                        })
                        .or_insert(named);
                }
            }
            _ => self.unlinked += 1,
        }
        if self.newest.as_ref().is_none_or(|n| sequence > n.sequence) {
            self.newest = Some(Newest {
                sequence,
                timestamp_millis: event.timestamp_millis,
                event_time: event
                    .event_time
                    .map(|t| t.chars().take(MAX_EVENT_TIME_CHARS).collect()),
            });
        }
    }

    /// Sequences present.
    pub fn present(&self) -> &Ranges {
        &self.present
    }

    /// Records read, duplicates included.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Records whose sequence was already present.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// New sequences below the highest read in their partition.
    pub fn order_violations(&self) -> u64 {
        self.order_violations
    }

    /// Events whose `smesh-previous` is missing or unusable.
    pub fn unlinked(&self) -> u64 {
        self.unlinked
    }

    /// The event with the highest sequence.
    pub fn newest(&self) -> Option<&Newest> {
        self.newest.as_ref()
    }

    /// Missing predecessors: the gaps, lowest first.
    pub fn gaps(&self) -> impl Iterator<Item = Gap> + '_ {
        self.missing(false)
    }

    /// Missing predecessors named across a truncated log start.
    pub fn before_log_start(&self) -> impl Iterator<Item = Gap> + '_ {
        self.missing(true)
    }

    fn missing(&self, before_log_start: bool) -> impl Iterator<Item = Gap> + '_ {
        self.awaited
            .iter()
            .filter(move |(_, awaited)| awaited.before_log_start == before_log_start)
            .map(|(&missing, awaited)| Gap {
                missing,
                named_by: awaited.named_by,
                possibly_from: self
                    .present
                    .highest_below(missing)
                    .map_or(1, |below| below + 1),
            })
    }

    /// How many gaps.
    pub fn gap_count(&self) -> usize {
        self.awaited
            .values()
            .filter(|a| !a.before_log_start)
            .count()
    }
}

/// A missing predecessor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Gap {
    /// The sequence named by `smesh-previous` and absent.
    pub missing: u64,
    /// The (lowest) sequence whose `smesh-previous` names it.
    pub named_by: u64,
    /// The lost run starts at most this low: one above the highest
    /// sequence present below `missing` (1 when none is). Sequence numbers
    /// may skip, so fewer may be lost; `missing` itself certainly is.
    pub possibly_from: u64,
}

/// (client id, incarnation).
pub type Identity = (String, u64);

/// A record that is not a smesh event, where it was.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unparseable {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// What is wrong with it.
    pub reason: String,
}

/// How many unparseable records are kept as examples (all are counted).
pub const MAX_UNPARSEABLE_KEPT: usize = 10;

/// Everything read, per identity.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The identities' streams.
    streams: HashMap<Identity, Stream>,
    /// Records that are not smesh events.
    unparseable: u64,
    /// The first [`MAX_UNPARSEABLE_KEPT`] of them.
    unparseable_kept: Vec<Unparseable>,
}

impl Ledger {
    /// Records one event.
    pub fn observe(&mut self, event: &Observation<'_>) {
        self.streams
            .entry((event.client.to_string(), event.incarnation))
            .or_default()
            .observe(event);
    }

    /// Records a record that is not a smesh event.
    pub fn unparseable(&mut self, partition: i32, offset: i64, reason: impl Into<String>) {
        self.unparseable += 1;
        if self.unparseable_kept.len() < MAX_UNPARSEABLE_KEPT {
            self.unparseable_kept.push(Unparseable {
                partition,
                offset,
                reason: reason.into(),
            });
        }
    }

    /// How many records were not smesh events.
    pub fn unparseable_count(&self) -> u64 {
        self.unparseable
    }

    /// The first of them.
    pub fn unparseable_examples(&self) -> &[Unparseable] {
        &self.unparseable_kept
    }

    /// Every identity's stream, in no particular order.
    pub fn streams(&self) -> impl Iterator<Item = (&Identity, &Stream)> {
        self.streams.iter()
    }

    /// One identity's stream.
    pub fn stream(&self, client: &str, incarnation: u64) -> Option<&Stream> {
        self.streams.get(&(client.to_string(), incarnation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(of: &Ranges) -> Vec<(u64, u64)> {
        of.iter().collect()
    }

    #[test]
    fn ranges_merge_in_any_order() {
        let mut set = Ranges::default();
        for n in [5, 1, 3, 2, 9, 4, 10] {
            assert!(set.insert(n), "{n} is new");
        }
        assert_eq!(ranges(&set), [(1, 5), (9, 10)]);
        assert!(!set.insert(3), "3 is there");
        assert!(set.insert(7));
        assert!(set.insert(8));
        assert!(set.insert(6));
        assert_eq!(ranges(&set), [(1, 10)]);
        assert_eq!((set.len(), set.range_count()), (10, 1));
        assert!(set.contains(1) && set.contains(10) && !set.contains(11) && !set.contains(0));
    }

    #[test]
    fn ranges_remove_splits_and_the_edges_hold() {
        let mut set = Ranges::default();
        for n in 1..=10 {
            set.insert(n);
        }
        assert!(set.remove(5));
        assert!(!set.remove(5));
        assert!(set.remove(1));
        assert!(set.remove(10));
        assert_eq!(ranges(&set), [(2, 4), (6, 9)]);
        assert_eq!(set.highest_below(6), Some(4));
        assert_eq!(set.highest_below(8), Some(7));
        assert_eq!(set.highest_below(2), None);
        assert_eq!(set.highest(), Some(9));
        let mut edges = Ranges::default();
        assert!(edges.insert(u64::MAX) && edges.insert(0) && edges.insert(u64::MAX - 1));
        assert_eq!(ranges(&edges), [(0, 0), (u64::MAX - 1, u64::MAX)]);
        assert!(edges.remove(u64::MAX) && edges.remove(0));
        assert_eq!(ranges(&edges), [(u64::MAX - 1, u64::MAX - 1)]);
    }

    /// An event of client `c`, incarnation 1, in partition 0.
    fn event(sequence: u64, previous: Option<u64>) -> Observation<'static> {
        Observation {
            client: "c",
            incarnation: 1,
            sequence,
            previous,
            partition: 0,
            timestamp_millis: Some(sequence as i64),
            event_time: None,
            log_truncated: false,
        }
    }

    fn chain(ledger: &mut Ledger, sequences: impl IntoIterator<Item = u64>) {
        let mut previous = 0;
        for sequence in sequences {
            ledger.observe(&event(sequence, Some(previous)));
            previous = sequence;
        }
    }

    fn only(ledger: &Ledger) -> &Stream {
        ledger.stream("c", 1).expect("client c, incarnation 1")
    }

    #[test]
    fn a_healthy_stream_is_one_range_whatever_its_length() {
        let mut ledger = Ledger::default();
        chain(&mut ledger, 1..=100_000);
        let stream = only(&ledger);
        assert_eq!(ranges(stream.present()), [(1, 100_000)]);
        assert_eq!(stream.records(), 100_000);
        assert_eq!(stream.gap_count(), 0);
        assert_eq!(
            (
                stream.duplicates(),
                stream.order_violations(),
                stream.unlinked()
            ),
            (0, 0, 0)
        );
        assert_eq!(stream.newest().map(|n| n.sequence), Some(100_000));
        assert!(stream.awaited.is_empty(), "nothing awaited");
    }

    #[test]
    fn a_numbering_jump_the_links_bridge_is_no_gap() {
        // 4..=6 were refused at the client: numbered, never handed over.
        let mut ledger = Ledger::default();
        chain(&mut ledger, [1, 2, 3, 7, 8]);
        let stream = only(&ledger);
        assert_eq!(ranges(stream.present()), [(1, 3), (7, 8)]);
        assert_eq!(stream.gap_count(), 0);
    }

    #[test]
    fn a_predecessor_never_read_is_a_gap() {
        let mut ledger = Ledger::default();
        ledger.observe(&event(1, Some(0)));
        ledger.observe(&event(2, Some(1)));
        // 3, 4 and 5 lost; 6 names 5.
        ledger.observe(&event(6, Some(5)));
        ledger.observe(&event(7, Some(6)));
        let stream = only(&ledger);
        assert_eq!(
            stream.gaps().collect::<Vec<_>>(),
            [Gap {
                missing: 5,
                named_by: 6,
                possibly_from: 3
            }]
        );
        assert_eq!(stream.gap_count(), 1);
    }

    #[test]
    fn a_predecessor_read_later_resolves() {
        // One identity over two partitions, read interleaved: 3 names 2
        // before 2 is read.
        let mut ledger = Ledger::default();
        ledger.observe(&event(1, Some(0)));
        ledger.observe(&Observation {
            partition: 1,
            ..event(3, Some(2))
        });
        assert_eq!(only(&ledger).gap_count(), 1, "2 awaited so far");
        ledger.observe(&event(2, Some(1)));
        let stream = only(&ledger);
        assert_eq!(stream.gap_count(), 0);
        assert_eq!(stream.order_violations(), 0, "different partitions");
        assert_eq!(ranges(stream.present()), [(1, 3)]);
    }

    #[test]
    fn a_sequence_read_twice_is_a_duplicate_not_an_order_violation() {
        let mut ledger = Ledger::default();
        chain(&mut ledger, 1..=10);
        // A resend of 5..=10 after a lost acknowledgement.
        ledger.observe(&event(5, Some(4)));
        ledger.observe(&event(6, Some(5)));
        let stream = only(&ledger);
        assert_eq!(stream.duplicates(), 2);
        assert_eq!(stream.order_violations(), 0);
        assert_eq!(stream.records(), 12);
        assert_eq!(stream.present().len(), 10);
    }

    #[test]
    fn a_new_sequence_below_the_highest_of_its_partition_is_an_order_violation() {
        let mut ledger = Ledger::default();
        ledger.observe(&event(1, Some(0)));
        ledger.observe(&event(3, Some(2)));
        ledger.observe(&event(2, Some(1)));
        ledger.observe(&event(4, Some(3)));
        let stream = only(&ledger);
        assert_eq!(stream.order_violations(), 1);
        assert_eq!(stream.duplicates(), 0);
        assert_eq!(stream.gap_count(), 0, "2 came, late");
    }

    #[test]
    fn identities_are_client_and_incarnation() {
        let mut ledger = Ledger::default();
        chain(&mut ledger, 1..=3);
        // The same client restarted: a new incarnation starts its own chain.
        for (sequence, previous) in [(4, 0), (5, 4)] {
            ledger.observe(&Observation {
                incarnation: 2,
                ..event(sequence, Some(previous))
            });
        }
        // Another client, same numbers.
        for (sequence, previous) in [(1, 0), (2, 1)] {
            ledger.observe(&Observation {
                client: "d",
                ..event(sequence, Some(previous))
            });
        }
        assert_eq!(ledger.streams().count(), 3);
        assert_eq!(only(&ledger).duplicates(), 0);
        let restarted = ledger.stream("c", 2).expect("incarnation 2");
        assert_eq!(ranges(restarted.present()), [(4, 5)]);
        assert_eq!(restarted.gap_count(), 0);
        assert_eq!(ledger.stream("d", 1).map(Stream::duplicates), Some(0));
    }

    #[test]
    fn missing_or_unusable_links_are_counted_not_trusted() {
        let mut ledger = Ledger::default();
        ledger.observe(&event(1, None));
        ledger.observe(&event(5, Some(5)));
        ledger.observe(&event(6, Some(9)));
        let stream = only(&ledger);
        assert_eq!(stream.unlinked(), 3);
        assert_eq!(stream.gap_count(), 0);
    }

    #[test]
    fn a_link_across_a_truncated_log_start_is_no_gap() {
        let mut ledger = Ledger::default();
        let truncated = |sequence, previous| Observation {
            log_truncated: true,
            ..event(sequence, Some(previous))
        };
        ledger.observe(&truncated(100, 99));
        ledger.observe(&truncated(101, 100));
        // Further on in the same truncated partition, a real gap.
        ledger.observe(&truncated(105, 104));
        let stream = only(&ledger);
        assert_eq!(stream.gap_count(), 1);
        assert_eq!(stream.gaps().map(|g| g.missing).collect::<Vec<_>>(), [104]);
        assert_eq!(
            stream
                .before_log_start()
                .map(|g| g.missing)
                .collect::<Vec<_>>(),
            [99]
        );
    }

    #[test]
    fn memory_follows_breaks_not_events() {
        // 10 000 events with a lost event every 1 000: 10 ranges, 9 gaps
        // awaited, whatever the number of events.
        let mut ledger = Ledger::default();
        let mut previous = 0;
        for sequence in 1..=10_000u64 {
            if sequence % 1_000 == 500 {
                previous = sequence;
                continue;
            }
            ledger.observe(&event(sequence, Some(previous)));
            previous = sequence;
        }
        let stream = only(&ledger);
        assert_eq!(stream.present().range_count(), 11);
        assert_eq!(stream.awaited.len(), 10);
        assert_eq!(stream.gap_count(), 10);
        assert_eq!(stream.present().len(), 9_990);
    }

    #[test]
    fn the_newest_event_is_the_highest_sequence() {
        let mut ledger = Ledger::default();
        ledger.observe(&Observation {
            event_time: Some("2026-01-01T00:00:09Z"),
            ..event(9, Some(0))
        });
        ledger.observe(&Observation {
            event_time: Some("2026-01-01T00:00:05Z"),
            ..event(5, Some(0))
        });
        let newest = only(&ledger).newest().expect("newest");
        assert_eq!(newest.sequence, 9);
        assert_eq!(newest.timestamp_millis, Some(9));
        assert_eq!(newest.event_time.as_deref(), Some("2026-01-01T00:00:09Z"));
    }

    #[test]
    fn unparseable_records_are_counted_and_a_few_kept() {
        let mut ledger = Ledger::default();
        for offset in 0..25 {
            ledger.unparseable(0, offset, "no ce_id header");
        }
        assert_eq!(ledger.unparseable_count(), 25);
        assert_eq!(ledger.unparseable_examples().len(), MAX_UNPARSEABLE_KEPT);
        assert_eq!(ledger.unparseable_examples()[0].offset, 0);
    }
}
