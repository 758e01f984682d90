//! The listener: accepts peers' connections, reads their streams frame by
//! frame, checks each message against the sender's certificate and hands it
//! to the inbound sink.
//!
//! A connection only carries messages towards this node; this node's
//! messages to the same peer go on the connection it dials itself
//! ([`crate::lane`]). Any bad input (a frame that does not decode, a `from`
//! other than the certificate's node, a `to` other than this node) closes
//! that connection with an application error code and is logged; the
//! endpoint keeps serving everyone else.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rafter::{Message, NodeId};
use tokio::sync::Semaphore;

use crate::frame::FrameDecoder;
use crate::lane::peer_node_id;
use crate::shared::Shared;
use crate::warn_limit::WarnLimit;

/// Application close code: a frame did not decode.
pub(crate) const CLOSE_FRAME: u32 = 1;
/// Application close code: the peer's identity is wrong (no node id in its
/// certificate, or a message whose `from` is not that id).
pub(crate) const CLOSE_IDENTITY: u32 = 2;
/// Application close code: a message addressed to another node.
pub(crate) const CLOSE_MISROUTED: u32 = 3;

/// Largest piece read from a stream at once. With the decoder draining
/// every complete frame after each read, a stream buffers at most one
/// partial frame plus this.
const READ_CHUNK_BYTES_MAX: usize = 64 << 10;

/// How often the listener may log a refused or failed peer: a hostile
/// client reconnecting in a loop must not flood the log.
const INBOUND_WARN_INTERVAL: Duration = Duration::from_secs(5);

/// Accepts connections until the endpoint closes.
pub(crate) async fn accept_loop(shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(shared.config.inbound_connections_max));
    let warn_limit = Arc::new(Mutex::new(WarnLimit::new(INBOUND_WARN_INTERVAL)));
    while let Some(incoming) = shared.endpoint.accept().await {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            shared.inbound.connections_refused_limit.incr();
            warn(
                &warn_limit,
                "inbound connection refused: too many connections",
                None,
            );
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        let warn_limit = warn_limit.clone();
        // In the listener's span (the node's id), as every connection.
        let span = tracing::Span::current();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                serve_connection(&shared, incoming, &warn_limit).await;
                drop(permit);
            },
            span,
        ));
    }
    tracing::debug!(node = shared.id, "listener stopped");
}

fn warn(limit: &Mutex<WarnLimit>, what: &str, detail: Option<&dyn std::fmt::Display>) {
    // Poisoned only after a panic under this lock, which holds no code that
    // can panic; treat as a bug.
    let allowed = limit
        .lock()
        .expect("warn limit lock poisoned")
        .allow(Instant::now());
    if let Some(suppressed) = allowed {
        match detail {
            Some(detail) => tracing::warn!(%detail, suppressed, "{what}"),
            None => tracing::warn!(suppressed, "{what}"),
        }
    }
}

async fn serve_connection(
    shared: &Shared,
    incoming: quinn::Incoming,
    warn_limit: &Mutex<WarnLimit>,
) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            // No certificate, one from another CA, or not our protocol.
            shared.inbound.handshakes_failed.incr();
            warn(
                warn_limit,
                "inbound handshake refused",
                Some(&format!("{remote}: {error}")),
            );
            return;
        }
    };
    let peer = if shared.tls.verify_identity {
        match peer_node_id(&connection) {
            Some(peer) => Some(peer),
            None => {
                shared.inbound.identity_refused.incr();
                warn(
                    warn_limit,
                    "inbound peer refused: certificate names no node id",
                    Some(&remote),
                );
                connection.close(CLOSE_IDENTITY.into(), b"certificate names no node id");
                return;
            }
        }
    } else {
        None
    };
    shared.inbound.connections_accepted.incr();
    tracing::debug!(node = shared.id, ?peer, %remote, "inbound connection");
    loop {
        // quinn caps concurrent streams per connection (see `network.rs`),
        // so at most that many readers run per connection.
        let stream = match connection.accept_uni().await {
            Ok(stream) => stream,
            Err(_) => return, // Closed: by the peer, by idle timeout or by us.
        };
        if let Err(refusal) = read_stream(shared, peer, stream).await {
            refusal.count(shared);
            warn(
                warn_limit,
                "inbound connection closed",
                Some(&format!("{remote}: {}", refusal.reason)),
            );
            connection.close(refusal.code.into(), refusal.reason.as_bytes());
            return;
        }
    }
}

/// Why a connection is being closed.
struct Refusal {
    code: u32,
    reason: String,
}

impl Refusal {
    fn count(&self, shared: &Shared) {
        let counter = match self.code {
            CLOSE_FRAME => &shared.inbound.frame_errors,
            CLOSE_IDENTITY => &shared.inbound.sender_mismatches,
            _ => &shared.inbound.misrouted,
        };
        counter.incr();
    }
}

/// Reads one stream to its end, delivering each message. Returns a refusal
/// on bad input. A stream reset or a lost connection ends it quietly.
async fn read_stream(
    shared: &Shared,
    peer: Option<NodeId>,
    mut stream: quinn::RecvStream,
) -> Result<(), Refusal> {
    let mut decoder = FrameDecoder::new(shared.config.frame_bytes_max);
    let frame_error = |error: crate::frame::FrameError| Refusal {
        code: CLOSE_FRAME,
        reason: format!("bad frame: {error}"),
    };
    loop {
        let chunk = match stream.read_chunk(READ_CHUNK_BYTES_MAX, true).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return decoder.finish().map_err(frame_error),
            Err(_) => return Ok(()),
        };
        decoder.push(&chunk.bytes);
        while let Some(message) = decoder.next_message().map_err(frame_error)? {
            check(shared, peer, &message)?;
            deliver(shared, message);
        }
        debug_assert!(
            decoder.buffered() <= shared.config.frame_bytes_max + 4 + READ_CHUNK_BYTES_MAX,
            "decoder holds more than one partial frame"
        );
    }
}

/// The identity rules: a certified peer speaks only for itself, and every
/// message is for this node.
fn check(shared: &Shared, peer: Option<NodeId>, message: &Message) -> Result<(), Refusal> {
    if let Some(peer) = peer {
        if message.from != peer {
            return Err(Refusal {
                code: CLOSE_IDENTITY,
                reason: format!(
                    "certificate names node {peer} but a {} message claims to be from {}",
                    message.kind(),
                    message.from
                ),
            });
        }
    }
    if message.to != shared.id {
        return Err(Refusal {
            code: CLOSE_MISROUTED,
            reason: format!(
                "message for node {} arrived at node {}",
                message.to, shared.id
            ),
        });
    }
    Ok(())
}

fn deliver(shared: &Shared, message: Message) {
    match shared.sink.get() {
        Some(sink) => {
            shared.inbound.messages_delivered.incr();
            sink.deliver(message);
        }
        None => shared.inbound.messages_dropped_no_sink.incr(),
    }
}
