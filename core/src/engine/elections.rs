//! Elections (Raft §5.2, §5.4.1; dissertation §9.6 Pre-Vote, §6.2 CheckQuorum,
//! §3.10 TimeoutNow): timers, campaigns, votes, becoming leader or follower.

use super::*;

impl Engine {
    /// A voter campaigns; so does a voter of the previous configuration
    /// while the latest one, which removes it, is not known committed (a
    /// leader that appended C_new without itself and then crashed may hold
    /// the only copy of C_new: the joint quorum needs its vote, it refuses
    /// shorter logs, so it must be able to lead and commit C_new; found by
    /// the simulator). Once its removal is known committed it stops.
    pub(super) fn can_campaign(&self) -> bool {
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

    pub(super) fn reset_timers(&mut self) {
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.election_timeout = random_timeout(&mut self.rng, &self.config);
    }

    pub(super) fn become_follower(&mut self, term: u64, leader: Option<NodeId>) {
        assert!(term >= self.term, "term {term} < {}", self.term);
        let leader_changed = term > self.term || leader != self.leader;
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        let was = self.role;
        if was == Role::Leader {
            let mut answers = Vec::new();
            self.reads.fail_all(ReadError::LeadershipLost, &mut answers);
            self.answer_reads(answers);
        }
        if leader_changed {
            // Asked of a leader that is no longer ours: it will not answer.
            self.fail_follower_reads();
            self.fail_forwards();
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

    pub(super) fn campaign_pre_vote(&mut self) {
        // Pre-Vote (dissertation §9.6): ask whether we could win before
        // disturbing anyone's term.
        assert!(self.role != Role::Leader, "a leader does not campaign");
        self.role = Role::PreCandidate;
        self.leader = None;
        self.fail_follower_reads();
        self.fail_forwards();
        self.votes.clear();
        self.reset_timers();
        tracing::info!(id = self.id, term = self.term, "became pre-candidate");
        self.request_votes(true, false);
        self.record_vote(self.id, true);
    }

    pub(super) fn campaign(&mut self, leader_transfer: bool) {
        assert!(self.role != Role::Leader, "a leader does not campaign");
        self.term += 1;
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.fail_follower_reads();
        self.fail_forwards();
        self.votes.clear();
        self.reset_timers();
        tracing::info!(id = self.id, term = self.term, "became candidate");
        // Our own vote is recorded in on_write_done, once durable.
        self.request_votes(false, leader_transfer);
    }

    pub(super) fn request_votes(&mut self, pre_vote: bool, leader_transfer: bool) {
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

    pub(super) fn voters(&self) -> BTreeSet<NodeId> {
        let m = self.membership();
        m.voters.union(&m.voters_outgoing).copied().collect()
    }

    pub(super) fn handle_vote_request(
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

    pub(super) fn handle_vote_response(
        &mut self,
        from: NodeId,
        term: u64,
        pre_vote: bool,
        granted: bool,
    ) {
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

    pub(super) fn record_vote(&mut self, from: NodeId, granted: bool) {
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

    pub(super) fn become_leader(&mut self) {
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
    pub(super) fn rebuild_progress(&mut self) {
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

    pub(super) fn handle_timeout_now(&mut self, from: NodeId) {
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

    pub(super) fn quorum_recently_active(&self) -> bool {
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
}
