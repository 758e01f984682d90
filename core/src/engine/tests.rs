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

// ----- §5.2 leader election -----

/// §5.2 and dissertation §9.6 (Pre-Vote): a follower that hears nothing for
/// its election timeout (between the min and max) asks for pre-votes for
/// term+1 without changing its term; a quorum of pre-votes makes it a
/// candidate of term+1 that votes for itself durably and asks for votes.
#[test]
fn follower_times_out_pre_votes_then_campaigns_in_the_next_term() {
    let mut e = fresh(1, &[1, 2, 3]);
    tick_until_campaign(&mut e);
    assert_eq!(e.role, Role::PreCandidate);
    assert_eq!(e.term(), 0, "a pre-vote does not change the term");
    let pre_vote = vote_request(true, LogId::new(0, 0));
    assert_eq!(
        turn(&mut e),
        Turn {
            messages: vec![msg(1, 2, 1, pre_vote.clone()), msg(1, 3, 1, pre_vote)],
            ..Turn::default()
        }
    );

    step(&mut e, msg(2, 1, 1, vote_response(true, true)));
    assert_eq!(e.role, Role::Candidate);
    assert_eq!((e.term(), e.vote()), (1, Some(1)));
    let vote = vote_request(false, LogId::new(0, 0));
    assert_eq!(
        turn(&mut e),
        Turn {
            write: Some(write(1, None, vec![], Some(hard_state(1, Some(1), 0)))),
            messages: vec![msg(1, 2, 1, vote.clone()), msg(1, 3, 1, vote)],
            ..Turn::default()
        }
    );
}

/// §5.2: a candidate that receives votes from a majority (its own, once
/// durable, and one more of three) becomes leader, and appends a blank entry
/// of its term that it sends to every peer (§5.4.2).
#[test]
fn candidate_with_votes_from_a_majority_becomes_leader() {
    let mut e = fresh(1, &[1, 2, 3]);
    tick_until_campaign(&mut e);
    turn(&mut e);
    step(&mut e, msg(2, 1, 1, vote_response(true, true)));
    let t = turn(&mut e);
    e.on_write_done(t.write.expect("the vote").id);
    assert_eq!(
        e.role,
        Role::Candidate,
        "one vote of three is not a majority"
    );
    step(&mut e, msg(3, 1, 1, vote_response(false, false)));
    assert_eq!(
        e.role,
        Role::Candidate,
        "a refusal leaves the election open"
    );
    step(&mut e, msg(2, 1, 1, vote_response(false, true)));
    assert!(e.is_leader());
    assert_eq!(e.leader(), Some(1));
    let probe = append(LogId::new(0, 0), vec![blank(1, 1)], 0);
    assert_eq!(
        turn(&mut e),
        Turn {
            write: Some(write(2, None, vec![blank(1, 1)], None)),
            messages: vec![msg(1, 2, 1, probe.clone()), msg(1, 3, 1, probe)],
            ..Turn::default()
        }
    );
}

/// §5.2 Election Safety: two candidates in one term split the votes of a
/// four-node cluster (two each); neither becomes leader, and the randomized
/// timeouts later elect exactly one leader per term.
#[test]
fn split_vote_elects_no_leader_in_that_term() {
    let mut net = Net::new(4);
    for id in [1, 2] {
        for _ in 0..ELECTION_TICKS_MAX {
            net.tick(id);
            if net.nodes[&id].role != Role::Follower {
                break;
            }
        }
    }
    net.deliver_matching(|m| m.kind().starts_with("pre_vote"));
    assert_eq!(net.nodes[&1].role, Role::Candidate);
    assert_eq!(net.nodes[&2].role, Role::Candidate);
    // Node 3 hears only from candidate 1, node 4 only from candidate 2.
    net.cut(1, 2);
    net.cut(1, 4);
    net.cut(2, 3);
    net.deliver_all();
    assert_eq!(net.nodes[&3].vote(), Some(1));
    assert_eq!(net.nodes[&4].vote(), Some(2));
    for id in [1, 2] {
        assert_eq!(
            (net.nodes[&id].role, net.nodes[&id].term()),
            (Role::Candidate, 1)
        );
    }
    assert!(net.leaders.is_empty(), "a split vote elects nobody");

    net.cut.clear();
    let leader = net.run_until_leader(&[1, 2, 3, 4]);
    assert!(net.nodes[&leader].term() >= 2);
    assert_eq!(net.leaders.len(), 1);
}

/// §5.2: each server votes for at most one candidate in a given term (first
/// come, first served); a repeated request from the same candidate is
/// granted again.
#[test]
fn node_grants_at_most_one_vote_per_term() {
    let mut e = fresh(3, &[1, 2, 3]);
    let last = LogId::new(0, 0);
    step(&mut e, msg(1, 3, 1, vote_request(false, last)));
    let t = turn(&mut e);
    e.on_write_done(t.write.expect("the vote").id);
    assert_eq!(e.vote(), Some(1));

    step(&mut e, msg(2, 3, 1, vote_request(false, last)));
    assert_eq!(
        turn(&mut e),
        Turn {
            messages: vec![msg(3, 2, 1, vote_response(false, false))],
            ..Turn::default()
        }
    );
    assert_eq!(e.vote(), Some(1));

    step(&mut e, msg(1, 3, 1, vote_request(false, last)));
    assert_eq!(
        turn(&mut e),
        Turn {
            messages: vec![msg(3, 1, 1, vote_response(false, true))],
            ..Turn::default()
        }
    );
}

/// Figure 2 ("updated on stable storage before responding to RPCs") and
/// dissertation §3.8: the vote response waits for the write that records
/// the vote; it leaves only once that write is done.
#[test]
fn vote_response_waits_for_the_write_that_records_the_vote() {
    let mut e = fresh(2, &[1, 2, 3]);
    step(&mut e, msg(1, 2, 1, vote_request(false, LogId::new(0, 0))));
    assert_eq!(
        turn(&mut e),
        Turn {
            write: Some(write(1, None, vec![], Some(hard_state(1, Some(1), 0)))),
            after_write: vec![(1, msg(2, 1, 1, vote_response(false, true)))],
            ..Turn::default()
        }
    );
    e.on_write_done(1);
    assert_eq!(turn(&mut e), Turn::default());
}

/// Dissertation §4.1: a node grants votes without asking whether it is a
/// voter. A learner promoted before the new configuration reached it (or a
/// new node with an empty log) must vote, or a quorum that counts it can
/// never form. Regression (simulator, seed 354): such a node refused and
/// the cluster stayed leaderless.
#[test]
fn node_that_does_not_know_it_is_a_voter_still_votes() {
    let mut e = fresh(4, &[1, 2, 3]);
    assert_eq!(
        e.role(),
        Role::Learner,
        "4 is not in the configuration it knows"
    );
    let last = LogId::new(1, 5);
    step(&mut e, msg(1, 4, 2, vote_request(true, last)));
    assert_eq!(
        turn(&mut e).messages,
        vec![msg(4, 1, 2, vote_response(true, true))]
    );
    step(&mut e, msg(1, 4, 2, vote_request(false, last)));
    let t = turn(&mut e);
    assert_eq!(
        t.after_write,
        vec![(1, msg(4, 1, 2, vote_response(false, true)))]
    );
    assert_eq!(e.vote(), Some(1));
}

/// §5.2 and Figure 2: a candidate's vote for itself counts only once it is
/// durable, so a single-node cluster becomes leader only after the write of
/// its vote is done, and commits its blank entry only after that entry's
/// write is done.
#[test]
fn single_node_becomes_leader_only_after_its_vote_is_durable() {
    let mut e = fresh(1, &[1]);
    tick_until_campaign(&mut e);
    assert_eq!(e.role, Role::Candidate, "its own pre-vote is a quorum");
    assert_eq!(
        turn(&mut e),
        Turn {
            write: Some(write(1, None, vec![], Some(hard_state(1, Some(1), 0)))),
            ..Turn::default()
        }
    );
    assert_eq!(e.role, Role::Candidate, "the vote is not durable yet");

    e.on_write_done(1);
    assert!(e.is_leader());
    assert_eq!(
        turn(&mut e),
        Turn {
            write: Some(write(2, None, vec![blank(1, 1)], None)),
            ..Turn::default()
        }
    );
    assert_eq!(e.commit_index(), 0, "the blank entry is not durable yet");

    e.on_write_done(2);
    assert_eq!(e.commit_index(), 1);
    assert_eq!(
        turn(&mut e),
        Turn {
            write: Some(Write {
                id: 3,
                batch: WriteBatch {
                    truncate_from: None,
                    entries: vec![],
                    hard_state: Some(hard_state(1, Some(1), 1)),
                    must_sync: false,
                },
            }),
            apply: vec![blank(1, 1)],
            ..Turn::default()
        }
    );
}

// ----- §5.4.1 election restriction -----

/// §5.4.1: a voter denies its vote (and its pre-vote) to a candidate whose
/// last entry has a lower term than its own, however long that log is.
#[test]
fn voter_rejects_candidate_whose_last_term_is_lower() {
    let mut voter = with_log(3, &[1, 2, 3], &[1, 1, 2], hard_state(2, None, 0));
    step(
        &mut voter,
        msg(1, 3, 3, vote_request(true, LogId::new(1, 5))),
    );
    assert_eq!(
        turn(&mut voter),
        Turn {
            messages: vec![msg(3, 1, 2, vote_response(true, false))],
            ..Turn::default()
        },
        "a pre-vote is refused in the voter's own term"
    );
    step(
        &mut voter,
        msg(1, 3, 3, vote_request(false, LogId::new(1, 5))),
    );
    assert_eq!(
        turn(&mut voter),
        Turn {
            write: Some(write(1, None, vec![], Some(hard_state(3, None, 0)))),
            after_write: vec![(1, msg(3, 1, 3, vote_response(false, false)))],
            ..Turn::default()
        }
    );
    assert_eq!(voter.vote(), None);

    // Control: the same voter grants a candidate whose last term is higher.
    voter.on_write_done(1);
    step(
        &mut voter,
        msg(2, 3, 3, vote_request(false, LogId::new(3, 1))),
    );
    assert_eq!(voter.vote(), Some(2));
}

/// §5.4.1: with equal last terms, the longer log is more up-to-date; a voter
/// denies its vote to a candidate whose log is shorter than its own.
#[test]
fn voter_rejects_candidate_with_a_shorter_log_in_the_same_term() {
    let mut voter = with_log(3, &[1, 2, 3], &[1, 1, 2], hard_state(2, None, 0));
    step(
        &mut voter,
        msg(1, 3, 3, vote_request(false, LogId::new(2, 2))),
    );
    let t = turn(&mut voter);
    assert_eq!(
        t.after_write,
        vec![(1, msg(3, 1, 3, vote_response(false, false)))]
    );
    assert_eq!(voter.vote(), None);

    // Control: as long as ours is enough.
    voter.on_write_done(1);
    step(
        &mut voter,
        msg(2, 3, 3, vote_request(false, LogId::new(2, 3))),
    );
    assert_eq!(
        turn(&mut voter),
        Turn {
            write: Some(write(2, None, vec![], Some(hard_state(3, Some(2), 0)))),
            after_write: vec![(2, msg(3, 2, 3, vote_response(false, true)))],
            ..Turn::default()
        }
    );
}

// ----- Pre-Vote and CheckQuorum -----

/// Dissertation §9.6 (Pre-Vote): a node cut off from everyone times out
/// again and again but never raises its term, so when it comes back it does
/// not depose the leader.
#[test]
fn partitioned_node_does_not_raise_its_term() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(3);
    let mut pre_votes = 0;
    for _ in 0..5 * ELECTION_TICKS_MAX {
        for id in [1, 2, 3] {
            let t = net.tick(id);
            if id == 3 {
                pre_votes += t.messages.iter().filter(|m| m.kind() == "pre_vote").count();
            }
        }
        net.deliver_all();
    }
    assert!(
        pre_votes >= 4,
        "node 3 timed out repeatedly ({pre_votes} pre-votes)"
    );
    assert_eq!(net.nodes[&3].term(), 1);

    net.heal(3);
    for _ in 0..2 * ELECTION_TICKS_MAX {
        net.tick_round(&[1, 2, 3]);
    }
    assert!(net.nodes[&1].is_leader());
    assert_eq!(net.nodes[&1].term(), 1, "the leader was not disturbed");
    assert_eq!(net.nodes[&3].leader(), Some(1));
}

/// Dissertation §4.2.3 and §9.6: a node that heard from a leader within the
/// minimum election timeout ignores (pre-)vote requests for a later term, so
/// a node cut off from the leader alone cannot disrupt it. Once the leader
/// has been silent that long, the same request is granted.
#[test]
fn pre_vote_is_refused_by_a_node_that_heard_from_the_leader_recently() {
    let mut net = Net::new(3);
    net.elect(1);
    let last = net.nodes[&3].last_log_id();
    let pre_vote = msg(3, 2, 2, vote_request(true, last));
    step(net.node(2), pre_vote.clone());
    assert_eq!(
        turn(net.node(2)),
        Turn::default(),
        "ignored: no answer at all"
    );

    // Scenario: node 3 loses only its link to the leader.
    net.cut(1, 3);
    for _ in 0..5 * ELECTION_TICKS_MAX {
        net.tick_round(&[1, 2, 3]);
    }
    assert!(net.nodes[&1].is_leader());
    assert_eq!(net.nodes[&1].term(), 1);
    assert_eq!(net.nodes[&3].term(), 1);
    assert!(net
        .delivered(|m| m.from == 2 && m.to == 3 && m.kind() == "pre_vote_response")
        .is_empty());

    // Once node 2 has not heard from the leader for election_ticks_min ticks,
    // it answers on the log alone.
    net.isolate(1);
    let node_2 = net.node(2);
    for _ in 0..ELECTION_TICKS_MIN {
        node_2.tick();
    }
    step(node_2, pre_vote);
    let to_3: Vec<Message> = turn(node_2)
        .messages
        .into_iter()
        .filter(|m| m.to == 3)
        .collect();
    assert_eq!(to_3, vec![msg(2, 3, 2, vote_response(true, true))]);
}

/// Dissertation §6.2 (CheckQuorum): a leader that has heard from no quorum
/// during a whole election timeout (election_ticks_min) steps down. The
/// window in which it last heard from its peers still counts, so it steps
/// down at the end of the next one.
#[test]
fn leader_that_hears_from_no_one_steps_down() {
    let mut net = Net::new(3);
    net.elect(1);
    // Control: a connected leader keeps leading.
    for _ in 0..3 * ELECTION_TICKS_MIN {
        net.tick_round(&[1, 2, 3]);
    }
    assert!(net.nodes[&1].is_leader());

    net.isolate(1);
    for tick in 1..=2 * ELECTION_TICKS_MIN {
        net.tick(1);
        if tick < ELECTION_TICKS_MIN {
            assert!(net.nodes[&1].is_leader(), "stepped down at tick {tick}");
        }
    }
    let node_1 = &net.nodes[&1];
    assert_eq!(node_1.role, Role::Follower);
    assert_eq!((node_1.term(), node_1.leader()), (1, None));
}

// ----- §5.3 log replication -----

/// §5.3 (consistency check): a follower rejects an append whose previous
/// entry it does not hold, and hints the last index whose term is at most
/// the previous entry's term, so the leader can skip the follower's whole
/// conflicting term.
#[test]
fn follower_rejects_an_append_whose_previous_entry_it_does_not_hold() {
    let mut f = with_log(2, &[1, 2, 3], &[1, 1, 3, 3, 3], hard_state(3, None, 0));
    step(
        &mut f,
        msg(1, 2, 4, append(LogId::new(2, 5), vec![blank(4, 6)], 0)),
    );
    let reject = MessageBody::AppendResponse {
        outcome: AppendOutcome::Reject {
            rejected_index: 5,
            hint: LogId::new(1, 2),
        },
    };
    assert_eq!(
        turn(&mut f),
        Turn {
            write: Some(write(1, None, vec![], Some(hard_state(4, None, 0)))),
            messages: vec![msg(2, 1, 4, reject)],
            ..Turn::default()
        }
    );
    assert_eq!(f.last_log_id(), LogId::new(3, 5), "the log is untouched");
    assert_eq!(f.leader(), Some(1));

    // Beyond the end of the log: the hint is our last entry.
    f.on_write_done(1);
    step(&mut f, msg(1, 2, 4, append(LogId::new(4, 9), vec![], 0)));
    let reject = MessageBody::AppendResponse {
        outcome: AppendOutcome::Reject {
            rejected_index: 9,
            hint: LogId::new(3, 5),
        },
    };
    assert_eq!(turn(&mut f).messages, vec![msg(2, 1, 4, reject)]);
}

/// §5.3: a follower whose log has a suffix that conflicts with the leader's
/// deletes it and appends the leader's entries; the next write says to
/// truncate first.
#[test]
fn follower_truncates_a_conflicting_suffix_then_appends() {
    let mut f = with_log(2, &[1, 2, 3], &[1, 1, 1, 2, 2], hard_state(2, None, 0));
    let entries = vec![command(3, 4), command(3, 5), command(3, 6)];
    step(
        &mut f,
        msg(1, 2, 3, append(LogId::new(1, 3), entries.clone(), 0)),
    );
    assert_eq!(f.last_log_id(), LogId::new(3, 6));
    assert_eq!(f.term_at(4), Some(3));
    assert_eq!(
        turn(&mut f),
        Turn {
            write: Some(write(1, Some(4), entries, Some(hard_state(3, None, 0)))),
            after_write: vec![(1, msg(2, 1, 3, ack(6)))],
            ..Turn::default()
        }
    );
}

/// §5.3 and Figure 2: a follower acknowledges entries only once the write
/// that makes them durable is done. Entries that arrive while an earlier
/// write is in flight wait for the next write, not the one in flight.
#[test]
fn follower_acknowledges_entries_only_after_they_are_durable() {
    let mut f = with_log(2, &[1, 2, 3], &[], hard_state(1, None, 0));
    step(
        &mut f,
        msg(1, 2, 1, append(LogId::new(0, 0), vec![command(1, 1)], 0)),
    );
    assert_eq!(
        turn(&mut f),
        Turn {
            write: Some(write(1, None, vec![command(1, 1)], None)),
            after_write: vec![(1, msg(2, 1, 1, ack(1)))],
            ..Turn::default()
        }
    );

    step(
        &mut f,
        msg(1, 2, 1, append(LogId::new(1, 1), vec![command(1, 2)], 0)),
    );
    assert_eq!(
        turn(&mut f),
        Turn {
            after_write: vec![(2, msg(2, 1, 1, ack(2)))],
            ..Turn::default()
        },
        "write 1 is in flight: the new entry goes in write 2"
    );
    f.on_write_done(1);
    assert_eq!(f.persisted_index(), 1);
    assert_eq!(
        turn(&mut f),
        Turn {
            write: Some(write(2, None, vec![command(1, 2)], None)),
            ..Turn::default()
        }
    );
    f.on_write_done(2);

    // A repeated append of durable entries is acknowledged at once.
    step(
        &mut f,
        msg(1, 2, 1, append(LogId::new(1, 1), vec![command(1, 2)], 0)),
    );
    assert_eq!(
        turn(&mut f),
        Turn {
            messages: vec![msg(2, 1, 1, ack(2))],
            ..Turn::default()
        }
    );
}

/// §5.3 (the optimisation at its end): the leader uses the follower's hint
/// to skip a whole conflicting term in one round trip: after the first
/// rejection at index 7, the next probe's previous entry is index 3, the
/// last one the logs can share, instead of 6.
#[test]
fn leader_skips_a_whole_conflicting_term_in_one_round_trip() {
    let hs = hard_state(4, None, 3);
    let mut net = Net::with_logs(
        config(),
        vec![
            (1, vec![1, 1, 1, 4, 4, 4, 4], hs),
            (2, vec![1, 1, 1, 2, 2, 2, 2, 2, 2], hs),
            (3, vec![1, 1, 1, 4, 4, 4, 4], hs),
        ],
    );
    net.elect(1);
    assert_eq!(net.nodes[&1].term(), 5);
    let probes: Vec<LogId> = net
        .delivered(|m| m.from == 1 && m.to == 2)
        .into_iter()
        .filter_map(|m| match &m.body {
            MessageBody::Append { prev_log_id, .. } => Some(*prev_log_id),
            _ => None,
        })
        .collect();
    assert_eq!(probes[..2], [LogId::new(4, 7), LogId::new(1, 3)]);
    let rejections = net.delivered(|m| {
        m.from == 2
            && matches!(
                m.body,
                MessageBody::AppendResponse {
                    outcome: AppendOutcome::Reject { .. }
                }
            )
    });
    assert_eq!(rejections.len(), 1);
    let follower = &net.nodes[&2];
    assert_eq!(follower.last_log_id(), LogId::new(5, 8));
    assert_eq!(
        (4..=8)
            .map(|i| follower.term_at(i).unwrap())
            .collect::<Vec<_>>(),
        [4, 4, 4, 4, 5]
    );
    assert_eq!(follower.commit_index(), 8);
}

// ----- §5.3 and §5.4.2: the commit rule -----

/// Figure 8, state (c): five nodes. S1 led term 2 and wrote (term 2, index
/// 2); S5 led term 3 and wrote (3, 2) only to itself. Now S1 leads term 4
/// (S4 and S5 are down) and brings (2, 2) to S2 and S3, a majority with
/// itself, while its own blank entry (4, 3) has reached no one else.
fn figure_8_state_c() -> Net {
    let voted_5 = hard_state(3, Some(5), 1);
    let config = EngineConfig {
        // One blank entry per append, so (2, 2) and (4, 3) travel apart.
        append_bytes_max: 24,
        ..config()
    };
    let mut net = Net::with_logs(
        config,
        vec![
            (1, vec![1, 2], hard_state(3, None, 1)),
            (2, vec![1], hard_state(3, None, 1)),
            (3, vec![1], voted_5),
            (4, vec![1], voted_5),
            (5, vec![1, 3], voted_5),
        ],
    );
    net.isolate(4);
    net.isolate(5);
    // S1's term-4 entry does not reach S2 and S3 once they hold (2, 2).
    net.hold = Some(Box::new(|m, to| {
        let carries_3 = matches!(&m.body, MessageBody::Append { entries, .. }
            if entries.iter().any(|e| e.index == 3));
        carries_3 && to.term_at(2) == Some(2)
    }));
    net.elect(1);
    assert_eq!(net.nodes[&1].term(), 4);
    for id in [2, 3] {
        assert_eq!(net.nodes[&id].term_at(2), Some(2));
        assert_eq!(net.nodes[&id].last_log_id(), LogId::new(2, 2));
        assert_eq!(net.nodes[&1].replication()[&id], 2);
    }
    net
}

/// §5.4.2, Figure 8 (c) then (d): a leader never commits an entry of an
/// earlier term by counting replicas. (2, 2) sits on a majority, yet S1 does
/// not commit it; rightly so, because S5 can still win term 5 (with S2, S3
/// and S4, whose logs are less up-to-date than its (3, 2)) and overwrite it.
/// The harness's State Machine Safety check would catch a commit of (2, 2).
#[test]
fn figure_8_leader_does_not_commit_an_earlier_term_entry_by_counting_replicas() {
    let mut net = figure_8_state_c();
    assert_eq!(
        net.nodes[&1].commit_index(),
        1,
        "(2, 2) is on 3 of 5 but not committed"
    );
    for id in [2, 3] {
        assert_eq!(net.nodes[&id].commit_index(), 1);
    }

    // (d): S1 crashes before (4, 3) spreads; S5 comes back. With the link
    // S2-S3 down only S5 can gather three votes.
    net.isolate(1);
    net.held.clear();
    net.hold = None;
    net.heal(4);
    net.heal(5);
    net.cut(2, 3);
    let leader = net.run_until_leader(&[2, 3, 4, 5]);
    assert_eq!(leader, 5);
    assert_eq!(net.nodes[&5].term(), 5);
    for _ in 0..ELECTION_TICKS_MIN {
        net.tick_round(&[2, 3, 4, 5]);
    }
    for id in [2, 3, 4] {
        assert_eq!(
            net.nodes[&id].term_at(2),
            Some(3),
            "(2, 2) overwritten on node {id}"
        );
    }
    assert_eq!(net.nodes[&5].commit_index(), 3);
}

/// §5.4.2, Figure 8 (c) then (e): once an entry of the leader's own term
/// (4, 3) is on a majority, it commits, and (2, 2) with it; then no node
/// without both (S5) can be elected.
#[test]
fn figure_8_earlier_term_entry_commits_with_an_entry_of_the_leader_term() {
    let mut net = figure_8_state_c();
    net.hold = None;
    let held = std::mem::take(&mut net.held);
    net.queue.extend(held);
    net.deliver_all();
    assert_eq!(net.nodes[&1].commit_index(), 3);
    assert_eq!(net.committed.get(&2), Some(&2));

    net.isolate(1);
    net.heal(4);
    net.heal(5);
    for _ in 0..20 * ELECTION_TICKS_MAX {
        net.tick_round(&[2, 3, 4, 5]);
        assert!(!net.nodes[&5].is_leader(), "S5 lacks the committed (4, 3)");
        assert!(!net.nodes[&4].is_leader(), "S4 lacks the committed (4, 3)");
    }
    let leader = [2, 3].into_iter().find(|id| net.nodes[id].is_leader());
    let leader = leader.expect("S2 or S3 is elected");
    assert_eq!(net.nodes[&leader].term_at(2), Some(2));
    assert_eq!(
        net.nodes[&5].term_at(2),
        Some(2),
        "S5's (3, 2) is overwritten"
    );
}

/// §5.4.1 Leader Completeness: a node that misses a committed entry cannot
/// be elected; the node that holds it is.
#[test]
fn node_missing_a_committed_entry_cannot_win_an_election() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(3);
    let entry = net.propose(1);
    assert_eq!(net.nodes[&1].commit_index(), entry.index);
    assert_eq!(net.nodes[&3].last_log_id().index, entry.index - 1);

    // The leader crashes; node 3 comes back, but first node 2 has gone a
    // whole timeout without a leader (so no lease protects it).
    net.isolate(1);
    net.heal(3);
    net.cut(2, 3);
    for _ in 0..ELECTION_TICKS_MAX {
        net.tick_round(&[2]);
    }
    net.cut.clear();
    net.campaign(3);
    assert_eq!(net.nodes[&3].role, Role::PreCandidate, "node 2 refused it");
    assert_eq!(net.nodes[&3].term(), 1);

    let leader = net.run_until_leader(&[2, 3]);
    assert_eq!(leader, 2);
    net.tick_round(&[2, 3]);
    assert_eq!(net.nodes[&3].term_at(entry.index), Some(entry.term));
}

// ----- heartbeats -----

/// §5.2: the leader sends a heartbeat to every peer each heartbeat_ticks;
/// a heartbeat carries min(commit, the peer's match), so a follower never
/// learns a commit index beyond what it holds.
#[test]
fn leader_sends_heartbeats_every_heartbeat_ticks_with_commit_capped_at_match() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(3);
    let entry = net.propose(1);
    assert_eq!(net.nodes[&1].commit_index(), entry.index);
    for round in 1..=3 {
        for tick in 1..HEARTBEAT_TICKS {
            assert_eq!(net.tick(1), Turn::default(), "round {round}, tick {tick}");
        }
        assert_eq!(
            net.tick(1),
            Turn {
                messages: vec![
                    msg(1, 2, 1, heartbeat(entry.index, 0)),
                    msg(1, 3, 1, heartbeat(entry.index - 1, 0)),
                ],
                ..Turn::default()
            }
        );
    }
}

/// §5.2: a follower restarts its election timer on every heartbeat, so
/// while heartbeats flow no follower campaigns.
#[test]
fn followers_do_not_campaign_while_heartbeats_flow() {
    let mut net = Net::new(3);
    net.elect(1);
    let elected_at = net.trace.len();
    for _ in 0..10 * ELECTION_TICKS_MAX {
        net.tick_round(&[1, 2, 3]);
    }
    assert!(net.trace[elected_at..].iter().all(|m| !is_vote_request(m)));
    assert!(net.nodes[&1].is_leader());
    for id in [2, 3] {
        assert_eq!(
            (net.nodes[&id].term(), net.nodes[&id].leader()),
            (1, Some(1))
        );
    }
}

/// §5.2, exactly: with timeouts of 10 or 11 ticks, a heartbeat after 9
/// ticks keeps the follower from campaigning for 9 more.
#[test]
fn heartbeat_restarts_the_follower_election_timer() {
    let config = EngineConfig {
        election_ticks_max: ELECTION_TICKS_MIN + 1,
        ..config()
    };
    let mut f = Engine::new(2, config, restored(&[1, 2, 3], &[], HardState::default()));
    turn(&mut f);
    step(&mut f, msg(1, 2, 1, heartbeat(0, 0)));
    turn(&mut f);
    for _ in 0..2 {
        for _ in 1..ELECTION_TICKS_MIN {
            f.tick();
        }
        assert_eq!(f.role, Role::Follower);
        step(&mut f, msg(1, 2, 1, heartbeat(0, 0)));
        assert_eq!(
            turn(&mut f).messages,
            vec![msg(2, 1, 1, MessageBody::HeartbeatResponse { read_seq: 0 })]
        );
    }
    // Without heartbeats it does campaign.
    tick_until_campaign(&mut f);
}

// ----- replication flow -----

/// Issue 13, item 5 (etcd's MaxUncommittedEntriesSize): past
/// `uncommitted_bytes_max` of uncommitted commands the leader refuses
/// proposals, and takes them again once its entries commit. An empty
/// account takes one batch of any size.
#[test]
fn leader_refuses_proposals_past_its_uncommitted_bytes_until_they_commit() {
    let config = EngineConfig {
        uncommitted_bytes_max: 20, // two and a half 8-byte commands
        ..config()
    };
    let mut e = elected_by_hand(config, &[1, 2, 3]);
    let first = e.propose((2..=4).map(command_payload).collect()).unwrap();
    assert_eq!(
        first,
        LogId::new(1, 2),
        "24 bytes: an empty account takes it"
    );
    assert_eq!(
        e.propose(vec![command_payload(5)]),
        Err(ProposeError::TooManyRequests { gap: 4 })
    );
    assert_eq!(e.last_log_id(), LogId::new(1, 4), "nothing appended");
    let t = turn(&mut e);
    e.on_write_done(t.write.expect("the commands").id);
    step(&mut e, msg(2, 1, 1, ack(1)));
    turn(&mut e);
    step(&mut e, msg(2, 1, 1, ack(4)));
    assert_eq!(e.commit_index(), 4);
    assert_eq!(e.propose(vec![command_payload(5)]), Ok(LogId::new(1, 5)));
}

/// Replication flow (etcd's progress states): a peer in Probe gets one
/// append at a time; its first acknowledgement moves it to Replicate, where
/// the leader pipelines appends without waiting, up to inflight_msgs_max
/// messages of at most append_bytes_max bytes each.
#[test]
fn probe_sends_one_append_then_replicate_pipelines_up_to_the_window() {
    let config = EngineConfig {
        inflight_msgs_max: 2,
        append_bytes_max: 64, // two 32-byte commands
        ..config()
    };
    let mut e = elected_by_hand(config, &[1, 2, 3]);
    let first = e.propose((2..=7).map(command_payload).collect()).unwrap();
    assert_eq!(first, LogId::new(1, 2));
    let t = turn(&mut e);
    assert_eq!(t.messages, vec![], "both peers are in Probe, waiting");
    e.on_write_done(t.write.expect("the commands").id);

    step(&mut e, msg(2, 1, 1, ack(1)));
    assert_eq!(e.commit_index(), 1);
    let t = turn(&mut e);
    assert_eq!(
        t.messages,
        vec![
            msg(
                1,
                2,
                1,
                append(LogId::new(1, 1), vec![command(1, 2), command(1, 3)], 1)
            ),
            msg(
                1,
                2,
                1,
                append(LogId::new(1, 3), vec![command(1, 4), command(1, 5)], 1)
            ),
        ],
        "two appends in flight to node 2, none to node 3 still in Probe"
    );

    step(&mut e, msg(2, 1, 1, ack(3)));
    assert_eq!(e.commit_index(), 3);
    assert_eq!(
        turn(&mut e).messages,
        vec![msg(
            1,
            2,
            1,
            append(LogId::new(1, 5), vec![command(1, 6), command(1, 7)], 3)
        )]
    );

    // Node 3 answers its probe and is caught up from its match point.
    step(&mut e, msg(3, 1, 1, ack(1)));
    assert_eq!(
        turn(&mut e).messages,
        vec![
            msg(
                1,
                3,
                1,
                append(LogId::new(1, 1), vec![command(1, 2), command(1, 3)], 3)
            ),
            msg(
                1,
                3,
                1,
                append(LogId::new(1, 3), vec![command(1, 4), command(1, 5)], 3)
            ),
        ]
    );
}

/// A follower in Replicate whose appends were all lost during a partition
/// catches up once the partition heals, even if nothing new is proposed:
/// the leader must notice from the heartbeat responses that it lags.
#[test]
fn follower_whose_appends_were_lost_catches_up_after_the_partition_heals() {
    // One lost append leaves the window open; four fill it (3 slots).
    for lost in [1, 4] {
        let mut net = Net::new(3);
        net.elect(1);
        net.isolate(3);
        let mut last = LogId::default();
        for _ in 0..lost {
            last = net.propose(1);
        }
        assert_eq!(net.nodes[&1].commit_index(), last.index);
        net.heal(3);
        for _ in 0..2 * ELECTION_TICKS_MIN {
            net.tick_round(&[1, 2, 3]);
        }
        assert!(net.nodes[&1].is_leader());
        assert_eq!(net.nodes[&3].last_log_id(), last, "{lost} lost");
        assert_eq!(net.nodes[&3].commit_index(), last.index, "{lost} lost");
    }
}

// ----- ReadIndex (dissertation §6.4) -----

/// Dissertation §6.4: reads that arrive in one turn share one heartbeat
/// round (one heartbeat per peer, one sequence number), and are answered
/// with the commit index only once a quorum has echoed that number.
#[test]
fn reads_in_one_turn_share_one_heartbeat_round_confirmed_by_a_quorum() {
    let mut net = Net::new(5);
    net.elect(1);
    let leader = net.node(1);
    let commit = leader.commit_index();
    assert_eq!(commit, 1);
    leader.read_index(10);
    leader.read_index(11);
    assert_eq!(
        turn(leader),
        Turn {
            messages: (2..=5)
                .map(|to| msg(1, to, 1, heartbeat(commit, 1)))
                .collect(),
            ..Turn::default()
        }
    );
    let echo = MessageBody::HeartbeatResponse { read_seq: 1 };
    step(leader, msg(2, 1, 1, echo.clone()));
    assert_eq!(turn(leader), Turn::default(), "two of five is no quorum");
    step(leader, msg(3, 1, 1, echo.clone()));
    assert_eq!(
        turn(leader),
        Turn {
            reads: vec![(10, Ok(commit)), (11, Ok(commit))],
            ..Turn::default()
        }
    );
    // A stale echo of an older round confirms nothing newer.
    leader.read_index(12);
    let t = turn(leader);
    assert_eq!(t.messages[0], msg(1, 2, 1, heartbeat(commit, 2)));
    step(leader, msg(4, 1, 1, echo.clone()));
    step(leader, msg(5, 1, 1, echo));
    assert_eq!(turn(leader).reads, vec![]);
}

/// Dissertation §6.4: a new leader does not know the commit index until an
/// entry of its own term is committed, so it holds reads until then.
#[test]
fn leader_holds_reads_until_an_entry_of_its_term_is_committed() {
    let mut e = elected_by_hand(config(), &[1, 2, 3]);
    e.read_index(10);
    assert_eq!(turn(&mut e), Turn::default(), "no read round yet");

    step(&mut e, msg(2, 1, 1, ack(1)));
    assert_eq!(e.commit_index(), 1);
    let t = turn(&mut e);
    assert_eq!(
        t.messages,
        vec![
            msg(1, 2, 1, heartbeat(1, 1)),
            msg(1, 3, 1, heartbeat(0, 1)),
            msg(1, 2, 1, append(LogId::new(1, 1), vec![], 1)),
        ]
    );
    assert_eq!(t.reads, vec![]);
    step(
        &mut e,
        msg(3, 1, 1, MessageBody::HeartbeatResponse { read_seq: 1 }),
    );
    assert_eq!(turn(&mut e).reads, vec![(10, Ok(1))]);
}

/// Dissertation §6.4: a leader that steps down fails every pending read,
/// confirmed round or not, with LeadershipLost.
#[test]
fn leader_that_steps_down_fails_pending_reads() {
    let mut e = elected_by_hand(config(), &[1, 2, 3]);
    step(&mut e, msg(2, 1, 1, ack(1)));
    e.read_index(10);
    turn(&mut e);
    e.read_index(11);
    step(&mut e, msg(3, 1, 2, heartbeat(0, 0)));
    assert!(!e.is_leader());
    assert_eq!(e.leader(), Some(3));
    let t = turn(&mut e);
    assert_eq!(
        t.reads,
        vec![
            (10, Err(ReadError::LeadershipLost)),
            (11, Err(ReadError::LeadershipLost))
        ]
    );
}

/// A follower cannot serve linearizable reads; it names the leader.
#[test]
fn follower_answers_reads_with_not_leader() {
    let mut net = Net::new(3);
    net.elect(1);
    let follower = net.node(2);
    follower.read_index(10);
    assert_eq!(
        turn(follower),
        Turn {
            reads: vec![(
                10,
                Err(ReadError::NotLeader {
                    leader_hint: Some(1)
                })
            )],
            ..Turn::default()
        }
    );
}

// ----- leadership transfer (dissertation §3.10) -----

/// Dissertation §3.10: during a transfer the leader drops proposals; it
/// sends TimeoutNow once the target has caught up, and the target wins at
/// once (voters skip the lease for a transfer).
#[test]
fn leadership_transfer_drops_proposals_and_sends_timeout_now_once_caught_up() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(3);
    let entry = net.propose(1);
    net.node(1).transfer_leader(3).unwrap();
    assert_eq!(net.nodes[&1].lead_transferee(), Some(3));
    let t = net.turn(1);
    assert!(
        t.messages.iter().all(|m| m.body != MessageBody::TimeoutNow),
        "3 lags"
    );
    assert_eq!(
        net.node(1).propose(vec![command_payload(9)]),
        Err(ProposeError::ProposalDropped {
            reason: "leadership transfer in progress"
        })
    );

    net.heal(3);
    for _ in 0..ELECTION_TICKS_MAX {
        net.tick_round(&[1, 2, 3]);
    }
    assert!(net.nodes[&3].is_leader());
    assert_eq!(net.nodes[&3].term(), 2);
    let timeout_now = net.delivered(|m| m.body == MessageBody::TimeoutNow);
    assert_eq!(timeout_now, vec![&msg(1, 3, 1, MessageBody::TimeoutNow)]);
    assert_eq!(net.nodes[&3].term_at(entry.index), Some(entry.term));

    // Exactly: to a caught-up target, TimeoutNow goes out in the same turn.
    net.deliver_all();
    net.tick_round(&[1, 2, 3]);
    let new_leader = net.node(3);
    new_leader.transfer_leader(2).unwrap();
    let t = turn(new_leader);
    assert_eq!(t.messages, vec![msg(3, 2, 2, MessageBody::TimeoutNow)]);
}

/// Dissertation §3.10: a transfer that does not complete within
/// election_ticks_min ticks is aborted, and proposals are accepted again.
#[test]
fn leadership_transfer_aborts_after_an_election_timeout() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(3);
    net.node(1).transfer_leader(3).unwrap();
    for tick in 1..=ELECTION_TICKS_MIN {
        assert!(
            matches!(
                net.node(1).propose(vec![command_payload(9)]),
                Err(ProposeError::ProposalDropped { .. })
            ),
            "tick {tick}"
        );
        net.tick_round(&[1, 2]);
    }
    assert!(net.nodes[&1].is_leader());
    assert_eq!(net.nodes[&1].lead_transferee(), None);
    assert_eq!(
        net.node(1).propose(vec![command_payload(2)]),
        Ok(LogId::new(1, 2))
    );
}

/// A follower refuses proposals and names the leader it knows, if any.
#[test]
fn follower_refuses_proposals_with_the_leader_hint() {
    let mut lonely = fresh(1, &[1, 2, 3]);
    assert_eq!(
        lonely.propose(vec![command_payload(1)]),
        Err(ProposeError::NotLeader { leader_hint: None })
    );
    let mut net = Net::new(3);
    net.elect(1);
    assert_eq!(
        net.node(2).propose(vec![command_payload(2)]),
        Err(ProposeError::NotLeader {
            leader_hint: Some(1)
        })
    );
    assert_eq!(turn(net.node(2)), Turn::default(), "nothing was appended");
}

// ----- snapshot install (dissertation §5.3) -----

fn snapshot_chunk(meta: &SnapshotMeta, done: bool) -> MessageBody {
    MessageBody::InstallSnapshot {
        meta: meta.clone(),
        offset: 0,
        data: Bytes::from_static(b"state"),
        done,
    }
}

/// A follower holding entries 1..=6, none committed, that receives a snapshot
/// ending at (1, 4) in one chunk, stored by its state machine.
fn follower_receiving_a_snapshot(done: bool) -> (Engine, SnapshotMeta) {
    let mut f = with_log(2, &[1, 2, 3], &[1; 6], hard_state(1, None, 0));
    let meta = SnapshotMeta {
        last_log_id: LogId::new(1, 4),
        membership: membership(&[1, 2, 3]),
    };
    step(&mut f, msg(1, 2, 1, snapshot_chunk(&meta, done)));
    let actions = f.take_actions();
    assert!(actions.apply.is_empty());
    assert_eq!(actions.snapshot_receives.len(), 1);
    (f, meta)
}

/// The entries one turn hands to apply, serving a load from `disk`.
fn applied_in_turn(f: &mut Engine, disk: &[Entry]) -> Vec<Entry> {
    let t = turn(f);
    let Some(range) = t.load else {
        return t.apply;
    };
    assert!(t.apply.is_empty());
    f.on_loaded(disk[(range.start - 1) as usize..(range.end - 1) as usize].to_vec());
    turn(f).apply
}

/// Issue 13, item 10: `Installed` sets the leader's match index, which
/// counts as durable on the follower. A follower whose commit index covers
/// the snapshot but whose write of those entries is still in flight answers
/// only once that write is durable.
#[test]
fn follower_answers_installed_for_a_committed_snapshot_only_once_its_log_is_durable() {
    let mut f = with_log(2, &[1, 2, 3], &[1; 2], hard_state(1, None, 0));
    let entries: Vec<Entry> = (3..=6).map(|i| blank(1, i)).collect();
    step(&mut f, msg(1, 2, 1, append(LogId::new(1, 2), entries, 6)));
    assert_eq!(f.commit_index(), 6);
    let t = turn(&mut f);
    let write = t.write.expect("entries 3..=6").id;
    let meta = SnapshotMeta {
        last_log_id: LogId::new(1, 4),
        membership: membership(&[1, 2, 3]),
    };
    step(&mut f, msg(1, 2, 1, snapshot_chunk(&meta, true)));
    let t = turn(&mut f);
    let installed = msg(
        2,
        1,
        1,
        MessageBody::InstallSnapshotResponse {
            snapshot: meta.last_log_id,
            outcome: SnapshotOutcome::Installed,
        },
    );
    assert!(!t.messages.contains(&installed), "sent before durable");
    assert_eq!(t.after_write, vec![(write, installed)]);
}

/// Issue 13, item 9: a follower whose log conflicts with an installed
/// snapshot must drop the entries after it before it purges the log, or a
/// crash in between leaves entries of the replaced history right after the
/// purge point. With a write in flight at the install, the purge waits for
/// the truncating write and goes with it (storage runs jobs in order).
#[test]
fn follower_purges_after_an_install_only_with_the_write_that_truncates_the_replaced_log() {
    let (mut f, _) = follower_receiving_a_snapshot(true);
    // The snapshot of a later term at index 5 conflicts with entry (1, 5).
    let meta = SnapshotMeta {
        last_log_id: LogId::new(2, 5),
        membership: membership(&[1, 2, 3]),
    };
    step(&mut f, msg(1, 2, 2, snapshot_chunk(&meta, true)));
    let actions = f.take_actions();
    let in_flight = actions.write.expect("the new term is written").id;
    f.on_snapshot_chunk_stored(1, meta.clone(), 5, true);
    assert_eq!(f.take_actions().install, Some(meta.clone()));

    f.on_snapshot_installed(meta.clone());
    let actions = f.take_actions();
    assert_eq!(actions.write, None, "a write is in flight");
    assert_eq!(actions.purge, None, "no purge before the truncation");

    // Meanwhile the leader sends the entries after the snapshot: they wait
    // for the purge, so that storage gets them after the purge point.
    let next = vec![blank(2, 6)];
    step(
        &mut f,
        msg(1, 2, 2, append(meta.last_log_id, next.clone(), 5)),
    );
    assert_eq!(f.take_actions().write, None, "a write is in flight");

    f.on_write_done(in_flight);
    let actions = f.take_actions();
    let write = actions.write.expect("the truncation");
    assert_eq!(write.batch.truncate_from, Some(6));
    assert_eq!(write.batch.entries, vec![], "the truncation alone");
    assert_eq!(actions.purge, Some(meta.last_log_id), "with its write");
    f.check_invariants();

    f.on_write_done(write.id);
    let write = f.take_actions().write.expect("the entries");
    assert_eq!(
        (write.batch.truncate_from, write.batch.entries),
        (None, next)
    );
    f.check_invariants();
}

/// Regression (found by the simulator, seed 186): entries committed while a
/// received snapshot is installed were handed to apply before the install,
/// which then took the state machine back. They wait for the install.
#[test]
fn follower_applies_nothing_while_a_snapshot_is_installed() {
    let (mut f, meta) = follower_receiving_a_snapshot(true);
    f.on_snapshot_chunk_stored(1, meta.clone(), 5, true);
    let actions = f.take_actions();
    assert_eq!(actions.install, Some(meta.clone()));
    assert!(actions.apply.is_empty());

    // The leader commits through 6 while the install runs.
    step(&mut f, msg(1, 2, 1, append(LogId::new(1, 6), vec![], 6)));
    assert_eq!(f.commit_index(), 6);
    assert!(!f.has_ready_apply());
    let t = turn(&mut f);
    assert_eq!((t.apply, t.load), (vec![], None), "held during the install");

    f.on_snapshot_installed(meta);
    f.check_invariants();
    assert_eq!(
        applied_in_turn(&mut f, &log_of(&[1; 6])),
        vec![blank(1, 5), blank(1, 6)],
        "only entries past the snapshot"
    );
}

/// A snapshot whose last entry committed here while it was received is not
/// installed (the log has it all; installing would take back what was
/// applied); the leader is told it is in place.
#[test]
fn follower_skips_a_snapshot_its_log_committed_meanwhile() {
    let (mut f, meta) = follower_receiving_a_snapshot(false);
    step(&mut f, msg(1, 2, 1, append(LogId::new(1, 6), vec![], 5)));
    let disk = log_of(&[1; 6]);
    assert_eq!(applied_in_turn(&mut f, &disk), disk[..5].to_vec());

    f.on_snapshot_chunk_stored(1, meta.clone(), 5, true);
    let actions = f.take_actions();
    assert_eq!(actions.install, None);
    let installed = MessageBody::InstallSnapshotResponse {
        snapshot: meta.last_log_id,
        outcome: SnapshotOutcome::Installed,
    };
    // Once the write in flight (the commit index) is durable: `Installed`
    // always waits for everything held now to be durable.
    let gated: Vec<_> = actions
        .messages_after_write
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert_eq!(gated, vec![msg(2, 1, 1, installed)]);
    step(&mut f, msg(1, 2, 1, append(LogId::new(1, 6), vec![], 6)));
    assert_eq!(
        applied_in_turn(&mut f, &disk),
        vec![blank(1, 6)],
        "the log goes on"
    );
}

/// Node 1 leading term 2 of {1, 2, 3} over a log purged through its
/// snapshot at (1, 5). Node 2 answers that it holds nothing, so a transfer
/// of the snapshot starts; its first chunk (16 bytes) is read and sent.
fn leader_streaming_a_snapshot() -> (Engine, LogId) {
    let snapshot = LogId::new(1, 5);
    let restored = Restored {
        hard_state: hard_state(1, None, 5),
        purged: snapshot,
        snapshot,
        last: snapshot,
        term_runs: Vec::new(),
        memberships: vec![(5, membership(&[1, 2, 3]))],
        applied: 5,
    };
    let mut e = elected_by_hand_from(config(), &[1, 2, 3], restored);
    let nothing_here = MessageBody::AppendResponse {
        outcome: AppendOutcome::Reject {
            rejected_index: 5,
            hint: LogId::default(),
        },
    };
    step(&mut e, msg(2, 1, 2, nothing_here));
    let actions = e.take_actions();
    let first = SnapshotRead {
        to: 2,
        snapshot,
        offset: 0,
    };
    assert_eq!(actions.snapshot_reads, vec![first]);
    e.on_snapshot_chunk(2, snapshot, 0, Ok(Some(Bytes::from(vec![7; 16]))));
    let sent = e.take_actions().messages;
    assert!(
        matches!(
            &sent[..],
            [Message {
                to: 2,
                body: MessageBody::InstallSnapshot {
                    offset: 0,
                    done: false,
                    ..
                },
                ..
            }]
        ),
        "{sent:?}"
    );
    (e, snapshot)
}

fn snapshot_received(snapshot: LogId, next_offset: u64) -> MessageBody {
    MessageBody::InstallSnapshotResponse {
        snapshot,
        outcome: SnapshotOutcome::Received { next_offset },
    }
}

/// Regression (simulator, seed 1018: a duplicating, lossy network): a
/// copy of an answer to an earlier chunk made the leader abandon the
/// transfer, and transfers restarted forever. Only the answer to the chunk
/// in flight moves the transfer; copies are ignored.
#[test]
fn leader_ignores_copies_of_answers_to_earlier_snapshot_chunks() {
    let (mut e, snapshot) = leader_streaming_a_snapshot();
    step(&mut e, msg(2, 1, 2, snapshot_received(snapshot, 16)));
    let next = SnapshotRead {
        to: 2,
        snapshot,
        offset: 16,
    };
    assert_eq!(e.take_actions().snapshot_reads, vec![next]);

    // The same answer again, while chunk 16 is read, then once it is sent.
    step(&mut e, msg(2, 1, 2, snapshot_received(snapshot, 16)));
    let actions = e.take_actions();
    assert_eq!((actions.snapshot_reads, actions.messages), (vec![], vec![]));
    e.on_snapshot_chunk(2, snapshot, 16, Ok(Some(Bytes::from(vec![8; 16]))));
    assert_eq!(e.take_actions().messages.len(), 1, "chunk 16 is sent");
    step(&mut e, msg(2, 1, 2, snapshot_received(snapshot, 16)));
    let actions = e.take_actions();
    assert_eq!((actions.snapshot_reads, actions.messages), (vec![], vec![]));
    e.check_invariants();

    step(&mut e, msg(2, 1, 2, snapshot_received(snapshot, 32)));
    let last = SnapshotRead {
        to: 2,
        snapshot,
        offset: 32,
    };
    assert_eq!(e.take_actions().snapshot_reads, vec![last]);
}

/// A chunk left unanswered for an election timeout (it or its answer was
/// lost) is read and sent again, from where the follower last answered.
#[test]
fn leader_sends_an_unanswered_snapshot_chunk_again() {
    let (mut e, snapshot) = leader_streaming_a_snapshot();
    let mut reads = Vec::new();
    for _ in 0..ELECTION_TICKS_MIN {
        e.tick();
        e.check_invariants();
        reads.extend(e.take_actions().snapshot_reads);
    }
    let again = SnapshotRead {
        to: 2,
        snapshot,
        offset: 0,
    };
    assert_eq!(reads, vec![again]);
}

/// A follower given a copy of a chunk it took already (duplicated, or sent
/// again because its answer was lost) says how far it is instead of asking
/// for a restart.
#[test]
fn follower_answers_a_copy_of_a_snapshot_chunk_with_its_offset() {
    let (mut f, meta) = follower_receiving_a_snapshot(false);
    f.on_snapshot_chunk_stored(1, meta.clone(), 5, false);
    assert_eq!(
        f.take_actions().messages,
        vec![msg(2, 1, 1, snapshot_received(meta.last_log_id, 5))]
    );
    let second = MessageBody::InstallSnapshot {
        meta: meta.clone(),
        offset: 5,
        data: Bytes::from_static(b"more"),
        done: false,
    };
    step(&mut f, msg(1, 2, 1, second.clone()));
    assert_eq!(f.take_actions().snapshot_receives.len(), 1);
    f.on_snapshot_chunk_stored(1, meta.clone(), 9, false);
    f.take_actions();

    step(&mut f, msg(1, 2, 1, second));
    let actions = f.take_actions();
    assert!(actions.snapshot_receives.is_empty(), "not stored twice");
    assert_eq!(
        actions.messages,
        vec![msg(2, 1, 1, snapshot_received(meta.last_log_id, 9))]
    );
}

// ----- membership (dissertation §4) -----

/// Dissertation §4.2.2: a leader that appended a configuration without
/// itself manages the cluster until that configuration commits, but takes
/// no new proposals: they are dropped with a reason, and the leader steps
/// down once the configuration commits.
#[test]
fn leader_outside_the_configuration_drops_proposals_until_it_steps_down() {
    let mut net = Net::new(3);
    net.elect(1);
    // Hold back the final configuration (C_new, without node 1) at the
    // followers, so it is appended on the leader but not committed.
    net.hold = Some(Box::new(|m: &Message, _: &Engine| {
        matches!(&m.body, MessageBody::Append { entries, .. } if entries.iter().any(|e| {
            matches!(&e.payload, EntryPayload::Membership(c) if !c.is_joint())
        }))
    }));
    net.node(1)
        .change_membership(config_change::MembershipChange::SetVoters([2, 3].into()))
        .expect("the leader accepts the change");
    net.turn(1);
    net.deliver_all();
    let leader = &net.nodes[&1];
    assert!(leader.is_leader());
    assert!(!leader.membership().is_joint(), "C_new is appended");
    assert!(!leader.membership().members().contains(&1));

    let dropped = net.node(1).propose(vec![command_payload(9)]);
    assert_eq!(
        dropped,
        Err(ProposeError::ProposalDropped {
            reason: "leader is not in the configuration"
        })
    );

    // Let C_new through: it commits and the leader steps down.
    net.hold = None;
    for m in std::mem::take(&mut net.held) {
        net.deliver(m);
    }
    net.deliver_all();
    assert!(
        !net.nodes[&1].is_leader(),
        "the removed leader stepped down"
    );
}

/// One transfer per follower at a time, no appends to it meanwhile, and
/// heartbeats keep flowing to it (and to everyone) while it streams.
#[test]
fn leader_streams_one_snapshot_per_follower_and_keeps_heartbeating() {
    let (mut e, _) = leader_streaming_a_snapshot();
    // A late rejection (from an earlier probe) starts no second transfer.
    let nothing_here = MessageBody::AppendResponse {
        outcome: AppendOutcome::Reject {
            rejected_index: 5,
            hint: LogId::default(),
        },
    };
    step(&mut e, msg(2, 1, 2, nothing_here));
    assert!(e.take_actions().snapshot_reads.is_empty());

    // New entries go to 3 (in sync), not to 2; heartbeats go to both.
    step(&mut e, msg(3, 1, 2, ack(6)));
    e.take_actions();
    e.propose(vec![command_payload(7)]).expect("leader");
    let mut sent = e.take_actions().messages;
    for _ in 0..HEARTBEAT_TICKS {
        e.tick();
        sent.extend(e.take_actions().messages);
    }
    let kinds_to = |to: NodeId| -> Vec<&'static str> {
        sent.iter()
            .filter(|m| m.to == to)
            .map(|m| match m.body {
                MessageBody::Append { .. } => "append",
                MessageBody::Heartbeat { .. } => "heartbeat",
                _ => "other",
            })
            .collect()
    };
    assert!(!kinds_to(2).contains(&"append"), "{sent:?}");
    assert!(kinds_to(2).contains(&"heartbeat"), "{sent:?}");
    assert!(kinds_to(3).contains(&"append"), "{sent:?}");
    assert!(kinds_to(3).contains(&"heartbeat"), "{sent:?}");
}

/// The trailing window: after a snapshot, the log keeps the last
/// `snapshot_trailing_entries` entries, so a follower lagging by fewer
/// catches up from the log, not from a snapshot.
#[test]
fn log_keeps_a_trailing_window_behind_a_snapshot() {
    let mut config = config();
    config.snapshot_interval_entries = 10;
    config.snapshot_trailing_entries = 3;
    let mut e = elected_by_hand(config, &[1, 2, 3]);
    e.propose((2..=11).map(command_payload).collect())
        .expect("leader");
    let t = turn(&mut e);
    e.on_write_done(t.write.expect("the entries are written").id);
    // 2 has everything; 3 lags two entries behind.
    step(&mut e, msg(2, 1, 1, ack(11)));
    step(&mut e, msg(3, 1, 1, ack(9)));
    let actions = e.take_actions();
    assert_eq!(e.commit_index(), 11);
    assert_eq!(actions.apply.len(), 11);
    e.on_applied(11);
    assert!(e.take_actions().build_snapshot);
    e.on_snapshot_built(Ok(LogId::new(1, 11))).unwrap();
    let actions = e.take_actions();
    assert_eq!(
        actions.snapshot_meta.map(|m| m.last_log_id),
        Some(LogId::new(1, 11))
    );
    assert_eq!(actions.purge, Some(LogId::new(1, 8)), "keeps 9..=11");

    // 3 asks from 10 on: appends, no snapshot.
    let reject = MessageBody::AppendResponse {
        outcome: AppendOutcome::Reject {
            rejected_index: 11,
            hint: LogId::new(1, 9),
        },
    };
    step(&mut e, msg(3, 1, 1, reject));
    let actions = e.take_actions();
    assert!(actions.snapshot_reads.is_empty());
    assert!(
        actions.messages.iter().any(|m| m.to == 3
            && matches!(m.body, MessageBody::Append { prev_log_id, .. } if prev_log_id == LogId::new(1, 9))),
        "{:?}",
        actions.messages
    );
}

/// A node whose latest configuration (C_new, without it) is not known
/// committed, and which was a voter of the joint configuration before it,
/// still campaigns: it may hold the only copy of C_new, and the joint
/// quorum cannot form without it. Once C_new is known committed it stops.
/// Regression (simulator, seed 37891: a removed leader crashed before
/// C_new committed; no leader ever again).
#[test]
fn node_removed_by_an_uncommitted_configuration_still_campaigns() {
    let mut joint = membership(&[1, 2]);
    joint.voters_outgoing = [1, 3].into();
    joint.nodes.insert(3, "node-3".into());
    let c_new = membership(&[1, 2]);
    let node = |commit| {
        let mut restored = restored(&[1, 2, 3], &log_of(&[1, 1, 1]), hard_state(1, None, commit));
        restored.memberships = vec![
            (1, membership(&[1, 3])),
            (2, joint.clone()),
            (3, c_new.clone()),
        ];
        let mut e = Engine::new(3, config(), restored);
        turn(&mut e);
        e
    };

    let mut uncommitted = node(2);
    assert_eq!(uncommitted.role(), Role::Learner);
    tick_until_campaign(&mut uncommitted);
    let t = turn(&mut uncommitted);
    let asked: BTreeSet<NodeId> = t.messages.iter().map(|m| m.to).collect();
    assert_eq!(asked, [1, 2].into(), "it asks C_new's voters");

    let mut committed = node(3);
    for _ in 0..3 * ELECTION_TICKS_MAX {
        committed.tick();
    }
    assert_eq!(committed.role(), Role::Learner, "its removal is committed");
    assert!(turn(&mut committed).messages.is_empty());
}

/// A state machine that reports a snapshot that cannot be what it applied
/// (beyond the commit index, or of another term than the log's entry) gets
/// an error for the driver to stop the node with, not a panic, and nothing
/// is purged.
#[test]
fn a_snapshot_that_cannot_be_what_was_applied_is_refused() {
    let mut config = config();
    config.snapshot_interval_entries = 2;
    let mut e = elected_by_hand(config, &[1, 2]);
    e.propose(vec![command_payload(2)]).expect("leader");
    let t = turn(&mut e);
    e.on_write_done(t.write.expect("written").id);
    step(&mut e, msg(2, 1, 1, ack(2)));
    e.take_actions();
    assert_eq!(e.commit_index(), 2);

    e.on_applied(2);
    assert!(e.take_actions().build_snapshot);
    for bogus in [LogId::new(1, 3), LogId::new(7, 2)] {
        let refused = e.on_snapshot_built(Ok(bogus));
        assert!(
            matches!(refused, Err(StateMachineError::Corrupt { .. })),
            "{bogus:?}: {refused:?}"
        );
        let actions = e.take_actions();
        assert_eq!((actions.snapshot_meta, actions.purge), (None, None));
        e.check_invariants();
        // (The driver stops the node on the error; left running, the
        // engine would ask for a snapshot again.)
        assert!(actions.build_snapshot);
    }
}
