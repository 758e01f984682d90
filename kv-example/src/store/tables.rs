//! The redb tables of the key space and the records they hold (the layout is
//! described, with its invariants, in `store/mod.rs`). Every record is
//! decoded here, through `rafter::codec` with a size limit: this file is the
//! gateway between bytes on disk and the typed values the rest trusts.

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::error::{storage, StoreError};
use super::request::KeyValue;
use super::sessions::Session;
use super::RECORD_BYTES_MAX;

/// `(revision, key)` → encoded [`StoredRecord`]: the history in revision
/// order, so a flush's records are appended on a few pages at the end of
/// the table instead of one page per key (etcd's bolt `key` bucket is keyed
/// by revision too). A new name, not `kv_history` retyped, so that a store
/// of the `(key, revision)` layout is recognised by its table names alone
/// (`upgrade.rs`).
pub(crate) const HISTORY: TableDefinition<(u64, &[u8]), &[u8]> =
    TableDefinition::new("kv_history_by_revision");
/// key → encoded [`KeyEntry`]: every key with history, live or deleted,
/// with the revision of its newest record (the head of its chain).
pub(crate) const KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv_keys");
/// [`META_REVISION`] / [`META_COMPACT_REVISION`] → value.
pub(crate) const META: TableDefinition<&str, i64> = TableDefinition::new("kv_meta");
/// client id → encoded [`Session`].
pub(crate) const SESSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("kv_sessions");
/// `(last_write_ms, client id)` → (): the sessions by age.
pub(crate) const SESSION_EXPIRY: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("kv_session_expiry");

pub(crate) const META_REVISION: &str = "revision";
pub(crate) const META_COMPACT_REVISION: &str = "compact_revision";

/// The revision of a store no write has changed (etcd starts at 1).
pub(crate) const REVISION_INITIAL: i64 = 1;

/// What one write did to one key at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum HistoryRecord {
    /// The key was put.
    /// Invariant: 1 <= create_revision <= the record's revision; version >= 1.
    Put {
        create_revision: i64,
        version: i64,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// The key was deleted.
    Tombstone,
}

/// The borrowed twin of [`HistoryRecord`] for writing: the same variants in
/// the same order, so the same encoding, without copying the value.
#[derive(Debug, Serialize)]
pub(crate) enum HistoryRecordRef<'a> {
    Put {
        create_revision: i64,
        version: i64,
        #[serde(with = "serde_bytes")]
        value: &'a [u8],
    },
    /// The key was deleted.
    Tombstone,
}

/// A history record as stored in [`HISTORY`]: the record and the revision
/// of the same key's previous record, so that a key's history is a chain
/// walked newest first from its [`KeyEntry`].
/// Invariant: prev < the record's revision; prev is 0 when the key has no
/// older record (none written, or compaction removed it), else the key has
/// a record at prev.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredRecord {
    pub(crate) prev: u64,
    pub(crate) record: HistoryRecord,
}

/// The borrowed twin of [`StoredRecord`] for writing (same fields, same
/// encoding).
#[derive(Debug, Serialize)]
pub(crate) struct StoredRecordRef<'a> {
    pub(crate) prev: u64,
    pub(crate) record: HistoryRecordRef<'a>,
}

/// What [`KEYS`] holds for one key: the head of its history chain.
/// Invariant: the key's newest record is at [`KeyEntry::newest`], and it is
/// a put with this entry's create revision and version when `Live`, a
/// tombstone when `Deleted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum KeyEntry {
    /// The key is live; its newest record is the put at `mod_revision`.
    Live(LiveEntry),
    /// The key was deleted at `revision` (its newest record, a tombstone),
    /// and compaction has not yet dropped it.
    Deleted { revision: i64 },
}

impl KeyEntry {
    /// The revision of the key's newest record.
    pub(crate) fn newest(&self) -> i64 {
        match self {
            KeyEntry::Live(entry) => entry.mod_revision,
            KeyEntry::Deleted { revision } => *revision,
        }
    }

    /// The live entry, if the key is live.
    pub(crate) fn live(&self) -> Option<LiveEntry> {
        match self {
            KeyEntry::Live(entry) => Some(*entry),
            KeyEntry::Deleted { .. } => None,
        }
    }
}

/// The current state of a live key, without its value (which is in
/// [`HISTORY`] at `(mod_revision, key)`).
/// Invariant: 1 <= create_revision <= mod_revision <= store revision;
/// version >= 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LiveEntry {
    pub(crate) create_revision: i64,
    pub(crate) mod_revision: i64,
    pub(crate) version: i64,
}

impl LiveEntry {
    pub(crate) fn key_value(&self, key: Vec<u8>, value: Vec<u8>) -> KeyValue {
        KeyValue {
            key,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value,
        }
    }

    pub(crate) fn valid(&self) -> bool {
        self.create_revision >= 1 && self.create_revision <= self.mod_revision && self.version >= 1
    }
}

/// Revisions are positive i64s in the API and u64s in table keys.
pub(crate) fn rev_key(revision: i64) -> u64 {
    debug_assert!(revision >= 0, "negative revision {revision}");
    revision.max(0) as u64
}

/// Decodes the record of `key` at `revision` and checks what it can alone:
/// prev below the revision, and a put's create revision and version.
pub(crate) fn decode_history(
    key: &[u8],
    revision: u64,
    bytes: &[u8],
) -> Result<StoredRecord, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        table: "kv_history_by_revision",
        detail: format!("key {key:?} at {revision}: {detail}"),
    };
    let stored: StoredRecord =
        rafter::codec::decode(bytes, RECORD_BYTES_MAX).map_err(|e| corrupt(e.to_string()))?;
    if revision < 1 || stored.prev >= revision {
        return Err(corrupt(format!("previous record at {}", stored.prev)));
    }
    check_put(&stored.record, revision).map_err(corrupt)?;
    Ok(stored)
}

/// A put's create revision is in `1..=revision` and its version >= 1.
pub(crate) fn check_put(record: &HistoryRecord, revision: u64) -> Result<(), String> {
    if let HistoryRecord::Put {
        create_revision,
        version,
        ..
    } = record
    {
        if *create_revision < 1 || *create_revision as u64 > revision || *version < 1 {
            return Err(format!("create {create_revision}, version {version}"));
        }
    }
    Ok(())
}

/// Decodes the `kv_keys` entry of `key` and checks it alone (a live
/// entry's revisions and version; a deletion's revision >= 1).
pub(crate) fn decode_key_entry(key: &[u8], bytes: &[u8]) -> Result<KeyEntry, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        table: "kv_keys",
        detail: format!("key {key:?}: {detail}"),
    };
    let entry: KeyEntry =
        rafter::codec::decode(bytes, RECORD_BYTES_MAX).map_err(|e| corrupt(e.to_string()))?;
    let valid = match &entry {
        KeyEntry::Live(live) => live.valid(),
        KeyEntry::Deleted { revision } => *revision >= 1,
    };
    if !valid {
        return Err(corrupt(format!("{entry:?}")));
    }
    Ok(entry)
}

pub(crate) fn decode_session(client: u64, bytes: &[u8]) -> Result<Session, StoreError> {
    rafter::codec::decode(bytes, RECORD_BYTES_MAX).map_err(|e| StoreError::Corrupt {
        table: "kv_sessions",
        detail: format!("client {client}: {e}"),
    })
}

/// Reads (revision, compact_revision) from the meta table (a fresh store's
/// when absent).
pub(crate) fn read_meta(
    meta: &impl ReadableTable<&'static str, i64>,
) -> Result<(i64, i64), StoreError> {
    let revision = meta
        .get(META_REVISION)
        .map_err(storage)?
        .map(|g| g.value())
        .unwrap_or(REVISION_INITIAL);
    let compact = meta
        .get(META_COMPACT_REVISION)
        .map_err(storage)?
        .map(|g| g.value())
        .unwrap_or(0);
    if revision < REVISION_INITIAL || compact < 0 || compact > revision {
        return Err(StoreError::Corrupt {
            table: "kv_meta",
            detail: format!("revision {revision}, compact revision {compact}"),
        });
    }
    Ok((revision, compact))
}

/// The smallest key greater than `key`: `key` followed by a zero byte.
pub(crate) fn key_successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}
