//! When a node snapshots. A rafter-kv snapshot writes the whole store
//! (every revision compaction has not dropped), so Rafter's fixed interval
//! (`Config::snapshot_interval_entries`) would make each snapshot cost more
//! as the store grows: at 300,000 revisions, every 100,000 puts wrote an
//! 86 MB file, one build after another, and puts fell to half their rate
//! (benches/README.md, set I). The node therefore turns Rafter's interval
//! off and triggers builds itself (`Raft::trigger_snapshot`) when both:
//!
//! - at least `--snapshot-entries` entries were applied since the latest
//!   snapshot (the interval as before: a small store snapshots as often as
//!   it did), and
//! - the writes applied since the latest build started carry at least as
//!   many key and value bytes as that snapshot's file holds, if it is over
//!   [`SMALL_SNAPSHOT_BYTES`].
//!
//! So the bytes snapshots write stay within about the bytes the writes
//! carry, whatever the store's size (an LSM tree bounds its compactions the
//! same way), and the log keeps about the store's size of entries beyond
//! the interval. A build runs in the background (`snapshots.rs`); Rafter
//! learns of it, and purges the log behind it, at the next trigger, which
//! also starts the next build (as with Rafter's own interval: a trigger for
//! the finished build alone would start a new one each time).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rafter::Raft;

use crate::state_machine::{ApplyCounters, KvStateMachine};

/// How often the rule is checked (a few atomics and the metrics).
const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// A snapshot up to this size is rewritten at every interval, whatever the
/// bytes written since: it costs little, and a small store's file is mostly
/// overhead next to the few bytes its writes carry.
pub const SMALL_SNAPSHOT_BYTES: u64 = 4 << 20;

/// Whether a new build is due: `entries_since` entries and `bytes_since`
/// written bytes since the latest snapshot, whose file has
/// `snapshot_bytes` (0: there is none).
pub fn build_due(
    entries_since: u64,
    entries_min: u64,
    bytes_since: u64,
    snapshot_bytes: u64,
) -> bool {
    entries_min > 0
        && entries_since >= entries_min
        && (snapshot_bytes <= SMALL_SNAPSHOT_BYTES || bytes_since >= snapshot_bytes)
}

/// Runs the rule for `raft` until it stops.
pub fn spawn(
    raft: Raft<KvStateMachine>,
    counters: Arc<ApplyCounters>,
    entries_min: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let status = raft.status();
            if status.stopped {
                return;
            }
            let bytes_since = counters
                .applied_bytes
                .load(Ordering::Relaxed)
                .saturating_sub(counters.applied_bytes_at_build.load(Ordering::Relaxed));
            let due = build_due(
                status.applied_index.saturating_sub(status.snapshot_index),
                entries_min,
                bytes_since,
                counters.snapshot_bytes.load(Ordering::Relaxed),
            );
            if due {
                if let Err(error) = raft.trigger_snapshot().await {
                    tracing::debug!(%error, "snapshot not triggered");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{build_due, SMALL_SNAPSHOT_BYTES};

    #[test]
    fn a_build_needs_the_entries_and_as_many_bytes_as_the_last_snapshot() {
        // The first snapshot, and small ones: entries alone decide.
        assert!(build_due(100, 100, 0, 0));
        assert!(!build_due(99, 100, 1 << 30, 0));
        assert!(build_due(100, 100, 0, SMALL_SNAPSHOT_BYTES));
        // Larger ones: also the bytes written since.
        let large = SMALL_SNAPSHOT_BYTES + 1;
        assert!(!build_due(500, 100, large - 1, large));
        assert!(build_due(500, 100, large, large));
        // `--snapshot-entries 0` never builds.
        assert!(!build_due(u64::MAX, 0, u64::MAX, 0));
    }
}
