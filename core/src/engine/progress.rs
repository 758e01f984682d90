//! What the leader knows about one follower's log, and how it replicates to
//! it: Probe (one append at a time until the match point is found) or
//! Replicate (pipelined appends, optimistic next index, bounded window) or
//! Snapshot (the entries it needs are purged: a snapshot streams to it).

use super::inflights::Inflights;
use crate::types::LogId;

/// How the leader sends to a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProgressState {
    /// The match point is unknown: send one append, wait for its answer.
    Probe,
    /// The follower is in sync: stream appends up to the inflight window.
    Replicate,
    /// The follower needs purged entries: a snapshot is streaming to it, one
    /// chunk at a time; no appends until it is installed.
    Snapshot,
}

/// A snapshot transfer to one follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotTransfer {
    pub(crate) snapshot: LogId,
    /// Bytes the follower has acknowledged.
    pub(crate) offset: u64,
    /// Bytes of the chunk sent and not acknowledged; None while it is read.
    pub(crate) chunk_len: Option<u64>,
    /// Ticks since the follower last answered: the chunk is sent again
    /// every election timeout, and the transfer starts over past a limit.
    pub(crate) idle_ticks: u64,
}

/// One follower's replication progress.
///
/// Invariant: `match_index < next_index`.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    /// Highest index known to be durable on the follower and equal to ours.
    pub(crate) match_index: u64,
    /// The next index to send.
    pub(crate) next_index: u64,
    pub(crate) state: ProgressState,
    /// In Probe: an append is outstanding; wait for an answer or a heartbeat
    /// response before sending another.
    pub(crate) probe_sent: bool,
    pub(crate) inflights: Inflights,
    /// Heard from since the last CheckQuorum round.
    pub(crate) recent_active: bool,
    /// Highest read round the follower acknowledged in this term.
    pub(crate) read_seq_acked: u64,
    /// The commit index carried by the last append sent, so an idle leader
    /// sends one empty append when its commit index moves.
    pub(crate) commit_sent: u64,
    /// In Snapshot: the transfer.
    pub(crate) transfer: Option<SnapshotTransfer>,
    /// Answers heard from the follower (appends, heartbeats, snapshot
    /// chunks) while this progress lives: the driver stamps a time on each
    /// change for `PeerMetrics::last_ack`. Never decreases.
    pub(crate) acks: u64,
}

impl Progress {
    pub(crate) fn new(next_index: u64, inflights: Inflights) -> Self {
        assert!(next_index > 0, "next index starts at 1");
        Self {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights,
            recent_active: false,
            read_seq_acked: 0,
            commit_sent: 0,
            transfer: None,
            acks: 0,
        }
    }

    /// The follower answered: it is active (CheckQuorum), and one more
    /// answer is counted.
    pub(crate) fn heard(&mut self) {
        self.recent_active = true;
        self.acks += 1;
    }

    /// Whether the leader must hold appends to this follower for now.
    pub(crate) fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot => true,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.transfer = None;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.transfer = None;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// Starts streaming `snapshot`.
    pub(crate) fn become_snapshot(&mut self, snapshot: LogId) {
        self.state = ProgressState::Snapshot;
        self.probe_sent = false;
        self.inflights.reset();
        self.transfer = Some(SnapshotTransfer {
            snapshot,
            offset: 0,
            chunk_len: None,
            idle_ticks: 0,
        });
    }

    /// The follower installed (or already had) `snapshot`: resume from there.
    pub(crate) fn on_snapshot_installed(&mut self, snapshot: LogId) {
        self.match_index = self.match_index.max(snapshot.index);
        self.become_probe();
    }

    /// Records an append sent with entries up to `last_index` (or none).
    pub(crate) fn on_append_sent(&mut self, last_index: Option<u64>, bytes: u64) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => unreachable!("no appends while a snapshot streams"),
            ProgressState::Replicate => {
                if let Some(last) = last_index {
                    // Optimistic: assume it will be accepted and go on.
                    self.next_index = last + 1;
                    self.inflights.add(last, bytes);
                }
            }
        }
        debug_assert!(self.match_index < self.next_index);
    }

    /// The follower acknowledged `index`. Returns whether `match_index` grew.
    pub(crate) fn on_ack(&mut self, index: u64) -> bool {
        let grew = index > self.match_index;
        if grew {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        self.inflights.free_up_to(index);
        grew
    }

    /// The follower rejected the append whose previous index was `rejected`;
    /// the leader computed `probe_index` (the last index that may match) from
    /// the follower's hint. Returns false for a stale rejection.
    pub(crate) fn on_reject(&mut self, rejected: u64, probe_index: u64) -> bool {
        match self.state {
            // A rejection of an append sent before the snapshot started.
            ProgressState::Snapshot => return false,
            ProgressState::Replicate => {
                // Acknowledged already, or a rejection of an append we
                // superseded: stale.
                if rejected <= self.match_index {
                    return false;
                }
                // Everything after the match point is in doubt: probe from
                // there (the window's other messages will be rejected too).
                self.become_probe();
            }
            ProgressState::Probe => {
                if rejected + 1 != self.next_index {
                    return false;
                }
                self.next_index = (probe_index + 1).min(rejected).max(self.match_index + 1);
                self.probe_sent = false;
            }
        }
        debug_assert!(self.match_index < self.next_index);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress() -> Progress {
        Progress::new(11, Inflights::new(2, u64::MAX))
    }

    #[test]
    fn probe_sends_one_at_a_time_and_replicate_fills_the_window() {
        let mut p = progress();
        assert!(!p.is_paused());
        p.on_append_sent(Some(12), 10);
        assert!(p.is_paused(), "probe waits for the answer");
        assert!(p.on_ack(12));
        p.become_replicate();
        assert_eq!(p.next_index, 13);
        p.on_append_sent(Some(15), 10);
        assert_eq!(p.next_index, 16, "optimistic next");
        p.on_append_sent(Some(18), 10);
        assert!(p.is_paused(), "window of 2 is full");
        p.on_ack(15);
        assert!(!p.is_paused());
    }

    #[test]
    fn rejections_back_off_with_the_hint_and_stale_ones_are_ignored() {
        let mut p = progress();
        p.on_append_sent(None, 0);
        // Rejected prev index 10, hint says the follower may match up to 4.
        assert!(p.on_reject(10, 4));
        assert_eq!(p.next_index, 5);
        assert!(!p.on_reject(10, 2), "stale: we already moved to 5");
        p.on_ack(4);
        p.become_replicate();
        p.on_append_sent(Some(9), 10);
        assert!(!p.on_reject(3, 0), "at or below match is stale");
        assert!(p.on_reject(6, 4));
        assert_eq!(p.state, ProgressState::Probe);
        assert_eq!(p.next_index, 5);
    }
}
