//! The pure Raft core, exposed for deterministic simulators.
//!
//! [`SimCore`] is the same engine the driver runs, with the driver's job
//! left to the caller: feed inputs, take [`SimActions`], and honour their
//! contract (see the field docs) — in particular, send a message of
//! `messages_after_write` only once the write it names is durable. A
//! simulator that breaks that contract is simulating a broken driver.

use std::ops::Range;

use bytes::Bytes;

use crate::config::Config;
use crate::engine::{Engine, EngineConfig, Restored};
use crate::error::{ProposeError, ReadError, TransferError};
use crate::message::Message;
use crate::metrics::Role;
use crate::restore::LogScan;
use crate::storage::{StorageError, WriteBatch};
use crate::types::{Entry, EntryPayload, HardState, LogId, Membership, NodeId};

/// A rule broken on purpose, to prove the simulator catches it.
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
}

/// What a node starts from in a simulation: its durable state.
#[derive(Debug, Clone, Default)]
pub struct SimDurable {
    /// The saved hard state.
    pub hard_state: HardState,
    /// The durable log, consecutive from index 1.
    pub log: Vec<Entry>,
    /// The state machine's applied index.
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
/// 6. answer `reads`: (request id, read index or error).
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
}

/// One node's pure Raft core.
pub struct SimCore {
    engine: Engine,
}

impl SimCore {
    /// Builds node `id` from its durable state. A new node (empty log) is
    /// bootstrapped like `Raft::start` does: entry 1 holds `members`.
    pub fn new(
        id: NodeId,
        config: &Config,
        durable: SimDurable,
        members: &Membership,
        planted_bug: Option<PlantedBug>,
    ) -> Result<Self, StorageError> {
        let mut hard_state = durable.hard_state;
        let mut log = durable.log;
        if log.is_empty() && hard_state == HardState::default() {
            log.push(Entry {
                term: 1,
                index: 1,
                payload: EntryPayload::Membership(Box::new(members.clone())),
            });
            hard_state = HardState {
                term: 1,
                vote: None,
                commit: 1,
            };
        }
        let mut scan = LogScan::new(LogId::default(), Vec::new());
        for entry in log {
            scan.push(entry)?;
        }
        let LogScan {
            last,
            term_runs,
            memberships,
        } = scan;
        let restored = Restored {
            hard_state: HardState {
                commit: hard_state.commit.max(durable.applied),
                ..hard_state
            },
            purged: LogId::default(),
            snapshot: LogId::default(),
            last,
            term_runs,
            memberships,
            applied: durable.applied,
        };
        let mut engine_config = EngineConfig::from_config(config);
        engine_config.planted_bug = planted_bug;
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

    /// Appends commands (leader only); returns the first entry's log id.
    pub fn propose(&mut self, commands: Vec<Bytes>) -> Result<LogId, ProposeError> {
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
    /// The configuration in force.
    pub fn membership(&self) -> &Membership {
        self.engine.membership()
    }
}
