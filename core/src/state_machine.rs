//! Boundary: the user's state machine, which applies committed commands.

use std::future::Future;

use serde::{de::DeserializeOwned, Serialize};

use crate::types::{LogId, Membership};

/// One committed entry, in log order, as the state machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed<C> {
    /// The entry's position.
    pub log_id: LogId,
    /// What it carries.
    pub payload: CommittedPayload<C>,
}

/// What a committed entry carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommittedPayload<C> {
    /// A user command; the state machine returns one response for it.
    Command(C),
    /// A leader's no-op; no response.
    Blank,
    /// A configuration change; no response. Boxed: changes are rare, and
    /// inline they would triple the size of every committed entry.
    Membership(Box<Membership>),
}

/// Why the state machine cannot go on. **Any error stops the node**
/// (fail-stop: `Metrics::fatal` holds it, every caller gets `Stopped`), so
/// these are for failures after which applying the next entry would be
/// wrong: the state machine's storage failed, or its state or the log is
/// corrupt. A command that is refused by the application's own rules (a
/// failed compare-and-swap, a missing key, a permission check) is not one:
/// it is applied, deterministically, as a refusal, and the refusal is its
/// `Response` (for example `Response = Result<Value, AppError>`). Every
/// replica refuses it the same way, and the cluster goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateMachineError {
    /// The state machine's own storage failed.
    #[error("state machine IO failed: {0}")]
    Io(String),
    /// This state machine does not implement snapshots (the default). The
    /// node then never compacts its log.
    #[error("snapshots are not supported by this state machine")]
    SnapshotUnsupported,
    /// The snapshot asked for is not there (a newer one replaced it, or the
    /// machine restarted and cannot make that one again); the transfer
    /// starts over, and if it was the latest snapshot the node knows of,
    /// the node asks for a build (`build_snapshot`) whose answer the next
    /// transfer sends.
    #[error("snapshot {0:?} is not available")]
    SnapshotUnavailable(LogId),
    /// `install_snapshot` was asked to install `snapshot`, which is behind
    /// what the machine has applied: installing it would take the state
    /// back, which Rafter never asks (a bug, in Rafter or in the caller).
    #[error("snapshot {snapshot:?} is behind the applied entry {applied:?}; not installed")]
    SnapshotBehind {
        /// The snapshot refused.
        snapshot: LogId,
        /// What the machine has applied.
        applied: LogId,
    },
    /// The entry cannot be applied because something is corrupt: the
    /// command does not decode as any version of `Command` this node knows
    /// (a newer node wrote it: see the crate docs on rolling out command
    /// changes), or the state the state machine holds breaks its own
    /// invariants. Never a business-rule refusal: that is a `Response`.
    #[error("state machine cannot apply entry {index}: {message}")]
    Corrupt {
        /// The entry's index.
        index: u64,
        /// What is wrong.
        message: String,
    },
}

/// The replicated state. Rafter calls it from one apply task, never
/// concurrently, with committed entries in log order.
///
/// # Application errors are responses
///
/// `apply` must be deterministic: every replica applies the same entries
/// and must reach the same state and the same responses. A command the
/// application refuses (a compare that fails, a key that is missing) is
/// applied as a refusal and answered through `Response`, which the proposer
/// receives from `Raft::propose`. An `Err(StateMachineError)` from any
/// method stops the node (see [`StateMachineError`]): return one only when
/// the state machine cannot safely apply anything more.
pub trait StateMachine: Send + 'static {
    /// What clients propose. Encoded with [`crate::codec`] into the log:
    /// it is an on-disk and wire format, to evolve as the crate docs say
    /// (a versioned enum; new variants at the end; decoders before
    /// encoders).
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// What applying a command returns to the proposer.
    type Response: Send + 'static;

    /// The last entry whose effect is in the state (zero for a new one).
    /// Called once at start; Rafter applies from the next entry on, so a
    /// durable state machine that records this atomically with its data is
    /// never given an entry twice.
    fn applied(&mut self) -> impl Future<Output = Result<LogId, StateMachineError>> + Send;

    /// Applies `entries` (consecutive, in log order, starting right after
    /// the previous batch) and returns one response per
    /// [`CommittedPayload::Command`], in order. A command the application
    /// refuses still gets a response (the refusal); an `Err` stops the
    /// node.
    fn apply(
        &mut self,
        entries: Vec<Committed<Self::Command>>,
    ) -> impl Future<Output = Result<Vec<Self::Response>, StateMachineError>> + Send;

    // ----- snapshots (Raft §7) -----
    //
    // A snapshot is the state machine's own durable copy of its applied
    // state, named by the last entry it covers. Rafter asks for one every
    // `Config::snapshot_interval_entries` applied entries, then purges the
    // log before it; it streams the latest one to followers that need
    // purged entries, in chunks read by offset, and installs received ones.
    // The defaults say `SnapshotUnsupported`: such a node never purges its
    // log, and cannot receive a snapshot.

    /// Makes a durable snapshot of everything applied so far and returns
    /// the last entry it covers. The previous snapshot stays readable until
    /// this one is complete (a crash mid-build leaves the old one).
    ///
    /// **What blocks.** Rafter calls this on the apply task, in order with
    /// the applies, and applies nothing more until it returns: a machine
    /// that writes its whole state here stalls every apply (and so every
    /// proposal's answer) for the length of that write. The way out is to
    /// build from a consistent view off the apply task: take the view here
    /// (a read transaction, a copy-on-write clone: the state is exactly
    /// the state at `applied()`, since no apply runs meanwhile), write it
    /// from a background task, and return at once with the newest
    /// *complete* snapshot, which may be an older one, or
    /// `LogId::default()` while none is complete. Rafter ignores an answer
    /// no newer than the snapshot it has, and asks again after the next
    /// `Config::snapshot_interval_entries` entries (or on
    /// `Raft::trigger_snapshot`), when the finished build is collected.
    /// Or hold the view itself as the snapshot and make its bytes only
    /// when `read_snapshot` asks: `rafter-kv`'s state machine keeps a redb
    /// read transaction open and streams it (`kv-example/src/snapshots.rs`).
    /// Never return an id beyond what is applied.
    fn build_snapshot(&mut self) -> impl Future<Output = Result<LogId, StateMachineError>> + Send {
        async { Err(StateMachineError::SnapshotUnsupported) }
    }

    /// The latest durable snapshot, if any.
    fn latest_snapshot(
        &mut self,
    ) -> impl Future<Output = Result<Option<LogId>, StateMachineError>> + Send {
        async { Ok(None) }
    }

    /// Up to `bytes_max` bytes of snapshot `snapshot` from `offset`; `None`
    /// past the end. `SnapshotUnavailable` if it is not there (never built,
    /// or no longer kept); a machine may keep a replaced snapshot readable,
    /// unchanged, for a transfer under way.
    fn read_snapshot(
        &mut self,
        snapshot: LogId,
        offset: u64,
        bytes_max: usize,
    ) -> impl Future<Output = Result<Option<bytes::Bytes>, StateMachineError>> + Send {
        let _ = (offset, bytes_max);
        async move { Err(StateMachineError::SnapshotUnavailable(snapshot)) }
    }

    /// Stores a chunk of a snapshot being received, at `offset` (0 starts
    /// over, dropping any partial one). Nothing changes the applied state
    /// until [`StateMachine::install_snapshot`].
    fn receive_snapshot(
        &mut self,
        snapshot: LogId,
        offset: u64,
        data: bytes::Bytes,
    ) -> impl Future<Output = Result<(), StateMachineError>> + Send {
        let _ = (snapshot, offset, data);
        async { Err(StateMachineError::SnapshotUnsupported) }
    }

    /// Atomically replaces the applied state with the fully received
    /// snapshot `snapshot`, which also becomes the latest snapshot; after it,
    /// `applied()` is `snapshot`. A crash before it returns leaves the old
    /// state intact. A snapshot behind `applied()` is refused with
    /// [`StateMachineError::SnapshotBehind`], changing nothing: the state
    /// never goes back. (`testing::run_state_machine_suite` checks all of
    /// this.)
    fn install_snapshot(
        &mut self,
        snapshot: LogId,
    ) -> impl Future<Output = Result<(), StateMachineError>> + Send {
        let _ = snapshot;
        async { Err(StateMachineError::SnapshotUnsupported) }
    }
}
