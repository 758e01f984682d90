//! Startup: read what storage and the state machine hold, bootstrap a new
//! cluster if asked, and rebuild what the engine keeps in memory (the term
//! runs and the membership history) by scanning the log once.

use crate::engine::log::extend_term_runs;
use crate::engine::Restored;
use crate::error::StartError;
use crate::state_machine::{StateMachine, StateMachineError};
use crate::storage::{RaftStorage, StorageError, WriteBatch};
use crate::types::{Entry, EntryPayload, HardState, LogId, Membership, NodeId};

/// Bytes read per storage call while scanning the log at startup.
const SCAN_BYTES_MAX: u64 = 16 << 20;

/// Reads durable state and returns what the engine starts from.
///
/// A store with no hard state, no log and no snapshot is new. With
/// `initial_members` it bootstraps: it writes the same first entry every
/// founding member writes — index 1, term 1, the initial membership — and
/// marks it committed, so founding logs agree from the start. Without, the
/// node waits to be added to an existing cluster and learns the membership
/// from the leader.
pub(crate) async fn restore<S: RaftStorage, SM: StateMachine>(
    id: NodeId,
    initial_members: Option<Membership>,
    storage: &mut S,
    state_machine: &mut SM,
) -> Result<Restored, StartError> {
    let mut initial = storage.initial_state().await?;
    let is_new = initial.hard_state == HardState::default()
        && initial.last_log_id == LogId::default()
        && initial.snapshot.is_none();
    if is_new {
        if let Some(members) = initial_members {
            members.validate().map_err(StartError::Membership)?;
            if !members.members().contains(&id) {
                return Err(StartError::Membership(format!(
                    "node {id} is not in the initial membership"
                )));
            }
            let entry = Entry {
                term: 1,
                index: 1,
                payload: EntryPayload::Membership(Box::new(members)),
            };
            let hard_state = HardState {
                term: 1,
                vote: None,
                commit: 1,
            };
            let batch = WriteBatch {
                truncate_from: None,
                entries: vec![entry],
                hard_state: Some(hard_state),
                must_sync: true,
            };
            storage.write(batch).await?;
            initial = storage.initial_state().await?;
            tracing::info!(id, "bootstrapped a new cluster");
        }
    }

    let mut applied = state_machine.applied().await?;

    // A received snapshot whose install had begun when the node stopped.
    // No entry is applied during an install, so the state machine reached
    // the snapshot's index only by installing it (or by building a newer
    // snapshot after it): then the install is finished below, with the
    // membership this record alone keeps. Otherwise it is dropped, and the
    // latest snapshot is still the one the state machine holds.
    if let Some(installing) = initial.installing_snapshot.take() {
        let snapshot = installing.last_log_id;
        let latest = state_machine.latest_snapshot().await?;
        if applied.index == snapshot.index && applied != snapshot {
            return Err(StateMachineError::Corrupt {
                index: applied.index,
                message: format!(
                    "state machine applied {applied:?} where the snapshot being installed \
                     holds {snapshot:?}"
                ),
            }
            .into());
        }
        let reached = applied.index.max(latest.map_or(0, |l| l.index));
        if reached >= snapshot.index {
            storage.save_snapshot_meta(installing.clone()).await?;
            initial.snapshot = Some(installing);
            tracing::info!(
                id,
                ?snapshot,
                "the state machine holds the snapshot a crash interrupted the install of"
            );
        } else {
            storage.save_installing_snapshot_meta(None).await?;
            tracing::info!(id, ?snapshot, "dropped a snapshot install interrupted by a crash before the state machine made it");
        }
    }

    // The state machine is behind the purge point (an in-memory state
    // machine restarted): restore it from its own latest snapshot.
    if applied.index < initial.purged.index {
        applied = restore_from_own_snapshot(state_machine, initial.purged).await?;
    } else if let Some(meta) = &initial.snapshot {
        // An in-memory state machine behind the saved snapshot, which is
        // its latest: an install that crashed after the state machine made
        // it and before the purge (or its own snapshot kept no log behind
        // it). Load it, so the install below is finished, not left to a
        // replay of a log that may hold another history.
        let snapshot = meta.last_log_id;
        if applied.index < snapshot.index
            && state_machine.latest_snapshot().await? == Some(snapshot)
        {
            applied = restore_from_own_snapshot(state_machine, initial.purged).await?;
        }
    }
    // A follower crashed after installing a received snapshot but before
    // purging its log: finish the job (the saved metadata names what the
    // state machine holds: saved after the install, or taken over above
    // from the installing record).
    let installed = initial
        .snapshot
        .as_ref()
        .is_some_and(|meta| meta.last_log_id == applied);
    if installed && applied.index > initial.purged.index {
        let held = if applied.index <= initial.last_log_id.index {
            storage
                .entries(applied.index..applied.index + 1, 0)
                .await?
                .first()
                .map(Entry::log_id)
        } else {
            None
        };
        if held != Some(applied) {
            if held.is_some() {
                let batch = WriteBatch {
                    truncate_from: Some(applied.index),
                    ..WriteBatch::default()
                };
                storage
                    .write(WriteBatch {
                        must_sync: true,
                        ..batch
                    })
                    .await?;
            }
            storage.purge(applied).await?;
            initial = storage.initial_state().await?;
            tracing::info!(
                id,
                ?applied,
                "finished installing a snapshot interrupted by a crash"
            );
        }
    }

    let purged = initial.purged;
    let last = initial.last_log_id;
    if last < purged {
        return Err(StorageError::Corrupt {
            location: "log state".into(),
            message: format!("last log id {last:?} is before the purge point {purged:?}"),
        }
        .into());
    }
    if applied.index > last.index {
        return Err(StateMachineError::Corrupt {
            index: applied.index,
            message: format!(
                "state machine applied {applied:?} beyond the log's last entry {last:?}"
            ),
        }
        .into());
    }
    // The snapshot's membership is the base; membership entries the
    // snapshot covers are superseded by it.
    let mut memberships = Vec::new();
    if let Some(meta) = &initial.snapshot {
        memberships.push((meta.last_log_id.index, meta.membership.clone()));
    }

    // Scan the log once: term runs, membership entries, continuity.
    let mut scan = LogScan::new(purged, memberships);
    while scan.last.index < last.index {
        let from = scan.last.index + 1;
        let entries = storage
            .entries(from..last.index + 1, SCAN_BYTES_MAX)
            .await?;
        if entries.is_empty() {
            return Err(StorageError::Unavailable { index: from }.into());
        }
        for entry in entries {
            scan.push(entry)?;
        }
    }
    if scan.last != last {
        return Err(StorageError::Corrupt {
            location: format!("log entry {}", last.index),
            message: format!("storage reports last {last:?}, log ends at {:?}", scan.last),
        }
        .into());
    }
    let LogScan {
        term_runs,
        mut memberships,
        ..
    } = scan;
    if memberships.is_empty() {
        // A node waiting to join: it knows no configuration and cannot vote.
        memberships.push((0, Membership::default()));
    }
    let mut hard_state = initial.hard_state;
    // An applied entry was committed, whatever the saved commit index says
    // (the commit index is saved lazily).
    hard_state.commit = hard_state.commit.max(applied.index).max(purged.index);
    let snapshot = initial
        .snapshot
        .map(|meta| meta.last_log_id)
        .unwrap_or_default();
    Ok(Restored {
        hard_state,
        purged,
        snapshot,
        last,
        term_runs,
        memberships,
        applied: applied.index,
    })
}

/// Loads the state machine's own latest snapshot into it, through the same
/// receive and install calls a follower uses.
async fn restore_from_own_snapshot<SM: StateMachine>(
    state_machine: &mut SM,
    purged: LogId,
) -> Result<LogId, StartError> {
    let behind = |message: String| StateMachineError::Corrupt {
        index: purged.index,
        message,
    };
    let snapshot = state_machine.latest_snapshot().await?.ok_or_else(|| {
        behind(format!(
            "state machine is behind the log's purge point {purged:?} and has no snapshot"
        ))
    })?;
    if snapshot.index < purged.index {
        return Err(behind(format!(
            "latest snapshot {snapshot:?} is behind the purge point {purged:?}"
        ))
        .into());
    }
    let mut offset = 0;
    while let Some(chunk) = state_machine
        .read_snapshot(snapshot, offset, SNAPSHOT_CHUNK_BYTES)
        .await?
    {
        let len = chunk.len() as u64;
        state_machine
            .receive_snapshot(snapshot, offset, chunk)
            .await?;
        offset += len;
    }
    state_machine.install_snapshot(snapshot).await?;
    tracing::info!(?snapshot, "state machine restored from its snapshot");
    Ok(snapshot)
}

/// Chunk size for restoring a state machine from its own snapshot.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// What one pass over the log rebuilds: term runs and membership entries,
/// checking continuity on the way.
pub(crate) struct LogScan {
    pub(crate) last: LogId,
    pub(crate) term_runs: Vec<(u64, u64)>,
    pub(crate) memberships: Vec<(u64, Membership)>,
}

impl LogScan {
    pub(crate) fn new(snapshot: LogId, memberships: Vec<(u64, Membership)>) -> Self {
        Self {
            last: snapshot,
            term_runs: Vec::new(),
            memberships,
        }
    }

    /// Takes the next entry of the log.
    pub(crate) fn push(&mut self, entry: Entry) -> Result<(), StorageError> {
        // The pair of the write-side checks: the log must come back
        // consecutive, with terms that never decrease.
        if entry.index != self.last.index + 1 || entry.term < self.last.term {
            return Err(StorageError::Corrupt {
                location: format!("log entry {}", self.last.index + 1),
                message: format!("found {:?} after {:?}", entry.log_id(), self.last),
            });
        }
        extend_term_runs(&mut self.term_runs, entry.log_id());
        self.last = entry.log_id();
        if let EntryPayload::Membership(m) = entry.payload {
            // Entries at or below a snapshot's membership are superseded.
            if self
                .memberships
                .last()
                .is_none_or(|(base, _)| entry.index > *base)
            {
                self.memberships.push((entry.index, *m));
            }
        }
        Ok(())
    }
}

/// The decision to finish a snapshot install interrupted by a crash, on the
/// durable states each crash point can leave (see `testing::CrashPoint`).
#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::state_machine::{Committed, CommittedPayload};
    use crate::testing::{KvStateMachine, MemStorage};
    use crate::types::SnapshotMeta;

    /// The snapshot every case installs: entry 10 of term 2.
    const SNAPSHOT: LogId = LogId::new(2, 10);

    /// The metadata of snapshot `last_log_id`.
    fn meta(last_log_id: LogId) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id,
            membership: Membership::new_voters([(1, "node-1".to_string())]),
        }
    }

    /// A store holding `log` (as (term, index)), purged up to `purged`, with
    /// `snapshot` saved as the latest snapshot's metadata.
    async fn storage(log: &[(u64, u64)], purged: LogId, snapshot: Option<LogId>) -> MemStorage {
        let mut storage = MemStorage::new();
        let entries: Vec<Entry> = log
            .iter()
            .map(|&(term, index)| Entry {
                term,
                index,
                payload: EntryPayload::Blank,
            })
            .collect();
        let term = log.last().map_or(1, |&(term, _)| term);
        let batch = WriteBatch {
            truncate_from: None,
            entries,
            hard_state: Some(HardState {
                term,
                vote: None,
                commit: 0,
            }),
            must_sync: true,
        };
        storage.write(batch).await.unwrap();
        storage.purge(purged).await.unwrap();
        if let Some(last_log_id) = snapshot {
            storage.save_snapshot_meta(meta(last_log_id)).await.unwrap();
        }
        storage
    }

    /// `storage` with `installing` saved as the metadata of a snapshot whose
    /// install had begun.
    async fn storage_installing(
        log: &[(u64, u64)],
        purged: LogId,
        snapshot: Option<LogId>,
        installing: LogId,
    ) -> MemStorage {
        let mut storage = storage(log, purged, snapshot).await;
        storage
            .save_installing_snapshot_meta(Some(meta(installing)))
            .await
            .unwrap();
        storage
    }

    /// A state machine that applied blank entries up to `applied` (the
    /// last of term `applied.term`, the others of term 1).
    async fn state_machine(applied: LogId) -> KvStateMachine {
        let mut state_machine = KvStateMachine::new();
        let entries = (1..=applied.index)
            .map(|index| Committed {
                log_id: if index == applied.index {
                    applied
                } else {
                    LogId::new(1, index)
                },
                payload: CommittedPayload::Blank,
            })
            .collect();
        state_machine.apply(entries).await.unwrap();
        state_machine
    }

    fn log(terms: u64, from: u64, to: u64) -> Vec<(u64, u64)> {
        (from..=to).map(|index| (terms, index)).collect()
    }

    #[tokio::test]
    async fn an_install_interrupted_before_the_purge_is_finished_on_a_shorter_log() {
        let mut storage = storage(&log(1, 1, 5), LogId::default(), Some(SNAPSHOT)).await;
        let mut state_machine = state_machine(SNAPSHOT).await;
        let restored = restore(1, None, &mut storage, &mut state_machine)
            .await
            .unwrap();
        assert_eq!(
            storage.purged(),
            SNAPSHOT,
            "the log is purged to the snapshot"
        );
        assert_eq!(storage.last_log_id(), SNAPSHOT);
        assert!(storage.all_entries().is_empty());
        assert_eq!(restored.purged, SNAPSHOT);
        assert_eq!(restored.last, SNAPSHOT);
        assert_eq!(restored.snapshot, SNAPSHOT);
        assert_eq!(restored.applied, SNAPSHOT.index);
        assert_eq!(restored.hard_state.commit, SNAPSHOT.index);
    }

    #[tokio::test]
    async fn an_install_interrupted_before_the_purge_drops_a_log_that_disagrees_with_it() {
        // A stale tail of term 1 runs past the snapshot's index.
        let mut storage = storage(&log(1, 1, 12), LogId::default(), Some(SNAPSHOT)).await;
        let mut state_machine = state_machine(SNAPSHOT).await;
        let restored = restore(1, None, &mut storage, &mut state_machine)
            .await
            .unwrap();
        assert_eq!(storage.purged(), SNAPSHOT);
        assert!(
            storage.all_entries().is_empty(),
            "entries after a disagreeing one are dropped: {:?}",
            storage.all_entries()
        );
        assert_eq!(restored.last, SNAPSHOT);
        assert_eq!(restored.applied, SNAPSHOT.index);
    }

    #[tokio::test]
    async fn an_installed_snapshot_the_log_holds_keeps_the_log() {
        let mut entries = log(1, 1, 9);
        entries.extend(log(2, 10, 12));
        let mut storage = storage(&entries, LogId::default(), Some(SNAPSHOT)).await;
        let mut state_machine = state_machine(SNAPSHOT).await;
        let restored = restore(1, None, &mut storage, &mut state_machine)
            .await
            .unwrap();
        assert_eq!(storage.purged(), LogId::default(), "nothing to purge");
        assert_eq!(storage.all_entries().len(), 12);
        assert_eq!(restored.last, LogId::new(2, 12));
        assert_eq!(restored.applied, SNAPSHOT.index);
        assert_eq!(
            restored.term_runs,
            vec![(1, 1), (10, 2)],
            "(first index, term)"
        );
    }

    #[tokio::test]
    async fn an_install_the_state_machine_never_made_leaves_the_log_alone() {
        // Crashed after saving the installing metadata: the state machine
        // holds 5, and its own snapshot at 3 stays the latest.
        let mut storage = storage_installing(
            &log(1, 1, 5),
            LogId::default(),
            Some(LogId::new(1, 3)),
            SNAPSHOT,
        )
        .await;
        let mut state_machine = state_machine(LogId::new(1, 5)).await;
        let restored = restore(1, None, &mut storage, &mut state_machine)
            .await
            .unwrap();
        assert_eq!(storage.purged(), LogId::default());
        assert_eq!(storage.all_entries().len(), 5);
        assert_eq!(restored.purged, LogId::default());
        assert_eq!(restored.last, LogId::new(1, 5));
        assert_eq!(restored.applied, 5);
        assert_eq!(state_machine.applied_log_id(), LogId::new(1, 5));
        assert_eq!(
            restored.snapshot,
            LogId::new(1, 3),
            "the latest snapshot is still the one the state machine holds"
        );
        assert_eq!(storage.snapshot_meta(), Some(meta(LogId::new(1, 3))));
        assert_eq!(
            storage.installing_snapshot_meta(),
            None,
            "the abandoned install is forgotten"
        );
    }

    #[tokio::test]
    async fn an_install_the_state_machine_made_before_storage_heard_is_finished() {
        // Crashed right after the state machine installed: storage still
        // names the old snapshot as the latest; the installing record
        // carries the new one's membership.
        let mut storage = storage_installing(
            &log(1, 1, 12),
            LogId::new(1, 3),
            Some(LogId::new(1, 3)),
            SNAPSHOT,
        )
        .await;
        let mut state_machine = state_machine(SNAPSHOT).await;
        let restored = restore(1, None, &mut storage, &mut state_machine)
            .await
            .unwrap();
        assert_eq!(storage.snapshot_meta(), Some(meta(SNAPSHOT)));
        assert_eq!(storage.installing_snapshot_meta(), None);
        assert_eq!(storage.purged(), SNAPSHOT, "the install is finished");
        assert!(storage.all_entries().is_empty(), "the other history goes");
        assert_eq!(restored.snapshot, SNAPSHOT);
        assert_eq!(restored.last, SNAPSHOT);
        assert_eq!(restored.applied, SNAPSHOT.index);
        assert_eq!(
            restored.memberships,
            vec![(SNAPSHOT.index, meta(SNAPSHOT).membership)]
        );
    }

    #[tokio::test]
    async fn a_state_machine_at_the_installing_index_with_another_term_is_corrupt() {
        let mut storage =
            storage_installing(&log(1, 1, 12), LogId::default(), None, SNAPSHOT).await;
        let mut state_machine = state_machine(LogId::new(1, 10)).await;
        let error = restore(1, None, &mut storage, &mut state_machine)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                StartError::StateMachine(StateMachineError::Corrupt { index: 10, .. })
            ),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_finished_install_is_left_as_it_is() {
        let mut storage = storage(&log(1, 1, 5), LogId::default(), Some(SNAPSHOT)).await;
        storage.purge(SNAPSHOT).await.unwrap();
        let mut state_machine = state_machine(SNAPSHOT).await;
        let writes = storage.write_count();
        let restored = restore(1, None, &mut storage, &mut state_machine)
            .await
            .unwrap();
        assert_eq!(storage.write_count(), writes, "no write at startup");
        assert_eq!(restored.purged, SNAPSHOT);
        assert_eq!(restored.applied, SNAPSHOT.index);
    }

    #[tokio::test]
    async fn an_in_memory_state_machine_reloads_the_installed_snapshot_then_the_install_is_finished(
    ) {
        // The node had compacted to 3; it installed the snapshot (now its
        // latest) and crashed before storage heard; its applied state is
        // gone.
        let mut storage = storage_installing(
            &log(1, 1, 5),
            LogId::new(1, 3),
            Some(LogId::new(1, 3)),
            SNAPSHOT,
        )
        .await;
        let mut before = state_machine(SNAPSHOT).await;
        assert_eq!(before.build_snapshot().await.unwrap(), SNAPSHOT);
        let mut state_machine = before.restarted();
        assert_eq!(state_machine.applied_log_id(), LogId::default());
        let restored = restore(1, None, &mut storage, &mut state_machine)
            .await
            .unwrap();
        assert_eq!(state_machine.state(), before.state(), "the snapshot, whole");
        assert_eq!(storage.purged(), SNAPSHOT);
        assert_eq!(storage.snapshot_meta(), Some(meta(SNAPSHOT)));
        assert_eq!(restored.last, SNAPSHOT);
        assert_eq!(restored.applied, SNAPSHOT.index);
        assert_eq!(restored.snapshot, SNAPSHOT);
    }

    #[tokio::test]
    async fn an_in_memory_state_machine_with_an_older_snapshot_drops_the_install() {
        // Crashed before the install: the latest snapshot is its own, at 4.
        let mut storage = storage_installing(
            &log(1, 1, 5),
            LogId::new(1, 3),
            Some(LogId::new(1, 4)),
            SNAPSHOT,
        )
        .await;
        let mut before = state_machine(LogId::new(1, 4)).await;
        before.build_snapshot().await.unwrap();
        let mut state_machine = before.restarted();
        let restored = restore(1, None, &mut storage, &mut state_machine)
            .await
            .unwrap();
        assert_eq!(state_machine.applied_log_id(), LogId::new(1, 4));
        assert_eq!(storage.purged(), LogId::new(1, 3), "not purged");
        assert_eq!(storage.installing_snapshot_meta(), None);
        assert_eq!(restored.last, LogId::new(1, 5));
        assert_eq!(restored.applied, 4);
        assert_eq!(restored.snapshot, LogId::new(1, 4));
    }
}
