//! Tests of the pure engine: each feeds inputs and asserts the exact actions
//! that come out, or runs a small scenario on [`Net`], a cluster of engines
//! in one thread whose messages and writes are delivered by hand.
//!
//! Section numbers refer to the Raft paper ("In Search of an Understandable
//! Consensus Algorithm", extended version) and, where marked, to Ongaro's
//! dissertation.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;

use crate::CommandBytes;
use bytes::Bytes;

use super::*;
use crate::storage::WriteBatch;

// ----- building engines and messages -----

const HEARTBEAT_TICKS: u64 = 2;
const ELECTION_TICKS_MIN: u64 = 10;
const ELECTION_TICKS_MAX: u64 = 20;

fn config() -> EngineConfig {
    EngineConfig {
        heartbeat_ticks: HEARTBEAT_TICKS,
        election_ticks_min: ELECTION_TICKS_MIN,
        election_ticks_max: ELECTION_TICKS_MAX,
        inflight_msgs_max: 3,
        append_bytes_max: 1 << 20,
        log_cache_bytes_max: 1 << 30,
        apply_bytes_max: 1 << 20,
        rng_seed: 7,
        snapshot_interval_entries: 0,
        snapshot_trailing_entries: 0,
        uncommitted_bytes_max: 1 << 30,
        proposal_batch_max: 4096,
        request_bytes_max: 1 << 20,
        #[cfg(feature = "planted-bugs")]
        planted_bug: None,
    }
}

fn membership(voters: &[NodeId]) -> Membership {
    Membership::new_voters(voters.iter().map(|&id| (id, format!("node-{id}"))))
}

/// A blank entry: 24 bytes by `Entry::size_bytes`.
fn blank(term: u64, index: u64) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Blank,
    }
}

/// A command entry of 8 payload bytes: 32 bytes by `Entry::size_bytes`.
fn command(term: u64, index: u64) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Command(CommandBytes::from(format!("cmd{index:05}"))),
    }
}

fn command_payload(index: u64) -> EntryPayload {
    command(0, index).payload
}

/// A log of blank entries with these terms at indexes 1, 2, ...
fn log_of(terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &term)| blank(term, i as u64 + 1))
        .collect()
}

fn hard_state(term: u64, vote: Option<NodeId>, commit: u64) -> HardState {
    HardState { term, vote, commit }
}

/// The state the driver would restore from a disk holding `log`.
fn restored(voters: &[NodeId], log: &[Entry], hard_state: HardState) -> Restored {
    let mut term_runs: Vec<(u64, u64)> = Vec::new();
    for entry in log {
        if term_runs.last().map(|&(_, term)| term) != Some(entry.term) {
            term_runs.push((entry.index, entry.term));
        }
    }
    Restored {
        hard_state,
        purged: LogId::default(),
        snapshot: LogId::default(),
        last: log.last().map_or(LogId::default(), Entry::log_id),
        term_runs,
        memberships: vec![(0, membership(voters))],
        applied: 0,
    }
}

/// A node with an empty log in term 0, its first turn (the membership) taken.
fn fresh(id: NodeId, voters: &[NodeId]) -> Engine {
    with_log(id, voters, &[], HardState::default())
}

fn with_log(id: NodeId, voters: &[NodeId], terms: &[u64], hard_state: HardState) -> Engine {
    let mut engine = Engine::new(id, config(), restored(voters, &log_of(terms), hard_state));
    let first = engine.take_actions();
    assert!(first.members.is_some());
    engine
}

fn msg(from: NodeId, to: NodeId, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

fn vote_request(pre_vote: bool, last_log_id: LogId) -> MessageBody {
    MessageBody::VoteRequest {
        pre_vote,
        last_log_id,
        leader_transfer: false,
    }
}

fn vote_response(pre_vote: bool, granted: bool) -> MessageBody {
    MessageBody::VoteResponse { pre_vote, granted }
}

fn append(prev: LogId, entries: Vec<Entry>, commit: u64) -> MessageBody {
    MessageBody::Append {
        prev_log_id: prev,
        entries,
        commit,
    }
}

fn ack(match_index: u64) -> MessageBody {
    MessageBody::AppendResponse {
        outcome: AppendOutcome::Success { match_index },
    }
}

fn heartbeat(commit: u64, read_seq: u64) -> MessageBody {
    MessageBody::Heartbeat { commit, read_seq }
}

fn write(id: u64, truncate_from: Option<u64>, entries: Vec<Entry>, hs: Option<HardState>) -> Write {
    // Only a batch that changes nothing but the commit index may skip the
    // fsync; tests build that one by hand.
    let must_sync = true;
    Write {
        id,
        batch: WriteBatch {
            truncate_from,
            entries,
            hard_state: hs,
            must_sync,
        },
    }
}

// ----- the check helper -----

/// Everything one turn produced that a test compares exactly. Comparing the
/// whole turn also asserts what must *not* happen (a message sent too early,
/// a write that should not exist).
#[derive(Debug, Default, PartialEq)]
struct Turn {
    write: Option<Write>,
    messages: Vec<Message>,
    after_write: Vec<(u64, Message)>,
    apply: Vec<Entry>,
    load: Option<Range<u64>>,
    reads: Vec<(u64, Result<u64, ReadError>)>,
    forwarded: Vec<(u64, super::actions::ForwardResult)>,
}

/// Ends the engine's turn, checks its invariants and returns what came out.
fn turn(engine: &mut Engine) -> Turn {
    let actions = engine.take_actions();
    engine.check_invariants();
    Turn {
        write: actions.write,
        messages: actions.messages,
        after_write: actions.messages_after_write,
        apply: actions.apply,
        load: actions.load,
        reads: actions.reads,
        forwarded: actions.forwarded,
    }
}

/// Steps one message into the engine and checks its invariants.
fn step(engine: &mut Engine, message: Message) {
    engine.step(message);
    engine.check_invariants();
}

/// Ticks until the election timeout fires; asserts it fires within
/// `election_ticks_min..=election_ticks_max`. Returns the ticks taken.
fn tick_until_campaign(engine: &mut Engine) -> u64 {
    for ticks in 1..=ELECTION_TICKS_MAX {
        engine.tick();
        engine.check_invariants();
        if engine.role != Role::Follower {
            assert!(
                ticks >= ELECTION_TICKS_MIN,
                "campaigned after {ticks} ticks"
            );
            return ticks;
        }
    }
    panic!(
        "node {} did not time out in {ELECTION_TICKS_MAX} ticks",
        engine.id()
    );
}

/// Node 1 of `voters`, elected in term 1 with the votes of the next nodes
/// (a bare quorum) by hand. Its blank entry (1, 1) is durable on node 1 and
/// has been sent to every peer, which are all still in Probe; nobody has
/// acknowledged it, so nothing is committed.
fn elected_by_hand(config: EngineConfig, voters: &[NodeId]) -> Engine {
    elected_by_hand_from(config, voters, restored(voters, &[], HardState::default()))
}

/// As [`elected_by_hand`], from `restored` (whose term is below 1 + its
/// hard state's, elected in the next term).
fn elected_by_hand_from(config: EngineConfig, voters: &[NodeId], restored: Restored) -> Engine {
    let term = restored.hard_state.term + 1;
    let mut e = Engine::new(1, config, restored);
    turn(&mut e);
    tick_until_campaign(&mut e);
    turn(&mut e);
    let granters = &voters[1..voters.len() / 2 + 1];
    for &from in granters {
        step(&mut e, msg(from, 1, term, vote_response(true, true)));
    }
    let t = turn(&mut e);
    e.on_write_done(t.write.expect("the vote is written").id);
    for &from in granters {
        step(&mut e, msg(from, 1, term, vote_response(false, true)));
    }
    assert!(e.is_leader());
    let t = turn(&mut e);
    e.on_write_done(t.write.expect("the blank entry is written").id);
    assert_eq!(turn(&mut e), Turn::default());
    e
}

// ----- the cluster harness -----

/// Which messages a [`Net`] sets aside, given the message and its receiver.
type HoldRule = dyn Fn(&Message, &Engine) -> bool;

/// Several engines, a FIFO network between them and a disk per node. Writes
/// complete at once (in the turn that issued them) and release the messages
/// that waited for them; loads are served from the disk. After every step
/// it checks each engine's invariants, Election Safety (one leader per term,
/// §5.2) and State Machine Safety (no two nodes commit different entries at
/// one index, §5.4.3).
struct Net {
    nodes: BTreeMap<NodeId, Engine>,
    disks: BTreeMap<NodeId, Vec<Entry>>,
    queue: VecDeque<Message>,
    /// (node, write id, message): waits for that node's write.
    waiting: Vec<(NodeId, u64, Message)>,
    isolated: BTreeSet<NodeId>,
    /// Links that drop messages both ways, as (lower id, higher id).
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Messages for which this returns true (given the receiver) are set
    /// aside in `held` instead of being delivered.
    hold: Option<Box<HoldRule>>,
    held: Vec<Message>,
    /// Every message delivered, in order.
    trace: Vec<Message>,
    /// term -> the node that led it.
    leaders: BTreeMap<u64, NodeId>,
    /// index -> term of the entry committed there.
    committed: BTreeMap<u64, u64>,
}

impl Net {
    /// `n` fresh voters 1..=n with empty logs.
    fn new(n: u64) -> Self {
        let nodes: Vec<_> = (1..=n)
            .map(|id| (id, vec![], HardState::default()))
            .collect();
        Self::with_logs(config(), nodes)
    }

    /// One voter per `(id, log terms, hard state)`.
    fn with_logs(config: EngineConfig, nodes: Vec<(NodeId, Vec<u64>, HardState)>) -> Self {
        let voters: Vec<NodeId> = nodes.iter().map(|n| n.0).collect();
        let mut net = Self {
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            queue: VecDeque::new(),
            waiting: Vec::new(),
            isolated: BTreeSet::new(),
            cut: BTreeSet::new(),
            hold: None,
            held: Vec::new(),
            trace: Vec::new(),
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
        };
        for (id, terms, hs) in nodes {
            let log = log_of(&terms);
            let engine = Engine::new(id, config.clone(), restored(&voters, &log, hs));
            net.nodes.insert(id, engine);
            net.disks.insert(id, log);
            net.turn(id);
        }
        net
    }

    fn node(&mut self, id: NodeId) -> &mut Engine {
        self.nodes.get_mut(&id).expect("no such node")
    }

    fn isolate(&mut self, id: NodeId) {
        self.isolated.insert(id);
    }

    fn heal(&mut self, id: NodeId) {
        self.isolated.remove(&id);
    }

    fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a.min(b), a.max(b)));
    }

    fn link_up(&self, m: &Message) -> bool {
        !self.isolated.contains(&m.from)
            && !self.isolated.contains(&m.to)
            && !self.cut.contains(&(m.from.min(m.to), m.from.max(m.to)))
    }

    /// Ends `id`'s turn and carries out its actions (completing writes and
    /// loads at once, which may take further turns). Returns the first turn.
    fn turn(&mut self, id: NodeId) -> Turn {
        let mut first = None;
        for _ in 0..64 {
            let engine = self.nodes.get_mut(&id).expect("no such node");
            let t = turn(engine);
            self.queue.extend(t.messages.iter().cloned());
            for (write_id, m) in &t.after_write {
                self.waiting.push((id, *write_id, m.clone()));
            }
            let mut again = engine.has_ready_apply();
            if let Some(range) = &t.load {
                let disk = &self.disks[&id];
                let end = (range.end - 1).min(disk.len() as u64);
                let entries = disk[(range.start - 1) as usize..end as usize].to_vec();
                engine.on_loaded(entries);
                again = true;
            }
            if let Some(w) = &t.write {
                let disk = self.disks.get_mut(&id).expect("every node has a disk");
                if let Some(from) = w.batch.truncate_from {
                    disk.truncate((from - 1) as usize);
                }
                for entry in &w.batch.entries {
                    assert_eq!(entry.index, disk.len() as u64 + 1, "write not contiguous");
                    disk.push(entry.clone());
                }
                engine.on_write_done(w.id);
                engine.check_invariants();
                let (released, kept) = std::mem::take(&mut self.waiting)
                    .into_iter()
                    .partition(|(node, after, _)| *node == id && *after <= w.id);
                self.waiting = kept;
                let released: Vec<_> = released;
                self.queue.extend(released.into_iter().map(|(_, _, m)| m));
                again = true;
            }
            self.check_safety(id);
            first.get_or_insert(t);
            if !again {
                return first.expect("set above");
            }
        }
        panic!("node {id} never finished its turn");
    }

    fn check_safety(&mut self, id: NodeId) {
        let engine = &self.nodes[&id];
        if engine.is_leader() {
            let leader = *self.leaders.entry(engine.term()).or_insert(id);
            assert_eq!(leader, id, "two leaders in term {}", engine.term());
        }
        for index in 1..=engine.commit_index() {
            let term = engine
                .term_at(index)
                .expect("committed entries are in the log");
            let first = *self.committed.entry(index).or_insert(term);
            assert_eq!(
                first, term,
                "node {id} committed a different entry at {index}"
            );
        }
    }

    fn tick(&mut self, id: NodeId) -> Turn {
        let engine = self.node(id);
        engine.tick();
        engine.check_invariants();
        self.turn(id)
    }

    /// Ticks each of `ids` once, then delivers everything.
    fn tick_round(&mut self, ids: &[NodeId]) {
        for &id in ids {
            self.tick(id);
        }
        self.deliver_all();
    }

    fn deliver(&mut self, m: Message) {
        if !self.link_up(&m) {
            return;
        }
        if let Some(hold) = &self.hold {
            if hold(&m, &self.nodes[&m.to]) {
                self.held.push(m);
                return;
            }
        }
        self.trace.push(m.clone());
        let to = m.to;
        step(self.node(to), m);
        self.turn(to);
    }

    /// Delivers queued messages (and those they cause) until none is left.
    fn deliver_all(&mut self) {
        self.deliver_matching(|_| true);
    }

    /// Delivers queued messages matching `pred` (and matching messages they
    /// cause) until none is left; the rest stay queued, in order.
    fn deliver_matching(&mut self, pred: impl Fn(&Message) -> bool) {
        for _ in 0..100_000 {
            let Some(pos) = self.queue.iter().position(&pred) else {
                return;
            };
            let m = self.queue.remove(pos).expect("position is in range");
            self.deliver(m);
        }
        panic!("the network never went quiet");
    }

    /// Ticks `id` until it campaigns, then delivers everything.
    fn campaign(&mut self, id: NodeId) {
        for _ in 0..ELECTION_TICKS_MAX {
            self.tick(id);
            if self.nodes[&id].role != Role::Follower {
                self.deliver_all();
                return;
            }
        }
        panic!("node {id} did not time out");
    }

    fn elect(&mut self, id: NodeId) {
        self.campaign(id);
        assert!(self.nodes[&id].is_leader(), "node {id} was not elected");
    }

    /// Proposes one command on `id`, then delivers everything.
    fn propose(&mut self, id: NodeId) -> LogId {
        let next = self.nodes[&id].last_log_id().index + 1;
        let log_id = self
            .node(id)
            .propose(vec![command_payload(next)])
            .expect("the leader accepts the proposal");
        self.turn(id);
        self.deliver_all();
        log_id
    }

    /// Ticks `ids` round by round until one of them leads; returns it.
    fn run_until_leader(&mut self, ids: &[NodeId]) -> NodeId {
        for _ in 0..50 * ELECTION_TICKS_MAX {
            self.tick_round(ids);
            if let Some(&id) = ids.iter().find(|id| self.nodes[id].is_leader()) {
                return id;
            }
        }
        panic!("no leader among {ids:?}");
    }

    fn delivered(&self, pred: impl Fn(&Message) -> bool) -> Vec<&Message> {
        self.trace.iter().filter(|m| pred(m)).collect()
    }
}

fn is_vote_request(m: &Message) -> bool {
    matches!(m.body, MessageBody::VoteRequest { .. })
}

mod elections;
mod forwarding;
mod membership;
mod reads;
mod replication;
mod snapshots;
mod transfer;
