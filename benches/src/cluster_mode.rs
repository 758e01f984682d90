//! `cluster`: the closed-loop clients of `core` against 3 nodes in one
//! process, each on `rafter-redb` (real fsync) and `rafter-quic` on
//! 127.0.0.1 with mutual TLS, and a state machine that stores nothing.
//!
//! Each `--clients` value is one case on a fresh cluster in a fresh data
//! directory. Group commit shows in the storage-side counters: every node's
//! store is wrapped in [`CountingStorage`], which counts the writes that
//! must sync (one fsync each) and the entries they carry, over the measured
//! phase only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rafter::testing::NoopStateMachine;
use rafter::{
    Entry, InitialState, LogId, Membership, NodeId, Raft, RaftStorage, Role, SnapshotMeta,
    StorageError, WriteBatch,
};
use rafter_quic::{ClusterCa, QuicHandle, QuicNetwork, TlsMode, TransportConfig};
use rafter_redb::RedbStorage;
use serde_bytes::ByteBuf;

use crate::core_mode::{bench_config, Propose};
use crate::load::{self, LoadSpec};
use crate::progress;
use crate::report::Report;
use crate::storage_mode::parse_warmup;

/// Nodes in the cluster (the issue's setup).
const NODES: u64 = 3;
/// Most clients of one case: each is a task with a proposal in flight, and
/// past this the proposal queue, not the cluster, is what is measured.
const CLIENTS_MAX: usize = 65_536;
/// How long the cluster may take to elect a leader that has applied its
/// first entry.
const LEADER_PATIENCE: Duration = Duration::from_secs(30);

/// What `cluster` runs.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Concurrent closed-loop clients; a comma-separated list runs one case
    /// per value, each on a fresh cluster.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256", value_parser = parse_clients)]
    pub clients: Vec<usize>,
    /// Commands in the measured phase of each case.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub ops: u64,
    /// Bytes of each command's value.
    #[arg(long, default_value_t = 0, value_parser = parse_value_size)]
    pub value_size: usize,
    /// Commands per propose call (1 = `propose`, more = `propose_many`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch: u64,
    /// Unmeasured warm-up of each case, in seconds.
    #[arg(long, default_value_t = 1.0, value_parser = parse_warmup)]
    pub warmup: f64,
    /// Put the nodes' data in a fresh directory under this one (default:
    /// the system temp dir); removed afterwards. The figures are
    /// fsync-bound: choose the disk you care about.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

fn parse_clients(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=CLIENTS_MAX).contains(&n) => Ok(n),
        _ => Err(format!("clients are 1..={CLIENTS_MAX}, not {value:?}")),
    }
}

fn parse_value_size(value: &str) -> Result<usize, String> {
    // The default request limit (`Config::request_bytes_max`) is 1.5 MiB;
    // a larger value fails every proposal with RequestTooLarge, which the
    // error table would show, but it is a typo more often than a test.
    let max = bench_config().request_bytes_max - 16;
    match value.parse::<usize>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("a value is 0..={max} bytes, not {value:?}")),
    }
}

/// Counts what reaches the disk: writes that must sync (each one fsync in
/// `RedbStorage`) and the entries they carry. Shared between the bench and
/// the store, which lives in the node's storage task.
#[derive(Debug, Default)]
pub struct StorageCounters {
    /// Writes with `must_sync`: one fsync each.
    synced_writes: AtomicU64,
    /// Entries carried by those writes.
    synced_entries: AtomicU64,
}

/// A reading of [`StorageCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterReading {
    /// Writes with `must_sync`.
    pub synced_writes: u64,
    /// Entries carried by those writes.
    pub synced_entries: u64,
}

impl StorageCounters {
    /// The counts so far.
    pub fn read(&self) -> CounterReading {
        CounterReading {
            synced_writes: self.synced_writes.load(Ordering::Relaxed),
            synced_entries: self.synced_entries.load(Ordering::Relaxed),
        }
    }
}

impl CounterReading {
    fn since(self, earlier: CounterReading) -> CounterReading {
        CounterReading {
            synced_writes: self.synced_writes - earlier.synced_writes,
            synced_entries: self.synced_entries - earlier.synced_entries,
        }
    }
}

/// A `RaftStorage` that passes every call to `inner` and counts the
/// successful writes that must sync.
pub struct CountingStorage<S> {
    inner: S,
    counters: Arc<StorageCounters>,
}

impl<S: RaftStorage> CountingStorage<S> {
    /// Wraps `inner`; read the counts through the returned counters.
    pub fn new(inner: S) -> (Self, Arc<StorageCounters>) {
        let counters = Arc::new(StorageCounters::default());
        let storage = Self {
            inner,
            counters: counters.clone(),
        };
        (storage, counters)
    }
}

impl<S: RaftStorage> RaftStorage for CountingStorage<S> {
    async fn initial_state(&mut self) -> Result<InitialState, StorageError> {
        self.inner.initial_state().await
    }

    async fn write(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        let must_sync = batch.must_sync;
        let entries = batch.entries.len() as u64;
        self.inner.write(batch).await?;
        if must_sync {
            self.counters.synced_writes.fetch_add(1, Ordering::Relaxed);
            self.counters
                .synced_entries
                .fetch_add(entries, Ordering::Relaxed);
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

struct Node {
    raft: Raft<NoopStateMachine>,
    network: QuicHandle,
    counters: Arc<StorageCounters>,
}

/// Runs `cluster`: one report per `--clients` value.
pub async fn run(args: &ClusterArgs) -> Result<Vec<Report>, String> {
    let parent = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("rafter-bench-cluster-")
        .tempdir_in(&parent)
        .map_err(|error| format!("cannot create a directory in {}: {error}", parent.display()))?;
    let ca = ClusterCa::generate("rafter-bench")
        .map_err(|error| format!("cannot make certificates: {error}"))?;
    let mut reports = Vec::new();
    for &clients in &args.clients {
        let case_dir = dir.path().join(format!("clients-{clients}"));
        reports.push(run_case(args, clients, &ca, &case_dir).await?);
        if let Err(error) = std::fs::remove_dir_all(&case_dir) {
            tracing::warn!("cannot remove {}: {error}", case_dir.display());
        }
    }
    Ok(reports)
}

async fn run_case(
    args: &ClusterArgs,
    clients: usize,
    ca: &ClusterCa,
    dir: &Path,
) -> Result<Report, String> {
    let bar = progress::spinner(&format!("cluster {clients}c: starting 3 nodes"));
    let nodes = start_cluster(ca, dir).await?;
    let result = measure(args, clients, &nodes).await;
    bar.finish_and_clear();
    // Every node stops before any endpoint closes, so no node spends its
    // last moments reconnecting to a closed peer (and warning about it).
    for node in &nodes {
        node.raft.shutdown().await;
    }
    for node in &nodes {
        node.network.close().await;
    }
    result
}

async fn measure(args: &ClusterArgs, clients: usize, nodes: &[Node]) -> Result<Report, String> {
    let leader = agreed_leader(nodes).await?;
    let call = Propose {
        raft: nodes[leader].raft.clone(),
        value: ByteBuf::from(vec![0x5a; args.value_size]),
        batch: args.batch,
    };
    let label = format!("cluster {NODES}n {clients}c");
    // Warm-up alone first (no measured operations), so the counters can be
    // read between it and the measured phase.
    let warmup = LoadSpec {
        clients,
        measure: load::Measure::Ops(0),
        ops_per_call: args.batch,
        warmup: Duration::from_secs_f64(args.warmup),
        label: label.clone(),
    };
    load::run(&warmup, call.clone()).await;
    let before: Vec<CounterReading> = nodes.iter().map(|n| n.counters.read()).collect();
    let spec = LoadSpec {
        clients,
        measure: load::Measure::Ops(args.ops),
        ops_per_call: args.batch,
        warmup: Duration::ZERO,
        label,
    };
    let outcome = load::run(&spec, call).await;
    let counted: Vec<CounterReading> = nodes
        .iter()
        .zip(&before)
        .map(|(node, before)| node.counters.read().since(*before))
        .collect();

    let seconds = outcome.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    let leader_counts = counted[leader];
    let followers: Vec<CounterReading> = counted
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, c)| *c)
        .collect();
    let follower_writes: u64 = followers.iter().map(|c| c.synced_writes).sum();
    let follower_entries: u64 = followers.iter().map(|c| c.synced_entries).sum();
    let mut extra = vec![
        (
            "fsyncs_per_sec",
            leader_counts.synced_writes as f64 / seconds,
        ),
        (
            "writes_per_fsync",
            ratio(leader_counts.synced_entries, leader_counts.synced_writes),
        ),
        (
            "follower_fsyncs_per_sec",
            follower_writes as f64 / followers.len().max(1) as f64 / seconds,
        ),
        (
            "follower_writes_per_fsync",
            ratio(follower_entries, follower_writes),
        ),
    ];
    if args.batch > 1 {
        extra.push(("batch", args.batch as f64));
    }
    if args.value_size > 0 {
        extra.push(("value_bytes", args.value_size as f64));
    }
    if nodes[leader].raft.status().role != Role::Leader {
        // Its proposals failed with NotLeader from then on (in the error
        // table); the fsync figures mix two leaders.
        tracing::warn!("the leader changed during the measured phase");
    }
    Ok(Report {
        mode: "cluster",
        case: None,
        nodes: NODES as usize,
        clients,
        ops: outcome.ops,
        elapsed: outcome.elapsed,
        latency: outcome.latency,
        errors: outcome.errors,
        extra,
    })
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// Binds 3 QUIC endpoints on 127.0.0.1, then starts a node on each, on a
/// `RedbStorage` in `dir/node-<id>`.
async fn start_cluster(ca: &ClusterCa, dir: &Path) -> Result<Vec<Node>, String> {
    let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut networks = Vec::new();
    for id in 1..=NODES {
        let cert = ca
            .issue_node_cert(id)
            .map_err(|error| format!("cannot issue node {id}'s certificate: {error}"))?;
        let network = QuicNetwork::bind(
            id,
            localhost,
            TlsMode::MutualTls(cert),
            TransportConfig::default(),
        )
        .map_err(|error| format!("cannot bind node {id}: {error}"))?;
        networks.push(network);
    }
    let mut addrs: BTreeMap<NodeId, String> = BTreeMap::new();
    for network in &networks {
        let handle = network.handle();
        let addr = handle
            .local_addr()
            .map_err(|error| format!("no local address: {error}"))?;
        addrs.insert(handle.node_id(), addr.to_string());
    }
    let members = Membership::new_voters(addrs);
    let mut nodes = Vec::new();
    for network in networks {
        let handle = network.handle();
        let id = handle.node_id();
        let store = RedbStorage::open(dir.join(format!("node-{id}")))
            .map_err(|error| format!("cannot open node {id}'s store: {error}"))?;
        let (storage, counters) = CountingStorage::new(store);
        let raft = Raft::start(
            id,
            bench_config(),
            Some(members.clone()),
            storage,
            network,
            NoopStateMachine::default(),
        )
        .await
        .map_err(|error| format!("node {id} does not start: {error}"))?;
        let sink = raft.clone();
        handle
            .set_inbound(move |message| {
                // A full inbox drops the message; Raft retries.
                let _ = sink.receive(message);
            })
            .map_err(|error| format!("node {id}: {error}"))?;
        nodes.push(Node {
            raft,
            network: handle,
            counters,
        });
    }
    Ok(nodes)
}

/// The position in `nodes` of the leader every node agrees on, once it has
/// applied its first entry (it then accepts and answers proposals).
async fn agreed_leader(nodes: &[Node]) -> Result<usize, String> {
    let deadline = tokio::time::Instant::now() + LEADER_PATIENCE;
    loop {
        let views: Vec<_> = nodes.iter().map(|node| node.raft.status()).collect();
        if let Some(fatal) = views.iter().find_map(|m| m.fatal.clone()) {
            return Err(format!("a node stopped: {fatal:?}"));
        }
        let leader = views.iter().position(|m| m.role == Role::Leader);
        if let Some(position) = leader {
            let status = &views[position];
            let agreed = views
                .iter()
                .all(|m| m.leader == Some(status.id) && m.term == status.term);
            if agreed && status.commit_index > 1 && status.applied_index >= status.commit_index {
                return Ok(position);
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("no leader elected within {LEADER_PATIENCE:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use rafter::testing::MemStorage;
    use rafter::EntryPayload;

    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            term: 1,
            index,
            payload: EntryPayload::Command(rafter::CommandBytes::from(b"x")),
        }
    }

    #[tokio::test]
    async fn counts_only_writes_that_must_sync_and_their_entries() {
        let (mut storage, counters) = CountingStorage::new(MemStorage::new());
        storage
            .write(WriteBatch {
                entries: vec![entry(1), entry(2), entry(3)],
                must_sync: true,
                ..WriteBatch::default()
            })
            .await
            .unwrap();
        storage
            .write(WriteBatch {
                hard_state: Some(rafter::HardState {
                    term: 1,
                    vote: None,
                    commit: 2,
                }),
                must_sync: false,
                ..WriteBatch::default()
            })
            .await
            .unwrap();
        // A failed write counts nothing.
        assert!(storage
            .write(WriteBatch {
                entries: vec![entry(9)],
                must_sync: true,
                ..WriteBatch::default()
            })
            .await
            .is_err());
        assert_eq!(
            counters.read(),
            CounterReading {
                synced_writes: 1,
                synced_entries: 3
            }
        );
        assert_eq!(storage.entries(1..4, u64::MAX).await.unwrap().len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_run_commits_through_redb_and_quic_and_counts_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let args = ClusterArgs {
            clients: vec![4],
            ops: 200,
            value_size: 16,
            batch: 1,
            warmup: 0.0,
            data_dir: Some(dir.path().to_path_buf()),
        };
        let reports = run(&args).await.unwrap();
        assert_eq!(reports.len(), 1);
        let report = &reports[0];
        assert_eq!(report.ops, 200);
        assert_eq!(report.error_count(), 0, "{:?}", report.errors);
        let json = report.to_json();
        assert!(json["fsyncs_per_sec"].as_f64().unwrap() > 0.0, "{json}");
        assert!(json["writes_per_fsync"].as_f64().unwrap() >= 1.0, "{json}");
        // The run's directory under --data-dir is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
