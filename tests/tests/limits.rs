//! Memory stays bounded under load (issue 13, item 5).

use std::time::Duration;

use rafter::testing::KvCommand;
use rafter::Role;
use rafter_tests::cluster::{test_config, Cluster};
use tokio::time::Instant;

/// A leader cut off from both followers cannot commit, so without a bound
/// on uncommitted bytes its log (and the memory that holds it) grows with
/// every proposal until it steps down. 256 impatient clients (each gives up
/// waiting after a tick and proposes again) for 30 s of paused time.
#[tokio::test(start_paused = true)]
async fn a_leader_cut_off_from_its_followers_stays_under_its_uncommitted_bound() {
    let mut config = test_config();
    config.uncommitted_bytes_max = 16 * 1024;
    let tick = config.tick_interval;
    let bound = config.uncommitted_bytes_max;
    let mut cluster = Cluster::start(3, config).await;
    let leader = cluster.leader().await;
    let raft = cluster.raft(leader).clone();
    cluster.router.isolate(leader);

    let value = vec![b'v'; 100];
    let end = Instant::now() + Duration::from_secs(30);
    let clients: Vec<_> = (0..256)
        .map(|c| {
            let raft = raft.clone();
            let value = value.clone();
            tokio::spawn(async move {
                let mut refused = 0u64;
                while Instant::now() < end {
                    let command = KvCommand::Set {
                        key: format!("k{c}"),
                        value: value.clone(),
                    };
                    let outcome = tokio::time::timeout(tick, raft.propose(command)).await;
                    if matches!(
                        outcome,
                        Ok(Err(rafter::ProposeError::TooManyRequests { .. }))
                    ) {
                        refused += 1;
                    }
                    if matches!(outcome, Ok(Err(_))) {
                        // Refused, or the leader stepped down: back off.
                        tokio::time::sleep(tick * 10).await;
                    }
                }
                refused
            })
        })
        .collect();
    // Each entry holds at least its 100-byte value; one batch may start
    // past the bound (an empty uncommitted log always takes one).
    let batch_bytes = 256 * 130;
    let entries_max = (bound + batch_bytes) / 100;
    let mut most = 0;
    let mut led_ticks = 0;
    while Instant::now() < end {
        let m = raft.status();
        if m.role == Role::Leader {
            led_ticks += 1;
        }
        most = most.max(m.last_log_index - m.commit_index);
        tokio::time::sleep(tick).await;
    }
    let mut refused = 0;
    for client in clients {
        refused += client.await.expect("client runs");
    }
    assert!(
        most <= entries_max,
        "{most} uncommitted entries on the cut-off leader, over {entries_max} \
         ({bound} bytes and a batch); led for {led_ticks} ticks, {refused} refusals"
    );
    cluster.shutdown().await;
}
