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

    // The state machine is behind the purge point (an in-memory state
    // machine restarted): restore it from its own latest snapshot.
    if applied.index < initial.purged.index {
        applied = restore_from_own_snapshot(state_machine, initial.purged).await?;
    }
    // A follower crashed after installing a received snapshot but before
    // purging its log: finish the job (the snapshot's metadata was saved
    // before the install, so it names what the state machine holds).
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
