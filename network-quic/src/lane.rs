//! A lane: everything this node sends to one peer in one stream class. It
//! owns a bounded queue, one QUIC connection that it dials, one long-lived
//! unidirectional stream on it, and the task that drains the queue.
//!
//! Pipelining: the writer never waits for a reply. Each turn it takes every
//! queued frame (up to `write_bytes_max`) and hands them to QUIC in one
//! vectored write, so frames go back to back and replies come back on the
//! peer's own lane to us.
//!
//! When the peer is down the lane redials with capped exponential backoff
//! and jitter, logs at most one warning per `warn_interval`, and drops what
//! was queued at each failed attempt: by the time the peer returns those
//! messages are stale, and Raft resends what still matters.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use rafter::NodeId;
use tokio::sync::{watch, Notify};

use crate::backoff::Backoff;
use crate::certs::{node_id_of, node_server_name};
use crate::queue::{Admission, SendQueue};
use crate::shared::Shared;
use crate::stats::{LaneCounters, LaneStats};
use crate::stream_class::StreamClass;
use crate::warn_limit::WarnLimit;

/// The state a lane shares between `send` (which queues) and its task
/// (which writes).
#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) peer: NodeId,
    pub(crate) class: StreamClass,
    pub(crate) address: String,
    queue: Mutex<SendQueue>,
    /// Wakes the writer when frames are queued. `notify_one` keeps a permit
    /// when the writer is busy, so no wake-up is lost.
    wake: Notify,
    /// Set once to stop the task (peer removed or endpoint closed).
    stop: watch::Sender<bool>,
    pub(crate) counters: LaneCounters,
}

impl Lane {
    /// Creates a lane and starts its task on the current runtime.
    pub(crate) fn spawn(
        shared: Arc<Shared>,
        peer: NodeId,
        class: StreamClass,
        address: String,
    ) -> Arc<Lane> {
        assert_ne!(peer, shared.id, "a node has no lane to itself");
        let lane = Arc::new(Lane {
            peer,
            class,
            address,
            queue: Mutex::new(SendQueue::new(
                shared.config.queue_msgs_max,
                shared.config.queue_bytes_max,
            )),
            wake: Notify::new(),
            stop: watch::channel(false).0,
            counters: LaneCounters::default(),
        });
        // Every line the lane logs names its node and peer.
        let span = tracing::info_span!(
            "quic_lane",
            node = shared.id,
            peer = lane.peer,
            class = lane.class.name()
        );
        tokio::spawn(tracing::Instrument::instrument(
            run(shared, lane.clone()),
            span,
        ));
        lane
    }

    fn queue(&self) -> MutexGuard<'_, SendQueue> {
        // Poisoned only if a thread panicked while holding the lock, and no
        // code under this lock panics on input; propagate the bug.
        self.queue.lock().expect("lane queue lock poisoned")
    }

    /// Queues one frame; counts it as dropped when the queue is full. Call
    /// [`Lane::wake`] after a batch of pushes.
    pub(crate) fn push(&self, frame: Bytes) {
        if self.queue().push(frame) == Admission::Full {
            self.counters.dropped_full.incr();
        }
    }

    /// Tells the writer there is work.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops the task; frames still queued are dropped.
    pub(crate) fn stop(&self) {
        self.stop.send_replace(true);
    }

    pub(crate) fn stats(&self) -> LaneStats {
        let queue = self.queue();
        let c = &self.counters;
        LaneStats {
            queued_msgs: queue.len(),
            queued_bytes: queue.bytes(),
            queued_msgs_high_water: queue.msgs_high_water(),
            queued_bytes_high_water: queue.bytes_high_water(),
            // Never above the length of one batch, which is a `usize`.
            writing_msgs: c.writing_msgs.load(Ordering::Relaxed) as usize,
            writing_bytes: c.writing_bytes.load(Ordering::Relaxed),
            sent_msgs: c.sent_msgs.get(),
            sent_bytes: c.sent_bytes.get(),
            writes: c.writes.get(),
            dropped_full: c.dropped_full.get(),
            dropped_unreachable: c.dropped_unreachable.get(),
            dropped_too_large: c.dropped_too_large.get(),
            connects: c.connects.get(),
            connect_failures: c.connect_failures.get(),
            connected: c.connected.load(Ordering::Relaxed),
        }
    }

    fn drop_queued(&self) {
        let dropped = self.queue().clear();
        self.counters.dropped_unreachable.add(dropped as u64);
    }
}

/// Why a connection could not be used.
#[derive(Debug, thiserror::Error)]
enum LaneError {
    #[error("cannot resolve address {0:?}")]
    Resolve(String),
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("handshake: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("peer certificate names node {found:?}, expected {expected}")]
    WrongPeer {
        expected: NodeId,
        found: Option<NodeId>,
    },
}

/// The lane's task: connect, then write batches until the connection
/// fails, then back off and reconnect; until stopped.
async fn run(shared: Arc<Shared>, lane: Arc<Lane>) {
    let mut stop = lane.stop.subscribe();
    let seed = shared.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ lane.peer;
    let mut backoff = Backoff::new(
        shared.config.reconnect_delay_min,
        shared.config.reconnect_delay_max,
        seed,
    );
    let mut warn_limit = WarnLimit::new(shared.config.warn_interval);
    loop {
        let connected = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            connected = connect(&shared, &lane) => connected,
        };
        match connected {
            Ok(connection) => {
                backoff.reset();
                warn_limit.reset();
                lane.counters.connects.incr();
                lane.counters.connected.store(true, Ordering::Relaxed);
                tracing::debug!(peer = lane.peer, class = lane.class.name(), "connected");
                let reason = tokio::select! {
                    _ = stop.wait_for(|stopped| *stopped) => None,
                    reason = pump(&shared, &lane, &connection) => Some(reason),
                };
                lane.counters.connected.store(false, Ordering::Relaxed);
                let Some(reason) = reason else {
                    connection.close(0u32.into(), b"lane stopped");
                    break;
                };
                tracing::info!(peer = lane.peer, class = lane.class.name(), %reason, "connection lost");
            }
            Err(error) => {
                lane.counters.connect_failures.incr();
                lane.drop_queued();
                if let Some(suppressed) = warn_limit.allow(Instant::now()) {
                    tracing::warn!(
                        peer = lane.peer,
                        class = lane.class.name(),
                        address = %lane.address,
                        %error,
                        suppressed,
                        "peer unreachable; retrying with backoff"
                    );
                }
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    lane.drop_queued();
}

async fn resolve(address: &str) -> Result<SocketAddr, LaneError> {
    if let Ok(addr) = address.parse() {
        return Ok(addr);
    }
    tokio::net::lookup_host(address)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| LaneError::Resolve(address.to_owned()))
}

/// Dials the peer and checks it is who we dialled.
async fn connect(shared: &Shared, lane: &Lane) -> Result<quinn::Connection, LaneError> {
    let timeout = shared.config.connect_timeout;
    let attempt = async {
        let addr = resolve(&lane.address).await?;
        let connecting = shared.endpoint.connect_with(
            shared.tls.client.clone(),
            addr,
            &node_server_name(lane.peer),
        )?;
        Ok::<_, LaneError>(connecting.await?)
    };
    let connection = tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| LaneError::Timeout(timeout))??;
    if shared.tls.verify_identity {
        // TLS already checked the server name `node-<peer>.rafter`; this
        // re-reads the id so a verifier bug cannot silently mis-route.
        let found = peer_node_id(&connection);
        if found != Some(lane.peer) {
            connection.close(crate::inbound::CLOSE_IDENTITY.into(), b"unexpected node id");
            return Err(LaneError::WrongPeer {
                expected: lane.peer,
                found,
            });
        }
    }
    Ok(connection)
}

/// The node id named by the certificate the peer presented, if any.
pub(crate) fn peer_node_id(connection: &quinn::Connection) -> Option<NodeId> {
    let identity = connection.peer_identity()?;
    let certs = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    node_id_of(certs.first()?).ok()
}

/// Writes queued frames on one long-lived stream until something fails;
/// returns why.
async fn pump(shared: &Shared, lane: &Lane, connection: &quinn::Connection) -> String {
    let mut stream = match connection.open_uni().await {
        Ok(stream) => stream,
        Err(error) => return format!("open stream: {error}"),
    };
    loop {
        let mut batch = lane.queue().take_batch(shared.config.write_bytes_max);
        if batch.is_empty() {
            tokio::select! {
                _ = lane.wake.notified() => continue,
                error = connection.closed() => return format!("closed: {error}"),
            }
        }
        let msgs = batch.len() as u64;
        let bytes: u64 = batch.iter().map(|frame| frame.len() as u64).sum();
        let written = {
            let _writing = Writing::start(&lane.counters, msgs, bytes);
            stream.write_all_chunks(&mut batch).await
        };
        if let Err(error) = written {
            lane.counters.dropped_unreachable.add(msgs);
            return format!("write: {error}");
        }
        lane.counters.writes.incr();
        lane.counters.sent_msgs.add(msgs);
        lane.counters.sent_bytes.add(bytes);
    }
}

/// Publishes the write in progress in the lane's stats, and clears it when
/// the write ends, fails or is abandoned (the lane stopped).
struct Writing<'a>(&'a LaneCounters);

impl<'a> Writing<'a> {
    fn start(counters: &'a LaneCounters, msgs: u64, bytes: u64) -> Self {
        counters.writing_msgs.store(msgs, Ordering::Relaxed);
        counters.writing_bytes.store(bytes, Ordering::Relaxed);
        Self(counters)
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.writing_msgs.store(0, Ordering::Relaxed);
        self.0.writing_bytes.store(0, Ordering::Relaxed);
    }
}
