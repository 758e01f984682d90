//! Building blocks for tests, benchmarks and downstream implementors
//! (feature `testing`): an in-memory storage, an in-process network, small
//! state machines, the conformance suites every `RaftStorage` and every
//! `StateMachine` should pass,
//! [`CrashSwitch`], which crashes a node at a chosen point of a snapshot
//! install, [`ProposalWaiters`] (the apply task's answers to proposers, for
//! simulators), and [`strategies`], proptest generators of messages for codec
//! and transport tests.

mod kv;
mod mem_network;
mod mem_storage;
mod proposal_waiters;
mod sim;
mod state_machine_suite;
mod storage_suite;
pub mod strategies;

use std::sync::{Arc, Mutex, MutexGuard};

pub use kv::{KvCommand, KvResponse, KvState, KvStateMachine, NoopStateMachine};
pub use mem_network::{MemNetwork, MemRouter};
pub use mem_storage::MemStorage;
pub use proposal_waiters::ProposalWaiters;
pub use sim::{PlantedBug, SimActions, SimCore, SimDurable, SnapshotRead, SnapshotReceive};
pub use state_machine_suite::{run_state_machine_suite, StateMachineSubject};
pub use storage_suite::run_storage_suite;

/// Where a [`CrashSwitch`] crashes a follower that installs a received
/// snapshot. The install makes up to five steps durable, in order: the
/// snapshot's metadata as the installing one (in storage), the snapshot (in
/// the state machine, atomically), the metadata as the latest snapshot's
/// (in storage), the truncation of what the log held after it if that was
/// another history (a storage write), the purge of the log it covers
/// (ARCHITECTURE.md, Snapshots). Each point is a crash between two of them,
/// or inside the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrashPoint {
    /// In [`MemStorage`]'s next `save_installing_snapshot_meta`, right after
    /// the installing snapshot's metadata is saved: the state machine is
    /// never asked to install.
    SnapshotMetaSaved,
    /// In [`KvStateMachine`]'s `install_snapshot`, after the received
    /// snapshot is decoded and checked but before it replaces the state: an
    /// atomic install leaves no trace of it.
    SnapshotInstalling,
    /// In [`KvStateMachine`]'s `install_snapshot`, right after the snapshot
    /// is installed: the node never hears of it, so storage still names the
    /// old snapshot as the latest and its log is not purged.
    SnapshotInstalled,
    /// In [`MemStorage`]'s next `save_snapshot_meta`, right after it: the
    /// installed snapshot is the latest in storage, the log is not purged.
    /// (A node's own compaction saves metadata too: arm it when the next
    /// save is an install's, e.g. while the node is behind the leader's
    /// log.)
    SnapshotMetaUpdated,
    /// In [`MemStorage`]'s next write that truncates the log and carries no
    /// entries (the write that drops another history after an installed
    /// snapshot), right after it: the purge that follows never runs.
    SnapshotLogTruncated,
}

/// The power switch of one node, shared by its [`MemStorage`] and its
/// [`KvStateMachine`] (attach it to both with their `attach_crash_switch`).
///
/// Armed at a [`CrashPoint`], it trips when the node reaches that point: the
/// call there returns an IO error, so the node stops at once (fail-stop),
/// and from then on every call on either component fails and changes
/// nothing. What those components held at the crash point is what a real
/// crash would leave on disk: all of `MemStorage`, the snapshot store of a
/// `KvStateMachine`, and its applied state only if it is durable
/// ([`KvStateMachine::make_durable`]). [`CrashSwitch::reset`] turns the
/// power back on before the node is restarted on the same components.
/// Clones share the same switch.
#[derive(Debug, Clone, Default)]
pub struct CrashSwitch {
    inner: Arc<Mutex<CrashState>>,
}

/// Invariant: a tripped switch is not armed.
#[derive(Debug, Default)]
struct CrashState {
    armed: Option<CrashPoint>,
    tripped: Option<CrashPoint>,
}

impl CrashSwitch {
    /// A switch that is neither armed nor tripped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Crashes the node the next time it reaches `point`.
    pub fn arm(&self, point: CrashPoint) {
        let mut state = self.lock();
        assert!(
            state.tripped.is_none(),
            "arming a tripped switch ({:?}): reset it first",
            state.tripped
        );
        state.armed = Some(point);
    }

    /// The point the node crashed at, if it did.
    pub fn tripped(&self) -> Option<CrashPoint> {
        self.lock().tripped
    }

    /// Power back on: disarms the switch and lets the components work
    /// again, holding what survived the crash.
    pub fn reset(&self) {
        *self.lock() = CrashState::default();
    }

    /// Trips the switch if it is armed at `point`; true if it did.
    pub(crate) fn trip_at(&self, point: CrashPoint) -> bool {
        let mut state = self.lock();
        if state.armed != Some(point) {
            return false;
        }
        state.armed = None;
        state.tripped = Some(point);
        tracing::info!(?point, "crash switch tripped");
        true
    }

    fn lock(&self) -> MutexGuard<'_, CrashState> {
        // Plain data, consistent after every operation even if poisoned.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether the component holding `switch` is powered off.
pub(crate) fn is_crashed(switch: Option<&CrashSwitch>) -> bool {
    switch.is_some_and(|s| s.tripped().is_some())
}
