//! `/metrics`: the service's Prometheus metrics, and what feeds them (a
//! watcher of the node's `rafter::Metrics`, a timing wrapper of the log
//! store, the state machine's counters, the HTTP layer).

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::MatchedPath;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use rafter::{
    Entry, InitialState, LogId, Metrics, RaftStorage, Role, SnapshotMeta, StorageError, WriteBatch,
};

use crate::state_machine::ApplyCounters;

/// A request's route pattern (`/v3/kv/put`, `/kv/{*key}`, …) as a label,
/// or `unmatched`: shares the router's string, so labelling a request
/// allocates nothing.
#[derive(Debug, Clone)]
pub enum RouteName {
    /// A route of the router.
    Matched(MatchedPath),
    /// No route matched.
    Unmatched,
}

impl RouteName {
    /// The route of a request with this matched path, if any.
    pub fn of(path: Option<&MatchedPath>) -> Self {
        path.map_or(Self::Unmatched, |p| Self::Matched(p.clone()))
    }

    /// The pattern.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Matched(path) => path.as_str(),
            Self::Unmatched => "unmatched",
        }
    }
}

impl PartialEq for RouteName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RouteName {}

impl std::hash::Hash for RouteName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for RouteName {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

/// Labels of an HTTP request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route pattern.
    pub route: RouteName,
    /// The status code.
    pub code: u16,
}

/// Labels of a timed HTTP request: its route only (the status is in
/// `http_requests`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route pattern.
    pub route: RouteName,
}

/// The buckets of every duration histogram: 50 µs to about 1.6 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 16))
}

/// Labels naming a peer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The peer's node id.
    pub peer: u64,
}

/// Labels naming why a proposal failed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The reason.
    pub reason: String,
}

/// Every metric the service exports.
#[derive(Debug)]
pub struct ServiceMetrics {
    registry: Registry,
    /// HTTP requests answered, by route and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Proposals made by this node.
    pub proposals: Counter,
    /// Proposals that failed, by reason.
    pub proposals_failed: Family<ReasonLabels, Counter>,
    /// Requests relayed to the leader (reads, membership) and writes
    /// forwarded to it.
    pub forwarded: Counter,
    /// Batches of forwarded writes.
    pub forwarded_batches: Counter,
    /// Linearizable reads served through ReadIndex.
    pub read_index: Counter,
    /// Read indexes this node answered from its leader lease
    /// (`--lease-reads`), without a heartbeat round.
    pub lease_reads: Counter,
    /// Durations of the log store's synced writes (one fsync each).
    pub fsync_seconds: Histogram,
    /// Time from a request entering the router to its response leaving
    /// it, by route (body read, JSON, routing, the write or read, the
    /// response's encoding; not hyper's parse before it).
    pub request_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Time from a `propose` (or a forwarded batch's `propose_many`) on
    /// this node to its answer: the leader's log write, replication,
    /// commit and apply.
    pub propose_seconds: Histogram,
    /// On the leader: time from handing the network an append to the
    /// follower's acknowledgement of it (the round trip plus the
    /// follower's write), see `append_timing.rs`.
    pub append_round_trip_seconds: Histogram,
    commit_index: Gauge,
    applied_index: Gauge,
    term: Gauge,
    is_leader: Gauge,
    elections: Counter,
    leader_changes: Counter,
    replication_lag: Family<PeerLabels, Gauge>,
    entries_applied: Counter,
    apply_batches: Counter,
    snapshots_sent: Counter,
    snapshots_installed: Counter,
    snapshots_built: Counter,
    session_duplicates: Counter,
    apply_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// The state machine's counters, copied into the counters above on
    /// each scrape (what was copied last time in `copied`).
    apply: Arc<ApplyCounters>,
    copied: Mutex<[u64; 7]>,
}

impl ServiceMetrics {
    /// Registers every metric.
    pub fn new(apply: Arc<ApplyCounters>) -> Self {
        let mut registry = Registry::with_prefix("rafter_kv");
        let metrics = Self {
            http_requests: Family::default(),
            proposals: Counter::default(),
            proposals_failed: Family::default(),
            forwarded: Counter::default(),
            forwarded_batches: Counter::default(),
            read_index: Counter::default(),
            lease_reads: Counter::default(),
            fsync_seconds: duration_histogram(),
            request_seconds: Family::new_with_constructor(duration_histogram),
            propose_seconds: duration_histogram(),
            append_round_trip_seconds: duration_histogram(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            term: Gauge::default(),
            is_leader: Gauge::default(),
            elections: Counter::default(),
            leader_changes: Counter::default(),
            replication_lag: Family::default(),
            entries_applied: Counter::default(),
            apply_batches: Counter::default(),
            snapshots_sent: Counter::default(),
            snapshots_installed: Counter::default(),
            snapshots_built: Counter::default(),
            session_duplicates: Counter::default(),
            apply_seconds: Counter::default(),
            apply,
            copied: Mutex::new([0; 7]),
            registry: Registry::default(),
        };
        let m = &metrics;
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            m.http_requests.clone(),
        );
        registry.register(
            "proposals",
            "Writes proposed to Raft by this node",
            m.proposals.clone(),
        );
        registry.register(
            "proposals_failed",
            "Proposals that failed, by reason",
            m.proposals_failed.clone(),
        );
        registry.register(
            "forwarded",
            "Requests and writes forwarded to the leader",
            m.forwarded.clone(),
        );
        registry.register(
            "forwarded_batches",
            "Batches of writes forwarded to the leader (messages inside Raft)",
            m.forwarded_batches.clone(),
        );
        registry.register(
            "read_index",
            "Linearizable reads confirmed through ReadIndex",
            m.read_index.clone(),
        );
        registry.register(
            "lease_reads",
            "Read indexes answered from the leader's lease, without a heartbeat round",
            m.lease_reads.clone(),
        );
        registry.register(
            "fsync_seconds",
            "Duration of the log's synced writes",
            m.fsync_seconds.clone(),
        );
        registry.register(
            "request_seconds",
            "Time from a request entering the router to its response, by route",
            m.request_seconds.clone(),
        );
        registry.register(
            "propose_seconds",
            "Time from a proposal on this node to its answer (applied)",
            m.propose_seconds.clone(),
        );
        registry.register(
            "append_round_trip_seconds",
            "On the leader: time from sending an append to its durable acknowledgement",
            m.append_round_trip_seconds.clone(),
        );
        registry.register(
            "apply_seconds",
            "Time spent applying batches (store transactions)",
            m.apply_seconds.clone(),
        );
        registry.register(
            "commit_index",
            "Highest log index known committed",
            m.commit_index.clone(),
        );
        registry.register(
            "applied_index",
            "Highest log index applied",
            m.applied_index.clone(),
        );
        registry.register("term", "Current Raft term", m.term.clone());
        registry.register("is_leader", "1 on the leader", m.is_leader.clone());
        registry.register(
            "elections",
            "Terms started (elections) seen by this node",
            m.elections.clone(),
        );
        registry.register(
            "leader_changes",
            "Changes of leader seen by this node",
            m.leader_changes.clone(),
        );
        registry.register(
            "replication_lag_entries",
            "On the leader: entries a peer lacks",
            m.replication_lag.clone(),
        );
        registry.register(
            "entries_applied",
            "Log entries applied",
            m.entries_applied.clone(),
        );
        registry.register(
            "apply_batches",
            "Apply batches (one store transaction each)",
            m.apply_batches.clone(),
        );
        registry.register(
            "snapshots_sent",
            "Snapshot transfers started to followers",
            m.snapshots_sent.clone(),
        );
        registry.register(
            "snapshots_installed",
            "Snapshots received and installed",
            m.snapshots_installed.clone(),
        );
        registry.register(
            "snapshots_built",
            "Snapshots built",
            m.snapshots_built.clone(),
        );
        registry.register(
            "session_duplicates",
            "Retried writes answered from their session",
            m.session_duplicates.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        self.copy_apply_counters();
        let mut text = String::new();
        if let Err(error) = encode(&mut text, &self.registry) {
            tracing::warn!(%error, "cannot encode metrics");
        }
        text
    }

    fn copy_apply_counters(&self) {
        let now = [
            self.apply.entries_applied.load(Ordering::Relaxed),
            self.apply.batches_applied.load(Ordering::Relaxed),
            self.apply.snapshots_sent.load(Ordering::Relaxed),
            self.apply.snapshots_installed.load(Ordering::Relaxed),
            self.apply.snapshots_built.load(Ordering::Relaxed),
            self.apply.session_duplicates.load(Ordering::Relaxed),
            self.apply.apply_nanos.load(Ordering::Relaxed),
        ];
        let counters = [
            &self.entries_applied,
            &self.apply_batches,
            &self.snapshots_sent,
            &self.snapshots_installed,
            &self.snapshots_built,
            &self.session_duplicates,
        ];
        let mut copied = self.copied.lock().unwrap_or_else(|p| p.into_inner());
        for ((counter, now), copied) in counters.iter().zip(now).zip(copied.iter_mut()) {
            counter.inc_by(now.saturating_sub(*copied));
            *copied = now.max(*copied);
        }
        let nanos = &mut copied[counters.len()];
        let now_nanos = now[counters.len()];
        self.apply_seconds
            .inc_by(now_nanos.saturating_sub(*nanos) as f64 / 1e9);
        *nanos = now_nanos.max(*nanos);
    }

    /// Follows the node's metrics until it stops: gauges, elections, leader
    /// changes, replication lag, and one log line per membership change.
    pub async fn watch(self: Arc<Self>, mut node: rafter::MetricsWatch) {
        let mut last: Option<Metrics> = None;
        loop {
            let now = node.borrow_and_update().clone();
            self.observe(last.as_ref(), &now);
            if now.stopped {
                break;
            }
            last = Some(now);
            if node.changed().await.is_err() {
                break;
            }
        }
    }

    fn observe(&self, last: Option<&Metrics>, now: &Metrics) {
        self.commit_index.set(now.commit_index as i64);
        self.applied_index.set(now.applied_index as i64);
        self.term.set(now.term as i64);
        self.is_leader.set(i64::from(now.role == Role::Leader));
        self.replication_lag.clear();
        if now.role == Role::Leader {
            for (peer, matched) in &now.replication {
                self.replication_lag
                    .get_or_create(&PeerLabels { peer: *peer })
                    .set(now.last_log_index.saturating_sub(*matched) as i64);
            }
        }
        let forwarded_before = last.map_or(0, |l| l.forwarded_batches);
        self.forwarded_batches
            .inc_by(now.forwarded_batches.saturating_sub(forwarded_before));
        let lease_before = last.map_or(0, |l| l.lease_reads_served);
        self.lease_reads
            .inc_by(now.lease_reads_served.saturating_sub(lease_before));
        let Some(last) = last else { return };
        if now.term > last.term {
            self.elections.inc_by(now.term - last.term);
        }
        if now.leader.is_some() && now.leader != last.leader {
            self.leader_changes.inc();
            tracing::info!(id = now.id, leader = ?now.leader, term = now.term, "leader changed");
        }
        if now.membership != last.membership {
            tracing::info!(
                id = now.id,
                voters = ?now.membership.voters,
                learners = ?now.membership.learners,
                joint = now.membership.is_joint(),
                "membership changed"
            );
        }
        if now.snapshot_index != last.snapshot_index {
            tracing::info!(
                index = now.snapshot_index,
                "snapshot taken; log purged behind it"
            );
        }
        if let (Some(fatal), None) = (&now.fatal, &last.fatal) {
            tracing::error!(id = now.id, %fatal, "the node stopped on an error");
        }
    }
}

/// A `RaftStorage` that times each synced write into `fsync_seconds`.
#[derive(Debug)]
pub struct TimedStorage<S> {
    inner: S,
    metrics: Arc<ServiceMetrics>,
}

impl<S> TimedStorage<S> {
    /// Wraps a store.
    pub fn new(inner: S, metrics: Arc<ServiceMetrics>) -> Self {
        Self { inner, metrics }
    }
}

impl<S: RaftStorage> RaftStorage for TimedStorage<S> {
    async fn initial_state(&mut self) -> Result<InitialState, StorageError> {
        self.inner.initial_state().await
    }

    async fn write(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        let synced = batch.must_sync;
        let start = Instant::now();
        self.inner.write(batch).await?;
        if synced {
            self.metrics
                .fsync_seconds
                .observe(start.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn entries(
        &mut self,
        range: Range<u64>,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.inner.entries(range, bytes_max).await
    }

    async fn purge(&mut self, up_to: LogId) -> Result<(), StorageError> {
        self.inner.purge(up_to).await
    }

    async fn save_snapshot_meta(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        self.inner.save_snapshot_meta(meta).await
    }

    async fn save_installing_snapshot_meta(
        &mut self,
        meta: Option<SnapshotMeta>,
    ) -> Result<(), StorageError> {
        self.inner.save_installing_snapshot_meta(meta).await
    }
}
