//! `RedbKv`: a small key-value state machine on [`RedbStateMachineStore`],
//! the worked example of the pattern (and what its restart test runs).

use std::path::Path;
use std::sync::Arc;

use rafter::{Committed, CommittedPayload, LogId, StateMachine, StateMachineError};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::state_machine::{sm_io, RedbStateMachineStore};

const KV_TABLE: TableDefinition<&str, &str> = TableDefinition::new("kv");

/// What a client of [`RedbKv`] proposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedbKvCommand {
    /// Sets `key` to `value`; answers the previous value.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Appends `suffix` to the value of `key` (empty if absent); answers the
    /// new value. Not idempotent: applying it twice shows.
    Append {
        /// The key.
        key: String,
        /// What to append.
        suffix: String,
    },
    /// Removes `key`; answers the previous value.
    Delete {
        /// The key.
        key: String,
    },
}

/// A key-value [`StateMachine`] whose data and applied log id live in one
/// redb file and change in one transaction per applied batch.
#[derive(Debug, Clone)]
pub struct RedbKv {
    /// Shared with the blocking task that runs each apply.
    store: Arc<RedbStateMachineStore>,
}

impl RedbKv {
    /// Opens (creating if needed) the state machine in `dir`. Blocks.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StateMachineError> {
        let store = RedbStateMachineStore::open(dir)?;
        let txn = store.database().begin_write().map_err(sm_io)?;
        txn.open_table(KV_TABLE).map_err(sm_io)?;
        txn.commit().map_err(sm_io)?;
        Ok(Self {
            store: Arc::new(store),
        })
    }

    /// The value of `key` as of the last applied batch.
    pub fn get(&self, key: &str) -> Result<Option<String>, StateMachineError> {
        let txn = self.store.database().begin_read().map_err(sm_io)?;
        let table = txn.open_table(KV_TABLE).map_err(sm_io)?;
        let value = table.get(key).map_err(sm_io)?;
        Ok(value.map(|v| v.value().to_owned()))
    }

    fn apply_blocking(
        store: &RedbStateMachineStore,
        entries: Vec<Committed<RedbKvCommand>>,
    ) -> Result<Vec<Option<String>>, StateMachineError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(Vec::new());
        };
        let first_index = first.log_id.index;
        store.apply_batch(first_index, last.log_id, |txn| {
            let mut table = txn.open_table(KV_TABLE).map_err(sm_io)?;
            let mut responses = Vec::new();
            for (i, entry) in entries.iter().enumerate() {
                if entry.log_id.index != first_index + i as u64 {
                    return Err(StateMachineError::Corrupt {
                        index: entry.log_id.index,
                        message: format!("expected entry {}", first_index + i as u64),
                    });
                }
                let CommittedPayload::Command(command) = &entry.payload else {
                    continue;
                };
                let response = match command {
                    RedbKvCommand::Put { key, value } => table
                        .insert(key.as_str(), value.as_str())
                        .map_err(sm_io)?
                        .map(|old| old.value().to_owned()),
                    RedbKvCommand::Append { key, suffix } => {
                        let mut value = table
                            .get(key.as_str())
                            .map_err(sm_io)?
                            .map(|v| v.value().to_owned())
                            .unwrap_or_default();
                        value.push_str(suffix);
                        table.insert(key.as_str(), value.as_str()).map_err(sm_io)?;
                        Some(value)
                    }
                    RedbKvCommand::Delete { key } => table
                        .remove(key.as_str())
                        .map_err(sm_io)?
                        .map(|old| old.value().to_owned()),
                };
                responses.push(response);
            }
            Ok(responses)
        })
    }
}

impl StateMachine for RedbKv {
    type Command = RedbKvCommand;
    type Response = Option<String>;

    async fn applied(&mut self) -> Result<LogId, StateMachineError> {
        self.store.applied()
    }

    async fn apply(
        &mut self,
        entries: Vec<Committed<RedbKvCommand>>,
    ) -> Result<Vec<Option<String>>, StateMachineError> {
        let store = Arc::clone(&self.store);
        if tokio::runtime::Handle::try_current().is_err() {
            return Self::apply_blocking(&store, entries);
        }
        tokio::task::spawn_blocking(move || Self::apply_blocking(&store, entries))
            .await
            .map_err(|e| StateMachineError::Io(format!("the apply task failed: {e}")))?
    }
}
