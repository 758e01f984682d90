//! `rafter-kv demo`: a 3-node cluster on loopback in one process, on a
//! data directory that survives runs (`./rafter-data` by default).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rafter::{NodeId, Role};
use rafter_quic::ClusterCa;

use crate::cluster::MemberAddr;
use crate::config::ServeArgs;
use crate::node::Node;

/// The flags of `demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the three nodes keep their data (reused by the next run).
    #[arg(long, default_value = "rafter-data")]
    pub data_dir: PathBuf,
    /// Node N serves HTTP on 127.0.0.1:(BASE+N) and Raft on
    /// 127.0.0.1:(BASE+100+N).
    #[arg(long, default_value_t = 8000)]
    pub base_port: u16,
}

/// The certificates of nodes `ids` in `dir`, made (with a new CA) on first
/// use.
pub fn ensure_certs(dir: &Path, ids: &[NodeId]) -> Result<(), String> {
    if ids
        .iter()
        .all(|id| dir.join(format!("node-{id}.pem")).exists())
    {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ca = match ClusterCa::load(dir) {
        Ok(ca) => ca,
        Err(_) => {
            let ca = ClusterCa::generate("rafter-kv").map_err(|e| e.to_string())?;
            ca.save(dir).map_err(|e| e.to_string())?;
            ca
        }
    };
    for id in ids {
        ca.issue_node_cert(*id)
            .and_then(|cert| cert.save(dir))
            .map_err(|e| format!("node {id}'s certificate: {e}"))?;
    }
    Ok(())
}

/// Issues node `id`'s certificate from the CA already in `dir` (for a node
/// that will join a running cluster); keeps one that exists. Never makes a
/// CA: a new CA would not be trusted by the running nodes.
pub fn add_node_cert(dir: &Path, id: NodeId) -> Result<(), String> {
    if id == 0 {
        return Err("node id 0 is reserved".to_owned());
    }
    if dir.join(format!("node-{id}.pem")).exists() {
        return Ok(());
    }
    let ca = ClusterCa::load(dir).map_err(|e| {
        format!(
            "no cluster CA in {} ({e}); make one with `rafter-kv certs --out {} --nodes 1,2,3`",
            dir.display(),
            dir.display()
        )
    })?;
    ca.issue_node_cert(id)
        .and_then(|cert| cert.save(dir))
        .map_err(|e| format!("node {id}'s certificate: {e}"))
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run(args: DemoArgs) -> Result<(), String> {
    let ids: [NodeId; 3] = [1, 2, 3];
    let port = |offset: u16| {
        args.base_port
            .checked_add(offset)
            .ok_or_else(|| format!("--base-port {} is too high", args.base_port))
    };
    let mut members = BTreeMap::new();
    for id in ids {
        members.insert(
            id,
            MemberAddr {
                raft: format!("127.0.0.1:{}", port(100 + id as u16)?),
                http: format!("127.0.0.1:{}", port(id as u16)?),
            },
        );
    }
    let tls = args.data_dir.join("tls");
    ensure_certs(&tls, &ids)?;
    let peers = members
        .iter()
        .map(|(id, a)| format!("{id}={}", a.encode()))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for (id, addr) in &members {
        let raft_addr: SocketAddr = addr.raft.parse().map_err(|e| format!("{e}"))?;
        let http_addr: SocketAddr = addr.http.parse().map_err(|e| format!("{e}"))?;
        let config = ServeArgs {
            id: Some(*id),
            raft_addr: Some(raft_addr),
            http_addr: Some(http_addr),
            data_dir: Some(args.data_dir.join(format!("node-{id}"))),
            peers: Some(peers.clone()),
            init: true,
            tls_dir: Some(tls.clone()),
            ..ServeArgs::default()
        }
        .resolve()?;
        match Node::start(config).await {
            Ok(node) => nodes.push(node),
            Err(error) => {
                for node in nodes {
                    node.shutdown().await;
                }
                return Err(format!("node {id}: {error}"));
            }
        }
    }
    println!(
        "rafter-kv demo: 3 nodes, data in {}",
        args.data_dir.display()
    );
    for node in &nodes {
        println!("  node {}: http://{}", node.raft.id(), node.http_addr);
    }
    let leader = wait_for_leader(&nodes).await;
    match leader {
        Some(id) => println!("  leader: node {id}"),
        None => println!("  no leader yet (is another copy running on these ports?)"),
    }
    let first = nodes[0].http_addr;
    let second = nodes[1].http_addr;
    println!("try:");
    println!("  curl -X PUT --data-binary hello http://{first}/kv/greeting");
    println!("  curl http://{second}/kv/greeting");
    println!("  curl 'http://{second}/kv?prefix=gr'");
    println!("Ctrl-C stops the cluster.");
    crate::shutdown_signal().await;
    println!("stopping...");
    // Together: each waits up to the transport's close timeout for its
    // connections to drain, which one after another added up.
    futures::future::join_all(nodes.into_iter().map(Node::shutdown)).await;
    Ok(())
}

async fn wait_for_leader(nodes: &[Node]) -> Option<NodeId> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if let Some(node) = nodes.iter().find(|n| n.raft.status().role == Role::Leader) {
            return Some(node.raft.id());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
