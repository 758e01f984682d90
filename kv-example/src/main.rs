//! `rafter-kv`: run a node (`serve`), a local 3-node cluster (`demo`), or
//! make certificates (`certs`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rafter_kv::config::ServeArgs;
use rafter_kv::demo::{ensure_certs, DemoArgs};
use rafter_kv::node::Node;

/// A replicated key-value store on Raft, speaking etcd's v3 JSON API.
#[derive(Debug, Parser)]
#[command(name = "rafter-kv", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node.
    ///
    /// Example (first of three; `--init` founds the cluster):
    ///   rafter-kv serve --id 1 --raft-addr 127.0.0.1:7001 --http-addr 127.0.0.1:8001
    ///     --data-dir n1 --init
    ///     --peers 1=127.0.0.1:7001/127.0.0.1:8001,2=127.0.0.1:7002/127.0.0.1:8002,3=127.0.0.1:7003/127.0.0.1:8003
    Serve(ServeArgs),
    /// Run a 3-node cluster on loopback until Ctrl-C.
    ///
    /// Example: rafter-kv demo --data-dir /tmp/rafter-demo
    Demo(DemoArgs),
    /// Make the cluster CA and node certificates for mutual TLS (an
    /// existing CA in the directory is reused).
    ///
    /// Example: rafter-kv certs --out tls --nodes 1,2,3
    Certs {
        /// Where to write them.
        #[arg(long)]
        out: PathBuf,
        /// The node ids to issue certificates for.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<u64>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rafter=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Certs { out, nodes } => {
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
        Command::Certs { .. } => unreachable!("handled without a runtime"),
    }
}
