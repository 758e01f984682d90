//! Ticks are never starved (issue 13, item 4): a driver with more work
//! than one turn takes goes on without waiting, and it must still tick,
//! or a leader under a flood of proposals stops heartbeating, stops
//! checking its quorum and never steps down when cut off; and proposals
//! still expire on time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rafter::testing::KvCommand;
use rafter::Role;
use rafter_tests::cluster::{test_config, Cluster};

/// Moves the paused clock by `ticks` ticks, one at a time, letting the
/// tasks run only a little in between: a flooded driver, always runnable,
/// would otherwise keep the runtime from idling, and paused time only
/// moves by itself when it idles.
async fn advance(ticks: u64, tick: std::time::Duration) {
    for _ in 0..ticks {
        tokio::time::advance(tick).await;
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_flooded_leader_still_ticks_and_steps_down_when_cut_off() {
    let mut config = test_config();
    // One turn takes few proposals, so a flood always leaves some for the
    // next turn and the driver never waits.
    config.proposal_batch_max = 4;
    let tick = config.tick_interval;
    let election_ticks = config.election_ticks_max;
    let cluster = Cluster::start(3, config).await;
    let leader = cluster.leader().await;
    let raft = cluster.raft(leader).clone();
    let term = raft.status().term;

    // 256 impatient clients: each gives up after a tick and proposes again.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..256)
        .map(|c| {
            let raft = raft.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let command = KvCommand::Set {
                        key: format!("k{c}"),
                        value: vec![1; 16],
                    };
                    let _ = tokio::time::timeout(tick, raft.propose(command)).await;
                }
            })
        })
        .collect();

    // Connected and flooded for ten election timeouts: no election.
    advance(10 * election_ticks, tick).await;
    for id in cluster.running() {
        let m = cluster.raft(id).status();
        assert_eq!(m.term, term, "node {id} saw an election: {m:?}");
        assert_eq!(m.leader, Some(leader), "node {id}: {m:?}");
    }

    // Cut off and still flooded: CheckQuorum must step it down within two
    // election timeouts, which takes ticks.
    cluster.router.isolate(leader);
    // A patient caller among the flood: its proposal cannot commit, so it
    // must be answered by its deadline.
    let patient = {
        let raft = raft.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let command = KvCommand::Delete { key: "p".into() };
            let result = raft.propose(command).await;
            (result, started.elapsed())
        })
    };
    advance(3 * election_ticks, tick).await;
    let m = raft.status();
    assert_ne!(
        m.role,
        Role::Leader,
        "the cut-off leader never stepped down: its ticks starved ({m:?})"
    );

    // Proposal expiry runs on time under the flood too.
    let propose_timeout = test_config().propose_timeout;
    let ticks_to_deadline = (propose_timeout.as_millis() / tick.as_millis()) as u64;
    advance(ticks_to_deadline + 5, tick).await;
    assert!(patient.is_finished(), "the patient proposal is unanswered");
    let (result, took) = patient.await.expect("the patient caller runs");
    assert!(result.is_err(), "{result:?}");
    assert!(
        took <= propose_timeout + tick * 5,
        "answered after {took:?}"
    );
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.abort();
    }
}
