//! The task that owns the node's `RaftStorage`: it runs the driver's writes
//! and loads one at a time, in the order asked, and reports each back.
//!
//! Running storage on its own task is what lets the driver keep stepping the
//! engine (and the leader keep sending appends) while an fsync is in flight.

use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::{mpsc, watch};

use crate::metrics::{self, Metrics};

use crate::storage::{RaftStorage, StorageError, WriteBatch};
use crate::types::{Entry, LogId, SnapshotMeta};

/// Work for the storage task.
#[derive(Debug)]
pub(crate) enum StorageJob {
    /// Make this batch durable; answer `Written(id)`.
    Write { id: u64, batch: WriteBatch },
    /// Read entries of `range` up to `bytes_max`; answer `Loaded`.
    Load { range: Range<u64>, bytes_max: u64 },
    /// Save snapshot metadata: as the latest snapshot's, or when `install`
    /// as the installing snapshot's, answering `SnapshotMetaSaved` (a
    /// received snapshot waits for it before it is installed).
    SaveSnapshotMeta { meta: SnapshotMeta, install: bool },
    /// Remove the log up to this entry; no answer.
    Purge(LogId),
}

/// What the storage task reports.
#[derive(Debug)]
pub(crate) enum StorageDone {
    Written(u64),
    Loaded(Vec<Entry>),
    SnapshotMetaSaved(SnapshotMeta),
    /// Nothing to report.
    Nothing,
    /// The storage failed; the node must stop (fail-stop, no retry).
    Failed(StorageError),
    /// The task panicked (the reason is in the metrics already); the node
    /// must stop.
    Panicked(crate::error::Fatal),
}

/// Runs jobs until the job channel closes, a job fails or the storage
/// panics. A panic is reported like a failure, after the metrics say why:
/// the node stops rather than run on without its storage.
pub(crate) async fn run<S: RaftStorage>(
    storage: S,
    jobs: mpsc::UnboundedReceiver<StorageJob>,
    done: mpsc::UnboundedSender<StorageDone>,
    metrics: Arc<watch::Sender<Metrics>>,
) {
    let report = done.clone();
    let result = AssertUnwindSafe(run_jobs(storage, jobs, done))
        .catch_unwind()
        .await;
    if let Err(payload) = result {
        let fatal = metrics::panicked("storage", payload);
        tracing::error!(error = %fatal, "storage task panicked; stopping the node");
        metrics::publish_fatal(&metrics, fatal.clone());
        let _ = report.send(StorageDone::Panicked(fatal));
    }
}

async fn run_jobs<S: RaftStorage>(
    mut storage: S,
    mut jobs: mpsc::UnboundedReceiver<StorageJob>,
    done: mpsc::UnboundedSender<StorageDone>,
) {
    while let Some(job) = jobs.recv().await {
        let result = match job {
            StorageJob::Write { id, batch } => storage
                .write(batch)
                .await
                .map(|()| StorageDone::Written(id)),
            StorageJob::Load { range, bytes_max } => {
                let start = range.start;
                match storage.entries(range, bytes_max).await {
                    Ok(entries) => check_loaded(start, entries).map(StorageDone::Loaded),
                    Err(e) => Err(e),
                }
            }
            StorageJob::SaveSnapshotMeta {
                meta,
                install: false,
            } => storage
                .save_snapshot_meta(meta)
                .await
                .map(|()| StorageDone::Nothing),
            StorageJob::SaveSnapshotMeta {
                meta,
                install: true,
            } => storage
                .save_installing_snapshot_meta(Some(meta.clone()))
                .await
                .map(|()| StorageDone::SnapshotMetaSaved(meta)),
            StorageJob::Purge(up_to) => storage.purge(up_to).await.map(|()| StorageDone::Nothing),
        };
        let failed = result.is_err();
        let report = result.unwrap_or_else(StorageDone::Failed);
        if done.send(report).is_err() || failed {
            return;
        }
    }
}

/// The pair of the core's own append check: entries coming back from
/// storage must be the consecutive run that was asked for.
fn check_loaded(start: u64, entries: Vec<Entry>) -> Result<Vec<Entry>, StorageError> {
    for (i, entry) in entries.iter().enumerate() {
        if entry.index != start + i as u64 {
            return Err(StorageError::Corrupt {
                location: format!("log entry {}", start + i as u64),
                message: format!("storage returned index {} instead", entry.index),
            });
        }
    }
    if entries.is_empty() {
        return Err(StorageError::Unavailable { index: start });
    }
    Ok(entries)
}
