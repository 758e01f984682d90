//! Nodes whose storage, state machine or network panic on demand, for the
//! fail-stop tests (issue 13, item 2): three founding voters on a
//! `MemRouter`, each with a [`Trap`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::{test_config, PATIENCE};
use bytes::Bytes;
use rafter::testing::{KvCommand, KvResponse, KvStateMachine, MemNetwork, MemRouter, MemStorage};
use rafter::{
    Committed, Entry, Fatal, InitialState, LogId, Membership, Message, NodeId, ProposeError, Raft,
    RaftNetwork, RaftStorage, ReadError, Role, SnapshotMeta, StateMachine, StateMachineError,
    StorageError, WriteBatch,
};

/// A switch shared by a node's storage, state machine and network: once
/// armed at a place, the next call there panics.
#[derive(Clone, Default)]
pub struct Trap {
    /// Panics in the next storage write.
    pub storage: Arc<AtomicBool>,
    /// Panics in the next apply.
    pub state_machine: Arc<AtomicBool>,
    /// Panics in the next send (a call only the driver makes).
    pub network: Arc<AtomicBool>,
    /// While set, every send waits for ever: the driver is stuck.
    pub stall: Arc<AtomicBool>,
}

fn spring(armed: &AtomicBool, what: &str) {
    if armed.swap(false, Ordering::SeqCst) {
        panic!("planted panic in the {what}");
    }
}

/// `MemStorage` that panics when its trap says so.
pub struct TrappedStorage(pub MemStorage, pub Trap);

impl RaftStorage for TrappedStorage {
    async fn initial_state(&mut self) -> Result<InitialState, StorageError> {
        self.0.initial_state().await
    }
    async fn write(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        spring(&self.1.storage, "storage");
        self.0.write(batch).await
    }
    async fn entries(
        &mut self,
        range: Range<u64>,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.0.entries(range, bytes_max).await
    }
    async fn purge(&mut self, up_to: LogId) -> Result<(), StorageError> {
        self.0.purge(up_to).await
    }
    async fn save_snapshot_meta(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        self.0.save_snapshot_meta(meta).await
    }
    async fn save_installing_snapshot_meta(
        &mut self,
        meta: Option<SnapshotMeta>,
    ) -> Result<(), StorageError> {
        self.0.save_installing_snapshot_meta(meta).await
    }
}

/// `KvStateMachine` that panics when its trap says so.
pub struct TrappedStateMachine(pub KvStateMachine, pub Trap);

impl StateMachine for TrappedStateMachine {
    type Command = KvCommand;
    type Response = KvResponse;

    async fn applied(&mut self) -> Result<LogId, StateMachineError> {
        self.0.applied().await
    }
    async fn apply(
        &mut self,
        entries: Vec<Committed<KvCommand>>,
    ) -> Result<Vec<KvResponse>, StateMachineError> {
        spring(&self.1.state_machine, "state machine");
        self.0.apply(entries).await
    }
    async fn build_snapshot(&mut self) -> Result<LogId, StateMachineError> {
        self.0.build_snapshot().await
    }
    async fn latest_snapshot(&mut self) -> Result<Option<LogId>, StateMachineError> {
        self.0.latest_snapshot().await
    }
    async fn read_snapshot(
        &mut self,
        snapshot: LogId,
        offset: u64,
        bytes_max: usize,
    ) -> Result<Option<Bytes>, StateMachineError> {
        self.0.read_snapshot(snapshot, offset, bytes_max).await
    }
    async fn receive_snapshot(
        &mut self,
        snapshot: LogId,
        offset: u64,
        data: Bytes,
    ) -> Result<(), StateMachineError> {
        self.0.receive_snapshot(snapshot, offset, data).await
    }
    async fn install_snapshot(&mut self, snapshot: LogId) -> Result<(), StateMachineError> {
        self.0.install_snapshot(snapshot).await
    }
}

/// `MemNetwork` that panics when its trap says so.
pub struct TrappedNetwork(pub MemNetwork, pub Trap);

impl RaftNetwork for TrappedNetwork {
    async fn send(&mut self, to: NodeId, messages: Vec<Message>) {
        spring(&self.1.network, "driver");
        if self.1.stall.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.0.send(to, messages).await
    }
    async fn set_members(&mut self, nodes: &BTreeMap<NodeId, String>) {
        self.0.set_members(nodes).await
    }
}

/// A node of [`Nodes`].
pub type Node = Raft<TrappedStateMachine>;

/// Three founding voters, each with its own [`Trap`].
pub struct Nodes {
    /// The network between them.
    pub router: MemRouter,
    members: Membership,
    /// Storage by node (index id - 1), kept across restarts.
    pub storages: Vec<MemStorage>,
    state_machines: Vec<KvStateMachine>,
    /// Traps by node (index id - 1); a restart disarms them.
    pub traps: Vec<Trap>,
    /// Running nodes by node (index id - 1).
    pub rafts: Vec<Option<Node>>,
}

impl Nodes {
    /// Starts nodes 1, 2 and 3.
    pub async fn start() -> Self {
        let config = test_config();
        let mut nodes = Nodes {
            router: MemRouter::new(config.rng_seed),
            members: Membership::new_voters((1..=3).map(|id| (id, format!("node-{id}")))),
            storages: (0..3).map(|_| MemStorage::new()).collect(),
            state_machines: (0..3).map(|_| KvStateMachine::new()).collect(),
            traps: (0..3).map(|_| Trap::default()).collect(),
            rafts: vec![None, None, None],
        };
        for id in 1..=3 {
            nodes.restart(id).await;
        }
        nodes
    }

    /// (Re)starts node `id` on its storage, with a fresh trap.
    pub async fn restart(&mut self, id: NodeId) {
        let i = id as usize - 1;
        self.state_machines[i] = self.state_machines[i].restarted();
        self.traps[i] = Trap::default();
        let trap = self.traps[i].clone();
        let raft = Raft::start(
            id,
            test_config(),
            Some(self.members.clone()),
            TrappedStorage(self.storages[i].clone(), trap.clone()),
            TrappedNetwork(self.router.network(id), trap.clone()),
            TrappedStateMachine(self.state_machines[i].clone(), trap),
        )
        .await
        .expect("node starts");
        self.router.register(&raft);
        self.rafts[i] = Some(raft);
    }

    /// Running node `id`.
    pub fn raft(&self, id: NodeId) -> &Node {
        self.rafts[id as usize - 1].as_ref().expect("running")
    }

    /// Waits for a running node that leads.
    pub async fn leader(&self) -> NodeId {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let leader = self.rafts.iter().flatten().find_map(|raft| {
                let m = raft.status();
                (m.role == Role::Leader && !m.stopped).then_some(m.id)
            });
            if let Some(leader) = leader {
                return leader;
            }
            assert!(tokio::time::Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A `Set` command.
pub fn set(key: &str, value: &str) -> KvCommand {
    KvCommand::Set {
        key: key.into(),
        value: value.as_bytes().to_vec(),
    }
}

/// Arms `arm` on the leader, proposes through it, and checks the whole
/// fail-stop contract; returns the leader and the fatal reason.
pub async fn a_panic_stops_the_node(arm: fn(&Trap)) -> (NodeId, Fatal) {
    let mut nodes = Nodes::start().await;
    let leader = nodes.leader().await;
    let raft = nodes.raft(leader).clone();
    raft.propose(set("a", "1"))
        .await
        .expect("a healthy leader commits");

    arm(&nodes.traps[leader as usize - 1]);
    // The waiting call: answered `Stopped`, not left waiting for ever or
    // until its timeout.
    let waiting = tokio::time::timeout(Duration::from_secs(1), raft.propose(set("a", "2"))).await;
    assert_eq!(
        waiting,
        Ok(Err(ProposeError::Stopped)),
        "a call waiting when the node fails"
    );
    let status = raft.status();
    assert!(status.stopped, "metrics show the node stopped: {status:?}");
    let fatal = status.fatal.clone().expect("metrics say why");

    // Every later call.
    assert_eq!(
        raft.propose(set("a", "3")).await,
        Err(ProposeError::Stopped)
    );
    assert_eq!(raft.read_index().await, Err(ReadError::Stopped));
    tokio::time::timeout(PATIENCE, raft.shutdown())
        .await
        .expect("shutdown returns");

    // The storage it left is one a restart can use.
    nodes.router.unregister(leader);
    nodes.rafts[leader as usize - 1] = None;
    nodes.restart(leader).await;
    let new_leader = nodes.leader().await;
    nodes
        .raft(new_leader)
        .propose(set("b", "1"))
        .await
        .expect("the cluster commits with the restarted node");
    let index = nodes.raft(new_leader).status().commit_index;
    nodes
        .raft(leader)
        .wait_for(PATIENCE, |m| m.applied_index >= index)
        .await
        .expect("the restarted node catches up");
    for raft in nodes.rafts.iter().flatten() {
        raft.shutdown().await;
    }
    (leader, fatal)
}

/// Arms the storage trap.
pub fn arm_storage(trap: &Trap) {
    trap.storage.store(true, Ordering::SeqCst);
}

/// Arms the state machine trap.
pub fn arm_state_machine(trap: &Trap) {
    trap.state_machine.store(true, Ordering::SeqCst);
}

/// Arms the network trap (the driver panics).
pub fn arm_network(trap: &Trap) {
    trap.network.store(true, Ordering::SeqCst);
}

/// Whether `fatal` is a panic of `task`.
pub fn panicked_in(fatal: &Fatal, task: &str) -> bool {
    matches!(fatal, Fatal::Panicked { task: t, .. } if *t == task)
}
