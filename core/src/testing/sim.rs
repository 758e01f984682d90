//! The pure Raft core, exposed for deterministic simulators.
//!
//! [`SimCore`] is the same engine the driver runs, with the driver's job
//! left to the caller: feed inputs, take [`SimActions`], and honour their
//! contract (see the field docs) — in particular, send a message of
//! `messages_after_write` only once the write it names is durable. A
//! simulator that breaks that contract is simulating a broken driver.
//!
//! Membership changes go through [`SimCore::add_learner`],
//! [`SimCore::set_voters`] and [`SimCore::remove`] (the engine's
//! `change_membership`, without the handle's waiting). Snapshots are the
//! caller's state machine's job: it answers the snapshot fields of
//! [`SimActions`] through the `on_snapshot_*` calls, as the apply task does.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use crate::CommandBytes;
use bytes::Bytes;

use crate::config::Config;
use crate::engine::config_change::MembershipChange;
use crate::engine::{Engine, EngineConfig, Restored};
use crate::error::{MembershipError, ProposeError, ReadError, TransferError};
use crate::message::Message;
use crate::metrics::Role;
use crate::restore::LogScan;
use crate::state_machine::StateMachineError;
use crate::storage::{StorageError, WriteBatch};
use crate::types::{Entry, EntryPayload, HardState, LogId, Membership, NodeId, SnapshotMeta};

/// A rule broken on purpose, to prove the simulator catches it. Planted
/// only with rafter's `planted-bugs` feature (`SimCore` refuses one
/// without it), so that no other build carries the broken branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlantedBug {
    /// The leader commits an entry of an earlier term by counting replicas
    /// (the Figure 8 scenario of the Raft paper).
    CommitEarlierTermByCounting,
    /// A vote is sent before it is durable.
    VoteBeforePersisting,
    /// A follower acknowledges entries before they are durable.
    AckBeforePersisting,
    /// ReadIndex answers without a quorum round.
    ReadWithoutQuorum,
    /// With `Config::lease_reads`, the leader's lease lasts four maximum
    /// election timeouts from an acknowledged heartbeat, ignoring
    /// `election_ticks_min` and `lease_drift_ticks`: a leader cut off from
    /// the others keeps answering reads after they elected another.
    LeaseOutlivesElectionTimeout,
}

/// What a node starts from in a simulation: its durable state.
#[derive(Debug, Clone, Default)]
pub struct SimDurable {
    /// The saved hard state.
    pub hard_state: HardState,
    /// The durable log, consecutive from `purged.index + 1`.
    pub log: Vec<Entry>,
    /// The last entry purged from the log (default: nothing purged).
    /// Invariant: `purged.index <= snapshot`'s index when there is one.
    pub purged: LogId,
    /// The saved snapshot metadata, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// The state machine's applied index. Invariant: `applied >= purged`
    /// (the caller finishes an install interrupted before its purge, as
    /// `restore` does, before building the core).
    pub applied: u64,
}

/// The output of one turn. The caller must:
/// 1. start `write` (at most one in flight) and later call
///    [`SimCore::on_write_done`] with its id, once durable;
/// 2. send `messages` now;
/// 3. send each of `messages_after_write` only after the write with that id
///    (or a later one) is durable — a crash before then loses it;
/// 4. apply `apply` in order;
/// 5. load `load` from the log and give it to [`SimCore::on_loaded`];
/// 6. answer `reads`: (request id, read index or error);
/// 7. `members`: the configuration changed (the real driver updates the
///    network's address book; a simulator may ignore it);
/// 8. snapshots, in the state machine, in this order:
///    - `build_snapshot`: snapshot the applied state and report its last
///      log id with [`SimCore::on_snapshot_built`];
///    - `snapshot_meta`, then `purge`: save the metadata as the latest
///      snapshot's (no write need precede it), then drop the log up to that
///      entry inclusive (entries after it stay), after the write in flight
///      (storage runs its jobs in order);
///    - `snapshot_reads`: read the chunk at each offset and give it to
///      [`SimCore::on_snapshot_chunk`] (`None` past the end);
///    - `snapshot_receives`: store each received chunk, then call
///      [`SimCore::on_snapshot_chunk_stored`] with the offset after it;
///    - `install`: save the metadata durably as the installing snapshot's
///      (kept apart from the latest's), then install the received snapshot
///      atomically (a crash before leaves the old state), then call
///      [`SimCore::on_snapshot_installed`] (whose `snapshot_meta` makes it
///      the latest, and whose `purge` follows).
#[derive(Debug, Default)]
pub struct SimActions {
    /// The storage write to start: (write id, batch).
    pub write: Option<(u64, WriteBatch)>,
    /// Messages to send now.
    pub messages: Vec<Message>,
    /// Messages to send once the write with the given id is durable.
    pub messages_after_write: Vec<(u64, Message)>,
    /// Committed, durable entries to apply, in order.
    pub apply: Vec<Entry>,
    /// Entries to load from the log.
    pub load: Option<Range<u64>>,
    /// Answers to read-index requests.
    pub reads: Vec<(u64, Result<u64, ReadError>)>,
    /// The members' addresses, when the configuration changed.
    pub members: Option<BTreeMap<NodeId, String>>,
    /// Build a snapshot of the applied state.
    pub build_snapshot: bool,
    /// Snapshot metadata to save.
    pub snapshot_meta: Option<SnapshotMeta>,
    /// Purge the log up to this entry, inclusive.
    pub purge: Option<LogId>,
    /// Snapshot chunks to read and send.
    pub snapshot_reads: Vec<SnapshotRead>,
    /// Received snapshot chunks to store.
    pub snapshot_receives: Vec<SnapshotReceive>,
    /// A fully received snapshot to install.
    pub install: Option<SnapshotMeta>,
}

/// Read the chunk of `snapshot` at `offset`, to send to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRead {
    /// The follower the chunk goes to.
    pub to: NodeId,
    /// The snapshot's last log id.
    pub snapshot: LogId,
    /// Where the chunk starts, in bytes.
    pub offset: u64,
}

/// A received chunk to store in the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotReceive {
    /// The leader that sent it.
    pub from: NodeId,
    /// The snapshot it belongs to.
    pub meta: SnapshotMeta,
    /// Where the chunk starts, in bytes (0: a new transfer starts).
    pub offset: u64,
    /// The chunk.
    pub data: Bytes,
    /// The last chunk (possibly empty): install once stored.
    pub done: bool,
}

/// One node's pure Raft core.
pub struct SimCore {
    engine: Engine,
}

impl SimCore {
    /// Builds node `id` from its durable state. A new node (empty log,
    /// default hard state, no snapshot) is bootstrapped like `Raft::start`
    /// does: entry 1 holds `members`.
    pub fn new(
        id: NodeId,
        config: &Config,
        mut durable: SimDurable,
        members: &Membership,
        planted_bug: Option<PlantedBug>,
    ) -> Result<Self, StorageError> {
        let is_new = durable.log.is_empty()
            && durable.hard_state == HardState::default()
            && durable.snapshot.is_none();
        if is_new {
            durable.log.push(Entry {
                term: 1,
                index: 1,
                payload: EntryPayload::Membership(Box::new(members.clone())),
            });
            durable.hard_state = HardState {
                term: 1,
                vote: None,
                commit: 1,
            };
        }
        Self::restore(id, config, durable, planted_bug)
    }

    /// Builds node `id` from its durable state without bootstrapping: a
    /// new node waits to be added to an existing cluster (it knows no
    /// configuration and cannot vote), like `Raft::start` without initial
    /// members.
    pub fn restore(
        id: NodeId,
        config: &Config,
        durable: SimDurable,
        planted_bug: Option<PlantedBug>,
    ) -> Result<Self, StorageError> {
        let SimDurable {
            hard_state,
            log,
            purged,
            snapshot,
            applied,
        } = durable;
        assert!(
            applied >= purged.index,
            "applied {applied} behind the purge point {purged:?}"
        );
        // As `restore`: the snapshot's membership is the base; membership
        // entries it covers are superseded by it.
        let mut memberships = Vec::new();
        if let Some(meta) = &snapshot {
            assert!(
                meta.last_log_id.index >= purged.index,
                "purged {purged:?} beyond the snapshot {:?}",
                meta.last_log_id
            );
            memberships.push((meta.last_log_id.index, meta.membership.clone()));
        }
        let mut scan = LogScan::new(purged, memberships);
        for entry in log {
            scan.push(entry)?;
        }
        let LogScan {
            last,
            term_runs,
            mut memberships,
        } = scan;
        if memberships.is_empty() {
            memberships.push((0, Membership::default()));
        }
        let restored = Restored {
            hard_state: HardState {
                commit: hard_state.commit.max(applied).max(purged.index),
                ..hard_state
            },
            purged,
            snapshot: snapshot.map(|m| m.last_log_id).unwrap_or_default(),
            last,
            term_runs,
            memberships,
            applied,
        };
        #[allow(unused_mut)]
        let mut engine_config = EngineConfig::from_config(config);
        #[cfg(feature = "planted-bugs")]
        {
            engine_config.planted_bug = planted_bug;
        }
        #[cfg(not(feature = "planted-bugs"))]
        assert!(
            planted_bug.is_none(),
            "{planted_bug:?} needs rafter's `planted-bugs` feature"
        );
        Ok(Self {
            engine: Engine::new(id, engine_config, restored),
        })
    }

    /// One tick of the logical clock.
    pub fn tick(&mut self) {
        self.engine.tick();
    }

    /// Handles a message addressed to this node.
    pub fn step(&mut self, message: Message) {
        self.engine.step(message);
    }

    /// Handles a message from a peer as `Raft::receive` does: validated
    /// first ([`crate::codec::validate_message`]), refused if invalid.
    pub fn receive(&mut self, message: Message) -> Result<(), crate::codec::DecodeError> {
        crate::codec::validate_message(&message)?;
        self.engine.step(message);
        Ok(())
    }

    /// Appends commands (leader only); returns the first entry's log id.
    pub fn propose(&mut self, commands: Vec<CommandBytes>) -> Result<LogId, ProposeError> {
        self.engine
            .propose(commands.into_iter().map(EntryPayload::Command).collect())
    }

    /// Asks for a read index; the answer comes in `SimActions::reads`.
    pub fn read_index(&mut self, request_id: u64) {
        self.engine.read_index(request_id);
    }

    /// Starts a leadership transfer.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), TransferError> {
        self.engine.transfer_leader(to)
    }

    /// Adds `id` as a learner (leader only; one change at a time).
    pub fn add_learner(&mut self, id: NodeId, addr: String) -> Result<LogId, MembershipError> {
        self.engine
            .change_membership(MembershipChange::AddLearner { id, addr })
    }

    /// Makes exactly `voters` the voters, through a joint configuration
    /// (leader only; one change at a time). Unlike the handle, this does not
    /// wait for new voters to catch up: check [`SimCore::replication`] first.
    pub fn set_voters(&mut self, voters: BTreeSet<NodeId>) -> Result<LogId, MembershipError> {
        self.engine
            .change_membership(MembershipChange::SetVoters(voters))
    }

    /// Removes voter or learner `id` (a voter through a joint configuration).
    pub fn remove(&mut self, id: NodeId) -> Result<LogId, MembershipError> {
        self.engine.change_membership(MembershipChange::Remove(id))
    }

    /// The state machine has applied up to `applied` (the apply task's
    /// report; snapshots are built from it).
    pub fn on_applied(&mut self, applied: u64) {
        self.engine.on_applied(applied);
    }

    /// The snapshot asked for by `build_snapshot` holds the applied state
    /// up to `result`'s log id. An error is the node's end (the driver stops
    /// it): a failed build, or a log id that cannot be what was applied.
    pub fn on_snapshot_built(
        &mut self,
        result: Result<LogId, StateMachineError>,
    ) -> Result<(), StateMachineError> {
        self.engine.on_snapshot_built(result)
    }

    /// The chunk read for a `SnapshotRead` (`Ok(None)` past the end).
    pub fn on_snapshot_chunk(
        &mut self,
        read: &SnapshotRead,
        chunk: Result<Option<Bytes>, StateMachineError>,
    ) {
        self.engine
            .on_snapshot_chunk(read.to, read.snapshot, read.offset, chunk);
    }

    /// A `SnapshotReceive` is stored; `next_offset` follows it.
    pub fn on_snapshot_chunk_stored(&mut self, receive: &SnapshotReceive, next_offset: u64) {
        self.engine.on_snapshot_chunk_stored(
            receive.from,
            receive.meta.clone(),
            next_offset,
            receive.done,
        );
    }

    /// The snapshot of an `install` is installed (and its metadata saved).
    pub fn on_snapshot_installed(&mut self, meta: SnapshotMeta) {
        self.engine.on_snapshot_installed(meta);
    }

    /// The write with this id is durable.
    pub fn on_write_done(&mut self, write_id: u64) {
        self.engine.on_write_done(write_id);
    }

    /// Entries loaded for a `SimActions::load` request.
    pub fn on_loaded(&mut self, entries: Vec<Entry>) {
        self.engine.on_loaded(entries);
    }

    /// Ends the turn and returns what to do.
    pub fn take_actions(&mut self) -> SimActions {
        let actions = self.engine.take_actions();
        SimActions {
            write: actions.write.map(|w| (w.id, w.batch)),
            messages: actions.messages,
            messages_after_write: actions.messages_after_write,
            apply: actions.apply,
            load: actions.load,
            reads: actions.reads,
            members: actions.members,
            build_snapshot: actions.build_snapshot,
            snapshot_meta: actions.snapshot_meta,
            purge: actions.purge,
            snapshot_reads: actions
                .snapshot_reads
                .into_iter()
                .map(|r| SnapshotRead {
                    to: r.to,
                    snapshot: r.snapshot,
                    offset: r.offset,
                })
                .collect(),
            snapshot_receives: actions
                .snapshot_receives
                .into_iter()
                .map(|r| SnapshotReceive {
                    from: r.from,
                    meta: r.meta,
                    offset: r.offset,
                    data: r.data,
                    done: r.done,
                })
                .collect(),
            install: actions.install,
        }
    }

    /// Checks every invariant of the core (O(log size)); panics on a
    /// violation.
    pub fn check_invariants(&self) {
        self.engine.check_invariants();
    }

    /// The node's role.
    pub fn role(&self) -> Role {
        self.engine.role()
    }
    /// The current term.
    pub fn term(&self) -> u64 {
        self.engine.term()
    }
    /// The leader known in this term.
    pub fn leader(&self) -> Option<NodeId> {
        self.engine.leader()
    }
    /// The commit index.
    pub fn commit_index(&self) -> u64 {
        self.engine.commit_index()
    }
    /// Reads answered from the leader lease since the core started.
    pub fn lease_reads_served(&self) -> u64 {
        self.engine.lease_reads_served()
    }
    /// The last entry of the log.
    pub fn last_log_id(&self) -> LogId {
        self.engine.last_log_id()
    }
    /// The term of the entry at `index`, if the log holds it.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.engine.term_at(index)
    }
    /// The hard state (term, vote, commit) as the core sees it now.
    pub fn hard_state(&self) -> HardState {
        self.engine.hard_state()
    }
    /// The configuration in force (the last in the log, committed or not).
    pub fn membership(&self) -> &Membership {
        self.engine.membership()
    }
    /// The index of the entry that holds the configuration in force.
    pub fn membership_index(&self) -> u64 {
        self.engine.membership_index()
    }
    /// The last entry of the latest snapshot (index 0: none).
    pub fn snapshot_index(&self) -> u64 {
        self.engine.snapshot_index()
    }
    /// On the leader, each peer's match index (empty elsewhere).
    pub fn replication(&self) -> BTreeMap<NodeId, u64> {
        self.engine.replication()
    }
}
