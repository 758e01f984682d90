//! `MemRouter` / `MemNetwork`: an in-process network between nodes of one
//! test or benchmark, with switches to drop, delay and partition traffic.
//!
//! Each node gets a `MemNetwork` from [`MemRouter::network`]; once the node
//! is started its handle is registered with [`MemRouter::register`] so the
//! router can deliver to it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::error::ReceiveError;
use crate::message::Message;
use crate::network::RaftNetwork;
use crate::raft::Raft;
use crate::state_machine::StateMachine;
use crate::types::NodeId;

type Sink = Arc<dyn Fn(Message) -> Result<(), ReceiveError> + Send + Sync>;

/// Routes messages between the nodes of one process. Clones share state.
#[derive(Clone)]
pub struct MemRouter {
    inner: Arc<Mutex<RouterInner>>,
}

struct RouterInner {
    sinks: HashMap<NodeId, Sink>,
    /// Nodes cut off from everyone (both directions).
    isolated: HashSet<NodeId>,
    /// Directed links that drop everything: (from, to).
    blocked: HashSet<(NodeId, NodeId)>,
    /// Probability of dropping each message, in parts per million.
    drop_ppm: u32,
    /// Extra latency for every message, if any.
    delay: Option<Duration>,
    rng: ChaCha8Rng,
    delivered: u64,
    dropped: u64,
}

impl Default for MemRouter {
    fn default() -> Self {
        Self::new(0)
    }
}

impl MemRouter {
    /// A router whose random drops follow `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(RouterInner {
                sinks: HashMap::new(),
                isolated: HashSet::new(),
                blocked: HashSet::new(),
                drop_ppm: 0,
                delay: None,
                rng: ChaCha8Rng::seed_from_u64(seed),
                delivered: 0,
                dropped: 0,
            })),
        }
    }

    /// The network adapter for node `id`.
    pub fn network(&self, id: NodeId) -> MemNetwork {
        MemNetwork {
            id,
            router: self.clone(),
        }
    }

    /// Delivers messages addressed to `raft`'s id to it from now on
    /// (replacing an earlier registration, e.g. after a restart).
    pub fn register<SM: StateMachine>(&self, raft: &Raft<SM>) {
        let raft = raft.clone();
        self.lock()
            .sinks
            .insert(raft.id(), Arc::new(move |m| raft.receive(m)));
    }

    /// Stops delivering to `id` (a crashed node).
    pub fn unregister(&self, id: NodeId) {
        self.lock().sinks.remove(&id);
    }

    /// Cuts `id` off from every other node, both directions.
    pub fn isolate(&self, id: NodeId) {
        self.lock().isolated.insert(id);
    }

    /// Reconnects an isolated node.
    pub fn heal(&self, id: NodeId) {
        self.lock().isolated.remove(&id);
    }

    /// Drops everything sent from `from` to `to` (one direction).
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.lock().blocked.insert((from, to));
    }

    /// Reconnects everything: no isolation, no blocked links, no drops.
    pub fn heal_all(&self) {
        let mut inner = self.lock();
        inner.isolated.clear();
        inner.blocked.clear();
        inner.drop_ppm = 0;
        inner.delay = None;
    }

    /// Drops each message with probability `rate` (0.0 to 1.0).
    pub fn set_drop_rate(&self, rate: f64) {
        self.lock().drop_ppm = (rate.clamp(0.0, 1.0) * 1_000_000.0) as u32;
    }

    /// Delays every message by `delay` (None: deliver at once).
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.lock().delay = delay;
    }

    /// (delivered, dropped) message counts so far.
    pub fn counts(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.delivered, inner.dropped)
    }

    fn lock(&self) -> MutexGuard<'_, RouterInner> {
        // Held only for map lookups, never across an await; a poisoned lock
        // (a test thread panicked) leaves consistent data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn route(&self, from: NodeId, to: NodeId, messages: Vec<Message>) {
        let (sink, delay, kept) = {
            let mut inner = self.lock();
            let cut = inner.isolated.contains(&from)
                || inner.isolated.contains(&to)
                || inner.blocked.contains(&(from, to));
            let sink = inner.sinks.get(&to).cloned();
            let Some(sink) = sink.filter(|_| !cut) else {
                inner.dropped += messages.len() as u64;
                return;
            };
            let mut kept = Vec::with_capacity(messages.len());
            for message in messages {
                if inner.drop_ppm > 0 && (inner.rng.next_u32() % 1_000_000) < inner.drop_ppm {
                    inner.dropped += 1;
                } else {
                    kept.push(message);
                }
            }
            inner.delivered += kept.len() as u64;
            (sink, inner.delay, kept)
        };
        match delay {
            None => deliver(&sink, kept),
            Some(delay) => {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    deliver(&sink, kept);
                });
            }
        }
    }
}

fn deliver(sink: &Sink, messages: Vec<Message>) {
    for message in messages {
        // A full inbox drops, as a real network would; Raft retries.
        let _ = sink(message);
    }
}

/// One node's view of a [`MemRouter`].
#[derive(Clone)]
pub struct MemNetwork {
    id: NodeId,
    router: MemRouter,
}

impl RaftNetwork for MemNetwork {
    async fn send(&mut self, to: NodeId, messages: Vec<Message>) {
        self.router.route(self.id, to, messages);
    }

    async fn set_members(&mut self, _nodes: &std::collections::BTreeMap<NodeId, String>) {
        // Routing is by node id; addresses mean nothing in-process.
    }
}
