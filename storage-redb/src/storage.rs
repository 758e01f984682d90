//! `RedbStorage`: the async `RaftStorage` shell around the blocking
//! `LogStore`.
//!
//! redb blocks (an fsync takes milliseconds), so no call may run on a tokio
//! worker as if it were async. How a call leaves the worker depends on the
//! runtime:
//!
//! - multi-thread runtime: `tokio::task::block_in_place`. The call runs on
//!   the calling thread, and tokio hands that worker's other tasks to
//!   another thread for the duration. Nothing waits for a thread to wake,
//!   so a call costs what the store costs: on the 2-core development VM a
//!   hop to another thread (the blocking pool, or a thread of the store's
//!   own fed through a channel with a oneshot reply) added 13-25 µs per call
//!   against 0-2 µs for `block_in_place`, next to 20-30 µs for a one-entry
//!   commit without fsync (`examples/append_bench.rs`, and the README). Only
//!   the calling task waits, and the storage task of a node runs its calls
//!   one at a time anyway.
//! - current-thread runtime (where `block_in_place` is not allowed): the
//!   store moves onto tokio's blocking pool with `spawn_blocking` and comes
//!   back when the call ends.
//! - outside a tokio runtime: the call runs inline.

use std::ops::Range;
use std::path::Path;

use rafter::{Entry, InitialState, LogId, RaftStorage, SnapshotMeta, StorageError, WriteBatch};
use tokio::runtime::RuntimeFlavor;

use crate::log_store::LogStore;
use crate::options::RedbOptions;

/// A durable [`RaftStorage`] in one redb file: `<dir>/log.redb`, with the
/// directory locked by `<dir>/LOCK` while the store is open.
///
/// Every `write`, whatever the number of entries (group commit), is one
/// frame appended to the journal `<dir>/log.journal` (the write-ahead log),
/// with one `fdatasync` when `batch.must_sync`, and is kept in memory for
/// reads; the writes reach redb in one durable transaction at a
/// checkpoint, on a thread of its own every second or quarter journal, and
/// in the call with every `purge` and `save_snapshot_meta`. With
/// [`RedbOptions::journal_bytes`] 0, every write is a redb transaction
/// instead, fsynced when `batch.must_sync`. Dropping the store waits for
/// a checkpoint in progress.
/// Every record carries a CRC-32 over its key and bytes; a record that
/// fails it or a hole in the log is [`StorageError::Corrupt`], at open or
/// at read, and a store written by a later format is
/// [`StorageError::UnsupportedFormat`] at open. After any IO or corruption
/// error the store refuses every later call with that error (fail-stop). A
/// batch that breaks `write`'s contract (a gap, a term going back, an
/// invalid membership, an entry over `ENTRY_RECORD_BYTES_MAX`) is refused
/// with [`StorageError::InvalidBatch`]: nothing is written and the store
/// stays usable. The format is described in `FORMAT.md`.
#[derive(Debug)]
pub struct RedbStorage {
    /// `None` only while a call runs on the blocking pool, or for good if
    /// that call was cancelled (current-thread runtime only) or panicked.
    store: Option<LogStore>,
}

impl RedbStorage {
    /// Opens the store in `dir` with default options, creating both if
    /// needed. Blocks (it reads and checks the file): call it at startup or
    /// from a blocking context.
    ///
    /// Errors: [`StorageError::Locked`] if another store has `dir` open (in
    /// this process or another), [`StorageError::UnsupportedFormat`] if a
    /// later build wrote the store, [`StorageError::Corrupt`] if the file
    /// fails its checks, [`StorageError::Io`] otherwise.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        Self::open_with(dir, RedbOptions::default())
    }

    /// Opens the store in `dir` with `options`; see [`RedbStorage::open`].
    pub fn open_with(dir: impl AsRef<Path>, options: RedbOptions) -> Result<Self, StorageError> {
        let dir = dir.as_ref();
        // redb documents that a damaged file may make it panic rather than
        // report corruption when the integrity check on open is off
        // (`RedbOptions::open_check_file`), and its debug builds assert on
        // damaged pages. Opening is the gateway for bytes from disk, so a
        // panic in it is reported as corruption instead of taking the
        // process down. A panic in a later call becomes an `Io` error and
        // stops the store (see `run`).
        let opened = std::panic::catch_unwind(|| LogStore::open(dir, options));
        let store = opened.map_err(|panic| StorageError::Corrupt {
            location: format!("{}", dir.display()),
            message: format!("redb panicked while opening it: {}", panic_message(&*panic)),
        })??;
        Ok(Self { store: Some(store) })
    }

    /// The path of the database file.
    pub fn database_path(&self) -> Option<&Path> {
        self.store.as_ref().map(LogStore::path)
    }

    /// Makes everything durable in redb now, on the calling task: the
    /// journal's writes, and a purge or snapshot metadata that would
    /// otherwise go with the next checkpoint. Nothing needs it for safety;
    /// it is for a copy of the files taken right after, and for tests.
    pub async fn checkpoint(&mut self) -> Result<(), StorageError> {
        self.run(LogStore::checkpoint).await
    }

    /// Compacts the file now, whatever the compaction rule says (`purge`
    /// compacts on its own after large purges, see
    /// [`RedbOptions::compaction_purged_bytes_min`]). Blocks for about the
    /// time of writing the live data once.
    pub async fn compact(&mut self) -> Result<(), StorageError> {
        self.run(LogStore::compact).await
    }

    /// Runs `f` on the store, off the runtime's workers (see the module
    /// doc). A panic in `f` (a broken invariant) drops the store, so nothing
    /// observes the state it left, and is reported as an `Io` error; every
    /// later call fails.
    async fn run<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut LogStore) -> Result<R, StorageError> + Send + 'static,
    ) -> Result<R, StorageError> {
        let mut store = self.store.take().ok_or_else(lost)?;
        let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
        if flavor
            .as_ref()
            .is_ok_and(|f| *f == RuntimeFlavor::CurrentThread)
        {
            let joined = tokio::task::spawn_blocking(move || {
                let result = f(&mut store);
                (store, result)
            })
            .await;
            return match joined {
                Ok((store, result)) => {
                    self.store = Some(store);
                    result
                }
                // The store panicked and is gone.
                Err(e) => Err(StorageError::Io {
                    operation: "storage call",
                    message: format!("the blocking storage task failed: {e}"),
                }),
            };
        }
        // Outside tokio there is no worker to keep free; inside a
        // multi-thread runtime `block_in_place` frees this one.
        let call = || std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut store)));
        let caught = if flavor.is_ok() {
            tokio::task::block_in_place(call)
        } else {
            call()
        };
        match caught {
            Ok(result) => {
                self.store = Some(store);
                result
            }
            Err(panic) => Err(StorageError::Io {
                operation: "storage call",
                message: format!(
                    "the store panicked (a broken invariant): {}",
                    panic_message(&*panic)
                ),
            }),
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "(no message)"
    }
}

fn lost() -> StorageError {
    StorageError::Io {
        operation: "storage call",
        message: "the store was lost by an earlier call that was cancelled or panicked".into(),
    }
}

impl RaftStorage for RedbStorage {
    async fn initial_state(&mut self) -> Result<InitialState, StorageError> {
        // Served from the cache, which `open` loaded and checked: no IO.
        self.store.as_ref().ok_or_else(lost)?.initial_state()
    }

    async fn write(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        self.run(move |store| store.write(batch)).await
    }

    async fn entries(
        &mut self,
        range: Range<u64>,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.run(move |store| store.entries(range, bytes_max)).await
    }

    async fn purge(&mut self, up_to: LogId) -> Result<(), StorageError> {
        self.run(move |store| store.purge(up_to)).await
    }

    async fn save_snapshot_meta(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        self.run(move |store| store.save_snapshot_meta(meta)).await
    }

    async fn save_installing_snapshot_meta(
        &mut self,
        meta: Option<SnapshotMeta>,
    ) -> Result<(), StorageError> {
        self.run(move |store| store.save_installing_snapshot_meta(meta))
            .await
    }
}
