//! The checks run after every step, across nodes. Each returns the
//! violation as text; the simulator stops the seed on the first one.
//!
//! - **Election Safety** (Raft §5.2): at most one leader per term, and each
//!   node votes for at most one candidate per term — counting the votes
//!   that left the node (granted vote responses, as sent) and its durable
//!   votes for itself. A vote lost in a crash before anyone saw it may be
//!   cast again; one that was seen may not.
//! - **Log Matching** (§5.3): every entry any node writes is recorded under
//!   its (index, term) with its payload and the term of the entry before
//!   it; another node writing the same (index, term) must agree on both, so
//!   by induction two logs that share an (index, term) share the prefix.
//! - **Leader Completeness / State Machine Safety** (§5.4): a global record
//!   of the term committed at each index. Whenever a node's commit index
//!   moves up, the terms it now counts committed must agree with the record
//!   (or extend it); a write that truncates a recorded committed entry is a
//!   violation; and every committed entry stays on the disks of a majority
//!   of the configuration it was committed under (checked when disks lose
//!   data: crashes and truncations).
//! - **Membership**: the configuration an entry is committed under is the
//!   committing leader's configuration in force (the last in its log,
//!   committed or not: it takes effect when appended, dissertation §4.1),
//!   recorded the first time any node's commit index passes the entry —
//!   the leader's, since followers learn commits from it. "A majority"
//!   means a majority of its voters and, while joint, also of its outgoing
//!   voters. It is the right set: the leader counted exactly those acks,
//!   each sent after the entry was durable, and disks never drop a
//!   committed entry (truncating one is a violation, and the purge keeps a
//!   snapshot that covers it). Later configurations need not hold it on a
//!   majority until their own entries commit, so judging against the
//!   newest one would raise false alarms; judging against the old one
//!   never misses a loss, since every later majority overlaps it through
//!   the joint step.
//! - **Applied prefixes**: applied entries on every node are prefixes of one
//!   sequence (same index ⇒ same term and payload).
//! - **Snapshots**: an installed snapshot's state equals the applied
//!   sequence up to its last entry, replayed, and that entry's term is the
//!   one applied there. Entries a snapshot covers may be gone from a log:
//!   the commit check skips those a node's snapshot covers, a disk holds a
//!   committed entry if its saved snapshot covers it, and a truncation
//!   inside the purged prefix is a violation.
//! - **Commit never moves back** within one incarnation of a node. Across a
//!   crash it is recomputed from the disk: the restarted commit index is
//!   max(synced hard state's commit, state machine's applied index), capped
//!   by the durable log — the engine's `Restored` rule — and every entry up
//!   to it must match the committed record.

use std::collections::BTreeMap;

use rafter::{Entry, EntryPayload, LogId, Membership, NodeId, WriteBatch};

use super::disk::Disk;
use super::kv::{self, KvStore};

/// What the checker remembers across steps.
#[derive(Debug, Default)]
pub struct Checker {
    /// term → the leader elected in it.
    leaders: BTreeMap<u64, NodeId>,
    /// (voter, term) → the candidate it voted for, as seen outside it.
    votes: BTreeMap<(NodeId, u64), NodeId>,
    /// (index, term) → (payload, term of index − 1).
    entries: BTreeMap<(u64, u64), (EntryPayload, u64)>,
    /// committed[i - 1] = the term committed at index i.
    committed: Vec<u64>,
    /// (first index, configuration): indexes from `first index` up to the
    /// next run's were committed under that configuration.
    committed_under: Vec<(u64, Membership)>,
    /// How many times the committed configuration changed (joint and
    /// final steps count apart).
    pub configurations_committed: u64,
    /// applied[i - 1] = (term, payload) applied at index i by some node.
    applied: Vec<(u64, EntryPayload)>,
    /// Per node: the commit index last seen in this incarnation.
    commit_seen: BTreeMap<NodeId, u64>,
    last_committed_config: Option<Membership>,
}

pub type Violation = String;

impl Checker {
    /// The highest index known committed.
    pub fn committed_index(&self) -> u64 {
        self.committed.len() as u64
    }

    /// Election Safety: `node` is leader in `term`.
    pub fn on_leader(&mut self, node: NodeId, term: u64) -> Result<(), Violation> {
        match self.leaders.insert(term, node) {
            Some(other) if other != node => Err(format!(
                "two leaders in term {term}: node {other} and node {node}"
            )),
            _ => Ok(()),
        }
    }

    /// `voter`'s vote for `candidate` in `term` became visible.
    pub fn on_vote(
        &mut self,
        voter: NodeId,
        term: u64,
        candidate: NodeId,
    ) -> Result<(), Violation> {
        match self.votes.insert((voter, term), candidate) {
            Some(other) if other != candidate => Err(format!(
                "node {voter} voted twice in term {term}: for {other} and for {candidate}"
            )),
            _ => Ok(()),
        }
    }

    /// Whether `node` is recorded as the leader of `term`.
    pub fn is_known_leader(&self, node: NodeId, term: u64) -> bool {
        self.leaders.get(&term) == Some(&node)
    }

    /// Log Matching, and no committed entry truncated: `node` starts
    /// `batch` on a disk that holds `disk`.
    pub fn on_write(
        &mut self,
        node: NodeId,
        disk: &Disk,
        batch: &WriteBatch,
    ) -> Result<(), Violation> {
        let mut last_index = disk.last_index();
        if let Some(from) = batch.truncate_from {
            if from <= disk.purged().index {
                return Err(format!(
                    "node {node} truncates from {from}, inside its purged prefix {:?}",
                    disk.purged()
                ));
            }
            for index in from..=last_index.min(self.committed_index()) {
                let term = disk.entry(index).expect("in the log").term;
                if self.committed[index as usize - 1] == term {
                    return Err(format!(
                        "node {node} truncates committed entry {index} (term {term}) from {from}"
                    ));
                }
            }
            last_index = last_index.min(from - 1);
        }
        let mut prev_term = disk.term_at(last_index).unwrap_or(0);
        for entry in &batch.entries {
            self.record_entry(node, entry, prev_term)?;
            prev_term = entry.term;
        }
        Ok(())
    }

    fn record_entry(
        &mut self,
        node: NodeId,
        entry: &Entry,
        prev_term: u64,
    ) -> Result<(), Violation> {
        if entry.term < prev_term {
            return Err(format!(
                "node {node} writes entry {}/{} after a term-{prev_term} entry",
                entry.term, entry.index
            ));
        }
        let key = (entry.index, entry.term);
        match self.entries.get(&key) {
            None => {
                self.entries.insert(key, (entry.payload.clone(), prev_term));
                Ok(())
            }
            Some((payload, prev)) if *payload == entry.payload && *prev == prev_term => Ok(()),
            Some((payload, prev)) => Err(format!(
                "log matching: node {node} writes {}/{} = {:?} after term {prev_term}, \
                 but it was {payload:?} after term {prev}",
                entry.term, entry.index, entry.payload
            )),
        }
    }

    /// State Machine Safety: `node`'s commit index is now `commit` and
    /// `term_at` gives the terms of its log. `restarted` marks the first
    /// check of a new incarnation (the commit index may start lower).
    ///
    /// `covered` is the node's snapshot index: entries up to it may be gone
    /// from its log (their effect is in the snapshot, checked on install).
    /// `config` is the node's configuration in force (see the module docs).
    pub fn on_commit(
        &mut self,
        node: NodeId,
        commit: u64,
        restarted: bool,
        covered: u64,
        config: &Membership,
        term_at: impl Fn(u64) -> Option<u64>,
    ) -> Result<(), Violation> {
        let seen = if restarted {
            0
        } else {
            *self.commit_seen.get(&node).unwrap_or(&0)
        };
        if commit < seen {
            return Err(format!(
                "node {node}: commit index moved back from {seen} to {commit}"
            ));
        }
        for index in seen + 1..=commit {
            let term = match term_at(index) {
                Some(term) => term,
                None if index <= covered => {
                    if index as usize <= self.committed.len() {
                        continue;
                    }
                    // Committed, applied, snapshotted and purged within one
                    // step: the applied sequence (committed entries only)
                    // has its term.
                    match self.applied.get(index as usize - 1) {
                        Some(&(term, _)) => term,
                        None => {
                            return Err(format!(
                                "node {node} has a snapshot covering {index}, neither known \
                                 committed nor applied"
                            ))
                        }
                    }
                }
                None => {
                    return Err(format!(
                        "node {node} committed {index} but does not hold it"
                    ))
                }
            };
            match self.committed.get(index as usize - 1) {
                Some(&recorded) if recorded != term => {
                    return Err(format!(
                        "node {node} committed term {term} at index {index}, \
                         but term {recorded} was committed there"
                    ))
                }
                Some(_) => {}
                None => {
                    assert_eq!(self.committed.len() as u64, index - 1);
                    self.committed.push(term);
                    if self.committed_under.last().is_none_or(|(_, m)| m != config) {
                        self.committed_under.push((index, config.clone()));
                    }
                }
            }
        }
        self.commit_seen.insert(node, commit);
        Ok(())
    }

    /// Applied prefixes: `node` applies `entry`.
    pub fn on_apply(&mut self, node: NodeId, entry: &Entry) -> Result<(), Violation> {
        let i = entry.index as usize - 1;
        match self.applied.get(i) {
            None => {
                assert_eq!(self.applied.len(), i, "applies are consecutive");
                self.applied.push((entry.term, entry.payload.clone()));
                Ok(())
            }
            Some((term, payload)) if *term == entry.term && *payload == entry.payload => Ok(()),
            Some((term, payload)) => Err(format!(
                "node {node} applies {}/{} = {:?}, but {term}/{} = {payload:?} was applied",
                entry.term, entry.index, entry.payload, entry.index
            )),
        }
    }

    /// Counts a newly committed configuration: `config` is in force on a
    /// leader whose commit index covers the entry that holds it.
    pub fn on_configuration_committed(&mut self, config: &Membership) {
        if self.last_committed_config.as_ref() != Some(config) {
            if self.last_committed_config.is_some() {
                self.configurations_committed += 1;
            }
            self.last_committed_config = Some(config.clone());
        }
    }

    /// `node` installs a snapshot ending at `snapshot` that holds `state`.
    pub fn check_snapshot(
        &self,
        node: NodeId,
        snapshot: LogId,
        state: &KvStore,
    ) -> Result<(), Violation> {
        let Some(prefix) = self.applied.get(..snapshot.index as usize) else {
            return Err(format!(
                "node {node} installs snapshot {snapshot:?}, beyond anything applied ({})",
                self.applied.len()
            ));
        };
        if prefix.last().map_or(0, |(term, _)| *term) != snapshot.term {
            return Err(format!(
                "node {node} installs snapshot {snapshot:?}, but term {:?} was applied there",
                prefix.last().map(|(term, _)| term)
            ));
        }
        let mut replayed = KvStore::default();
        for (_, payload) in prefix {
            if let EntryPayload::Command(data) = payload {
                replayed.apply(&kv::decode(data).1);
            }
        }
        if replayed != *state {
            return Err(format!(
                "node {node} installs snapshot {snapshot:?} holding {state:?}, but the applied \
                 sequence gives {replayed:?}"
            ));
        }
        Ok(())
    }

    /// Every committed entry is on the disks of a majority of the
    /// configuration it was committed under (of each half, while joint).
    /// A disk holds an entry if its log has it with that term or a durable
    /// snapshot covers it.
    pub fn check_durable_quorum(&self, disks: &[(NodeId, &Disk)]) -> Result<(), Violation> {
        for (run, (first, config)) in self.committed_under.iter().enumerate() {
            let end = self
                .committed_under
                .get(run + 1)
                .map_or(self.committed.len() as u64, |(next, _)| next - 1);
            for index in *first..=end {
                let term = self.committed[index as usize - 1];
                let holds = |id: &NodeId| {
                    disks
                        .iter()
                        .any(|(d, disk)| d == id && disk.holds(index, term))
                };
                for voters in [&config.voters, &config.voters_outgoing] {
                    if voters.is_empty() {
                        continue;
                    }
                    let who: Vec<NodeId> = voters.iter().copied().filter(holds).collect();
                    if who.len() < voters.len() / 2 + 1 {
                        return Err(format!(
                            "committed entry {term}/{index} is durable only on {who:?}, not a \
                             majority of the voters {voters:?} it was committed under ({config:?})"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
