//! A cluster of real `rafter-kv serve` processes on loopback, and a small
//! HTTP client, for the process tests.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_rafter-kv");

/// A free TCP port on loopback (bound and released: another process could
/// take it in between, which a loopback test accepts).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free UDP port on loopback.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One node's addresses and process.
pub struct Proc {
    pub id: u64,
    pub raft: SocketAddr,
    pub http: SocketAddr,
    pub dir: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
    /// `serve` flags in place of `--peers ... --init` (a node that joined).
    pub own_args: Vec<String>,
}

/// Processes of one cluster, killed on drop.
pub struct Cluster {
    pub root: tempfile::TempDir,
    pub nodes: Vec<Proc>,
    pub peers: String,
    pub extra: Vec<String>,
    pub client: Http,
}

impl Cluster {
    /// Starts `n` founding nodes with `extra` flags each.
    pub async fn start(n: u64, extra: &[&str]) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        let status = Command::new(BIN)
            .args(["certs", "--out"])
            .arg(root.path().join("tls"))
            .args(["--nodes", &ids.join(",")])
            .status()
            .unwrap();
        assert!(status.success(), "certs failed");
        let mut nodes = Vec::new();
        for id in 1..=n {
            let raft: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
            let http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
            nodes.push(Proc {
                id,
                raft,
                http,
                dir: root.path().join(format!("node-{id}")),
                child: None,
                log: root.path().join(format!("node-{id}.log")),
                own_args: Vec::new(),
            });
        }
        let peers = nodes
            .iter()
            .map(|p| format!("{}={}/{}", p.id, p.raft, p.http))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            root,
            nodes,
            peers,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            client: Http::new(),
        };
        for i in 0..n as usize {
            cluster.spawn(i);
        }
        cluster.wait_leader(Duration::from_secs(30)).await;
        cluster
    }

    /// Starts node `i`'s process (again).
    pub fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .args(["--id", &node.id.to_string()])
            .args(["--raft-addr", &node.raft.to_string()])
            .args(["--http-addr", &node.http.to_string()])
            .arg("--data-dir")
            .arg(&node.dir)
            .arg("--tls-dir")
            .arg(self.root.path().join("tls"))
            .args(if node.own_args.is_empty() {
                vec![
                    "--peers".to_owned(),
                    self.peers.clone(),
                    "--init".to_owned(),
                ]
            } else {
                node.own_args.clone()
            })
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.nodes[i].child = Some(child);
    }

    /// Adds node `id` (its certificate issued from the cluster's CA by
    /// `certs --add-node`) and starts it with `args` instead of `--peers
    /// ... --init` (say `--join URL`); returns its index.
    pub fn spawn_new(&mut self, id: u64, args: &[&str]) -> usize {
        let status = Command::new(BIN)
            .args(["certs", "--out"])
            .arg(self.root.path().join("tls"))
            .args(["--add-node", &id.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "certs --add-node failed");
        self.nodes.push(Proc {
            id,
            raft: format!("127.0.0.1:{}", free_udp_port()).parse().unwrap(),
            http: format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap(),
            dir: self.root.path().join(format!("node-{id}")),
            child: None,
            log: self.root.path().join(format!("node-{id}.log")),
            own_args: args.iter().map(|s| s.to_string()).collect(),
        });
        let i = self.nodes.len() - 1;
        self.spawn(i);
        i
    }

    /// Nodes `indexes`' URLs, comma-separated (a CLI `--endpoints`).
    pub fn endpoints_of(&self, indexes: &[usize]) -> String {
        indexes
            .iter()
            .map(|i| self.url(*i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs node `i` and waits for it to exit; returns its exit status.
    pub fn terminate(&mut self, i: usize) -> std::process::ExitStatus {
        let mut child = self.nodes[i].child.take().expect("node is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        child.wait().unwrap()
    }

    /// Node `i`'s base URL.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}", self.nodes[i].http)
    }

    /// Node `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// `/cluster/status` of node `i`, if it answers.
    pub async fn status(&self, i: usize) -> Option<Value> {
        let (code, body) = self
            .client
            .get_json(&self.url(i), "/cluster/status")
            .await
            .ok()?;
        (code == StatusCode::OK).then_some(body)
    }

    /// Waits until every running node agrees on a leader that is running;
    /// returns its index.
    pub async fn wait_leader(&self, patience: Duration) -> usize {
        let deadline = Instant::now() + patience;
        loop {
            let mut leaders = Vec::new();
            let mut all = true;
            for (i, node) in self.nodes.iter().enumerate() {
                if node.child.is_none() {
                    continue;
                }
                match self.status(i).await {
                    Some(s) => leaders.push(s["leader"].as_u64()),
                    None => all = false,
                }
            }
            if all {
                if let Some(Some(leader)) = leaders.first().copied() {
                    let index = self.nodes.iter().position(|n| n.id == leader);
                    if leaders.iter().all(|l| *l == Some(leader))
                        && index.is_some_and(|i| self.nodes[i].child.is_some())
                    {
                        return index.unwrap();
                    }
                }
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = (0..self.nodes.len()).map(|i| self.log(i)).collect();
                panic!(
                    "no agreed leader within {patience:?}; views {leaders:?}\n{}",
                    logs.join("\n----\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node reports the same digest at the same
    /// applied index; returns it.
    pub async fn wait_converged(&self, patience: Duration) -> Value {
        let deadline = Instant::now() + patience;
        loop {
            let mut digests = Vec::new();
            for (i, node) in self.nodes.iter().enumerate() {
                if node.child.is_some() {
                    if let Ok((StatusCode::OK, body)) =
                        self.client.get_json(&self.url(i), "/cluster/digest").await
                    {
                        digests.push(body);
                    }
                }
            }
            let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
            if digests.len() == running && digests.windows(2).all(|w| w[0] == w[1]) {
                return digests.pop().unwrap();
            }
            if Instant::now() > deadline {
                panic!("nodes did not converge: {digests:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                eprintln!("---- node {} log ----\n{}", i + 1, self.log(i));
            }
        }
    }
}

/// What a CLI run gave.
#[derive(Debug)]
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// Its stdout as one JSON value (panics if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// Runs `rafter-kv ARGS` (a client subcommand) to the end.
pub fn cli(args: &[&str]) -> CliRun {
    let output = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    CliRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A small HTTP/1.1 client.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// What a request got.
pub type Answer = (StatusCode, Value);

impl Http {
    pub fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    /// Sends a request; the body of the answer as bytes, with its headers.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: impl Into<Bytes>,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), String> {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Full::new(body.into()))
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .map_err(|_| "no answer in 30 s".to_string())?
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, headers, body))
    }

    /// POSTs JSON and parses the JSON answer.
    pub async fn post_json(&self, base: &str, path: &str, body: &Value) -> Result<Answer, String> {
        self.post_raw(base, path, &[], body.to_string()).await
    }

    /// POSTs raw bytes (with extra headers) and parses the JSON answer.
    pub async fn post_raw(
        &self,
        base: &str,
        path: &str,
        headers: &[(&str, String)],
        body: impl Into<Bytes>,
    ) -> Result<Answer, String> {
        let (status, _, body) = self
            .send(Method::POST, &format!("{base}{path}"), headers, body)
            .await?;
        let value = serde_json::from_slice(&body).map_err(|e| {
            format!(
                "{status}: not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        })?;
        Ok((status, value))
    }

    /// GETs JSON.
    pub async fn get_json(&self, base: &str, path: &str) -> Result<Answer, String> {
        let (status, _, body) = self
            .send(Method::GET, &format!("{base}{path}"), &[], Bytes::new())
            .await?;
        let value = serde_json::from_slice(&body).map_err(|e| {
            format!(
                "{status}: not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        })?;
        Ok((status, value))
    }
}

/// Base64 of `text`.
pub fn b64(text: impl AsRef<[u8]>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The i64 at `value[field]` (etcd writes int64 as strings; absent is 0).
pub fn int(value: &Value, field: &str) -> i64 {
    match &value[field] {
        Value::String(s) => s.parse().unwrap(),
        Value::Number(n) => n.as_i64().unwrap(),
        Value::Null => 0,
        other => panic!("{field} is {other}"),
    }
}

/// The header revision of an etcd answer.
pub fn revision(answer: &Value) -> i64 {
    int(&answer["header"], "revision")
}

/// A put through the etcd route; panics unless it succeeds.
pub async fn put(http: &Http, base: &str, key: &str, value: &str) -> Value {
    let (code, body) = http
        .post_json(
            base,
            "/v3/kv/put",
            &serde_json::json!({"key": b64(key), "value": b64(value)}),
        )
        .await
        .unwrap();
    assert_eq!(code, StatusCode::OK, "{body}");
    body
}
