//! Persistence and sending: the one storage write in flight, and messages gated
//! on it (Raft Figure 2: votes and acknowledgements only once durable).

use super::*;

impl Engine {
    pub(super) fn hard_state_dirty(&self) -> bool {
        self.term != self.hard_state_handed.term || self.vote != self.hard_state_handed.vote
    }

    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.out.messages.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    /// Sends `body` once everything this engine holds now is durable: tags
    /// it with the write that will carry (or already carries) that state.
    pub(super) fn send_durable(&mut self, to: NodeId, body: MessageBody) {
        let msg = Message {
            from: self.id,
            to,
            term: self.term,
            body,
        };
        let after = if self.log.has_unhanded() || self.hard_state_dirty() {
            Some(self.write_next_id)
        } else {
            self.write_in_flight.map(|w| w.id)
        };
        match after {
            Some(write_id) => self.out.messages_after_write.push((write_id, msg)),
            None => self.out.messages.push(msg),
        }
    }

    pub(super) fn maybe_issue_write(&mut self) {
        if self.write_in_flight.is_some() {
            return;
        }
        let hard_state = self.hard_state();
        if !self.log.has_unhanded() && hard_state == self.hard_state_handed {
            return;
        }
        let must_sync = self.log.has_unhanded() || self.hard_state_dirty();
        // After installing a snapshot over another history: the truncation
        // alone, the purge right after it, and the entries (which follow
        // the purge point) in the next write. Storage runs jobs in order.
        let (truncate_from, entries) = if self.purge_after_truncation.is_some() {
            (self.log.take_truncation(), Vec::new())
        } else {
            self.log.take_unhanded()
        };
        let id = self.write_next_id;
        self.write_next_id += 1;
        let last = self.log.last_log_id();
        let changed = hard_state != self.hard_state_handed;
        self.hard_state_handed = hard_state;
        self.write_in_flight = Some(WriteInFlight {
            id,
            last,
            hard_state,
        });
        if truncate_from.is_some() {
            self.out.purge = self.purge_after_truncation.take().or(self.out.purge);
        }
        let batch = WriteBatch {
            truncate_from,
            entries,
            hard_state: changed.then_some(hard_state),
            must_sync,
        };
        self.out.write = Some(Write { id, batch });
    }
}
