//! The run's trace: a running hash of every event (what happened, when, to
//! whom, and each touched node's visible state after it) and a ring of the
//! last events to print when a seed fails.
//!
//! Two runs of one seed must produce the same hash: that is the test that
//! the simulation is deterministic (no wall clock, no thread, no hash-map
//! iteration order leaks into it).

use std::collections::VecDeque;
use std::fmt;

use rafter::{Message, MessageBody};

/// Events kept for the failure report.
pub const TRACE_TAIL_EVENTS: usize = 60;

/// One line of the trace.
#[derive(Debug, Clone)]
pub struct TraceEvent {
    pub step: u64,
    pub time: u64,
    pub text: String,
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:<6} t={:<8} {}", self.step, self.time, self.text)
    }
}

/// The hash and the tail: one short line per event.
pub struct Trace {
    hash: u64,
    tail: VecDeque<TraceEvent>,
    /// `SIM_TRACE=1`: print every event to stderr as it happens.
    print: bool,
}

impl Default for Trace {
    fn default() -> Self {
        Self {
            hash: FNV_OFFSET,
            tail: VecDeque::with_capacity(TRACE_TAIL_EVENTS + 1),
            print: std::env::var_os("SIM_TRACE").is_some(),
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Trace {
    /// Mixes words into the hash (FNV-1a over their bytes).
    pub fn mix(&mut self, words: &[u64]) {
        for word in words {
            for byte in word.to_le_bytes() {
                self.hash ^= u64::from(byte);
                self.hash = self.hash.wrapping_mul(FNV_PRIME);
            }
        }
    }

    /// Records an event line (and hashes its text).
    pub fn record(&mut self, step: u64, time: u64, text: String) {
        self.mix(&[step, time]);
        for byte in text.bytes() {
            self.hash ^= u64::from(byte);
            self.hash = self.hash.wrapping_mul(FNV_PRIME);
        }
        if self.print {
            eprintln!("#{step:<6} t={time:<8} {text}");
        }
        if self.tail.len() == TRACE_TAIL_EVENTS {
            self.tail.pop_front();
        }
        self.tail.push_back(TraceEvent { step, time, text });
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn tail(&self) -> impl Iterator<Item = &TraceEvent> {
        self.tail.iter()
    }
}

/// A short description of a message, for the trace.
pub fn describe(message: &Message) -> String {
    let body = match &message.body {
        MessageBody::VoteRequest {
            pre_vote,
            last_log_id,
            leader_transfer,
        } => format!(
            "{}vote-req last={}/{}{}",
            if *pre_vote { "pre-" } else { "" },
            last_log_id.term,
            last_log_id.index,
            if *leader_transfer { " transfer" } else { "" }
        ),
        MessageBody::VoteResponse { pre_vote, granted } => format!(
            "{}vote-resp {}",
            if *pre_vote { "pre-" } else { "" },
            if *granted { "granted" } else { "refused" }
        ),
        MessageBody::Append {
            prev_log_id,
            entries,
            commit,
        } => format!(
            "append prev={}/{} n={} commit={commit}",
            prev_log_id.term,
            prev_log_id.index,
            entries.len()
        ),
        MessageBody::AppendResponse { outcome } => format!("append-resp {outcome:?}"),
        MessageBody::Heartbeat { commit, read_seq } => {
            format!("heartbeat commit={commit} seq={read_seq}")
        }
        MessageBody::HeartbeatResponse { read_seq } => format!("heartbeat-resp seq={read_seq}"),
        MessageBody::TimeoutNow => "timeout-now".to_string(),
        other => format!("{other:?}"),
    };
    format!("{}->{} t{} {body}", message.from, message.to, message.term)
}
