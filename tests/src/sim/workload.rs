//! The clients: each runs one operation at a time on a handful of keys —
//! put, get (through ReadIndex) and compare-and-swap — against the node it
//! believes leads, and moves to another node on `NotLeader` (following the
//! hint) or when the node is down.
//!
//! The retry rule keeps the history honest: a client retries the *same*
//! operation only after a definite failure (nothing was appended, another
//! entry was applied at its index, or its entry left the log it was
//! appended to — a leader overwrote it, so it was never committed). After an unknown outcome (its
//! node crashed, or it stopped waiting) the operation stays in the history
//! as unknown and the client starts a new one, with a fresh value, so one
//! operation can never take effect twice.

use std::collections::BTreeMap;

use rafter::NodeId;

use super::kv::{Key, KvInput};
use super::rng::SimRng;

/// The workload's shape; drawn per seed.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub clients: usize,
    pub keys: u8,
    /// Time between an operation's end and the next one.
    pub think_max: u64,
    /// How long a client waits for one attempt before giving up on it.
    pub attempt_timeout: u64,
    /// Pause before retrying after a definite failure.
    pub backoff_max: u64,
    /// How often a read goes to a member picked at random rather than to
    /// the node the client believes leads: a follower's read index, asked
    /// of the leader (per mille).
    pub follower_read_per_mille: u64,
}

/// What a client is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Nothing: thinking or backing off.
    Nothing,
    /// Its proposal on `node` to be applied (or overwritten).
    Proposal { node: NodeId },
    /// Its read on `node` to be answered.
    Read { node: NodeId },
}

/// One client.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: usize,
    /// The node it sends the next attempt to.
    pub guess: NodeId,
    /// The history id of its current operation.
    pub op: Option<usize>,
    /// Bumped by every attempt, wake-up and end, so that stale timers are
    /// ignored.
    pub attempt: u64,
    pub waiting: Waiting,
    /// How often it reads: some clients mostly read (and stay with the
    /// node that answers them), others mostly write.
    pub read_per_mille: u64,
}

/// Draws operations: unique put values (so every observed value names one
/// write) and CAS expectations taken from values recently written.
#[derive(Debug, Default)]
pub struct OpGenerator {
    next_value: u64,
    recent: BTreeMap<Key, Vec<u64>>,
}

impl OpGenerator {
    /// The next operation of a client that reads `read_per_mille` of the
    /// time.
    pub fn next(&mut self, rng: &mut SimRng, keys: u8, read_per_mille: u64) -> KvInput {
        let key = rng.below(u64::from(keys)) as Key;
        if rng.chance(read_per_mille) {
            return KvInput::Get { key };
        }
        let kind = rng.below(10);
        self.next_value += 1;
        let value = self.next_value;
        let recent = self.recent.entry(key).or_default();
        let input = if kind < 5 || recent.is_empty() {
            KvInput::Put { key, value }
        } else {
            let expected = if rng.chance(100) {
                None
            } else {
                Some(recent[rng.below(recent.len() as u64) as usize])
            };
            KvInput::Cas {
                key,
                expected,
                new: value,
            }
        };
        recent.push(value);
        if recent.len() > 4 {
            recent.remove(0);
        }
        input
    }
}
