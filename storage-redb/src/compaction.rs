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
//! add up to at least `compaction_purged_bytes_min` and to at least half the
//! file. The half bounds the space wasted by purged entries to about the size
//! of the live data (the file stays under ~2× what it holds); the minimum
//! keeps a small store from compacting after every purge. The count restarts
//! at zero when the store is opened, so a store that is restarted more often
//! than it purges half its file may never compact; redb still reuses the
//! space.

/// Whether a purge that brought the purged bytes since the last compaction
/// to `purged_bytes` should compact a file of `file_bytes`.
pub(crate) fn should_compact(purged_bytes: u64, file_bytes: u64, purged_bytes_min: u64) -> bool {
    purged_bytes >= purged_bytes_min && purged_bytes.saturating_mul(2) >= file_bytes
}

#[cfg(test)]
mod tests {
    use super::should_compact;

    const MIB: u64 = 1 << 20;

    #[test]
    fn compacts_only_when_both_the_minimum_and_half_the_file_are_purged() {
        assert!(
            !should_compact(10 * MIB, 15 * MIB, 64 * MIB),
            "under the minimum"
        );
        assert!(
            !should_compact(64 * MIB, 200 * MIB, 64 * MIB),
            "under half the file"
        );
        assert!(should_compact(100 * MIB, 200 * MIB, 64 * MIB));
        assert!(should_compact(u64::MAX, u64::MAX, 64 * MIB), "no overflow");
    }
}
