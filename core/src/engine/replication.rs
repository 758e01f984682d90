//! Log replication (Raft §5.3) and the commit rule (§5.4.2): appends to and
//! from peers, their answers, and committing.

use super::*;

impl Engine {
    /// Leader: appends our own new entries.
    pub(super) fn append_own(&mut self, entries: impl IntoIterator<Item = Entry>) {
        assert_eq!(self.role, Role::Leader);
        let before = self.log.last_index();
        self.log.append(entries);
        self.note_memberships(before + 1);
        // A single-voter cluster commits as soon as the entry is durable.
        self.maybe_commit();
    }

    /// Records membership entries appended from `from` on.
    pub(super) fn note_memberships(&mut self, from: u64) {
        let appended = self.log.memberships_from(from);
        let changed = !appended.is_empty();
        // A configuration takes effect when appended (dissertation §4.1).
        self.memberships.extend(appended);
        if changed {
            self.on_membership_changed();
        }
    }

    pub(super) fn on_membership_changed(&mut self) {
        self.membership_version += 1;
        self.out.members = Some(self.membership().nodes.clone());
        if self.role == Role::Leader {
            self.rebuild_progress();
            // Acknowledgements from before may not make a quorum of the
            // new configuration.
            self.lease.end();
        }
    }

    /// Leader: sends `peer` as many appends as its progress allows.
    pub(super) fn send_appends(&mut self, peer: NodeId) {
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

    pub(super) fn request_load(&mut self, range: std::ops::Range<u64>) {
        if !self.load_in_flight && !range.is_empty() {
            self.load_in_flight = true;
            self.out.load = Some(range);
        }
    }

    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev: LogId,
        entries: Vec<Entry>,
        commit: u64,
    ) {
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

    pub(super) fn reply_append(&mut self, to: NodeId, outcome: AppendOutcome) {
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

    pub(super) fn drop_memberships_from(&mut self, from: u64) {
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

    pub(super) fn handle_append_response(&mut self, from: NodeId, outcome: AppendOutcome) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.heard();
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
                    self.send_timeout_now(from);
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
    pub(super) fn maybe_commit(&mut self) {
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
    pub(super) fn after_membership_commit(&mut self) {
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
}
