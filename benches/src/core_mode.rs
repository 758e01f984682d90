//! `core`: a cluster in one process on the in-memory log (no fsync), the
//! in-process network and a state machine that stores nothing: the plain
//! setup other Raft libraries publish figures for.

use std::time::Duration;

use rafter::testing::{MemRouter, MemStorage, NoopStateMachine};
use rafter::{Config, Membership, ProposeError, Raft, Role};
use serde_bytes::ByteBuf;

use crate::load::{self, Call, LoadSpec};
use crate::report::Report;
use crate::storage_mode::parse_warmup;

/// What `core` runs.
#[derive(Debug, Clone, clap::Args)]
pub struct CoreArgs {
    /// Raft nodes (1, 3 or 5).
    #[arg(long, default_value_t = 3, value_parser = parse_nodes)]
    pub nodes: u64,
    /// Concurrent closed-loop clients (1 to 1,000,000).
    #[arg(long, default_value_t = 256, value_parser = parse_clients)]
    pub clients: usize,
    /// Commands in the measured phase.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub ops: u64,
    /// Bytes of each command's value.
    #[arg(long, default_value_t = 0)]
    pub value_size: usize,
    /// Commands per propose call (1 = `propose`, more = `propose_many`), at
    /// most the default `Config::proposal_batch_max` (4096).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch: u64,
    /// Unmeasured warm-up, in seconds (0 to 3600).
    #[arg(long, default_value_t = 1.0, value_parser = parse_warmup)]
    pub warmup: f64,
}

fn parse_clients(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(format!("--clients must be 1 to 1000000, not {value:?}")),
    }
}

fn parse_nodes(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n @ (1 | 3 | 5)) => Ok(n),
        _ => Err(format!("--nodes must be 1, 3 or 5, not {value:?}")),
    }
}

/// One client call: `batch` commands of `value` to `raft` (`propose`, or
/// `propose_many` above one). Shared with `cluster`.
#[derive(Clone)]
pub struct Propose {
    /// The node the clients propose to (the leader).
    pub raft: Raft<NoopStateMachine>,
    /// Each command's value.
    pub value: ByteBuf,
    /// Commands per call.
    pub batch: u64,
}

impl Call for Propose {
    async fn call(&self) -> Result<(), String> {
        let result = if self.batch == 1 {
            self.raft.propose(self.value.clone()).await.map(|_| ())
        } else {
            let commands = (0..self.batch).map(|_| self.value.clone()).collect();
            self.raft.propose_many(commands).await.map(|_| ())
        };
        result.map_err(|error| error_kind(&error).to_string())
    }
}

/// The variant name of a propose error, for the error table.
pub fn error_kind(error: &ProposeError) -> &'static str {
    match error {
        ProposeError::NotLeader { .. } => "NotLeader",
        ProposeError::TooManyRequests { .. } => "TooManyRequests",
        ProposeError::RequestTooLarge { .. } => "RequestTooLarge",
        ProposeError::Timeout(_) => "Timeout",
        ProposeError::Stopped => "Stopped",
        ProposeError::ProposalDropped { .. } => "ProposalDropped",
        ProposeError::Overwritten { .. } => "Overwritten",
        ProposeError::TooManyCommands { .. } => "TooManyCommands",
        _ => "Other",
    }
}

/// The configuration the bench runs with: the defaults, which are what a
/// user gets.
pub fn bench_config() -> Config {
    Config::default()
}

/// Runs `core` and returns its report.
pub async fn run(args: &CoreArgs) -> Result<Report, String> {
    let config = bench_config();
    let members = Membership::new_voters((1..=args.nodes).map(|id| (id, format!("node-{id}"))));
    let router = MemRouter::new(config.rng_seed);
    let mut nodes = Vec::new();
    for id in 1..=args.nodes {
        let raft = Raft::start(
            id,
            config.clone(),
            Some(members.clone()),
            MemStorage::new(),
            router.network(id),
            NoopStateMachine::default(),
        )
        .await
        .map_err(|error| format!("node {id} does not start: {error}"))?;
        router.register(&raft);
        nodes.push(raft);
    }
    let leader = wait_for_leader(&nodes).await?;
    let call = Propose {
        raft: leader,
        value: ByteBuf::from(vec![0x5a; args.value_size]),
        batch: args.batch,
    };
    let spec = LoadSpec {
        clients: args.clients,
        measure: load::Measure::Ops(args.ops),
        ops_per_call: args.batch,
        warmup: Duration::from_secs_f64(args.warmup.max(0.0)),
        label: format!("core {}n {}c", args.nodes, args.clients),
    };
    let outcome = load::run(&spec, call).await;
    for node in &nodes {
        node.shutdown().await;
    }
    let mut extra = Vec::new();
    if args.batch > 1 {
        extra.push(("batch", args.batch as f64));
    }
    if args.value_size > 0 {
        extra.push(("value_bytes", args.value_size as f64));
    }
    Ok(Report {
        mode: "core",
        case: None,
        nodes: args.nodes as usize,
        clients: args.clients,
        ops: outcome.ops,
        elapsed: outcome.elapsed,
        latency: outcome.latency,
        errors: outcome.errors,
        extra,
    })
}

async fn wait_for_leader(
    nodes: &[Raft<NoopStateMachine>],
) -> Result<Raft<NoopStateMachine>, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(leader) = nodes.iter().find(|n| n.status().role == Role::Leader) {
            // Its no-op applied: it accepts and answers proposals.
            let status = leader.status();
            if status.applied_index >= status.commit_index && status.commit_index > 1 {
                return Ok(leader.clone());
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err("no leader elected within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
