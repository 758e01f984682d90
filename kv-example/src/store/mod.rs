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
//! | `kv_history_by_revision` | `(revision, key)` | `StoredRecord`: prev, and put (create revision, version, value) or tombstone |
//! | `kv_keys` | key | `KeyEntry`: live (create revision, mod revision, version) or deleted (revision) |
//! | `kv_meta` | `"revision"`, `"compact_revision"` | i64 |
//! | `kv_sessions` | client id | [`Session`] |
//! | `kv_session_expiry` | `(last_write_ms, client id)` | () |
//! | `kv_live` | `"layout"` | u64: 2, the layout marker (see below) |
//!
//! Records are `rafter::codec` encodings, decoded with [`RECORD_BYTES_MAX`].
//!
//! The history is keyed by revision, as etcd's bolt `key` bucket is, so
//! that a flush appends: its records sort after every stored one and fill a
//! few new pages at the end of the table. (Keyed by key, as before, every
//! put dirtied a leaf page of its own: ~5,500 4 KiB pages per flush at
//! 11,000 puts/s over 10,000 keys.) A key's records are linked instead: each
//! names the revision of the key's previous record (`prev`, 0 for none), and
//! `kv_keys` holds, for every key with history (deleted ones too, until
//! compaction drops them), the revision of its newest record.
//!
//! Costs:
//! - A put or delete: one `kv_keys` read (the new record's prev) and one
//!   insert in each table.
//! - A current read: walks `kv_keys` over the range (skipping deleted keys
//!   not yet compacted) and fetches each value at `(mod_revision, key)`.
//! - A historical read at revision R: per key of the range, walks its chain
//!   back from the newest record, one point read per record of the key
//!   above R, plus one. Bound: the key's writes since R (at most its writes
//!   since the compact revision, since R >= compact revision).
//! - A compaction to T: one seek per key in `kv_keys`, plus one read per
//!   record above T and per record removed.
//!
//! No index lives only in memory: a store opens without a rebuild, and a
//! redb read snapshot holds a whole, consistent layout (the layered store's
//! readers keep old ones).
//!
//! A store of the previous layout (`kv_history` keyed `(key, revision)`,
//! `kv_live` of live keys only) is upgraded in the first write transaction
//! that opens it (`upgrade.rs`). The old layout's `kv_live` name now holds
//! a layout marker of other types, so that a build of the old layout (a
//! node rolled back) fails to open this store instead of reading it as
//! empty. Snapshots keep their format (history in
//! key then revision order), so builds of either layout exchange them.
//!
//! Invariants (checked in full by `check_invariants`, used by the tests and
//! after every snapshot load):
//! - 1 <= revision; 0 <= compact_revision <= revision; both only grow.
//! - Every history record's revision is in 1..=revision.
//! - Every key in `kv_keys` heads a chain: its newest record is at the
//!   entry's revision (the mod revision of a live key), and each record's
//!   prev is 0 or the revision of the key's next older record, below its
//!   own. Every history record is on the chain of its key (none is
//!   unreachable), and every key with a record is in `kv_keys`.
//! - Per key, records in revision order form a valid history: a put right
//!   after a put keeps its create revision and has version + 1; a put right
//!   after a tombstone (or first, unless compaction dropped what came
//!   before) has create revision = its revision and version 1.
//! - A key's `kv_keys` entry is live exactly when its newest record is a
//!   put, and then with that record's create revision and version.
//! - Per key, at most one history record is at or below compact_revision,
//!   and it is a put (compaction keeps the newest at or below, unless a
//!   tombstone, and drops a key whose records all go).
//! - `kv_session_expiry` has `(s.last_write_ms, c)` exactly for each session
//!   `(c, s)`.

mod error;
mod invariants;
mod layers;
mod live_index;
mod range;
mod reader;
mod request;
mod sessions;
mod snapshot;
mod source;
mod tables;
mod txn;
mod upgrade;
mod writer;

#[cfg(test)]
mod concurrent_reads_test;
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
