//! Rafter: a Raft consensus engine.
//!
//! Raft itself is a pure, deterministic state machine (no IO, no clock, no
//! global randomness), driven by one async task per node. Applications
//! implement three traits — [`RaftStorage`], [`RaftNetwork`] and
//! [`StateMachine`] — and talk to a node through the cloneable [`Raft`]
//! handle. See `ARCHITECTURE.md` at the repository root for the map.

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

pub use command_bytes::CommandBytes;
pub use config::{Config, ConfigError};
pub use error::{
    Fatal, MembershipError, ProposeError, ReadError, ReceiveError, StartError, TransferError,
};
pub use message::{AppendOutcome, Message, MessageBody, SnapshotOutcome};
pub use metrics::{Metrics, Role};
pub use network::RaftNetwork;
pub use raft::Raft;
pub use state_machine::{Committed, CommittedPayload, StateMachine, StateMachineError};
pub use storage::{InitialState, RaftStorage, StorageError, WriteBatch};
pub use types::{Entry, EntryPayload, HardState, LogId, Membership, NodeId, SnapshotMeta};
