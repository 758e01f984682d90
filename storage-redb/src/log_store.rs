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
//! wrong, so neither is `Corrupt`), refused in full before anything is
//! written anywhere.
//!
//! With the journal on, the journal is the write-ahead log: a write is
//! checked, appended to it (synced when `must_sync`) and kept in memory
//! (`unflushed.rs`), which reads serve from; redb gets the writes in one
//! durable transaction at a checkpoint. A write that finds one due (a
//! second since the last, or half of the journal's active half used)
//! starts it on its own thread (`start_checkpoint`): the writes so far
//! become a layer that reads still find, and later writes go to a new
//! layer and the journal's other half. What waits for it: a purge, a
//! metadata save or a compaction (each commits on top of it, in the
//! calling thread), and a write that fills the active half before it
//! ends. At most two layers, each at most half the journal.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use rafter::codec;
use rafter::{
    Entry, EntryPayload, HardState, InitialState, LogId, SnapshotMeta, StorageError, WriteBatch,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::compaction::{compaction_due, RecordSizes};
use crate::create::open_or_create;
use crate::deferred::{Deferred, Removed};
use crate::error::{corrupt, from_redb, io};
use crate::format::{
    DATABASE_FILE, ENTRY_RECORD_BYTES_MAX, JOURNAL_FILE, LOG_TABLE, META_FORMAT_VERSION,
    META_HARD_STATE, META_INSTALLING_SNAPSHOT, META_JOURNAL_SEQ, META_PURGED,
    META_RECORD_BYTES_MAX, META_SNAPSHOT, META_TABLE, STORE_FORMAT_VERSION,
    STORE_FORMAT_VERSION_BEFORE_JOURNAL, STORE_FORMAT_VERSION_ONE_LAP_JOURNAL,
};
use crate::journal::{Journal, JournalBatch, Layout};
use crate::lock::DirectoryLock;
use crate::options::RedbOptions;
use crate::record::{self, log_key, CHECKSUM_BYTES};
use crate::unflushed::Unflushed;

/// The log and hard state of one node: redb's file, the journal, and the
/// journal's writes that redb does not hold yet.
///
/// Invariant: `stored_purged.index <= purged.index <= last_log_id.index`;
/// redb's log table's keys are exactly `stored_purged.index + 1 ..=
/// stored_last.index` (none when equal); the log is the entries after
/// `purged` of redb's below `unflushed.from()` (and the checkpoint's layer
/// in progress) followed by `unflushed.entries()`, so `purged.index <
/// unflushed.from() <= stored_last.index + 1` without a checkpoint in
/// progress, and `last_log_id.index == unflushed.from() - 1 +
/// unflushed.entries().len()`; the cached `hard_state`, `purged`,
/// `snapshot` and `installing_snapshot` are what a reopen finds once the
/// deferred changes are written (a crash before may leave the previous
/// purge point and snapshot records, `deferred.rs`).
#[derive(Debug)]
pub(crate) struct LogStore {
    /// Declared before `_lock` so the database closes before the lock goes.
    /// Shared with the thread of a checkpoint in progress, if any.
    db: Arc<Database>,
    path: PathBuf,
    options: RedbOptions,
    hard_state: HardState,
    purged: LogId,
    /// The log's last entry (or the purge point when it is empty),
    /// unflushed writes included.
    last_log_id: LogId,
    /// The last entry of redb's log table (or the purge point).
    stored_last: LogId,
    /// The writes since the last checkpoint began (empty with the journal
    /// off), on top of `flushing`'s if any.
    unflushed: Unflushed,
    /// The checkpoint in progress, if any: the writes before it began,
    /// being committed to redb by another thread.
    flushing: Option<Flushing>,
    snapshot: Option<SnapshotMeta>,
    installing_snapshot: Option<SnapshotMeta>,
    /// A purge and snapshot metadata the cache holds and no transaction
    /// has taken yet: the next checkpoint (or commit) writes them.
    deferred: Deferred,
    /// redb's purge point, with every transaction that carried a purge
    /// committed (`purged` may be ahead of it).
    stored_purged: LogId,
    /// The sizes of the log records purged since open, which the
    /// compaction rule estimates the live log with (`compaction.rs`).
    record_sizes: RecordSizes,
    /// The first IO or corruption error; every later call returns it
    /// (fail-stop: after a failed commit or append the files' contents
    /// are unknown).
    failed: Option<StorageError>,
    /// Where each record is sealed; reused so that a checkpoint does not
    /// allocate a record per entry. Holds no meaning between calls.
    record_buffer: Vec<u8>,
    /// The write-ahead log in front of redb (see `journal.rs`); `None`
    /// when `RedbOptions::journal_bytes` is 0 or before the first write.
    journal: Option<Journal>,
    /// The number of the last write. redb stores the number of the last
    /// write it holds (`journal_seq`) with every commit.
    ///
    /// Invariant: every write after redb's last commit is in the journal,
    /// in order, up to this number (synced up to the last synced write),
    /// and in `unflushed`. With the journal on every redb commit is
    /// durable.
    journal_seq: u64,
    /// When redb was last made durable (a checkpoint).
    durable_at: Instant,
    _lock: DirectoryLock,
}

/// A checkpoint in progress on its own thread.
#[derive(Debug)]
struct Flushing {
    /// What it writes; reads still find these entries here until it ends.
    layer: Arc<Unflushed>,
    /// The log's last entry when it began: redb's last entry when it ends.
    last: LogId,
    /// The purge point its transaction writes, if it carries a purge.
    purge: Option<LogId>,
    /// Its durable redb commit; what its purge removed.
    thread: JoinHandle<Result<Removed, StorageError>>,
}

/// A write that passed every check, ready to go to the journal and the
/// log.
struct CheckedWrite {
    /// The index of the batch's first entry: `truncate_from` if it cuts
    /// the log, else one past the last entry.
    next_index: u64,
    /// The entry before `next_index` (or the purge point).
    previous: LogId,
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
        let db = open_or_create(dir, DATABASE_FILE, &builder, |db| init_format(db).map(drop))?;
        let version = init_format(&db)?;
        let mut store = Self {
            db: Arc::new(db),
            path,
            options,
            hard_state: HardState::default(),
            purged: LogId::default(),
            last_log_id: LogId::default(),
            stored_last: LogId::default(),
            unflushed: Unflushed::new(1),
            flushing: None,
            snapshot: None,
            installing_snapshot: None,
            deferred: Deferred::default(),
            stored_purged: LogId::default(),
            record_sizes: RecordSizes::default(),
            failed: None,
            record_buffer: Vec::new(),
            journal: None,
            journal_seq: 0,
            durable_at: Instant::now(),
            _lock: lock,
        };
        store.load()?;
        store.stored_last = store.last_log_id;
        store.stored_purged = store.purged;
        store.unflushed = Unflushed::new(store.last_log_id.index + 1);
        store.check_invariants();
        let layout = if version == STORE_FORMAT_VERSION_ONE_LAP_JOURNAL {
            Layout::OneLap
        } else {
            Layout::Halves
        };
        store.recover_journal(dir, layout)?;
        if version != STORE_FORMAT_VERSION {
            // After the replay (which read the older layout) was made
            // durable: a crash before this opens as the older version.
            store.commit_meta(|meta| {
                meta.insert(META_FORMAT_VERSION, [STORE_FORMAT_VERSION].as_slice())
                    .map(drop)
                    .map_err(|e| from_redb("save format version", e))
            })?;
        }
        store.check_invariants();
        Ok(store)
    }

    /// Applies the journal's writes that redb lacks (a crash lost them, or
    /// the process stopped before a checkpoint), makes them durable in
    /// redb, and starts the journal again at offset 0. The file is read
    /// even when the journal is off, if it exists: an earlier run may have
    /// left writes in it.
    fn recover_journal(&mut self, dir: &Path, layout: Layout) -> Result<(), StorageError> {
        let capacity = self.options.journal_bytes;
        // Created by the first write (`ensure_journal`), so that a store
        // only opened and read (a tool, a test) costs no journal file.
        if !dir.join(JOURNAL_FILE).exists() {
            return Ok(());
        }
        let mut journal = Journal::open(dir, capacity)?;
        let durable_seq = self.journal_seq;
        let last = journal.replay(durable_seq, layout, |batch| self.replay_write(batch))?;
        assert_eq!(last, self.journal_seq, "replay applies each write it reads");
        // Even with nothing replayed: what redb holds now must be durable
        // before the journal's frames are written over.
        self.commit_durable(|_| Ok(()))?;
        journal.grow(dir, capacity).map_err(|e| self.fail(e))?;
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

    /// One write read back from the journal: checked as `write` checks it
    /// and applied to the unflushed log (the commit after the replay makes
    /// the lot durable in redb). At most a journal's worth is held.
    fn replay_write(&mut self, batch: JournalBatch) -> Result<(), StorageError> {
        let (truncate_from, entries, hard_state) = batch;
        let batch = WriteBatch {
            truncate_from,
            entries,
            hard_state,
            must_sync: false,
        };
        // A write that was refused never reached the journal (it is
        // checked in full first), so a refusal now is damage.
        let seq = self.journal_seq + 1;
        let checked = self.check_write(&batch).map_err(|e| match e {
            StorageError::InvalidBatch(message) | StorageError::Corrupt { message, .. } => corrupt(
                format!("journal write {seq}"),
                format!("refused on replay: {message}"),
            ),
            StorageError::Unavailable { index } => corrupt(
                format!("journal write {seq}"),
                format!("refused on replay: it cuts the log at {index}, inside the purged part"),
            ),
            other => other,
        })?;
        self.apply_write(batch, &checked);
        Ok(())
    }

    /// The path of the database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// What a starting node needs, from the cache (what a reopen finds).
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

    /// Applies `batch`: truncate, append, hard state, as one write, all or
    /// nothing. Durable on return when `batch.must_sync`.
    ///
    /// A batch that breaks the trait's contract (a gap, a term going back,
    /// an invalid membership, a record over the limit) is refused: nothing
    /// is written and the store stays usable.
    ///
    /// With the journal on, the write is one frame appended to the journal
    /// (with one `fdatasync` when `must_sync`) and no redb transaction,
    /// unless a checkpoint is due or the frame does not fit: then the
    /// write goes into that checkpoint's durable redb commit instead of the
    /// journal. With it off, the write is one redb transaction, durable
    /// when `must_sync`.
    pub(crate) fn write(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        self.usable()?;
        if batch.is_empty() {
            return Ok(());
        }
        self.finish_checkpoint(false)?;
        self.ensure_journal()?;
        let checked = self.check_write(&batch)?;
        if self.journal.is_none() {
            let durability = if batch.must_sync {
                Durability::Immediate
            } else {
                Durability::None
            };
            self.apply_write(batch, &checked);
            return self.commit(durability, |_| Ok(()));
        }
        if self.checkpoint_due() && self.flushing.is_none() {
            self.start_checkpoint()?;
        }
        let mut appended = self.append(&batch)?;
        if !appended {
            // The active half is full. The other half is free once the
            // checkpoint in progress (of the writes in it) has ended.
            self.finish_checkpoint(true)?;
            self.start_checkpoint()?;
            appended = self.append(&batch)?;
        }
        self.apply_write(batch, &checked);
        if appended {
            return Ok(());
        }
        // Larger than a half: into a durable commit of its own, with
        // everything before it; the journal then starts again.
        self.commit_durable(|_| Ok(()))
    }

    /// Appends `batch` to the journal as the next write, synced when it
    /// asks; `false` when it does not fit in the active half.
    fn append(&mut self, batch: &WriteBatch) -> Result<bool, StorageError> {
        let seq = self.journal_seq + 1;
        let Some(journal) = &mut self.journal else {
            return Ok(false);
        };
        let appended = journal.append(seq, batch, batch.must_sync);
        appended.map_err(|e| self.fail(e))
    }

    /// Whether a checkpoint should begin: `journal_checkpoint_interval`
    /// passed since the last one began, or half of the active half is
    /// used (so that the checkpoint can end before the half is full), or
    /// deferred changes wait for one.
    fn checkpoint_due(&self) -> bool {
        self.journal.as_ref().is_some_and(|journal| {
            self.durable_at.elapsed() >= self.options.journal_checkpoint_interval
                || journal.used_bytes() >= journal.half_bytes() / 2
                || !self.deferred.is_empty()
        })
    }

    /// Begins a checkpoint of every write so far on another thread: they
    /// stay readable from its layer, new writes go to a new layer and to
    /// the journal's other half. None may be in progress.
    fn start_checkpoint(&mut self) -> Result<(), StorageError> {
        assert!(self.flushing.is_none(), "one checkpoint at a time");
        let next = Unflushed::new(self.last_log_id.index + 1);
        let layer = Arc::new(std::mem::replace(&mut self.unflushed, next));
        let db = Arc::clone(&self.db);
        let written = Arc::clone(&layer);
        let flush = (self.stored_last, self.hard_state, self.journal_seq);
        let deferred = std::mem::take(&mut self.deferred);
        let purge = deferred.purge;
        let spawned = std::thread::Builder::new()
            .name("rafter-redb-checkpoint".into())
            .spawn(move || {
                let (stored_last, hard_state, journal_seq) = flush;
                commit_transaction(
                    &db,
                    &mut Vec::new(),
                    Flush {
                        unflushed: &written,
                        stored_last,
                        hard_state,
                        journal_seq,
                        deferred: &deferred,
                    },
                    Durability::Immediate,
                    |_| Ok(()),
                )
            });
        // The layer left `unflushed`: without its thread the store cannot
        // go on.
        let thread = spawned.map_err(|e| self.fail(io("start checkpoint thread", e)))?;
        if let Some(journal) = &mut self.journal {
            journal.switch();
        }
        self.flushing = Some(Flushing {
            layer,
            last: self.last_log_id,
            purge,
            thread,
        });
        self.durable_at = Instant::now();
        Ok(())
    }

    /// Ends the checkpoint in progress if it has finished, or waits for it
    /// when `wait`: redb then holds its writes durably.
    fn finish_checkpoint(&mut self, wait: bool) -> Result<(), StorageError> {
        let Some(flushing) = &self.flushing else {
            return Ok(());
        };
        if !wait && !flushing.thread.is_finished() {
            return Ok(());
        }
        let flushing = self.flushing.take().expect("checked above");
        let ended = flushing.thread.join().unwrap_or_else(|_| {
            Err(StorageError::Io {
                operation: "checkpoint",
                message: "the checkpoint thread panicked".into(),
            })
        });
        let removed = ended.map_err(|e| self.fail(e))?;
        self.stored_last = flushing.last;
        self.purge_written(flushing.purge, removed);
        self.check_invariants();
        Ok(())
    }

    /// Checks `batch` in full against the log: what redb's transaction
    /// would have refused is refused here, before the batch reaches the
    /// journal, where a replay would meet it again.
    fn check_write(&mut self, batch: &WriteBatch) -> Result<CheckedWrite, StorageError> {
        if let Some(from) = batch.truncate_from {
            if from <= self.purged.index {
                return Err(StorageError::Unavailable { index: from });
            }
        }
        let truncates = batch
            .truncate_from
            .is_some_and(|from| from <= self.last_log_id.index);
        let (next_index, previous) = match batch.truncate_from {
            Some(from) if truncates => {
                let previous = self.log_id_at(from - 1).map_err(|e| self.fail(e))?;
                (from, previous)
            }
            _ => (self.last_log_id.index + 1, self.last_log_id),
        };
        check_entries(&batch.entries, next_index)?;
        if let Some(first) = batch.entries.first() {
            if first.term < previous.term {
                return Err(invalid_batch(format!(
                    "entry {} has term {}, below the term {} of the entry before it",
                    first.index, first.term, previous.term
                )));
            }
        }
        for entry in &batch.entries {
            // `size_bytes` bounds the encoding from above, so only an entry
            // near the limit costs an encoding here.
            if entry.size_bytes() as usize + CHECKSUM_BYTES <= ENTRY_RECORD_BYTES_MAX {
                continue;
            }
            let record = record::seal_into(&log_key(entry.index), &mut self.record_buffer, |out| {
                codec::encode_entry_into(entry, out);
            });
            let length = record.len();
            self.trim_record_buffer();
            if length > ENTRY_RECORD_BYTES_MAX {
                return Err(invalid_batch(format!(
                    "entry {}: record of {length} bytes is over the limit of \
                     {ENTRY_RECORD_BYTES_MAX}",
                    entry.index
                )));
            }
        }
        Ok(CheckedWrite {
            next_index,
            previous,
        })
    }

    /// The id of entry `index` of the log (the purge point at
    /// `purged.index`), which must be inside it: from the unflushed
    /// entries, else read from redb.
    fn log_id_at(&self, index: u64) -> Result<LogId, StorageError> {
        if index == self.purged.index {
            return Ok(self.purged);
        }
        if let Some(term) = self.unflushed.term(index) {
            return Ok(LogId::new(term, index));
        }
        if let Some(flushing) = &self.flushing {
            if index < self.unflushed.from() {
                if let Some(term) = flushing.layer.term(index) {
                    return Ok(LogId::new(term, index));
                }
            }
        }
        let txn = self
            .db
            .begin_read()
            .map_err(|e| from_redb("begin read", e))?;
        let log = txn
            .open_table(LOG_TABLE)
            .map_err(|e| from_redb("open log", e))?;
        Ok(read_entry(&log, index)?.log_id())
    }

    /// Applies a checked write to the unflushed log and the cache, as
    /// write number `journal_seq + 1`.
    fn apply_write(&mut self, batch: WriteBatch, checked: &CheckedWrite) {
        self.last_log_id = batch.entries.last().map_or(checked.previous, Entry::log_id);
        self.unflushed.append(checked.next_index, batch.entries);
        if let Some(hard_state) = batch.hard_state {
            self.hard_state = hard_state;
            self.unflushed.hard_state_set();
        }
        self.journal_seq += 1;
        self.check_invariants();
    }

    /// Reads consecutive entries of `range`, checking every record read
    /// from redb, until their `size_bytes` would go over `bytes_max` (at
    /// least one entry).
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
        let mut out = Vec::new();
        let mut bytes = 0u64;
        // The log is redb's entries below the lowest layer, then the
        // checkpoint's layer below the active one, then the active one.
        let active_from = self.unflushed.from();
        let flushing_from = self
            .flushing
            .as_ref()
            .map_or(active_from, |f| f.layer.from().min(active_from));
        let stored = range.start..range.end.min(flushing_from);
        if !stored.is_empty() {
            let result = self.read_range(stored, bytes_max, &mut out, &mut bytes);
            let budget_reached = result.map_err(|e| self.fail(e))?;
            if budget_reached {
                return Ok(out);
            }
        }
        if let Some(flushing) = &self.flushing {
            let part = range.start.max(flushing_from)..range.end.min(active_from);
            if read_layer(&flushing.layer, part, bytes_max, &mut out, &mut bytes) {
                return Ok(out);
            }
        }
        let part = range.start.max(active_from)..range.end;
        read_layer(&self.unflushed, part, bytes_max, &mut out, &mut bytes);
        assert!(!out.is_empty(), "read of {range:?} returned nothing");
        assert!(out.len() as u64 <= range.end - range.start);
        Ok(out)
    }

    /// Reads `range` of redb's log into `out` (see `entries`); returns
    /// whether the byte budget stopped it.
    fn read_range(
        &self,
        range: Range<u64>,
        bytes_max: u64,
        out: &mut Vec<Entry>,
        bytes: &mut u64,
    ) -> Result<bool, StorageError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| from_redb("begin read", e))?;
        let log = txn
            .open_table(LOG_TABLE)
            .map_err(|e| from_redb("open log", e))?;
        let mut expected = range.start;
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
                return Ok(true);
            }
            *bytes = bytes.saturating_add(size);
            out.push(entry);
            expected += 1;
        }
        // The bounds were checked against the cache, so a read that ends
        // early without reaching its budget found a hole.
        if expected < range.end {
            return Err(corrupt(
                format!("log entry {expected}"),
                "missing although inside the log's bounds",
            ));
        }
        Ok(false)
    }

    /// Removes entries up to `up_to.index` and records the purge point.
    ///
    /// With the journal on, the cache takes the purge at once and redb gets
    /// it with the next checkpoint, on the checkpoint's thread (one starts
    /// now if none is in progress): see `deferred.rs` for why it need not
    /// be durable on return. On the calling thread instead, in one durable
    /// commit: a purge to the log's end or past it (a follower installing
    /// a snapshot), and one into the newest writes while a checkpoint runs.
    /// Before the purge, the file is compacted if the space the last purge
    /// freed stayed unused (`compaction.rs`).
    pub(crate) fn purge(&mut self, up_to: LogId) -> Result<(), StorageError> {
        self.usable()?;
        if up_to.index <= self.purged.index {
            return Ok(());
        }
        self.finish_checkpoint(false)?;
        // Judged before this purge, on the space the last one freed and the
        // appends since did not take back (`compaction.rs`).
        self.maybe_compact()?;
        let deferrable = self.journal.is_some()
            && up_to.index < self.last_log_id.index
            && (self.flushing.is_none() || up_to.index < self.unflushed.from());
        if deferrable {
            self.purged = up_to;
            self.deferred.purge = Some(up_to);
            // A checkpoint starting now takes the active layer with it:
            // entries it holds at or below the point are written and
            // removed in one transaction.
            self.checkpoint_soon()?;
            self.check_invariants();
            return Ok(());
        }
        // Before the layers change: the purge's commit follows it.
        self.finish_checkpoint(true)?;
        // Unflushed entries at or below the point are never written. If
        // the commit fails the store stops, so the cache may go first.
        self.unflushed.purge(up_to.index);
        self.purged = up_to;
        if up_to.index >= self.last_log_id.index {
            self.last_log_id = up_to;
        }
        self.deferred.purge = Some(up_to);
        self.commit_durable(|_| Ok(()))
    }

    /// After a committed transaction that carried `purge`, if any, and
    /// removed `removed` with it: redb's purge point moves there.
    fn purge_written(&mut self, purge: Option<LogId>, removed: Removed) {
        if let Some(purge) = purge {
            self.stored_purged = purge;
            self.record_sizes.add(removed.0, removed.1);
        }
    }

    /// Starts a checkpoint unless one is in progress (collecting a finished
    /// one): deferred changes wait for no more than one.
    fn checkpoint_soon(&mut self) -> Result<(), StorageError> {
        self.finish_checkpoint(false)?;
        if self.flushing.is_none() {
            self.start_checkpoint()?;
        }
        Ok(())
    }

    /// Waits for the checkpoint in progress, if any, and collects it.
    #[cfg(test)]
    pub(crate) fn wait_for_checkpoint(&mut self) -> Result<(), StorageError> {
        self.finish_checkpoint(true)
    }

    /// A checkpoint now, on this thread (after the one in progress).
    pub(crate) fn checkpoint(&mut self) -> Result<(), StorageError> {
        self.usable()?;
        self.commit_durable(|_| Ok(()))
    }

    /// The average size of the entries in memory, a record's size
    /// estimated (`Entry::size_bytes` does not undercount the encoding),
    /// if there are any.
    fn unflushed_record_bytes(&self) -> Option<u64> {
        let entries = self.unflushed.entries();
        let count = entries.len() as u64;
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        (count > 0).then(|| bytes / count + CHECKSUM_BYTES as u64)
    }

    /// Compacts if the rule of `compaction.rs` says so: the file against
    /// the log redb holds (a purge not yet written still takes its space).
    fn maybe_compact(&mut self) -> Result<(), StorageError> {
        let Some(average) = self.record_sizes.average(self.unflushed_record_bytes()) else {
            return Ok(());
        };
        // Unreadable metadata only skips the check: compaction is never
        // needed for correctness.
        let Ok(file_bytes) = std::fs::metadata(&self.path).map(|m| m.len()) else {
            return Ok(());
        };
        let live_bytes =
            (self.last_log_id.index - self.stored_purged.index).saturating_mul(average);
        if compaction_due(
            file_bytes,
            live_bytes,
            self.options.compaction_purged_bytes_min,
        ) {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file so that the space of purged entries goes back to
    /// the filesystem. Blocks the store for about the time it takes to write
    /// the live data once.
    pub(crate) fn compact(&mut self) -> Result<(), StorageError> {
        self.usable()?;
        // Its thread holds the database until it ends.
        self.finish_checkpoint(true)?;
        let result = match Arc::get_mut(&mut self.db) {
            Some(db) => db.compact().map_err(|e| from_redb("compact", e)),
            None => Err(StorageError::Io {
                operation: "compact",
                message: "the database is still shared with a checkpoint".into(),
            }),
        };
        result.map(drop).map_err(|e| self.fail(e))
    }

    /// Saves the metadata of the latest snapshot, and forgets the
    /// installing snapshot's if it is at or below it, in one transaction:
    /// with the journal on, the next checkpoint's, which starts now if none
    /// is in progress (`deferred.rs`); else a durable commit now.
    pub(crate) fn save_snapshot_meta(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        self.usable()?;
        let record = snapshot_meta_record(META_SNAPSHOT, &meta)?;
        let ends_install = self
            .installing_snapshot
            .as_ref()
            .is_some_and(|installing| installing.last_log_id.index <= meta.last_log_id.index);
        self.deferred.snapshot = Some(record);
        self.deferred.forget_installing |= ends_install;
        self.snapshot = Some(meta);
        if ends_install {
            self.installing_snapshot = None;
        }
        if self.journal.is_none() {
            return self.commit_durable(|_| Ok(()));
        }
        self.checkpoint_soon()
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

    /// Runs `change` on the meta table in one durable commit, which is
    /// also a checkpoint; a failure is kept (fail-stop).
    fn commit_meta(
        &mut self,
        change: impl FnOnce(
            &mut redb::Table<'_, &'static str, &'static [u8]>,
        ) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        self.commit_durable(|txn| {
            let mut table = txn
                .open_table(META_TABLE)
                .map_err(|e| from_redb("open meta", e))?;
            change(&mut table)
        })
    }

    /// A checkpoint: writes the unflushed log and hard state, then runs
    /// `change`, in one redb transaction committed with
    /// `Durability::Immediate`; the journal then starts again.
    fn commit_durable(
        &mut self,
        change: impl FnOnce(&redb::WriteTransaction) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        self.commit(Durability::Immediate, change)
    }

    /// Writes the unflushed log, the hard state if it changed, `change`
    /// and the number of the last write to redb in one transaction with
    /// `durability`. Afterwards redb holds the whole log; a failure is
    /// kept (fail-stop: what redb holds is then unknown).
    fn commit(
        &mut self,
        durability: Durability,
        change: impl FnOnce(&redb::WriteTransaction) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        // redb runs one write transaction at a time, and this one goes on
        // top of what the checkpoint in progress writes.
        self.finish_checkpoint(true)?;
        let deferred = std::mem::take(&mut self.deferred);
        let result = commit_transaction(
            &self.db,
            &mut self.record_buffer,
            Flush {
                unflushed: &self.unflushed,
                stored_last: self.stored_last,
                hard_state: self.hard_state,
                journal_seq: self.journal_seq,
                deferred: &deferred,
            },
            durability,
            change,
        );
        self.trim_record_buffer();
        let removed = result.map_err(|e| self.fail(e))?;
        self.purge_written(deferred.purge, removed);
        self.stored_last = self.last_log_id;
        self.unflushed.flushed(self.last_log_id.index + 1);
        if matches!(durability, Durability::Immediate) {
            self.made_durable();
        }
        self.check_invariants();
        Ok(())
    }

    /// One huge entry must not pin its record's memory for the life of
    /// the store.
    fn trim_record_buffer(&mut self) {
        if self.record_buffer.capacity() > RECORD_BUFFER_BYTES_KEPT_MAX {
            self.record_buffer = Vec::new();
        }
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
        // The layers, bottom up: each starts inside or right after the
        // one below it, and above the purge point.
        assert!(
            self.stored_purged.index <= self.purged.index,
            "redb's purge point {:?} is past the purge point {:?}",
            self.stored_purged,
            self.purged
        );
        // A checkpoint's layer starts above redb's purge point; a purge
        // taken since (deferred, or carried by the checkpoint) may cover
        // part of it.
        let mut below = self.stored_last;
        if let Some(flushing) = &self.flushing {
            let from = flushing.layer.from();
            assert!(
                self.stored_purged.index < from && from <= below.index + 1,
                "checkpoint layer from {from}, redb's purge point {:?}, redb's last {below:?}",
                self.stored_purged,
            );
            below = flushing.last;
        }
        let from = self.unflushed.from();
        assert!(
            self.purged.index < from && from <= below.index + 1,
            "unflushed log from {from}, purged {:?}, below it {below:?}",
            self.purged,
        );
        assert_eq!(
            from - 1 + self.unflushed.entries().len() as u64,
            self.last_log_id.index,
            "the unflushed log ends at the last log id"
        );
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

impl Drop for LogStore {
    /// A checkpoint in progress ends before the database closes (the
    /// journal holds its writes), and deferred changes are written.
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Dropped while a panic unwinds (a broken invariant, see
            // `storage.rs`): no checks and no commit, which could panic
            // again and abort; the journal holds every write.
            if let Some(flushing) = self.flushing.take() {
                let _ = flushing.thread.join();
            }
            return;
        }
        // Its outcome is kept (a failed one stops the deferred commit).
        let _ = self.finish_checkpoint(true);
        // Best effort: what a reopen would otherwise not find, though it
        // may be lost (`deferred.rs`).
        if self.failed.is_none() && !self.deferred.is_empty() {
            let _ = self.commit_durable(|_| Ok(()));
        }
    }
}

/// Reads `range` of `layer` (inside it) into `out`, as `entries` reads
/// redb's part; returns whether the byte budget stopped it.
fn read_layer(
    layer: &Unflushed,
    range: Range<u64>,
    bytes_max: u64,
    out: &mut Vec<Entry>,
    bytes: &mut u64,
) -> bool {
    if range.is_empty() {
        return false;
    }
    let skip = usize::try_from(range.start - layer.from()).unwrap_or(usize::MAX);
    let take = usize::try_from(range.end - range.start).unwrap_or(usize::MAX);
    for entry in layer.entries().iter().skip(skip).take(take) {
        let size = entry.size_bytes();
        if !out.is_empty() && bytes.saturating_add(size) > bytes_max {
            return true;
        }
        *bytes = bytes.saturating_add(size);
        out.push(entry.clone());
    }
    false
}

/// Creates the tables and stores the format version of a new store, or
/// checks the version of an existing one; returns the version found (this
/// build's for a new store).
///
/// The version is read before any other table is opened: a later format may
/// change every table but `meta` and its `format_version` byte (FORMAT.md),
/// so a store of a later format is `UnsupportedFormat`, never `Corrupt`
/// because its log table has another type. Nothing is written unless the
/// version is known or the store is new.
fn init_format(db: &Database) -> Result<u8, StorageError> {
    let txn = db.begin_write().map_err(|e| from_redb("begin write", e))?;
    let found = {
        let mut meta = txn
            .open_table(META_TABLE)
            .map_err(|e| from_redb("open meta", e))?;
        let version = meta
            .get(META_FORMAT_VERSION)
            .map_err(|e| from_redb("read format version", e))?
            .map(|v| v.value().to_vec());
        let found = match version.as_deref() {
            Some([STORE_FORMAT_VERSION]) => STORE_FORMAT_VERSION,
            // Written before the journal: the same tables, no journal to
            // replay. Marked with this version, so that a build from
            // before the journal, which would not replay it, refuses it.
            Some([STORE_FORMAT_VERSION_BEFORE_JOURNAL]) => {
                meta.insert(META_FORMAT_VERSION, [STORE_FORMAT_VERSION].as_slice())
                    .map_err(|e| from_redb("save format version", e))?;
                STORE_FORMAT_VERSION
            }
            // The journal in one lap: `open` replays it so, then marks the
            // store with this version. Nothing is written here, so that a
            // crash before then finds the older version again.
            Some([STORE_FORMAT_VERSION_ONE_LAP_JOURNAL]) => STORE_FORMAT_VERSION_ONE_LAP_JOURNAL,
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
                STORE_FORMAT_VERSION
            }
        };
        // Created here for a new store; for an existing one, its type is
        // checked (a mismatch is `Corrupt`).
        txn.open_table(LOG_TABLE)
            .map_err(|e| from_redb("open log", e))?;
        found
    };
    txn.commit().map_err(|e| from_redb("commit", e))?;
    Ok(found)
}

/// Checks the batch's entries: consecutive from `next_index`, terms not
/// decreasing, memberships valid. The rest (the term before the batch, the
/// size of each record) is `LogStore::check_write`'s.
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

/// What a commit writes besides its own change: the log and hard state
/// that redb lacks.
struct Flush<'a> {
    unflushed: &'a Unflushed,
    /// redb's last entry before the commit.
    stored_last: LogId,
    /// The current hard state, written if it changed.
    hard_state: HardState,
    /// The number of the last write, which redb holds after the commit.
    journal_seq: u64,
    /// A purge and snapshot metadata that go with it.
    deferred: &'a Deferred,
}

/// Runs one write transaction: the cut of redb's log where the unflushed
/// log starts, one insert per unflushed entry, the hard state, the deferred
/// changes, `change`, `journal_seq`; returns what the deferred purge
/// removed. Each entry is encoded and sealed into `record_buffer`,
/// reused for every record (redb copies the value into its page). The
/// entries were checked when written, so nothing here refuses them.
fn commit_transaction(
    db: &Database,
    record_buffer: &mut Vec<u8>,
    flush: Flush<'_>,
    durability: Durability,
    change: impl FnOnce(&redb::WriteTransaction) -> Result<(), StorageError>,
) -> Result<Removed, StorageError> {
    let mut txn = db.begin_write().map_err(|e| from_redb("begin write", e))?;
    txn.set_durability(durability)
        .map_err(|e| from_redb("set durability", e))?;
    {
        let mut log = txn
            .open_table(LOG_TABLE)
            .map_err(|e| from_redb("open log", e))?;
        let from = flush.unflushed.from();
        if from <= flush.stored_last.index {
            log.retain_in(from.., |_, _| false)
                .map_err(|e| from_redb("truncate log", e))?;
        }
        for entry in flush.unflushed.entries() {
            let record = record::seal_into(&log_key(entry.index), record_buffer, |out| {
                codec::encode_entry_into(entry, out);
            });
            log.insert(entry.index, record)
                .map_err(|e| from_redb("append", e))?;
        }
        let mut meta = txn
            .open_table(META_TABLE)
            .map_err(|e| from_redb("open meta", e))?;
        if flush.unflushed.hard_state_changed() {
            let record = record::seal_into(META_HARD_STATE.as_bytes(), record_buffer, |out| {
                out.extend_from_slice(&codec::encode_hard_state(&flush.hard_state));
            });
            meta.insert(META_HARD_STATE, record)
                .map_err(|e| from_redb("save hard state", e))?;
        }
        let record = record::seal_into(META_JOURNAL_SEQ.as_bytes(), record_buffer, |out| {
            out.extend_from_slice(&flush.journal_seq.to_le_bytes());
        });
        meta.insert(META_JOURNAL_SEQ, record)
            .map_err(|e| from_redb("save journal seq", e))?;
    }
    let removed = flush.deferred.write(&txn)?;
    change(&txn)?;
    txn.commit().map_err(|e| from_redb("commit", e))?;
    Ok(removed)
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
