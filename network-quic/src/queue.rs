//! `SendQueue`: the frames waiting for one peer (one stream class), bounded
//! in count and bytes. Pure data: the lane task wraps it in a lock.

use std::collections::VecDeque;

use bytes::Bytes;

/// What happened to a frame offered to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Queued.
    Queued,
    /// Dropped: the queue is at its count or byte bound. Raft retries.
    Full,
}

/// Encoded frames waiting to be written, oldest first.
///
/// Invariant: `frames.len() <= msgs_max` and `bytes <= bytes_max`, where
/// `bytes` is the sum of the queued frames' lengths; the high-water marks
/// never exceed the bounds either (the tests read them to prove it).
#[derive(Debug)]
pub(crate) struct SendQueue {
    frames: VecDeque<Bytes>,
    bytes: u64,
    msgs_max: usize,
    bytes_max: u64,
    msgs_high_water: usize,
    bytes_high_water: u64,
}

impl SendQueue {
    pub(crate) fn new(msgs_max: usize, bytes_max: u64) -> Self {
        assert!(msgs_max > 0, "queue needs room for one message");
        assert!(bytes_max > 0, "queue needs room for one byte");
        Self {
            frames: VecDeque::new(),
            bytes: 0,
            msgs_max,
            bytes_max,
            msgs_high_water: 0,
            bytes_high_water: 0,
        }
    }

    /// Queues `frame` unless that would break a bound (tail drop: what is
    /// queued is older and Raft resends what is lost).
    pub(crate) fn push(&mut self, frame: Bytes) -> Admission {
        let len = frame.len() as u64;
        if self.frames.len() >= self.msgs_max || self.bytes + len > self.bytes_max {
            return Admission::Full;
        }
        self.frames.push_back(frame);
        self.bytes += len;
        self.msgs_high_water = self.msgs_high_water.max(self.frames.len());
        self.bytes_high_water = self.bytes_high_water.max(self.bytes);
        assert!(self.frames.len() <= self.msgs_max);
        assert!(self.bytes <= self.bytes_max);
        Admission::Queued
    }

    /// Takes the oldest frames, up to `bytes_max` bytes but always at least
    /// one if any is queued, for one coalesced write.
    pub(crate) fn take_batch(&mut self, bytes_max: usize) -> Vec<Bytes> {
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        while let Some(front) = self.frames.front() {
            if !batch.is_empty() && batch_bytes + front.len() > bytes_max {
                break;
            }
            batch_bytes += front.len();
            // Cannot fail: `front()` just returned Some.
            let frame = self.frames.pop_front().expect("front exists");
            self.bytes -= frame.len() as u64;
            batch.push(frame);
        }
        debug_assert_eq!(
            self.bytes,
            self.frames.iter().map(|f| f.len() as u64).sum::<u64>()
        );
        batch
    }

    /// Drops everything queued (the peer is unreachable: those messages are
    /// stale by the time it returns). Returns how many were dropped.
    pub(crate) fn clear(&mut self) -> usize {
        let dropped = self.frames.len();
        self.frames.clear();
        self.bytes = 0;
        dropped
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn msgs_high_water(&self) -> usize {
        self.msgs_high_water
    }

    pub(crate) fn bytes_high_water(&self) -> u64 {
        self.bytes_high_water
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    #[test]
    fn count_bound_drops_the_newest() {
        let mut queue = SendQueue::new(2, 1000);
        assert_eq!(queue.push(frame(1)), Admission::Queued);
        assert_eq!(queue.push(frame(2)), Admission::Queued);
        assert_eq!(queue.push(frame(3)), Admission::Full);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.bytes(), 3);
    }

    #[test]
    fn byte_bound_drops_and_high_water_stays_under_it() {
        let mut queue = SendQueue::new(100, 10);
        assert_eq!(queue.push(frame(6)), Admission::Queued);
        assert_eq!(queue.push(frame(5)), Admission::Full);
        assert_eq!(queue.push(frame(4)), Admission::Queued);
        assert_eq!(queue.bytes_high_water(), 10);
        assert_eq!(queue.clear(), 2);
        assert_eq!(queue.bytes(), 0);
        assert!(queue.is_empty());
    }

    #[test]
    fn batch_coalesces_up_to_the_cap_but_takes_at_least_one() {
        let mut queue = SendQueue::new(100, 1000);
        for len in [50, 30, 30, 200] {
            queue.push(frame(len));
        }
        assert_eq!(queue.take_batch(100).len(), 2);
        assert_eq!(
            queue.take_batch(10).len(),
            1,
            "one frame even if over the cap"
        );
        assert_eq!(queue.take_batch(1000).len(), 1);
        assert!(queue.take_batch(1000).is_empty());
        assert_eq!(queue.msgs_high_water(), 4);
    }
}
