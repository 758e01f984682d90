//! The simulated disk of one node.
//!
//! A write becomes durable only when its completion is delivered, after a
//! random delay; until then a crash loses it (and with it every message
//! waiting on it). A batch with `must_sync == false` (only a commit index
//! change) completes without an fsync: it survives a crash only if a later
//! synced write completes before the crash, since an fsync flushes
//! everything written before it. Batches are atomic (no torn writes).
//!
//! Snapshot metadata saves are durable at once. A purge drops the log up to
//! an entry (entries after it stay, as `MemStorage` does); it runs after the
//! write in flight, as the storage task runs its jobs in order, so a crash
//! before that write completes loses the purge too.

use rafter::{Entry, HardState, LogId, SnapshotMeta, WriteBatch};

/// Invariant: at most one write in flight; `log` is consecutive from
/// `purged.index + 1`; `purged.index` ≤ the saved snapshot's index; the
/// synced hard state was written no later than `hard_state`.
#[derive(Debug, Default)]
pub struct Disk {
    /// The durable log: only synced batches carry entries, so every entry
    /// here survives a crash.
    log: Vec<Entry>,
    /// The last purged entry.
    purged: LogId,
    /// The saved snapshot metadata.
    snapshot: Option<SnapshotMeta>,
    /// A purge waiting for the write in flight.
    purge_pending: Option<LogId>,
    /// The hard state as last written (possibly not yet synced).
    hard_state: HardState,
    /// The hard state as of the last fsync: what a crash leaves.
    hard_state_synced: HardState,
    /// The write started and not yet complete: (id, batch).
    in_flight: Option<(u64, WriteBatch)>,
    /// The id of the last completed write of this incarnation.
    completed: u64,
}

impl Disk {
    /// A disk that already holds `log` and `hard_state`, synced (a founding
    /// member's bootstrap, as `Raft::start` writes it).
    pub fn bootstrapped(log: Vec<Entry>, hard_state: HardState) -> Self {
        for (i, entry) in log.iter().enumerate() {
            assert_eq!(entry.index, i as u64 + 1, "log not consecutive from 1");
        }
        Self {
            log,
            hard_state,
            hard_state_synced: hard_state,
            ..Self::default()
        }
    }

    /// Starts a write. Checks the batch against the storage contract
    /// (`WriteBatch` docs) before it is accepted.
    pub fn start(&mut self, id: u64, batch: WriteBatch) {
        assert!(
            self.in_flight.is_none(),
            "write {id} started while {:?} is in flight",
            self.in_flight.as_ref().map(|w| w.0)
        );
        assert_eq!(id, self.completed + 1, "writes are numbered in order");
        if !batch.must_sync {
            assert!(
                batch.entries.is_empty() && batch.truncate_from.is_none(),
                "an unsynced batch carries entries: {batch:?}"
            );
            if let Some(hs) = batch.hard_state {
                assert_eq!(
                    (hs.term, hs.vote),
                    (self.hard_state.term, self.hard_state.vote),
                    "an unsynced batch changes term or vote"
                );
            }
        }
        let mut next = self.last_index() + 1;
        if let Some(from) = batch.truncate_from {
            assert!(
                from > self.purged.index,
                "truncate from {from}, purged {:?}",
                self.purged
            );
            next = next.min(from);
        }
        for entry in &batch.entries {
            assert_eq!(entry.index, next, "batch entries are not consecutive");
            next += 1;
        }
        self.in_flight = Some((id, batch));
    }

    /// The write `id` is durable (or, if unsynced, written). Returns the
    /// index it truncated from, if any, and the hard state it saved.
    pub fn complete(&mut self, id: u64) -> (Option<u64>, Option<HardState>) {
        let (in_flight, batch) = self.in_flight.take().expect("a write is in flight");
        assert_eq!(in_flight, id, "completion of a write not in flight");
        self.completed = id;
        if let Some(from) = batch.truncate_from {
            self.log.truncate((from - self.purged.index - 1) as usize);
        }
        self.log.extend(batch.entries);
        if let Some(up_to) = self.purge_pending.take() {
            self.purge_now(up_to);
        }
        if let Some(hs) = batch.hard_state {
            self.hard_state = hs;
        }
        if batch.must_sync {
            self.hard_state_synced = self.hard_state;
        }
        (batch.truncate_from, batch.hard_state)
    }

    /// The id of the write in flight.
    pub fn in_flight(&self) -> Option<u64> {
        self.in_flight.as_ref().map(|w| w.0)
    }

    /// The id of the last completed write of this incarnation.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// The node crashed: the write in flight and everything unsynced are
    /// lost. Write ids start over with the next incarnation.
    pub fn crash(&mut self) {
        self.in_flight = None;
        self.purge_pending = None;
        self.hard_state = self.hard_state_synced;
        self.completed = 0;
    }

    /// The durable log, from `purged().index + 1`.
    pub fn log(&self) -> &[Entry] {
        &self.log
    }

    /// The entry at `index`, if durable and not purged.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        index
            .checked_sub(self.purged.index + 1)
            .and_then(|i| self.log.get(i as usize))
    }

    /// The term at `index`: an entry's, or the purge point's.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.purged.index {
            return Some(self.purged.term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The index of the last durable entry (the purge point if none).
    pub fn last_index(&self) -> u64 {
        self.purged.index + self.log.len() as u64
    }

    /// The last purged entry.
    pub fn purged(&self) -> LogId {
        self.purged
    }

    /// The saved snapshot metadata.
    pub fn snapshot(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_ref()
    }

    /// Whether committed entry `index` of `term` survives here: in the log
    /// with that term, or covered by the saved snapshot (which holds the
    /// committed prefix; checked when it is built and installed).
    pub fn holds(&self, index: u64, term: u64) -> bool {
        self.snapshot
            .as_ref()
            .is_some_and(|m| index <= m.last_log_id.index)
            || self.entry(index).is_some_and(|e| e.term == term)
    }

    /// Saves snapshot metadata (durable at once).
    pub fn save_snapshot_meta(&mut self, meta: SnapshotMeta) {
        assert!(
            meta.last_log_id.index >= self.purged.index,
            "snapshot {:?} behind the purge point {:?}",
            meta.last_log_id,
            self.purged
        );
        self.snapshot = Some(meta);
    }

    /// Drops the log up to `up_to` inclusive, after the write in flight.
    pub fn purge(&mut self, up_to: LogId) {
        if self.in_flight.is_some() {
            let pending = self.purge_pending.get_or_insert(up_to);
            *pending = (*pending).max(up_to);
        } else {
            self.purge_now(up_to);
        }
    }

    fn purge_now(&mut self, up_to: LogId) {
        if up_to.index <= self.purged.index {
            return;
        }
        assert!(
            self.snapshot
                .as_ref()
                .is_some_and(|m| m.last_log_id.index >= up_to.index),
            "purge to {up_to:?} beyond the saved snapshot {:?}",
            self.snapshot
        );
        let drop = (up_to.index.min(self.last_index()) - self.purged.index) as usize;
        self.log.drain(..drop);
        self.purged = up_to;
    }

    /// A restart found the state machine holding the saved snapshot beyond
    /// the purge point: the install was interrupted before its purge.
    /// Finishes it as `restore` does: unless the log holds the snapshot's
    /// last entry, drop the log from there, then purge.
    pub fn finish_install(&mut self, snapshot: LogId) {
        assert!(self.in_flight.is_none(), "finishing an install at startup");
        if snapshot.index <= self.purged.index {
            return;
        }
        let held = self.entry(snapshot.index).map(Entry::log_id);
        if held != Some(snapshot) {
            if held.is_some() {
                self.log
                    .truncate((snapshot.index - self.purged.index - 1) as usize);
            }
            self.purge_now(snapshot);
        }
    }

    /// The hard state a restart finds (the synced one).
    pub fn hard_state_synced(&self) -> HardState {
        self.hard_state_synced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rafter::EntryPayload;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            term,
            index,
            payload: EntryPayload::Blank,
        }
    }

    fn batch(entries: Vec<Entry>, commit: u64, must_sync: bool) -> WriteBatch {
        WriteBatch {
            truncate_from: None,
            entries,
            hard_state: Some(HardState {
                term: 1,
                vote: None,
                commit,
            }),
            must_sync,
        }
    }

    #[test]
    fn a_crash_loses_the_write_in_flight_and_unsynced_commits() {
        let mut disk = Disk::default();
        disk.start(1, batch(vec![entry(1, 1)], 0, true));
        disk.complete(1);
        disk.start(2, batch(vec![], 1, false));
        disk.complete(2);
        disk.start(3, batch(vec![entry(1, 2)], 1, true));
        disk.crash();
        assert_eq!(disk.log().len(), 1);
        assert_eq!(disk.hard_state_synced().commit, 0);
        assert_eq!(disk.completed(), 0);
    }

    #[test]
    fn a_synced_write_flushes_earlier_unsynced_ones() {
        let mut disk = Disk::default();
        disk.start(1, batch(vec![], 0, true));
        disk.complete(1);
        disk.start(2, batch(vec![], 1, false));
        disk.complete(2);
        let mut synced = batch(vec![entry(1, 1)], 1, true);
        synced.hard_state = None;
        disk.start(3, synced);
        disk.complete(3);
        disk.crash();
        assert_eq!(disk.hard_state_synced().commit, 1);
    }
}
