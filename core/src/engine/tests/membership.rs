//! Membership changes (dissertation §4).

use super::snapshots::leader_streaming_a_snapshot;
use super::*;

// ----- membership (dissertation §4) -----

/// Dissertation §4.2.2: a leader that appended a configuration without
/// itself manages the cluster until that configuration commits, but takes
/// no new proposals: they are dropped with a reason, and the leader steps
/// down once the configuration commits.
#[test]
fn leader_outside_the_configuration_drops_proposals_until_it_steps_down() {
    let mut net = Net::new(3);
    net.elect(1);
    // Hold back the final configuration (C_new, without node 1) at the
    // followers, so it is appended on the leader but not committed.
    net.hold = Some(Box::new(|m: &Message, _: &Engine| {
        matches!(&m.body, MessageBody::Append { entries, .. } if entries.iter().any(|e| {
            matches!(&e.payload, EntryPayload::Membership(c) if !c.is_joint())
        }))
    }));
    net.node(1)
        .change_membership(config_change::MembershipChange::SetVoters([2, 3].into()))
        .expect("the leader accepts the change");
    net.turn(1);
    net.deliver_all();
    let leader = &net.nodes[&1];
    assert!(leader.is_leader());
    assert!(!leader.membership().is_joint(), "C_new is appended");
    assert!(!leader.membership().members().contains(&1));

    let dropped = net.node(1).propose(vec![command_payload(9)]);
    assert_eq!(
        dropped,
        Err(ProposeError::ProposalDropped {
            reason: "leader is not in the configuration"
        })
    );

    // Let C_new through: it commits and the leader steps down.
    net.hold = None;
    for m in std::mem::take(&mut net.held) {
        net.deliver(m);
    }
    net.deliver_all();
    assert!(
        !net.nodes[&1].is_leader(),
        "the removed leader stepped down"
    );
}

/// One transfer per follower at a time, no appends to it meanwhile, and
/// heartbeats keep flowing to it (and to everyone) while it streams.
#[test]
fn leader_streams_one_snapshot_per_follower_and_keeps_heartbeating() {
    let (mut e, _) = leader_streaming_a_snapshot();
    // A late rejection (from an earlier probe) starts no second transfer.
    let nothing_here = MessageBody::AppendResponse {
        outcome: AppendOutcome::Reject {
            rejected_index: 5,
            hint: LogId::default(),
        },
    };
    step(&mut e, msg(2, 1, 2, nothing_here));
    assert!(e.take_actions().snapshot_reads.is_empty());

    // New entries go to 3 (in sync), not to 2; heartbeats go to both.
    step(&mut e, msg(3, 1, 2, ack(6)));
    e.take_actions();
    e.propose(vec![command_payload(7)]).expect("leader");
    let mut sent = e.take_actions().messages;
    for _ in 0..HEARTBEAT_TICKS {
        e.tick();
        sent.extend(e.take_actions().messages);
    }
    let kinds_to = |to: NodeId| -> Vec<&'static str> {
        sent.iter()
            .filter(|m| m.to == to)
            .map(|m| match m.body {
                MessageBody::Append { .. } => "append",
                MessageBody::Heartbeat { .. } => "heartbeat",
                _ => "other",
            })
            .collect()
    };
    assert!(!kinds_to(2).contains(&"append"), "{sent:?}");
    assert!(kinds_to(2).contains(&"heartbeat"), "{sent:?}");
    assert!(kinds_to(3).contains(&"append"), "{sent:?}");
    assert!(kinds_to(3).contains(&"heartbeat"), "{sent:?}");
}

/// The trailing window: after a snapshot, the log keeps the last
/// `snapshot_trailing_entries` entries, so a follower lagging by fewer
/// catches up from the log, not from a snapshot.
#[test]
fn log_keeps_a_trailing_window_behind_a_snapshot() {
    let mut config = config();
    config.snapshot_interval_entries = 10;
    config.snapshot_trailing_entries = 3;
    let mut e = elected_by_hand(config, &[1, 2, 3]);
    e.propose((2..=11).map(command_payload).collect())
        .expect("leader");
    let t = turn(&mut e);
    e.on_write_done(t.write.expect("the entries are written").id);
    // 2 has everything; 3 lags two entries behind.
    step(&mut e, msg(2, 1, 1, ack(11)));
    step(&mut e, msg(3, 1, 1, ack(9)));
    let actions = e.take_actions();
    assert_eq!(e.commit_index(), 11);
    assert_eq!(actions.apply.len(), 11);
    e.on_applied(11);
    assert!(e.take_actions().build_snapshot);
    e.on_snapshot_built(Ok(LogId::new(1, 11))).unwrap();
    let actions = e.take_actions();
    assert_eq!(
        actions.snapshot_meta.map(|m| m.last_log_id),
        Some(LogId::new(1, 11))
    );
    assert_eq!(actions.purge, Some(LogId::new(1, 8)), "keeps 9..=11");

    // 3 asks from 10 on: appends, no snapshot.
    let reject = MessageBody::AppendResponse {
        outcome: AppendOutcome::Reject {
            rejected_index: 11,
            hint: LogId::new(1, 9),
        },
    };
    step(&mut e, msg(3, 1, 1, reject));
    let actions = e.take_actions();
    assert!(actions.snapshot_reads.is_empty());
    assert!(
        actions.messages.iter().any(|m| m.to == 3
            && matches!(m.body, MessageBody::Append { prev_log_id, .. } if prev_log_id == LogId::new(1, 9))),
        "{:?}",
        actions.messages
    );
}

/// A node whose latest configuration (C_new, without it) is not known
/// committed, and which was a voter of the joint configuration before it,
/// still campaigns: it may hold the only copy of C_new, and the joint
/// quorum cannot form without it. Once C_new is known committed it stops.
/// Regression (simulator, seed 37891: a removed leader crashed before
/// C_new committed; no leader ever again).
#[test]
fn node_removed_by_an_uncommitted_configuration_still_campaigns() {
    let mut joint = membership(&[1, 2]);
    joint.voters_outgoing = [1, 3].into();
    joint.nodes.insert(3, "node-3".into());
    let c_new = membership(&[1, 2]);
    let node = |commit| {
        let mut restored = restored(&[1, 2, 3], &log_of(&[1, 1, 1]), hard_state(1, None, commit));
        restored.memberships = vec![
            (1, membership(&[1, 3])),
            (2, joint.clone()),
            (3, c_new.clone()),
        ];
        let mut e = Engine::new(3, config(), restored);
        turn(&mut e);
        e
    };

    let mut uncommitted = node(2);
    assert_eq!(uncommitted.role(), Role::Learner);
    tick_until_campaign(&mut uncommitted);
    let t = turn(&mut uncommitted);
    let asked: BTreeSet<NodeId> = t.messages.iter().map(|m| m.to).collect();
    assert_eq!(asked, [1, 2].into(), "it asks C_new's voters");

    let mut committed = node(3);
    for _ in 0..3 * ELECTION_TICKS_MAX {
        committed.tick();
    }
    assert_eq!(committed.role(), Role::Learner, "its removal is committed");
    assert!(turn(&mut committed).messages.is_empty());
}

/// A state machine that reports a snapshot that cannot be what it applied
/// (beyond the commit index, or of another term than the log's entry) gets
/// an error for the driver to stop the node with, not a panic, and nothing
/// is purged.
#[test]
fn a_snapshot_that_cannot_be_what_was_applied_is_refused() {
    let mut config = config();
    config.snapshot_interval_entries = 2;
    let mut e = elected_by_hand(config, &[1, 2]);
    e.propose(vec![command_payload(2)]).expect("leader");
    let t = turn(&mut e);
    e.on_write_done(t.write.expect("written").id);
    step(&mut e, msg(2, 1, 1, ack(2)));
    e.take_actions();
    assert_eq!(e.commit_index(), 2);

    e.on_applied(2);
    assert!(e.take_actions().build_snapshot);
    for bogus in [LogId::new(1, 3), LogId::new(7, 2)] {
        let refused = e.on_snapshot_built(Ok(bogus));
        assert!(
            matches!(refused, Err(StateMachineError::Corrupt { .. })),
            "{bogus:?}: {refused:?}"
        );
        let actions = e.take_actions();
        assert_eq!((actions.snapshot_meta, actions.purge), (None, None));
        e.check_invariants();
        // (The driver stops the node on the error; left running, the
        // engine would ask for a snapshot again.)
        assert!(actions.build_snapshot);
    }
}
