//! Readers on their own threads while the apply side writes, moves
//! batches into layers in place and flushes: every view a reader takes
//! shows whole batches only, and the batch of its own revision; it never
//! changes while the reader holds it; views come in revision order. It
//! catches an absorbed layer left out of the published view, and a view
//! whose revision is not moved with it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rafter::LogId;
use rafter_redb::RedbStateMachineStore;

use super::tests::{put, range};
use super::{LayeredStore, StoreReader};

const KEYS: [&str; 3] = ["a", "b", "c"];
const BATCHES: u64 = 3_000;

/// The three keys' values in `view`, read once.
fn values(view: &StoreReader) -> (i64, Vec<Vec<u8>>) {
    let response = view.range(&range("\0", "\0")).unwrap().unwrap();
    let values = response.kvs.into_iter().map(|kv| kv.value).collect();
    (response.revision, values)
}

#[test]
fn readers_see_whole_batches_and_held_views_never_change() {
    let dir = tempfile::tempdir().unwrap();
    let db = RedbStateMachineStore::open(dir.path()).unwrap();
    let mut store = LayeredStore::open(Arc::new(db)).unwrap();
    let reads = store.reads();
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for reader in 0..2u64 {
            let reads = reads.clone();
            let done = &done;
            scope.spawn(move || {
                let mut last_revision = 0;
                let mut checked = 0u64;
                while !done.load(Ordering::Relaxed) || checked == 0 {
                    let view = reads.view();
                    let (revision, first) = values(&view);
                    assert!(revision >= last_revision, "views went back");
                    last_revision = revision;
                    // Batch i puts i into every key, at revisions up to
                    // 1 + 3i: the values must be whole and of the revision.
                    let expected = (revision - 1) / KEYS.len() as i64;
                    let whole = if expected == 0 {
                        Vec::new()
                    } else {
                        vec![expected.to_string().into_bytes(); KEYS.len()]
                    };
                    assert_eq!(first, whole, "not the batch of revision {revision}");
                    // Held across later batches (longer by the second
                    // reader), the view must answer the same again.
                    for _ in 0..(1 + reader * 20) {
                        std::thread::yield_now();
                    }
                    assert_eq!(values(&view), (revision, first), "a held view changed");
                    checked += 1;
                }
            });
        }
        for index in 1..=BATCHES {
            let mut batch = store.batch(index);
            for key in KEYS {
                batch.apply(&put(key, &index.to_string())).unwrap().unwrap();
            }
            batch.finish(LogId { term: 1, index });
            // Often, so that flushes end while readers hold the views
            // before them.
            if index % 5 == 0 {
                store.flush_in_background().unwrap();
            }
            if index % 1_000 == 0 {
                store.flush().unwrap();
            }
        }
        done.store(true, Ordering::Relaxed);
    });
    let (revision, last) = values(&store.view());
    assert_eq!(revision, 1 + KEYS.len() as i64 * BATCHES as i64);
    assert_eq!(last, vec![BATCHES.to_string().into_bytes(); KEYS.len()]);
    store.check_invariants().unwrap();
}
