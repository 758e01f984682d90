//! Membership changes on whole in-process clusters: learners, joint
//! consensus, removing the leader, and the typed refusals.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rafter::testing::{KvCommand, KvStateMachine};
use rafter::{MembershipError, NodeId, ProposeError, Raft, Role};
use rafter_tests::cluster::{test_config, Cluster, PATIENCE};

/// Sends writes with unique keys to whichever node leads, recording the
/// acknowledged ones, until told to stop.
fn spawn_writer(
    nodes: Arc<Mutex<Vec<Raft<KvStateMachine>>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut i = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let candidates = nodes.lock().unwrap().clone();
            let leader = candidates
                .iter()
                .find(|r| r.status().role == Role::Leader)
                .cloned();
            let Some(leader) = leader else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let key = format!("w{i}");
            match leader
                .propose(KvCommand::Set {
                    key: key.clone(),
                    value: vec![1],
                })
                .await
            {
                Ok(_) => {
                    acked.push(key);
                    i += 1;
                }
                Err(ProposeError::NotLeader { .. })
                | Err(ProposeError::ProposalDropped { .. })
                | Err(ProposeError::Overwritten { .. })
                | Err(ProposeError::Stopped) => i += 1,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        acked
    })
}

async fn leader_of(cluster: &Cluster) -> NodeId {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        for id in cluster.running() {
            let status = cluster.raft(id).status();
            if status.role == Role::Leader && status.membership.is_voter(id) {
                return id;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn three_to_five_to_three_voters_while_a_client_writes_including_removing_the_leader() {
    let mut cluster = Cluster::start(3, test_config()).await;
    cluster.leader().await;
    let handles = Arc::new(Mutex::new(
        cluster
            .running()
            .iter()
            .map(|&id| cluster.raft(id).clone())
            .collect::<Vec<_>>(),
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = spawn_writer(handles.clone(), stop.clone());

    // Add 4 and 5 as learners, then promote them: 3 -> 5 voters.
    for id in [4, 5] {
        cluster.add_node(id).await;
        handles.lock().unwrap().push(cluster.raft(id).clone());
        let leader = leader_of(&cluster).await;
        cluster
            .raft(leader)
            .add_learner(id, format!("node-{id}"))
            .await
            .unwrap();
        let learner = cluster
            .raft(id)
            .wait_for(PATIENCE, |m| m.role == Role::Learner)
            .await;
        assert!(learner.is_some(), "node {id} learns it is a learner");
    }
    let leader = leader_of(&cluster).await;
    cluster
        .raft(leader)
        .change_membership((1..=5).collect())
        .await
        .unwrap();
    let status = cluster.raft(leader).status();
    assert_eq!(status.membership.voters, (1..=5).collect());
    assert!(!status.membership.is_joint());

    // 5 -> 3 voters, removing the leader and one other node.
    let old_leader = leader_of(&cluster).await;
    let other = (1..=5).find(|&id| id != old_leader).unwrap();
    let keep: BTreeSet<NodeId> = (1..=5)
        .filter(|&id| id != old_leader && id != other)
        .collect();
    cluster
        .raft(old_leader)
        .change_membership(keep.clone())
        .await
        .unwrap();
    let stepped_down = cluster
        .raft(old_leader)
        .wait_for(PATIENCE, |m| m.role != Role::Leader)
        .await;
    assert!(stepped_down.is_some(), "removed leader stepped down");
    let new_leader = leader_of(&cluster).await;
    assert!(keep.contains(&new_leader));

    // Keep writing a little under the new configuration, then stop.
    let before = cluster.raft(new_leader).status().commit_index;
    cluster
        .raft(new_leader)
        .wait_for(PATIENCE, |m| m.commit_index > before + 20)
        .await
        .expect("writes go on");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.await.unwrap();
    assert!(
        acked.len() > 20,
        "the client kept writing: {} writes",
        acked.len()
    );

    let remaining: Vec<NodeId> = keep.iter().copied().collect();
    let last = cluster.raft(new_leader).status().commit_index;
    cluster.check_same_state(&remaining, last).await;
    for id in &remaining {
        let data = cluster.nodes[id].state_machine.data();
        for key in &acked {
            assert!(
                data.contains_key(key),
                "node {id} lost acknowledged write {key}"
            );
        }
    }
    // The removed nodes do not campaign: their term stays put.
    let term = cluster.raft(old_leader).status().term;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        cluster.raft(old_leader).status().term,
        term,
        "a removed node campaigned"
    );
    assert_ne!(cluster.raft(old_leader).status().role, Role::Leader);
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn invalid_membership_changes_are_refused_with_typed_errors() {
    let mut config = test_config();
    config.propose_timeout = Duration::from_secs(2);
    let mut cluster = Cluster::start(3, config).await;
    let leader = cluster.leader().await;
    let raft = cluster.raft(leader).clone();
    assert_eq!(
        raft.change_membership(BTreeSet::new()).await,
        Err(MembershipError::NoVoters)
    );
    assert_eq!(
        raft.change_membership([1, 2, 9].into()).await,
        Err(MembershipError::UnknownNode(9))
    );
    assert_eq!(
        raft.remove_node(9).await,
        Err(MembershipError::UnknownNode(9))
    );
    let other = (1..=3).find(|&id| id != leader).unwrap();
    assert_eq!(
        raft.add_learner(other, "x".into()).await,
        Err(MembershipError::AlreadyMember(other))
    );
    assert!(matches!(
        cluster.raft(other).add_learner(7, "x".into()).await,
        Err(MembershipError::NotLeader { leader_hint: Some(l), leader_addr: Some(a) })
            if l == leader && a == format!("node-{leader}")
    ));

    // A learner that cannot catch up is not promoted.
    cluster.add_node(4).await;
    raft.add_learner(4, "node-4".into()).await.unwrap();
    cluster.router.isolate(4);
    for i in 0..(cluster.config.learner_catchup_lag_max + 10) {
        cluster.set(leader, "k", &i.to_string()).await.unwrap();
    }
    let result = raft.change_membership([1, 2, 3, 4].into()).await;
    assert!(
        matches!(result, Err(MembershipError::NotCaughtUp { id: 4, .. })),
        "{result:?}"
    );
    // The log is longer than the catch-up lag now: an unknown node is still
    // refused as unknown at once, not waited for as lagging.
    assert_eq!(
        raft.change_membership([1, 2, 3, 9].into()).await,
        Err(MembershipError::UnknownNode(9))
    );
    cluster.router.heal(4);

    // One change at a time: a change that cannot commit blocks the next.
    for id in 1..=3 {
        if id != leader {
            cluster.router.block(leader, id);
        }
    }
    let first = raft.clone();
    let pending = tokio::spawn(async move { first.add_learner(5, "node-5".into()).await });
    tokio::time::sleep(cluster.config.tick_interval).await;
    assert_eq!(
        raft.add_learner(6, "node-6".into()).await,
        Err(MembershipError::ChangeInProgress)
    );
    let pending = pending.await.unwrap();
    assert!(
        matches!(pending, Err(MembershipError::Timeout(_))),
        "{pending:?}"
    );
    cluster.shutdown().await;
}
