//! Leader lease reads (dissertation §6.4.1), opt-in with
//! `Config::lease_reads`: a leader that a quorum acknowledged answers reads
//! without a heartbeat round until `sent + lease_ticks`, where `sent` is
//! the tick it sent the acknowledged round and `lease_ticks` is
//! `election_ticks_min - lease_drift_ticks`.
//!
//! Why no other leader can exist meanwhile: each acknowledging follower
//! received that round after it was sent and then, for `election_ticks_min`
//! ticks of its own clock, ignores vote requests (leader stickiness,
//! dissertation §4.2.3; a restarted node too, see `Engine::step`) and does
//! not campaign. The leader counts `lease_ticks` from the send, which by
//! the drift bound is fewer ticks than any follower counts from its
//! receipt. The exemption from stickiness is leader transfer, so a leader
//! that sent `TimeoutNow` holds no lease for the rest of its term (the
//! message may arrive, and the transferee win, long after the transfer was
//! given up).

use std::collections::VecDeque;

use super::*;

/// Invariant: `sent` has strictly increasing seqs and ticks (one entry per
/// tick: the first round sent in it).
#[derive(Debug, Default)]
pub(crate) struct Lease {
    /// `(seq, tick)`: the first heartbeat round sent in each recent tick.
    /// A round sent later in the same tick shares that tick, so the lease
    /// a quorum's acknowledgement of round `s` gives starts at the tick of
    /// the last entry with a seq of at most `s`. Entries too old to give a
    /// lease that still holds are dropped, so this holds at most
    /// `lease_ticks + 1` entries.
    sent: VecDeque<(u64, u64)>,
    /// The lease holds while the leader's tick count is below this.
    until: u64,
    /// A `TimeoutNow` went out in this term: no lease until the next term.
    transfer_started: bool,
}

impl Lease {
    /// A heartbeat round numbered `seq` goes out at `tick`.
    pub(crate) fn sent(&mut self, seq: u64, tick: u64) {
        if let Some(&(last_seq, last_tick)) = self.sent.back() {
            assert!(
                seq >= last_seq,
                "heartbeat rounds go backwards: {seq} after {last_seq}"
            );
            assert!(
                tick >= last_tick,
                "ticks go backwards: {tick} after {last_tick}"
            );
            if tick == last_tick || seq == last_seq {
                // The earlier entry starts the lease of this round too: it
                // starts no later than the truth.
                return;
            }
        }
        self.sent.push_back((seq, tick));
    }

    /// A quorum has acknowledged rounds up to `acked_seq`: the lease holds
    /// until `lease_ticks` after the tick the latest of them was sent.
    pub(crate) fn confirm(&mut self, acked_seq: u64, lease_ticks: u64) {
        let Some(position) = self.sent.iter().rposition(|&(seq, _)| seq <= acked_seq) else {
            return;
        };
        let (_, tick) = self.sent[position];
        self.until = self.until.max(tick + lease_ticks);
        // Earlier entries give shorter leases than this one.
        self.sent.drain(..position);
    }

    /// Drops the entries that can no longer give a lease reaching past
    /// `now`: keeps `sent` bounded.
    pub(crate) fn expire(&mut self, now: u64, lease_ticks: u64) {
        while let Some(&(_, tick)) = self.sent.front() {
            if tick + lease_ticks > now {
                break;
            }
            self.sent.pop_front();
        }
    }

    /// Whether the lease holds at tick `now`.
    pub(crate) fn holds(&self, now: u64) -> bool {
        !self.transfer_started && now < self.until
    }

    /// Ends the lease: the configuration changed, so past acknowledgements
    /// may not make a quorum of it.
    pub(crate) fn end(&mut self) {
        self.until = 0;
        self.sent.clear();
    }

    /// A `TimeoutNow` is sent: the transferee's election ignores
    /// stickiness, so no lease for the rest of the term.
    pub(crate) fn transfer_started(&mut self) {
        self.transfer_started = true;
        self.end();
    }
}

impl Engine {
    /// The lease length in ticks, if lease reads are on.
    pub(super) fn lease_ticks(&self) -> Option<u64> {
        let lease_ticks = self.config.lease_ticks?;
        if self.planted(PlantedBugKind::Lease) {
            // The bug: a lease that outlives every election timeout (it
            // ignores election_ticks_min and the drift bound).
            return Some(4 * self.config.election_ticks_max);
        }
        Some(lease_ticks)
    }

    /// Whether this leader may answer reads from its lease now.
    pub(super) fn lease_holds(&self) -> bool {
        assert_eq!(self.role, Role::Leader, "only a leader holds a lease");
        self.config.lease_ticks.is_some()
            && self.lead_transferee.is_none()
            && self.lease.holds(self.ticks)
    }

    /// Sends `TimeoutNow` to a transferee, ending the lease for the term.
    pub(super) fn send_timeout_now(&mut self, to: NodeId) {
        self.lease.transfer_started();
        self.send(to, MessageBody::TimeoutNow);
    }
}
