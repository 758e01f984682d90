//! The pattern for a durable state machine on redb: the state machine's data
//! and its applied log id are written by the same write transaction, so after
//! a crash either both are on disk or neither is, and
//! `StateMachine::applied` (read back from the same file) tells Rafter
//! exactly where to resume. Without that, a crash between "data written" and
//! "applied index written" would apply the entries in between twice, which
//! breaks any command that is not idempotent.

use std::path::Path;

use rafter::{codec, LogId, StateMachineError};
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    TableError, WriteTransaction,
};

use crate::create::open_or_create;
use crate::error::from_redb;
use crate::lock::DirectoryLock;
use crate::record;

/// The database file inside the directory (`state.redb.new` while it is
/// created, see `create.rs`).
const STATE_DATABASE_FILE: &str = "state.redb";
/// The applied log id: key [`APPLIED_KEY`] → record of `codec::encode(&LogId)`.
const APPLIED_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("rafter_applied");
const APPLIED_KEY: &str = "applied";
/// An applied record is a version byte and two varints: far under this.
const APPLIED_RECORD_BYTES_MAX: usize = 64;

/// A redb database for a state machine, with the applied log id kept in the
/// same transactions as the data. The file is `<dir>/state.redb`, the
/// directory locked like [`crate::RedbStorage`]'s (use another directory).
/// A new file is created the way `log.redb` is: under a temporary name,
/// renamed into place once complete, so a crash while it is created leaves
/// nothing the next open refuses.
///
/// Invariant: the stored applied log id only grows, and it changes only in
/// a transaction that also holds the effects of the entries up to it.
#[derive(Debug)]
pub struct RedbStateMachineStore {
    /// Declared before `_lock` so the database closes first.
    db: Database,
    _lock: DirectoryLock,
}

impl RedbStateMachineStore {
    /// Opens (creating if needed) the database in `dir`. Blocks.
    ///
    /// Errors (`StateMachineError::Io`, with the reason in the message): the
    /// directory is locked by another open store; `state.redb` is not a
    /// complete redb database (damaged, or left half-created by a crash of
    /// a build that created it in place; it is never replaced, since it may
    /// hold the only copy of the state); the filesystem failed. A
    /// `state.redb.new` left by a crash during creation is replaced.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StateMachineError> {
        Self::open_inner(dir.as_ref(), None)
    }

    /// [`Self::open`] with redb's page cache limited to `cache_bytes`
    /// (redb's default is 1 GiB, which a write load fills with written
    /// pages whatever the size of the live data). Blocks.
    pub fn open_with_cache(
        dir: impl AsRef<Path>,
        cache_bytes: usize,
    ) -> Result<Self, StateMachineError> {
        Self::open_inner(dir.as_ref(), Some(cache_bytes))
    }

    fn open_inner(dir: &Path, cache_bytes: Option<usize>) -> Result<Self, StateMachineError> {
        std::fs::create_dir_all(dir).map_err(|e| StateMachineError::Io(e.to_string()))?;
        let lock = DirectoryLock::acquire(dir).map_err(|e| StateMachineError::Io(e.to_string()))?;
        let mut builder = Database::builder();
        builder.set_check_integrity_on_open(true);
        if let Some(bytes) = cache_bytes {
            builder.set_cache_size(bytes);
        }
        let db = open_or_create(dir, STATE_DATABASE_FILE, &builder, |db| {
            let txn = db.begin_write().map_err(|e| from_redb("begin write", e))?;
            txn.open_table(APPLIED_TABLE)
                .map_err(|e| from_redb("create applied table", e))?;
            txn.commit().map_err(|e| from_redb("commit", e))
        })
        .map_err(|e| {
            StateMachineError::Io(format!("{}: {e}", dir.join(STATE_DATABASE_FILE).display()))
        })?;
        // A store created by an earlier build may lack the table.
        let txn = db.begin_write().map_err(sm_io)?;
        txn.open_table(APPLIED_TABLE).map_err(sm_io)?;
        txn.commit().map_err(sm_io)?;
        Ok(Self { db, _lock: lock })
    }

    /// The database, for reads (`begin_read`) of the state machine's tables.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The last log id whose effects are stored (zero for a new store).
    pub fn applied(&self) -> Result<LogId, StateMachineError> {
        let txn = self.db.begin_read().map_err(sm_io)?;
        Self::applied_in(&txn)
    }

    /// The applied log id as `txn` sees it: the one that matches the state
    /// machine's tables in the same read transaction (a snapshot built from
    /// `txn` covers exactly the entries up to it).
    pub fn applied_in(txn: &ReadTransaction) -> Result<LogId, StateMachineError> {
        let table = match txn.open_table(APPLIED_TABLE) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(LogId::default()),
            Err(e) => return Err(sm_io(e)),
        };
        read_applied(&table)
    }

    /// Runs `apply` in a write transaction that also records `last` as the
    /// applied log id, and commits it durably. The entries being applied are
    /// `first_index ..= last.index`; if `first_index` is not above the stored
    /// applied index (they were applied already) nothing runs and the error
    /// is `StateMachineError::Corrupt`. If `apply` fails, the transaction is
    /// rolled back: neither its data nor `last` is stored.
    pub fn apply_batch<R>(
        &self,
        first_index: u64,
        last: LogId,
        apply: impl FnOnce(&WriteTransaction) -> Result<R, StateMachineError>,
    ) -> Result<R, StateMachineError> {
        self.apply_batch_with(first_index, last, Durability::Immediate, apply)
    }

    /// [`Self::apply_batch`] with a chosen durability. A batch committed
    /// with `Durability::None` is visible to readers at once but reaches
    /// the disk only with the next `Immediate` commit: a crash in between
    /// loses it, together with its applied log id, so Rafter applies those
    /// entries again from its log on restart. That is safe for a state
    /// machine whose applies are deterministic, as long as the entries are
    /// still in the log or in a durable snapshot (Rafter purges only behind
    /// snapshots, and restores a state machine that is behind the purge
    /// point from its latest snapshot). It saves one fsync per batch.
    pub fn apply_batch_with<R>(
        &self,
        first_index: u64,
        last: LogId,
        durability: Durability,
        apply: impl FnOnce(&WriteTransaction) -> Result<R, StateMachineError>,
    ) -> Result<R, StateMachineError> {
        if first_index == 0 || first_index > last.index {
            return Err(StateMachineError::Corrupt {
                index: first_index,
                message: format!(
                    "batch {first_index}..={} is empty or starts at 0",
                    last.index
                ),
            });
        }
        let mut txn = self.db.begin_write().map_err(sm_io)?;
        txn.set_durability(durability).map_err(sm_io)?;
        {
            let table = txn.open_table(APPLIED_TABLE).map_err(sm_io)?;
            let applied = read_applied(&table)?;
            if first_index <= applied.index {
                return Err(StateMachineError::Corrupt {
                    index: first_index,
                    message: format!("already applied (applied index {})", applied.index),
                });
            }
        }
        // On error the transaction is dropped here, which aborts it.
        let response = apply(&txn)?;
        {
            let mut table = txn.open_table(APPLIED_TABLE).map_err(sm_io)?;
            let value = record::seal(APPLIED_KEY.as_bytes(), &codec::encode(&last));
            table.insert(APPLIED_KEY, value.as_slice()).map_err(sm_io)?;
        }
        txn.commit().map_err(sm_io)?;
        Ok(response)
    }
}

fn read_applied(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<LogId, StateMachineError> {
    let Some(value) = table.get(APPLIED_KEY).map_err(sm_io)? else {
        return Ok(LogId::default());
    };
    let body = record::open(
        APPLIED_KEY.as_bytes(),
        value.value(),
        APPLIED_RECORD_BYTES_MAX,
    )
    .map_err(|e| StateMachineError::Io(format!("corrupt applied record: {e}")))?;
    codec::decode(body, APPLIED_RECORD_BYTES_MAX)
        .map_err(|e| StateMachineError::Io(format!("corrupt applied record: {e}")))
}

/// Any redb failure of the state machine's store.
pub(crate) fn sm_io(e: impl Into<redb::Error>) -> StateMachineError {
    StateMachineError::Io(e.into().to_string())
}
