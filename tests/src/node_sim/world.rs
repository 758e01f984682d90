//! The world of one run: everything the nodes share and the checks read,
//! behind one lock (the run is one thread; the lock is never held across
//! an await), and each node's life: start, crash, restart.
//!
//! A node's incarnation number goes up at every crash; its disk, state
//! machine and network are made for one incarnation and refuse to act for
//! an older one, so a crashed node's tasks, which wind down on their own,
//! change nothing (a dead process writes nothing and sends nothing).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rafter::testing::KvStateMachine;
use rafter::{LogId, Membership, NodeId, Raft, Role};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::disk::{DiskFaults, DiskStore, SimDisk};
use super::network::{NetworkConfig, SimNetwork};
use super::state_machine::{SimStateMachine, StateMachineFaults};
use super::{Check, RunConfig};
use crate::sim::history::History;
use crate::sim::rng::SimRng;
use crate::sim::trace::Trace;
use crate::sim::workload::OpGenerator;

/// The world, shared by every task of the run.
#[derive(Clone)]
pub struct Shared(Arc<Mutex<WorldState>>);

impl Shared {
    /// A world for `config`, drawing from `rng`.
    pub fn new(config: RunConfig, rng: SimRng) -> Self {
        Self(Arc::new(Mutex::new(WorldState::new(config, rng))))
    }

    /// The world. Never held across an await.
    pub fn lock(&self) -> MutexGuard<'_, WorldState> {
        // A panic while holding it fails the run anyway; the data stays
        // readable for the report.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One node as the world sees it, across its incarnations.
pub struct NodeSlot {
    /// The node's id.
    pub id: NodeId,
    /// A founding member (bootstraps with the initial membership); spares
    /// start empty and wait to be added.
    pub founder: bool,
    /// Bumped by every crash.
    pub incarnation: u64,
    /// Whether an incarnation is starting or running.
    pub up: bool,
    /// The running incarnation's handle.
    pub raft: Option<Raft<SimStateMachine>>,
    /// The state machine of the current incarnation (reads go here).
    pub kv: KvStateMachine,
    /// Its disk, kept across incarnations.
    pub disk: DiskStore,
    /// Faults armed on its disk.
    pub disk_faults: DiskFaults,
    /// Faults armed on its state machine.
    pub sm_faults: StateMachineFaults,
    /// When the node comes back after a crash (simulated micros).
    pub restart_at: u64,
    /// An injected fault that must stop the node, and since when.
    pub fatal_expected_since: Option<u64>,
    /// Highest commit index seen in this incarnation.
    pub commit_seen: u64,
}

/// An acknowledged write: its operation and where it was applied.
#[derive(Debug, Clone)]
pub struct Acked {
    /// The operation in the history.
    pub op: usize,
    /// The log index its answer named.
    pub index: u64,
    /// Its command, encoded as the log holds it.
    pub command: Vec<u8>,
}

/// Everything the run shares.
pub struct WorldState {
    /// What the seed drew.
    pub config: RunConfig,
    /// The one random stream.
    pub rng: SimRng,
    /// Every event, hashed.
    pub trace: Trace,
    step: u64,
    start: Instant,
    /// Founders and spares.
    pub nodes: BTreeMap<NodeId, NodeSlot>,
    /// The founding membership.
    pub founders: Membership,
    /// The network as it is now (the heal stops drops).
    pub network: NetworkConfig,
    /// Directed pairs (from, to) the network cuts.
    cuts: BTreeSet<(NodeId, NodeId)>,
    /// The clients' operations.
    pub history: History,
    /// Draws the clients' operations.
    pub generator: OpGenerator,
    /// The first check that failed.
    pub failed: Option<(Check, String)>,
    /// The first entry applied at each index: (log id, payload, node).
    applied_at: BTreeMap<u64, (LogId, Vec<u8>, NodeId)>,
    /// The first fingerprint reported at each applied index, by node.
    states: BTreeMap<u64, (NodeId, u64)>,
    /// The leader seen in each term.
    leaders: BTreeMap<u64, NodeId>,
    /// Writes answered Ok.
    pub acked: Vec<Acked>,
    /// Calls (operator requests, shutdowns of crashed nodes) that
    /// must all have returned when the world stops.
    pub calls: Vec<(String, JoinHandle<()>)>,
    /// Clients start no new operation.
    pub clients_stopped: bool,
    /// Faults stop and the network heals.
    pub healed: bool,
    /// The run is over: supervisors stop.
    pub finished: bool,
    /// Message copies on the wire.
    pub deliveries_in_flight: u64,
    /// Counters for the report.
    pub crashes: u64,
    pub starts: u64,
    pub snapshots_built: u64,
    pub snapshots_installed: u64,
    pub membership_changes_done: u64,
    /// Reads answered on a node that was not the leader.
    pub follower_reads: u64,
    /// Lease reads served by incarnations that crashed since.
    pub lease_reads_served: u64,
}

impl WorldState {
    fn new(config: RunConfig, rng: SimRng) -> Self {
        let founder_ids: BTreeSet<NodeId> = (1..=config.nodes as NodeId).collect();
        let founders = Membership {
            voters: founder_ids.clone(),
            nodes: founder_ids
                .iter()
                .map(|&id| (id, format!("node-{id}")))
                .collect(),
            ..Membership::default()
        };
        let mut nodes = BTreeMap::new();
        for id in 1..=(config.nodes + config.spares) as NodeId {
            let kv = KvStateMachine::new();
            kv.make_durable();
            nodes.insert(
                id,
                NodeSlot {
                    id,
                    founder: founder_ids.contains(&id),
                    incarnation: 0,
                    up: false,
                    raft: None,
                    kv,
                    disk: DiskStore::default(),
                    disk_faults: DiskFaults::default(),
                    sm_faults: StateMachineFaults::default(),
                    restart_at: 0,
                    fatal_expected_since: None,
                    commit_seen: 0,
                },
            );
        }
        Self {
            network: config.network.clone(),
            config,
            rng,
            trace: Trace::default(),
            step: 0,
            start: Instant::now(),
            nodes,
            founders,
            cuts: BTreeSet::new(),
            history: History::default(),
            generator: OpGenerator::default(),
            failed: None,
            applied_at: BTreeMap::new(),
            states: BTreeMap::new(),
            leaders: BTreeMap::new(),
            acked: Vec::new(),
            calls: Vec::new(),
            clients_stopped: false,
            healed: false,
            finished: false,
            deliveries_in_flight: 0,
            crashes: 0,
            starts: 0,
            snapshots_built: 0,
            snapshots_installed: 0,
            membership_changes_done: 0,
            follower_reads: 0,
            lease_reads_served: 0,
        }
    }

    /// Simulated microseconds since the start.
    pub fn now_micros(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Records an event in the trace (and its hash).
    pub fn note(&mut self, text: String) {
        self.step += 1;
        let now = self.now_micros();
        self.trace.record(self.step, now, text);
    }

    /// Events recorded so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Records that `check` failed (the first failure is the one reported).
    pub fn violation(&mut self, check: Check, text: String) {
        self.note(format!("VIOLATION {check:?}: {text}"));
        if self.failed.is_none() {
            self.failed = Some((check, text));
        }
    }

    /// Node `id`.
    pub fn node(&self, id: NodeId) -> &NodeSlot {
        &self.nodes[&id]
    }

    /// Node `id`, to change.
    pub fn node_mut(&mut self, id: NodeId) -> &mut NodeSlot {
        self.nodes.get_mut(&id).expect("a simulated node")
    }

    /// The incarnation of `id` now running (or starting).
    pub fn incarnation(&self, id: NodeId) -> u64 {
        self.node(id).incarnation
    }

    /// An injected fault will stop node `id`: that stop is not a failure,
    /// and the node must stop soon (fail-stop).
    pub fn expect_fatal(&mut self, id: NodeId) {
        let now = self.now_micros();
        self.node_mut(id).fatal_expected_since.get_or_insert(now);
    }

    /// Whether the network cuts `from -> to`.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cuts.contains(&(from, to))
    }

    /// Cuts (or restores) `from -> to`.
    pub fn set_cut(&mut self, from: NodeId, to: NodeId, cut: bool) {
        if cut {
            self.cuts.insert((from, to));
        } else {
            self.cuts.remove(&(from, to));
        }
    }

    /// Heals every partition.
    pub fn heal_network(&mut self) {
        self.cuts.clear();
    }

    /// The power goes at node `id`: its incarnation ends, its disk keeps
    /// what was durable (and any subset of the rest), its state machine
    /// keeps what it applied, and it comes back after a downtime drawn
    /// from the seed. The dead incarnation's handle is shut down in a task
    /// of its own, whose end the final checks wait for.
    pub fn crash(&mut self, id: NodeId) {
        if !self.node(id).up {
            return;
        }
        let (low, high) = self.config.downtime_micros;
        let downtime = self.rng.between(low, high);
        let restart_at = self.now_micros() + downtime;
        let (kept, total) = {
            let WorldState { nodes, rng, .. } = self;
            nodes
                .get_mut(&id)
                .expect("a simulated node")
                .disk
                .crash(rng)
        };
        let slot = self.node_mut(id);
        slot.incarnation += 1;
        slot.up = false;
        slot.kv = slot.kv.restarted();
        slot.restart_at = restart_at;
        slot.fatal_expected_since = None;
        slot.disk_faults = DiskFaults::default();
        slot.sm_faults = StateMachineFaults::default();
        let old = slot.raft.take();
        self.crashes += 1;
        if let Some(raft) = &old {
            self.lease_reads_served += raft.status().lease_reads_served;
        }
        self.note(format!(
            "node {id} crashes; {kept} of {total} unsynced disk operations survive; back in \
             {downtime} us"
        ));
        if let Some(raft) = old {
            let task = tokio::spawn(async move { raft.shutdown().await });
            self.calls
                .push((format!("shutdown of a crashed node {id}"), task));
        }
    }

    /// Checks an applied entry against the first one applied at its index.
    pub fn on_apply(&mut self, id: NodeId, log_id: LogId, payload: Vec<u8>) {
        match self.applied_at.get(&log_id.index) {
            None => {
                self.applied_at.insert(log_id.index, (log_id, payload, id));
            }
            Some((first, first_payload, other)) => {
                if *first != log_id || *first_payload != payload {
                    let text = format!(
                        "node {id} applies {log_id:?}, node {other} applied {first:?} at that \
                         index{}",
                        if *first == log_id {
                            " with another command"
                        } else {
                            ""
                        }
                    );
                    self.violation(Check::StateMachineSafety, text);
                }
            }
        }
    }

    /// Checks the fingerprint of `id`'s applied sequence at `applied`
    /// against the first one reported there.
    pub fn on_state(&mut self, id: NodeId, how: &str, applied: LogId, fingerprint: u64) {
        match self.states.get(&applied.index) {
            None => {
                self.states.insert(applied.index, (id, fingerprint));
            }
            Some(&(other, expected)) if expected != fingerprint => {
                let text = format!(
                    "node {id} {how} up to {applied:?} with fingerprint {fingerprint:#x}; node \
                     {other} had {expected:#x} there: their applied sequences differ"
                );
                self.violation(Check::StateMachineSafety, text);
            }
            Some(_) => {}
        }
    }

    /// The entry first applied at `index`.
    pub fn applied_at(&self, index: u64) -> Option<&(LogId, Vec<u8>, NodeId)> {
        self.applied_at.get(&index)
    }

    /// Checks what node `id`'s metrics show: one leader per term (Raft
    /// §5.2), a commit index that never goes back within an incarnation,
    /// and its queues within their bounds.
    pub fn observe(&mut self, id: NodeId) {
        let Some(raft) = self.node(id).raft.clone() else {
            return;
        };
        let m = raft.status();
        if m.role == Role::Leader {
            match self.leaders.get(&m.term) {
                None => {
                    self.leaders.insert(m.term, id);
                    self.note(format!("node {id} leads term {}", m.term));
                }
                Some(&other) if other != id => self.violation(
                    Check::ElectionSafety,
                    format!("nodes {other} and {id} both lead term {}", m.term),
                ),
                Some(_) => {}
            }
        }
        let slot = self.node_mut(id);
        if m.commit_index < slot.commit_seen {
            let text = format!(
                "node {id}'s commit index went back from {} to {}",
                slot.commit_seen, m.commit_index
            );
            self.violation(Check::Monotonic, text);
        } else {
            slot.commit_seen = m.commit_index;
        }
        if m.applied_index > m.commit_index.max(m.snapshot_index) {
            let text = format!(
                "node {id} applied {} beyond its commit index {}",
                m.applied_index, m.commit_index
            );
            self.violation(Check::Monotonic, text);
        }
        // Each client has one call in flight, of at most
        // `BATCH_COMMANDS_MAX` commands, and the liveness probe one more.
        let bound = (self.config.clients + 1) * super::workload::BATCH_COMMANDS_MAX;
        if m.proposals_waiting > bound {
            let text = format!(
                "node {id} holds {} waiting proposals, more than the {bound} commands its \
                 callers can have in flight",
                m.proposals_waiting
            );
            self.violation(Check::QueueBound, text);
        }
    }
}

/// The life of node `id`: start it (founders at once, spares empty, to be
/// added), then every tick: check its metrics, notice it stopped, restart
/// it after a crash. Ends when `done` says so.
pub async fn supervise(world: Shared, id: NodeId) {
    let tick = world.lock().config.raft.tick_interval;
    loop {
        let start = {
            let mut w = world.lock();
            if w.finished {
                return;
            }
            let now = w.now_micros();
            w.observe(id);
            let slot = w.node(id);
            if let Some(raft) = slot.raft.clone() {
                let m = raft.status();
                if m.stopped {
                    if slot.fatal_expected_since.is_some() {
                        w.note(format!("node {id} stopped as it must: {:?}", m.fatal));
                        w.crash(id);
                    } else {
                        let text = format!("node {id} stopped on its own: {:?}", m.fatal);
                        w.violation(Check::UnexpectedStop, text);
                        return;
                    }
                } else if let Some(since) = slot.fatal_expected_since {
                    let patience = 20 * tick.as_micros() as u64;
                    if now > since + patience {
                        let text = format!(
                            "node {id} runs on {} us after a fault that must stop it",
                            now - since
                        );
                        w.violation(Check::FailStop, text);
                        return;
                    }
                }
                false
            } else {
                !slot.up && now >= slot.restart_at
            }
        };
        if start {
            start_node(&world, id).await;
        }
        tokio::time::sleep(tick).await;
    }
}

/// Starts the next incarnation of `id` on what its disk and state machine
/// hold.
async fn start_node(world: &Shared, id: NodeId) {
    let (config, members, disk, network, state_machine, incarnation) = {
        let mut w = world.lock();
        let base = w.config.raft.clone();
        // Clock skew: each incarnation ticks at its own pace.
        let skew_max = w.config.skew_per_mille;
        let skew = w.rng.between(0, 2 * skew_max) as i64 - skew_max as i64;
        let micros = base.tick_interval.as_micros() as i64;
        let tick = Duration::from_micros((micros + micros * skew / 1000) as u64);
        let incarnation = w.incarnation(id);
        let config = base
            .with_tick_interval(tick)
            .with_rng_seed(w.config.seed ^ (incarnation << 32));
        let members = w.node(id).founder.then(|| w.founders.clone());
        let slot = w.node_mut(id);
        slot.up = true;
        slot.commit_seen = 0;
        let kv = slot.kv.clone();
        w.starts += 1;
        w.note(format!(
            "node {id} starts (incarnation {incarnation}, tick {} us)",
            tick.as_micros()
        ));
        (
            config,
            members,
            SimDisk::new(world.clone(), id, incarnation),
            SimNetwork::new(world.clone(), id, incarnation),
            SimStateMachine::new(kv, world.clone(), id, incarnation),
            incarnation,
        )
    };
    let started = Raft::start(id, config, members, disk, network, state_machine).await;
    let mut w = world.lock();
    let alive = w.incarnation(id) == incarnation;
    match started {
        Ok(raft) if alive => w.node_mut(id).raft = Some(raft),
        Ok(raft) => {
            // It crashed while starting: this incarnation is over.
            let task = tokio::spawn(async move { raft.shutdown().await });
            w.calls
                .push((format!("shutdown of node {id} crashed at start"), task));
        }
        Err(_) if !alive => {}
        Err(error) if w.node(id).fatal_expected_since.is_some() => {
            // A fault armed while it was down hit its start (seed 9281).
            w.note(format!("node {id} fails to start as it must: {error}"));
            w.crash(id);
        }
        Err(error) => {
            let text = format!("node {id} does not start after a crash: {error}");
            w.violation(Check::Restart, text);
        }
    }
}
