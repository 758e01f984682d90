//! The plain data that crosses the boundaries: log entries, hard state and
//! membership. These are what `RaftStorage` stores and `RaftNetwork` carries.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command_bytes::CommandBytes;

/// A node's identity. Concrete, never zero for a real node.
pub type NodeId = u64;

/// The position of an entry in the log: its index and the term it was
/// created in. Two logs that hold the same `LogId` hold the same entry and
/// the same prefix before it (Raft §5.3, Log Matching).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct LogId {
    /// The term of the leader that created the entry.
    pub term: u64,
    /// The entry's position, starting at 1; 0 means "before the first entry".
    pub index: u64,
}

impl LogId {
    /// Builds a log id.
    pub const fn new(term: u64, index: u64) -> Self {
        Self { term, index }
    }
}

/// One entry of the replicated log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that appended this entry.
    pub term: u64,
    /// Position in the log, starting at 1.
    pub index: u64,
    /// What the entry carries.
    pub payload: EntryPayload,
}

impl Entry {
    /// The entry's log id.
    pub fn log_id(&self) -> LogId {
        LogId::new(self.term, self.index)
    }

    /// An estimate of the entry's encoded size in bytes, used for the byte
    /// budgets of append messages, reads and the in-memory cache.
    pub fn size_bytes(&self) -> u64 {
        const HEADER_BYTES: u64 = 24;
        HEADER_BYTES
            + match &self.payload {
                EntryPayload::Blank => 0,
                EntryPayload::Command(data) => data.len() as u64,
                // Ids in three sets and the address map, plus the addresses.
                EntryPayload::Membership(m) => {
                    let addresses: usize = m.nodes.values().map(String::len).sum();
                    16 * m.nodes.len() as u64 + addresses as u64 + 64
                }
            }
    }
}

/// What an entry carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by every new leader to commit entries of earlier terms
    /// (Raft §5.4.2, and §6.4 of the dissertation for ReadIndex).
    Blank,
    /// An encoded user command: small ones inline, larger ones shared, so
    /// one entry goes to every peer and to the apply task without a copy of
    /// its bytes or, when small, an atomic reference count.
    Command(CommandBytes),
    /// A configuration change: the new membership (joint while
    /// `voters_outgoing` is not empty). Boxed: configuration changes are
    /// rare, and inline they would more than double the size of every entry
    /// the log, the messages and the apply path move around.
    Membership(Box<Membership>),
}

/// What must be durable before a node answers any vote or append (Raft
/// Figure 2: "updated on stable storage before responding to RPCs").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: u64,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest index known committed. Saving it is an optimisation
    /// (restart applies faster), not a safety requirement.
    pub commit: u64,
}

/// A cluster configuration. While `voters_outgoing` is not empty the cluster
/// is in joint consensus (Raft §6): a decision needs a majority of `voters`
/// and a majority of `voters_outgoing`.
///
/// Invariant: learners are disjoint from both voter sets; every voter and
/// learner has an address in `nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Membership {
    /// The voters of the (incoming) configuration.
    pub voters: BTreeSet<NodeId>,
    /// The voters of the outgoing configuration while a joint change is in
    /// flight; empty otherwise.
    pub voters_outgoing: BTreeSet<NodeId>,
    /// Non-voting members: they receive the log but never vote and are not
    /// counted in any quorum.
    pub learners: BTreeSet<NodeId>,
    /// Every member's address, opaque to the core, meaningful to the network.
    pub nodes: BTreeMap<NodeId, String>,
}

impl Membership {
    /// A configuration whose voters are `nodes`, with no learners.
    pub fn new_voters(nodes: impl IntoIterator<Item = (NodeId, String)>) -> Self {
        let nodes: BTreeMap<NodeId, String> = nodes.into_iter().collect();
        Self {
            voters: nodes.keys().copied().collect(),
            voters_outgoing: BTreeSet::new(),
            learners: BTreeSet::new(),
            nodes,
        }
    }

    /// Whether `id` votes in either half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    /// Whether `id` is a voter (of either half) or a learner.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Whether the configuration is joint (a change is half-way through).
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// Every member that receives the log: voters of both halves and learners.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        all.extend(self.voters_outgoing.iter().copied());
        all.extend(self.learners.iter().copied());
        all
    }

    /// Checks the invariants; used at the gateways (decode, construction).
    pub fn validate(&self) -> Result<(), String> {
        if self.voters.is_empty() {
            return Err("a configuration needs at least one voter".into());
        }
        for id in self.members() {
            if id == 0 {
                return Err("node id 0 is reserved".into());
            }
            if !self.nodes.contains_key(&id) {
                return Err(format!("member {id} has no address"));
            }
        }
        for id in &self.learners {
            if self.is_voter(*id) {
                return Err(format!("node {id} is both a voter and a learner"));
            }
        }
        Ok(())
    }
}

/// What a snapshot covers: everything up to and including `last_log_id`, and
/// the configuration in force at that point.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last entry the snapshot includes.
    pub last_log_id: LogId,
    /// The membership in force at `last_log_id`.
    pub membership: Membership,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `size_bytes` budgets appends and caches: it must not undercount an
    /// entry's encoding, whatever it carries (long addresses included).
    #[test]
    fn size_bytes_covers_the_encoding() {
        let long = |id: NodeId| (id, format!("node-{id}.{}", "x".repeat(200)));
        let entries = [
            EntryPayload::Blank,
            EntryPayload::Command(CommandBytes::from(vec![7; 1000])),
            EntryPayload::Membership(Box::new(Membership::new_voters((1..=7).map(long)))),
        ];
        for payload in entries {
            let entry = Entry {
                term: u64::MAX,
                index: u64::MAX,
                payload,
            };
            let encoded = crate::codec::encode_entry(&entry).len() as u64;
            assert!(
                encoded <= entry.size_bytes(),
                "{encoded} > {} for {:?}",
                entry.size_bytes(),
                entry.payload
            );
        }
    }
}
