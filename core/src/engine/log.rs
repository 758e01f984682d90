//! The core's view of the log: the term of every index (kept compactly as
//! runs of equal terms), a bounded in-memory cache of recent entries, and
//! the cursors that say how far the log is durable, committed and handed to
//! the apply task.
//!
//! The core never reads storage itself: when it needs entries that are not
//! cached it asks the driver to load them ([`Missing`]) and the driver puts
//! them back with [`RaftLog::insert_loaded`].

use std::collections::VecDeque;
use std::ops::Range;

use crate::types::{Entry, EntryPayload, LogId, Membership};

/// `entries` reserves room for at most this many entries up front (the
/// byte budget usually stops it well before the end of the cache).
const ENTRIES_PREALLOCATE_MAX: usize = 4096;

/// Records `entry` (the next entry of a log) in `runs`, the `(first index,
/// term)` of each run of equal terms.
pub(crate) fn extend_term_runs(runs: &mut Vec<(u64, u64)>, entry: LogId) {
    if runs.last().is_none_or(|&(_, term)| term != entry.term) {
        runs.push((entry.index, entry.term));
    }
}

/// Entries the log does not hold in memory; the driver must load this range
/// from storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Missing(pub(crate) Range<u64>);

/// Invariant: `purged.index <= applied_handed <= committed`;
/// `persisted <= handed <= last.index`; committed and applied_handed never
/// decrease; the cache is contiguous, ends at `last.index` and holds every
/// entry above `handed` (eviction also keeps those above `applied_handed`).
#[derive(Debug, Clone)]
pub(crate) struct RaftLog {
    /// The last entry removed from the log (covered by a snapshot); the log
    /// holds `purged.index + 1 ..= last.index`.
    purged: LogId,
    /// `(first index, term)` of each run of equal terms in
    /// `purged.index + 1 ..= last.index`, in increasing order of both.
    term_runs: Vec<(u64, u64)>,
    last: LogId,
    cache: VecDeque<Entry>,
    cache_bytes: u64,
    /// The last chunk loaded from storage that did not join the cache:
    /// bounded by one load's byte budget, replaced by the next load.
    loaded: VecDeque<Entry>,
    cache_bytes_max: u64,
    committed: u64,
    /// Entries up to here are durable and equal to ours.
    persisted: u64,
    /// Entries up to here were given to storage in an issued write.
    handed: u64,
    /// Storage holds (or will hold) entries from this index that our log no
    /// longer has; the next write must remove them first.
    truncate_pending: Option<u64>,
    /// Entries up to here were handed to the apply task.
    applied_handed: u64,
}

impl RaftLog {
    /// A log restored from storage: everything in it is durable.
    pub(crate) fn new(
        purged: LogId,
        last: LogId,
        term_runs: Vec<(u64, u64)>,
        committed: u64,
        applied: u64,
        cache_bytes_max: u64,
    ) -> Self {
        assert!(
            purged.index <= last.index,
            "purge point {purged:?} after last {last:?}"
        );
        let committed = committed.clamp(purged.index, last.index);
        let applied = applied.max(purged.index);
        assert!(
            applied <= committed,
            "applied {applied} beyond commit {committed}"
        );
        let log = Self {
            purged,
            term_runs,
            last,
            cache: VecDeque::new(),
            cache_bytes: 0,
            loaded: VecDeque::new(),
            cache_bytes_max,
            committed,
            persisted: last.index,
            handed: last.index,
            truncate_pending: None,
            applied_handed: applied,
        };
        log.check_invariants();
        log
    }

    pub(crate) fn last_log_id(&self) -> LogId {
        self.last
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.last.index
    }

    pub(crate) fn purged(&self) -> LogId {
        self.purged
    }

    pub(crate) fn committed(&self) -> u64 {
        self.committed
    }

    /// Whether entries stored after the last index must still be removed by
    /// the next write.
    pub(crate) fn truncation_pending(&self) -> bool {
        self.truncate_pending.is_some()
    }

    pub(crate) fn persisted(&self) -> u64 {
        self.persisted
    }

    pub(crate) fn applied_handed(&self) -> u64 {
        self.applied_handed
    }

    fn cache_first(&self) -> u64 {
        self.last.index + 1 - self.cache.len() as u64
    }

    /// The term of the entry at `index`, if the log covers it (the purge
    /// last entry included).
    pub(crate) fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.purged.index {
            return Some(self.purged.term);
        }
        if index < self.purged.index || index > self.last.index {
            return None;
        }
        let run = self.term_runs.partition_point(|&(start, _)| start <= index);
        debug_assert!(run > 0, "index {index} inside the log has a term run");
        Some(self.term_runs[run - 1].1)
    }

    /// Whether the log holds `log_id`.
    pub(crate) fn matches(&self, log_id: LogId) -> bool {
        self.term_at(log_id.index) == Some(log_id.term)
    }

    /// The largest index at or below `index` whose term is at most `term`
    /// (or the purge point): the last entry that can match a log whose
    /// entry at `index` has `term`.
    pub(crate) fn last_index_with_term_at_most(&self, index: u64, term: u64) -> u64 {
        let mut index = index.min(self.last.index);
        // Walk runs backwards: O(runs), and runs are few.
        for &(start, run_term) in self.term_runs.iter().rev() {
            if start > index {
                continue;
            }
            if run_term <= term {
                return index;
            }
            index = start - 1;
        }
        index.min(self.purged.index)
    }

    /// Appends entries right after the last one (the leader's path).
    pub(crate) fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.last.index + 1,
                "append must be consecutive"
            );
            assert!(
                entry.term >= self.last.term,
                "append term {} < last {:?}",
                entry.term,
                self.last
            );
            extend_term_runs(&mut self.term_runs, entry.log_id());
            self.last = entry.log_id();
            self.cache_bytes += entry.size_bytes();
            self.cache.push_back(entry);
        }
    }

    /// Removes every entry from `from` on (a conflicting suffix, §5.3).
    pub(crate) fn truncate(&mut self, from: u64) {
        assert!(
            from > self.committed,
            "truncating at {from} would drop committed {}",
            self.committed
        );
        assert!(
            from <= self.last.index,
            "truncating at {from} beyond last {:?}",
            self.last
        );
        let cache_first = self.cache_first();
        if from >= cache_first {
            for entry in self.cache.drain((from - cache_first) as usize..) {
                self.cache_bytes -= entry.size_bytes();
            }
        } else {
            self.cache.clear();
            self.cache_bytes = 0;
        }
        self.loaded.retain(|e| e.index < from);
        self.term_runs.retain(|&(start, _)| start < from);
        let term = self
            .term_at(from - 1)
            .expect("the entry before a truncation is in the log");
        self.last = LogId::new(term, from - 1);
        if self.handed >= from {
            self.truncate_pending = Some(self.truncate_pending.map_or(from, |t| t.min(from)));
        }
        self.handed = self.handed.min(from - 1);
        self.persisted = self.persisted.min(from - 1);
        self.check_invariants_cheap();
    }

    /// Raises the commit index (never lowers it).
    pub(crate) fn commit_to(&mut self, index: u64) -> bool {
        assert!(
            index <= self.last.index,
            "commit {index} beyond last {:?}",
            self.last
        );
        if index <= self.committed {
            return false;
        }
        self.committed = index;
        true
    }

    /// Entries from `from`, up to `bytes_max` (at least one), from the cache
    /// or the last loaded chunk.
    pub(crate) fn entries(&self, from: u64, bytes_max: u64) -> Result<Vec<Entry>, Missing> {
        self.entries_through(from, self.last.index, bytes_max)
    }

    /// Like `entries`, but none past `last`.
    pub(crate) fn entries_through(
        &self,
        from: u64,
        last: u64,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, Missing> {
        assert!(from > self.purged.index, "entry {from} is purged");
        let last = last.min(self.last.index);
        if from > last {
            return Ok(Vec::new());
        }
        let cache_first = self.cache_first();
        let source = if from >= cache_first {
            self.cache.range((from - cache_first) as usize..)
        } else {
            match self.loaded.front() {
                Some(first)
                    if first.index <= from && from < first.index + self.loaded.len() as u64 =>
                {
                    self.loaded.range((from - first.index) as usize..)
                }
                _ => return Err(Missing(from..cache_first)),
            }
        };
        let count = (last - from + 1) as usize;
        let mut out = Vec::with_capacity(count.min(ENTRIES_PREALLOCATE_MAX));
        let mut bytes = 0;
        for entry in source.take(count) {
            let size = entry.size_bytes();
            if !out.is_empty() && bytes + size > bytes_max {
                break;
            }
            bytes += size;
            out.push(entry.clone());
        }
        Ok(out)
    }

    /// The membership entries from `from` on, which must be cached (entries
    /// just appended always are), scanned in place: no entry is cloned.
    pub(crate) fn memberships_from(&self, from: u64) -> Vec<(u64, Membership)> {
        let cache_first = self.cache_first();
        debug_assert!(from >= cache_first, "entries from {from} are not cached");
        let skip = from.saturating_sub(cache_first) as usize;
        self.cache
            .iter()
            .skip(skip)
            .filter_map(|entry| match &entry.payload {
                EntryPayload::Membership(m) => Some((entry.index, Membership::clone(m))),
                _ => None,
            })
            .collect()
    }

    /// Takes entries loaded from storage. A chunk that ends right before the
    /// cache joins it; any other becomes the `loaded` chunk (replacing the
    /// previous one), so a load always serves the request that asked for it.
    /// A chunk that no longer matches the log (truncated and rewritten since
    /// the load was asked for) is dropped.
    pub(crate) fn insert_loaded(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last() else { return };
        let contiguous = entries.windows(2).all(|w| w[1].index == w[0].index + 1);
        if !contiguous || !entries.iter().all(|e| self.matches(e.log_id())) {
            return;
        }
        if last.index + 1 == self.cache_first() {
            for entry in entries.into_iter().rev() {
                self.cache_bytes += entry.size_bytes();
                self.cache.push_front(entry);
            }
        } else if last.index < self.cache_first() {
            self.loaded = entries.into();
        }
    }

    /// Forgets entries up to `up_to`: storage is purging them, a snapshot
    /// covers them. Only durable, applied entries are purged.
    pub(crate) fn purge_to(&mut self, up_to: LogId) {
        assert!(
            up_to.index <= self.persisted,
            "purge {up_to:?} beyond durable {}",
            self.persisted
        );
        assert!(
            up_to.index <= self.applied_handed,
            "purge {up_to:?} beyond applied {}",
            self.applied_handed
        );
        assert!(
            self.matches(up_to),
            "purge point {up_to:?} is not in the log"
        );
        self.drop_prefix(up_to);
        self.check_invariants_cheap();
    }

    /// A follower installed a snapshot ending at `snapshot`. If the log
    /// holds that entry, the suffix after it stays (Raft §7: "retain log
    /// entries following it"); otherwise the whole log is replaced.
    pub(crate) fn install_snapshot(&mut self, snapshot: LogId) {
        if snapshot.index <= self.purged.index {
            return;
        }
        if self.matches(snapshot) {
            self.committed = self.committed.max(snapshot.index);
            self.handed = self.handed.max(snapshot.index);
            self.persisted = self.persisted.max(snapshot.index);
            self.applied_handed = self.applied_handed.max(snapshot.index);
            // A truncation not yet written would land inside the purged
            // prefix: move it after the snapshot.
            if let Some(from) = self.truncate_pending {
                self.truncate_pending = Some(from.max(snapshot.index + 1));
            }
            self.drop_prefix(snapshot);
        } else {
            assert!(
                self.committed <= snapshot.index,
                "snapshot {snapshot:?} conflicts with commit {}",
                self.committed
            );
            // Storage may still hold entries after the snapshot that the
            // snapshot's history replaced: the next write removes them.
            // (Truncating past the end is harmless.)
            self.truncate_pending = Some(snapshot.index + 1);
            self.term_runs.clear();
            self.cache.clear();
            self.cache_bytes = 0;
            self.loaded.clear();
            self.purged = snapshot;
            self.last = snapshot;
            self.committed = snapshot.index;
            self.persisted = snapshot.index;
            self.handed = snapshot.index;
            self.applied_handed = snapshot.index;
        }
        self.check_invariants_cheap();
    }

    fn drop_prefix(&mut self, up_to: LogId) {
        if up_to.index <= self.purged.index {
            return;
        }
        let next_term = self.term_at(up_to.index + 1);
        self.term_runs.retain(|&(start, _)| start > up_to.index + 1);
        if let Some(term) = next_term {
            self.term_runs.insert(0, (up_to.index + 1, term));
        }
        while self.cache.front().is_some_and(|e| e.index <= up_to.index) {
            let entry = self.cache.pop_front().expect("front exists");
            self.cache_bytes -= entry.size_bytes();
        }
        self.loaded.retain(|e| e.index > up_to.index);
        self.purged = up_to;
    }

    /// What the next storage write must do: the pending truncation and the
    /// entries not yet handed to storage. Marks them handed.
    pub(crate) fn take_unhanded(&mut self) -> (Option<u64>, Vec<Entry>) {
        let truncate = self.truncate_pending.take();
        let entries = if self.handed < self.last.index {
            let first = self.cache_first();
            assert!(
                first <= self.handed + 1,
                "unhanded entries are always cached"
            );
            self.cache
                .range((self.handed + 1 - first) as usize..)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        self.handed = self.last.index;
        (truncate, entries)
    }

    /// The pending truncation alone, for a write that must not carry
    /// entries yet (they follow the purge of an installed snapshot, so that
    /// storage sees them after the purge point).
    pub(crate) fn take_truncation(&mut self) -> Option<u64> {
        self.truncate_pending.take()
    }

    pub(crate) fn has_unhanded(&self) -> bool {
        self.truncate_pending.is_some() || self.handed < self.last.index
    }

    /// A write that ended with `last` became durable. Returns whether
    /// `persisted` moved.
    pub(crate) fn on_persisted(&mut self, last: LogId) -> bool {
        // By Log Matching, if we still hold `last` then everything the write
        // carried is still our log; if not, a truncation replaced it and the
        // next write will say so.
        if last.index <= self.persisted || last.index > self.handed || !self.matches(last) {
            return false;
        }
        self.persisted = last.index;
        true
    }

    /// Committed, durable entries not yet handed to the apply task, up to
    /// `bytes_max` (at least one). Marks them handed.
    pub(crate) fn take_committed(&mut self, bytes_max: u64) -> Result<Vec<Entry>, Missing> {
        let end = self.committed.min(self.persisted);
        if self.applied_handed >= end {
            return Ok(Vec::new());
        }
        let entries = self.entries_through(self.applied_handed + 1, end, bytes_max)?;
        if let Some(last) = entries.last() {
            self.applied_handed = last.index;
        }
        Ok(entries)
    }

    /// Drops cached entries from the front while over budget, keeping every
    /// entry not yet durable or not yet handed to the apply task.
    pub(crate) fn evict(&mut self) {
        let keep_above = self.persisted.min(self.applied_handed);
        while self.cache_bytes > self.cache_bytes_max {
            match self.cache.front() {
                Some(front) if front.index <= keep_above => {
                    self.cache_bytes -= front.size_bytes();
                    self.cache.pop_front();
                }
                _ => break,
            }
        }
    }

    fn check_invariants_cheap(&self) {
        assert!(self.purged.index <= self.applied_handed, "{self:?}");
        assert!(self.applied_handed <= self.committed, "{self:?}");
        assert!(self.committed <= self.last.index, "{self:?}");
        assert!(self.persisted <= self.handed, "{self:?}");
        assert!(self.handed <= self.last.index, "{self:?}");
    }

    /// The O(n) walk: cache contiguity, sizes and terms against the runs.
    pub(crate) fn check_invariants(&self) {
        self.check_invariants_cheap();
        let first = self.cache_first();
        assert!(
            first <= self.handed + 1,
            "cache must hold every entry not yet handed to storage"
        );
        let mut bytes = 0;
        for (i, entry) in self.cache.iter().enumerate() {
            assert_eq!(entry.index, first + i as u64, "cache not contiguous");
            assert_eq!(
                self.term_at(entry.index),
                Some(entry.term),
                "cache term differs from runs"
            );
            bytes += entry.size_bytes();
        }
        assert_eq!(bytes, self.cache_bytes);
        for (i, entry) in self.loaded.iter().enumerate() {
            assert_eq!(
                entry.index,
                self.loaded[0].index + i as u64,
                "loaded chunk not contiguous"
            );
            assert_eq!(
                self.term_at(entry.index),
                Some(entry.term),
                "loaded term differs from runs"
            );
        }
        for pair in self.term_runs.windows(2) {
            assert!(
                pair[0].0 < pair[1].0 && pair[0].1 < pair[1].1,
                "term runs not increasing"
            );
        }
        if let Some(&(start, term)) = self.term_runs.first() {
            assert!(start > self.purged.index && term >= self.purged.term);
        }
        assert_eq!(self.term_at(self.last.index), Some(self.last.term));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryPayload;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            term,
            index,
            payload: EntryPayload::Blank,
        }
    }

    fn log_with_terms(terms: &[u64]) -> RaftLog {
        let mut log = RaftLog::new(LogId::default(), LogId::default(), vec![], 0, 0, 1 << 20);
        log.append(
            terms
                .iter()
                .enumerate()
                .map(|(i, &t)| entry(t, i as u64 + 1)),
        );
        log
    }

    #[test]
    fn terms_are_answered_from_runs() {
        let log = log_with_terms(&[1, 1, 2, 2, 2, 5]);
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(2), Some(1));
        assert_eq!(log.term_at(3), Some(2));
        assert_eq!(log.term_at(6), Some(5));
        assert_eq!(log.term_at(7), None);
        assert_eq!(log.last_index_with_term_at_most(6, 4), 5);
        assert_eq!(log.last_index_with_term_at_most(6, 1), 2);
        assert_eq!(log.last_index_with_term_at_most(4, 9), 4);
        assert_eq!(log.last_index_with_term_at_most(6, 0), 0);
        log.check_invariants();
    }

    #[test]
    fn truncation_is_recorded_for_the_next_write_and_pulls_back_durability() {
        let mut log = log_with_terms(&[1, 1, 1]);
        let (truncate, entries) = log.take_unhanded();
        assert_eq!((truncate, entries.len()), (None, 3));
        assert!(log.on_persisted(LogId::new(1, 3)));
        log.truncate(2);
        assert_eq!(log.persisted(), 1);
        log.append([entry(2, 2)]);
        let (truncate, entries) = log.take_unhanded();
        assert_eq!(truncate, Some(2));
        assert_eq!(entries, vec![entry(2, 2)]);
        assert!(
            !log.on_persisted(LogId::new(1, 3)),
            "a write of replaced entries proves nothing"
        );
        assert!(log.on_persisted(LogId::new(2, 2)));
        log.check_invariants();
    }

    #[test]
    #[should_panic(expected = "would drop committed")]
    fn truncating_committed_entries_is_a_bug() {
        let mut log = log_with_terms(&[1, 1, 1]);
        log.take_unhanded();
        log.on_persisted(LogId::new(1, 3));
        log.commit_to(2);
        log.truncate(2);
    }

    #[test]
    fn apply_gets_only_committed_durable_entries_and_eviction_keeps_them() {
        let mut log = log_with_terms(&[1, 1, 1, 1]);
        log.cache_bytes_max = 0;
        log.commit_to(3);
        assert_eq!(
            log.take_committed(1 << 20),
            Ok(vec![]),
            "nothing durable yet"
        );
        log.take_unhanded();
        log.on_persisted(LogId::new(1, 4));
        log.evict();
        assert_eq!(log.take_committed(1 << 20).unwrap().len(), 3);
        log.evict();
        assert_eq!(log.entries(1, 100), Err(Missing(1..4)));
        log.insert_loaded(vec![entry(1, 1), entry(1, 2)]);
        assert_eq!(
            log.entries(1, 1 << 20).unwrap().len(),
            2,
            "a chunk apart from the cache serves"
        );
        assert_eq!(log.entries(3, 100), Err(Missing(3..4)));
        log.insert_loaded(vec![entry(1, 2), entry(1, 3)]);
        assert_eq!(log.entries(2, 1 << 20).unwrap().len(), 3);
        log.insert_loaded(vec![entry(7, 1)]);
        assert_eq!(
            log.entries(1, 1),
            Ok(vec![entry(1, 1)]),
            "a stale chunk is ignored"
        );
        log.check_invariants();
    }
}
