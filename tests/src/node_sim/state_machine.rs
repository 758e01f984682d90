//! The simulated state machine: `rafter::testing::KvStateMachine` made
//! durable (its applied state and snapshots survive a crash, as a store
//! that saves each apply with its applied index would), wrapped to fail
//! once its incarnation has crashed, to inject faults, and to report what
//! it applies to the world's checks.
//!
//! Every batch it applies is checked against every other node's, as it
//! happens: the entry at an index is the same everywhere (state machine
//! safety, Raft §5.4.3), and the fingerprint of the applied sequence at an
//! index is the same everywhere, whether a node got there by applying
//! entries or by installing a snapshot.

use bytes::Bytes;
use rafter::testing::{KvCommand, KvResponse, KvStateMachine};
use rafter::{Committed, CommittedPayload, LogId, NodeId, StateMachine, StateMachineError};

use super::world::Shared;

/// Faults armed on one node's state machine; each fires once.
#[derive(Debug, Default, Clone)]
pub struct StateMachineFaults {
    /// The next `apply` panics before it changes anything.
    pub panic_next_apply: bool,
    /// The node crashes in the next `install_snapshot`: `Some(false)`
    /// before the snapshot replaces the state, `Some(true)` after.
    pub crash_at_install: Option<bool>,
}

/// The state machine of one incarnation of a node.
pub struct SimStateMachine {
    kv: KvStateMachine,
    world: Shared,
    id: NodeId,
    incarnation: u64,
}

impl SimStateMachine {
    /// The state machine of incarnation `incarnation` of node `id`, over
    /// `kv` (which must be durable).
    pub fn new(kv: KvStateMachine, world: Shared, id: NodeId, incarnation: u64) -> Self {
        Self {
            kv,
            world,
            id,
            incarnation,
        }
    }

    fn check_powered(&self) -> Result<(), StateMachineError> {
        if self.world.lock().incarnation(self.id) != self.incarnation {
            return Err(StateMachineError::Io(
                "the node crashed (simulated power loss)".into(),
            ));
        }
        Ok(())
    }

    /// Reports the state reached at `applied` to the checks.
    fn report_state(&self, how: &str) {
        let state = self.kv.state();
        self.world
            .lock()
            .on_state(self.id, how, state.applied, state.fingerprint);
    }
}

impl StateMachine for SimStateMachine {
    type Command = KvCommand;
    type Response = KvResponse;

    async fn applied(&mut self) -> Result<LogId, StateMachineError> {
        self.check_powered()?;
        self.kv.applied().await
    }

    async fn apply(
        &mut self,
        entries: Vec<Committed<KvCommand>>,
    ) -> Result<Vec<KvResponse>, StateMachineError> {
        self.check_powered()?;
        {
            let mut world = self.world.lock();
            if std::mem::take(&mut world.node_mut(self.id).sm_faults.panic_next_apply) {
                world.expect_fatal(self.id);
                world.note(format!("node {}: apply panics (injected)", self.id));
                drop(world);
                panic!(
                    "{} in the state machine of node {}",
                    super::INJECTED_PANIC,
                    self.id
                );
            }
            for entry in &entries {
                let payload = match &entry.payload {
                    CommittedPayload::Command(command) => rafter::codec::encode(command),
                    CommittedPayload::Blank => Vec::new(),
                    CommittedPayload::Membership(m) => rafter::codec::encode(&**m),
                };
                world.on_apply(self.id, entry.log_id, payload);
            }
        }
        // Applying takes time (a real state machine writes), during which
        // other tasks run: readers woken too early would see the old state.
        let latency = {
            let mut world = self.world.lock();
            let (low, high) = world.config.apply_micros;
            world.rng.between(low, high)
        };
        tokio::time::sleep(std::time::Duration::from_micros(latency)).await;
        self.check_powered()?;
        let responses = self.kv.apply(entries).await?;
        self.report_state("applied");
        Ok(responses)
    }

    async fn build_snapshot(&mut self) -> Result<LogId, StateMachineError> {
        self.check_powered()?;
        let built = self.kv.build_snapshot().await?;
        self.world.lock().snapshots_built += 1;
        Ok(built)
    }

    async fn latest_snapshot(&mut self) -> Result<Option<LogId>, StateMachineError> {
        self.check_powered()?;
        self.kv.latest_snapshot().await
    }

    async fn read_snapshot(
        &mut self,
        snapshot: LogId,
        offset: u64,
        bytes_max: usize,
    ) -> Result<Option<Bytes>, StateMachineError> {
        self.check_powered()?;
        self.kv.read_snapshot(snapshot, offset, bytes_max).await
    }

    async fn receive_snapshot(
        &mut self,
        snapshot: LogId,
        offset: u64,
        data: Bytes,
    ) -> Result<(), StateMachineError> {
        self.check_powered()?;
        self.kv.receive_snapshot(snapshot, offset, data).await
    }

    async fn install_snapshot(&mut self, snapshot: LogId) -> Result<(), StateMachineError> {
        self.check_powered()?;
        let crash = self
            .world
            .lock()
            .node_mut(self.id)
            .sm_faults
            .crash_at_install
            .take();
        let powered_off = || StateMachineError::Io("the node crashed mid-install".into());
        if crash == Some(false) {
            let mut world = self.world.lock();
            world.note(format!(
                "node {}: crash before installing {snapshot:?}",
                self.id
            ));
            world.crash(self.id);
            return Err(powered_off());
        }
        self.kv.install_snapshot(snapshot).await?;
        self.world.lock().snapshots_installed += 1;
        self.report_state("installed");
        if crash == Some(true) {
            let mut world = self.world.lock();
            world.note(format!(
                "node {}: crash right after installing {snapshot:?}",
                self.id
            ));
            world.crash(self.id);
            return Err(powered_off());
        }
        Ok(())
    }
}
