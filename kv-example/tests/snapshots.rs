//! The service's snapshots: a view of the store held open and streamed to
//! a follower as it reads, nothing written on the sending side
//! (`src/snapshots.rs`, `src/snapshot_stream.rs`).

use std::path::Path;

use bytes::Bytes;
use rafter::{Committed, CommittedPayload, LogId, StateMachine, StateMachineError};
use rafter_kv::command::{CommandV1, KvCommand};
use rafter_kv::state_machine::KvStateMachine;
use rafter_kv::store::{PutRequest, WriteRequest};

const SESSION_TTL_MS: u64 = 3_600_000;
/// The chunk a leader reads at a time, here: small enough that a snapshot
/// of these tests spans many.
const CHUNK: usize = 64 << 10;

fn open(dir: &Path) -> KvStateMachine {
    KvStateMachine::open(dir, SESSION_TTL_MS).expect("open the state machine")
}

/// Applies puts `from..=to` (1 KiB values over 500 keys), one entry each.
async fn apply(kv: &mut KvStateMachine, from: u64, to: u64) {
    let entries = (from..=to)
        .map(|i| Committed {
            log_id: LogId::new(1, i),
            payload: CommittedPayload::Command(KvCommand::V1(CommandV1 {
                session: None,
                time_ms: 1_000 + i,
                request: WriteRequest::Put(PutRequest {
                    key: format!("key-{}", i % 500).into_bytes(),
                    value: vec![(i % 251) as u8; 1024],
                    prev_kv: false,
                    ignore_value: false,
                }),
            })),
        })
        .collect();
    kv.apply(entries).await.expect("apply");
}

/// Applies `from..=to` and makes it durable, so that a snapshot covers it.
async fn apply_durably(kv: &mut KvStateMachine, from: u64, to: u64) {
    apply(kv, from, to).await;
    kv.check_invariants().expect("flush and check");
}

fn digest(kv: &KvStateMachine) -> (i64, String) {
    let view = kv.reads().view().expect("a view");
    (view.revision(), view.digest().expect("digest"))
}

async fn read_all(kv: &mut KvStateMachine, snapshot: LogId, chunk: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    while let Some(part) = kv
        .read_snapshot(snapshot, bytes.len() as u64, chunk)
        .await
        .expect("read the snapshot")
    {
        assert!(!part.is_empty() && part.len() <= chunk);
        bytes.extend_from_slice(&part);
    }
    bytes
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("snapshots"))
        .expect("the snapshot directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_streams_the_state_it_was_taken_at_while_the_store_moves_on() {
    let root = tempfile::tempdir().unwrap();
    let mut source = open(&root.path().join("source"));
    apply_durably(&mut source, 1, 2_000).await;
    let snapshot = source.build_snapshot().await.expect("build");
    assert_eq!(snapshot, LogId::new(1, 2_000));
    assert_eq!(source.latest_snapshot().await, Ok(Some(snapshot)));

    // The store moves on, durably, before anyone reads the snapshot.
    apply_durably(&mut source, 2_001, 3_000).await;
    let bytes = read_all(&mut source, snapshot, CHUNK).await;
    assert!(bytes.len() > 8 * CHUNK, "{} bytes", bytes.len());
    assert!(
        snapshot_files(&root.path().join("source")).is_empty(),
        "the sending side wrote a file: {:?}",
        snapshot_files(&root.path().join("source"))
    );

    // Installed elsewhere, it is the state at 2,000.
    let mut reference = open(&root.path().join("reference"));
    apply(&mut reference, 1, 2_000).await;
    let mut target = open(&root.path().join("target"));
    for (i, part) in bytes.chunks(CHUNK).enumerate() {
        let offset = (i * CHUNK) as u64;
        target
            .receive_snapshot(snapshot, offset, Bytes::copy_from_slice(part))
            .await
            .expect("receive");
    }
    target.install_snapshot(snapshot).await.expect("install");
    assert_eq!(target.applied().await, Ok(snapshot));
    assert_eq!(digest(&target), digest(&reference));
    assert_ne!(digest(&target), digest(&source), "the source moved on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_side_by_side_and_chunks_sent_again_read_the_same_bytes() {
    let root = tempfile::tempdir().unwrap();
    let mut kv = open(root.path());
    apply_durably(&mut kv, 1, 1_500).await;
    let snapshot = kv.build_snapshot().await.expect("build");
    let whole = read_all(&mut kv, snapshot, usize::MAX >> 1).await;
    let at = |offset: usize| &whole[offset..(offset + CHUNK).min(whole.len())];

    // Four transfers, one more than the streams kept, each at its own
    // pace; every other chunk is asked for twice (its answer was lost).
    let mut offsets = [0usize; 4];
    let mut round = 0;
    while offsets.iter().any(|&o| o < whole.len()) {
        for (t, offset) in offsets.iter_mut().enumerate() {
            if *offset >= whole.len() || (t + round) % (t + 1) != 0 {
                continue;
            }
            let chunk = kv
                .read_snapshot(snapshot, *offset as u64, CHUNK)
                .await
                .expect("read");
            assert_eq!(
                chunk.as_deref(),
                Some(at(*offset)),
                "transfer {t} at {offset}"
            );
            if round % 2 == 0 {
                let again = kv
                    .read_snapshot(snapshot, *offset as u64, CHUNK)
                    .await
                    .expect("read again");
                assert_eq!(again.as_deref(), Some(at(*offset)), "transfer {t} again");
            }
            *offset += CHUNK;
        }
        round += 1;
    }
    // A transfer that starts over, and one that asks from the middle.
    assert_eq!(
        kv.read_snapshot(snapshot, 0, CHUNK)
            .await
            .expect("read")
            .as_deref(),
        Some(at(0))
    );
    // Asked again for less than it answered: the start of the same bytes.
    let half = kv
        .read_snapshot(snapshot, 0, CHUNK / 2)
        .await
        .expect("read a half");
    assert_eq!(half.as_deref(), Some(&whole[..CHUNK / 2]));
    let middle = (whole.len() / 2) as u64;
    let tail = kv
        .read_snapshot(snapshot, middle, CHUNK)
        .await
        .expect("read");
    assert_eq!(tail.as_deref(), Some(at(middle as usize)));
    let end = whole.len() as u64;
    assert_eq!(kv.read_snapshot(snapshot, end, CHUNK).await, Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_takes_a_view_of_the_durable_state_and_the_old_one_is_gone() {
    let root = tempfile::tempdir().unwrap();
    let mut kv = open(root.path());
    apply_durably(&mut kv, 1, 300).await;
    let before = kv.build_snapshot().await.expect("build");
    apply_durably(&mut kv, 301, 400).await;
    drop(kv);

    let mut kv = open(root.path());
    let applied = kv.applied().await.expect("applied");
    assert_eq!(applied, LogId::new(1, 400));
    assert_eq!(kv.latest_snapshot().await, Ok(Some(applied)));
    assert_eq!(
        kv.read_snapshot(before, 0, CHUNK).await,
        Err(StateMachineError::SnapshotUnavailable(before)),
        "a view from before the restart"
    );
    assert!(!read_all(&mut kv, applied, CHUNK).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_outlives_one_newer_view_but_not_two() {
    let root = tempfile::tempdir().unwrap();
    let mut kv = open(root.path());
    apply_durably(&mut kv, 1, 1_000).await;
    let first = kv.build_snapshot().await.expect("build");
    let whole = read_all(&mut kv, first, CHUNK).await;
    let chunk = |i: usize| Some(&whole[i * CHUNK..(i + 1) * CHUNK]);
    let read = kv.read_snapshot(first, 0, CHUNK).await.expect("read");
    assert_eq!(read.as_deref(), chunk(0));

    apply_durably(&mut kv, 1_001, 1_100).await;
    let second = kv.build_snapshot().await.expect("build");
    assert!(second > first);
    let read = kv.read_snapshot(first, CHUNK as u64, CHUNK).await;
    assert_eq!(
        read.expect("read").as_deref(),
        chunk(1),
        "over one newer view"
    );

    apply_durably(&mut kv, 1_101, 1_200).await;
    kv.build_snapshot().await.expect("build");
    assert_eq!(
        kv.read_snapshot(first, 2 * CHUNK as u64, CHUNK).await,
        Err(StateMachineError::SnapshotUnavailable(first)),
        "over two newer views"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_left_half_way_does_not_hold_the_store_past_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut kv = open(root.path());
    apply_durably(&mut kv, 1, 3_000).await;
    for round in 0..5 {
        let snapshot = kv.build_snapshot().await.expect("build");
        let first = kv.read_snapshot(snapshot, 0, CHUNK).await.expect("read");
        assert!(first.is_some());
        // Closed with the stream's thread still going: the reopen must
        // find the store's file free.
        drop(kv);
        kv = KvStateMachine::open(root.path(), SESSION_TTL_MS)
            .unwrap_or_else(|e| panic!("reopen {round}: {e}"));
    }
}
