//! The clients' history: every operation's invocation and how it ended.
//!
//! Times are simulated time units; every invocation and end also takes
//! the next number of one sequence, so the events of a history are totally
//! ordered by [`Stamp`] (time, then sequence) even when several happen at
//! one time: a client's next call never looks concurrent with the end of
//! its previous operation. An operation that ended `Unknown` (its
//! node crashed, or the client gave up waiting) may take effect at any
//! later time or never; the checker gives it no upper time bound. An
//! operation that `Failed` certainly had no effect (it was never appended,
//! or another entry was applied at its index) and is left out of the check;
//! so are reads with no answer, which have no effect either.

use super::kv::{KvInput, KvOutput};
use super::linearizability::Stamp;

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still waiting.
    Pending,
    /// Completed at `at` with `output`.
    Ok { at: u64, output: KvOutput },
    /// Certainly had no effect.
    Failed,
    /// May have taken effect, at any time after the invocation.
    Unknown,
}

/// One client operation.
#[derive(Debug, Clone)]
pub struct Operation {
    /// The client that issued it.
    pub client: usize,
    pub input: KvInput,
    /// Invocation time and sequence.
    pub call: Stamp,
    pub outcome: Outcome,
    /// When it ended with an answer (`Outcome::Ok`), with its sequence.
    pub ret: Option<Stamp>,
}

/// Every operation, indexed by its id (the position).
#[derive(Debug, Default)]
pub struct History {
    ops: Vec<Operation>,
    /// The sequence number of the next event (invocation or end).
    next_seq: u64,
}

impl History {
    /// Records an invocation; returns the operation's id.
    pub fn invoke(&mut self, client: usize, input: KvInput, call: u64) -> usize {
        let call = self.stamp(call);
        self.ops.push(Operation {
            client,
            input,
            call,
            outcome: Outcome::Pending,
            ret: None,
        });
        self.ops.len() - 1
    }

    /// Ends operation `id`. Invariant: an operation ends once.
    pub fn end(&mut self, id: usize, outcome: Outcome) {
        let op = &mut self.ops[id];
        assert_eq!(op.outcome, Outcome::Pending, "op {id} ended twice: {op:?}");
        assert_ne!(outcome, Outcome::Pending);
        if let Outcome::Ok { at, .. } = outcome {
            assert!(at >= op.call.time, "op {id} returned before its call");
        }
        op.outcome = outcome;
        if let Outcome::Ok { at, .. } = outcome {
            let ret = self.stamp(at);
            self.ops[id].ret = Some(ret);
        }
    }

    /// The stamp of the next event, at `time`.
    fn stamp(&mut self, time: u64) -> Stamp {
        let stamp = Stamp::new(time, self.next_seq);
        self.next_seq += 1;
        stamp
    }

    pub fn get(&self, id: usize) -> &Operation {
        &self.ops[id]
    }

    /// Ends every pending operation: writes as unknown (they may yet
    /// apply), reads as failed (a read without an answer has no effect).
    pub fn close(&mut self) {
        for op in &mut self.ops {
            if op.outcome == Outcome::Pending {
                op.outcome = if op.input.is_write() {
                    Outcome::Unknown
                } else {
                    Outcome::Failed
                };
            }
        }
    }

    pub fn ops(&self) -> &[Operation] {
        &self.ops
    }

    /// Operations completed with an answer.
    pub fn completed(&self) -> usize {
        self.ops
            .iter()
            .filter(|op| matches!(op.outcome, Outcome::Ok { .. }))
            .count()
    }
}
