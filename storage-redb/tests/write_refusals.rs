//! Batches that break `RaftStorage::write`'s contract are refused as a whole
//! (the transaction is rolled back, even when the refusal comes after some
//! of the batch's entries went in) and leave the store usable.

use bytes::Bytes;
use rafter::{Entry, EntryPayload, RaftStorage, WriteBatch};
use rafter_redb::{RedbStorage, ENTRY_RECORD_BYTES_MAX};

fn entry(term: u64, index: u64, payload_bytes: usize) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Command(Bytes::from(vec![index as u8; payload_bytes])),
    }
}

fn append(entries: Vec<Entry>) -> WriteBatch {
    WriteBatch {
        entries,
        must_sync: true,
        ..WriteBatch::default()
    }
}

/// The log holds exactly `1..=last` with the given terms, after a reopen.
async fn check_log(store: RedbStorage, terms: &[u64]) -> RedbStorage {
    let dir = store
        .database_path()
        .and_then(|p| p.parent())
        .expect("an open store has a path")
        .to_path_buf();
    drop(store);
    let mut store = RedbStorage::open(&dir).expect("reopen");
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
    assert!(store.write(oversized).await.is_err(), "over the limit");
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
    assert!(store.write(going_back).await.is_err(), "term going back");
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
