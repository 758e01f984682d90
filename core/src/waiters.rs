//! Proposals waiting for their entries, and the rule that says what became
//! of each one.
//!
//! A waiter names the (index, term) its proposal was appended at. Three
//! things can end the wait, and each outcome is proved, not guessed:
//!
//! - The entry at that index is applied with the same term: by Log Matching
//!   (Raft §5.3: one entry per index and term) it is the proposal, and the
//!   caller gets its response.
//! - An entry of another term is applied at that index: the proposal is
//!   provably replaced and will never apply (`ProposeError::Overwritten`).
//! - A received snapshot ending at (`I`, `T`) is installed over the index:
//!   the log entries it covers are never seen, so no response exists. If
//!   the proposal's term is above `T`, the committed entry at its index has
//!   a term at most `T` (terms never decrease along a log), so it is not
//!   the proposal: `Overwritten`. Otherwise the snapshot may hold it:
//!   `ProposeError::Indeterminate`, and a retry may apply it twice.
//!
//! The apply task keeps one [`Waiters`] per node; the simulator uses the
//! same code through `testing::ProposalWaiters`, so it checks the shipped
//! rule rather than a copy of it.

use std::collections::VecDeque;

use crate::error::ProposeError;
use crate::types::LogId;

/// A proposer waiting for the consecutive entries `index..=last`, all of
/// term `term`.
///
/// Invariant: `index <= last`.
#[derive(Debug)]
pub(crate) struct Waiter<T> {
    /// The next of its entries to apply.
    pub(crate) index: u64,
    /// The last of its entries (`index` for one command).
    pub(crate) last: u64,
    /// The term its entries were appended in.
    pub(crate) term: u64,
    /// The caller's answer, and whatever else the owner keeps with it.
    pub(crate) token: T,
}

/// Waiters in order of the next index each waits for.
///
/// Invariant: `index` is non-decreasing front to back, and every waiter's
/// `index` is above the applied index (registered before its entry can
/// commit, removed once that index applies or a snapshot covers it).
/// Indexes are usually appended in increasing order; a node whose log was
/// truncated and which leads again later appends below an older waiter
/// (which a later leader may still commit), so `push` keeps the order.
#[derive(Debug)]
pub(crate) struct Waiters<T> {
    queue: VecDeque<Waiter<T>>,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
        }
    }
}

impl<T> Waiters<T> {
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Registers a waiter. O(1) unless its index is below the last one's.
    pub(crate) fn push(&mut self, waiter: Waiter<T>) {
        assert!(
            waiter.index <= waiter.last,
            "waiter for {}..={}",
            waiter.index,
            waiter.last
        );
        assert!(waiter.index > 0, "index 0 holds no entry");
        if self.queue.back().is_none_or(|w| w.index <= waiter.index) {
            self.queue.push_back(waiter);
        } else {
            let at = self.queue.partition_point(|w| w.index <= waiter.index);
            self.queue.insert(at, waiter);
        }
    }

    /// The entry `entry` was applied (a command, or not). Every waiter for
    /// its index of another term, or for a command where there is none, is
    /// removed and answered through `failed` with `Overwritten`; the waiter
    /// of the same term, if any, is removed and returned: the caller answers
    /// it, or, if it waits for more entries, advances it and gives it back
    /// with [`Waiters::put_back`].
    pub(crate) fn take_applied(
        &mut self,
        entry: LogId,
        is_command: bool,
        mut failed: impl FnMut(T, ProposeError),
    ) -> Option<Waiter<T>> {
        if let Some(front) = self.queue.front() {
            // Every waiter is above the applied index, and entries apply
            // one by one, so none can have been skipped.
            assert!(
                front.index >= entry.index,
                "waiter for {} left behind at {}",
                front.index,
                entry.index
            );
        }
        let mut found = None;
        while self.queue.front().is_some_and(|w| w.index == entry.index) {
            let waiter = self.queue.pop_front().expect("front exists");
            #[cfg(feature = "planted-bugs")]
            let overwritten_as_applied = crate::testing::node_bug_planted(
                crate::testing::NodeBug::AnswerOverwrittenAsApplied,
            ) && found.is_none();
            #[cfg(not(feature = "planted-bugs"))]
            let overwritten_as_applied = false;
            if (waiter.term == entry.term || overwritten_as_applied) && is_command {
                // Log Matching: one entry per (index, term).
                assert!(found.is_none(), "two waiters for {entry:?}");
                found = Some(waiter);
            } else {
                failed(
                    waiter.token,
                    ProposeError::Overwritten { index: entry.index },
                );
            }
        }
        found
    }

    /// Puts back a waiter taken by [`Waiters::take_applied`] whose `index`
    /// was advanced past the entry just applied.
    pub(crate) fn put_back(&mut self, waiter: Waiter<T>) {
        // Every other waiter is above the index just applied, so at or
        // after this one's new index: the front keeps the order.
        assert!(waiter.index <= waiter.last);
        assert!(self.queue.front().is_none_or(|w| w.index >= waiter.index));
        self.queue.push_front(waiter);
    }

    /// A received snapshot ending at `snapshot` was installed: every waiter
    /// it covers is removed and answered through `failed` (see the module
    /// docs for which answer).
    pub(crate) fn take_covered(
        &mut self,
        snapshot: LogId,
        mut failed: impl FnMut(T, ProposeError),
    ) {
        while self
            .queue
            .front()
            .is_some_and(|w| w.index <= snapshot.index)
        {
            let waiter = self.queue.pop_front().expect("front exists");
            let outcome = covered_outcome(&waiter, snapshot);
            failed(waiter.token, outcome);
        }
    }

    /// Removes the waiters `remove` picks, answering them through `removed`.
    pub(crate) fn remove_if(
        &mut self,
        mut remove: impl FnMut(&T) -> bool,
        mut removed: impl FnMut(T),
    ) {
        if !self.queue.iter().any(|w| remove(&w.token)) {
            return;
        }
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for waiter in self.queue.drain(..) {
            if remove(&waiter.token) {
                removed(waiter.token);
            } else {
                kept.push_back(waiter);
            }
        }
        self.queue = kept;
    }

    /// Removes every waiter.
    #[cfg(feature = "testing")]
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Waiter<T>> + '_ {
        self.queue.drain(..)
    }
}

/// What became of `waiter` when a snapshot ending at `snapshot`, which
/// covers its next index, was installed.
fn covered_outcome<T>(waiter: &Waiter<T>, snapshot: LogId) -> ProposeError {
    debug_assert!(waiter.index <= snapshot.index);
    if waiter.term > snapshot.term {
        // The entry at `waiter.index` in the snapshot's log has a term at
        // most `snapshot.term`: not the proposal's. Nor can any later entry
        // of the proposal apply: Log Matching would put the proposal's
        // entry at `waiter.index` too.
        ProposeError::Overwritten {
            index: waiter.index,
        }
    } else {
        ProposeError::Indeterminate {
            index: waiter.index,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(index: u64, term: u64, token: u32) -> Waiter<u32> {
        Waiter {
            index,
            last: index,
            term,
            token,
        }
    }

    #[test]
    fn a_snapshot_over_a_waiter_answers_indeterminate_unless_its_term_is_newer() {
        let mut waiters = Waiters::default();
        waiters.push(waiter(5, 2, 1));
        waiters.push(waiter(6, 3, 2));
        waiters.push(waiter(8, 2, 3));
        let mut failed = Vec::new();
        waiters.take_covered(LogId::new(2, 7), |t, e| failed.push((t, e)));
        assert_eq!(
            failed,
            vec![
                (1, ProposeError::Indeterminate { index: 5 }),
                (2, ProposeError::Overwritten { index: 6 }),
            ]
        );
        assert_eq!(waiters.len(), 1);
    }

    #[test]
    fn an_entry_of_another_term_overwrites_and_the_same_term_is_returned() {
        let mut waiters = Waiters::default();
        waiters.push(waiter(12, 2, 1));
        // The node's log was truncated and it leads again, lower down.
        waiters.push(waiter(10, 4, 2));
        waiters.push(waiter(12, 4, 3));
        let mut failed = Vec::new();
        let found = waiters.take_applied(LogId::new(4, 10), true, |t, e| failed.push((t, e)));
        assert_eq!(found.map(|w| w.token), Some(2));
        assert!(failed.is_empty());
        assert!(waiters
            .take_applied(LogId::new(4, 11), true, |_, _| panic!("none at 11"))
            .is_none());
        let found = waiters.take_applied(LogId::new(2, 12), true, |t, e| failed.push((t, e)));
        assert_eq!(found.map(|w| w.token), Some(1));
        assert_eq!(failed, vec![(3, ProposeError::Overwritten { index: 12 })]);
        assert_eq!(waiters.len(), 0);
    }

    #[test]
    fn a_blank_entry_of_the_same_term_is_not_the_command() {
        let mut waiters = Waiters::default();
        waiters.push(waiter(3, 2, 1));
        let mut failed = Vec::new();
        assert!(waiters
            .take_applied(LogId::new(2, 3), false, |t, e| failed.push((t, e)))
            .is_none());
        assert_eq!(failed, vec![(1, ProposeError::Overwritten { index: 3 })]);
    }
}
