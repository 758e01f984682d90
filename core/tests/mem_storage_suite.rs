//! The storage conformance suite on the in-memory reference store. Clones of
//! a `MemStorage` share its state, so a "restart" is a fresh handle to it.
#![cfg(feature = "testing")]

use rafter::testing::{run_storage_suite, MemStorage};

#[tokio::test]
async fn mem_storage_passes_the_storage_suite() {
    let ran = run_storage_suite(MemStorage::new, |store: MemStorage| {
        let restarted = store.clone();
        drop(store);
        restarted
    })
    .await;
    assert!(ran.len() >= 14, "ran {ran:?}");
}
