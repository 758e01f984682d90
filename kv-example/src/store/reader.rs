//! [`StoreReader`]: reads over one consistent redb read transaction.

use std::sync::Arc;

use rafter::LogId;
use redb::{ReadOnlyTable, ReadTransaction, TableError};

use super::error::{storage, KvError, StoreError};
use super::invariants;
use super::layers::StateView;
use super::range::{self, live_kvs, KeySpan};
use super::request::{RangeRequest, RangeResponse};
use super::sessions::Session;
use super::tables::{read_meta, HISTORY, KEYS, META, REVISION_INITIAL, SESSIONS, SESSION_EXPIRY};
use super::upgrade::OLD_HISTORY;

/// The store's tables in a read transaction.
pub(crate) struct ReadTables {
    pub(crate) history: ReadOnlyTable<(u64, &'static [u8]), &'static [u8]>,
    pub(crate) keys: ReadOnlyTable<&'static [u8], &'static [u8]>,
    pub(crate) sessions: ReadOnlyTable<u64, &'static [u8]>,
    pub(crate) session_expiry: ReadOnlyTable<(u64, u64), ()>,
}

/// Reads the key space as of one applied state: every answer is from the
/// same state, whatever is applied or committed meanwhile. Over a redb read
/// transaction ([`StoreReader::open`]) or over the layered store's published
/// state (redb plus the layers not yet flushed; see `layers.rs`).
#[derive(Clone)]
pub struct StoreReader {
    state: Arc<StateView>,
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReader")
            .field("revision", &self.state.revision)
            .field("compact_revision", &self.state.compact_revision)
            .finish_non_exhaustive()
    }
}

fn open_optional<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    definition: redb::TableDefinition<K, V>,
) -> Result<Option<ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(definition) {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(storage(e)),
    }
}

impl StoreReader {
    /// Opens the store's tables in `txn`. A database no [`super::StoreWriter`]
    /// has opened reads as a fresh store (revision 1, no keys).
    pub fn open(txn: &ReadTransaction) -> Result<Self, StoreError> {
        let (tables, revision, compact_revision) = match open_optional(txn, META)? {
            None => (None, REVISION_INITIAL, 0),
            Some(meta) => {
                let (revision, compact_revision) = read_meta(&meta)?;
                // Only a writer upgrades (it needs a write transaction).
                if open_optional(txn, OLD_HISTORY)?.is_some() {
                    return Err(StoreError::Corrupt {
                        table: "kv_history",
                        detail: "the store has the old layout: open a StoreWriter on it once \
                                 to upgrade it"
                            .into(),
                    });
                }
                // The writer creates all tables in one transaction: one
                // missing next to the meta table is damage.
                let missing = |name: &'static str| StoreError::Corrupt {
                    table: name,
                    detail: "table missing".into(),
                };
                let tables = ReadTables {
                    history: open_optional(txn, HISTORY)?
                        .ok_or_else(|| missing("kv_history_by_revision"))?,
                    keys: open_optional(txn, KEYS)?.ok_or_else(|| missing("kv_keys"))?,
                    sessions: open_optional(txn, SESSIONS)?
                        .ok_or_else(|| missing("kv_sessions"))?,
                    session_expiry: open_optional(txn, SESSION_EXPIRY)?
                        .ok_or_else(|| missing("kv_session_expiry"))?,
                };
                (Some(Arc::new(tables)), revision, compact_revision)
            }
        };
        Ok(Self {
            state: Arc::new(StateView {
                tables,
                layers: Vec::new(),
                revision,
                compact_revision,
                applied: LogId::default(),
                base_revision: revision,
                base_compact_revision: compact_revision,
            }),
        })
    }

    pub(crate) fn over(state: Arc<StateView>) -> Self {
        Self { state }
    }

    pub(crate) fn into_tables(self) -> Option<Arc<ReadTables>> {
        self.state.tables.clone()
    }

    /// The current store revision (1 for a fresh store).
    pub fn revision(&self) -> i64 {
        self.state.revision
    }

    /// Reads below this revision fail with [`KvError::Compacted`] (0: none).
    pub fn compact_revision(&self) -> i64 {
        self.state.compact_revision
    }

    /// A range read (etcd's rules, see [`RangeRequest`]). At the current
    /// revision it reads each live key once; at an older revision R it
    /// walks each key's history chain back from its newest record: per key
    /// of the range, one point read per record of the key above R, plus one
    /// (bounded by the key's writes since the compact revision).
    pub fn range(
        &self,
        request: &RangeRequest,
    ) -> Result<Result<RangeResponse, KvError>, StoreError> {
        range::range(
            &self.state.source(None),
            self.state.revision,
            self.state.compact_revision,
            request,
        )
    }

    /// The session of `client`, if it has one.
    pub fn session(&self, client: u64) -> Result<Option<Session>, StoreError> {
        self.state.session(client)
    }

    /// A hash of the live key-value state at the current revision (every
    /// key, value, create and mod revision and version, plus the revision
    /// and compact revision) as 24 hex digits: FNV-1a 64 then CRC-32 of one
    /// canonical byte stream. Two stores that applied the same requests give
    /// the same digest; history below the current revision and sessions are
    /// not included. Reads every live key: O(store size).
    pub fn digest(&self) -> Result<String, StoreError> {
        let mut hasher = DigestHasher::new();
        hasher.update(&self.state.revision.to_be_bytes());
        hasher.update(&self.state.compact_revision.to_be_bytes());
        for kv in live_kvs(&self.state.source(None), KeySpan::From(&[]))? {
            hasher.update(&(kv.key.len() as u64).to_be_bytes());
            hasher.update(&kv.key);
            hasher.update(&kv.create_revision.to_be_bytes());
            hasher.update(&kv.mod_revision.to_be_bytes());
            hasher.update(&kv.version.to_be_bytes());
            hasher.update(&(kv.value.len() as u64).to_be_bytes());
            hasher.update(&kv.value);
        }
        Ok(hasher.finish())
    }

    /// Walks every table and checks the layout's invariants (see
    /// `store/mod.rs`). O(store size). Checks the redb part of the state:
    /// the layered store flushes first (`LayeredStore::check_invariants`).
    pub fn check_invariants(&self) -> Result<(), StoreError> {
        match &self.state.tables {
            Some(t) => invariants::check(
                &t.history,
                &t.keys,
                &t.sessions,
                &t.session_expiry,
                self.state.base_revision,
                self.state.base_compact_revision,
            ),
            None => Ok(()),
        }
    }

    pub(crate) fn tables(&self) -> Option<&ReadTables> {
        self.state.tables.as_deref()
    }
}

/// FNV-1a 64 and CRC-32 side by side: 96 bits, no new dependency. Not a
/// cryptographic hash: it detects divergence, it does not resist forgery.
struct DigestHasher {
    fnv: u64,
    crc: crc32fast::Hasher,
}

impl DigestHasher {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Self {
            fnv: Self::FNV_OFFSET,
            crc: crc32fast::Hasher::new(),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.fnv ^= u64::from(b);
            self.fnv = self.fnv.wrapping_mul(Self::FNV_PRIME);
        }
        self.crc.update(bytes);
    }

    fn finish(self) -> String {
        format!("{:016x}{:08x}", self.fnv, self.crc.finalize())
    }
}
