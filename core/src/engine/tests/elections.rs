//! Elections: §5.2 leader election, §5.4.1 the election restriction, Pre-Vote
//! and CheckQuorum.

use super::*;

// ----- §5.2 leader election -----

/// §5.2 and dissertation §9.6 (Pre-Vote): a follower that hears nothing for
/// its election timeout (between the min and max) asks for pre-votes for
/// term+1 without changing its term; a quorum of pre-votes makes it a
/// candidate of term+1 that votes for itself durably and asks for votes.
#[test]
fn follower_times_out_pre_votes_then_campaigns_in_the_next_term() {
    let mut e = fresh(1, &[1, 2, 3]);
    tick_until_campaign(&mut e);
    assert_eq!(e.role, Role::PreCandidate);
    assert_eq!(e.term(), 0, "a pre-vote does not change the term");
    let pre_vote = vote_request(true, LogId::new(0, 0));
    assert_eq!(
        turn(&mut e),
        Turn {
            messages: vec![msg(1, 2, 1, pre_vote.clone()), msg(1, 3, 1, pre_vote)],
            ..Turn::default()
        }
    );

    step(&mut e, msg(2, 1, 1, vote_response(true, true)));
    assert_eq!(e.role, Role::Candidate);
    assert_eq!((e.term(), e.vote()), (1, Some(1)));
    let vote = vote_request(false, LogId::new(0, 0));
    assert_eq!(
        turn(&mut e),
        Turn {
            write: Some(write(1, None, vec![], Some(hard_state(1, Some(1), 0)))),
            messages: vec![msg(1, 2, 1, vote.clone()), msg(1, 3, 1, vote)],
            ..Turn::default()
        }
    );
}

/// §5.2: a candidate that receives votes from a majority (its own, once
/// durable, and one more of three) becomes leader, and appends a blank entry
/// of its term that it sends to every peer (§5.4.2).
#[test]
fn candidate_with_votes_from_a_majority_becomes_leader() {
    let mut e = fresh(1, &[1, 2, 3]);
    tick_until_campaign(&mut e);
    turn(&mut e);
    step(&mut e, msg(2, 1, 1, vote_response(true, true)));
    let t = turn(&mut e);
    e.on_write_done(t.write.expect("the vote").id);
    assert_eq!(
        e.role,
        Role::Candidate,
        "one vote of three is not a majority"
    );
    step(&mut e, msg(3, 1, 1, vote_response(false, false)));
    assert_eq!(
        e.role,
        Role::Candidate,
        "a refusal leaves the election open"
    );
    step(&mut e, msg(2, 1, 1, vote_response(false, true)));
    assert!(e.is_leader());
    assert_eq!(e.leader(), Some(1));
    let probe = append(LogId::new(0, 0), vec![blank(1, 1)], 0);
    assert_eq!(
        turn(&mut e),
        Turn {
            write: Some(write(2, None, vec![blank(1, 1)], None)),
            messages: vec![msg(1, 2, 1, probe.clone()), msg(1, 3, 1, probe)],
            ..Turn::default()
        }
    );
}

/// §5.2 Election Safety: two candidates in one term split the votes of a
/// four-node cluster (two each); neither becomes leader, and the randomized
/// timeouts later elect exactly one leader per term.
#[test]
fn split_vote_elects_no_leader_in_that_term() {
    let mut net = Net::new(4);
    for id in [1, 2] {
        for _ in 0..ELECTION_TICKS_MAX {
            net.tick(id);
            if net.nodes[&id].role != Role::Follower {
                break;
            }
        }
    }
    net.deliver_matching(|m| m.kind().starts_with("pre_vote"));
    assert_eq!(net.nodes[&1].role, Role::Candidate);
    assert_eq!(net.nodes[&2].role, Role::Candidate);
    // Node 3 hears only from candidate 1, node 4 only from candidate 2.
    net.cut(1, 2);
    net.cut(1, 4);
    net.cut(2, 3);
    net.deliver_all();
    assert_eq!(net.nodes[&3].vote(), Some(1));
    assert_eq!(net.nodes[&4].vote(), Some(2));
    for id in [1, 2] {
        assert_eq!(
            (net.nodes[&id].role, net.nodes[&id].term()),
            (Role::Candidate, 1)
        );
    }
    assert!(net.leaders.is_empty(), "a split vote elects nobody");

    net.cut.clear();
    let leader = net.run_until_leader(&[1, 2, 3, 4]);
    assert!(net.nodes[&leader].term() >= 2);
    assert_eq!(net.leaders.len(), 1);
}

/// §5.2: each server votes for at most one candidate in a given term (first
/// come, first served); a repeated request from the same candidate is
/// granted again.
#[test]
fn node_grants_at_most_one_vote_per_term() {
    let mut e = fresh(3, &[1, 2, 3]);
    let last = LogId::new(0, 0);
    step(&mut e, msg(1, 3, 1, vote_request(false, last)));
    let t = turn(&mut e);
    e.on_write_done(t.write.expect("the vote").id);
    assert_eq!(e.vote(), Some(1));

    step(&mut e, msg(2, 3, 1, vote_request(false, last)));
    assert_eq!(
        turn(&mut e),
        Turn {
            messages: vec![msg(3, 2, 1, vote_response(false, false))],
            ..Turn::default()
        }
    );
    assert_eq!(e.vote(), Some(1));

    step(&mut e, msg(1, 3, 1, vote_request(false, last)));
    assert_eq!(
        turn(&mut e),
        Turn {
            messages: vec![msg(3, 1, 1, vote_response(false, true))],
            ..Turn::default()
        }
    );
}

/// Figure 2 ("updated on stable storage before responding to RPCs") and
/// dissertation §3.8: the vote response waits for the write that records
/// the vote; it leaves only once that write is done.
#[test]
fn vote_response_waits_for_the_write_that_records_the_vote() {
    let mut e = fresh(2, &[1, 2, 3]);
    step(&mut e, msg(1, 2, 1, vote_request(false, LogId::new(0, 0))));
    assert_eq!(
        turn(&mut e),
        Turn {
            write: Some(write(1, None, vec![], Some(hard_state(1, Some(1), 0)))),
            after_write: vec![(1, msg(2, 1, 1, vote_response(false, true)))],
            ..Turn::default()
        }
    );
    e.on_write_done(1);
    assert_eq!(turn(&mut e), Turn::default());
}

/// Dissertation §4.1: a node grants votes without asking whether it is a
/// voter. A learner promoted before the new configuration reached it (or a
/// new node with an empty log) must vote, or a quorum that counts it can
/// never form. Regression (simulator, seed 354): such a node refused and
/// the cluster stayed leaderless.
#[test]
fn node_that_does_not_know_it_is_a_voter_still_votes() {
    let mut e = fresh(4, &[1, 2, 3]);
    assert_eq!(
        e.role(),
        Role::Learner,
        "4 is not in the configuration it knows"
    );
    let last = LogId::new(1, 5);
    step(&mut e, msg(1, 4, 2, vote_request(true, last)));
    assert_eq!(
        turn(&mut e).messages,
        vec![msg(4, 1, 2, vote_response(true, true))]
    );
    step(&mut e, msg(1, 4, 2, vote_request(false, last)));
    let t = turn(&mut e);
    assert_eq!(
        t.after_write,
        vec![(1, msg(4, 1, 2, vote_response(false, true)))]
    );
    assert_eq!(e.vote(), Some(1));
}

/// §5.2 and Figure 2: a candidate's vote for itself counts only once it is
/// durable, so a single-node cluster becomes leader only after the write of
/// its vote is done, and commits its blank entry only after that entry's
/// write is done.
#[test]
fn single_node_becomes_leader_only_after_its_vote_is_durable() {
    let mut e = fresh(1, &[1]);
    tick_until_campaign(&mut e);
    assert_eq!(e.role, Role::Candidate, "its own pre-vote is a quorum");
    assert_eq!(
        turn(&mut e),
        Turn {
            write: Some(write(1, None, vec![], Some(hard_state(1, Some(1), 0)))),
            ..Turn::default()
        }
    );
    assert_eq!(e.role, Role::Candidate, "the vote is not durable yet");

    e.on_write_done(1);
    assert!(e.is_leader());
    assert_eq!(
        turn(&mut e),
        Turn {
            write: Some(write(2, None, vec![blank(1, 1)], None)),
            ..Turn::default()
        }
    );
    assert_eq!(e.commit_index(), 0, "the blank entry is not durable yet");

    e.on_write_done(2);
    assert_eq!(e.commit_index(), 1);
    assert_eq!(
        turn(&mut e),
        Turn {
            write: Some(Write {
                id: 3,
                batch: WriteBatch {
                    truncate_from: None,
                    entries: vec![],
                    hard_state: Some(hard_state(1, Some(1), 1)),
                    must_sync: false,
                },
            }),
            apply: vec![blank(1, 1)],
            ..Turn::default()
        }
    );
}

// ----- §5.4.1 election restriction -----

/// §5.4.1: a voter denies its vote (and its pre-vote) to a candidate whose
/// last entry has a lower term than its own, however long that log is.
#[test]
fn voter_rejects_candidate_whose_last_term_is_lower() {
    let mut voter = with_log(3, &[1, 2, 3], &[1, 1, 2], hard_state(2, None, 0));
    step(
        &mut voter,
        msg(1, 3, 3, vote_request(true, LogId::new(1, 5))),
    );
    assert_eq!(
        turn(&mut voter),
        Turn {
            messages: vec![msg(3, 1, 2, vote_response(true, false))],
            ..Turn::default()
        },
        "a pre-vote is refused in the voter's own term"
    );
    step(
        &mut voter,
        msg(1, 3, 3, vote_request(false, LogId::new(1, 5))),
    );
    assert_eq!(
        turn(&mut voter),
        Turn {
            write: Some(write(1, None, vec![], Some(hard_state(3, None, 0)))),
            after_write: vec![(1, msg(3, 1, 3, vote_response(false, false)))],
            ..Turn::default()
        }
    );
    assert_eq!(voter.vote(), None);

    // Control: the same voter grants a candidate whose last term is higher.
    voter.on_write_done(1);
    step(
        &mut voter,
        msg(2, 3, 3, vote_request(false, LogId::new(3, 1))),
    );
    assert_eq!(voter.vote(), Some(2));
}

/// §5.4.1: with equal last terms, the longer log is more up-to-date; a voter
/// denies its vote to a candidate whose log is shorter than its own.
#[test]
fn voter_rejects_candidate_with_a_shorter_log_in_the_same_term() {
    let mut voter = with_log(3, &[1, 2, 3], &[1, 1, 2], hard_state(2, None, 0));
    step(
        &mut voter,
        msg(1, 3, 3, vote_request(false, LogId::new(2, 2))),
    );
    let t = turn(&mut voter);
    assert_eq!(
        t.after_write,
        vec![(1, msg(3, 1, 3, vote_response(false, false)))]
    );
    assert_eq!(voter.vote(), None);

    // Control: as long as ours is enough.
    voter.on_write_done(1);
    step(
        &mut voter,
        msg(2, 3, 3, vote_request(false, LogId::new(2, 3))),
    );
    assert_eq!(
        turn(&mut voter),
        Turn {
            write: Some(write(2, None, vec![], Some(hard_state(3, Some(2), 0)))),
            after_write: vec![(2, msg(3, 2, 3, vote_response(false, true)))],
            ..Turn::default()
        }
    );
}

// ----- Pre-Vote and CheckQuorum -----

/// Dissertation §9.6 (Pre-Vote): a node cut off from everyone times out
/// again and again but never raises its term, so when it comes back it does
/// not depose the leader.
#[test]
fn partitioned_node_does_not_raise_its_term() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(3);
    let mut pre_votes = 0;
    for _ in 0..5 * ELECTION_TICKS_MAX {
        for id in [1, 2, 3] {
            let t = net.tick(id);
            if id == 3 {
                pre_votes += t.messages.iter().filter(|m| m.kind() == "pre_vote").count();
            }
        }
        net.deliver_all();
    }
    assert!(
        pre_votes >= 4,
        "node 3 timed out repeatedly ({pre_votes} pre-votes)"
    );
    assert_eq!(net.nodes[&3].term(), 1);

    net.heal(3);
    for _ in 0..2 * ELECTION_TICKS_MAX {
        net.tick_round(&[1, 2, 3]);
    }
    assert!(net.nodes[&1].is_leader());
    assert_eq!(net.nodes[&1].term(), 1, "the leader was not disturbed");
    assert_eq!(net.nodes[&3].leader(), Some(1));
}

/// Dissertation §4.2.3 and §9.6: a node that heard from a leader within the
/// minimum election timeout ignores (pre-)vote requests for a later term, so
/// a node cut off from the leader alone cannot disrupt it. Once the leader
/// has been silent that long, the same request is granted.
#[test]
fn pre_vote_is_refused_by_a_node_that_heard_from_the_leader_recently() {
    let mut net = Net::new(3);
    net.elect(1);
    let last = net.nodes[&3].last_log_id();
    let pre_vote = msg(3, 2, 2, vote_request(true, last));
    step(net.node(2), pre_vote.clone());
    assert_eq!(
        turn(net.node(2)),
        Turn::default(),
        "ignored: no answer at all"
    );

    // Scenario: node 3 loses only its link to the leader.
    net.cut(1, 3);
    for _ in 0..5 * ELECTION_TICKS_MAX {
        net.tick_round(&[1, 2, 3]);
    }
    assert!(net.nodes[&1].is_leader());
    assert_eq!(net.nodes[&1].term(), 1);
    assert_eq!(net.nodes[&3].term(), 1);
    assert!(net
        .delivered(|m| m.from == 2 && m.to == 3 && m.kind() == "pre_vote_response")
        .is_empty());

    // Once node 2 has not heard from the leader for election_ticks_min ticks,
    // it answers on the log alone.
    net.isolate(1);
    let node_2 = net.node(2);
    for _ in 0..ELECTION_TICKS_MIN {
        node_2.tick();
    }
    step(node_2, pre_vote);
    let to_3: Vec<Message> = turn(node_2)
        .messages
        .into_iter()
        .filter(|m| m.to == 3)
        .collect();
    assert_eq!(to_3, vec![msg(2, 3, 2, vote_response(true, true))]);
}

/// Dissertation §6.2 (CheckQuorum): a leader that has heard from no quorum
/// during a whole election timeout (election_ticks_min) steps down. The
/// window in which it last heard from its peers still counts, so it steps
/// down at the end of the next one.
#[test]
fn leader_that_hears_from_no_one_steps_down() {
    let mut net = Net::new(3);
    net.elect(1);
    // Control: a connected leader keeps leading.
    for _ in 0..3 * ELECTION_TICKS_MIN {
        net.tick_round(&[1, 2, 3]);
    }
    assert!(net.nodes[&1].is_leader());

    net.isolate(1);
    for tick in 1..=2 * ELECTION_TICKS_MIN {
        net.tick(1);
        if tick < ELECTION_TICKS_MIN {
            assert!(net.nodes[&1].is_leader(), "stepped down at tick {tick}");
        }
    }
    let node_1 = &net.nodes[&1];
    assert_eq!(node_1.role, Role::Follower);
    assert_eq!((node_1.term(), node_1.leader()), (1, None));
}
