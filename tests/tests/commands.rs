//! The user's commands as bytes: a command postcard cannot encode is an
//! error (issue 13, item 7), and a committed entry applies whatever the
//! request size limit is now (item 8).

use rafter::testing::{KvCommand, KvStateMachine, MemRouter, MemStorage};
use rafter::{
    Committed, CommittedPayload, Config, LogId, Membership, ProposeError, Raft, Role, StateMachine,
    StateMachineError,
};
use rafter_tests::cluster::{test_config, PATIENCE};
use serde::{Deserialize, Serialize};

/// A command whose `Flat` variant postcard cannot encode: `flatten` makes
/// serde write a map of unknown length.
#[derive(Debug, Serialize, Deserialize)]
enum Command {
    Plain(u64),
    Flat(Flat),
}

#[derive(Debug, Serialize, Deserialize)]
struct Flat {
    #[serde(flatten)]
    inner: Inner,
}

#[derive(Debug, Serialize, Deserialize)]
struct Inner {
    n: u64,
}

/// Answers each command with its number.
struct Numbers;

impl StateMachine for Numbers {
    type Command = Command;
    type Response = u64;

    async fn applied(&mut self) -> Result<LogId, StateMachineError> {
        Ok(LogId::default())
    }

    async fn apply(
        &mut self,
        entries: Vec<Committed<Command>>,
    ) -> Result<Vec<u64>, StateMachineError> {
        Ok(entries
            .into_iter()
            .filter_map(|entry| match entry.payload {
                CommittedPayload::Command(Command::Plain(n)) => Some(n),
                CommittedPayload::Command(Command::Flat(flat)) => Some(flat.inner.n),
                _ => None,
            })
            .collect())
    }
}

async fn single_node<SM: StateMachine>(
    config: Config,
    storage: MemStorage,
    state_machine: SM,
) -> Raft<SM> {
    let router = MemRouter::new(1);
    let members = Membership::new_voters([(1, "n1".to_string())]);
    let raft = Raft::start(
        1,
        config,
        Some(members),
        storage,
        router.network(1),
        state_machine,
    )
    .await
    .expect("node starts");
    let metrics = raft
        .wait_for(PATIENCE, |m| m.role == Role::Leader || m.stopped)
        .await
        .expect("a single voter leads or stops");
    assert!(!metrics.stopped, "the node stopped: {:?}", metrics.fatal);
    raft
}

#[tokio::test(start_paused = true)]
async fn a_command_postcard_cannot_encode_is_refused_with_an_error_not_a_panic() {
    let raft = single_node(test_config(), MemStorage::new(), Numbers).await;
    let result = raft
        .propose(Command::Flat(Flat {
            inner: Inner { n: 1 },
        }))
        .await;
    assert!(
        matches!(result, Err(ProposeError::Unencodable { .. })),
        "{result:?}"
    );
    let result = raft
        .propose_many(vec![
            Command::Plain(1),
            Command::Flat(Flat {
                inner: Inner { n: 2 },
            }),
        ])
        .await;
    assert!(
        matches!(result, Err(ProposeError::Unencodable { .. })),
        "{result:?}"
    );
    assert_eq!(
        raft.propose(Command::Plain(3)).await,
        Ok(3),
        "the node goes on"
    );
    raft.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_entry_written_under_a_larger_request_limit_still_applies_after_it_is_lowered() {
    let mut config = test_config();
    config.request_bytes_max = 4096;
    let storage = MemStorage::new();
    let state_machine = KvStateMachine::new();
    let raft = single_node(config.clone(), storage.clone(), state_machine.clone()).await;
    let big = KvCommand::Set {
        key: "big".into(),
        value: vec![7; 3000],
    };
    let index = raft.propose(big).await.expect("under the limit").index;
    raft.shutdown().await;

    // The operator lowers the limit (or another node runs with a lower
    // one): the in-memory state machine replays the log from the start.
    config.request_bytes_max = 1024;
    let raft = single_node(config, storage, state_machine.restarted()).await;
    let applied = raft
        .wait_for(PATIENCE, |m| m.applied_index >= index || m.stopped)
        .await
        .expect("the node applies or stops");
    assert!(!applied.stopped, "the node stopped: {:?}", applied.fatal);
    raft.propose(KvCommand::Delete { key: "k".into() })
        .await
        .expect("the node goes on");
    raft.shutdown().await;
}
