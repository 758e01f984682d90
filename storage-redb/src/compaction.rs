//! When to give the space of purged entries back to the filesystem.
//!
//! redb reuses freed pages for later writes on its own. A Raft log purged
//! behind each snapshot frees about what the next snapshot interval
//! appends, so in a steady state the file stays at its peak size and the
//! space a purge frees is written again before the next purge: compacting
//! after each purge (`redb::Database::compact`, which rewrites the live
//! pages and blocks the store meanwhile) would buy nothing and stall the
//! writes every time. Compaction matters after a spike: a log that grew
//! long (snapshots held back, a follower far behind), then purged, leaves
//! far more free space than the appends will take back.
//!
//! The two look alike right after a purge, so the rule looks right before
//! the next one, when the appends of a whole interval have had their
//! chance to reuse the space: compact when the file holds at least
//! `compaction_purged_bytes_min` bytes beyond what the live log needs, and
//! at least twice the live log's bytes. A steady state has filled the
//! space back by then and never compacts; after a spike, the purge that
//! follows it compacts.
//!
//! What the live log needs is estimated: its entries times the average
//! stored size of the records purges removed (before the first purge, of
//! the entries in memory). redb keeps records in pages, with an overhead
//! that depends on the record's size (a 2 KiB record fills a 4 KiB page
//! alone), which the estimate does not see: the factor two keeps such a
//! log, which fills about twice its record bytes, from looking unused.

/// The stored size of the log records seen purged since the store opened.
#[derive(Debug, Default)]
pub(crate) struct RecordSizes {
    entries: u64,
    bytes: u64,
}

impl RecordSizes {
    /// Counts a purge that removed `entries` records of `bytes` in all.
    pub(crate) fn add(&mut self, entries: u64, bytes: u64) {
        self.entries = self.entries.saturating_add(entries);
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// The average record's bytes, or `hint` before any purge.
    pub(crate) fn average(&self, hint: Option<u64>) -> Option<u64> {
        if self.entries == 0 {
            return hint;
        }
        Some(self.bytes / self.entries)
    }
}

/// Whether a file of `file_bytes` whose live log needs about `live_bytes`
/// should be compacted (see the module doc).
pub(crate) fn compaction_due(file_bytes: u64, live_bytes: u64, unused_bytes_min: u64) -> bool {
    let unused = file_bytes.saturating_sub(live_bytes);
    unused >= unused_bytes_min && unused >= live_bytes.saturating_mul(2)
}

#[cfg(test)]
mod tests {
    use super::{compaction_due, RecordSizes};

    const MIB: u64 = 1 << 20;

    #[test]
    fn compacts_only_when_the_unused_space_passes_the_minimum_and_twice_the_live_log() {
        assert!(
            !compaction_due(70 * MIB, 10 * MIB, 64 * MIB),
            "60 MiB unused, under the minimum"
        );
        assert!(compaction_due(100 * MIB, 10 * MIB, 64 * MIB));
        assert!(
            !compaction_due(200 * MIB, 70 * MIB, 64 * MIB),
            "130 MiB unused, under twice the live 70"
        );
        assert!(compaction_due(210 * MIB, 70 * MIB, 64 * MIB));
        assert!(
            !compaction_due(10 * MIB, 20 * MIB, 0),
            "a live estimate above the file"
        );
        assert!(compaction_due(u64::MAX, u64::MAX / 4, 0), "no overflow");
    }

    #[test]
    fn the_average_comes_from_the_purges_and_before_them_from_the_hint() {
        let mut sizes = RecordSizes::default();
        assert_eq!(sizes.average(None), None);
        assert_eq!(sizes.average(Some(300)), Some(300));
        sizes.add(100, 100 * 1024);
        sizes.add(100, 100 * 2048);
        assert_eq!(sizes.average(Some(300)), Some(1536));
        sizes.add(u64::MAX, u64::MAX);
        assert!(sizes.average(None).is_some(), "no overflow");
    }
}
