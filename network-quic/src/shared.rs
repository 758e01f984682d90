//! `Shared`: the endpoint state every task of one node holds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use rafter::NodeId;

use crate::config::TransportConfig;
use crate::lane::Lane;
use crate::sink::InboundSink;
use crate::stats::{Counter, InboundCounters, NetworkStats};
use crate::stream_class::StreamClass;
use crate::tls::TlsSetup;

/// One node's endpoint, shared by the network, its handles, the lanes and
/// the listener.
pub(crate) struct Shared {
    pub(crate) id: NodeId,
    pub(crate) config: TransportConfig,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) tls: TlsSetup,
    /// Late-bound: empty until [`crate::QuicHandle::set_inbound`]; set once.
    pub(crate) sink: OnceLock<Arc<dyn InboundSink>>,
    pub(crate) inbound: InboundCounters,
    /// Every live lane, for stats and for stopping them at close.
    /// Invariant: holds exactly the lanes the network has not stopped.
    lanes: Mutex<BTreeMap<(NodeId, StreamClass), Arc<Lane>>>,
    pub(crate) dropped_unknown_peer: Counter,
    pub(crate) dropped_closed: Counter,
    /// Set once by close; sends after it are dropped.
    pub(crate) closed: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(crate) fn new(
        id: NodeId,
        config: TransportConfig,
        endpoint: quinn::Endpoint,
        tls: TlsSetup,
    ) -> Self {
        Self {
            id,
            config,
            endpoint,
            tls,
            sink: OnceLock::new(),
            inbound: InboundCounters::default(),
            lanes: Mutex::new(BTreeMap::new()),
            dropped_unknown_peer: Counter::default(),
            dropped_closed: Counter::default(),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn lanes(&self) -> MutexGuard<'_, BTreeMap<(NodeId, StreamClass), Arc<Lane>>> {
        // Poisoned only after a panic under the lock; no code there panics
        // on input, so propagate the bug.
        self.lanes.lock().expect("lane registry lock poisoned")
    }

    pub(crate) fn stats(&self) -> NetworkStats {
        let lanes = self
            .lanes()
            .iter()
            .map(|(key, lane)| (*key, lane.stats()))
            .collect();
        NetworkStats {
            lanes,
            inbound: self.inbound.snapshot(),
            dropped_unknown_peer: self.dropped_unknown_peer.get(),
            dropped_closed: self.dropped_closed.get(),
        }
    }

    /// Stops every lane and closes the endpoint (idempotent).
    pub(crate) fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let lanes = std::mem::take(&mut *self.lanes());
        for lane in lanes.values() {
            lane.stop();
        }
        self.endpoint.close(0u32.into(), b"endpoint closed");
    }
}
