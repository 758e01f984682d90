//! Node configuration: every limit, with its default and its trade-off.

use std::time::Duration;

/// The default tick: the unit of the core's logical clock.
pub const TICK_INTERVAL_DEFAULT: Duration = Duration::from_millis(50);
/// Heartbeats go out every 2 ticks (100 ms by default).
pub const HEARTBEAT_TICKS_DEFAULT: u64 = 2;
/// Elections start after 10..=20 ticks (0.5 s to 1 s) without a leader.
pub const ELECTION_TICKS_MIN_DEFAULT: u64 = 10;
/// See [`ELECTION_TICKS_MIN_DEFAULT`].
pub const ELECTION_TICKS_MAX_DEFAULT: u64 = 20;
/// A lease is 2 ticks shorter than the minimum election timeout (8 of 10
/// ticks by default): see [`Config::lease_drift_ticks`].
pub const LEASE_DRIFT_TICKS_DEFAULT: u64 = 2;

/// What an append message or a snapshot chunk may take beyond its payload
/// budget (`append_bytes_max`, plus one entry of up to `request_bytes_max`):
/// see [`Config::message_bytes_max`].
pub(crate) const MESSAGE_OVERHEAD_BYTES: u128 = 64 << 10;

const _: () = assert!(HEARTBEAT_TICKS_DEFAULT < ELECTION_TICKS_MIN_DEFAULT);
const _: () = assert!(ELECTION_TICKS_MIN_DEFAULT < ELECTION_TICKS_MAX_DEFAULT);
const _: () = assert!(0 < LEASE_DRIFT_TICKS_DEFAULT);
const _: () = assert!(LEASE_DRIFT_TICKS_DEFAULT < ELECTION_TICKS_MIN_DEFAULT);

/// How a node behaves. Start from [`Config::default`] and change what you
/// need; [`Config::validate`] (also run by [`crate::Raft::start`]) rejects
/// inconsistent values.
///
/// With the `serde` feature it is `Serialize` and `Deserialize` (durations
/// as serde writes `std::time::Duration`: seconds and nanoseconds), for
/// configuration files; a missing field takes its default, an unknown one
/// is an error. Validate what you read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct Config {
    /// Length of one logical tick. Timeouts below are counted in ticks.
    pub tick_interval: Duration,
    /// A leader sends heartbeats every this many ticks. Must be well below
    /// the election timeout, or followers start needless elections.
    pub heartbeat_ticks: u64,
    /// A follower that hears no leader for a random number of ticks in
    /// `election_ticks_min..=election_ticks_max` campaigns (Raft §5.2). The
    /// spread is what breaks split votes: with a spread of 10 ticks two
    /// followers time out in the same tick about one time in ten.
    pub election_ticks_min: u64,
    /// See `election_ticks_min`.
    pub election_ticks_max: u64,
    /// Append messages a leader keeps in flight to one follower in the
    /// Replicate state before waiting for acknowledgements. With
    /// `append_bytes_max`, this bounds the bytes in flight per follower:
    /// 256 × 1 MiB = 256 MiB worst case; at 1 ms round trip and 1 GB/s that
    /// window is far more than the bandwidth-delay product, so raising it
    /// buys nothing on a LAN.
    pub inflight_msgs_max: usize,
    /// Upper bound on the entry bytes of one append message (one entry is
    /// always sent even if larger). Bigger messages amortise per-message cost;
    /// smaller ones let heartbeats and other peers' traffic interleave.
    pub append_bytes_max: u64,
    /// Proposals the driver takes into one batch (one storage write, one
    /// round of appends). When reached, the rest wait for the next turn, so
    /// that messages from peers are not starved.
    pub proposal_batch_max: usize,
    /// Proposals may queue for the driver; when full, `propose` waits
    /// (backpressure) until its deadline. The queue is split into a shard
    /// per core (so callers on different cores do not contend), each with
    /// its share of this bound; a caller waits when its own shard is full.
    pub proposal_queue_max: usize,
    /// Inbound messages may queue for the driver; when full, `receive` drops
    /// the message and Raft's retries recover it.
    pub inbox_msgs_max: usize,
    /// When `commit − applied` exceeds this, `propose` fails fast with
    /// `TooManyRequests` instead of queueing behind a slow state machine
    /// (etcd's `maxGapBetweenApplyAndCommitIndex`, 5000 there). A healthy
    /// node's gap reaches what commits in one go, up to a few driver batches
    /// of `proposal_batch_max` entries while the apply task catches up, so
    /// the default is four batches: past that the state machine is slow.
    pub commit_apply_gap_max: u64,
    /// Largest encoded command `propose` accepts (`RequestTooLarge`
    /// otherwise). Default 1.5 MiB, as etcd.
    ///
    /// Checked when a command is proposed, never when a committed one is
    /// applied: lowering it (or nodes that differ) leaves the log readable.
    pub request_bytes_max: usize,
    /// Bytes of commands a leader holds appended but not yet committed
    /// (etcd's `MaxUncommittedEntriesSize`); past it, proposals fail fast
    /// with `TooManyRequests` and nothing is appended. The bound on the log
    /// a leader cut off from its followers builds before it steps down.
    /// An empty uncommitted log always takes one batch, however large, so
    /// no command under `request_bytes_max` is refused for ever.
    ///
    /// Trade-off: it caps throughput at this many bytes per commit round
    /// trip (Little's law: 64 MiB allows 640 MB/s at 100 ms from append to
    /// commit), and memory at about this much (plus one batch) for entries
    /// that may never commit. Too small and a healthy leader refuses work
    /// under bursts; default 64 MiB.
    pub uncommitted_bytes_max: u64,
    /// How long `propose` waits for its entry to be committed and applied
    /// before it returns `Timeout` (the outcome is then unknown: the entry
    /// may still commit). Enforced on the apply task's ticks, so an answer
    /// comes up to one `tick_interval` late, and it holds while the driver
    /// is stuck. Also the deadline of `read_index`, `linearizable_read`, and
    /// of the driver's acceptance of a transfer or membership change.
    pub propose_timeout: Duration,
    /// Bytes of recent log entries kept in memory, so appends to followers
    /// that are nearly caught up and the apply task never wait for a storage
    /// read. Entries not yet durable or not yet applied are always kept.
    pub log_cache_bytes_max: u64,
    /// A learner is promoted to voter only once its match index is within
    /// this many entries of the leader's last index: promoting a far-behind
    /// node would leave the cluster unable to commit until it catches up.
    pub learner_catchup_lag_max: u64,
    /// The state machine builds a snapshot after this many entries applied
    /// since the last one, and the log before it is purged: the log's length
    /// stays around this (plus `snapshot_trailing_entries`). Smaller means
    /// less disk and faster restarts but more snapshot work; 0 never builds.
    pub snapshot_interval_entries: u64,
    /// Entries kept in the log behind a snapshot, so a follower lagging by
    /// less than this catches up from the log instead of a whole snapshot.
    pub snapshot_trailing_entries: u64,
    /// Largest encoded message the node's transport sends or accepts: the
    /// limit it passes to [`crate::codec::decode_message`] (`rafter-quic`
    /// takes its frame limit from it: `TransportConfig::for_raft`). Every
    /// message the node builds must fit, or the transport drops it on every
    /// retry and replication to that follower stalls for good. The largest
    /// are an append, whose entries fill `append_bytes_max` (by
    /// [`crate::Entry::size_bytes`]; a storage may return the entry that
    /// crosses it, a command of up to `request_bytes_max`), and a snapshot
    /// chunk of `append_bytes_max` bytes plus its metadata. So
    /// [`Config::validate`] requires at least
    /// `append_bytes_max + request_bytes_max + 64 KiB`; the 64 KiB covers
    /// message and entry headers, a chunk's membership, and what
    /// `Entry::size_bytes` leaves out of a membership entry (its addresses,
    /// about 250 B for 7 nodes: a hundred such entries in one append fit).
    /// Default 64 MiB, far above the 2.6 MiB the other
    /// defaults need. A peer may make a receiver buffer one message of this
    /// size per stream it reads, so lower it where memory is tight.
    pub message_bytes_max: usize,
    /// On a follower or learner, `propose` and `propose_many` hand the
    /// commands to the leader over the peer transport (etcd-raft's
    /// proposal forwarding) instead of answering `NotLeader`: the caller
    /// gets its response from this node's own apply, so a client talking to
    /// any member costs one message each way, not a second request to the
    /// leader. The leader answers each batch with the log index it appended
    /// it at, or why it refused; the outcome of a batch whose answer is lost
    /// (the leader changed or did not answer within `election_ticks_max`)
    /// is unknown (`ProposeError::ForwardUnanswered`). One call's commands
    /// must fit one message (`message_bytes_max` less 64 KiB of headers):
    /// a larger `propose_many` on a follower is `RequestTooLarge` at once.
    /// Off by default: callers that route to the leader themselves keep
    /// `NotLeader`.
    pub forward_proposals: bool,
    /// Seed of the node's random number generator (election timeouts). Nodes
    /// mix in their id, so one seed serves a whole cluster; a fixed seed
    /// makes a simulated run repeatable.
    pub rng_seed: u64,
    /// Leader lease reads (dissertation §6.4.1); off by default. Off, every
    /// `read_index` / `linearizable_read` costs the leader a heartbeat round
    /// (shared by the reads that arrive together). On, a leader that a
    /// quorum acknowledged recently answers reads with its commit index at
    /// once, without a round, for `election_ticks_min - lease_drift_ticks`
    /// ticks counted from when it *sent* the acknowledged heartbeat; reads
    /// forwarded by followers use the lease too. Still never before the
    /// leader has committed an entry of its own term, and never once it has
    /// started a leadership transfer in its term.
    ///
    /// Why it is safe: a follower that heard from its leader within
    /// `election_ticks_min` ticks of its own clock ignores vote requests
    /// (leader stickiness, dissertation §4.2.3) and does not campaign, and
    /// with this option a node that (re)starts ignores them for its first
    /// `election_ticks_min` ticks too (it may have acknowledged a heartbeat
    /// just before it crashed). So no other leader can be elected while the
    /// lease holds, *if* clocks keep to `lease_drift_ticks`. Leader
    /// transfers are exempt from stickiness, which is why a transfer ends
    /// the lease for the rest of the term.
    ///
    /// What it costs: the read's safety now rests on time, not only on
    /// messages. A leader whose ticks run slow (a stalled process, a paused
    /// VM, a driver starved for longer than the drift) may answer a stale
    /// read. Every node must run with the same setting: the followers'
    /// stickiness after a restart is what the leader relies on.
    pub lease_reads: bool,
    /// The clock-drift bound the lease assumes, in ticks: over any stretch
    /// of real time in which one node counts up to `election_ticks_min`
    /// ticks, any other node counts fewer than `election_ticks_min +
    /// lease_drift_ticks`. It must be at least 1, since two clocks ticking
    /// at exactly the same rate still differ by one tick over a stretch,
    /// by their phase; each further tick covers a rate difference of
    /// `1 / election_ticks_min`. The default, 2 of 10 ticks, allows clocks
    /// that differ in rate by 10% (plus the phase tick), and leaves a lease
    /// of 8 ticks (400 ms at 50 ms ticks) per acknowledged heartbeat, which
    /// the heartbeats every 2 ticks renew long before it ends. Larger is
    /// safer and the lease shorter; `lease_reads` with a value of 0 or not
    /// below `election_ticks_min` is refused by [`Config::validate`] (the
    /// lease would not be shorter than the minimum election timeout, or
    /// would be empty). Ignored while `lease_reads` is off.
    pub lease_drift_ticks: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tick_interval: TICK_INTERVAL_DEFAULT,
            heartbeat_ticks: HEARTBEAT_TICKS_DEFAULT,
            election_ticks_min: ELECTION_TICKS_MIN_DEFAULT,
            election_ticks_max: ELECTION_TICKS_MAX_DEFAULT,
            inflight_msgs_max: 256,
            append_bytes_max: 1 << 20,
            proposal_batch_max: 4096,
            proposal_queue_max: 65536,
            inbox_msgs_max: 65536,
            commit_apply_gap_max: 4 * 4096,
            request_bytes_max: 1536 * 1024,
            uncommitted_bytes_max: 64 << 20,
            propose_timeout: Duration::from_secs(7),
            log_cache_bytes_max: 64 << 20,
            learner_catchup_lag_max: 1000,
            snapshot_interval_entries: 100_000,
            snapshot_trailing_entries: 5_000,
            message_bytes_max: 64 << 20,
            forward_proposals: false,
            rng_seed: 0x5eed,
            lease_reads: false,
            lease_drift_ticks: LEASE_DRIFT_TICKS_DEFAULT,
        }
    }
}

/// Builder-style setters, one per field: `Config` is `#[non_exhaustive]`
/// (new limits will come), so other crates cannot write a struct literal,
/// even with `..Config::default()`. Start from the defaults and chain:
///
/// ```
/// use std::time::Duration;
///
/// let config = rafter::Config::default()
///     .with_tick_interval(Duration::from_millis(20))
///     .with_snapshot_interval_entries(10_000);
/// assert!(config.validate().is_ok());
/// ```
///
/// The fields stay public: `config.tick_interval = ...` on a mutable
/// default works as well.
impl Config {
    /// Sets [`Config::tick_interval`].
    #[must_use]
    pub fn with_tick_interval(mut self, tick_interval: Duration) -> Self {
        self.tick_interval = tick_interval;
        self
    }

    /// Sets [`Config::heartbeat_ticks`].
    #[must_use]
    pub fn with_heartbeat_ticks(mut self, heartbeat_ticks: u64) -> Self {
        self.heartbeat_ticks = heartbeat_ticks;
        self
    }

    /// Sets [`Config::election_ticks_min`].
    #[must_use]
    pub fn with_election_ticks_min(mut self, election_ticks_min: u64) -> Self {
        self.election_ticks_min = election_ticks_min;
        self
    }

    /// Sets [`Config::election_ticks_max`].
    #[must_use]
    pub fn with_election_ticks_max(mut self, election_ticks_max: u64) -> Self {
        self.election_ticks_max = election_ticks_max;
        self
    }

    /// Sets [`Config::inflight_msgs_max`].
    #[must_use]
    pub fn with_inflight_msgs_max(mut self, inflight_msgs_max: usize) -> Self {
        self.inflight_msgs_max = inflight_msgs_max;
        self
    }

    /// Sets [`Config::append_bytes_max`].
    #[must_use]
    pub fn with_append_bytes_max(mut self, append_bytes_max: u64) -> Self {
        self.append_bytes_max = append_bytes_max;
        self
    }

    /// Sets [`Config::proposal_batch_max`].
    #[must_use]
    pub fn with_proposal_batch_max(mut self, proposal_batch_max: usize) -> Self {
        self.proposal_batch_max = proposal_batch_max;
        self
    }

    /// Sets [`Config::proposal_queue_max`].
    #[must_use]
    pub fn with_proposal_queue_max(mut self, proposal_queue_max: usize) -> Self {
        self.proposal_queue_max = proposal_queue_max;
        self
    }

    /// Sets [`Config::inbox_msgs_max`].
    #[must_use]
    pub fn with_inbox_msgs_max(mut self, inbox_msgs_max: usize) -> Self {
        self.inbox_msgs_max = inbox_msgs_max;
        self
    }

    /// Sets [`Config::commit_apply_gap_max`].
    #[must_use]
    pub fn with_commit_apply_gap_max(mut self, commit_apply_gap_max: u64) -> Self {
        self.commit_apply_gap_max = commit_apply_gap_max;
        self
    }

    /// Sets [`Config::request_bytes_max`].
    #[must_use]
    pub fn with_request_bytes_max(mut self, request_bytes_max: usize) -> Self {
        self.request_bytes_max = request_bytes_max;
        self
    }

    /// Sets [`Config::uncommitted_bytes_max`].
    #[must_use]
    pub fn with_uncommitted_bytes_max(mut self, uncommitted_bytes_max: u64) -> Self {
        self.uncommitted_bytes_max = uncommitted_bytes_max;
        self
    }

    /// Sets [`Config::propose_timeout`].
    #[must_use]
    pub fn with_propose_timeout(mut self, propose_timeout: Duration) -> Self {
        self.propose_timeout = propose_timeout;
        self
    }

    /// Sets [`Config::log_cache_bytes_max`].
    #[must_use]
    pub fn with_log_cache_bytes_max(mut self, log_cache_bytes_max: u64) -> Self {
        self.log_cache_bytes_max = log_cache_bytes_max;
        self
    }

    /// Sets [`Config::learner_catchup_lag_max`].
    #[must_use]
    pub fn with_learner_catchup_lag_max(mut self, learner_catchup_lag_max: u64) -> Self {
        self.learner_catchup_lag_max = learner_catchup_lag_max;
        self
    }

    /// Sets [`Config::snapshot_interval_entries`].
    #[must_use]
    pub fn with_snapshot_interval_entries(mut self, snapshot_interval_entries: u64) -> Self {
        self.snapshot_interval_entries = snapshot_interval_entries;
        self
    }

    /// Sets [`Config::snapshot_trailing_entries`].
    #[must_use]
    pub fn with_snapshot_trailing_entries(mut self, snapshot_trailing_entries: u64) -> Self {
        self.snapshot_trailing_entries = snapshot_trailing_entries;
        self
    }

    /// Sets [`Config::message_bytes_max`].
    #[must_use]
    pub fn with_message_bytes_max(mut self, message_bytes_max: usize) -> Self {
        self.message_bytes_max = message_bytes_max;
        self
    }

    /// Sets [`Config::forward_proposals`].
    #[must_use]
    pub fn with_forward_proposals(mut self, forward_proposals: bool) -> Self {
        self.forward_proposals = forward_proposals;
        self
    }

    /// Sets [`Config::rng_seed`].
    #[must_use]
    pub fn with_rng_seed(mut self, rng_seed: u64) -> Self {
        self.rng_seed = rng_seed;
        self
    }

    /// Sets [`Config::lease_reads`].
    #[must_use]
    pub fn with_lease_reads(mut self, lease_reads: bool) -> Self {
        self.lease_reads = lease_reads;
        self
    }

    /// Sets [`Config::lease_drift_ticks`].
    #[must_use]
    pub fn with_lease_drift_ticks(mut self, lease_drift_ticks: u64) -> Self {
        self.lease_drift_ticks = lease_drift_ticks;
        self
    }
}

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field is out of range; the message says why.
    #[error("invalid config `{field}`: {reason}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl Config {
    /// Checks that the values fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.into(),
            })
        };
        if self.tick_interval.is_zero() {
            return invalid("tick_interval", "must be positive");
        }
        if self.heartbeat_ticks == 0 {
            return invalid("heartbeat_ticks", "must be at least 1");
        }
        if self.election_ticks_min <= self.heartbeat_ticks {
            return invalid("election_ticks_min", "must be greater than heartbeat_ticks");
        }
        if self.election_ticks_max <= self.election_ticks_min {
            return invalid(
                "election_ticks_max",
                "must be greater than election_ticks_min",
            );
        }
        if self.inflight_msgs_max == 0 {
            return invalid("inflight_msgs_max", "must be at least 1");
        }
        if self.append_bytes_max == 0 {
            return invalid("append_bytes_max", "must be positive");
        }
        if self.proposal_batch_max == 0 || self.proposal_queue_max == 0 || self.inbox_msgs_max == 0
        {
            return invalid(
                "proposal_batch_max",
                "queues and batches must hold at least 1",
            );
        }
        if self.commit_apply_gap_max == 0 {
            return invalid("commit_apply_gap_max", "must be positive");
        }
        if self.request_bytes_max == 0 {
            return invalid("request_bytes_max", "must be positive");
        }
        if self.uncommitted_bytes_max == 0 {
            return invalid("uncommitted_bytes_max", "must be positive");
        }
        // In u128: the sum of a u64 and a usize cannot overflow there.
        let message_bytes_min = u128::from(self.append_bytes_max)
            + self.request_bytes_max as u128
            + MESSAGE_OVERHEAD_BYTES;
        if (self.message_bytes_max as u128) < message_bytes_min {
            return Err(ConfigError::Invalid {
                field: "message_bytes_max",
                reason: format!(
                    "{} bytes cannot carry the largest append or snapshot chunk: \
                     append_bytes_max ({}) + request_bytes_max ({}) + 64 KiB = {message_bytes_min}",
                    self.message_bytes_max, self.append_bytes_max, self.request_bytes_max
                ),
            });
        }
        if self.propose_timeout.is_zero() {
            return invalid("propose_timeout", "must be positive");
        }
        if self.lease_reads && self.lease_drift_ticks == 0 {
            return invalid(
                "lease_drift_ticks",
                "must be at least 1 with lease_reads: a lease of election_ticks_min ticks \
                 is not shorter than the minimum election timeout",
            );
        }
        if self.lease_reads && self.lease_drift_ticks >= self.election_ticks_min {
            return invalid(
                "lease_drift_ticks",
                "must be below election_ticks_min with lease_reads: the lease \
                 (election_ticks_min - lease_drift_ticks ticks) would be empty",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease must be shorter than the minimum election timeout, and not
    /// empty; off, the drift bound is not looked at.
    #[test]
    fn a_lease_not_shorter_than_the_election_timeout_is_refused() {
        let lease = Config::default().with_lease_reads(true);
        lease.validate().unwrap();
        for drift in [
            0,
            ELECTION_TICKS_MIN_DEFAULT,
            ELECTION_TICKS_MIN_DEFAULT + 1,
        ] {
            let err = lease
                .clone()
                .with_lease_drift_ticks(drift)
                .validate()
                .unwrap_err();
            assert!(err.to_string().contains("lease_drift_ticks"), "{err}");
        }
        lease
            .clone()
            .with_lease_drift_ticks(ELECTION_TICKS_MIN_DEFAULT - 1)
            .validate()
            .unwrap();
        Config::default()
            .with_lease_drift_ticks(0)
            .validate()
            .unwrap();
    }

    #[test]
    fn default_is_valid_and_bad_values_are_named() {
        Config::default().validate().unwrap();
        let bad = Config {
            election_ticks_min: 2,
            ..Config::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains("election_ticks_min"), "{err}");
        let bad = Config {
            election_ticks_max: 10,
            ..Config::default()
        };
        assert!(bad.validate().is_err());
        let bad = Config {
            inflight_msgs_max: 0,
            ..Config::default()
        };
        assert!(bad.validate().is_err());
    }

    /// An append over the limit is dropped by the transport every time it
    /// is sent, so a config allowing one is refused at start.
    #[test]
    fn message_limit_must_hold_the_largest_append() {
        let bad = Config {
            append_bytes_max: 64 << 20,
            ..Config::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("message_bytes_max"), "{err}");
        assert!(err.contains("append_bytes_max"), "{err}");
        let bad = Config {
            request_bytes_max: 1 << 20,
            message_bytes_max: 1 << 20,
            ..Config::default()
        };
        assert!(bad.validate().is_err());
        let tight = tight_config();
        tight.validate().unwrap();
        let one_less = Config {
            message_bytes_max: tight.message_bytes_max - 1,
            ..tight
        };
        assert!(one_less.validate().is_err());
    }

    /// Small budgets, and `message_bytes_max` at the least `validate` takes.
    fn tight_config() -> Config {
        let append_bytes_max = 64 << 10;
        let request_bytes_max = 32 << 10;
        Config {
            append_bytes_max,
            request_bytes_max,
            message_bytes_max: append_bytes_max as usize + request_bytes_max + (64 << 10),
            ..Config::default()
        }
    }

    /// The bound `validate` checks holds for real encodings: the largest
    /// messages a node with the tightest valid config builds fit in
    /// `message_bytes_max`.
    #[test]
    fn the_largest_messages_fit_the_tightest_valid_limit() {
        use crate::codec::encode_message;
        use crate::message::{Message, MessageBody};
        use crate::types::{Entry, EntryPayload, LogId, Membership, SnapshotMeta};
        use crate::CommandBytes;
        use bytes::Bytes;

        let config = tight_config();
        // Big terms and indexes: their varints take the most bytes.
        let term = u64::MAX;
        let first = u64::MAX / 2;
        let membership = Membership::new_voters((1..=7u64).map(|id| {
            (
                u64::MAX - id,
                format!("rafter-node-{id}.example.internal:7000"),
            )
        }));
        // Entries up to the budget, the one crossing it included (as a
        // storage may return), then one more: the largest command.
        let fill = |payload: &dyn Fn(usize) -> EntryPayload, last: Option<EntryPayload>| {
            let mut entries = Vec::new();
            let mut bytes = 0;
            while bytes < config.append_bytes_max {
                let entry = Entry {
                    term,
                    index: first + entries.len() as u64,
                    payload: payload(entries.len()),
                };
                bytes += entry.size_bytes();
                entries.push(entry);
            }
            if let Some(payload) = last {
                entries.push(Entry {
                    term,
                    index: first + entries.len() as u64,
                    payload,
                });
            }
            Message {
                from: u64::MAX,
                to: u64::MAX - 1,
                term,
                body: MessageBody::Append {
                    prev_log_id: LogId::new(term, first - 1),
                    entries,
                    commit: u64::MAX,
                },
            }
        };
        let largest_command =
            || EntryPayload::Command(CommandBytes::from(vec![7; config.request_bytes_max]));
        // A hundred memberships in one append, then commands: the largest
        // payloads `Entry::size_bytes` has to estimate rather than count.
        let memberships_then_commands = |i: usize| {
            if i < 100 {
                EntryPayload::Membership(Box::new(membership.clone()))
            } else {
                EntryPayload::Command(CommandBytes::from(b"x"))
            }
        };
        let messages = [
            fill(&|_| EntryPayload::Blank, Some(largest_command())),
            fill(
                &|_| EntryPayload::Command(CommandBytes::from(b"x")),
                Some(largest_command()),
            ),
            fill(&|_| largest_command(), None),
            fill(&memberships_then_commands, Some(largest_command())),
            Message {
                from: u64::MAX,
                to: u64::MAX - 1,
                term,
                body: MessageBody::InstallSnapshot {
                    meta: SnapshotMeta {
                        last_log_id: LogId::new(term, u64::MAX),
                        membership: membership.clone(),
                    },
                    offset: u64::MAX / 2,
                    data: Bytes::from(vec![7; config.append_bytes_max as usize]),
                    done: true,
                },
            },
        ];
        for message in &messages {
            let len = encode_message(message).len();
            assert!(
                len <= config.message_bytes_max,
                "a {} of {len} bytes is over message_bytes_max = {}",
                message.kind(),
                config.message_bytes_max
            );
        }
    }
}

/// `Config` through serde (feature `serde`): configuration files.
#[cfg(all(test, feature = "serde"))]
mod serde_tests {
    use super::*;

    #[test]
    fn a_config_round_trips_and_missing_fields_take_their_defaults() {
        let config = Config::default()
            .with_tick_interval(Duration::from_millis(20))
            .with_snapshot_interval_entries(10);
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), config);
        let partial: Config = serde_json::from_str(r#"{"heartbeat_ticks": 2}"#).unwrap();
        assert_eq!(partial, Config::default().with_heartbeat_ticks(2));
        let unknown = serde_json::from_str::<Config>(r#"{"heartbeat_tick": 2}"#);
        assert!(unknown.is_err(), "a misspelt field is an error");
    }

    #[test]
    fn metrics_serialize_with_peers_and_the_fatal_reason() {
        let mut metrics = crate::Metrics {
            id: 3,
            fatal: Some(crate::Fatal::Panicked {
                task: "apply",
                message: "boom".into(),
            }),
            ..crate::Metrics::default()
        };
        metrics.peers.insert(
            2,
            crate::PeerMetrics {
                match_index: 7,
                next_index: 8,
                last_ack: Some(std::time::Instant::now()),
                ..crate::PeerMetrics::default()
            },
        );
        let json = serde_json::to_value(&metrics).unwrap();
        assert_eq!(json["id"], 3);
        assert_eq!(json["fatal"], "the apply task panicked: boom");
        assert_eq!(json["peers"]["2"]["match_index"], 7);
        assert_eq!(json["peers"]["2"]["state"], "Probe");
        assert!(json["peers"]["2"]["last_ack_ms_ago"].is_u64());
    }
}
