//! Append throughput of [`RedbStorage`] next to raw redb doing the same
//! transactions, for the bench crate and `examples/append_bench.rs`.
//!
//! Each case appends batches of `batch_entries` entries of `payload_bytes`
//! bytes, one `write` with `must_sync` (one fsync) per batch, for about
//! `case_duration`. The baseline does the same transactions on a bare redb
//! table (`u64` → payload bytes, `Durability::Immediate`): no codec, no
//! checksum, no validation, no care for the async runtime. The difference
//! is what `RedbStorage` costs over redb itself.

use std::path::Path;
use std::time::{Duration, Instant};

use rafter::CommandBytes;
use rafter::{Entry, EntryPayload, RaftStorage, StorageError, WriteBatch};
use redb::{Database, Durability, TableDefinition};

use crate::options::RedbOptions;
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
    /// How many alternating rounds of each store a case is split into. The
    /// store that goes first alternates too, so that neither always runs
    /// right after the other (the disk's writeback and the page cache are
    /// shared).
    pub rounds: u32,
    /// Whether each commit fsyncs (`must_sync`, `Durability::Immediate`).
    /// Off (`Durability::None` on both sides) measures the CPU cost of the
    /// store without the disk's noise: its overhead over raw redb shows
    /// best there.
    pub durable: bool,
}

impl Default for AppendBenchConfig {
    fn default() -> Self {
        Self {
            batch_entries: vec![1, 10, 100, 1000],
            payload_bytes: 256,
            case_duration: Duration::from_secs(3),
            case_commits_max: 100_000,
            rounds: 10,
            durable: true,
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
    /// Entries per second of each round, in the order they ran; round `i`
    /// of the two stores of a case ran back to back.
    pub round_entries_per_sec: Vec<f64>,
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

/// Runs every case of `config` in fresh subdirectories of `dir` and returns
/// two results per batch size, raw redb first. The two stores of a case run
/// in alternating rounds (`config.rounds`), so that a disk whose speed
/// drifts (other work on the machine) slows both alike. Run it on a tokio
/// multi-thread runtime, in a spawned task, to measure `RedbStorage` as a
/// node's storage task uses it (`block_in_place` on a worker); the raw
/// baseline simply blocks the calling task.
pub async fn run_append_bench(
    dir: &Path,
    config: &AppendBenchConfig,
) -> Result<Vec<AppendBenchResult>, StorageError> {
    assert!(config.rounds > 0, "at least one round");
    let payload = CommandBytes::from(vec![0xAB; config.payload_bytes]);
    let round_duration = config.case_duration / config.rounds;
    let round_commits_max = config.case_commits_max.div_ceil(u64::from(config.rounds));
    let mut results = Vec::new();
    for &batch_entries in &config.batch_entries {
        assert!(batch_entries > 0, "a batch holds at least one entry");
        let mut raw = RawCase::open(&dir.join(format!("raw-{batch_entries}")))?;
        let mut store = RedbStorage::open(dir.join(format!("rafter-redb-{batch_entries}")))?;
        let mut raw_result = AppendBenchResult {
            store: "raw redb",
            batch_entries,
            commits: 0,
            elapsed: Duration::ZERO,
            round_entries_per_sec: Vec::new(),
        };
        let mut store_result = AppendBenchResult {
            store: "rafter-redb",
            ..raw_result.clone()
        };
        let mut store_next_index = 1;
        for round in 0..config.rounds {
            for store_turn in [round % 2 == 1, round % 2 == 0] {
                let start = Instant::now();
                let mut commits = 0;
                while start.elapsed() < round_duration && commits < round_commits_max {
                    if store_turn {
                        store_commit(
                            &mut store,
                            &mut store_next_index,
                            batch_entries,
                            &payload,
                            config.durable,
                        )
                        .await?;
                    } else {
                        raw.commit(batch_entries, &payload, config.durable)?;
                    }
                    commits += 1;
                }
                let elapsed = start.elapsed();
                let result = if store_turn {
                    &mut store_result
                } else {
                    &mut raw_result
                };
                result.commits += commits;
                result.elapsed += elapsed;
                result
                    .round_entries_per_sec
                    .push((commits * batch_entries as u64) as f64 / elapsed.as_secs_f64());
            }
        }
        results.push(raw_result);
        results.push(store_result);
    }
    Ok(results)
}

/// Formats results as a table with the overhead of each store case over the
/// raw case of the same batch size: over the whole case (total entries over
/// total time), and the median over rounds of each round's overhead, which
/// a few rounds hit by other work on the machine move less.
pub fn format_results(results: &[AppendBenchResult]) -> String {
    let mut out = String::from(
        "store        batch  commits   elapsed_s  commits/s   entries/s  overhead_total  overhead_median_of_rounds\n",
    );
    for result in results {
        let raw = results
            .iter()
            .find(|r| r.store == "raw redb" && r.batch_entries == result.batch_entries);
        let (total, median) = match raw {
            Some(raw) if result.store != "raw redb" => (
                format!(
                    "{:+.1}%",
                    (raw.entries_per_sec() / result.entries_per_sec() - 1.0) * 100.0
                ),
                overhead_median(raw, result)
                    .map_or(String::new(), |m| format!("{:+.1}%", m * 100.0)),
            ),
            _ => (String::new(), String::new()),
        };
        out.push_str(&format!(
            "{:<12} {:>5} {:>8} {:>11.2} {:>10.0} {:>11.0}  {:>14}  {:>25}\n",
            result.store,
            result.batch_entries,
            result.commits,
            result.elapsed.as_secs_f64(),
            result.commits_per_sec(),
            result.entries_per_sec(),
            total,
            median
        ));
    }
    out
}

/// The median over rounds of `raw / store - 1` (entries per second), where
/// round `i` of both ran back to back; `None` without rounds to pair.
pub fn overhead_median(raw: &AppendBenchResult, store: &AppendBenchResult) -> Option<f64> {
    let mut overheads: Vec<f64> = raw
        .round_entries_per_sec
        .iter()
        .zip(&store.round_entries_per_sec)
        .filter(|(_, s)| **s > 0.0)
        .map(|(r, s)| r / s - 1.0)
        .collect();
    if overheads.is_empty() {
        return None;
    }
    overheads.sort_by(f64::total_cmp);
    let middle = overheads.len() / 2;
    Some(if overheads.len() % 2 == 1 {
        overheads[middle]
    } else {
        (overheads[middle - 1] + overheads[middle]) / 2.0
    })
}

/// One `RedbStorage` commit of `batch_entries` entries.
async fn store_commit(
    store: &mut RedbStorage,
    next_index: &mut u64,
    batch_entries: usize,
    payload: &CommandBytes,
    durable: bool,
) -> Result<(), StorageError> {
    let entries = (0..batch_entries as u64)
        .map(|i| Entry {
            term: 1,
            index: *next_index + i,
            payload: EntryPayload::Command(payload.clone()),
        })
        .collect();
    store
        .write(WriteBatch {
            entries,
            must_sync: durable,
            ..WriteBatch::default()
        })
        .await?;
    *next_index += batch_entries as u64;
    Ok(())
}

/// The baseline: a bare redb table, the same transactions.
struct RawCase {
    db: Database,
    next_index: u64,
}

const RAW_TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("log");

fn raw_error(operation: &'static str) -> impl Fn(redb::Error) -> StorageError {
    move |e| StorageError::Io {
        operation,
        message: e.to_string(),
    }
}

impl RawCase {
    fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Io {
            operation: "create bench directory",
            message: e.to_string(),
        })?;
        // The same page cache as the store, so both do the same IO.
        let db = Database::builder()
            .set_cache_size(RedbOptions::default().cache_bytes)
            .create(dir.join("raw.redb"))
            .map_err(|e| raw_error("open")(e.into()))?;
        Ok(Self { db, next_index: 1 })
    }

    fn commit(
        &mut self,
        batch_entries: usize,
        payload: &CommandBytes,
        durable: bool,
    ) -> Result<(), StorageError> {
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| raw_error("begin")(e.into()))?;
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability)
            .map_err(|e| raw_error("durability")(e.into()))?;
        {
            let mut table = txn
                .open_table(RAW_TABLE)
                .map_err(|e| raw_error("table")(e.into()))?;
            for i in 0..batch_entries as u64 {
                table
                    .insert(self.next_index + i, payload.as_ref())
                    .map_err(|e| raw_error("insert")(e.into()))?;
            }
        }
        txn.commit().map_err(|e| raw_error("commit")(e.into()))?;
        self.next_index += batch_entries as u64;
        Ok(())
    }
}
