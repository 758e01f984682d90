//! Transport-only throughput on loopback, for `rafter-bench` and the
//! `loopback` example: two endpoints on 127.0.0.1 with mutual TLS, one
//! sending append messages of a given payload size to the other.
//!
//! [`Mode::Single`] sends one message and waits for it to arrive before the
//! next (what a transport without pipelining does per peer);
//! [`Mode::Pipelined`] keeps up to `window` messages in flight and lets the
//! lane coalesce them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rafter::CommandBytes;
use rafter::{Entry, EntryPayload, LogId, Message, MessageBody, RaftNetwork};
use tokio::sync::watch;

use crate::{BindError, CertError, ClusterCa, QuicNetwork, TlsMode, TransportConfig};

/// How messages are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// One message in flight: send, wait for delivery, repeat.
    Single,
    /// Up to `window` messages in flight, sent in batches.
    Pipelined {
        /// Messages in flight at most; must fit the lane's queue.
        window: usize,
    },
}

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopbackParams {
    /// Bytes of the command in each append's single entry.
    pub payload_bytes: usize,
    /// Messages to send (after one warm-up message).
    pub messages: u64,
    /// Single or pipelined.
    pub mode: Mode,
    /// Give up after this long.
    pub timeout: Duration,
}

/// The result of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct LoopbackReport {
    /// Messages delivered.
    pub messages: u64,
    /// Frame bytes delivered (length prefix and codec encoding included).
    pub frame_bytes: u64,
    /// Time from the first send to the last delivery.
    pub elapsed: Duration,
    /// Messages per second.
    pub messages_per_second: f64,
    /// Payload megabytes (10^6 bytes of commands) per second.
    pub payload_mb_per_second: f64,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Certificates could not be made.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// An endpoint could not be opened.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Not everything arrived in time (messages were dropped or the run is
    /// too slow for the timeout).
    #[error("timed out with {delivered} of {expected} messages delivered")]
    Timeout {
        /// Delivered so far.
        delivered: u64,
        /// Expected.
        expected: u64,
    },
    /// The parameters do not fit the transport's limits.
    #[error("invalid parameters: {0}")]
    Params(&'static str),
}

fn append(index: u64, payload: &CommandBytes) -> Message {
    Message::new(
        1,
        2,
        1,
        MessageBody::Append {
            prev_log_id: LogId::new(1, index - 1),
            entries: vec![Entry {
                term: 1,
                index,
                payload: EntryPayload::Command(payload.clone()),
            }],
            commit: 0,
        },
    )
}

/// Runs one measurement on two fresh endpoints. Must run inside a tokio
/// runtime (multi-threaded for realistic numbers).
pub async fn loopback(params: LoopbackParams) -> Result<LoopbackReport, BenchError> {
    let config = TransportConfig::default();
    let batch_max = match params.mode {
        Mode::Single => 1,
        Mode::Pipelined { window } => {
            if window == 0 || window > config.queue_msgs_max {
                return Err(BenchError::Params("window must be in 1..=queue_msgs_max"));
            }
            window
        }
    };
    let ca = ClusterCa::generate("bench")?;
    let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut sender = QuicNetwork::bind(
        1,
        localhost,
        TlsMode::MutualTls(ca.issue_node_cert(1)?),
        config.clone(),
    )?;
    let receiver = QuicNetwork::bind(
        2,
        localhost,
        TlsMode::MutualTls(ca.issue_node_cert(2)?),
        config,
    )?;
    let receiver_handle = receiver.handle();
    let (delivered_tx, delivered) = watch::channel(0u64);
    let _ = receiver_handle.set_inbound(move |_message: Message| {
        delivered_tx.send_modify(|count| *count += 1);
    });
    let receiver_addr = receiver_handle
        .local_addr()
        .map_err(|source| BindError::Socket {
            addr: localhost,
            source,
        })?;
    sender
        .set_members(&[(2, receiver_addr.to_string())].into_iter().collect())
        .await;

    let payload = CommandBytes::from(vec![0xA5u8; params.payload_bytes]);
    let expected = params.messages + 1;
    let deadline = tokio::time::Instant::now() + params.timeout;
    let wait = |target: u64| {
        let mut delivered = delivered.clone();
        async move {
            tokio::time::timeout_at(deadline, delivered.wait_for(|count| *count >= target))
                .await
                .ok()
                .and_then(|result| result.ok().map(|count| *count))
                .ok_or(BenchError::Timeout {
                    delivered: *delivered.borrow(),
                    expected,
                })
        }
    };
    // Warm-up: the handshake is not part of the measurement.
    sender.send(2, vec![append(1, &payload)]).await;
    wait(1).await?;

    let started = Instant::now();
    let mut sent = 1u64;
    while sent < expected {
        let in_flight = sent - *delivered.borrow();
        let room = (batch_max as u64)
            .saturating_sub(in_flight)
            .min(expected - sent);
        if room == 0 {
            // Half the window drained before topping up: bigger batches.
            wait(sent - (batch_max as u64 / 2)).await?;
            continue;
        }
        let batch: Vec<Message> = (sent + 1..=sent + room)
            .map(|i| append(i, &payload))
            .collect();
        sender.send(2, batch).await;
        sent += room;
        if params.mode == Mode::Single {
            wait(sent).await?;
        }
    }
    wait(expected).await?;
    let elapsed = started.elapsed();
    let stats = sender.handle().stats();
    let lane = stats.raft_lane(2).cloned().unwrap_or_default();
    drop(sender);
    receiver_handle.close().await;
    let seconds = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    Ok(LoopbackReport {
        messages: params.messages,
        frame_bytes: lane.sent_bytes,
        elapsed,
        messages_per_second: params.messages as f64 / seconds,
        payload_mb_per_second: (params.messages * params.payload_bytes as u64) as f64
            / 1e6
            / seconds,
    })
}
