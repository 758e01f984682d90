//! `LogStore`: the blocking implementation behind `RedbStorage`. Every
//! method here runs on a blocking thread; `storage.rs` is the async shell.
//!
//! Validate at the gateway, trust inside: `open` checks what is on disk
//! (format version, meta records, continuity of the log keys, the checksum
//! and decoding of the first and last entries) before anything else runs,
//! and every read checks each record again, so bad bytes become
//! `StorageError::Corrupt` and are never served. A format from a later
//! build is `StorageError::UnsupportedFormat`; a batch that breaks the
//! write contract is `StorageError::InvalidBatch` (nothing on disk is
//! wrong, so neither is `Corrupt`).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rafter::codec;
use rafter::{
    Entry, EntryPayload, HardState, InitialState, LogId, SnapshotMeta, StorageError, WriteBatch,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::compaction::PurgedSinceCompaction;
use crate::create::open_or_create;
use crate::error::{corrupt, from_redb, io};
use crate::format::{
    DATABASE_FILE, ENTRY_RECORD_BYTES_MAX, JOURNAL_FILE, LOG_TABLE, META_FORMAT_VERSION,
    META_HARD_STATE, META_INSTALLING_SNAPSHOT, META_JOURNAL_SEQ, META_PURGED,
    META_RECORD_BYTES_MAX, META_SNAPSHOT, META_TABLE, STORE_FORMAT_VERSION,
    STORE_FORMAT_VERSION_BEFORE_JOURNAL,
};
use crate::journal::{Journal, JournalBatch};
use crate::lock::DirectoryLock;
use crate::options::RedbOptions;
use crate::record::{self, log_key};

/// The log and hard state of one node in one redb file.
///
/// Invariant: `purged.index <= last_log_id.index`; the log table's keys are
/// exactly `purged.index + 1 ..= last_log_id.index` (none when equal), and
/// the cached `hard_state`, `purged`, `last_log_id` and `snapshot` equal
/// what the last committed transaction left on disk.
#[derive(Debug)]
pub(crate) struct LogStore {
    /// Declared before `_lock` so the database closes before the lock goes.
    db: Database,
    path: PathBuf,
    options: RedbOptions,
    hard_state: HardState,
    purged: LogId,
    last_log_id: LogId,
    snapshot: Option<SnapshotMeta>,
    installing_snapshot: Option<SnapshotMeta>,
    /// The log records purged since the last compaction (see
    /// `compaction.rs`).
    purged_since_compaction: PurgedSinceCompaction,
    /// The first IO or corruption error; every later call returns it
    /// (fail-stop: after a failed commit the file's contents are unknown).
    failed: Option<StorageError>,
    /// Where each record of a write is sealed; reused so that appends do not
    /// allocate a record per entry. Holds no meaning between calls.
    record_buffer: Vec<u8>,
    /// The file a synced write is made durable in, in front of redb (see
    /// `journal.rs`); `None` when `RedbOptions::journal_bytes` is 0.
    journal: Option<Journal>,
    /// The number of the last write, stored with it in redb
    /// (`journal_seq`).
    ///
    /// Invariant: every write after redb's last durable commit is in the
    /// journal, in order, up to this number (synced up to the last synced
    /// write).
    journal_seq: u64,
    /// When redb was last made durable (a checkpoint).
    durable_at: Instant,
    _lock: DirectoryLock,
}

impl LogStore {
    /// Opens (creating if needed) the store in directory `dir`.
    pub(crate) fn open(dir: &Path, options: RedbOptions) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| io("create data directory", e))?;
        let lock = DirectoryLock::acquire(dir)?;
        let path = dir.join(DATABASE_FILE);
        let mut builder = Database::builder();
        builder.set_cache_size(options.cache_bytes);
        builder.set_check_integrity_on_open(options.open_check_file);
        let db = open_or_create(dir, DATABASE_FILE, &builder, init_format)?;
        init_format(&db)?;
        let mut store = Self {
            db,
            path,
            options,
            hard_state: HardState::default(),
            purged: LogId::default(),
            last_log_id: LogId::default(),
            snapshot: None,
            installing_snapshot: None,
            purged_since_compaction: PurgedSinceCompaction::default(),
            failed: None,
            record_buffer: Vec::new(),
            journal: None,
            journal_seq: 0,
            durable_at: Instant::now(),
            _lock: lock,
        };
        store.load()?;
        store.check_invariants();
        store.recover_journal(dir)?;
        store.check_invariants();
        Ok(store)
    }

    /// Applies the journal's writes that redb lacks (a crash lost redb's
    /// commits since its last durable one), makes redb durable, and starts
    /// the journal again at offset 0. The file is read even when the
    /// journal is off, if it exists: an earlier run may have left writes
    /// in it.
    fn recover_journal(&mut self, dir: &Path) -> Result<(), StorageError> {
        let capacity = self.options.journal_bytes;
        // Created by the first write (`ensure_journal`), so that a store
        // only opened and read (a tool, a test) costs no journal file.
        if !dir.join(JOURNAL_FILE).exists() {
            return Ok(());
        }
        let mut journal = Journal::open(dir, capacity)?;
        let durable_seq = self.journal_seq;
        let last = journal.replay(durable_seq, |batch| self.replay_write(batch))?;
        assert_eq!(last, self.journal_seq, "replay applies each write it reads");
        // Even with nothing replayed: what redb holds now must be durable
        // before the journal's frames are written over.
        self.checkpoint()?;
        journal.restart();
        self.journal = (capacity > 0).then_some(journal);
        Ok(())
    }

    /// Creates the journal file if the journal is on and this store has
    /// none yet: a new store, or one whose journal was off or that was
    /// only ever opened. Nothing needs replaying in a new file; its first
    /// frame is the next write's number.
    fn ensure_journal(&mut self) -> Result<(), StorageError> {
        if self.journal.is_some() || self.options.journal_bytes == 0 {
            return Ok(());
        }
        // `path` is `dir.join(DATABASE_FILE)` (`open`), so it has a parent.
        let dir = self
            .path
            .parent()
            .expect("the database file is inside its data directory");
        let created = Journal::open(dir, self.options.journal_bytes);
        self.journal = Some(created.map_err(|e| self.fail(e))?);
        Ok(())
    }

    /// One write read back from the journal: checked and committed as
    /// `write` does, without a journal frame or an fsync (the checkpoint
    /// after the replay makes them durable).
    fn replay_write(&mut self, batch: JournalBatch) -> Result<(), StorageError> {
        let (truncate_from, entries, hard_state) = batch;
        let batch = WriteBatch {
            truncate_from,
            entries,
            hard_state,
            must_sync: false,
        };
        // A write that was refused never reached the journal (the redb
        // transaction runs first), so a refusal now is damage.
        let seq = self.journal_seq + 1;
        self.commit_batch(&batch, Durability::None)
            .map_err(|e| match e {
                StorageError::InvalidBatch(message) | StorageError::Corrupt { message, .. } => {
                    corrupt(
                        format!("journal write {seq}"),
                        format!("refused on replay: {message}"),
                    )
                }
                other => other,
            })
    }

    /// Makes every commit so far durable with one durable commit of the
    /// journal number; the journal (if open) then starts again.
    fn checkpoint(&mut self) -> Result<(), StorageError> {
        let seq_record = record::seal(META_JOURNAL_SEQ.as_bytes(), &self.journal_seq.to_le_bytes());
        self.commit_meta(|meta| {
            meta.insert(META_JOURNAL_SEQ, seq_record.as_slice())
                .map(drop)
                .map_err(|e| from_redb("save journal seq", e))
        })
    }

    /// The path of the database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// What a starting node needs, from the cache (equal to the disk).
    pub(crate) fn initial_state(&self) -> Result<InitialState, StorageError> {
        self.usable()?;
        Ok(InitialState {
            hard_state: self.hard_state,
            purged: self.purged,
            last_log_id: self.last_log_id,
            snapshot: self.snapshot.clone(),
            installing_snapshot: self.installing_snapshot.clone(),
        })
    }

    /// Applies `batch` in one redb write transaction: truncate, append, hard
    /// state. Durable on return when `batch.must_sync`.
    ///
    /// A batch that breaks the trait's contract (a gap, a term going back,
    /// an invalid membership, a record over the limit) is refused: nothing
    /// is written and the store stays usable.
    pub(crate) fn write(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        self.usable()?;
        if batch.is_empty() {
            return Ok(());
        }
        // A synced write goes to the journal unless a checkpoint is due
        // (then redb commits it durably itself, and the journal starts
        // again); an unsynced one goes to the journal unsynced, so that
        // the journal has no gap in its numbers.
        self.ensure_journal()?;
        let journaled = match &self.journal {
            Some(journal) => {
                !batch.must_sync
                    || (self.durable_at.elapsed() < self.options.journal_checkpoint_interval
                        && journal.used_bytes() < journal.capacity() / 2)
            }
            None => false,
        };
        let durability = if batch.must_sync && !journaled {
            Durability::Immediate
        } else {
            Durability::None
        };
        // redb first: a batch it refuses must not reach the journal, where
        // a replay would meet it again.
        self.commit_batch(&batch, durability)?;
        if matches!(durability, Durability::Immediate) {
            self.made_durable();
            return Ok(());
        }
        let seq = self.journal_seq;
        let Some(journal) = &mut self.journal else {
            return Ok(());
        };
        match journal.append(seq, &batch, batch.must_sync) {
            Ok(true) => Ok(()),
            // No room: make redb durable instead, and start over.
            Ok(false) => self.checkpoint(),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Checks `batch` and commits it to redb with `durability`, as write
    /// number `journal_seq + 1`, then updates the cache. What can be
    /// checked is checked before the database is touched; what needs the
    /// transaction (the term before a truncation point, the size of each
    /// record) is checked inside it, and a refusal drops the transaction,
    /// which rolls it back.
    fn commit_batch(
        &mut self,
        batch: &WriteBatch,
        durability: Durability,
    ) -> Result<(), StorageError> {
        if let Some(from) = batch.truncate_from {
            if from <= self.purged.index {
                return Err(StorageError::Unavailable { index: from });
            }
        }
        let truncates = batch
            .truncate_from
            .is_some_and(|from| from <= self.last_log_id.index);
        let next_index = match batch.truncate_from {
            Some(from) if truncates => from,
            _ => self.last_log_id.index + 1,
        };
        check_entries(&batch.entries, next_index)?;
        let seq = self.journal_seq + 1;
        let written = write_transaction(
            &self.db,
            &mut self.record_buffer,
            batch,
            WriteBounds {
                truncates,
                next_index,
                purged: self.purged,
                last: self.last_log_id,
            },
            durability,
            seq,
        );
        // One huge entry must not pin its record's memory for the life of
        // the store.
        if self.record_buffer.capacity() > RECORD_BUFFER_BYTES_KEPT_MAX {
            self.record_buffer = Vec::new();
        }
        match written {
            Ok(new_last) => {
                self.last_log_id = new_last;
                if let Some(hard_state) = batch.hard_state {
                    self.hard_state = hard_state;
                }
                self.journal_seq = seq;
                self.check_invariants();
                Ok(())
            }
            // Dropping the uncommitted transaction rolled it back: the store
            // is unchanged.
            Err(WriteError::Refused(e)) => Err(e),
            Err(WriteError::Failed(e)) => Err(self.fail(e)),
        }
    }

    /// Reads consecutive entries of `range`, checking every record, until
    /// their `size_bytes` would go over `bytes_max` (at least one entry).
    pub(crate) fn entries(
        &mut self,
        range: Range<u64>,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.usable()?;
        if range.is_empty() {
            return Ok(Vec::new());
        }
        if range.start <= self.purged.index {
            return Err(StorageError::Unavailable { index: range.start });
        }
        if range.end > self.last_log_id.index + 1 {
            return Err(StorageError::Unavailable {
                index: self.last_log_id.index + 1,
            });
        }
        let result = self.read_range(range.clone(), bytes_max);
        let entries = result.map_err(|e| self.fail(e))?;
        assert!(!entries.is_empty(), "read of {range:?} returned nothing");
        assert!(entries.len() as u64 <= range.end - range.start);
        Ok(entries)
    }

    fn read_range(&self, range: Range<u64>, bytes_max: u64) -> Result<Vec<Entry>, StorageError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| from_redb("begin read", e))?;
        let log = txn
            .open_table(LOG_TABLE)
            .map_err(|e| from_redb("open log", e))?;
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let mut expected = range.start;
        let mut budget_reached = false;
        for item in log
            .range(range.clone())
            .map_err(|e| from_redb("read log", e))?
        {
            let (key, value) = item.map_err(|e| from_redb("read log", e))?;
            let index = key.value();
            if index != expected {
                return Err(corrupt(
                    format!("log entry {expected}"),
                    format!("missing: the next stored index is {index}"),
                ));
            }
            let entry = decode_entry(index, value.value())?;
            let size = entry.size_bytes();
            if !out.is_empty() && bytes.saturating_add(size) > bytes_max {
                budget_reached = true;
                break;
            }
            bytes = bytes.saturating_add(size);
            out.push(entry);
            expected += 1;
        }
        // The bounds were checked against the cache, so a read that ends
        // early without reaching its budget found a hole.
        if !budget_reached && expected < range.end {
            return Err(corrupt(
                format!("log entry {expected}"),
                "missing although inside the log's bounds",
            ));
        }
        Ok(out)
    }

    /// Removes entries up to `up_to.index` and records the purge point, then
    /// compacts the file if the rule in `compaction.rs` says so.
    pub(crate) fn purge(&mut self, up_to: LogId) -> Result<(), StorageError> {
        self.usable()?;
        if up_to.index <= self.purged.index {
            return Ok(());
        }
        let purged_record = record::seal(META_PURGED.as_bytes(), &codec::encode(&up_to));
        let result = (|| {
            let mut txn = self
                .db
                .begin_write()
                .map_err(|e| from_redb("begin write", e))?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| from_redb("set durability", e))?;
            // (entries, bytes) removed.
            let mut removed = (0u64, 0u64);
            {
                let mut log = txn
                    .open_table(LOG_TABLE)
                    .map_err(|e| from_redb("open log", e))?;
                log.retain_in(..=up_to.index, |_, value| {
                    removed.0 += 1;
                    removed.1 += value.len() as u64;
                    false
                })
                .map_err(|e| from_redb("purge log", e))?;
                let mut meta = txn
                    .open_table(META_TABLE)
                    .map_err(|e| from_redb("open meta", e))?;
                meta.insert(META_PURGED, purged_record.as_slice())
                    .map_err(|e| from_redb("save purge point", e))?;
            }
            txn.commit().map_err(|e| from_redb("commit", e))?;
            Ok(removed)
        })();
        let (removed_entries, removed_bytes) = result.map_err(|e| self.fail(e))?;
        self.made_durable();
        self.purged = up_to;
        if up_to.index >= self.last_log_id.index {
            self.last_log_id = up_to;
        }
        self.check_invariants();
        self.purged_since_compaction
            .add(removed_entries, removed_bytes);
        let live_entries = self.last_log_id.index - self.purged.index;
        if self
            .purged_since_compaction
            .should_compact(live_entries, self.options.compaction_purged_bytes_min)
        {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file so that the space of purged entries goes back to
    /// the filesystem. Blocks the store for about the time it takes to write
    /// the live data once.
    pub(crate) fn compact(&mut self) -> Result<(), StorageError> {
        self.usable()?;
        let result = self.db.compact().map_err(|e| from_redb("compact", e));
        result.map_err(|e| self.fail(e))?;
        self.purged_since_compaction.reset();
        Ok(())
    }

    /// Saves the metadata of the latest snapshot, and forgets the
    /// installing snapshot's if it is at or below it, in one transaction.
    pub(crate) fn save_snapshot_meta(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        self.usable()?;
        let record = snapshot_meta_record(META_SNAPSHOT, &meta)?;
        let ends_install = self
            .installing_snapshot
            .as_ref()
            .is_some_and(|installing| installing.last_log_id.index <= meta.last_log_id.index);
        self.commit_meta(|table| {
            table
                .insert(META_SNAPSHOT, record.as_slice())
                .map_err(|e| from_redb("save snapshot meta", e))?;
            if ends_install {
                table
                    .remove(META_INSTALLING_SNAPSHOT)
                    .map_err(|e| from_redb("forget installing snapshot meta", e))?;
            }
            Ok(())
        })?;
        self.snapshot = Some(meta);
        if ends_install {
            self.installing_snapshot = None;
        }
        Ok(())
    }

    /// Saves (or with `None` forgets) the metadata of a snapshot whose
    /// install has begun.
    pub(crate) fn save_installing_snapshot_meta(
        &mut self,
        meta: Option<SnapshotMeta>,
    ) -> Result<(), StorageError> {
        self.usable()?;
        let record = meta
            .as_ref()
            .map(|meta| snapshot_meta_record(META_INSTALLING_SNAPSHOT, meta))
            .transpose()?;
        self.commit_meta(|table| {
            match &record {
                Some(record) => table
                    .insert(META_INSTALLING_SNAPSHOT, record.as_slice())
                    .map(drop)
                    .map_err(|e| from_redb("save installing snapshot meta", e))?,
                None => table
                    .remove(META_INSTALLING_SNAPSHOT)
                    .map(drop)
                    .map_err(|e| from_redb("forget installing snapshot meta", e))?,
            }
            Ok(())
        })?;
        self.installing_snapshot = meta;
        Ok(())
    }

    /// Runs `change` on the meta table in one durable transaction; a
    /// failure is kept (fail-stop).
    fn commit_meta(
        &mut self,
        change: impl FnOnce(
            &mut redb::Table<'_, &'static str, &'static [u8]>,
        ) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let result = (|| {
            let mut txn = self
                .db
                .begin_write()
                .map_err(|e| from_redb("begin write", e))?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| from_redb("set durability", e))?;
            {
                let mut table = txn
                    .open_table(META_TABLE)
                    .map_err(|e| from_redb("open meta", e))?;
                change(&mut table)?;
            }
            txn.commit().map_err(|e| from_redb("commit", e))
        })();
        result.map_err(|e| self.fail(e))?;
        self.made_durable();
        Ok(())
    }

    /// Reads and checks what is on disk into the cache (the open gateway).
    fn load(&mut self) -> Result<(), StorageError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| from_redb("begin read", e))?;
        let meta = txn
            .open_table(META_TABLE)
            .map_err(|e| from_redb("open meta", e))?;
        if let Some(hs) = read_meta(&meta, META_HARD_STATE, |b| {
            codec::decode_hard_state(b, META_RECORD_BYTES_MAX)
        })? {
            self.hard_state = hs;
        }
        if let Some(purged) = read_meta(&meta, META_PURGED, |b| {
            codec::decode::<LogId>(b, META_RECORD_BYTES_MAX)
        })? {
            self.purged = purged;
        }
        self.snapshot = read_meta(&meta, META_SNAPSHOT, |b| {
            codec::decode_snapshot_meta(b, META_RECORD_BYTES_MAX)
        })?;
        self.journal_seq = read_meta(&meta, META_JOURNAL_SEQ, |b| {
            <[u8; 8]>::try_from(b)
                .map(u64::from_le_bytes)
                .map_err(|_| format!("{} bytes, not 8", b.len()))
        })?
        .unwrap_or(0);
        self.installing_snapshot = read_meta(&meta, META_INSTALLING_SNAPSHOT, |b| {
            codec::decode_snapshot_meta(b, META_RECORD_BYTES_MAX)
        })?;

        let log = txn
            .open_table(LOG_TABLE)
            .map_err(|e| from_redb("open log", e))?;
        let first = log.first().map_err(|e| from_redb("read log", e))?;
        let last = log.last().map_err(|e| from_redb("read log", e))?;
        let (first, last) = match (first, last) {
            (None, None) => {
                self.last_log_id = self.purged;
                return Ok(());
            }
            (Some((first, _)), Some((last, _))) => (first.value(), last.value()),
            _ => return Err(corrupt("log table", "first and last disagree on emptiness")),
        };
        let count = log.len().map_err(|e| from_redb("read log", e))?;
        // Continuity: distinct sorted keys in first..=last, as many as the
        // range is long, are exactly the range (no hole anywhere).
        if first != self.purged.index + 1 {
            return Err(corrupt(
                "log table",
                format!(
                    "the log starts at {first} but the purge point is {}",
                    self.purged.index
                ),
            ));
        }
        if count != last - first + 1 {
            return Err(corrupt(
                "log table",
                format!("{count} entries between {first} and {last}: the log has holes"),
            ));
        }
        let first_entry = read_entry(&log, first)?;
        let tail_start = last
            .saturating_sub(self.options.open_check_entries_max.saturating_sub(1))
            .max(first);
        let mut previous = first_entry.log_id();
        let mut expected = tail_start;
        for item in log
            .range(tail_start..=last)
            .map_err(|e| from_redb("read log", e))?
        {
            let (key, value) = item.map_err(|e| from_redb("read log", e))?;
            // The key count said there is no hole; a damaged tree that
            // disagrees with its own count is corrupt, not a panic.
            if key.value() != expected {
                return Err(corrupt(
                    format!("log entry {expected}"),
                    format!("missing: the next stored index is {}", key.value()),
                ));
            }
            expected += 1;
            let entry = decode_entry(key.value(), value.value())?;
            if entry.term < previous.term {
                return Err(corrupt(
                    format!("log entry {}", entry.index),
                    format!(
                        "term {} is below the term {} of entry {}",
                        entry.term, previous.term, previous.index
                    ),
                ));
            }
            previous = entry.log_id();
        }
        if expected != last + 1 {
            return Err(corrupt(
                format!("log entry {expected}"),
                format!("missing, although the log table claims to end at {last}"),
            ));
        }
        self.last_log_id = previous;
        Ok(())
    }

    /// After a durable commit: redb holds every write, so the journal can
    /// start again.
    fn made_durable(&mut self) {
        self.durable_at = Instant::now();
        if let Some(journal) = &mut self.journal {
            journal.restart();
        }
    }

    /// O(1) checks of the cached bounds; the O(n) walk is `load`.
    fn check_invariants(&self) {
        assert!(
            self.purged.index <= self.last_log_id.index,
            "purged {:?} is past the last log id {:?}",
            self.purged,
            self.last_log_id
        );
        if self.purged.index == self.last_log_id.index {
            assert_eq!(
                self.purged, self.last_log_id,
                "an empty log ends at its purge point"
            );
        }
    }

    fn usable(&self) -> Result<(), StorageError> {
        match &self.failed {
            None => Ok(()),
            Some(e) => Err(e.clone()),
        }
    }

    /// Records `e` as the error that stopped the store and returns it.
    fn fail(&mut self, e: StorageError) -> StorageError {
        self.failed.get_or_insert_with(|| e.clone());
        e
    }
}

/// Creates the tables and stores the format version of a new store, or
/// checks the version of an existing one.
///
/// The version is read before any other table is opened: a later format may
/// change every table but `meta` and its `format_version` byte (FORMAT.md),
/// so a store of a later format is `UnsupportedFormat`, never `Corrupt`
/// because its log table has another type. Nothing is written unless the
/// version is known or the store is new.
fn init_format(db: &Database) -> Result<(), StorageError> {
    let txn = db.begin_write().map_err(|e| from_redb("begin write", e))?;
    {
        let mut meta = txn
            .open_table(META_TABLE)
            .map_err(|e| from_redb("open meta", e))?;
        let version = meta
            .get(META_FORMAT_VERSION)
            .map_err(|e| from_redb("read format version", e))?
            .map(|v| v.value().to_vec());
        match version.as_deref() {
            Some([STORE_FORMAT_VERSION]) => {}
            // Written before the journal: the same tables, no journal to
            // replay. Marked with this version, so that a build from
            // before the journal, which would not replay it, refuses it.
            Some([STORE_FORMAT_VERSION_BEFORE_JOURNAL]) => {
                meta.insert(META_FORMAT_VERSION, [STORE_FORMAT_VERSION].as_slice())
                    .map_err(|e| from_redb("save format version", e))?;
            }
            // Written by a later build: not damage, a format this one does
            // not know. Refused rather than guessed at; the transaction is
            // dropped unwritten.
            Some(&[later]) if later > STORE_FORMAT_VERSION => {
                return Err(StorageError::UnsupportedFormat {
                    found: u64::from(later),
                })
            }
            // No build writes anything else (version 0, or not one byte).
            Some(other) => {
                return Err(corrupt(
                    format!("meta/{META_FORMAT_VERSION}"),
                    format!(
                        "invalid store format {other:?}; versions are one byte from 1, \
                         this build reads [{STORE_FORMAT_VERSION}]"
                    ),
                ))
            }
            None => {
                let log = txn
                    .open_table(LOG_TABLE)
                    .map_err(|e| from_redb("open log", e))?;
                let meta_len = meta.len().map_err(|e| from_redb("read meta", e))?;
                let log_len = log.len().map_err(|e| from_redb("read log", e))?;
                if meta_len != 0 || log_len != 0 {
                    return Err(corrupt(
                        format!("meta/{META_FORMAT_VERSION}"),
                        "missing, but the store holds data",
                    ));
                }
                meta.insert(META_FORMAT_VERSION, [STORE_FORMAT_VERSION].as_slice())
                    .map_err(|e| from_redb("save format version", e))?;
            }
        }
        // Created here for a new store; for an existing one, its type is
        // checked (a mismatch is `Corrupt`).
        txn.open_table(LOG_TABLE)
            .map_err(|e| from_redb("open log", e))?;
    }
    txn.commit().map_err(|e| from_redb("commit", e))
}

/// Checks the batch's entries: consecutive from `next_index`, terms not
/// decreasing, memberships valid. The size of each record is checked as it
/// is sealed, in `write_transaction`.
fn check_entries(entries: &[Entry], next_index: u64) -> Result<(), StorageError> {
    let mut term_previous = 0;
    for (i, entry) in entries.iter().enumerate() {
        let expected = next_index + i as u64;
        if entry.index != expected {
            return Err(invalid_batch(format!(
                "entries must be consecutive: expected index {expected}, found {}",
                entry.index
            )));
        }
        if entry.term < term_previous {
            return Err(invalid_batch(format!(
                "entry {} has term {}, below the term {term_previous} before it",
                entry.index, entry.term
            )));
        }
        term_previous = entry.term;
        // Pair of the check in `codec::decode_entry`: never write what the
        // next read would refuse.
        if let EntryPayload::Membership(m) = &entry.payload {
            m.validate().map_err(|message| {
                invalid_batch(format!(
                    "entry {}: invalid membership: {message}",
                    entry.index
                ))
            })?;
        }
    }
    Ok(())
}

/// The largest record buffer kept between writes. Larger buffers (for an
/// entry over 1 MiB) are freed after the write, which then costs one
/// allocation per write of such entries, small next to copying them.
const RECORD_BUFFER_BYTES_KEPT_MAX: usize = 1 << 20;

/// The cached bounds a write starts from.
struct WriteBounds {
    /// Whether the batch removes a suffix first (`truncate_from` inside the
    /// log).
    truncates: bool,
    /// The index of the batch's first entry: `truncate_from` if it
    /// truncates, else one past the last entry.
    next_index: u64,
    purged: LogId,
    last: LogId,
}

/// Why a write transaction did not commit.
enum WriteError {
    /// The batch breaks the trait's contract; the transaction was rolled
    /// back and the store is still usable.
    Refused(StorageError),
    /// The database failed; the store must stop (fail-stop).
    Failed(StorageError),
}

/// Maps a redb error met while doing `operation` inside a write.
fn failed<E: Into<redb::Error>>(operation: &'static str) -> impl FnOnce(E) -> WriteError {
    move |e| WriteError::Failed(from_redb(operation, e))
}

/// Runs one write transaction for `batch` (already through `check_entries`)
/// and returns the new last log id. Each entry is encoded and sealed into
/// `record_buffer`, reused for every record (redb copies the value into its
/// page), so a record costs no allocation of its own.
fn write_transaction(
    db: &Database,
    record_buffer: &mut Vec<u8>,
    batch: &WriteBatch,
    bounds: WriteBounds,
    durability: Durability,
    journal_seq: u64,
) -> Result<LogId, WriteError> {
    let mut txn = db.begin_write().map_err(failed("begin write"))?;
    txn.set_durability(durability)
        .map_err(failed("set durability"))?;
    let mut new_last = bounds.last;
    {
        let mut log = txn.open_table(LOG_TABLE).map_err(failed("open log"))?;
        if bounds.truncates {
            // Checked by the caller: purged.index < from <= last.index.
            let from = bounds.next_index;
            log.retain_in(from.., |_, _| false)
                .map_err(failed("truncate log"))?;
            new_last = if from - 1 == bounds.purged.index {
                bounds.purged
            } else {
                read_entry(&log, from - 1)
                    .map_err(WriteError::Failed)?
                    .log_id()
            };
        }
        if let Some(first) = batch.entries.first() {
            if first.term < new_last.term {
                return Err(WriteError::Refused(invalid_batch(format!(
                    "entry {} has term {}, below the term {} of the entry before it",
                    first.index, first.term, new_last.term
                ))));
            }
        }
        for entry in &batch.entries {
            let record = record::seal_into(&log_key(entry.index), record_buffer, |out| {
                codec::encode_entry_into(entry, out);
            });
            if record.len() > ENTRY_RECORD_BYTES_MAX {
                return Err(WriteError::Refused(invalid_batch(format!(
                    "entry {}: record of {} bytes is over the limit of {ENTRY_RECORD_BYTES_MAX}",
                    entry.index,
                    record.len()
                ))));
            }
            log.insert(entry.index, record).map_err(failed("append"))?;
            new_last = entry.log_id();
        }
    }
    {
        let mut meta = txn.open_table(META_TABLE).map_err(failed("open meta"))?;
        if let Some(hard_state) = &batch.hard_state {
            let record = record::seal_into(META_HARD_STATE.as_bytes(), record_buffer, |out| {
                out.extend_from_slice(&codec::encode_hard_state(hard_state));
            });
            meta.insert(META_HARD_STATE, record)
                .map_err(failed("save hard state"))?;
        }
        let record = record::seal_into(META_JOURNAL_SEQ.as_bytes(), record_buffer, |out| {
            out.extend_from_slice(&journal_seq.to_le_bytes());
        });
        meta.insert(META_JOURNAL_SEQ, record)
            .map_err(failed("save journal seq"))?;
    }
    txn.commit().map_err(failed("commit"))?;
    Ok(new_last)
}

/// Reads and checks one entry that must exist.
fn read_entry(
    log: &impl ReadableTable<u64, &'static [u8]>,
    index: u64,
) -> Result<Entry, StorageError> {
    let value = log
        .get(index)
        .map_err(|e| from_redb("read log", e))?
        .ok_or_else(|| {
            corrupt(
                format!("log entry {index}"),
                "missing inside the log's bounds",
            )
        })?;
    decode_entry(index, value.value())
}

/// The read gateway of a log record: checksum, decode, validate, and check
/// that it holds the entry of its key.
fn decode_entry(index: u64, value: &[u8]) -> Result<Entry, StorageError> {
    let location = || format!("log entry {index}");
    let body = record::open(&log_key(index), value, ENTRY_RECORD_BYTES_MAX)
        .map_err(|e| corrupt(location(), e))?;
    let entry =
        codec::decode_entry(body, ENTRY_RECORD_BYTES_MAX).map_err(|e| corrupt(location(), e))?;
    if entry.index != index {
        return Err(corrupt(location(), format!("holds entry {}", entry.index)));
    }
    Ok(entry)
}

/// Reads, checks and decodes one meta record, if present.
fn read_meta<T, E: std::fmt::Display>(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    decode: impl FnOnce(&[u8]) -> Result<T, E>,
) -> Result<Option<T>, StorageError> {
    let location = || format!("meta/{key}");
    let Some(value) = meta.get(key).map_err(|e| from_redb("read meta", e))? else {
        return Ok(None);
    };
    let body = record::open(key.as_bytes(), value.value(), META_RECORD_BYTES_MAX)
        .map_err(|e| corrupt(location(), e))?;
    decode(body).map(Some).map_err(|e| corrupt(location(), e))
}

/// The sealed record of snapshot metadata under `key`, checked as
/// `codec::decode_snapshot_meta` will check it on open: never write what the
/// next open would refuse. Refused (nothing written, the store stays usable)
/// when invalid or over the limit.
fn snapshot_meta_record(key: &str, meta: &SnapshotMeta) -> Result<Vec<u8>, StorageError> {
    if meta.last_log_id.index > 0 {
        meta.membership.validate().map_err(|message| {
            corrupt(
                "snapshot meta to save",
                format!("invalid membership: {message}"),
            )
        })?;
    }
    let record = record::seal(key.as_bytes(), &codec::encode_snapshot_meta(meta));
    if record.len() > META_RECORD_BYTES_MAX {
        return Err(too_large(
            "snapshot meta",
            record.len(),
            META_RECORD_BYTES_MAX,
        ));
    }
    Ok(record)
}

/// A batch the caller should never have sent (a gap, a term going back, an
/// invalid membership, an oversized entry): refused, nothing written, and
/// the store stays usable. Not `Corrupt`: nothing on disk is wrong.
fn invalid_batch(message: String) -> StorageError {
    StorageError::InvalidBatch(message)
}

/// A meta record the store refuses to write (nothing written; the store
/// stays usable).
fn too_large(what: &str, len: usize, limit: usize) -> StorageError {
    StorageError::Io {
        operation: "write",
        message: format!("{what} record of {len} bytes is over the limit of {limit}"),
    }
}
