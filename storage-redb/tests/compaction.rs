//! Compaction end to end: a large log, purged down to its tail, gives its
//! space back to the filesystem (the file shrinks), whether the purge
//! triggers it (the rule of `src/compaction.rs`) or `RedbStorage::compact`
//! is called; the entries that remain read back intact after a reopen.

use std::path::{Path, PathBuf};

use rafter::CommandBytes;
use rafter::{Entry, EntryPayload, HardState, LogId, RaftStorage, WriteBatch};
use rafter_redb::{RedbOptions, RedbStorage};

const MIB: u64 = 1 << 20;
/// 4,000 entries of 2 KiB: about 8 MiB of log.
const ENTRIES: u64 = 4000;
const PAYLOAD_BYTES: usize = 2048;
/// The purge keeps the last 200 entries (5%).
const KEPT: u64 = 200;

fn entry(index: u64) -> Entry {
    let seed = index.to_le_bytes();
    Entry {
        term: 1 + index / 1000,
        index,
        payload: EntryPayload::Command(CommandBytes::from(
            (0..PAYLOAD_BYTES)
                .map(|i| seed[i % 8] ^ (i as u8))
                .collect::<Vec<_>>(),
        )),
    }
}

fn file_bytes(store: &RedbStorage) -> u64 {
    let path = store.database_path().expect("an open store has a path");
    std::fs::metadata(path)
        .expect("stat the database file")
        .len()
}

fn directory(store: &RedbStorage) -> PathBuf {
    let path = store.database_path().expect("an open store has a path");
    path.parent().expect("in its directory").to_path_buf()
}

/// A store in `dir` holding entries `1..=ENTRIES`, written in batches of
/// 100, all of them in the database file.
async fn build(dir: &Path, options: RedbOptions) -> RedbStorage {
    let mut store = RedbStorage::open_with(dir, options.clone()).expect("open");
    for first in (1..=ENTRIES).step_by(100) {
        let batch = WriteBatch {
            entries: (first..first + 100).map(entry).collect(),
            hard_state: Some(HardState {
                term: entry(first + 99).term,
                vote: Some(1),
                commit: first + 99,
            }),
            must_sync: true,
            ..WriteBatch::default()
        };
        store.write(batch).await.expect("append");
    }
    // The last writes are in the journal until a checkpoint; opening makes
    // one.
    drop(store);
    RedbStorage::open_with(dir, options).expect("reopen")
}

fn purge_point() -> LogId {
    entry(ENTRIES - KEPT).log_id()
}

/// Reopens the store and checks the purge point and every remaining entry.
async fn check_reopened(store: RedbStorage, options: RedbOptions) -> RedbStorage {
    let dir = directory(&store);
    drop(store);
    let mut store = RedbStorage::open_with(&dir, options).expect("reopen");
    let state = store.initial_state().await.expect("initial state");
    assert_eq!(state.purged, purge_point());
    assert_eq!(state.last_log_id, entry(ENTRIES).log_id());
    let first = ENTRIES - KEPT + 1;
    let entries = store
        .entries(first..ENTRIES + 1, u64::MAX)
        .await
        .expect("read the remaining log");
    assert_eq!(entries, (first..=ENTRIES).map(entry).collect::<Vec<_>>());
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_purge_compacts_the_file() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut options = RedbOptions::default();
    options.compaction_purged_bytes_min = 4 * MIB;
    let mut store = build(root.path(), options.clone()).await;
    let before = file_bytes(&store);
    assert!(before >= 8 * MIB, "the log takes {before} bytes");

    store.purge(purge_point()).await.expect("purge");
    let after = file_bytes(&store);
    println!("purge compacted {before} bytes to {after}");
    assert!(
        after * 4 < before,
        "95% of the log purged (over the 4 MiB minimum and half the log), \
         but the file went from {before} to {after} bytes"
    );

    let store = check_reopened(store, options).await;
    assert!(file_bytes(&store) * 4 < before, "still small after reopen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_under_the_minimum_waits_and_compact_shrinks_the_file() {
    let root = tempfile::tempdir().expect("temp dir");
    // The default minimum (64 MiB) is far above this 8 MiB log.
    let options = RedbOptions::default();
    let mut store = build(root.path(), options.clone()).await;
    let before = file_bytes(&store);

    store.purge(purge_point()).await.expect("purge");
    let purged = file_bytes(&store);
    assert!(
        purged * 4 >= before * 3,
        "under the minimum the purge must not compact: {before} -> {purged} bytes"
    );

    store.compact().await.expect("compact");
    let compacted = file_bytes(&store);
    println!("compact shrank {purged} bytes to {compacted}");
    assert!(
        compacted * 4 < purged,
        "compact left the file at {compacted} of {purged} bytes"
    );

    // Compaction moved the live pages: they still read back, and the store
    // still takes writes.
    let mut store = check_reopened(store, options.clone()).await;
    let next = WriteBatch {
        entries: vec![entry(ENTRIES + 1)],
        must_sync: true,
        ..WriteBatch::default()
    };
    store.write(next).await.expect("append after compaction");
    let dir = directory(&store);
    drop(store);
    let mut store = RedbStorage::open_with(&dir, options).expect("reopen");
    let last = store.entries(ENTRIES + 1..ENTRIES + 2, u64::MAX).await;
    assert_eq!(last, Ok(vec![entry(ENTRIES + 1)]));
}
