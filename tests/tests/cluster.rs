//! Whole clusters of in-process nodes (real driver, storage and apply tasks
//! on MemStorage and MemRouter), on a paused tokio clock: elections and
//! timeouts take no wall-clock time and nothing sleeps for real.

use rafter::testing::{KvCommand, MemStorage};
use rafter::{ProposeError, ReadError, Role, TransferError};
use rafter_tests::cluster::{test_config, Cluster, PATIENCE};

async fn elect(n: u64) {
    let mut cluster = Cluster::start(n, test_config()).await;
    let leader = cluster.leader().await;
    let term = cluster.raft(leader).status().term;
    for id in cluster.running() {
        let status = cluster.raft(id).status();
        assert_eq!(status.leader, Some(leader));
        assert_eq!(status.term, term);
        let expected = if id == leader {
            Role::Leader
        } else {
            Role::Follower
        };
        assert_eq!(status.role, expected);
    }
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn three_nodes_elect_one_leader() {
    elect(3).await;
}

#[tokio::test(start_paused = true)]
async fn five_nodes_elect_one_leader() {
    elect(5).await;
}

#[tokio::test(start_paused = true)]
async fn single_node_commits_alone() {
    let mut cluster = Cluster::start(1, test_config()).await;
    let leader = cluster.leader().await;
    let response = cluster.set(leader, "k", "v").await.unwrap();
    assert_eq!(response.previous, None);
    assert_eq!(
        cluster.nodes[&1].state_machine.get("k"),
        Some(b"v".to_vec())
    );
    cluster.shutdown().await;
}

async fn ten_thousand_proposals(n: u64) {
    let mut cluster = Cluster::start(n, test_config()).await;
    let leader = cluster.leader().await;
    let raft = cluster.raft(leader).clone();
    // 50 concurrent clients, 200 proposals each.
    let clients: Vec<_> = (0..50)
        .map(|client| {
            let raft = raft.clone();
            tokio::spawn(async move {
                let mut last = 0;
                for i in 0..200 {
                    let key = format!("c{client}-k{}", i % 7);
                    let command = KvCommand::Set {
                        key,
                        value: i.to_string().into_bytes(),
                    };
                    let response = raft.propose(command).await.expect("proposal succeeds");
                    assert!(response.index > last, "a client's writes apply in order");
                    last = response.index;
                }
                last
            })
        })
        .collect();
    let mut last = 0;
    for client in clients {
        last = last.max(client.await.unwrap());
    }
    let ids = cluster.running();
    cluster.check_same_state(&ids, last).await;
    let applied = cluster.nodes[&leader].state_machine.commands_applied();
    assert_eq!(applied, 10_000, "every proposal applied exactly once");
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn three_nodes_apply_ten_thousand_proposals_in_the_same_order() {
    ten_thousand_proposals(3).await;
}

#[tokio::test(start_paused = true)]
async fn five_nodes_apply_ten_thousand_proposals_in_the_same_order() {
    ten_thousand_proposals(5).await;
}
