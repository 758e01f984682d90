//! Helpers shared by the store's integration tests.

use rafter_redb::RedbStorage;

/// Closes `store` (its file and its directory lock) and opens it again from
/// its directory: what a restart finds.
pub fn reopen(store: RedbStorage) -> RedbStorage {
    let dir = store
        .database_path()
        .and_then(|p| p.parent())
        .expect("an open store has a path")
        .to_path_buf();
    drop(store);
    RedbStorage::open(&dir).expect("reopen the store")
}
