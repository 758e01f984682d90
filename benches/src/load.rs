//! Closed-loop clients: each waits for its call to finish before making the
//! next one. A warm-up phase runs first and is not measured; the measured
//! phase then runs exactly `ops` operations shared by all clients, or for a
//! fixed time.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::latency_recorder::LatencyRecorder;
use crate::progress;

/// One call a client makes: `ops_per_call` operations (a batch), which all
/// succeed or fail together. An error is reported by its kind. Shared by
/// every client (each gets a clone).
pub trait Call: Clone + Send + Sync + 'static {
    /// Makes one call.
    fn call(&self) -> impl Future<Output = Result<(), String>> + Send;
}

/// One closed-loop client with state of its own (a connection, a random
/// sequence), making one call at a time.
pub trait Client: Send + 'static {
    /// Makes one call.
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

impl<C: Call> Client for C {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        Call::call(self)
    }
}

/// When the measured phase ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measure {
    /// After exactly this many operations, shared by all clients.
    Ops(u64),
    /// After this long: each client finishes the call it is in, and those
    /// calls count.
    For(Duration),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Concurrent clients.
    pub clients: usize,
    /// When the measured phase ends.
    pub measure: Measure,
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
    /// Set when the phase (warm-up, or a timed measured phase) ends.
    stop: AtomicBool,
    /// Latency per call of the measured phase.
    latency: LatencyRecorder,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            ops_done: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            latency: LatencyRecorder::new(),
        })
    }
}

/// Runs the warm-up, then the measured phase, on the current runtime, with
/// `spec.clients` clones of `call`.
pub async fn run<C: Call>(spec: &LoadSpec, call: C) -> LoadOutcome {
    let clients: Vec<C> = (0..spec.clients.max(1)).map(|_| call.clone()).collect();
    let clients = warm_up(clients, spec.warmup, &spec.label).await;
    measure(clients, spec.measure, spec.ops_per_call, &spec.label)
        .await
        .0
}

/// Runs `clients` for `duration`, unmeasured (errors are not counted), and
/// hands them back for the measured phase (connections stay open).
pub async fn warm_up<K: Client>(clients: Vec<K>, duration: Duration, label: &str) -> Vec<K> {
    if duration.is_zero() {
        return clients;
    }
    let bar = progress::spinner(&format!("{label} warm-up"));
    let shared = Shared::new();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(warm_up_client(shared.clone(), client)))
        .collect();
    tokio::time::sleep(duration).await;
    shared.stop.store(true, Ordering::Release);
    let mut clients = Vec::with_capacity(tasks.len());
    for task in tasks {
        clients.push(task.await.expect("warm-up client task"));
    }
    bar.finish_and_clear();
    clients
}

/// Runs the measured phase with `clients` and hands them back.
pub async fn measure<K: Client>(
    clients: Vec<K>,
    measure: Measure,
    ops_per_call: u64,
    label: &str,
) -> (LoadOutcome, Vec<K>) {
    let ops_per_call = ops_per_call.max(1);
    let shared = Shared::new();
    let bar = match measure {
        Measure::Ops(ops) => progress::ops(label, ops.div_ceil(ops_per_call) * ops_per_call),
        Measure::For(duration) => progress::timed(label, duration),
    };
    let started = Instant::now();
    let count = clients.len().max(1) as u64;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            // Each client has its share of the calls (or runs until the
            // stop flag): no shared counter to contend on per call.
            let share = match measure {
                Measure::Ops(ops) => {
                    let calls = ops.div_ceil(ops_per_call);
                    calls / count + u64::from((i as u64) < calls % count)
                }
                Measure::For(_) => u64::MAX,
            };
            tokio::spawn(measure_client(shared.clone(), client, ops_per_call, share))
        })
        .collect();
    let ticker = {
        let bar = bar.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let ops = shared.ops_done.load(Ordering::Relaxed);
                match measure {
                    Measure::Ops(_) => bar.set_position(ops),
                    Measure::For(_) => {
                        bar.set_position(started.elapsed().as_millis() as u64);
                        bar.set_message(format!("{ops} ops"));
                    }
                }
            }
        })
    };
    let timer = match measure {
        Measure::Ops(_) => None,
        Measure::For(duration) => {
            let shared = shared.clone();
            Some(tokio::spawn(async move {
                tokio::time::sleep(duration).await;
                shared.stop.store(true, Ordering::Release);
            }))
        }
    };
    let mut errors = BTreeMap::new();
    let mut clients = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (client, client_errors) = task.await.expect("client task");
        clients.push(client);
        for (kind, count) in client_errors {
            *errors.entry(kind).or_insert(0) += count;
        }
    }
    let elapsed = started.elapsed();
    ticker.abort();
    if let Some(timer) = timer {
        timer.abort();
    }
    bar.finish_and_clear();
    let outcome = LoadOutcome {
        ops: shared.ops_done.load(Ordering::Relaxed),
        elapsed,
        latency: shared.latency.merged(),
        errors,
    };
    (outcome, clients)
}

async fn warm_up_client<K: Client>(shared: Arc<Shared>, mut client: K) -> K {
    while !shared.stop.load(Ordering::Acquire) {
        if client.call().await.is_err() {
            // Errors in warm-up (a leader not settled yet) are not counted,
            // but do not spin on them.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    client
}

async fn measure_client<K: Client>(
    shared: Arc<Shared>,
    mut client: K,
    ops_per_call: u64,
    calls: u64,
) -> (K, BTreeMap<String, u64>) {
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    // One clock read per call: a call starts when the previous one ended
    // (closed loop), so its start is the previous call's end, and the
    // latency includes only the few nanoseconds of bookkeeping between
    // calls. Clock reads are not free in a VM (tens of nanoseconds), and
    // at a million calls a second a second read per call shows.
    let mut started = Instant::now();
    let mut unreported = 0;
    let mut done = 0;
    while done < calls && !shared.stop.load(Ordering::Relaxed) {
        let result = client.call().await;
        let ended = Instant::now();
        shared
            .latency
            .record(ended.duration_since(started).as_nanos() as u64);
        started = ended;
        done += 1;
        unreported += 1;
        if let Err(kind) = result {
            *errors.entry(kind).or_insert(0) += ops_per_call;
        }
        if unreported == PROGRESS_EVERY {
            shared
                .ops_done
                .fetch_add(unreported * ops_per_call, Ordering::Relaxed);
            unreported = 0;
        }
    }
    shared
        .ops_done
        .fetch_add(unreported * ops_per_call, Ordering::Relaxed);
    (client, errors)
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
            measure: Measure::Ops(300),
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
            measure: Measure::Ops(95),
            ops_per_call: 10,
            warmup: Duration::from_millis(20),
            label: "test".into(),
        };
        let outcome = run(&spec, EveryThirdFails(counter.clone())).await;
        assert_eq!(outcome.ops, 100, "10 calls of 10");
        assert_eq!(outcome.latency.len(), 10);
        assert!(counter.load(Ordering::Relaxed) > 10, "warm-up made calls");
    }

    /// A client that counts its own calls.
    struct Counting(Arc<AtomicU64>);

    impl Client for Counting {
        async fn call(&mut self) -> Result<(), String> {
            self.0.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_timed_phase_stops_and_counts_every_call_it_made() {
        let counter = Arc::new(AtomicU64::new(0));
        let clients = (0..3).map(|_| Counting(counter.clone())).collect();
        let (outcome, clients) =
            measure(clients, Measure::For(Duration::from_millis(50)), 1, "test").await;
        assert_eq!(clients.len(), 3, "the clients come back");
        assert!(outcome.elapsed >= Duration::from_millis(50));
        assert!(outcome.ops > 0);
        assert_eq!(outcome.ops, counter.load(Ordering::Relaxed));
        assert_eq!(outcome.latency.len(), outcome.ops);
        assert!(outcome.errors.is_empty());
    }
}
