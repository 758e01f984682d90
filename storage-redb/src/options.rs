//! How a store is opened and maintained.

/// Settings of a [`crate::RedbStorage`]. Build one with `Default` and change
/// the fields that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedbOptions {
    /// How many entries at the end of the log are read, checksummed and
    /// decoded when the store opens (the first entry is always checked too,
    /// and the key count proves the log has no holes). The tail is what a
    /// torn or interrupted write would damage and what the node reads first.
    /// Opening costs about 1 µs per entry checked; `u64::MAX` checks the
    /// whole log. Every entry is checked again whenever it is read, so a
    /// smaller value delays detection, it never lets bad data out.
    /// Default: 1024.
    pub open_check_entries_max: u64,
    /// Whether redb verifies the page checksums of the whole file when it
    /// opens (`redb::Builder::set_check_integrity_on_open`). This reads the
    /// whole file, about 1 s per GiB; without it, a file damaged outside of
    /// a crash may make redb panic or misread pages instead of reporting
    /// corruption. Keep it on unless opening time matters more. Default: on.
    pub open_check_file: bool,
    /// Space in the file beyond what the live log needs, in bytes, below
    /// which the file is never compacted (see the `compaction` rule: also
    /// at least twice the live log's bytes, measured before a purge, when
    /// the appends since the last one have reused what they will). Too
    /// large leaves up to this much unused space in the file. Default:
    /// 64 MiB.
    pub compaction_purged_bytes_min: u64,
    /// redb's page cache, in bytes. Reads of recent entries hit the core's
    /// own cache first, so the store needs little. Default: 64 MiB.
    pub cache_bytes: usize,
    /// Length of the journal file (`log.journal`), the write-ahead log in
    /// front of redb, allocated and written (zeros) by the store's first
    /// write: this much disk per store, and that first write waits for it.
    /// A synced write costs one append and one `fdatasync` of it, and no
    /// redb transaction; the writes are kept in memory (at most about this
    /// much) until a checkpoint writes them to redb in one durable commit,
    /// on a thread of its own, when a quarter of the journal (half of one
    /// of its two halves) is used since the last or
    /// `journal_checkpoint_interval` has passed. Larger: fewer checkpoints,
    /// more disk and memory, and a longer replay after a crash (the journal
    /// is read at about disk speed). A longer value grows an existing
    /// file at the next open; a shorter one leaves it as it is. A write
    /// that fills its half before the checkpoint in progress ends waits
    /// for it. 0: no journal, every write is a redb commit, durable when
    /// synced (the format before the journal). Default: 16 MiB: a
    /// checkpoint comes every second anyway, and 4 MiB (a quarter) is
    /// about twice what a node logged per second in the measured runs
    /// (4,855 puts/s of 256-byte values: under 2 MB of commands), with
    /// another 4 MiB of its half left while the checkpoint runs.
    pub journal_bytes: u64,
    /// The longest time between checkpoints while the journal is on and
    /// writes come (the first write after it begins one). It bounds how
    /// much a replay after a crash applies. A checkpoint runs on its own
    /// thread; a purge or a metadata save waits for the one in progress,
    /// and so does a write that fills its half of the journal before it
    /// ends. Default: 1 s.
    pub journal_checkpoint_interval: std::time::Duration,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            open_check_entries_max: 1024,
            open_check_file: true,
            compaction_purged_bytes_min: 64 << 20,
            cache_bytes: 64 << 20,
            journal_bytes: 16 << 20,
            journal_checkpoint_interval: std::time::Duration::from_secs(1),
        }
    }
}
