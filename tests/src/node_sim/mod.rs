//! A deterministic simulation of whole shipped nodes under faults.
//!
//! # What runs
//!
//! Nodes started with `Raft::start`: the real handle, proposal queue,
//! driver, storage task, apply task and `restore`, with every message
//! encoded and decoded by `rafter::codec` on its way ([`network`]). Around
//! them, all drawn from one seed: a simulated disk ([`disk`]: writes
//! durable only after their fsync, a crash keeps any subset of the
//! unsynced ones, I/O errors, panics, slow fsyncs), a durable KV state
//! machine ([`state_machine`], `rafter::testing::KvStateMachine`), faults
//! and operator calls ([`faults`]), and clients that use only the public
//! API with deadlines ([`workload`]). Where [`crate::sim`] drives the pure
//! engine and re-implements what surrounds it, this runs the product.
//!
//! # Determinism
//!
//! Every task of every node runs on one current-thread tokio runtime with
//! paused time (`start_paused`): the clock moves only when every task
//! waits, straight to the next timer, so a run takes no wall-clock time
//! for its timeouts, and tasks run in the order they were woken, which
//! depends on nothing but the run. No `rng_seed` (a `tokio_unstable`
//! API) is needed because the runtime's RNG is used only by unbiased
//! `select!`s and work stealing: the shipped code's `select!`s are all
//! `biased`, this module has none, and a current-thread runtime steals
//! nothing. What the shipped code iterates in drop order is in ordered
//! maps (the driver's reads). Every random choice draws from one ChaCha8
//! stream ([`crate::sim::rng::SimRng`]) in the order tasks run. So a seed
//! is a run: `tests/tests/node_sim.rs` runs one seed in two processes and
//! compares their trace hashes. (turmoil would add hosts and a network we
//! do not need, since nodes talk through `RaftNetwork`; madsim replaces
//! tokio under a cfg flag for the whole build.)
//!
//! # Checks
//!
//! As the run goes ([`world`]): the entry applied at an index and the
//! applied sequence's fingerprint at an index are the same on every node,
//! snapshots included (state machine safety); one leader per term; a
//! commit index that never goes back within an incarnation, and nothing
//! applied beyond it; no more waiting proposals than callers can have in
//! flight (queue bounds); `linearizable_read` returns only once its
//! node's state machine applied the read index; a node hit by an injected
//! fault stops
//! (fail-stop) and one not hit never stops; every restart succeeds; every
//! message decodes; every call returns by its deadline.
//!
//! At the end ([`checks`]), after a heal (partitions gone, nodes
//! restarted, faults off) and a liveness probe (a write must succeed):
//! every call returned; every member holds the same applied state; every
//! acknowledged write is the entry at the index its answer named, on every
//! member; the durable logs match; the history, closed by a final read of
//! every key, is linearizable.
//!
//! # Speed
//!
//! A seed is 300 faulty ticks of 10 ms plus the heal (about 3 to 5
//! simulated seconds, 10 000 to 20 000 traced events, 400 to 700 client
//! operations). On the shared 2-core box: 200 seeds in 124 s in debug
//! (1.6 seeds/s; CI's default, `cargo test -p rafter-tests --test
//! node_sim`, whose whole file, planted bugs and the two-process test
//! included, took 3.5 minutes there under load), and 12.3 seeds/s in
//! release for one process (`SIM_SEEDS=5000 cargo test --release -p
//! rafter-tests --test node_sim many_seeds -- --nocapture`: 5 000 seeds in
//! 405 s).
//!
//! Long release runs found five faults of the simulation itself, now
//! fixed (seeds 1179, 2091, 6000-6099, 9212 and 9281: end checks racing a
//! late commit, log matching below an installed snapshot, a client
//! retrying at one instant forever, a new leader's commit index not yet
//! caught up, an injected fault that hit a restart), and none of the
//! product; seeds 0-9999 then passed in release (0-9211 before the last
//! two fixes, 9200-9999 after them: 27.5 seeds/s on an idle box). The
//! product fault it found (a double snapshot install) came from seed 0.

pub mod checks;
pub mod disk;
pub mod faults;
pub mod network;
pub mod state_machine;
pub mod workload;
pub mod world;

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use rafter::testing::NodeBug;
use rafter::Config;

use crate::sim::history::Outcome;
use crate::sim::kv::KvInput;
use crate::sim::rng::SimRng;
use network::NetworkConfig;
use world::Shared;

/// Which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Two nodes applied different entries, or reached different states,
    /// at one index.
    StateMachineSafety,
    /// Two leaders in one term.
    ElectionSafety,
    /// A commit index went back, or applied passed it.
    Monotonic,
    /// A node held more waiting proposals than its callers can make.
    QueueBound,
    /// A node stopped though no fault hit it.
    UnexpectedStop,
    /// A node ran on after a fault that must stop it.
    FailStop,
    /// A node did not start again after a crash.
    Restart,
    /// A message did not decode.
    Codec,
    /// A call did not return by its deadline.
    Deadline,
    /// A call still pending when the world stopped.
    Unresolved,
    /// No write succeeded after the heal.
    Liveness,
    /// The members did not reach one state after the heal.
    Convergence,
    /// An acknowledged write is not where its answer said.
    AckedWriteLost,
    /// The durable logs disagree.
    LogMatching,
    /// The history is not linearizable.
    Linearizability,
    /// `linearizable_read` returned before its node applied its index.
    ReadIndex,
    /// The simulation itself panicked.
    Panic,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The seed everything is drawn from.
    pub seed: u64,
    /// Ticks of the faulty phase; the heal comes after.
    pub ticks: u64,
    /// A bug planted in the shipped node layers for this run.
    pub planted: Option<NodeBug>,
}

impl Options {
    /// The default run of `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            ticks: 300,
            planted: None,
        }
    }
}

/// Everything drawn from the seed before the run starts.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The seed of the run.
    pub seed: u64,
    /// Founding voters.
    pub nodes: usize,
    /// Nodes beyond them that start empty and may be added.
    pub spares: usize,
    /// The nodes' configuration (each incarnation skews `tick_interval`).
    pub raft: Config,
    /// The network's drops, duplicates and delays.
    pub network: NetworkConfig,
    /// Client tasks.
    pub clients: usize,
    /// Keys the clients use.
    pub keys: u8,
    /// Share of client operations that are reads.
    pub read_per_mille: u64,
    /// Longest pause between a client's calls.
    pub think_micros_max: u64,
    /// Fsync latency range (slow fsyncs multiply it).
    pub fsync_micros: (u64, u64),
    /// How long the state machine takes to apply a batch.
    pub apply_micros: (u64, u64),
    /// How long a crashed node stays down.
    pub downtime_micros: (u64, u64),
    /// Time between two faults.
    pub fault_gap_micros: (u64, u64),
    /// Each incarnation's tick is off by up to this, per mille.
    pub skew_per_mille: u64,
    /// Ticks the heal may take.
    pub heal_ticks_max: u64,
}

impl RunConfig {
    fn random(rng: &mut SimRng, seed: u64) -> Self {
        let tick = Duration::from_millis(10);
        let tick_us = tick.as_micros() as u64;
        let election_ticks_min = rng.between(6, 12);
        let raft = Config::default()
            .with_tick_interval(tick)
            .with_heartbeat_ticks(rng.between(1, 3))
            .with_election_ticks_min(election_ticks_min)
            .with_election_ticks_max(election_ticks_min + rng.between(3, 12))
            .with_inflight_msgs_max(rng.pick(&[1, 4, 256]))
            .with_append_bytes_max(rng.pick(&[64, 200, 1 << 20]))
            .with_log_cache_bytes_max(rng.pick(&[256, 4096, 64 << 20]))
            .with_snapshot_interval_entries(rng.pick(&[0, 5, 10, 40]))
            .with_snapshot_trailing_entries(rng.pick(&[0, 3, 20]))
            .with_learner_catchup_lag_max(rng.pick(&[0, 5, 1000]))
            .with_propose_timeout(tick * rng.between(20, 60) as u32)
            // Half the seeds forward followers' proposals to the leader. Taken
            // from the seed, not drawn, so every other draw of a seed stays
            // what it was.
            .with_forward_proposals(seed % 2 == 1)
            .with_rng_seed(seed);
        raft.validate().expect("the simulation draws valid configs");
        let delay_max = rng.between(100, 1500);
        let network = NetworkConfig {
            drop_per_mille: rng.pick(&[0, 10, 50, 150]),
            duplicate_per_mille: rng.pick(&[0, 10, 50]),
            delay_micros: (rng.between(10, 100), delay_max),
            spike_per_mille: rng.pick(&[0, 10, 50]),
        };
        let fsync_low = rng.between(10, 200);
        Self {
            seed,
            nodes: if rng.chance(500) { 3 } else { 5 },
            spares: 2,
            raft,
            network,
            clients: rng.between(2, 5) as usize,
            keys: rng.between(1, 3) as u8,
            read_per_mille: rng.pick(&[100, 300, 600]),
            think_micros_max: rng.between(0, 3 * tick_us),
            fsync_micros: (fsync_low, fsync_low + rng.between(50, 3000)),
            apply_micros: (0, rng.between(10, 2000)),
            downtime_micros: (tick_us, tick_us * rng.between(5, 60)),
            fault_gap_micros: (tick_us, tick_us * rng.between(5, 40)),
            skew_per_mille: rng.pick(&[0, 50, 200]),
            heal_ticks_max: 400,
        }
    }
}

/// A passing run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Founding voters.
    pub nodes: usize,
    /// The hash of every traced event: equal for equal seeds.
    pub trace_hash: u64,
    /// Traced events.
    pub steps: u64,
    /// Simulated time, in milliseconds.
    pub simulated_ms: u64,
    /// Client operations started.
    pub ops_invoked: usize,
    /// Client operations answered.
    pub ops_completed: usize,
    /// Writes answered Ok.
    pub acked_writes: usize,
    /// Crashes, injected or after an injected fault stopped a node.
    pub crashes: u64,
    /// Incarnations started.
    pub starts: u64,
    /// Snapshots built by state machines.
    pub snapshots_built: u64,
    /// Received snapshots installed.
    pub snapshots_installed: u64,
    /// Operator calls that succeeded, transfers aside.
    pub membership_changes: u64,
}

/// A failing run: which check, why, and how to replay it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed, to replay.
    pub seed: u64,
    /// The check that failed.
    pub check: Check,
    /// What it saw.
    pub reason: String,
    /// The configuration and the last events.
    pub details: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "node simulation seed {} failed {:?}:",
            self.seed, self.check
        )?;
        writeln!(f, "  {}", self.reason)?;
        writeln!(f, "{}", self.details)?;
        write!(
            f,
            "replay: SIM_SEED={} cargo test -p rafter-tests --test node_sim",
            self.seed
        )
    }
}

/// The start of every panic message this simulation injects.
pub const INJECTED_PANIC: &str = "injected panic";

/// Keeps panics the simulation injects (which the node must survive by
/// stopping) off stderr; every other panic prints as before.
fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|message| message.starts_with(INJECTED_PANIC));
            if !injected {
                previous(info);
            }
        }));
    });
}

/// Runs one seed on a runtime of its own, on this thread.
pub fn run(options: &Options) -> Result<Report, Failure> {
    quiet_injected_panics();
    let mut rng = SimRng::new(options.seed ^ 0x6e6f_6465);
    let config = RunConfig::random(&mut rng, options.seed);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    rafter::testing::plant_node_bug(options.planted);
    let world = runtime.block_on(async { Shared::new(config.clone(), rng) });
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(run_world(world.clone(), options.ticks))
    }));
    // Tasks still alive (deliveries, crashed nodes winding down) go with
    // the runtime.
    drop(runtime);
    rafter::testing::plant_node_bug(None);
    let mut w = world.lock();
    let failed = match outcome {
        Ok(result) => result.err(),
        Err(panic) => Some((Check::Panic, crate::sim::panic_message(&panic))),
    };
    match failed {
        None => Ok(Report {
            seed: options.seed,
            nodes: config.nodes,
            trace_hash: w.trace.hash(),
            steps: w.steps(),
            simulated_ms: w.now_micros() / 1000,
            ops_invoked: w.history.ops().len(),
            ops_completed: w.history.completed(),
            acked_writes: w.acked.len(),
            crashes: w.crashes,
            starts: w.starts,
            snapshots_built: w.snapshots_built,
            snapshots_installed: w.snapshots_installed,
            membership_changes: w.membership_changes_done,
        }),
        Some((check, reason)) => {
            let mut details = format!(
                "config: {config:?}\nplanted: {:?}\nlast events:\n",
                options.planted
            );
            for event in w.trace.tail() {
                details += &format!("  {event}\n");
            }
            w.finished = true;
            Err(Failure {
                seed: options.seed,
                check,
                reason,
                details,
            })
        }
    }
}

/// The run: nodes, clients and faults for `ticks`, then the heal, the
/// liveness probe, convergence and the end checks.
async fn run_world(world: Shared, ticks: u64) -> Result<(), (Check, String)> {
    let (tick, clients, node_ids) = {
        let w = world.lock();
        let ids: Vec<u64> = w.nodes.keys().copied().collect();
        (w.config.raft.tick_interval, w.config.clients, ids)
    };
    for &id in &node_ids {
        tokio::spawn(world::supervise(world.clone(), id));
    }
    let mut client_tasks = Vec::new();
    for c in 0..clients {
        client_tasks.push(tokio::spawn(workload::client(world.clone(), c)));
    }
    tokio::spawn(faults::run(world.clone()));
    // The faulty phase, cut short by a failure.
    for _ in 0..ticks / 10 {
        tokio::time::sleep(tick * 10).await;
        if let Some(failed) = world.lock().failed.clone() {
            return Err(failed);
        }
    }
    let heal_deadline = {
        let mut w = world.lock();
        w.healed = true;
        w.clients_stopped = true;
        w.heal_network();
        w.network.drop_per_mille = 0;
        w.network.spike_per_mille = 0;
        let now = w.now_micros();
        for slot in w.nodes.values_mut() {
            slot.restart_at = now;
            slot.disk_faults = Default::default();
            slot.sm_faults = Default::default();
        }
        w.note("heal: partitions gone, faults off, nodes restart".into());
        now + w.config.heal_ticks_max * tick.as_micros() as u64
    };
    let past_deadline = |world: &Shared| world.lock().now_micros() > heal_deadline;
    // Liveness: one write must succeed.
    let probe_client = clients;
    loop {
        if past_deadline(&world) {
            return Err((Check::Liveness, "no write succeeded after the heal".into()));
        }
        if let Some(failed) = world.lock().failed.clone() {
            return Err(failed);
        }
        let leader = faults::leader(&world.lock());
        if let Some((_, raft)) = leader {
            let input = KvInput::Put { key: 0, value: 0 };
            let op = {
                let mut w = world.lock();
                let now = w.now_micros();
                w.history.invoke(probe_client, input, now)
            };
            let result = raft.propose(workload::command(&input)).await;
            let mut w = world.lock();
            let now = w.now_micros();
            match result {
                Ok(response) => {
                    w.history.end(
                        op,
                        Outcome::Ok {
                            at: now,
                            output: crate::sim::kv::KvOutput::Put,
                        },
                    );
                    w.acked.push(world::Acked {
                        op,
                        index: response.index,
                        command: rafter::codec::encode(&workload::command(&input)),
                    });
                    w.note(format!(
                        "liveness probe op {op} applied at {}",
                        response.index
                    ));
                    break;
                }
                Err(error) => {
                    w.history.end(op, Outcome::Unknown);
                    w.note(format!("liveness probe op {op}: {error}"));
                }
            }
        }
        tokio::time::sleep(tick).await;
    }
    for task in client_tasks {
        if task.await.is_err() {
            return Err((Check::Panic, "a client task panicked".into()));
        }
    }
    // Every call gets its full deadline to return (most are back already).
    let calls_deadline = {
        let w = world.lock();
        let raft = &w.config.raft;
        let longest = 4 * raft.propose_timeout + tick * (4 * raft.election_ticks_max) as u32;
        w.now_micros() + longest.as_micros() as u64
    };
    loop {
        {
            let w = world.lock();
            let pending = w.calls.iter().any(|(_, task)| !task.is_finished());
            if !pending || w.now_micros() > calls_deadline {
                break;
            }
        }
        tokio::time::sleep(tick).await;
    }
    // Convergence: every member applies what the leader committed (after
    // the calls, whose membership changes may commit entries).
    // Checked in the same turn as the end checks: nothing changes between.
    let converge_deadline = {
        let w = world.lock();
        w.now_micros() + w.config.heal_ticks_max * tick.as_micros() as u64
    };
    loop {
        {
            let mut w = world.lock();
            if let Some(failed) = w.failed.clone() {
                return Err(failed);
            }
            if let Some(members) = checks::final_members(&w) {
                if checks::converged(&w, &members) {
                    w.finished = true;
                    return checks::check_end(&mut w, &members);
                }
            }
        }
        if world.lock().now_micros() > converge_deadline {
            return Err((
                Check::Convergence,
                "the members did not reach the leader's commit index after the heal".into(),
            ));
        }
        tokio::time::sleep(tick).await;
    }
}
