//! `rafter-quic`: a [`rafter::RaftNetwork`] on QUIC (quinn) with mutual TLS
//! and pipelined appends.
//!
//! - One QUIC endpoint per node, server and client at once
//!   ([`QuicNetwork::bind`]).
//! - Mutual TLS with a cluster CA ([`ClusterCa`], [`NodeCert`]): a node's
//!   certificate names its id (`node-<id>.rafter`), and a peer may only send
//!   messages `from` that id.
//! - Per peer and [`StreamClass`], a lane: a bounded queue (messages and
//!   bytes; full means drop, Raft retries), and a task that writes
//!   everything queued in one call on a long-lived stream, never waiting for
//!   replies; reconnection with capped exponential backoff and jitter.
//! - Frames: a `u32` length and the bytes of [`rafter::codec`] ([`frame`]).
//! - Inbound messages go to an [`InboundSink`], bound after `Raft::start`
//!   ([`QuicHandle::set_inbound`]; see [`network`](QuicNetwork) for the
//!   order of use).
//!
//! Invariant: nothing read from the network can panic this crate; bad
//! input closes the connection it came on.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod backoff;
pub mod bench;
mod certs;
mod config;
pub mod frame;
mod inbound;
mod lane;
mod network;
mod queue;
mod shared;
mod sink;
mod stats;
mod stream_class;
mod tls;
mod warn_limit;

/// The README's snippets, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use certs::{node_id_of, node_server_name, CertError, ClusterCa, NodeCert};
pub use config::{TransportConfig, TransportConfigError};
pub use network::{BindError, QuicHandle, QuicNetwork, SinkAlreadySet};
pub use sink::InboundSink;
pub use stats::{InboundStats, LaneStats, NetworkStats};
pub use stream_class::{stream_class, StreamClass};
pub use tls::{TlsError, TlsMode};
