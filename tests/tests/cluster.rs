//! Whole clusters of in-process nodes (real driver, storage and apply tasks
//! on MemStorage and MemRouter), on a paused tokio clock: elections and
//! timeouts take no wall-clock time and nothing sleeps for real.

use std::sync::Arc;

use rafter::testing::{KvCommand, KvResponse, KvStateMachine, MemRouter, MemStorage};
use rafter::{
    Committed, ConfigError, LogId, Membership, ProposeError, Raft, ReadError, Role, StartError,
    StateMachine, StateMachineError, TransferError,
};
use rafter_tests::cluster::{test_config, Cluster, PATIENCE};
use tokio::sync::Semaphore;

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

#[tokio::test(start_paused = true)]
async fn leader_killed_a_new_leader_commits_and_the_old_one_catches_up() {
    let mut cluster = Cluster::start(3, test_config()).await;
    let old = cluster.leader().await;
    cluster.set(old, "a", "1").await.unwrap();
    cluster.kill(old).await;
    let rest = cluster.running();
    let new = cluster.leader_among(&rest).await;
    assert_ne!(new, old);
    let response = cluster.set(new, "a", "2").await.unwrap();
    assert_eq!(
        response.previous,
        Some(b"1".to_vec()),
        "the committed write survived"
    );
    cluster.restart(old).await;
    let all = cluster.running();
    cluster.check_same_state(&all, response.index).await;
    assert_eq!(
        cluster.nodes[&old].state_machine.get("a"),
        Some(b"2".to_vec())
    );
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn minority_partition_commits_nothing_and_heals() {
    let mut config = test_config();
    config.propose_timeout = std::time::Duration::from_secs(2);
    let mut cluster = Cluster::start(5, config).await;
    let old = cluster.leader().await;
    let base = cluster.set(old, "k", "before").await.unwrap().index;
    // The old leader and one follower on one side, three nodes on the other.
    let follower = cluster.follower_of(old);
    let majority: Vec<_> = cluster
        .running()
        .into_iter()
        .filter(|&id| id != old && id != follower)
        .collect();
    for &a in &[old, follower] {
        for &b in &majority {
            cluster.router.block(a, b);
            cluster.router.block(b, a);
        }
    }
    // The minority side cannot commit: the proposal times out (its outcome
    // is unknown to the client) and nothing new commits there.
    let minority_commit = cluster.raft(follower).status().commit_index;
    let lost = cluster.set(old, "k", "minority").await;
    assert!(
        matches!(
            lost,
            Err(ProposeError::Timeout(_)) | Err(ProposeError::NotLeader { .. })
        ),
        "{lost:?}"
    );
    assert!(cluster.raft(follower).status().commit_index <= minority_commit.max(base));
    // The majority elects a leader and commits.
    let new = cluster.leader_among(&majority).await;
    let committed = cluster.set(new, "k", "majority").await.unwrap();
    // The old leader stepped down (CheckQuorum) in the meantime.
    let stepped_down = cluster
        .raft(old)
        .wait_for(PATIENCE, |m| m.role != Role::Leader)
        .await;
    assert!(stepped_down.is_some(), "isolated leader kept leading");
    cluster.router.heal_all();
    let all = cluster.running();
    cluster.check_same_state(&all, committed.index).await;
    for id in all {
        assert_eq!(
            cluster.nodes[&id].state_machine.get("k"),
            Some(b"majority".to_vec()),
            "node {id}"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn leadership_transfer_hands_over_and_the_new_leader_serves() {
    let mut cluster = Cluster::start(3, test_config()).await;
    let old = cluster.leader().await;
    cluster.set(old, "x", "1").await.unwrap();
    let target = cluster.follower_of(old);
    cluster.raft(old).transfer_leader(target).await.unwrap();
    assert_eq!(cluster.leader().await, target);
    let response = cluster.set(target, "x", "2").await.unwrap();
    assert_eq!(response.previous, Some(b"1".to_vec()));
    assert!(matches!(
        cluster.set(old, "x", "3").await,
        Err(ProposeError::NotLeader { leader_hint: Some(l), .. }) if l == target
    ));
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_read_on_an_isolated_old_leader_fails_instead_of_returning_stale_data() {
    let mut cluster = Cluster::start(3, test_config()).await;
    let old = cluster.leader().await;
    cluster.set(old, "k", "old").await.unwrap();
    assert!(
        cluster.raft(old).linearizable_read().await.is_ok(),
        "a healthy leader reads"
    );
    cluster.router.isolate(old);
    let read = cluster.raft(old).linearizable_read();
    // Meanwhile the rest elect a leader and overwrite the key.
    let rest: Vec<_> = cluster
        .running()
        .into_iter()
        .filter(|&id| id != old)
        .collect();
    let new = cluster.leader_among(&rest).await;
    cluster.set(new, "k", "new").await.unwrap();
    let result = read.await;
    assert!(
        matches!(
            result,
            Err(ReadError::LeadershipLost)
                | Err(ReadError::Timeout(_))
                | Err(ReadError::NotLeader { .. })
        ),
        "isolated old leader answered a read: {result:?}"
    );
    let index = cluster.raft(new).linearizable_read().await.unwrap();
    assert!(cluster.raft(new).status().applied_index >= index);
    assert_eq!(
        cluster.nodes[&new].state_machine.get("k"),
        Some(b"new".to_vec())
    );
    assert!(matches!(
        cluster.raft(old).read_index().await,
        Err(ReadError::NotLeader { .. } | ReadError::LeadershipLost)
    ));
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_follower_refuses_proposals_with_a_leader_hint() {
    let mut cluster = Cluster::start(3, test_config()).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower_of(leader);
    let result = cluster.set(follower, "k", "v").await;
    let addr = format!("node-{leader}");
    assert_eq!(
        result,
        Err(ProposeError::NotLeader {
            leader_hint: Some(leader),
            leader_addr: Some(addr.clone()),
        })
    );
    assert_eq!(cluster.raft(follower).leader(), Some((leader, Some(addr))));
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_oversized_request_is_rejected_and_changes_nothing() {
    let mut config = test_config();
    config.request_bytes_max = 1024;
    let mut cluster = Cluster::start(3, config).await;
    let leader = cluster.leader().await;
    let before = cluster.raft(leader).status().last_log_index;
    let result = cluster.set(leader, "k", &"x".repeat(2000)).await;
    assert!(
        matches!(result, Err(ProposeError::RequestTooLarge { max: 1024, .. })),
        "{result:?}"
    );
    assert_eq!(
        cluster.raft(leader).status().last_log_index,
        before,
        "nothing appended"
    );
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_proposal_without_a_quorum_times_out() {
    let mut config = test_config();
    config.propose_timeout = std::time::Duration::from_millis(500);
    let mut cluster = Cluster::start(3, config).await;
    let leader = cluster.leader().await;
    for id in cluster.running() {
        if id != leader {
            cluster.router.block(leader, id);
        }
    }
    let raft = cluster.raft(leader).clone();
    let pending = tokio::spawn(async move {
        let command = KvCommand::Set {
            key: "k".into(),
            value: b"v".to_vec(),
        };
        raft.propose(command).await
    });
    let mut metrics = cluster.raft(leader).metrics();
    metrics
        .wait_for(|m| m.proposals_waiting == 1)
        .await
        .expect("the node runs");
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), pending)
        .await
        .expect("the caller is answered");
    assert_eq!(
        answer.unwrap(),
        Err(ProposeError::Timeout(std::time::Duration::from_millis(500)))
    );
    // The timed-out caller's waiter is gone; none is left behind.
    let gone = metrics.wait_for(|m| m.proposals_waiting == 0);
    tokio::time::timeout(std::time::Duration::from_secs(5), gone)
        .await
        .expect("the waiter is dropped")
        .expect("the node runs");
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn callers_beyond_a_full_proposal_queue_wait_for_room_within_the_deadline() {
    let mut config = test_config();
    config.proposal_queue_max = 2;
    config.propose_timeout = std::time::Duration::from_millis(500);
    let mut cluster = Cluster::start(3, config).await;
    let leader = cluster.leader().await;
    let raft = cluster.raft(leader).clone();
    let set = |i: usize| KvCommand::Set {
        key: format!("k{i}"),
        value: b"v".to_vec(),
    };
    // Forty callers at once: all but two find the queue full and wait for
    // room; every one is answered.
    let results = futures::future::join_all((0..40).map(|i| raft.propose(set(i)))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    // Without a quorum nothing commits: the callers queued behind the
    // full queue and those answered by the apply task all time out.
    for id in cluster.running() {
        if id != leader {
            cluster.router.block(leader, id);
        }
    }
    let started = tokio::time::Instant::now();
    let results = futures::future::join_all((0..40).map(|i| raft.propose(set(i)))).await;
    for result in &results {
        assert_eq!(
            result,
            &Err(ProposeError::Timeout(std::time::Duration::from_millis(500)))
        );
    }
    // Expired on the driver's ticks: late by at most a tick or two.
    assert!(started.elapsed() < std::time::Duration::from_millis(700));
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn proposals_are_dropped_while_a_leadership_transfer_is_under_way() {
    let mut cluster = Cluster::start(3, test_config()).await;
    let leader = cluster.leader().await;
    let target = cluster.follower_of(leader);
    // The target cannot hear the leader, so the transfer cannot finish.
    cluster.router.block(leader, target);
    let raft = cluster.raft(leader).clone();
    let transfer = tokio::spawn(async move { raft.transfer_leader(target).await });
    // Let the transfer start before proposing.
    tokio::time::sleep(cluster.config.tick_interval).await;
    let result = cluster.set(leader, "k", "v").await;
    assert!(
        matches!(result, Err(ProposeError::ProposalDropped { .. })),
        "{result:?}"
    );
    // The transfer gives up after an election timeout, and proposals work again.
    assert_eq!(
        transfer.await.unwrap(),
        Err(TransferError::Timeout { to: target })
    );
    cluster.router.heal_all();
    let leader = cluster.leader().await;
    cluster.set(leader, "k", "after").await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn calls_after_shutdown_return_stopped() {
    let mut cluster = Cluster::start(3, test_config()).await;
    let leader = cluster.leader().await;
    let raft = cluster.raft(leader).clone();
    cluster.shutdown().await;
    let result = raft.propose(KvCommand::Delete { key: "k".into() }).await;
    assert_eq!(result, Err(ProposeError::Stopped));
    assert_eq!(raft.read_index().await, Err(ReadError::Stopped));
    assert!(raft.status().stopped);
}

#[tokio::test(start_paused = true)]
async fn a_storage_failure_stops_the_node_with_its_reason() {
    let mut cluster = Cluster::start(3, test_config()).await;
    let leader = cluster.leader().await;
    cluster.set(leader, "k", "v").await.unwrap();
    let writes = cluster.nodes[&leader].storage.write_count();
    cluster.nodes[&leader].storage.fail_writes_after(writes);
    let result = cluster.set(leader, "k", "w").await;
    assert!(
        matches!(
            result,
            Err(ProposeError::Stopped) | Err(ProposeError::Timeout(_))
        ),
        "{result:?}"
    );
    let stopped = cluster
        .raft(leader)
        .wait_for(PATIENCE, |m| m.stopped)
        .await
        .expect("node stops");
    assert!(
        matches!(stopped.fatal, Some(rafter::Fatal::Storage(_))),
        "{:?}",
        stopped.fatal
    );
    // The others carry on.
    let rest: Vec<_> = cluster
        .running()
        .into_iter()
        .filter(|&id| id != leader)
        .collect();
    let new = cluster.leader_among(&rest).await;
    cluster.set(new, "k", "x").await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_whole_cluster_restarts_from_storage() {
    let mut cluster = Cluster::start(3, test_config()).await;
    let leader = cluster.leader().await;
    let mut last = 0;
    for i in 0..100 {
        last = cluster
            .set(leader, &format!("k{}", i % 10), &i.to_string())
            .await
            .unwrap()
            .index;
    }
    cluster.check_same_state(&cluster.running(), last).await;
    let before = cluster.nodes[&leader].state_machine.data();
    cluster.shutdown().await;
    for id in 1..=3 {
        cluster.restart(id).await;
    }
    let leader = cluster.leader().await;
    let response = cluster.set(leader, "k0", "again").await.unwrap();
    assert_eq!(response.previous, before.get("k0").cloned());
    cluster
        .check_same_state(&cluster.running(), response.index)
        .await;
    cluster.shutdown().await;
}

/// A state machine whose apply waits for a permit: a stand-in for a slow
/// disk under the state machine.
#[derive(Clone)]
struct GatedKv {
    inner: KvStateMachine,
    gate: Arc<Semaphore>,
}

impl StateMachine for GatedKv {
    type Command = KvCommand;
    type Response = KvResponse;

    async fn applied(&mut self) -> Result<LogId, StateMachineError> {
        self.inner.applied().await
    }

    async fn apply(
        &mut self,
        entries: Vec<Committed<KvCommand>>,
    ) -> Result<Vec<KvResponse>, StateMachineError> {
        self.gate
            .acquire()
            .await
            .expect("gate never closes")
            .forget();
        self.inner.apply(entries).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_state_machine_makes_proposals_fail_fast_with_too_many_requests() {
    let mut config = test_config();
    config.commit_apply_gap_max = 10;
    let router = MemRouter::new(1);
    let gate = Arc::new(Semaphore::new(1));
    let state_machine = GatedKv {
        inner: KvStateMachine::new(),
        gate: gate.clone(),
    };
    let members = Membership::new_voters([(1, "n1".to_string())]);
    let raft = Raft::start(
        1,
        config,
        Some(members),
        MemStorage::new(),
        router.network(1),
        state_machine,
    )
    .await
    .unwrap();
    raft.wait_for(PATIENCE, |m| m.role == Role::Leader)
        .await
        .unwrap();
    // The first apply batch (bootstrap entry, blank) takes the one permit;
    // after that the apply task is stuck while commits go on.
    let pending: Vec<_> = (0..50)
        .map(|i| {
            let raft = raft.clone();
            tokio::spawn(async move {
                raft.propose(KvCommand::Delete {
                    key: format!("k{i}"),
                })
                .await
            })
        })
        .collect();
    raft.wait_for(PATIENCE, |m| m.commit_index > m.applied_index + 10)
        .await
        .expect("gap opens");
    let result = raft.propose(KvCommand::Delete { key: "late".into() }).await;
    assert!(
        matches!(result, Err(ProposeError::TooManyRequests { gap }) if gap > 10),
        "{result:?}"
    );
    // Once the state machine catches up, proposals go through again.
    gate.add_permits(1000);
    for proposal in pending {
        proposal.await.unwrap().unwrap();
    }
    raft.propose(KvCommand::Delete {
        key: "later".into(),
    })
    .await
    .unwrap();
    raft.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_follower_behind_the_entry_cache_catches_up_from_storage() {
    let mut config = test_config();
    // A tiny cache: the leader must read old entries back from storage.
    config.log_cache_bytes_max = 2048;
    config.append_bytes_max = 1024;
    let mut cluster = Cluster::start(3, config).await;
    let leader = cluster.leader().await;
    let lagging = cluster.follower_of(leader);
    cluster.kill(lagging).await;
    let mut last = 0;
    for i in 0..500 {
        last = cluster
            .set(leader, &format!("k{}", i % 50), &"v".repeat(40))
            .await
            .unwrap()
            .index;
    }
    cluster.restart(lagging).await;
    cluster.check_same_state(&cluster.running(), last).await;
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn replication_recovers_from_a_lossy_network() {
    let mut config = test_config();
    config.inflight_msgs_max = 4;
    config.propose_timeout = std::time::Duration::from_secs(600);
    let mut cluster = Cluster::start(3, config).await;
    let leader = cluster.leader().await;
    cluster.router.set_drop_rate(0.2);
    let raft = cluster.raft(leader).clone();
    let clients: Vec<_> = (0..20)
        .map(|c| {
            let raft = raft.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                for i in 0..25 {
                    let command = KvCommand::Set {
                        key: format!("c{c}"),
                        value: vec![i],
                    };
                    results.push(raft.propose(command).await);
                }
                results
            })
        })
        .collect();
    let mut last = 0;
    for client in clients {
        for result in client.await.unwrap() {
            match result {
                Ok(response) => last = last.max(response.index),
                // Lost acks can cost leadership (CheckQuorum); a proposal
                // is then dropped or overwritten, never half-applied.
                Err(ProposeError::NotLeader { .. } | ProposeError::Overwritten { .. }) => {}
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
    }
    assert!(last > 0, "nothing committed through a 20% lossy network");
    cluster.router.heal_all();
    cluster.check_same_state(&cluster.running(), last).await;
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn propose_many_appends_consecutive_entries_and_answers_each_in_order() {
    let mut config = test_config();
    config.proposal_batch_max = 64;
    let mut cluster = Cluster::start(3, config).await;
    let leader = cluster.leader().await;
    let raft = cluster.raft(leader).clone();
    let commands: Vec<KvCommand> = (0..50)
        .map(|i| KvCommand::Set {
            key: "k".into(),
            value: vec![i],
        })
        .collect();
    // Two concurrent batches and single proposals interleave without
    // mixing up anyone's responses.
    let (first, second, single) = tokio::join!(
        raft.propose_many(commands.clone()),
        raft.propose_many(commands[..10].to_vec()),
        raft.propose(KvCommand::Set {
            key: "other".into(),
            value: b"x".to_vec(),
        }),
    );
    let first = first.expect("first batch applies");
    let second = second.expect("second batch applies");
    single.expect("single proposal applies");
    assert_eq!(first.len(), 50);
    assert_eq!(second.len(), 10);
    for batch in [&first, &second] {
        for pair in batch.windows(2) {
            assert_eq!(pair[1].index, pair[0].index + 1, "consecutive entries");
            // Each response is that command's own: the previous value of
            // "k" is the command right before it in the batch.
            let expected = pair[0].index;
            assert!(pair[1].previous.is_some(), "entry {expected} set k before");
        }
    }
    for (i, response) in first.iter().enumerate().skip(1) {
        assert_eq!(response.previous, Some(vec![i as u8 - 1]));
    }

    // The limit is checked before anything is appended; an empty call is
    // answered at once.
    let too_many: Vec<KvCommand> = (0..65).map(|_| commands[0].clone()).collect();
    let last_before = cluster.raft(leader).status().last_log_index;
    assert_eq!(
        raft.propose_many(too_many).await,
        Err(ProposeError::TooManyCommands { count: 65, max: 64 })
    );
    assert_eq!(raft.propose_many(Vec::new()).await, Ok(Vec::new()));
    assert_eq!(cluster.raft(leader).status().last_log_index, last_before);
    let last = second
        .last()
        .unwrap()
        .index
        .max(first.last().unwrap().index);
    let ids = cluster.running();
    cluster.check_same_state(&ids, last).await;
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_node_with_an_invalid_config_or_membership_does_not_start() {
    let router = MemRouter::new(1);
    let members = Membership::new_voters([(1, "n1".to_string())]);
    let start = |config, id, members| {
        Raft::start(
            id,
            config,
            members,
            MemStorage::new(),
            router.network(id),
            KvStateMachine::new(),
        )
    };
    let mut config = test_config();
    config.heartbeat_ticks = config.election_ticks_min;
    let result = start(config, 1, Some(members.clone())).await;
    assert!(
        matches!(
            &result,
            Err(StartError::Config(ConfigError::Invalid { field, .. })) if *field == "election_ticks_min"
        ),
        "{:?}",
        result.err()
    );
    let result = start(test_config(), 2, Some(members)).await;
    assert!(
        matches!(&result, Err(StartError::Membership(_))),
        "a founding node outside the initial membership: {:?}",
        result.err()
    );
}

/// A state machine whose snapshots claim entries it has not applied.
struct SnapshotAheadKv(KvStateMachine);

impl StateMachine for SnapshotAheadKv {
    type Command = KvCommand;
    type Response = KvResponse;

    async fn applied(&mut self) -> Result<LogId, StateMachineError> {
        self.0.applied().await
    }

    async fn apply(
        &mut self,
        entries: Vec<Committed<KvCommand>>,
    ) -> Result<Vec<KvResponse>, StateMachineError> {
        self.0.apply(entries).await
    }

    async fn build_snapshot(&mut self) -> Result<LogId, StateMachineError> {
        let applied = self.0.applied().await?;
        Ok(LogId::new(applied.term, applied.index + 1000))
    }
}

#[tokio::test(start_paused = true)]
async fn a_state_machine_reporting_an_impossible_snapshot_stops_the_node() {
    let mut config = test_config();
    config.snapshot_interval_entries = 5;
    config.snapshot_trailing_entries = 0;
    let router = MemRouter::new(1);
    let members = Membership::new_voters([(1, "n1".to_string())]);
    let storage = MemStorage::new();
    let raft = Raft::start(
        1,
        config,
        Some(members),
        storage.clone(),
        router.network(1),
        SnapshotAheadKv(KvStateMachine::new()),
    )
    .await
    .unwrap();
    raft.wait_for(PATIENCE, |m| m.role == Role::Leader)
        .await
        .unwrap();
    for i in 0..10 {
        let command = KvCommand::Delete {
            key: format!("k{i}"),
        };
        if raft.propose(command).await.is_err() {
            break;
        }
    }
    let stopped = raft
        .wait_for(PATIENCE, |m| m.stopped)
        .await
        .expect("the node stops");
    assert!(
        matches!(
            stopped.fatal,
            Some(rafter::Fatal::StateMachine(
                StateMachineError::Corrupt { .. }
            ))
        ),
        "{:?}",
        stopped.fatal
    );
    assert_eq!(stopped.snapshot_index, 0, "nothing purged behind it");
}
