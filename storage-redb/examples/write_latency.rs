//! The latency of each synced `RedbStorage::write`, to see what a
//! checkpoint costs the write that makes it (the slow tail) next to an
//! ordinary write (the median).
//!
//! `cargo run --release -p rafter-redb --example write_latency -- [ENTRIES_PER_WRITE] [SECONDS] [DIR]`
//!
//! Writes batches of ENTRIES_PER_WRITE (default 64) entries of 256 bytes,
//! each synced, for SECONDS (default 5), with the default options, and
//! prints the median, p99 and the slowest writes. DIR defaults to a fresh
//! directory under the system temp dir.

use std::time::{Duration, Instant};

use rafter::{CommandBytes, Entry, EntryPayload, HardState, RaftStorage, WriteBatch};
use rafter_redb::RedbStorage;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let per_write: u64 = args
        .next()
        .map_or(64, |s| s.parse().expect("ENTRIES_PER_WRITE is a number"));
    let seconds: f64 = args
        .next()
        .map_or(5.0, |s| s.parse().expect("SECONDS is a number"));
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("rafter-redb-latency-{}", std::process::id()))
        });
    let mut store = RedbStorage::open(&dir).expect("open the store");
    let payload = CommandBytes::from(vec![7u8; 256]);
    let mut next = 1u64;
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs_f64(seconds) {
        let entries = (next..next + per_write)
            .map(|index| Entry {
                term: 1,
                index,
                payload: EntryPayload::Command(payload.clone()),
            })
            .collect();
        next += per_write;
        let batch = WriteBatch {
            entries,
            hard_state: Some(HardState {
                term: 1,
                vote: Some(1),
                commit: next - 1,
            }),
            must_sync: true,
            ..WriteBatch::default()
        };
        let began = Instant::now();
        store.write(batch).await.expect("write");
        times.push(began.elapsed());
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    let mut sorted = times.clone();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    let slowest: Vec<String> = sorted
        .iter()
        .rev()
        .take(5)
        .map(|t| format!("{:.2}", t.as_secs_f64() * 1e3))
        .collect();
    println!(
        "{} writes of {per_write} entries in {seconds} s: p50 {:.2} ms, p99 {:.2} ms, \
         slowest {} ms",
        times.len(),
        at(0.5),
        at(0.99),
        slowest.join(", ")
    );
}
