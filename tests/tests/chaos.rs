//! Chaos rounds with real `rafter-kv` processes (`rafter_tests::chaos`):
//! one seeded round must pass every check, and a round with a planted
//! fault (serializable reads sold as linearizable) must be flagged by the
//! linearizability check, and by it alone. First, the nemesis's means are
//! shown to work (a cut drops the traffic of its direction only, and an
//! isolated leader is replaced), and the acknowledged-writes check to
//! fail on a write that does not read back.
//!
//! Needs root (network namespaces, iptables) and iproute2 and iptables.
//! Without them it skips, loudly, unless `CI` is set: then it fails.
//! Cost on the 2-core CI machine with a debug `rafter-kv`: the two rounds
//! run side by side, about 4 minutes in all (150 s and 60 s of faults,
//! plus the heal, convergence and checks).

use std::future::Future;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rafter_tests::chaos::checks::{self, Verdict};
use rafter_tests::chaos::history::{Event, EventType, OpKind};
use rafter_tests::chaos::hosts::{Cut, Hosts};
use rafter_tests::chaos::http::{b64, int, Http};
use rafter_tests::chaos::nodes::Nodes;
use rafter_tests::chaos::{self, Options};
use serde_json::json;

/// Whether this machine can run the rounds; skips (or fails under CI)
/// with the reason otherwise.
fn available() -> bool {
    let why = if !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
    {
        Some("not root".to_string())
    } else {
        ["ip", "iptables-restore"]
            .into_iter()
            .find(|tool| {
                !Command::new(tool)
                    .arg("-V")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .map(|tool| format!("no {tool} on the PATH (iproute2, iptables)"))
    };
    let Some(why) = why else {
        return true;
    };
    if std::env::var_os("CI").is_some() {
        panic!("the chaos test cannot run: {why}");
    }
    eprintln!("\n!!! SKIPPED tests/chaos.rs: {why} (it fails instead when CI is set)\n");
    false
}

/// Polls `check` every 200 ms until it gives `Some`, or panics with `what`
/// after `patience`.
async fn eventually<T, F, Fut>(patience: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} within {patience:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_drops_its_direction_only_and_an_isolated_leader_is_replaced() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let binary = chaos::binary::rafter_kv().expect("a rafter-kv binary");
    let hosts = Hosts::create(3).expect("hosts");
    let mut nodes = Nodes::start(&binary, dir.path(), hosts, &[]).expect("nodes");
    let patience = Duration::from_secs(30);
    let leader = eventually(patience, "a leader", || nodes.leader()).await;
    let old_leader = nodes.id(leader);
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();

    // One way: what the leader sends to one follower is dropped there (its
    // heartbeats), and nothing is dropped at the leader.
    let follower = others[0];
    let one_way = [Cut {
        from: leader,
        to: follower,
    }];
    nodes.hosts_mut().set_cuts(&one_way).unwrap();
    let hosts = nodes.hosts();
    eventually(
        patience,
        "the follower drops the leader's packets",
        || async { (hosts.dropped_packets(follower).unwrap() > 0).then_some(()) },
    )
    .await;
    assert_eq!(hosts.dropped_packets(leader).unwrap(), 0);
    assert_eq!(hosts.dropped_packets(others[1]).unwrap(), 0);

    // Both ways, from everyone: the other two elect one of them.
    let isolated: Vec<Cut> = others
        .iter()
        .flat_map(|&o| {
            [
                Cut {
                    from: leader,
                    to: o,
                },
                Cut {
                    from: o,
                    to: leader,
                },
            ]
        })
        .collect();
    nodes.hosts_mut().set_cuts(&isolated).unwrap();
    let watcher = others[1];
    let new_leader = eventually(patience, "another leader", || async {
        let status = nodes.status(watcher).await.ok()?;
        status["leader"].as_u64().filter(|&id| id != old_leader)
    })
    .await;
    assert!(others.iter().any(|&o| nodes.id(o) == new_leader));

    // Healed: the old leader follows the new one.
    nodes.hosts_mut().set_cuts(&[]).unwrap();
    eventually(patience, "the old leader follows", || async {
        let status = nodes.status(leader).await.ok()?;
        (status["leader"].as_u64() == Some(new_leader)).then_some(())
    })
    .await;
}

fn options(seed: u64, duration: Duration) -> Options {
    let binary = chaos::binary::rafter_kv().expect("a rafter-kv binary");
    Options::new(seed, duration, binary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_round_of_kills_pauses_partitions_and_replacements_passes_every_check() {
    if !available() {
        return;
    }
    let summary = chaos::run(&options(7, Duration::from_secs(150)))
        .await
        .expect("the round runs");
    println!("{summary}");
    assert!(summary.passed(), "{summary}");
    // The round did what it says: faults of every family, and traffic.
    let kinds = ["SIGKILL", "SIGSTOP", "partition", "replace"];
    for kind in kinds {
        assert!(
            summary.faults.iter().any(|f| f.description.contains(kind)
                || (kind == "partition" && f.description.contains("isolate"))),
            "no {kind} in the schedule: {summary}"
        );
    }
    assert!(summary.acknowledged_writes > 100, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_reads_sold_as_linearizable_are_flagged_by_the_linearizability_check() {
    if !available() {
        return;
    }
    let mut options = options(3, Duration::from_secs(60));
    options.workload.stale_reads = true;
    let summary = chaos::run(&options).await.expect("the round runs");
    println!("{summary}");
    match &summary.linearizable {
        Verdict::Fail(why) => assert!(why.contains("is not linearizable"), "{summary}"),
        Verdict::Pass => panic!("stale reads went unnoticed: {summary}"),
    }
    // Writes were not touched: the other checks hold.
    assert!(summary.acknowledged.passed(), "{summary}");
    assert!(summary.converged.passed(), "{summary}");
    // A flagged round keeps its evidence; this one is expected, so clean up.
    let kept = summary.kept.as_ref().expect("a failing round is kept");
    assert!(kept.join("history.jsonl").exists());
    assert!(std::fs::read_dir(kept).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".log")));
    std::fs::remove_dir_all(kept).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_write_that_does_not_read_back_fails_the_acknowledged_writes_check() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let binary = chaos::binary::rafter_kv().expect("a rafter-kv binary");
    let hosts = Hosts::create(3).expect("hosts");
    let nodes = Nodes::start(&binary, dir.path(), hosts, &[]).expect("nodes");
    let patience = Duration::from_secs(30);
    let http = Http::new();
    let mut events = Vec::new();
    for value in [41u64, 42] {
        let body = json!({"key": b64("chaos-0"), "value": b64(value.to_string())});
        let answer = eventually(patience, "a put", || async {
            http.post(&format!("{}/v3/kv/put", nodes.url(0)), &[], &body, patience)
                .await
                .ok()
        })
        .await;
        let mut ok = Event::new(EventType::Ok, 1, OpKind::Put, "chaos-0");
        ok.seq = events.len() as u64;
        ok.value = Some(value);
        ok.revision = int(&answer["header"]["revision"]);
        events.push(ok);
    }
    nodes.wait_converged(patience).await.expect("converged");
    let (verdict, writes) = checks::acknowledged_writes_readable(&events, &nodes).await;
    assert_eq!((verdict, writes), (Verdict::Pass, 2));

    // A value that was never written, claimed at the second revision.
    let mut claimed = events.clone();
    claimed[1].value = Some(43);
    let (verdict, _) = checks::acknowledged_writes_readable(&claimed, &nodes).await;
    assert!(
        matches!(&verdict, Verdict::Fail(why) if why.starts_with("1 of 2") && why.contains("\"42\"")),
        "{verdict}"
    );

    // The first write compacted away: it no longer reads back.
    let revision = events[1].revision.unwrap();
    http.post(
        &format!("{}/v3/kv/compaction", nodes.url(0)),
        &[],
        &json!({ "revision": revision }),
        patience,
    )
    .await
    .expect("compaction");
    let (verdict, _) = checks::acknowledged_writes_readable(&events, &nodes).await;
    assert!(
        matches!(&verdict, Verdict::Fail(why) if why.starts_with("1 of 2") && why.contains("no read succeeded")),
        "{verdict}"
    );
}
