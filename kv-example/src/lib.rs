//! `rafter-kv`: a replicated key-value service on Rafter that speaks etcd's
//! v3 JSON API (`shared/kv-api.md`).
//!
//! The walk of one put goes down and never back up: the HTTP handler
//! (`api`) parses and checks it, `server` routes it to the leader and calls
//! `Raft::propose`, the state machine (`state_machine`) applies it to the
//! MVCC store (`store`), and the response comes back the same way.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod append_timing;
pub mod cli;
pub mod cluster;
pub mod command;
pub mod config;
pub mod demo;
pub mod forward;
pub mod http_layers;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod server;
pub mod snapshot_stream;
pub mod snapshots;
pub mod state_machine;
pub mod store;

/// Resolves on Ctrl-C or SIGTERM: the one shutdown signal of the binary.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
