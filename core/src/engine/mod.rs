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
mod elections;
mod follower_reads;
mod forwarding;
mod heartbeats;
mod inflights;
pub(crate) mod log;
mod persistence;
mod progress;
mod quorum;
mod read_index;
mod replication;
mod snapshot_transfer;
mod uncommitted;

use std::collections::{BTreeMap, BTreeSet};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

pub(crate) use actions::{Actions, SnapshotRead, SnapshotReceive, Write};
use log::{Missing, RaftLog};
use progress::Progress;
pub(crate) use progress::ProgressState;
use quorum::VoteResult;
use read_index::ReadQueue;
use uncommitted::Uncommitted;

use crate::config::Config;
use crate::error::{CompactionError, MembershipError, ProposeError, ReadError, TransferError};
use crate::message::{
    AppendOutcome, ForwardOutcome, ForwardRefusal, Message, MessageBody, SnapshotOutcome,
};
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
    /// `Config::proposal_batch_max`: the most commands a forwarded batch
    /// may hold.
    pub(crate) proposal_batch_max: usize,
    /// `Config::request_bytes_max`: the largest forwarded command.
    pub(crate) request_bytes_max: usize,
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
            proposal_batch_max: config.proposal_batch_max,
            request_bytes_max: config.request_bytes_max,
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
    /// Not leader: reads asked of the leader, by request id, with the tick
    /// each was asked at. Invariant: empty on the leader; failed when the
    /// leader changes or this node campaigns, and after
    /// `election_ticks_max` ticks without an answer.
    follower_reads: BTreeMap<u64, u64>,
    /// Not leader: forwarded proposal batches waiting for the leader's
    /// answer, by batch id, with the tick each was sent at and the leader
    /// it went to. Invariant: empty on the leader; failed like
    /// `follower_reads`.
    forwards: BTreeMap<u64, (u64, NodeId)>,
    /// The id of the next forwarded batch.
    forward_next: u64,
    /// Ticks since start: the clock of `follower_reads` and `forwards`.
    ticks: u64,

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
            follower_reads: BTreeMap::new(),
            forwards: BTreeMap::new(),
            forward_next: 1,
            ticks: 0,
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
    pub(crate) fn purged_index(&self) -> u64 {
        self.log.purged().index
    }
    pub(crate) fn membership(&self) -> &Membership {
        &self
            .memberships
            .last()
            .expect("memberships is never empty")
            .1
    }

    /// The address of the leader this node knows of, from the configuration
    /// in force (`None` without a leader, or when that configuration does
    /// not list it yet). Only refusals call it: it allocates.
    pub(crate) fn leader_addr(&self) -> Option<String> {
        let leader = self.leader?;
        self.membership().nodes.get(&leader).cloned()
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
    /// On the leader, each peer's progress: state, match, next, and the
    /// count of answers heard from it.
    pub(crate) fn peer_progress(
        &self,
    ) -> impl Iterator<Item = (NodeId, ProgressState, u64, u64, u64)> + '_ {
        self.progress
            .iter()
            .map(|(&id, p)| (id, p.state, p.match_index, p.next_index, p.acks))
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
        self.ticks += 1;
        self.expire_follower_reads();
        self.expire_forwards();
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
                // Refused now rather than left to expire: nothing of it was
                // appended, and the answer's term tells the sender ours.
                MessageBody::ForwardProposals { batch, .. } => {
                    self.send(
                        msg.from,
                        MessageBody::ForwardResponse {
                            batch: *batch,
                            outcome: ForwardOutcome::Refused(ForwardRefusal::NotLeader),
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
            MessageBody::ReadIndexRequest { request } => {
                self.handle_read_index_request(msg.from, request)
            }
            MessageBody::ReadIndexResponse { request, index } => {
                self.handle_read_index_response(msg.from, request, index)
            }
            MessageBody::ForwardProposals { batch, commands } => {
                self.handle_forward_proposals(msg.from, batch, commands)
            }
            MessageBody::ForwardResponse { batch, outcome } => {
                self.handle_forward_response(msg.from, batch, outcome)
            }
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
                leader_addr: self.leader_addr(),
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
                leader_addr: self.leader_addr(),
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

    /// Asks for a linearizable read point (dissertation §6.4): on the
    /// leader, a ReadIndex round; elsewhere, the leader's read index
    /// (`follower_reads.rs`). The answer comes back in [`Actions::reads`]
    /// under `id`.
    pub(crate) fn read_index(&mut self, id: u64) {
        if self.role != Role::Leader {
            self.read_index_from_leader(id);
            return;
        }
        self.reads.request(read_index::Reader::Local(id));
    }

    /// Starts a leadership transfer to `to` (dissertation §3.10).
    pub(crate) fn transfer_leader(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader_hint: self.leader,
                leader_addr: self.leader_addr(),
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
        if self.role == Role::Leader {
            assert!(
                self.follower_reads.is_empty(),
                "a leader waits for no leader's read index"
            );
            assert!(self.forwards.is_empty(), "a leader forwards no proposals");
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
