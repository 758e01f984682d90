//! `MemStorage`: a `RaftStorage` in memory, for tests and benchmarks.
//!
//! Cloning gives another handle to the same log, so a test can look at what
//! a node persisted, or "restart" a node on the same storage. Every call is
//! durable when it returns, so what the store holds when a node stops is
//! what a disk would hold after a crash. Two ways to crash a node:
//! [`MemStorage::fail_writes_after`] makes the Nth and later writes fail
//! with an IO error, and a [`CrashSwitch`] attached with
//! [`MemStorage::attach_crash_switch`] crashes it at a chosen point of a
//! snapshot install.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{is_crashed, CrashPoint, CrashSwitch};
use crate::storage::{InitialState, RaftStorage, StorageError, WriteBatch};
use crate::types::{Entry, HardState, LogId, SnapshotMeta};

/// An in-memory `RaftStorage`; clones share the same state.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    inner: Arc<Mutex<Inner>>,
}

/// Invariant: `entries[i].index == purged.index + 1 + i`.
#[derive(Debug, Default)]
struct Inner {
    hard_state: HardState,
    purged: LogId,
    entries: VecDeque<Entry>,
    snapshot: Option<SnapshotMeta>,
    installing_snapshot: Option<SnapshotMeta>,
    writes: u64,
    writes_ok_max: Option<u64>,
    /// Once tripped, every call fails and changes nothing.
    crash: Option<CrashSwitch>,
}

impl MemStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every write after the first `n` successful ones fail, as a
    /// disk that died would.
    pub fn fail_writes_after(&self, n: u64) {
        self.lock().writes_ok_max = Some(n);
    }

    /// Crashes the node at the switch's [`CrashPoint::SnapshotMetaSaved`],
    /// [`CrashPoint::SnapshotMetaUpdated`] and
    /// [`CrashPoint::SnapshotLogTruncated`], and fails every call while the
    /// switch is tripped (see [`CrashSwitch`]).
    pub fn attach_crash_switch(&self, switch: &CrashSwitch) {
        self.lock().crash = Some(switch.clone());
    }

    /// The saved metadata of the latest snapshot.
    pub fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.lock().snapshot.clone()
    }

    /// The saved metadata of a snapshot being installed, if any.
    pub fn installing_snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.lock().installing_snapshot.clone()
    }

    /// The last purged entry (zero if none).
    pub fn purged(&self) -> LogId {
        self.lock().purged
    }

    /// The last entry of the log (the purge point if it is empty).
    pub fn last_log_id(&self) -> LogId {
        self.lock().last_log_id()
    }

    /// The saved hard state.
    pub fn hard_state(&self) -> HardState {
        self.lock().hard_state
    }

    /// A copy of every entry in the log.
    pub fn all_entries(&self) -> Vec<Entry> {
        self.lock().entries.iter().cloned().collect()
    }

    /// The number of `write` calls that succeeded.
    pub fn write_count(&self) -> u64 {
        self.lock().writes
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means a test thread panicked while holding it; the
        // data is plain and still consistent per operation, so keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Fails if the node crashed: a dead disk neither reads nor writes.
    fn check_powered(&self, operation: &'static str) -> Result<(), StorageError> {
        if is_crashed(self.crash.as_ref()) {
            return Err(StorageError::Io {
                operation,
                message: "the node crashed (crash switch tripped)".into(),
            });
        }
        Ok(())
    }

    fn last_log_id(&self) -> LogId {
        self.entries
            .back()
            .map(Entry::log_id)
            .unwrap_or(self.purged)
    }

    fn apply(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        if let Some(from) = batch.truncate_from {
            if from <= self.purged.index {
                return Err(StorageError::Unavailable { index: from });
            }
            let keep = (from - self.purged.index - 1) as usize;
            self.entries.truncate(keep);
        }
        for entry in batch.entries {
            let expected = self.last_log_id().index + 1;
            if entry.index != expected {
                return Err(StorageError::InvalidBatch(format!(
                    "append at {}: entries must be consecutive; expected index {expected}",
                    entry.index
                )));
            }
            self.entries.push_back(entry);
        }
        if let Some(hard_state) = batch.hard_state {
            self.hard_state = hard_state;
        }
        Ok(())
    }
}

impl RaftStorage for MemStorage {
    async fn initial_state(&mut self) -> Result<InitialState, StorageError> {
        let inner = self.lock();
        inner.check_powered("initial_state")?;
        Ok(InitialState {
            hard_state: inner.hard_state,
            purged: inner.purged,
            last_log_id: inner.last_log_id(),
            snapshot: inner.snapshot.clone(),
            installing_snapshot: inner.installing_snapshot.clone(),
        })
    }

    async fn write(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner.check_powered("write")?;
        if inner.writes_ok_max.is_some_and(|max| inner.writes >= max) {
            return Err(StorageError::Io {
                operation: "write",
                message: "injected failure".into(),
            });
        }
        // The shape of the write that follows an install over a log that
        // held another history: its truncation alone (see CrashPoint).
        let truncation_alone = batch.truncate_from.is_some() && batch.entries.is_empty();
        inner.apply(batch)?;
        inner.writes += 1;
        if truncation_alone
            && inner
                .crash
                .as_ref()
                .is_some_and(|s| s.trip_at(CrashPoint::SnapshotLogTruncated))
        {
            return Err(StorageError::Io {
                operation: "write",
                message: "the node crashed right after truncating the replaced log".into(),
            });
        }
        Ok(())
    }

    async fn entries(
        &mut self,
        range: Range<u64>,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let inner = self.lock();
        inner.check_powered("entries")?;
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let first = inner.purged.index + 1;
        let last = inner.last_log_id().index;
        if range.start < first {
            return Err(StorageError::Unavailable { index: range.start });
        }
        if range.end > last + 1 {
            return Err(StorageError::Unavailable { index: last + 1 });
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for index in range {
            let entry = &inner.entries[(index - first) as usize];
            if !out.is_empty() && bytes + entry.size_bytes() > bytes_max {
                break;
            }
            bytes += entry.size_bytes();
            out.push(entry.clone());
        }
        Ok(out)
    }

    async fn purge(&mut self, up_to: LogId) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner.check_powered("purge")?;
        if up_to.index <= inner.purged.index {
            return Ok(());
        }
        let last = inner.last_log_id();
        let drop = (up_to.index.min(last.index) - inner.purged.index) as usize;
        inner.entries.drain(..drop);
        inner.purged = up_to;
        Ok(())
    }

    async fn save_snapshot_meta(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner.check_powered("save_snapshot_meta")?;
        if inner
            .installing_snapshot
            .as_ref()
            .is_some_and(|installing| installing.last_log_id.index <= meta.last_log_id.index)
        {
            inner.installing_snapshot = None;
        }
        inner.snapshot = Some(meta);
        if inner
            .crash
            .as_ref()
            .is_some_and(|s| s.trip_at(CrashPoint::SnapshotMetaUpdated))
        {
            return Err(StorageError::Io {
                operation: "save_snapshot_meta",
                message: "the node crashed right after saving the snapshot metadata".into(),
            });
        }
        Ok(())
    }

    async fn save_installing_snapshot_meta(
        &mut self,
        meta: Option<SnapshotMeta>,
    ) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner.check_powered("save_installing_snapshot_meta")?;
        let begun = meta.is_some();
        inner.installing_snapshot = meta;
        if begun
            && inner
                .crash
                .as_ref()
                .is_some_and(|s| s.trip_at(CrashPoint::SnapshotMetaSaved))
        {
            // The metadata is durable; the node dies before it hears so.
            return Err(StorageError::Io {
                operation: "save_installing_snapshot_meta",
                message: "the node crashed right after saving the installing snapshot's metadata"
                    .into(),
            });
        }
        Ok(())
    }
}
