//! The event loop: one queue of timed events, handled one per step, with
//! every cross-node check run after each step.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use rafter::testing::SimCore;
use rafter::{
    Entry, EntryPayload, HardState, Membership, Message, NodeId, ProposeError, ReadError, Role,
};

use super::disk::Disk;
use super::faults::{CrashTarget, Fault, Schedule};
use super::history::{History, Outcome};
use super::invariants::{Checker, Violation};
use super::kv::{self, KvOutput};
use super::network::Network;
use super::node::{ProposalWaiter, SimNode};
use super::rng::SimRng;
use super::trace::{describe, Trace};
use super::workload::{Client, OpGenerator, Waiting};
use super::{Options, RunConfig, TICK};

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
    pub(super) nodes: Vec<SimNode>,
    members: Membership,
    pub(super) network: Network,
    partition_generation: u64,
    skew_generation: BTreeMap<NodeId, u64>,
    pub(super) schedule: Schedule,
    /// False once the final heal starts: remaining faults are skipped.
    faults_on: bool,
    pub(super) clients: Vec<Client>,
    generator: OpGenerator,
    pub(super) history: History,
    next_read_id: u64,
    pub(super) checker: Checker,
    pub(super) trace: Trace,
    touched: BTreeSet<NodeId>,
}

impl Simulator {
    pub(super) fn new(options: Options, config: RunConfig, mut rng: SimRng) -> Self {
        let ids: Vec<NodeId> = (1..=config.nodes as NodeId).collect();
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
            payload: EntryPayload::Membership(members.clone()),
        };
        let hard_state = HardState {
            term: 1,
            vote: None,
            commit: 1,
        };
        let nodes = ids
            .iter()
            .map(|&id| {
                let period = rng.between(TICK * 9 / 10, TICK * 11 / 10);
                SimNode::new(
                    id,
                    Disk::bootstrapped(vec![bootstrap.clone()], hard_state),
                    period,
                )
            })
            .collect();
        let clients = (0..config.workload.clients)
            .map(|id| Client {
                id,
                guess: rng.pick(&ids),
                op: None,
                attempt: 0,
                waiting: Waiting::Nothing,
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
            members,
            network,
            partition_generation: 0,
            skew_generation: BTreeMap::new(),
            schedule,
            faults_on: true,
            clients,
            generator: OpGenerator::default(),
            history: History::default(),
            next_read_id: 1,
            checker: Checker::default(),
            trace: Trace::default(),
            touched: BTreeSet::new(),
        };
        for id in ids {
            sim.start_node(id).expect("a fresh node passes the checks");
            let phase = sim.rng.below(TICK);
            sim.schedule_at(phase, Event::Tick(id));
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
        self.heal_all()?;
        let heal_started = self.now;
        let deadline = self.now + self.config.heal_ticks_max * TICK;
        loop {
            let done = self.history.ops().iter().any(|op| {
                op.input.is_write()
                    && op.call >= heal_started
                    && matches!(op.outcome, Outcome::Ok { .. })
            });
            if done {
                break;
            }
            if self.now > deadline {
                return Err(format!(
                    "liveness: no write completed within {} ticks after healing every fault",
                    self.config.heal_ticks_max
                ));
            }
            self.run_one()?;
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
        self.check_touched()
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
                    let truncated = self.node(node).disk.complete(write_id);
                    self.note(format!("node {node} write {write_id} durable"));
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
                    let log = self.node(node).disk.log();
                    let start = (range.start.max(1) - 1) as usize;
                    let end = ((range.end - 1) as usize).min(log.len());
                    let entries = log.get(start..end).unwrap_or(&[]).to_vec();
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
        let actions = self.core(id).expect("turn on an up node").take_actions();
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
            let latency = self
                .rng
                .between(self.config.disk_latency.0, self.config.disk_latency.1);
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
        for entry in actions.apply {
            self.apply(id, entry)?;
        }
        if !self.node(id).reads_ready.is_empty() {
            self.answer_ready_reads(id);
        }
        if let Some(range) = actions.load {
            let latency = self
                .rng
                .between(self.config.disk_latency.0, self.config.disk_latency.1);
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
        Ok(())
    }

    fn send(&mut self, message: Message) {
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
        let output = match &entry.payload {
            EntryPayload::Command(data) => {
                let (_, input) = kv::decode(data);
                Some(node.kv.apply(&input))
            }
            _ => None,
        };
        if let Some(waiter) = node.proposals.remove(&entry.index) {
            if waiter.log_id.term == entry.term {
                let output = output.expect("a proposal is a command");
                self.client_done(
                    waiter.client,
                    Outcome::Ok {
                        at: self.now,
                        output,
                    },
                );
            } else {
                // Another entry holds the index: ours was never committed.
                self.note(format!(
                    "client {} proposal {:?} overwritten",
                    waiter.client, waiter.log_id
                ));
                self.client_retry(waiter.client, None);
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
                self.node(id).reads_ready.push((index, request, client));
                self.answer_ready_reads(id);
            }
            Err(ReadError::NotLeader { leader_hint }) => self.client_retry(client, leader_hint),
            Err(_) => self.client_retry(client, None),
        }
    }

    /// Builds the node's core from its disk (first start or restart).
    fn start_node(&mut self, id: NodeId) -> Result<(), Violation> {
        let durable = self.node(id).durable();
        let core = SimCore::new(
            id,
            &self.config.raft,
            durable,
            &self.members,
            self.options.planted_bug,
        )
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
            .min(node.disk.log().len() as u64);
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
                self.checker.on_leader(id, term)?;
            }
            self.checker
                .on_commit(id, commit, restarted, |i| core.term_at(i))?;
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
            } => self.partition(&a, &b, both_ways, heal_after),
            Fault::IsolateLeader { heal_after } => {
                if let Some(leader) = self.leader() {
                    let a = BTreeSet::from([leader]);
                    let b = self
                        .nodes
                        .iter()
                        .map(|n| n.id)
                        .filter(|&n| n != leader)
                        .collect();
                    self.partition(&a, &b, true, heal_after);
                } else {
                    self.note("no leader to isolate".to_string());
                }
            }
            Fault::Skew {
                node,
                period,
                for_time,
            } => {
                self.node(node).tick_period = period;
                let generation = self.skew_generation.entry(node).or_default();
                *generation += 1;
                let generation = *generation;
                self.schedule_at(self.now + for_time, Event::Unskew { node, generation });
            }
            Fault::TransferLeader => {
                if let Some(leader) = self.leader() {
                    let others: Vec<NodeId> = self
                        .nodes
                        .iter()
                        .map(|n| n.id)
                        .filter(|&n| n != leader)
                        .collect();
                    let to = self.rng.pick(&others);
                    let result = self.core(leader).expect("up").transfer_leader(to);
                    self.note(format!("transfer {leader} -> {to}: {result:?}"));
                    self.turn(leader)?;
                }
            }
        }
        Ok(())
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

    fn crash(&mut self, id: NodeId) -> Result<(), Violation> {
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

    /// The final phase: heal the network, end skews, restart every node.
    fn heal_all(&mut self) -> Result<(), Violation> {
        self.faults_on = false;
        self.network.heal();
        self.partition_generation += 1;
        self.note("FINAL HEAL".to_string());
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            node.tick_period = node.tick_period_base;
            if !node.is_up() {
                let id = node.id;
                self.start_node(id)?;
            }
        }
        self.skew_generation.clear();
        Ok(())
    }

    // ----- clients -----

    fn client_attempt(&mut self, c: usize) -> Result<(), Violation> {
        if self.clients[c].op.is_none() {
            let input = self
                .generator
                .next(&mut self.rng, self.config.workload.keys);
            let op = self.history.invoke(c, input, self.now);
            self.clients[c].op = Some(op);
            self.note(format!("client {c} invokes op {op}: {input:?}"));
        }
        let op = self.clients[c].op.expect("set above");
        let input = self.history.get(op).input;
        let client = &mut self.clients[c];
        client.attempt += 1;
        let attempt = client.attempt;
        let node = client.guess;
        let timeout = self.config.workload.attempt_timeout;
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
            let result = self.core(node).expect("up").propose(vec![command]);
            match result {
                Ok(log_id) => {
                    self.note(format!(
                        "client {c} op {op} proposed at {node} as {log_id:?}"
                    ));
                    self.clients[c].waiting = Waiting::Proposal { node };
                    let waiter = ProposalWaiter { log_id, client: c };
                    if let Some(old) = self.node(node).proposals.insert(log_id.index, waiter) {
                        // Its entry was truncated from this log: a new leader's
                        // entry sits there. Conservatively unknown.
                        self.client_done(old.client, Outcome::Unknown);
                    }
                }
                Err(ProposeError::NotLeader { leader_hint }) => {
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
        let nodes = self.nodes.len() as u64;
        let guess = hint.unwrap_or_else(|| self.rng.between(1, nodes));
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
        match self.clients[c].waiting {
            Waiting::Nothing => {}
            Waiting::Proposal { node } => {
                self.node(node).proposals.retain(|_, w| w.client != c);
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
