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

/// `(key, revision)` → encoded [`HistoryRecord`].
pub(crate) const HISTORY: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("kv_history");
/// live key → encoded [`LiveEntry`].
pub(crate) const LIVE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv_live");
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
}

/// The current state of a live key, without its value (which is in
/// [`HISTORY`] at `(key, mod_revision)`).
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

pub(crate) fn decode_history(key: &[u8], bytes: &[u8]) -> Result<HistoryRecord, StoreError> {
    let record: HistoryRecord =
        rafter::codec::decode(bytes, RECORD_BYTES_MAX).map_err(|e| StoreError::Corrupt {
            table: "kv_history",
            detail: format!("key {key:?}: {e}"),
        })?;
    if let HistoryRecord::Put {
        create_revision,
        version,
        ..
    } = &record
    {
        if *create_revision < 1 || *version < 1 {
            return Err(StoreError::Corrupt {
                table: "kv_history",
                detail: format!("key {key:?}: create {create_revision}, version {version}"),
            });
        }
    }
    Ok(record)
}

pub(crate) fn decode_live(key: &[u8], bytes: &[u8]) -> Result<LiveEntry, StoreError> {
    let entry: LiveEntry =
        rafter::codec::decode(bytes, RECORD_BYTES_MAX).map_err(|e| StoreError::Corrupt {
            table: "kv_live",
            detail: format!("key {key:?}: {e}"),
        })?;
    if !entry.valid() {
        return Err(StoreError::Corrupt {
            table: "kv_live",
            detail: format!("key {key:?}: {entry:?}"),
        });
    }
    Ok(entry)
}

pub(crate) fn decode_session(client: u64, bytes: &[u8]) -> Result<Session, StoreError> {
    rafter::codec::decode(bytes, RECORD_BYTES_MAX).map_err(|e| StoreError::Corrupt {
        table: "kv_sessions",
        detail: format!("client {client}: {e}"),
    })
}

/// The value of a live key: the put record at `(key, mod_revision)`.
pub(crate) fn live_value(
    history: &impl ReadableTable<(&'static [u8], u64), &'static [u8]>,
    key: &[u8],
    entry: &LiveEntry,
) -> Result<Vec<u8>, StoreError> {
    let guard = history
        .get((key, rev_key(entry.mod_revision)))
        .map_err(storage)?;
    let record = match guard {
        Some(g) => decode_history(key, g.value())?,
        None => {
            return Err(StoreError::Corrupt {
                table: "kv_live",
                detail: format!("key {key:?}: no history at mod revision {entry:?}"),
            })
        }
    };
    match record {
        HistoryRecord::Put {
            create_revision,
            version,
            value,
        } if create_revision == entry.create_revision && version == entry.version => Ok(value),
        other => Err(StoreError::Corrupt {
            table: "kv_live",
            detail: format!("key {key:?}: live {entry:?} but history {other:?}"),
        }),
    }
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
