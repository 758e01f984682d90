//! Three Rafter nodes in one process on the production adapters: each
//! keeps its log in `rafter-redb` (`RedbStorage`, fsync on every write) and
//! its state in redb too (`RedbKv`, the data and the applied index in one
//! transaction), and they talk over `rafter-quic` on 127.0.0.1 with mutual
//! TLS (certificates issued here by a fresh cluster CA). The program
//! elects a leader, writes through a follower's hint, reads linearizably
//! through the state machine's own read handle, restarts a follower from its
//! directories and checks it kept everything.
//!
//! ```sh
//! cargo run -p rafter-tests --example redb_quic_cluster
//! ```
//!
//! Data lives in a temporary directory removed at exit. Every step has a
//! deadline, and the program exits with an error if one is missed or a
//! check fails, so CI runs it as a test.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rafter::{Config, Membership, NodeId, ProposeError, Raft};
use rafter_quic::{ClusterCa, QuicHandle, QuicNetwork, TlsMode, TransportConfig};
use rafter_redb::{RedbKv, RedbKvCommand, RedbStorage};

type Error = Box<dyn std::error::Error>;

/// How long any one step may take before the program gives up.
const PATIENCE: Duration = Duration::from_secs(30);

struct Node {
    raft: Raft<RedbKv>,
    /// The state machine's read handle: a clone of what the node applies to.
    kv: RedbKv,
    network: QuicHandle,
}

/// Opens node `id`'s endpoint on a free port of 127.0.0.1, with a
/// certificate for `id` issued by `ca`.
fn bind(ca: &ClusterCa, id: NodeId, config: &Config, port: u16) -> Result<QuicNetwork, Error> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let tls = TlsMode::MutualTls(ca.issue_node_cert(id)?);
    // The transport's frame limit follows the Raft config's message limit.
    let transport = TransportConfig::for_raft(config)?;
    Ok(QuicNetwork::bind(id, addr, tls, transport)?)
}

/// Starts node `id` on the stores in `dir` (created if new) and `network`,
/// and routes the network's inbound messages to it.
async fn start(
    id: NodeId,
    dir: &Path,
    config: &Config,
    members: &Membership,
    network: QuicNetwork,
) -> Result<Node, Error> {
    let storage = RedbStorage::open(dir.join("raft"))?;
    let kv = RedbKv::open(dir.join("state"))?;
    let handle = network.handle();
    let raft = Raft::start(
        id,
        config.clone(),
        Some(members.clone()),
        storage,
        network,
        kv.clone(),
    )
    .await?;
    let inbox = raft.clone();
    handle
        .set_inbound(move |message| {
            // A full inbox drops the message; Raft sends it again.
            let _ = inbox.receive(message);
        })
        .map_err(|_| "inbound sink set twice")?;
    Ok(Node {
        raft,
        kv,
        network: handle,
    })
}

/// Proposes `command` through node `*via`, following `NotLeader` hints;
/// leaves in `*via` the node that took it, for the next write.
async fn write(
    nodes: &BTreeMap<NodeId, Node>,
    via: &mut NodeId,
    command: RedbKvCommand,
) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let id = via;
    loop {
        match nodes[id].raft.propose(command.clone()).await {
            Ok(_) => return Ok(()),
            Err(ProposeError::NotLeader {
                leader_hint,
                leader_addr,
            }) if tokio::time::Instant::now() < deadline => {
                println!("node {id} is not the leader; hint: {leader_hint:?} at {leader_addr:?}");
                match leader_hint.filter(|hint| nodes.contains_key(hint)) {
                    Some(leader) => *id = leader,
                    None => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let root = tempfile::tempdir()?;
    let config = Config::default().with_tick_interval(Duration::from_millis(20));
    let ca = ClusterCa::generate("rafter-example")?;

    // Bind first: the membership names each node by its address.
    let mut networks = BTreeMap::new();
    for id in 1..=3 {
        networks.insert(id, bind(&ca, id, &config, 0)?);
    }
    let mut addrs = BTreeMap::new();
    for (&id, network) in &networks {
        addrs.insert(id, network.handle().local_addr()?);
    }
    let members = Membership::new_voters(addrs.iter().map(|(&id, addr)| (id, addr.to_string())));
    let mut nodes = BTreeMap::new();
    for (id, network) in networks {
        let dir = root.path().join(format!("node-{id}"));
        nodes.insert(id, start(id, &dir, &config, &members, network).await?);
    }

    nodes[&1]
        .raft
        .wait_for(PATIENCE, |m| m.leader.is_some())
        .await
        .ok_or("no leader elected")?;
    let (leader, addr) = nodes[&1].raft.leader().ok_or("the leader is gone again")?;
    println!("leader: node {leader} at {addr:?}");

    let follower = *nodes
        .keys()
        .find(|&&id| id != leader)
        .ok_or("no follower")?;
    let mut via = follower;
    for i in 0..10 {
        let command = RedbKvCommand::Append {
            key: "log".into(),
            suffix: format!("{i},"),
        };
        write(&nodes, &mut via, command).await?;
    }
    println!("10 appends committed, each fsynced by a quorum");

    // A linearizable read: confirm the read index with a quorum, wait
    // until it is applied here, then read through the state machine's
    // handle (a redb read transaction on the applied state).
    let read_index = nodes[&leader].raft.linearizable_read().await?;
    let value = nodes[&leader].kv.get("log")?;
    println!("linearizable read at index {read_index}: log={value:?}");
    let expected: String = (0..10).map(|i| format!("{i},")).collect();
    if value.as_deref() != Some(expected.as_str()) {
        return Err(format!("read {value:?}, expected {expected}").into());
    }

    // Restart the follower from its directories, on its old address: it
    // comes back with its log and applied state from disk.
    let old = nodes.remove(&follower).ok_or("follower")?;
    old.raft.shutdown().await;
    old.network.close().await;
    drop(old);
    let network = bind(&ca, follower, &config, addrs[&follower].port())?;
    let dir = root.path().join(format!("node-{follower}"));
    let node = start(follower, &dir, &config, &members, network).await?;
    node.raft
        .wait_for(PATIENCE, |m| m.applied_index >= read_index)
        .await
        .ok_or("the restarted follower did not catch up")?;
    let value = node.kv.get("log")?;
    println!("node {follower} restarted from disk and reads log={value:?} locally");
    if value.as_deref() != Some(expected.as_str()) {
        return Err(format!("the restarted follower reads {value:?}").into());
    }
    nodes.insert(follower, node);

    for node in nodes.values() {
        node.raft.shutdown().await;
        node.network.close().await;
    }
    Ok(())
}
