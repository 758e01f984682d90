//! Snapshots (Raft §7): building them, streaming them to followers one chunk at
//! a time, and installing received ones.

use super::*;

impl Engine {
    /// The apply task has applied up to `applied`.
    pub(crate) fn on_applied(&mut self, applied: u64) {
        self.applied = self.applied.max(applied);
    }

    pub(super) fn maybe_build_snapshot(&mut self) {
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

    /// Asks the state machine for a snapshot now, whatever
    /// `snapshot_interval_entries` says (`Raft::trigger_snapshot`). A build
    /// already under way answers for this request too.
    pub(crate) fn trigger_snapshot(&mut self) -> Result<(), CompactionError> {
        if self.snapshots_unsupported {
            return Err(CompactionError::SnapshotsUnsupported);
        }
        if self.installing {
            return Err(CompactionError::InstallInProgress);
        }
        if !self.snapshot_building {
            self.snapshot_building = true;
            self.out.build_snapshot = true;
        }
        Ok(())
    }

    /// Purges the log up to `up_to` now (`Raft::purge_log`), without the
    /// `snapshot_trailing_entries` the automatic purge keeps: only behind
    /// the durable snapshot, and only entries durable and applied, as every
    /// purge (Invariant: purged ≤ snapshot). Returns the purge point after
    /// the call (unchanged if there was nothing to purge).
    pub(crate) fn purge_log(&mut self, up_to: u64) -> Result<LogId, CompactionError> {
        if self.installing || self.purge_after_truncation.is_some() {
            return Err(CompactionError::InstallInProgress);
        }
        self.purge_behind(up_to.min(self.snapshot.index));
        assert!(
            self.log.purged().index <= self.snapshot.index,
            "purged {:?} past the snapshot {:?}",
            self.log.purged(),
            self.snapshot
        );
        Ok(self.log.purged())
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
        self.purge_behind(
            snapshot
                .index
                .saturating_sub(self.config.snapshot_trailing_entries),
        );
        Ok(())
    }

    /// Purges the log up to `purge`, capped at what is durable and handed
    /// to apply; the caller caps it at the snapshot.
    fn purge_behind(&mut self, purge: u64) {
        let snapshot = self.snapshot;
        let purge = purge
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
            tracing::debug!(id = self.id, ?snapshot, ?up_to, "log purged");
        }
    }

    /// The configuration in force at `index`.
    pub(super) fn membership_at(&self, index: u64) -> Membership {
        self.memberships
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// Drops membership entries superseded before `index`, keeping the one
    /// in force there.
    pub(super) fn forget_memberships_before(&mut self, index: u64) {
        let keep_from = self
            .memberships
            .iter()
            .rposition(|(i, _)| *i <= index)
            .unwrap_or(0);
        self.memberships.drain(..keep_from);
    }

    /// Leader: `peer` needs purged entries; stream the latest snapshot.
    pub(super) fn start_snapshot_transfer(&mut self, peer: NodeId) {
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
                // The state machine no longer has the snapshot this node
                // knows of (it restarted after a newer one replaced it, or
                // the snapshot's metadata save did not survive a crash):
                // every transfer would start over with it again, until
                // the next build. Ask for one now; its answer replaces
                // the snapshot the transfers send.
                let lost = matches!(error, StateMachineError::SnapshotUnavailable(id) if id == self.snapshot);
                if lost
                    && !self.snapshot_building
                    && !self.snapshots_unsupported
                    && !self.installing
                {
                    self.snapshot_building = true;
                    self.out.build_snapshot = true;
                }
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

    pub(super) fn handle_install_snapshot_response(
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
        progress.heard();
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

    pub(super) fn handle_install_snapshot(
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
        if self.installing {
            // A copy of the last chunk, stored after the original started
            // the install: an empty chunk's copy has the same offset as
            // the original, so both were taken. One install only (the
            // second would find the received snapshot gone).
            return;
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

    /// The received snapshot is installed in the state machine: it becomes
    /// the latest snapshot in storage, the log it covers goes, and the
    /// leader hears of it.
    ///
    /// Storage runs these jobs in the order given, which is the order of
    /// the crash points of an install (`testing::CrashPoint`): the
    /// metadata (which also forgets the installing record), then the
    /// truncation of a replaced history if any, then the purge.
    pub(crate) fn on_snapshot_installed(&mut self, meta: SnapshotMeta) {
        let snapshot = meta.last_log_id;
        debug_assert!(self.installing, "an install nobody asked for: {snapshot:?}");
        self.out.snapshot_meta = Some(meta.clone());
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
}
