//! Three Rafter nodes in one process on the in-memory parts of
//! `rafter::testing`: elect a leader, write through whichever node the
//! caller picked (following `NotLeader` to the leader), read linearizably,
//! then grow the cluster to four voters and shrink it again.
//!
//! ```sh
//! cargo run -p rafter --example in_memory_cluster
//! ```
//!
//! Every step has a deadline; the program exits with an error if one is
//! missed or a check fails, so CI runs it as a test.

use std::collections::BTreeSet;
use std::time::Duration;

use rafter::testing::{KvCommand, KvStateMachine, MemRouter, MemStorage};
use rafter::{Config, Membership, NodeId, ProposeError, Raft, Role};

/// How long any one step may take before the example gives up.
const PATIENCE: Duration = Duration::from_secs(30);

type Node = Raft<KvStateMachine>;

/// Starts node `id` on fresh in-memory storage, registered with `router`.
/// Founding members pass the initial membership; a node that joins later
/// passes `None` and waits to be added.
async fn start(
    id: NodeId,
    router: &MemRouter,
    members: Option<Membership>,
) -> Result<Node, Box<dyn std::error::Error>> {
    let raft = Raft::start(
        id,
        Config::default(),
        members,
        MemStorage::new(),
        router.network(id),
        KvStateMachine::new(),
    )
    .await?;
    router.register(&raft);
    Ok(raft)
}

/// Proposes `command` through `nodes[first]`, following the leader hint of
/// every `NotLeader` (and waiting out an election) until a leader answers.
async fn write(
    nodes: &[Node],
    first: usize,
    command: KvCommand,
) -> Result<u64, Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut node = &nodes[first];
    loop {
        match node.propose(command.clone()).await {
            Ok(response) => return Ok(response.index),
            Err(ProposeError::NotLeader {
                leader_hint,
                leader_addr,
            }) if tokio::time::Instant::now() < deadline => {
                println!(
                    "node {} is not the leader; hint: {leader_hint:?} at {leader_addr:?}",
                    node.id()
                );
                match leader_hint.and_then(|id| nodes.iter().find(|n| n.id() == id)) {
                    Some(leader) => node = leader,
                    None => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = MemRouter::new(Config::default().rng_seed);
    let members = Membership::new_voters((1..=3).map(|id| (id, format!("mem://node-{id}"))));
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(id, &router, Some(members.clone())).await?);
    }

    // 1. An election: wait until node 1 knows a leader.
    nodes[0]
        .wait_for(PATIENCE, |m| m.leader.is_some())
        .await
        .ok_or("no leader elected")?;
    let (leader, addr) = nodes[0].leader().ok_or("the leader is gone again")?;
    println!("leader: node {leader} at {addr:?}");

    // 2. A write, sent to a node that may not lead: `write` follows hints.
    let follower = nodes
        .iter()
        .position(|n| n.id() != leader)
        .ok_or("no follower")?;
    let command = KvCommand::Set {
        key: "greeting".into(),
        value: b"hello".to_vec(),
    };
    let index = write(&nodes, follower, command).await?;
    println!("greeting=hello applied at index {index}");

    // 3. A linearizable read on the leader: a read index confirmed by a
    // quorum, applied here, then the state machine read after it.
    // Handles are cheap clones of one node.
    let leader_node = nodes
        .iter()
        .find(|n| n.id() == leader)
        .ok_or("leader not found")?
        .clone();
    let read_index = leader_node.linearizable_read().await?;
    let value = leader_node
        .with_state_machine(|sm| sm.get("greeting"))
        .await?;
    println!(
        "linearizable read at index {read_index}: {:?}",
        value.as_deref().map(String::from_utf8_lossy)
    );
    if value.as_deref() != Some(b"hello".as_slice()) {
        return Err(format!("read {value:?}, wrote hello").into());
    }

    // 4. Membership: node 4 joins as a learner, is promoted to voter
    // (through a joint configuration), then a follower is removed.
    nodes.push(start(4, &router, None).await?);
    leader_node.add_learner(4, "mem://node-4".into()).await?;
    let voters: BTreeSet<NodeId> = [1, 2, 3, 4].into();
    leader_node.change_membership(voters).await?;
    println!("voters: {:?}", leader_node.status().membership.voters);
    let removed = nodes
        .iter()
        .map(Node::id)
        .find(|&id| id != leader && id != 4)
        .ok_or("no follower to remove")?;
    leader_node.remove_node(removed).await?;
    let status = leader_node.status();
    println!(
        "removed node {removed}; voters: {:?}",
        status.membership.voters
    );
    if status.role != Role::Leader || status.membership.voters.len() != 3 {
        return Err(format!("unexpected state after the changes: {status:?}").into());
    }

    // 5. The new voter has the data.
    let new_voter = nodes.iter().find(|n| n.id() == 4).ok_or("node 4")?;
    new_voter
        .wait_for(PATIENCE, |m| m.applied_index >= read_index)
        .await
        .ok_or("node 4 did not catch up")?;
    let value = new_voter
        .with_state_machine(|sm| sm.get("greeting"))
        .await?;
    println!(
        "node 4 reads {:?} locally",
        value.as_deref().map(String::from_utf8_lossy)
    );

    for node in &nodes {
        node.shutdown().await;
    }
    Ok(())
}
