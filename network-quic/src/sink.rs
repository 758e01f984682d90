//! Where inbound messages go.

use rafter::Message;

/// Receives every message that arrives from a peer and passed the frame,
/// codec and identity checks.
///
/// `deliver` runs on the connection's reader task: it must not block. The
/// intended sink is `rafter::Raft::receive`, which queues or drops:
///
/// ```ignore
/// handle.set_inbound(move |message| { let _ = raft.receive(message); })?;
/// ```
///
/// Any `Fn(Message) + Send + Sync + 'static` closure is a sink. A sink that
/// holds a `Raft` clone keeps that handle alive as long as the endpoint's
/// state lives (until the network and every `QuicHandle` are dropped), so
/// stop a node with `Raft::shutdown`, not by dropping its handles.
pub trait InboundSink: Send + Sync + 'static {
    /// Hands over one message. Must return promptly (queue or drop).
    fn deliver(&self, message: Message);
}

impl<F> InboundSink for F
where
    F: Fn(Message) + Send + Sync + 'static,
{
    fn deliver(&self, message: Message) {
        self(message)
    }
}
