//! Reading the state machine through the handle (`Raft::with_state_machine`),
//! alone and after a linearizable read.

use futures::FutureExt;
use rafter::{ProposeError, ReadError};
use rafter_tests::cluster::{test_config, Cluster};

/// A write acknowledged by the leader is visible to a linearizable read on
/// the leader: `linearizable_read`, then `with_state_machine`.
#[tokio::test(start_paused = true)]
async fn a_linearizable_read_then_with_state_machine_sees_the_acknowledged_write() {
    let mut cluster = Cluster::start(3, test_config()).await;
    let leader = cluster.leader().await;
    cluster.set(leader, "k", "v1").await.unwrap();
    let raft = cluster.raft(leader);
    let index = raft.linearizable_read().await.unwrap();
    let (value, applied) = raft
        .with_state_machine(|sm| (sm.get("k"), sm.applied_log_id().index))
        .await
        .unwrap();
    assert_eq!(value, Some(b"v1".to_vec()));
    assert!(applied >= index, "read at {applied}, read index {index}");
    cluster.shutdown().await;
}

/// A panic in the caller's closure is the caller's: it resumes in the
/// caller, and the node serves the next write and read.
#[tokio::test(start_paused = true)]
async fn a_panicking_read_panics_its_caller_and_the_node_goes_on() {
    let mut cluster = Cluster::start(3, test_config()).await;
    let leader = cluster.leader().await;
    let raft = cluster.raft(leader).clone();
    let read = raft.with_state_machine(|_| -> u64 { panic!("the reader's bug") });
    let outcome = std::panic::AssertUnwindSafe(read).catch_unwind().await;
    let payload = outcome.expect_err("the read panics in its caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"the reader's bug"));
    assert!(raft.status().fatal.is_none());
    cluster.set(leader, "k", "v2").await.unwrap();
    let value = raft.with_state_machine(|sm| sm.get("k")).await.unwrap();
    assert_eq!(value, Some(b"v2".to_vec()));
    cluster.shutdown().await;
}

/// A read of a stopped node says so.
#[tokio::test(start_paused = true)]
async fn a_read_of_a_stopped_node_is_stopped() {
    let mut cluster = Cluster::start(1, test_config()).await;
    let leader = cluster.leader().await;
    let raft = cluster.raft(leader).clone();
    cluster.shutdown().await;
    assert_eq!(
        raft.with_state_machine(|sm| sm.get("k")).await,
        Err(ReadError::Stopped)
    );
    assert!(matches!(
        raft.propose(rafter::testing::KvCommand::Delete { key: "k".into() })
            .await,
        Err(ProposeError::Stopped)
    ));
}
