//! The MVCC key space: etcd v3 (3.4) semantics over redb, knowing nothing
//! of HTTP, JSON or Raft.
//!
//! # Use
//!
//! - Writes, the service's way: [`LayeredStore`] (`layers.rs`): each apply
//!   batch is a [`Batch`] writing one in-memory layer, published to readers
//!   when it finishes; the layers reach these tables in one redb write
//!   transaction per interval, on a thread of their own.
//! - Writes straight into redb: open one [`StoreWriter`] over a write
//!   transaction, [`StoreWriter::apply`] the requests in log order,
//!   [`StoreWriter::finish`], and commit (the flush does this).
//! - Either way a request that breaks an etcd rule answers a [`KvError`]
//!   and changes nothing; a [`StoreError`] means the storage failed and the
//!   node must stop. The rules are written once (`writer.rs`), over a
//!   `Source` (reads) and `Sink` (writes) that are either the tables of a
//!   redb transaction or a layer over a redb read snapshot.
//! - Reads: [`StoreReader`], a consistent view: over a redb read
//!   transaction, or the layered store's published state.
//! - Snapshots: [`write_snapshot`] / [`load_snapshot`].
//! - Exactly-once: [`Session`]s, kept by the writer in the same
//!   transactions.
//!
//! # Revisions (etcd's rules)
//!
//! One store-wide revision, 1 in a fresh store. A write request that
//! changes something (a put; a delete that deletes a key; a txn whose
//! executed ops did either) increments it by exactly one, and every change
//! it makes carries the new revision. Anything else (a delete of nothing, a
//! read-only txn, a compaction, a failed request) leaves it unchanged.
//!
//! # Tables
//!
//! | table | key | value |
//! |---|---|---|
//! | `kv_history` | `(key, revision)` | `HistoryRecord`: put (create revision, version, value) or tombstone |
//! | `kv_live` | key | `LiveEntry`: create revision, mod revision, version |
//! | `kv_meta` | `"revision"`, `"compact_revision"` | i64 |
//! | `kv_sessions` | client id | [`Session`] |
//! | `kv_session_expiry` | `(last_write_ms, client id)` | () |
//!
//! Records are `rafter::codec` encodings, decoded with [`RECORD_BYTES_MAX`].
//! A current read walks `kv_live` and fetches each value from `kv_history`
//! at `(key, mod_revision)`; a historical read at revision R seeks, per key
//! of the range, the newest history record at or below R (two seeks per
//! key). A put costs two point reads and two inserts, whatever the history.
//!
//! Invariants (checked in full by `check_invariants`, used by the tests and
//! after every snapshot load):
//! - 1 <= revision; 0 <= compact_revision <= revision; both only grow.
//! - Every history record's revision is in 1..=revision.
//! - Per key, history records in revision order form a chain: a put right
//!   after a put keeps its create revision and has version + 1; a put right
//!   after a tombstone (or first, unless compaction dropped what came
//!   before) has create revision = its revision and version 1.
//! - A key is in `kv_live` exactly when its newest history record is a put,
//!   and then with that record's revision as mod revision and its create
//!   revision and version.
//! - Per key, at most one history record is at or below compact_revision,
//!   and it is a put (compaction keeps the newest at or below, unless a
//!   tombstone).
//! - `kv_session_expiry` has `(s.last_write_ms, c)` exactly for each session
//!   `(c, s)`.

mod error;
mod invariants;
mod layers;
mod range;
mod reader;
mod request;
mod sessions;
mod snapshot;
mod source;
mod tables;
mod txn;
mod writer;

#[cfg(test)]
mod model_test;
#[cfg(test)]
mod tests;

pub use error::{KvError, SnapshotError, StoreError};
pub use layers::{Batch, LayeredReads, LayeredStore};
pub use reader::StoreReader;
pub use request::{
    CompactionRequest, CompactionResponse, Compare, CompareResult, CompareTarget,
    DeleteRangeRequest, DeleteRangeResponse, KeyValue, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget, TxnRequest, TxnResponse,
    WriteRequest, WriteResponse,
};
pub use sessions::Session;
pub use snapshot::{
    load_snapshot, write_snapshot, SNAPSHOT_FORMAT_VERSION, SNAPSHOT_RECORD_BYTES_MAX,
};
pub use txn::TXN_OPS_MAX;
pub use writer::{ApplyResult, StoreWriter};

/// The largest key plus value a put may store; over it the put fails with
/// [`KvError::RequestTooLarge`]. The service's own request limit (1.5 MiB by
/// default) is far below; this bound only keeps every stored record
/// decodable under [`RECORD_BYTES_MAX`].
pub const KEY_VALUE_BYTES_MAX: usize = 32 * 1024 * 1024;

/// The decode limit of every stored record (and of a session's encoding:
/// [`StoreWriter::set_session`] refuses a longer one). Reaching it on read
/// means corruption ([`StoreError::Corrupt`]).
pub const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;

// A history record is the key's value plus a few varints.
const _: () = assert!(KEY_VALUE_BYTES_MAX + 64 < RECORD_BYTES_MAX);
