//! `RedbStorage` passes the conformance suite of `rafter::testing`, with a
//! real restart: the store is dropped (closing the file and the lock) and
//! opened again from its directory. It runs on both kinds of tokio runtime,
//! because the store leaves the worker differently on each (`block_in_place`
//! on a multi-thread runtime, the blocking pool on a current-thread one).

use rafter::testing::run_storage_suite;
use rafter_redb::RedbStorage;

mod common;

#[tokio::test]
async fn redb_storage_passes_the_storage_suite() {
    check_storage_suite().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_storage_passes_the_storage_suite_on_a_multi_thread_runtime() {
    check_storage_suite().await;
}

async fn check_storage_suite() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut stores = 0;
    let create = || {
        stores += 1;
        let dir = root.path().join(format!("store-{stores}"));
        RedbStorage::open(&dir).expect("open a new store")
    };
    let reopen = common::reopen;
    let ran = run_storage_suite(create, reopen).await;
    assert!(ran.len() >= 14, "ran {ran:?}");
}
