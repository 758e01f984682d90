//! Chaos with real `rafter-kv` processes: a five-node cluster, each node
//! a process in its own network namespace ([`hosts`], [`nodes`]), clients
//! running a mixed workload through random nodes and recording a history
//! ([`workload`], [`history`]), a nemesis killing, pausing, partitioning
//! and replacing nodes on a seeded schedule ([`nemesis`]), then, after a
//! full heal, checks of the history and of the nodes' states
//! ([`checks`]) and a printed [`summary`].
//!
//! A node that exits without being killed (a panic, a fail-stop) fails
//! the run too: nothing in a chaos run justifies it.
//!
//! A run: make the hosts and start the nodes; wait for a first write;
//! start the clients and the nemesis; when the schedule ends, heal
//! everything (links restored, paused nodes continued, dead ones
//! restarted) and let the clients go on for [`Options::after_heal`];
//! stop the clients; wait until the nodes converge; check. A failing run
//! (or one asked to with `keep`) keeps its directory: `history.jsonl`,
//! every node's log, the data directories.
//!
//! Needs root (network namespaces, iptables) and `ip`, `iptables-restore`
//! from iproute2 and iptables. `tests/README.md` says how to run it.

pub mod binary;
pub mod checks;
pub mod history;
pub mod hosts;
pub mod http;
pub mod nemesis;
pub mod nodes;
pub mod summary;
pub mod workload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use checks::Verdict;
use history::Recorder;
use hosts::Hosts;
use http::{b64, Http};
use nemesis::Schedule;
use nodes::Nodes;
use summary::Summary;
use workload::WorkloadConfig;

/// Nodes in a chaos cluster.
pub const NODES: usize = 5;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seeds the nemesis's schedule and the clients' choices.
    pub seed: u64,
    /// How long the nemesis runs (its last episode may end a little after).
    pub duration: Duration,
    /// The clients.
    pub workload: WorkloadConfig,
    /// Whether the nemesis may replace nodes (membership changes).
    pub replacements: bool,
    /// Clients go on this long after the final heal, before they stop.
    pub after_heal: Duration,
    /// How long the nodes may take to converge after the clients stop.
    pub converge_patience: Duration,
    /// Keep the run's directory even when it passes.
    pub keep: bool,
    /// The `rafter-kv` binary.
    pub binary: PathBuf,
    /// Where the run's directory is made (the system's temp dir if None).
    pub parent_dir: Option<PathBuf>,
    /// Extra `rafter-kv serve` flags for every node.
    pub serve_args: Vec<String>,
}

impl Options {
    /// The defaults: 10 clients on 6 keys, replacements on, snapshots
    /// every 200 entries (so restarted and new nodes catch up by snapshot).
    pub fn new(seed: u64, duration: Duration, binary: PathBuf) -> Options {
        Options {
            seed,
            duration,
            workload: WorkloadConfig {
                clients: 10,
                keys: 6,
                op_timeout: Duration::from_secs(6),
                attempt_timeout: Duration::from_millis(2500),
                stale_reads: false,
            },
            replacements: true,
            after_heal: Duration::from_secs(5),
            converge_patience: Duration::from_secs(90),
            keep: false,
            binary,
            parent_dir: None,
            serve_args: ["--snapshot-entries", "200", "--request-timeout", "2s"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// A run that could not happen (as opposed to one whose checks failed).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The hosts could not be made (not root, no `ip`, …).
    #[error("hosts: {0}")]
    Hosts(#[from] hosts::HostsError),
    /// The nodes could not be started.
    #[error("nodes: {0}")]
    Nodes(#[from] nodes::NodesError),
    /// The run's directory or history could not be written.
    #[error("run directory: {0}")]
    Io(#[from] std::io::Error),
    /// The cluster never took a first write.
    #[error("the cluster took no write within {0:?} of starting")]
    NeverReady(Duration),
}

/// Runs one seeded round and checks it. `Ok` holds the summary whether
/// the checks passed or not (see [`Summary::passed`]).
pub async fn run(options: &Options) -> Result<Summary, RunError> {
    let started = Instant::now();
    let prefix = format!("rafter-chaos-{}-", options.seed);
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix);
    let dir = match &options.parent_dir {
        Some(parent) => builder.tempdir_in(parent)?,
        None => builder.tempdir()?,
    };
    eprintln!(
        "chaos: seed {}, {:?} of faults, in {}",
        options.seed,
        options.duration,
        dir.path().display()
    );
    let hosts = Hosts::create(NODES)?;
    let nodes = Nodes::start(&options.binary, dir.path(), hosts, &options.serve_args)?;
    let urls: Arc<Vec<String>> = Arc::new((0..NODES).map(|i| nodes.url(i)).collect());
    first_write(&urls).await?;

    let recorder = Recorder::create(&dir.path().join("history.jsonl"), Instant::now())?;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (1..=options.workload.clients as u64)
        .map(|client| {
            tokio::spawn(workload::run_client(
                client,
                options.seed,
                options.workload.clone(),
                urls.clone(),
                recorder.clone(),
                stop.clone(),
            ))
        })
        .collect();

    let schedule = Schedule::generate(options.seed, options.duration, NODES, options.replacements);
    let nodes = tokio::sync::Mutex::new(nodes);
    let chaos_started = Instant::now();
    let faults = nemesis::run(&schedule, &nodes, &recorder).await;
    let chaos = chaos_started.elapsed();
    let mut nodes = nodes.into_inner();
    let healed = heal_all(&mut nodes);
    eprintln!("chaos: healed everything ({healed:?}); clients go on");
    tokio::time::sleep(options.after_heal).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        // A client task panicking is a harness bug: fail loudly.
        client.await.expect("a client task panicked");
    }
    let events = recorder.finish()?;

    eprintln!("chaos: {} events; waiting for convergence", events.len());
    let converged = match nodes.wait_converged(options.converge_patience).await {
        Ok(digest) => {
            eprintln!("chaos: converged at {digest}");
            Verdict::Pass
        }
        Err(e) => Verdict::Fail(e.to_string()),
    };
    nodes.reap();
    let unexpected_exits = nodes.exits().to_vec();
    let (acknowledged, acknowledged_writes) = if converged.passed() {
        checks::acknowledged_writes_readable(&events, &nodes).await
    } else {
        (
            Verdict::Fail("not checked: the nodes did not converge".into()),
            0,
        )
    };
    let history_for_check = events.clone();
    let (linearizable, unobserved_unknown_writes) =
        tokio::task::spawn_blocking(move || checks::linearizable(&history_for_check))
            .await
            .expect("the linearizability check panicked");
    let mut summary = Summary {
        seed: options.seed,
        planted: options
            .workload
            .stale_reads
            .then(|| "serializable reads recorded as linearizable".to_string()),
        duration: options.duration,
        chaos,
        elapsed: started.elapsed(),
        counts: summary::counts(&events),
        recoveries: summary::recoveries(&events, &faults),
        faults,
        linearizable,
        unobserved_unknown_writes,
        acknowledged,
        acknowledged_writes,
        converged,
        unexpected_exits,
        kept: None,
    };
    drop(nodes);
    if options.keep || !summary.passed() {
        summary.kept = Some(dir.keep());
    }
    Ok(summary)
}

/// Restores every link, continues every paused node, restarts every dead
/// one; returns the first error.
fn heal_all(nodes: &mut Nodes) -> Result<(), String> {
    nodes.reap();
    let mut result = nodes.hosts_mut().set_cuts(&[]).map_err(|e| e.to_string());
    for i in 0..nodes.count() {
        let step = if nodes.is_up(i) {
            nodes.set_paused(i, false)
        } else {
            nodes.spawn(i)
        };
        if let Err(e) = step {
            result = result.and(Err(e.to_string()));
        }
    }
    result
}

/// Waits until a put succeeds through some node (the cluster elected a
/// leader and serves).
async fn first_write(urls: &[String]) -> Result<(), RunError> {
    let patience = Duration::from_secs(60);
    let deadline = Instant::now() + patience;
    let http = Http::new();
    let body = json!({"key": b64("chaos-ready"), "value": b64("1")});
    for attempt in 0.. {
        let url = format!("{}/v3/kv/put", urls[attempt % urls.len()]);
        if http
            .post(&url, &[], &body, Duration::from_secs(2))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(RunError::NeverReady(patience))
}
