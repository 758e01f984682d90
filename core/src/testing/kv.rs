//! Small state machines for tests and benchmarks: `KvStateMachine`, an
//! in-memory key-value map that also fingerprints the order it applied
//! commands in, and `NoopStateMachine`, which stores nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{is_crashed, CrashPoint, CrashSwitch};
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
///
/// Its snapshots live in a store that survives a simulated restart
/// ([`KvStateMachine::restarted`]), like files on a disk would: a restarted
/// node loads its latest snapshot, then replays the log after it. A
/// [durable](KvStateMachine::make_durable) one also keeps its applied state,
/// like a state machine that saves each apply with its applied index.
///
/// Installing a received snapshot is atomic: the state and the snapshot
/// store change in one step, under both locks. A [`CrashSwitch`] crashes it
/// just before or just after that step.
#[derive(Debug, Clone, Default)]
pub struct KvStateMachine {
    inner: Arc<Mutex<KvInner>>,
    snapshots: Arc<Mutex<SnapshotStore>>,
}

/// The "disk" of a [`KvStateMachine`]'s snapshots.
#[derive(Debug, Default)]
struct SnapshotStore {
    /// The latest complete snapshot and its encoding.
    latest: Option<(LogId, Bytes)>,
    /// A snapshot being received.
    receiving: Option<(LogId, Vec<u8>)>,
    builds: u64,
    installs: u64,
    /// The applied state survives a restart too.
    durable: bool,
    /// Once tripped, every call fails and changes nothing.
    crash: Option<CrashSwitch>,
}

/// What a snapshot holds.
#[derive(Debug, Serialize, Deserialize)]
struct KvSnapshot {
    data: BTreeMap<String, Vec<u8>>,
    applied: LogId,
    fingerprint: u64,
    commands_applied: u64,
}

#[derive(Debug, Clone, Default)]
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

    /// The applied entry, the fingerprint, the command count and the map:
    /// all of what it holds, to compare with another node or a snapshot.
    pub fn state(&self) -> KvState {
        let inner = self.lock();
        KvState {
            applied: inner.applied,
            fingerprint: inner.fingerprint,
            commands_applied: inner.commands_applied,
            data: inner.data.clone(),
        }
    }

    /// What its latest complete snapshot holds.
    pub fn latest_snapshot_state(&self) -> Option<KvState> {
        let store = self.store();
        let (id, bytes) = store.latest.as_ref()?;
        // Encoded by `build_snapshot` or checked by `install_snapshot`.
        let snapshot: KvSnapshot = crate::codec::decode(bytes, KV_SNAPSHOT_BYTES_MAX)
            .unwrap_or_else(|e| panic!("snapshot {id:?} does not decode: {e}"));
        Some(KvState {
            applied: snapshot.applied,
            fingerprint: snapshot.fingerprint,
            commands_applied: snapshot.commands_applied,
            data: snapshot.data,
        })
    }

    /// The same node after a crash: the same snapshot store, and the
    /// applied state if it is durable, else an empty one.
    pub fn restarted(&self) -> Self {
        let durable = self.store().durable;
        let inner = if durable {
            self.lock().clone()
        } else {
            KvInner::default()
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
            snapshots: self.snapshots.clone(),
        }
    }

    /// Makes its applied state durable from now on: it survives
    /// [`KvStateMachine::restarted`], so a restarted node applies from
    /// where it was instead of from its latest snapshot.
    pub fn make_durable(&self) {
        self.store().durable = true;
    }

    /// Crashes the node at the switch's [`CrashPoint::SnapshotInstalling`]
    /// and [`CrashPoint::SnapshotInstalled`], and fails every call while
    /// the switch is tripped (see [`CrashSwitch`]).
    pub fn attach_crash_switch(&self, switch: &CrashSwitch) {
        self.store().crash = Some(switch.clone());
    }

    /// Whether a snapshot is being received (some chunks stored).
    pub fn receiving_snapshot(&self) -> bool {
        self.store()
            .receiving
            .as_ref()
            .is_some_and(|(_, buffer)| !buffer.is_empty())
    }

    /// (snapshots built, snapshots installed) so far.
    pub fn snapshot_counts(&self) -> (u64, u64) {
        let store = self.store();
        (store.builds, store.installs)
    }

    fn lock(&self) -> MutexGuard<'_, KvInner> {
        // Never held across an await; consistent even if poisoned.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store(&self) -> MutexGuard<'_, SnapshotStore> {
        self.snapshots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails if the node crashed: a dead process applies nothing.
    fn check_powered(&self) -> Result<(), StateMachineError> {
        if is_crashed(self.store().crash.as_ref()) {
            return Err(crashed("the node crashed (crash switch tripped)"));
        }
        Ok(())
    }
}

/// Everything a [`KvStateMachine`] holds (see [`KvStateMachine::state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvState {
    /// The last applied entry.
    pub applied: LogId,
    /// The fingerprint of the applied sequence.
    pub fingerprint: u64,
    /// How many commands were applied.
    pub commands_applied: u64,
    /// The map.
    pub data: BTreeMap<String, Vec<u8>>,
}

fn crashed(message: &str) -> StateMachineError {
    StateMachineError::Io(message.into())
}

fn trips(store: &SnapshotStore, point: CrashPoint) -> bool {
    store.crash.as_ref().is_some_and(|s| s.trip_at(point))
}

/// Largest snapshot a `KvStateMachine` decodes.
const KV_SNAPSHOT_BYTES_MAX: usize = 1 << 30;

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
        self.check_powered()?;
        Ok(self.lock().applied)
    }

    async fn apply(
        &mut self,
        entries: Vec<Committed<KvCommand>>,
    ) -> Result<Vec<KvResponse>, StateMachineError> {
        self.check_powered()?;
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

    async fn build_snapshot(&mut self) -> Result<LogId, StateMachineError> {
        self.check_powered()?;
        let encoded = {
            let inner = self.lock();
            let snapshot = KvSnapshot {
                data: inner.data.clone(),
                applied: inner.applied,
                fingerprint: inner.fingerprint,
                commands_applied: inner.commands_applied,
            };
            (inner.applied, Bytes::from(crate::codec::encode(&snapshot)))
        };
        let mut store = self.store();
        store.builds += 1;
        let applied = encoded.0;
        store.latest = Some(encoded);
        Ok(applied)
    }

    async fn latest_snapshot(&mut self) -> Result<Option<LogId>, StateMachineError> {
        self.check_powered()?;
        Ok(self.store().latest.as_ref().map(|(id, _)| *id))
    }

    async fn read_snapshot(
        &mut self,
        snapshot: LogId,
        offset: u64,
        bytes_max: usize,
    ) -> Result<Option<Bytes>, StateMachineError> {
        self.check_powered()?;
        let store = self.store();
        let Some((id, bytes)) = store.latest.as_ref().filter(|(id, _)| *id == snapshot) else {
            return Err(StateMachineError::SnapshotUnavailable(snapshot));
        };
        debug_assert_eq!(*id, snapshot);
        let start = (offset as usize).min(bytes.len());
        if start == bytes.len() {
            return Ok(None);
        }
        let end = bytes.len().min(start + bytes_max.max(1));
        Ok(Some(bytes.slice(start..end)))
    }

    async fn receive_snapshot(
        &mut self,
        snapshot: LogId,
        offset: u64,
        data: Bytes,
    ) -> Result<(), StateMachineError> {
        self.check_powered()?;
        let mut store = self.store();
        if offset == 0 {
            store.receiving = Some((snapshot, Vec::new()));
        }
        match store.receiving.as_mut() {
            Some((id, buffer)) if *id == snapshot && buffer.len() as u64 == offset => {
                buffer.extend_from_slice(&data);
                Ok(())
            }
            _ => Err(StateMachineError::Corrupt {
                index: snapshot.index,
                message: format!(
                    "snapshot chunk at offset {offset} does not follow the received ones"
                ),
            }),
        }
    }

    async fn install_snapshot(&mut self, snapshot: LogId) -> Result<(), StateMachineError> {
        self.check_powered()?;
        let mut store = self.store();
        let decoded: KvSnapshot = match store.receiving.as_ref() {
            Some((id, buffer)) if *id == snapshot => {
                crate::codec::decode(buffer, KV_SNAPSHOT_BYTES_MAX).map_err(|e| {
                    StateMachineError::Corrupt {
                        index: snapshot.index,
                        message: e.to_string(),
                    }
                })?
            }
            _ => return Err(StateMachineError::SnapshotUnavailable(snapshot)),
        };
        if decoded.applied != snapshot {
            return Err(StateMachineError::Corrupt {
                index: snapshot.index,
                message: format!("snapshot holds {:?}", decoded.applied),
            });
        }
        let applied = self.lock().applied;
        if snapshot.index < applied.index {
            return Err(StateMachineError::SnapshotBehind { snapshot, applied });
        }
        if trips(&store, CrashPoint::SnapshotInstalling) {
            return Err(crashed(
                "the node crashed before the snapshot was installed",
            ));
        }
        // The one step of the install: state and snapshot store together,
        // under both locks, so a crash sees all of it or none.
        let Some((_, buffer)) = store.receiving.take() else {
            unreachable!("the received snapshot was decoded above, under the same lock");
        };
        let mut inner = self.lock();
        inner.data = decoded.data;
        inner.applied = decoded.applied;
        inner.fingerprint = decoded.fingerprint;
        inner.commands_applied = decoded.commands_applied;
        store.latest = Some((snapshot, Bytes::from(buffer)));
        store.installs += 1;
        drop(inner);
        if trips(&store, CrashPoint::SnapshotInstalled) {
            // Installed and durable; the node dies before it hears so.
            return Err(crashed(
                "the node crashed right after installing the snapshot",
            ));
        }
        Ok(())
    }
}

/// A state machine that stores nothing and answers each command with its
/// log index: the plain setup Raft libraries benchmark with. Its snapshots
/// are empty (there is nothing to hold), so the log is compacted as with
/// any state machine that has snapshots, and memory stays bounded.
#[derive(Debug, Clone, Default)]
pub struct NoopStateMachine {
    applied: LogId,
    /// The latest snapshot: it holds nothing but where it ends.
    snapshot: Option<LogId>,
    /// The snapshot being received.
    receiving: Option<LogId>,
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

    async fn build_snapshot(&mut self) -> Result<LogId, StateMachineError> {
        self.snapshot = Some(self.applied);
        Ok(self.applied)
    }

    async fn latest_snapshot(&mut self) -> Result<Option<LogId>, StateMachineError> {
        Ok(self.snapshot)
    }

    async fn read_snapshot(
        &mut self,
        snapshot: LogId,
        _offset: u64,
        _bytes_max: usize,
    ) -> Result<Option<Bytes>, StateMachineError> {
        if self.snapshot != Some(snapshot) {
            return Err(StateMachineError::SnapshotUnavailable(snapshot));
        }
        Ok(None) // empty: already past the end
    }

    async fn receive_snapshot(
        &mut self,
        snapshot: LogId,
        _offset: u64,
        _data: Bytes,
    ) -> Result<(), StateMachineError> {
        self.receiving = Some(snapshot);
        Ok(())
    }

    async fn install_snapshot(&mut self, snapshot: LogId) -> Result<(), StateMachineError> {
        if snapshot.index < self.applied.index {
            return Err(StateMachineError::SnapshotBehind {
                snapshot,
                applied: self.applied,
            });
        }
        if self.receiving.take() != Some(snapshot) {
            return Err(StateMachineError::Corrupt {
                index: snapshot.index,
                message: format!("install of {snapshot:?}, which was not received"),
            });
        }
        self.applied = snapshot;
        self.snapshot = Some(snapshot);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(term: u64, index: u64) -> Committed<serde_bytes::ByteBuf> {
        Committed {
            log_id: LogId::new(term, index),
            payload: CommittedPayload::Command(serde_bytes::ByteBuf::new()),
        }
    }

    /// The no-op state machine's empty snapshots carry a follower to the
    /// leader's applied point through the same calls a real one makes.
    #[tokio::test]
    async fn noop_snapshots_carry_the_applied_point() {
        let mut leader = NoopStateMachine::default();
        let responses = leader.apply(vec![command(1, 1), command(1, 2)]).await;
        assert_eq!(responses, Ok(vec![1, 2]));
        assert_eq!(leader.latest_snapshot().await, Ok(None));
        let snapshot = leader.build_snapshot().await.unwrap();
        assert_eq!(snapshot, LogId::new(1, 2));
        assert_eq!(leader.latest_snapshot().await, Ok(Some(snapshot)));
        assert_eq!(leader.read_snapshot(snapshot, 0, 1024).await, Ok(None));
        let older = LogId::new(1, 1);
        assert_eq!(
            leader.read_snapshot(older, 0, 1024).await,
            Err(StateMachineError::SnapshotUnavailable(older))
        );

        let mut follower = NoopStateMachine::default();
        assert!(
            follower.install_snapshot(snapshot).await.is_err(),
            "not received"
        );
        follower
            .receive_snapshot(snapshot, 0, Bytes::new())
            .await
            .unwrap();
        follower.install_snapshot(snapshot).await.unwrap();
        assert_eq!(follower.applied().await, Ok(snapshot));
        assert_eq!(follower.latest_snapshot().await, Ok(Some(snapshot)));
    }
}
