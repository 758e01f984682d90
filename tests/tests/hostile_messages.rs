//! Peer input never reaches an assertion (issue 13, item 6): a message
//! that `receive` accepts cannot panic the engine or break an invariant,
//! whatever its terms, indexes, memberships or offsets. A transport that
//! decodes its own way (not through `codec::decode_message`) relies on
//! `receive` validating as the codec does.

use proptest::prelude::*;
use rafter::testing::{strategies, SimActions, SimCore, SimDurable};
use rafter::{Config, Membership, Message, MessageBody, Role};

fn members() -> Membership {
    Membership::new_voters((1..=3).map(|id| (id, format!("node-{id}"))))
}

/// Ends a turn as a driver would, with every write durable at once.
fn drive(core: &mut SimCore) -> SimActions {
    let actions = core.take_actions();
    if let Some((id, _)) = &actions.write {
        core.on_write_done(*id);
    }
    actions
}

fn follower() -> SimCore {
    let mut core = SimCore::new(
        1,
        &Config::default(),
        SimDurable::default(),
        &members(),
        None,
    )
    .expect("a fresh node starts");
    drive(&mut core);
    core
}

/// Node 1, elected by node 2's votes.
fn leader() -> SimCore {
    let mut core = follower();
    while core.role() != Role::PreCandidate {
        core.tick();
        drive(&mut core);
    }
    for pre_vote in [true, false] {
        let term = if pre_vote {
            core.term() + 1
        } else {
            core.term()
        };
        core.step(Message::new(
            2,
            1,
            term,
            MessageBody::VoteResponse {
                pre_vote,
                granted: true,
            },
        ));
        drive(&mut core);
        drive(&mut core);
    }
    assert_eq!(core.role(), Role::Leader);
    core
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn hostile_messages_accepted_by_receive_break_nothing(
        lead in any::<bool>(),
        messages in proptest::collection::vec(strategies::any_message(), 1..16),
        ticks in proptest::collection::vec(0u64..30, 16),
    ) {
        let mut core = if lead { leader() } else { follower() };
        for (mut message, ticks) in messages.into_iter().zip(ticks) {
            message.to = 1;
            // Refused or stepped: either way the node must go on.
            let _ = core.receive(message);
            drive(&mut core);
            core.check_invariants();
            for _ in 0..ticks {
                core.tick();
                drive(&mut core);
                core.check_invariants();
            }
        }
    }
}

/// The handle's gateway: an append running past `u64::MAX` and a term with
/// no room after it are refused by `receive`, and the node goes on.
#[tokio::test(start_paused = true)]
async fn receive_refuses_what_decode_message_refuses_and_the_node_goes_on() {
    use rafter::ReceiveError;
    use rafter_tests::cluster::{test_config, Cluster};

    let mut cluster = Cluster::start(3, test_config()).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower_of(leader);
    let term = cluster.raft(leader).status().term;
    let mut past_the_end = strategies::append_past_the_last_index();
    past_the_end.from = leader;
    past_the_end.to = follower;
    past_the_end.term = term;
    let no_successor = Message::new(leader, follower, u64::MAX - 1, MessageBody::TimeoutNow);
    for message in [past_the_end, no_successor] {
        let result = cluster.raft(follower).receive(message);
        assert!(
            matches!(result, Err(ReceiveError::Invalid(_))),
            "{result:?}"
        );
    }
    cluster
        .set(leader, "k", "v")
        .await
        .expect("the cluster goes on");
    let status = cluster.raft(follower).status();
    assert!(!status.stopped, "{status:?}");
    assert_eq!(status.term, term);
    cluster.shutdown().await;
}
