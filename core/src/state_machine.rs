//! Boundary: the user's state machine, which applies committed commands.

use std::future::Future;

use serde::{de::DeserializeOwned, Serialize};

use crate::types::{LogId, Membership};

/// One committed entry, in log order, as the state machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed<C> {
    /// The entry's position.
    pub log_id: LogId,
    /// What it carries.
    pub payload: CommittedPayload<C>,
}

/// What a committed entry carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommittedPayload<C> {
    /// A user command; the state machine returns one response for it.
    Command(C),
    /// A leader's no-op; no response.
    Blank,
    /// A configuration change; no response.
    Membership(Membership),
}

/// Why the state machine failed. Any error stops the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateMachineError {
    /// The state machine's own storage failed.
    #[error("state machine IO failed: {0}")]
    Io(String),
    /// A command could not be decoded or broke the state machine's rules.
    #[error("state machine cannot apply entry {index}: {message}")]
    Corrupt {
        /// The entry's index.
        index: u64,
        /// What is wrong.
        message: String,
    },
}

/// The replicated state. Rafter calls it from one apply task, never
/// concurrently, with committed entries in log order.
pub trait StateMachine: Send + 'static {
    /// What clients propose. Encoded with [`crate::codec`] into the log.
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// What applying a command returns to the proposer.
    type Response: Send + 'static;

    /// The last entry whose effect is in the state (zero for a new one).
    /// Called once at start; Rafter applies from the next entry on, so a
    /// durable state machine that records this atomically with its data is
    /// never given an entry twice.
    fn applied(&mut self) -> impl Future<Output = Result<LogId, StateMachineError>> + Send;

    /// Applies `entries` (consecutive, in log order, starting right after
    /// the previous batch) and returns one response per
    /// [`CommittedPayload::Command`], in order.
    fn apply(
        &mut self,
        entries: Vec<Committed<Self::Command>>,
    ) -> impl Future<Output = Result<Vec<Self::Response>, StateMachineError>> + Send;
}
