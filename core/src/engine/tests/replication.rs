//! Replication: §5.3 log replication, the commit rule (§5.3, §5.4.2, Figure 8),
//! heartbeats and the replication flow.

use super::*;

// ----- §5.3 log replication -----

/// §5.3 (consistency check): a follower rejects an append whose previous
/// entry it does not hold, and hints the last index whose term is at most
/// the previous entry's term, so the leader can skip the follower's whole
/// conflicting term.
#[test]
fn follower_rejects_an_append_whose_previous_entry_it_does_not_hold() {
    let mut f = with_log(2, &[1, 2, 3], &[1, 1, 3, 3, 3], hard_state(3, None, 0));
    step(
        &mut f,
        msg(1, 2, 4, append(LogId::new(2, 5), vec![blank(4, 6)], 0)),
    );
    let reject = MessageBody::AppendResponse {
        outcome: AppendOutcome::Reject {
            rejected_index: 5,
            hint: LogId::new(1, 2),
        },
    };
    assert_eq!(
        turn(&mut f),
        Turn {
            write: Some(write(1, None, vec![], Some(hard_state(4, None, 0)))),
            messages: vec![msg(2, 1, 4, reject)],
            ..Turn::default()
        }
    );
    assert_eq!(f.last_log_id(), LogId::new(3, 5), "the log is untouched");
    assert_eq!(f.leader(), Some(1));

    // Beyond the end of the log: the hint is our last entry.
    f.on_write_done(1);
    step(&mut f, msg(1, 2, 4, append(LogId::new(4, 9), vec![], 0)));
    let reject = MessageBody::AppendResponse {
        outcome: AppendOutcome::Reject {
            rejected_index: 9,
            hint: LogId::new(3, 5),
        },
    };
    assert_eq!(turn(&mut f).messages, vec![msg(2, 1, 4, reject)]);
}

/// §5.3: a follower whose log has a suffix that conflicts with the leader's
/// deletes it and appends the leader's entries; the next write says to
/// truncate first.
#[test]
fn follower_truncates_a_conflicting_suffix_then_appends() {
    let mut f = with_log(2, &[1, 2, 3], &[1, 1, 1, 2, 2], hard_state(2, None, 0));
    let entries = vec![command(3, 4), command(3, 5), command(3, 6)];
    step(
        &mut f,
        msg(1, 2, 3, append(LogId::new(1, 3), entries.clone(), 0)),
    );
    assert_eq!(f.last_log_id(), LogId::new(3, 6));
    assert_eq!(f.term_at(4), Some(3));
    assert_eq!(
        turn(&mut f),
        Turn {
            write: Some(write(1, Some(4), entries, Some(hard_state(3, None, 0)))),
            after_write: vec![(1, msg(2, 1, 3, ack(6)))],
            ..Turn::default()
        }
    );
}

/// §5.3 and Figure 2: a follower acknowledges entries only once the write
/// that makes them durable is done. Entries that arrive while an earlier
/// write is in flight wait for the next write, not the one in flight.
#[test]
fn follower_acknowledges_entries_only_after_they_are_durable() {
    let mut f = with_log(2, &[1, 2, 3], &[], hard_state(1, None, 0));
    step(
        &mut f,
        msg(1, 2, 1, append(LogId::new(0, 0), vec![command(1, 1)], 0)),
    );
    assert_eq!(
        turn(&mut f),
        Turn {
            write: Some(write(1, None, vec![command(1, 1)], None)),
            after_write: vec![(1, msg(2, 1, 1, ack(1)))],
            ..Turn::default()
        }
    );

    step(
        &mut f,
        msg(1, 2, 1, append(LogId::new(1, 1), vec![command(1, 2)], 0)),
    );
    assert_eq!(
        turn(&mut f),
        Turn {
            after_write: vec![(2, msg(2, 1, 1, ack(2)))],
            ..Turn::default()
        },
        "write 1 is in flight: the new entry goes in write 2"
    );
    f.on_write_done(1);
    assert_eq!(f.persisted_index(), 1);
    assert_eq!(
        turn(&mut f),
        Turn {
            write: Some(write(2, None, vec![command(1, 2)], None)),
            ..Turn::default()
        }
    );
    f.on_write_done(2);

    // A repeated append of durable entries is acknowledged at once.
    step(
        &mut f,
        msg(1, 2, 1, append(LogId::new(1, 1), vec![command(1, 2)], 0)),
    );
    assert_eq!(
        turn(&mut f),
        Turn {
            messages: vec![msg(2, 1, 1, ack(2))],
            ..Turn::default()
        }
    );
}

/// §5.3 (the optimisation at its end): the leader uses the follower's hint
/// to skip a whole conflicting term in one round trip: after the first
/// rejection at index 7, the next probe's previous entry is index 3, the
/// last one the logs can share, instead of 6.
#[test]
fn leader_skips_a_whole_conflicting_term_in_one_round_trip() {
    let hs = hard_state(4, None, 3);
    let mut net = Net::with_logs(
        config(),
        vec![
            (1, vec![1, 1, 1, 4, 4, 4, 4], hs),
            (2, vec![1, 1, 1, 2, 2, 2, 2, 2, 2], hs),
            (3, vec![1, 1, 1, 4, 4, 4, 4], hs),
        ],
    );
    net.elect(1);
    assert_eq!(net.nodes[&1].term(), 5);
    let probes: Vec<LogId> = net
        .delivered(|m| m.from == 1 && m.to == 2)
        .into_iter()
        .filter_map(|m| match &m.body {
            MessageBody::Append { prev_log_id, .. } => Some(*prev_log_id),
            _ => None,
        })
        .collect();
    assert_eq!(probes[..2], [LogId::new(4, 7), LogId::new(1, 3)]);
    let rejections = net.delivered(|m| {
        m.from == 2
            && matches!(
                m.body,
                MessageBody::AppendResponse {
                    outcome: AppendOutcome::Reject { .. }
                }
            )
    });
    assert_eq!(rejections.len(), 1);
    let follower = &net.nodes[&2];
    assert_eq!(follower.last_log_id(), LogId::new(5, 8));
    assert_eq!(
        (4..=8)
            .map(|i| follower.term_at(i).unwrap())
            .collect::<Vec<_>>(),
        [4, 4, 4, 4, 5]
    );
    assert_eq!(follower.commit_index(), 8);
}

// ----- §5.3 and §5.4.2: the commit rule -----

/// Figure 8, state (c): five nodes. S1 led term 2 and wrote (term 2, index
/// 2); S5 led term 3 and wrote (3, 2) only to itself. Now S1 leads term 4
/// (S4 and S5 are down) and brings (2, 2) to S2 and S3, a majority with
/// itself, while its own blank entry (4, 3) has reached no one else.
fn figure_8_state_c() -> Net {
    let voted_5 = hard_state(3, Some(5), 1);
    let config = EngineConfig {
        // One blank entry per append, so (2, 2) and (4, 3) travel apart.
        append_bytes_max: 24,
        ..config()
    };
    let mut net = Net::with_logs(
        config,
        vec![
            (1, vec![1, 2], hard_state(3, None, 1)),
            (2, vec![1], hard_state(3, None, 1)),
            (3, vec![1], voted_5),
            (4, vec![1], voted_5),
            (5, vec![1, 3], voted_5),
        ],
    );
    net.isolate(4);
    net.isolate(5);
    // S1's term-4 entry does not reach S2 and S3 once they hold (2, 2).
    net.hold = Some(Box::new(|m, to| {
        let carries_3 = matches!(&m.body, MessageBody::Append { entries, .. }
            if entries.iter().any(|e| e.index == 3));
        carries_3 && to.term_at(2) == Some(2)
    }));
    net.elect(1);
    assert_eq!(net.nodes[&1].term(), 4);
    for id in [2, 3] {
        assert_eq!(net.nodes[&id].term_at(2), Some(2));
        assert_eq!(net.nodes[&id].last_log_id(), LogId::new(2, 2));
        assert_eq!(net.nodes[&1].replication()[&id], 2);
    }
    net
}

/// §5.4.2, Figure 8 (c) then (d): a leader never commits an entry of an
/// earlier term by counting replicas. (2, 2) sits on a majority, yet S1 does
/// not commit it; rightly so, because S5 can still win term 5 (with S2, S3
/// and S4, whose logs are less up-to-date than its (3, 2)) and overwrite it.
/// The harness's State Machine Safety check would catch a commit of (2, 2).
#[test]
fn figure_8_leader_does_not_commit_an_earlier_term_entry_by_counting_replicas() {
    let mut net = figure_8_state_c();
    assert_eq!(
        net.nodes[&1].commit_index(),
        1,
        "(2, 2) is on 3 of 5 but not committed"
    );
    for id in [2, 3] {
        assert_eq!(net.nodes[&id].commit_index(), 1);
    }

    // (d): S1 crashes before (4, 3) spreads; S5 comes back. With the link
    // S2-S3 down only S5 can gather three votes.
    net.isolate(1);
    net.held.clear();
    net.hold = None;
    net.heal(4);
    net.heal(5);
    net.cut(2, 3);
    let leader = net.run_until_leader(&[2, 3, 4, 5]);
    assert_eq!(leader, 5);
    assert_eq!(net.nodes[&5].term(), 5);
    for _ in 0..ELECTION_TICKS_MIN {
        net.tick_round(&[2, 3, 4, 5]);
    }
    for id in [2, 3, 4] {
        assert_eq!(
            net.nodes[&id].term_at(2),
            Some(3),
            "(2, 2) overwritten on node {id}"
        );
    }
    assert_eq!(net.nodes[&5].commit_index(), 3);
}

/// §5.4.2, Figure 8 (c) then (e): once an entry of the leader's own term
/// (4, 3) is on a majority, it commits, and (2, 2) with it; then no node
/// without both (S5) can be elected.
#[test]
fn figure_8_earlier_term_entry_commits_with_an_entry_of_the_leader_term() {
    let mut net = figure_8_state_c();
    net.hold = None;
    let held = std::mem::take(&mut net.held);
    net.queue.extend(held);
    net.deliver_all();
    assert_eq!(net.nodes[&1].commit_index(), 3);
    assert_eq!(net.committed.get(&2), Some(&2));

    net.isolate(1);
    net.heal(4);
    net.heal(5);
    for _ in 0..20 * ELECTION_TICKS_MAX {
        net.tick_round(&[2, 3, 4, 5]);
        assert!(!net.nodes[&5].is_leader(), "S5 lacks the committed (4, 3)");
        assert!(!net.nodes[&4].is_leader(), "S4 lacks the committed (4, 3)");
    }
    let leader = [2, 3].into_iter().find(|id| net.nodes[id].is_leader());
    let leader = leader.expect("S2 or S3 is elected");
    assert_eq!(net.nodes[&leader].term_at(2), Some(2));
    assert_eq!(
        net.nodes[&5].term_at(2),
        Some(2),
        "S5's (3, 2) is overwritten"
    );
}

/// §5.4.1 Leader Completeness: a node that misses a committed entry cannot
/// be elected; the node that holds it is.
#[test]
fn node_missing_a_committed_entry_cannot_win_an_election() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(3);
    let entry = net.propose(1);
    assert_eq!(net.nodes[&1].commit_index(), entry.index);
    assert_eq!(net.nodes[&3].last_log_id().index, entry.index - 1);

    // The leader crashes; node 3 comes back, but first node 2 has gone a
    // whole timeout without a leader (so no lease protects it).
    net.isolate(1);
    net.heal(3);
    net.cut(2, 3);
    for _ in 0..ELECTION_TICKS_MAX {
        net.tick_round(&[2]);
    }
    net.cut.clear();
    net.campaign(3);
    assert_eq!(net.nodes[&3].role, Role::PreCandidate, "node 2 refused it");
    assert_eq!(net.nodes[&3].term(), 1);

    let leader = net.run_until_leader(&[2, 3]);
    assert_eq!(leader, 2);
    net.tick_round(&[2, 3]);
    assert_eq!(net.nodes[&3].term_at(entry.index), Some(entry.term));
}

// ----- heartbeats -----

/// §5.2: the leader sends a heartbeat to every peer each heartbeat_ticks;
/// a heartbeat carries min(commit, the peer's match), so a follower never
/// learns a commit index beyond what it holds.
#[test]
fn leader_sends_heartbeats_every_heartbeat_ticks_with_commit_capped_at_match() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(3);
    let entry = net.propose(1);
    assert_eq!(net.nodes[&1].commit_index(), entry.index);
    for round in 1..=3 {
        for tick in 1..HEARTBEAT_TICKS {
            assert_eq!(net.tick(1), Turn::default(), "round {round}, tick {tick}");
        }
        assert_eq!(
            net.tick(1),
            Turn {
                messages: vec![
                    msg(1, 2, 1, heartbeat(entry.index, 0)),
                    msg(1, 3, 1, heartbeat(entry.index - 1, 0)),
                ],
                ..Turn::default()
            }
        );
    }
}

/// §5.2: a follower restarts its election timer on every heartbeat, so
/// while heartbeats flow no follower campaigns.
#[test]
fn followers_do_not_campaign_while_heartbeats_flow() {
    let mut net = Net::new(3);
    net.elect(1);
    let elected_at = net.trace.len();
    for _ in 0..10 * ELECTION_TICKS_MAX {
        net.tick_round(&[1, 2, 3]);
    }
    assert!(net.trace[elected_at..].iter().all(|m| !is_vote_request(m)));
    assert!(net.nodes[&1].is_leader());
    for id in [2, 3] {
        assert_eq!(
            (net.nodes[&id].term(), net.nodes[&id].leader()),
            (1, Some(1))
        );
    }
}

/// §5.2, exactly: with timeouts of 10 or 11 ticks, a heartbeat after 9
/// ticks keeps the follower from campaigning for 9 more.
#[test]
fn heartbeat_restarts_the_follower_election_timer() {
    let config = EngineConfig {
        election_ticks_max: ELECTION_TICKS_MIN + 1,
        ..config()
    };
    let mut f = Engine::new(2, config, restored(&[1, 2, 3], &[], HardState::default()));
    turn(&mut f);
    step(&mut f, msg(1, 2, 1, heartbeat(0, 0)));
    turn(&mut f);
    for _ in 0..2 {
        for _ in 1..ELECTION_TICKS_MIN {
            f.tick();
        }
        assert_eq!(f.role, Role::Follower);
        step(&mut f, msg(1, 2, 1, heartbeat(0, 0)));
        assert_eq!(
            turn(&mut f).messages,
            vec![msg(2, 1, 1, MessageBody::HeartbeatResponse { read_seq: 0 })]
        );
    }
    // Without heartbeats it does campaign.
    tick_until_campaign(&mut f);
}

// ----- replication flow -----

/// Issue 13, item 5 (etcd's MaxUncommittedEntriesSize): past
/// `uncommitted_bytes_max` of uncommitted commands the leader refuses
/// proposals, and takes them again once its entries commit. An empty
/// account takes one batch of any size.
#[test]
fn leader_refuses_proposals_past_its_uncommitted_bytes_until_they_commit() {
    let config = EngineConfig {
        uncommitted_bytes_max: 20, // two and a half 8-byte commands
        ..config()
    };
    let mut e = elected_by_hand(config, &[1, 2, 3]);
    let first = e.propose((2..=4).map(command_payload).collect()).unwrap();
    assert_eq!(
        first,
        LogId::new(1, 2),
        "24 bytes: an empty account takes it"
    );
    assert_eq!(
        e.propose(vec![command_payload(5)]),
        Err(ProposeError::TooManyRequests { gap: 4 })
    );
    assert_eq!(e.last_log_id(), LogId::new(1, 4), "nothing appended");
    let t = turn(&mut e);
    e.on_write_done(t.write.expect("the commands").id);
    step(&mut e, msg(2, 1, 1, ack(1)));
    turn(&mut e);
    step(&mut e, msg(2, 1, 1, ack(4)));
    assert_eq!(e.commit_index(), 4);
    assert_eq!(e.propose(vec![command_payload(5)]), Ok(LogId::new(1, 5)));
}

/// Replication flow (etcd's progress states): a peer in Probe gets one
/// append at a time; its first acknowledgement moves it to Replicate, where
/// the leader pipelines appends without waiting, up to inflight_msgs_max
/// messages of at most append_bytes_max bytes each.
#[test]
fn probe_sends_one_append_then_replicate_pipelines_up_to_the_window() {
    let config = EngineConfig {
        inflight_msgs_max: 2,
        append_bytes_max: 64, // two 32-byte commands
        ..config()
    };
    let mut e = elected_by_hand(config, &[1, 2, 3]);
    let first = e.propose((2..=7).map(command_payload).collect()).unwrap();
    assert_eq!(first, LogId::new(1, 2));
    let t = turn(&mut e);
    assert_eq!(t.messages, vec![], "both peers are in Probe, waiting");
    e.on_write_done(t.write.expect("the commands").id);

    step(&mut e, msg(2, 1, 1, ack(1)));
    assert_eq!(e.commit_index(), 1);
    let t = turn(&mut e);
    assert_eq!(
        t.messages,
        vec![
            msg(
                1,
                2,
                1,
                append(LogId::new(1, 1), vec![command(1, 2), command(1, 3)], 1)
            ),
            msg(
                1,
                2,
                1,
                append(LogId::new(1, 3), vec![command(1, 4), command(1, 5)], 1)
            ),
        ],
        "two appends in flight to node 2, none to node 3 still in Probe"
    );

    step(&mut e, msg(2, 1, 1, ack(3)));
    assert_eq!(e.commit_index(), 3);
    assert_eq!(
        turn(&mut e).messages,
        vec![msg(
            1,
            2,
            1,
            append(LogId::new(1, 5), vec![command(1, 6), command(1, 7)], 3)
        )]
    );

    // Node 3 answers its probe and is caught up from its match point.
    step(&mut e, msg(3, 1, 1, ack(1)));
    assert_eq!(
        turn(&mut e).messages,
        vec![
            msg(
                1,
                3,
                1,
                append(LogId::new(1, 1), vec![command(1, 2), command(1, 3)], 3)
            ),
            msg(
                1,
                3,
                1,
                append(LogId::new(1, 3), vec![command(1, 4), command(1, 5)], 3)
            ),
        ]
    );
}

/// A follower in Replicate whose appends were all lost during a partition
/// catches up once the partition heals, even if nothing new is proposed:
/// the leader must notice from the heartbeat responses that it lags.
#[test]
fn follower_whose_appends_were_lost_catches_up_after_the_partition_heals() {
    // One lost append leaves the window open; four fill it (3 slots).
    for lost in [1, 4] {
        let mut net = Net::new(3);
        net.elect(1);
        net.isolate(3);
        let mut last = LogId::default();
        for _ in 0..lost {
            last = net.propose(1);
        }
        assert_eq!(net.nodes[&1].commit_index(), last.index);
        net.heal(3);
        for _ in 0..2 * ELECTION_TICKS_MIN {
            net.tick_round(&[1, 2, 3]);
        }
        assert!(net.nodes[&1].is_leader());
        assert_eq!(net.nodes[&3].last_log_id(), last, "{lost} lost");
        assert_eq!(net.nodes[&3].commit_index(), last.index, "{lost} lost");
    }
}
