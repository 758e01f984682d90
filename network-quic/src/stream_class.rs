//! Which stream a message travels on.
//!
//! Each class has its own queue, writer task and connection per peer, so a
//! large transfer in one class never holds up the other: snapshot chunks
//! cannot delay heartbeats and appends (which would trigger elections).

use rafter::{Message, MessageBody};

/// A class of traffic with its own per-peer stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum StreamClass {
    /// Votes, appends, heartbeats and their responses: small, latency
    /// sensitive, pipelined back to back.
    Raft,
    /// Snapshot transfer: bulky, and must not block [`StreamClass::Raft`].
    /// `MessageBody::InstallSnapshot` chunks travel here.
    Snapshot,
}

impl StreamClass {
    /// A short name for logs and stats.
    pub fn name(self) -> &'static str {
        match self {
            StreamClass::Raft => "raft",
            StreamClass::Snapshot => "snapshot",
        }
    }
}

/// The stream `message` goes on. `MessageBody` is `#[non_exhaustive]`, so a
/// kind added to rafter later goes on the Raft stream until it is given a
/// class here (only snapshot chunks, the large messages, need their own).
pub fn stream_class(message: &Message) -> StreamClass {
    match &message.body {
        MessageBody::VoteRequest { .. }
        | MessageBody::VoteResponse { .. }
        | MessageBody::Append { .. }
        | MessageBody::AppendResponse { .. }
        | MessageBody::Heartbeat { .. }
        | MessageBody::HeartbeatResponse { .. }
        | MessageBody::TimeoutNow
        | MessageBody::InstallSnapshotResponse { .. } => StreamClass::Raft,
        MessageBody::InstallSnapshot { .. } => StreamClass::Snapshot,
        _ => StreamClass::Raft,
    }
}
