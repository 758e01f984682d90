//! Boundary: sending messages to peers, implemented by adapters such as
//! `rafter-quic` and by `rafter::testing::MemNetwork`.

use std::collections::BTreeMap;
use std::future::Future;

use crate::message::Message;
use crate::types::NodeId;

/// Sends Raft messages to peers. Replies are not returned here: the peer's
/// transport hands them to this node's [`crate::Raft::receive`].
///
/// The network may drop, delay, duplicate or reorder messages; Raft stays
/// correct and retries what matters. What it must not do is block: `send`
/// queues and returns, and when a peer is slow or down the implementation
/// drops messages rather than letting a queue grow without bound.
pub trait RaftNetwork: Send + 'static {
    /// Queues `messages`, all addressed to `to`, in order. Returns once they
    /// are queued (or dropped), never after waiting for the peer.
    fn send(&mut self, to: NodeId, messages: Vec<Message>) -> impl Future<Output = ()> + Send;

    /// Tells the network the current members and their addresses (as given
    /// in [`crate::Membership::nodes`]). Called at start and whenever the
    /// configuration changes; peers no longer listed can be disconnected.
    fn set_members(&mut self, nodes: &BTreeMap<NodeId, String>) -> impl Future<Output = ()> + Send;
}
