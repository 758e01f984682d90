//! The service's state machine against the conformance suite of
//! `rafter::testing`: applied index across real reopens of its redb store,
//! responses in order, and its snapshot files (built, read by offset,
//! received, installed, replaced, an older one refused). It takes no
//! crash switch; its crash behaviour is tested by its own crash tests.

use std::path::PathBuf;

use bytes::Bytes;
use rafter::testing::{run_state_machine_suite, StateMachineSubject};
use rafter::{Committed, LogId, StateMachine, StateMachineError};
use rafter_kv::command::{CommandV1, KvCommand, KvResponse};
use rafter_kv::state_machine::KvStateMachine;
use rafter_kv::store::{DeleteRangeRequest, PutRequest, WriteRequest};

/// Sessions never expire within a test history.
const SESSION_TTL_MS: u64 = 3_600_000;

/// The state machine with the directory it lives in, so a restart reopens
/// it.
struct Machine {
    kv: KvStateMachine,
    dir: PathBuf,
}

impl StateMachine for Machine {
    type Command = KvCommand;
    type Response = KvResponse;

    async fn applied(&mut self) -> Result<LogId, StateMachineError> {
        self.kv.applied().await
    }

    async fn apply(
        &mut self,
        entries: Vec<Committed<KvCommand>>,
    ) -> Result<Vec<KvResponse>, StateMachineError> {
        self.kv.apply(entries).await
    }

    async fn build_snapshot(&mut self) -> Result<LogId, StateMachineError> {
        self.kv.build_snapshot().await
    }

    async fn latest_snapshot(&mut self) -> Result<Option<LogId>, StateMachineError> {
        self.kv.latest_snapshot().await
    }

    async fn read_snapshot(
        &mut self,
        snapshot: LogId,
        offset: u64,
        bytes_max: usize,
    ) -> Result<Option<Bytes>, StateMachineError> {
        self.kv.read_snapshot(snapshot, offset, bytes_max).await
    }

    async fn receive_snapshot(
        &mut self,
        snapshot: LogId,
        offset: u64,
        data: Bytes,
    ) -> Result<(), StateMachineError> {
        self.kv.receive_snapshot(snapshot, offset, data).await
    }

    async fn install_snapshot(&mut self, snapshot: LogId) -> Result<(), StateMachineError> {
        self.kv.install_snapshot(snapshot).await
    }
}

struct Subject {
    root: tempfile::TempDir,
    created: u64,
}

impl StateMachineSubject for Subject {
    type Machine = Machine;
    /// The store's revision and its digest of every live key.
    type State = (i64, String);

    fn create(&mut self) -> Machine {
        self.created += 1;
        let dir = self.root.path().join(format!("machine-{}", self.created));
        let kv = KvStateMachine::open(&dir, SESSION_TTL_MS).expect("open a new state machine");
        Machine { kv, dir }
    }

    fn restart(&mut self, machine: Machine) -> Machine {
        let Machine { kv, dir } = machine;
        drop(kv);
        let kv = KvStateMachine::open(&dir, SESSION_TTL_MS).expect("reopen the state machine");
        Machine { kv, dir }
    }

    fn command(&mut self, i: u64) -> KvCommand {
        let key = format!("k{}", i % 3).into_bytes();
        let request = if i.is_multiple_of(4) {
            WriteRequest::DeleteRange(DeleteRangeRequest {
                key,
                range_end: Vec::new(),
                prev_kv: true,
            })
        } else {
            WriteRequest::Put(PutRequest {
                key,
                value: i.to_string().into_bytes(),
                prev_kv: true,
                ignore_value: false,
            })
        };
        KvCommand::V1(CommandV1 {
            session: None,
            time_ms: 1_000 + i,
            request,
        })
    }

    fn state(&mut self, machine: &Machine) -> (i64, String) {
        let view = machine.kv.reads().view().expect("a read view");
        (view.revision(), view.digest().expect("the store's digest"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_state_machine_conforms() {
    let subject = Subject {
        root: tempfile::tempdir().unwrap(),
        created: 0,
    };
    let ran = run_state_machine_suite(subject).await;
    assert_eq!(ran.len(), 10, "all but the crash checks: {ran:?}");
}
