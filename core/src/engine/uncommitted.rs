//! The leader's bound on uncommitted log bytes (etcd-raft's
//! `uncommittedSize` and `MaxUncommittedEntriesSize`): a leader cut off
//! from its followers cannot grow its log without limit before it steps
//! down.

use std::collections::VecDeque;

/// The command bytes a leader appended in its term and has not seen
/// committed, by batch.
///
/// Invariant: `bytes` is the sum of the batches' bytes; batches' last
/// indexes increase front to back.
#[derive(Debug, Default)]
pub(crate) struct Uncommitted {
    /// (last index of the batch, its command bytes).
    batches: VecDeque<(u64, u64)>,
    bytes: u64,
}

impl Uncommitted {
    /// Whether a batch of `bytes` may be appended under `max`. An empty
    /// account takes any one batch, so that a command under the request
    /// limit is never refused for ever.
    pub(crate) fn admits(&self, bytes: u64, max: u64) -> bool {
        self.bytes == 0 || bytes == 0 || self.bytes.saturating_add(bytes) <= max
    }

    /// A batch ending at `last_index` with `bytes` of commands was appended.
    pub(crate) fn add(&mut self, last_index: u64, bytes: u64) {
        if bytes == 0 {
            return;
        }
        assert!(
            self.batches
                .back()
                .is_none_or(|&(last, _)| last < last_index),
            "batch ending at {last_index} after {:?}",
            self.batches.back()
        );
        self.batches.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// The log is committed up to `committed`: batches wholly within it
    /// leave the account (one straddling it stays until it is all in).
    pub(crate) fn committed(&mut self, committed: u64) {
        while let Some(&(last, bytes)) = self.batches.front() {
            if last > committed {
                break;
            }
            self.batches.pop_front();
            self.bytes -= bytes;
        }
        debug_assert_eq!(self.batches.is_empty(), self.bytes == 0);
    }

    /// Leadership ended: a new term starts a new account.
    pub(crate) fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }

    /// Bytes appended and not committed.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_leave_the_account_once_wholly_committed() {
        let mut account = Uncommitted::default();
        assert!(account.admits(1000, 100), "an empty account takes a batch");
        account.add(5, 1000);
        assert!(!account.admits(1, 100));
        assert!(account.admits(0, 100), "blank entries cost nothing");
        account.add(8, 50);
        account.committed(4);
        assert_eq!(account.bytes(), 1050);
        account.committed(6);
        assert_eq!(account.bytes(), 50);
        assert!(account.admits(50, 100));
        assert!(!account.admits(51, 100));
        account.committed(8);
        assert_eq!(account.bytes(), 0);
        account.add(9, 10);
        account.clear();
        assert_eq!(account.bytes(), 0);
    }
}
