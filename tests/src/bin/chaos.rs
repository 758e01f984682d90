//! `chaos`: runs seeded chaos rounds against real `rafter-kv` processes
//! (see `rafter_tests::chaos` and `tests/README.md`), or checks a history
//! file. Needs root. Exit status 0 when every round passed, 1 when one
//! failed, 2 when one could not run (the others still run), 130 when interrupted (Ctrl-C
//! kills the round's nodes and removes its network first).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rafter_tests::chaos::{self, checks, history, Options};

/// Chaos rounds against a five-node rafter-kv cluster in network namespaces.
#[derive(Parser, Debug)]
#[command(name = "chaos")]
struct Cli {
    /// Seed of the first round (the next rounds take seed+1, seed+2, ...).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of faults per round.
    #[arg(long, default_value_t = 120)]
    duration: u64,
    /// Rounds to run (a soak test).
    #[arg(long, default_value_t = 1)]
    long: u64,
    /// Keep every round's directory (a failing round's is always kept).
    #[arg(long)]
    keep: bool,
    /// Concurrent clients.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Keys the clients share.
    #[arg(long, default_value_t = 6)]
    keys: usize,
    /// No membership changes in the schedule.
    #[arg(long)]
    no_replacements: bool,
    /// Plant a fault the checks must catch (test only): `stale-reads`
    /// sends gets as serializable reads and records them as linearizable.
    #[arg(long, value_name = "FAULT")]
    planted: Option<String>,
    /// Where round directories go (default: the system's temp dir).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Only check this history file (JSON lines) for linearizability.
    #[arg(long, value_name = "FILE")]
    check_history: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = &cli.check_history {
        return check_file(path);
    }
    let stale_reads = match cli.planted.as_deref() {
        None => false,
        Some("stale-reads") => true,
        Some(other) => {
            eprintln!("unknown planted fault {other:?} (known: stale-reads)");
            return ExitCode::from(2);
        }
    };
    let binary = match chaos::binary::rafter_kv() {
        Ok(binary) => binary,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let mut failed = Vec::new();
    let mut not_run = Vec::new();
    for round in 0..cli.long {
        let seed = cli.seed + round;
        let mut options = Options::new(seed, Duration::from_secs(cli.duration), binary.clone());
        options.keep = cli.keep;
        options.replacements = !cli.no_replacements;
        options.workload.clients = cli.clients;
        options.workload.keys = cli.keys;
        options.workload.stale_reads = stale_reads;
        options.parent_dir = cli.dir.clone();
        // On Ctrl-C the round's future is dropped, and with it its nodes
        // (killed) and hosts (removed).
        let round = runtime.block_on(async {
            tokio::select! {
                result = chaos::run(&options) => Some(result),
                _ = tokio::signal::ctrl_c() => None,
            }
        });
        let Some(round) = round else {
            eprintln!("chaos: interrupted in the round with seed {seed}");
            return ExitCode::from(130);
        };
        match round {
            Ok(summary) => {
                println!("{summary}");
                if !summary.passed() {
                    failed.push(seed);
                }
            }
            // The next rounds still run: a soak reports every round.
            Err(e) => {
                eprintln!("chaos: round with seed {seed} could not run: {e}");
                not_run.push(seed);
            }
        }
    }
    println!(
        "chaos: {} rounds of {} s (seeds {}..={}): {} passed, {} failed {failed:?}, \
         {} could not run {not_run:?}",
        cli.long,
        cli.duration,
        cli.seed,
        cli.seed + cli.long.saturating_sub(1),
        cli.long as usize - failed.len() - not_run.len(),
        failed.len(),
        not_run.len(),
    );
    if !not_run.is_empty() {
        ExitCode::from(2)
    } else if !failed.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn check_file(path: &std::path::Path) -> ExitCode {
    let events = match history::read(path) {
        Ok(events) => events,
        Err(e) => {
            eprintln!("chaos: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let (verdict, left_out) = checks::linearizable(&events);
    println!(
        "{}: {} events; linearizable ({left_out} unobserved unknown writes left out first): \
         {verdict}",
        path.display(),
        events.len()
    );
    if verdict.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
