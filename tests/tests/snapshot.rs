//! Snapshots and log compaction on whole in-process clusters.

use std::time::Duration;

use rafter::testing::KvCommand;
use rafter::Config;
use rafter_tests::cluster::{test_config, Cluster, PATIENCE};

fn compacting_config() -> Config {
    Config {
        snapshot_interval_entries: 100,
        snapshot_trailing_entries: 10,
        ..test_config()
    }
}

async fn write(cluster: &Cluster, via: u64, count: u64) -> u64 {
    let mut last = 0;
    for i in 0..count {
        last = cluster
            .set(via, &format!("k{}", i % 37), &i.to_string())
            .await
            .unwrap()
            .index;
    }
    last
}

#[tokio::test(start_paused = true)]
async fn a_follower_kept_down_while_the_leader_compacts_catches_up_through_a_snapshot() {
    let mut cluster = Cluster::start(3, compacting_config()).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower_of(leader);
    cluster.kill(follower).await;
    let last = write(&cluster, leader, 500).await;
    let leader_log = cluster.nodes[&leader].storage.all_entries();
    assert!(leader_log[0].index > 1, "the leader purged its log");
    cluster.restart(follower).await;
    cluster.check_same_state(&cluster.running(), last).await;
    let (_, installs) = cluster.nodes[&follower].state_machine.snapshot_counts();
    assert!(installs >= 1, "the follower caught up through a snapshot");
    // After the install, it follows from the log again.
    let more = write(&cluster, leader, 20).await;
    cluster.check_same_state(&cluster.running(), more).await;
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_restarted_node_loads_its_snapshot_then_replays_the_log() {
    let mut cluster = Cluster::start(3, compacting_config()).await;
    let leader = cluster.leader().await;
    let last = write(&cluster, leader, 350).await;
    cluster.check_same_state(&cluster.running(), last).await;
    let before = cluster.nodes[&leader].state_machine.data();
    cluster.shutdown().await;
    for id in 1..=3 {
        cluster.restart(id).await;
    }
    cluster.check_same_state(&cluster.running(), last).await;
    for id in 1..=3 {
        assert_eq!(cluster.nodes[&id].state_machine.data(), before, "node {id}");
    }
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_during_snapshot_install_leaves_the_old_state_and_the_transfer_restarts() {
    let mut config = compacting_config();
    config.append_bytes_max = 64; // many small chunks
    let mut cluster = Cluster::start(3, config).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower_of(leader);
    let first = write(&cluster, leader, 30).await;
    cluster.check_same_state(&cluster.running(), first).await;
    cluster.kill(follower).await;
    let last = write(&cluster, leader, 400).await;
    // Slow the network so the transfer spans many ticks, then crash the
    // follower while chunks arrive.
    cluster.router.set_delay(Some(Duration::from_millis(5)));
    cluster.restart(follower).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cluster.nodes[&follower].state_machine.receiving_snapshot() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot transfer started"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let applied_before = cluster.raft(follower).status().applied_index;
    cluster.kill(follower).await;
    assert!(applied_before < last, "the crash came before the install");
    cluster.router.set_delay(None);
    cluster.restart(follower).await;
    let status = cluster.raft(follower).status();
    assert!(
        status.applied_index <= applied_before.max(first),
        "old state: {status:?}"
    );
    cluster.check_same_state(&cluster.running(), last).await;
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_log_stays_bounded_over_one_hundred_thousand_proposals() {
    let config = Config {
        snapshot_interval_entries: 5_000,
        snapshot_trailing_entries: 500,
        ..test_config()
    };
    let mut cluster = Cluster::start(3, config).await;
    let leader = cluster.leader().await;
    let raft = cluster.raft(leader).clone();
    let clients: Vec<_> = (0..100)
        .map(|c| {
            let raft = raft.clone();
            tokio::spawn(async move {
                let mut last = 0;
                for i in 0..1_000u32 {
                    let command = KvCommand::Set {
                        key: format!("c{c}"),
                        value: i.to_le_bytes().to_vec(),
                    };
                    last = raft.propose(command).await.unwrap().index;
                }
                last
            })
        })
        .collect();
    let mut last = 0;
    for client in clients {
        last = last.max(client.await.unwrap());
    }
    cluster.check_same_state(&cluster.running(), last).await;
    for id in cluster.running() {
        let log = cluster.nodes[&id].storage.all_entries();
        assert!(
            log[0].index > 90_000,
            "node {id}: first index {} did not advance",
            log[0].index
        );
        assert!(
            log.len() < 12_000,
            "node {id}: log holds {} entries",
            log.len()
        );
    }
    cluster.shutdown().await;
}
