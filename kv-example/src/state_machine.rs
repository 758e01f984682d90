//! `KvStateMachine`: the `rafter::StateMachine` of the service. Each applied
//! batch of entries becomes one in-memory layer of the store
//! (`store::LayeredStore`), visible to reads at once; the layers reach redb
//! in one write transaction per interval, on a thread of their own, with
//! the applied log id they end at (`rafter_redb::RedbStateMachineStore`),
//! so a restart resumes exactly after the last flushed entry and Rafter
//! applies the rest again from its log.
//!
//! Client sessions give exactly-once writes: a write tagged with a
//! sequence number its client already applied answers the remembered
//! response and changes nothing.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rafter::{codec, Committed, CommittedPayload, LogId, StateMachine, StateMachineError};
use rafter_redb::RedbStateMachineStore;

use crate::command::{CommandV1, KvCommand, KvResponse, WriteOutcome};
use crate::snapshots::Snapshots;
use crate::store::{Batch, KvError, LayeredReads, LayeredStore, Session, StoreError, StoreReader};

/// Applied batches are flushed to redb, durably, in one transaction at
/// least this often: after a crash, Rafter applies the entries since the
/// last flush again from its log (applies are deterministic, and the log
/// keeps them until a durable snapshot covers them). etcd's backend
/// commits every 100 ms; 500 ms measured about 10% more puts/s than 100 ms
/// (set F in benches/README.md) when the history was ordered by key and
/// each put dirtied its own B-tree page. The history is now keyed by
/// revision (`store/mod.rs`), so a flush appends and costs about one
/// `kv_keys` leaf per distinct key written: a shorter interval may now cost
/// less than it did. Not re-measured.
const DURABLE_INTERVAL: Duration = Duration::from_millis(500);
/// ... or every this many entries, which bounds the replay after a crash.
const DURABLE_ENTRIES_MAX: u64 = 10_000;
/// Entries applied and not flushed past which an apply waits for the
/// running flush (a disk slower than the applies would otherwise let the
/// layers grow without bound).
const UNFLUSHED_ENTRIES_MAX: u64 = 8 * DURABLE_ENTRIES_MAX;

/// redb's page cache for the key-value store (redb's default is 1 GiB). The
/// writes of the last interval are in memory as layers, so the apply path
/// and current reads of recently written keys never reach redb; what is
/// left is the flush's B-tree walks and reads of colder keys, which a miss
/// serves from the OS page cache. Under a write load the default fills
/// with written pages whatever the live data (set E in benches/README.md:
/// about 730 MiB per node after 1M puts over 10,000 keys).
const STATE_CACHE_BYTES: usize = 64 << 20;

/// The longest response a session remembers, encoded. A larger one (a
/// transaction with big reads) is not remembered: its retry answers an
/// error rather than applying twice.
const SESSION_RESPONSE_BYTES_MAX: usize = 1 << 20;

/// Counters the service exports (`/metrics`).
#[derive(Debug, Default)]
pub struct ApplyCounters {
    /// Entries applied (commands, no-ops and configuration changes).
    pub entries_applied: AtomicU64,
    /// Apply batches (one in-memory layer each).
    pub batches_applied: AtomicU64,
    /// Flushes of the layers to redb started (one transaction each).
    pub flushes: AtomicU64,
    /// Writes answered from a session instead of applied again.
    pub session_duplicates: AtomicU64,
    /// Snapshot transfers started (first chunk read for a follower).
    pub snapshots_sent: AtomicU64,
    /// Snapshots received and installed.
    pub snapshots_installed: AtomicU64,
    /// Snapshots taken (views of the store, `snapshots.rs`).
    pub snapshots_built: AtomicU64,
    /// Nanoseconds spent in apply batches (in memory; a flush runs on its
    /// own thread and counts only when an apply waits for it).
    pub apply_nanos: AtomicU64,
}

/// Reads of the applied state, for the HTTP side: cheap to clone, each
/// view is the state after one whole apply batch.
#[derive(Debug, Clone)]
pub struct KvReads {
    reads: LayeredReads,
}

impl KvReads {
    /// A consistent view of the store as of the last applied batch.
    pub fn view(&self) -> Result<StoreReader, StoreError> {
        Ok(self.reads.view())
    }

    /// The last applied log id.
    pub fn applied(&self) -> Result<LogId, StateMachineError> {
        Ok(self.reads.applied())
    }
}

/// The service's state machine over `<dir>/state` (the store) and
/// `<dir>/snapshots`.
#[derive(Debug)]
pub struct KvStateMachine {
    store: LayeredStore,
    snapshots: Snapshots,
    session_ttl_ms: u64,
    /// The latest `time_ms` applied: the log's clock.
    log_clock_ms: u64,
    counters: Arc<ApplyCounters>,
    /// When the last flush started, and entries applied since.
    durable_at: Instant,
    entries_since_durable: u64,
}

impl KvStateMachine {
    /// Opens (creating if needed) the state machine in `dir`. Blocks.
    /// `session_ttl_ms` must be the same on every node: it decides, from
    /// the log alone, when a session is forgotten.
    pub fn open(dir: &Path, session_ttl_ms: u64) -> Result<Self, StateMachineError> {
        let store = LayeredStore::open(Arc::new(RedbStateMachineStore::open_with_cache(
            dir.join("state"),
            STATE_CACHE_BYTES,
        )?))?;
        let snapshots = Snapshots::open(&dir.join("snapshots"), store.database())?;
        Ok(Self {
            store,
            snapshots,
            session_ttl_ms,
            log_clock_ms: 0,
            counters: Arc::new(ApplyCounters::default()),
            durable_at: Instant::now(),
            entries_since_durable: 0,
        })
    }

    /// The read handle for the HTTP side.
    pub fn reads(&self) -> KvReads {
        KvReads {
            reads: self.store.reads(),
        }
    }

    /// The counters, shared with `/metrics`.
    pub fn counters(&self) -> Arc<ApplyCounters> {
        self.counters.clone()
    }

    /// Applies `entries` to the in-memory layers (and starts a background
    /// flush when one is due). Returns the responses, and whether the
    /// caller must wait for a flush before the next batch: the unflushed
    /// entries passed [`UNFLUSHED_ENTRIES_MAX`] while one runs.
    fn apply_in_memory(
        &mut self,
        entries: Vec<Committed<KvCommand>>,
    ) -> Result<(Vec<KvResponse>, bool), StateMachineError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok((Vec::new(), false));
        };
        let started = Instant::now();
        let first_index = first.log_id.index;
        let last_id = last.log_id;
        let count = entries.len() as u64;
        let applied = self.store.applied();
        if first_index <= applied.index {
            return Err(StateMachineError::Corrupt {
                index: first_index,
                message: format!("already applied (applied index {})", applied.index),
            });
        }
        let mut batch = self.store.batch(first_index);
        let mut responses = Vec::with_capacity(entries.len());
        for (offset, entry) in entries.into_iter().enumerate() {
            let expected = first_index + offset as u64;
            if entry.log_id.index != expected {
                return Err(StateMachineError::Corrupt {
                    index: entry.log_id.index,
                    message: format!("expected entry {expected}"),
                });
            }
            let CommittedPayload::Command(KvCommand::V1(command)) = entry.payload else {
                continue;
            };
            self.log_clock_ms = self.log_clock_ms.max(command.time_ms);
            responses.push(apply_one(&mut batch, command, &self.counters)?);
        }
        batch.expire_sessions(self.log_clock_ms, self.session_ttl_ms);
        batch.finish(last_id);
        self.entries_since_durable += count;
        let mut wait_for_flush = false;
        if self.durable_at.elapsed() >= DURABLE_INTERVAL
            || self.entries_since_durable >= DURABLE_ENTRIES_MAX
        {
            if self.entries_since_durable >= UNFLUSHED_ENTRIES_MAX && self.store.flush_running()? {
                wait_for_flush = true;
            } else {
                self.start_flush()?;
            }
        }
        self.counters
            .entries_applied
            .fetch_add(count, Ordering::Relaxed);
        self.counters
            .batches_applied
            .fetch_add(1, Ordering::Relaxed);
        self.counters.apply_nanos.fetch_add(
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Ok((responses, wait_for_flush))
    }

    /// Starts a background flush of the applied batches unless one runs.
    fn start_flush(&mut self) -> Result<(), StateMachineError> {
        if self.store.flush_in_background()? {
            self.counters.flushes.fetch_add(1, Ordering::Relaxed);
            self.durable_at = Instant::now();
            self.entries_since_durable = 0;
        }
        Ok(())
    }

    /// Writes every applied batch to redb now (waiting for a running
    /// flush): snapshots are installed into redb.
    fn flush_all(&mut self) -> Result<(), StateMachineError> {
        blocking(|| self.flush_now())
    }

    fn flush_now(&mut self) -> Result<(), StateMachineError> {
        self.store.flush()?;
        self.durable_at = Instant::now();
        self.entries_since_durable = 0;
        Ok(())
    }

    /// Flushes and checks the store's invariants (O(store size)).
    pub fn check_invariants(&mut self) -> Result<(), StateMachineError> {
        self.flush_all()?;
        self.store.check_invariants()
    }
}

/// Applies one command, through its session if it has one.
fn apply_one(
    writer: &mut Batch<'_>,
    command: CommandV1,
    counters: &ApplyCounters,
) -> Result<KvResponse, StateMachineError> {
    let Some(tag) = command.session else {
        return execute(writer, &command);
    };
    if let Some(session) = writer.session(tag.client) {
        if tag.seq == session.last_seq {
            counters.session_duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(remembered(&session.response));
        }
        if tag.seq < session.last_seq {
            return Ok(Err(KvError::InvalidArgument(format!(
                "rafter-kv: sequence {} of client {} is older than its last applied write ({})",
                tag.seq, tag.client, session.last_seq
            ))));
        }
    }
    let response = execute(writer, &command)?;
    let encoded = codec::encode(&response);
    let remembered = if encoded.len() <= SESSION_RESPONSE_BYTES_MAX {
        encoded
    } else {
        codec::encode(&too_large_to_remember())
    };
    writer
        .set_session(
            tag.client,
            Session {
                last_seq: tag.seq,
                last_write_ms: command.time_ms,
                response: remembered,
            },
        )
        .map_err(store_error)?;
    Ok(response)
}

fn execute(writer: &mut Batch<'_>, command: &CommandV1) -> Result<KvResponse, StateMachineError> {
    match writer.apply(&command.request).map_err(store_error)? {
        Ok((revision, response)) => Ok(Ok(WriteOutcome { revision, response })),
        Err(error) => Ok(Err(error)),
    }
}

fn too_large_to_remember() -> KvResponse {
    Err(KvError::InvalidArgument(
        "rafter-kv: this write was applied, but its response was too large to remember".into(),
    ))
}

/// A remembered response; one that does not decode (it was written by this
/// code, so it cannot happen short of disk damage the checksums missed)
/// answers an error instead of applying again.
fn remembered(bytes: &[u8]) -> KvResponse {
    codec::decode(bytes, SESSION_RESPONSE_BYTES_MAX + 64).unwrap_or_else(|_| {
        Err(KvError::InvalidArgument(
            "rafter-kv: this write was applied; its remembered response is unreadable".into(),
        ))
    })
}

impl StateMachine for KvStateMachine {
    type Command = KvCommand;
    type Response = KvResponse;

    async fn applied(&mut self) -> Result<LogId, StateMachineError> {
        Ok(self.store.applied())
    }

    /// The batch is applied on the apply task's worker as it is, without
    /// `block_in_place`: it only touches memory (the layers, the live
    /// index, redb's cached pages of the base), about a microsecond or two
    /// a put, where `block_in_place` hands the worker's other tasks to
    /// another thread and wakes it, every batch. Only a wait for the flush
    /// thread leaves the worker.
    async fn apply(
        &mut self,
        entries: Vec<Committed<KvCommand>>,
    ) -> Result<Vec<KvResponse>, StateMachineError> {
        let (responses, wait_for_flush) = self.apply_in_memory(entries)?;
        if wait_for_flush {
            blocking(|| self.flush_now())?;
        }
        Ok(responses)
    }

    async fn build_snapshot(&mut self) -> Result<LogId, StateMachineError> {
        // A view of what redb holds (the last flush), not of the applied
        // state: a flush here would stop the applies for its length. A
        // flush starts in the background instead, so the next view covers
        // more; Rafter keeps the log behind the snapshot it is told of.
        self.start_flush()?;
        let snapshots = &mut self.snapshots;
        let store = self.store.database();
        let built = blocking(|| snapshots.build(store))?;
        self.counters
            .snapshots_built
            .store(self.snapshots.built_count(), Ordering::Relaxed);
        Ok(built)
    }

    async fn latest_snapshot(&mut self) -> Result<Option<LogId>, StateMachineError> {
        Ok(self.snapshots.latest())
    }

    async fn read_snapshot(
        &mut self,
        snapshot: LogId,
        offset: u64,
        bytes_max: usize,
    ) -> Result<Option<bytes::Bytes>, StateMachineError> {
        if offset == 0 {
            self.counters.snapshots_sent.fetch_add(1, Ordering::Relaxed);
        }
        blocking(|| self.snapshots.read(snapshot, offset, bytes_max))
    }

    async fn receive_snapshot(
        &mut self,
        snapshot: LogId,
        offset: u64,
        data: bytes::Bytes,
    ) -> Result<(), StateMachineError> {
        blocking(|| self.snapshots.receive(snapshot, offset, &data))
    }

    async fn install_snapshot(&mut self, snapshot: LogId) -> Result<(), StateMachineError> {
        self.flush_all()?;
        let store = &mut self.store;
        let snapshots = &mut self.snapshots;
        blocking(|| {
            let installed = snapshots.install(store.database(), snapshot);
            // Whether or not the install committed, re-read redb.
            store.reload().and(installed)
        })?;
        self.counters
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(?snapshot, "installed a snapshot received from the leader");
        Ok(())
    }
}

/// Runs blocking file work without a thread hop: on a multi-threaded
/// runtime the worker hands its other tasks away first
/// (`block_in_place`); elsewhere (a current-thread test runtime) inline.
fn blocking<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// A store failure stops the node: the disk or the data is broken.
pub(crate) fn store_error(error: StoreError) -> StateMachineError {
    StateMachineError::Io(format!("store: {error}"))
}
