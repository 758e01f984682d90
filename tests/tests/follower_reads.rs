//! Linearizable reads on followers: the follower asks the leader for a
//! read index, then waits until it has applied it (dissertation §6.4).

use rafter::ReadError;
use rafter_tests::cluster::{test_config, Cluster};

/// A write the leader acknowledged is visible to a linearizable read on
/// any follower, even one that had not applied it when the read began.
#[tokio::test(start_paused = true)]
async fn a_follower_read_sees_every_acknowledged_write() {
    let mut cluster = Cluster::start(3, test_config()).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower_of(leader);
    // The follower hears nothing for a while: writes commit without it.
    cluster.router.block(leader, follower);
    let written = cluster.set(leader, "k", "v1").await.unwrap().index;
    assert!(cluster.raft(follower).status().applied_index < written);
    cluster.router.heal_all();
    let index = cluster.raft(follower).linearizable_read().await.unwrap();
    assert!(
        index >= written,
        "read index {index} before the write {written}"
    );
    let value = cluster
        .raft(follower)
        .with_state_machine(|sm| sm.get("k"))
        .await
        .unwrap();
    assert_eq!(value, Some(b"v1".to_vec()));
    cluster.shutdown().await;
}

/// A follower cut off from its leader never answers a read from its own
/// (possibly stale) state: the read fails, and the caller may retry.
#[tokio::test(start_paused = true)]
async fn a_cut_off_follower_fails_the_read_rather_than_answer_stale() {
    let mut cluster = Cluster::start(3, test_config()).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower_of(leader);
    cluster.set(leader, "k", "v1").await.unwrap();
    cluster.router.isolate(follower);
    cluster.set(leader, "k", "v2").await.unwrap();
    let result = cluster.raft(follower).linearizable_read().await;
    assert!(
        matches!(
            result,
            Err(ReadError::LeadershipLost | ReadError::Timeout(_) | ReadError::NotLeader { .. })
        ),
        "a cut-off follower answered a read: {result:?}"
    );
    cluster.shutdown().await;
}

/// With `Config::lease_reads`, the shipped node answers reads from the
/// leader's lease: on the leader and for followers (which ask the leader),
/// every read still sees the acknowledged write, and `Metrics` counts the
/// reads served by lease. A leader cut off from the others, once another
/// leader wrote, fails the read rather than answer stale.
#[tokio::test(start_paused = true)]
async fn lease_reads_see_acknowledged_writes_and_are_counted() {
    let config = test_config().with_lease_reads(true);
    let mut cluster = Cluster::start(3, config).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower_of(leader);
    let written = cluster.set(leader, "k", "v1").await.unwrap().index;
    for node in [leader, follower, leader, follower] {
        let index = cluster.raft(node).linearizable_read().await.unwrap();
        assert!(index >= written, "read index {index} before {written}");
        let value = cluster
            .raft(node)
            .with_state_machine(|sm| sm.get("k"))
            .await
            .unwrap();
        assert_eq!(value, Some(b"v1".to_vec()));
    }
    let served = cluster.raft(leader).status().lease_reads_served;
    assert!(served > 0, "no read was served by lease");

    // Cut off, the leader's lease runs out before the others can elect
    // another leader and write; after that it must not answer.
    cluster.router.isolate(leader);
    let others: Vec<_> = cluster
        .running()
        .into_iter()
        .filter(|&n| n != leader)
        .collect();
    let new_leader = cluster.leader_among(&others).await;
    cluster.set(new_leader, "k", "v2").await.unwrap();
    let result = cluster.raft(leader).linearizable_read().await;
    assert!(
        result.is_err(),
        "the cut-off old leader answered a read after another leader wrote: {result:?}"
    );
    cluster.shutdown().await;
}
