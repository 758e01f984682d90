//! Snapshots and purges on demand: `Raft::trigger_snapshot` and
//! `Raft::purge_log`, with automatic snapshots off.

use rafter::testing::{MemRouter, MemStorage};
use rafter::{
    Committed, CommittedPayload, CompactionError, Config, LogId, Membership, Raft, StateMachine,
    StateMachineError,
};
use rafter_tests::cluster::{test_config, Cluster, PATIENCE};

fn manual_config() -> Config {
    let mut config = test_config();
    // Automatic snapshots off: only the calls below build one.
    config.snapshot_interval_entries = 0;
    config.snapshot_trailing_entries = 3;
    config
}

/// A triggered snapshot covers what was applied and purges the log behind
/// it, keeping the trailing entries; `purge_log` then purges those too, and
/// an isolated follower catches up from the snapshot.
#[tokio::test(start_paused = true)]
async fn a_triggered_snapshot_and_a_purge_on_demand_compact_the_log() {
    let mut cluster = Cluster::start(3, manual_config()).await;
    let leader = cluster.leader().await;
    let lagging = cluster.follower_of(leader);
    cluster.router.isolate(lagging);
    let mut last = 0;
    for i in 0..20 {
        last = cluster
            .set(leader, "k", &i.to_string())
            .await
            .unwrap()
            .index;
    }
    let raft = cluster.raft(leader).clone();
    assert_eq!(raft.status().snapshot_index, 0, "no automatic snapshot");

    raft.trigger_snapshot().await.unwrap();
    let built = raft
        .wait_for(PATIENCE, |m| m.snapshot_index >= last)
        .await
        .expect("the triggered snapshot is built");
    let trailing = cluster.config.snapshot_trailing_entries;
    let metrics = raft
        .wait_for(PATIENCE, |m| {
            m.purged_index == built.snapshot_index - trailing
        })
        .await
        .unwrap_or_else(|| panic!("purged behind the snapshot: {:?}", raft.status()));
    assert!(metrics.purged_index <= metrics.snapshot_index);

    // Past the snapshot is capped at it.
    let purged = raft.purge_log(u64::MAX).await.unwrap();
    assert_eq!(
        purged.index, built.snapshot_index,
        "purged up to the snapshot"
    );
    assert_eq!(
        raft.purge_log(1).await.unwrap(),
        purged,
        "a purge never goes back"
    );

    // The isolated follower needs purged entries: it gets the snapshot.
    cluster.router.heal(lagging);
    cluster.check_same_state(&cluster.running(), last).await;
    let (_, installs) = cluster.nodes[&lagging].state_machine.snapshot_counts();
    assert!(
        installs >= 1,
        "the lagging follower caught up from the snapshot"
    );
    cluster.shutdown().await;
}

/// A state machine without snapshots: applies and answers, nothing else.
struct NoSnapshots {
    applied: LogId,
}

impl StateMachine for NoSnapshots {
    type Command = u64;
    type Response = u64;

    async fn applied(&mut self) -> Result<LogId, StateMachineError> {
        Ok(self.applied)
    }

    async fn apply(&mut self, entries: Vec<Committed<u64>>) -> Result<Vec<u64>, StateMachineError> {
        let mut responses = Vec::new();
        for entry in entries {
            self.applied = entry.log_id;
            if let CommittedPayload::Command(n) = entry.payload {
                responses.push(n);
            }
        }
        Ok(responses)
    }
}

/// Once the state machine says it has no snapshots, a trigger says so,
/// and a purge purges nothing.
#[tokio::test(start_paused = true)]
async fn a_trigger_on_a_state_machine_without_snapshots_is_refused() {
    let router = MemRouter::new(1);
    let members = Membership::new_voters([(1, "node-1".to_owned())]);
    let raft = Raft::start(
        1,
        manual_config(),
        Some(members),
        MemStorage::new(),
        router.network(1),
        NoSnapshots {
            applied: LogId::default(),
        },
    )
    .await
    .unwrap();
    router.register(&raft);
    raft.wait_for(PATIENCE, |m| m.leader == Some(1))
        .await
        .unwrap();
    assert_eq!(raft.propose(7).await, Ok(7));
    // The first trigger asks; the state machine answers it cannot.
    raft.trigger_snapshot().await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match raft.trigger_snapshot().await {
            Err(CompactionError::SnapshotsUnsupported) => break,
            Ok(()) => {
                assert!(tokio::time::Instant::now() < deadline, "never refused");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(raft.purge_log(u64::MAX).await, Ok(LogId::default()));
    assert!(raft.status().fatal.is_none());
    raft.shutdown().await;
    assert_eq!(raft.trigger_snapshot().await, Err(CompactionError::Stopped));
}
