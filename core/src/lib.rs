//! Rafter: a Raft consensus engine.
//!
//! Raft itself is a pure, deterministic state machine (no IO, no clock, no
//! global randomness), driven by one async task per node. Applications
//! implement three traits — [`RaftStorage`], [`RaftNetwork`] and
//! [`StateMachine`] — and talk to a node through the cloneable [`Raft`]
//! handle. See `ARCHITECTURE.md` at the repository root for the map.
//!
//! # Commands are a storage and wire format
//!
//! [`StateMachine::Command`] is encoded with [`codec`] (postcard, behind a
//! version byte) into log entries, which live on disk and travel between
//! nodes for as long as the log keeps them, and are applied again on every
//! restart of an in-memory state machine. So a command type is a format,
//! and changing it is a migration:
//!
//! - Make it an enum from the start (a versioned enum): postcard writes a
//!   variant as its index, then its fields in order, with no names.
//! - Add new variants (or a new `V2` variant carrying a new struct) only at
//!   the end. Never reorder, remove or change the fields of a variant a log
//!   or snapshot may still hold; a field added to one is a new variant.
//! - Roll out in two steps: first every node learns to decode and apply the
//!   new variant, then clients start proposing it. A node that cannot
//!   decode a committed entry stops (fail-stop) rather than skip it.
//! - Retire a variant only once no log entry or snapshot holds it.
//! - Avoid serde attributes postcard cannot encode (`flatten`, maps of
//!   unknown length: `propose` refuses them with `Unencodable`) or decode
//!   (`untagged`, `skip_serializing_if`: postcard is not self-describing).
//!
//! Decoding a committed command does not depend on the configuration:
//! lowering `Config::request_bytes_max` refuses new large commands but
//! applies the ones already in the log.

#![deny(missing_docs)]

mod apply;
pub mod codec;
mod command_bytes;
mod config;
mod driver;
mod engine;
mod error;
mod message;
mod metrics;
mod metrics_watch;
mod network;
mod proposal_queue;
mod raft;
mod restore;
mod state_machine;
mod storage;
mod storage_task;
#[cfg(feature = "testing")]
pub mod testing;
mod types;
mod waiters;

/// The top-level README's snippets, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

pub use command_bytes::CommandBytes;
pub use config::{Config, ConfigError};
pub use error::{
    CompactionError, Fatal, MembershipError, ProposeError, ReadError, ReceiveError, StartError,
    TransferError,
};
pub use message::{
    AppendOutcome, ForwardOutcome, ForwardRefusal, Message, MessageBody, SnapshotOutcome,
};
pub use metrics::{Metrics, PeerMetrics, ReplicationState, Role};
pub use metrics_watch::{MetricsClosed, MetricsRef, MetricsWatch};
pub use network::RaftNetwork;
pub use raft::Raft;
pub use state_machine::{Committed, CommittedPayload, StateMachine, StateMachineError};
pub use storage::{InitialState, RaftStorage, StorageError, WriteBatch};
pub use types::{Entry, EntryPayload, HardState, LogId, Membership, NodeId, SnapshotMeta};
