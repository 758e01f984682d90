//! `rafter-kv serve` settings: flags, a TOML file (`--config`), defaults;
//! a flag wins over the file, the file over the default. Every value is
//! checked here, so a bad one stops the program with a clear message
//! before anything is opened.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rafter::NodeId;
use serde::Deserialize;

use crate::cluster::{parse_peers, MemberAddr};

/// etcd's default request limit: 1.5 MiB.
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 3 << 19;
/// How long a request may wait for a leader and its answer (etcd's
/// request timeout: 5 s plus two election timeouts).
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(7);
/// Idle client sessions are forgotten after this much log time.
pub const SESSION_TTL_DEFAULT: Duration = Duration::from_secs(600);
/// Applied entries between snapshots (etcd's `--snapshot-count`).
pub const SNAPSHOT_ENTRIES_DEFAULT: u64 = 100_000;

/// The flags of `serve` (all optional here: the file may give them).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (flags win over it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long)]
    pub id: Option<NodeId>,
    /// Where the Raft (QUIC) endpoint listens, e.g. 127.0.0.1:7001.
    #[arg(long, value_name = "ADDR")]
    pub raft_addr: Option<SocketAddr>,
    /// Where the HTTP API listens, e.g. 127.0.0.1:8001.
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// The node's data directory (log, state, snapshots).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The founding members: ID=RAFT_ADDR/HTTP_ADDR,... (the addresses
    /// peers and clients reach them at).
    #[arg(long, value_name = "LIST")]
    pub peers: Option<String>,
    /// Found a new cluster from `--peers` if the data dir is empty (give it
    /// to every founding member; ignored once the node has state). Without
    /// `--init`, `--peers` only says where members are, so a node that is
    /// not yet in the configuration can answer them.
    #[arg(long)]
    pub init: bool,
    /// Join a running cluster through one of its members (URLs separated
    /// by commas): learn the members from it, ask it to add this node as a
    /// learner, catch up. Only when the data dir is empty (ignored once the
    /// node has state, so a restart with the same flags resumes).
    #[arg(long, value_name = "URL,...", conflicts_with = "init")]
    pub join: Option<String>,
    /// With `--join`: once caught up, ask to be made a voter (retried until
    /// the leader agrees). Without it, run `rafter-kv promote ID`.
    #[arg(long)]
    pub auto_promote: bool,
    /// The addresses other nodes and clients reach this node at,
    /// RAFT_ADDR/HTTP_ADDR (default: this node's `--peers` entry, else
    /// `--raft-addr`/`--http-addr`, which then must not be 0.0.0.0).
    #[arg(long, value_name = "RAFT_ADDR/HTTP_ADDR")]
    pub advertise: Option<String>,
    /// Directory with `ca.pem`, `node-<id>.pem` and `node-<id>.key.pem`
    /// (default: `<data-dir>/tls`; make them with `rafter-kv certs`).
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Largest request body in bytes.
    #[arg(long)]
    pub max_request_bytes: Option<usize>,
    /// How long a request may wait, e.g. 7s, 500ms.
    #[arg(long, value_parser = parse_duration)]
    pub request_timeout: Option<Duration>,
    /// Idle time (of the log's clock) after which a client session is
    /// forgotten, e.g. 10m. Must be the same on every node.
    #[arg(long, value_parser = parse_duration)]
    pub session_ttl: Option<Duration>,
    /// Applied entries between snapshots (a snapshot is a view of the
    /// store, written out only when a follower needs it); the log keeps a
    /// twentieth of it behind each snapshot
    #[arg(long)]
    pub snapshot_entries: Option<u64>,
    /// Serve linearizable reads on the leader from its lease (no heartbeat
    /// round while a quorum's acknowledgement is fresh). Safe only while
    /// the nodes' clocks tick at rates within Rafter's drift bound of one
    /// another (`Config::lease_drift_ticks`: 2 of the 10-tick minimum
    /// election timeout); every node must have the same setting. Off by
    /// default.
    #[arg(long)]
    pub lease_reads: bool,
}

/// The same settings in a TOML file (kebab-case keys, as the flags).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    id: Option<NodeId>,
    raft_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    peers: Option<String>,
    init: Option<bool>,
    join: Option<String>,
    auto_promote: Option<bool>,
    advertise: Option<String>,
    tls_dir: Option<PathBuf>,
    max_request_bytes: Option<usize>,
    request_timeout: Option<String>,
    session_ttl: Option<String>,
    snapshot_entries: Option<u64>,
    lease_reads: Option<bool>,
}

/// Checked settings of one node.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// This node's id.
    pub id: NodeId,
    /// The Raft endpoint's listen address.
    pub raft_addr: SocketAddr,
    /// The HTTP listen address.
    pub http_addr: SocketAddr,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The founding members (needed with `init`).
    pub peers: std::collections::BTreeMap<NodeId, MemberAddr>,
    /// Found the cluster if the data dir is empty.
    pub init: bool,
    /// Members' URLs to join through if the data dir is empty (empty: do
    /// not join).
    pub join: Vec<String>,
    /// Ask to become a voter once caught up.
    pub auto_promote: bool,
    /// Where others reach this node.
    pub advertise: MemberAddr,
    /// Where the certificates are.
    pub tls_dir: PathBuf,
    /// Largest request body.
    pub max_request_bytes: usize,
    /// Request deadline.
    pub request_timeout: Duration,
    /// Session expiry.
    pub session_ttl: Duration,
    /// Snapshot interval.
    pub snapshot_entries: u64,
    /// Leader lease reads (`Config::lease_reads`).
    pub lease_reads: bool,
}

impl ServeArgs {
    /// Merges flags over the file over defaults and checks the result.
    pub fn resolve(&self) -> Result<ServeConfig, String> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let id = self.id.or(file.id).ok_or("--id is required")?;
        if id == 0 {
            return Err("--id must be positive".into());
        }
        let raft_addr = self
            .raft_addr
            .or(file.raft_addr)
            .ok_or("--raft-addr is required")?;
        let http_addr = self
            .http_addr
            .or(file.http_addr)
            .ok_or("--http-addr is required")?;
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir)
            .ok_or("--data-dir is required")?;
        let peers = match self.peers.clone().or(file.peers) {
            Some(text) => parse_peers(&text).map_err(|e| format!("--peers: {e}"))?,
            None => Default::default(),
        };
        let init = self.init || file.init.unwrap_or(false);
        if init && !peers.contains_key(&id) {
            return Err(format!("--init needs --peers listing this node ({id})"));
        }
        let join: Vec<String> = self
            .join
            .clone()
            .or(file.join)
            .map(|urls| {
                urls.split(',')
                    .map(|u| u.trim().to_owned())
                    .filter(|u| !u.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if init && !join.is_empty() {
            return Err("--init and --join exclude each other: found a cluster or join one".into());
        }
        let auto_promote = self.auto_promote || file.auto_promote.unwrap_or(false);
        if auto_promote && join.is_empty() {
            return Err("--auto-promote needs --join".into());
        }
        let advertise = match self.advertise.clone().or(file.advertise) {
            Some(text) => MemberAddr::parse(&text).map_err(|e| format!("--advertise: {e}"))?,
            None => match peers.get(&id) {
                Some(addr) => addr.clone(),
                None if !join.is_empty()
                    && (raft_addr.ip().is_unspecified() || http_addr.ip().is_unspecified()) =>
                {
                    return Err(
                        "--join needs --advertise RAFT_ADDR/HTTP_ADDR when listening on an unspecified address"
                            .into(),
                    )
                }
                None => MemberAddr {
                    raft: raft_addr.to_string(),
                    http: http_addr.to_string(),
                },
            },
        };
        let duration = |flag: Option<Duration>, text: Option<String>, default, name: &str| match (
            flag, text,
        ) {
            (Some(d), _) => Ok(d),
            (None, Some(t)) => parse_duration(&t).map_err(|e| format!("{name}: {e}")),
            (None, None) => Ok(default),
        };
        let max_request_bytes = self
            .max_request_bytes
            .or(file.max_request_bytes)
            .unwrap_or(REQUEST_BYTES_MAX_DEFAULT);
        if !(1024..=64 << 20).contains(&max_request_bytes) {
            return Err("--max-request-bytes must be between 1 KiB and 64 MiB".into());
        }
        let snapshot_entries = self
            .snapshot_entries
            .or(file.snapshot_entries)
            .unwrap_or(SNAPSHOT_ENTRIES_DEFAULT);
        if snapshot_entries == 0 {
            return Err("--snapshot-entries must be positive".into());
        }
        Ok(ServeConfig {
            id,
            raft_addr,
            http_addr,
            tls_dir: self
                .tls_dir
                .clone()
                .or(file.tls_dir)
                .unwrap_or_else(|| data_dir.join("tls")),
            data_dir,
            peers,
            init,
            join,
            auto_promote,
            advertise,
            max_request_bytes,
            request_timeout: duration(
                self.request_timeout,
                file.request_timeout,
                REQUEST_TIMEOUT_DEFAULT,
                "request-timeout",
            )?,
            session_ttl: duration(
                self.session_ttl,
                file.session_ttl,
                SESSION_TTL_DEFAULT,
                "session-ttl",
            )?,
            snapshot_entries,
            lease_reads: self.lease_reads || file.lease_reads.unwrap_or(false),
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses `500ms`, `7s`, `10m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 7s, 10m"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "" | "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number * 60),
        "h" => Duration::from_secs(number * 3600),
        _ => return Err(format!("{text:?} has an unknown unit (ms, s, m, h)")),
    };
    if duration.is_zero() {
        return Err(format!("{text:?} must be positive"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "id = 2\nraft-addr = \"127.0.0.1:7002\"\nhttp-addr = \"127.0.0.1:8002\"\n\
             data-dir = \"/tmp/x\"\nrequest-timeout = \"3s\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            id: Some(5),
            ..ServeArgs::default()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.id, 5);
        assert_eq!(config.http_addr.port(), 8002);
        assert_eq!(config.request_timeout, Duration::from_secs(3));
        assert_eq!(config.session_ttl, SESSION_TTL_DEFAULT);
        assert_eq!(config.tls_dir, PathBuf::from("/tmp/x/tls"));
    }

    #[test]
    fn bad_settings_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("typo.toml");
        std::fs::write(&path, "idd = 1\n").unwrap();
        let error = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(error.contains("idd"), "{error}");
        let error = ServeArgs {
            id: Some(1),
            raft_addr: Some("127.0.0.1:1".parse().unwrap()),
            http_addr: Some("127.0.0.1:2".parse().unwrap()),
            data_dir: Some("d".into()),
            init: true,
            peers: Some("2=a:1/a:2".into()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(error.contains("--init"), "{error}");
        let joiner = ServeArgs {
            id: Some(4),
            raft_addr: Some("0.0.0.0:7001".parse().unwrap()),
            http_addr: Some("0.0.0.0:8001".parse().unwrap()),
            data_dir: Some("d".into()),
            join: Some("http://node1:8001".into()),
            ..ServeArgs::default()
        };
        let error = joiner.resolve().unwrap_err();
        assert!(error.contains("--advertise"), "{error}");
        let config = ServeArgs {
            advertise: Some("node4:7001/node4:8001".into()),
            auto_promote: true,
            ..joiner.clone()
        }
        .resolve()
        .unwrap();
        assert!(!config.lease_reads, "lease reads are off by default");
        let leased = ServeArgs {
            lease_reads: true,
            ..joiner.clone()
        };
        let leased = ServeArgs {
            advertise: Some("node4:7001/node4:8001".into()),
            ..leased
        }
        .resolve()
        .unwrap();
        assert!(leased.lease_reads);
        assert!(crate::node::raft_config(&leased).lease_reads);
        assert_eq!(config.advertise.http, "node4:8001");
        assert_eq!(config.join, ["http://node1:8001"]);
        let error = ServeArgs {
            join: None,
            auto_promote: true,
            advertise: Some("node4:7001/node4:8001".into()),
            ..joiner
        }
        .resolve()
        .unwrap_err();
        assert!(error.contains("--auto-promote"), "{error}");
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }
}
