//! [`StoreWriter`]: applies write requests inside a redb write transaction
//! that its caller opened and commits.

use redb::{ReadableTable, Table, WriteTransaction};

use super::error::{storage, KvError, StoreError};
use super::invariants;
use super::range::{self, KeySpan};
use super::request::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, TxnRequest, TxnResponse,
    WriteRequest, WriteResponse,
};
use super::sessions::{self, Session};
use super::source::{live_value, Source, Tables};
use super::tables::{
    decode_key_entry, key_successor, read_meta, rev_key, HistoryRecord, HistoryRecordRef, KeyEntry,
    LiveEntry, StoredRecord, StoredRecordRef, HISTORY, KEYS, META, META_COMPACT_REVISION,
    META_REVISION, SESSIONS, SESSION_EXPIRY,
};
use super::txn::{check_path, check_put, check_txn, txn_path, TxnPath};
use super::upgrade;

/// The outcome of one write request: the store revision after it and the
/// response, or the etcd rule it broke (then nothing changed); the outer
/// error is a storage failure (fatal, see [`StoreError`]).
pub type ApplyResult = Result<Result<(i64, WriteResponse), KvError>, StoreError>;

/// Where a writer's changes go: the tables of one redb write transaction
/// ([`RedbSink`]) or the in-memory layer of one apply batch
/// (`layers::LayerSink`). Reads through the [`Source`] see every change
/// made so far.
pub(crate) trait Sink: Source {
    /// Records that `key` was put at `revision`, which makes it live with
    /// that create revision, mod revision `revision` and version. A record
    /// of the key at `revision` already (a txn's delete-range then put)
    /// is replaced.
    fn put_history(
        &mut self,
        key: &[u8],
        revision: i64,
        create_revision: i64,
        version: i64,
        value: &[u8],
    ) -> Result<(), StoreError>;

    /// Records that `key` was deleted at `revision`, which makes it not
    /// live; as for [`Sink::put_history`], a record at `revision` already
    /// is replaced.
    fn put_tombstone(&mut self, key: &[u8], revision: i64) -> Result<(), StoreError>;

    /// Stores the store revision.
    fn set_revision(&mut self, revision: i64) -> Result<(), StoreError>;

    /// etcd's compaction to `target` (the caller checked
    /// `compact_revision < target <= revision`): stores the compact revision
    /// and drops the history it makes unreachable, at once or later (reads
    /// at `target` and above cannot tell).
    fn compact(&mut self, target: i64) -> Result<(), StoreError>;
}

/// A [`RedbSink`]'s tables as a [`Source`].
type WriteTables<'a, 't> = Tables<
    'a,
    Table<'t, (u64, &'static [u8]), &'static [u8]>,
    Table<'t, &'static [u8], &'static [u8]>,
>;

/// `value`'s `rafter::codec` encoding, in `scratch` (its old contents
/// replaced, its allocation kept).
fn encode_in<'s>(scratch: &'s mut Vec<u8>, value: &impl serde::Serialize) -> &'s [u8] {
    scratch.clear();
    rafter::codec::encode_into(value, scratch);
    scratch
}

/// The redb tables a [`StoreWriter`] writes.
pub(crate) struct RedbSink<'t> {
    pub(crate) history: Table<'t, (u64, &'static [u8]), &'static [u8]>,
    pub(crate) keys: Table<'t, &'static [u8], &'static [u8]>,
    pub(crate) meta: Table<'t, &'static str, i64>,
    /// The encoding of the record or key entry being inserted, reused so
    /// that a flush of thousands allocates once.
    scratch: Vec<u8>,
}

impl<'t> RedbSink<'t> {
    /// Opens (creating any that is missing) the key-space tables in `txn`,
    /// upgrading a store of the old layout first (`upgrade.rs`).
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        upgrade::upgrade_if_old(txn)?;
        Ok(Self {
            history: txn.open_table(HISTORY).map_err(storage)?,
            keys: txn.open_table(KEYS).map_err(storage)?,
            meta: txn.open_table(META).map_err(storage)?,
            scratch: Vec::new(),
        })
    }

    fn tables(&self) -> WriteTables<'_, 't> {
        Tables {
            history: &self.history,
            keys: &self.keys,
        }
    }

    /// The newest revision of `key` before a record at `revision` is added:
    /// the new record's `prev`. A record at `revision` already (a txn wrote
    /// the key twice at one revision) is replaced, so its own prev is the
    /// answer.
    pub(crate) fn prev_for(&self, key: &[u8], revision: i64) -> Result<u64, StoreError> {
        let tables = self.tables();
        let Some(entry) = tables.key_entry(key)? else {
            return Ok(0);
        };
        let newest = entry.newest();
        if newest < revision {
            Ok(rev_key(newest))
        } else if newest == revision {
            Ok(tables.chained(key, revision)?.prev)
        } else {
            Err(StoreError::Corrupt {
                table: "kv_keys",
                detail: format!(
                    "key {key:?}: newest record {newest} above the write at {revision}"
                ),
            })
        }
    }

    /// Sets `key`'s entry to `head`, for new records of the key from
    /// revision `first` on that are all above its stored ones (a flush of
    /// layers over this base), and returns the first new record's prev:
    /// the stored entry's newest revision (0: none). One walk of
    /// `kv_keys` where [`Self::prev_for`] and [`Self::set_key_entry`] take
    /// two. A stored record at or above `first` is corruption.
    pub(crate) fn replace_key_entry_below(
        &mut self,
        key: &[u8],
        head: KeyEntry,
        first: i64,
    ) -> Result<u64, StoreError> {
        let old = self
            .keys
            .insert(key, encode_in(&mut self.scratch, &head))
            .map_err(storage)?;
        let Some(old) = old else {
            return Ok(0);
        };
        let newest = decode_key_entry(key, old.value())?.newest();
        if newest >= first {
            return Err(StoreError::Corrupt {
                table: "kv_keys",
                detail: format!(
                    "key {key:?}: newest record {newest} at or above the flush's {first}"
                ),
            });
        }
        Ok(rev_key(newest))
    }

    /// Stores the record of `key` at `revision`, pointing at `prev`.
    pub(crate) fn insert_record(
        &mut self,
        revision: i64,
        key: &[u8],
        prev: u64,
        record: HistoryRecordRef<'_>,
    ) -> Result<(), StoreError> {
        debug_assert!(prev < rev_key(revision), "prev {prev} at {revision}");
        let bytes = encode_in(&mut self.scratch, &StoredRecordRef { prev, record });
        self.history
            .insert((rev_key(revision), key), bytes)
            .map_err(storage)?;
        Ok(())
    }

    /// Sets the head of `key`'s chain.
    pub(crate) fn set_key_entry(&mut self, key: &[u8], entry: KeyEntry) -> Result<(), StoreError> {
        self.keys
            .insert(key, encode_in(&mut self.scratch, &entry))
            .map_err(storage)?;
        Ok(())
    }

    /// Compacts one key (see [`Sink::compact`]): walks its chain down to
    /// the newest record at or below `target`, removes every record older
    /// than that one, and that one too if it is a tombstone; the oldest
    /// record left gets prev 0, and a key with no record left leaves
    /// `kv_keys`. Costs one read per record above `target` and per record
    /// removed.
    fn compact_key(&mut self, key: &[u8], entry: KeyEntry, target: i64) -> Result<(), StoreError> {
        // The record just above the one at or below target, if any.
        let mut above: Option<(i64, StoredRecord)> = None;
        let mut at = entry.newest();
        let kept = loop {
            if at == 0 {
                return Ok(()); // Every record is above target.
            }
            let stored = self.tables().chained(key, at)?;
            if at <= target {
                break stored;
            }
            let prev = stored.prev as i64;
            above = Some((at, stored));
            at = prev;
        };
        let mut older = kept.prev as i64;
        while older > 0 {
            let stored = self.tables().chained(key, older)?;
            self.history
                .remove((rev_key(older), key))
                .map_err(storage)?;
            older = stored.prev as i64;
        }
        match kept.record {
            HistoryRecord::Put { .. } => {
                if kept.prev != 0 {
                    self.rewrite_as_oldest(at, key, kept.record)?;
                }
            }
            HistoryRecord::Tombstone => {
                self.history.remove((rev_key(at), key)).map_err(storage)?;
                match above {
                    Some((revision, stored)) => {
                        self.rewrite_as_oldest(revision, key, stored.record)?
                    }
                    None => {
                        self.keys.remove(key).map_err(storage)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Rewrites the record of `key` at `revision` with prev 0: the records
    /// before it are gone.
    fn rewrite_as_oldest(
        &mut self,
        revision: i64,
        key: &[u8],
        record: HistoryRecord,
    ) -> Result<(), StoreError> {
        let bytes = rafter::codec::encode(&StoredRecord { prev: 0, record });
        self.history
            .insert((rev_key(revision), key), bytes.as_slice())
            .map_err(storage)?;
        Ok(())
    }
}

impl Source for RedbSink<'_> {
    fn live_get(&self, key: &[u8]) -> Result<Option<LiveEntry>, StoreError> {
        self.tables().live_get(key)
    }

    fn live_range(&self, span: KeySpan<'_>) -> Result<Vec<(Vec<u8>, LiveEntry)>, StoreError> {
        self.tables().live_range(span)
    }

    fn history_get(&self, key: &[u8], revision: i64) -> Result<Option<HistoryRecord>, StoreError> {
        self.tables().history_get(key, revision)
    }

    fn record_at(
        &self,
        key: &[u8],
        revision: i64,
    ) -> Result<Option<(i64, HistoryRecord)>, StoreError> {
        self.tables().record_at(key, revision)
    }

    fn next_history_key(&self, from: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.tables().next_history_key(from)
    }
}

impl Sink for RedbSink<'_> {
    fn put_history(
        &mut self,
        key: &[u8],
        revision: i64,
        create_revision: i64,
        version: i64,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let prev = self.prev_for(key, revision)?;
        let record = HistoryRecordRef::Put {
            create_revision,
            version,
            value,
        };
        self.insert_record(revision, key, prev, record)?;
        let entry = LiveEntry {
            create_revision,
            mod_revision: revision,
            version,
        };
        self.set_key_entry(key, KeyEntry::Live(entry))
    }

    fn put_tombstone(&mut self, key: &[u8], revision: i64) -> Result<(), StoreError> {
        let prev = self.prev_for(key, revision)?;
        self.insert_record(revision, key, prev, HistoryRecordRef::Tombstone)?;
        self.set_key_entry(key, KeyEntry::Deleted { revision })
    }

    fn set_revision(&mut self, revision: i64) -> Result<(), StoreError> {
        self.meta.insert(META_REVISION, revision).map_err(storage)?;
        Ok(())
    }

    /// For every key in `kv_keys`, compacts its chain (see
    /// [`RedbSink::compact_key`]): one seek per key, plus one read per
    /// record above `target` and per record removed.
    fn compact(&mut self, target: i64) -> Result<(), StoreError> {
        let mut from = Vec::new();
        loop {
            let next = {
                let mut iter = self
                    .keys
                    .range::<&[u8]>(from.as_slice()..)
                    .map_err(storage)?;
                match iter.next() {
                    None => None,
                    Some(item) => {
                        let (k, v) = item.map_err(storage)?;
                        let entry = decode_key_entry(k.value(), v.value())?;
                        Some((k.value().to_vec(), entry))
                    }
                }
            };
            let Some((key, entry)) = next else {
                break;
            };
            self.compact_key(&key, entry, target)?;
            from = key_successor(&key);
        }
        self.meta
            .insert(META_COMPACT_REVISION, target)
            .map_err(storage)?;
        Ok(())
    }
}

/// etcd's rules for write requests, over any [`Sink`].
pub(crate) struct Rules<S> {
    pub(crate) sink: S,
    /// Invariant: equals the sink's stored revision after every request;
    /// never decreases; `compact_revision <= revision`.
    pub(crate) revision: i64,
    /// Invariant: equals the sink's compact revision; never decreases.
    pub(crate) compact_revision: i64,
}

/// The write revision of the request being applied, and whether it changed
/// anything yet (then reads at "current" see that revision).
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Invariant: the store revision + 1.
    revision: i64,
    changed: bool,
}

impl<S: Sink> Rules<S> {
    /// See [`StoreWriter::apply`].
    pub(crate) fn apply(&mut self, request: &WriteRequest) -> ApplyResult {
        let mut pending = Pending {
            revision: self.revision + 1,
            changed: false,
        };
        let response = match request {
            WriteRequest::Put(put) => {
                if let Err(e) = check_put(&put.key, &put.value, put.ignore_value) {
                    return Ok(Err(e));
                }
                if put.ignore_value && self.sink.live_get(&put.key)?.is_none() {
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
                let path = txn_path(&self.sink, txn)?;
                let checked =
                    check_path(&self.sink, txn, &path, self.revision, self.compact_revision)?;
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
            self.sink.set_revision(self.revision)?;
        }
        Ok(Ok((self.revision, response)))
    }

    /// See [`StoreWriter::range`].
    pub(crate) fn range(
        &self,
        request: &RangeRequest,
    ) -> Result<Result<RangeResponse, KvError>, StoreError> {
        range::range(&self.sink, self.revision, self.compact_revision, request)
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
        let old = self.sink.live_get(&put.key)?;
        let old_value = match old {
            Some(entry) if put.prev_kv || put.ignore_value => {
                Some(live_value(&self.sink, &put.key, &entry)?)
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
        self.sink.put_history(
            &put.key,
            revision,
            entry.create_revision,
            entry.version,
            value,
        )?;
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
        let entries = self
            .sink
            .live_range(KeySpan::new(&delete.key, &delete.range_end))?;
        let mut prev_kvs = Vec::new();
        if delete.prev_kv {
            for (key, entry) in &entries {
                let value = live_value(&self.sink, key, entry)?;
                prev_kvs.push(entry.key_value(key.clone(), value));
            }
        }
        for (key, _) in &entries {
            self.sink.put_tombstone(key, pending.revision)?;
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
                    let answer = range::range(&self.sink, current, self.compact_revision, r)?;
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

    /// etcd's compaction (see [`Sink::compact`]). Reads at `revision` and
    /// above are unaffected.
    ///
    /// TODO: on redb alone this walks the whole history inside one apply
    /// (etcd compacts in the background in batches of 1000 keys). The
    /// service's layered store defers the walk to its background flush, so
    /// only the flush is long.
    fn compact(&mut self, request: &CompactionRequest) -> Result<Result<(), KvError>, StoreError> {
        let target = request.revision;
        if target > self.revision {
            return Ok(Err(KvError::FutureRevision));
        }
        if target <= self.compact_revision {
            return Ok(Err(KvError::Compacted));
        }
        self.sink.compact(target)?;
        self.compact_revision = target;
        Ok(Ok(()))
    }
}

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
    rules: Rules<RedbSink<'t>>,
    sessions: Table<'t, u64, &'static [u8]>,
    session_expiry: Table<'t, (u64, u64), ()>,
}

impl std::fmt::Debug for StoreWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter")
            .field("revision", &self.rules.revision)
            .field("compact_revision", &self.rules.compact_revision)
            .finish_non_exhaustive()
    }
}

impl<'t> StoreWriter<'t> {
    /// Opens the store's tables in `txn`, creating any that are missing (a
    /// fresh store is at revision 1, compact revision 0).
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        let sink = RedbSink::open(txn)?;
        let sessions = txn.open_table(SESSIONS).map_err(storage)?;
        let session_expiry = txn.open_table(SESSION_EXPIRY).map_err(storage)?;
        let (revision, compact_revision) = read_meta(&sink.meta)?;
        Ok(Self {
            rules: Rules {
                sink,
                revision,
                compact_revision,
            },
            sessions,
            session_expiry,
        })
    }

    /// The current store revision (1 for a fresh store).
    pub fn revision(&self) -> i64 {
        self.rules.revision
    }

    /// Reads below this revision fail with [`KvError::Compacted`] (0: none).
    pub fn compact_revision(&self) -> i64 {
        self.rules.compact_revision
    }

    /// Applies one write request (see [`ApplyResult`]). After a
    /// [`StoreError`] the request may be half-applied: drop the writer and
    /// the transaction uncommitted, and stop.
    pub fn apply(&mut self, request: &WriteRequest) -> ApplyResult {
        self.rules.apply(request)
    }

    /// A range read at the state of the transaction so far (etcd's rules,
    /// see [`RangeRequest`]).
    pub fn range(
        &self,
        request: &RangeRequest,
    ) -> Result<Result<RangeResponse, KvError>, StoreError> {
        self.rules.range(request)
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

    /// Removes the session of `client`, if any.
    pub(crate) fn remove_session(&mut self, client: u64) -> Result<(), StoreError> {
        sessions::remove(&mut self.sessions, &mut self.session_expiry, client)
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
        debug_assert!(self.rules.compact_revision <= self.rules.revision);
        drop(self);
        Ok(())
    }

    /// Walks every table and checks the layout's invariants (see
    /// `store/mod.rs`). O(store size): for tests and after loading a
    /// snapshot, never on the apply path.
    pub fn check_invariants(&self) -> Result<(), StoreError> {
        invariants::check(
            &self.rules.sink.history,
            &self.rules.sink.keys,
            &self.sessions,
            &self.session_expiry,
            self.rules.revision,
            self.rules.compact_revision,
        )
    }

    /// The rules over this transaction's tables, for the layered store's
    /// flush.
    pub(crate) fn rules_mut(&mut self) -> &mut Rules<RedbSink<'t>> {
        &mut self.rules
    }
}
