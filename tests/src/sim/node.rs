//! One simulated node: the real `SimCore`, its disk, its state machine, and
//! the driver-side bookkeeping the simulator does for it (messages waiting
//! on writes, proposals and reads waiting on the apply).
//!
//! The state machine is durable at apply time: a crash keeps the KV map and
//! its applied index, like a state machine that commits each apply to its
//! own storage; the restarted core is told that applied index
//! (`SimDurable::applied`) and resumes applying after it. Its latest
//! snapshot is durable too; chunks of a snapshot being received are not
//! (a crash mid-transfer or mid-install leaves the old state, and the
//! leader starts the transfer over).

use std::collections::BTreeMap;

use bytes::Bytes;
use rafter::testing::{ProposalWaiters, SimCore, SimDurable};
use rafter::{LogId, Message, NodeId};

use super::disk::Disk;
use super::kv::KvStore;

/// One node.
pub struct SimNode {
    pub id: NodeId,
    /// `None` while crashed.
    pub core: Option<SimCore>,
    pub disk: Disk,
    /// The state machine; survives crashes (see the module docs).
    pub kv: KvStore,
    /// Invariant: `applied` never decreases, even across crashes.
    pub applied: u64,
    /// The term of the entry at `applied`.
    pub applied_term: u64,
    /// The state machine's latest snapshot: (last log id, bytes).
    pub snapshot: Option<(LogId, Bytes)>,
    /// A snapshot being received: (its last log id, the bytes so far).
    pub receiving: Option<(LogId, Vec<u8>)>,
    /// Set from the core's `install` until the install completes.
    pub installing: bool,
    /// Bumped by every crash; events of an older incarnation are dropped.
    pub incarnation: u64,
    /// Messages waiting for the write with that id to be durable.
    pub held: Vec<(u64, Message)>,
    /// Clients whose proposals wait for their entry, answered by the
    /// shipped waiter code (the apply task's).
    pub proposals: ProposalWaiters<usize>,
    /// Read requests sent to the core: request id → client.
    pub reads: BTreeMap<u64, usize>,
    /// Reads with a read index, waiting for `applied` to reach it:
    /// (read index, request id, client).
    pub reads_ready: Vec<(u64, u64, usize)>,
    /// Time units between ticks (varies with skew faults).
    pub tick_period: u64,
    /// The tick period without skew.
    pub tick_period_base: u64,
    /// Set by a (re)start until the next check: the commit index may start
    /// below the last one seen.
    pub restarted: bool,
    /// The commit index at the last check.
    pub commit_last: u64,
    /// Whether the node ever started (a spare joins only when added).
    pub started: bool,
}

impl SimNode {
    pub fn new(id: NodeId, disk: Disk, tick_period: u64) -> Self {
        Self {
            id,
            core: None,
            disk,
            kv: KvStore::default(),
            applied: 0,
            applied_term: 0,
            snapshot: None,
            receiving: None,
            installing: false,
            incarnation: 0,
            held: Vec::new(),
            proposals: ProposalWaiters::new(),
            reads: BTreeMap::new(),
            reads_ready: Vec::new(),
            tick_period,
            tick_period_base: tick_period,
            restarted: false,
            commit_last: 0,
            started: false,
        }
    }

    pub fn is_up(&self) -> bool {
        self.core.is_some()
    }

    /// What a restart finds: the synced hard state, the durable log, and
    /// the state machine's applied index.
    pub fn durable(&self) -> SimDurable {
        SimDurable {
            hard_state: self.disk.hard_state_synced(),
            log: self.disk.log().to_vec(),
            purged: self.disk.purged(),
            snapshot: self.disk.snapshot().cloned(),
            applied: self.applied,
        }
    }

    /// Messages whose write is now durable.
    pub fn release_held(&mut self) -> Vec<Message> {
        let completed = self.disk.completed();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.held.drain(..).partition(|(id, _)| *id <= completed);
        self.held = waiting;
        ready.into_iter().map(|(_, m)| m).collect()
    }

    /// The node crashed: the core, the write in flight, the held messages
    /// and every waiter are gone. Returns the clients whose proposals now
    /// have an unknown outcome and those whose reads got no answer.
    pub fn crash(&mut self) -> (Vec<usize>, Vec<usize>) {
        self.core = None;
        self.disk.crash();
        self.receiving = None;
        self.installing = false;
        self.incarnation += 1;
        self.held.clear();
        let writers = self.proposals.drain();
        let mut readers: Vec<usize> = std::mem::take(&mut self.reads).into_values().collect();
        readers.extend(self.reads_ready.drain(..).map(|(_, _, client)| client));
        (writers, readers)
    }
}
