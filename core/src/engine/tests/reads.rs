//! ReadIndex (dissertation §6.4).

use super::*;

// ----- ReadIndex (dissertation §6.4) -----

/// Dissertation §6.4: reads that arrive in one turn share one heartbeat
/// round (one heartbeat per peer, one sequence number), and are answered
/// with the commit index only once a quorum has echoed that number.
#[test]
fn reads_in_one_turn_share_one_heartbeat_round_confirmed_by_a_quorum() {
    let mut net = Net::new(5);
    net.elect(1);
    let leader = net.node(1);
    let commit = leader.commit_index();
    assert_eq!(commit, 1);
    leader.read_index(10);
    leader.read_index(11);
    assert_eq!(
        turn(leader),
        Turn {
            messages: (2..=5)
                .map(|to| msg(1, to, 1, heartbeat(commit, 1)))
                .collect(),
            ..Turn::default()
        }
    );
    let echo = MessageBody::HeartbeatResponse { read_seq: 1 };
    step(leader, msg(2, 1, 1, echo.clone()));
    assert_eq!(turn(leader), Turn::default(), "two of five is no quorum");
    step(leader, msg(3, 1, 1, echo.clone()));
    assert_eq!(
        turn(leader),
        Turn {
            reads: vec![(10, Ok(commit)), (11, Ok(commit))],
            ..Turn::default()
        }
    );
    // A stale echo of an older round confirms nothing newer.
    leader.read_index(12);
    let t = turn(leader);
    assert_eq!(t.messages[0], msg(1, 2, 1, heartbeat(commit, 2)));
    step(leader, msg(4, 1, 1, echo.clone()));
    step(leader, msg(5, 1, 1, echo));
    assert_eq!(turn(leader).reads, vec![]);
}

/// Dissertation §6.4: a new leader does not know the commit index until an
/// entry of its own term is committed, so it holds reads until then.
#[test]
fn leader_holds_reads_until_an_entry_of_its_term_is_committed() {
    let mut e = elected_by_hand(config(), &[1, 2, 3]);
    e.read_index(10);
    assert_eq!(turn(&mut e), Turn::default(), "no read round yet");

    step(&mut e, msg(2, 1, 1, ack(1)));
    assert_eq!(e.commit_index(), 1);
    let t = turn(&mut e);
    assert_eq!(
        t.messages,
        vec![
            msg(1, 2, 1, heartbeat(1, 1)),
            msg(1, 3, 1, heartbeat(0, 1)),
            msg(1, 2, 1, append(LogId::new(1, 1), vec![], 1)),
        ]
    );
    assert_eq!(t.reads, vec![]);
    step(
        &mut e,
        msg(3, 1, 1, MessageBody::HeartbeatResponse { read_seq: 1 }),
    );
    assert_eq!(turn(&mut e).reads, vec![(10, Ok(1))]);
}

/// Dissertation §6.4: a leader that steps down fails every pending read,
/// confirmed round or not, with LeadershipLost.
#[test]
fn leader_that_steps_down_fails_pending_reads() {
    let mut e = elected_by_hand(config(), &[1, 2, 3]);
    step(&mut e, msg(2, 1, 1, ack(1)));
    e.read_index(10);
    turn(&mut e);
    e.read_index(11);
    step(&mut e, msg(3, 1, 2, heartbeat(0, 0)));
    assert!(!e.is_leader());
    assert_eq!(e.leader(), Some(3));
    let t = turn(&mut e);
    assert_eq!(
        t.reads,
        vec![
            (10, Err(ReadError::LeadershipLost)),
            (11, Err(ReadError::LeadershipLost))
        ]
    );
}

/// A follower cannot serve linearizable reads; it names the leader.
#[test]
fn follower_answers_reads_with_not_leader() {
    let mut net = Net::new(3);
    net.elect(1);
    let follower = net.node(2);
    follower.read_index(10);
    assert_eq!(
        turn(follower),
        Turn {
            reads: vec![(
                10,
                Err(ReadError::NotLeader {
                    leader_hint: Some(1),
                    leader_addr: Some("node-1".into()),
                })
            )],
            ..Turn::default()
        }
    );
}
