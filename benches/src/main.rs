//! `rafter-bench`: the load-testing tool for Rafter. Each mode runs a warm-up,
//! then a measured phase, and prints a result table; `--json FILE` appends
//! the same figures as one JSON object per line.

mod core_mode;
mod load;
mod report;

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
        }
    });
    let reports = match result {
        Ok(reports) => reports,
        Err(error) => {
            eprintln!("rafter-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    report::print_table(&reports);
    if let Some(path) = &cli.json {
        if let Err(error) = report::append_json(path, &reports) {
            eprintln!("rafter-bench: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
