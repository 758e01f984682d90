//! The layered store: applied writes live in memory first and reach redb in
//! one write transaction per interval, off the apply path (etcd's backend
//! batches the same way, with its read buffer in front).
//!
//! # Shape
//!
//! The applied state is a [`StateView`]: a redb read snapshot (the *base*,
//! the last flushed state) plus the in-memory [`Layer`]s of the apply
//! batches since, oldest first. Each apply batch writes one new layer
//! through [`LayerSink`] (reading through the layers and the base) and
//! publishes it: readers take the published `Arc<StateView>` and so see
//! each batch atomically, never half. When no reader holds the newest
//! layer (a write load: a reader holds a view for one read), the batch's
//! records move into it in place, under the lock readers take views with;
//! otherwise the view gets the batch as a new layer, and small layers merge
//! into copies. A layer a reader can see is never changed.
//!
//! A layer holds, per key written, its new history records; the newest
//! is also the key's live entry (a tombstone: deleted). The write rules
//! read live entries from the batch's own layer, else from the apply
//! side's index of every live key (`live_index.rs`), which the batch
//! updates as it finishes; readers go through the layers to the base.
//!
//! A flush writes a prefix of the layers, and the applied log id they end
//! at, into one redb write transaction (`RedbStateMachineStore`), on a
//! thread of its own; then it publishes a `StateView` whose base is a read
//! snapshot taken after that commit, without the flushed layers. A reader
//! holding the older view keeps the older base, so each view is consistent
//! on its own: the base and the layers never overlap and never leave a gap.
//!
//! Invariants:
//! - Layers cover consecutive log entries; every revision in a layer is
//!   above every revision in the layers before it and in the base.
//! - The layers being flushed are a prefix (applied index at most the
//!   flush's boundary); layers are merged only above the boundary.
//! - The base's applied log id is durable: after a crash the state machine
//!   restarts there and Rafter applies the entries since again.
//!
//! Compaction in a layer only records its target and the new compact
//! revision; the flush does the history walk. Reads at or above the compact
//! revision give the same answers with or without the walk (they see the
//! newest record at or below their revision, which compaction keeps), and
//! reads below it fail by the compact revision.

use std::cmp::Ordering;
use std::collections::{btree_map, BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use bytes::Bytes;
use rafter::{LogId, StateMachineError};
use rafter_redb::RedbStateMachineStore;
use redb::{Durability, ReadOnlyTable, ReadableDatabase, ReadableTable};
use smallvec::SmallVec;

use super::error::{storage, KvError, StoreError};
use super::live_index::LiveIndex;
use super::range::KeySpan;
use super::reader::{ReadTables, StoreReader};
use super::request::{RangeRequest, RangeResponse, WriteRequest};
use super::sessions::Session;
use super::source::{Source, Tables};
use super::tables::{
    decode_session, rev_key, HistoryRecord, HistoryRecordRef, KeyEntry, LiveEntry,
};
use super::writer::{ApplyResult, Rules, Sink, StoreWriter};
use super::RECORD_BYTES_MAX;

/// One history record in memory; the value shared, not copied, between
/// layers and readers.
#[derive(Debug, Clone)]
enum Rec {
    Put {
        create_revision: i64,
        version: i64,
        value: Bytes,
    },
    Tombstone,
}

impl Rec {
    fn record(&self) -> HistoryRecord {
        match self {
            Rec::Put {
                create_revision,
                version,
                value,
            } => HistoryRecord::Put {
                create_revision: *create_revision,
                version: *version,
                value: value.to_vec(),
            },
            Rec::Tombstone => HistoryRecord::Tombstone,
        }
    }

    /// The key's live entry when this record, at `revision`, is its newest
    /// (`None`: a tombstone, deleted).
    fn live_entry(&self, revision: i64) -> Option<LiveEntry> {
        match self {
            Rec::Put {
                create_revision,
                version,
                ..
            } => Some(LiveEntry {
                create_revision: *create_revision,
                mod_revision: revision,
                version: *version,
            }),
            Rec::Tombstone => None,
        }
    }
}

/// A key's new records in one layer, ascending by revision. Almost always
/// one: inline, so cloning and merging layers allocates nothing per key.
type Records = SmallVec<[(i64, Rec); 1]>;

/// The key's live entry after `records`: its newest record decides it.
fn head(records: &Records) -> Option<LiveEntry> {
    records
        .last()
        .and_then(|(revision, record)| record.live_entry(*revision))
}

/// The changes of one or more consecutive apply batches, in memory.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layer {
    /// Per key written, its new records in ascending revision order (never
    /// empty). The newest one is also the key's live entry (a tombstone:
    /// deleted), so the layer keeps no map of live entries beside it.
    history: BTreeMap<Bytes, Records>,
    /// `None`: the session was removed (expired).
    sessions: BTreeMap<u64, Option<Session>>,
    /// The store revision and compact revision after this layer.
    revision: i64,
    compact_revision: i64,
    /// The highest compaction applied in this layer whose history walk is
    /// still to be done (0: none).
    compact_target: i64,
    /// The log entries covered: `first ..= applied.index`.
    first: u64,
    applied: LogId,
    /// Records held: the measure for merging.
    size: usize,
}

impl Layer {
    fn new(revision: i64, compact_revision: i64, first: u64) -> Self {
        Self {
            revision,
            compact_revision,
            first,
            ..Self::default()
        }
    }

    /// Moves `newer`'s changes into this layer, which holds the ones just
    /// before them: O(log n) a key, where `merged_onto` copies both.
    fn absorb(&mut self, newer: Layer) {
        for (key, records) in newer.history {
            match self.history.entry(key) {
                btree_map::Entry::Vacant(vacant) => {
                    vacant.insert(records);
                }
                btree_map::Entry::Occupied(occupied) => occupied.into_mut().extend(records),
            }
        }
        self.sessions.extend(newer.sessions);
        self.revision = newer.revision;
        self.compact_revision = newer.compact_revision;
        self.compact_target = self.compact_target.max(newer.compact_target);
        self.applied = newer.applied;
        self.size += newer.size;
    }

    /// `older` then `self`, as one layer.
    ///
    /// The two key runs are joined in order and the map built from the
    /// sorted result: one comparison a key, where inserting the newer keys
    /// into a copy of the older map would search for each.
    fn merged_onto(self, older: &Layer) -> Layer {
        let mut newer = self.history.into_iter().peekable();
        let mut joined = Vec::with_capacity(older.history.len() + newer.len());
        for (key, records) in &older.history {
            while let Some((next, _)) = newer.peek() {
                if next >= key {
                    break;
                }
                joined.extend(newer.next());
            }
            let mut records = records.clone();
            if newer.peek().is_some_and(|(next, _)| next == key) {
                records.extend(newer.next().into_iter().flat_map(|(_, r)| r));
            }
            joined.push((key.clone(), records));
        }
        joined.extend(newer);
        let mut sessions = older.sessions.clone();
        sessions.extend(self.sessions);
        Layer {
            // Sorted and unique: built without comparisons beyond a check.
            history: joined.into_iter().collect(),
            sessions,
            revision: self.revision,
            compact_revision: self.compact_revision,
            compact_target: older.compact_target.max(self.compact_target),
            first: older.first,
            applied: self.applied,
            size: older.size + self.size,
        }
    }
}

/// The applied state as readers see it: a flushed redb snapshot and the
/// layers since (see the module doc).
pub(crate) struct StateView {
    /// `None`: a database no writer has opened (reads as a fresh store).
    pub(crate) tables: Option<Arc<ReadTables>>,
    /// Oldest first.
    pub(crate) layers: Vec<Arc<Layer>>,
    /// The state after the last layer (or the base's, with no layers).
    pub(crate) revision: i64,
    pub(crate) compact_revision: i64,
    pub(crate) applied: LogId,
    /// The base's own revisions, for checking its invariants.
    pub(crate) base_revision: i64,
    pub(crate) base_compact_revision: i64,
}

impl std::fmt::Debug for StateView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateView")
            .field("layers", &self.layers.len())
            .field("revision", &self.revision)
            .field("compact_revision", &self.compact_revision)
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

impl StateView {
    /// The state with `top` (a batch being written) over it.
    pub(crate) fn source<'a>(&'a self, top: Option<&'a Layer>) -> Merged<'a> {
        Merged {
            tables: self.tables.as_deref(),
            layers: &self.layers,
            top,
        }
    }

    /// The session of `client` in the layers, else in the base.
    pub(crate) fn session(&self, client: u64) -> Result<Option<Session>, StoreError> {
        for layer in self.layers.iter().rev() {
            if let Some(session) = layer.sessions.get(&client) {
                return Ok(session.clone());
            }
        }
        match &self.tables {
            Some(t) => super::sessions::get(&t.sessions, client),
            None => Ok(None),
        }
    }
}

/// Reads through the layers (newest first) down to the base.
pub(crate) struct Merged<'a> {
    tables: Option<&'a ReadTables>,
    layers: &'a [Arc<Layer>],
    top: Option<&'a Layer>,
}

type BaseTables<'a> = Tables<
    'a,
    ReadOnlyTable<(u64, &'static [u8]), &'static [u8]>,
    ReadOnlyTable<&'static [u8], &'static [u8]>,
>;

impl<'a> Merged<'a> {
    fn newest_first(&self) -> impl Iterator<Item = &'a Layer> + 'a {
        self.top
            .into_iter()
            .chain(self.layers.iter().rev().map(|l| &**l))
    }

    fn oldest_first(&self) -> impl Iterator<Item = &'a Layer> + 'a {
        self.layers.iter().map(|l| &**l).chain(self.top)
    }

    fn base(&self) -> Option<BaseTables<'a>> {
        self.tables.map(|t| Tables {
            history: &t.history,
            keys: &t.keys,
        })
    }
}

impl Source for Merged<'_> {
    fn live_get(&self, key: &[u8]) -> Result<Option<LiveEntry>, StoreError> {
        for layer in self.newest_first() {
            if let Some(records) = layer.history.get(key) {
                return Ok(head(records));
            }
        }
        match self.base() {
            Some(base) => base.live_get(key),
            None => Ok(None),
        }
    }

    fn live_range(&self, span: KeySpan<'_>) -> Result<Vec<(Vec<u8>, LiveEntry)>, StoreError> {
        if let KeySpan::Single(key) = span {
            return Ok(self
                .live_get(key)?
                .map(|entry| (key.to_vec(), entry))
                .into_iter()
                .collect());
        }
        let Some(bounds) = span.bounds() else {
            return Ok(Vec::new());
        };
        let base = match self.base() {
            Some(base) => base.live_range(span)?,
            None => Vec::new(),
        };
        let touched = self
            .oldest_first()
            .any(|l| l.history.range::<[u8], _>(bounds).next().is_some());
        if !touched {
            return Ok(base);
        }
        let mut merged: BTreeMap<Vec<u8>, LiveEntry> = base.into_iter().collect();
        for layer in self.oldest_first() {
            for (key, records) in layer.history.range::<[u8], _>(bounds) {
                match head(records) {
                    Some(entry) => merged.insert(key.to_vec(), entry),
                    None => merged.remove(key.as_ref()),
                };
            }
        }
        Ok(merged.into_iter().collect())
    }

    fn history_get(&self, key: &[u8], revision: i64) -> Result<Option<HistoryRecord>, StoreError> {
        for layer in self.newest_first() {
            if let Some(records) = layer.history.get(key) {
                if let Ok(i) = records.binary_search_by_key(&revision, |(r, _)| *r) {
                    return Ok(Some(records[i].1.record()));
                }
            }
        }
        match self.base() {
            Some(base) => base.history_get(key, revision),
            None => Ok(None),
        }
    }

    fn record_at(
        &self,
        key: &[u8],
        revision: i64,
    ) -> Result<Option<(i64, HistoryRecord)>, StoreError> {
        // Newer layers hold only newer revisions: the first match wins.
        for layer in self.newest_first() {
            if let Some(records) = layer.history.get(key) {
                let below = records.partition_point(|(r, _)| *r <= revision);
                if below > 0 {
                    let (r, record) = &records[below - 1];
                    return Ok(Some((*r, record.record())));
                }
            }
        }
        match self.base() {
            Some(base) => base.record_at(key, revision),
            None => Ok(None),
        }
    }

    fn next_history_key(&self, from: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut next = match self.base() {
            Some(base) => base.next_history_key(from)?,
            None => None,
        };
        for layer in self.oldest_first() {
            let found = layer
                .history
                .range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
                .next();
            if let Some((key, _)) = found {
                if next.as_deref().is_none_or(|n| key.as_ref() < n) {
                    next = Some(key.to_vec());
                }
            }
        }
        Ok(next)
    }
}

/// One apply batch's writes: into a new layer over a published view.
pub(crate) struct LayerSink {
    below: Arc<StateView>,
    top: Layer,
    /// The live keys of `below` (the store's index, shared for the batch).
    live: Arc<LiveIndex>,
}

impl LayerSink {
    fn source(&self) -> Merged<'_> {
        self.below.source(Some(&self.top))
    }
}

/// Live entries come from the batch's layer, else from the index: one
/// lookup, where the layers and redb's key table below would take one each.
impl Source for LayerSink {
    fn live_get(&self, key: &[u8]) -> Result<Option<LiveEntry>, StoreError> {
        Ok(match self.top.history.get(key) {
            Some(records) => head(records),
            None => self.live.get(key),
        })
    }

    fn live_range(&self, span: KeySpan<'_>) -> Result<Vec<(Vec<u8>, LiveEntry)>, StoreError> {
        let Some(bounds) = span.bounds() else {
            return Ok(Vec::new());
        };
        let mut below = self.live.range(span).peekable();
        let mut top = self.top.history.range::<[u8], _>(bounds).peekable();
        let mut out = Vec::new();
        // A merge of two sorted runs; the batch's entry of a key wins.
        loop {
            let order = match (below.peek(), top.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((b, _)), Some((t, _))) => b.cmp(t),
            };
            if order == Ordering::Equal {
                below.next();
            }
            if order == Ordering::Less {
                if let Some((key, entry)) = below.next() {
                    out.push((key.to_vec(), *entry));
                }
            } else if let Some((key, records)) = top.next() {
                if let Some(entry) = head(records) {
                    out.push((key.to_vec(), entry));
                }
            }
        }
        Ok(out)
    }

    fn history_get(&self, key: &[u8], revision: i64) -> Result<Option<HistoryRecord>, StoreError> {
        self.source().history_get(key, revision)
    }

    fn record_at(
        &self,
        key: &[u8],
        revision: i64,
    ) -> Result<Option<(i64, HistoryRecord)>, StoreError> {
        self.source().record_at(key, revision)
    }

    fn next_history_key(&self, from: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.source().next_history_key(from)
    }
}

impl LayerSink {
    fn push_record(&mut self, key: &[u8], revision: i64, record: Rec) {
        self.top.size += 1;
        let records = match self.top.history.get_mut(key) {
            Some(records) => records,
            None => self
                .top
                .history
                .entry(Bytes::copy_from_slice(key))
                .or_default(),
        };
        // A txn may put and delete one key at one revision (see
        // `check_intervals`): the later op's record stands, as in redb.
        match records.last_mut() {
            Some((r, last)) if *r == revision => *last = record,
            _ => records.push((revision, record)),
        }
    }
}

impl Sink for LayerSink {
    fn put_history(
        &mut self,
        key: &[u8],
        revision: i64,
        create_revision: i64,
        version: i64,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let record = Rec::Put {
            create_revision,
            version,
            value: Bytes::copy_from_slice(value),
        };
        self.push_record(key, revision, record);
        Ok(())
    }

    fn put_tombstone(&mut self, key: &[u8], revision: i64) -> Result<(), StoreError> {
        self.push_record(key, revision, Rec::Tombstone);
        Ok(())
    }

    fn set_revision(&mut self, revision: i64) -> Result<(), StoreError> {
        self.top.revision = revision;
        Ok(())
    }

    fn compact(&mut self, target: i64) -> Result<(), StoreError> {
        self.top.compact_revision = target;
        self.top.compact_target = self.top.compact_target.max(target);
        Ok(())
    }
}

/// Every session, in memory on the apply side (the apply path reads one per
/// tagged write); changes also go into the batch's layer for the flush.
#[derive(Debug, Default)]
struct Sessions {
    by_client: HashMap<u64, Session>,
    /// `(last_write_ms, client)` for each session: expiry by age.
    by_age: BTreeSet<(u64, u64)>,
}

impl Sessions {
    fn load(tables: Option<&ReadTables>) -> Result<Self, StoreError> {
        let mut out = Self::default();
        let Some(t) = tables else {
            return Ok(out);
        };
        for item in t.sessions.iter().map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            let session = decode_session(k.value(), v.value())?;
            out.by_age.insert((session.last_write_ms, k.value()));
            out.by_client.insert(k.value(), session);
        }
        Ok(out)
    }
}

/// The writer of one apply batch (see [`LayeredStore::batch`]): the same
/// rules as [`StoreWriter`], into a layer.
pub struct Batch<'s> {
    rules: Rules<LayerSink>,
    store: &'s mut LayeredStore,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("revision", &self.rules.revision)
            .finish_non_exhaustive()
    }
}

impl Batch<'_> {
    /// Applies one write request, as [`StoreWriter::apply`].
    pub fn apply(&mut self, request: &WriteRequest) -> ApplyResult {
        self.rules.apply(request)
    }

    /// A range read at the state of the batch so far.
    pub fn range(
        &self,
        request: &RangeRequest,
    ) -> Result<Result<RangeResponse, KvError>, StoreError> {
        self.rules.range(request)
    }

    /// The session of `client`, if it has one.
    pub fn session(&self, client: u64) -> Option<&Session> {
        self.store.sessions.by_client.get(&client)
    }

    /// Stores the session of `client`, replacing any; as
    /// [`StoreWriter::set_session`], refuses one whose encoding could be
    /// over [`RECORD_BYTES_MAX`].
    pub fn set_session(&mut self, client: u64, session: Session) -> Result<(), StoreError> {
        // A session's encoding is its response plus three varints.
        let len = session.response.len() + 32;
        if len > RECORD_BYTES_MAX {
            return Err(StoreError::SessionTooLarge {
                len,
                limit: RECORD_BYTES_MAX,
            });
        }
        let sessions = &mut self.store.sessions;
        if let Some(old) = sessions.by_client.insert(client, session.clone()) {
            sessions.by_age.remove(&(old.last_write_ms, client));
        }
        sessions.by_age.insert((session.last_write_ms, client));
        self.rules.sink.top.sessions.insert(client, Some(session));
        Ok(())
    }

    /// Removes the sessions whose last write is more than `ttl_ms` before
    /// `now_ms`, as [`StoreWriter::expire_sessions`].
    pub fn expire_sessions(&mut self, now_ms: u64, ttl_ms: u64) -> u64 {
        let cutoff = now_ms.saturating_sub(ttl_ms);
        let mut removed = 0;
        let sessions = &mut self.store.sessions;
        while let Some(&(ms, client)) = sessions.by_age.first() {
            if ms >= cutoff {
                break;
            }
            sessions.by_age.pop_first();
            sessions.by_client.remove(&client);
            self.rules.sink.top.sessions.insert(client, None);
            removed += 1;
        }
        removed
    }

    /// Ends the batch at log id `last` and publishes it to readers.
    pub fn finish(self, last: LogId) {
        let Batch { rules, store, .. } = self;
        // The batch's hold on the view and the index ends first: both are
        // then the store's alone, and updated in place.
        let LayerSink {
            mut top,
            live,
            below,
        } = rules.sink;
        drop((live, below));
        top.revision = rules.revision;
        top.compact_revision = rules.compact_revision;
        top.applied = last;
        // The batch's copy is gone: the store's is the only one, updated in
        // place (a clone would be a bug's cost, not a wrong answer).
        debug_assert_eq!(Arc::strong_count(&store.live), 1);
        let live = Arc::make_mut(&mut store.live);
        for (key, records) in &top.history {
            live.set(key, head(records));
        }
        store.publish(top);
    }
}

/// The flush thread: one for the store's life (a thread per flush spread
/// redb's page buffers over glibc's per-thread malloc arenas), taking one
/// job at a time.
struct Flusher {
    /// `None` once closing.
    jobs: Option<mpsc::Sender<Vec<Arc<Layer>>>>,
    done: mpsc::Receiver<Result<(), StateMachineError>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    fn start(
        db: Arc<RedbStateMachineStore>,
        published: Arc<Mutex<Arc<StateView>>>,
    ) -> Result<Self, StateMachineError> {
        let (jobs, job_queue) = mpsc::channel::<Vec<Arc<Layer>>>();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("kv-flush".into())
            .spawn(move || {
                for layers in job_queue {
                    let result = flush(&db, &published, &layers);
                    drop(layers);
                    if done_tx.send(result).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| StateMachineError::Io(format!("starting the flush thread: {e}")))?;
        Ok(Self {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }
}

/// The key space of the service: layers in memory over the state machine's
/// redb store (see the module doc). Owned by the apply side; readers use
/// [`LayeredStore::reads`].
pub struct LayeredStore {
    db: Arc<RedbStateMachineStore>,
    published: Arc<Mutex<Arc<StateView>>>,
    sessions: Sessions,
    /// Every live key of the published state (`live_index.rs`).
    live: Arc<LiveIndex>,
    /// The unflushed layers above the running flush's boundary, oldest
    /// first: the ones this side may still merge.
    tail: Vec<Arc<Layer>>,
    flusher: Flusher,
    /// The boundary (last applied index) of the flush sent to the thread
    /// and not yet collected.
    flushing: Option<u64>,
}

impl std::fmt::Debug for LayeredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayeredStore")
            .field("view", &self.view())
            .field("tail", &self.tail.len())
            .finish_non_exhaustive()
    }
}

/// Readers' handle on the published state: cheap to clone.
#[derive(Debug, Clone)]
pub struct LayeredReads {
    published: Arc<Mutex<Arc<StateView>>>,
}

impl LayeredReads {
    /// The applied state as of the last finished batch: a consistent view.
    pub fn view(&self) -> StoreReader {
        StoreReader::over(current(&self.published))
    }

    /// The log id of the last finished batch.
    pub fn applied(&self) -> LogId {
        current(&self.published).applied
    }
}

fn current(published: &Mutex<Arc<StateView>>) -> Arc<StateView> {
    published
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

fn sm_error(error: StoreError) -> StateMachineError {
    StateMachineError::Io(format!("store: {error}"))
}

/// The base view of `db` as committed now, with `applied` as its log id.
fn base_view(db: &RedbStateMachineStore) -> Result<StateView, StateMachineError> {
    let applied = db.applied()?;
    let txn = db
        .database()
        .begin_read()
        .map_err(|e| StateMachineError::Io(e.to_string()))?;
    let reader = StoreReader::open(&txn).map_err(sm_error)?;
    let (revision, compact_revision) = (reader.revision(), reader.compact_revision());
    Ok(StateView {
        tables: reader.into_tables(),
        layers: Vec::new(),
        revision,
        compact_revision,
        applied,
        base_revision: revision,
        base_compact_revision: compact_revision,
    })
}

impl LayeredStore {
    /// Opens the key space in `db`, creating its tables if needed. Blocks.
    pub fn open(db: Arc<RedbStateMachineStore>) -> Result<Self, StateMachineError> {
        let txn = db
            .database()
            .begin_write()
            .map_err(|e| StateMachineError::Io(e.to_string()))?;
        StoreWriter::open(&txn)
            .and_then(|writer| writer.finish())
            .map_err(sm_error)?;
        txn.commit()
            .map_err(|e| StateMachineError::Io(e.to_string()))?;
        let view = base_view(&db)?;
        let sessions = Sessions::load(view.tables.as_deref()).map_err(sm_error)?;
        let live = Arc::new(LiveIndex::load(view.tables.as_deref()).map_err(sm_error)?);
        let published = Arc::new(Mutex::new(Arc::new(view)));
        let flusher = Flusher::start(db.clone(), published.clone())?;
        Ok(Self {
            db,
            published,
            sessions,
            live,
            tail: Vec::new(),
            flusher,
            flushing: None,
        })
    }

    /// The redb store underneath (flushed state only).
    pub fn database(&self) -> &Arc<RedbStateMachineStore> {
        &self.db
    }

    /// The readers' handle.
    pub fn reads(&self) -> LayeredReads {
        LayeredReads {
            published: self.published.clone(),
        }
    }

    /// The published state.
    pub fn view(&self) -> StoreReader {
        StoreReader::over(current(&self.published))
    }

    /// The log id of the last finished batch.
    pub fn applied(&self) -> LogId {
        current(&self.published).applied
    }

    /// Starts the batch of log entries from `first` on.
    pub fn batch(&mut self, first: u64) -> Batch<'_> {
        let below = current(&self.published);
        let top = Layer::new(below.revision, below.compact_revision, first);
        let rules = Rules {
            revision: below.revision,
            compact_revision: below.compact_revision,
            sink: LayerSink {
                below,
                top,
                live: self.live.clone(),
            },
        };
        Batch { rules, store: self }
    }

    fn publish(&mut self, top: Layer) {
        let Err(top) = self.absorb(top) else {
            return;
        };
        let mut layer = top;
        // Merge while the layer before is not much bigger: O(log n) layers,
        // each record copied O(log n) times.
        while let Some(older) = self.tail.last() {
            if older.size > 2 * layer.size.max(1) {
                break;
            }
            layer = layer.merged_onto(older);
            self.tail.pop();
        }
        self.tail.push(Arc::new(layer));
        let boundary = self.flushing.unwrap_or(0);
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let last = self
            .tail
            .last()
            .map(|l| (l.revision, l.compact_revision, l.applied));
        let Some((revision, compact_revision, applied)) = last else {
            unreachable!("a layer was just pushed")
        };
        let layers: Vec<Arc<Layer>> = published
            .layers
            .iter()
            .filter(|l| l.applied.index <= boundary)
            .chain(&self.tail)
            .cloned()
            .collect();
        *published = Arc::new(StateView {
            tables: published.tables.clone(),
            layers,
            revision,
            compact_revision,
            applied,
            base_revision: published.base_revision,
            base_compact_revision: published.base_compact_revision,
        });
    }

    /// Publishes `top` by moving it into the newest unflushed layer, when
    /// no reader's view holds that layer (under a load of writes, always:
    /// a reader holds a view for one read) and the layer stays under half
    /// the one before it, the shape `publish`'s merges keep. Gives `top`
    /// back otherwise.
    ///
    /// Under the lock, so readers see the view before or after, never the
    /// layer half moved; the lock is held for the batch's keys only.
    fn absorb(&mut self, top: Layer) -> Result<(), Layer> {
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (before, newest) = match self.tail.as_mut_slice() {
            [.., before, newest] => (Some(before.size), newest),
            [newest] => (None, newest),
            [] => return Err(top),
        };
        let stays_smaller = before.is_none_or(|size| size > 2 * (newest.size + top.size));
        // The published view holds the tail, its last layer the newest.
        let Some(view) = Arc::get_mut(&mut published) else {
            return Err(top);
        };
        if !stays_smaller || !view.layers.last().is_some_and(|l| Arc::ptr_eq(l, newest)) {
            return Err(top);
        }
        view.layers.pop();
        let Some(layer) = Arc::get_mut(newest) else {
            // An older view a reader holds has it.
            view.layers.push(Arc::clone(newest));
            return Err(top);
        };
        layer.absorb(top);
        view.revision = layer.revision;
        view.compact_revision = layer.compact_revision;
        view.applied = layer.applied;
        view.layers.push(Arc::clone(newest));
        Ok(())
    }

    /// Collects a finished background flush (a failed one stops the node)
    /// and, if none is running, starts one of every unflushed layer.
    /// Returns whether one started. Applies go on meanwhile; readers see
    /// the same state throughout.
    pub fn flush_in_background(&mut self) -> Result<bool, StateMachineError> {
        self.collect(false)?;
        if self.flushing.is_some() {
            return Ok(false);
        }
        let Some(boundary) = self.tail.last().map(|l| l.applied.index) else {
            return Ok(false);
        };
        let layers = std::mem::take(&mut self.tail);
        let sent = self.flusher.jobs.as_ref().map(|jobs| jobs.send(layers));
        if !matches!(sent, Some(Ok(()))) {
            return Err(StateMachineError::Io("the flush thread stopped".into()));
        }
        self.flushing = Some(boundary);
        Ok(true)
    }

    /// Whether a background flush is running (collecting a finished one).
    pub fn flush_running(&mut self) -> Result<bool, StateMachineError> {
        self.collect(false)?;
        Ok(self.flushing.is_some())
    }

    /// Flushes every layer now: waits for a running flush, then writes the
    /// rest. Afterwards redb holds the whole applied state (snapshots are
    /// built from it).
    pub fn flush(&mut self) -> Result<(), StateMachineError> {
        self.collect(true)?;
        let layers = std::mem::take(&mut self.tail);
        if !layers.is_empty() {
            flush(&self.db, &self.published, &layers)?;
        }
        Ok(())
    }

    fn collect(&mut self, wait: bool) -> Result<(), StateMachineError> {
        if self.flushing.is_none() {
            return Ok(());
        }
        let result = if wait {
            self.flusher.done.recv().map_err(|_| ())
        } else {
            match self.flusher.done.try_recv() {
                Ok(result) => Ok(result),
                Err(mpsc::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::TryRecvError::Disconnected) => Err(()),
            }
        };
        self.flushing = None;
        result.map_err(|()| StateMachineError::Io("the flush thread stopped".into()))?
    }

    /// Re-reads everything from redb after it was replaced underneath (a
    /// snapshot install); call [`Self::flush`] before replacing it.
    pub fn reload(&mut self) -> Result<(), StateMachineError> {
        self.collect(true)?;
        self.tail.clear();
        let view = base_view(&self.db)?;
        self.sessions = Sessions::load(view.tables.as_deref()).map_err(sm_error)?;
        self.live = Arc::new(LiveIndex::load(view.tables.as_deref()).map_err(sm_error)?);
        *self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(view);
        Ok(())
    }

    /// Flushes, then checks the layout's invariants over redb (O(store
    /// size), for tests) and that the in-memory sessions match it.
    pub fn check_invariants(&mut self) -> Result<(), StateMachineError> {
        self.flush()?;
        let view = current(&self.published);
        StoreReader::over(view.clone())
            .check_invariants()
            .map_err(sm_error)?;
        let stored = Sessions::load(view.tables.as_deref()).map_err(sm_error)?;
        if stored.by_client != self.sessions.by_client || stored.by_age != self.sessions.by_age {
            return Err(sm_error(StoreError::Corrupt {
                table: "kv_sessions",
                detail: "the sessions in memory differ from the stored ones".into(),
            }));
        }
        let stored = LiveIndex::load(view.tables.as_deref()).map_err(sm_error)?;
        if stored != *self.live {
            return Err(sm_error(StoreError::Corrupt {
                table: "kv_keys",
                detail: format!(
                    "the live index in memory ({} keys) differs from the stored one ({} keys)",
                    self.live.len(),
                    stored.len()
                ),
            }));
        }
        Ok(())
    }
}

impl Drop for LayeredStore {
    /// A clean close flushes what is left (and waits for a running flush,
    /// which holds the database): a reopen then starts where this ended.
    /// A crash instead loses the layers, which Rafter applies again.
    fn drop(&mut self) {
        if let Err(error) = self.flush() {
            tracing::warn!(%error, "flushing the key space on close failed");
        }
        // The thread ends when its queue closes; it holds the database.
        self.flusher.jobs = None;
        if let Some(thread) = self.flusher.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes `layers` (consecutive, oldest first) and the log id they end at
/// in one durable redb transaction, then publishes a view over the new
/// base without them.
fn flush(
    db: &RedbStateMachineStore,
    published: &Mutex<Arc<StateView>>,
    layers: &[Arc<Layer>],
) -> Result<(), StateMachineError> {
    let (Some(first), Some(last)) = (layers.first(), layers.last()) else {
        return Ok(());
    };
    db.apply_batch_with(first.first, last.applied, Durability::Immediate, |txn| {
        let mut writer = StoreWriter::open(txn).map_err(sm_error)?;
        let stored_compact = writer.compact_revision();
        write_layers(&mut writer, layers).map_err(sm_error)?;
        let target = layers.iter().map(|l| l.compact_target).max().unwrap_or(0);
        let sink = &mut writer.rules_mut().sink;
        sink.set_revision(last.revision).map_err(sm_error)?;
        if target > stored_compact {
            sink.compact(target).map_err(sm_error)?;
        }
        writer.finish().map_err(sm_error)
    })?;
    let base = base_view(db)?;
    let mut published = published.lock().unwrap_or_else(PoisonError::into_inner);
    let layers = published
        .layers
        .iter()
        .filter(|l| l.applied.index > last.applied.index)
        .cloned()
        .collect();
    *published = Arc::new(StateView {
        tables: base.tables,
        layers,
        revision: published.revision,
        compact_revision: published.compact_revision,
        applied: published.applied,
        base_revision: base.revision,
        base_compact_revision: base.compact_revision,
    });
    Ok(())
}

/// Writes `layers` into redb: every history record, and the head of each
/// key's chain and the last session of each client (a key written in
/// several layers gets one `kv_keys` write).
///
/// The history records go in in revision order: they all sort after every
/// record in redb (the layers are above the base), so they fill a few new
/// pages at the end of `kv_history_by_revision` instead of dirtying one
/// leaf per key.
fn write_layers(writer: &mut StoreWriter<'_>, layers: &[Arc<Layer>]) -> Result<(), StoreError> {
    let mut by_key: BTreeMap<&[u8], Vec<(i64, &Rec)>> = BTreeMap::new();
    let mut sessions: BTreeMap<u64, &Option<Session>> = BTreeMap::new();
    let mut records_count = 0;
    for layer in layers {
        for (key, records) in &layer.history {
            records_count += records.len();
            by_key
                .entry(key.as_ref())
                .or_default()
                .extend(records.iter().map(|(revision, record)| (*revision, record)));
        }
        sessions.extend(layer.sessions.iter().map(|(c, s)| (*c, s)));
    }
    let sink = &mut writer.rules_mut().sink;
    // (revision, key, prev, record) for every record.
    let mut appends: Vec<(i64, &[u8], u64, &Rec)> = Vec::with_capacity(records_count);
    for (key, records) in &by_key {
        let (Some(&(first, _)), Some(&(last, newest))) = (records.first(), records.last()) else {
            continue;
        };
        let head = match newest.live_entry(last) {
            Some(entry) => KeyEntry::Live(entry),
            None => KeyEntry::Deleted { revision: last },
        };
        // The layers are above the base: the base's newest record of the
        // key, which the new head replaces, is below the first (an error
        // if it is not).
        let mut prev = sink.replace_key_entry_below(key, head, first)?;
        for &(revision, record) in records {
            // Invariant (module doc): revisions increase across layers.
            debug_assert!(rev_key(revision) > prev, "{key:?}: {revision} after {prev}");
            appends.push((revision, key, prev, record));
            prev = rev_key(revision);
        }
    }
    appends.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    for (revision, key, prev, record) in appends {
        let record = match record {
            Rec::Put {
                create_revision,
                version,
                value,
            } => HistoryRecordRef::Put {
                create_revision: *create_revision,
                version: *version,
                value,
            },
            Rec::Tombstone => HistoryRecordRef::Tombstone,
        };
        sink.insert_record(revision, key, prev, record)?;
    }
    for (client, session) in sessions {
        match session {
            Some(session) => writer.set_session(client, session)?,
            None => writer.remove_session(client)?,
        }
    }
    Ok(())
}
