//! The messages Raft nodes exchange. The network carries them opaquely
//! (encoded by [`crate::codec`]); only the core interprets them.

use serde::{Deserialize, Serialize};

use bytes::Bytes;

use crate::command_bytes::CommandBytes;
use crate::types::{Entry, LogId, NodeId, SnapshotMeta};

/// One Raft message from one node to another. `#[non_exhaustive]`: build
/// one with [`Message::new`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's term; for a pre-vote request, the term the sender would
    /// campaign in (it has not adopted it).
    pub term: u64,
    /// What the message says.
    pub body: MessageBody,
}

impl Message {
    /// A message from `from` to `to`, sent in `term`.
    pub fn new(from: NodeId, to: NodeId, term: u64, body: MessageBody) -> Self {
        Self {
            from,
            to,
            term,
            body,
        }
    }
}

/// The kinds of message. `#[non_exhaustive]`: new kinds will come (a
/// transport that sorts messages needs a default for them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MessageBody {
    /// A (pre-)candidate asks for a vote (Raft §5.2; Pre-Vote: dissertation §9.6).
    VoteRequest {
        /// A pre-vote changes nobody's term or vote.
        pre_vote: bool,
        /// The candidate's last entry, for the up-to-date check (§5.4.1).
        last_log_id: LogId,
        /// Set when the election was started by a leadership transfer
        /// (TimeoutNow), so voters skip the leader-lease check (§3.10).
        leader_transfer: bool,
    },
    /// The answer to a `VoteRequest`.
    VoteResponse {
        /// Echoes the request's kind.
        pre_vote: bool,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// The leader replicates entries after `prev_log_id` (Raft §5.3). With no
    /// entries it probes where the follower's log matches.
    Append {
        /// The entry just before `entries`; the follower must hold it.
        prev_log_id: LogId,
        /// Consecutive entries starting at `prev_log_id.index + 1`.
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: u64,
    },
    /// The answer to an `Append`.
    AppendResponse {
        /// Accepted or rejected, with what the leader needs to go on.
        outcome: AppendOutcome,
    },
    /// Keeps followers from starting elections, carries the commit index and
    /// confirms leadership for ReadIndex rounds (dissertation §6.4).
    Heartbeat {
        /// `min(commit, match)` of that follower, so it never commits entries
        /// it may not hold.
        commit: u64,
        /// The leader's read round; echoed in the response.
        read_seq: u64,
    },
    /// The answer to a `Heartbeat`.
    HeartbeatResponse {
        /// Echo of the heartbeat's `read_seq`.
        read_seq: u64,
    },
    /// Tells a caught-up follower to start an election at once (leadership
    /// transfer, dissertation §3.10).
    TimeoutNow,
    /// One chunk of a snapshot, sent when the follower needs entries the
    /// leader has purged (Raft §7). Chunks go one at a time, each after the
    /// previous one is acknowledged; `offset` 0 starts a transfer over.
    InstallSnapshot {
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// Byte offset of `data` in the snapshot.
        offset: u64,
        /// The chunk (empty in the final message).
        data: Bytes,
        /// Set on the last message: install it.
        done: bool,
    },
    /// The answer to an `InstallSnapshot`.
    InstallSnapshotResponse {
        /// The snapshot it is about.
        snapshot: LogId,
        /// What the follower did with it.
        outcome: SnapshotOutcome,
    },
    /// A follower asks its leader for a read index on a caller's behalf
    /// (dissertation §6.4: a follower's linearizable read), so reads spread
    /// over the cluster. Added after every earlier kind: the wire format of
    /// the others is unchanged.
    ReadIndexRequest {
        /// The follower's id for the request, echoed in the answer.
        request: u64,
    },
    /// The leader's answer to a `ReadIndexRequest`: the read index, once a
    /// quorum confirmed its leadership after the request arrived; `None` if
    /// it cannot serve reads (it is no longer leader).
    ReadIndexResponse {
        /// Echo of the request's id.
        request: u64,
        /// The read index: the follower reads once it has applied it.
        index: Option<u64>,
    },
    /// A follower or learner hands its callers' commands to its leader
    /// (`Config::forward_proposals`; etcd-raft's forwarded `MsgProp`). The
    /// leader appends them as consecutive entries, under the limits of its
    /// own proposals, or refuses them all. Added after every earlier kind.
    ForwardProposals {
        /// The follower's id for the batch, echoed in the answer.
        batch: u64,
        /// The encoded commands, in order (at least one).
        commands: Vec<CommandBytes>,
    },
    /// The leader's answer to a `ForwardProposals`.
    ForwardResponse {
        /// Echo of the batch's id.
        batch: u64,
        /// Where the commands were appended, or why not.
        outcome: ForwardOutcome,
    },
}

/// What a leader did with a `ForwardProposals`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardOutcome {
    /// Appended as consecutive entries of `first.term` from `first.index`:
    /// the follower waits for them as for its own proposals (applied there
    /// with that term, or provably overwritten).
    Appended {
        /// The first command's entry.
        first: LogId,
    },
    /// Nothing was appended.
    Refused(ForwardRefusal),
}

/// Why a leader appended none of a forwarded batch; each maps to the
/// `ProposeError` a local proposal would get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardRefusal {
    /// The receiver does not lead (any more).
    NotLeader,
    /// Its appended but uncommitted commands are over its limit.
    TooManyRequests {
        /// Entries appended and not committed.
        gap: u64,
    },
    /// A leadership transfer is under way.
    TransferInProgress,
    /// The leader is no longer in the configuration.
    LeaderNotMember,
    /// A command is over the leader's `Config::request_bytes_max`.
    RequestTooLarge {
        /// The command's size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// More commands than the leader's `Config::proposal_batch_max`.
    TooManyCommands {
        /// Commands in the batch.
        count: u64,
        /// The limit.
        max: u64,
    },
}

/// The result of an `InstallSnapshot` at the follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotOutcome {
    /// The chunk is stored; send the one at `next_offset`.
    Received {
        /// Bytes received so far.
        next_offset: u64,
    },
    /// The snapshot is installed (or the follower already had its entries
    /// committed): its log matches the leader's up to the snapshot.
    Installed,
    /// The chunk did not follow the previous one: start over.
    Restart,
}

/// The result of an `Append` at the follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// The follower's log now matches the leader's up to `match_index`, and
    /// that prefix is durable.
    Success {
        /// `prev_log_id.index + entries.len()` of the accepted append.
        match_index: u64,
    },
    /// The follower does not hold `prev_log_id`.
    Reject {
        /// The `prev_log_id.index` of the rejected append, so the leader can
        /// ignore stale rejections.
        rejected_index: u64,
        /// The follower's hint: the last entry that may match, with its term.
        /// The leader skips back to the last index of its own log whose term
        /// is at most `hint.term`, so a whole conflicting term costs one round
        /// trip instead of one per entry (§5.3, the optimisation at its end).
        hint: LogId,
    },
}

impl Message {
    /// A short name for the kind of message, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match &self.body {
            MessageBody::VoteRequest { pre_vote: true, .. } => "pre_vote",
            MessageBody::VoteRequest {
                pre_vote: false, ..
            } => "vote",
            MessageBody::VoteResponse { pre_vote: true, .. } => "pre_vote_response",
            MessageBody::VoteResponse {
                pre_vote: false, ..
            } => "vote_response",
            MessageBody::Append { .. } => "append",
            MessageBody::AppendResponse { .. } => "append_response",
            MessageBody::Heartbeat { .. } => "heartbeat",
            MessageBody::HeartbeatResponse { .. } => "heartbeat_response",
            MessageBody::TimeoutNow => "timeout_now",
            MessageBody::InstallSnapshot { .. } => "install_snapshot",
            MessageBody::InstallSnapshotResponse { .. } => "install_snapshot_response",
            MessageBody::ReadIndexRequest { .. } => "read_index_request",
            MessageBody::ReadIndexResponse { .. } => "read_index_response",
            MessageBody::ForwardProposals { .. } => "forward_proposals",
            MessageBody::ForwardResponse { .. } => "forward_response",
        }
    }
}
