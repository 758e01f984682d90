//! Criterion micro-benchmark of rafter-kv's apply side: what one node's
//! apply task spends on a batch of puts, without Raft, HTTP or the disk.
//!
//! - `kv_apply/puts/70`: 70 puts of 256-byte values, keys drawn from 10,000
//!   (the `kv` mode's defaults; 70 is the apply batch measured at 256
//!   clients), into the layered store: the rules, the batch's layer, the
//!   merge with the layers before, publishing. Every 10,000 puts the layers
//!   are flushed to redb, as the service does, so the layers and the base
//!   below stay as they are under load; the flush itself (on a thread of
//!   its own in the service) is not timed.
//!
//! - `kv_flush/puts/N`: the flush of N such puts (applied untimed) to
//!   redb, per put: what the service's flush thread spends, for the count
//!   limit it has (10,000) and a larger one.
//!
//! Run: `cargo bench -p rafter-bench --bench kv_apply`. Compare builds on
//! the same machine.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rafter::LogId;
use rafter_kv::store::{LayeredStore, PutRequest, WriteRequest};
use rafter_redb::RedbStateMachineStore;

/// The service's allocator (see rafter-kv's `main.rs`): the apply side's
/// costs are mostly allocations and frees.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: u64 = 10_000;
const VALUE_BYTES: usize = 256;
const BATCH: u64 = 70;
/// Entries between background flushes (the service's count limit).
const FLUSH_EVERY: u64 = 10_000;

/// Keys in a fixed pseudo-random order (a multiplicative walk mod a prime
/// above `KEYS`), so every build measures the same sequence.
struct Keys(u64);

impl Keys {
    fn next(&mut self) -> Vec<u8> {
        loop {
            self.0 = self.0 * 48_271 % 2_147_483_647;
            let k = self.0 % 10_007;
            if k < KEYS {
                return format!("key-{k:08}").into_bytes();
            }
        }
    }
}

fn put(key: Vec<u8>) -> WriteRequest {
    WriteRequest::Put(PutRequest {
        key,
        value: vec![7; VALUE_BYTES],
        prev_kv: false,
        ignore_value: false,
    })
}

struct Applier {
    store: LayeredStore,
    keys: Keys,
    index: u64,
}

impl Applier {
    /// The next `puts` requests of the key sequence.
    fn requests(&mut self, puts: u64) -> Vec<WriteRequest> {
        (0..puts).map(|_| put(self.keys.next())).collect()
    }

    /// Applies `requests` as one batch, never flushing.
    fn apply(&mut self, requests: &[WriteRequest]) {
        let mut batch = self.store.batch(self.index + 1);
        for request in requests {
            let response = batch.apply(request).expect("the store works");
            black_box(response.expect("a put applies"));
        }
        self.index += requests.len() as u64;
        batch.finish(LogId::new(1, self.index));
    }

    /// Applies one batch of `puts`; returns the time it took, and flushes
    /// after it (untimed) when a flush is due.
    fn batch(&mut self, puts: u64) -> Duration {
        let requests = self.requests(puts);
        let start = Instant::now();
        self.apply(&requests);
        let took = start.elapsed();
        if self.index % FLUSH_EVERY < puts {
            self.store.flush().expect("the flush");
        }
        took
    }
}

fn kv_apply(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = RedbStateMachineStore::open(dir.path()).expect("the store opens");
    let mut applier = Applier {
        store: LayeredStore::open(Arc::new(db)).expect("the key space opens"),
        keys: Keys(1),
        index: 0,
    };
    // Every key written once and flushed: later puts find their key.
    for _ in 0..KEYS / 100 {
        applier.batch(100);
    }
    applier.store.flush().expect("the flush");
    let mut group = c.benchmark_group("kv_apply");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function(format!("puts/{BATCH}"), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| applier.batch(BATCH)).sum());
    });
    group.finish();

    let mut group = c.benchmark_group("kv_flush");
    group.sample_size(10);
    for puts in [FLUSH_EVERY / 4, FLUSH_EVERY, 4 * FLUSH_EVERY] {
        group.throughput(Throughput::Elements(puts));
        group.bench_function(format!("puts/{puts}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        for _ in 0..puts / BATCH {
                            let requests = applier.requests(BATCH);
                            applier.apply(&requests);
                        }
                        let start = Instant::now();
                        applier.store.flush().expect("the flush");
                        start.elapsed()
                    })
                    .sum()
            });
        });
    }
    group.finish();
}

fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = kv;
    config = criterion();
    targets = kv_apply
}
criterion_main!(kv);
