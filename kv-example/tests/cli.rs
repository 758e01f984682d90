//! The client subcommands against real `rafter-kv serve` processes:
//! every subcommand with `--json` parsed, endpoints that are down or answer
//! 503 skipped, and the exit codes that tell "not found", "refused" and
//! "unreachable" apart.

mod common;

use std::time::{Duration, Instant};

use common::{cli, free_tcp_port, Cluster};
use serde_json::Value;

const NOT_FOUND: i32 = 3;
const REFUSED: i32 = 4;
const UNREACHABLE: i32 = 5;
const COMPARE_FAILED: i32 = 6;

/// Runs `rafter-kv <args> --endpoints <endpoints> --json`, expects exit 0,
/// returns the parsed output.
fn ok_json(args: &[&str], endpoints: &str) -> Value {
    let mut all = args.to_vec();
    all.extend(["--endpoints", endpoints, "--json"]);
    let run = cli(&all);
    assert_eq!(run.code, 0, "{args:?}: {run:?}");
    run.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_works_through_a_dead_and_a_503_endpoint() {
    let mut cluster = Cluster::start(3, &[]).await;
    // Node 4 runs but belongs to no configuration yet (`--peers` without
    // `--init` only says where the members are): it answers 503. A port
    // nobody listens on is "down".
    let peers = cluster.peers.clone();
    let lone = cluster.spawn_new(4, &["--peers", &peers]);
    let dead = format!("http://127.0.0.1:{}", free_tcp_port());
    let healthy = cluster.endpoints_of(&[0, 1, 2]);
    let endpoints = format!("{dead},{},{healthy}", cluster.url(lone));

    // put, get, scan, del, txn-cas, compact, with --json parsed.
    let put = ok_json(&["put", "greeting", "hello"], &endpoints);
    let first = put["revision"].as_i64().unwrap();
    assert!(first >= 2, "{put}");
    let put = ok_json(&["put", "greeting", "bonjour", "--prev-kv"], &endpoints);
    assert_eq!(put["revision"].as_i64().unwrap(), first + 1);
    assert_eq!(put["prev_kv"]["value"], "hello");
    let got = ok_json(&["get", "greeting"], &endpoints);
    assert_eq!(got["value"], "bonjour");
    assert_eq!(got["version"], 2);
    assert_eq!(got["create_revision"].as_i64().unwrap(), first);
    let old = ok_json(
        &["get", "greeting", "--rev", &first.to_string()],
        &endpoints,
    );
    assert_eq!(old["value"], "hello");
    for key in ["users/ann", "users/bob", "users/cy"] {
        ok_json(&["put", key, &key.to_uppercase()], &endpoints);
    }
    let scan = ok_json(&["scan", "users/"], &endpoints);
    let keys: Vec<&str> = scan["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| kv["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["users/ann", "users/bob", "users/cy"]);
    assert_eq!(scan["kvs"][1]["value"], "USERS/BOB");
    let limited = ok_json(&["scan", "users/", "--limit", "2"], &endpoints);
    assert_eq!(limited["more"], true);
    assert_eq!(limited["count"], 3);
    let all = ok_json(&["scan"], &endpoints);
    assert_eq!(all["kvs"].as_array().unwrap().len(), 4);

    let cas = ok_json(
        &["txn-cas", "greeting", "hallo", "--expect", "bonjour"],
        &endpoints,
    );
    assert_eq!(cas["succeeded"], true);
    let mut args = vec![
        "txn-cas", "greeting", "hej", "--expect", "bonjour", "--json",
    ];
    args.extend(["--endpoints", &endpoints]);
    let refused = cli(&args);
    assert_eq!(refused.code, COMPARE_FAILED, "{refused:?}");
    assert_eq!(refused.json()["current"]["value"], "hallo");
    let cas = ok_json(&["txn-cas", "lock", "me", "--absent"], &endpoints);
    assert_eq!(cas["succeeded"], true);

    let deleted = ok_json(&["del", "users/", "--prefix"], &endpoints);
    assert_eq!(deleted["deleted"], 3);
    let deleted = ok_json(&["del", "lock"], &endpoints);
    assert_eq!(deleted["deleted"], 1);
    let compact_to = deleted["revision"].as_i64().unwrap();
    let compacted = ok_json(&["compact", &compact_to.to_string()], &endpoints);
    assert_eq!(compacted["compacted"], compact_to);

    // Exit codes: not found, refused (compacted revision, empty key,
    // future compaction), human output.
    let run = cli(&["get", "nothing-here", "--endpoints", &endpoints]);
    assert_eq!(run.code, NOT_FOUND, "{run:?}");
    assert!(run.stderr.contains("not found"), "{run:?}");
    let run = cli(&[
        "get",
        "greeting",
        "--rev",
        &first.to_string(),
        "--endpoints",
        &endpoints,
    ]);
    assert_eq!(run.code, REFUSED, "{run:?}");
    assert!(run.stderr.contains("compacted"), "{run:?}");
    let run = cli(&["put", "", "x", "--endpoints", &endpoints]);
    assert_eq!(run.code, REFUSED, "{run:?}");
    let run = cli(&["compact", "1000000", "--endpoints", &endpoints]);
    assert_eq!(run.code, REFUSED, "{run:?}");
    let run = cli(&["get", "greeting", "--endpoints", &endpoints]);
    assert_eq!((run.code, run.stdout.as_str()), (0, "hallo\n"), "{run:?}");

    // status and health describe every endpoint; health fails unless all
    // are healthy.
    let status = ok_json(&["status"], &healthy);
    let rows = status.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let leader = rows[0]["status"]["leader"].as_u64().unwrap();
    assert!(rows.iter().all(|r| r["status"]["leader"] == leader));
    assert_eq!(ok_json(&["health"], &healthy).as_array().unwrap().len(), 3);
    let run = cli(&["health", "--json", "--endpoints", &endpoints]);
    assert_eq!(run.code, UNREACHABLE, "{run:?}");
    let health = run.json();
    assert_eq!(health[0]["healthy"], false);
    assert_eq!(health[1]["healthy"], false);
    assert!(
        health[1]["reason"].as_str().unwrap().contains("joining"),
        "{health}"
    );
    assert_eq!(health[2]["healthy"], true);

    // Membership: node 4 becomes a learner, a voter, then leaves.
    let members = ok_json(&["members"], &endpoints);
    assert_eq!(members["members"].as_array().unwrap().len(), 3);
    let (raft4, http4) = (
        cluster.nodes[lone].raft.to_string(),
        cluster.nodes[lone].http.to_string(),
    );
    let added = ok_json(&["add-learner", "4", &raft4, &http4], &endpoints);
    let four = added["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 4)
        .cloned();
    assert_eq!(four.unwrap()["voter"], false, "{added}");
    let promoted = ok_json(&["promote", "4", "--timeout", "30s"], &endpoints);
    assert!(
        promoted["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["voter"] == true),
        "{promoted}"
    );
    assert_eq!(promoted["members"].as_array().unwrap().len(), 4);
    // Node 4's own state catches up (a serializable read is served there).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let run = cli(&[
            "get",
            "greeting",
            "--serializable",
            "--json",
            "--endpoints",
            &cluster.url(lone),
        ]);
        if run.code == 0 && run.json()["value"] == "hallo" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 did not catch up: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let removed = ok_json(&["remove", "4"], &healthy);
    assert_eq!(removed["members"].as_array().unwrap().len(), 3, "{removed}");
    let run = cli(&["promote", "9", "--endpoints", &healthy]);
    assert_eq!(run.code, REFUSED, "{run:?}");

    // transfer-leader, then the new leader is killed: commands through a
    // list that starts with it still succeed.
    let leader_index = cluster.wait_leader(Duration::from_secs(10)).await;
    let target = cluster.nodes[(leader_index + 1) % 3].id;
    let moved = ok_json(&["transfer-leader", &target.to_string()], &healthy);
    assert_eq!(moved["leader"], target, "{moved}");
    let target_index = cluster.nodes.iter().position(|n| n.id == target).unwrap();
    let first_leader = cluster.endpoints_of(&[target_index, 0, 1, 2]);
    cluster.kill(target_index);
    let put = ok_json(&["put", "after", "failover"], &first_leader);
    assert!(put["revision"].as_i64().unwrap() > compact_to);
    let got = ok_json(&["get", "after"], &first_leader);
    assert_eq!(got["value"], "failover");
}

#[test]
fn a_cluster_that_is_down_is_unreachable_within_the_timeout() {
    let endpoints = format!(
        "http://127.0.0.1:{},127.0.0.1:{}",
        free_tcp_port(),
        free_tcp_port()
    );
    let started = Instant::now();
    let run = cli(&[
        "put",
        "k",
        "v",
        "--timeout",
        "1s",
        "--endpoints",
        &endpoints,
    ]);
    assert_eq!(run.code, UNREACHABLE, "{run:?}");
    assert!(run.stderr.contains("cannot connect"), "{run:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let run = cli(&[
        "status",
        "--json",
        "--timeout",
        "1s",
        "--endpoints",
        &endpoints,
    ]);
    assert_eq!(run.code, UNREACHABLE, "{run:?}");
    assert_eq!(run.json().as_array().unwrap().len(), 2);
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    for command in [
        "put",
        "get",
        "del",
        "scan",
        "txn-cas",
        "compact",
        "members",
        "add-learner",
        "promote",
        "remove",
        "transfer-leader",
        "status",
        "health",
        "certs",
        "serve",
    ] {
        let run = cli(&[command, "--help"]);
        assert_eq!(run.code, 0, "{command}: {run:?}");
        assert!(
            run.stdout.contains("Example"),
            "{command} --help: {}",
            run.stdout
        );
        assert!(
            run.stdout.contains(&format!("rafter-kv {command}")),
            "{command} --help: {}",
            run.stdout
        );
    }
    let run = cli(&["txn-cas", "k", "v"]);
    assert_eq!(run.code, 2, "--expect or --absent is required: {run:?}");
}

#[test]
fn certs_add_node_issues_from_the_existing_ca_and_never_makes_one() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let tls = tls.to_str().unwrap();
    let run = cli(&["certs", "--out", tls, "--add-node", "4"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("no cluster CA"), "{run:?}");
    assert!(!dir.path().join("tls/ca.pem").exists(), "a CA was made");
    assert_eq!(cli(&["certs", "--out", tls, "--nodes", "1,2,3"]).code, 0);
    let ca = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();
    let run = cli(&["certs", "--out", tls, "--add-node", "4"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(dir.path().join("tls/node-4.pem").exists());
    assert!(dir.path().join("tls/node-4.key.pem").exists());
    assert_eq!(
        std::fs::read(dir.path().join("tls/ca.pem")).unwrap(),
        ca,
        "the CA changed"
    );
}
