//! The simulated network: every message gets a delivery time drawn from the
//! seeded RNG (so messages reorder), may be dropped or duplicated, and is
//! lost if its link is cut when it is sent or when it arrives.
//!
//! Partitions are sets of cut directed links: a symmetric partition cuts
//! both directions between two groups, an asymmetric one only one way
//! (a node that can send but not hear, or the reverse); flapping is a
//! partition the fault schedule cuts and heals over and over.

use std::collections::BTreeSet;

use rafter::{Message, NodeId};

use super::rng::SimRng;

/// How hostile the network is; chosen per seed.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Per-mille chance that a message is lost.
    pub drop_per_mille: u64,
    /// Per-mille chance that a message is delivered twice.
    pub duplicate_per_mille: u64,
    /// Delivery delay range, in time units.
    pub delay_min: u64,
    pub delay_max: u64,
    /// Per-mille chance that a message is held up to `spike_delay_max`.
    pub spike_per_mille: u64,
    pub spike_delay_max: u64,
}

/// The links and the message fate.
#[derive(Debug)]
pub struct Network {
    pub config: NetworkConfig,
    /// Cut directed links (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl Network {
    pub fn new(config: NetworkConfig) -> Self {
        Self {
            config,
            cut: BTreeSet::new(),
        }
    }

    /// The delivery times of `message` sent at `now`: none (dropped), one,
    /// or two (duplicated).
    pub fn send(&self, now: u64, message: &Message, rng: &mut SimRng) -> Vec<u64> {
        if self.is_cut(message.from, message.to) || rng.chance(self.config.drop_per_mille) {
            return Vec::new();
        }
        let copies = if rng.chance(self.config.duplicate_per_mille) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                let delay = if rng.chance(self.config.spike_per_mille) {
                    rng.between(self.config.delay_max, self.config.spike_delay_max)
                } else {
                    rng.between(self.config.delay_min, self.config.delay_max)
                };
                now + delay
            })
            .collect()
    }

    /// Whether messages from `from` to `to` are lost.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Cuts every link from a node of `a` to a node of `b`, and back if
    /// `both_ways`.
    pub fn partition(&mut self, a: &BTreeSet<NodeId>, b: &BTreeSet<NodeId>, both_ways: bool) {
        for &x in a {
            for &y in b {
                if x != y {
                    self.cut.insert((x, y));
                    if both_ways {
                        self.cut.insert((y, x));
                    }
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// The cut links, for the trace.
    pub fn cut_links(&self) -> &BTreeSet<(NodeId, NodeId)> {
        &self.cut
    }
}
