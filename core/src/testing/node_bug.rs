//! Planted bugs in the shipped node layers (driver, apply task and its
//! waiters, restore):
//! rules broken on purpose, to prove that the whole-node simulation
//! (`rafter_tests::node_sim`) catches them. Compiled only with rafter's
//! `planted-bugs` feature, like [`super::PlantedBug`], the engine's.
//!
//! A bug is planted for the current thread: the whole-node simulation runs
//! every task of its nodes on one current-thread runtime, so planting it on
//! that thread plants it in every node of that run and nowhere else (other
//! tests on other threads keep a correct node).

use std::cell::Cell;

/// A rule of the shipped node layers broken on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeBug {
    /// The driver sends the messages that must wait for a write (append
    /// acknowledgements, votes) before that write is durable.
    SendBeforeWrite,
    /// The apply task publishes its applied index (which
    /// `linearizable_read` waits on) before the state machine applied the
    /// batch.
    PublishBeforeApply,
    /// The apply task answers a proposer whose entry was overwritten by
    /// another command as if its own had applied (with the other's
    /// response), instead of `Overwritten`.
    AnswerOverwrittenAsApplied,
    /// `restore` starts the engine one entry before the state machine's
    /// applied index, so the last applied entry is replayed.
    RestoreReplaysFromWrongIndex,
    /// Installing a received snapshot purges the log before its metadata
    /// is saved.
    PurgeBeforeSavingSnapshot,
}

thread_local! {
    static PLANTED: Cell<Option<NodeBug>> = const { Cell::new(None) };
}

/// Plants `bug` (or none) in every node whose tasks run on this thread.
pub fn plant_node_bug(bug: Option<NodeBug>) {
    PLANTED.with(|planted| planted.set(bug));
}

/// Whether `bug` is planted on this thread.
pub(crate) fn node_bug_planted(bug: NodeBug) -> bool {
    PLANTED.with(|planted| planted.get() == Some(bug))
}
