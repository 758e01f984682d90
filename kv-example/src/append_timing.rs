//! The leader's replication round trip, timed: from handing the network an
//! append that ends at index *i* to a follower's acknowledgement that its
//! log matches up to *i*. A follower acknowledges only once the entries are
//! durable, so this is the network's round trip plus the follower's write
//! (its `fsync_seconds`) plus the queueing on both sides; with the
//! follower's own fsync figure beside it, the round trip alone can be
//! read off. It feeds `append_round_trip_seconds`.
//!
//! The send side is the [`TimedNetwork`] wrapper (the driver's sends), the
//! receive side [`AppendTimer::received`], called from the transport's
//! inbound callback before the message goes to Raft.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rafter::{AppendOutcome, Message, MessageBody, NodeId, RaftNetwork};

use crate::metrics::ServiceMetrics;

/// Appends remembered per peer at most. An append whose acknowledgement
/// never comes (dropped, or overtaken by a later one's) is forgotten once
/// this many newer ones are waiting, so the memory is bounded whatever the
/// peer does.
const PENDING_PER_PEER_MAX: usize = 256;

/// The appends in flight, by peer, with the moment each was sent.
///
/// Invariant: each peer's queue holds at most `PENDING_PER_PEER_MAX`
/// entries, in the order sent (last indexes need not increase: a leader
/// that backs off resends lower ones).
#[derive(Debug)]
pub struct AppendTimer {
    /// Why a mutex: the driver (sends) and the transport's inbound task
    /// (acknowledgements) each hold it for a few queue operations.
    pending: Mutex<BTreeMap<NodeId, VecDeque<(u64, Instant)>>>,
    metrics: Arc<ServiceMetrics>,
}

impl AppendTimer {
    /// A timer that observes into `metrics.append_round_trip_seconds`.
    pub fn new(metrics: Arc<ServiceMetrics>) -> Arc<Self> {
        Arc::new(Self {
            pending: Mutex::new(BTreeMap::new()),
            metrics,
        })
    }

    /// Notes the appends among `messages`, sent to `to` now.
    pub fn sent(&self, to: NodeId, messages: &[Message]) {
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for message in messages {
            let MessageBody::Append {
                prev_log_id,
                entries,
                ..
            } = &message.body
            else {
                continue;
            };
            if entries.is_empty() {
                continue;
            }
            let last = prev_log_id.index.saturating_add(entries.len() as u64);
            let queue = pending.entry(to).or_default();
            if queue.len() == PENDING_PER_PEER_MAX {
                queue.pop_front();
            }
            queue.push_back((last, now));
            debug_assert!(queue.len() <= PENDING_PER_PEER_MAX);
        }
    }

    /// Observes the round trip of the append `message` acknowledges, if it
    /// is a successful append answer: the append sent to that peer that
    /// ended exactly at its match index. Appends sent before it are
    /// forgotten (their answers were lost or overtaken).
    pub fn received(&self, message: &Message) {
        let MessageBody::AppendResponse {
            outcome: AppendOutcome::Success { match_index },
        } = &message.body
        else {
            return;
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = pending.get_mut(&message.from) else {
            return;
        };
        let Some(position) = queue.iter().position(|(last, _)| last == match_index) else {
            return;
        };
        let (_, sent) = queue[position];
        queue.drain(..=position);
        drop(pending);
        self.metrics
            .append_round_trip_seconds
            .observe(sent.elapsed().as_secs_f64());
    }
}

/// A `RaftNetwork` that notes each append in an [`AppendTimer`] before the
/// inner network sends it.
#[derive(Debug)]
pub struct TimedNetwork<N> {
    inner: N,
    timer: Arc<AppendTimer>,
}

impl<N> TimedNetwork<N> {
    /// Wraps a network.
    pub fn new(inner: N, timer: Arc<AppendTimer>) -> Self {
        Self { inner, timer }
    }
}

impl<N: RaftNetwork> RaftNetwork for TimedNetwork<N> {
    async fn send(&mut self, to: NodeId, messages: Vec<Message>) {
        self.timer.sent(to, &messages);
        self.inner.send(to, messages).await
    }

    async fn set_members(&mut self, nodes: &BTreeMap<NodeId, String>) {
        self.inner.set_members(nodes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::ApplyCounters;
    use rafter::{Entry, EntryPayload, LogId};

    fn append(from: NodeId, to: NodeId, prev: u64, count: u64) -> Message {
        let entries = (prev + 1..=prev + count)
            .map(|index| Entry {
                term: 1,
                index,
                payload: EntryPayload::Blank,
            })
            .collect();
        Message::new(
            from,
            to,
            1,
            MessageBody::Append {
                prev_log_id: LogId {
                    term: 1,
                    index: prev,
                },
                entries,
                commit: 0,
            },
        )
    }

    fn ack(from: NodeId, match_index: u64) -> Message {
        Message::new(
            from,
            1,
            1,
            MessageBody::AppendResponse {
                outcome: AppendOutcome::Success { match_index },
            },
        )
    }

    fn observed(timer: &AppendTimer) -> u64 {
        let text = timer.metrics.render();
        text.lines()
            .find_map(|l| l.strip_prefix("rafter_kv_append_round_trip_seconds_count "))
            .and_then(|v| v.trim().parse().ok())
            .expect("the histogram is exported")
    }

    #[test]
    fn an_acknowledgement_times_the_append_it_matches_once() {
        let timer = AppendTimer::new(Arc::new(ServiceMetrics::new(Arc::new(
            ApplyCounters::default(),
        ))));
        timer.sent(2, &[append(1, 2, 0, 3), append(1, 2, 3, 2)]);
        timer.sent(3, &[append(1, 3, 0, 3)]);
        // No append to 2 ended at 4: nothing to time.
        timer.received(&ack(2, 4));
        assert_eq!(observed(&timer), 0);
        timer.received(&ack(2, 5));
        assert_eq!(observed(&timer), 1);
        // The append ending at 3 was overtaken and forgotten with it.
        timer.received(&ack(2, 3));
        assert_eq!(observed(&timer), 1);
        // Another peer's appends are its own.
        timer.received(&ack(3, 3));
        assert_eq!(observed(&timer), 2);
        timer.received(&ack(3, 3));
        assert_eq!(observed(&timer), 2);
    }

    #[test]
    fn a_silent_peer_holds_a_bounded_queue() {
        let timer = AppendTimer::new(Arc::new(ServiceMetrics::new(Arc::new(
            ApplyCounters::default(),
        ))));
        for prev in 0..(PENDING_PER_PEER_MAX as u64 + 10) {
            timer.sent(2, &[append(1, 2, prev, 1)]);
        }
        let pending = timer.pending.lock().unwrap();
        assert_eq!(pending[&2].len(), PENDING_PER_PEER_MAX);
        assert_eq!(pending[&2].front().map(|p| p.0), Some(11));
    }
}
