//! Append throughput of [`RedbStorage`] next to raw redb doing the same
//! transactions, for the bench crate and `examples/append_bench.rs`.
//!
//! Each case appends batches of `batch_entries` entries of `payload_bytes`
//! bytes, one `write` with `must_sync` (one fsync) per batch, for about
//! `case_duration`. The baseline does the same transactions on a bare redb
//! table (`u64` → payload bytes, `Durability::Immediate`): no codec, no
//! checksum, no validation, no hop to the blocking pool. The difference is
//! what `RedbStorage` costs over redb itself.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rafter::{Entry, EntryPayload, RaftStorage, StorageError, WriteBatch};
use redb::{Database, Durability, TableDefinition};

use crate::storage::RedbStorage;

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendBenchConfig {
    /// The batch sizes, in entries per write (one commit each).
    pub batch_entries: Vec<usize>,
    /// Payload bytes of each entry.
    pub payload_bytes: usize,
    /// How long each case runs (it stops at the first commit past this).
    pub case_duration: Duration,
    /// The most commits of one case, whatever the duration.
    pub case_commits_max: u64,
}

impl Default for AppendBenchConfig {
    fn default() -> Self {
        Self {
            batch_entries: vec![1, 10, 100, 1000],
            payload_bytes: 256,
            case_duration: Duration::from_secs(3),
            case_commits_max: 100_000,
        }
    }
}

/// One measured case.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendBenchResult {
    /// `"rafter-redb"` or `"raw redb"`.
    pub store: &'static str,
    /// Entries per commit.
    pub batch_entries: usize,
    /// Commits made.
    pub commits: u64,
    /// Time taken by all of them.
    pub elapsed: Duration,
}

impl AppendBenchResult {
    /// Durable commits per second.
    pub fn commits_per_sec(&self) -> f64 {
        self.commits as f64 / self.elapsed.as_secs_f64()
    }

    /// Durable entries per second.
    pub fn entries_per_sec(&self) -> f64 {
        self.commits_per_sec() * self.batch_entries as f64
    }
}

/// Runs every case of `config` in fresh subdirectories of `dir`, the raw
/// baseline first, and returns two results per batch size. Needs a tokio
/// runtime (`RedbStorage` uses its blocking pool, as in a node); the raw
/// baseline blocks the calling task.
pub async fn run_append_bench(
    dir: &Path,
    config: &AppendBenchConfig,
) -> Result<Vec<AppendBenchResult>, StorageError> {
    let payload = Bytes::from(vec![0xAB; config.payload_bytes]);
    let mut results = Vec::new();
    for &batch_entries in &config.batch_entries {
        assert!(batch_entries > 0, "a batch holds at least one entry");
        let raw_dir = dir.join(format!("raw-{batch_entries}"));
        results.push(raw_case(&raw_dir, batch_entries, &payload, config)?);
        let store_dir = dir.join(format!("rafter-redb-{batch_entries}"));
        results.push(store_case(&store_dir, batch_entries, &payload, config).await?);
    }
    Ok(results)
}

/// Formats results as a table with the overhead of each store case over the
/// raw case of the same batch size.
pub fn format_results(results: &[AppendBenchResult]) -> String {
    let mut out = String::from(
        "store        batch  commits   elapsed_s  commits/s   entries/s  overhead_vs_raw\n",
    );
    for result in results {
        let raw = results
            .iter()
            .find(|r| r.store == "raw redb" && r.batch_entries == result.batch_entries);
        let overhead = match raw {
            Some(raw) if result.store != "raw redb" => format!(
                "{:+.1}%",
                (raw.entries_per_sec() / result.entries_per_sec() - 1.0) * 100.0
            ),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{:<12} {:>5} {:>8} {:>11.2} {:>10.0} {:>11.0}  {}\n",
            result.store,
            result.batch_entries,
            result.commits,
            result.elapsed.as_secs_f64(),
            result.commits_per_sec(),
            result.entries_per_sec(),
            overhead
        ));
    }
    out
}

async fn store_case(
    dir: &Path,
    batch_entries: usize,
    payload: &Bytes,
    config: &AppendBenchConfig,
) -> Result<AppendBenchResult, StorageError> {
    let mut store = RedbStorage::open(dir)?;
    let mut next_index = 1;
    let mut commits = 0;
    let start = Instant::now();
    while start.elapsed() < config.case_duration && commits < config.case_commits_max {
        let entries = (0..batch_entries as u64)
            .map(|i| Entry {
                term: 1,
                index: next_index + i,
                payload: EntryPayload::Command(payload.clone()),
            })
            .collect();
        store
            .write(WriteBatch {
                entries,
                must_sync: true,
                ..WriteBatch::default()
            })
            .await?;
        next_index += batch_entries as u64;
        commits += 1;
    }
    Ok(AppendBenchResult {
        store: "rafter-redb",
        batch_entries,
        commits,
        elapsed: start.elapsed(),
    })
}

fn raw_case(
    dir: &Path,
    batch_entries: usize,
    payload: &Bytes,
    config: &AppendBenchConfig,
) -> Result<AppendBenchResult, StorageError> {
    const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
    let raw = |operation: &'static str| {
        move |e: redb::Error| StorageError::Io {
            operation,
            message: e.to_string(),
        }
    };
    std::fs::create_dir_all(dir).map_err(|e| StorageError::Io {
        operation: "create bench directory",
        message: e.to_string(),
    })?;
    let db = Database::create(dir.join("raw.redb")).map_err(|e| raw("open")(e.into()))?;
    let mut next_index = 1u64;
    let mut commits = 0;
    let start = Instant::now();
    while start.elapsed() < config.case_duration && commits < config.case_commits_max {
        let mut txn = db.begin_write().map_err(|e| raw("begin")(e.into()))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| raw("durability")(e.into()))?;
        {
            let mut table = txn.open_table(TABLE).map_err(|e| raw("table")(e.into()))?;
            for i in 0..batch_entries as u64 {
                table
                    .insert(next_index + i, payload.as_ref())
                    .map_err(|e| raw("insert")(e.into()))?;
            }
        }
        txn.commit().map_err(|e| raw("commit")(e.into()))?;
        next_index += batch_entries as u64;
        commits += 1;
    }
    Ok(AppendBenchResult {
        store: "raw redb",
        batch_entries,
        commits,
        elapsed: start.elapsed(),
    })
}
