//! The apply task's waiters, for simulators: what becomes of a proposal,
//! decided by the shipped code.

use crate::error::ProposeError;
use crate::types::LogId;
use crate::waiters::{Waiter, Waiters};

/// Proposals waiting for their entry on one node, each with a token of the
/// caller's (a client id, say). The same code as the apply task's waiters
/// (see `core/src/waiters.rs`): a simulator that feeds it the node's
/// applies and installs gives its clients the answers `Raft::propose`
/// would.
#[derive(Debug)]
pub struct ProposalWaiters<T> {
    waiters: Waiters<T>,
}

impl<T> Default for ProposalWaiters<T> {
    fn default() -> Self {
        Self {
            waiters: Waiters::default(),
        }
    }
}

impl<T> ProposalWaiters<T> {
    /// No waiters.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many proposals wait.
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A proposal was appended at `log_id` (one command). Register it
    /// before its entry can be applied, as the driver does.
    pub fn push(&mut self, log_id: LogId, token: T) {
        self.waiters.push(Waiter {
            index: log_id.index,
            last: log_id.index,
            term: log_id.term,
            token,
        });
    }

    /// The node applied `entry` (`is_command`: it carried a command).
    /// Returns the proposals it answers: `Ok` for the one it is (its
    /// response is the state machine's), `Overwritten` for the others at
    /// its index.
    pub fn on_applied(
        &mut self,
        entry: LogId,
        is_command: bool,
    ) -> Vec<(T, Result<(), ProposeError>)> {
        let mut answers = Vec::new();
        let found = self
            .waiters
            .take_applied(entry, is_command, |token, error| {
                answers.push((token, Err(error)))
            });
        if let Some(waiter) = found {
            answers.push((waiter.token, Ok(())));
        }
        answers
    }

    /// The node installed a received snapshot ending at `snapshot`.
    /// Returns the proposals it covers, each with its answer
    /// (`Indeterminate`, or `Overwritten` when provably replaced).
    pub fn on_snapshot_installed(&mut self, snapshot: LogId) -> Vec<(T, ProposeError)> {
        let mut answers = Vec::new();
        self.waiters
            .take_covered(snapshot, |token, error| answers.push((token, error)));
        answers
    }

    /// Removes the proposals whose token `remove` picks (callers that
    /// stopped waiting) and returns their tokens.
    pub fn remove_if(&mut self, remove: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut removed = Vec::new();
        self.waiters.remove_if(remove, |token| removed.push(token));
        removed
    }

    /// Removes every proposal (the node crashed) and returns their tokens.
    pub fn drain(&mut self) -> Vec<T> {
        self.waiters.drain().map(|w| w.token).collect()
    }
}
