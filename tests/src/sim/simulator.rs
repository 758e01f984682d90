//! The event loop: one queue of timed events, handled one per step, with
//! every cross-node check run after each step.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use bytes::Bytes;
use rafter::testing::{SimCore, SnapshotRead, SnapshotReceive};
use rafter::{
    Entry, EntryPayload, HardState, LogId, Membership, MembershipError, Message, MessageBody,
    NodeId, ProposeError, ReadError, Role, SnapshotMeta, StateMachineError,
};

use super::disk::Disk;
use super::faults::{CrashTarget, Fault, Schedule, Trap};
use super::history::{History, Outcome};
use super::invariants::{Checker, Violation};
use super::kv::{self, KvInput, KvOutput, KvStore};
use super::network::Network;
use super::node::SimNode;
use super::rng::SimRng;
use super::trace::{describe, Trace};
use super::workload::{Client, OpGenerator, Waiting};
use super::{Options, RunConfig, TICK, TICK_PERIOD_MAX, TICK_PERIOD_MIN};

/// Something that happens at a time.
#[derive(Debug, Clone)]
enum Event {
    Tick(NodeId),
    Deliver(Message),
    WriteDone {
        node: NodeId,
        incarnation: u64,
        write_id: u64,
    },
    LoadDone {
        node: NodeId,
        incarnation: u64,
        range: Range<u64>,
    },
    ClientWake {
        client: usize,
        attempt: u64,
    },
    ClientTimeout {
        client: usize,
        attempt: u64,
    },
    Fault(usize),
    Restart {
        node: NodeId,
        incarnation: u64,
    },
    Heal {
        generation: u64,
    },
    /// The state machine finished installing a received snapshot.
    InstallDone {
        node: NodeId,
        incarnation: u64,
        meta: SnapshotMeta,
    },
    Unskew {
        node: NodeId,
        generation: u64,
    },
}

/// The whole simulated world of one seed.
pub(super) struct Simulator {
    pub(super) options: Options,
    pub(super) config: RunConfig,
    pub(super) rng: SimRng,
    pub(super) now: u64,
    pub(super) step: u64,
    queue: BTreeMap<(u64, u64), Event>,
    queue_seq: u64,
    /// Founding nodes first, then the spares (ids in order from 1).
    pub(super) nodes: Vec<SimNode>,
    pub(super) network: Network,
    partition_generation: u64,
    skew_generation: BTreeMap<NodeId, u64>,
    pub(super) schedule: Schedule,
    /// False once the final heal starts: remaining faults are skipped.
    faults_on: bool,
    /// Set by the final heal: clients start no new operations.
    quiescing: bool,
    /// (until, blocks traps): a scenario's cut that other faults must not
    /// replace before `until`.
    partition_lock: Option<(u64, bool)>,
    pub(super) clients: Vec<Client>,
    generator: OpGenerator,
    pub(super) history: History,
    next_read_id: u64,
    pub(super) checker: Checker,
    pub(super) trace: Trace,
    touched: BTreeSet<NodeId>,
    /// Armed traps: how many more times each springs, and for how long.
    traps: BTreeMap<Trap, (u64, u64)>,
    /// Traps that sprang this step: (victim, trap), sprung after the checks.
    sprung: Vec<(NodeId, Trap)>,
    /// The first violation found outside a `Result` path (in `send`).
    violation: Option<Violation>,
    /// Membership changes the leader accepted.
    pub(super) membership_changes_appended: u64,
    /// Snapshots built by state machines.
    pub(super) snapshots_built: u64,
    /// Snapshots received and installed (by followers).
    pub(super) snapshots_installed: u64,
    /// Reads answered with a read index on a node that was not leader.
    pub(super) follower_reads: u64,
    /// Lease reads served by cores that crashed since (live cores count
    /// their own: see `lease_reads_served`).
    lease_reads_served_crashed: u64,
}

impl Simulator {
    pub(super) fn new(options: Options, config: RunConfig, mut rng: SimRng) -> Self {
        let ids: Vec<NodeId> = (1..=config.nodes as NodeId).collect();
        let all_ids: Vec<NodeId> = (1..=(config.nodes + config.spares) as NodeId).collect();
        let members = Membership::new_voters(ids.iter().map(|&id| (id, format!("node-{id}"))));
        let schedule = Schedule::random(
            &mut rng,
            &config.faults,
            &ids,
            20 * TICK,
            config.fault_horizon,
        );
        // Every node starts as a founding member: entry 1 holds the
        // membership, durable before the node runs (as `Raft::start` does).
        let bootstrap = Entry {
            term: 1,
            index: 1,
            payload: EntryPayload::Membership(Box::new(members.clone())),
        };
        let hard_state = HardState {
            term: 1,
            vote: None,
            commit: 1,
        };
        let nodes = all_ids
            .iter()
            .map(|&id| {
                let period = rng.between(TICK_PERIOD_MIN, TICK_PERIOD_MAX);
                // A spare's disk is empty: it joins when added.
                let disk = if ids.contains(&id) {
                    Disk::bootstrapped(vec![bootstrap.clone()], hard_state)
                } else {
                    Disk::default()
                };
                SimNode::new(id, disk, period)
            })
            .collect();
        let clients = (0..config.workload.clients)
            .map(|id| Client {
                id,
                guess: rng.pick(&ids),
                op: None,
                attempt: 0,
                waiting: Waiting::Nothing,
                read_per_mille: rng.pick(&[200, 400, 800, 950]),
            })
            .collect();
        let network = Network::new(config.network.clone());
        let mut sim = Self {
            options,
            config,
            rng,
            now: 0,
            step: 0,
            queue: BTreeMap::new(),
            queue_seq: 0,
            nodes,
            network,
            partition_generation: 0,
            skew_generation: BTreeMap::new(),
            schedule,
            faults_on: true,
            quiescing: false,
            partition_lock: None,
            clients,
            generator: OpGenerator::default(),
            history: History::default(),
            next_read_id: 1,
            checker: Checker::default(),
            trace: Trace::default(),
            touched: BTreeSet::new(),
            traps: BTreeMap::new(),
            sprung: Vec::new(),
            violation: None,
            membership_changes_appended: 0,
            snapshots_built: 0,
            snapshots_installed: 0,
            follower_reads: 0,
            lease_reads_served_crashed: 0,
        };
        for id in ids {
            sim.start_node(id).expect("a fresh node passes the checks");
        }
        for i in 0..sim.schedule.faults.len() {
            let time = sim.schedule.faults[i].0;
            sim.schedule_at(time, Event::Fault(i));
        }
        for client in 0..sim.clients.len() {
            let start = sim.rng.between(TICK, 30 * TICK);
            sim.schedule_at(start, Event::ClientWake { client, attempt: 0 });
        }
        sim
    }

    fn schedule_at(&mut self, time: u64, event: Event) {
        self.queue_seq += 1;
        self.queue
            .insert((time.max(self.now), self.queue_seq), event);
    }

    fn node(&mut self, id: NodeId) -> &mut SimNode {
        &mut self.nodes[id as usize - 1]
    }

    fn core(&mut self, id: NodeId) -> Option<&mut SimCore> {
        self.nodes[id as usize - 1].core.as_mut()
    }

    fn note(&mut self, text: String) {
        self.trace.record(self.step, self.now, text);
    }

    // ----- the loop -----

    /// Runs the main phase (faults on) for `options.steps` steps, then heals
    /// everything and requires a new write to complete (liveness).
    pub(super) fn run(&mut self) -> Result<(), Violation> {
        while self.step < self.options.steps {
            self.run_one()?;
        }
        let mut probe = self.heal_all()?;
        let deadline = self.now + self.config.heal_ticks_max * TICK;
        loop {
            match self.history.get(probe).outcome {
                Outcome::Pending => {}
                // It timed out, or its node installed a snapshot covering
                // the entry: whether it committed is unknown. Probe again.
                Outcome::Unknown => probe = self.start_probe()?,
                _ => break,
            }
            if self.now > deadline {
                return Err(format!(
                    "liveness: the probe write did not complete within {} ticks after \
                     every fault healed",
                    self.config.heal_ticks_max
                ));
            }
            self.run_one()?;
        }
        if !matches!(self.history.get(probe).outcome, Outcome::Ok { .. }) {
            return Err(format!(
                "liveness: the probe write ended {:?} after every fault healed",
                self.history.get(probe).outcome
            ));
        }
        self.history.close();
        Ok(())
    }

    fn run_one(&mut self) -> Result<(), Violation> {
        let ((time, _), event) = self.queue.pop_first().expect("ticks keep the queue busy");
        debug_assert!(time >= self.now, "time goes forward");
        self.now = time;
        self.step += 1;
        self.handle(event)?;
        self.check_touched()?;
        for (victim, trap) in std::mem::take(&mut self.sprung) {
            self.spring(victim, trap)?;
        }
        self.check_touched()?;
        match self.violation.take() {
            Some(violation) => Err(violation),
            None => Ok(()),
        }
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Tick(id) => {
                let period = self.node(id).tick_period;
                self.schedule_at(self.now + period, Event::Tick(id));
                if let Some(core) = self.core(id) {
                    core.tick();
                    self.trace.mix(&[1, id]);
                    self.turn(id)?;
                }
            }
            Event::Deliver(message) => {
                let (from, to) = (message.from, message.to);
                if self.network.is_cut(from, to) {
                    self.note(format!("lost (cut) {}", describe(&message)));
                } else if !self.nodes[to as usize - 1].is_up() {
                    self.note(format!("lost (down) {}", describe(&message)));
                } else {
                    self.note(format!("deliver {}", describe(&message)));
                    self.core(to).expect("up").step(message);
                    self.turn(to)?;
                }
            }
            Event::WriteDone {
                node,
                incarnation,
                write_id,
            } => {
                if self.node(node).incarnation == incarnation && self.node(node).is_up() {
                    let (truncated, hard_state) = self.node(node).disk.complete(write_id);
                    self.note(format!("node {node} write {write_id} durable"));
                    if let Some(hs) = hard_state.filter(|hs| hs.vote == Some(node)) {
                        // A durable vote for itself counts (Figure 2).
                        self.checker.on_vote(node, hs.term, node)?;
                    }
                    self.core(node).expect("up").on_write_done(write_id);
                    for message in self.node(node).release_held() {
                        self.send(message);
                    }
                    self.turn(node)?;
                    if truncated.is_some() {
                        self.check_durable_quorum()?;
                    }
                }
            }
            Event::LoadDone {
                node,
                incarnation,
                range,
            } => {
                if self.node(node).incarnation == incarnation && self.node(node).is_up() {
                    let disk = &self.node(node).disk;
                    let entries: Vec<Entry> = range
                        .clone()
                        .map_while(|index| disk.entry(index).cloned())
                        .collect();
                    self.note(format!("node {node} loaded {range:?}"));
                    self.core(node).expect("up").on_loaded(entries);
                    self.turn(node)?;
                }
            }
            Event::ClientWake { client, attempt } => {
                if self.clients[client].attempt == attempt {
                    self.client_attempt(client)?;
                }
            }
            Event::ClientTimeout { client, attempt } => {
                if self.clients[client].attempt == attempt {
                    self.client_timeout(client);
                }
            }
            Event::Fault(i) => {
                if self.faults_on {
                    let fault = self.schedule.faults[i].1.clone();
                    self.note(format!("FAULT {fault}"));
                    self.fire(fault)?;
                }
            }
            Event::Restart { node, incarnation } => {
                if !self.node(node).is_up() && self.node(node).incarnation == incarnation {
                    self.start_node(node)?;
                }
            }
            Event::InstallDone {
                node,
                incarnation,
                meta,
            } => {
                if self.node(node).incarnation == incarnation && self.node(node).is_up() {
                    self.install(node, meta)?;
                }
            }
            Event::Heal { generation } => {
                if generation == self.partition_generation {
                    self.network.heal();
                    self.note("network healed".to_string());
                }
            }
            Event::Unskew { node, generation } => {
                if self.skew_generation.get(&node) == Some(&generation) {
                    let base = self.node(node).tick_period_base;
                    self.node(node).tick_period = base;
                    self.note(format!("node {node} tick skew over"));
                }
            }
        }
        Ok(())
    }

    // ----- one node's turn: the driver's job -----

    /// Takes the core's actions and carries them out under the `SimActions`
    /// contract.
    fn turn(&mut self, id: NodeId) -> Result<(), Violation> {
        self.touched.insert(id);
        let applied = self.node(id).applied;
        let core = self.core(id).expect("turn on an up node");
        core.on_applied(applied);
        let actions = core.take_actions();
        let grants_vote = actions
            .messages
            .iter()
            .chain(actions.messages_after_write.iter().map(|(_, m)| m))
            .any(|m| {
                matches!(
                    m.body,
                    MessageBody::VoteResponse {
                        pre_vote: false,
                        granted: true
                    }
                )
            });
        if grants_vote && self.traps.contains_key(&Trap::CrashOnVote) {
            self.sprung.push((id, Trap::CrashOnVote));
        }
        if let Some((write_id, batch)) = actions.write {
            let node = &self.nodes[id as usize - 1];
            self.checker.on_write(id, &node.disk, &batch)?;
            self.note(format!(
                "node {id} write {write_id}: truncate={:?} entries={:?} hs={:?} sync={}",
                batch.truncate_from,
                batch
                    .entries
                    .first()
                    .map(|e| (e.term, e.index))
                    .zip(batch.entries.last().map(|e| e.index)),
                batch.hard_state.map(|h| (h.term, h.vote, h.commit)),
                batch.must_sync
            ));
            self.node(id).disk.start(write_id, batch);
            let latency = self.disk_latency();
            let incarnation = self.node(id).incarnation;
            self.schedule_at(
                self.now + latency,
                Event::WriteDone {
                    node: id,
                    incarnation,
                    write_id,
                },
            );
        }
        for message in actions.messages {
            self.send(message);
        }
        for (write_id, message) in actions.messages_after_write {
            if self.node(id).disk.completed() >= write_id {
                self.send(message);
            } else {
                self.node(id).held.push((write_id, message));
            }
        }
        if let Some(entry) = actions.apply.first().filter(|_| self.node(id).installing) {
            // The install would overwrite what the entry did (or skip it).
            return Err(format!(
                "node {id} hands {:?} to apply while a snapshot is installed",
                entry.log_id()
            ));
        }
        for entry in actions.apply {
            self.apply(id, entry)?;
        }
        if !self.node(id).reads_ready.is_empty() {
            self.answer_ready_reads(id);
        }
        if let Some(range) = actions.load {
            let latency = self.disk_latency();
            let incarnation = self.node(id).incarnation;
            self.schedule_at(
                self.now + latency,
                Event::LoadDone {
                    node: id,
                    incarnation,
                    range,
                },
            );
        }
        for (request, answer) in actions.reads {
            self.read_answered(id, request, answer);
        }
        // Snapshots, in the driver's order: metadata, purge (after the
        // write in flight), install, build, chunk reads, chunk receives.
        if let Some(meta) = actions.snapshot_meta {
            self.note(format!(
                "node {id} saves snapshot meta {:?}",
                meta.last_log_id
            ));
            self.node(id).disk.save_snapshot_meta(meta);
        }
        if let Some(up_to) = actions.purge {
            self.note(format!("node {id} purges the log up to {up_to:?}"));
            self.node(id).disk.purge(up_to);
        }
        if let Some(meta) = actions.install {
            self.node(id).installing = true;
            let latency = self.disk_latency();
            let incarnation = self.node(id).incarnation;
            self.schedule_at(
                self.now + latency,
                Event::InstallDone {
                    node: id,
                    incarnation,
                    meta,
                },
            );
        }
        let mut again = false;
        if actions.build_snapshot {
            let node = self.node(id);
            let at = LogId::new(node.applied_term, node.applied);
            let bytes = node.kv.snapshot(at);
            node.snapshot = Some((at, bytes));
            self.snapshots_built += 1;
            self.note(format!("node {id} built a snapshot at {at:?}"));
            self.core(id)
                .expect("up")
                .on_snapshot_built(Ok(at))
                .map_err(|error| format!("node {id}: its snapshot at {at:?} refused: {error}"))?;
            again = true;
        }
        for read in actions.snapshot_reads {
            self.read_snapshot_chunk(id, &read);
            again = true;
        }
        for receive in actions.snapshot_receives {
            self.receive_snapshot_chunk(id, &receive)?;
            again = true;
        }
        if again {
            self.turn(id)?;
        }
        Ok(())
    }

    /// Bytes per snapshot chunk: the driver uses `append_bytes_max`; a
    /// floor keeps transfers to a few chunks when that is 1.
    fn snapshot_chunk_bytes(&self) -> usize {
        (self.config.raft.append_bytes_max as usize).max(16)
    }

    fn read_snapshot_chunk(&mut self, id: NodeId, read: &SnapshotRead) {
        let bytes_max = self.snapshot_chunk_bytes();
        let chunk = match &self.node(id).snapshot {
            Some((at, bytes)) if *at == read.snapshot => {
                let offset = read.offset as usize;
                Ok((offset < bytes.len())
                    .then(|| bytes.slice(offset..(offset + bytes_max).min(bytes.len()))))
            }
            _ => Err(StateMachineError::SnapshotUnavailable(read.snapshot)),
        };
        self.core(id).expect("up").on_snapshot_chunk(read, chunk);
    }

    fn receive_snapshot_chunk(
        &mut self,
        id: NodeId,
        receive: &SnapshotReceive,
    ) -> Result<(), Violation> {
        let snapshot = receive.meta.last_log_id;
        let node = self.node(id);
        if receive.offset == 0 {
            node.receiving = Some((snapshot, Vec::new()));
        }
        match &mut node.receiving {
            Some((at, buffer)) if *at == snapshot && buffer.len() as u64 == receive.offset => {
                buffer.extend_from_slice(&receive.data);
            }
            other => {
                return Err(format!(
                    "node {id} is given chunk {}..+{} of snapshot {snapshot:?} while it holds \
                     {:?}",
                    receive.offset,
                    receive.data.len(),
                    other.as_ref().map(|(at, b)| (*at, b.len()))
                ))
            }
        }
        let next_offset = receive.offset + receive.data.len() as u64;
        self.core(id)
            .expect("up")
            .on_snapshot_chunk_stored(receive, next_offset);
        Ok(())
    }

    /// Installs the received snapshot atomically: metadata saved, state
    /// machine replaced, then the core is told (and purges its log).
    fn install(&mut self, id: NodeId, meta: SnapshotMeta) -> Result<(), Violation> {
        let snapshot = meta.last_log_id;
        let node = self.node(id);
        node.installing = false;
        let Some((at, buffer)) = node.receiving.take() else {
            return Err(format!(
                "node {id} installs {snapshot:?} without its chunks"
            ));
        };
        if at != snapshot {
            return Err(format!(
                "node {id} installs {snapshot:?} but received {at:?}"
            ));
        }
        let (kv, named) = KvStore::from_snapshot(&buffer);
        assert_eq!(named, snapshot, "a snapshot names its own last entry");
        if node.applied > snapshot.index {
            return Err(format!(
                "node {id} installs snapshot {snapshot:?} behind its applied index {}",
                node.applied
            ));
        }
        self.checker.check_snapshot(id, snapshot, &kv)?;
        let node = self.node(id);
        node.disk.save_snapshot_meta(meta.clone());
        node.kv = kv;
        node.applied = snapshot.index;
        node.applied_term = snapshot.term;
        node.snapshot = Some((snapshot, Bytes::from(buffer)));
        self.snapshots_installed += 1;
        self.note(format!("node {id} installed snapshot {snapshot:?}"));
        let answers = self.node(id).proposals.on_snapshot_installed(snapshot);
        for (client, error) in answers {
            self.proposal_failed(id, client, error);
        }
        self.core(id).expect("up").on_snapshot_installed(meta);
        self.turn(id)?;
        self.answer_ready_reads(id);
        Ok(())
    }

    /// A random disk operation latency of this run.
    fn disk_latency(&mut self) -> u64 {
        let (min, max) = self.config.disk_latency;
        self.rng.between(min, max)
    }

    fn send(&mut self, message: Message) {
        if let MessageBody::VoteResponse {
            pre_vote: false,
            granted: true,
        } = message.body
        {
            if let Err(violation) = self.checker.on_vote(message.from, message.term, message.to) {
                self.violation.get_or_insert(violation);
            }
        }
        for time in self.network.send(self.now, &message, &mut self.rng) {
            self.schedule_at(time, Event::Deliver(message.clone()));
        }
    }

    fn apply(&mut self, id: NodeId, entry: Entry) -> Result<(), Violation> {
        self.checker.on_apply(id, &entry)?;
        let node = self.node(id);
        if entry.index != node.applied + 1 {
            return Err(format!(
                "node {id} applies {} after {}",
                entry.index, node.applied
            ));
        }
        node.applied = entry.index;
        node.applied_term = entry.term;
        let output = match &entry.payload {
            EntryPayload::Command(data) => {
                let (_, input) = kv::decode(data);
                Some(node.kv.apply(&input))
            }
            _ => None,
        };
        let answers = node.proposals.on_applied(entry.log_id(), output.is_some());
        for (client, answer) in answers {
            match answer {
                Ok(()) => {
                    let output = output.expect("a proposal is a command");
                    self.client_done(
                        client,
                        Outcome::Ok {
                            at: self.now,
                            output,
                        },
                    );
                }
                Err(error) => self.proposal_failed(id, client, error),
            }
        }
        Ok(())
    }

    fn answer_ready_reads(&mut self, id: NodeId) {
        let node = self.node(id);
        let applied = node.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = node
            .reads_ready
            .drain(..)
            .partition(|(index, _, _)| *index <= applied);
        node.reads_ready = waiting;
        for (_, _, client) in ready {
            let op = self.clients[client].op.expect("a reading client has an op");
            let key = self.history.get(op).input.key();
            let value = self.node(id).kv.get(key);
            self.client_done(
                client,
                Outcome::Ok {
                    at: self.now,
                    output: KvOutput::Get(value),
                },
            );
        }
    }

    fn read_answered(&mut self, id: NodeId, request: u64, answer: Result<u64, ReadError>) {
        let Some(client) = self.node(id).reads.remove(&request) else {
            return; // the client stopped waiting
        };
        match answer {
            Ok(index) => {
                if self
                    .core(id)
                    .is_some_and(|core| core.role() != Role::Leader)
                {
                    self.follower_reads += 1;
                }
                self.node(id).reads_ready.push((index, request, client));
                self.answer_ready_reads(id);
            }
            Err(ReadError::NotLeader { leader_hint, .. }) => self.client_retry(client, leader_hint),
            Err(_) => self.client_retry(client, None),
        }
    }

    /// Builds the node's core from its disk (first start or restart).
    fn start_node(&mut self, id: NodeId) -> Result<(), Violation> {
        if !self.node(id).started {
            // Its clock starts with it, at a random phase.
            self.node(id).started = true;
            let phase = self.rng.below(TICK);
            self.schedule_at(self.now + phase, Event::Tick(id));
        }
        let node = self.node(id);
        if let Some(meta) = node.disk.snapshot() {
            let snapshot = meta.last_log_id;
            let applied = LogId::new(node.applied_term, node.applied);
            if snapshot == applied && applied.index > node.disk.purged().index {
                // As `restore`: an install interrupted before its purge.
                node.disk.finish_install(snapshot);
            }
        }
        let durable = self.node(id).durable();
        // Founding disks hold the bootstrap entry already; an empty disk is
        // a spare joining an existing cluster.
        let core = SimCore::restore(id, &self.config.raft, durable, self.options.planted_bug)
            .map_err(|e| format!("node {id} cannot restart from its disk: {e}"))?;
        let commit = core.commit_index();
        let node = self.node(id);
        // The restart rule (see invariants.rs): commit = max(synced commit,
        // applied), capped by the durable log.
        let expected = node
            .disk
            .hard_state_synced()
            .commit
            .max(node.applied)
            .max(node.disk.purged().index)
            .min(node.disk.last_index());
        if commit != expected {
            return Err(format!(
                "node {id} restarted with commit {commit}, expected {expected}"
            ));
        }
        node.core = Some(core);
        node.restarted = true;
        self.note(format!("node {id} started (commit {commit})"));
        self.turn(id)
    }

    // ----- checks -----

    fn check_touched(&mut self) -> Result<(), Violation> {
        let touched = std::mem::take(&mut self.touched);
        for id in touched {
            let node = &mut self.nodes[id as usize - 1];
            let restarted = std::mem::take(&mut node.restarted);
            let Some(core) = node.core.as_ref() else {
                continue;
            };
            core.check_invariants();
            let (term, role, commit, last) = (
                core.term(),
                core.role(),
                core.commit_index(),
                core.last_log_id(),
            );
            if role == Role::Leader {
                if !self.checker.is_known_leader(id, term)
                    && self.traps.contains_key(&Trap::CutNewLeader)
                {
                    self.sprung.push((id, Trap::CutNewLeader));
                }
                if commit > node.commit_last
                    && !restarted
                    && self.traps.contains_key(&Trap::CutLeaderOnCommit)
                {
                    self.sprung.push((id, Trap::CutLeaderOnCommit));
                }
                self.checker.on_leader(id, term)?;
            }
            node.commit_last = commit;
            self.checker.on_commit(
                id,
                commit,
                restarted,
                core.snapshot_index(),
                core.membership(),
                |i| core.term_at(i),
            )?;
            if role == Role::Leader && core.membership_index() <= commit {
                self.checker.on_configuration_committed(core.membership());
            }
            if node.applied > commit {
                return Err(format!(
                    "node {id}: applied {} beyond commit {commit}",
                    node.applied
                ));
            }
            self.trace
                .mix(&[id, term, role as u64, commit, last.index, last.term]);
        }
        Ok(())
    }

    /// A proposal answered with an error, as `Raft::propose` would answer
    /// it: a provably replaced entry is retried; an indeterminate one (a
    /// snapshot covered it) is an unknown outcome, as a retry could apply
    /// it twice.
    fn proposal_failed(&mut self, id: NodeId, client: usize, error: ProposeError) {
        match error {
            ProposeError::Overwritten { index } => {
                self.note(format!(
                    "client {client} proposal at {index} overwritten on node {id}"
                ));
                self.client_retry(client, None);
            }
            ProposeError::Indeterminate { index } => {
                self.note(format!(
                    "client {client} proposal at {index} indeterminate on node {id}"
                ));
                self.client_done(client, Outcome::Unknown);
            }
            other => unreachable!("waiters answer only Overwritten or Indeterminate: {other}"),
        }
    }

    fn check_durable_quorum(&self) -> Result<(), Violation> {
        let disks: Vec<(NodeId, &Disk)> = self.nodes.iter().map(|n| (n.id, &n.disk)).collect();
        self.checker.check_durable_quorum(&disks)
    }

    // ----- faults -----

    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|n| n.core.as_ref().map(|c| (c.term(), c.role(), n.id)))
            .filter(|(_, role, _)| *role == Role::Leader)
            .map(|(term, _, id)| (term, id))
            .max()
            .map(|(_, id)| id)
    }

    fn fire(&mut self, fault: Fault) -> Result<(), Violation> {
        match fault {
            Fault::Crash { target, down_for } => {
                let node = match target {
                    CrashTarget::Node(id) => Some(id),
                    CrashTarget::Leader => self.leader(),
                    CrashTarget::Writing => {
                        let writing: Vec<NodeId> = self
                            .nodes
                            .iter()
                            .filter(|n| n.is_up() && n.disk.in_flight().is_some())
                            .map(|n| n.id)
                            .collect();
                        (!writing.is_empty()).then(|| self.rng.pick(&writing))
                    }
                };
                match node {
                    Some(id) if self.node(id).is_up() => {
                        self.crash(id)?;
                        let incarnation = self.node(id).incarnation;
                        self.schedule_at(
                            self.now + down_for,
                            Event::Restart {
                                node: id,
                                incarnation,
                            },
                        );
                    }
                    _ => self.note("no node to crash".to_string()),
                }
            }
            Fault::Partition {
                a,
                b,
                both_ways,
                heal_after,
            } => {
                if self.partition_allowed(false) {
                    self.partition(&a, &b, both_ways, heal_after);
                }
            }
            Fault::IsolateLeader {
                heal_after,
                slow_clock,
            } => {
                if !self.partition_allowed(false) {
                    // A scenario that needs its cut is running.
                } else if let Some(leader) = self.leader() {
                    self.isolate(leader, heal_after);
                    if slow_clock {
                        // Nothing else may cut or heal links meanwhile: the
                        // stalled leader must stay alone while the others
                        // elect, commit and serve.
                        self.partition_lock = Some((self.now + heal_after, true));
                        // With lease reads, a clock stalled beyond the drift
                        // bound makes a stale lease read legitimate: the
                        // leader's clock runs as slow as the bound allows
                        // instead (`skew` clamps it), so a lease that is too
                        // long is exposed for longest.
                        let period = self.node(leader).tick_period_base * self.rng.between(4, 10);
                        self.skew(leader, period, heal_after);
                    }
                } else {
                    self.note("no leader to isolate".to_string());
                }
            }
            Fault::Skew {
                node,
                period,
                for_time,
            } => self.skew(node, period, for_time),
            Fault::Arm {
                trap,
                times,
                for_time,
            } => {
                self.traps.insert(trap, (times, for_time));
            }
            Fault::Churn { for_time } => {
                if self.partition_allowed(false) {
                    self.traps.insert(Trap::CutNewLeader, (2, for_time));
                    self.traps.insert(Trap::CutLeaderOnCommit, (1, for_time));
                    // Only the churn's own cuts for its likely length.
                    self.partition_lock = Some((self.now + 3 * for_time, false));
                    if let Some(leader) = self.leader() {
                        self.isolate(leader, for_time);
                    }
                }
            }
            Fault::ChangeMembership => self.change_membership()?,
            Fault::TransferLeader => {
                if let Some(leader) = self.leader() {
                    let voters = &self.core(leader).expect("up").membership().voters;
                    let others: Vec<NodeId> =
                        voters.iter().copied().filter(|&n| n != leader).collect();
                    if others.is_empty() {
                        self.note("no voter to transfer to".to_string());
                        return Ok(());
                    }
                    let to = self.rng.pick(&others);
                    let result = self.core(leader).expect("up").transfer_leader(to);
                    self.note(format!("transfer {leader} -> {to}: {result:?}"));
                    self.turn(leader)?;
                }
            }
        }
        Ok(())
    }

    /// A member to send a client request to: one of the configuration in
    /// force on the leader of the highest term, or of any started node if
    /// there is no leader.
    fn pick_member(&mut self) -> NodeId {
        let members: Vec<NodeId> = match self.leader() {
            Some(leader) => {
                let core = self.nodes[leader as usize - 1].core.as_ref().expect("up");
                core.membership().members().into_iter().collect()
            }
            None => Vec::new(),
        };
        if members.is_empty() {
            let started: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|n| n.started)
                .map(|n| n.id)
                .collect();
            return self.rng.pick(&started);
        }
        self.rng.pick(&members)
    }

    /// The `ChangeMembership` fault: picks a change that makes sense for
    /// the leader's configuration and asks for it. Refusals are normal.
    fn change_membership(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.leader() else {
            self.note("no leader to change the membership".to_string());
            return Ok(());
        };
        let all: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let core = self.nodes[leader as usize - 1].core.as_ref().expect("up");
        let config = core.membership().clone();
        let last = core.last_log_id().index;
        let replication = core.replication();
        let outsiders: Vec<NodeId> = all
            .iter()
            .copied()
            .filter(|id| !config.members().contains(id))
            .collect();
        let learners: Vec<NodeId> = config.learners.iter().copied().collect();
        let voters: Vec<NodeId> = config.voters.iter().copied().collect();
        // Keep at least two voters, so a single fault does not stop the
        // cluster for the rest of the run.
        let can_remove_voter = voters.len() > 2;
        let mut kinds = Vec::new();
        if !outsiders.is_empty() {
            kinds.extend([0, 0]);
        }
        if !learners.is_empty() {
            kinds.extend([1, 1, 2, 4]);
        }
        if can_remove_voter {
            kinds.push(3);
        }
        if kinds.is_empty() {
            self.note("no membership change to make".to_string());
            return Ok(());
        }
        let kind = self.rng.pick(&kinds);
        // A voter to drop: sometimes the leader itself.
        let victim = if self.rng.chance(300) {
            leader
        } else {
            self.rng.pick(&voters)
        };
        let (what, result) = match kind {
            0 => {
                let id = self.rng.pick(&outsiders);
                if !self.node(id).started {
                    self.note(format!("node {id} joins empty"));
                    self.start_node(id)?;
                }
                let core = self.core(leader).expect("up");
                (
                    format!("add learner {id}"),
                    core.add_learner(id, format!("node-{id}")),
                )
            }
            1 | 2 => {
                let learner = self.rng.pick(&learners);
                let mut next = config.voters.clone();
                next.insert(learner);
                if kind == 2 {
                    next.remove(&victim);
                }
                // The handle's rule: promote only a caught-up learner.
                let lag = last.saturating_sub(replication.get(&learner).copied().unwrap_or(0));
                let what = format!("set voters {next:?}");
                if lag > self.config.raft.learner_catchup_lag_max {
                    (what, Err(MembershipError::NotCaughtUp { id: learner, lag }))
                } else {
                    (what, self.core(leader).expect("up").set_voters(next))
                }
            }
            3 => (
                format!("remove voter {victim}"),
                self.core(leader).expect("up").remove(victim),
            ),
            _ => {
                let learner = self.rng.pick(&learners);
                (
                    format!("remove learner {learner}"),
                    self.core(leader).expect("up").remove(learner),
                )
            }
        };
        self.note(format!("membership on leader {leader}: {what}: {result:?}"));
        if result.is_ok() {
            self.membership_changes_appended += 1;
        }
        self.turn(leader)
    }

    fn skew(&mut self, node: NodeId, period: u64, for_time: u64) {
        // Lease reads assume the clocks keep to the drift bound the run
        // configured (`lease_drift_ticks_for`): skew stays within it.
        let period = if self.config.raft.lease_reads {
            period.clamp(TICK_PERIOD_MIN, TICK_PERIOD_MAX)
        } else {
            period
        };
        self.node(node).tick_period = period;
        let generation = self.skew_generation.entry(node).or_default();
        *generation += 1;
        let generation = *generation;
        self.schedule_at(self.now + for_time, Event::Unskew { node, generation });
    }

    /// Cuts `node` off from every other node, both ways.
    fn isolate(&mut self, node: NodeId, heal_after: u64) {
        let a = BTreeSet::from([node]);
        let b = self
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|&n| n != node)
            .collect();
        self.partition(&a, &b, true, heal_after);
    }

    /// An armed trap's moment came: crash or cut off `victim`.
    fn spring(&mut self, victim: NodeId, trap: Trap) -> Result<(), Violation> {
        let Some((times, for_time)) = self.traps.get(&trap).copied() else {
            return Ok(()); // sprang already this step
        };
        if times <= 1 {
            self.traps.remove(&trap);
        } else {
            self.traps.insert(trap, (times - 1, for_time));
        }
        self.note(format!("TRAP {trap:?} springs on node {victim}"));
        match trap {
            Trap::CrashOnVote => {
                if self.node(victim).is_up() {
                    self.crash(victim)?;
                    let incarnation = self.node(victim).incarnation;
                    self.schedule_at(
                        self.now + for_time,
                        Event::Restart {
                            node: victim,
                            incarnation,
                        },
                    );
                }
            }
            Trap::CutNewLeader | Trap::CutLeaderOnCommit => {
                if self.partition_allowed(true) {
                    self.isolate(victim, for_time);
                }
            }
        }
        Ok(())
    }

    /// Whether a new cut may replace the one in force: not while a
    /// scenario holds the lock (traps may cut unless `blocks_traps`).
    fn partition_allowed(&mut self, trap: bool) -> bool {
        match self.partition_lock {
            Some((until, _)) if until <= self.now => {
                self.partition_lock = None;
                true
            }
            Some((_, blocks_traps)) => trap && !blocks_traps,
            None => true,
        }
    }

    fn partition(
        &mut self,
        a: &BTreeSet<NodeId>,
        b: &BTreeSet<NodeId>,
        both_ways: bool,
        heal_after: u64,
    ) {
        self.network.heal();
        self.network.partition(a, b, both_ways);
        self.partition_generation += 1;
        let generation = self.partition_generation;
        self.note(format!("cut {:?}", self.network.cut_links()));
        self.schedule_at(self.now + heal_after, Event::Heal { generation });
    }

    /// Reads answered from a leader lease in the run so far.
    pub(super) fn lease_reads_served(&self) -> u64 {
        let live: u64 = self
            .nodes
            .iter()
            .filter_map(|node| node.core.as_ref())
            .map(SimCore::lease_reads_served)
            .sum();
        self.lease_reads_served_crashed + live
    }

    fn crash(&mut self, id: NodeId) -> Result<(), Violation> {
        if let Some(core) = self.core(id) {
            self.lease_reads_served_crashed += core.lease_reads_served();
        }
        let (writers, readers) = self.node(id).crash();
        self.note(format!("node {id} CRASHED"));
        for client in writers {
            self.client_done(client, Outcome::Unknown);
        }
        for client in readers {
            self.client_done(client, Outcome::Failed);
        }
        self.check_durable_quorum()
    }

    /// The final phase: heal the network (and make it reliable), end
    /// skews, restart every node, stop the clients from starting new
    /// operations, and start one probe write with a new client. Returns
    /// the probe's operation id.
    fn heal_all(&mut self) -> Result<usize, Violation> {
        self.faults_on = false;
        self.quiescing = true;
        self.traps.clear();
        self.partition_lock = None;
        self.network.heal();
        self.network.config.drop_per_mille = 0;
        self.network.config.duplicate_per_mille = 0;
        self.network.config.spike_per_mille = 0;
        self.partition_generation += 1;
        self.note("FINAL HEAL".to_string());
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            node.tick_period = node.tick_period_base;
            if !node.is_up() && node.started {
                let id = node.id;
                self.start_node(id)?;
            }
        }
        self.skew_generation.clear();
        self.start_probe()
    }

    /// Starts one probe write with a new client; returns its operation id.
    fn start_probe(&mut self) -> Result<usize, Violation> {
        let c = self.clients.len();
        let guess = self.pick_member();
        self.clients.push(Client {
            id: c,
            guess,
            op: None,
            attempt: 0,
            waiting: Waiting::Nothing,
            read_per_mille: 0,
        });
        let input = KvInput::Put { key: 0, value: 0 };
        let probe = self.history.invoke(c, input, self.now);
        self.clients[c].op = Some(probe);
        self.note(format!("client {c} invokes the liveness probe op {probe}"));
        self.client_attempt(c)?;
        Ok(probe)
    }

    // ----- clients -----

    fn client_attempt(&mut self, c: usize) -> Result<(), Violation> {
        if self.quiescing && self.clients[c].op.is_none() {
            return Ok(());
        }
        if self.clients[c].op.is_none() {
            let input = self.generator.next(
                &mut self.rng,
                self.config.workload.keys,
                self.clients[c].read_per_mille,
            );
            let op = self.history.invoke(c, input, self.now);
            self.clients[c].op = Some(op);
            self.note(format!("client {c} invokes op {op}: {input:?}"));
        }
        let op = self.clients[c].op.expect("set above");
        let input = self.history.get(op).input;
        // Some reads go to any member: a follower's read index.
        let anywhere = !input.is_write()
            && self.config.workload.follower_read_per_mille > 0
            && self
                .rng
                .chance(self.config.workload.follower_read_per_mille);
        let anywhere = anywhere.then(|| self.pick_member());
        let client = &mut self.clients[c];
        client.attempt += 1;
        let attempt = client.attempt;
        let node = anywhere.unwrap_or(client.guess);
        let probe = c >= self.config.workload.clients;
        let timeout = if self.quiescing && !probe {
            // Patient: the last operations wait out the heal.
            self.config.heal_ticks_max * TICK
        } else {
            // A probe gives up on a node like any client (its node may have
            // been removed and never learn the outcome); another probe
            // follows at another node.
            self.config.workload.attempt_timeout
        };
        self.schedule_at(
            self.now + timeout,
            Event::ClientTimeout { client: c, attempt },
        );
        if !self.node(node).is_up() {
            self.client_retry(c, None);
            return Ok(());
        }
        if input.is_write() {
            let command = kv::encode(op as u64, &input);
            let result = self.core(node).expect("up").propose(vec![command.into()]);
            match result {
                Ok(log_id) => {
                    self.note(format!(
                        "client {c} op {op} proposed at {node} as {log_id:?}"
                    ));
                    self.clients[c].waiting = Waiting::Proposal { node };
                    self.node(node).proposals.push(log_id, c);
                }
                Err(ProposeError::NotLeader { leader_hint, .. }) => {
                    self.client_retry(c, leader_hint);
                }
                Err(_) => self.client_retry(c, None),
            }
        } else {
            let request = self.next_read_id;
            self.next_read_id += 1;
            self.clients[c].waiting = Waiting::Read { node };
            self.node(node).reads.insert(request, c);
            self.core(node).expect("up").read_index(request);
        }
        self.turn(node)
    }

    /// A definite failure: try the same operation again, at `hint` or at
    /// another node, after a pause.
    fn client_retry(&mut self, c: usize, hint: Option<NodeId>) {
        let guess = hint.unwrap_or_else(|| self.pick_member());
        let backoff = self.rng.between(1, self.config.workload.backoff_max);
        let client = &mut self.clients[c];
        client.guess = guess;
        client.waiting = Waiting::Nothing;
        client.attempt += 1;
        let attempt = client.attempt;
        self.schedule_at(self.now + backoff, Event::ClientWake { client: c, attempt });
    }

    /// The current operation ended; the next one starts after a pause.
    fn client_done(&mut self, c: usize, outcome: Outcome) {
        let op = self.clients[c]
            .op
            .take()
            .expect("an ending client has an op");
        self.note(format!("client {c} op {op} ends {outcome:?}"));
        self.history.end(op, outcome);
        let think = self.rng.below(self.config.workload.think_max + 1);
        let client = &mut self.clients[c];
        client.waiting = Waiting::Nothing;
        client.attempt += 1;
        let attempt = client.attempt;
        self.schedule_at(self.now + think, Event::ClientWake { client: c, attempt });
    }

    fn client_timeout(&mut self, c: usize) {
        // The node may be cut off while it still believes it leads: ask
        // another one next time.
        self.clients[c].guess = self.pick_member();
        match self.clients[c].waiting {
            Waiting::Nothing => {}
            Waiting::Proposal { node } => {
                self.node(node).proposals.remove_if(|&client| client == c);
                self.client_done(c, Outcome::Unknown);
            }
            Waiting::Read { node } => {
                let n = self.node(node);
                n.reads.retain(|_, client| *client != c);
                n.reads_ready.retain(|(_, _, client)| *client != c);
                self.client_done(c, Outcome::Failed);
            }
        }
    }
}
