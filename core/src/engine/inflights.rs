//! The window of append messages in flight to one follower, capped in count
//! and bytes. When full, the leader stops sending to that follower until
//! acknowledgements free slots (backpressure, not drops).

use std::collections::VecDeque;

/// Invariant: `last_indexes` strictly increase; `bytes` is the sum of the
/// sizes of the messages held.
#[derive(Debug, Clone)]
pub(crate) struct Inflights {
    /// (last entry index, bytes) of each message in flight, oldest first.
    messages: VecDeque<(u64, u64)>,
    bytes: u64,
    count_max: usize,
    bytes_max: u64,
}

impl Inflights {
    pub(crate) fn new(count_max: usize, bytes_max: u64) -> Self {
        assert!(count_max > 0, "inflight window needs at least one slot");
        Self {
            messages: VecDeque::new(),
            bytes: 0,
            count_max,
            bytes_max,
        }
    }

    /// Records a message whose last entry is `last_index`.
    pub(crate) fn add(&mut self, last_index: u64, bytes: u64) {
        assert!(!self.is_full(), "add to a full inflight window");
        if let Some(&(previous, _)) = self.messages.back() {
            assert!(
                last_index > previous,
                "inflight {last_index} not after {previous}"
            );
        }
        self.messages.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose last index is at most `index` (acknowledged).
    pub(crate) fn free_up_to(&mut self, index: u64) {
        while let Some(&(last, bytes)) = self.messages.front() {
            if last > index {
                break;
            }
            self.messages.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Frees the oldest message. Used when a heartbeat response shows the
    /// follower is alive while the window is full: the acks may have been
    /// lost, and without a free slot the leader would never send again.
    pub(crate) fn free_first(&mut self) {
        if let Some((_, bytes)) = self.messages.pop_front() {
            self.bytes -= bytes;
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.messages.len() >= self.count_max || self.bytes >= self.bytes_max
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    pub(crate) fn reset(&mut self) {
        self.messages.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_fills_by_count_and_by_bytes_and_frees_on_ack() {
        let mut w = Inflights::new(3, 1000);
        w.add(5, 10);
        w.add(9, 10);
        assert!(!w.is_full());
        w.add(12, 10);
        assert!(w.is_full());
        w.free_up_to(9);
        assert_eq!(w.len(), 1);
        assert!(!w.is_full());
        w.add(20, 995);
        assert!(w.is_full(), "bytes cap reached");
        w.free_up_to(100);
        assert_eq!(w.len(), 0);
        assert_eq!(w.bytes, 0);
    }
}
