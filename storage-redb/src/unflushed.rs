//! `Unflushed`: the writes the journal holds and redb does not yet, kept in
//! memory so that reads see them.
//!
//! With the journal on, a write is appended to the journal and applied
//! here; redb gets the writes only at a checkpoint (`log_store.rs`), in one
//! transaction. The log a reader sees is the log below (redb's, or redb's
//! with a checkpoint's layer on top) up to `from`, followed by `entries`.
//! The log below may still hold entries at `from` and after: a truncation
//! cut them, and the next checkpoint removes them from redb.
//!
//! Bounded by the journal: every entry of a layer is in a frame of one
//! journal half, and a layer is sealed for a checkpoint (or written in
//! one) before its half overflows.

use std::collections::VecDeque;

use rafter::Entry;

/// The log's suffix that is not in redb yet, and whether the hard state
/// changed since redb last stored it.
///
/// Invariant: `entries[i].index == from + i`.
#[derive(Debug)]
pub(crate) struct Unflushed {
    /// The index of `entries[0]` (or of the next entry when empty): redb's
    /// entries below it are the log, those at or above it are replaced by
    /// `entries`.
    from: u64,
    entries: VecDeque<Entry>,
    /// The hard state changed after redb's last commit.
    hard_state_changed: bool,
}

impl Unflushed {
    /// Nothing unflushed; the next entry is `from`.
    pub(crate) fn new(from: u64) -> Self {
        Self {
            from,
            entries: VecDeque::new(),
            hard_state_changed: false,
        }
    }

    /// See the field.
    pub(crate) fn from(&self) -> u64 {
        self.from
    }

    /// The unflushed entries, in index order from [`Unflushed::from`].
    pub(crate) fn entries(&self) -> &VecDeque<Entry> {
        &self.entries
    }

    /// See the field.
    pub(crate) fn hard_state_changed(&self) -> bool {
        self.hard_state_changed
    }

    /// The term of entry `index`, if it is here.
    pub(crate) fn term(&self, index: u64) -> Option<u64> {
        let offset = index.checked_sub(self.from)?;
        let offset = usize::try_from(offset).ok()?;
        self.entries.get(offset).map(|entry| entry.term)
    }

    /// Applies a checked write: the log is cut at `next_index` (nothing is
    /// cut when it is one past the last entry), then `entries`, which start
    /// at `next_index`, are appended.
    pub(crate) fn append(&mut self, next_index: u64, entries: Vec<Entry>) {
        if next_index >= self.from {
            let keep = usize::try_from(next_index - self.from).unwrap_or(usize::MAX);
            self.entries.truncate(keep);
        } else {
            // The cut is inside what redb holds: all of this goes too.
            self.entries.clear();
            self.from = next_index;
        }
        debug_assert_eq!(self.from + self.entries.len() as u64, next_index);
        self.entries.extend(entries);
    }

    /// Records that the hard state changed.
    pub(crate) fn hard_state_set(&mut self) {
        self.hard_state_changed = true;
    }

    /// Forgets the entries up to `index` (a purge): they will never be
    /// written, and redb's entries above it that are not cut stay.
    pub(crate) fn purge(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            self.entries.pop_front();
        }
        self.from = self.from.max(index + 1);
    }

    /// Everything is in redb now; the next entry is `next`.
    pub(crate) fn flushed(&mut self, next: u64) {
        self.entries.clear();
        self.from = next;
        self.hard_state_changed = false;
    }
}

#[cfg(test)]
mod tests {
    use rafter::{CommandBytes, EntryPayload};

    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term,
            index,
            payload: EntryPayload::Command(CommandBytes::from(vec![index as u8; 3])),
        }
    }

    fn indexes_and_terms(unflushed: &Unflushed) -> Vec<(u64, u64)> {
        unflushed
            .entries()
            .iter()
            .map(|e| (e.index, e.term))
            .collect()
    }

    #[test]
    fn a_cut_inside_keeps_the_prefix_and_a_cut_below_moves_from() {
        let mut unflushed = Unflushed::new(5);
        unflushed.append(5, vec![entry(5, 1), entry(6, 1), entry(7, 1)]);
        unflushed.append(7, vec![entry(7, 2)]);
        assert_eq!(indexes_and_terms(&unflushed), [(5, 1), (6, 1), (7, 2)]);
        assert_eq!(unflushed.term(6), Some(1));
        assert_eq!(unflushed.term(8), None);
        assert_eq!(unflushed.term(4), None);
        unflushed.append(3, vec![entry(3, 3)]);
        assert_eq!(unflushed.from(), 3);
        assert_eq!(indexes_and_terms(&unflushed), [(3, 3)]);
    }

    #[test]
    fn a_purge_drops_the_front_and_past_the_end_moves_from() {
        let mut unflushed = Unflushed::new(1);
        unflushed.append(1, (1..=4).map(|i| entry(i, 1)).collect());
        unflushed.purge(2);
        assert_eq!(unflushed.from(), 3);
        assert_eq!(indexes_and_terms(&unflushed), [(3, 1), (4, 1)]);
        unflushed.purge(9);
        assert_eq!(unflushed.from(), 10);
        assert!(unflushed.entries().is_empty());
    }
}
