//! The simulated disk: a `RaftStorage` whose writes reach the platter
//! only when an fsync completes, after a latency drawn from the seed.
//!
//! It holds two [`MemStorage`]s, so that the log, purge and batch rules
//! are `MemStorage`'s own (the conformance suite covers them):
//!
//! - `visible`: what the node reads back — every operation, synced or not
//!   (the page cache);
//! - `durable`: what a crash leaves — every synced operation.
//!
//! An operation is applied to `visible` at once and queued as unsynced;
//! an fsync (every operation but a `must_sync == false` write) sleeps for
//! its latency, then applies everything queued to `durable` and only then
//! returns. A crash ([`DiskStore::crash`]) keeps `durable` plus any subset
//! of the unsynced operations, in their order (each may or may not have
//! reached the platter before the power went: the write whose fsync was in
//! flight, and the commit-index-only writes nobody waited for), and the
//! node's next incarnation starts from that.
//!
//! Faults armed by the world: an I/O error on the next write (the node
//! must stop; an error is injected *before* the write reaches the disk),
//! a panic in the next write, a crash in the middle of the next fsync, a
//! crash as snapshot metadata (the latest snapshot's, or that of one being
//! installed) is saved, before or after it is durable, and slow fsyncs.

use std::collections::VecDeque;
use std::ops::Range;

use futures::FutureExt;
use rafter::testing::MemStorage;
use rafter::{
    Entry, HardState, InitialState, LogId, NodeId, RaftStorage, SnapshotMeta, StorageError,
    WriteBatch,
};

use super::world::{Shared, WorldState};
use crate::sim::rng::SimRng;

/// One operation not yet known durable.
#[derive(Debug, Clone)]
enum DiskOp {
    Write(WriteBatch),
    Purge(LogId),
    SaveSnapshotMeta(SnapshotMeta),
    SaveInstallingSnapshotMeta(Option<SnapshotMeta>),
}

/// A node's disk, kept by the world across the node's incarnations.
#[derive(Debug, Default)]
pub struct DiskStore {
    visible: MemStorage,
    durable: MemStorage,
    /// Invariant: applied to `visible`, not to `durable`, in this order.
    unsynced: VecDeque<DiskOp>,
    /// Fsyncs completed (all incarnations).
    pub fsyncs: u64,
}

/// Runs one of `MemStorage`'s calls, which never wait.
fn now<T>(future: impl std::future::Future<Output = T>) -> T {
    future
        .now_or_never()
        .expect("MemStorage's calls complete without waiting")
}

fn apply(storage: &mut MemStorage, op: &DiskOp) -> Result<(), StorageError> {
    match op {
        DiskOp::Write(batch) => now(storage.write(batch.clone())),
        DiskOp::Purge(up_to) => now(storage.purge(*up_to)),
        DiskOp::SaveSnapshotMeta(meta) => now(storage.save_snapshot_meta(meta.clone())),
        DiskOp::SaveInstallingSnapshotMeta(meta) => {
            now(storage.save_installing_snapshot_meta(meta.clone()))
        }
    }
}

/// A copy of `from` that shares nothing with it.
fn deep_copy(from: &MemStorage) -> MemStorage {
    let mut copy = MemStorage::new();
    let purged = from.purged();
    if purged != LogId::default() {
        now(copy.purge(purged)).expect("purging an empty store");
    }
    let batch = WriteBatch {
        truncate_from: None,
        entries: from.all_entries(),
        hard_state: Some(from.hard_state()),
        must_sync: true,
    };
    now(copy.write(batch)).expect("a store's own entries are consecutive");
    if let Some(meta) = from.snapshot_meta() {
        now(copy.save_snapshot_meta(meta)).expect("saving metadata");
    }
    if let Some(meta) = from.installing_snapshot_meta() {
        now(copy.save_installing_snapshot_meta(Some(meta))).expect("saving metadata");
    }
    copy
}

impl DiskStore {
    /// Applies `op` to what the node sees, and queues it for the platter.
    fn stage(&mut self, op: DiskOp) -> Result<(), StorageError> {
        apply(&mut self.visible, &op)?;
        self.unsynced.push_back(op);
        Ok(())
    }

    /// An fsync completed: everything staged is durable.
    fn sync(&mut self) {
        while let Some(op) = self.unsynced.pop_front() {
            apply(&mut self.durable, &op)
                .expect("an op that applied to visible applies to durable");
        }
        self.fsyncs += 1;
    }

    /// The power goes: `durable` keeps what was synced and any subset of
    /// the rest (in order); the cache is lost. Returns how many unsynced
    /// operations survived, of how many.
    pub fn crash(&mut self, rng: &mut SimRng) -> (usize, usize) {
        let total = self.unsynced.len();
        let mut kept = 0;
        while let Some(op) = self.unsynced.pop_front() {
            // A kept operation that no longer fits (its predecessor was
            // lost) is lost too: a real disk would hold a torn tail that
            // its recovery discards.
            if rng.chance(500) && apply(&mut self.durable, &op).is_ok() {
                kept += 1;
            }
        }
        self.visible = deep_copy(&self.durable);
        (kept, total)
    }

    /// The durable log (purge point, entries), hard state, and the index
    /// of the latest snapshot's metadata (0 if none).
    pub fn durable_log(&self) -> (LogId, Vec<Entry>, HardState, u64) {
        let snapshot = self
            .durable
            .snapshot_meta()
            .map_or(0, |meta| meta.last_log_id.index);
        (
            self.durable.purged(),
            self.durable.all_entries(),
            self.durable.hard_state(),
            snapshot,
        )
    }
}

/// Faults armed on one node's disk; each fires once.
#[derive(Debug, Default, Clone)]
pub struct DiskFaults {
    /// The next write fails with an I/O error (nothing reaches the disk).
    pub fail_next_write: bool,
    /// The next write panics (the storage task must report it).
    pub panic_next_write: bool,
    /// The node crashes during the next fsync.
    pub crash_in_next_fsync: bool,
    /// The node crashes as it saves snapshot metadata: `Some(false)`
    /// before the metadata is durable, `Some(true)` after.
    pub crash_at_snapshot_meta: Option<bool>,
    /// Fsyncs take up to this many times longer until this time (in
    /// simulated microseconds since the start).
    pub slow_until_micros: u64,
}

/// The `RaftStorage` of one incarnation of a node: its calls act on the
/// node's [`DiskStore`] while the incarnation lives, and fail once it has
/// crashed (a dead process writes nothing).
pub struct SimDisk {
    world: Shared,
    id: NodeId,
    incarnation: u64,
}

impl SimDisk {
    /// The disk of incarnation `incarnation` of node `id`.
    pub fn new(world: Shared, id: NodeId, incarnation: u64) -> Self {
        Self {
            world,
            id,
            incarnation,
        }
    }

    fn powered_off(operation: &'static str) -> StorageError {
        StorageError::Io {
            operation,
            message: "the node crashed (simulated power loss)".into(),
        }
    }

    /// Runs `op` on the store if this incarnation is alive; then, for an
    /// fsync, waits out its latency and makes everything staged durable.
    async fn run(
        &mut self,
        operation: &'static str,
        op: DiskOp,
        must_sync: bool,
    ) -> Result<(), StorageError> {
        let latency = {
            let mut world = self.world.lock();
            if world.incarnation(self.id) != self.incarnation {
                return Err(Self::powered_off(operation));
            }
            let id = self.id;
            if let DiskOp::Write(_) = op {
                let faults = &mut world.node_mut(id).disk_faults;
                if std::mem::take(&mut faults.fail_next_write) {
                    world.expect_fatal(id);
                    world.note(format!("node {id}: write fails with an injected I/O error"));
                    return Err(StorageError::Io {
                        operation,
                        message: "injected I/O error".into(),
                    });
                }
                if std::mem::take(&mut world.node_mut(id).disk_faults.panic_next_write) {
                    world.expect_fatal(id);
                    world.note(format!("node {id}: write panics (injected)"));
                    drop(world);
                    panic!("{} in the storage of node {id}", super::INJECTED_PANIC);
                }
            }
            let meta_crash = match op {
                DiskOp::SaveSnapshotMeta(_) => {
                    world.node_mut(id).disk_faults.crash_at_snapshot_meta.take()
                }
                _ => None,
            };
            if meta_crash == Some(false) {
                world.note(format!(
                    "node {id}: crash before snapshot metadata is saved"
                ));
                world.crash(id);
                return Err(Self::powered_off(operation));
            }
            world.node_mut(id).disk.stage(op)?;
            if meta_crash == Some(true) {
                world.node_mut(id).disk.sync();
                world.note(format!(
                    "node {id}: crash right after snapshot metadata is saved"
                ));
                world.crash(id);
                return Err(Self::powered_off(operation));
            }
            if !must_sync {
                return Ok(());
            }
            if std::mem::take(&mut world.node_mut(id).disk_faults.crash_in_next_fsync) {
                world.note(format!("node {id}: crash during an fsync of {operation}"));
                world.crash(id);
                return Err(Self::powered_off(operation));
            }
            fsync_latency(&mut world, id)
        };
        tokio::time::sleep(latency).await;
        let mut world = self.world.lock();
        if world.incarnation(self.id) != self.incarnation {
            return Err(Self::powered_off(operation));
        }
        world.node_mut(self.id).disk.sync();
        Ok(())
    }
}

/// How long this fsync takes.
fn fsync_latency(world: &mut WorldState, id: NodeId) -> std::time::Duration {
    let (low, high) = world.config.fsync_micros;
    let mut micros = world.rng.between(low, high);
    let slow_until = world.node(id).disk_faults.slow_until_micros;
    if slow_until > world.now_micros() {
        micros *= world.rng.between(5, 40);
    }
    std::time::Duration::from_micros(micros)
}

impl RaftStorage for SimDisk {
    async fn initial_state(&mut self) -> Result<InitialState, StorageError> {
        let mut world = self.world.lock();
        if world.incarnation(self.id) != self.incarnation {
            return Err(Self::powered_off("initial_state"));
        }
        now(world.node_mut(self.id).disk.visible.initial_state())
    }

    async fn write(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        let must_sync = batch.must_sync;
        self.run("write", DiskOp::Write(batch), must_sync).await
    }

    async fn entries(
        &mut self,
        range: Range<u64>,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut world = self.world.lock();
        if world.incarnation(self.id) != self.incarnation {
            return Err(Self::powered_off("entries"));
        }
        now(world
            .node_mut(self.id)
            .disk
            .visible
            .entries(range, bytes_max))
    }

    async fn purge(&mut self, up_to: LogId) -> Result<(), StorageError> {
        self.run("purge", DiskOp::Purge(up_to), true).await
    }

    async fn save_snapshot_meta(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        self.run("save_snapshot_meta", DiskOp::SaveSnapshotMeta(meta), true)
            .await
    }

    async fn save_installing_snapshot_meta(
        &mut self,
        meta: Option<SnapshotMeta>,
    ) -> Result<(), StorageError> {
        let op = DiskOp::SaveInstallingSnapshotMeta(meta);
        self.run("save_installing_snapshot_meta", op, true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rafter::EntryPayload;

    fn entry(index: u64) -> Entry {
        Entry {
            term: 1,
            index,
            payload: EntryPayload::Blank,
        }
    }

    fn append(store: &mut DiskStore, indexes: Range<u64>, must_sync: bool) {
        let batch = WriteBatch {
            entries: indexes.map(entry).collect(),
            must_sync,
            ..WriteBatch::default()
        };
        store.stage(DiskOp::Write(batch)).expect("consecutive");
    }

    #[test]
    fn a_crash_keeps_synced_writes_and_some_of_the_others() {
        let mut kept_counts = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let mut store = DiskStore::default();
            append(&mut store, 1..3, true);
            store.sync();
            append(&mut store, 3..5, true);
            let (kept, total) = store.crash(&mut SimRng::new(seed));
            assert_eq!(total, 1);
            let last = store.durable.last_log_id().index;
            assert_eq!(last, if kept == 1 { 4 } else { 2 }, "seed {seed}");
            // What the node reads after the crash is what survived.
            assert_eq!(store.visible.last_log_id().index, last);
            kept_counts.insert(kept);
        }
        assert_eq!(
            kept_counts.len(),
            2,
            "both outcomes happen: {kept_counts:?}"
        );
    }

    #[test]
    fn a_sync_makes_earlier_unsynced_writes_durable() {
        let mut store = DiskStore::default();
        append(&mut store, 1..2, false);
        assert_eq!(store.durable.last_log_id().index, 0);
        append(&mut store, 2..3, true);
        store.sync();
        assert_eq!(store.durable.last_log_id().index, 2);
        assert!(store.unsynced.is_empty());
    }
}
