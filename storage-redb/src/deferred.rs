//! `Deferred`: a purge and the latest snapshot's metadata that the store's
//! cache already holds and redb gets with the next checkpoint.
//!
//! A purge removes tens of thousands of records (20-80 ms in one redb
//! transaction), and a metadata save is a durable commit; done on the
//! storage task, each held up every write queued behind it, and each first
//! waited for the checkpoint in progress, since redb has one writer at a
//! time (a commit stall at every snapshot, set J in benches/README.md).
//! They ride instead on the checkpoint's transaction, on its own thread.
//!
//! Why that is safe: neither needs to be durable when the call returns.
//! A purge that a crash loses leaves entries a snapshot already covers, and
//! a log with more entries than needed is a valid log. A lost snapshot
//! record leaves the one before, which the state machine may no longer
//! have; the leader then asks for a new build (`SnapshotUnavailable`). A
//! lost forgetting of the installing snapshot's record leaves that record,
//! which `rafter::restore` resolves on start. And both always go in one
//! transaction, so redb never holds a purge point past its snapshot
//! record.

use rafter::{LogId, StorageError};

use crate::error::from_redb;
use crate::format::{LOG_TABLE, META_INSTALLING_SNAPSHOT, META_PURGED, META_SNAPSHOT, META_TABLE};
use crate::record;

/// Changes for redb's next transaction that carries them.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    /// The purge point: entries up to it are removed.
    pub(crate) purge: Option<LogId>,
    /// The latest snapshot's metadata record, sealed.
    pub(crate) snapshot: Option<Vec<u8>>,
    /// The installing snapshot's record goes (the latest covers it).
    pub(crate) forget_installing: bool,
}

/// The records a purge removed: how many, and their bytes.
pub(crate) type Removed = (u64, u64);

impl Deferred {
    /// Nothing to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.purge.is_none() && self.snapshot.is_none() && !self.forget_installing
    }

    /// Writes the changes in `txn`; returns what the purge removed.
    pub(crate) fn write(&self, txn: &redb::WriteTransaction) -> Result<Removed, StorageError> {
        let mut removed = (0u64, 0u64);
        let mut meta = txn
            .open_table(META_TABLE)
            .map_err(|e| from_redb("open meta", e))?;
        if let Some(snapshot) = &self.snapshot {
            meta.insert(META_SNAPSHOT, snapshot.as_slice())
                .map_err(|e| from_redb("save snapshot meta", e))?;
        }
        if self.forget_installing {
            meta.remove(META_INSTALLING_SNAPSHOT)
                .map_err(|e| from_redb("forget installing snapshot meta", e))?;
        }
        if let Some(up_to) = self.purge {
            let mut log = txn
                .open_table(LOG_TABLE)
                .map_err(|e| from_redb("open log", e))?;
            log.retain_in(..=up_to.index, |_, value| {
                removed.0 += 1;
                removed.1 += value.len() as u64;
                false
            })
            .map_err(|e| from_redb("purge log", e))?;
            let purged = record::seal(META_PURGED.as_bytes(), &rafter::codec::encode(&up_to));
            meta.insert(META_PURGED, purged.as_slice())
                .map_err(|e| from_redb("save purge point", e))?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use rafter::{CommandBytes, Entry, EntryPayload, LogId, Membership, SnapshotMeta, WriteBatch};

    use crate::log_store::LogStore;
    use crate::options::RedbOptions;

    fn options() -> RedbOptions {
        // Checkpoints only when the journal fills or a change waits.
        RedbOptions {
            journal_bytes: 1 << 20,
            journal_checkpoint_interval: Duration::from_secs(3600),
            ..RedbOptions::default()
        }
    }

    fn write(store: &mut LogStore, from: u64, to: u64) {
        let entries = (from..=to)
            .map(|index| Entry {
                term: 1,
                index,
                payload: EntryPayload::Command(CommandBytes::from(format!("entry {index}"))),
            })
            .collect();
        let batch = WriteBatch {
            entries,
            must_sync: true,
            ..WriteBatch::default()
        };
        store.write(batch).expect("write");
    }

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: LogId::new(1, index),
            membership: Membership::new_voters([(1, "node-1".to_string())]),
        }
    }

    /// The files as a crash would leave them, with no checkpoint running.
    fn crash_image(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for name in ["log.redb", "log.journal"] {
            std::fs::copy(from.join(name), to.join(name)).expect("copy");
        }
    }

    /// Reopens a crash image and checks the one thing a crash may not
    /// break: the purge point is never past the saved snapshot, and the
    /// log is whole from it. Returns the purge point and snapshot found.
    fn reopen_checked(dir: &Path, last: u64) -> (u64, Option<u64>) {
        let mut store = LogStore::open(dir, options()).expect("reopen");
        let state = store.initial_state().expect("state");
        let snapshot = state.snapshot.map(|m| m.last_log_id.index);
        assert!(
            state.purged.index <= snapshot.unwrap_or(0),
            "purge point {:?} past the snapshot {snapshot:?}",
            state.purged
        );
        assert_eq!(state.last_log_id.index, last);
        let entries = store
            .entries(state.purged.index + 1..last + 1, u64::MAX)
            .expect("the log from the purge point");
        assert_eq!(entries.len() as u64, last - state.purged.index);
        (state.purged.index, snapshot)
    }

    #[test]
    fn a_purge_and_a_snapshot_record_ride_on_checkpoints_and_a_crash_keeps_them_in_order() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("store");
        let mut store = LogStore::open(&dir, options()).expect("open");
        write(&mut store, 1, 400);
        store
            .save_snapshot_meta(meta(300))
            .expect("save snapshot meta");
        // Purged at once for readers, whatever redb holds yet.
        store.purge(LogId::new(1, 250)).expect("purge");
        assert_eq!(store.initial_state().expect("state").purged.index, 250);
        assert!(store.entries(250..260, u64::MAX).is_err());
        write(&mut store, 401, 420);

        // With the checkpoints under way ended, a crash keeps both, or the
        // snapshot record alone (the purge waits for the next checkpoint
        // when one was running as it came).
        store.wait_for_checkpoint().expect("checkpoint");
        let crashed = root.path().join("crashed");
        crash_image(&dir, &crashed);
        let (purged, snapshot) = reopen_checked(&crashed, 420);
        assert_eq!(snapshot, Some(300));
        assert!(purged == 0 || purged == 250, "purge point {purged}");

        // The next write starts the checkpoint a waiting purge needs; a
        // close writes whatever still waits.
        write(&mut store, 421, 430);
        store.wait_for_checkpoint().expect("checkpoint");
        let crashed = root.path().join("crashed-again");
        crash_image(&dir, &crashed);
        assert_eq!(reopen_checked(&crashed, 430), (250, Some(300)));
        drop(store);
        assert_eq!(reopen_checked(&dir, 430), (250, Some(300)));
    }
}
