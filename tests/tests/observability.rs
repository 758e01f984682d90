//! What a node reports about its peers: `Metrics::peers` on the leader.

use rafter::ReplicationState;
use rafter_tests::cluster::{test_config, Cluster, PATIENCE};

/// The leader reports every peer in Replicate at its log's end, with the
/// time of its last answer; a follower cut off keeps its old time while
/// the other's moves on, and falls behind; followers report no peers.
#[tokio::test(start_paused = true)]
async fn the_leader_reports_each_peers_replication_and_last_answer() {
    let mut cluster = Cluster::start(3, test_config()).await;
    let leader = cluster.leader().await;
    let last = cluster.set(leader, "k", "v").await.unwrap().index;
    let raft = cluster.raft(leader).clone();
    let metrics = raft
        .wait_for(PATIENCE, |m| {
            m.peers.len() == 2
                && m.peers.values().all(|p| {
                    p.state == ReplicationState::Replicate
                        && p.match_index == last
                        && p.next_index == last + 1
                        && p.last_ack.is_some()
                })
        })
        .await
        .unwrap_or_else(|| panic!("peers never in sync: {:#?}", raft.status().peers));
    for (id, peer) in &metrics.peers {
        assert_eq!(metrics.replication[id], peer.match_index);
    }

    let cut = cluster.follower_of(leader);
    let other = (1..=3).find(|&id| id != leader && id != cut).unwrap();
    cluster.router.isolate(cut);
    let cut_ack = raft.status().peers[&cut].last_ack;
    // Several heartbeat rounds later, the other follower has answered again
    // and the cut one has not.
    let election = cluster.config.tick_interval * cluster.config.election_ticks_min as u32;
    tokio::time::sleep(election).await;
    let metrics = raft
        .wait_for(PATIENCE, |m| m.peers[&other].last_ack > cut_ack)
        .await
        .expect("the connected follower answers heartbeats");
    assert_eq!(
        metrics.peers[&cut].last_ack, cut_ack,
        "the cut follower answered"
    );
    cluster.set(leader, "k", "w").await.unwrap();
    let metrics = raft
        .wait_for(PATIENCE, |m| {
            m.peers[&cut].match_index < m.peers[&other].match_index
        })
        .await
        .expect("the cut follower falls behind");
    assert!(metrics.peers[&cut].last_ack.is_some());

    for id in [cut, other] {
        assert!(
            cluster.raft(id).status().peers.is_empty(),
            "node {id} is no leader"
        );
    }
    cluster.shutdown().await;
}
