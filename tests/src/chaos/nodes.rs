//! The `rafter-kv serve` processes, one per host, and what the nemesis
//! and the final checks do to them: SIGKILL and restart, SIGSTOP and
//! SIGCONT, replace (remove from the cluster, wipe, join again under a
//! fresh id), and the questions asked of them (status, leader, digest).
//!
//! A host keeps its address for the whole run; the node on it changes id
//! when replaced (ids are never reused: a removed id coming back with an
//! empty disk would have forgotten its votes). Every incarnation's stderr
//! is appended to `node-<id>.log` in the run directory.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::hosts::Hosts;
use super::http::{Http, HttpError};

/// The Raft (QUIC) port on every host.
const RAFT_PORT: u16 = 7001;
/// The HTTP port on every host.
const HTTP_PORT: u16 = 2379;
/// Deadline of one control request (status, digest, membership).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodesError {
    /// A process could not be started or signalled.
    #[error("{what}: {detail}")]
    Process { what: String, detail: String },
    /// The cluster did not do what was asked before the deadline.
    #[error("{what} within {patience:?}: {last}")]
    Patience {
        what: String,
        patience: Duration,
        last: String,
    },
}

/// What runs on one host.
struct Node {
    id: u64,
    child: Option<Child>,
    paused: bool,
    /// `serve` flags after the common ones: `--peers .. --init` for a
    /// founding member, `--join .. --auto-promote` for a replacement.
    role_args: Vec<String>,
}

/// The processes of one cluster, killed on drop.
///
/// Invariant: `nodes[i].paused` implies `nodes[i].child` is some.
pub struct Nodes {
    binary: PathBuf,
    dir: PathBuf,
    hosts: Hosts,
    nodes: Vec<Node>,
    extra_args: Vec<String>,
    next_id: u64,
    http: Http,
    /// Nodes that exited without being killed: "node ID on host I: STATUS".
    exits: Vec<String>,
}

impl Nodes {
    /// Makes the certificates and starts one founding member per host.
    pub fn start(
        binary: &Path,
        dir: &Path,
        hosts: Hosts,
        extra_args: &[String],
    ) -> Result<Nodes, NodesError> {
        let count = hosts.count() as u64;
        let ids: Vec<String> = (1..=count).map(|id| id.to_string()).collect();
        let mut nodes = Nodes {
            binary: binary.to_owned(),
            dir: dir.to_owned(),
            hosts,
            nodes: Vec::new(),
            extra_args: extra_args.to_vec(),
            next_id: count + 1,
            http: Http::new(),
            exits: Vec::new(),
        };
        nodes.certs(&["--nodes", &ids.join(",")])?;
        let peers = (0..nodes.hosts.count())
            .map(|i| format!("{}={}/{}", i + 1, nodes.raft_addr(i), nodes.http_addr(i)))
            .collect::<Vec<_>>()
            .join(",");
        for i in 0..nodes.hosts.count() {
            nodes.nodes.push(Node {
                id: i as u64 + 1,
                child: None,
                paused: false,
                role_args: vec!["--peers".into(), peers.clone(), "--init".into()],
            });
            nodes.spawn(i)?;
        }
        Ok(nodes)
    }

    fn certs(&self, args: &[&str]) -> Result<(), NodesError> {
        let status = Command::new(&self.binary)
            .args(["certs", "--out"])
            .arg(self.dir.join("tls"))
            .args(args)
            .stdout(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Ok(()),
            other => Err(NodesError::Process {
                what: format!("rafter-kv certs {}", args.join(" ")),
                detail: format!("{other:?}"),
            }),
        }
    }

    /// How many hosts.
    pub fn count(&self) -> usize {
        self.nodes.len()
    }

    /// The hosts (for partitions).
    pub fn hosts_mut(&mut self) -> &mut Hosts {
        &mut self.hosts
    }

    /// The hosts.
    pub fn hosts(&self) -> &Hosts {
        &self.hosts
    }

    fn raft_addr(&self, i: usize) -> String {
        format!("{}:{RAFT_PORT}", self.hosts.addr(i))
    }

    fn http_addr(&self, i: usize) -> String {
        format!("{}:{HTTP_PORT}", self.hosts.addr(i))
    }

    /// Host `i`'s base URL.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}", self.http_addr(i))
    }

    /// The node id on host `i`.
    pub fn id(&self, i: usize) -> u64 {
        self.nodes[i].id
    }

    /// The host of node `id`, if it is one of the current nodes.
    pub fn host_of(&self, id: u64) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Whether host `i`'s process is running (paused or not).
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Whether host `i`'s process is stopped by SIGSTOP.
    pub fn is_paused(&self, i: usize) -> bool {
        self.nodes[i].paused
    }

    /// The log file of node `id`.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}.log"))
    }

    /// Starts host `i`'s node (again, on the same data directory).
    pub fn spawn(&mut self, i: usize) -> Result<(), NodesError> {
        assert!(self.nodes[i].child.is_none(), "host {i} already runs");
        let id = self.nodes[i].id;
        let failed = |detail: String| NodesError::Process {
            what: format!("start node {id} on host {i}"),
            detail,
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .map_err(|e| failed(e.to_string()))?;
        let child = self
            .hosts
            .command(i, &self.binary)
            .arg("serve")
            .args(["--id", &id.to_string()])
            .args(["--raft-addr", &self.raft_addr(i)])
            .args(["--http-addr", &self.http_addr(i)])
            .arg("--data-dir")
            .arg(self.dir.join(format!("data-{id}")))
            .arg("--tls-dir")
            .arg(self.dir.join("tls"))
            .args(&self.nodes[i].role_args)
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| failed(e.to_string()))?;
        self.nodes[i].child = Some(child);
        self.nodes[i].paused = false;
        Ok(())
    }

    /// Notices the nodes that exited on their own (a crash, a fail-stop,
    /// a join that gave up): they count as down from now on, and are
    /// listed by [`Nodes::exits`].
    pub fn reap(&mut self) {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let Some(child) = &mut node.child else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                self.exits
                    .push(format!("node {} on host {i}: {status}", node.id));
                node.child = None;
                node.paused = false;
            }
        }
    }

    /// The nodes that exited without being killed, so far.
    pub fn exits(&self) -> &[String] {
        &self.exits
    }

    /// SIGKILLs host `i`'s node (paused or not) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[i].paused = false;
    }

    /// SIGSTOPs (`pause`) or SIGCONTs host `i`'s node; a node that is not
    /// running is left alone.
    pub fn set_paused(&mut self, i: usize, pause: bool) -> Result<(), NodesError> {
        let node = &mut self.nodes[i];
        let Some(child) = &node.child else {
            return Ok(());
        };
        if node.paused == pause {
            return Ok(());
        }
        let signal = if pause { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        match status {
            Ok(s) if s.success() => {
                node.paused = pause;
                Ok(())
            }
            other => Err(NodesError::Process {
                what: format!("kill {signal} node {}", node.id),
                detail: format!("{other:?}"),
            }),
        }
    }

    /// Host `i`'s `/cluster/status`.
    pub async fn status(&self, i: usize) -> Result<Value, HttpError> {
        self.http
            .get(&format!("{}/cluster/status", self.url(i)), CONTROL_TIMEOUT)
            .await
    }

    /// Host `i`'s `/cluster/digest`.
    pub async fn digest(&self, i: usize) -> Result<Value, HttpError> {
        self.http
            .get(&format!("{}/cluster/digest", self.url(i)), CONTROL_TIMEOUT)
            .await
    }

    /// The host of the leader, as the running, unpaused nodes that answer
    /// see it (the most common answer), if any.
    pub async fn leader(&self) -> Option<usize> {
        let mut votes: Vec<(u64, usize)> = Vec::new();
        for i in 0..self.count() {
            if !self.is_up(i) || self.is_paused(i) {
                continue;
            }
            let Ok(status) = self.status(i).await else {
                continue;
            };
            let Some(leader) = status["leader"].as_u64() else {
                continue;
            };
            match votes.iter_mut().find(|(id, _)| *id == leader) {
                Some((_, n)) => *n += 1,
                None => votes.push((leader, 1)),
            }
        }
        votes.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        votes.first().and_then(|&(id, _)| self.host_of(id))
    }

    /// Replaces host `i`'s node: removes its id from the cluster (through
    /// another host), kills it, wipes its data, and starts a node with a
    /// fresh id that joins through the other hosts and promotes itself.
    /// Returns the new id. The promotion goes on in the background.
    pub async fn replace(&mut self, i: usize, patience: Duration) -> Result<u64, NodesError> {
        let old = self.nodes[i].id;
        let others: Vec<usize> = (0..self.count()).filter(|&j| j != i).collect();
        let deadline = Instant::now() + patience;
        let mut attempt = 0usize;
        loop {
            let via = others[attempt % others.len()];
            attempt += 1;
            let url = format!("{}/cluster/members/{old}", self.url(via));
            let result = self
                .http
                .request(hyper::Method::DELETE, &url, &[], None, CONTROL_TIMEOUT)
                .await;
            match result {
                Ok(status) if !member_ids(&status).contains(&old) => break,
                Ok(_) => {}
                // An earlier attempt may have removed it and lost the answer.
                Err(_) if self.removed_everywhere(old, &others).await => break,
                Err(e) if Instant::now() > deadline => {
                    return Err(NodesError::Patience {
                        what: format!("remove node {old}"),
                        patience,
                        last: e.to_string(),
                    })
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.kill(i);
        let data = self.dir.join(format!("data-{old}"));
        std::fs::remove_dir_all(&data).map_err(|e| NodesError::Process {
            what: format!("wipe {}", data.display()),
            detail: e.to_string(),
        })?;
        let id = self.next_id;
        self.next_id += 1;
        self.certs(&["--add-node", &id.to_string()])?;
        let join = others
            .iter()
            .map(|&j| self.url(j))
            .collect::<Vec<_>>()
            .join(",");
        self.nodes[i].id = id;
        self.nodes[i].role_args = vec!["--join".into(), join, "--auto-promote".into()];
        self.spawn(i)?;
        Ok(id)
    }

    /// Whether every host of `others` answers a configuration without `id`.
    async fn removed_everywhere(&self, id: u64, others: &[usize]) -> bool {
        for &j in others {
            match self.status(j).await {
                Ok(status) if !member_ids(&status).contains(&id) => {}
                _ => return false,
            }
        }
        true
    }

    /// Waits until every host runs, every node's configuration has all
    /// current ids as voters (and nothing else), and all report the same
    /// digest at the same applied index; returns that digest answer.
    pub async fn wait_converged(&self, patience: Duration) -> Result<Value, NodesError> {
        let deadline = Instant::now() + patience;
        let mut want: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        want.sort_unstable();
        loop {
            let last = match self.converged(&want).await {
                Ok(digest) => return Ok(digest),
                Err(why) => why,
            };
            if Instant::now() > deadline {
                return Err(NodesError::Patience {
                    what: "convergence".into(),
                    patience,
                    last,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn converged(&self, want: &[u64]) -> Result<Value, String> {
        let mut digests = Vec::new();
        for i in 0..self.count() {
            let status = self.status(i).await.map_err(|e| format!("host {i}: {e}"))?;
            let mut voters = voter_ids(&status);
            voters.sort_unstable();
            let members = status["members"].as_array().map_or(0, Vec::len);
            if voters != want || members != want.len() {
                return Err(format!("host {i} sees voters {voters:?}, want {want:?}"));
            }
            digests.push(self.digest(i).await.map_err(|e| format!("host {i}: {e}"))?);
        }
        if digests.windows(2).all(|w| w[0] == w[1]) {
            Ok(digests.swap_remove(0))
        } else {
            Err(format!("digests differ: {digests:?}"))
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// The member ids (voters and learners) of a `/cluster/status` answer.
pub fn member_ids(status: &Value) -> Vec<u64> {
    status["members"]
        .as_array()
        .map(|members| members.iter().filter_map(|m| m["id"].as_u64()).collect())
        .unwrap_or_default()
}

/// The voter ids of a `/cluster/status` answer (or a membership answer,
/// which has the same `members`).
pub fn voter_ids(status: &Value) -> Vec<u64> {
    status["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .filter(|m| m["voter"] == true)
                .filter_map(|m| m["id"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}
