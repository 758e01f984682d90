//! `rafter-kv` as users run it: three `serve` processes on loopback,
//! requests through different nodes, crashes, restarts, bad input.

mod common;

use std::time::{Duration, Instant};

use common::{b64, int, put, revision, Cluster};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

async fn range(c: &Cluster, node: usize, request: Value) -> Value {
    let (code, body) = c
        .client
        .post_json(&c.url(node), "/v3/kv/range", &request)
        .await
        .unwrap();
    assert_eq!(code, StatusCode::OK, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_agree_on_puts_ranges_deletes_and_transactions() {
    let c = Cluster::start(3, &[]).await;
    // A fresh cluster is at revision 1; each write moves it by one.
    assert_eq!(revision(&put(&c.client, &c.url(0), "a", "1").await), 2);
    assert_eq!(revision(&put(&c.client, &c.url(1), "b", "2").await), 3);
    assert_eq!(revision(&put(&c.client, &c.url(2), "a", "3").await), 4);

    let found = range(&c, 1, json!({"key": b64("a")})).await;
    let kv = &found["kvs"][0];
    assert_eq!(kv["value"], b64("3"));
    assert_eq!(
        (
            int(kv, "create_revision"),
            int(kv, "mod_revision"),
            int(kv, "version")
        ),
        (2, 4, 2)
    );
    assert_eq!(revision(&found), 4);

    // A historical read sees the value of its revision.
    let old = range(&c, 2, json!({"key": b64("a"), "revision": "3"})).await;
    assert_eq!(old["kvs"][0]["value"], b64("1"));
    // Every key: key "\0" .. range_end "\0".
    let all = range(&c, 0, json!({"key": "AA==", "range_end": "AA=="})).await;
    assert_eq!(int(&all, "count"), 2);

    // Delete resets the version; the key comes back at version 1.
    let (code, deleted) = c
        .client
        .post_json(
            &c.url(2),
            "/v3/kv/deleterange",
            &json!({"key": b64("a"), "prev_kv": true}),
        )
        .await
        .unwrap();
    assert_eq!(code, StatusCode::OK);
    assert_eq!((int(&deleted, "deleted"), revision(&deleted)), (1, 5));
    assert_eq!(deleted["prev_kvs"][0]["value"], b64("3"));
    assert!(range(&c, 0, json!({"key": b64("a")}))
        .await
        .get("kvs")
        .is_none());
    put(&c.client, &c.url(1), "a", "4").await;
    let again = range(&c, 2, json!({"key": b64("a")})).await;
    assert_eq!(
        (
            int(&again["kvs"][0], "version"),
            int(&again["kvs"][0], "create_revision")
        ),
        (1, 6)
    );

    // Transactions: a compare that holds runs `success`, one that fails
    // runs `failure`.
    let (_, txn) = c
        .client
        .post_json(
            &c.url(0),
            "/v3/kv/txn",
            &json!({
                "compare": [{"key": b64("b"), "target": "VERSION", "result": "EQUAL", "version": "1"}],
                "success": [{"request_put": {"key": b64("c"), "value": b64("5")}}],
                "failure": [{"request_range": {"key": b64("b")}}]
            }),
        )
        .await
        .unwrap();
    assert_eq!(txn["succeeded"], true, "{txn}");
    assert_eq!(revision(&txn), 7);
    let (_, txn) = c
        .client
        .post_json(
            &c.url(1),
            "/v3/kv/txn",
            &json!({
                "compare": [{"key": b64("b"), "target": "VALUE", "result": "EQUAL", "value": b64("x")}],
                "success": [{"request_put": {"key": b64("c"), "value": b64("6")}}],
                "failure": [{"request_range": {"key": b64("b")}}]
            }),
        )
        .await
        .unwrap();
    assert!(txn.get("succeeded").is_none(), "{txn}");
    assert_eq!(
        txn["responses"][0]["response_range"]["kvs"][0]["value"],
        b64("2")
    );
    assert_eq!(
        revision(&txn),
        7,
        "a transaction that changed nothing keeps the revision"
    );

    // Plain routes, through a follower and a prefix scan.
    let (code, _, body) = c
        .client
        .send(
            Method::PUT,
            &format!("{}/kv/greeting/en", c.url(2)),
            &[],
            "hello",
        )
        .await
        .unwrap();
    assert_eq!(code, StatusCode::OK, "{body:?}");
    let (code, headers, body) = c
        .client
        .send(
            Method::GET,
            &format!("{}/kv/greeting/en", c.url(0)),
            &[],
            "",
        )
        .await
        .unwrap();
    assert_eq!((code, &body[..]), (StatusCode::OK, &b"hello"[..]));
    assert_eq!(headers["x-rafter-revision"], "8");
    let (_, scan) = c
        .client
        .get_json(&c.url(1), "/kv?prefix=greet")
        .await
        .unwrap();
    assert_eq!(
        scan,
        json!({"kvs": [{"key": "greeting/en", "value": "hello", "mod_revision": 8}]})
    );
    let (code, _, _) = c
        .client
        .send(Method::GET, &format!("{}/kv/missing", c.url(1)), &[], "")
        .await
        .unwrap();
    assert_eq!(code, StatusCode::NOT_FOUND);

    // Compaction: older revisions are gone, later ones answer as before.
    let (code, body) = c
        .client
        .post_json(&c.url(1), "/v3/kv/compaction", &json!({"revision": 5}))
        .await
        .unwrap();
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = c
        .client
        .post_json(
            &c.url(2),
            "/v3/kv/range",
            &json!({"key": b64("a"), "revision": 3}),
        )
        .await
        .unwrap();
    assert_eq!(
        (code, body["code"].as_u64()),
        (StatusCode::BAD_REQUEST, Some(11)),
        "{body}"
    );
    let at5 = range(&c, 0, json!({"key": b64("b"), "revision": 5})).await;
    assert_eq!(at5["kvs"][0]["value"], b64("2"));

    let digest = c.wait_converged(Duration::from_secs(10)).await;
    assert_eq!(digest["revision"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_error_and_changes_nothing() {
    let c = Cluster::start(3, &["--max-request-bytes", "4096"]).await;
    put(&c.client, &c.url(0), "k", "v").await;
    let before = revision(&range(&c, 0, json!({"key": b64("k")})).await);
    let big = json!({"key": b64("k"), "value": b64(vec![b'x'; 8000])}).to_string();
    let cases: Vec<(&str, &str, String, u16, Option<u64>)> = vec![
        ("POST", "/v3/kv/put", "{not json".into(), 400, Some(3)),
        (
            "POST",
            "/v3/kv/put",
            r#"{"key":"!!!","value":"dg=="}"#.into(),
            400,
            Some(3),
        ),
        (
            "POST",
            "/v3/kv/put",
            r#"{"value":"dg=="}"#.into(),
            400,
            Some(3),
        ),
        (
            "POST",
            "/v3/kv/put",
            r#"{"key":"aw==","lease":"9"}"#.into(),
            404,
            Some(5),
        ),
        ("POST", "/v3/kv/put", big, 413, Some(3)),
        (
            "POST",
            "/v3/kv/range",
            r#"{"key":"aw==","limit":"many"}"#.into(),
            400,
            Some(3),
        ),
        (
            "POST",
            "/v3/kv/range",
            r#"{"key":"aw==","revision":"99"}"#.into(),
            400,
            Some(11),
        ),
        (
            "POST",
            "/v3/kv/deleterange",
            r#"{"range_end":"eg=="}"#.into(),
            400,
            Some(3),
        ),
        (
            "POST",
            "/v3/kv/compaction",
            r#"{"revision":"999"}"#.into(),
            400,
            Some(11),
        ),
        (
            "POST",
            "/v3/kv/txn",
            r#"{"success":[{"request_put":{"key":"aw=="}},{"request_put":{"key":"aw=="}}]}"#.into(),
            400,
            Some(3),
        ),
        ("POST", "/v3/kv/nope", "{}".into(), 404, None),
        ("GET", "/v3/kv/put", "".into(), 405, None),
        ("PUT", "/kv/", "v".into(), 404, None),
        ("GET", "/kv?limit=-1", "".into(), 400, Some(3)),
        ("GET", "/kv/k?consistency=eventual", "".into(), 400, Some(3)),
        ("PUT", "/kv/k", "x".repeat(5000), 413, Some(3)),
    ];
    for (method, path, body, status, code) in cases {
        for node in 0..3 {
            let method: Method = method.parse().unwrap();
            let (got, _, answer) = c
                .client
                .send(
                    method.clone(),
                    &format!("{}{path}", c.url(node)),
                    &[],
                    body.clone(),
                )
                .await
                .unwrap();
            assert_eq!(
                got.as_u16(),
                status,
                "{method} {path} on node {node}: {answer:?}"
            );
            if let Some(code) = code {
                let answer: Value = serde_json::from_slice(&answer).unwrap();
                assert_eq!(
                    answer["code"].as_u64(),
                    Some(code),
                    "{method} {path}: {answer}"
                );
                assert!(answer["error"].is_string() && answer["message"] == answer["error"]);
            }
        }
    }
    let after = revision(&range(&c, 1, json!({"key": b64("k")})).await);
    assert_eq!(before, after, "a refused request moved the revision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_with_its_session_applies_once_across_a_leader_change() {
    let c = Cluster::start(3, &[]).await;
    let session = |seq: u64| {
        vec![
            ("x-rafter-client", "77".to_string()),
            ("x-rafter-seq", seq.to_string()),
        ]
    };
    let body = json!({"key": b64("counter"), "value": b64("1"), "prev_kv": true}).to_string();
    let (code, first) = c
        .client
        .post_raw(&c.url(0), "/v3/kv/put", &session(1), body.clone())
        .await
        .unwrap();
    assert_eq!(code, StatusCode::OK, "{first}");
    // The same write again, through another node: the remembered answer.
    let (_, retry) = c
        .client
        .post_raw(&c.url(1), "/v3/kv/put", &session(1), body.clone())
        .await
        .unwrap();
    assert_eq!(revision(&retry), revision(&first));

    // Move leadership, then retry once more.
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let target = (leader + 1) % 3;
    let (code, moved) = c
        .client
        .post_json(
            &c.url(leader),
            "/cluster/transfer-leader",
            &json!({"to": c.nodes[target].id}),
        )
        .await
        .unwrap();
    assert_eq!(code, StatusCode::OK, "{moved}");
    assert_eq!(c.wait_leader(Duration::from_secs(10)).await, target);
    let (_, retry) = c
        .client
        .post_raw(&c.url(2), "/v3/kv/put", &session(1), body.clone())
        .await
        .unwrap();
    assert_eq!(revision(&retry), revision(&first));
    let found = range(&c, 0, json!({"key": b64("counter")})).await;
    assert_eq!(
        int(&found["kvs"][0], "version"),
        1,
        "the write applied more than once"
    );

    // The next sequence number is a new write; an older one is refused.
    let (_, next) = c
        .client
        .post_raw(&c.url(0), "/v3/kv/put", &session(2), body.clone())
        .await
        .unwrap();
    assert_eq!(revision(&next), revision(&first) + 1);
    let (code, stale) = c
        .client
        .post_raw(&c.url(0), "/v3/kv/put", &session(1), body)
        .await
        .unwrap();
    assert_eq!(
        (code, stale["code"].as_u64()),
        (StatusCode::BAD_REQUEST, Some(3)),
        "{stale}"
    );
    // Half a session is refused before the log.
    let (code, _) = c
        .client
        .post_raw(
            &c.url(0),
            "/v3/kv/put",
            &[("x-rafter-seq", "3".to_string())],
            "{}",
        )
        .await
        .unwrap();
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

/// Writes `key-<n>` one after another through the nodes in turn, keeping
/// the acknowledged ones, until told to stop; records the longest time
/// without an acknowledgement.
async fn steady_writes(
    c_urls: Vec<String>,
    http: common::Http,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<u64>, Duration) {
    let mut acked = Vec::new();
    let mut last_ack = Instant::now();
    let mut longest_gap = Duration::ZERO;
    let mut n = 0u64;
    while !*stop.borrow() {
        n += 1;
        let url = &c_urls[n as usize % c_urls.len()];
        let body = json!({"key": b64(format!("key-{n}")), "value": b64(n.to_string())});
        if let Ok((StatusCode::OK, _)) = http.post_json(url, "/v3/kv/put", &body).await {
            acked.push(n);
            longest_gap = longest_gap.max(last_ack.elapsed());
            last_ack = Instant::now();
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    (acked, longest_gap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_catches_up_when_restarted() {
    // Small snapshot interval: the killed node's state machine (whose last
    // batches were not yet durable) may restart behind the purged log and
    // must come back through its own snapshot.
    let mut c = Cluster::start(3, &["--snapshot-entries", "50"]).await;
    let urls: Vec<String> = (0..3).map(|i| c.url(i)).collect();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(steady_writes(urls, c.client.clone(), stopped));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    c.kill(leader);
    let killed_at = Instant::now();
    let new_leader = c.wait_leader(Duration::from_secs(30)).await;
    assert_ne!(new_leader, leader);
    eprintln!("new leader after {:?}", killed_at.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.spawn(leader);
    c.wait_leader(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.send(true).unwrap();
    let (acked, gap) = writer.await.unwrap();
    eprintln!("{} writes acknowledged; longest gap {gap:?}", acked.len());
    assert!(acked.len() > 10, "too few writes: {}", acked.len());
    c.wait_converged(Duration::from_secs(30)).await;
    // Every acknowledged write is on the restarted node (a local read) and
    // on the cluster (a linearizable read).
    for n in acked {
        let key = b64(format!("key-{n}"));
        for (node, serializable) in [(leader, true), (new_leader, false)] {
            let found = range(&c, node, json!({"key": key, "serializable": serializable})).await;
            assert_eq!(
                found["kvs"][0]["value"],
                b64(n.to_string()),
                "key-{n} on node {node}"
            );
        }
    }
}

/// A cluster snapshotting every 20 entries, with one node (returned) down
/// while 150 puts go through and both others snapshot past entry 100:
/// the node's next entries are purged everywhere.
async fn a_node_behind_the_snapshots() -> (Cluster, usize) {
    let mut c = Cluster::start(3, &["--snapshot-entries", "20"]).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let behind = (leader + 1) % 3;
    c.kill(behind);
    for n in 0..150 {
        put(&c.client, &c.url(leader), &format!("k{n}"), &n.to_string()).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for node in (0..3).filter(|&n| n != behind) {
        loop {
            let status = c.status(node).await.unwrap();
            if status["snapshot_index"].as_u64().unwrap() > 100 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    (c, behind)
}

/// Starts the node `a_node_behind_the_snapshots` left down and checks it
/// catches up, by installing a snapshot.
async fn brought_back_by_snapshot(c: &mut Cluster, behind: usize) {
    c.spawn(behind);
    let digest = c.wait_converged(Duration::from_secs(30)).await;
    assert!(digest["revision"].as_i64().unwrap() >= 151);
    assert!(
        c.log(behind).contains("installed a snapshot"),
        "{}",
        c.log(behind)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_compacted_log_catches_up_by_snapshot() {
    let (mut c, behind) = a_node_behind_the_snapshots().await;
    brought_back_by_snapshot(&mut c, behind).await;
    let (_, _, metrics) = c
        .client
        .send(Method::GET, &format!("{}/metrics", c.url(behind)), &[], "")
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("rafter_kv_snapshots_installed_total 1"),
        "{metrics}"
    );
}

/// A snapshot is a view of the store held in memory: a node killed and
/// restarted cannot serve the one its log store names, and takes a new
/// view of its store instead. The leader asks for a build when its
/// transfer finds the old one gone; without that, on a cluster with no
/// new writes, the node behind never caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_restarted_since_its_snapshot_still_brings_a_node_back_by_snapshot() {
    let (mut c, behind) = a_node_behind_the_snapshots().await;
    // Killed, not stopped: whatever the last flush made durable is what a
    // restart finds.
    for node in (0..3).filter(|&n| n != behind) {
        c.kill(node);
    }
    for node in (0..3).filter(|&n| n != behind) {
        c.spawn(node);
    }
    c.wait_leader(Duration::from_secs(30)).await;
    brought_back_by_snapshot(&mut c, behind).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_node_cleanly_and_a_restart_resumes_its_data() {
    let mut c = Cluster::start(3, &[]).await;
    put(&c.client, &c.url(0), "kept", "yes").await;
    c.wait_converged(Duration::from_secs(10)).await;
    let status = c.terminate(2);
    assert!(status.success(), "exit {status:?}: {}", c.log(2));
    c.spawn(2);
    c.wait_leader(Duration::from_secs(30)).await;
    // Its last applies may not have been durable: it applies them again
    // from its log before its own state shows them.
    c.wait_converged(Duration::from_secs(10)).await;
    let found = range(&c, 2, json!({"key": b64("kept"), "serializable": true})).await;
    assert_eq!(found["kvs"][0]["value"], b64("yes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_a_request_fails_with_503_at_its_deadline() {
    let mut c = Cluster::start(3, &["--request-timeout", "2s"]).await;
    put(&c.client, &c.url(0), "k", "v").await;
    // Every node applied it before the others go: a serializable read on
    // the survivor then finds it (a follower learns commits a moment after
    // the leader answers).
    c.wait_converged(Duration::from_secs(10)).await;
    c.kill(1);
    c.kill(2);
    let started = Instant::now();
    let (code, body) = c
        .client
        .post_json(
            &c.url(0),
            "/v3/kv/put",
            &json!({"key": b64("k"), "value": b64("w")}),
        )
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(
        (code, body["code"].as_u64()),
        (StatusCode::SERVICE_UNAVAILABLE, Some(14)),
        "{body}"
    );
    // Not a hang: answered around its deadline (generous bound: shared CI).
    assert!(
        waited < Duration::from_secs(20),
        "answered after {waited:?}"
    );
    let (code, _) = c.client.get_json(&c.url(0), "/health").await.unwrap();
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    // A serializable read still answers from the survivor's own state.
    let found = range(&c, 0, json!({"key": b64("k"), "serializable": true})).await;
    assert_eq!(found["kvs"][0]["value"], b64("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_a_follower_travel_to_the_leader_in_batches() {
    let c = Cluster::start(3, &[]).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let follower = (leader + 1) % 3;
    let writes: Vec<_> = (0..200)
        .map(|n| {
            let (http, url) = (c.client.clone(), c.url(follower));
            tokio::spawn(async move {
                let body = json!({"key": b64(format!("w{n}")), "value": b64("x")});
                http.post_json(&url, "/v3/kv/put", &body).await.unwrap()
            })
        })
        .collect();
    let mut revisions = Vec::new();
    for write in writes {
        let (code, body) = write.await.unwrap();
        assert_eq!(code, StatusCode::OK, "{body}");
        revisions.push(revision(&body));
    }
    revisions.sort();
    revisions.dedup();
    assert_eq!(revisions.len(), 200, "each write has its own revision");
    let (_, _, metrics) = c
        .client
        .send(
            Method::GET,
            &format!("{}/metrics", c.url(follower)),
            &[],
            "",
        )
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
            .parse()
            .unwrap()
    };
    let (writes, batches) = (
        counter("rafter_kv_forwarded_total"),
        counter("rafter_kv_forwarded_batches_total"),
    );
    assert_eq!(writes, 200);
    assert!(batches < writes, "{batches} batches for {writes} writes");
    let digest = c.wait_converged(Duration::from_secs(10)).await;
    assert_eq!(digest["revision"], 201);
}

/// `--lease-reads`: the leader answers linearizable reads from its lease
/// (counted in `/metrics`), and they still see every acknowledged write,
/// on the leader and through a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_lease_reads_the_leader_serves_reads_from_its_lease() {
    let c = Cluster::start(3, &["--lease-reads"]).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let follower = (leader + 1) % 3;
    for n in 0..20 {
        let value = format!("v{n}");
        put(&c.client, &c.url(follower), "k", &value).await;
        for node in [leader, follower] {
            let found = range(&c, node, json!({"key": b64("k")})).await;
            assert_eq!(found["kvs"][0]["value"], b64(&value), "read on node {node}");
        }
    }
    let (_, _, metrics) = c
        .client
        .send(Method::GET, &format!("{}/metrics", c.url(leader)), &[], "")
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    let served: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rafter_kv_lease_reads_total "))
        .unwrap_or_else(|| panic!("no lease counter:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(served > 0, "no read was served from the lease");
}
