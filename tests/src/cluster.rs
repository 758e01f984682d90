//! An in-process cluster harness: start, kill, restart, partition, and wait
//! for conditions, with one helper per thing a test wants to check.

use std::collections::BTreeMap;
use std::time::Duration;

use rafter::testing::{KvCommand, KvResponse, KvStateMachine, MemRouter, MemStorage};
use rafter::{Config, Membership, Metrics, NodeId, ProposeError, Raft, Role};

/// How long a test waits for a condition before failing. Virtual time when
/// the runtime is paused, so generous values cost nothing.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// One node of the harness.
pub struct Node {
    /// The running node, if not killed.
    pub raft: Option<Raft<KvStateMachine>>,
    /// Its storage, kept across kills and restarts.
    pub storage: MemStorage,
    /// Its state machine (rebuilt from the log on restart).
    pub state_machine: KvStateMachine,
    /// A founding member bootstraps the cluster; others join it.
    pub founding: bool,
}

/// A cluster of in-process nodes.
pub struct Cluster {
    /// The network between the nodes.
    pub router: MemRouter,
    /// The nodes by id.
    pub nodes: BTreeMap<NodeId, Node>,
    /// The configuration every node runs with.
    pub config: Config,
    members: Membership,
}

/// A configuration for tests: fast ticks, deterministic seed.
pub fn test_config() -> Config {
    Config::default().with_tick_interval(Duration::from_millis(10))
}

impl Cluster {
    /// Starts `n` founding voters with ids 1..=n.
    pub async fn start(n: u64, config: Config) -> Self {
        let members = Membership::new_voters((1..=n).map(|id| (id, format!("node-{id}"))));
        let mut cluster = Self {
            router: MemRouter::new(config.rng_seed),
            nodes: BTreeMap::new(),
            config,
            members,
        };
        for id in 1..=n {
            cluster.nodes.insert(
                id,
                Node {
                    raft: None,
                    storage: MemStorage::new(),
                    state_machine: KvStateMachine::new(),
                    founding: true,
                },
            );
            cluster.restart(id).await;
        }
        cluster
    }

    /// The running node `id`. Panics if it is killed.
    pub fn raft(&self, id: NodeId) -> &Raft<KvStateMachine> {
        self.nodes[&id]
            .raft
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// Ids of running nodes.
    pub fn running(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raft.is_some())
            .map(|(&id, _)| id)
            .collect()
    }

    /// Starts a new, empty node `id` that waits to be added to the cluster.
    pub async fn add_node(&mut self, id: NodeId) {
        let node = Node {
            raft: None,
            storage: MemStorage::new(),
            state_machine: KvStateMachine::new(),
            founding: false,
        };
        assert!(self.nodes.insert(id, node).is_none(), "node {id} exists");
        self.restart(id).await;
    }

    /// A running node other than `leader`.
    pub fn follower_of(&self, leader: NodeId) -> NodeId {
        let others = self.running().into_iter().filter(|&id| id != leader);
        others
            .min()
            .unwrap_or_else(|| panic!("no running node besides {leader}"))
    }

    /// Stops node `id` cleanly; its storage survives.
    pub async fn kill(&mut self, id: NodeId) {
        self.router.unregister(id);
        if let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.take()) {
            raft.shutdown().await;
        }
    }

    /// (Re)starts node `id` on its storage, with an empty in-memory state
    /// machine that loads its own latest snapshot and replays the log.
    pub async fn restart(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        assert!(node.raft.is_none(), "node {id} is running");
        node.state_machine = node.state_machine.restarted();
        let members = node.founding.then(|| self.members.clone());
        let raft = Raft::start(
            id,
            self.config.clone(),
            members,
            node.storage.clone(),
            self.router.network(id),
            node.state_machine.clone(),
        )
        .await
        .expect("node starts");
        self.router.register(&raft);
        node.raft = Some(raft);
    }

    /// Waits until exactly one running node among `among` leads and all of
    /// them agree on it; returns its id.
    pub async fn leader_among(&self, among: &[NodeId]) -> NodeId {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let statuses: Vec<Metrics> = among.iter().map(|&id| self.raft(id).status()).collect();
            let leaders: Vec<&Metrics> =
                statuses.iter().filter(|m| m.role == Role::Leader).collect();
            if let [leader] = leaders.as_slice() {
                let agreed = statuses
                    .iter()
                    .all(|m| m.leader == Some(leader.id) && m.term == leader.term);
                if agreed {
                    return leader.id;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader among {among:?}: {statuses:#?}"
            );
            tokio::time::sleep(self.config.tick_interval).await;
        }
    }

    /// Waits for a leader all running nodes agree on.
    pub async fn leader(&self) -> NodeId {
        self.leader_among(&self.running()).await
    }

    /// Proposes `key = value` through node `via`.
    pub async fn set(
        &self,
        via: NodeId,
        key: &str,
        value: &str,
    ) -> Result<KvResponse, ProposeError> {
        let command = KvCommand::Set {
            key: key.into(),
            value: value.as_bytes().to_vec(),
        };
        self.raft(via).propose(command).await
    }

    /// Waits until every node in `ids` has applied at least `index`.
    pub async fn wait_applied(&self, ids: &[NodeId], index: u64) {
        for &id in ids {
            let reached = self
                .raft(id)
                .wait_for(PATIENCE, |m| m.applied_index >= index)
                .await;
            assert!(
                reached.is_some(),
                "node {id} did not apply {index}: {:#?}",
                self.raft(id).status()
            );
        }
    }

    /// Checks that the nodes in `ids` applied the same sequence and hold
    /// the same data: waits until each has applied `index` and all have
    /// applied the same last entry, then compares fingerprints and maps.
    pub async fn check_same_state(&self, ids: &[NodeId], index: u64) {
        self.wait_applied(ids, index).await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let applied: Vec<_> = ids
                .iter()
                .map(|id| self.nodes[id].state_machine.applied_log_id())
                .collect();
            if applied.windows(2).all(|w| w[0] == w[1]) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nodes {ids:?} never converged: {applied:?}"
            );
            tokio::time::sleep(self.config.tick_interval).await;
        }
        let first = &self.nodes[&ids[0]].state_machine;
        for &id in &ids[1..] {
            let other = &self.nodes[&id].state_machine;
            assert_eq!(
                other.fingerprint(),
                first.fingerprint(),
                "node {id} applied a different sequence"
            );
            assert_eq!(other.data(), first.data(), "node {id} holds different data");
        }
    }

    /// Shuts every node down.
    pub async fn shutdown(&mut self) {
        for id in self.running() {
            self.kill(id).await;
        }
    }
}
