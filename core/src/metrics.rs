//! What a node reports about itself, published on a `watch` channel.

use std::collections::BTreeMap;

use std::any::Any;

use tokio::sync::watch;

use crate::error::Fatal;
use crate::types::{Membership, NodeId};

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Role {
    /// Follows a leader (or waits for one).
    #[default]
    Follower,
    /// Asking for pre-votes; has not changed its term.
    PreCandidate,
    /// Asking for votes in a new term.
    Candidate,
    /// Leads the cluster.
    Leader,
    /// A non-voting member.
    Learner,
}

/// How the leader replicates to one peer (etcd's progress states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum ReplicationState {
    /// The match point is unknown: one append at a time until it is found.
    #[default]
    Probe,
    /// In sync: appends stream, up to the inflight window.
    Replicate,
    /// The peer needs purged entries: a snapshot streams to it.
    Snapshot,
}

/// What the leader knows of one peer's replication.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PeerMetrics {
    /// How the leader sends to it.
    pub state: ReplicationState,
    /// Highest index known durable on the peer and equal to the leader's.
    /// Invariant: `match_index < next_index`.
    pub match_index: u64,
    /// The next index the leader sends it.
    pub next_index: u64,
    /// When the leader last heard an answer from it (an append, heartbeat
    /// or snapshot chunk acknowledged), to within one driver turn; `None`
    /// if not since this node became leader. A `std` instant: compare it
    /// with `Instant::now()` for the time since. Serialized (feature
    /// `serde`) as `last_ack_ms_ago`, the milliseconds from it to the
    /// serialization.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "last_ack_ms_ago", serialize_with = "serialize_ms_ago")
    )]
    pub last_ack: Option<std::time::Instant>,
}

/// A snapshot of a node's state. Published after every driver turn that
/// changed it; read with [`crate::Raft::metrics`] or [`crate::Raft::status`].
///
/// `#[non_exhaustive]`: fields will be added. With the `serde` feature it
/// is `Serialize` (for exporters that speak JSON), `fatal` as its message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Metrics {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of in `term`.
    pub leader: Option<NodeId>,
    /// Highest index known committed.
    pub commit_index: u64,
    /// Highest index applied to the state machine.
    pub applied_index: u64,
    /// Callers of `propose` waiting for their entry to be applied (a caller
    /// that timed out is no longer counted).
    pub proposals_waiting: usize,
    /// Proposal batches this node forwarded to a leader since it started
    /// (`Config::forward_proposals`; one message each).
    pub forwarded_batches: u64,
    /// Commands in those batches.
    pub forwarded_commands: u64,
    /// Last index in the log (durable or not).
    pub last_log_index: u64,
    /// Last index known durable.
    pub persisted_index: u64,
    /// Last index covered by a snapshot (0 if none).
    pub snapshot_index: u64,
    /// Last index purged from the log (0 if none): entries up to it are
    /// only in the snapshot. Invariant: `purged_index <= snapshot_index`.
    pub purged_index: u64,
    /// The configuration in force (the latest appended).
    pub membership: Membership,
    /// The index of the entry holding `membership`; it is committed once
    /// `commit_index` reaches it.
    pub membership_index: u64,
    /// On the leader: each peer's match index (the same as in `peers`,
    /// kept for the callers that need only that).
    pub replication: BTreeMap<NodeId, u64>,
    /// On the leader: each peer's replication state, match and next index,
    /// and when it last answered. Empty on other roles.
    pub peers: BTreeMap<NodeId, PeerMetrics>,
    /// Set when the node stopped on an error.
    #[cfg_attr(feature = "serde", serde(serialize_with = "serialize_display"))]
    pub fatal: Option<Fatal>,
    /// Whether the node has stopped (shutdown or fatal).
    pub stopped: bool,
}

#[cfg(feature = "serde")]
fn serialize_ms_ago<S: serde::Serializer>(
    at: &Option<std::time::Instant>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let ms = at.map(|at| at.elapsed().as_millis().min(u128::from(u64::MAX)) as u64);
    serde::Serialize::serialize(&ms, serializer)
}

#[cfg(feature = "serde")]
fn serialize_display<S: serde::Serializer>(
    fatal: &Option<Fatal>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&fatal.as_ref().map(ToString::to_string), serializer)
}

impl Metrics {
    /// The address of [`Metrics::leader`] in [`Metrics::membership`], if
    /// both are known.
    pub fn leader_addr(&self) -> Option<&str> {
        let leader = self.leader?;
        self.membership.nodes.get(&leader).map(String::as_str)
    }
}

/// Marks the node stopped on `fatal` (the first fatal error wins). Called by
/// the task that fails before any caller is answered `Stopped`, so a caller
/// that gets `Stopped` finds the reason in the metrics.
pub(crate) fn publish_fatal(metrics: &watch::Sender<Metrics>, fatal: Fatal) {
    metrics.send_modify(|m| {
        m.stopped = true;
        if m.fatal.is_none() {
            m.fatal = Some(fatal);
        }
    });
}

/// The fatal error of a task that panicked with `payload`.
pub(crate) fn panicked(task: &'static str, payload: Box<dyn Any + Send>) -> Fatal {
    let message = if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    };
    Fatal::Panicked { task, message }
}
