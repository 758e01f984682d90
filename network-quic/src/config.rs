//! `TransportConfig`: every limit of the transport, with its default and its
//! trade-off.
//!
//! The frame limit is the node's message limit: a frame carries one encoded
//! message, and the inbound side decodes it with `frame_bytes_max` as the
//! limit of [`rafter::codec::decode_message`]. So `frame_bytes_max` comes
//! from (or is checked against) [`rafter::Config::message_bytes_max`], which
//! `rafter::Config::validate` keeps above the largest append and snapshot
//! chunk the node builds: [`TransportConfig::for_raft`],
//! [`TransportConfig::validate_for_raft`].

use std::time::Duration;

/// Default largest frame payload: 64 MiB, the default
/// `rafter::Config::message_bytes_max` (a test keeps them equal).
pub const FRAME_BYTES_MAX_DEFAULT: usize = 64 << 20;
/// Default per-peer queue bound in messages.
pub const QUEUE_MSGS_MAX_DEFAULT: usize = 4096;
/// Default per-peer queue bound in bytes: 64 MiB.
pub const QUEUE_BYTES_MAX_DEFAULT: u64 = 64 << 20;
/// Default cap on one coalesced write: 1 MiB.
pub const WRITE_BYTES_MAX_DEFAULT: usize = 1 << 20;

const _: () = assert!(WRITE_BYTES_MAX_DEFAULT as u64 <= QUEUE_BYTES_MAX_DEFAULT);
const _: () = assert!(FRAME_BYTES_MAX_DEFAULT as u64 <= QUEUE_BYTES_MAX_DEFAULT);

/// The transport's limits and timers. Start from
/// [`TransportConfig::for_raft`] (the defaults, with the frame limit of the
/// node's Raft config) and change what you need;
/// [`TransportConfig::validate`] (also run by [`crate::QuicNetwork::bind`])
/// rejects inconsistent values, and [`TransportConfig::validate_for_raft`]
/// also a frame limit below the Raft config's message limit. `bind` does not
/// see the Raft config, so a config built otherwise should go through
/// `validate_for_raft` before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Largest frame payload (one encoded message) sent or accepted, and so
    /// the limit messages are decoded with. A larger outgoing message is
    /// dropped and counted (`LaneStats::dropped_too_large`); a larger
    /// incoming frame closes the connection before anything is allocated for
    /// it. Must be at least `rafter::Config::message_bytes_max`
    /// ([`TransportConfig::validate_for_raft`]), which holds the largest
    /// append and snapshot chunk the node builds: below it, that message
    /// would be dropped on every retry and replication to the follower
    /// would stall. Give every node the same value, since the receiver's
    /// limit is the one that counts. Memory: a stream buffers at most one
    /// partial frame, growing only as its bytes arrive, so the worst case is
    /// `frame_bytes_max × inbound_connections_max × 2` streams (64 MiB × 64
    /// × 2 = 8 GiB with the defaults), reached only if every authenticated
    /// peer sends a maximal frame at once; the defaults' largest real
    /// message is 2.6 MiB. Lower `message_bytes_max` and this together
    /// where memory is tight.
    pub frame_bytes_max: usize,
    /// Messages one peer's queue (one stream class) holds while the writer
    /// catches up or the peer is down. When reached, new messages to that
    /// peer are dropped and counted; Raft retries them. 4096 covers
    /// `inflight_msgs_max` (256) appends plus heartbeats many times over.
    pub queue_msgs_max: usize,
    /// Bytes one peer's queue (one stream class) holds; together with
    /// `queue_msgs_max` this bounds the memory a slow or dead peer costs the
    /// leader: 64 MiB per peer with the defaults. When reached, new messages
    /// are dropped (Raft retries).
    pub queue_bytes_max: u64,
    /// Largest coalesced write: the writer takes queued frames until this
    /// many bytes (at least one frame) and hands them to QUIC in one call.
    /// Larger writes amortise per-write cost; smaller ones let the writer
    /// notice a dead connection sooner.
    pub write_bytes_max: usize,
    /// First delay before reconnecting to a peer after a failure; doubles
    /// up to `reconnect_delay_max`, each delay jittered down to half so that
    /// a cluster restarting together does not reconnect in lock step.
    pub reconnect_delay_min: Duration,
    /// Cap of the reconnect delay: the longest a returning peer waits to be
    /// dialled again.
    pub reconnect_delay_max: Duration,
    /// How long one connection attempt (QUIC + TLS handshake) may take.
    pub connect_timeout: Duration,
    /// A connection with no traffic for this long is closed. Keep-alives
    /// (below) keep healthy idle connections open, so this is how fast a
    /// vanished peer is noticed. Must be longer than `keep_alive_interval`.
    pub idle_timeout: Duration,
    /// Keep-alive ping interval on dialled connections.
    pub keep_alive_interval: Duration,
    /// At most one warning per peer per interval while it is unreachable;
    /// the rest are counted and the count is logged with the next warning.
    pub warn_interval: Duration,
    /// Inbound connections served at once. When reached, new ones are
    /// refused (and counted); a legitimate peer retries with backoff.
    pub inbound_connections_max: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            queue_msgs_max: QUEUE_MSGS_MAX_DEFAULT,
            queue_bytes_max: QUEUE_BYTES_MAX_DEFAULT,
            write_bytes_max: WRITE_BYTES_MAX_DEFAULT,
            reconnect_delay_min: Duration::from_millis(50),
            reconnect_delay_max: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(1),
            warn_interval: Duration::from_secs(10),
            inbound_connections_max: 64,
        }
    }
}

/// Why a [`TransportConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportConfigError {
    /// A field is out of range.
    #[error("invalid transport config: {field} {reason}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The frame limit is below the Raft config's message limit: the
    /// largest append or snapshot chunk would never get through.
    #[error(
        "invalid transport config: frame_bytes_max ({frame_bytes_max}) is below the Raft \
         config's message_bytes_max ({message_bytes_max}); the largest append or snapshot \
         chunk would be dropped on every retry and replication would stall"
    )]
    FrameBelowMessage {
        /// `TransportConfig::frame_bytes_max`.
        frame_bytes_max: usize,
        /// `rafter::Config::message_bytes_max`.
        message_bytes_max: usize,
    },
    /// The Raft config the transport was checked against is itself invalid.
    #[error(transparent)]
    Raft(#[from] rafter::ConfigError),
}

impl TransportConfig {
    /// The defaults, with `frame_bytes_max` set to the Raft config's
    /// `message_bytes_max` (and `queue_bytes_max` raised to hold one such
    /// frame if needed), checked by [`TransportConfig::validate_for_raft`].
    pub fn for_raft(raft: &rafter::Config) -> Result<Self, TransportConfigError> {
        let defaults = Self::default();
        let config = Self {
            frame_bytes_max: raft.message_bytes_max,
            queue_bytes_max: defaults.queue_bytes_max.max(raft.message_bytes_max as u64),
            ..defaults
        };
        config.validate_for_raft(raft)?;
        Ok(config)
    }

    /// [`TransportConfig::validate`], plus: `raft` is valid and every
    /// message it lets the node build fits in a frame
    /// (`frame_bytes_max >= raft.message_bytes_max`).
    pub fn validate_for_raft(&self, raft: &rafter::Config) -> Result<(), TransportConfigError> {
        self.validate()?;
        raft.validate()?;
        if self.frame_bytes_max < raft.message_bytes_max {
            return Err(TransportConfigError::FrameBelowMessage {
                frame_bytes_max: self.frame_bytes_max,
                message_bytes_max: raft.message_bytes_max,
            });
        }
        Ok(())
    }

    /// Checks that the values are usable together.
    pub fn validate(&self) -> Result<(), TransportConfigError> {
        let invalid = |field, reason| Err(TransportConfigError::Invalid { field, reason });
        if self.frame_bytes_max == 0 || self.frame_bytes_max > u32::MAX as usize {
            return invalid(
                "frame_bytes_max",
                "must be in 1..=u32::MAX (the length prefix)",
            );
        }
        if self.queue_msgs_max == 0 {
            return invalid("queue_msgs_max", "must be at least 1");
        }
        if self.queue_bytes_max < self.frame_bytes_max as u64 {
            return invalid("queue_bytes_max", "must hold at least one maximal frame");
        }
        if self.write_bytes_max == 0 {
            return invalid("write_bytes_max", "must be at least 1");
        }
        if self.reconnect_delay_min.is_zero() {
            return invalid("reconnect_delay_min", "must be above zero");
        }
        if self.reconnect_delay_max < self.reconnect_delay_min {
            return invalid(
                "reconnect_delay_max",
                "must be at least reconnect_delay_min",
            );
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be above zero");
        }
        if self.keep_alive_interval.is_zero() {
            return invalid("keep_alive_interval", "must be above zero");
        }
        if self.idle_timeout <= self.keep_alive_interval {
            return invalid("idle_timeout", "must be longer than keep_alive_interval");
        }
        if self.inbound_connections_max == 0 {
            return invalid("inbound_connections_max", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(TransportConfig::default().validate(), Ok(()));
    }

    /// The defaults of both crates agree, and `for_raft` of the default Raft
    /// config is the default transport config.
    #[test]
    fn default_frame_limit_is_the_default_message_limit() {
        let raft = rafter::Config::default();
        assert_eq!(FRAME_BYTES_MAX_DEFAULT, raft.message_bytes_max);
        assert_eq!(TransportConfig::default().validate_for_raft(&raft), Ok(()));
        assert_eq!(
            TransportConfig::for_raft(&raft),
            Ok(TransportConfig::default())
        );
    }

    /// A Raft config whose appends outgrow the frame limit is refused with
    /// the numbers; `for_raft` builds a transport config that carries them.
    #[test]
    fn frame_limit_must_hold_the_raft_message_limit() {
        let raft = rafter::Config::default()
            .with_append_bytes_max(96 << 20)
            .with_message_bytes_max(100 << 20);
        let error = TransportConfig::default()
            .validate_for_raft(&raft)
            .unwrap_err();
        assert_eq!(
            error,
            TransportConfigError::FrameBelowMessage {
                frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
                message_bytes_max: 100 << 20,
            }
        );
        assert!(error.to_string().contains("message_bytes_max"), "{error}");
        let config = TransportConfig::for_raft(&raft).unwrap();
        assert_eq!(config.frame_bytes_max, 100 << 20);
        assert!(config.queue_bytes_max >= 100 << 20);

        // An invalid Raft config is refused as such.
        let invalid = rafter::Config::default().with_append_bytes_max(96 << 20);
        assert!(matches!(
            TransportConfig::for_raft(&invalid),
            Err(TransportConfigError::Raft(_))
        ));
    }

    #[test]
    fn queue_must_hold_a_frame() {
        let config = TransportConfig {
            queue_bytes_max: 10,
            ..TransportConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(TransportConfigError::Invalid {
                field: "queue_bytes_max",
                ..
            })
        ));
    }
}
