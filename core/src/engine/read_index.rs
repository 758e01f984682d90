//! ReadIndex bookkeeping (dissertation §6.4): reads that arrive together
//! share one heartbeat round, numbered by `seq`; a round is confirmed when a
//! quorum has echoed its number (or a later one) in this term.

use std::collections::VecDeque;

use crate::error::ReadError;
use crate::types::NodeId;

/// Who asked for a read index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reader {
    /// A caller of this node, by the driver's id.
    Local(u64),
    /// A follower, for one of its callers (`ReadIndexRequest`).
    Remote { from: NodeId, request: u64 },
}

/// What a round's end gives back: each reader and its answer.
pub(crate) type ReadAnswers = Vec<(Reader, Result<u64, ReadError>)>;

/// Invariant: rounds in `pending` have strictly increasing `seq`, all at
/// most `seq`.
#[derive(Debug, Default)]
pub(crate) struct ReadQueue {
    /// The latest round started.
    seq: u64,
    /// Requests waiting for the next round (or for the leader to commit an
    /// entry of its term first).
    unsent: Vec<Reader>,
    /// Started rounds: (seq, read index, readers).
    pending: VecDeque<(u64, u64, Vec<Reader>)>,
}

impl ReadQueue {
    pub(crate) fn request(&mut self, reader: Reader) {
        self.unsent.push(reader);
    }

    pub(crate) fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// Starts a round for every unsent request, reading at `commit_index`.
    pub(crate) fn start_round(&mut self, commit_index: u64) {
        assert!(!self.unsent.is_empty(), "a read round needs requests");
        self.seq += 1;
        let ids = std::mem::take(&mut self.unsent);
        self.pending.push_back((self.seq, commit_index, ids));
    }

    /// Starts a round no read waits for: with lease reads, each periodic
    /// heartbeat is numbered, so that its acknowledgement dates the lease.
    pub(crate) fn start_empty_round(&mut self) {
        self.seq += 1;
    }

    /// Takes the reads waiting for a round (the lease answers them).
    pub(crate) fn take_unsent(&mut self) -> Vec<Reader> {
        std::mem::take(&mut self.unsent)
    }

    /// A quorum acknowledged rounds up to `acked_seq`: answer them.
    pub(crate) fn confirm(&mut self, acked_seq: u64, out: &mut ReadAnswers) {
        assert!(
            acked_seq <= self.seq,
            "acked read round {acked_seq} never started (at {})",
            self.seq
        );
        while let Some((seq, index, _)) = self.pending.front() {
            if *seq > acked_seq {
                break;
            }
            let index = *index;
            let (_, _, ids) = self.pending.pop_front().expect("front exists");
            out.extend(ids.into_iter().map(|reader| (reader, Ok(index))));
        }
    }

    /// Leadership is lost: every waiting read fails.
    pub(crate) fn fail_all(&mut self, error: ReadError, out: &mut ReadAnswers) {
        let pending = self.pending.drain(..).flat_map(|(_, _, ids)| ids);
        let readers: Vec<Reader> = pending.chain(self.unsent.drain(..)).collect();
        out.extend(
            readers
                .into_iter()
                .map(|reader| (reader, Err(error.clone()))),
        );
    }
}
