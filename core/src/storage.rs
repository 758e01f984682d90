//! Boundary: the durable log and hard state, implemented by adapters such as
//! `rafter-redb` and by `rafter::testing::MemStorage`.

use std::future::Future;
use std::ops::Range;

use crate::types::{Entry, HardState, LogId, SnapshotMeta};

/// What a node finds on disk when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InitialState {
    /// The last saved hard state (all zero on a new store).
    pub hard_state: HardState,
    /// The last entry removed by [`RaftStorage::purge`] (zero if none). The
    /// log holds `purged.index + 1 ..= last_log_id.index`.
    pub purged: LogId,
    /// The last entry in the log; equal to `purged` when the log is empty.
    pub last_log_id: LogId,
    /// The metadata of the latest snapshot the state machine holds, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// The metadata of a received snapshot whose install had begun, saved by
    /// [`RaftStorage::save_installing_snapshot_meta`] and not yet replaced
    /// by a [`RaftStorage::save_snapshot_meta`] at or past it. Whether the
    /// state machine finished that install is the state machine's to say:
    /// the node asks it at startup, and keeps or drops this accordingly.
    pub installing_snapshot: Option<SnapshotMeta>,
}

/// One durable write: the driver makes exactly one of these per batch of
/// work, so one fsync covers every proposal and message of the batch.
///
/// Applied in this order, atomically: truncate, append, hard state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriteBatch {
    /// Remove every entry with index >= this first (a conflicting suffix,
    /// Raft §5.3). Never at or below the commit index.
    pub truncate_from: Option<u64>,
    /// Consecutive entries to append right after the (truncated) log's last
    /// entry.
    pub entries: Vec<Entry>,
    /// A new hard state to save, if it changed.
    pub hard_state: Option<HardState>,
    /// Whether the write must be durable (fsynced) before `write` returns.
    /// False only when the batch holds nothing but a commit-index change,
    /// which is safe to lose (etcd's `MustSync`).
    pub must_sync: bool,
}

impl WriteBatch {
    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.truncate_from.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }
}

/// Why a storage operation failed. Any error stops the node: Rafter never
/// retries a failed write, because after a failed fsync the contents of the
/// file are unknown (fail-stop).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The device or the database failed.
    #[error("storage IO failed during {operation}: {message}")]
    Io {
        /// What the storage was doing.
        operation: &'static str,
        /// The underlying error.
        message: String,
    },
    /// Stored data failed its checks (checksum, decode, continuity).
    #[error("corrupt storage at {location}: {message}")]
    Corrupt {
        /// Where: a table and key, a file offset.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// A read asked for entries outside `purged.index + 1 ..= last`.
    #[error("log entry {index} is not available (purged or beyond the end)")]
    Unavailable {
        /// The first missing index.
        index: u64,
    },
    /// Another process holds the data directory.
    #[error("storage is locked by another process: {0}")]
    Locked(String),
    /// A write batch broke the trait's contract (a gap in indexes, a term
    /// going back): a bug in the caller, reported instead of stored.
    #[error("invalid write batch: {0}")]
    InvalidBatch(String),
    /// The stored format is one this build cannot read.
    #[error("unsupported storage format version {found}")]
    UnsupportedFormat {
        /// The version found on disk.
        found: u64,
    },
}

/// The durable log, hard state and snapshot metadata of one node.
///
/// The driver owns the storage and calls it from one task, one call at a
/// time, so implementations need no locking of their own. Every method
/// returns only after its effect is durable (except `write` with
/// `must_sync == false`, which may be lost in a crash).
///
/// That task is an ordinary tokio task: an implementation that blocks (a
/// file write and fsync) must move the blocking part off the runtime's
/// workers (`spawn_blocking`, or a thread of its own), or it stalls every
/// other task on that worker for the length of an fsync.
pub trait RaftStorage: Send + 'static {
    /// Reads what is on disk; called once, before anything else.
    fn initial_state(&mut self) -> impl Future<Output = Result<InitialState, StorageError>> + Send;

    /// Applies `batch` atomically: a crash leaves either all of it or none.
    fn write(&mut self, batch: WriteBatch)
        -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Reads consecutive entries of `range`, stopping once their total
    /// [`Entry::size_bytes`] reaches `bytes_max`, but always returning at
    /// least one entry if the range is not empty. Asking for an index outside
    /// the log is [`StorageError::Unavailable`].
    fn entries(
        &mut self,
        range: Range<u64>,
        bytes_max: u64,
    ) -> impl Future<Output = Result<Vec<Entry>, StorageError>> + Send;

    /// Removes every entry up to and including `up_to.index` (covered by a
    /// snapshot) and remembers `up_to` as the purge point, so that an empty
    /// log still knows its last log id. Purging at or below the current purge
    /// point does nothing.
    ///
    /// It need not be durable when it returns: after a crash the log may
    /// start earlier again (entries a snapshot covers are still a valid
    /// log), though never later than the purge point asked. The same goes
    /// for [`RaftStorage::save_snapshot_meta`]: a crash may leave the
    /// previous snapshot's metadata, never a purge point past the saved
    /// snapshot.
    ///
    /// `up_to` may lie beyond the last entry, or name a term the log does not
    /// hold there: a follower installing a snapshot that replaces its log.
    /// The whole prefix goes; entries after `up_to` that belong to the
    /// replaced history are removed by a `write`'s `truncate_from` issued
    /// before the purge (see "Snapshots" in ARCHITECTURE.md for the order).
    fn purge(&mut self, up_to: LogId) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Saves the metadata of the latest snapshot, one the state machine holds
    /// durably (it built it, or finished installing it). In the same atomic
    /// write, forgets the installing snapshot's metadata if that one is at or
    /// below `meta` (`last_log_id.index`): that install is over.
    fn save_snapshot_meta(
        &mut self,
        meta: SnapshotMeta,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Saves (`Some`) or forgets (`None`) the metadata of a received snapshot
    /// the state machine is about to install, kept apart from the latest
    /// snapshot's: until the install is done the state machine still holds
    /// its old snapshot, and [`InitialState::snapshot`] must keep naming it.
    ///
    /// Why it is saved at all: the snapshot's membership exists nowhere
    /// else. A crash right after the state machine installed it would leave
    /// a node whose state is the snapshot but whose storage cannot say which
    /// configuration it holds; with this record, the restart finishes the
    /// install (see `InitialState::installing_snapshot`).
    fn save_installing_snapshot_meta(
        &mut self,
        meta: Option<SnapshotMeta>,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;
}
