//! Where inbound messages go.

use rafter::Message;

/// Receives every message that arrives from a peer and passed the frame,
/// codec and identity checks.
///
/// `deliver` runs on the connection's reader task: it must not block. The
/// intended sink is `rafter::Raft::receive`, which queues or drops:
///
/// ```
/// # fn bind<SM: rafter::StateMachine>(
/// #     handle: &rafter_quic::QuicHandle,
/// #     raft: rafter::Raft<SM>,
/// # ) -> Result<(), rafter_quic::SinkAlreadySet> {
/// handle.set_inbound(move |message| { let _ = raft.receive(message); })?;
/// # Ok(()) }
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
