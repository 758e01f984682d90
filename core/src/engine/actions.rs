//! What the engine asks the driver to do after a turn.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::error::{ProposeError, ReadError};
use crate::message::Message;
use crate::storage::WriteBatch;
use bytes::Bytes;

use crate::types::{Entry, LogId, NodeId, SnapshotMeta};

/// A storage write, numbered so that messages can wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Write {
    /// Writes are numbered 1, 2, 3… and must complete in that order.
    pub(crate) id: u64,
    pub(crate) batch: WriteBatch,
}

/// The output of one turn. The driver carries it out in this order of
/// constraints:
///
/// 1. `write`: start it now; report completion with `Engine::on_write_done`.
///    At most one is in flight; the engine issues the next only after.
/// 2. `messages`: send now, in parallel with the write. (The leader's
///    appends go out while its own fsync runs: its own match index counts
///    only once the write completes.)
/// 3. `messages_after_write`: each waits until the write with that id (or a
///    later one) is durable — votes and append acknowledgements promise
///    durable state (Raft Figure 2; dissertation §3.8).
/// 4. `apply`: committed and durable on this node; hand to the apply task in
///    order. May run in parallel with everything above.
/// 5. `load`: read these entries from storage and give them back with
///    `Engine::on_loaded` (the cache did not hold them).
/// 6. `reads`: answers to `read_index` requests: the index a linearizable
///    read must wait to be applied, or why none can be given.
/// 7. `forwarded`: answers to forwarded proposal batches (`forward`):
///    where the leader appended each, or why it is refused or unknown.
///    Register their waiters before this turn's `apply`.
/// 8. `members`: the membership changed; tell the network.
/// 9. Snapshots: `build_snapshot` asks the apply task for a new snapshot
///    (`Engine::on_snapshot_built`); `snapshot_meta` goes to storage before
///    the write, `purge` after it; `snapshot_reads` read chunks to send
///    (`Engine::on_snapshot_chunk`); `snapshot_receives` store received
///    chunks in the state machine (`Engine::on_snapshot_chunk_stored`);
///    `install` saves the metadata as the installing snapshot's, then
///    installs the received snapshot in the state machine
///    (`Engine::on_snapshot_installed`, whose `snapshot_meta` makes it the
///    latest).
#[derive(Debug, Default)]
pub(crate) struct Actions {
    pub(crate) write: Option<Write>,
    pub(crate) messages: Vec<Message>,
    pub(crate) messages_after_write: Vec<(u64, Message)>,
    pub(crate) apply: Vec<Entry>,
    pub(crate) load: Option<Range<u64>>,
    pub(crate) reads: Vec<(u64, Result<u64, ReadError>)>,
    pub(crate) forwarded: Vec<(u64, ForwardResult)>,
    pub(crate) members: Option<BTreeMap<NodeId, String>>,
    pub(crate) build_snapshot: bool,
    pub(crate) snapshot_meta: Option<SnapshotMeta>,
    pub(crate) purge: Option<LogId>,
    pub(crate) snapshot_reads: Vec<SnapshotRead>,
    pub(crate) snapshot_receives: Vec<SnapshotReceive>,
    pub(crate) install: Option<SnapshotMeta>,
}

/// What became of a forwarded batch: the first entry it was appended at and
/// the leader that appended it, or why not.
pub(crate) type ForwardResult = Result<(LogId, NodeId), ProposeError>;

/// Read the chunk of `snapshot` at `offset`, to send to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotRead {
    pub(crate) to: NodeId,
    pub(crate) snapshot: LogId,
    pub(crate) offset: u64,
}

/// Store a received chunk in the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotReceive {
    pub(crate) from: NodeId,
    pub(crate) meta: SnapshotMeta,
    pub(crate) offset: u64,
    pub(crate) data: Bytes,
    pub(crate) done: bool,
}
