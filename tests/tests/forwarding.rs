//! Proposals on followers forwarded to the leader over the peer transport
//! (`Config::forward_proposals`, as etcd-raft forwards `MsgProp`).

use rafter::testing::KvCommand;
use rafter::ProposeError;
use rafter_tests::cluster::{test_config, Cluster};

fn set(key: &str, value: &str) -> KvCommand {
    KvCommand::Set {
        key: key.into(),
        value: value.as_bytes().to_vec(),
    }
}

/// A follower's callers get their responses from the follower's own apply,
/// in order, and the writes are the cluster's: every node applies them,
/// and a later write through another follower sees the earlier one.
#[tokio::test(start_paused = true)]
async fn a_follower_forwards_and_answers_from_its_own_apply() {
    let mut cluster = Cluster::start(3, test_config().with_forward_proposals(true)).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower_of(leader);
    let other = (1..=3).find(|&id| id != leader && id != follower).unwrap();

    let first = cluster.set(follower, "k", "v1").await.unwrap();
    assert_eq!(first.previous, None);
    let second = cluster.set(other, "k", "v2").await.unwrap();
    assert_eq!(second.previous, Some(b"v1".to_vec()));
    assert!(second.index > first.index);

    let many = cluster
        .raft(follower)
        .propose_many(vec![set("a", "1"), set("a", "2"), set("a", "3")])
        .await
        .unwrap();
    let indexes: Vec<u64> = many.iter().map(|r| r.index).collect();
    assert_eq!(
        indexes,
        vec![indexes[0], indexes[0] + 1, indexes[0] + 2],
        "one caller's commands are consecutive entries"
    );
    assert_eq!(
        many.iter().map(|r| r.previous.clone()).collect::<Vec<_>>(),
        vec![None, Some(b"1".to_vec()), Some(b"2".to_vec())]
    );

    let last = indexes[2];
    cluster.wait_applied(&[1, 2, 3], last).await;
    cluster.check_same_state(&[1, 2, 3], last).await;
    cluster.shutdown().await;
}

/// Concurrent callers on a follower, more than one batch's worth: every one
/// gets its own command's response.
#[tokio::test(start_paused = true)]
async fn concurrent_callers_on_a_follower_each_get_their_own_response() {
    let mut cluster = Cluster::start(3, test_config().with_forward_proposals(true)).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower_of(leader);
    let raft = cluster.raft(follower).clone();
    let calls = (0..500).map(|i| {
        let raft = raft.clone();
        async move {
            let response = raft
                .propose(set(&format!("key-{i}"), &format!("{i}")))
                .await;
            (i, response)
        }
    });
    let results = futures::future::join_all(calls).await;
    let mut indexes = Vec::new();
    for (i, result) in results {
        let response = result.unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(response.previous, None, "call {i} wrote a fresh key");
        indexes.push(response.index);
    }
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), 500, "every call has its own entry");
    let status = raft.status();
    assert_eq!(status.forwarded_commands, 500);
    assert!(
        status.forwarded_batches < 500,
        "concurrent calls share batches ({} for 500)",
        status.forwarded_batches
    );
    for i in [0, 250, 499] {
        let value = raft
            .with_state_machine(move |sm| sm.get(&format!("key-{i}")))
            .await
            .unwrap();
        assert_eq!(value, Some(format!("{i}").into_bytes()));
    }
    cluster.shutdown().await;
}

/// Forwarding is opt-in: by default a follower refuses with `NotLeader`,
/// naming the leader.
#[tokio::test(start_paused = true)]
async fn without_forwarding_a_follower_answers_not_leader() {
    let mut cluster = Cluster::start(3, test_config()).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower_of(leader);
    let result = cluster.set(follower, "k", "v").await;
    assert!(
        matches!(result, Err(ProposeError::NotLeader { leader_hint: Some(l), .. }) if l == leader),
        "{result:?}"
    );
    cluster.shutdown().await;
}

/// A follower whose messages no longer reach the leader (it still hears
/// the leader's heartbeats, so it keeps it as leader) ends the call with an
/// unknown outcome within an election timeout, instead of holding it until
/// the propose deadline; nothing was appended.
#[tokio::test(start_paused = true)]
async fn a_batch_the_leader_never_gets_ends_unknown() {
    let mut cluster = Cluster::start(3, test_config().with_forward_proposals(true)).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower_of(leader);
    let before = cluster.raft(leader).status().last_log_index;
    cluster.router.block(follower, leader);
    let started = tokio::time::Instant::now();
    let result = cluster.set(follower, "k", "v").await;
    assert_eq!(
        result,
        Err(ProposeError::ForwardUnanswered { leader }),
        "the outcome is unknown"
    );
    let config = test_config();
    assert!(
        started.elapsed() < config.propose_timeout,
        "ended by the engine's expiry, not the deadline"
    );
    assert_eq!(cluster.raft(leader).status().last_log_index, before);
    cluster.shutdown().await;
}

/// One caller's commands that together cannot travel in one message (the
/// message limit less its headers) are refused on the follower at once:
/// before, the batch went out, the transport dropped it, and the caller
/// learned only after an election timeout that its outcome was unknown.
/// A caller under the limit on the same follower is forwarded as usual.
#[tokio::test(start_paused = true)]
async fn a_follower_refuses_at_once_commands_too_large_for_one_message() {
    // Room for 5,120 command bytes in a forwarded message.
    let config = test_config()
        .with_forward_proposals(true)
        .with_request_bytes_max(1024)
        .with_append_bytes_max(4096)
        .with_message_bytes_max(4096 + 1024 + (64 << 10));
    let mut cluster = Cluster::start(3, config).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower_of(leader);
    let value = "v".repeat(990);
    let batch =
        |n: usize| -> Vec<KvCommand> { (0..n).map(|i| set(&format!("k{i}"), &value)).collect() };

    let refused = cluster.raft(follower).propose_many(batch(6)).await;
    match refused {
        Err(ProposeError::RequestTooLarge { size, max }) => {
            assert!(size > max, "{size} > {max}");
            assert_eq!(max, 4096 + 1024);
        }
        other => panic!("expected RequestTooLarge, got {other:?}"),
    }
    let fits = cluster.raft(follower).propose_many(batch(5)).await;
    assert_eq!(fits.map(|r| r.len()).ok(), Some(5), "five commands fit");
    cluster.shutdown().await;
}
