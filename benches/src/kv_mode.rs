//! `kv`: closed-loop HTTP clients against etcd's v3 JSON routes
//! (`/v3/kv/put`, `/v3/kv/range`), so the same load drives rafter-kv and
//! a real etcd.
//!
//! Client `i` talks to endpoint `i mod n` over a keep-alive connection of
//! its own, as etcd's `benchmark` tool spreads its clients. Each call picks
//! a key uniformly from the key space (and, with `--read-ratio`, a range
//! instead of a put); every request body is encoded before the run, and a
//! response is read only as far as its status: 200 is a success, anything
//! else an error counted by its code.
//!
//! `--against-etcd` starts a 3-member etcd and a 3-node rafter-kv on
//! loopback ([`LocalCluster`]) and runs every case against each in turn,
//! round after round, then prints the medians side by side.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};

use crate::http_connection::{self, HttpConnection, Prepared};
use crate::load::{self, Client, Measure};
use crate::local_clusters::{LocalCluster, MemberFigures, System};
use crate::report::Report;
use crate::storage_mode::parse_warmup;

/// Most clients of one case (each is a task and a TCP connection; past a
/// few thousand the file-descriptor limit of a default shell is the cap).
const CLIENTS_MAX: usize = 16_384;
/// Most bytes of pre-encoded request bodies (one put and one range body
/// per key): a key space that needs more is refused rather than swapped.
const BODIES_BYTES_MAX: usize = 512 << 20;
/// Clients that write every key once before a case that reads.
const PREFILL_CLIENTS: usize = 64;

/// What `kv` runs.
#[derive(Debug, Clone, clap::Args)]
pub struct KvArgs {
    /// The cluster's client URLs (http://HOST:PORT), comma-separated;
    /// client i talks to endpoint i mod n.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "against_etcd",
        conflicts_with = "against_etcd"
    )]
    pub endpoints: Vec<String>,
    /// Start a 3-member etcd and a 3-node rafter-kv on loopback and run
    /// every case against each, interleaved over `--rounds`.
    #[arg(long)]
    pub against_etcd: bool,
    /// Concurrent closed-loop clients; a comma-separated list runs one case
    /// per value.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256", value_parser = parse_clients)]
    pub clients: Vec<usize>,
    /// Measured seconds per case (default 5 unless `--ops` is given).
    #[arg(long, conflicts_with = "ops", value_parser = parse_seconds)]
    pub duration: Option<f64>,
    /// Requests in the measured phase of each case, instead of a duration.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub ops: Option<u64>,
    /// Distinct keys; each call picks one uniformly.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub key_space: u64,
    /// Bytes of each put's value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Fraction of calls that are ranges (reads) of one key, 0 to 1; the
    /// rest are puts. Above 0, every key is written once before the first
    /// case (so reads find values).
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    pub read_ratio: f64,
    /// Reads are linearizable (the default).
    #[arg(long, conflicts_with = "serializable")]
    pub linearizable: bool,
    /// Reads are serializable: served by the member that receives them.
    #[arg(long)]
    pub serializable: bool,
    /// Instead of the KV routes, every call is `GET PATH` (say `/health`):
    /// a trivial request, to measure what the loader itself can drive.
    #[arg(long, value_name = "PATH", conflicts_with = "read_ratio")]
    pub get: Option<String>,
    /// Unmeasured warm-up of each case, in seconds.
    #[arg(long, default_value_t = 1.0, value_parser = parse_warmup)]
    pub warmup: f64,
    /// Times to run every case (default 3 with `--against-etcd`, else 1);
    /// the comparison shows medians over rounds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub rounds: Option<u64>,
    /// The rafter-kv binary (default: `rafter-kv` next to this binary).
    #[arg(long, value_name = "PATH")]
    pub rafter_kv_bin: Option<PathBuf>,
    /// The etcd binary (Debian's `etcd-server` package).
    #[arg(long, value_name = "PATH", default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// With `--against-etcd`: after the last round, each member's resident
    /// set, then the same after compacting (and, for etcd, defragmenting)
    /// the history (`kv_memory.rs`).
    #[arg(long, requires = "against_etcd")]
    pub memory: bool,
    /// Put the clusters' data in fresh directories under this one (default:
    /// the system temp dir); removed afterwards.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

fn parse_clients(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=CLIENTS_MAX).contains(&n) => Ok(n),
        _ => Err(format!("clients are 1..={CLIENTS_MAX}, not {value:?}")),
    }
}

fn parse_seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 3600.0 => Ok(s),
        _ => Err(format!("a duration is 0 to 3600 seconds, not {value:?}")),
    }
}

fn parse_ratio(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("a ratio is 0 to 1, not {value:?}")),
    }
}

impl KvArgs {
    fn measure(&self) -> Measure {
        match (self.ops, self.duration) {
            (Some(ops), _) => Measure::Ops(ops),
            (None, seconds) => Measure::For(Duration::from_secs_f64(seconds.unwrap_or(5.0))),
        }
    }

    fn rounds(&self) -> u64 {
        self.rounds.unwrap_or(if self.against_etcd { 3 } else { 1 })
    }

    /// The workload's name in tables: `put`, `get-lin`, `get-ser`,
    /// `mixed-0.5-lin`, `GET /health`.
    fn workload(&self) -> String {
        let reads = if self.serializable { "ser" } else { "lin" };
        if let Some(path) = &self.get {
            format!("GET {path}")
        } else if self.read_ratio == 0.0 {
            "put".into()
        } else if self.read_ratio == 1.0 {
            format!("get-{reads}")
        } else {
            format!("mixed-{}-{reads}", self.read_ratio)
        }
    }
}

/// Every request a client may send, encoded once.
struct Requests {
    /// `puts[k]`: put key k.
    puts: Vec<Prepared>,
    /// `ranges[k]`: range of key k (empty without reads).
    ranges: Vec<Prepared>,
    /// With `--get`: the one request every call sends.
    get: Option<Prepared>,
    /// A call reads when its draw is below this (0: never; u64::MAX and
    /// `reads_only`: always).
    read_threshold: u64,
    reads_only: bool,
}

impl Requests {
    fn encode(args: &KvArgs) -> Result<Requests, String> {
        if let Some(path) = &args.get {
            return Ok(Requests {
                puts: Vec::new(),
                ranges: Vec::new(),
                get: Some(Prepared::get(path)?),
                read_threshold: 0,
                reads_only: false,
            });
        }
        let value = BASE64.encode(vec![b'v'; args.value_size]);
        let keys = args.key_space as usize;
        let key_b64 = BASE64.encode(key_name(0));
        let bytes = keys * (2 * key_b64.len() + value.len() + 64);
        if bytes > BODIES_BYTES_MAX {
            return Err(format!(
                "--key-space {keys} with --value-size {} needs {} MiB of request bodies, \
                 more than {} MiB",
                args.value_size,
                bytes >> 20,
                BODIES_BYTES_MAX >> 20
            ));
        }
        let serializable = if args.serializable {
            r#","serializable":true"#
        } else {
            ""
        };
        let mut puts = Vec::with_capacity(keys);
        let mut ranges = Vec::new();
        for k in 0..keys {
            let key = BASE64.encode(key_name(k as u64));
            let put = format!(r#"{{"key":"{key}","value":"{value}"}}"#);
            puts.push(Prepared::post("/v3/kv/put", Bytes::from(put)));
            if args.read_ratio > 0.0 {
                let range = format!(r#"{{"key":"{key}"{serializable}}}"#);
                ranges.push(Prepared::post("/v3/kv/range", Bytes::from(range)));
            }
        }
        Ok(Requests {
            puts,
            ranges,
            get: None,
            read_threshold: (args.read_ratio * u64::MAX as f64) as u64,
            reads_only: args.read_ratio >= 1.0,
        })
    }

    fn choose(&self, rng: &mut SplitMix64) -> &Prepared {
        if let Some(get) = &self.get {
            return get;
        }
        let key = (rng.next() % self.puts.len() as u64) as usize;
        let read = self.reads_only || rng.next() < self.read_threshold;
        if read {
            &self.ranges[key]
        } else {
            &self.puts[key]
        }
    }
}

/// Key `k`'s bytes: fixed width, so every request of a run has the same
/// size.
fn key_name(k: u64) -> String {
    format!("key-{k:08}")
}

/// splitmix64: a cheap seeded sequence per client (no shared RNG state).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One client: its connection and its random sequence.
struct KvClient {
    connection: HttpConnection,
    requests: Arc<Requests>,
    rng: SplitMix64,
}

impl Client for KvClient {
    async fn call(&mut self) -> Result<(), String> {
        let request = self.requests.choose(&mut self.rng);
        answer(self.connection.send(request).await)
    }
}

fn answer(result: Result<StatusCode, http_connection::Failure>) -> Result<(), String> {
    match result {
        Ok(StatusCode::OK) => Ok(()),
        Ok(status) => Err(format!("HTTP {}", status.as_u16())),
        Err(failure) => Err(failure.kind().to_string()),
    }
}

/// A client of the prefill: puts the keys in order, taking the next one
/// from a shared counter.
struct PrefillClient {
    connection: HttpConnection,
    requests: Arc<Requests>,
    next_key: Arc<AtomicU64>,
}

impl Client for PrefillClient {
    async fn call(&mut self) -> Result<(), String> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed) % self.requests.puts.len() as u64;
        answer(
            self.connection
                .send(&self.requests.puts[key as usize])
                .await,
        )
    }
}

/// Runs `kv`: one report per case and round.
pub async fn run(args: &KvArgs) -> Result<Vec<Report>, String> {
    let requests = Arc::new(Requests::encode(args)?);
    if !args.against_etcd {
        let mut endpoints = Vec::new();
        for url in &args.endpoints {
            endpoints.push(http_connection::resolve(url).await?);
        }
        if args.read_ratio > 0.0 {
            prefill(&endpoints, &requests, "endpoints").await?;
        }
        let mut reports = Vec::new();
        for round in 1..=args.rounds() {
            for &clients in &args.clients {
                reports.push(run_case(args, &requests, None, &endpoints, clients, round).await?);
            }
        }
        return Ok(reports);
    }
    let rafter_kv = match &args.rafter_kv_bin {
        Some(path) => path.clone(),
        None => beside_this_binary("rafter-kv")?,
    };
    let parent = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    // Ctrl-C drops the run: the clusters' drops kill every process and
    // remove the directories.
    tokio::select! {
        result = against_etcd(args, &requests, &rafter_kv, &parent) => result,
        _ = tokio::signal::ctrl_c() => Err("interrupted; the clusters are stopped and removed".into()),
    }
}

async fn against_etcd(
    args: &KvArgs,
    requests: &Arc<Requests>,
    rafter_kv: &Path,
    parent: &Path,
) -> Result<Vec<Report>, String> {
    let bar = crate::progress::spinner("kv: starting rafter-kv and etcd");
    let mut clusters = vec![
        LocalCluster::start_rafter_kv(rafter_kv, parent).await?,
        LocalCluster::start_etcd(&args.etcd_bin, parent).await?,
    ];
    bar.finish_and_clear();
    if args.read_ratio > 0.0 {
        for cluster in &clusters {
            prefill(&cluster.endpoints, requests, cluster.system.name()).await?;
        }
    }
    let mut reports = Vec::new();
    for round in 1..=args.rounds() {
        for &clients in &args.clients {
            // The two go back to back, and take turns going first, so
            // drift in the machine (other work, the disk) hits both alike.
            let mut order = [0, 1];
            if round % 2 == 0 {
                order.reverse();
            }
            for i in order {
                let cluster = &mut clusters[i];
                cluster.check_running()?;
                let endpoints = cluster.endpoints.clone();
                reports.push(
                    run_case(args, requests, Some(cluster), &endpoints, clients, round).await?,
                );
            }
        }
    }
    if args.memory {
        for cluster in &mut clusters {
            cluster.check_running()?;
            reports.extend(crate::kv_memory::measure(cluster).await?);
        }
    }
    Ok(reports)
}

/// Writes every key once through `endpoints`.
async fn prefill(
    endpoints: &[SocketAddr],
    requests: &Arc<Requests>,
    name: &str,
) -> Result<(), String> {
    let next_key = Arc::new(AtomicU64::new(0));
    let clients: Vec<PrefillClient> = (0..PREFILL_CLIENTS)
        .map(|i| PrefillClient {
            connection: HttpConnection::new(endpoints[i % endpoints.len()]),
            requests: requests.clone(),
            next_key: next_key.clone(),
        })
        .collect();
    let keys = requests.puts.len() as u64;
    let label = format!("{name}: writing {keys} keys");
    let (outcome, _) = load::measure(clients, Measure::Ops(keys), 1, &label).await;
    if !outcome.errors.is_empty() {
        return Err(format!("{name}: the prefill failed: {:?}", outcome.errors));
    }
    Ok(())
}

async fn run_case(
    args: &KvArgs,
    requests: &Arc<Requests>,
    cluster: Option<&mut LocalCluster>,
    endpoints: &[SocketAddr],
    clients: usize,
    round: u64,
) -> Result<Report, String> {
    let system = cluster.as_ref().map(|c| c.system);
    let name = system.map_or("endpoints", System::name);
    let workload = args.workload();
    let label = format!("{name} {workload} {clients}c r{round}");
    let seed = round.wrapping_mul(0x1_0000_0001);
    let load_clients: Vec<KvClient> = (0..clients)
        .map(|i| KvClient {
            connection: HttpConnection::new(endpoints[i % endpoints.len()]),
            requests: requests.clone(),
            rng: SplitMix64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9)),
        })
        .collect();
    let load_clients =
        load::warm_up(load_clients, Duration::from_secs_f64(args.warmup), &label).await;
    let before = match &cluster {
        Some(cluster) => Some(cluster.scrape().await?),
        None => None,
    };
    let (outcome, load_clients) = load::measure(load_clients, args.measure(), 1, &label).await;
    // Close the connections before reading the metrics: a server counts
    // a request when it answers, which is before the client has read it.
    drop(load_clients);
    let seconds = outcome.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    let mut extra = vec![("round", round as f64)];
    if let (Some(cluster), Some(before)) = (&cluster, before) {
        let after = cluster.scrape().await?;
        let delta: Vec<MemberFigures> = after
            .iter()
            .zip(&before)
            .map(|(after, before)| after.since(*before))
            .collect();
        extra.extend(figures(cluster.system, &delta, outcome.ops, seconds));
    }
    Ok(Report {
        mode: "kv",
        case: Some(format!("{name} {workload}")),
        nodes: endpoints.len(),
        clients,
        ops: outcome.ops,
        elapsed: outcome.elapsed,
        latency: outcome.latency,
        errors: outcome.errors,
        extra,
    })
}

/// The figures of a case from its members' counters: the leader's synced
/// log writes (per second, mean time, requests per write), its key-value
/// store's commits (each an fsync too) and, for rafter-kv, the share of
/// requests relayed to the leader and the entries per apply transaction.
fn figures(
    system: System,
    delta: &[MemberFigures],
    ops: u64,
    seconds: f64,
) -> Vec<(&'static str, f64)> {
    let Some(leader) = delta.iter().find(|m| m.is_leader) else {
        tracing::warn!("no member says it leads: no leader figures");
        return Vec::new();
    };
    let mut figures = vec![("leader_fsyncs_per_sec", leader.fsyncs / seconds)];
    // Reads sync nothing: no mean time, no requests per fsync.
    if leader.fsyncs > 0.0 {
        figures.push((
            "leader_fsync_ms_mean",
            1000.0 * leader.fsync_seconds / leader.fsyncs,
        ));
        figures.push(("ops_per_leader_fsync", ops as f64 / leader.fsyncs));
    }
    figures.push((
        "leader_state_commits_per_sec",
        leader.state_commits / seconds,
    ));
    let followers: Vec<&MemberFigures> = delta.iter().filter(|m| !m.is_leader).collect();
    let follower_fsyncs: f64 = followers.iter().map(|m| m.fsyncs).sum();
    if follower_fsyncs > 0.0 {
        let seconds: f64 = followers.iter().map(|m| m.fsync_seconds).sum();
        figures.push(("follower_fsync_ms_mean", 1000.0 * seconds / follower_fsyncs));
    }
    if system == System::RafterKv {
        let forwarded: f64 = delta.iter().map(|m| m.forwarded).sum();
        figures.push(("forwarded_pct", 100.0 * forwarded / (ops as f64).max(1.0)));
        if leader.apply_batches > 0.0 {
            figures.push((
                "entries_per_apply",
                leader.entries_applied / leader.apply_batches,
            ));
            figures.push((
                "leader_apply_ms_mean",
                1000.0 * leader.apply_seconds / leader.apply_batches,
            ));
        }
        // The stages of a write (see `kv-example/src/metrics.rs`), means.
        let put_requests: f64 = delta.iter().map(|m| m.put_requests).sum();
        if put_requests > 0.0 {
            let seconds: f64 = delta.iter().map(|m| m.put_request_seconds).sum();
            figures.push(("put_request_ms_mean", 1000.0 * seconds / put_requests));
        }
        if leader.proposals > 0.0 {
            figures.push((
                "leader_propose_ms_mean",
                1000.0 * leader.propose_seconds / leader.proposals,
            ));
        }
        if leader.append_acks > 0.0 {
            figures.push((
                "append_round_trip_ms_mean",
                1000.0 * leader.append_round_trip_seconds / leader.append_acks,
            ));
        }
    }
    figures
}

/// The path of `name` in the directory of the running binary (cargo puts
/// every binary of a workspace in one directory).
fn beside_this_binary(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|error| format!("no current exe: {error}"))?;
    let path = exe.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build it (cargo build --release -p rafter-kv) or pass --rafter-kv-bin",
            path.display()
        ))
    }
}

/// One comparison row: a workload at a client count, medians over rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub workload: String,
    pub clients: usize,
    pub rounds: usize,
    pub rafter_kv: Medians,
    pub etcd: Medians,
}

/// Medians over rounds of one system's rate and latencies.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Medians {
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// Pairs the rounds of rafter-kv and etcd of each workload and client
/// count (reports from `--against-etcd`; others are ignored).
pub fn compare(reports: &[Report]) -> Vec<Comparison> {
    // (workload, clients) -> system -> per-round (ops/s, p50, p99, errors).
    type Rounds = Vec<(f64, f64, f64, u64)>;
    let mut groups: BTreeMap<(usize, String), BTreeMap<String, Rounds>> = BTreeMap::new();
    for report in reports.iter().filter(|r| r.mode == "kv") {
        let Some((system, workload)) = report.case.as_deref().and_then(|c| c.split_once(' '))
        else {
            continue;
        };
        let quantile_ms = |q: f64| report.latency.value_at_quantile(q) as f64 / 1e6;
        groups
            .entry((report.clients, workload.to_string()))
            .or_default()
            .entry(system.to_string())
            .or_default()
            .push((
                report.ops_per_sec(),
                quantile_ms(0.5),
                quantile_ms(0.99),
                report.error_count(),
            ));
    }
    let mut rows = Vec::new();
    for ((clients, workload), systems) in groups {
        let (Some(kv), Some(etcd)) = (
            systems.get(System::RafterKv.name()),
            systems.get(System::Etcd.name()),
        ) else {
            continue;
        };
        rows.push(Comparison {
            workload,
            clients,
            rounds: kv.len().min(etcd.len()),
            rafter_kv: medians(kv),
            etcd: medians(etcd),
        });
    }
    rows
}

fn medians(rounds: &[(f64, f64, f64, u64)]) -> Medians {
    Medians {
        ops_per_sec: median(rounds.iter().map(|r| r.0).collect()),
        p50_ms: median(rounds.iter().map(|r| r.1).collect()),
        p99_ms: median(rounds.iter().map(|r| r.2).collect()),
        errors: rounds.iter().map(|r| r.3).sum(),
    }
}

/// The median (the mean of the middle two of an even count).
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

/// Prints the comparison as a table (ratios are rafter-kv over etcd: above
/// 1 is better for ops/s, below 1 better for latency).
pub fn print_comparison(rows: &[Comparison]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!("rafter-kv vs etcd, medians over rounds (ratio = rafter-kv / etcd)");
    let mut table = vec![[
        "workload",
        "clients",
        "rounds",
        "rafter-kv ops/s",
        "etcd ops/s",
        "ops ratio",
        "rafter-kv p50 ms",
        "etcd p50 ms",
        "p50 ratio",
        "rafter-kv p99 ms",
        "etcd p99 ms",
        "p99 ratio",
        "errors kv/etcd",
    ]
    .map(String::from)
    .to_vec()];
    for row in rows {
        let (kv, etcd) = (row.rafter_kv, row.etcd);
        table.push(vec![
            row.workload.clone(),
            row.clients.to_string(),
            row.rounds.to_string(),
            format!("{:.0}", kv.ops_per_sec),
            format!("{:.0}", etcd.ops_per_sec),
            format!("{:.2}", ratio(kv.ops_per_sec, etcd.ops_per_sec)),
            format!("{:.2}", kv.p50_ms),
            format!("{:.2}", etcd.p50_ms),
            format!("{:.2}", ratio(kv.p50_ms, etcd.p50_ms)),
            format!("{:.2}", kv.p99_ms),
            format!("{:.2}", etcd.p99_ms),
            format!("{:.2}", ratio(kv.p99_ms, etcd.p99_ms)),
            format!("{}/{}", kv.errors, etcd.errors),
        ]);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (i, row) in table.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, width))| {
                if c == 0 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        println!("{}", cells.join("  "));
        if i == 0 {
            println!(
                "{}",
                "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
            );
        }
    }
}

impl Comparison {
    /// The row as one JSON object (`mode: "kv-compare"`).
    pub fn to_json(&self) -> Value {
        let side = |m: &Medians| {
            json!({
                "ops_per_sec": (m.ops_per_sec * 100.0).round() / 100.0,
                "p50_ms": (m.p50_ms * 1000.0).round() / 1000.0,
                "p99_ms": (m.p99_ms * 1000.0).round() / 1000.0,
                "errors": m.errors,
            })
        };
        json!({
            "mode": "kv-compare",
            "case": self.workload,
            "clients": self.clients,
            "rounds": self.rounds,
            "rafter_kv": side(&self.rafter_kv),
            "etcd": side(&self.etcd),
            "ops_ratio": (ratio(self.rafter_kv.ops_per_sec, self.etcd.ops_per_sec) * 100.0).round() / 100.0,
            "p50_ratio": (ratio(self.rafter_kv.p50_ms, self.etcd.p50_ms) * 100.0).round() / 100.0,
            "p99_ratio": (ratio(self.rafter_kv.p99_ms, self.etcd.p99_ms) * 100.0).round() / 100.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::latency_histogram;

    fn args(read_ratio: f64) -> KvArgs {
        KvArgs {
            endpoints: vec!["http://127.0.0.1:1".into()],
            against_etcd: false,
            clients: vec![1],
            duration: None,
            ops: Some(1),
            key_space: 100,
            value_size: 3,
            read_ratio,
            linearizable: false,
            serializable: false,
            get: None,
            warmup: 0.0,
            rounds: None,
            rafter_kv_bin: None,
            etcd_bin: "etcd".into(),
            memory: false,
            data_dir: None,
        }
    }

    #[test]
    fn bodies_are_etcd_json_with_base64_and_reads_follow_the_ratio() {
        let requests = Requests::encode(&args(0.25)).unwrap();
        assert_eq!(requests.puts.len(), 100);
        assert_eq!(requests.ranges.len(), 100);
        let mut rng = SplitMix64(7);
        let mut range_count = 0;
        for _ in 0..10_000 {
            let chosen = requests.choose(&mut rng) as *const Prepared;
            if requests.ranges.iter().any(|r| std::ptr::eq(r, chosen)) {
                range_count += 1;
            }
        }
        assert!((2_200..2_800).contains(&range_count), "{range_count} reads");
        let put: Value = serde_json::from_slice(requests.puts[42].body()).unwrap();
        assert_eq!(put["key"], BASE64.encode("key-00000042"));
        assert_eq!(put["value"], BASE64.encode("vvv"));
        let only_puts = Requests::encode(&args(0.0)).unwrap();
        assert!(only_puts.ranges.is_empty());
    }

    #[test]
    fn the_comparison_takes_medians_per_system_and_pairs_them() {
        let report = |case: &str, ops: u64, p_us: u64| {
            let mut latency = latency_histogram();
            latency.record(p_us * 1000).unwrap();
            Report {
                mode: "kv",
                case: Some(case.into()),
                nodes: 3,
                clients: 64,
                ops,
                elapsed: Duration::from_secs(1),
                latency,
                errors: BTreeMap::new(),
                extra: Vec::new(),
            }
        };
        let reports = vec![
            report("rafter-kv put", 300, 1000),
            report("etcd put", 100, 4000),
            report("rafter-kv put", 900, 3000),
            report("etcd put", 200, 2000),
            report("rafter-kv put", 600, 2000),
            report("etcd put", 150, 3000),
        ];
        let rows = compare(&reports);
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(
            (row.workload.as_str(), row.clients, row.rounds),
            ("put", 64, 3)
        );
        assert_eq!(row.rafter_kv.ops_per_sec, 600.0);
        assert_eq!(row.etcd.ops_per_sec, 150.0);
        assert!((row.rafter_kv.p50_ms - 2.0).abs() < 0.01, "{row:?}");
        assert!((row.etcd.p50_ms - 3.0).abs() < 0.01, "{row:?}");
        assert_eq!(row.to_json()["ops_ratio"], 4.0);
    }

    #[test]
    fn medians_of_even_counts_take_the_middle_two() {
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![5.0]), 5.0);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
