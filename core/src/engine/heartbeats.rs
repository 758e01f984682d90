//! Heartbeats, and the ReadIndex rounds they carry (dissertation §6.4).

use super::read_index::ReadAnswers;
use super::*;

impl Engine {
    pub(super) fn broadcast_heartbeat(&mut self) {
        let committed = self.log.committed();
        let read_seq = self.reads.seq();
        if self.config.lease_ticks.is_some() {
            self.lease.sent(read_seq, self.ticks);
        }
        let peers: Vec<(NodeId, u64)> = self
            .progress
            .iter()
            .map(|(&id, p)| (id, p.match_index))
            .collect();
        for (peer, match_index) in peers {
            self.send(
                peer,
                MessageBody::Heartbeat {
                    commit: committed.min(match_index),
                    read_seq,
                },
            );
        }
    }

    pub(super) fn handle_heartbeat(&mut self, from: NodeId, commit: u64, read_seq: u64) {
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        }
        self.leader = Some(from);
        self.election_elapsed = 0;
        // The leader sends min(commit, our match), so this never commits an
        // entry we do not hold.
        let commit = commit.min(self.log.last_index());
        self.log.commit_to(commit.max(self.log.committed()));
        self.send(from, MessageBody::HeartbeatResponse { read_seq });
    }

    pub(super) fn handle_heartbeat_response(&mut self, from: NodeId, read_seq: u64) {
        if self.role != Role::Leader {
            return;
        }
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.heard();
        progress.read_seq_acked = progress.read_seq_acked.max(read_seq);
        // A lost probe, or lost acks of a full window, must not stall the
        // follower forever: the follower is alive, so let one append through.
        // If appends were lost it rejects it and the leader probes again.
        progress.probe_sent = false;
        if progress.state == ProgressState::Replicate && progress.inflights.is_full() {
            progress.inflights.free_first();
        }
        // The last appends to a lagging follower in Replicate may have been
        // lost with nothing new to send after them, so nothing would resend
        // them. Ask about the end of what we sent: an empty append at
        // next - 1, which the follower rejects if it lacks it, sending it back
        // to Probe (etcd sends an append on such a response too).
        let lag_prev = (progress.state == ProgressState::Replicate
            && progress.match_index < self.log.last_index())
        .then(|| progress.next_index - 1);
        if let Some(prev_index) = lag_prev {
            if let Some(prev_term) = self.log.term_at(prev_index) {
                let commit = self.log.committed();
                self.send(
                    from,
                    MessageBody::Append {
                        prev_log_id: LogId::new(prev_term, prev_index),
                        entries: Vec::new(),
                        commit,
                    },
                );
            }
        }
        self.confirm_reads();
    }

    pub(super) fn committed_in_current_term(&self) -> bool {
        self.log.term_at(self.log.committed()) == Some(self.term)
    }

    pub(super) fn flush_reads(&mut self) {
        if self.reads.has_unsent() && self.committed_in_current_term() && self.lease_holds() {
            // No other leader can exist while the lease holds (`lease.rs`),
            // so the commit index is the read index without a round.
            let committed = self.log.committed();
            let answers: ReadAnswers = self
                .reads
                .take_unsent()
                .into_iter()
                .map(|reader| (reader, Ok(committed)))
                .collect();
            self.lease_reads_served += answers.len() as u64;
            self.answer_reads(answers);
            return;
        }
        if self.reads.has_unsent() && self.committed_in_current_term() {
            self.reads.start_round(self.log.committed());
            if self.planted(PlantedBugKind::Read) {
                // The bug: answer on the leader's belief alone.
                let seq = self.reads.seq();
                let mut answers = Vec::new();
                self.reads.confirm(seq, &mut answers);
                self.answer_reads(answers);
            }
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
            self.confirm_reads();
        }
    }

    pub(super) fn confirm_reads(&mut self) {
        let progress = &self.progress;
        let (id, seq) = (self.id, self.reads.seq());
        let acked = quorum::committed_index(self.membership(), |voter| {
            if voter == id {
                seq
            } else {
                progress.get(&voter).map_or(0, |p| p.read_seq_acked)
            }
        });
        if let Some(lease_ticks) = self.lease_ticks() {
            self.lease.confirm(acked, lease_ticks);
        }
        let mut answers = Vec::new();
        self.reads.confirm(acked, &mut answers);
        self.answer_reads(answers);
    }
}
