//! Real Raft nodes on redb: three nodes of `rafter` on `RedbStorage` (the
//! log) and `RedbKv` (the state machine), each in its own temporary
//! directory, talking through `rafter::testing::MemRouter`. One follower is
//! shut down and started again from the same directories: it must come back
//! with its log and its applied state from disk (applying nothing twice),
//! then catch up with what the others committed meanwhile.
//!
//! Real time (the stores fsync), so the ticks are short and every wait has
//! a deadline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rafter::testing::MemRouter;
use rafter::{Config, Membership, NodeId, ProposeError, Raft, RaftStorage, Role, StateMachine};
use rafter_redb::{RedbKv, RedbKvCommand, RedbStorage};

const NODES: u64 = 3;
/// Concurrent clients, each proposing in order.
const CLIENTS: u64 = 8;
/// How long any condition may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

fn config() -> Config {
    Config::default().with_tick_interval(Duration::from_millis(20))
}

struct Node {
    raft: Raft<RedbKv>,
    /// A handle on the node's state machine, to read what it applied.
    kv: RedbKv,
}

struct Cluster {
    router: MemRouter,
    members: Membership,
    root: PathBuf,
    nodes: BTreeMap<NodeId, Node>,
}

impl Cluster {
    fn directory(&self, id: NodeId) -> PathBuf {
        self.root.join(format!("node-{id}"))
    }

    /// Starts node `id` on the stores in its directory (new or not).
    async fn start_node(&mut self, id: NodeId, storage: RedbStorage, kv: RedbKv) {
        let raft = Raft::start(
            id,
            config(),
            Some(self.members.clone()),
            storage,
            self.router.network(id),
            kv.clone(),
        )
        .await
        .unwrap_or_else(|e| panic!("node {id} starts: {e}"));
        self.router.register(&raft);
        assert!(self.nodes.insert(id, Node { raft, kv }).is_none());
    }

    async fn start(root: &Path) -> Self {
        let mut cluster = Self {
            router: MemRouter::new(7),
            members: Membership::new_voters((1..=NODES).map(|id| (id, format!("node-{id}")))),
            root: root.to_path_buf(),
            nodes: BTreeMap::new(),
        };
        for id in 1..=NODES {
            let (storage, kv) = open_stores(&cluster.directory(id));
            cluster.start_node(id, storage, kv).await;
        }
        cluster
    }

    /// Shuts node `id` down; its directories stay.
    async fn shutdown_node(&mut self, id: NodeId) {
        self.router.unregister(id);
        let node = self.nodes.remove(&id).expect("running node");
        node.raft.shutdown().await;
    }

    /// The leader every running node agrees on.
    async fn leader(&self) -> NodeId {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let statuses: Vec<_> = self.nodes.values().map(|n| n.raft.status()).collect();
            let leaders: Vec<_> = statuses.iter().filter(|m| m.role == Role::Leader).collect();
            if let [leader] = leaders.as_slice() {
                if statuses
                    .iter()
                    .all(|m| m.leader == Some(leader.id) && m.term == leader.term)
                {
                    return leader.id;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader: {statuses:#?}"
            );
            tokio::time::sleep(config().tick_interval).await;
        }
    }

    /// `CLIENTS` clients each set their keys `per_client` times, in order
    /// (retrying on another leader: a `Put` repeated is harmless).
    async fn propose_all(&self, round: &str, per_client: u64) {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let rafts: Vec<Raft<RedbKv>> =
                    self.nodes.values().map(|n| n.raft.clone()).collect();
                let round = round.to_owned();
                tokio::spawn(async move {
                    for i in 0..per_client {
                        let command = RedbKvCommand::Put {
                            key: key(client, i),
                            value: format!("{round}-{i}"),
                        };
                        propose(&rafts, command).await;
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.expect("client task");
        }
    }

    /// Waits until every running node holds `expected` for each key and all
    /// have applied the same last entry. (A proposal's answer comes before
    /// the metrics show its index, so the nodes are polled for the state
    /// itself.)
    async fn wait_converged(&self, expected: &BTreeMap<String, String>) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            // The state machine's contents can be visible before the
            // node's metrics count the batch as applied, so convergence
            // also waits for every node to have applied all it knows is
            // committed.
            let statuses: Vec<_> = self.nodes.values().map(|n| n.raft.status()).collect();
            let applied: Vec<u64> = statuses.iter().map(|m| m.applied_index).collect();
            let all_applied = statuses.iter().all(|m| m.applied_index == m.commit_index);
            let differing: Vec<(NodeId, &String)> = self
                .nodes
                .iter()
                .flat_map(|(id, node)| {
                    expected
                        .iter()
                        .filter(|(key, value)| node.kv.get(key) != Ok(Some((*value).clone())))
                        .map(move |(key, _)| (*id, key))
                })
                .collect();
            if differing.is_empty() && all_applied && applied.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no convergence: applied {applied:?}, differing (node, key) {differing:?}"
            );
            tokio::time::sleep(config().tick_interval).await;
        }
    }

    async fn shutdown(mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.shutdown_node(id).await;
        }
    }
}

fn key(client: u64, i: u64) -> String {
    format!("client-{client}-key-{}", i % 5)
}

/// What the keys hold after each client set them `per_client` times in
/// `round`.
fn expected_state(round: &str, per_client: u64) -> BTreeMap<String, String> {
    let mut state = BTreeMap::new();
    for client in 0..CLIENTS {
        for i in 0..per_client {
            state.insert(key(client, i), format!("{round}-{i}"));
        }
    }
    state
}

fn open_stores(dir: &Path) -> (RedbStorage, RedbKv) {
    let storage = RedbStorage::open(dir.join("raft")).expect("open the log store");
    let kv = RedbKv::open(dir.join("state")).expect("open the state machine");
    (storage, kv)
}

/// Proposes through whichever node leads, until it is applied.
async fn propose(rafts: &[Raft<RedbKv>], command: RedbKvCommand) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let leader = rafts.iter().find(|r| r.status().role == Role::Leader);
        if let Some(leader) = leader {
            match leader.propose(command.clone()).await {
                Ok(_) => return,
                Err(
                    ProposeError::NotLeader { .. }
                    | ProposeError::ProposalDropped { .. }
                    | ProposeError::Overwritten { .. }
                    | ProposeError::Timeout(_)
                    | ProposeError::Stopped,
                ) => {}
                Err(e) => panic!("proposal failed: {e}"),
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader took {command:?}"
        );
        tokio::time::sleep(config().tick_interval).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_comes_back_with_its_log_and_catches_up() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut cluster = Cluster::start(root.path()).await;
    let leader = cluster.leader().await;

    // 200 commands, applied everywhere.
    cluster.propose_all("first", 25).await;
    cluster.wait_converged(&expected_state("first", 25)).await;

    // Shut a follower down and remember what it had.
    let follower = (1..=NODES).find(|&id| id != leader).expect("a follower");
    let before = cluster.nodes[&follower].raft.status();
    assert!(before.applied_index >= 200, "{before:#?}");
    cluster.shutdown_node(follower).await;

    // 120 more commands, committed by the other two.
    cluster.propose_all("second", 15).await;
    let expected = expected_state("second", 15);
    cluster.wait_converged(&expected).await;

    // The follower's directories hold its log and its applied state.
    let (mut storage, mut kv) = open_stores(&cluster.directory(follower));
    let state = storage.initial_state().await.expect("initial state");
    assert!(
        state.last_log_id.index >= before.last_log_index,
        "the log went back from {} to {:?}",
        before.last_log_index,
        state.last_log_id
    );
    assert!(state.hard_state.commit >= before.applied_index);
    let log = storage
        .entries(
            state.purged.index + 1..state.last_log_id.index + 1,
            u64::MAX,
        )
        .await
        .expect("the whole log reads back");
    assert_eq!(
        log.len() as u64,
        state.last_log_id.index - state.purged.index
    );
    assert_eq!(log.last().map(|e| e.log_id()), Some(state.last_log_id));
    let applied_on_disk = kv.applied().await.expect("applied");
    assert!(
        applied_on_disk.index >= before.applied_index,
        "the state machine went back from {} to {applied_on_disk:?}",
        before.applied_index
    );
    assert_eq!(
        kv.get(&key(0, 0)),
        Ok(Some("first-20".into())),
        "the restarted node starts from its own applied state"
    );

    // Started again from them, it catches up: the same log, the same
    // applied index and state as the others.
    cluster.start_node(follower, storage, kv).await;
    cluster.wait_converged(&expected).await;
    let leader = cluster.leader().await;
    let leader_last = cluster.nodes[&leader].raft.status().last_log_index;
    let caught_up = cluster.nodes[&follower]
        .raft
        .wait_for(PATIENCE, |m| m.last_log_index == leader_last)
        .await;
    assert!(caught_up.is_some(), "the follower's log did not catch up");
    cluster.shutdown().await;
}
