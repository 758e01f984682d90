//! Batches that break `RaftStorage::write`'s contract are refused as a whole
//! with `StorageError::InvalidBatch` (the transaction is rolled back, even
//! when the refusal comes after some of the batch's entries went in) and
//! leave the store usable: nothing on disk is wrong, so never `Corrupt`.

use rafter::CommandBytes;
use rafter::{Entry, EntryPayload, RaftStorage, StorageError, WriteBatch};
use rafter_redb::{RedbStorage, ENTRY_RECORD_BYTES_MAX};

mod common;

fn entry(term: u64, index: u64, payload_bytes: usize) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Command(CommandBytes::from(vec![index as u8; payload_bytes])),
    }
}

fn append(entries: Vec<Entry>) -> WriteBatch {
    WriteBatch {
        entries,
        must_sync: true,
        ..WriteBatch::default()
    }
}

/// `result` is a refusal of the batch, not a failure of the store.
fn check_invalid_batch(result: Result<(), StorageError>, what: &str) {
    assert!(
        matches!(result, Err(StorageError::InvalidBatch(_))),
        "{what}: expected InvalidBatch, got {result:?}"
    );
}

/// The log holds exactly `1..=last` with the given terms, after a reopen.
async fn check_log(store: RedbStorage, terms: &[u64]) -> RedbStorage {
    let mut store = common::reopen(store);
    let state = store.initial_state().await.expect("initial state");
    assert_eq!(state.last_log_id.index, terms.len() as u64);
    let entries = store
        .entries(1..terms.len() as u64 + 1, u64::MAX)
        .await
        .expect("read the log");
    let found: Vec<u64> = entries.iter().map(|e| e.term).collect();
    assert_eq!(found, terms);
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_entry_after_good_ones_rolls_the_whole_batch_back() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut store = RedbStorage::open(root.path()).expect("open");
    store
        .write(append(vec![entry(1, 1, 10)]))
        .await
        .expect("first write");
    let oversized = append(vec![entry(1, 2, 10), entry(1, 3, ENTRY_RECORD_BYTES_MAX)]);
    check_invalid_batch(store.write(oversized).await, "over the limit");
    // Entry 2 went into the transaction before entry 3 was refused.
    let mut store = check_log(store, &[1]).await;
    store
        .write(append(vec![entry(1, 2, 10)]))
        .await
        .expect("the store is still usable");
    check_log(store, &[1, 1]).await;
}

#[tokio::test]
async fn a_term_below_the_truncation_point_rolls_the_truncation_back() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut store = RedbStorage::open(root.path()).expect("open");
    store
        .write(append(vec![
            entry(1, 1, 10),
            entry(2, 2, 10),
            entry(3, 3, 10),
        ]))
        .await
        .expect("first write");
    // Truncating from 3 leaves entry 2 (term 2) last: term 1 is below it.
    let going_back = WriteBatch {
        truncate_from: Some(3),
        ..append(vec![entry(1, 3, 10)])
    };
    check_invalid_batch(store.write(going_back).await, "term going back");
    let mut store = check_log(store, &[1, 2, 3]).await;
    let replacing = WriteBatch {
        truncate_from: Some(3),
        ..append(vec![entry(4, 3, 10)])
    };
    store
        .write(replacing)
        .await
        .expect("the store is still usable");
    check_log(store, &[1, 2, 4]).await;
}

#[tokio::test]
async fn a_batch_that_breaks_the_contract_is_invalid_and_changes_nothing() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut store = RedbStorage::open(root.path()).expect("open");
    store
        .write(append(vec![entry(1, 1, 10), entry(1, 2, 10)]))
        .await
        .expect("first write");
    let gap_after_the_log = append(vec![entry(1, 4, 10)]);
    let gap_inside_the_batch = append(vec![entry(1, 3, 10), entry(1, 5, 10)]);
    let term_going_back_inside = append(vec![entry(2, 3, 10), entry(1, 4, 10)]);
    let no_voters = append(vec![Entry {
        term: 1,
        index: 3,
        payload: EntryPayload::Membership(Box::default()),
    }]);
    for (what, batch) in [
        ("a gap after the log", gap_after_the_log),
        ("a gap inside the batch", gap_inside_the_batch),
        ("a term going back inside the batch", term_going_back_inside),
        ("a membership without voters", no_voters),
    ] {
        check_invalid_batch(store.write(batch).await, what);
    }
    let mut store = check_log(store, &[1, 1]).await;
    store
        .write(append(vec![entry(1, 3, 10)]))
        .await
        .expect("the store is still usable");
    check_log(store, &[1, 1, 1]).await;
}
