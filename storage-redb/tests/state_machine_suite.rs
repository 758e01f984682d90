//! `RedbKv` against the state machine conformance suite of
//! `rafter::testing`: applied index and state across real reopens of its
//! redb file, and responses in order. It has no snapshots, so the suite's
//! snapshot checks do not run.

use std::path::PathBuf;

use rafter::testing::{run_state_machine_suite, StateMachineSubject};
use rafter::{Committed, LogId, StateMachine, StateMachineError};
use rafter_redb::{RedbKv, RedbKvCommand};

/// `RedbKv` with the directory it lives in, so a restart reopens it.
struct Machine {
    kv: RedbKv,
    dir: PathBuf,
}

impl StateMachine for Machine {
    type Command = RedbKvCommand;
    type Response = Option<String>;

    async fn applied(&mut self) -> Result<LogId, StateMachineError> {
        self.kv.applied().await
    }

    async fn apply(
        &mut self,
        entries: Vec<Committed<RedbKvCommand>>,
    ) -> Result<Vec<Option<String>>, StateMachineError> {
        self.kv.apply(entries).await
    }
}

struct Subject {
    root: tempfile::TempDir,
    created: u64,
}

const KEYS: [&str; 3] = ["k0", "k1", "k2"];

impl StateMachineSubject for Subject {
    type Machine = Machine;
    type State = Vec<Option<String>>;

    fn create(&mut self) -> Machine {
        self.created += 1;
        let dir = self.root.path().join(format!("machine-{}", self.created));
        let kv = RedbKv::open(&dir).expect("open a new RedbKv");
        Machine { kv, dir }
    }

    fn restart(&mut self, machine: Machine) -> Machine {
        let Machine { kv, dir } = machine;
        // The last handle goes, and the file with it, before the reopen.
        drop(kv);
        let kv = RedbKv::open(&dir).expect("reopen RedbKv");
        Machine { kv, dir }
    }

    fn command(&mut self, i: u64) -> RedbKvCommand {
        let key = KEYS[(i % 3) as usize].to_owned();
        match i % 4 {
            0 => RedbKvCommand::Delete { key },
            1 | 2 => RedbKvCommand::Append {
                key,
                suffix: format!("{i},"),
            },
            _ => RedbKvCommand::Put {
                key,
                value: i.to_string(),
            },
        }
    }

    fn state(&mut self, machine: &Machine) -> Vec<Option<String>> {
        KEYS.iter()
            .map(|key| machine.kv.get(key).expect("read RedbKv"))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_kv_conforms() {
    let subject = Subject {
        root: tempfile::tempdir().unwrap(),
        created: 0,
    };
    let ran = run_state_machine_suite(subject).await;
    assert_eq!(
        ran,
        [
            "a_new_machine_has_applied_nothing",
            "applied_is_the_last_entry_of_every_batch",
            "one_response_per_command_in_order",
            "a_restart_keeps_a_prefix_of_the_history",
        ],
        "RedbKv has no snapshots: the snapshot checks do not run"
    );
}
