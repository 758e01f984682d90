//! The compose cluster of `kv-example/deploy/`: the image is built from
//! the Dockerfile (FROM scratch, a statically linked binary), three nodes
//! run on an internal network, and every request goes through the
//! binary's own client inside a container (`docker exec`), as an operator
//! on that network would.
//!
//! Write through node 1, read through node 3; stop the leader's container:
//! writes resume; start it: it catches up; node 4 joins with `--join`,
//! node 3 is removed; everything acknowledged is readable at the end.
//!
//! Needs Docker and `docker-compose` (or `docker compose`), and a static
//! `rafter-kv`: `RAFTER_KV_STATIC_BIN`, else this test builds one with
//! `RUSTFLAGS='-C target-feature=+crt-static' cargo build --target
//! x86_64-unknown-linux-gnu -p rafter-kv` (minutes, the first time).
//! Without Docker it skips, loudly, unless `CI` is set: then it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::CliRun;
use serde_json::Value;

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

fn run(program: &str, args: &[&str], env: &[(&str, String)]) -> CliRun {
    let output = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    CliRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn must(program: &str, args: &[&str], env: &[(&str, String)]) -> String {
    let out = run(program, args, env);
    assert_eq!(out.code, 0, "{program} {args:?}: {out:?}");
    out.stdout
}

/// `docker-compose`, or `docker compose`; `None` if neither works.
fn compose_command() -> Option<Vec<&'static str>> {
    if run("docker-compose", &["version"], &[]).code == 0 {
        return Some(vec!["docker-compose"]);
    }
    if run("docker", &["compose", "version"], &[]).code == 0 {
        return Some(vec!["docker", "compose"]);
    }
    None
}

/// Skips (or fails under CI) with `why`.
fn unavailable(why: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("the Docker test cannot run: {why}");
    }
    eprintln!("\n!!! SKIPPED tests/docker.rs: {why} (it fails instead when CI is set)\n");
    true
}

/// A static `rafter-kv`: `RAFTER_KV_STATIC_BIN`, or built now.
fn static_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("RAFTER_KV_STATIC_BIN") {
        return PathBuf::from(path);
    }
    eprintln!("building a static rafter-kv (set RAFTER_KV_STATIC_BIN to reuse one)");
    let target_dir =
        std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{WORKSPACE}/target"));
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--target",
            "x86_64-unknown-linux-gnu",
            "-p",
            "rafter-kv",
        ])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(WORKSPACE)
        .status()
        .unwrap();
    assert!(status.success(), "static build failed");
    PathBuf::from(target_dir).join("x86_64-unknown-linux-gnu/debug/rafter-kv")
}

/// One compose project: taken down (containers, network, volumes) and its
/// image removed on drop.
struct Deployment {
    compose: Vec<&'static str>,
    project: String,
    env: Vec<(&'static str, String)>,
    net: String,
    image: String,
    _dir: tempfile::TempDir,
}

impl Deployment {
    fn compose(&self, args: &[&str]) -> CliRun {
        let mut all: Vec<&str> = self.compose[1..].to_vec();
        let file = format!("{DEPLOY}/docker-compose.yml");
        all.extend(["-p", &self.project, "-f", &file]);
        all.extend(args);
        run(self.compose[0], &all, &self.env)
    }

    fn container(&self, node: u64) -> String {
        let out = self.compose(&["ps", "-q", &format!("node{node}")]);
        let id = out.stdout.trim().to_owned();
        assert!(!id.is_empty(), "no container for node {node}: {out:?}");
        id
    }

    fn ip(&self, node: u64) -> String {
        format!("{}.{}", self.net, 10 + node)
    }

    fn endpoints(&self, nodes: &[u64]) -> String {
        nodes
            .iter()
            .map(|n| format!("http://{}:8001", self.ip(*n)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `rafter-kv ARGS` run inside node `via`'s container.
    fn kv(&self, via: u64, args: &[&str]) -> CliRun {
        let container = self.container(via);
        let mut all = vec!["exec", container.as_str(), "/rafter-kv"];
        all.extend(args);
        run("docker", &all, &[])
    }

    fn logs(&self) -> String {
        self.compose(&["logs", "--no-color"]).stdout
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- compose logs ----\n{}", self.logs());
        }
        let down = self.compose(&["--profile", "join", "down", "-v", "--remove-orphans"]);
        if down.code != 0 {
            self.compose(&["down", "-v", "--remove-orphans"]);
        }
        run("docker", &["rmi", "-f", &self.image], &[]);
    }
}

fn wait_for(patience: Duration, what: &str, mut check: impl FnMut() -> Option<String>) -> Duration {
    let started = Instant::now();
    loop {
        let Some(why) = check() else {
            return started.elapsed();
        };
        assert!(
            started.elapsed() < patience,
            "{what} within {patience:?}: {why}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn status_rows(out: &CliRun) -> Vec<Value> {
    serde_json::from_str::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn compose_cluster_survives_a_stopped_leader_a_join_and_a_removal() {
    if run("docker", &["info"], &[]).code != 0 && unavailable("`docker info` fails") {
        return;
    }
    let Some(compose) = compose_command() else {
        unavailable("neither docker-compose nor docker compose");
        return;
    };
    let binary = static_binary();
    let pid = std::process::id();
    let dir = tempfile::tempdir().unwrap();

    // The image, from the Dockerfile, with only the binary as context.
    let context = dir.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy(&binary, context.join("rafter-kv")).unwrap();
    // A debug build carries ~150 MB of debug info the image does not need.
    let _ = run("strip", &[path(&context.join("rafter-kv"))], &[]);
    let image = format!("rafter-kv-test:{pid}");
    let dockerfile = format!("{DEPLOY}/Dockerfile");
    must(
        "docker",
        &[
            "build",
            "-q",
            "-t",
            &image,
            "-f",
            &dockerfile,
            path(&context),
        ],
        &[],
    );

    let tls = dir.path().join("tls");
    must(
        common::BIN,
        &["certs", "--out", path(&tls), "--nodes", "1,2,3,4"],
        &[],
    );
    // A /24 of its own per run (10.213.X), so runs do not collide.
    let net = format!("10.213.{}", 16 + pid % 200);
    let deployment = Deployment {
        compose,
        project: format!("rafterkvtest{pid}"),
        env: vec![
            ("RAFTER_KV_IMAGE", image.clone()),
            ("RAFTER_KV_TLS", path(&tls).to_owned()),
            ("RAFTER_KV_NET", net.clone()),
        ],
        net,
        image,
        _dir: dir,
    };
    let up = deployment.compose(&["up", "-d", "node1", "node2", "node3"]);
    assert_eq!(up.code, 0, "{up:?}");
    let all = deployment.endpoints(&[1, 2, 3]);
    wait_for(Duration::from_secs(60), "a healthy cluster", || {
        let out = deployment.kv(1, &["health", "--endpoints", &all]);
        (out.code != 0).then(|| format!("{out:?}"))
    });

    // Write through node 1, read through node 3.
    let mut acknowledged: Vec<(String, String)> = Vec::new();
    assert!(put_one(
        &deployment,
        &mut acknowledged,
        1,
        &deployment.endpoints(&[1]),
        "greeting".into(),
        "hello".into()
    ));
    let out = deployment.kv(
        3,
        &[
            "get",
            "greeting",
            "--endpoints",
            &deployment.endpoints(&[3]),
        ],
    );
    assert_eq!(out.stdout, "hello\n", "{out:?}");
    for n in 0..20 {
        assert!(put_one(
            &deployment,
            &mut acknowledged,
            2,
            &all,
            format!("k{n:02}"),
            format!("v{n}")
        ));
    }

    // Stop the leader's container: writes resume through the others.
    let out = deployment.kv(1, &["status", "--json", "--endpoints", &all]);
    let leader = status_rows(&out)
        .iter()
        .find_map(|r| r["status"]["leader"].as_u64())
        .unwrap_or_else(|| panic!("no leader: {out:?}"));
    let survivor = if leader == 1 { 2 } else { 1 };
    let stopped = Instant::now();
    must(
        "docker",
        &["stop", "-t", "10", &deployment.container(leader)],
        &[],
    );
    let mut n = 20;
    let gap = wait_for(
        Duration::from_secs(30),
        "a write after the leader stopped",
        || {
            n += 1;
            (!put_one(
                &deployment,
                &mut acknowledged,
                survivor,
                &all,
                format!("k{n:02}"),
                format!("v{n}"),
            ))
            .then(|| "write refused".into())
        },
    );
    eprintln!(
        "leader {leader} stopped: writes resumed {:?} after the stop ({:?} after it returned)",
        stopped.elapsed(),
        gap
    );
    for _ in 0..10 {
        n += 1;
        assert!(put_one(
            &deployment,
            &mut acknowledged,
            survivor,
            &all,
            format!("k{n:02}"),
            format!("v{n}")
        ));
    }

    // Start it again: it catches up (its own state holds the last write).
    must("docker", &["start", &deployment.container(leader)], &[]);
    let (last_key, last_value) = acknowledged.last().cloned().unwrap();
    let own = deployment.endpoints(&[leader]);
    wait_for(
        Duration::from_secs(60),
        "the restarted node catches up",
        || {
            let out = deployment.kv(
                survivor,
                &["get", &last_key, "--serializable", "--endpoints", &own],
            );
            (out.stdout != format!("{last_value}\n")).then(|| format!("{out:?}"))
        },
    );

    // Node 4 joins through node 1 and is promoted; node 3 is removed.
    let up = deployment.compose(&["--profile", "join", "up", "-d", "node4"]);
    assert_eq!(up.code, 0, "{up:?}");
    wait_for(Duration::from_secs(60), "node 4 votes", || {
        let out = deployment.kv(1, &["members", "--json", "--endpoints", &all]);
        let voters = serde_json::from_str::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["members"].as_array().cloned())
            .map_or(0, |m| m.iter().filter(|m| m["voter"] == true).count());
        (voters != 4).then(|| format!("{out:?}"))
    });
    let out = deployment.kv(1, &["remove", "3", "--json", "--endpoints", &all]);
    assert_eq!(out.code, 0, "{out:?}");
    let node3 = deployment.endpoints(&[3]);
    wait_for(
        Duration::from_secs(30),
        "node 3 says it was removed",
        || {
            let out = deployment.kv(1, &["health", "--endpoints", &node3]);
            (!out.stdout.contains("removed")).then(|| format!("{out:?}"))
        },
    );
    must(
        "docker",
        &["stop", "-t", "10", &deployment.container(3)],
        &[],
    );
    let rest = deployment.endpoints(&[1, 2, 4]);
    for _ in 0..5 {
        n += 1;
        assert!(put_one(
            &deployment,
            &mut acknowledged,
            4,
            &rest,
            format!("k{n:02}"),
            format!("v{n}")
        ));
    }

    // Everything acknowledged is readable, through node 4 (linearizable).
    let out = deployment.kv(
        4,
        &["scan", "--json", "--endpoints", &deployment.endpoints(&[4])],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let scan: Value = serde_json::from_str(&out.stdout).unwrap();
    for (key, value) in &acknowledged {
        let found = scan["kvs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|kv| kv["key"] == key.as_str());
        assert_eq!(
            found.map(|kv| kv["value"].clone()),
            Some(Value::from(value.as_str())),
            "{key} acknowledged, not read"
        );
    }
    eprintln!(
        "{} acknowledged writes all read back through node 4",
        acknowledged.len()
    );
}

/// A put through node `via`'s container; remembered if acknowledged.
fn put_one(
    deployment: &Deployment,
    acknowledged: &mut Vec<(String, String)>,
    via: u64,
    endpoints: &str,
    key: String,
    value: String,
) -> bool {
    let out = deployment.kv(
        via,
        &[
            "put",
            &key,
            &value,
            "--timeout",
            "3s",
            "--endpoints",
            endpoints,
        ],
    );
    if out.code == 0 {
        acknowledged.push((key, value));
    }
    out.code == 0
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}
