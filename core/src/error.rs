//! The errors of the `Raft` handle: one enum per operation, each variant
//! carrying what the caller needs to act.

use std::time::Duration;

use crate::config::ConfigError;
use crate::state_machine::StateMachineError;
use crate::storage::StorageError;
use crate::types::NodeId;

/// Why a node stopped on its own: an error of its storage or state
/// machine, or a panic in any of its tasks (driver, storage, apply). Once
/// stopped, every waiting and later call returns `Stopped`; the reason is
/// published in [`crate::Metrics::fatal`] before the first of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Fatal {
    /// The log storage failed (fail-stop: no retry after a failed write).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The state machine failed.
    #[error(transparent)]
    StateMachine(#[from] StateMachineError),
    /// One of the node's tasks panicked: a bug, in Rafter or in the
    /// storage, state machine or network it was calling.
    #[error("the {task} task panicked: {message}")]
    Panicked {
        /// `"driver"`, `"storage"` or `"apply"`.
        task: &'static str,
        /// The panic's message.
        message: String,
    },
}

/// Why `propose` did not return a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// This node is not the leader. The entry was not appended; send it to
    /// `leader_hint`, at `leader_addr`, if known.
    #[error("not the leader (leader hint: {leader_hint:?} at {leader_addr:?})")]
    NotLeader {
        /// The leader this node last heard from.
        leader_hint: Option<NodeId>,
        /// That leader's address in the configuration this node knows
        /// (`Membership::nodes`); `None` if no leader is known or the
        /// configuration lacks it (this node has not yet heard of the
        /// change that added it).
        leader_addr: Option<String>,
    },
    /// `commit − applied` is over `Config::commit_apply_gap_max` (the state
    /// machine is behind), or the leader's appended but uncommitted
    /// commands are over `Config::uncommitted_bytes_max` (its followers are
    /// behind or cut off). Nothing was appended; retry later.
    #[error("too many requests: {gap} entries wait to be applied or committed")]
    TooManyRequests {
        /// The gap over its limit: entries committed and not applied, or
        /// appended and not committed.
        gap: u64,
    },
    /// The encoded command is over `Config::request_bytes_max`.
    #[error("request of {size} bytes is over the limit of {max}")]
    RequestTooLarge {
        /// The encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The command cannot be encoded: its `Serialize` impl asks for what
    /// postcard, which is not self-describing, lacks (a map or sequence of
    /// unknown length, as `#[serde(flatten)]` makes), or fails. Nothing was
    /// appended; the command type must change (see the crate docs on
    /// `StateMachine::Command`).
    #[error("command cannot be encoded: {message}")]
    Unencodable {
        /// The encoder's reason.
        message: String,
    },
    /// `propose_many` with more commands than `Config::proposal_batch_max`.
    /// Nothing was appended.
    #[error("{count} commands in one call is over the limit of {max}")]
    TooManyCommands {
        /// Commands in the call.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// No answer within `Config::propose_timeout`. The outcome is unknown:
    /// the entry may yet be committed and applied.
    #[error("proposal timed out after {0:?}; it may still be applied")]
    Timeout(Duration),
    /// The leader refused new entries: a leadership transfer is under way,
    /// or the leader is no longer in the configuration. Nothing was appended.
    #[error("proposal dropped: {reason}")]
    ProposalDropped {
        /// Why.
        reason: &'static str,
    },
    /// The entry was appended, and another entry provably replaced it: an
    /// entry of another term was applied at `index`, or a snapshot that
    /// cannot hold it was installed over it. It will never be applied.
    /// Retrying is safe.
    #[error("proposal at index {index} was overwritten by a new leader")]
    Overwritten {
        /// The index it had.
        index: u64,
    },
    /// A snapshot received from the leader was installed over `index`
    /// before this node applied the entry there: the command may or may
    /// not be in that snapshot, and its response is lost. Retrying may
    /// apply it twice: only a command the state machine deduplicates (a
    /// client session, see `Raft::propose`) is safe to retry.
    #[error(
        "outcome of the proposal at index {index} is unknown: a snapshot replaced the log there"
    )]
    Indeterminate {
        /// The index it had (for `propose_many`, the first of its commands
        /// without a response).
        index: u64,
    },
    /// The node is shut down or stopped on a fatal error (the reason is
    /// in `Metrics::fatal` by the time a call returns this).
    #[error("raft node is stopped")]
    Stopped,
    /// The proposal was forwarded to the leader (`Config::forward_proposals`)
    /// and its outcome cannot be learned here: the leader changed or did not
    /// answer within an election timeout, or the entry was applied on this
    /// node before the leader's answer arrived. As after a `Timeout`, it may
    /// or may not be applied: only a command the state machine deduplicates
    /// is safe to retry.
    #[error("proposal forwarded to leader {leader}: its outcome is unknown")]
    ForwardUnanswered {
        /// The leader it was forwarded to.
        leader: NodeId,
    },
}

/// Why a linearizable read could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// This node is not the leader; ask `leader_hint`, at `leader_addr`.
    #[error("not the leader (leader hint: {leader_hint:?} at {leader_addr:?})")]
    NotLeader {
        /// The leader this node last heard from.
        leader_hint: Option<NodeId>,
        /// That leader's address in the configuration this node knows, if
        /// known (as in [`ProposeError::NotLeader`]).
        leader_addr: Option<String>,
    },
    /// Leadership could not be confirmed by a quorum in time.
    #[error("read index not confirmed after {0:?}")]
    Timeout(Duration),
    /// The node stopped being leader before the read was confirmed; on a
    /// follower, the leader it asked changed, refused, or did not answer
    /// within an election timeout. Retry (at the leader now known).
    #[error("leadership lost before the read was confirmed")]
    LeadershipLost,
    /// The node is shut down or stopped on a fatal error (the reason is
    /// in `Metrics::fatal` by the time a call returns this).
    #[error("raft node is stopped")]
    Stopped,
}

/// Why a leadership transfer did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// Only the leader can transfer leadership.
    #[error("not the leader (leader hint: {leader_hint:?} at {leader_addr:?})")]
    NotLeader {
        /// The leader this node last heard from.
        leader_hint: Option<NodeId>,
        /// That leader's address in the configuration this node knows, if
        /// known (as in [`ProposeError::NotLeader`]).
        leader_addr: Option<String>,
    },
    /// The target is not a voter of the current configuration.
    #[error("node {0} is not a voter")]
    NotVoter(NodeId),
    /// The target did not become leader within an election timeout; the
    /// old leader resumed accepting proposals.
    #[error("transfer to {to} did not complete in time")]
    Timeout {
        /// The target.
        to: NodeId,
    },
    /// The node is shut down or stopped on a fatal error (the reason is
    /// in `Metrics::fatal` by the time a call returns this).
    #[error("raft node is stopped")]
    Stopped,
}

/// Why a membership change was refused or did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// Only the leader changes the membership.
    #[error("not the leader (leader hint: {leader_hint:?} at {leader_addr:?})")]
    NotLeader {
        /// The leader this node last heard from.
        leader_hint: Option<NodeId>,
        /// That leader's address in the configuration this node knows, if
        /// known (as in [`ProposeError::NotLeader`]).
        leader_addr: Option<String>,
    },
    /// Another change is not committed yet (or the configuration is still
    /// joint): one change at a time. Retry once it completes.
    #[error("a membership change is already in progress")]
    ChangeInProgress,
    /// The change would leave no voters.
    #[error("the change would leave no voters")]
    NoVoters,
    /// The node is not a member (add it as a learner first).
    #[error("node {0} is not a member")]
    UnknownNode(NodeId),
    /// The node is a member already.
    #[error("node {0} is already a member")]
    AlreadyMember(NodeId),
    /// A learner to promote did not catch up within
    /// `Config::learner_catchup_lag_max` entries in time.
    #[error("learner {id} is {lag} entries behind; not promoted")]
    NotCaughtUp {
        /// The learner.
        id: NodeId,
        /// How far behind the leader's log it was at the deadline.
        lag: u64,
    },
    /// The leader refused new entries (leadership transfer in progress, or
    /// it is not in the configuration).
    #[error("membership change dropped: {reason}")]
    ProposalDropped {
        /// Why.
        reason: &'static str,
    },
    /// The change is malformed.
    #[error("invalid membership change: {0}")]
    Invalid(String),
    /// The change was appended but did not commit in time; it may still.
    #[error("membership change not committed after {0:?}")]
    Timeout(Duration),
    /// The node is shut down or stopped on a fatal error (the reason is
    /// in `Metrics::fatal` by the time a call returns this).
    #[error("raft node is stopped")]
    Stopped,
}

/// Why `Raft::trigger_snapshot` or `Raft::purge_log` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompactionError {
    /// The state machine does not build snapshots (it said
    /// `SnapshotUnsupported`): the log is never purged.
    #[error("the state machine does not support snapshots")]
    SnapshotsUnsupported,
    /// A snapshot received from the leader is being installed; ask again
    /// once it is (the install purges the log itself).
    #[error("a received snapshot is being installed")]
    InstallInProgress,
    /// The driver did not take the request within `Config::propose_timeout`.
    #[error("compaction request not taken after {0:?}")]
    Timeout(Duration),
    /// The node is shut down or stopped on a fatal error (the reason is
    /// in `Metrics::fatal` by the time a call returns this).
    #[error("raft node is stopped")]
    Stopped,
}

/// Why an inbound message was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The inbox is full (`Config::inbox_msgs_max`): the message was dropped
    /// and Raft will retry.
    #[error("inbox full; message dropped")]
    InboxFull,
    /// The message is not for this node.
    #[error("message for node {to} delivered to node {me}")]
    WrongNode {
        /// The message's addressee.
        to: NodeId,
        /// This node.
        me: NodeId,
    },
    /// The message breaks a rule every message from a peer keeps
    /// ([`crate::codec::validate_message`]): dropped before the engine sees
    /// it.
    #[error("invalid message: {0}")]
    Invalid(crate::codec::DecodeError),
    /// The node is shut down or stopped on a fatal error (the reason is
    /// in `Metrics::fatal` by the time a call returns this).
    #[error("raft node is stopped")]
    Stopped,
}

/// Why a node could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Reading the durable state failed or found it inconsistent.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The state machine could not report where it is, or is ahead of the log.
    #[error(transparent)]
    StateMachine(#[from] StateMachineError),
    /// The initial membership is invalid or does not include this node.
    #[error("invalid membership: {0}")]
    Membership(String),
}
