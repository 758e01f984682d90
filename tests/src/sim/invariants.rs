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
//!   (checked when disks lose data: crashes and truncations).
//! - **Applied prefixes**: applied entries on every node are prefixes of one
//!   sequence (same index ⇒ same term and payload).
//! - **Commit never moves back** within one incarnation of a node. Across a
//!   crash it is recomputed from the disk: the restarted commit index is
//!   max(synced hard state's commit, state machine's applied index), capped
//!   by the durable log — the engine's `Restored` rule — and every entry up
//!   to it must match the committed record.

use std::collections::BTreeMap;

use rafter::{Entry, EntryPayload, NodeId, WriteBatch};

use super::disk::Disk;

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
    /// applied[i - 1] = (term, payload) applied at index i by some node.
    applied: Vec<(u64, EntryPayload)>,
    /// Per node: the commit index last seen in this incarnation.
    commit_seen: BTreeMap<NodeId, u64>,
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
        let mut last_index = disk.log().len() as u64;
        if let Some(from) = batch.truncate_from {
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
        let mut prev_term = disk.entry(last_index).map_or(0, |e| e.term);
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
    pub fn on_commit(
        &mut self,
        node: NodeId,
        commit: u64,
        restarted: bool,
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
            let Some(term) = term_at(index) else {
                return Err(format!(
                    "node {node} committed {index} but does not hold it"
                ));
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

    /// Every committed entry is on the disks of a majority of `disks`.
    pub fn check_durable_quorum(&self, disks: &[(NodeId, &Disk)]) -> Result<(), Violation> {
        let majority = disks.len() / 2 + 1;
        for (i, &term) in self.committed.iter().enumerate() {
            let index = i as u64 + 1;
            let holders = disks
                .iter()
                .filter(|(_, disk)| disk.entry(index).is_some_and(|e| e.term == term))
                .count();
            if holders < majority {
                let who: Vec<NodeId> = disks
                    .iter()
                    .filter(|(_, disk)| disk.entry(index).is_some_and(|e| e.term == term))
                    .map(|(id, _)| *id)
                    .collect();
                return Err(format!(
                    "committed entry {term}/{index} is durable only on {who:?}, not a majority"
                ));
            }
        }
        Ok(())
    }
}
