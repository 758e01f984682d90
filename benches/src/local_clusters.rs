//! Three-member clusters on loopback for `kv --against-etcd`: Debian's
//! `etcd` (3.4, default durability: the WAL fsyncs every batch) and
//! `rafter-kv serve` (default settings: fsync on), each member a process
//! with its own data directory in one temporary directory.
//!
//! A [`LocalCluster`] owns its processes and its directory: dropping it
//! (at the end, on an error, on a panic, or when Ctrl-C drops the run)
//! kills the processes, waits for them, and removes the directory.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::StatusCode;

use crate::http_connection::{HttpConnection, Prepared};
use crate::prometheus_text;

/// Members per cluster.
pub const MEMBERS: usize = 3;
/// How long a cluster may take to answer a linearizable read on every
/// member.
const READY_PATIENCE: Duration = Duration::from_secs(30);

/// Which server a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    RafterKv,
    Etcd,
}

impl System {
    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            System::RafterKv => "rafter-kv",
            System::Etcd => "etcd",
        }
    }
}

/// A running cluster: its members' HTTP addresses, processes and data.
pub struct LocalCluster {
    pub system: System,
    /// Client (HTTP) address of each member, in member order.
    pub endpoints: Vec<SocketAddr>,
    children: Vec<Child>,
    /// Each member's stderr, for the error message if it dies.
    logs: Vec<PathBuf>,
    /// Removed on drop, after the processes are gone.
    dir: tempfile::TempDir,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
        tracing::debug!("removing {}", self.dir.path().display());
    }
}

impl LocalCluster {
    /// Starts a 3-member etcd cluster (`binary`) in a fresh directory under
    /// `parent`, and waits until every member answers a linearizable read.
    pub async fn start_etcd(binary: &Path, parent: &Path) -> Result<LocalCluster, String> {
        let dir = temp_dir(parent, "rafter-bench-etcd-")?;
        let clients: Vec<u16> = (0..MEMBERS)
            .map(|_| free_tcp_port())
            .collect::<Result<_, _>>()?;
        let peers: Vec<u16> = (0..MEMBERS)
            .map(|_| free_tcp_port())
            .collect::<Result<_, _>>()?;
        let initial_cluster = peers
            .iter()
            .enumerate()
            .map(|(i, port)| format!("m{}=http://127.0.0.1:{port}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = LocalCluster {
            system: System::Etcd,
            endpoints: clients
                .iter()
                .map(|port| SocketAddr::from(([127, 0, 0, 1], *port)))
                .collect(),
            children: Vec::new(),
            logs: Vec::new(),
            dir,
        };
        for i in 0..MEMBERS {
            let client_url = format!("http://127.0.0.1:{}", clients[i]);
            let peer_url = format!("http://127.0.0.1:{}", peers[i]);
            let mut command = Command::new(binary);
            command
                .args(["--name", &format!("m{}", i + 1)])
                .arg("--data-dir")
                .arg(cluster.dir.path().join(format!("m{}", i + 1)))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "rafter-bench"]);
            cluster.spawn(command, &format!("m{}", i + 1))?;
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// Starts a 3-node rafter-kv cluster (`binary serve`, default settings)
    /// in a fresh directory under `parent`, certificates made by `binary
    /// certs`, and waits until every node answers a linearizable read.
    pub async fn start_rafter_kv(binary: &Path, parent: &Path) -> Result<LocalCluster, String> {
        let dir = temp_dir(parent, "rafter-bench-rafter-kv-")?;
        let tls = dir.path().join("tls");
        let certs = Command::new(binary)
            .args(["certs", "--out"])
            .arg(&tls)
            .args(["--nodes", "1,2,3"])
            .stdout(Stdio::null())
            .output()
            .map_err(|error| format!("cannot run {} certs: {error}", binary.display()))?;
        if !certs.status.success() {
            return Err(format!(
                "{} certs failed: {}",
                binary.display(),
                String::from_utf8_lossy(&certs.stderr)
            ));
        }
        let raft: Vec<u16> = (0..MEMBERS)
            .map(|_| free_udp_port())
            .collect::<Result<_, _>>()?;
        let http: Vec<u16> = (0..MEMBERS)
            .map(|_| free_tcp_port())
            .collect::<Result<_, _>>()?;
        let peers = (0..MEMBERS)
            .map(|i| format!("{}=127.0.0.1:{}/127.0.0.1:{}", i + 1, raft[i], http[i]))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = LocalCluster {
            system: System::RafterKv,
            endpoints: http
                .iter()
                .map(|port| SocketAddr::from(([127, 0, 0, 1], *port)))
                .collect(),
            children: Vec::new(),
            logs: Vec::new(),
            dir,
        };
        for i in 0..MEMBERS {
            let mut command = Command::new(binary);
            command
                .arg("serve")
                .args(["--id", &(i + 1).to_string()])
                .args(["--raft-addr", &format!("127.0.0.1:{}", raft[i])])
                .args(["--http-addr", &format!("127.0.0.1:{}", http[i])])
                .arg("--data-dir")
                .arg(cluster.dir.path().join(format!("node-{}", i + 1)))
                .arg("--tls-dir")
                .arg(&tls)
                .args(["--peers", &peers, "--init"]);
            cluster.spawn(command, &format!("node-{}", i + 1))?;
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    fn spawn(&mut self, mut command: Command, name: &str) -> Result<(), String> {
        let log = self.dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log)
            .map_err(|error| format!("cannot create {}: {error}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|error| {
                format!(
                    "cannot start {} ({name}): {error}",
                    command.get_program().to_string_lossy()
                )
            })?;
        self.children.push(child);
        self.logs.push(log);
        Ok(())
    }

    /// An error if a member has exited, with the end of its log.
    pub fn check_running(&mut self) -> Result<(), String> {
        for (child, log) in self.children.iter_mut().zip(&self.logs) {
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "a {} member exited ({status}); the end of {}:\n{}",
                    self.system.name(),
                    log.display(),
                    tail.join("\n")
                ));
            }
        }
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_PATIENCE;
        let probe = Prepared::post("/v3/kv/range", Bytes::from_static(br#"{"key":"cHJvYmU="}"#));
        let mut connections: Vec<HttpConnection> = self
            .endpoints
            .iter()
            .map(|a| HttpConnection::new(*a))
            .collect();
        let mut ready = vec![false; self.endpoints.len()];
        while ready.iter().any(|r| !r) {
            self.check_running()?;
            for (i, connection) in connections.iter_mut().enumerate() {
                if !ready[i] {
                    ready[i] = matches!(connection.send(&probe).await, Ok(StatusCode::OK));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not answer on every member within {READY_PATIENCE:?}",
                    self.system.name()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Each member's process id, in member order.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Each member's `/metrics` now, reduced to the figures a case reports.
    pub async fn scrape(&self) -> Result<Vec<MemberFigures>, String> {
        let request = Prepared::get("/metrics")?;
        let mut figures = Vec::new();
        for addr in &self.endpoints {
            let mut connection = HttpConnection::new(*addr);
            let (status, body) = connection
                .send_reading(&request)
                .await
                .map_err(|failure| format!("GET {addr}/metrics: {}", failure.kind()))?;
            if status != StatusCode::OK {
                return Err(format!("GET {addr}/metrics: {status}"));
            }
            let text = String::from_utf8_lossy(&body);
            figures.push(MemberFigures::read(self.system, &text));
        }
        Ok(figures)
    }
}

/// The counters of one member that explain a case: read before and after
/// the measured phase, the difference is what the phase cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MemberFigures {
    pub is_leader: bool,
    /// Synced log writes (rafter-kv: `fsync_seconds`; etcd: the WAL's
    /// `wal_fsync_duration_seconds`), count and total seconds.
    pub fsyncs: f64,
    pub fsync_seconds: f64,
    /// Commits of the key-value store, each with an fsync (rafter-kv: one
    /// per apply batch, `apply_batches_total`; etcd: the bbolt backend's
    /// periodic commit, `backend_commit_duration_seconds`).
    pub state_commits: f64,
    /// rafter-kv only: requests relayed to the leader over HTTP.
    pub forwarded: f64,
    /// rafter-kv only: entries applied, and the store transactions they
    /// took.
    pub entries_applied: f64,
    pub apply_batches: f64,
    /// rafter-kv only, the stages of a write (count and total seconds of
    /// each histogram): `/v3/kv/put` requests inside the router, proposals
    /// to their answer, the leader's appends to their acknowledgement, and
    /// the time in apply batches (per `apply_batches`).
    pub put_requests: f64,
    pub put_request_seconds: f64,
    pub proposals: f64,
    pub propose_seconds: f64,
    pub append_acks: f64,
    pub append_round_trip_seconds: f64,
    pub apply_seconds: f64,
}

impl MemberFigures {
    fn read(system: System, text: &str) -> MemberFigures {
        let get = |name: &str| prometheus_text::sum(text, name).unwrap_or(0.0);
        let put = |name: &str| {
            prometheus_text::sum_labelled(text, name, "route=\"/v3/kv/put\"").unwrap_or(0.0)
        };
        match system {
            System::RafterKv => MemberFigures {
                is_leader: get("rafter_kv_is_leader") > 0.0,
                fsyncs: get("rafter_kv_fsync_seconds_count"),
                fsync_seconds: get("rafter_kv_fsync_seconds_sum"),
                state_commits: get("rafter_kv_apply_batches_total"),
                forwarded: get("rafter_kv_forwarded_total"),
                entries_applied: get("rafter_kv_entries_applied_total"),
                apply_batches: get("rafter_kv_apply_batches_total"),
                put_requests: put("rafter_kv_request_seconds_count"),
                put_request_seconds: put("rafter_kv_request_seconds_sum"),
                proposals: get("rafter_kv_propose_seconds_count"),
                propose_seconds: get("rafter_kv_propose_seconds_sum"),
                append_acks: get("rafter_kv_append_round_trip_seconds_count"),
                append_round_trip_seconds: get("rafter_kv_append_round_trip_seconds_sum"),
                apply_seconds: get("rafter_kv_apply_seconds_total"),
            },
            System::Etcd => MemberFigures {
                is_leader: get("etcd_server_is_leader") > 0.0,
                fsyncs: get("etcd_disk_wal_fsync_duration_seconds_count"),
                fsync_seconds: get("etcd_disk_wal_fsync_duration_seconds_sum"),
                state_commits: get("etcd_disk_backend_commit_duration_seconds_count"),
                ..MemberFigures::default()
            },
        }
    }

    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: MemberFigures) -> MemberFigures {
        MemberFigures {
            is_leader: self.is_leader,
            fsyncs: self.fsyncs - earlier.fsyncs,
            fsync_seconds: self.fsync_seconds - earlier.fsync_seconds,
            state_commits: self.state_commits - earlier.state_commits,
            forwarded: self.forwarded - earlier.forwarded,
            entries_applied: self.entries_applied - earlier.entries_applied,
            apply_batches: self.apply_batches - earlier.apply_batches,
            put_requests: self.put_requests - earlier.put_requests,
            put_request_seconds: self.put_request_seconds - earlier.put_request_seconds,
            proposals: self.proposals - earlier.proposals,
            propose_seconds: self.propose_seconds - earlier.propose_seconds,
            append_acks: self.append_acks - earlier.append_acks,
            append_round_trip_seconds: self.append_round_trip_seconds
                - earlier.append_round_trip_seconds,
            apply_seconds: self.apply_seconds - earlier.apply_seconds,
        }
    }
}

fn temp_dir(parent: &Path, prefix: &str) -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .map_err(|error| format!("cannot create a directory in {}: {error}", parent.display()))
}

/// A free TCP port on loopback (bound and released: another process could
/// take it in between, which a loopback bench accepts).
fn free_tcp_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|error| format!("no free TCP port: {error}"))
}

/// A free UDP port on loopback.
fn free_udp_port() -> Result<u16, String> {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|error| format!("no free UDP port: {error}"))
}
