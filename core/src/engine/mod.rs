//! The Raft state machine itself: pure and deterministic.
//!
//! The [`Engine`] takes inputs — [`Engine::tick`], [`Engine::step`] (a
//! message), [`Engine::propose`], [`Engine::read_index`],
//! [`Engine::transfer_leader`], and the driver's reports
//! [`Engine::on_write_done`] and [`Engine::on_loaded`] — and accumulates
//! [`Actions`], which the driver takes once per turn with
//! [`Engine::take_actions`]. It owns no IO, no clock (time is ticks) and no
//! global randomness (a seeded RNG), so the simulator runs exactly this code.
//!
//! Rule numbers in comments refer to the Raft paper ("In Search of an
//! Understandable Consensus Algorithm", extended version) and Ongaro's
//! dissertation ("Consensus: Bridging Theory and Practice").

mod actions;
pub(crate) mod config_change;
mod inflights;
pub(crate) mod log;
mod progress;
mod quorum;
mod read_index;
mod uncommitted;

use std::collections::{BTreeMap, BTreeSet};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

pub(crate) use actions::{Actions, SnapshotRead, SnapshotReceive, Write};
use log::{Missing, RaftLog};
use progress::{Progress, ProgressState};
use quorum::VoteResult;
use read_index::ReadQueue;
use uncommitted::Uncommitted;

use crate::config::Config;
use crate::error::{MembershipError, ProposeError, ReadError, TransferError};
use crate::message::{AppendOutcome, Message, MessageBody, SnapshotOutcome};
use crate::metrics::Role;
use crate::state_machine::StateMachineError;
use crate::storage::WriteBatch;
use crate::types::{Entry, EntryPayload, HardState, LogId, Membership, NodeId, SnapshotMeta};

use bytes::Bytes;

/// The limits the engine needs, in ticks and bytes.
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig {
    pub(crate) heartbeat_ticks: u64,
    pub(crate) election_ticks_min: u64,
    pub(crate) election_ticks_max: u64,
    pub(crate) inflight_msgs_max: usize,
    pub(crate) append_bytes_max: u64,
    pub(crate) log_cache_bytes_max: u64,
    /// Bytes of committed entries handed to the apply task per turn.
    pub(crate) apply_bytes_max: u64,
    pub(crate) rng_seed: u64,
    /// Build a snapshot after this many entries applied since the last (0:
    /// never).
    pub(crate) snapshot_interval_entries: u64,
    /// Entries kept in the log behind a snapshot.
    pub(crate) snapshot_trailing_entries: u64,
    /// `Config::uncommitted_bytes_max`.
    pub(crate) uncommitted_bytes_max: u64,
    /// A deliberately broken rule, so the simulator can prove it catches it.
    /// Only exists with the `planted-bugs` feature: other builds, `testing`
    /// ones included, carry no trace of it.
    #[cfg(feature = "planted-bugs")]
    pub(crate) planted_bug: Option<crate::testing::PlantedBug>,
}

impl EngineConfig {
    pub(crate) fn from_config(config: &Config) -> Self {
        Self {
            heartbeat_ticks: config.heartbeat_ticks,
            election_ticks_min: config.election_ticks_min,
            election_ticks_max: config.election_ticks_max,
            inflight_msgs_max: config.inflight_msgs_max,
            append_bytes_max: config.append_bytes_max,
            log_cache_bytes_max: config.log_cache_bytes_max,
            apply_bytes_max: config.append_bytes_max.max(1 << 20),
            rng_seed: config.rng_seed,
            snapshot_interval_entries: config.snapshot_interval_entries,
            snapshot_trailing_entries: config.snapshot_trailing_entries,
            uncommitted_bytes_max: config.uncommitted_bytes_max,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }
}

/// What the engine starts from: the durable state found by the driver.
#[derive(Debug, Clone)]
pub(crate) struct Restored {
    pub(crate) hard_state: HardState,
    /// The last entry purged from the log (covered by a snapshot).
    pub(crate) purged: LogId,
    /// The latest snapshot the state machine holds (zero if none).
    pub(crate) snapshot: LogId,
    pub(crate) last: LogId,
    /// `(first index, term)` runs over `purged.index + 1 ..= last.index`.
    pub(crate) term_runs: Vec<(u64, u64)>,
    /// Membership entries in the log (and the snapshot's, at its index),
    /// oldest first; the last one is in force. Never empty.
    pub(crate) memberships: Vec<(u64, Membership)>,
    /// The state machine's applied index.
    pub(crate) applied: u64,
}

/// One Raft node's protocol state.
pub(crate) struct Engine {
    id: NodeId,
    config: EngineConfig,
    rng: ChaCha8Rng,

    term: u64,
    vote: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    log: RaftLog,
    /// Invariant: not empty; indexes increase; the last is in force.
    memberships: Vec<(u64, Membership)>,
    /// Bumped whenever the configuration in force may have changed, so the
    /// driver compares configurations only then, not every turn.
    membership_version: u64,

    /// Leader only: every other member's progress.
    progress: BTreeMap<NodeId, Progress>,
    /// (Pre-)candidate only: votes received.
    votes: BTreeMap<NodeId, bool>,

    election_elapsed: u64,
    heartbeat_elapsed: u64,
    /// Invariant: within `election_ticks_min..=election_ticks_max`.
    election_timeout: u64,
    lead_transferee: Option<NodeId>,
    transfer_elapsed: u64,
    /// Leader only: command bytes appended in this term, not yet committed.
    /// Invariant: empty unless leader.
    uncommitted: Uncommitted,
    reads: ReadQueue,

    /// The (term, vote, commit) last given to storage.
    hard_state_handed: HardState,
    write_next_id: u64,
    /// Invariant: at most one write in flight.
    write_in_flight: Option<WriteInFlight>,
    load_in_flight: bool,
    /// The latest snapshot the state machine holds.
    snapshot: LogId,
    /// The apply task's applied index, as last reported.
    applied: u64,
    /// A snapshot build is under way.
    snapshot_building: bool,
    /// The state machine cannot build snapshots: never purge.
    snapshots_unsupported: bool,
    /// Follower: the snapshot being received and the next offset expected.
    receiving: Option<(LogId, u64)>,
    /// Follower: a received snapshot is being installed. Invariant: while
    /// set, no committed entry is handed to apply (the install would
    /// overwrite what they did), and none handed before reaches past the
    /// snapshot (`on_snapshot_chunk_stored` checks).
    installing: bool,
    /// Follower: the purge of an installed snapshot whose log held another
    /// history after it; it goes out with the write that truncates that
    /// history. Invariant: set only while the log has a truncation pending.
    purge_after_truncation: Option<LogId>,
    out: Actions,
}

#[derive(Debug, Clone, Copy)]
struct WriteInFlight {
    id: u64,
    last: LogId,
    hard_state: HardState,
}

impl Engine {
    pub(crate) fn new(id: NodeId, config: EngineConfig, restored: Restored) -> Self {
        assert!(id != 0, "node id 0 is reserved");
        assert!(
            !restored.memberships.is_empty(),
            "a node needs a membership"
        );
        let log = RaftLog::new(
            restored.purged,
            restored.last,
            restored.term_runs,
            restored.hard_state.commit,
            restored.applied,
            config.log_cache_bytes_max,
        );
        let mut rng =
            ChaCha8Rng::seed_from_u64(config.rng_seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let election_timeout = random_timeout(&mut rng, &config);
        let mut engine = Self {
            id,
            config,
            rng,
            term: restored.hard_state.term,
            vote: restored.hard_state.vote,
            role: Role::Follower,
            leader: None,
            log,
            memberships: restored.memberships,
            membership_version: 0,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            election_timeout,
            lead_transferee: None,
            uncommitted: Uncommitted::default(),
            purge_after_truncation: None,
            transfer_elapsed: 0,
            reads: ReadQueue::default(),
            hard_state_handed: HardState {
                commit: 0,
                ..restored.hard_state
            },
            write_next_id: 1,
            write_in_flight: None,
            load_in_flight: false,
            snapshot: restored.snapshot,
            applied: restored.applied,
            snapshot_building: false,
            snapshots_unsupported: false,
            receiving: None,
            installing: false,
            out: Actions::default(),
        };
        engine.hard_state_handed.commit = engine.log.committed();
        engine.out.members = Some(engine.membership().nodes.clone());
        engine.check_invariants();
        engine
    }

    // ----- accessors (for the driver's metrics and for tests) -----

    pub(crate) fn id(&self) -> NodeId {
        self.id
    }
    pub(crate) fn term(&self) -> u64 {
        self.term
    }
    #[cfg(test)]
    pub(crate) fn vote(&self) -> Option<NodeId> {
        self.vote
    }
    pub(crate) fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// The role as reported: a follower that is not a voter is a learner.
    pub(crate) fn role(&self) -> Role {
        match self.role {
            Role::Follower if !self.membership().is_voter(self.id) => Role::Learner,
            role => role,
        }
    }
    #[cfg(test)]
    pub(crate) fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
    pub(crate) fn commit_index(&self) -> u64 {
        self.log.committed()
    }
    pub(crate) fn persisted_index(&self) -> u64 {
        self.log.persisted()
    }
    pub(crate) fn last_log_id(&self) -> LogId {
        self.log.last_log_id()
    }
    pub(crate) fn snapshot_index(&self) -> u64 {
        self.snapshot.index
    }
    pub(crate) fn membership(&self) -> &Membership {
        &self
            .memberships
            .last()
            .expect("memberships is never empty")
            .1
    }
    /// Changes whenever the configuration in force may have changed.
    pub(crate) fn membership_version(&self) -> u64 {
        self.membership_version
    }
    /// The index of the entry that holds the configuration in force.
    pub(crate) fn membership_index(&self) -> u64 {
        self.memberships
            .last()
            .expect("memberships is never empty")
            .0
    }
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn term_at(&self, index: u64) -> Option<u64> {
        self.log.term_at(index)
    }
    /// Whether `replication` (as published) still matches the progress.
    pub(crate) fn replication_equals(&self, replication: &BTreeMap<NodeId, u64>) -> bool {
        replication.len() == self.progress.len()
            && self
                .progress
                .iter()
                .zip(replication)
                .all(|((a, p), (b, m))| a == b && p.match_index == *m)
    }
    /// On the leader, each peer's match index.
    pub(crate) fn replication(&self) -> BTreeMap<NodeId, u64> {
        self.progress
            .iter()
            .map(|(&id, p)| (id, p.match_index))
            .collect()
    }
    #[cfg(test)]
    pub(crate) fn lead_transferee(&self) -> Option<NodeId> {
        self.lead_transferee
    }
    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed(),
        }
    }

    /// Whether `bug` is planted (always false, and compiled to nothing,
    /// without the `planted-bugs` feature).
    #[allow(unused_variables)]
    #[inline(always)]
    fn planted(&self, bug: PlantedBugKind) -> bool {
        #[cfg(feature = "planted-bugs")]
        {
            use crate::testing::PlantedBug as B;
            // In every binary that has the planted branches, and in no
            // other: `.ci/run` looks for it.
            std::hint::black_box(PLANTED_BUGS_MARKER);
            matches!(
                (self.config.planted_bug, bug),
                (
                    Some(B::CommitEarlierTermByCounting),
                    PlantedBugKind::Figure8
                ) | (Some(B::VoteBeforePersisting), PlantedBugKind::Vote)
                    | (Some(B::AckBeforePersisting), PlantedBugKind::Ack)
                    | (Some(B::ReadWithoutQuorum), PlantedBugKind::Read)
            )
        }
        #[cfg(not(feature = "planted-bugs"))]
        false
    }

    // ----- inputs -----

    /// One tick of the logical clock.
    pub(crate) fn tick(&mut self) {
        self.election_elapsed += 1;
        if self.role == Role::Leader {
            self.tick_leader();
        } else if self.election_elapsed >= self.election_timeout && self.can_campaign() {
            tracing::debug!(id = self.id, term = self.term, "election timeout");
            self.campaign_pre_vote();
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        // A snapshot chunk not acknowledged within an election timeout is
        // sent again (the chunk or its answer was lost); a transfer whose
        // follower stays quiet much longer starts over.
        let resend_every = self.config.election_ticks_min;
        let patience = 4 * self.config.election_ticks_max;
        for (peer, progress) in self.progress.iter_mut() {
            if let Some(transfer) = progress.transfer.as_mut() {
                transfer.idle_ticks += 1;
                if transfer.idle_ticks % resend_every == 0 && transfer.chunk_len.is_some() {
                    tracing::debug!(
                        id = self.id,
                        peer,
                        offset = transfer.offset,
                        "snapshot chunk unanswered; sending it again"
                    );
                    transfer.chunk_len = None;
                    self.out.snapshot_reads.push(SnapshotRead {
                        to: *peer,
                        snapshot: transfer.snapshot,
                        offset: transfer.offset,
                    });
                }
                if transfer.idle_ticks > patience {
                    tracing::info!(
                        id = self.id,
                        peer,
                        "snapshot transfer timed out; starting over"
                    );
                    progress.become_probe();
                }
            }
        }
        if self.lead_transferee.is_some() {
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.config.election_ticks_min {
                tracing::info!(id = self.id, to = ?self.lead_transferee, "leadership transfer aborted");
                self.lead_transferee = None;
            }
        }
        if self.election_elapsed >= self.config.election_ticks_min {
            self.election_elapsed = 0;
            // CheckQuorum (dissertation §6.2): a leader that has not heard
            // from a quorum within an election timeout steps down, so that a
            // partitioned leader stops serving reads and accepting writes.
            if !self.quorum_recently_active() {
                tracing::info!(
                    id = self.id,
                    term = self.term,
                    "lost contact with a quorum; stepping down"
                );
                self.become_follower(self.term, None);
                return;
            }
            for progress in self.progress.values_mut() {
                progress.recent_active = false;
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Handles one message from a peer.
    pub(crate) fn step(&mut self, msg: Message) {
        debug_assert_eq!(msg.to, self.id, "message delivered to the wrong node");
        if msg.from == self.id {
            return;
        }
        tracing::trace!(
            id = self.id,
            from = msg.from,
            term = msg.term,
            kind = msg.kind(),
            "step"
        );
        if msg.term > self.term {
            match &msg.body {
                MessageBody::VoteRequest {
                    pre_vote,
                    leader_transfer,
                    ..
                } => {
                    // A node that heard from a leader within the minimum
                    // election timeout ignores votes (dissertation §4.2.3),
                    // so a removed or partitioned node cannot disrupt a
                    // healthy leader. Transfers are exempt: the leader asked.
                    let in_lease = self.leader.is_some()
                        && self.election_elapsed < self.config.election_ticks_min;
                    if in_lease && !leader_transfer {
                        tracing::debug!(
                            id = self.id,
                            from = msg.from,
                            "vote request ignored: leader lease"
                        );
                        return;
                    }
                    if !pre_vote {
                        self.become_follower(msg.term, None);
                    }
                }
                // A granted pre-vote carries the term the candidate would
                // use; it is not a newer term.
                MessageBody::VoteResponse {
                    pre_vote: true,
                    granted: true,
                } => {}
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::TimeoutNow => {
                    self.become_follower(msg.term, Some(msg.from));
                }
                _ => self.become_follower(msg.term, None),
            }
        } else if msg.term < self.term {
            match &msg.body {
                // A stale leader (or one cut off and back): answer with our
                // term so it steps down. Without this, with Pre-Vote and
                // CheckQuorum, a partitioned-and-healed old leader could keep
                // a follower from ever winning (etcd's "stuck" case).
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => {
                    self.send(msg.from, MessageBody::HeartbeatResponse { read_seq: 0 });
                }
                MessageBody::VoteRequest { pre_vote: true, .. } => {
                    self.send(
                        msg.from,
                        MessageBody::VoteResponse {
                            pre_vote: true,
                            granted: false,
                        },
                    );
                }
                _ => {}
            }
            return;
        }

        match msg.body {
            MessageBody::VoteRequest {
                pre_vote,
                last_log_id,
                ..
            } => self.handle_vote_request(msg.from, msg.term, pre_vote, last_log_id),
            MessageBody::VoteResponse { pre_vote, granted } => {
                self.handle_vote_response(msg.from, msg.term, pre_vote, granted)
            }
            MessageBody::Append {
                prev_log_id,
                entries,
                commit,
            } => self.handle_append(msg.from, prev_log_id, entries, commit),
            MessageBody::AppendResponse { outcome } => {
                self.handle_append_response(msg.from, outcome)
            }
            MessageBody::Heartbeat { commit, read_seq } => {
                self.handle_heartbeat(msg.from, commit, read_seq)
            }
            MessageBody::HeartbeatResponse { read_seq } => {
                self.handle_heartbeat_response(msg.from, read_seq)
            }
            MessageBody::TimeoutNow => self.handle_timeout_now(msg.from),
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            } => self.handle_install_snapshot(msg.from, meta, offset, data, done),
            MessageBody::InstallSnapshotResponse { snapshot, outcome } => {
                self.handle_install_snapshot_response(msg.from, snapshot, outcome)
            }
        }
    }

    /// Appends `payloads` as new entries (leader only). Returns the log id of
    /// the first; the rest follow it with consecutive indexes.
    pub(crate) fn propose(&mut self, payloads: Vec<EntryPayload>) -> Result<LogId, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if !self.membership().is_member(self.id) {
            return Err(ProposeError::ProposalDropped {
                reason: "leader is not in the configuration",
            });
        }
        if self.lead_transferee.is_some() {
            return Err(ProposeError::ProposalDropped {
                reason: "leadership transfer in progress",
            });
        }
        assert!(!payloads.is_empty(), "empty proposal batch");
        let bytes: u64 = payloads
            .iter()
            .map(|p| match p {
                EntryPayload::Command(data) => data.len() as u64,
                EntryPayload::Blank | EntryPayload::Membership(_) => 0,
            })
            .sum();
        if !self
            .uncommitted
            .admits(bytes, self.config.uncommitted_bytes_max)
        {
            return Err(ProposeError::TooManyRequests {
                gap: self.log.last_index() - self.log.committed(),
            });
        }
        let first = LogId::new(self.term, self.log.last_index() + 1);
        self.uncommitted
            .add(first.index + payloads.len() as u64 - 1, bytes);
        let term = self.term;
        let entries = payloads.into_iter().enumerate().map(|(i, payload)| Entry {
            term,
            index: first.index + i as u64,
            payload,
        });
        self.append_own(entries);
        Ok(first)
    }

    /// Appends a configuration change (leader only). One at a time: the
    /// previous change must be committed and the configuration not joint
    /// (etcd's `pendingConfIndex`; dissertation §4.1). A voter change appends
    /// C_old,new; the engine appends C_new by itself once that commits.
    pub(crate) fn change_membership(
        &mut self,
        change: config_change::MembershipChange,
    ) -> Result<LogId, MembershipError> {
        if self.role != Role::Leader {
            return Err(MembershipError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.lead_transferee.is_some() {
            return Err(MembershipError::ProposalDropped {
                reason: "leadership transfer in progress",
            });
        }
        if self.membership_index() > self.log.committed() || self.membership().is_joint() {
            return Err(MembershipError::ChangeInProgress);
        }
        let next = config_change::apply(self.membership(), &change)?;
        debug_assert!(next.validate().is_ok(), "config_change produced {next:?}");
        let log_id = LogId::new(self.term, self.log.last_index() + 1);
        tracing::info!(
            id = self.id,
            ?change,
            index = log_id.index,
            "membership change appended"
        );
        let entry = Entry {
            term: self.term,
            index: log_id.index,
            payload: EntryPayload::Membership(Box::new(next)),
        };
        self.append_own([entry]);
        Ok(log_id)
    }

    /// Asks for a linearizable read point (dissertation §6.4). The answer
    /// comes back in [`Actions::reads`] under `id`.
    pub(crate) fn read_index(&mut self, id: u64) {
        if self.role != Role::Leader {
            self.out.reads.push((
                id,
                Err(ReadError::NotLeader {
                    leader_hint: self.leader,
                }),
            ));
            return;
        }
        self.reads.request(id);
    }

    /// Starts a leadership transfer to `to` (dissertation §3.10).
    pub(crate) fn transfer_leader(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if to == self.id {
            return Ok(());
        }
        if !self.membership().is_voter(to) {
            return Err(TransferError::NotVoter(to));
        }
        tracing::info!(
            id = self.id,
            to,
            term = self.term,
            "leadership transfer started"
        );
        self.lead_transferee = Some(to);
        self.transfer_elapsed = 0;
        let caught_up = self.progress[&to].match_index == self.log.last_index();
        if caught_up {
            self.send(to, MessageBody::TimeoutNow);
        }
        Ok(())
    }

    /// The write with this id is durable.
    pub(crate) fn on_write_done(&mut self, id: u64) {
        let write = self
            .write_in_flight
            .take()
            .expect("write done with no write in flight");
        assert_eq!(write.id, id, "writes complete in order");
        self.log.on_persisted(write.last);
        if self.role == Role::Candidate
            && write.hard_state.term == self.term
            && write.hard_state.vote == Some(self.id)
            && !self.votes.contains_key(&self.id)
        {
            // Our own vote counts only once it is durable (§5.2, Figure 2).
            self.record_vote(self.id, true);
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// Entries the driver loaded from storage on our request.
    pub(crate) fn on_loaded(&mut self, entries: Vec<Entry>) {
        self.load_in_flight = false;
        self.log.insert_loaded(entries);
    }

    /// Finishes the turn: sends what the turn's inputs made sendable, issues
    /// the next write if none is in flight, hands committed entries to the
    /// apply task, and returns everything for the driver to carry out.
    pub(crate) fn take_actions(&mut self) -> Actions {
        if self.role == Role::Leader {
            self.flush_reads();
            let peers: Vec<NodeId> = self.progress.keys().copied().collect();
            for peer in peers {
                self.send_appends(peer);
            }
        }
        self.maybe_issue_write();
        self.maybe_build_snapshot();
        if !self.installing {
            match self.log.take_committed(self.config.apply_bytes_max) {
                Ok(entries) => self.out.apply = entries,
                Err(Missing(range)) => self.request_load(range),
            }
        }
        self.log.evict();
        std::mem::take(&mut self.out)
    }

    /// Whether the engine has work that another `take_actions` would emit
    /// without new input (more committed entries to apply than one turn
    /// hands over).
    pub(crate) fn has_ready_apply(&self) -> bool {
        self.log.applied_handed() < self.log.committed().min(self.log.persisted())
            && !self.load_in_flight
            && !self.installing
    }

    // ----- elections -----

    /// A voter campaigns; so does a voter of the previous configuration
    /// while the latest one, which removes it, is not known committed (a
    /// leader that appended C_new without itself and then crashed may hold
    /// the only copy of C_new: the joint quorum needs its vote, it refuses
    /// shorter logs, so it must be able to lead and commit C_new; found by
    /// the simulator). Once its removal is known committed it stops.
    fn can_campaign(&self) -> bool {
        if self.membership().is_voter(self.id) {
            return true;
        }
        match self.memberships.as_slice() {
            [.., (_, previous), (index, _)] => {
                *index > self.log.committed() && previous.is_voter(self.id)
            }
            _ => false,
        }
    }

    fn reset_timers(&mut self) {
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.election_timeout = random_timeout(&mut self.rng, &self.config);
    }

    fn become_follower(&mut self, term: u64, leader: Option<NodeId>) {
        assert!(term >= self.term, "term {term} < {}", self.term);
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        let was = self.role;
        if was == Role::Leader {
            self.reads
                .fail_all(ReadError::LeadershipLost, &mut self.out.reads);
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.uncommitted.clear();
        self.progress.clear();
        self.votes.clear();
        self.lead_transferee = None;
        self.reset_timers();
        if was != Role::Follower {
            tracing::info!(id = self.id, term, ?leader, from = ?was, "became follower");
        }
    }

    fn campaign_pre_vote(&mut self) {
        // Pre-Vote (dissertation §9.6): ask whether we could win before
        // disturbing anyone's term.
        assert!(self.role != Role::Leader, "a leader does not campaign");
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.reset_timers();
        tracing::info!(id = self.id, term = self.term, "became pre-candidate");
        self.request_votes(true, false);
        self.record_vote(self.id, true);
    }

    fn campaign(&mut self, leader_transfer: bool) {
        assert!(self.role != Role::Leader, "a leader does not campaign");
        self.term += 1;
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.reset_timers();
        tracing::info!(id = self.id, term = self.term, "became candidate");
        // Our own vote is recorded in on_write_done, once durable.
        self.request_votes(false, leader_transfer);
    }

    fn request_votes(&mut self, pre_vote: bool, leader_transfer: bool) {
        let term = if pre_vote { self.term + 1 } else { self.term };
        let last_log_id = self.log.last_log_id();
        let voters: Vec<NodeId> = self
            .voters()
            .into_iter()
            .filter(|&v| v != self.id)
            .collect();
        for to in voters {
            self.out.messages.push(Message {
                from: self.id,
                to,
                term,
                body: MessageBody::VoteRequest {
                    pre_vote,
                    last_log_id,
                    leader_transfer,
                },
            });
        }
    }

    fn voters(&self) -> BTreeSet<NodeId> {
        let m = self.membership();
        m.voters.union(&m.voters_outgoing).copied().collect()
    }

    fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: u64,
        pre_vote: bool,
        candidate_last: LogId,
    ) {
        // Vote restriction (§5.4.1): grant only to a candidate whose log is
        // at least as up-to-date as ours, comparing last (term, index).
        let up_to_date = candidate_last >= self.log.last_log_id();
        let free = self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none());
        // A pre-vote for a later term is granted on the log alone: we have
        // not moved to that term and promise nothing.
        let can_vote = free || (pre_vote && term > self.term);
        // Whether we are a voter is not asked (dissertation §4.1): a node
        // promoted before the configuration reached it (a learner far
        // behind, a new node with an empty log) must vote, or a quorum that
        // needs it is stuck. The candidate counts only its voters' grants.
        let granted = can_vote && up_to_date;
        tracing::debug!(id = self.id, from, term, pre_vote, granted, "vote request");
        let body = MessageBody::VoteResponse { pre_vote, granted };
        if pre_vote {
            // Answer in the candidate's prospective term when granting.
            let reply_term = if granted { term } else { self.term };
            self.out.messages.push(Message {
                from: self.id,
                to: from,
                term: reply_term,
                body,
            });
        } else {
            if granted {
                // Election Safety (§5.2): at most one vote per term, durable
                // before the response leaves (the response waits for it).
                assert!(
                    self.vote.is_none() || self.vote == Some(from),
                    "second vote in term {}",
                    self.term
                );
                self.vote = Some(from);
                self.election_elapsed = 0;
            }
            if self.planted(PlantedBugKind::Vote) {
                self.send(from, body);
            } else {
                self.send_durable(from, body);
            }
        }
    }

    fn handle_vote_response(&mut self, from: NodeId, term: u64, pre_vote: bool, granted: bool) {
        let expected = match (pre_vote, self.role) {
            // Grants come in the prospective term; refusals in the voter's
            // own term, which may be ours.
            (true, Role::PreCandidate) => term == self.term + 1 || (!granted && term == self.term),
            (false, Role::Candidate) => term == self.term,
            _ => false,
        };
        if expected {
            self.record_vote(from, granted);
        }
    }

    fn record_vote(&mut self, from: NodeId, granted: bool) {
        self.votes.entry(from).or_insert(granted);
        match quorum::vote_result(self.membership(), &self.votes) {
            VoteResult::Won if self.role == Role::PreCandidate => self.campaign(false),
            VoteResult::Won if self.role == Role::Candidate => self.become_leader(),
            VoteResult::Lost => {
                tracing::info!(
                    id = self.id,
                    term = self.term,
                    pre_vote = self.role == Role::PreCandidate,
                    "election lost"
                );
                self.become_follower(self.term, None);
            }
            _ => {}
        }
    }

    fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate becomes leader"
        );
        assert_eq!(self.vote, Some(self.id), "a leader voted for itself");
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.reset_timers();
        self.reads = ReadQueue::default();
        self.progress.clear();
        self.rebuild_progress();
        for progress in self.progress.values_mut() {
            // A grace period: every peer starts as active for CheckQuorum.
            progress.recent_active = true;
        }
        tracing::info!(id = self.id, term = self.term, last = ?self.log.last_log_id(), "became leader");
        // A blank entry of our term lets us commit entries of earlier terms
        // (§5.4.2) and learn the commit index for ReadIndex (§6.4).
        let entry = Entry {
            term: self.term,
            index: self.log.last_index() + 1,
            payload: EntryPayload::Blank,
        };
        self.append_own([entry]);
    }

    /// Makes `progress` hold exactly the current members other than us.
    fn rebuild_progress(&mut self) {
        let members = self.membership().members();
        self.progress.retain(|id, _| members.contains(id));
        let next = self.log.last_index() + 1;
        for id in members {
            if id != self.id && !self.progress.contains_key(&id) {
                let inflights = inflights::Inflights::new(
                    self.config.inflight_msgs_max,
                    self.config
                        .append_bytes_max
                        .saturating_mul(self.config.inflight_msgs_max as u64),
                );
                let mut progress = Progress::new(next, inflights);
                progress.recent_active = true;
                self.progress.insert(id, progress);
            }
        }
    }

    fn handle_timeout_now(&mut self, from: NodeId) {
        if self.role == Role::Leader || !self.can_campaign() {
            return;
        }
        tracing::info!(
            id = self.id,
            from,
            term = self.term,
            "timeout-now: campaigning for transfer"
        );
        self.campaign(true);
    }

    fn quorum_recently_active(&self) -> bool {
        let votes: BTreeMap<NodeId, bool> = self
            .voters()
            .into_iter()
            .map(|id| {
                (
                    id,
                    id == self.id || self.progress.get(&id).is_some_and(|p| p.recent_active),
                )
            })
            .collect();
        quorum::vote_result(self.membership(), &votes) == VoteResult::Won
    }

    // ----- replication -----

    /// Leader: appends our own new entries.
    fn append_own(&mut self, entries: impl IntoIterator<Item = Entry>) {
        assert_eq!(self.role, Role::Leader);
        let before = self.log.last_index();
        self.log.append(entries);
        self.note_memberships(before + 1);
        // A single-voter cluster commits as soon as the entry is durable.
        self.maybe_commit();
    }

    /// Records membership entries appended from `from` on.
    fn note_memberships(&mut self, from: u64) {
        let appended = self.log.memberships_from(from);
        let changed = !appended.is_empty();
        // A configuration takes effect when appended (dissertation §4.1).
        self.memberships.extend(appended);
        if changed {
            self.on_membership_changed();
        }
    }

    fn on_membership_changed(&mut self) {
        self.membership_version += 1;
        self.out.members = Some(self.membership().nodes.clone());
        if self.role == Role::Leader {
            self.rebuild_progress();
        }
    }

    /// Leader: sends `peer` as many appends as its progress allows.
    fn send_appends(&mut self, peer: NodeId) {
        loop {
            let committed = self.log.committed();
            let last = self.log.last_index();
            let Some(progress) = self.progress.get(&peer) else {
                return;
            };
            if progress.is_paused() {
                return;
            }
            let next = progress.next_index;
            let probing = progress.state == ProgressState::Probe;
            let has_entries = next <= last;
            let commit_behind = progress.commit_sent < committed.min(last);
            let probe_due = probing && progress.match_index < last;
            if !(has_entries || commit_behind || probe_due) {
                return;
            }
            let Some(prev_term) = self.log.term_at(next - 1) else {
                // The entries this follower needs are purged: send the
                // latest snapshot instead (Raft §7).
                self.start_snapshot_transfer(peer);
                return;
            };
            let entries = if has_entries {
                match self.log.entries(next, self.config.append_bytes_max) {
                    Ok(entries) => entries,
                    Err(Missing(range)) => {
                        let end = range.end.min(range.start + 4096);
                        self.request_load(range.start..end);
                        return;
                    }
                }
            } else {
                Vec::new()
            };
            let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
            let last_sent = entries.last().map(|e| e.index);
            let progress = self.progress.get_mut(&peer).expect("checked above");
            progress.on_append_sent(last_sent, bytes);
            progress.commit_sent = committed;
            let prev_log_id = LogId::new(prev_term, next - 1);
            self.out.messages.push(Message {
                from: self.id,
                to: peer,
                term: self.term,
                body: MessageBody::Append {
                    prev_log_id,
                    entries,
                    commit: committed,
                },
            });
            if last_sent.is_none() || probing {
                return;
            }
        }
    }

    fn request_load(&mut self, range: std::ops::Range<u64>) {
        if !self.load_in_flight && !range.is_empty() {
            self.load_in_flight = true;
            self.out.load = Some(range);
        }
    }

    fn handle_append(&mut self, from: NodeId, prev: LogId, entries: Vec<Entry>, commit: u64) {
        if self.role != Role::Follower {
            // Same term: someone else won (§5.2).
            self.become_follower(self.term, Some(from));
        }
        self.leader = Some(from);
        self.election_elapsed = 0;

        let committed = self.log.committed();
        if prev.index < committed {
            // Everything up to our commit index matches the leader (Leader
            // Completeness); skip what we already hold.
            let skip = (committed - prev.index) as usize;
            if skip >= entries.len() {
                let match_index = committed;
                self.reply_append(from, AppendOutcome::Success { match_index });
                return;
            }
            let prev = LogId::new(entries[skip - 1].term, entries[skip - 1].index);
            let rest = entries[skip..].to_vec();
            return self.handle_append(from, prev, rest, commit);
        }

        if !self.log.matches(prev) {
            // Log Matching (§5.3): we do not hold prev, so reject with a
            // hint: the last index whose term is at most prev's term.
            let hint_index = self.log.last_index_with_term_at_most(prev.index, prev.term);
            let hint_term = self
                .log
                .term_at(hint_index)
                .expect("hint index is in the log");
            tracing::debug!(id = self.id, from, ?prev, hint_index, "append rejected");
            let outcome = AppendOutcome::Reject {
                rejected_index: prev.index,
                hint: LogId::new(hint_term, hint_index),
            };
            self.send(from, MessageBody::AppendResponse { outcome });
            return;
        }

        let match_index = prev.index + entries.len() as u64;
        // Find the first entry we do not already hold; truncate a
        // conflicting suffix from there (§5.3) and append the rest.
        if let Some(pos) = entries.iter().position(|e| !self.log.matches(e.log_id())) {
            let first_new = entries[pos].index;
            if first_new <= self.log.last_index() {
                tracing::info!(
                    id = self.id,
                    from,
                    at = first_new,
                    "truncating conflicting entries"
                );
                self.log.truncate(first_new);
                self.drop_memberships_from(first_new);
            }
            self.log.append(entries.into_iter().skip(pos));
            self.note_memberships(first_new);
        }
        // Commit what the leader committed, but never beyond what this
        // append proved we hold.
        self.log
            .commit_to(commit.min(match_index).max(self.log.committed()));
        self.reply_append(from, AppendOutcome::Success { match_index });
    }

    fn reply_append(&mut self, to: NodeId, outcome: AppendOutcome) {
        let body = MessageBody::AppendResponse { outcome };
        match outcome {
            // The ack promises the entries are durable: it waits for them
            // (Figure 2: respond after persisting; dissertation §3.8).
            AppendOutcome::Success { match_index }
                if match_index > self.log.persisted() && !self.planted(PlantedBugKind::Ack) =>
            {
                self.send_durable(to, body)
            }
            _ if self.hard_state_dirty() => self.send_durable(to, body),
            _ => self.send(to, body),
        }
    }

    fn drop_memberships_from(&mut self, from: u64) {
        let before = self.memberships.len();
        self.memberships.retain(|(index, _)| *index < from);
        assert!(
            !self.memberships.is_empty(),
            "truncation removed the base membership"
        );
        if self.memberships.len() != before {
            self.on_membership_changed();
        }
    }

    fn handle_append_response(&mut self, from: NodeId, outcome: AppendOutcome) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        match outcome {
            AppendOutcome::Success { match_index } => {
                if match_index > last {
                    tracing::warn!(
                        id = self.id,
                        from,
                        match_index,
                        last,
                        "ack beyond our log ignored"
                    );
                    return;
                }
                if match_index < progress.match_index {
                    return; // a stale ack, overtaken by a later one
                }
                let grew = progress.on_ack(match_index);
                if progress.state == ProgressState::Probe {
                    // The match point is found: start streaming.
                    progress.become_replicate();
                }
                if grew {
                    self.maybe_commit();
                }
                if self.lead_transferee == Some(from) && self.progress[&from].match_index == last {
                    self.send(from, MessageBody::TimeoutNow);
                }
            }
            AppendOutcome::Reject {
                rejected_index,
                hint,
            } => {
                // Skip back over a whole conflicting term at once.
                let probe = self.log.last_index_with_term_at_most(hint.index, hint.term);
                let progress = self.progress.get_mut(&from).expect("checked above");
                if progress.on_reject(rejected_index, probe) {
                    tracing::debug!(
                        id = self.id,
                        from,
                        rejected_index,
                        next = progress.next_index,
                        "append rejected; probing"
                    );
                }
            }
        }
    }

    /// Commits the largest index a quorum holds, if it is of our term.
    fn maybe_commit(&mut self) {
        let persisted = self.log.persisted();
        let progress = &self.progress;
        let id = self.id;
        let index = quorum::committed_index(self.membership(), |voter| {
            if voter == id {
                persisted
            } else {
                progress.get(&voter).map_or(0, |p| p.match_index)
            }
        });
        // Figure 8 (§5.4.2): count replicas only for an entry of the current
        // term; earlier entries commit with it.
        let own_term = self.log.term_at(index) == Some(self.term);
        if index > self.log.committed() && (own_term || self.planted(PlantedBugKind::Figure8)) {
            self.log.commit_to(index);
            self.uncommitted.committed(index);
            self.after_membership_commit();
        }
    }

    /// Leader: the configuration in force just committed. A joint one is
    /// followed by C_new; a C_new without us means we step down (the
    /// dissertation's §4.2.2: the leader manages the cluster until C_new is
    /// committed, then steps down).
    fn after_membership_commit(&mut self) {
        if self.role != Role::Leader || self.membership_index() > self.log.committed() {
            return;
        }
        if self.membership().is_joint() {
            let next = config_change::leave_joint(self.membership());
            let index = self.log.last_index() + 1;
            tracing::info!(id = self.id, index, voters = ?next.voters, "leaving joint configuration");
            let entry = Entry {
                term: self.term,
                index,
                payload: EntryPayload::Membership(Box::new(next)),
            };
            self.append_own([entry]);
        } else if !self.membership().is_voter(self.id) {
            tracing::info!(
                id = self.id,
                term = self.term,
                "removed from the configuration; stepping down"
            );
            self.become_follower(self.term, None);
        }
    }

    // ----- snapshots (Raft §7) -----

    /// The apply task has applied up to `applied`.
    pub(crate) fn on_applied(&mut self, applied: u64) {
        self.applied = self.applied.max(applied);
    }

    fn maybe_build_snapshot(&mut self) {
        let interval = self.config.snapshot_interval_entries;
        if interval == 0 || self.snapshot_building || self.snapshots_unsupported || self.installing
        {
            return;
        }
        if self.applied >= self.snapshot.index + interval {
            self.snapshot_building = true;
            self.out.build_snapshot = true;
        }
    }

    /// The state machine finished a snapshot (or cannot make one). Saves its
    /// metadata and purges the log behind it, keeping
    /// `snapshot_trailing_entries` so slightly lagging followers still
    /// catch up from the log. A snapshot that cannot be what was applied
    /// (beyond the commit index, or of another term than the log's entry
    /// there) is the state machine's error: the node must stop.
    pub(crate) fn on_snapshot_built(
        &mut self,
        result: Result<LogId, StateMachineError>,
    ) -> Result<(), StateMachineError> {
        self.snapshot_building = false;
        let snapshot = match result {
            Ok(snapshot) => snapshot,
            Err(StateMachineError::SnapshotUnsupported) => {
                tracing::warn!(
                    id = self.id,
                    "state machine has no snapshots; the log will not be compacted"
                );
                self.snapshots_unsupported = true;
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        if snapshot.index <= self.snapshot.index {
            return Ok(());
        }
        let corrupt = |message: String| StateMachineError::Corrupt {
            index: snapshot.index,
            message,
        };
        if snapshot.index > self.log.committed() {
            return Err(corrupt(format!(
                "snapshot {snapshot:?} reaches beyond the commit index {}",
                self.log.committed()
            )));
        }
        if let Some(term) = self.log.term_at(snapshot.index) {
            if term != snapshot.term {
                return Err(corrupt(format!(
                    "snapshot {snapshot:?}, but the log holds term {term} there"
                )));
            }
        }
        self.snapshot = snapshot;
        let membership = self.membership_at(snapshot.index);
        self.out.snapshot_meta = Some(SnapshotMeta {
            last_log_id: snapshot,
            membership,
        });
        let purge = snapshot
            .index
            .saturating_sub(self.config.snapshot_trailing_entries)
            .min(self.log.persisted())
            .min(self.log.applied_handed());
        if purge > self.log.purged().index {
            let up_to = LogId::new(
                self.log.term_at(purge).expect("purge point is in the log"),
                purge,
            );
            self.log.purge_to(up_to);
            self.forget_memberships_before(purge);
            self.out.purge = Some(up_to);
            tracing::debug!(
                id = self.id,
                ?snapshot,
                ?up_to,
                "snapshot built; log purged"
            );
        }
        Ok(())
    }

    /// The configuration in force at `index`.
    fn membership_at(&self, index: u64) -> Membership {
        self.memberships
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// Drops membership entries superseded before `index`, keeping the one
    /// in force there.
    fn forget_memberships_before(&mut self, index: u64) {
        let keep_from = self
            .memberships
            .iter()
            .rposition(|(i, _)| *i <= index)
            .unwrap_or(0);
        self.memberships.drain(..keep_from);
    }

    /// Leader: `peer` needs purged entries; stream the latest snapshot.
    fn start_snapshot_transfer(&mut self, peer: NodeId) {
        let snapshot = self.snapshot;
        let progress = self.progress.get_mut(&peer).expect("peer has progress");
        if progress.state == ProgressState::Snapshot {
            return;
        }
        assert!(
            snapshot.index >= self.log.purged().index,
            "purged {:?} beyond snapshot {snapshot:?}",
            self.log.purged()
        );
        tracing::info!(
            id = self.id,
            peer,
            ?snapshot,
            "follower needs purged entries; sending a snapshot"
        );
        progress.become_snapshot(snapshot);
        self.out.snapshot_reads.push(SnapshotRead {
            to: peer,
            snapshot,
            offset: 0,
        });
    }

    /// A chunk read for `to` (None: past the end). Sends it.
    pub(crate) fn on_snapshot_chunk(
        &mut self,
        to: NodeId,
        snapshot: LogId,
        offset: u64,
        chunk: Result<Option<Bytes>, StateMachineError>,
    ) {
        let term = self.term;
        let membership = self.membership_at(snapshot.index);
        let Some(progress) = self.progress.get_mut(&to) else {
            return;
        };
        let Some(transfer) = progress.transfer.as_mut() else {
            return;
        };
        if transfer.snapshot != snapshot || transfer.offset != offset || self.role != Role::Leader {
            return;
        }
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(error) => {
                tracing::info!(id = self.id, to, %error, "snapshot unreadable; starting over");
                progress.become_probe();
                return;
            }
        };
        let done = chunk.is_none();
        let data = chunk.unwrap_or_default();
        transfer.chunk_len = Some(data.len() as u64);
        let meta = SnapshotMeta {
            last_log_id: snapshot,
            membership,
        };
        self.out.messages.push(Message {
            from: self.id,
            to,
            term,
            body: MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            },
        });
    }

    fn handle_install_snapshot_response(
        &mut self,
        from: NodeId,
        snapshot: LogId,
        outcome: SnapshotOutcome,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        let Some(transfer) = progress.transfer.as_mut() else {
            return;
        };
        if transfer.snapshot != snapshot {
            return;
        }
        transfer.idle_ticks = 0;
        match outcome {
            SnapshotOutcome::Received { next_offset } => {
                // Only the answer to the chunk in flight moves the transfer
                // on; a duplicated or late answer to an earlier chunk (or one
                // arriving while a chunk is read) is ignored, so copies never
                // multiply the chunks in flight.
                let expected = transfer.chunk_len.map(|len| transfer.offset + len);
                if expected == Some(next_offset) {
                    transfer.offset = next_offset;
                    transfer.chunk_len = None;
                    self.out.snapshot_reads.push(SnapshotRead {
                        to: from,
                        snapshot,
                        offset: next_offset,
                    });
                }
            }
            SnapshotOutcome::Installed => {
                tracing::info!(
                    id = self.id,
                    peer = from,
                    ?snapshot,
                    "follower installed the snapshot"
                );
                progress.on_snapshot_installed(snapshot);
                self.maybe_commit();
            }
            SnapshotOutcome::Restart => progress.become_probe(),
        }
    }

    fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
    ) {
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        }
        self.leader = Some(from);
        self.election_elapsed = 0;
        let snapshot = meta.last_log_id;
        let reply = |outcome| MessageBody::InstallSnapshotResponse { snapshot, outcome };
        if snapshot.index <= self.log.committed() {
            // Everything it covers is committed here already, but maybe not
            // durable yet: `Installed` sets our match index on the leader,
            // which counts it as durable, so it waits for the write.
            self.send_durable(from, reply(SnapshotOutcome::Installed));
            return;
        }
        if self.installing {
            return; // the leader retries after a quiet spell
        }
        let next = match self.receiving {
            _ if offset == 0 => 0,
            Some((receiving, next)) if receiving == snapshot && next == offset => next,
            Some((receiving, next)) if receiving == snapshot && offset < next => {
                // A copy of a chunk taken already (duplicated, or sent again
                // because our answer was lost): say where we are.
                let outcome = SnapshotOutcome::Received { next_offset: next };
                self.send(from, reply(outcome));
                return;
            }
            _ => {
                self.send(from, reply(SnapshotOutcome::Restart));
                return;
            }
        };
        self.receiving = Some((snapshot, next + data.len() as u64));
        self.out.snapshot_receives.push(SnapshotReceive {
            from,
            meta,
            offset,
            data,
            done,
        });
    }

    /// A received chunk is stored in the state machine.
    pub(crate) fn on_snapshot_chunk_stored(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        next_offset: u64,
        done: bool,
    ) {
        let snapshot = meta.last_log_id;
        if self.receiving != Some((snapshot, next_offset)) || self.role != Role::Follower {
            return; // superseded by a restart or a newer snapshot
        }
        if done && snapshot.index <= self.log.committed() {
            // Entries committed meanwhile cover it: they are (or will be)
            // applied from the log; installing would take the state machine
            // back over those already applied.
            self.receiving = None;
            let outcome = SnapshotOutcome::Installed;
            // Durable first, as in `handle_install_snapshot`.
            self.send_durable(
                from,
                MessageBody::InstallSnapshotResponse { snapshot, outcome },
            );
        } else if done {
            debug_assert!(self.log.applied_handed() < snapshot.index);
            self.installing = true;
            self.out.install = Some(meta);
        } else {
            let outcome = SnapshotOutcome::Received { next_offset };
            self.send(
                from,
                MessageBody::InstallSnapshotResponse { snapshot, outcome },
            );
        }
    }

    /// The received snapshot is installed in the state machine (and its
    /// metadata saved): drop the log it covers and tell the leader.
    pub(crate) fn on_snapshot_installed(&mut self, meta: SnapshotMeta) {
        let snapshot = meta.last_log_id;
        self.installing = false;
        self.receiving = None;
        self.applied = self.applied.max(snapshot.index);
        self.snapshot = self.snapshot.max(snapshot);
        tracing::info!(id = self.id, ?snapshot, "snapshot installed");
        let before = self.membership().clone();
        self.log.install_snapshot(snapshot);
        self.memberships
            .retain(|(index, _)| *index > snapshot.index && *index <= self.log.last_index());
        self.memberships
            .insert(0, (snapshot.index, meta.membership));
        if *self.membership() != before {
            self.on_membership_changed();
        }
        if self.log.truncation_pending() {
            // The log held another history after the snapshot: its entries
            // go with the next write, and the purge after that write, never
            // before (storage runs jobs in order), so that no crash leaves
            // entries of the replaced history right after the purge point.
            self.purge_after_truncation = Some(snapshot);
        } else {
            self.out.purge = Some(snapshot);
        }
        if let Some(leader) = self.leader {
            let body = MessageBody::InstallSnapshotResponse {
                snapshot,
                outcome: SnapshotOutcome::Installed,
            };
            self.send(leader, body);
        }
    }

    // ----- heartbeats and reads -----

    fn broadcast_heartbeat(&mut self) {
        let committed = self.log.committed();
        let read_seq = self.reads.seq();
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

    fn handle_heartbeat(&mut self, from: NodeId, commit: u64, read_seq: u64) {
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

    fn handle_heartbeat_response(&mut self, from: NodeId, read_seq: u64) {
        if self.role != Role::Leader {
            return;
        }
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
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

    fn committed_in_current_term(&self) -> bool {
        self.log.term_at(self.log.committed()) == Some(self.term)
    }

    fn flush_reads(&mut self) {
        if self.reads.has_unsent() && self.committed_in_current_term() {
            self.reads.start_round(self.log.committed());
            if self.planted(PlantedBugKind::Read) {
                // The bug: answer on the leader's belief alone.
                let seq = self.reads.seq();
                self.reads.confirm(seq, &mut self.out.reads);
            }
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
            self.confirm_reads();
        }
    }

    fn confirm_reads(&mut self) {
        let progress = &self.progress;
        let (id, seq) = (self.id, self.reads.seq());
        let acked = quorum::committed_index(self.membership(), |voter| {
            if voter == id {
                seq
            } else {
                progress.get(&voter).map_or(0, |p| p.read_seq_acked)
            }
        });
        self.reads.confirm(acked, &mut self.out.reads);
    }

    // ----- persistence and sending -----

    fn hard_state_dirty(&self) -> bool {
        self.term != self.hard_state_handed.term || self.vote != self.hard_state_handed.vote
    }

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.out.messages.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    /// Sends `body` once everything this engine holds now is durable: tags
    /// it with the write that will carry (or already carries) that state.
    fn send_durable(&mut self, to: NodeId, body: MessageBody) {
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

    fn maybe_issue_write(&mut self) {
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

    /// The O(n) invariant walk; tests and the simulator call it every step.
    pub(crate) fn check_invariants(&self) {
        if self.purge_after_truncation.is_some() {
            assert!(
                self.log.truncation_pending(),
                "a purge waits for no truncation"
            );
        }
        if self.role != Role::Leader {
            assert_eq!(
                self.uncommitted.bytes(),
                0,
                "uncommitted bytes off the leader"
            );
        }
        self.log.check_invariants();
        if self.role == Role::Leader {
            assert_eq!(self.vote, Some(self.id), "a leader voted for itself");
            assert_eq!(self.leader, Some(self.id));
        }
        if let Some(leader) = self.leader {
            if leader == self.id {
                assert_eq!(
                    self.role,
                    Role::Leader,
                    "only the leader names itself leader"
                );
            }
        }
        for (id, progress) in &self.progress {
            assert!(
                progress.match_index < progress.next_index,
                "peer {id}: {progress:?}"
            );
            assert!(
                progress.match_index <= self.log.last_index(),
                "peer {id} matched beyond our log"
            );
        }
        for pair in self.memberships.windows(2) {
            assert!(pair[0].0 < pair[1].0, "membership indexes increase");
        }
        assert!(self.election_timeout >= self.config.election_ticks_min);
        assert!(self.election_timeout <= self.config.election_ticks_max);
    }
}

/// The text a binary holds when the planted-bug branches are compiled in.
#[cfg(feature = "planted-bugs")]
static PLANTED_BUGS_MARKER: &str = "rafter: planted-bugs compiled in";

/// The rules a planted bug can break (see `testing::PlantedBug`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlantedBugKind {
    Figure8,
    Vote,
    Ack,
    Read,
}

fn random_timeout(rng: &mut ChaCha8Rng, config: &EngineConfig) -> u64 {
    let spread = config.election_ticks_max - config.election_ticks_min + 1;
    config.election_ticks_min + rng.next_u64() % spread
}

#[cfg(test)]
mod tests;
