//! `QuicNetwork`: the `RaftNetwork` implementation, and `QuicHandle`, the
//! side of it that stays with the application.
//!
//! Order of use, because the network must exist before the `Raft` handle
//! (it is an argument of `Raft::start`) while inbound delivery needs that
//! handle:
//!
//! 1. [`QuicNetwork::bind`] opens the endpoint and starts listening.
//!    Messages arriving now are dropped and counted
//!    (`InboundStats::messages_dropped_no_sink`); Raft retries them.
//! 2. [`QuicNetwork::handle`] gives a cloneable [`QuicHandle`].
//! 3. `Raft::start(.., network, ..)` takes the network.
//! 4. [`QuicHandle::set_inbound`] binds the sink, once, for example
//!    `move |message| { let _ = raft.receive(message); }`.
//! 5. [`QuicHandle::close`] (or dropping the network) stops the lanes and
//!    closes the endpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rafter::{Message, NodeId, RaftNetwork};

use crate::config::{TransportConfig, TransportConfigError};
use crate::frame::encode_frame;
use crate::lane::Lane;
use crate::shared::Shared;
use crate::sink::InboundSink;
use crate::stats::NetworkStats;
use crate::stream_class::{stream_class, StreamClass};
use crate::tls::{TlsError, TlsMode};

/// Concurrent unidirectional streams a peer may open on one connection. A
/// lane uses one; the rest is slack for a stream being replaced.
const INBOUND_STREAMS_PER_CONNECTION_MAX: u32 = 2;

/// How long [`QuicHandle::close`] waits for peers to acknowledge the close.
const CLOSE_WAIT_MAX: Duration = Duration::from_secs(2);

/// Why an endpoint could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The transport configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] TransportConfigError),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The certificate names another node than the one being bound.
    #[error("certificate names node {cert_id}, but the endpoint is for node {id}")]
    IdMismatch {
        /// The id passed to `bind`.
        id: NodeId,
        /// The id the certificate names.
        cert_id: NodeId,
    },
    /// Node id 0 is reserved.
    #[error("node id 0 is reserved")]
    ZeroNodeId,
    /// The UDP socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Socket {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// `set_inbound` was called twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the inbound sink is already set")]
#[non_exhaustive]
pub struct SinkAlreadySet;

/// A node's QUIC endpoint as a [`RaftNetwork`]: one lane (queue, writer
/// task, connection, stream) per peer and stream class, plus the listener.
///
/// Dropping it closes the endpoint, as [`QuicHandle::close`] does without
/// waiting.
pub struct QuicNetwork {
    shared: Arc<Shared>,
    /// The members' addresses from the last `set_members`, without this node.
    peers: BTreeMap<NodeId, String>,
    /// Invariant: every lane here is registered in `shared` and its peer is
    /// in `peers` with the lane's address.
    lanes: BTreeMap<(NodeId, StreamClass), Arc<Lane>>,
}

impl std::fmt::Debug for QuicNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicNetwork")
            .field("id", &self.shared.id)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

impl QuicNetwork {
    /// Opens node `id`'s endpoint on `addr` (UDP) and starts accepting
    /// peers. Must run inside a tokio runtime. Under
    /// [`TlsMode::MutualTls`] the certificate must name `id`.
    ///
    /// `config` is checked alone ([`TransportConfig::validate`]): `bind`
    /// does not see the node's `rafter::Config`. Build `config` with
    /// [`TransportConfig::for_raft`] (or check it with
    /// [`TransportConfig::validate_for_raft`]) so that every append and
    /// snapshot chunk the node builds fits in a frame.
    pub fn bind(
        id: NodeId,
        addr: SocketAddr,
        tls: TlsMode,
        config: TransportConfig,
    ) -> Result<Self, BindError> {
        if id == 0 {
            return Err(BindError::ZeroNodeId);
        }
        config.validate()?;
        match &tls {
            TlsMode::MutualTls(cert) if cert.node_id() != id => {
                return Err(BindError::IdMismatch {
                    id,
                    cert_id: cert.node_id(),
                });
            }
            TlsMode::InsecureLocalDemo => {
                tracing::warn!(
                    node = id,
                    "TLS mode InsecureLocalDemo: peers are NOT authenticated"
                );
            }
            _ => {}
        }
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_uni_streams(INBOUND_STREAMS_PER_CONNECTION_MAX.into())
            .max_concurrent_bidi_streams(0u32.into())
            .keep_alive_interval(Some(config.keep_alive_interval))
            .max_idle_timeout(Some(config.idle_timeout.try_into().map_err(|_| {
                TransportConfigError::Invalid {
                    field: "idle_timeout",
                    reason: "too long for QUIC",
                }
            })?));
        let tls = crate::tls::build(&tls, Arc::new(transport))?;
        let endpoint = quinn::Endpoint::server(tls.server.clone(), addr)
            .map_err(|source| BindError::Socket { addr, source })?;
        let shared = Arc::new(Shared::new(id, config, endpoint, tls));
        // The listener and the connections it serves log under the node.
        let span = tracing::info_span!("quic_listener", node = id);
        tokio::spawn(tracing::Instrument::instrument(
            crate::inbound::accept_loop(shared.clone()),
            span,
        ));
        Ok(Self {
            shared,
            peers: BTreeMap::new(),
            lanes: BTreeMap::new(),
        })
    }

    /// A handle for the application: sink binding, stats, close.
    pub fn handle(&self) -> QuicHandle {
        QuicHandle {
            shared: self.shared.clone(),
        }
    }

    fn lane(&mut self, peer: NodeId, class: StreamClass) -> Option<Arc<Lane>> {
        if let Some(lane) = self.lanes.get(&(peer, class)) {
            return Some(lane.clone());
        }
        let address = self.peers.get(&peer)?.clone();
        let lane = Lane::spawn(self.shared.clone(), peer, class, address);
        self.lanes.insert((peer, class), lane.clone());
        self.shared.lanes().insert((peer, class), lane.clone());
        Some(lane)
    }

    fn stop_lane(&mut self, key: (NodeId, StreamClass)) {
        if let Some(lane) = self.lanes.remove(&key) {
            lane.stop();
            self.shared.lanes().remove(&key);
        }
    }
}

impl Drop for QuicNetwork {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl RaftNetwork for QuicNetwork {
    /// Encodes each message into a frame and queues it on the peer's lane
    /// for its stream class; never waits for the peer. Drops (and counts)
    /// a message whose peer has no address, whose frame is over
    /// `frame_bytes_max`, or whose lane's queue is full.
    async fn send(&mut self, to: NodeId, messages: Vec<Message>) {
        if self.shared.closed.load(Ordering::Relaxed) {
            self.shared.dropped_closed.add(messages.len() as u64);
            return;
        }
        let mut woken: BTreeSet<StreamClass> = BTreeSet::new();
        for message in &messages {
            debug_assert_eq!(message.to, to, "message for {} sent to {to}", message.to);
            debug_assert_eq!(message.from, self.shared.id, "message from another node");
            let class = stream_class(message);
            let Some(lane) = self.lane(to, class) else {
                self.shared.dropped_unknown_peer.incr();
                continue;
            };
            match encode_frame(message, self.shared.config.frame_bytes_max) {
                Ok(frame) => lane.push(frame),
                Err(error) => {
                    lane.counters.dropped_too_large.incr();
                    tracing::warn!(peer = to, kind = message.kind(), %error, "message dropped");
                }
            }
            woken.insert(class);
        }
        for class in woken {
            if let Some(lane) = self.lanes.get(&(to, class)) {
                lane.wake();
            }
        }
    }

    /// Starts lanes to new members, restarts those whose address changed
    /// and stops those of nodes no longer listed. This node's own entry is
    /// ignored.
    async fn set_members(&mut self, nodes: &BTreeMap<NodeId, String>) {
        let mut peers = nodes.clone();
        peers.remove(&self.shared.id);
        let stale: Vec<(NodeId, StreamClass)> = self
            .lanes
            .iter()
            .filter(|((peer, _), lane)| peers.get(peer) != Some(&lane.address))
            .map(|(key, _)| *key)
            .collect();
        for key in stale {
            self.stop_lane(key);
        }
        self.peers = peers;
        if self.shared.closed.load(Ordering::Relaxed) {
            return;
        }
        // Dial control and Raft lanes now, so the first heartbeat and append
        // do not wait for a handshake; snapshot lanes are opened on first
        // use.
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for peer in ids {
            self.lane(peer, StreamClass::Control);
            self.lane(peer, StreamClass::Raft);
        }
        debug_assert!(self
            .lanes
            .keys()
            .all(|(peer, _)| self.peers.contains_key(peer)));
    }
}

/// The application's side of a [`QuicNetwork`]: cheap to clone, usable
/// after the network moved into `Raft::start`.
#[derive(Clone)]
pub struct QuicHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for QuicHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicHandle")
            .field("id", &self.shared.id)
            .finish_non_exhaustive()
    }
}

impl QuicHandle {
    /// The node this endpoint belongs to.
    pub fn node_id(&self) -> NodeId {
        self.shared.id
    }

    /// The UDP address the endpoint listens on (useful after binding port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    /// Binds the inbound sink; can be done once. Until then inbound messages
    /// are dropped and counted.
    pub fn set_inbound(&self, sink: impl InboundSink) -> Result<(), SinkAlreadySet> {
        self.shared
            .sink
            .set(Arc::new(sink))
            .map_err(|_| SinkAlreadySet)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> NetworkStats {
        self.shared.stats()
    }

    /// Stops every lane, closes every connection and the endpoint, waits
    /// (at most 2 s) for peers to acknowledge, then moves the endpoint off
    /// its UDP port so that a new endpoint can bind it (quinn releases the
    /// old socket on its next turn, a moment after this returns). Later
    /// sends are dropped and counted. Idempotent.
    pub async fn close(&self) {
        self.shared.close();
        let _ = tokio::time::timeout(CLOSE_WAIT_MAX, self.shared.endpoint.wait_idle()).await;
        // Handles may outlive the endpoint (to read stats), and each keeps
        // quinn's socket alive; an ephemeral socket takes its place.
        let ephemeral = match self.local_addr() {
            Ok(SocketAddr::V6(_)) => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)),
            _ => SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
        };
        // Twice: quinn keeps the previous socket after a rebind (for
        // migrating connections) until traffic arrives on the new one, which
        // never happens on a closed endpoint; the second rebind replaces
        // that previous socket, dropping ours.
        for _ in 0..2 {
            let rebound = std::net::UdpSocket::bind(ephemeral)
                .and_then(|socket| self.shared.endpoint.rebind(socket));
            if let Err(error) = rebound {
                tracing::warn!(%error, "could not release the endpoint's port");
                break;
            }
        }
    }
}
