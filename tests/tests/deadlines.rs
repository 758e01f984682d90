//! Every wait has a deadline of its own (issue 13, item 3): with the
//! leader's driver stuck (its network's `send` never returns), every call
//! still resolves by its timeout instead of waiting for the driver.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::Ordering;

use rafter::{MembershipError, ProposeError, ReadError, TransferError};
use rafter_tests::cluster::test_config;
use rafter_tests::trapped::{set, Nodes};
use tokio::time::Instant;

/// Runs `call` and checks it resolves within `propose_timeout` and a
/// little slack (expiry runs on ticks), returning its result.
async fn within_deadline<T>(what: &str, call: impl Future<Output = T>) -> T {
    let config = test_config();
    let limit = config.propose_timeout + config.tick_interval * 3;
    let started = Instant::now();
    let result = tokio::time::timeout(limit * 4, call)
        .await
        .unwrap_or_else(|_| panic!("{what} still waits after {:?}", limit * 4));
    let took = started.elapsed();
    assert!(took <= limit, "{what} took {took:?}, over {limit:?}");
    result
}

#[tokio::test(start_paused = true)]
async fn every_call_resolves_by_its_deadline_while_the_driver_is_stuck() {
    let nodes = Nodes::start().await;
    let leader = nodes.leader().await;
    let raft = nodes.raft(leader).clone();
    raft.propose(set("a", "1"))
        .await
        .expect("a healthy leader commits");
    let follower = (1..=3).find(|&id| id != leader).expect("three nodes");

    nodes.traps[leader as usize - 1]
        .stall
        .store(true, Ordering::SeqCst);
    // The next send the driver makes (a heartbeat, at the latest) sticks.
    tokio::time::sleep(test_config().tick_interval * 20).await;

    let result = within_deadline("propose", raft.propose(set("a", "2"))).await;
    assert!(
        matches!(result, Err(ProposeError::Timeout(_))),
        "{result:?}"
    );
    let result = within_deadline(
        "propose_many",
        raft.propose_many(vec![set("a", "3"), set("b", "3")]),
    )
    .await;
    assert!(
        matches!(result, Err(ProposeError::Timeout(_))),
        "{result:?}"
    );
    let result = within_deadline("read_index", raft.read_index()).await;
    assert!(matches!(result, Err(ReadError::Timeout(_))), "{result:?}");
    let result = within_deadline("linearizable_read", raft.linearizable_read()).await;
    assert!(matches!(result, Err(ReadError::Timeout(_))), "{result:?}");
    let result = within_deadline("transfer_leader", raft.transfer_leader(follower)).await;
    assert!(
        matches!(result, Err(TransferError::Timeout { .. })),
        "{result:?}"
    );
    let result = within_deadline("add_learner", raft.add_learner(9, "node-9".into())).await;
    assert!(
        matches!(result, Err(MembershipError::Timeout(_))),
        "{result:?}"
    );
    let voters: BTreeSet<_> = [1, 2, 3].into();
    let result = within_deadline("change_membership", raft.change_membership(voters)).await;
    assert!(
        matches!(result, Err(MembershipError::Timeout(_))),
        "{result:?}"
    );
    let result = within_deadline("remove_node", raft.remove_node(follower)).await;
    assert!(
        matches!(result, Err(MembershipError::Timeout(_))),
        "{result:?}"
    );
}
