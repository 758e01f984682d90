//! The simulated network: a `RaftNetwork` that encodes every message with
//! `rafter::codec`, then drops, duplicates and delays it as the seed says,
//! and hands it, decoded with the node's size limit, to the destination's
//! current incarnation through `Raft::receive` — or loses it if a
//! partition cuts the pair when it arrives or the destination is down.
//!
//! Each copy travels as a task of its own that sleeps out its delay, so
//! messages reorder; the tasks are spawned in the order the driver sends,
//! and the runtime runs them in timer order, so a seed replays exactly.

use std::collections::BTreeMap;
use std::time::Duration;

use rafter::{codec, Message, NodeId, RaftNetwork};

use super::world::Shared;
use super::Check;
use crate::sim::trace::describe;

/// The network's behaviour, drawn per seed.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Messages dropped, per mille.
    pub drop_per_mille: u64,
    /// Messages sent twice, per mille.
    pub duplicate_per_mille: u64,
    /// One-way delay range, in microseconds.
    pub delay_micros: (u64, u64),
    /// Messages delayed far longer (reordered past many others), per mille.
    pub spike_per_mille: u64,
}

/// The network of one incarnation of one node: what it sends after the
/// incarnation crashed is lost.
pub struct SimNetwork {
    world: Shared,
    id: NodeId,
    incarnation: u64,
}

impl SimNetwork {
    /// The network of incarnation `incarnation` of node `id`.
    pub fn new(world: Shared, id: NodeId, incarnation: u64) -> Self {
        Self {
            world,
            id,
            incarnation,
        }
    }
}

impl RaftNetwork for SimNetwork {
    async fn send(&mut self, to: NodeId, messages: Vec<Message>) {
        let mut world = self.world.lock();
        if world.incarnation(self.id) != self.incarnation {
            return;
        }
        for message in messages {
            let bytes = codec::encode_message(&message);
            let net = world.network.clone();
            if world.rng.chance(net.drop_per_mille) {
                continue;
            }
            let copies = if world.rng.chance(net.duplicate_per_mille) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let (low, high) = net.delay_micros;
                let mut delay = world.rng.between(low, high);
                if world.rng.chance(net.spike_per_mille) {
                    delay += world.rng.between(high, 30 * high);
                }
                let world_handle = self.world.clone();
                let from = self.id;
                let bytes = bytes.clone();
                world.deliveries_in_flight += 1;
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_micros(delay)).await;
                    deliver(world_handle, from, to, bytes);
                });
            }
        }
    }

    async fn set_members(&mut self, _nodes: &BTreeMap<NodeId, String>) {
        // Every node is reachable by id; the address book is not needed.
    }
}

/// Hands `bytes` from `from` to `to`'s current incarnation, if the network
/// lets it through.
fn deliver(world: Shared, from: NodeId, to: NodeId, bytes: Vec<u8>) {
    let mut world = world.lock();
    world.deliveries_in_flight -= 1;
    if world.is_cut(from, to) {
        return;
    }
    let Some(raft) = world.node(to).raft.clone() else {
        return;
    };
    let limit = world.config.raft.message_bytes_max;
    match codec::decode_message(&bytes, limit) {
        Ok(message) => {
            world.note(format!("deliver {}", describe(&message)));
            // A full inbox drops it (Raft retries); a stopping node too.
            let _ = raft.receive(message);
        }
        Err(error) => world.violation(
            Check::Codec,
            format!("a message from {from} to {to} does not decode: {error}"),
        ),
    }
}
