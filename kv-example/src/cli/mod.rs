//! `rafter-kv put|get|del|scan|txn-cas|compact|members|add-learner|promote|
//! remove|transfer-leader|status|health`: the client subcommands.
//!
//! Each sends its request to the first endpoint of `--endpoints` that
//! answers (`client`), prints a line for people or, with `--json`, one JSON
//! value for scripts, and tells the outcome in its exit code:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | an error on this side (bad argument, an answer that does not parse) |
//! | 2 | bad command line (clap's usage error) |
//! | 3 | not found (`get` of an absent key) |
//! | 4 | refused by the cluster (4xx: bad request, store rule, membership rule) |
//! | 5 | cluster unreachable: no endpoint answered before `--timeout` (down, no leader, removed); `health`: an endpoint is not healthy |
//! | 6 | `txn-cas`: the key did not hold the expected value; nothing written |

pub(crate) mod client;
mod cluster;
mod kv;

use std::time::Duration;

use base64::Engine;
use serde_json::Value;

pub use client::{
    Failure, EXIT_COMPARE_FAILED, EXIT_ERROR, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_UNREACHABLE,
};

use crate::config::parse_duration;

/// The demo's endpoints, the default of `--endpoints`.
const ENDPOINTS_DEFAULT: &str = "http://127.0.0.1:8001,http://127.0.0.1:8002,http://127.0.0.1:8003";

/// The options every client subcommand takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientOptions {
    /// Node URLs, tried in order: the next is tried when one is down or
    /// not serving (503); `http://` may be left out.
    #[arg(long, value_delimiter = ',', default_value = ENDPOINTS_DEFAULT, value_name = "URL,URL,...")]
    pub endpoints: Vec<String>,
    /// Print one JSON value for scripts (keys and values as UTF-8 text)
    /// instead of lines for people.
    #[arg(long)]
    pub json: bool,
    /// How long the whole command may take, every endpoint and retry
    /// included, e.g. 500ms, 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// The client subcommands (flattened into `rafter-kv`'s).
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Put KEY = VALUE.
    #[command(
        after_help = "Example:\n  rafter-kv put greeting hello --endpoints http://10.0.0.1:8001,http://10.0.0.2:8001"
    )]
    Put(kv::PutArgs),
    /// Print the value of KEY (exit 3 if it is absent).
    #[command(
        after_help = "Example:\n  rafter-kv get greeting --endpoints http://10.0.0.1:8001 --json"
    )]
    Get(kv::GetArgs),
    /// Delete KEY (or every key under a prefix).
    #[command(after_help = "Example:\n  rafter-kv del greeting\n  rafter-kv del --prefix users/")]
    Del(kv::DelArgs),
    /// List the keys under PREFIX (every key if none), one `KEY<TAB>VALUE` per line.
    #[command(after_help = "Example:\n  rafter-kv scan users/ --limit 100")]
    Scan(kv::ScanArgs),
    /// Compare and swap: put KEY = NEW only if KEY holds --expect (or is
    /// absent, --absent); exit 6 and print the current value if not.
    #[command(
        after_help = "Example:\n  rafter-kv txn-cas config/version 8 --expect 7\n  rafter-kv txn-cas lock/leader node-1 --absent"
    )]
    TxnCas(kv::TxnCasArgs),
    /// Forget every revision older than REVISION.
    #[command(after_help = "Example:\n  rafter-kv compact 1000")]
    Compact(kv::CompactArgs),
    /// List the members of the configuration (as the leader, or the best-informed endpoint, knows it).
    #[command(after_help = "Example:\n  rafter-kv members --endpoints http://10.0.0.1:8001")]
    Members(cluster::MembersArgs),
    /// Add a node as a learner (it receives the log but does not vote).
    #[command(after_help = "Example:\n  rafter-kv add-learner 4 10.0.0.4:7001 10.0.0.4:8001")]
    AddLearner(cluster::AddLearnerArgs),
    /// Make a caught-up learner a voter (joint consensus).
    #[command(after_help = "Example:\n  rafter-kv promote 4")]
    Promote(cluster::NodeArgs),
    /// Remove a voter or a learner from the configuration.
    #[command(after_help = "Example:\n  rafter-kv remove 3")]
    Remove(cluster::NodeArgs),
    /// Hand leadership to a voter.
    #[command(after_help = "Example:\n  rafter-kv transfer-leader 2")]
    TransferLeader(cluster::NodeArgs),
    /// Each endpoint's Raft status: role, term, leader, indexes.
    #[command(
        after_help = "Example:\n  rafter-kv status --endpoints 10.0.0.1:8001,10.0.0.2:8001,10.0.0.3:8001"
    )]
    Status(cluster::EachArgs),
    /// Whether each endpoint is healthy (exit 5 unless all are).
    #[command(
        after_help = "Example:\n  rafter-kv health --endpoints 10.0.0.1:8001,10.0.0.2:8001,10.0.0.3:8001"
    )]
    Health(cluster::EachArgs),
}

impl ClientCommand {
    fn options(&self) -> &ClientOptions {
        match self {
            ClientCommand::Put(a) => &a.options,
            ClientCommand::Get(a) => &a.options,
            ClientCommand::Del(a) => &a.options,
            ClientCommand::Scan(a) => &a.options,
            ClientCommand::TxnCas(a) => &a.options,
            ClientCommand::Compact(a) => &a.options,
            ClientCommand::Members(a) => &a.options,
            ClientCommand::AddLearner(a) => &a.options,
            ClientCommand::Promote(a)
            | ClientCommand::Remove(a)
            | ClientCommand::TransferLeader(a) => &a.options,
            ClientCommand::Status(a) | ClientCommand::Health(a) => &a.options,
        }
    }
}

/// Runs a client subcommand; returns the exit code.
pub async fn run(command: ClientCommand) -> u8 {
    let options = command.options().clone();
    let endpoints = match client::Endpoints::new(&options.endpoints, options.timeout) {
        Ok(endpoints) => endpoints,
        Err(failure) => return report(failure),
    };
    let out = Output { json: options.json };
    let result = match command {
        ClientCommand::Put(a) => kv::put(&endpoints, &out, a).await,
        ClientCommand::Get(a) => kv::get(&endpoints, &out, a).await,
        ClientCommand::Del(a) => kv::del(&endpoints, &out, a).await,
        ClientCommand::Scan(a) => kv::scan(&endpoints, &out, a).await,
        ClientCommand::TxnCas(a) => kv::txn_cas(&endpoints, &out, a).await,
        ClientCommand::Compact(a) => kv::compact(&endpoints, &out, a).await,
        ClientCommand::Members(_) => cluster::members(&endpoints, &out).await,
        ClientCommand::AddLearner(a) => cluster::add_learner(&endpoints, &out, a).await,
        ClientCommand::Promote(a) => cluster::promote(&endpoints, &out, a).await,
        ClientCommand::Remove(a) => cluster::remove(&endpoints, &out, a).await,
        ClientCommand::TransferLeader(a) => cluster::transfer_leader(&endpoints, &out, a).await,
        ClientCommand::Status(_) => cluster::status(&endpoints, &out).await,
        ClientCommand::Health(_) => cluster::health(&endpoints, &out).await,
    };
    match result {
        Ok(code) => code,
        Err(failure) => report(failure),
    }
}

fn report(failure: Failure) -> u8 {
    eprintln!("rafter-kv: {}", failure.message());
    failure.exit_code()
}

/// Where results go: lines for people, or one JSON value.
struct Output {
    json: bool,
}

impl Output {
    /// Prints `human` or, with `--json`, `value`.
    fn print(&self, human: impl FnOnce() -> String, value: &Value) {
        if self.json {
            println!("{value}");
        } else {
            let text = human();
            if !text.is_empty() {
                println!("{text}");
            }
        }
    }
}

/// Base64 of `bytes` (the etcd API's bytes).
fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The text of an etcd base64 field (absent = empty; bytes that are not
/// UTF-8 are replaced).
fn text_of(value: &Value, field: &str) -> Result<String, Failure> {
    match value.get(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .map_err(|e| Failure::Local(format!("{field} is not base64: {e}"))),
        Some(other) => Err(Failure::Local(format!("{field} is {other}, not base64"))),
    }
}

/// An etcd int64 field (a string or a number; absent = 0).
fn int_of(value: &Value, field: &str) -> Result<i64, Failure> {
    match value.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| Failure::Local(format!("{field} {s:?} is not an integer"))),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| Failure::Local(format!("{field} {n} is not an int64"))),
        Some(other) => Err(Failure::Local(format!(
            "{field} is {other}, not an integer"
        ))),
    }
}
