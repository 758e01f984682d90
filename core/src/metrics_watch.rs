//! `MetricsWatch`: how callers follow a node's metrics, without the
//! channel type behind it in the public API (so it can change).

use std::ops::Deref;

use tokio::sync::watch;

use crate::metrics::Metrics;

/// A watch of one node's [`Metrics`], from [`crate::Raft::metrics`]. Cheap
/// to clone; each clone tracks on its own which version it has seen.
///
/// The node publishes after every driver turn that changed something, so a
/// watcher sees the latest state, not every intermediate one. Exporting
/// metrics is a task that follows the watch:
///
/// ```no_run
/// # async fn export(raft: rafter::Raft<rafter::testing::KvStateMachine>) {
/// let mut watch = raft.metrics();
/// tokio::spawn(async move {
///     loop {
///         {
///             let m = watch.borrow_and_update();
///             // e.g. set gauges: m.term, m.commit_index, m.applied_index,
///             // and per peer m.peers[&id].match_index, last_ack, ...
///             println!("term {} commit {}", m.term, m.commit_index);
///             if m.stopped {
///                 break;
///             }
///         } // the borrow ends before the wait
///         if watch.changed().await.is_err() {
///             break; // the node is gone
///         }
///     }
/// });
/// # }
/// ```
///
/// `rafter-kv` does this for Prometheus (`kv-example/src/metrics.rs`).
#[derive(Debug, Clone)]
pub struct MetricsWatch {
    inner: watch::Receiver<Metrics>,
}

/// A borrowed view of the latest metrics. It holds a read lock that the
/// node's publishing waits for: keep it short, and never across an
/// `.await` (copy out what you need, or clone).
#[derive(Debug)]
pub struct MetricsRef<'a> {
    inner: watch::Ref<'a, Metrics>,
}

impl Deref for MetricsRef<'_> {
    type Target = Metrics;

    fn deref(&self) -> &Metrics {
        &self.inner
    }
}

/// The node's tasks are gone (it was shut down or stopped and every task
/// ended): no more metrics will come. The last ones remain readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the node publishes no more metrics")]
pub struct MetricsClosed;

impl MetricsWatch {
    pub(crate) fn new(inner: watch::Receiver<Metrics>) -> Self {
        Self { inner }
    }

    /// The latest metrics, without marking them seen.
    pub fn borrow(&self) -> MetricsRef<'_> {
        MetricsRef {
            inner: self.inner.borrow(),
        }
    }

    /// The latest metrics, marked seen: [`MetricsWatch::changed`] then
    /// waits for a newer version.
    pub fn borrow_and_update(&mut self) -> MetricsRef<'_> {
        MetricsRef {
            inner: self.inner.borrow_and_update(),
        }
    }

    /// Waits until a version newer than the last one seen is published
    /// (at once if there is one), and marks it seen.
    pub async fn changed(&mut self) -> Result<(), MetricsClosed> {
        self.inner.changed().await.map_err(|_| MetricsClosed)
    }

    /// Waits until `condition` holds for the latest metrics (checked at
    /// once, then on every new version), and returns them, marked seen.
    pub async fn wait_for(
        &mut self,
        condition: impl FnMut(&Metrics) -> bool,
    ) -> Result<MetricsRef<'_>, MetricsClosed> {
        let inner = self
            .inner
            .wait_for(condition)
            .await
            .map_err(|_| MetricsClosed)?;
        Ok(MetricsRef { inner })
    }

    /// Whether a version newer than the last one seen is published.
    pub fn has_changed(&self) -> Result<bool, MetricsClosed> {
        self.inner.has_changed().map_err(|_| MetricsClosed)
    }
}
