//! Proposals forwarded to the leader (`Config::forward_proposals`, as
//! etcd-raft forwards `MsgProp`): a follower or learner sends its callers'
//! commands to the leader it knows; the leader appends them as its own
//! proposals and answers with where, or why not. The follower's callers then
//! wait for those entries as for proposals of their own: applied here with
//! the term they were appended in, or provably overwritten (`waiters.rs`).
//!
//! A batch whose answer never comes (the leader changed, the message or its
//! answer was lost) may or may not have been appended: its callers learn
//! that the outcome is unknown, never a guess.

use std::collections::VecDeque;

use super::*;
use crate::command_bytes::CommandBytes;

/// How long a leader remembers a forwarded batch, in longest election
/// timeouts: a duplicate of a message (which any network may deliver, and
/// the simulators do) arriving later than this would be appended again.
/// Transports deliver duplicates within moments, if at all; this is
/// seconds.
pub(super) const FORWARD_DEDUP_ELECTIONS: u64 = 8;

/// The first batch id of a node's start. Batch ids must not repeat across
/// restarts while a leader remembers the old ones (a new batch taken for a
/// duplicate would be ignored, and its callers told the outcome is
/// unknown): the high 32 bits mix the seed, the id and the durable state
/// the node starts from, which differ from one start to the next once the
/// cluster has done anything. Hashed, not drawn from the engine's RNG, so
/// the election timeouts a seed gives are unchanged.
pub(super) fn first_batch_id(rng_seed: u64, id: NodeId, hard_state: HardState, last: LogId) -> u64 {
    let mut x = rng_seed
        ^ id.rotate_left(13)
        ^ hard_state.term.rotate_left(29)
        ^ hard_state.commit.rotate_left(41)
        ^ last.index.rotate_left(53)
        ^ last.term.rotate_left(7);
    // SplitMix64's finalizer.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x & 0xffff_ffff_0000_0000) | 1
}

/// Forwarded batches seen, by (sender, batch id), oldest first.
#[derive(Debug, Default)]
pub(crate) struct SeenBatches {
    set: BTreeSet<(NodeId, u64)>,
    /// Invariant: the same pairs as `set`, in arrival order, with the tick.
    order: VecDeque<(u64, NodeId, u64)>,
}

impl Engine {
    /// A non-leader's proposal batch: sends it to the leader it knows and
    /// returns the batch's id (its answer comes in `Actions::forwarded`), or
    /// refuses without one (`NotLeader`, to retry once an election is over).
    pub(crate) fn forward(&mut self, commands: Vec<CommandBytes>) -> Result<u64, ProposeError> {
        assert!(self.role != Role::Leader, "the leader appends its own");
        assert!(!commands.is_empty(), "empty forwarded batch");
        let Some(leader) = self.leader else {
            return Err(ProposeError::NotLeader {
                leader_hint: None,
                leader_addr: None,
            });
        };
        let batch = self.forward_next;
        self.forward_next += 1;
        self.forwards.insert(batch, (self.ticks, leader));
        self.send(leader, MessageBody::ForwardProposals { batch, commands });
        Ok(batch)
    }

    /// The leader: a follower's batch. Appended under the same rules as
    /// this node's own proposals, all or none.
    pub(super) fn handle_forward_proposals(
        &mut self,
        from: NodeId,
        batch: u64,
        commands: Vec<CommandBytes>,
    ) {
        if !self.forwards_seen.set.insert((from, batch)) {
            // A duplicate: handled once already (appended, or refused and
            // so answered). Silence: the first answer stands.
            return;
        }
        self.forwards_seen
            .order
            .push_back((self.ticks, from, batch));
        let outcome = match self.admit_forwarded(&commands) {
            Err(refusal) => ForwardOutcome::Refused(refusal),
            Ok(()) => {
                let payloads = commands.into_iter().map(EntryPayload::Command).collect();
                match self.propose(payloads) {
                    Ok(first) => ForwardOutcome::Appended { first },
                    Err(error) => ForwardOutcome::Refused(refusal_of(&error)),
                }
            }
        };
        // Queued before the appends this turn sends (they go out when the
        // turn ends), so on a transport that keeps order between the two
        // the answer reaches the follower before the entries, hence before
        // any commit that covers them.
        self.send(from, MessageBody::ForwardResponse { batch, outcome });
    }

    /// Why `propose` would refuse the batch, checked first so the answer
    /// names the reason; plus the checks a local proposal passes in
    /// `Raft::propose` before it reaches the engine (the sender's limits may
    /// differ from this node's).
    fn admit_forwarded(&self, commands: &[CommandBytes]) -> Result<(), ForwardRefusal> {
        if self.role != Role::Leader {
            return Err(ForwardRefusal::NotLeader);
        }
        if !self.membership().is_member(self.id) {
            return Err(ForwardRefusal::LeaderNotMember);
        }
        if self.lead_transferee.is_some() {
            return Err(ForwardRefusal::TransferInProgress);
        }
        let max = self.config.proposal_batch_max;
        if commands.len() > max {
            return Err(ForwardRefusal::TooManyCommands {
                count: commands.len() as u64,
                max: max as u64,
            });
        }
        let max = self.config.request_bytes_max;
        if let Some(command) = commands.iter().find(|c| c.len() > max) {
            return Err(ForwardRefusal::RequestTooLarge {
                size: command.len() as u64,
                max: max as u64,
            });
        }
        Ok(())
    }

    /// The follower: the leader's answer, taken only from the node the
    /// batch went to (an answer naming another node's entries would hand a
    /// caller some other command's response). The entries' (index, term)
    /// then decide their fate, whoever leads by the time they apply.
    pub(super) fn handle_forward_response(
        &mut self,
        from: NodeId,
        batch: u64,
        outcome: ForwardOutcome,
    ) {
        if self.forwards.get(&batch).map(|&(_, to)| to) != Some(from) {
            // Failed already (the leader changed, or it took too long), or
            // not an answer from the node asked.
            return;
        }
        self.forwards.remove(&batch);
        let result = match outcome {
            ForwardOutcome::Appended { first } => Ok((first, from)),
            ForwardOutcome::Refused(refusal) => Err(self.propose_error_of(refusal)),
        };
        self.out.forwarded.push((batch, result));
    }

    fn propose_error_of(&self, refusal: ForwardRefusal) -> ProposeError {
        match refusal {
            ForwardRefusal::NotLeader => ProposeError::NotLeader {
                leader_hint: self.leader,
                leader_addr: self.leader_addr(),
            },
            ForwardRefusal::TooManyRequests { gap } => ProposeError::TooManyRequests { gap },
            ForwardRefusal::TransferInProgress => ProposeError::ProposalDropped {
                reason: "leadership transfer in progress",
            },
            ForwardRefusal::LeaderNotMember => ProposeError::ProposalDropped {
                reason: "leader is not in the configuration",
            },
            ForwardRefusal::RequestTooLarge { size, max } => ProposeError::RequestTooLarge {
                size: usize::try_from(size).unwrap_or(usize::MAX),
                max: usize::try_from(max).unwrap_or(usize::MAX),
            },
            ForwardRefusal::TooManyCommands { count, max } => ProposeError::TooManyCommands {
                count: usize::try_from(count).unwrap_or(usize::MAX),
                max: usize::try_from(max).unwrap_or(usize::MAX),
            },
        }
    }

    /// Every batch sent to a leader that is no longer ours: it may have
    /// appended them, so their outcome is unknown.
    pub(super) fn fail_forwards(&mut self) {
        let forwards = std::mem::take(&mut self.forwards);
        self.out.forwarded.extend(
            forwards.into_iter().map(|(batch, (_, leader))| {
                (batch, Err(ProposeError::ForwardUnanswered { leader }))
            }),
        );
    }

    /// Forgets the batches seen `FORWARD_DEDUP_ELECTIONS` longest election
    /// timeouts ago.
    pub(super) fn forget_old_forwards(&mut self) {
        let keep = FORWARD_DEDUP_ELECTIONS * self.config.election_ticks_max;
        let now = self.ticks;
        let seen = &mut self.forwards_seen;
        while let Some(&(at, from, batch)) = seen.order.front() {
            if now - at <= keep {
                break;
            }
            seen.order.pop_front();
            seen.set.remove(&(from, batch));
        }
        debug_assert_eq!(seen.set.len(), seen.order.len());
    }

    /// Batches the leader has not answered within the longest election
    /// timeout (a lost message or answer): unknown outcome, and the
    /// bookkeeping stays bounded by what is forwarded in that time.
    pub(super) fn expire_forwards(&mut self) {
        let expired = super::follower_reads::take_unanswered(
            &mut self.forwards,
            |&(asked, _)| asked,
            self.ticks,
            self.config.election_ticks_max,
        );
        for (batch, (_, leader)) in expired {
            self.out
                .forwarded
                .push((batch, Err(ProposeError::ForwardUnanswered { leader })));
        }
    }
}

/// The refusal a leader sends for what its own `propose` refused once
/// `admit_forwarded` passed: only its uncommitted-bytes limit remains.
fn refusal_of(error: &ProposeError) -> ForwardRefusal {
    match error {
        ProposeError::TooManyRequests { gap } => ForwardRefusal::TooManyRequests { gap: *gap },
        other => {
            debug_assert!(false, "propose refused an admitted batch: {other}");
            ForwardRefusal::NotLeader
        }
    }
}
