//! When to give the space of purged entries back to the filesystem.
//!
//! redb reuses freed pages for later writes on its own, so a store that
//! purges and appends at the same rate stays the same size without help.
//! Compaction (`redb::Database::compact`) matters only after a large purge,
//! typically right after a snapshot, when the file would otherwise keep its
//! peak size. It rewrites live pages and blocks the store while it runs
//! (about the time of writing the live data once), so it should be rare.
//!
//! The rule: compact when the log records purged since the last compaction
//! add up to at least `compaction_purged_bytes_min` bytes, and are at least
//! as many as the entries left in the log. The second half bounds the space
//! wasted by purged entries to about the space of the live ones (the file
//! stays under about twice what the live log needs); the minimum keeps a
//! small store from compacting after every purge.
//!
//! Why entries and not the size of the file: redb keeps records in pages,
//! with an overhead that depends on the record's size (a 2 KiB record fills
//! a 4 KiB page alone), so a file can be more than twice the record bytes it
//! holds. A rule comparing purged record bytes with the file's size then
//! never fires: it did not for a log of 2 KiB entries purged down to 5%
//! (`tests/compaction.rs`). Counting entries compares dead records with live
//! ones under the same overhead, exactly when their sizes are alike and
//! roughly otherwise.
//!
//! The counts restart at zero when the store is opened, so a store that is
//! restarted more often than it purges half its log may never compact; redb
//! still reuses the space.

/// The log records purged since the last compaction (or since the store
/// was opened), and all purged since it was opened.
#[derive(Debug, Default)]
pub(crate) struct PurgedSinceCompaction {
    /// Stored bytes of the purged records.
    bytes: u64,
    /// How many records were purged.
    entries: u64,
    /// Records purged since open, and their bytes: the average record
    /// size a purge not yet done is estimated with.
    seen_entries: u64,
    seen_bytes: u64,
}

impl PurgedSinceCompaction {
    /// Counts a purge that removed `entries` records of `bytes` in all.
    pub(crate) fn add(&mut self, entries: u64, bytes: u64) {
        self.entries = self.entries.saturating_add(entries);
        self.bytes = self.bytes.saturating_add(bytes);
        self.seen_entries = self.seen_entries.saturating_add(entries);
        self.seen_bytes = self.seen_bytes.saturating_add(bytes);
    }

    /// Whether purging `entries` more records, leaving `live_entries`,
    /// may make compaction due: their bytes estimated at the average size
    /// of the records purged since open, or before the first purge at
    /// `record_bytes_hint` (without one, any purge may).
    pub(crate) fn may_compact_after(
        &self,
        entries: u64,
        live_entries: u64,
        purged_bytes_min: u64,
        record_bytes_hint: Option<u64>,
    ) -> bool {
        if self.entries.saturating_add(entries) < live_entries {
            return false;
        }
        let average = if self.seen_entries > 0 {
            u128::from(self.seen_bytes) / u128::from(self.seen_entries)
        } else if let Some(hint) = record_bytes_hint {
            u128::from(hint)
        } else {
            return true;
        };
        let estimate = u128::from(entries) * average;
        let estimate = u64::try_from(estimate).unwrap_or(u64::MAX);
        self.bytes.saturating_add(estimate) >= purged_bytes_min
    }

    /// Whether to compact now that the log holds `live_entries` entries.
    pub(crate) fn should_compact(&self, live_entries: u64, purged_bytes_min: u64) -> bool {
        self.bytes >= purged_bytes_min && self.entries >= live_entries
    }

    /// After a compaction (the sizes seen stay).
    pub(crate) fn reset(&mut self) {
        self.entries = 0;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::PurgedSinceCompaction;

    const MIB: u64 = 1 << 20;

    fn purged(entries: u64, bytes: u64) -> PurgedSinceCompaction {
        let mut purged = PurgedSinceCompaction::default();
        purged.add(entries, bytes);
        purged
    }

    #[test]
    fn compacts_only_when_both_the_minimum_and_half_the_log_are_purged() {
        assert!(
            !purged(10_000, 10 * MIB).should_compact(100, 64 * MIB),
            "under the minimum"
        );
        assert!(
            !purged(1000, 64 * MIB).should_compact(1001, 64 * MIB),
            "under half the log"
        );
        assert!(purged(1000, 64 * MIB).should_compact(1000, 64 * MIB));
        assert!(
            purged(1, 64 * MIB).should_compact(0, 64 * MIB),
            "the whole log purged"
        );
    }

    #[test]
    fn a_purge_may_make_compaction_due_by_the_average_record_size_seen() {
        let counts = PurgedSinceCompaction::default();
        assert!(
            counts.may_compact_after(10, 10, 64 * MIB, None),
            "no size seen yet, no hint"
        );
        assert!(
            !counts.may_compact_after(10, 10, 64 * MIB, Some(1024)),
            "no size seen yet, 1 KiB records by the hint"
        );
        assert!(
            !counts.may_compact_after(10, 11, 64 * MIB, None),
            "under half the log, whatever the sizes"
        );
        // 1 KiB records: 32,768 more make 32 MiB, 65,536 make 64 MiB.
        let counts = purged(1024, MIB);
        assert!(!counts.may_compact_after(32_768, 100, 64 * MIB, Some(1 << 20)));
        assert!(counts.may_compact_after(64_512, 100, 64 * MIB, None));
        let mut after = counts;
        after.reset();
        assert!(
            after.may_compact_after(65_536, 100, 64 * MIB, None),
            "the size seen outlives a compaction"
        );
        assert!(!after.should_compact(0, 1));
    }

    #[test]
    fn counts_add_up_and_reset() {
        let mut counts = purged(300, 30 * MIB);
        counts.add(300, 40 * MIB);
        assert!(counts.should_compact(600, 64 * MIB));
        counts.add(u64::MAX, u64::MAX);
        assert!(counts.should_compact(u64::MAX, u64::MAX), "no overflow");
        counts.reset();
        assert!(!counts.should_compact(0, 1));
    }
}
