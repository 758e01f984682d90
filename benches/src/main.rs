//! `rafter-bench`: the load-testing tool for Rafter. Each mode runs a warm-up,
//! then a measured phase, and prints a result table; `--json FILE` appends
//! the same figures as one JSON object per line.

mod cluster_mode;
mod core_mode;
mod http_connection;
mod kv_memory;
mod kv_mode;
mod latency_recorder;
mod load;
mod local_clusters;
mod progress;
mod prometheus_text;
mod report;
mod storage_mode;
mod transport_mode;
mod trivial_server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::report::Report;

/// Load-tests a Rafter cluster and its parts.
#[derive(Debug, Parser)]
#[command(name = "rafter-bench", version, about)]
struct Cli {
    /// Append each result as one JSON object per line to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Tokio worker threads (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// A cluster in one process: in-memory log, in-process network, a state
    /// machine that stores nothing.
    Core(core_mode::CoreArgs),
    /// 3 nodes in one process on rafter-redb (real fsync) and rafter-quic
    /// on 127.0.0.1, one case per `--clients` value.
    Cluster(cluster_mode::ClusterArgs),
    /// Append throughput of rafter-redb next to raw redb, per batch size.
    Storage(storage_mode::StorageArgs),
    /// rafter-quic alone on loopback: one message at a time and pipelined.
    Transport(transport_mode::TransportArgs),
    /// Closed-loop HTTP clients on etcd's v3 JSON API (put, range) against
    /// any endpoints, or rafter-kv and etcd side by side (`--against-etcd`).
    Kv(kv_mode::KvArgs),
    /// An HTTP server that answers every request with 200 and a fixed body:
    /// the trivial endpoint that shows what the loader alone can drive.
    TrivialServer(trivial_server::TrivialServerArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rafter-bench: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<Vec<Report>, String> = runtime.block_on(async {
        match &cli.mode {
            Mode::Core(args) => core_mode::run(args).await.map(|r| vec![r]),
            Mode::Cluster(args) => cluster_mode::run(args).await,
            Mode::Storage(args) => storage_mode::run(args).await,
            Mode::Transport(args) => transport_mode::run(args).await,
            Mode::Kv(args) => kv_mode::run(args).await,
            Mode::TrivialServer(args) => trivial_server::run(args).await,
        }
    });
    let reports = match result {
        Ok(reports) => reports,
        Err(error) => {
            eprintln!("rafter-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    if matches!(cli.mode, Mode::TrivialServer(_)) {
        return ExitCode::SUCCESS;
    }
    report::print_table(&reports);
    let comparison = kv_mode::compare(&reports);
    kv_mode::print_comparison(&comparison);
    if let Some(path) = &cli.json {
        let written = report::append_json(path, &reports).and_then(|()| {
            let lines: Vec<_> = comparison
                .iter()
                .map(kv_mode::Comparison::to_json)
                .collect();
            report::append_json_values(path, &lines)
        });
        if let Err(error) = written {
            eprintln!("rafter-bench: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
