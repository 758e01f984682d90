//! Snapshots: install, transfer and compaction (dissertation §5.3; Raft §7).

use super::*;

// ----- snapshot install (dissertation §5.3) -----

fn snapshot_chunk(meta: &SnapshotMeta, done: bool) -> MessageBody {
    MessageBody::InstallSnapshot {
        meta: meta.clone(),
        offset: 0,
        data: Bytes::from_static(b"state"),
        done,
    }
}

/// A follower holding entries 1..=6, none committed, that receives a snapshot
/// ending at (1, 4) in one chunk, stored by its state machine.
fn follower_receiving_a_snapshot(done: bool) -> (Engine, SnapshotMeta) {
    let mut f = with_log(2, &[1, 2, 3], &[1; 6], hard_state(1, None, 0));
    let meta = SnapshotMeta {
        last_log_id: LogId::new(1, 4),
        membership: membership(&[1, 2, 3]),
    };
    step(&mut f, msg(1, 2, 1, snapshot_chunk(&meta, done)));
    let actions = f.take_actions();
    assert!(actions.apply.is_empty());
    assert_eq!(actions.snapshot_receives.len(), 1);
    (f, meta)
}

/// The entries one turn hands to apply, serving a load from `disk`.
fn applied_in_turn(f: &mut Engine, disk: &[Entry]) -> Vec<Entry> {
    let t = turn(f);
    let Some(range) = t.load else {
        return t.apply;
    };
    assert!(t.apply.is_empty());
    f.on_loaded(disk[(range.start - 1) as usize..(range.end - 1) as usize].to_vec());
    turn(f).apply
}

/// Issue 13, item 10: `Installed` sets the leader's match index, which
/// counts as durable on the follower. A follower whose commit index covers
/// the snapshot but whose write of those entries is still in flight answers
/// only once that write is durable.
#[test]
fn follower_answers_installed_for_a_committed_snapshot_only_once_its_log_is_durable() {
    let mut f = with_log(2, &[1, 2, 3], &[1; 2], hard_state(1, None, 0));
    let entries: Vec<Entry> = (3..=6).map(|i| blank(1, i)).collect();
    step(&mut f, msg(1, 2, 1, append(LogId::new(1, 2), entries, 6)));
    assert_eq!(f.commit_index(), 6);
    let t = turn(&mut f);
    let write = t.write.expect("entries 3..=6").id;
    let meta = SnapshotMeta {
        last_log_id: LogId::new(1, 4),
        membership: membership(&[1, 2, 3]),
    };
    step(&mut f, msg(1, 2, 1, snapshot_chunk(&meta, true)));
    let t = turn(&mut f);
    let installed = msg(
        2,
        1,
        1,
        MessageBody::InstallSnapshotResponse {
            snapshot: meta.last_log_id,
            outcome: SnapshotOutcome::Installed,
        },
    );
    assert!(!t.messages.contains(&installed), "sent before durable");
    assert_eq!(t.after_write, vec![(write, installed)]);
}

/// Issue 13, item 9: a follower whose log conflicts with an installed
/// snapshot must drop the entries after it before it purges the log, or a
/// crash in between leaves entries of the replaced history right after the
/// purge point. With a write in flight at the install, the purge waits for
/// the truncating write and goes with it (storage runs jobs in order).
#[test]
fn follower_purges_after_an_install_only_with_the_write_that_truncates_the_replaced_log() {
    let (mut f, _) = follower_receiving_a_snapshot(true);
    // The snapshot of a later term at index 5 conflicts with entry (1, 5).
    let meta = SnapshotMeta {
        last_log_id: LogId::new(2, 5),
        membership: membership(&[1, 2, 3]),
    };
    step(&mut f, msg(1, 2, 2, snapshot_chunk(&meta, true)));
    let actions = f.take_actions();
    let in_flight = actions.write.expect("the new term is written").id;
    f.on_snapshot_chunk_stored(1, meta.clone(), 5, true);
    assert_eq!(f.take_actions().install, Some(meta.clone()));

    f.on_snapshot_installed(meta.clone());
    let actions = f.take_actions();
    assert_eq!(actions.write, None, "a write is in flight");
    assert_eq!(actions.purge, None, "no purge before the truncation");

    // Meanwhile the leader sends the entries after the snapshot: they wait
    // for the purge, so that storage gets them after the purge point.
    let next = vec![blank(2, 6)];
    step(
        &mut f,
        msg(1, 2, 2, append(meta.last_log_id, next.clone(), 5)),
    );
    assert_eq!(f.take_actions().write, None, "a write is in flight");

    f.on_write_done(in_flight);
    let actions = f.take_actions();
    let write = actions.write.expect("the truncation");
    assert_eq!(write.batch.truncate_from, Some(6));
    assert_eq!(write.batch.entries, vec![], "the truncation alone");
    assert_eq!(actions.purge, Some(meta.last_log_id), "with its write");
    f.check_invariants();

    f.on_write_done(write.id);
    let write = f.take_actions().write.expect("the entries");
    assert_eq!(
        (write.batch.truncate_from, write.batch.entries),
        (None, next)
    );
    f.check_invariants();
}

/// Regression (found by the simulator, seed 186): entries committed while a
/// received snapshot is installed were handed to apply before the install,
/// which then took the state machine back. They wait for the install.
#[test]
fn follower_applies_nothing_while_a_snapshot_is_installed() {
    let (mut f, meta) = follower_receiving_a_snapshot(true);
    f.on_snapshot_chunk_stored(1, meta.clone(), 5, true);
    let actions = f.take_actions();
    assert_eq!(actions.install, Some(meta.clone()));
    assert!(actions.apply.is_empty());

    // The leader commits through 6 while the install runs.
    step(&mut f, msg(1, 2, 1, append(LogId::new(1, 6), vec![], 6)));
    assert_eq!(f.commit_index(), 6);
    assert!(!f.has_ready_apply());
    let t = turn(&mut f);
    assert_eq!((t.apply, t.load), (vec![], None), "held during the install");

    f.on_snapshot_installed(meta);
    f.check_invariants();
    assert_eq!(
        applied_in_turn(&mut f, &log_of(&[1; 6])),
        vec![blank(1, 5), blank(1, 6)],
        "only entries past the snapshot"
    );
}

/// A snapshot whose last entry committed here while it was received is not
/// installed (the log has it all; installing would take back what was
/// applied); the leader is told it is in place.
#[test]
fn follower_skips_a_snapshot_its_log_committed_meanwhile() {
    let (mut f, meta) = follower_receiving_a_snapshot(false);
    step(&mut f, msg(1, 2, 1, append(LogId::new(1, 6), vec![], 5)));
    let disk = log_of(&[1; 6]);
    assert_eq!(applied_in_turn(&mut f, &disk), disk[..5].to_vec());

    f.on_snapshot_chunk_stored(1, meta.clone(), 5, true);
    let actions = f.take_actions();
    assert_eq!(actions.install, None);
    let installed = MessageBody::InstallSnapshotResponse {
        snapshot: meta.last_log_id,
        outcome: SnapshotOutcome::Installed,
    };
    // Once the write in flight (the commit index) is durable: `Installed`
    // always waits for everything held now to be durable.
    let gated: Vec<_> = actions
        .messages_after_write
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert_eq!(gated, vec![msg(2, 1, 1, installed)]);
    step(&mut f, msg(1, 2, 1, append(LogId::new(1, 6), vec![], 6)));
    assert_eq!(
        applied_in_turn(&mut f, &disk),
        vec![blank(1, 6)],
        "the log goes on"
    );
}

/// Node 1 leading term 2 of {1, 2, 3} over a log purged through its
/// snapshot at (1, 5). Node 2 answers that it holds nothing, so a transfer
/// of the snapshot starts; its first chunk (16 bytes) is read and sent.
pub(super) fn leader_streaming_a_snapshot() -> (Engine, LogId) {
    let snapshot = LogId::new(1, 5);
    let restored = Restored {
        hard_state: hard_state(1, None, 5),
        purged: snapshot,
        snapshot,
        last: snapshot,
        term_runs: Vec::new(),
        memberships: vec![(5, membership(&[1, 2, 3]))],
        applied: 5,
    };
    let mut e = elected_by_hand_from(config(), &[1, 2, 3], restored);
    let nothing_here = MessageBody::AppendResponse {
        outcome: AppendOutcome::Reject {
            rejected_index: 5,
            hint: LogId::default(),
        },
    };
    step(&mut e, msg(2, 1, 2, nothing_here));
    let actions = e.take_actions();
    let first = SnapshotRead {
        to: 2,
        snapshot,
        offset: 0,
    };
    assert_eq!(actions.snapshot_reads, vec![first]);
    e.on_snapshot_chunk(2, snapshot, 0, Ok(Some(Bytes::from(vec![7; 16]))));
    let sent = e.take_actions().messages;
    assert!(
        matches!(
            &sent[..],
            [Message {
                to: 2,
                body: MessageBody::InstallSnapshot {
                    offset: 0,
                    done: false,
                    ..
                },
                ..
            }]
        ),
        "{sent:?}"
    );
    (e, snapshot)
}

fn snapshot_received(snapshot: LogId, next_offset: u64) -> MessageBody {
    MessageBody::InstallSnapshotResponse {
        snapshot,
        outcome: SnapshotOutcome::Received { next_offset },
    }
}

/// Regression (simulator, seed 1018: a duplicating, lossy network): a
/// copy of an answer to an earlier chunk made the leader abandon the
/// transfer, and transfers restarted forever. Only the answer to the chunk
/// in flight moves the transfer; copies are ignored.
#[test]
fn leader_ignores_copies_of_answers_to_earlier_snapshot_chunks() {
    let (mut e, snapshot) = leader_streaming_a_snapshot();
    step(&mut e, msg(2, 1, 2, snapshot_received(snapshot, 16)));
    let next = SnapshotRead {
        to: 2,
        snapshot,
        offset: 16,
    };
    assert_eq!(e.take_actions().snapshot_reads, vec![next]);

    // The same answer again, while chunk 16 is read, then once it is sent.
    step(&mut e, msg(2, 1, 2, snapshot_received(snapshot, 16)));
    let actions = e.take_actions();
    assert_eq!((actions.snapshot_reads, actions.messages), (vec![], vec![]));
    e.on_snapshot_chunk(2, snapshot, 16, Ok(Some(Bytes::from(vec![8; 16]))));
    assert_eq!(e.take_actions().messages.len(), 1, "chunk 16 is sent");
    step(&mut e, msg(2, 1, 2, snapshot_received(snapshot, 16)));
    let actions = e.take_actions();
    assert_eq!((actions.snapshot_reads, actions.messages), (vec![], vec![]));
    e.check_invariants();

    step(&mut e, msg(2, 1, 2, snapshot_received(snapshot, 32)));
    let last = SnapshotRead {
        to: 2,
        snapshot,
        offset: 32,
    };
    assert_eq!(e.take_actions().snapshot_reads, vec![last]);
}

/// A leader whose state machine no longer has the snapshot it knows of
/// (it restarted after a newer one replaced it) asks for a build, whose
/// answer the next transfer sends; before, every transfer started over with
/// the lost snapshot until the next scheduled build.
#[test]
fn leader_asks_for_a_build_when_its_snapshot_is_unavailable() {
    let (mut e, snapshot) = leader_streaming_a_snapshot();
    step(&mut e, msg(2, 1, 2, snapshot_received(snapshot, 16)));
    e.take_actions();
    e.on_snapshot_chunk(
        2,
        snapshot,
        16,
        Err(StateMachineError::SnapshotUnavailable(snapshot)),
    );
    let actions = e.take_actions();
    assert!(actions.build_snapshot, "no build asked for");
    assert!(actions.messages.is_empty());
    e.check_invariants();
    // The transfer starts over with the lost snapshot meanwhile; its read
    // fails the same way, and asks for no second build.
    let mut pending = actions.snapshot_reads;
    assert_eq!(
        pending.iter().map(|r| r.snapshot).collect::<Vec<_>>(),
        vec![snapshot]
    );

    // The build answers a newer snapshot (the leader's blank entry, once
    // node 3 has it): transfers send that one from then on. A read of the
    // lost one still under way answers unavailable again.
    step(&mut e, msg(3, 1, 2, ack(6)));
    let newer = LogId::new(2, 6);
    e.on_applied(6);
    e.on_snapshot_built(Ok(newer)).expect("a newer snapshot");
    let mut reads = Vec::new();
    for _ in 0..3 * ELECTION_TICKS_MAX {
        let actions = e.take_actions();
        assert!(!actions.build_snapshot, "a second build");
        e.check_invariants();
        pending.extend(actions.snapshot_reads);
        for read in std::mem::take(&mut pending) {
            reads.push(read.snapshot);
            if read.snapshot == snapshot {
                let lost = Err(StateMachineError::SnapshotUnavailable(snapshot));
                e.on_snapshot_chunk(2, snapshot, read.offset, lost);
            }
        }
        for m in actions.messages.into_iter().filter(|m| m.to == 2) {
            // Node 2 still holds nothing.
            let answer = match m.body {
                MessageBody::Heartbeat { read_seq, .. } => {
                    MessageBody::HeartbeatResponse { read_seq }
                }
                MessageBody::Append { prev_log_id, .. } => MessageBody::AppendResponse {
                    outcome: AppendOutcome::Reject {
                        rejected_index: prev_log_id.index,
                        hint: LogId::default(),
                    },
                },
                _ => continue,
            };
            step(&mut e, msg(2, 1, 2, answer));
        }
        if reads.contains(&newer) {
            break;
        }
        e.tick();
    }
    assert_eq!(reads.last(), Some(&newer), "transfers read {reads:?}");
}

/// A chunk left unanswered for an election timeout (it or its answer was
/// lost) is read and sent again, from where the follower last answered.
#[test]
fn leader_sends_an_unanswered_snapshot_chunk_again() {
    let (mut e, snapshot) = leader_streaming_a_snapshot();
    let mut reads = Vec::new();
    for _ in 0..ELECTION_TICKS_MIN {
        e.tick();
        e.check_invariants();
        reads.extend(e.take_actions().snapshot_reads);
    }
    let again = SnapshotRead {
        to: 2,
        snapshot,
        offset: 0,
    };
    assert_eq!(reads, vec![again]);
}

/// A follower given a copy of a chunk it took already (duplicated, or sent
/// again because its answer was lost) says how far it is instead of asking
/// for a restart.
#[test]
fn follower_answers_a_copy_of_a_snapshot_chunk_with_its_offset() {
    let (mut f, meta) = follower_receiving_a_snapshot(false);
    f.on_snapshot_chunk_stored(1, meta.clone(), 5, false);
    assert_eq!(
        f.take_actions().messages,
        vec![msg(2, 1, 1, snapshot_received(meta.last_log_id, 5))]
    );
    let second = MessageBody::InstallSnapshot {
        meta: meta.clone(),
        offset: 5,
        data: Bytes::from_static(b"more"),
        done: false,
    };
    step(&mut f, msg(1, 2, 1, second.clone()));
    assert_eq!(f.take_actions().snapshot_receives.len(), 1);
    f.on_snapshot_chunk_stored(1, meta.clone(), 9, false);
    f.take_actions();

    step(&mut f, msg(1, 2, 1, second));
    let actions = f.take_actions();
    assert!(actions.snapshot_receives.is_empty(), "not stored twice");
    assert_eq!(
        actions.messages,
        vec![msg(2, 1, 1, snapshot_received(meta.last_log_id, 9))]
    );
}

/// Regression (found by the whole-node simulation, seed 0): a duplicated
/// empty last chunk is taken twice, its offset being the next one both
/// times; the second store started a second install, which found the
/// received snapshot gone and stopped the node. One install only.
#[test]
fn follower_installs_once_when_an_empty_last_chunk_is_duplicated() {
    let (mut f, meta) = follower_receiving_a_snapshot(false);
    f.on_snapshot_chunk_stored(1, meta.clone(), 5, false);
    f.take_actions();
    let last = MessageBody::InstallSnapshot {
        meta: meta.clone(),
        offset: 5,
        data: Bytes::new(),
        done: true,
    };
    step(&mut f, msg(1, 2, 1, last.clone()));
    step(&mut f, msg(1, 2, 1, last));
    f.take_actions();
    f.on_snapshot_chunk_stored(1, meta.clone(), 5, true);
    assert_eq!(f.take_actions().install, Some(meta.clone()));
    f.on_snapshot_chunk_stored(1, meta.clone(), 5, true);
    assert_eq!(f.take_actions().install, None, "installed once");
    f.on_snapshot_installed(meta);
    f.check_invariants();
}
