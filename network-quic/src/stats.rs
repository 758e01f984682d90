//! Counters the transport keeps, and the snapshot of them that
//! [`crate::QuicHandle::stats`] returns.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rafter::NodeId;

use crate::stream_class::StreamClass;

/// A snapshot of the transport's counters. Counters only grow; `queued_*`
/// and `connected` are current values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetworkStats {
    /// One entry per outgoing lane: a peer and a stream class.
    pub lanes: BTreeMap<(NodeId, StreamClass), LaneStats>,
    /// What arrived from peers.
    pub inbound: InboundStats,
    /// Messages dropped because `send` named a peer with no address (not in
    /// the last `set_members`).
    pub dropped_unknown_peer: u64,
    /// Messages dropped because they were sent after the endpoint closed.
    pub dropped_closed: u64,
}

impl NetworkStats {
    /// The stats of the lane to `peer` for Raft traffic, if there is one.
    pub fn raft_lane(&self, peer: NodeId) -> Option<&LaneStats> {
        self.lanes.get(&(peer, StreamClass::Raft))
    }
}

/// One lane's counters: the queue, the writer and the connection to one
/// peer for one stream class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LaneStats {
    /// Messages queued now.
    pub queued_msgs: usize,
    /// Bytes queued now.
    pub queued_bytes: u64,
    /// The most messages ever queued at once; never above `queue_msgs_max`.
    pub queued_msgs_high_water: usize,
    /// The most bytes ever queued at once; never above `queue_bytes_max`.
    pub queued_bytes_high_water: u64,
    /// Messages taken from the queue by the write in progress. A peer that
    /// is connected but does not read stalls that write (QUIC flow
    /// control), and they wait here while the queue fills and drops.
    pub writing_msgs: usize,
    /// Bytes of the write in progress: at most `write_bytes_max`, or one
    /// frame. A lane's memory is therefore bounded by `queue_bytes_max`
    /// plus this, plus what QUIC buffers (up to the peer's stream window).
    pub writing_bytes: u64,
    /// Messages handed to QUIC.
    pub sent_msgs: u64,
    /// Frame bytes handed to QUIC.
    pub sent_bytes: u64,
    /// Coalesced writes (each carries one or more frames).
    pub writes: u64,
    /// Messages dropped because the queue was full.
    pub dropped_full: u64,
    /// Messages dropped because the peer could not be reached (queued when
    /// a connection attempt failed, or in a write that failed).
    pub dropped_unreachable: u64,
    /// Messages dropped because their frame was over `frame_bytes_max`.
    pub dropped_too_large: u64,
    /// Connections established.
    pub connects: u64,
    /// Connection attempts that failed (timeout, refused, TLS).
    pub connect_failures: u64,
    /// Whether the lane has a connection now.
    pub connected: bool,
}

/// What the endpoint's listener saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InboundStats {
    /// Connections whose handshake completed and whose identity passed.
    pub connections_accepted: u64,
    /// Connections refused because `inbound_connections_max` were open.
    pub connections_refused_limit: u64,
    /// Handshakes that failed: no certificate, another CA, wrong protocol.
    pub handshakes_failed: u64,
    /// Connections refused after the handshake: the certificate names no
    /// single node id.
    pub identity_refused: u64,
    /// Messages handed to the inbound sink.
    pub messages_delivered: u64,
    /// Messages dropped because no inbound sink was set yet.
    pub messages_dropped_no_sink: u64,
    /// Malformed, truncated, oversized or wrong-version frames (each closed
    /// its connection).
    pub frame_errors: u64,
    /// Messages whose `from` was not the id in the sender's certificate
    /// (each closed its connection).
    pub sender_mismatches: u64,
    /// Messages addressed to another node (each closed its connection).
    pub misrouted: u64,
}

/// A counter shared between tasks. Relaxed ordering: counters are for
/// observation only and synchronise nothing.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn incr(&self) {
        self.add(1);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The live counters behind [`LaneStats`] (the queue's own numbers are read
/// from the queue).
#[derive(Debug, Default)]
pub(crate) struct LaneCounters {
    pub(crate) sent_msgs: Counter,
    pub(crate) sent_bytes: Counter,
    pub(crate) writes: Counter,
    pub(crate) dropped_full: Counter,
    pub(crate) dropped_unreachable: Counter,
    pub(crate) dropped_too_large: Counter,
    pub(crate) connects: Counter,
    pub(crate) connect_failures: Counter,
    pub(crate) connected: AtomicBool,
    /// Current values, not counters: the write in progress.
    pub(crate) writing_msgs: AtomicU64,
    pub(crate) writing_bytes: AtomicU64,
}

/// The live counters behind [`InboundStats`].
#[derive(Debug, Default)]
pub(crate) struct InboundCounters {
    pub(crate) connections_accepted: Counter,
    pub(crate) connections_refused_limit: Counter,
    pub(crate) handshakes_failed: Counter,
    pub(crate) identity_refused: Counter,
    pub(crate) messages_delivered: Counter,
    pub(crate) messages_dropped_no_sink: Counter,
    pub(crate) frame_errors: Counter,
    pub(crate) sender_mismatches: Counter,
    pub(crate) misrouted: Counter,
}

impl InboundCounters {
    pub(crate) fn snapshot(&self) -> InboundStats {
        InboundStats {
            connections_accepted: self.connections_accepted.get(),
            connections_refused_limit: self.connections_refused_limit.get(),
            handshakes_failed: self.handshakes_failed.get(),
            identity_refused: self.identity_refused.get(),
            messages_delivered: self.messages_delivered.get(),
            messages_dropped_no_sink: self.messages_dropped_no_sink.get(),
            frame_errors: self.frame_errors.get(),
            sender_mismatches: self.sender_mismatches.get(),
            misrouted: self.misrouted.get(),
        }
    }
}
