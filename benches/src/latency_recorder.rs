//! Latency recording that stays out of the way of what it measures.
//!
//! Thousands of clients recording into one shared histogram would contend
//! on it; a histogram per client (hundreds of KiB each) or a buffer of raw
//! samples per client spreads writes over megabytes, and the cache misses
//! would be charged to Raft. So each thread records into its own histogram,
//! under a lock only that thread takes while the run lasts, and the run
//! merges them at the end.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hdrhistogram::Histogram;

use crate::report::{latency_histogram, LATENCY_NS_MAX};

/// Records the latencies of one measured phase.
pub struct LatencyRecorder {
    /// Tells this recorder's per-thread histograms from an earlier one's.
    id: u64,
    histograms: Mutex<Vec<Arc<Mutex<Histogram<u64>>>>>,
}

/// This thread's histogram, and the recorder it belongs to.
type ThreadHistogram = Option<(u64, Arc<Mutex<Histogram<u64>>>)>;

thread_local! {
    static THREAD_HISTOGRAM: RefCell<ThreadHistogram> = const { RefCell::new(None) };
}

impl LatencyRecorder {
    /// A recorder with nothing recorded.
    pub fn new() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            histograms: Mutex::new(Vec::new()),
        }
    }

    /// Records one latency in nanoseconds (clamped to the histogram's
    /// range, 1 ns to 60 s).
    pub fn record(&self, ns: u64) {
        let ns = ns.clamp(1, LATENCY_NS_MAX);
        THREAD_HISTOGRAM.with(|cell| {
            let mut cell = cell.borrow_mut();
            let histogram = match &mut *cell {
                Some((id, histogram)) if *id == self.id => histogram,
                stale => {
                    let histogram = Arc::new(Mutex::new(latency_histogram()));
                    self.histograms
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(histogram.clone());
                    &mut stale.insert((self.id, histogram)).1
                }
            };
            histogram
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(ns)
                .expect("clamped into the histogram's range");
        });
    }

    /// Everything recorded so far, from every thread.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = latency_histogram();
        for histogram in self
            .histograms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            all.add(&*histogram.lock().unwrap_or_else(PoisonError::into_inner))
                .expect("histograms of the same bounds add up");
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_every_thread_and_keeps_recorders_apart() {
        let first = Arc::new(LatencyRecorder::new());
        let second = LatencyRecorder::new();
        let threads: Vec<_> = (1..=4u64)
            .map(|t| {
                let first = first.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        first.record(t * 1000 + i);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        // This thread records into both, alternately: neither sees the other's.
        for _ in 0..10 {
            first.record(0);
            second.record(u64::MAX);
        }
        let merged = first.merged();
        assert_eq!(merged.len(), 410);
        assert_eq!(merged.min(), 1, "0 is clamped to 1 ns");
        let other = second.merged();
        assert_eq!(other.len(), 10);
        assert!(other.max() >= LATENCY_NS_MAX, "clamped to the range's top");
    }
}
