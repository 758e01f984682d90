//! Append throughput of `RedbStorage` against raw redb.
//!
//! `cargo run --release -p rafter-redb --example append_bench -- [DIR] [SECONDS_PER_CASE] [nosync]`
//!
//! `nosync` commits without fsync on both sides, to see the store's CPU
//! overhead over raw redb without the disk's noise.
//!
//! DIR defaults to a fresh directory under the system temp dir (put it on
//! the disk you care about: the numbers are fsync-bound).

use std::time::Duration;

use rafter_redb::bench::{format_results, run_append_bench, AppendBenchConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("rafter-redb-bench-{}", std::process::id()))
        });
    let seconds: f64 = args
        .next()
        .map_or(3.0, |s| s.parse().expect("SECONDS_PER_CASE is a number"));
    let durable = args.next().as_deref() != Some("nosync");
    let config = AppendBenchConfig {
        case_duration: Duration::from_secs_f64(seconds),
        durable,
        ..AppendBenchConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("a tokio runtime starts");
    // Spawned, so that the stores run on a runtime worker as a node's
    // storage task does (`block_in_place` then hands the worker's other
    // tasks to another thread, which `block_on`'s thread would not need).
    let bench_dir = dir.clone();
    let results = runtime
        .block_on(runtime.spawn(async move { run_append_bench(&bench_dir, &config).await }))
        .expect("the bench task finishes")
        .expect("the bench's stores work");
    println!("dir: {}, fsync per commit: {durable}", dir.display());
    print!("{}", format_results(&results));
    let _ = std::fs::remove_dir_all(&dir);
}
