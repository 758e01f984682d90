//! `storage`: append throughput of `rafter-redb` next to raw redb doing the
//! same transactions (`rafter_redb::bench`), at several batch sizes.
//!
//! One report per (store, batch) case. `ops` counts entries, so `ops/s` is
//! entries per second; a commit is one `write` (one fsync unless
//! `--nosync`). The bench times whole rounds, not single commits, so the
//! latency columns stay empty and `commit_us_mean` gives the mean instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rafter_redb::bench::{run_append_bench, AppendBenchConfig, AppendBenchResult};

use crate::progress;
use crate::report::{latency_histogram, Report};

/// Largest batch accepted: 1000 entries of 256 bytes is the issue's
/// largest case; far beyond that one commit outgrows redb's cache.
const BATCH_ENTRIES_MAX: usize = 100_000;
/// Largest entry payload accepted (the core's default request limit is far
/// below this).
const ENTRY_BYTES_MAX: usize = 16 << 20;

/// What `storage` runs.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageArgs {
    /// Put the databases in a fresh directory under this one (default: the
    /// system temp dir). Choose the disk you care about: the figures are
    /// fsync-bound. The fresh directory is removed afterwards.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seconds each store runs per batch size (split into alternating
    /// rounds of the two stores).
    #[arg(long, default_value_t = 3.0, value_parser = parse_seconds)]
    pub seconds: f64,
    /// Commit without fsync on both sides: the CPU cost of the store over
    /// raw redb, without the disk's noise.
    #[arg(long)]
    pub nosync: bool,
    /// Entries per commit, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000", value_parser = parse_batch)]
    pub batches: Vec<usize>,
    /// Payload bytes of each entry.
    #[arg(long, default_value_t = 256, value_parser = parse_entry_bytes)]
    pub entry_bytes: usize,
    /// Unmeasured warm-up, in seconds (both stores, the first batch size).
    #[arg(long, default_value_t = 1.0, value_parser = parse_warmup)]
    pub warmup: f64,
    /// Most commits of one case, whatever `--seconds` says.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub commits_max: u64,
}

/// Parses a duration in seconds: finite, above zero, at most one hour.
pub fn parse_seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= 3600.0 => Ok(seconds),
        _ => Err(format!("expected seconds in (0, 3600], not {value:?}")),
    }
}

/// Parses a warm-up in seconds: like [`parse_seconds`], but zero is allowed.
pub fn parse_warmup(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(seconds) if (0.0..=3600.0).contains(&seconds) => Ok(seconds),
        _ => Err(format!("expected seconds in [0, 3600], not {value:?}")),
    }
}

fn parse_batch(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=BATCH_ENTRIES_MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "a batch is 1..={BATCH_ENTRIES_MAX} entries, not {value:?}"
        )),
    }
}

fn parse_entry_bytes(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n <= ENTRY_BYTES_MAX => Ok(n),
        _ => Err(format!(
            "expected 0..={ENTRY_BYTES_MAX} bytes, not {value:?}"
        )),
    }
}

/// Runs `storage` and returns one report per (store, batch size).
pub async fn run(args: &StorageArgs) -> Result<Vec<Report>, String> {
    let parent = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("rafter-bench-storage-")
        .tempdir_in(&parent)
        .map_err(|error| format!("cannot create a directory in {}: {error}", parent.display()))?;
    let base = AppendBenchConfig {
        payload_bytes: args.entry_bytes,
        case_commits_max: args.commits_max,
        durable: !args.nosync,
        ..AppendBenchConfig::default()
    };

    if args.warmup > 0.0 {
        let bar = progress::spinner("storage warm-up");
        let warmup = AppendBenchConfig {
            batch_entries: vec![args.batches[0]],
            case_duration: Duration::from_secs_f64(args.warmup),
            rounds: 1,
            ..base.clone()
        };
        run_append_bench(&dir.path().join("warmup"), &warmup)
            .await
            .map_err(|error| format!("storage warm-up failed: {error}"))?;
        bar.finish_and_clear();
    }

    let mut results = Vec::new();
    let bar = progress::cases("storage", args.batches.len() as u64);
    for &batch in &args.batches {
        bar.set_message(format!("batch={batch}"));
        let config = AppendBenchConfig {
            batch_entries: vec![batch],
            case_duration: Duration::from_secs_f64(args.seconds),
            ..base.clone()
        };
        let case_dir = dir.path().join(format!("batch-{batch}"));
        let case = run_append_bench(&case_dir, &config)
            .await
            .map_err(|error| format!("storage case batch={batch} failed: {error}"))?;
        results.extend(case);
        // Free the disk as we go: 1000-entry cases write gigabytes.
        remove_dir(&case_dir);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(reports(&results, args))
}

fn remove_dir(dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(dir) {
        tracing::warn!("cannot remove {}: {error}", dir.display());
    }
}

/// One report per result, with the store's overhead over raw redb at the
/// same batch size.
fn reports(results: &[AppendBenchResult], args: &StorageArgs) -> Vec<Report> {
    results
        .iter()
        .map(|result| {
            let mut extra = vec![
                ("batch", result.batch_entries as f64),
                ("entries_per_sec", result.entries_per_sec()),
                ("commits_per_sec", result.commits_per_sec()),
                ("commit_us_mean", commit_us_mean(result)),
                (
                    "mb_per_sec",
                    result.entries_per_sec() * args.entry_bytes as f64 / 1e6,
                ),
            ];
            let raw = results
                .iter()
                .find(|r| r.store == "raw redb" && r.batch_entries == result.batch_entries);
            if let Some(raw) = raw.filter(|_| result.store != "raw redb") {
                extra.push(("overhead_pct", overhead_pct(raw, result)));
            }
            extra.push(("fsync", if args.nosync { 0.0 } else { 1.0 }));
            Report {
                mode: "storage",
                case: Some(format!("{} batch={}", result.store, result.batch_entries)),
                nodes: 0,
                clients: 1,
                ops: result.commits * result.batch_entries as u64,
                elapsed: result.elapsed,
                latency: latency_histogram(),
                errors: BTreeMap::new(),
                extra,
            }
        })
        .collect()
}

fn commit_us_mean(result: &AppendBenchResult) -> f64 {
    if result.commits == 0 {
        return 0.0;
    }
    result.elapsed.as_secs_f64() * 1e6 / result.commits as f64
}

/// How much longer the store takes per entry than raw redb, in percent
/// (the measure of `rafter_redb::bench::format_results`).
fn overhead_pct(raw: &AppendBenchResult, store: &AppendBenchResult) -> f64 {
    let store_rate = store.entries_per_sec();
    if store_rate > 0.0 {
        (raw.entries_per_sec() / store_rate - 1.0) * 100.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> StorageArgs {
        StorageArgs {
            data_dir: None,
            seconds: 0.05,
            nosync: true,
            batches: vec![1, 10],
            entry_bytes: 32,
            warmup: 0.0,
            commits_max: 20,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_report_per_store_and_batch_with_overhead_on_the_store() {
        let reports = run(&args()).await.unwrap();
        let cases: Vec<_> = reports.iter().map(|r| r.case.clone().unwrap()).collect();
        assert_eq!(
            cases,
            [
                "raw redb batch=1",
                "rafter-redb batch=1",
                "raw redb batch=10",
                "rafter-redb batch=10"
            ]
        );
        for report in &reports {
            let json = report.to_json();
            assert!(json["entries_per_sec"].as_f64().unwrap() > 0.0);
            assert_eq!(
                json["overhead_pct"].is_null(),
                report.case.as_deref().unwrap().starts_with("raw"),
                "{json}"
            );
            assert_eq!(report.ops % json["batch"].as_f64().unwrap() as u64, 0);
        }
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse_batch("0").is_err());
        assert!(parse_batch("x").is_err());
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("nan").is_err());
        assert!(parse_warmup("-1").is_err());
        assert_eq!(parse_batch(" 10"), Ok(10));
    }
}
