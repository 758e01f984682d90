//! The on-disk layout: file names, tables, keys and limits. The prose
//! version, with the reasons, is `FORMAT.md` at the crate root; the two must
//! change together, and a change to either bumps [`STORE_FORMAT_VERSION`].

use redb::TableDefinition;

/// The version of this layout, stored as one raw byte under the key
/// `format_version` of the `meta` table. A build refuses a store of a later
/// version with `StorageError::UnsupportedFormat` rather than guess (and a
/// version no build writes, such as 0, with `StorageError::Corrupt`); a
/// later build keeps reading this one.
pub const STORE_FORMAT_VERSION: u8 = 3;

/// The version with the journal in one lap from offset 0 (`journal.rs`,
/// `Layout::OneLap`); the same tables. A store of this version has its
/// journal replayed that way when it opens, then made durable in redb, and
/// is marked [`STORE_FORMAT_VERSION`], whose journal is two halves.
pub(crate) const STORE_FORMAT_VERSION_ONE_LAP_JOURNAL: u8 = 2;

/// The version before the journal (`journal.rs`): the same tables, and no
/// journal file. A store of this version is read and marked
/// [`STORE_FORMAT_VERSION`] when it opens, so that a build of that version
/// (which would not replay the journal) refuses it from then on.
pub(crate) const STORE_FORMAT_VERSION_BEFORE_JOURNAL: u8 = 1;

/// The journal inside the data directory: synced writes appended in front
/// of the database file (`journal.rs`, FORMAT.md).
pub(crate) const JOURNAL_FILE: &str = "log.journal";

/// The database file inside the data directory (`log.redb.new` while it
/// is created, see `create.rs`).
pub(crate) const DATABASE_FILE: &str = "log.redb";

/// The lock file inside the data directory; held (advisory, exclusive) for as
/// long as a store is open.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// The log: index → record whose body is `rafter::codec::encode_entry`.
///
/// Invariant: the keys are exactly `purged.index + 1 ..= last_index`.
pub(crate) const LOG_TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("log");

/// Everything else, by name (the keys below).
pub(crate) const META_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// One raw byte: [`STORE_FORMAT_VERSION`]. Written by the transaction that
/// creates the store, so a store without it but with other data is corrupt.
/// The `meta` table's type and this key are the one part of the layout every
/// version keeps, so that any build can tell a later format from damage.
pub(crate) const META_FORMAT_VERSION: &str = "format_version";
/// Record of `rafter::codec::encode_hard_state`.
pub(crate) const META_HARD_STATE: &str = "hard_state";
/// Record of `rafter::codec::encode(&LogId)`: the purge point.
pub(crate) const META_PURGED: &str = "purged";
/// Record of `rafter::codec::encode_snapshot_meta`: the latest snapshot.
pub(crate) const META_SNAPSHOT: &str = "snapshot";
/// Record of 8 bytes, little endian: the number of the last write this
/// commit holds (the journal's frames after it are replayed at open).
/// Absent in a store of version 1: 0.
pub(crate) const META_JOURNAL_SEQ: &str = "journal_seq";
/// Record of `rafter::codec::encode_snapshot_meta`: a received snapshot
/// whose install has begun (`RaftStorage::save_installing_snapshot_meta`).
/// Absent in stores written before it existed, which reads as "none".
pub(crate) const META_INSTALLING_SNAPSHOT: &str = "installing_snapshot";

/// The largest log record read back: an entry whose record is longer is
/// refused at write (`StorageError::InvalidBatch`, nothing written) and
/// reported corrupt at read, so every record that was written can be read.
/// 64 MiB is the default `message_bytes_max`, above any entry a node can
/// replicate.
pub const ENTRY_RECORD_BYTES_MAX: usize = 64 << 20;

/// The largest meta record read back (hard state, purge point, snapshot
/// metadata with its membership): refused at write and corrupt at read above
/// this. 16 MiB holds a membership of well over 100,000 members.
pub(crate) const META_RECORD_BYTES_MAX: usize = 16 << 20;

// Every limit leaves room for the checksum, and the meta limit is not above
// the entry limit (a membership entry carries the same membership).
const _: () = assert!(META_RECORD_BYTES_MAX <= ENTRY_RECORD_BYTES_MAX);
const _: () = assert!(crate::record::CHECKSUM_BYTES < META_RECORD_BYTES_MAX);
