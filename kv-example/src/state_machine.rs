//! `KvStateMachine`: the `rafter::StateMachine` of the service. Each applied
//! batch of entries is one redb write transaction holding the store's
//! changes, the sessions and the applied log id together
//! (`rafter_redb::RedbStateMachineStore`), so a restart resumes exactly
//! after the last applied entry.
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
use redb::{Durability, ReadableDatabase};

use crate::command::{CommandV1, KvCommand, KvResponse, WriteOutcome};
use crate::snapshots::SnapshotFiles;
use crate::store::{KvError, Session, StoreError, StoreReader, StoreWriter};

/// Apply batches are committed without an fsync (`Durability::None`) and
/// made durable at least this often: after a crash, Rafter applies the
/// entries since the last durable batch again from its log (applies are
/// deterministic, and the log keeps them until a durable snapshot covers
/// them). etcd's backend commits on the same 100 ms clock.
const DURABLE_INTERVAL: Duration = Duration::from_millis(100);
/// ... or every this many entries, which bounds the replay after a crash.
const DURABLE_ENTRIES_MAX: u64 = 10_000;

/// The longest response a session remembers, encoded. A larger one (a
/// transaction with big reads) is not remembered: its retry answers an
/// error rather than applying twice.
const SESSION_RESPONSE_BYTES_MAX: usize = 1 << 20;

/// Counters the service exports (`/metrics`).
#[derive(Debug, Default)]
pub struct ApplyCounters {
    /// Entries applied (commands, no-ops and configuration changes).
    pub entries_applied: AtomicU64,
    /// Apply batches (one redb transaction each).
    pub batches_applied: AtomicU64,
    /// Writes answered from a session instead of applied again.
    pub session_duplicates: AtomicU64,
    /// Snapshot transfers started (first chunk read for a follower).
    pub snapshots_sent: AtomicU64,
    /// Snapshots received and installed.
    pub snapshots_installed: AtomicU64,
    /// Snapshots built.
    pub snapshots_built: AtomicU64,
    /// Nanoseconds spent in apply batches (the store transaction, its
    /// commit included).
    pub apply_nanos: AtomicU64,
}

/// Reads of the applied state, for the HTTP side: cheap to clone, each
/// read is one redb read transaction (a consistent view).
#[derive(Debug, Clone)]
pub struct KvReads {
    store: Arc<RedbStateMachineStore>,
}

impl KvReads {
    /// A consistent view of the store as of the last applied batch.
    pub fn view(&self) -> Result<StoreReader, StoreError> {
        let txn = self
            .store
            .database()
            .begin_read()
            .map_err(|e| StoreError::Storage(e.into()))?;
        StoreReader::open(&txn)
    }

    /// The last applied log id.
    pub fn applied(&self) -> Result<LogId, StateMachineError> {
        self.store.applied()
    }
}

/// The service's state machine over `<dir>/state` (the store) and
/// `<dir>/snapshots`.
#[derive(Debug)]
pub struct KvStateMachine {
    store: Arc<RedbStateMachineStore>,
    snapshots: SnapshotFiles,
    session_ttl_ms: u64,
    /// The latest `time_ms` applied: the log's clock.
    log_clock_ms: u64,
    counters: Arc<ApplyCounters>,
    /// When the last batch was committed durably, and entries since.
    durable_at: Instant,
    entries_since_durable: u64,
}

impl KvStateMachine {
    /// Opens (creating if needed) the state machine in `dir`. Blocks.
    /// `session_ttl_ms` must be the same on every node: it decides, from
    /// the log alone, when a session is forgotten.
    pub fn open(dir: &Path, session_ttl_ms: u64) -> Result<Self, StateMachineError> {
        let store = RedbStateMachineStore::open(dir.join("state"))?;
        let txn = store.database().begin_write().map_err(io)?;
        StoreWriter::open(&txn)
            .and_then(|writer| writer.finish())
            .map_err(store_error)?;
        txn.commit().map_err(io)?;
        let snapshots = SnapshotFiles::open(&dir.join("snapshots"))?;
        Ok(Self {
            store: Arc::new(store),
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
            store: self.store.clone(),
        }
    }

    /// The counters, shared with `/metrics`.
    pub fn counters(&self) -> Arc<ApplyCounters> {
        self.counters.clone()
    }

    fn apply_blocking(
        &mut self,
        entries: Vec<Committed<KvCommand>>,
    ) -> Result<Vec<KvResponse>, StateMachineError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(Vec::new());
        };
        let started = Instant::now();
        let first_index = first.log_id.index;
        let last_id = last.log_id;
        let count = entries.len() as u64;
        self.entries_since_durable += count;
        let durable = self.durable_at.elapsed() >= DURABLE_INTERVAL
            || self.entries_since_durable >= DURABLE_ENTRIES_MAX;
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        let session_ttl_ms = self.session_ttl_ms;
        let log_clock_ms = &mut self.log_clock_ms;
        let counters = &*self.counters;
        let responses = self
            .store
            .apply_batch_with(first_index, last_id, durability, |txn| {
                let mut writer = StoreWriter::open(txn).map_err(store_error)?;
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
                    *log_clock_ms = (*log_clock_ms).max(command.time_ms);
                    responses.push(apply_one(&mut writer, command, counters)?);
                }
                writer
                    .expire_sessions(*log_clock_ms, session_ttl_ms)
                    .map_err(store_error)?;
                writer.finish().map_err(store_error)?;
                Ok(responses)
            })?;
        if durable {
            self.durable_at = Instant::now();
            self.entries_since_durable = 0;
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
        Ok(responses)
    }
}

/// Applies one command, through its session if it has one.
fn apply_one(
    writer: &mut StoreWriter<'_>,
    command: CommandV1,
    counters: &ApplyCounters,
) -> Result<KvResponse, StateMachineError> {
    let Some(tag) = command.session else {
        return execute(writer, &command);
    };
    if let Some(session) = writer.session(tag.client).map_err(store_error)? {
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
            &Session {
                last_seq: tag.seq,
                last_write_ms: command.time_ms,
                response: remembered,
            },
        )
        .map_err(store_error)?;
    Ok(response)
}

fn execute(
    writer: &mut StoreWriter<'_>,
    command: &CommandV1,
) -> Result<KvResponse, StateMachineError> {
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
        self.store.applied()
    }

    async fn apply(
        &mut self,
        entries: Vec<Committed<KvCommand>>,
    ) -> Result<Vec<KvResponse>, StateMachineError> {
        blocking(|| self.apply_blocking(entries))
    }

    async fn build_snapshot(&mut self) -> Result<LogId, StateMachineError> {
        let store = self.store.clone();
        let built = self.snapshots.build(store).await?;
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
        let store = &self.store;
        let snapshots = &mut self.snapshots;
        blocking(|| snapshots.install(store, snapshot))?;
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

fn io(error: impl std::fmt::Display) -> StateMachineError {
    StateMachineError::Io(error.to_string())
}

/// A store failure stops the node: the disk or the data is broken.
pub(crate) fn store_error(error: StoreError) -> StateMachineError {
    StateMachineError::Io(format!("store: {error}"))
}
