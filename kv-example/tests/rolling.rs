//! A rolling restart of all three nodes (SIGTERM, start again, wait until
//! it is caught up, next) under a steady stream of writes: no acknowledged
//! write is lost, and the longest stretch without an acknowledged write
//! is measured and printed for each restart (not asserted: timing on a
//! shared machine is not a test result).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{b64, Cluster};
use hyper::StatusCode;
use serde_json::json;

/// One acknowledged write: its key, value and when the ack came.
type Ack = (String, String, Instant);

/// Writes `w<n>` = `v<n>` one after another, to one node after another
/// (the next when a write fails), until `stop`; returns the acks.
async fn writer(
    cluster_urls: Vec<String>,
    http: common::Http,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
) {
    let mut n = 0u64;
    let mut node = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let (key, value) = (format!("w{n:06}"), format!("v{n}"));
        let body = json!({"key": b64(&key), "value": b64(&value)});
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            http.post_json(&cluster_urls[node], "/v3/kv/put", &body),
        )
        .await;
        match sent {
            Ok(Ok((StatusCode::OK, _))) => {
                acks.lock().unwrap().push((key, value, Instant::now()));
                n += 1;
            }
            // Down, stopping, no leader, outcome unknown: not acknowledged.
            // The next write uses a new key, so an unknown outcome cannot
            // be mistaken for a lost write.
            _ => {
                n += 1;
                node = (node + 1) % cluster_urls.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// The longest time between two consecutive acks in `[from, to]`
/// (counting the last ack before `from` and the first after `to`).
fn longest_gap(acks: &[Ack], from: Instant, to: Instant) -> Duration {
    let times: Vec<Instant> = acks.iter().map(|a| a.2).collect();
    let first = times.iter().rposition(|t| *t <= from).unwrap_or(0);
    let last = times
        .iter()
        .position(|t| *t >= to)
        .unwrap_or(times.len().saturating_sub(1));
    times[first..=last]
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_writes_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, &[]).await;
    let urls: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let writes = tokio::spawn(writer(
        urls,
        cluster.client.clone(),
        stop.clone(),
        acks.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut windows = Vec::new();
    for i in 0..3 {
        let leader = cluster.wait_leader(Duration::from_secs(30)).await;
        let before = acks.lock().unwrap().len();
        let from = Instant::now();
        let status = cluster.terminate(i);
        assert!(
            status.success(),
            "node {} stopped uncleanly: {status}",
            i + 1
        );
        cluster.spawn(i);
        // Caught up: healthy (a leader known, applied up to its commit
        // index) and the cluster agrees on one leader again.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let healthy = matches!(
                cluster.client.get_json(&cluster.url(i), "/health").await,
                Ok((StatusCode::OK, _))
            );
            if healthy {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not come back",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster.wait_leader(Duration::from_secs(30)).await;
        // Let writes flow with every node up before the next restart.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let to = Instant::now();
        let during = acks.lock().unwrap().len() - before;
        windows.push((i, leader == i, from, to, during));
    }
    stop.store(true, Ordering::Relaxed);
    writes.await.unwrap();

    let acks = acks.lock().unwrap().clone();
    for (i, was_leader, from, to, during) in &windows {
        println!(
            "restart of node {}{}: {:?} until caught up, {during} writes acknowledged meanwhile, longest gap {:?}",
            i + 1,
            if *was_leader { " (the leader)" } else { "" },
            *to - *from,
            longest_gap(&acks, *from, *to),
        );
        assert!(
            *during > 0,
            "no write acknowledged while node {} restarted",
            i + 1
        );
    }

    // Every acknowledged write is there, on every node.
    let converged = cluster.wait_converged(Duration::from_secs(30)).await;
    println!(
        "{} writes acknowledged; nodes converged at {converged}",
        acks.len()
    );
    for i in 0..3 {
        let (code, body) = cluster
            .client
            .post_json(
                &cluster.url(i),
                "/v3/kv/range",
                &json!({"key": b64("w"), "range_end": b64("x"), "serializable": true}),
            )
            .await
            .unwrap();
        assert_eq!(code, StatusCode::OK, "{body}");
        let stored: std::collections::BTreeMap<String, String> = body["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|kv| {
                let text = |field: &str| {
                    use base64::Engine;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(kv[field].as_str().unwrap_or_default())
                        .unwrap();
                    String::from_utf8(bytes).unwrap()
                };
                (text("key"), text("value"))
            })
            .collect();
        for (key, value, _) in &acks {
            assert_eq!(
                stored.get(key),
                Some(value),
                "node {}: acknowledged {key} lost",
                i + 1
            );
        }
    }
}
