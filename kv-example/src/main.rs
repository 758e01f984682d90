//! `rafter-kv`: run a node (`serve`), a local 3-node cluster (`demo`),
//! make certificates (`certs`), or talk to a cluster (the client
//! subcommands of `rafter_kv::cli`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rafter_kv::config::ServeArgs;
use rafter_kv::demo::{add_node_cert, ensure_certs, DemoArgs};
use rafter_kv::node::Node;

/// mimalloc instead of glibc's malloc: under load a third of a node's
/// allocations and frees are small, short-lived buffers handed between
/// tasks on different threads (HTTP bodies, Raft messages, redb pages), the
/// case glibc's arenas handle worst (free lists walked and consolidated,
/// memory held per arena). Measured in benches/README.md, set F.
///
/// Built with mimalloc's `no_thp` (workspace `Cargo.toml`): otherwise it
/// asks for transparent huge pages on its arenas, and every page it takes
/// back after purging faults in and zeroes a whole 2 MiB (14% of a
/// node's CPU under puts, set I).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A replicated key-value store on Raft, speaking etcd's v3 JSON API.
#[derive(Debug, Parser)]
#[command(
    name = "rafter-kv",
    version,
    after_help = "Client exit codes: 0 done, 1 error on this side, 2 bad command line, 3 not found,\n\
                  4 refused by the cluster, 5 cluster unreachable (health: not all healthy),\n\
                  6 txn-cas compare failed."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node.
    #[command(after_help = "Examples:
  # the first of three founders (--init, on every founder)
  rafter-kv serve --id 1 --raft-addr 127.0.0.1:7001 --http-addr 127.0.0.1:8001 --data-dir n1 --init \\
    --peers 1=127.0.0.1:7001/127.0.0.1:8001,2=127.0.0.1:7002/127.0.0.1:8002,3=127.0.0.1:7003/127.0.0.1:8003
  # a fourth node joining the running cluster (certs --add-node 4 first)
  rafter-kv serve --id 4 --raft-addr 127.0.0.1:7004 --http-addr 127.0.0.1:8004 --data-dir n4 \\
    --join http://127.0.0.1:8001 --auto-promote")]
    Serve(ServeArgs),
    /// Run a 3-node cluster on loopback until Ctrl-C.
    ///
    /// Example: rafter-kv demo --data-dir /tmp/rafter-demo
    Demo(DemoArgs),
    /// Make the cluster CA and node certificates for mutual TLS (an
    /// existing CA in the directory is reused).
    #[command(
        after_help = "Examples:\n  rafter-kv certs --out tls --nodes 1,2,3\n  rafter-kv certs --out tls --add-node 4   (from the CA in tls/, for a node that joins)"
    )]
    Certs {
        /// Where to write them.
        #[arg(long)]
        out: PathBuf,
        /// The node ids to issue certificates for (a CA is made if `--out`
        /// has none).
        #[arg(long, value_delimiter = ',', required_unless_present = "add_node")]
        nodes: Vec<u64>,
        /// Issue one more node certificate from the CA in `--out` (which
        /// must exist).
        #[arg(long, value_name = "ID", conflicts_with = "nodes")]
        add_node: Option<u64>,
    },
    #[command(flatten)]
    Client(rafter_kv::cli::ClientCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A client's output is for its user: no log lines unless RUST_LOG asks.
    let log_default = match cli.command {
        Command::Client(_) => "warn",
        _ => "info,rafter=info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| log_default.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Command::Client(command) = cli.command {
        return match runtime() {
            Ok(rt) => ExitCode::from(rt.block_on(rafter_kv::cli::run(command))),
            Err(error) => {
                eprintln!("rafter-kv: {error}");
                ExitCode::from(rafter_kv::cli::EXIT_ERROR)
            }
        };
    }
    let result = match cli.command {
        Command::Certs {
            out,
            add_node: Some(id),
            ..
        } => add_node_cert(&out, id),
        Command::Certs { out, nodes, .. } => {
            if nodes.contains(&0) {
                Err("node id 0 is reserved".to_owned())
            } else {
                ensure_certs(&out, &nodes)
            }
        }
        command => runtime().and_then(|rt| rt.block_on(run(command))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rafter-kv: {error}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve(args) => {
            let node = Node::start(args.resolve()?).await?;
            rafter_kv::shutdown_signal().await;
            node.shutdown().await;
            Ok(())
        }
        Command::Demo(args) => rafter_kv::demo::run(args).await,
        Command::Certs { .. } | Command::Client(_) => unreachable!("handled without a runtime"),
    }
}
