//! [`StoreReader`]: reads over one consistent redb read transaction.

use redb::{ReadOnlyTable, ReadTransaction, TableError};

use super::error::{storage, KvError, StoreError};
use super::invariants;
use super::range::{self, live_kvs, KeySpan};
use super::request::{RangeRequest, RangeResponse};
use super::sessions::{self, Session};
use super::tables::{read_meta, HISTORY, LIVE, META, REVISION_INITIAL, SESSIONS, SESSION_EXPIRY};

/// The store's tables in a read transaction.
pub(crate) struct ReadTables {
    pub(crate) history: ReadOnlyTable<(&'static [u8], u64), &'static [u8]>,
    pub(crate) live: ReadOnlyTable<&'static [u8], &'static [u8]>,
    pub(crate) sessions: ReadOnlyTable<u64, &'static [u8]>,
    pub(crate) session_expiry: ReadOnlyTable<(u64, u64), ()>,
}

/// Reads the key space as of the read transaction it was opened over: every
/// answer is from the same committed state, whatever commits meanwhile.
pub struct StoreReader {
    /// `None`: no writer ever opened the store (it reads as a fresh one).
    tables: Option<ReadTables>,
    /// Invariant: compact_revision <= revision; revision >= 1.
    revision: i64,
    compact_revision: i64,
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReader")
            .field("revision", &self.revision)
            .field("compact_revision", &self.compact_revision)
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
        let Some(meta) = open_optional(txn, META)? else {
            return Ok(Self {
                tables: None,
                revision: REVISION_INITIAL,
                compact_revision: 0,
            });
        };
        let (revision, compact_revision) = read_meta(&meta)?;
        // The writer creates all tables in one transaction: one missing
        // next to the meta table is damage.
        let missing = |name: &'static str| StoreError::Corrupt {
            table: name,
            detail: "table missing".into(),
        };
        let tables = ReadTables {
            history: open_optional(txn, HISTORY)?.ok_or_else(|| missing("kv_history"))?,
            live: open_optional(txn, LIVE)?.ok_or_else(|| missing("kv_live"))?,
            sessions: open_optional(txn, SESSIONS)?.ok_or_else(|| missing("kv_sessions"))?,
            session_expiry: open_optional(txn, SESSION_EXPIRY)?
                .ok_or_else(|| missing("kv_session_expiry"))?,
        };
        Ok(Self {
            tables: Some(tables),
            revision,
            compact_revision,
        })
    }

    /// The current store revision (1 for a fresh store).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Reads below this revision fail with [`KvError::Compacted`] (0: none).
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// A range read (etcd's rules, see [`RangeRequest`]).
    pub fn range(
        &self,
        request: &RangeRequest,
    ) -> Result<Result<RangeResponse, KvError>, StoreError> {
        match &self.tables {
            Some(t) => range::range(
                &t.history,
                &t.live,
                self.revision,
                self.compact_revision,
                request,
            ),
            None if request.key.is_empty() => Ok(Err(KvError::EmptyKey)),
            None if request.revision > self.revision => Ok(Err(KvError::FutureRevision)),
            None => Ok(Ok(RangeResponse {
                revision: self.revision,
                ..RangeResponse::default()
            })),
        }
    }

    /// The session of `client`, if it has one.
    pub fn session(&self, client: u64) -> Result<Option<Session>, StoreError> {
        match &self.tables {
            Some(t) => sessions::get(&t.sessions, client),
            None => Ok(None),
        }
    }

    /// A hash of the live key-value state at the current revision (every
    /// key, value, create and mod revision and version, plus the revision
    /// and compact revision) as 24 hex digits: FNV-1a 64 then CRC-32 of one
    /// canonical byte stream. Two stores that applied the same requests give
    /// the same digest; history below the current revision and sessions are
    /// not included. Reads every live key: O(store size).
    pub fn digest(&self) -> Result<String, StoreError> {
        let mut hasher = DigestHasher::new();
        hasher.update(&self.revision.to_be_bytes());
        hasher.update(&self.compact_revision.to_be_bytes());
        if let Some(t) = &self.tables {
            for kv in live_kvs(&t.history, &t.live, KeySpan::From(&[]))? {
                hasher.update(&(kv.key.len() as u64).to_be_bytes());
                hasher.update(&kv.key);
                hasher.update(&kv.create_revision.to_be_bytes());
                hasher.update(&kv.mod_revision.to_be_bytes());
                hasher.update(&kv.version.to_be_bytes());
                hasher.update(&(kv.value.len() as u64).to_be_bytes());
                hasher.update(&kv.value);
            }
        }
        Ok(hasher.finish())
    }

    /// Walks every table and checks the layout's invariants (see
    /// `store/mod.rs`). O(store size).
    pub fn check_invariants(&self) -> Result<(), StoreError> {
        match &self.tables {
            Some(t) => invariants::check(
                &t.history,
                &t.live,
                &t.sessions,
                &t.session_expiry,
                self.revision,
                self.compact_revision,
            ),
            None => Ok(()),
        }
    }

    pub(crate) fn tables(&self) -> Option<&ReadTables> {
        self.tables.as_ref()
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
