//! The state machine conformance suite (`rafter::testing::run_state_machine_suite`)
//! on the state machines of `rafter::testing`, and on state machines with a
//! planted bug each, which it must reject (naming the check that caught it).

use bytes::Bytes;
use futures::FutureExt;
use rafter::testing::{
    run_state_machine_suite, CrashSwitch, KvCommand, KvResponse, KvState, KvStateMachine,
    NoopStateMachine, StateMachineSubject,
};
use rafter::{Committed, LogId, StateMachine, StateMachineError};

/// A history over three keys: sets, deletes and compare-and-swaps, so each
/// response depends on what came before.
fn kv_command(i: u64) -> KvCommand {
    let key = format!("k{}", i % 3);
    match i % 4 {
        0 => KvCommand::Delete { key },
        1 => KvCommand::CompareAndSwap {
            key,
            expected: None,
            new: i.to_le_bytes().to_vec(),
        },
        _ => KvCommand::Set {
            key,
            value: i.to_le_bytes().to_vec(),
        },
    }
}

/// `KvStateMachine`, in memory (a restart keeps only its snapshots) or
/// durable (a restart keeps its applied state), with a crash switch.
struct Kv {
    durable: bool,
}

impl StateMachineSubject for Kv {
    type Machine = KvStateMachine;
    type State = KvState;

    fn create(&mut self) -> KvStateMachine {
        let machine = KvStateMachine::new();
        if self.durable {
            machine.make_durable();
        }
        machine
    }

    fn restart(&mut self, machine: KvStateMachine) -> KvStateMachine {
        machine.restarted()
    }

    fn command(&mut self, i: u64) -> KvCommand {
        kv_command(i)
    }

    fn state(&mut self, machine: &KvStateMachine) -> KvState {
        machine.state()
    }

    fn crash_switch(&mut self, machine: &KvStateMachine) -> Option<CrashSwitch> {
        let switch = CrashSwitch::new();
        machine.attach_crash_switch(&switch);
        Some(switch)
    }
}

const ALL_CHECKS: usize = 12;

#[tokio::test]
async fn the_in_memory_kv_state_machine_conforms() {
    let ran = run_state_machine_suite(Kv { durable: false }).await;
    assert_eq!(ran.len(), ALL_CHECKS, "{ran:?}");
}

#[tokio::test]
async fn the_durable_kv_state_machine_conforms() {
    let ran = run_state_machine_suite(Kv { durable: true }).await;
    assert_eq!(ran.len(), ALL_CHECKS, "{ran:?}");
}

/// `NoopStateMachine`: nothing to compare but its applied point, empty
/// snapshots, no crash switch; lost on restart.
struct Noop;

impl StateMachineSubject for Noop {
    type Machine = NoopStateMachine;
    type State = ();

    fn create(&mut self) -> NoopStateMachine {
        NoopStateMachine::default()
    }

    fn restart(&mut self, _machine: NoopStateMachine) -> NoopStateMachine {
        NoopStateMachine::default()
    }

    fn command(&mut self, i: u64) -> serde_bytes::ByteBuf {
        serde_bytes::ByteBuf::from(i.to_le_bytes().to_vec())
    }

    fn state(&mut self, _machine: &NoopStateMachine) {}
}

#[tokio::test]
async fn the_noop_state_machine_conforms() {
    let ran = run_state_machine_suite(Noop).await;
    assert_eq!(
        ran.len(),
        ALL_CHECKS - 2,
        "all but the crash checks: {ran:?}"
    );
}

// ----- planted bugs: each must fail the suite, at the check named -----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    /// Answers a batch's commands in reverse order.
    ReversedResponses,
    /// Reports nothing applied after a restart, though it keeps its state:
    /// the node would apply every entry again.
    ForgetsAppliedOnRestart,
    /// Reads every chunk from offset 0, whatever the offset asked.
    IgnoresReadOffset,
    /// Installs a snapshot older than its state (the state goes back).
    InstallsOlderSnapshots,
}

/// A `KvStateMachine` with one bug: durable, except under
/// `InstallsOlderSnapshots`, which needs a restart to forget its state.
#[derive(Clone)]
struct Buggy {
    inner: KvStateMachine,
    bug: Bug,
    restarted: bool,
}

impl StateMachine for Buggy {
    type Command = KvCommand;
    type Response = KvResponse;

    async fn applied(&mut self) -> Result<LogId, StateMachineError> {
        if self.bug == Bug::ForgetsAppliedOnRestart && self.restarted {
            return Ok(LogId::default());
        }
        self.inner.applied().await
    }

    async fn apply(
        &mut self,
        entries: Vec<Committed<KvCommand>>,
    ) -> Result<Vec<KvResponse>, StateMachineError> {
        let mut responses = self.inner.apply(entries).await?;
        if self.bug == Bug::ReversedResponses {
            responses.reverse();
        }
        Ok(responses)
    }

    async fn build_snapshot(&mut self) -> Result<LogId, StateMachineError> {
        self.inner.build_snapshot().await
    }

    async fn latest_snapshot(&mut self) -> Result<Option<LogId>, StateMachineError> {
        self.inner.latest_snapshot().await
    }

    async fn read_snapshot(
        &mut self,
        snapshot: LogId,
        offset: u64,
        bytes_max: usize,
    ) -> Result<Option<Bytes>, StateMachineError> {
        let offset = if self.bug == Bug::IgnoresReadOffset {
            0
        } else {
            offset
        };
        self.inner.read_snapshot(snapshot, offset, bytes_max).await
    }

    async fn receive_snapshot(
        &mut self,
        snapshot: LogId,
        offset: u64,
        data: Bytes,
    ) -> Result<(), StateMachineError> {
        self.inner.receive_snapshot(snapshot, offset, data).await
    }

    async fn install_snapshot(&mut self, snapshot: LogId) -> Result<(), StateMachineError> {
        if self.bug == Bug::InstallsOlderSnapshots {
            // Forget the applied state (an in-memory machine's restart keeps
            // the snapshot store and what it received), so the install no
            // longer sees that it is behind.
            self.inner = self.inner.restarted();
        }
        self.inner.install_snapshot(snapshot).await
    }
}

struct BuggySubject(Bug);

impl StateMachineSubject for BuggySubject {
    type Machine = Buggy;
    type State = KvState;

    fn create(&mut self) -> Buggy {
        let inner = KvStateMachine::new();
        if self.0 != Bug::InstallsOlderSnapshots {
            inner.make_durable();
        }
        Buggy {
            inner,
            bug: self.0,
            restarted: false,
        }
    }

    fn restart(&mut self, machine: Buggy) -> Buggy {
        Buggy {
            inner: machine.inner.restarted(),
            bug: self.0,
            restarted: true,
        }
    }

    fn command(&mut self, i: u64) -> KvCommand {
        kv_command(i)
    }

    fn state(&mut self, machine: &Buggy) -> KvState {
        machine.inner.state()
    }
}

/// Runs the suite on a machine with `bug` and returns the panic message.
async fn failure_of(bug: Bug) -> String {
    let run = std::panic::AssertUnwindSafe(run_state_machine_suite(BuggySubject(bug)));
    let payload = run
        .catch_unwind()
        .await
        .expect_err("the suite passed a state machine with a planted bug");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[tokio::test]
async fn the_suite_catches_responses_out_of_order() {
    let message = failure_of(Bug::ReversedResponses).await;
    assert!(message.contains("responses of one batch"), "{message}");
}

#[tokio::test]
async fn the_suite_catches_an_applied_index_lost_on_restart() {
    let message = failure_of(Bug::ForgetsAppliedOnRestart).await;
    assert!(message.contains("after a restart"), "{message}");
}

#[tokio::test]
async fn the_suite_catches_a_read_that_ignores_its_offset() {
    let message = failure_of(Bug::IgnoresReadOffset).await;
    assert!(message.contains("ignore the offset"), "{message}");
}

#[tokio::test]
async fn the_suite_catches_an_older_snapshot_installed() {
    let message = failure_of(Bug::InstallsOlderSnapshots).await;
    assert!(message.contains("the state went back"), "{message}");
}
