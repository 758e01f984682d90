//! Small state machines for tests and benchmarks: `KvStateMachine`, an
//! in-memory key-value map that also fingerprints the order it applied
//! commands in, and `NoopStateMachine`, which stores nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::state_machine::{Committed, CommittedPayload, StateMachine, StateMachineError};
use crate::types::LogId;

/// A command of [`KvStateMachine`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets `key` to `value`.
    Set {
        /// The key.
        key: String,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
    },
    /// Sets `key` to `new` if its value is `expected` (None: absent).
    CompareAndSwap {
        /// The key.
        key: String,
        /// The value it must have.
        expected: Option<Vec<u8>>,
        /// The value to set.
        new: Vec<u8>,
    },
}

/// What a [`KvCommand`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvResponse {
    /// The entry the command was applied at.
    pub index: u64,
    /// The key's value before the command.
    pub previous: Option<Vec<u8>>,
    /// False only for a compare-and-swap whose comparison failed.
    pub succeeded: bool,
}

/// An in-memory key-value state machine. Clones share the same state, so a
/// test keeps one clone to read what the node applied.
#[derive(Debug, Clone, Default)]
pub struct KvStateMachine {
    inner: Arc<Mutex<KvInner>>,
}

#[derive(Debug, Default)]
struct KvInner {
    data: BTreeMap<String, Vec<u8>>,
    applied: LogId,
    /// FNV-1a over every applied entry's (index, term) and command: equal on
    /// two nodes iff they applied the same sequence.
    fingerprint: u64,
    commands_applied: u64,
}

impl KvStateMachine {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().data.get(key).cloned()
    }

    /// A copy of the whole map.
    pub fn data(&self) -> BTreeMap<String, Vec<u8>> {
        self.lock().data.clone()
    }

    /// The last applied entry.
    pub fn applied_log_id(&self) -> LogId {
        self.lock().applied
    }

    /// A fingerprint of the applied sequence (see the field's doc).
    pub fn fingerprint(&self) -> u64 {
        self.lock().fingerprint
    }

    /// How many commands were applied.
    pub fn commands_applied(&self) -> u64 {
        self.lock().commands_applied
    }

    fn lock(&self) -> MutexGuard<'_, KvInner> {
        // Never held across an await; consistent even if poisoned.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    if hash == 0 {
        hash = 0xcbf2_9ce4_8422_2325;
    }
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    hash
}

impl StateMachine for KvStateMachine {
    type Command = KvCommand;
    type Response = KvResponse;

    async fn applied(&mut self) -> Result<LogId, StateMachineError> {
        Ok(self.lock().applied)
    }

    async fn apply(
        &mut self,
        entries: Vec<Committed<KvCommand>>,
    ) -> Result<Vec<KvResponse>, StateMachineError> {
        let mut inner = self.lock();
        let mut responses = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            if index != inner.applied.index + 1 {
                return Err(StateMachineError::Corrupt {
                    index,
                    message: format!("applied out of order after {}", inner.applied.index),
                });
            }
            inner.applied = entry.log_id;
            let mut hash = fnv(inner.fingerprint, &index.to_le_bytes());
            hash = fnv(hash, &entry.log_id.term.to_le_bytes());
            if let CommittedPayload::Command(command) = entry.payload {
                hash = fnv(hash, &crate::codec::encode(&command));
                inner.commands_applied += 1;
                let response = match command {
                    KvCommand::Set { key, value } => {
                        let previous = inner.data.insert(key, value);
                        KvResponse {
                            index,
                            previous,
                            succeeded: true,
                        }
                    }
                    KvCommand::Delete { key } => {
                        let previous = inner.data.remove(&key);
                        KvResponse {
                            index,
                            previous,
                            succeeded: true,
                        }
                    }
                    KvCommand::CompareAndSwap { key, expected, new } => {
                        let previous = inner.data.get(&key).cloned();
                        let succeeded = previous == expected;
                        if succeeded {
                            inner.data.insert(key, new);
                        }
                        KvResponse {
                            index,
                            previous,
                            succeeded,
                        }
                    }
                };
                responses.push(response);
            }
            inner.fingerprint = hash;
        }
        Ok(responses)
    }
}

/// A state machine that stores nothing and answers each command with its
/// log index: the plain setup Raft libraries benchmark with.
#[derive(Debug, Clone, Default)]
pub struct NoopStateMachine {
    applied: LogId,
}

impl StateMachine for NoopStateMachine {
    type Command = serde_bytes::ByteBuf;
    type Response = u64;

    async fn applied(&mut self) -> Result<LogId, StateMachineError> {
        Ok(self.applied)
    }

    async fn apply(
        &mut self,
        entries: Vec<Committed<Self::Command>>,
    ) -> Result<Vec<u64>, StateMachineError> {
        let mut responses = Vec::with_capacity(entries.len());
        for entry in entries {
            self.applied = entry.log_id;
            if matches!(entry.payload, CommittedPayload::Command(_)) {
                responses.push(entry.log_id.index);
            }
        }
        Ok(responses)
    }
}
