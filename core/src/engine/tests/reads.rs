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

/// Dissertation §6.4 (etcd-raft's MsgReadIndex): a follower asks its
/// leader, which answers with its commit index once a quorum has confirmed
/// the round the request joined; the follower hands that index to its
/// caller.
#[test]
fn a_follower_gets_its_read_index_from_the_leader() {
    let mut net = Net::new(3);
    net.elect(1);
    let term = net.node(1).term();
    let commit = net.node(1).commit_index();
    net.node(2).read_index(10);
    let t = net.turn(2);
    assert_eq!(
        t.messages,
        vec![msg(
            2,
            1,
            term,
            MessageBody::ReadIndexRequest { request: 10 }
        )]
    );
    assert_eq!(t.reads, vec![], "no answer before the leader's");
    net.deliver_matching(|m| !matches!(m.body, MessageBody::ReadIndexResponse { .. }));
    let heartbeats =
        net.delivered(|m| matches!(m.body, MessageBody::Heartbeat { read_seq: 1, .. }));
    assert_eq!(heartbeats.len(), 2, "the request started a heartbeat round");
    let answer = net
        .queue
        .iter()
        .find(|m| matches!(m.body, MessageBody::ReadIndexResponse { .. }))
        .cloned()
        .expect("the leader answers once the round is confirmed");
    assert_eq!(
        answer,
        msg(
            1,
            2,
            term,
            MessageBody::ReadIndexResponse {
                request: 10,
                index: Some(commit),
            }
        )
    );
    step(net.node(2), answer);
    assert_eq!(turn(net.node(2)).reads, vec![(10, Ok(commit))]);
}

/// A node that knows no leader refuses at once; one whose request or
/// answer is lost fails the read within an election timeout (it campaigns
/// by then, or the read expires), never answering without the leader.
#[test]
fn a_follower_without_an_answer_fails_the_read() {
    let mut lonely = fresh(1, &[1, 2, 3]);
    lonely.read_index(10);
    assert_eq!(
        turn(&mut lonely).reads,
        vec![(
            10,
            Err(ReadError::NotLeader {
                leader_hint: None,
                leader_addr: None,
            })
        )]
    );

    let mut net = Net::new(3);
    net.elect(1);
    net.cut(1, 2);
    net.node(2).read_index(11);
    net.turn(2);
    let mut reads = Vec::new();
    for _ in 0..=ELECTION_TICKS_MAX + 1 {
        reads.extend(net.tick(2).reads);
    }
    assert_eq!(reads, vec![(11, Err(ReadError::LeadershipLost))]);
}
