//! [`StoreWriter`]: applies write requests inside a redb write transaction
//! that its caller opened and commits.

use std::ops::Bound;

use redb::{ReadableTable, Table, WriteTransaction};

use super::error::{storage, KvError, StoreError};
use super::invariants;
use super::range::{self, live_entries, next_history_key, record_at, KeySpan};
use super::request::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, TxnRequest, TxnResponse,
    WriteRequest, WriteResponse,
};
use super::sessions::{self, Session};
use super::tables::{
    key_successor, live_value, read_meta, rev_key, HistoryRecord, HistoryRecordRef, LiveEntry,
    HISTORY, LIVE, META, META_COMPACT_REVISION, META_REVISION, SESSIONS, SESSION_EXPIRY,
};
use super::txn::{check_path, check_put, check_txn, txn_path, TxnPath};

/// The outcome of one write request: the store revision after it and the
/// response, or the etcd rule it broke (then nothing changed); the outer
/// error is a storage failure (fatal, see [`StoreError`]).
pub type ApplyResult = Result<Result<(i64, WriteResponse), KvError>, StoreError>;

/// Applies write requests to the key space inside a write transaction owned
/// by the caller. Open one per transaction (it opens the store's tables once,
/// creating them if missing), apply any number of requests, call
/// [`StoreWriter::finish`], then commit the transaction. Dropping the
/// transaction uncommitted discards every request applied through it.
///
/// Each request is atomic on its own: a request that fails with a
/// [`KvError`] changes nothing, not even the revision, so the requests
/// applied before and after it in the same transaction are unaffected.
pub struct StoreWriter<'t> {
    history: Table<'t, (&'static [u8], u64), &'static [u8]>,
    live: Table<'t, &'static [u8], &'static [u8]>,
    meta: Table<'t, &'static str, i64>,
    sessions: Table<'t, u64, &'static [u8]>,
    session_expiry: Table<'t, (u64, u64), ()>,
    /// Invariant: equals the meta table's revision after every request;
    /// never decreases; `compact_revision <= revision`.
    revision: i64,
    /// Invariant: equals the meta table's compact revision; never decreases.
    compact_revision: i64,
}

impl std::fmt::Debug for StoreWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter")
            .field("revision", &self.revision)
            .field("compact_revision", &self.compact_revision)
            .finish_non_exhaustive()
    }
}

/// The write revision of the request being applied, and whether it changed
/// anything yet (then reads at "current" see that revision).
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Invariant: the store revision + 1.
    revision: i64,
    changed: bool,
}

impl<'t> StoreWriter<'t> {
    /// Opens the store's tables in `txn`, creating any that are missing (a
    /// fresh store is at revision 1, compact revision 0).
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        let history = txn.open_table(HISTORY).map_err(storage)?;
        let live = txn.open_table(LIVE).map_err(storage)?;
        let meta = txn.open_table(META).map_err(storage)?;
        let sessions = txn.open_table(SESSIONS).map_err(storage)?;
        let session_expiry = txn.open_table(SESSION_EXPIRY).map_err(storage)?;
        let (revision, compact_revision) = read_meta(&meta)?;
        Ok(Self {
            history,
            live,
            meta,
            sessions,
            session_expiry,
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

    /// Applies one write request (see [`ApplyResult`]). After a
    /// [`StoreError`] the request may be half-applied: drop the writer and
    /// the transaction uncommitted, and stop.
    pub fn apply(&mut self, request: &WriteRequest) -> ApplyResult {
        let mut pending = Pending {
            revision: self.revision + 1,
            changed: false,
        };
        let response = match request {
            WriteRequest::Put(put) => {
                if let Err(e) = check_put(&put.key, &put.value, put.ignore_value) {
                    return Ok(Err(e));
                }
                if put.ignore_value && !self.is_live(&put.key)? {
                    return Ok(Err(KvError::KeyNotFound));
                }
                WriteResponse::Put(self.put(put, &mut pending)?)
            }
            WriteRequest::DeleteRange(delete) => {
                if delete.key.is_empty() {
                    return Ok(Err(KvError::EmptyKey));
                }
                WriteResponse::DeleteRange(self.delete_range(delete, &mut pending)?)
            }
            WriteRequest::Txn(txn) => {
                if let Err(e) = check_txn(txn) {
                    return Ok(Err(e));
                }
                let path = txn_path(&self.history, &self.live, txn)?;
                let checked =
                    check_path(&self.live, txn, &path, self.revision, self.compact_revision)?;
                if let Err(e) = checked {
                    return Ok(Err(e));
                }
                WriteResponse::Txn(self.txn(txn, &path, &mut pending)?)
            }
            WriteRequest::Compaction(compaction) => match self.compact(compaction)? {
                Ok(()) => WriteResponse::Compaction(CompactionResponse {}),
                Err(e) => return Ok(Err(e)),
            },
        };
        if pending.changed {
            assert_eq!(pending.revision, self.revision + 1);
            self.revision = pending.revision;
            self.meta
                .insert(META_REVISION, self.revision)
                .map_err(storage)?;
        }
        Ok(Ok((self.revision, response)))
    }

    /// A range read at the state of the transaction so far (etcd's rules,
    /// see [`RangeRequest`]).
    pub fn range(
        &self,
        request: &RangeRequest,
    ) -> Result<Result<RangeResponse, KvError>, StoreError> {
        range::range(
            &self.history,
            &self.live,
            self.revision,
            self.compact_revision,
            request,
        )
    }

    /// The session of `client`, if it has one.
    pub fn session(&self, client: u64) -> Result<Option<Session>, StoreError> {
        sessions::get(&self.sessions, client)
    }

    /// Stores the session of `client`, replacing any. Errors with
    /// [`StoreError::SessionTooLarge`] (storing nothing) if its encoding is
    /// over [`super::RECORD_BYTES_MAX`]: callers keep responses well below.
    pub fn set_session(&mut self, client: u64, session: &Session) -> Result<(), StoreError> {
        sessions::set(
            &mut self.sessions,
            &mut self.session_expiry,
            client,
            session,
        )
    }

    /// Removes the sessions whose last write is more than `ttl_ms` before
    /// `now_ms` (log time), returning how many. Costs a seek plus the
    /// expired sessions, not a scan of all of them.
    pub fn expire_sessions(&mut self, now_ms: u64, ttl_ms: u64) -> Result<u64, StoreError> {
        sessions::expire(&mut self.sessions, &mut self.session_expiry, now_ms, ttl_ms)
    }

    /// Ends the writer before the caller commits. Every request's effects
    /// (revision included) are already in the transaction, so this only
    /// releases the tables and, in debug builds, checks the cheap
    /// invariants.
    pub fn finish(self) -> Result<(), StoreError> {
        debug_assert!(self.compact_revision <= self.revision);
        drop(self);
        Ok(())
    }

    /// Walks every table and checks the layout's invariants (see
    /// `store/mod.rs`). O(store size): for tests and after loading a
    /// snapshot, never on the apply path.
    pub fn check_invariants(&self) -> Result<(), StoreError> {
        invariants::check(
            &self.history,
            &self.live,
            &self.sessions,
            &self.session_expiry,
            self.revision,
            self.compact_revision,
        )
    }

    fn is_live(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.live.get(key).map_err(storage)?.is_some())
    }

    /// Current revision as a read inside the request sees it.
    fn current(&self, pending: &Pending) -> i64 {
        if pending.changed {
            pending.revision
        } else {
            self.revision
        }
    }

    /// Puts; the caller has checked the request (for `ignore_value`, that
    /// the key exists).
    fn put(&mut self, put: &PutRequest, pending: &mut Pending) -> Result<PutResponse, StoreError> {
        let old = live_entries(&self.live, KeySpan::Single(&put.key))?
            .pop()
            .map(|(_, entry)| entry);
        let old_value = match old {
            Some(entry) if put.prev_kv || put.ignore_value => {
                Some(live_value(&self.history, &put.key, &entry)?)
            }
            _ => None,
        };
        let revision = pending.revision;
        let entry = match old {
            Some(old) => LiveEntry {
                create_revision: old.create_revision,
                mod_revision: revision,
                version: old.version + 1,
            },
            None => LiveEntry {
                create_revision: revision,
                mod_revision: revision,
                version: 1,
            },
        };
        let value: &[u8] = if put.ignore_value {
            // The caller checked that the key exists (apply, check_path);
            // nothing in a txn deletes it before this put (check_txn).
            old_value
                .as_deref()
                .unwrap_or_else(|| panic!("ignore_value put of missing key {:?}", put.key))
        } else {
            &put.value
        };
        let record = rafter::codec::encode(&HistoryRecordRef::Put {
            create_revision: entry.create_revision,
            version: entry.version,
            value,
        });
        self.history
            .insert((put.key.as_slice(), rev_key(revision)), record.as_slice())
            .map_err(storage)?;
        self.live
            .insert(put.key.as_slice(), rafter::codec::encode(&entry).as_slice())
            .map_err(storage)?;
        pending.changed = true;
        let prev_kv = match (put.prev_kv, old, old_value) {
            (true, Some(old), Some(value)) => Some(old.key_value(put.key.clone(), value)),
            _ => None,
        };
        Ok(PutResponse { revision, prev_kv })
    }

    /// Deletes the live keys in the span; the caller has checked the key.
    fn delete_range(
        &mut self,
        delete: &DeleteRangeRequest,
        pending: &mut Pending,
    ) -> Result<DeleteRangeResponse, StoreError> {
        let entries = live_entries(&self.live, KeySpan::new(&delete.key, &delete.range_end))?;
        let mut prev_kvs = Vec::new();
        if delete.prev_kv {
            for (key, entry) in &entries {
                let value = live_value(&self.history, key, entry)?;
                prev_kvs.push(entry.key_value(key.clone(), value));
            }
        }
        let tombstone = rafter::codec::encode(&HistoryRecord::Tombstone);
        for (key, _) in &entries {
            self.history
                .insert(
                    (key.as_slice(), rev_key(pending.revision)),
                    tombstone.as_slice(),
                )
                .map_err(storage)?;
            self.live.remove(key.as_slice()).map_err(storage)?;
        }
        if !entries.is_empty() {
            pending.changed = true;
        }
        Ok(DeleteRangeResponse {
            revision: self.current(pending),
            deleted: entries.len() as i64,
            prev_kvs,
        })
    }

    /// Runs the branch `path` chose; the caller has run `check_txn` and
    /// `check_path`, so no op can fail on its content.
    fn txn(
        &mut self,
        txn: &TxnRequest,
        path: &TxnPath,
        pending: &mut Pending,
    ) -> Result<TxnResponse, StoreError> {
        let mut nested = path.nested.iter();
        let mut responses = Vec::new();
        for op in path.branch(txn) {
            let response = match op {
                RequestOp::Range(r) => {
                    let current = self.current(pending);
                    let answer =
                        range::range(&self.history, &self.live, current, self.compact_revision, r)?;
                    ResponseOp::Range(answer.unwrap_or_else(|e| {
                        panic!("txn range {r:?} passed check_txn and check_path but failed: {e}")
                    }))
                }
                RequestOp::Put(p) => ResponseOp::Put(self.put(p, pending)?),
                RequestOp::DeleteRange(d) => {
                    ResponseOp::DeleteRange(self.delete_range(d, pending)?)
                }
                RequestOp::Txn(t) => {
                    let Some(p) = nested.next() else {
                        unreachable!("txn_path gives one path per nested txn of the branch")
                    };
                    ResponseOp::Txn(self.txn(t, p, pending)?)
                }
            };
            responses.push(response);
        }
        Ok(TxnResponse {
            succeeded: path.succeeded,
            responses,
        })
    }

    /// etcd's compaction: for every key, drops the records older than the
    /// newest one at or below `revision`, and that one too if it is a
    /// tombstone. Reads at `revision` and above are unaffected. Walks the
    /// whole history (two seeks per key plus the records removed).
    ///
    /// TODO: this runs inside one apply, so a large history stalls the
    /// apply loop for the whole walk (etcd compacts in the background in
    /// batches of 1000 keys). It stays synchronous for now because the
    /// result must be identical on every replica at the same log index, and
    /// a background compactor would need its progress in the snapshot.
    fn compact(&mut self, request: &CompactionRequest) -> Result<Result<(), KvError>, StoreError> {
        let target = request.revision;
        if target > self.revision {
            return Ok(Err(KvError::FutureRevision));
        }
        if target <= self.compact_revision {
            return Ok(Err(KvError::Compacted));
        }
        let mut from = Vec::new();
        while let Some(key) = next_history_key(&self.history, &from)? {
            if let Some((newest, record)) = record_at(&self.history, &key, target)? {
                let last = (key.as_slice(), rev_key(newest));
                let upper = match record {
                    HistoryRecord::Tombstone => Bound::Included(last),
                    HistoryRecord::Put { .. } => Bound::Excluded(last),
                };
                self.history
                    .retain_in((Bound::Included((key.as_slice(), 0u64)), upper), |_, _| {
                        false
                    })
                    .map_err(storage)?;
            }
            from = key_successor(&key);
        }
        self.compact_revision = target;
        self.meta
            .insert(META_COMPACT_REVISION, target)
            .map_err(storage)?;
        Ok(Ok(()))
    }
}
