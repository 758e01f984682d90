//! Closed-loop clients: each waits for its call to finish before making the
//! next one. A warm-up phase runs first and is not measured; the measured
//! phase then runs exactly `ops` operations shared by all clients.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::latency_recorder::LatencyRecorder;
use crate::progress;

/// One call a client makes: `ops_per_call` operations (a batch), which all
/// succeed or fail together. An error is reported by its kind.
pub trait Call: Clone + Send + Sync + 'static {
    /// Makes one call.
    fn call(&self) -> impl Future<Output = Result<(), String>> + Send;
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Concurrent clients.
    pub clients: usize,
    /// Operations in the measured phase.
    pub ops: u64,
    /// Operations per call.
    pub ops_per_call: u64,
    /// How long the unmeasured warm-up runs.
    pub warmup: Duration,
    /// The progress bar's label.
    pub label: String,
}

/// What the measured phase saw.
#[derive(Debug)]
pub struct LoadOutcome {
    /// Operations completed (including failed ones).
    pub ops: u64,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Latency per call, nanoseconds.
    pub latency: Histogram<u64>,
    /// Failed operations by kind.
    pub errors: BTreeMap<String, u64>,
}

/// A client reports its progress every this many calls.
const PROGRESS_EVERY: u64 = 32;

struct Shared {
    /// Operations done, for the progress bar (updated every few calls).
    ops_done: AtomicU64,
    /// Set when warm-up ends.
    warm_done: AtomicBool,
    /// Latency per call of the measured phase.
    latency: LatencyRecorder,
}

/// Runs the warm-up, then the measured phase, on the current runtime.
pub async fn run<C: Call>(spec: &LoadSpec, call: C) -> LoadOutcome {
    let ops_per_call = spec.ops_per_call.max(1);
    let calls = spec.ops.div_ceil(ops_per_call);
    let shared = Arc::new(Shared {
        ops_done: AtomicU64::new(0),
        warm_done: AtomicBool::new(false),
        latency: LatencyRecorder::new(),
    });

    if !spec.warmup.is_zero() {
        let bar = progress::spinner(&format!("{} warm-up", spec.label));
        let clients: Vec<_> = (0..spec.clients)
            .map(|_| tokio::spawn(warm_up(shared.clone(), call.clone())))
            .collect();
        tokio::time::sleep(spec.warmup).await;
        shared.warm_done.store(true, Ordering::Release);
        for client in clients {
            let _ = client.await;
        }
        bar.finish_and_clear();
    }

    let bar = progress::ops(&spec.label, calls * ops_per_call);
    let started = Instant::now();
    // Each client has its share of the calls: no shared counter to contend
    // on per call.
    let clients = spec.clients.max(1) as u64;
    let clients: Vec<_> = (0..clients)
        .map(|i| {
            let share = calls / clients + u64::from(i < calls % clients);
            tokio::spawn(measure(shared.clone(), call.clone(), ops_per_call, share))
        })
        .collect();
    let ticker = {
        let bar = bar.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                bar.set_position(shared.ops_done.load(Ordering::Relaxed));
            }
        })
    };
    let mut errors = BTreeMap::new();
    for client in clients {
        let client_errors = client.await.expect("client task");
        for (kind, count) in client_errors {
            *errors.entry(kind).or_insert(0) += count;
        }
    }
    let elapsed = started.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    LoadOutcome {
        ops: shared.ops_done.load(Ordering::Relaxed),
        elapsed,
        latency: shared.latency.merged(),
        errors,
    }
}

async fn warm_up<C: Call>(shared: Arc<Shared>, call: C) {
    while !shared.warm_done.load(Ordering::Acquire) {
        if call.call().await.is_err() {
            // Errors in warm-up (a leader not settled yet) are not counted,
            // but do not spin on them.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

async fn measure<C: Call>(
    shared: Arc<Shared>,
    call: C,
    ops_per_call: u64,
    calls: u64,
) -> BTreeMap<String, u64> {
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    // One clock read per call: a call starts when the previous one ended
    // (closed loop), so its start is the previous call's end, and the
    // latency includes only the few nanoseconds of bookkeeping between
    // calls. Clock reads are not free in a VM (tens of nanoseconds), and
    // at a million calls a second a second read per call shows.
    let mut started = Instant::now();
    for done in 1..=calls {
        let result = call.call().await;
        let ended = Instant::now();
        shared
            .latency
            .record(ended.duration_since(started).as_nanos() as u64);
        started = ended;
        if let Err(kind) = result {
            *errors.entry(kind).or_insert(0) += ops_per_call;
        }
        if done % PROGRESS_EVERY == 0 || done == calls {
            let unreported = (done - 1) % PROGRESS_EVERY + 1;
            shared
                .ops_done
                .fetch_add(unreported * ops_per_call, Ordering::Relaxed);
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct EveryThirdFails(Arc<AtomicU64>);

    impl Call for EveryThirdFails {
        async fn call(&self) -> Result<(), String> {
            let n = self.0.fetch_add(1, Ordering::Relaxed);
            tokio::task::yield_now().await;
            if n % 3 == 2 {
                Err("Boom".into())
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn runs_exactly_the_requested_ops_and_counts_errors() {
        let counter = Arc::new(AtomicU64::new(0));
        let spec = LoadSpec {
            clients: 7,
            ops: 300,
            ops_per_call: 1,
            warmup: Duration::ZERO,
            label: "test".into(),
        };
        let outcome = run(&spec, EveryThirdFails(counter.clone())).await;
        assert_eq!(outcome.ops, 300);
        assert_eq!(counter.load(Ordering::Relaxed), 300);
        assert_eq!(outcome.latency.len(), 300);
        assert_eq!(outcome.errors.get("Boom"), Some(&100));
    }

    #[tokio::test]
    async fn batches_round_up_and_count_ops() {
        let counter = Arc::new(AtomicU64::new(0));
        let spec = LoadSpec {
            clients: 2,
            ops: 95,
            ops_per_call: 10,
            warmup: Duration::from_millis(20),
            label: "test".into(),
        };
        let outcome = run(&spec, EveryThirdFails(counter.clone())).await;
        assert_eq!(outcome.ops, 100, "10 calls of 10");
        assert_eq!(outcome.latency.len(), 10);
        assert!(counter.load(Ordering::Relaxed) > 10, "warm-up made calls");
    }
}
