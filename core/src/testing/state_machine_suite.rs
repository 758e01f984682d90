//! The conformance suite for [`StateMachine`] implementations: what the
//! apply task and the snapshot transfer rely on, checked against any state
//! machine through a [`StateMachineSubject`]. A check that fails panics
//! with its name and the values that broke it.
//!
//! Checks, in the order they run:
//!
//! - a new machine has applied nothing and has no snapshot;
//! - `applied()` is the last entry of every batch (blank and membership
//!   entries included);
//! - one response per command, in order: a history applied in one batch
//!   and one entry at a time gives the same responses and the same state;
//! - after a restart, `applied()` is an entry of the history and the state
//!   is exactly the state at that entry, so replaying from there reaches
//!   the state of a machine that never restarted.
//!
//! When the machine builds snapshots (its `build_snapshot` does not say
//! `SnapshotUnsupported`):
//!
//! - a built snapshot covers everything applied and is the latest (a
//!   machine that builds in the background may answer with its newest
//!   complete one meanwhile: the suite asks again until it is built);
//! - reading it by offset, in small chunks, gives the bytes of one read in
//!   full, never more than `bytes_max` per chunk, and `None` at the end;
//! - a snapshot received in chunks at their offsets and installed gives
//!   the source's state, is the latest snapshot, and later entries apply
//!   alike on both;
//! - a chunk at offset 0 starts the receive over (a partial one is
//!   dropped);
//! - a snapshot that is not there is `SnapshotUnavailable` (a replaced one
//!   may stay readable, unchanged);
//! - an install of a snapshot older than what is applied is refused and
//!   changes nothing (the state machine never goes back);
//!
//! and when the subject gives a [`CrashSwitch`]:
//!
//! - an install cut by a crash before it completes leaves the old state
//!   (atomic install); a crash right after it leaves the new snapshot.

use std::fmt::Debug;

use bytes::Bytes;

use crate::state_machine::{Committed, CommittedPayload, StateMachine, StateMachineError};
use crate::testing::{CrashPoint, CrashSwitch};
use crate::types::{LogId, Membership};

/// A state machine under test, with what the suite needs to drive it: fresh
/// instances, restarts, commands, and a view of its state to compare.
pub trait StateMachineSubject {
    /// The state machine.
    type Machine: StateMachine;
    /// What the machine holds, as far as clients can tell: two machines
    /// that applied the same history must give equal states.
    type State: PartialEq + Debug;

    /// A new, empty machine with storage of its own.
    fn create(&mut self) -> Self::Machine;

    /// The machine after a crash: a new instance on whatever `machine` made
    /// durable (for an in-memory machine, its snapshot store if it keeps
    /// one, or nothing).
    fn restart(&mut self, machine: Self::Machine) -> Self::Machine;

    /// The command at position `i` of a test history. Commands should
    /// touch few keys, so that responses depend on what came before.
    fn command(&mut self, i: u64) -> <Self::Machine as StateMachine>::Command;

    /// What `machine` holds now.
    fn state(&mut self, machine: &Self::Machine) -> Self::State;

    /// The crash switch attached to `machine`, if it supports one
    /// (`KvStateMachine::attach_crash_switch`); `None` skips the crash
    /// checks.
    fn crash_switch(&mut self, machine: &Self::Machine) -> Option<CrashSwitch> {
        let _ = machine;
        None
    }
}

/// Entries in a test history: term 1 up to `TERM_CHANGE`, term 2 after.
const HISTORY_LEN: u64 = 40;
const TERM_CHANGE: u64 = 17;
/// A membership entry sits at this index, a blank one at 1 and at
/// `TERM_CHANGE + 1` (each new leader's no-op).
const MEMBERSHIP_AT: u64 = 9;
/// Chunks read from one snapshot before the suite calls the read endless
/// (the test snapshots are a few hundred bytes).
const READ_CHUNKS_MAX: usize = 1 << 16;
/// How often, and how many times, the suite asks a machine that builds
/// snapshots in the background for one that covers what it applied.
const BUILD_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(5);
const BUILD_ATTEMPTS_MAX: u32 = 4000;
/// Small chunks, so that any real snapshot takes several.
const CHUNK_BYTES: usize = 5;

/// Runs every check on machines from `subject` and returns the names of
/// the checks that ran, all of which passed (a failed check panics). The
/// snapshot checks run only if the machine supports snapshots, the crash
/// checks only if the subject gives a crash switch.
///
/// ```no_run
/// use rafter::testing::{run_state_machine_suite, KvState, KvStateMachine, KvCommand,
///                       StateMachineSubject};
///
/// struct Subject;
/// impl StateMachineSubject for Subject {
///     type Machine = KvStateMachine;
///     type State = KvState;
///     fn create(&mut self) -> KvStateMachine { KvStateMachine::new() }
///     fn restart(&mut self, machine: KvStateMachine) -> KvStateMachine { machine.restarted() }
///     fn command(&mut self, i: u64) -> KvCommand {
///         KvCommand::Set { key: format!("k{}", i % 3), value: i.to_le_bytes().to_vec() }
///     }
///     fn state(&mut self, machine: &KvStateMachine) -> KvState { machine.state() }
/// }
///
/// #[tokio::test]
/// async fn kv_state_machine_conforms() {
///     let ran = run_state_machine_suite(Subject).await;
///     assert!(ran.contains(&"an_older_snapshot_is_not_installed"));
/// }
/// ```
pub async fn run_state_machine_suite<S>(mut subject: S) -> Vec<&'static str>
where
    S: StateMachineSubject,
    <S::Machine as StateMachine>::Response: PartialEq + Debug,
{
    let mut ran = Vec::new();
    macro_rules! check {
        ($name:ident) => {
            $name(&mut subject).await;
            ran.push(stringify!($name));
        };
    }
    check!(a_new_machine_has_applied_nothing);
    check!(applied_is_the_last_entry_of_every_batch);
    check!(one_response_per_command_in_order);
    check!(a_restart_keeps_a_prefix_of_the_history);
    if !supports_snapshots(&mut subject).await {
        return ran;
    }
    check!(a_built_snapshot_covers_everything_applied);
    check!(a_snapshot_reads_by_offset_in_chunks);
    check!(a_received_snapshot_installs_the_source_state);
    check!(a_chunk_at_offset_zero_starts_the_receive_over);
    check!(a_replaced_snapshot_is_unavailable);
    check!(an_older_snapshot_is_not_installed);
    let probe = subject.create();
    if subject.crash_switch(&probe).is_some() {
        check!(an_install_cut_by_a_crash_leaves_the_old_state);
        check!(a_crash_right_after_an_install_keeps_the_new_snapshot);
    }
    ran
}

type Entries<S> = Vec<Committed<<<S as StateMachineSubject>::Machine as StateMachine>::Command>>;
type Responses<S> = Vec<<<S as StateMachineSubject>::Machine as StateMachine>::Response>;

fn log_id(index: u64) -> LogId {
    let term = if index <= TERM_CHANGE { 1 } else { 2 };
    LogId::new(term, index)
}

/// Entries `first..=last` of the test history.
fn history<S: StateMachineSubject>(subject: &mut S, first: u64, last: u64) -> Entries<S> {
    assert!(
        first >= 1 && last <= HISTORY_LEN,
        "history {first}..={last}"
    );
    (first..=last)
        .map(|index| {
            let payload = if index == 1 || index == TERM_CHANGE + 1 {
                CommittedPayload::Blank
            } else if index == MEMBERSHIP_AT {
                CommittedPayload::Membership(Box::new(Membership::new_voters([
                    (1, "node-1".to_owned()),
                    (2, "node-2".to_owned()),
                ])))
            } else {
                CommittedPayload::Command(subject.command(index))
            };
            Committed {
                log_id: log_id(index),
                payload,
            }
        })
        .collect()
}

fn commands_in(first: u64, last: u64) -> usize {
    (first..=last)
        .filter(|&i| i != 1 && i != TERM_CHANGE + 1 && i != MEMBERSHIP_AT)
        .count()
}

/// Applies entries `first..=last` in batches of `batch` entries; returns
/// every response.
async fn apply<S: StateMachineSubject>(
    subject: &mut S,
    machine: &mut S::Machine,
    first: u64,
    last: u64,
    batch: u64,
) -> Responses<S> {
    let mut responses = Vec::new();
    let mut next = first;
    while next <= last {
        let end = (next + batch - 1).min(last);
        let entries = history(subject, next, end);
        let got = machine
            .apply(entries)
            .await
            .unwrap_or_else(|e| panic!("apply of entries {next}..={end} failed: {e}"));
        assert_eq!(
            got.len(),
            commands_in(next, end),
            "apply of entries {next}..={end}: one response per command"
        );
        responses.extend(got);
        next = end + 1;
    }
    responses
}

async fn applied<M: StateMachine>(machine: &mut M) -> LogId {
    machine
        .applied()
        .await
        .unwrap_or_else(|e| panic!("applied() failed: {e}"))
}

async fn latest<M: StateMachine>(machine: &mut M) -> Option<LogId> {
    machine
        .latest_snapshot()
        .await
        .unwrap_or_else(|e| panic!("latest_snapshot() failed: {e}"))
}

/// The state of a machine that applied entries `1..=last` and nothing else.
async fn reference_state<S: StateMachineSubject>(subject: &mut S, last: u64) -> S::State {
    let mut machine = subject.create();
    if last > 0 {
        apply(subject, &mut machine, 1, last, HISTORY_LEN).await;
    }
    subject.state(&machine)
}

async fn supports_snapshots<S: StateMachineSubject>(subject: &mut S) -> bool {
    let mut machine = subject.create();
    apply(subject, &mut machine, 1, 3, 3).await;
    match machine.build_snapshot().await {
        Ok(_) => true,
        Err(StateMachineError::SnapshotUnsupported) => false,
        Err(e) => panic!("build_snapshot failed: {e}"),
    }
}

/// Every chunk of `snapshot` read from `offset` on, `bytes_max` at a time.
async fn read_all<M: StateMachine>(
    machine: &mut M,
    snapshot: LogId,
    mut offset: u64,
    bytes_max: usize,
) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    loop {
        let chunk = machine
            .read_snapshot(snapshot, offset, bytes_max)
            .await
            .unwrap_or_else(|e| panic!("read_snapshot({snapshot:?}, {offset}) failed: {e}"));
        let Some(chunk) = chunk else {
            return chunks;
        };
        assert!(
            !chunk.is_empty(),
            "read_snapshot({snapshot:?}, {offset}) returned an empty chunk; None ends it"
        );
        assert!(
            chunk.len() <= bytes_max,
            "a chunk of {} bytes is over bytes_max {bytes_max}",
            chunk.len()
        );
        offset += chunk.len() as u64;
        chunks.push(chunk);
        assert!(
            chunks.len() < READ_CHUNKS_MAX,
            "read_snapshot never ends: over {READ_CHUNKS_MAX} chunks (does it ignore the offset?)"
        );
    }
}

/// Streams `snapshot` from `source` into `target` in small chunks at their
/// offsets (at least one chunk, possibly empty, as the transfer sends).
async fn transfer<M: StateMachine>(source: &mut M, target: &mut M, snapshot: LogId) {
    let chunks = read_all(source, snapshot, 0, CHUNK_BYTES).await;
    let chunks = if chunks.is_empty() {
        vec![Bytes::new()]
    } else {
        chunks
    };
    let mut offset = 0;
    for chunk in chunks {
        let len = chunk.len() as u64;
        target
            .receive_snapshot(snapshot, offset, chunk)
            .await
            .unwrap_or_else(|e| panic!("receive_snapshot({snapshot:?}, {offset}) failed: {e}"));
        offset += len;
    }
}

/// Asks for a snapshot until one covers everything applied: a machine that
/// builds in the background answers with its newest complete snapshot
/// (older, or zero while none is complete) until the build finishes. Every
/// answer must be that latest snapshot, and never ahead of `applied()`.
async fn build<M: StateMachine>(machine: &mut M) -> LogId {
    let target = applied(machine).await;
    for _ in 0..BUILD_ATTEMPTS_MAX {
        let built = machine
            .build_snapshot()
            .await
            .unwrap_or_else(|e| panic!("build_snapshot failed: {e}"));
        assert!(
            built.index <= target.index,
            "build_snapshot returned {built:?}, ahead of applied {target:?}"
        );
        let latest = latest(machine).await;
        if built == LogId::default() {
            assert_eq!(latest, None, "build_snapshot said none is complete");
        } else {
            assert_eq!(latest, Some(built), "build_snapshot's answer is the latest");
        }
        if built == target {
            return built;
        }
        tokio::time::sleep(BUILD_RETRY_INTERVAL).await;
    }
    panic!("build_snapshot never covered applied {target:?}");
}

async fn a_new_machine_has_applied_nothing<S: StateMachineSubject>(subject: &mut S) {
    let mut machine = subject.create();
    assert_eq!(
        applied(&mut machine).await,
        LogId::default(),
        "a new machine"
    );
    assert_eq!(latest(&mut machine).await, None, "a new machine's snapshot");
}

async fn applied_is_the_last_entry_of_every_batch<S: StateMachineSubject>(subject: &mut S) {
    let mut machine = subject.create();
    // Batches that end on a blank, a membership and a command entry.
    for (first, last) in [(1, 1), (2, 4), (5, MEMBERSHIP_AT), (MEMBERSHIP_AT + 1, 30)] {
        apply(subject, &mut machine, first, last, HISTORY_LEN).await;
        assert_eq!(
            applied(&mut machine).await,
            log_id(last),
            "applied() after the batch {first}..={last}"
        );
    }
}

async fn one_response_per_command_in_order<S>(subject: &mut S)
where
    S: StateMachineSubject,
    <S::Machine as StateMachine>::Response: PartialEq + Debug,
{
    let mut whole = subject.create();
    let mut single = subject.create();
    let mut uneven = subject.create();
    let one_batch = apply(subject, &mut whole, 1, HISTORY_LEN, HISTORY_LEN).await;
    let one_by_one = apply(subject, &mut single, 1, HISTORY_LEN, 1).await;
    let by_seven = apply(subject, &mut uneven, 1, HISTORY_LEN, 7).await;
    assert_eq!(
        one_batch, one_by_one,
        "responses of one batch against one entry at a time"
    );
    assert_eq!(
        one_batch, by_seven,
        "responses of one batch against batches of 7"
    );
    let state = subject.state(&whole);
    assert_eq!(
        state,
        subject.state(&single),
        "state after one entry at a time"
    );
    assert_eq!(state, subject.state(&uneven), "state after batches of 7");
}

async fn a_restart_keeps_a_prefix_of_the_history<S: StateMachineSubject>(subject: &mut S) {
    let mut machine = subject.create();
    apply(subject, &mut machine, 1, 25, 6).await;
    let mut restarted = subject.restart(machine);
    let at = applied(&mut restarted).await;
    assert!(at.index <= 25, "applied {at:?} after a restart at 25");
    if at.index > 0 {
        assert_eq!(at, log_id(at.index), "applied {at:?} is not in the history");
    }
    let expected = reference_state(subject, at.index).await;
    assert_eq!(
        subject.state(&restarted),
        expected,
        "after a restart at {at:?}, the state is not the state at {at:?}"
    );
    apply(subject, &mut restarted, at.index + 1, HISTORY_LEN, 5).await;
    let expected = reference_state(subject, HISTORY_LEN).await;
    assert_eq!(
        subject.state(&restarted),
        expected,
        "replayed from {at:?} after a restart"
    );
}

async fn a_built_snapshot_covers_everything_applied<S: StateMachineSubject>(subject: &mut S) {
    let mut machine = subject.create();
    apply(subject, &mut machine, 1, 20, 20).await;
    let snapshot = build(&mut machine).await;
    assert_eq!(snapshot, log_id(20), "the snapshot of a machine at 20");
    assert_eq!(latest(&mut machine).await, Some(snapshot));
    // Building does not change what is applied.
    assert_eq!(applied(&mut machine).await, log_id(20));
    assert_eq!(subject.state(&machine), reference_state(subject, 20).await);
}

async fn a_snapshot_reads_by_offset_in_chunks<S: StateMachineSubject>(subject: &mut S) {
    let mut machine = subject.create();
    apply(subject, &mut machine, 1, 20, 20).await;
    let snapshot = build(&mut machine).await;
    let whole: Vec<u8> = read_all(&mut machine, snapshot, 0, usize::MAX >> 1)
        .await
        .concat();
    let chunked: Vec<u8> = read_all(&mut machine, snapshot, 0, CHUNK_BYTES)
        .await
        .concat();
    assert_eq!(
        whole, chunked,
        "chunks of {CHUNK_BYTES} bytes against one read"
    );
    let middle = whole.len() / 2;
    let tail: Vec<u8> = read_all(&mut machine, snapshot, middle as u64, 3)
        .await
        .concat();
    assert_eq!(tail, whole[middle..], "a read from offset {middle}");
    let end = whole.len() as u64;
    let past = machine.read_snapshot(snapshot, end, CHUNK_BYTES).await;
    assert_eq!(past, Ok(None), "a read at the end ({end})");
}

async fn a_received_snapshot_installs_the_source_state<S>(subject: &mut S)
where
    S: StateMachineSubject,
    <S::Machine as StateMachine>::Response: PartialEq + Debug,
{
    let mut source = subject.create();
    apply(subject, &mut source, 1, 20, 20).await;
    let snapshot = build(&mut source).await;
    let mut target = subject.create();
    // The target holds an older history of its own.
    apply(subject, &mut target, 1, 4, 4).await;
    transfer(&mut source, &mut target, snapshot).await;
    target
        .install_snapshot(snapshot)
        .await
        .unwrap_or_else(|e| panic!("install_snapshot({snapshot:?}) failed: {e}"));
    assert_eq!(
        applied(&mut target).await,
        snapshot,
        "applied after install"
    );
    assert_eq!(
        latest(&mut target).await,
        Some(snapshot),
        "latest after install"
    );
    assert_eq!(
        subject.state(&target),
        subject.state(&source),
        "installed state"
    );
    let from_source = apply(subject, &mut source, 21, HISTORY_LEN, 4).await;
    let from_target = apply(subject, &mut target, 21, HISTORY_LEN, 4).await;
    assert_eq!(from_source, from_target, "responses after the install");
    assert_eq!(subject.state(&target), subject.state(&source));
}

async fn a_chunk_at_offset_zero_starts_the_receive_over<S: StateMachineSubject>(subject: &mut S) {
    let mut source = subject.create();
    apply(subject, &mut source, 1, 20, 20).await;
    let snapshot = build(&mut source).await;
    let mut target = subject.create();
    // Half of a transfer that was abandoned, then the whole again from 0.
    let chunks = read_all(&mut source, snapshot, 0, CHUNK_BYTES).await;
    let mut offset = 0;
    for chunk in chunks.iter().take(chunks.len() / 2) {
        target
            .receive_snapshot(snapshot, offset, chunk.clone())
            .await
            .unwrap_or_else(|e| panic!("receive_snapshot at {offset} failed: {e}"));
        offset += chunk.len() as u64;
    }
    transfer(&mut source, &mut target, snapshot).await;
    target
        .install_snapshot(snapshot)
        .await
        .unwrap_or_else(|e| panic!("install after a restarted receive failed: {e}"));
    assert_eq!(applied(&mut target).await, snapshot);
    assert_eq!(subject.state(&target), subject.state(&source));
}

async fn a_replaced_snapshot_is_unavailable<S: StateMachineSubject>(subject: &mut S) {
    let mut machine = subject.create();
    apply(subject, &mut machine, 1, 20, 20).await;
    let old = build(&mut machine).await;
    let old_bytes: Vec<u8> = read_all(&mut machine, old, 0, CHUNK_BYTES).await.concat();
    apply(subject, &mut machine, 21, 30, 10).await;
    let new = build(&mut machine).await;
    assert_eq!(new, log_id(30));
    assert_eq!(latest(&mut machine).await, Some(new));
    // A machine may keep a replaced snapshot readable (for a transfer under
    // way); if it does, its bytes have not changed.
    match machine.read_snapshot(old, 0, usize::MAX >> 1).await {
        Err(StateMachineError::SnapshotUnavailable(id)) => assert_eq!(id, old),
        Ok(Some(chunk)) => assert_eq!(chunk[..], old_bytes[..], "the replaced snapshot changed"),
        other => panic!("a read of the replaced snapshot {old:?}: {other:?}"),
    }
    // One that never existed is unavailable.
    let never = LogId::new(1, 7);
    assert_eq!(
        machine.read_snapshot(never, 0, CHUNK_BYTES).await,
        Err(StateMachineError::SnapshotUnavailable(never)),
        "a read of a snapshot never built"
    );
}

async fn an_older_snapshot_is_not_installed<S: StateMachineSubject>(subject: &mut S) {
    let mut source = subject.create();
    apply(subject, &mut source, 1, 20, 20).await;
    let snapshot = build(&mut source).await;
    let mut target = subject.create();
    apply(subject, &mut target, 1, 30, 30).await;
    let before = subject.state(&target);
    transfer(&mut source, &mut target, snapshot).await;
    let result = target.install_snapshot(snapshot).await;
    assert!(
        result.is_err(),
        "a machine at 30 installed a snapshot of 20: the state went back"
    );
    assert_eq!(
        subject.state(&target),
        before,
        "a refused install changed the state"
    );
}

/// A target at 4 that fully received the snapshot of a source at 20.
async fn received<S: StateMachineSubject>(
    subject: &mut S,
) -> (S::Machine, S::Machine, LogId, CrashSwitch) {
    let mut source = subject.create();
    apply(subject, &mut source, 1, 20, 20).await;
    let snapshot = build(&mut source).await;
    let mut target = subject.create();
    apply(subject, &mut target, 1, 4, 4).await;
    let switch = subject
        .crash_switch(&target)
        .expect("the subject gave a crash switch for one machine, not for another");
    transfer(&mut source, &mut target, snapshot).await;
    (source, target, snapshot, switch)
}

async fn an_install_cut_by_a_crash_leaves_the_old_state<S: StateMachineSubject>(subject: &mut S) {
    let (_source, mut target, snapshot, switch) = received(subject).await;
    switch.arm(CrashPoint::SnapshotInstalling);
    assert!(
        target.install_snapshot(snapshot).await.is_err(),
        "the crash switch did not stop the install"
    );
    assert_eq!(switch.tripped(), Some(CrashPoint::SnapshotInstalling));
    switch.reset();
    let mut restarted = subject.restart(target);
    let at = applied(&mut restarted).await;
    assert!(
        at.index <= 4,
        "after a crash inside the install, applied is {at:?}: the snapshot half-installed"
    );
    assert_ne!(latest(&mut restarted).await, Some(snapshot));
    let expected = reference_state(subject, at.index).await;
    assert_eq!(
        subject.state(&restarted),
        expected,
        "after a crash inside the install, the state is not the state at {at:?}"
    );
}

async fn a_crash_right_after_an_install_keeps_the_new_snapshot<S: StateMachineSubject>(
    subject: &mut S,
) {
    let (_source, mut target, snapshot, switch) = received(subject).await;
    switch.arm(CrashPoint::SnapshotInstalled);
    assert!(target.install_snapshot(snapshot).await.is_err());
    assert_eq!(switch.tripped(), Some(CrashPoint::SnapshotInstalled));
    switch.reset();
    let mut restarted = subject.restart(target);
    assert_eq!(
        latest(&mut restarted).await,
        Some(snapshot),
        "an install that completed is durable"
    );
}
