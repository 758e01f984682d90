//! Proposals forwarded by followers (`Config::forward_proposals`).

use super::*;
use crate::message::{ForwardOutcome, ForwardRefusal};

fn commands(n: usize) -> Vec<CommandBytes> {
    (0..n)
        .map(|i| CommandBytes::from(vec![i as u8; 3]))
        .collect()
}

fn forward_response(m: &Message) -> Option<(u64, ForwardOutcome)> {
    match &m.body {
        MessageBody::ForwardResponse { batch, outcome } => Some((*batch, *outcome)),
        _ => None,
    }
}

/// The follower sends its batch to the leader, which appends the commands
/// as consecutive entries of its term and says where; the follower hands
/// that log id (and who appended it) to its driver, and the entries
/// replicate and commit as the leader's own.
#[test]
fn a_follower_forwards_and_learns_where_the_leader_appended() {
    let mut net = Net::new(3);
    net.elect(1);
    let term = net.node(1).term();
    let next = net.node(1).last_log_id().index + 1;
    let batch = net.node(2).forward(commands(3)).unwrap();
    let t = net.turn(2);
    assert_eq!(
        t.messages,
        vec![msg(
            2,
            1,
            term,
            MessageBody::ForwardProposals {
                batch,
                commands: commands(3),
            }
        )]
    );
    assert_eq!(t.forwarded, vec![], "no answer before the leader's");
    net.deliver_matching(|m| !matches!(m.body, MessageBody::ForwardResponse { .. }));
    let answer = net
        .queue
        .iter()
        .find(|m| forward_response(m).is_some())
        .cloned()
        .expect("the leader answers");
    assert_eq!(
        forward_response(&answer),
        Some((
            batch,
            ForwardOutcome::Appended {
                first: LogId::new(term, next),
            }
        ))
    );
    for i in 0..3u64 {
        let entry = net.disks[&1].get((next + i - 1) as usize).cloned();
        assert!(
            matches!(entry, Some(Entry { term: t, payload: EntryPayload::Command(ref c), .. })
                if t == term && c[..] == [i as u8; 3][..]),
            "entry {} is the forwarded command {i}: {entry:?}",
            next + i
        );
    }
    assert_eq!(net.node(1).commit_index(), next + 2, "committed as its own");
    step(net.node(2), answer);
    assert_eq!(
        turn(net.node(2)).forwarded,
        vec![(batch, Ok((LogId::new(term, next), 1)))]
    );
}

/// A node that knows no leader refuses at once, sending nothing.
#[test]
fn without_a_leader_forwarding_is_refused_at_once() {
    let mut lonely = fresh(2, &[1, 2, 3]);
    assert!(matches!(
        lonely.forward(commands(1)),
        Err(ProposeError::NotLeader {
            leader_hint: None,
            ..
        })
    ));
    assert_eq!(turn(&mut lonely).messages, vec![]);
}

/// The leader refuses what it would refuse of its own callers, and says
/// why: during a transfer (the proposals would be dropped), over its
/// command limits (the follower's may differ); a node that does not lead
/// says so. Nothing is appended in any of these cases.
#[test]
fn the_leader_refuses_with_the_reason_and_appends_nothing() {
    let mut net = Net::new(3);
    net.elect(1);
    let term = net.node(1).term();
    let last = net.node(1).last_log_id();
    // Each ask is a batch of its own: a repeated id is a duplicate.
    let mut next_batch = 9;
    let mut ask = |net: &mut Net, to: NodeId, commands: Vec<CommandBytes>| {
        let batch = next_batch;
        next_batch += 1;
        step(
            net.node(to),
            msg(
                2,
                to,
                term,
                MessageBody::ForwardProposals { batch, commands },
            ),
        );
        let t = turn(net.node(to));
        t.messages
            .iter()
            .find_map(forward_response)
            .expect("an answer")
    };
    let big = vec![CommandBytes::from(vec![0u8; (1 << 20) + 1])];
    assert_eq!(
        ask(&mut net, 1, big),
        (
            9,
            ForwardOutcome::Refused(ForwardRefusal::RequestTooLarge {
                size: (1 << 20) + 1,
                max: 1 << 20,
            })
        )
    );
    assert_eq!(
        ask(&mut net, 1, commands(4097)).1,
        ForwardOutcome::Refused(ForwardRefusal::TooManyCommands {
            count: 4097,
            max: 4096,
        })
    );
    assert_eq!(
        ask(&mut net, 3, commands(1)).1,
        ForwardOutcome::Refused(ForwardRefusal::NotLeader),
        "a follower refuses"
    );
    net.node(1).transfer_leader(3).unwrap();
    net.turn(1);
    assert_eq!(
        ask(&mut net, 1, commands(1)).1,
        ForwardOutcome::Refused(ForwardRefusal::TransferInProgress)
    );
    assert_eq!(net.node(1).last_log_id(), last, "nothing appended");
}

/// A refusal reaches the caller as the error a local proposal would get.
#[test]
fn a_refusal_becomes_the_matching_propose_error() {
    let mut net = Net::new(3);
    net.elect(1);
    let term = net.node(1).term();
    let batch = net.node(2).forward(commands(1)).unwrap();
    net.turn(2);
    step(
        net.node(2),
        msg(
            1,
            2,
            term,
            MessageBody::ForwardResponse {
                batch,
                outcome: ForwardOutcome::Refused(ForwardRefusal::TransferInProgress),
            },
        ),
    );
    assert_eq!(
        turn(net.node(2)).forwarded,
        vec![(
            batch,
            Err(ProposeError::ProposalDropped {
                reason: "leadership transfer in progress"
            })
        )]
    );
}

/// A batch whose leader changes, or whose answer does not come within the
/// longest election timeout, ends with an unknown outcome: the old leader
/// may have appended it. A late answer is ignored.
#[test]
fn an_unanswered_batch_ends_unknown_when_the_leader_changes_or_time_runs_out() {
    let mut net = Net::new(3);
    net.elect(1);
    let batch = net.node(2).forward(commands(1)).unwrap();
    net.turn(2);
    net.queue.clear();
    for _ in 0..ELECTION_TICKS_MAX {
        net.node(2).ticks += 1;
        net.node(2).expire_forwards();
        assert_eq!(
            turn(net.node(2)).forwarded,
            vec![],
            "not before the timeout"
        );
    }
    net.node(2).ticks += 1;
    net.node(2).expire_forwards();
    assert_eq!(
        turn(net.node(2)).forwarded,
        vec![(batch, Err(ProposeError::ForwardUnanswered { leader: 1 }))]
    );

    let batch = net.node(2).forward(commands(1)).unwrap();
    net.turn(2);
    net.queue.clear();
    // Node 3 leads a later term: node 2 hears from it.
    let term = net.node(2).term();
    step(net.node(2), msg(3, 2, term + 1, heartbeat(0, 0)));
    assert_eq!(
        turn(net.node(2)).forwarded,
        vec![(batch, Err(ProposeError::ForwardUnanswered { leader: 1 }))]
    );
    let late = msg(
        1,
        2,
        1,
        MessageBody::ForwardResponse {
            batch,
            outcome: ForwardOutcome::Appended {
                first: LogId::new(1, 5),
            },
        },
    );
    step(net.node(2), late);
    assert_eq!(
        turn(net.node(2)).forwarded,
        vec![],
        "a late answer is ignored"
    );
}

/// Only the node a batch went to can answer for it: an answer from
/// another node is ignored, and the batch still waits for its own.
#[test]
fn an_answer_from_another_node_is_ignored() {
    let mut net = Net::new(3);
    net.elect(1);
    let term = net.node(1).term();
    let batch = net.node(2).forward(commands(1)).unwrap();
    net.turn(2);
    let appended = |from| {
        msg(
            from,
            2,
            term,
            MessageBody::ForwardResponse {
                batch,
                outcome: ForwardOutcome::Appended {
                    first: LogId::new(term, 7),
                },
            },
        )
    };
    step(net.node(2), appended(3));
    assert_eq!(turn(net.node(2)).forwarded, vec![]);
    step(net.node(2), appended(1));
    assert_eq!(
        turn(net.node(2)).forwarded,
        vec![(batch, Ok((LogId::new(term, 7), 1)))]
    );
}

/// The answer leaves the leader ahead of the append that carries the
/// batch's entries to the follower that asked.
#[test]
fn the_answer_goes_out_before_the_entries() {
    let mut net = Net::new(3);
    net.elect(1);
    let batch = net.node(2).forward(commands(1)).unwrap();
    let request = net.turn(2).messages.remove(0);
    step(net.node(1), request);
    let to_follower: Vec<_> = turn(net.node(1))
        .messages
        .into_iter()
        .filter(|m| m.to == 2)
        .collect();
    let answer = to_follower
        .iter()
        .position(|m| forward_response(m).is_some_and(|(b, _)| b == batch))
        .expect("answered");
    let append = to_follower
        .iter()
        .position(|m| matches!(&m.body, MessageBody::Append { entries, .. } if !entries.is_empty()))
        .expect("the entries are sent");
    assert!(answer < append, "{to_follower:?}");
}

/// A duplicated batch (any network may deliver a message twice) is
/// appended once and answered once; a copy that arrives after the leader
/// stepped down in the same term gets no "not leader" refusal, which would
/// tell the caller nothing was appended. Forgotten only long after.
#[test]
fn a_duplicated_batch_is_appended_once_and_answered_once() {
    let mut net = Net::new(3);
    net.elect(1);
    let term = net.node(1).term();
    let batch = net.node(2).forward(commands(2)).unwrap();
    let t = net.turn(2);
    let request = t.messages[0].clone();
    let last = net.node(1).last_log_id().index;
    step(net.node(1), request.clone());
    let answers: Vec<_> = turn(net.node(1))
        .messages
        .iter()
        .filter_map(forward_response)
        .collect();
    assert_eq!(
        answers,
        vec![(
            batch,
            ForwardOutcome::Appended {
                first: LogId::new(term, last + 1)
            }
        )]
    );
    step(net.node(1), request.clone());
    let t = turn(net.node(1));
    assert_eq!(t.messages.iter().filter_map(forward_response).count(), 0);
    assert_eq!(net.node(1).last_log_id().index, last + 2, "appended once");
    // Stepped down in the same term (CheckQuorum): still silent.
    net.node(1).become_follower(term, None);
    step(net.node(1), request.clone());
    let t = turn(net.node(1));
    assert_eq!(t.messages.iter().filter_map(forward_response).count(), 0);
    // Long after, the id is forgotten (and a copy that late would be
    // handled again).
    let window = super::super::forwarding::FORWARD_DEDUP_ELECTIONS * ELECTION_TICKS_MAX;
    net.node(1).ticks += window + 1;
    net.node(1).forget_old_forwards();
    step(net.node(1), request);
    assert_eq!(
        turn(net.node(1)).messages.iter().find_map(forward_response),
        Some((batch, ForwardOutcome::Refused(ForwardRefusal::NotLeader)))
    );
}

/// Batch ids differ from one start of a node to the next once its durable
/// state moved, so a leader that remembers the old ids does not take a new
/// batch for a duplicate.
#[test]
fn batch_ids_start_elsewhere_after_a_restart() {
    use super::super::forwarding::first_batch_id;
    let hs = |term, commit| HardState {
        term,
        vote: None,
        commit,
    };
    let a = first_batch_id(7, 2, hs(3, 10), LogId::new(3, 12));
    let b = first_batch_id(7, 2, hs(3, 11), LogId::new(3, 12));
    let c = first_batch_id(7, 2, hs(3, 10), LogId::new(3, 13));
    let d = first_batch_id(7, 3, hs(3, 10), LogId::new(3, 12));
    assert!(a != b && a != c && a != d && b != c);
    for id in [a, b, c, d] {
        assert_eq!(id & 0xffff_ffff, 1, "the counter starts at 1");
    }
}

/// A batch from a node behind in term is refused at once, not dropped, so
/// its callers need not wait for the batch to expire.
#[test]
fn a_batch_from_an_older_term_is_refused() {
    let mut net = Net::new(3);
    net.elect(1);
    let term = net.node(1).term();
    step(
        net.node(1),
        msg(
            2,
            1,
            term - 1,
            MessageBody::ForwardProposals {
                batch: 4,
                commands: commands(1),
            },
        ),
    );
    let t = turn(net.node(1));
    assert_eq!(
        t.messages.iter().find_map(forward_response),
        Some((4, ForwardOutcome::Refused(ForwardRefusal::NotLeader)))
    );
}
