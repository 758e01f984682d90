//! Membership changes with real processes: a node joins a running cluster
//! with `--join` (catching up by snapshot, the log being compacted), is
//! promoted by `--auto-promote`, serves; a removed node refuses requests
//! and says why.

mod common;

use std::time::{Duration, Instant};

use common::{cli, put, Cluster};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

/// Polls `check` every 100 ms until it returns `Some`, or panics with
/// `what` after `patience`.
async fn eventually<T, F, Fut>(patience: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} within {patience:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn voters(status: &Value) -> Vec<u64> {
    status["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["voter"] == true)
        .map(|m| m["id"].as_u64().unwrap())
        .collect()
}

async fn metric(cluster: &Cluster, i: usize, name: &str) -> u64 {
    let (_, _, body) = cluster
        .client
        .send(Method::GET, &format!("{}/metrics", cluster.url(i)), &[], "")
        .await
        .unwrap();
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_by_snapshot_is_promoted_serves_and_a_removed_node_says_so() {
    // A snapshot every 20 entries: the log a joiner needs is long gone.
    let mut cluster = Cluster::start(3, &["--snapshot-entries", "20"]).await;
    let http = cluster.client.clone();
    for n in 0..120 {
        put(
            &http,
            &cluster.url(n % 3),
            &format!("k{n:03}"),
            &format!("v{n}"),
        )
        .await;
    }
    let join = cluster.url(0);
    let four = cluster.spawn_new(4, &["--join", &join, "--auto-promote"]);

    // Added as a learner, caught up, promoted by itself.
    eventually(Duration::from_secs(30), "node 4 votes", || async {
        let status = cluster.status(0).await?;
        (voters(&status) == [1, 2, 3, 4]).then_some(())
    })
    .await;
    let converged = cluster.wait_converged(Duration::from_secs(30)).await;
    assert!(
        converged["revision"].as_i64().unwrap() >= 121,
        "{converged}"
    );
    assert!(
        metric(&cluster, four, "rafter_kv_snapshots_installed_total").await >= 1,
        "node 4 caught up without a snapshot: the test lost its point"
    );
    let log = cluster.log(four);
    assert!(log.contains("joining as a learner"), "{log}");

    // It serves: a write through it, a linearizable read through it.
    put(&http, &cluster.url(four), "from-4", "hello").await;
    let run = cli(&["get", "from-4", "--endpoints", &cluster.url(four)]);
    assert_eq!(run.stdout, "hello\n", "{run:?}");
    let run = cli(&["get", "k007", "--endpoints", &cluster.url(four)]);
    assert_eq!(run.stdout, "v7\n", "{run:?}");
    // Its responses carry the cluster's id, learned when joining.
    let (_, a) = http
        .post_json(
            &cluster.url(0),
            "/v3/kv/range",
            &json!({"key": common::b64("k001")}),
        )
        .await
        .unwrap();
    let (_, b) = http
        .post_json(
            &cluster.url(four),
            "/v3/kv/range",
            &json!({"key": common::b64("k001")}),
        )
        .await
        .unwrap();
    assert_eq!(a["header"]["cluster_id"], b["header"]["cluster_id"]);

    // Remove node 3: the others go on, node 3 refuses with the reason.
    let run = cli(&["remove", "3", "--json", "--endpoints", &cluster.url(0)]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(voters(&run.json()), [1, 2, 4]);
    let three = 2;
    let reason = eventually(
        Duration::from_secs(20),
        "node 3 knows it was removed",
        || async {
            let (code, body) = http.get_json(&cluster.url(three), "/health").await.ok()?;
            let reason = body["reason"].as_str()?.to_owned();
            (code == StatusCode::SERVICE_UNAVAILABLE && reason.contains("removed"))
                .then_some(reason)
        },
    )
    .await;
    eprintln!("node 3's health: {reason}");
    let started = Instant::now();
    let (code, body) = http
        .post_json(
            &cluster.url(three),
            "/v3/kv/put",
            &json!({"key": common::b64("x"), "value": common::b64("y")}),
        )
        .await
        .unwrap();
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("removed"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once"
    );
    // A client listing node 3 first moves on.
    let endpoints = cluster.endpoints_of(&[three, 0, 1]);
    let run = cli(&["put", "after-removal", "ok", "--endpoints", &endpoints]);
    assert_eq!(run.code, 0, "{run:?}");
    cluster.kill(three);

    // Node 4 restarts with the same flags and resumes. Its `joined` mark
    // is removed first, as if it had crashed before writing it: the join
    // is taken up again, finds a configuration and does not ask again.
    let marker = cluster.nodes[four].dir.join("joined");
    assert!(
        marker.exists(),
        "node 4 holds a configuration: joined is written"
    );
    cluster.kill(four);
    std::fs::remove_file(&marker).unwrap();
    put(&http, &cluster.url(0), "while-4-down", "yes").await;
    cluster.spawn(four);
    let converged = cluster.wait_converged(Duration::from_secs(30)).await;
    let run = cli(&["scan", "--json", "--endpoints", &cluster.url(four)]);
    assert_eq!(run.code, 0, "{run:?}");
    let scan = run.json();
    assert_eq!(scan["count"], 123, "{scan}");
    assert_eq!(scan["revision"], converged["revision"]);
    let log = cluster.log(four);
    assert_eq!(log.matches("joining as a learner").count(), 1, "{log}");
    assert!(marker.exists(), "joined is written again");
}
