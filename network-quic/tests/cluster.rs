//! Real Raft nodes over QUIC on 127.0.0.1: a 3-node cluster elects,
//! replicates 10,000 proposals, survives the leader's endpoint closing, and
//! the old leader catches up when it returns (restarted on its storage and
//! its address).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rafter::testing::{KvCommand, KvStateMachine, MemStorage};
use rafter::{Config, Membership, NodeId, Raft, Role};
use rafter_quic::{ClusterCa, QuicHandle, QuicNetwork, TlsMode, TransportConfig};

/// Time allowed for the 10,000 proposals (a debug build on 2 cores).
const REPLICATION_PATIENCE: Duration = Duration::from_secs(120);
/// Proposals in flight at once.
const PROPOSALS_IN_FLIGHT_MAX: usize = 256;

struct QuicNode {
    raft: Raft<KvStateMachine>,
    network: QuicHandle,
    storage: MemStorage,
    state_machine: KvStateMachine,
}

fn raft_config() -> Config {
    Config::default().with_tick_interval(Duration::from_millis(20))
}

/// Starts node `id` on `network` and binds the network's inbound sink to it.
async fn start(
    id: NodeId,
    network: QuicNetwork,
    members: &Membership,
    storage: MemStorage,
) -> QuicNode {
    let handle = network.handle();
    let state_machine = KvStateMachine::new();
    let raft = Raft::start(
        id,
        raft_config(),
        Some(members.clone()),
        storage.clone(),
        network,
        state_machine.clone(),
    )
    .await
    .unwrap();
    let sink = raft.clone();
    handle
        .set_inbound(move |message| {
            // Full inbox: dropped, Raft retries.
            let _ = sink.receive(message);
        })
        .unwrap();
    QuicNode {
        raft,
        network: handle,
        storage,
        state_machine,
    }
}

fn bind(ca: &ClusterCa, id: NodeId, addr: SocketAddr) -> QuicNetwork {
    QuicNetwork::bind(
        id,
        addr,
        TlsMode::MutualTls(ca.issue_node_cert(id).unwrap()),
        // The frame limit from the Raft config, checked against it.
        with_test_timers(TransportConfig::for_raft(&raft_config()).unwrap()),
    )
    .unwrap()
}

/// The leader all of `nodes` agree on, once they do.
async fn agreed_leader(nodes: &BTreeMap<NodeId, QuicNode>) -> NodeId {
    let mut leader = None;
    eventually("the nodes agree on a leader", || {
        let views: Vec<_> = nodes.values().map(|node| node.raft.status()).collect();
        let candidate = views.iter().find(|m| m.role == Role::Leader).map(|m| m.id);
        leader = candidate.filter(|&id| {
            views
                .iter()
                .all(|m| m.leader == Some(id) && m.term == views[0].term)
        });
        leader.is_some()
    })
    .await;
    leader.unwrap()
}

/// Proposes `keys` on `leader`, `PROPOSALS_IN_FLIGHT_MAX` at a time; every
/// proposal must succeed.
async fn propose_all(leader: &Raft<KvStateMachine>, keys: std::ops::Range<u64>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(PROPOSALS_IN_FLIGHT_MAX));
    let mut tasks = tokio::task::JoinSet::new();
    for key in keys {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let raft = leader.clone();
        tasks.spawn(async move {
            let command = KvCommand::Set {
                key: format!("key-{key:05}"),
                value: key.to_be_bytes().to_vec(),
            };
            let result = raft.propose(command).await;
            drop(permit);
            result.unwrap_or_else(|error| panic!("proposal {key} failed: {error}"))
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
}

/// Waits until every node in `nodes` applied `index` and they hold the
/// same data.
async fn converged(nodes: &BTreeMap<NodeId, QuicNode>, index: u64, patience: Duration) {
    for (id, node) in nodes {
        node.raft
            .wait_for(patience, |m| m.applied_index >= index)
            .await
            .unwrap_or_else(|| panic!("node {id} did not apply {index}: {:?}", node.raft.status()));
    }
    let mut views = nodes.values().map(|node| node.state_machine.data());
    let first = views.next().unwrap();
    assert!(views.all(|data| data == first), "state machines diverged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_quic_replicate_survive_the_leader_endpoint_closing_and_catch_up() {
    init_tracing();
    let ca = ClusterCa::generate("cluster-test").unwrap();
    let networks: Vec<QuicNetwork> = (1..=3).map(|id| bind(&ca, id, localhost())).collect();
    let addrs: BTreeMap<NodeId, SocketAddr> = networks
        .iter()
        .map(|network| {
            (
                network.handle().node_id(),
                network.handle().local_addr().unwrap(),
            )
        })
        .collect();
    let members = Membership::new_voters(addrs.iter().map(|(id, addr)| (*id, addr.to_string())));
    let mut nodes = BTreeMap::new();
    for network in networks {
        let id = network.handle().node_id();
        nodes.insert(id, start(id, network, &members, MemStorage::new()).await);
    }

    // Elect, then replicate 10,000 proposals through the leader.
    let old_leader = agreed_leader(&nodes).await;
    tokio::time::timeout(
        REPLICATION_PATIENCE,
        propose_all(&nodes[&old_leader].raft, 0..10_000),
    )
    .await
    .expect("10,000 proposals in time");
    let commit = nodes[&old_leader].raft.status().commit_index;
    assert!(commit >= 10_000, "commit {commit}");
    converged(&nodes, commit, REPLICATION_PATIENCE).await;
    assert_eq!(nodes[&old_leader].state_machine.data().len(), 10_000);
    for node in nodes.values() {
        let lane_stats = node.network.stats();
        for lane in lane_stats.lanes.values() {
            assert!(lane.queued_msgs_high_water <= test_config().queue_msgs_max);
            assert!(lane.queued_bytes_high_water <= test_config().queue_bytes_max);
        }
        assert_eq!(lane_stats.inbound.frame_errors, 0);
        assert_eq!(lane_stats.inbound.sender_mismatches, 0);
    }

    // The leader's endpoint closes: the other two elect a new leader, which
    // commits more.
    let old = nodes.remove(&old_leader).unwrap();
    old.network.close().await;
    let new_leader = agreed_leader(&nodes).await;
    assert_ne!(new_leader, old_leader);
    propose_all(&nodes[&new_leader].raft, 10_000..10_100).await;
    let commit = nodes[&new_leader].raft.status().commit_index;
    converged(&nodes, commit, PATIENCE).await;

    // The old leader returns: restarted on its own storage and address, it
    // learns of the new term, catches up and applies everything.
    old.raft.shutdown().await;
    let old_addr = addrs[&old_leader];
    let mut network = None;
    eventually("the old leader's port is free", || {
        if network.is_none() && std::net::UdpSocket::bind(old_addr).is_ok() {
            network = Some(bind(&ca, old_leader, old_addr));
        }
        network.is_some()
    })
    .await;
    let returned = start(old_leader, network.unwrap(), &members, old.storage.clone()).await;
    nodes.insert(old_leader, returned);
    converged(&nodes, commit, PATIENCE).await;
    assert_eq!(nodes[&old_leader].state_machine.data().len(), 10_100);

    for node in nodes.values() {
        node.raft.shutdown().await;
        node.network.close().await;
    }
}
