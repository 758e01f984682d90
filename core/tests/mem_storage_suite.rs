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

/// A planted bug per variant, to show the suite can fail.
#[derive(Clone, Copy)]
enum Bug {
    /// Ignores `bytes_max` and returns the whole range.
    IgnoreBytesMax,
    /// Reports an empty log at `purged` as ending at the last entry it had.
    ForgetPurgePoint,
    /// Returns one entry too few from every read of more than one.
    ShortRead,
}

/// MemStorage with one planted bug.
#[derive(Clone)]
struct Buggy {
    inner: MemStorage,
    bug: Bug,
}

impl rafter::RaftStorage for Buggy {
    async fn initial_state(&mut self) -> Result<rafter::InitialState, rafter::StorageError> {
        let mut state = self.inner.initial_state().await?;
        if matches!(self.bug, Bug::ForgetPurgePoint) {
            state.purged = rafter::LogId::default();
        }
        Ok(state)
    }

    async fn write(&mut self, batch: rafter::WriteBatch) -> Result<(), rafter::StorageError> {
        self.inner.write(batch).await
    }

    async fn entries(
        &mut self,
        range: std::ops::Range<u64>,
        bytes_max: u64,
    ) -> Result<Vec<rafter::Entry>, rafter::StorageError> {
        match self.bug {
            Bug::IgnoreBytesMax => self.inner.entries(range, u64::MAX).await,
            Bug::ShortRead => {
                let mut entries = self.inner.entries(range, bytes_max).await?;
                if entries.len() > 1 {
                    entries.pop();
                }
                Ok(entries)
            }
            Bug::ForgetPurgePoint => self.inner.entries(range, bytes_max).await,
        }
    }

    async fn purge(&mut self, up_to: rafter::LogId) -> Result<(), rafter::StorageError> {
        self.inner.purge(up_to).await
    }

    async fn save_snapshot_meta(
        &mut self,
        meta: rafter::SnapshotMeta,
    ) -> Result<(), rafter::StorageError> {
        self.inner.save_snapshot_meta(meta).await
    }

    async fn save_installing_snapshot_meta(
        &mut self,
        meta: Option<rafter::SnapshotMeta>,
    ) -> Result<(), rafter::StorageError> {
        self.inner.save_installing_snapshot_meta(meta).await
    }
}

async fn run_with_bug(bug: Bug) {
    let create = || Buggy {
        inner: MemStorage::new(),
        bug,
    };
    run_storage_suite(create, |store| store).await;
}

#[tokio::test]
#[should_panic(expected = "bytes_max_returns_a_maximal_prefix_of_at_least_one_entry")]
async fn the_suite_catches_a_store_that_ignores_bytes_max() {
    run_with_bug(Bug::IgnoreBytesMax).await;
}

#[tokio::test]
#[should_panic(expected = "initial state")]
async fn the_suite_catches_a_store_that_forgets_its_purge_point() {
    run_with_bug(Bug::ForgetPurgePoint).await;
}

#[tokio::test]
#[should_panic(expected = "append_then_read_every_range")]
async fn the_suite_catches_a_short_read() {
    run_with_bug(Bug::ShortRead).await;
}
