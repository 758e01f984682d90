//! Which stream a message travels on.
//!
//! Each class has its own queue, writer task and connection per peer, so a
//! large transfer in one class never holds up another: snapshot chunks
//! cannot delay appends, and neither can delay heartbeats and votes. A
//! heartbeat stuck behind one large append (a 17 MiB command takes longer
//! than an election timeout to cross a slow link) would let the followers'
//! election timers run out while the leader is alive, and the election that
//! follows overwrites the very entry being sent.
//!
//! Raft allows any reordering between messages, so moving a message to
//! another stream never affects safety; within a class, order is kept
//! (appends stay pipelined back to back).

use rafter::{Message, MessageBody};

/// A class of traffic with its own per-peer stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum StreamClass {
    /// Heartbeats, votes, `TimeoutNow`, read index requests and their
    /// responses: tiny, and what keeps leadership stable (or a follower's
    /// read waiting), so nothing bulky ever travels before them.
    Control,
    /// Appends and their responses, snapshot answers, and forwarded
    /// proposals with their answers: pipelined back to back, possibly
    /// large. A leader's answer to a forwarded batch travels here, ahead of
    /// the append that carries the batch's entries, so the follower learns
    /// where they are before any commit can cover them (on the control
    /// stream it could come after their apply, and the callers would only
    /// learn that the outcome is unknown).
    Raft,
    /// Snapshot transfer: bulky, and must not block [`StreamClass::Raft`].
    /// `MessageBody::InstallSnapshot` chunks travel here.
    Snapshot,
}

impl StreamClass {
    /// A short name for logs and stats.
    pub fn name(self) -> &'static str {
        match self {
            StreamClass::Control => "control",
            StreamClass::Raft => "raft",
            StreamClass::Snapshot => "snapshot",
        }
    }
}

/// The stream `message` goes on. `MessageBody` is `#[non_exhaustive]`, so a
/// kind added to rafter later goes on the Raft stream (ordered, and never
/// held up by snapshots) until it is given a class here.
pub fn stream_class(message: &Message) -> StreamClass {
    match &message.body {
        MessageBody::VoteRequest { .. }
        | MessageBody::VoteResponse { .. }
        | MessageBody::Heartbeat { .. }
        | MessageBody::HeartbeatResponse { .. }
        | MessageBody::TimeoutNow
        | MessageBody::ReadIndexRequest { .. }
        | MessageBody::ReadIndexResponse { .. } => StreamClass::Control,
        MessageBody::Append { .. }
        | MessageBody::AppendResponse { .. }
        | MessageBody::InstallSnapshotResponse { .. }
        | MessageBody::ForwardProposals { .. }
        | MessageBody::ForwardResponse { .. } => StreamClass::Raft,
        MessageBody::InstallSnapshot { .. } => StreamClass::Snapshot,
        _ => StreamClass::Raft,
    }
}
