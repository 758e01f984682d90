//! Leader lease reads (dissertation §6.4.1; `lease.rs`).

use super::*;

/// `election_ticks_min - lease_drift_ticks` with a drift bound of 2.
const LEASE_TICKS: u64 = ELECTION_TICKS_MIN - 2;

fn lease_config() -> EngineConfig {
    EngineConfig {
        lease_ticks: Some(LEASE_TICKS),
        ..config()
    }
}

/// Node 1 leading `[1, 2, 3]` with lease reads, its blank entry (1, 1)
/// committed by node 2's acknowledgement; no lease yet.
fn lease_leader() -> Engine {
    let mut e = elected_by_hand(lease_config(), &[1, 2, 3]);
    step(&mut e, msg(2, 1, 1, ack(1)));
    assert_eq!(e.commit_index(), 1);
    turn(&mut e);
    e
}

fn echo(from: NodeId, read_seq: u64) -> Message {
    msg(from, 1, 1, MessageBody::HeartbeatResponse { read_seq })
}

/// The read seq of the heartbeats a turn sent (they all carry the same).
fn round_of(t: &Turn) -> Option<u64> {
    let seqs: BTreeSet<u64> = t
        .messages
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::Heartbeat { read_seq, .. } => Some(read_seq),
            _ => None,
        })
        .collect();
    assert!(seqs.len() <= 1, "one round per turn: {seqs:?}");
    seqs.into_iter().next()
}

/// Ticks once and checks the invariants.
fn tick(e: &mut Engine) {
    e.tick();
    e.check_invariants();
}

/// Dissertation §6.4.1: once a quorum acknowledged a heartbeat round, the
/// leader answers reads with its commit index at once — no round, no
/// message — and counts them for the metrics.
#[test]
fn a_leader_within_its_lease_answers_reads_without_a_round() {
    let mut e = lease_leader();
    e.read_index(10);
    let t = turn(&mut e);
    assert_eq!(t.reads, vec![], "no lease yet: a ReadIndex round");
    assert_eq!(round_of(&t), Some(1));
    step(&mut e, echo(2, 1));
    assert_eq!(turn(&mut e).reads, vec![(10, Ok(1))]);
    assert_eq!(e.lease_reads_served(), 0);

    // The same acknowledgement started a lease.
    e.read_index(11);
    e.read_index(12);
    assert_eq!(
        turn(&mut e),
        Turn {
            reads: vec![(11, Ok(1)), (12, Ok(1))],
            ..Turn::default()
        },
        "answered at once, nothing sent"
    );
    assert_eq!(e.lease_reads_served(), 2);

    // Without lease reads, the same history costs every read a round.
    let mut plain = elected_by_hand(config(), &[1, 2, 3]);
    step(&mut plain, msg(2, 1, 1, ack(1)));
    turn(&mut plain);
    plain.read_index(10);
    turn(&mut plain);
    step(&mut plain, echo(2, 1));
    assert_eq!(turn(&mut plain).reads, vec![(10, Ok(1))]);
    plain.read_index(11);
    let t = turn(&mut plain);
    assert_eq!((round_of(&t), t.reads), (Some(2), vec![]));
}

/// The lease counts from when the acknowledged round was *sent*, not when
/// the acknowledgement arrived, and ends `election_ticks_min -
/// lease_drift_ticks` ticks later; then reads take a round again.
#[test]
fn the_lease_ends_election_ticks_min_minus_the_drift_after_the_round_was_sent() {
    let mut e = lease_leader();
    let sent = e.ticks;
    e.read_index(10);
    assert_eq!(round_of(&turn(&mut e)), Some(1));
    // The acknowledgement is late, and the periodic heartbeats meanwhile
    // (later rounds) go unanswered.
    for _ in 0..3 {
        tick(&mut e);
    }
    turn(&mut e);
    step(&mut e, echo(2, 1));
    assert_eq!(turn(&mut e).reads, vec![(10, Ok(1))]);

    while e.ticks < sent + LEASE_TICKS - 1 {
        tick(&mut e);
    }
    turn(&mut e);
    e.read_index(11);
    assert_eq!(
        turn(&mut e).reads,
        vec![(11, Ok(1))],
        "the lease's last tick"
    );

    tick(&mut e);
    assert_eq!(e.ticks, sent + LEASE_TICKS);
    turn(&mut e);
    e.read_index(12);
    let t = turn(&mut e);
    assert_eq!(t.reads, vec![], "the lease is over");
    let seq = round_of(&t).expect("a round for the read");
    step(&mut e, echo(2, seq));
    assert_eq!(turn(&mut e).reads, vec![(12, Ok(1))]);
    assert_eq!(e.lease_reads_served(), 1);
}

/// A leader does not know the commit index until an entry of its term is
/// committed (dissertation §6.4), lease or not.
#[test]
fn no_lease_reads_before_the_leader_commits_an_entry_of_its_term() {
    let mut e = elected_by_hand(lease_config(), &[1, 2, 3]);
    for _ in 0..HEARTBEAT_TICKS {
        tick(&mut e);
    }
    let seq = round_of(&turn(&mut e)).expect("a heartbeat");
    step(&mut e, echo(2, seq));
    turn(&mut e);
    e.read_index(10);
    assert_eq!(
        turn(&mut e).reads,
        vec![],
        "the blank entry is not committed"
    );
    assert_eq!(e.commit_index(), 0);

    step(&mut e, msg(2, 1, 1, ack(1)));
    let t = turn(&mut e);
    assert_eq!(t.reads, vec![(10, Ok(1))], "answered from the lease");
    assert_eq!(round_of(&t), None, "without a round");
    assert_eq!(e.lease_reads_served(), 1);
}

/// Leader transfer is exempt from leader stickiness (the transferee's
/// election ignores it), so no lease read while a transfer is under way,
/// nor for the rest of the term once `TimeoutNow` went out: it may still
/// arrive after the transfer was given up.
#[test]
fn no_lease_reads_during_a_transfer_nor_after_timeout_now_in_that_term() {
    let mut e = lease_leader();
    e.read_index(10);
    turn(&mut e);
    step(&mut e, echo(2, 1));
    assert_eq!(turn(&mut e).reads, vec![(10, Ok(1))]);

    // Node 3 is behind: the transfer waits for it before TimeoutNow.
    e.transfer_leader(3).unwrap();
    turn(&mut e);
    e.read_index(11);
    let t = turn(&mut e);
    assert_eq!(t.reads, vec![], "a transfer is under way: a round");
    let seq = round_of(&t).expect("a round");
    step(&mut e, echo(2, seq));
    assert_eq!(turn(&mut e).reads, vec![(11, Ok(1))]);

    // Node 3 catches up: TimeoutNow goes out. Node 3 never campaigns here,
    // and the transfer is given up after election_ticks_min ticks, while
    // both followers answer every heartbeat.
    step(&mut e, msg(3, 1, 1, ack(1)));
    let t = turn(&mut e);
    assert!(
        t.messages.contains(&msg(1, 3, 1, MessageBody::TimeoutNow)),
        "{t:?}"
    );
    for _ in 0..ELECTION_TICKS_MIN {
        tick(&mut e);
        if let Some(seq) = round_of(&turn(&mut e)) {
            step(&mut e, echo(2, seq));
            step(&mut e, echo(3, seq));
            turn(&mut e);
        }
    }
    assert!(e.is_leader());
    assert_eq!(e.lead_transferee(), None, "the transfer was given up");
    e.read_index(12);
    let t = turn(&mut e);
    assert_eq!(t.reads, vec![], "no lease after TimeoutNow in this term");
    assert!(round_of(&t).is_some());
    assert_eq!(e.lease_reads_served(), 0);
}

/// A leader that steps down drops its lease with its role.
#[test]
fn a_leader_that_steps_down_holds_no_lease() {
    let mut e = lease_leader();
    e.read_index(10);
    turn(&mut e);
    step(&mut e, echo(2, 1));
    turn(&mut e);
    step(&mut e, msg(3, 1, 2, heartbeat(0, 0)));
    assert!(!e.is_leader());
    assert!(!e.lease.holds(e.ticks));
    e.read_index(11);
    let t = turn(&mut e);
    assert_eq!(t.reads, vec![], "not answered by the old lease");
    assert!(
        t.messages
            .contains(&msg(1, 3, 2, MessageBody::ReadIndexRequest { request: 11 })),
        "the new leader is asked: {t:?}"
    );
}

/// With lease reads a node ignores vote requests for its first minimum
/// election timeout after it starts, as if it had just heard from a leader:
/// it may have acknowledged a heartbeat, and so given a lease, just before
/// it crashed. Without lease reads it votes at once.
#[test]
fn with_lease_reads_a_restarted_node_ignores_votes_for_one_minimum_election_timeout() {
    let request = msg(2, 1, 2, vote_request(false, LogId::new(1, 5)));
    let start = |config: EngineConfig| {
        let mut e = Engine::new(
            1,
            config,
            restored(&[1, 2, 3], &log_of(&[1]), hard_state(1, None, 1)),
        );
        turn(&mut e);
        e
    };

    let mut e = start(lease_config());
    step(&mut e, request.clone());
    assert_eq!(turn(&mut e), Turn::default(), "ignored");
    assert_eq!((e.term(), e.vote()), (1, None));
    for _ in 0..ELECTION_TICKS_MIN {
        tick(&mut e);
    }
    turn(&mut e);
    step(&mut e, request.clone());
    assert_eq!(
        (e.term(), e.vote()),
        (2, Some(2)),
        "votes once it has waited"
    );

    let mut plain = start(config());
    step(&mut plain, request);
    assert_eq!((plain.term(), plain.vote()), (2, Some(2)));
}
