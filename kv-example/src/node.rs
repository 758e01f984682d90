//! One `rafter-kv` node: its stores, its Raft endpoint, its Raft node and
//! its HTTP server, started in that order and stopped in the reverse, by
//! one shutdown path.
//!
//! Data directory layout: `log/` (the Raft log, `rafter-redb`), `state/`
//! (the KV store, sessions and applied id), `snapshots/`, `tls/` (default
//! certificate directory), `cluster-id`.

use std::path::Path;
use std::sync::Arc;

use rafter::{Config, Membership, Raft};
use rafter_quic::{NodeCert, QuicHandle, QuicNetwork, TlsMode, TransportConfig};
use rafter_redb::RedbStorage;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::append_timing::{AppendTimer, TimedNetwork};
use crate::cluster::{cluster_id, encode_members, RaftHalf};
use crate::config::ServeConfig;
use crate::forward::Forwarder;
use crate::http_layers::StandingGuardLayer;
use crate::membership::{self, Standing};
use crate::metrics::{ServiceMetrics, TimedStorage};
use crate::server::{router, AppState};
use crate::state_machine::KvStateMachine;

/// The file that says this node, started with `--join`, has received a
/// configuration: `--join` is done.
const JOINED_MARKER: &str = "joined";

/// Room the log's encoding of a command adds to the request body.
const COMMAND_OVERHEAD_BYTES: usize = 4096;

/// A running node.
pub struct Node {
    /// Its Raft handle.
    pub raft: Raft<KvStateMachine>,
    network: QuicHandle,
    http: JoinHandle<()>,
    stop_http: watch::Sender<bool>,
    /// Where its HTTP server listens (the bound address).
    pub http_addr: std::net::SocketAddr,
    /// Its standing in the cluster (member, joining, removed).
    pub standing: watch::Receiver<Standing>,
}

/// The Raft settings of a node. A follower forwards the writes it receives
/// to the leader inside Raft (`forward_proposals`): one message per batch
/// over the peer transport, the answer from its own apply. A snapshot every
/// `--snapshot-entries` entries costs a read transaction (`snapshots.rs`).
pub fn raft_config(config: &ServeConfig) -> Config {
    Config::default()
        .with_forward_proposals(true)
        .with_request_bytes_max(config.max_request_bytes + COMMAND_OVERHEAD_BYTES)
        .with_snapshot_interval_entries(config.snapshot_entries)
        .with_snapshot_trailing_entries((config.snapshot_entries / 20).max(1))
        .with_propose_timeout(config.request_timeout)
        .with_lease_reads(config.lease_reads)
}

impl Node {
    /// Opens the node's stores, binds its endpoints and starts it.
    pub async fn start(config: ServeConfig) -> Result<Self, String> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // `--join` works until this node has received a configuration
        // (`<data-dir>/joined` then says so), so a join cut short by a
        // crash is taken up again by a restart with the same flags, and a
        // node that joined restarts like any other.
        let joining = !config.join.is_empty() && !dir.join(JOINED_MARKER).exists();
        let had_log = dir.join("log").exists();
        // Where the members are before this node is in a configuration
        // (which brings their addresses): without them it could not answer
        // the leader that adds it.
        let seeds = if joining {
            let cluster = membership::discover(&config.join).await?;
            write_cluster_id(dir, cluster.cluster_id)?;
            cluster.members
        } else if config.init {
            Default::default()
        } else {
            config.peers.clone()
        };
        let cert = NodeCert::load(&config.tls_dir, config.id).map_err(|e| {
            format!(
                "node {}'s certificates in {} ({e}); make them with `rafter-kv certs`",
                config.id,
                config.tls_dir.display()
            )
        })?;
        let cluster = cluster_id_of(dir, &config)?;
        let state_machine = KvStateMachine::open(dir, config.session_ttl.as_millis() as u64)
            .map_err(|e| format!("state store: {e}"))?;
        let reads = state_machine.reads();
        let metrics = Arc::new(ServiceMetrics::new(state_machine.counters()));
        let log = RedbStorage::open(dir.join("log")).map_err(|e| format!("log store: {e}"))?;
        let storage = TimedStorage::new(log, metrics.clone());
        let raft_config = raft_config(&config);
        let transport = TransportConfig::for_raft(&raft_config).map_err(|e| e.to_string())?;
        let network = QuicNetwork::bind(
            config.id,
            config.raft_addr,
            TlsMode::MutualTls(cert),
            transport,
        )
        .map_err(|e| format!("raft endpoint {}: {e}", config.raft_addr))?;
        let handle = network.handle();
        let append_timer = AppendTimer::new(metrics.clone());
        let network =
            TimedNetwork::new(RaftHalf::with_seeds(network, &seeds), append_timer.clone());
        let members = config
            .init
            .then(|| Membership::new_voters(encode_members(&config.peers)));
        let raft = match Raft::start(
            config.id,
            raft_config,
            members,
            storage,
            network,
            state_machine,
        )
        .await
        {
            Ok(raft) => raft,
            Err(error) => {
                handle.close().await;
                return Err(format!("raft: {error}"));
            }
        };
        let sink = raft.clone();
        handle
            .set_inbound(move |message| {
                append_timer.received(&message);
                // A full inbox drops the message; Raft retries.
                let _ = sink.receive(message);
            })
            .map_err(|e| e.to_string())?;
        tokio::spawn(metrics.clone().watch(raft.metrics()));

        let listener = match tokio::net::TcpListener::bind(config.http_addr).await {
            Ok(listener) => listener,
            Err(error) => {
                raft.shutdown().await;
                handle.close().await;
                return Err(format!("http {}: {error}", config.http_addr));
            }
        };
        let http_addr = listener.local_addr().map_err(|e| e.to_string())?;
        let state = Arc::new(AppState {
            raft: raft.clone(),
            reads,
            id: config.id,
            cluster_id: cluster,
            forwarder: Forwarder::new(),
            metrics,
            request_bytes_max: config.max_request_bytes,
            request_timeout: config.request_timeout,
        });
        let (stop_http, mut stopped) = watch::channel(false);
        let (standing_tx, standing) = watch::channel(Standing::Member);
        membership::spawn_standing_watch(raft.clone(), standing_tx);
        let app = router(state).layer(StandingGuardLayer::new(standing.clone()));
        let http = tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            });
            if let Err(error) = server.await {
                tracing::error!(%error, "http server failed");
            }
        });
        tracing::info!(id = config.id, raft = %config.raft_addr, http = %http_addr, "node started");
        let node = Self {
            raft,
            network: handle,
            http,
            stop_http,
            http_addr,
            standing,
        };
        if joining {
            // A log from an earlier start may hold a configuration; the
            // metrics show it after the driver's first turn. (Asking again
            // would be refused as AlreadyMember and count as done, so this
            // wait only saves a request.)
            let has_config = had_log
                && tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    node.raft
                        .metrics()
                        .wait_for(|m| !m.membership.nodes.is_empty()),
                )
                .await
                .is_ok_and(|r| r.is_ok());
            if !has_config {
                tracing::info!(id = config.id, through = ?config.join, "joining as a learner");
                if let Err(error) =
                    membership::request_learner(&config.join, config.id, &config.advertise).await
                {
                    node.shutdown().await;
                    return Err(error);
                }
                tracing::info!(id = config.id, "added as a learner; catching up");
            }
            spawn_mark_joined(node.raft.clone(), dir.join(JOINED_MARKER));
        }
        if config.auto_promote {
            membership::spawn_auto_promote(node.raft.clone(), config.join.clone());
        }
        Ok(node)
    }

    /// Stops taking requests, lets those in flight finish (each within its
    /// deadline), stops the node, closes its stores and its endpoint.
    pub async fn shutdown(self) {
        let _ = self.stop_http.send(true);
        if let Err(error) = self.http.await {
            tracing::warn!(%error, "http server task failed");
        }
        self.raft.shutdown().await;
        self.network.close().await;
        tracing::info!(id = self.raft.id(), "node stopped");
    }
}

/// The cluster id: computed from the founders when the cluster is founded
/// here, or learned from the member joined through (`--join`), then kept
/// in `<data-dir>/cluster-id` (0 for a node added by hand, which has not
/// learned it: etcd's header then says 0 too).
fn cluster_id_of(dir: &Path, config: &ServeConfig) -> Result<u64, String> {
    let path = dir.join("cluster-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("{}: not a cluster id", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !config.init {
                return Ok(0);
            }
            let id = cluster_id(&config.peers);
            write_cluster_id(dir, id)?;
            Ok(id)
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes `marker` once the node holds a configuration (the leader that
/// added it sent one).
fn spawn_mark_joined(raft: Raft<KvStateMachine>, marker: std::path::PathBuf) {
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let has_config = metrics
            .wait_for(|m| m.stopped || !m.membership.nodes.is_empty())
            .await
            .is_ok_and(|m| !m.stopped);
        if has_config {
            if let Err(error) = std::fs::write(&marker, "joined\n") {
                tracing::warn!(%error, path = %marker.display(), "cannot mark the join done");
            }
        }
    });
}

/// Keeps the cluster id in `<dir>/cluster-id` (written whole or not at
/// all).
fn write_cluster_id(dir: &Path, id: u64) -> Result<(), String> {
    let path = dir.join("cluster-id");
    let tmp = dir.join("cluster-id.tmp");
    std::fs::write(&tmp, format!("{id}\n"))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("{}: {e}", path.display()))
}
