//! The two kinds of failure of the key space, kept apart on purpose:
//!
//! - [`KvError`]: a request broke one of etcd's rules. It is an answer, not a
//!   fault: every replica gives the same one, and the store is unchanged.
//! - [`StoreError`]: the storage failed or holds something it could not have
//!   written. The state machine stops the node (fail-stop): carrying on could
//!   make this replica diverge from the others.

use serde::{Deserialize, Serialize};

/// A request broke one of etcd's rules; nothing was changed. The Display
/// strings are etcd 3.4's exact error texts (`rpctypes`), which the JSON API
/// returns as `error`/`message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// The read or compaction revision is below the compact revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// The read or compaction revision is above the current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A key (of a put, range, delete or compare) is empty.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// A put with `ignore_value` names a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A put with `ignore_value` also carries a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A txn branch puts one key twice or puts a key it also deletes.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A txn has more than 128 compares or ops in a branch.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A put's key and value are over [`crate::store::KEY_VALUE_BYTES_MAX`].
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// Any other malformed request; the text is the whole message.
    #[error("{0}")]
    InvalidArgument(String),
}

/// The storage failed or holds a record this code could not have written.
/// Fatal for the replica.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// redb failed (IO, or its own corruption checks).
    #[error("storage: {0}")]
    Storage(#[from] redb::Error),
    /// A stored record does not decode or breaks an invariant.
    #[error("corrupt record in table {table}: {detail}")]
    Corrupt {
        /// The table holding it.
        table: &'static str,
        /// What is wrong, with the key where known.
        detail: String,
    },
    /// A session's encoding is over [`crate::store::RECORD_BYTES_MAX`]; it
    /// was not stored.
    #[error("session record of {len} bytes is over the limit of {limit}")]
    SessionTooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A snapshot could not be written or was refused on load.
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
}

/// Why a snapshot could not be written or loaded. On a load error the
/// caller must drop (not commit) the write transaction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Reading or writing the stream failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The stream ended before the trailer.
    #[error("truncated")]
    Truncated,
    /// The stream does not start with the snapshot magic.
    #[error("not a rafter-kv store snapshot (bad magic)")]
    BadMagic,
    /// The format version is not one this build reads.
    #[error("unsupported snapshot format version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A record's length prefix is over the limit; nothing was allocated.
    #[error("record of {len} bytes is over the limit of {limit}")]
    RecordTooLarge {
        /// The length prefix.
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// The CRC-32 trailer does not match the bytes before it.
    #[error("checksum mismatch: trailer {expected:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The trailer's value.
        expected: u32,
        /// The CRC-32 of the bytes read.
        computed: u32,
    },
    /// A record does not decode, is out of order, or breaks an invariant.
    #[error("invalid record {index}: {detail}")]
    Invalid {
        /// Position of the record in the stream (0 = first).
        index: u64,
        /// What is wrong.
        detail: String,
    },
    /// Bytes follow the trailer.
    #[error("trailing bytes after the trailer")]
    Trailing,
}

/// Wraps any redb error.
pub(crate) fn storage(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Storage(e.into())
}
