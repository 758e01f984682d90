//! Compaction end to end: a large log, purged down to its tail, gives its
//! space back to the filesystem (the file shrinks), whether the next purge
//! triggers it (the rule of `src/compaction.rs`) or `RedbStorage::compact`
//! is called; the entries that remain read back intact after a reopen. A
//! log purged behind each interval of appends, as Raft purges behind each
//! snapshot, is never compacted and stays about its peak size.

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
async fn a_large_purge_is_compacted_at_the_next_purge() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut options = RedbOptions::default();
    options.compaction_purged_bytes_min = 4 * MIB;
    let mut store = build(root.path(), options.clone()).await;
    let before = file_bytes(&store);
    assert!(before >= 8 * MIB, "the log takes {before} bytes");

    // Right after a purge, unused space looks like a steady state's, which
    // the next appends take back: nothing yet.
    let first = entry(ENTRIES - KEPT - 100).log_id();
    store.purge(first).await.expect("purge");
    store.checkpoint().await.expect("checkpoint");
    let purged = file_bytes(&store);
    assert!(
        purged * 4 >= before * 3,
        "the first purge compacted: {before} -> {purged} bytes"
    );

    // The next purge finds 95% of the file still unused: over the 4 MiB
    // minimum and twice the live log.
    store.purge(purge_point()).await.expect("purge");
    let after = file_bytes(&store);
    println!("the next purge compacted {before} bytes to {after}");
    assert!(
        after * 4 < before,
        "95% of the file unused, but it went from {before} to {after} bytes"
    );

    let store = check_reopened(store, options).await;
    assert!(file_bytes(&store) * 4 < before, "still small after reopen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_purged_behind_each_interval_is_never_compacted_and_stays_bounded() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut options = RedbOptions::default();
    options.compaction_purged_bytes_min = MIB;
    let mut store = RedbStorage::open_with(root.path(), options).expect("open");
    // Intervals of 1,000 entries (2 MiB), each purged down to its last 50.
    const INTERVAL: u64 = 1000;
    // The file before and after each purge, everything written to redb.
    let mut sizes = Vec::new();
    for interval in 0..8 {
        let first = interval * INTERVAL + 1;
        for batch in (first..first + INTERVAL).step_by(100) {
            let write = WriteBatch {
                entries: (batch..batch + 100).map(entry).collect(),
                must_sync: true,
                ..WriteBatch::default()
            };
            store.write(write).await.expect("append");
        }
        store.checkpoint().await.expect("checkpoint");
        let before = file_bytes(&store);
        let last = first + INTERVAL - 1;
        store.purge(entry(last - 50).log_id()).await.expect("purge");
        store.checkpoint().await.expect("checkpoint");
        sizes.push((before, file_bytes(&store)));
    }
    println!("file bytes before and after each purge: {sizes:?}");
    for (interval, &(before, after)) in sizes.iter().enumerate() {
        assert!(
            after * 2 >= before,
            "interval {interval}: compacted from {before} to {after} bytes: {sizes:?}"
        );
    }
    let (_, first_after) = sizes[0];
    let (_, last_after) = sizes[sizes.len() - 1];
    assert!(
        last_after <= 2 * first_after,
        "the file kept growing: {sizes:?}"
    );
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
