//! Leadership transfer (dissertation §3.10).

use super::*;

// ----- leadership transfer (dissertation §3.10) -----

/// Dissertation §3.10: during a transfer the leader drops proposals; it
/// sends TimeoutNow once the target has caught up, and the target wins at
/// once (voters skip the lease for a transfer).
#[test]
fn leadership_transfer_drops_proposals_and_sends_timeout_now_once_caught_up() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(3);
    let entry = net.propose(1);
    net.node(1).transfer_leader(3).unwrap();
    assert_eq!(net.nodes[&1].lead_transferee(), Some(3));
    let t = net.turn(1);
    assert!(
        t.messages.iter().all(|m| m.body != MessageBody::TimeoutNow),
        "3 lags"
    );
    assert_eq!(
        net.node(1).propose(vec![command_payload(9)]),
        Err(ProposeError::ProposalDropped {
            reason: "leadership transfer in progress"
        })
    );

    net.heal(3);
    for _ in 0..ELECTION_TICKS_MAX {
        net.tick_round(&[1, 2, 3]);
    }
    assert!(net.nodes[&3].is_leader());
    assert_eq!(net.nodes[&3].term(), 2);
    let timeout_now = net.delivered(|m| m.body == MessageBody::TimeoutNow);
    assert_eq!(timeout_now, vec![&msg(1, 3, 1, MessageBody::TimeoutNow)]);
    assert_eq!(net.nodes[&3].term_at(entry.index), Some(entry.term));

    // Exactly: to a caught-up target, TimeoutNow goes out in the same turn.
    net.deliver_all();
    net.tick_round(&[1, 2, 3]);
    let new_leader = net.node(3);
    new_leader.transfer_leader(2).unwrap();
    let t = turn(new_leader);
    assert_eq!(t.messages, vec![msg(3, 2, 2, MessageBody::TimeoutNow)]);
}

/// Dissertation §3.10: a transfer that does not complete within
/// election_ticks_min ticks is aborted, and proposals are accepted again.
#[test]
fn leadership_transfer_aborts_after_an_election_timeout() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(3);
    net.node(1).transfer_leader(3).unwrap();
    for tick in 1..=ELECTION_TICKS_MIN {
        assert!(
            matches!(
                net.node(1).propose(vec![command_payload(9)]),
                Err(ProposeError::ProposalDropped { .. })
            ),
            "tick {tick}"
        );
        net.tick_round(&[1, 2]);
    }
    assert!(net.nodes[&1].is_leader());
    assert_eq!(net.nodes[&1].lead_transferee(), None);
    assert_eq!(
        net.node(1).propose(vec![command_payload(2)]),
        Ok(LogId::new(1, 2))
    );
}

/// A follower refuses proposals and names the leader it knows, if any, with
/// its address.
#[test]
fn follower_refuses_proposals_with_the_leader_hint() {
    let mut lonely = fresh(1, &[1, 2, 3]);
    assert_eq!(
        lonely.propose(vec![command_payload(1)]),
        Err(ProposeError::NotLeader {
            leader_hint: None,
            leader_addr: None
        })
    );
    let mut net = Net::new(3);
    net.elect(1);
    assert_eq!(
        net.node(2).propose(vec![command_payload(2)]),
        Err(ProposeError::NotLeader {
            leader_hint: Some(1),
            leader_addr: Some("node-1".into()),
        })
    );
    assert_eq!(turn(net.node(2)), Turn::default(), "nothing was appended");
}
