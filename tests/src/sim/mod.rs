//! A deterministic simulator of whole Rafter clusters under faults.
//!
//! # What runs
//!
//! N nodes (3 or 5) of the real pure engine, [`rafter::testing::SimCore`],
//! in one thread. The simulator is their driver: it honours the
//! `SimActions` contract (one write in flight; a message tagged with a write
//! leaves only once that write is durable; applies in order; loads served
//! from the disk; read indexes answered once applied) and it is everything
//! around them — network, disks, state machines, clients and faults.
//!
//! # Determinism
//!
//! Time is simulated: an event queue ordered by (time, insertion number),
//! in units of 1/[`TICK`] of a tick; each node ticks on its own period (a
//! small random skew, and skew faults), so clocks drift apart. Every random
//! choice draws from one ChaCha8 stream seeded by the seed, in event order;
//! nothing iterates a hash map, reads the wall clock or spawns a thread.
//! The engine itself is seeded from the same seed. So one seed is one run:
//! the trace hash (every event and every touched node's state after it)
//! is the same every time, and a test checks it.
//!
//! # The world
//!
//! - **Network** ([`network`]): per-seed drop, duplicate, delay and delay
//!   spikes (so messages reorder); symmetric, one-way and flapping
//!   partitions, and isolation of the leader.
//! - **Disk** ([`disk`]): a write is durable only when its completion
//!   event, after a random latency, is delivered; a crash loses the write
//!   in flight, every message held for it, and unsynced commit-index-only
//!   writes. A restart rebuilds the `SimCore` from the synced hard state
//!   and the durable log.
//! - **State machine** ([`kv`]): a KV map with put, get and CAS, kept in the
//!   node and **durable at apply time**: a crash keeps the map and its
//!   applied index, and the restarted core resumes applying after it.
//! - **Snapshots**: most seeds compact the log every 4, 10 or 40 applied
//!   entries, keeping 0, 3 or 20 trailing ones, so lagging, restarted and
//!   newly added nodes catch up from a snapshot streamed in chunks of
//!   `append_bytes_max` bytes (at least 16). The state machine's latest
//!   snapshot is durable; a crash mid-transfer or mid-install keeps the old
//!   state, and a restart finishes an install interrupted before its purge.
//! - **Faults** ([`faults`]): a schedule drawn from the seed — crashes of a
//!   given node, of the leader, or of a node in the middle of a write, with
//!   short or long downtime; partitions of each kind; leader isolation;
//!   tick skew; leadership transfers; and traps that spring at a protocol
//!   moment rather than a time (crash a node as it grants a vote, cut off a
//!   new leader, cut off a leader as it commits — the shapes of Raft
//!   Figures 2 and 8); and membership changes (see below). After
//!   `Options::steps` steps everything heals (the network also stops
//!   dropping), every node restarts, clients stop
//!   starting operations, and one probe write must complete within
//!   `RunConfig::heal_ticks_max` ticks (a liveness check).
//! - **Clients** ([`workload`]): a few clients on a few keys, one operation
//!   at a time, retrying at the hinted leader after a definite failure and
//!   recording a [`history`] of invocations and outcomes. A write's answer
//!   comes from the shipped waiter code (`rafter::testing::ProposalWaiters`,
//!   the apply task's): it completes when its (index, term) is applied on
//!   the node that proposed it, fails (and is retried) when provably
//!   overwritten, and is *unknown* when a received snapshot is installed
//!   over it (`Indeterminate`), its node crashes or the client stops
//!   waiting. A get asks the node for a read
//!   index and answers from the state machine once applied reaches it; in
//!   most seeds a share of gets (30% or 70%) goes to a member picked at
//!   random, so followers ask the leader for read indexes
//!   (`Report::follower_reads`).
//! - **Lease reads**: about 40% of seeds (or as `Options::lease_reads`
//!   forces) run with `Config::lease_reads`. A lease is only as safe as the
//!   clocks: it assumes the drift bound `Config::lease_drift_ticks`. So in
//!   those seeds every tick period stays within
//!   [`TICK_PERIOD_MIN`]`..=`[`TICK_PERIOD_MAX`] (skew faults are clamped
//!   to it, and the stalled leader of `IsolateLeader { slow_clock }` runs
//!   at the slow edge instead of 4 to 10 times slower), and the drift bound
//!   is drawn from [`lease_drift_ticks_for`], the least that covers those
//!   periods (or one more). Beyond the bound a stale lease read is
//!   legitimate, and the checks would only find that. Leader isolation is
//!   drawn more often in those seeds: it is where a lease that lasts too
//!   long shows.
//!
//! - **Membership** ([`faults::Fault::ChangeMembership`]): each run has
//!   two spare node ids beyond the founding 3 or 5. The leader is asked to
//!   add a non-member as a learner (a spare starts with an empty disk and
//!   joins: `SimCore::restore` without a bootstrap), to promote a learner
//!   through a joint configuration (alone, or replacing a voter — sometimes
//!   the leader itself), or to remove a voter (sometimes the leader; at
//!   least two voters stay) or a learner. A promotion waits for the learner
//!   to be within `learner_catchup_lag_max` entries (drawn per seed), else
//!   it is refused with `NotCaughtUp`, as the handle does; the engine's
//!   typed refusals (`ChangeInProgress`, …) are normal outcomes. A removed
//!   node keeps running on its disk and may be added back. Clients send to
//!   members of the leader's configuration (any started node if there is no
//!   leader), and retry on `NotLeader`.
//!
//! # Checks
//!
//! After every step, [`invariants`] (one leader per term, log matching,
//! committed entries never lost or changed and held durably by a majority
//! of the configuration they were committed under,
//! applied sequences prefixes of one sequence, installed snapshots equal to
//! the applied sequence replayed, nothing applied during an install, commit
//! index monotonic) and
//! `SimCore::check_invariants` on each node the step touched (the others
//! did not change). Any panic in the engine fails the seed too. At the end,
//! the history must be linearizable per key ([`linearizability`]); a key
//! whose search reaches `linearizability::SEARCH_STATES_MAX` fails the
//! seed (a search that did not finish proves nothing).
//!
//! A failure prints the seed, the configuration, the fault schedule up to
//! the failure and the last events; `SIM_SEED=<seed> cargo test -p
//! rafter-tests --test sim` replays it.
//!
//! # Not simulated (yet)
//!
//! Snapshots: `snapshot_interval_entries` is 0 (the engine's snapshot
//! actions need an apply side that builds, streams and installs them).
//! Reusing a removed node's id with a wiped disk (a real operator error:
//! its old votes would be forgotten). Torn writes and disk corruption. Client request
//! latency (requests reach their node at once; answers are recorded when
//! the node produces them).
//!
//! # Speed and power
//!
//! `SIM_SEEDS=300 cargo test --release -p rafter-tests --test sim sim_speed
//! -- --ignored --nocapture` prints client operations and steps per
//! wall-clock second: about 107 000 steps/s and 4 100 completed client
//! operations/s on one core of the shared 2-core CI box (300 seeds in
//! 8.8 s). The default debug run (300 seeds of 3000 faulty steps plus the
//! heal) takes about 60 s there.
//!
//! `planted_bug_catch_rates` (same flags) counts, over seeds 0..500, the
//! seeds that catch each planted bug: Figure 8 commit-by-counting 22,
//! vote-before-persisting 33, ack-before-persisting 120, read without
//! quorum 8 (first catches at seeds 54, 8, 2 and 17). Lease reads and
//! follower reads changed the draws of every seed; with them
//! (`SIM_SEEDS=1000`, same flags), over seeds 0..1000: 35, 47, 281 and 26
//! (first at 43, 11, 3 and 44), and a lease outliving the election timeout
//! (lease reads forced on) 6, first at seed 105: the leader's CheckQuorum
//! steps it down within two minimum election timeouts of losing its
//! quorum, so the stale window of a too-long lease is short.

pub mod disk;
pub mod faults;
pub mod history;
pub mod invariants;
pub mod kv;
pub mod linearizability;
pub mod network;
pub mod node;
pub mod rng;
mod simulator;
pub mod trace;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rafter::testing::PlantedBug;
use rafter::Config;

use faults::FaultWeights;
use history::Outcome;
use linearizability::{CheckError, KeyOp, Stamp};
use network::NetworkConfig;
use rng::SimRng;
use simulator::Simulator;
use workload::WorkloadConfig;

/// Time units per tick: delays and tick periods are in these.
pub const TICK: u64 = 100;

/// The shortest tick period a node has when lease reads are on (its base
/// period, and any skew fault, stay within these bounds then; without
/// lease reads skew faults go far beyond).
pub const TICK_PERIOD_MIN: u64 = TICK * 9 / 10;
/// See [`TICK_PERIOD_MIN`].
pub const TICK_PERIOD_MAX: u64 = TICK * 11 / 10;

/// The least `Config::lease_drift_ticks` that holds when every tick period
/// lies in `TICK_PERIOD_MIN..=TICK_PERIOD_MAX`: while the leader counts the
/// `m = election_ticks_min - drift` ticks of its lease (at most `m` slow
/// periods of real time), a fast follower counts at most `m * MAX / MIN`
/// ticks, plus one of phase, and that must stay below
/// `election_ticks_min` (`m * MAX + MIN < election_ticks_min * MIN`).
pub fn lease_drift_ticks_for(election_ticks_min: u64) -> u64 {
    (1..election_ticks_min)
        .find(|drift| {
            let lease = election_ticks_min - drift;
            lease * TICK_PERIOD_MAX + TICK_PERIOD_MIN < election_ticks_min * TICK_PERIOD_MIN
        })
        .expect("some drift below election_ticks_min fits")
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    /// Steps (events) of the faulty phase; the healing phase comes after.
    pub steps: u64,
    pub planted_bug: Option<PlantedBug>,
    /// Force the cluster size (otherwise 3 or 5, from the seed).
    pub nodes: Option<usize>,
    /// Force lease reads on or off (otherwise on in about 40% of seeds).
    pub lease_reads: Option<bool>,
}

impl Options {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            steps: 3000,
            planted_bug: None,
            nodes: None,
            lease_reads: None,
        }
    }
}

/// Everything drawn from the seed before the run starts.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Founding voters.
    pub nodes: usize,
    /// Node ids beyond the founding ones that membership changes may add.
    pub spares: usize,
    pub raft: Config,
    pub network: NetworkConfig,
    pub faults: FaultWeights,
    pub workload: WorkloadConfig,
    /// Write and load latency range, in time units.
    pub disk_latency: (u64, u64),
    /// Faults are drawn up to this time (the run usually stops earlier).
    pub fault_horizon: u64,
    /// Ticks allowed after the final heal for a write to complete.
    pub heal_ticks_max: u64,
}

impl RunConfig {
    fn random(rng: &mut SimRng, options: &Options) -> Self {
        let nodes = options
            .nodes
            .unwrap_or_else(|| if rng.chance(500) { 3 } else { 5 });
        let election_ticks_min = rng.between(6, 12);
        let raft = Config::default()
            .with_heartbeat_ticks(rng.between(1, 3))
            .with_election_ticks_min(election_ticks_min)
            .with_election_ticks_max(election_ticks_min + rng.between(3, 12))
            .with_inflight_msgs_max(rng.pick(&[1, 4, 256]))
            // 1 byte: one entry per append, so a probe ends one entry at a
            // time (Figure 8 needs an old-term entry acked alone).
            .with_append_bytes_max(rng.pick(&[1, 1, 200, 1 << 20]))
            // Small caches make the core load entries from the disk.
            .with_log_cache_bytes_max(rng.pick(&[256, 4096, 64 << 20]))
            // Small intervals and windows, so logs are compacted and
            // lagging or restarted followers catch up from snapshots.
            .with_snapshot_interval_entries(rng.pick(&[0, 4, 10, 40]))
            .with_snapshot_trailing_entries(rng.pick(&[0, 3, 20]))
            // 0: a learner is promoted only when fully caught up.
            .with_learner_catchup_lag_max(rng.pick(&[0, 5, 1000]))
            .with_rng_seed(options.seed);
        raft.validate().expect("the simulator draws valid configs");
        let delay_max = rng.between(10, 150);
        let network = NetworkConfig {
            drop_per_mille: rng.pick(&[0, 10, 50, 150]),
            duplicate_per_mille: rng.pick(&[0, 10, 50]),
            delay_min: rng.between(1, 10),
            delay_max,
            spike_per_mille: rng.pick(&[0, 10, 50]),
            spike_delay_max: delay_max + rng.between(100, 3000),
        };
        let faults = FaultWeights::random(rng);
        let workload = WorkloadConfig {
            clients: rng.between(2, 6) as usize,
            keys: rng.between(1, 4) as u8,
            think_max: rng.between(0, 3 * TICK),
            attempt_timeout: TICK * rng.between(8, 60),
            backoff_max: rng.between(TICK / 2, 3 * TICK),
            follower_read_per_mille: 0,
        };
        let disk_low = rng.between(1, 20);
        let disk_latency = (disk_low, disk_low + rng.between(5, 200));
        // Drawn last, so that the draws above stay what they were before
        // lease reads and follower reads came.
        let lease_reads = options.lease_reads.unwrap_or_else(|| rng.chance(400));
        let raft = if lease_reads {
            // The least drift bound the simulated clocks keep to (see
            // `lease_drift_ticks_for`), sometimes one more.
            let drift = lease_drift_ticks_for(election_ticks_min) + rng.below(2);
            let raft = raft
                .with_lease_reads(true)
                .with_lease_drift_ticks(drift.min(election_ticks_min - 1));
            raft.validate().expect("the simulator draws valid configs");
            raft
        } else {
            raft
        };
        let mut faults = faults;
        if lease_reads {
            // A leader cut off from the others is where a lease that lasts
            // too long answers stale reads: make it common.
            faults.isolate_leader += 10;
        }
        let workload = WorkloadConfig {
            follower_read_per_mille: rng.pick(&[0, 300, 700]),
            ..workload
        };
        Self {
            nodes,
            spares: 2,
            raft,
            network,
            faults,
            workload,
            disk_latency,
            fault_horizon: 100_000 * TICK,
            heal_ticks_max: 300,
        }
    }
}

/// A passing run.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub nodes: usize,
    pub steps: u64,
    /// Simulated time, in ticks.
    pub ticks: u64,
    pub trace_hash: u64,
    pub ops_invoked: usize,
    pub ops_completed: usize,
    /// Membership changes a leader accepted.
    pub membership_changes_appended: u64,
    /// Times the committed configuration changed (a voter change counts
    /// twice: the joint step and the final one).
    pub configurations_committed: u64,
    /// Snapshots built by state machines.
    pub snapshots_built: u64,
    /// Snapshots received and installed.
    pub snapshots_installed: u64,
    /// Whether the nodes ran with `Config::lease_reads`.
    pub lease_reads: bool,
    /// Reads answered with a read index on a node that was not the leader
    /// (it asked the leader).
    pub follower_reads: u64,
    /// Reads leaders answered from their lease (`SimCore::lease_reads_served`).
    pub lease_reads_served: u64,
}

/// A failing run, with what is needed to understand and replay it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub reason: String,
    pub step: u64,
    pub details: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation seed {} failed at step {}:",
            self.seed, self.step
        )?;
        writeln!(f, "  {}", self.reason)?;
        writeln!(f, "{}", self.details)?;
        write!(
            f,
            "replay: SIM_SEED={} cargo test -p rafter-tests --test sim",
            self.seed
        )
    }
}

/// Runs one seed.
pub fn run(options: &Options) -> Result<Report, Failure> {
    let mut rng = SimRng::new(options.seed);
    let config = RunConfig::random(&mut rng, options);
    let mut sim = Simulator::new(options.clone(), config, rng);
    let outcome = catch_unwind(AssertUnwindSafe(|| sim.run()));
    let reason = match outcome {
        Ok(Ok(())) => check_history(&sim.history).err(),
        Ok(Err(violation)) => Some(violation),
        Err(panic) => Some(format!("panic: {}", panic_message(&panic))),
    };
    match reason {
        None => Ok(Report {
            seed: options.seed,
            nodes: sim.config.nodes,
            steps: sim.step,
            ticks: sim.now / TICK,
            trace_hash: sim.trace.hash(),
            ops_invoked: sim.history.ops().len(),
            ops_completed: sim.history.completed(),
            membership_changes_appended: sim.membership_changes_appended,
            configurations_committed: sim.checker.configurations_committed,
            snapshots_built: sim.snapshots_built,
            snapshots_installed: sim.snapshots_installed,
            lease_reads: sim.config.raft.lease_reads,
            follower_reads: sim.follower_reads,
            lease_reads_served: sim.lease_reads_served(),
        }),
        Some(reason) => Err(Failure {
            seed: options.seed,
            step: sim.step,
            details: describe_failure(&sim),
            reason,
        }),
    }
}

/// The text of a caught panic.
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic)".to_string()
    }
}

fn describe_failure(sim: &Simulator) -> String {
    let mut out = String::new();
    let c = &sim.config;
    out += &format!(
        "config: {} nodes, {:?}, election {}..={} ticks, heartbeat {}, append_bytes_max {}, \
         cache {}, inflight {}, snapshot every {} keeping {}, catch-up lag {}, \
         lease reads {} (drift {} ticks), planted {:?}\n",
        c.nodes,
        c.network,
        c.raft.election_ticks_min,
        c.raft.election_ticks_max,
        c.raft.heartbeat_ticks,
        c.raft.append_bytes_max,
        c.raft.log_cache_bytes_max,
        c.raft.inflight_msgs_max,
        c.raft.snapshot_interval_entries,
        c.raft.snapshot_trailing_entries,
        c.raft.learner_catchup_lag_max,
        c.raft.lease_reads,
        c.raft.lease_drift_ticks,
        sim.options.planted_bug
    );
    out += &format!(
        "disk latency {:?}, workload {:?}\n",
        c.disk_latency, c.workload
    );
    out += &format!("fault schedule (ticks) up to t={}:\n", sim.now);
    for (time, fault) in sim
        .schedule
        .faults
        .iter()
        .take_while(|(t, _)| *t <= sim.now)
    {
        out += &format!("  @{:>6.1}  {fault}\n", *time as f64 / TICK as f64);
    }
    out += "nodes at the end:\n";
    for node in &sim.nodes {
        match &node.core {
            Some(core) => {
                out += &format!(
                    "  node {}: {:?} term {} commit {} last {:?} applied {} disk last {} \
                     snapshot {} config {:?}\n",
                    node.id,
                    core.role(),
                    core.term(),
                    core.commit_index(),
                    core.last_log_id(),
                    node.applied,
                    node.disk.last_index(),
                    core.snapshot_index(),
                    core.membership()
                )
            }
            None if !node.started => out += &format!("  node {}: never started\n", node.id),
            None => out += &format!("  node {}: down\n", node.id),
        }
    }
    out += "last events:\n";
    for event in sim.trace.tail() {
        out += &format!("  {event}\n");
    }
    out
}

/// Checks the whole history, key by key, each key's search capped at
/// [`linearizability::SEARCH_STATES_MAX`] configurations.
pub fn check_history(history: &history::History) -> Result<(), String> {
    check_history_with_cap(history, linearizability::SEARCH_STATES_MAX)
}

/// [`check_history`] with a cap of `states_max` configurations per key. A
/// key whose search reaches the cap fails the history: a search that did
/// not finish proves nothing.
pub fn check_history_with_cap(history: &history::History, states_max: usize) -> Result<(), String> {
    let mut by_key: BTreeMap<kv::Key, Vec<(usize, KeyOp)>> = BTreeMap::new();
    for (id, op) in history.ops().iter().enumerate() {
        let ret = match op.outcome {
            Outcome::Ok { output, .. } => Some((
                op.ret.expect("an operation that ended Ok has a return"),
                output,
            )),
            Outcome::Unknown => None,
            Outcome::Failed => continue,
            Outcome::Pending => panic!("history not closed: op {id} pending"),
        };
        by_key.entry(op.input.key()).or_default().push((
            id,
            KeyOp {
                input: op.input,
                call: op.call,
                ret,
            },
        ));
    }
    for (key, ops) in by_key {
        let key_ops: Vec<KeyOp> = ops.iter().map(|(_, op)| *op).collect();
        match linearizability::check_with_cap(&key_ops, None, states_max) {
            Ok(()) => {}
            Err(CheckError::NotLinearizable { longest }) => {
                // The ops the search got stuck on: those it could not
                // linearize, around the point where it stopped.
                let linearized: std::collections::BTreeSet<usize> =
                    longest.iter().copied().collect();
                let stuck_from = key_ops
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !linearized.contains(i))
                    .map(|(_, op)| op.call)
                    .min()
                    .unwrap_or(Stamp::new(0, 0));
                let mut text = format!(
                    "history of key {key} is not linearizable ({} ops); {} linearize, \
                     the last of them {:?}; ops from the first one left out:\n",
                    key_ops.len(),
                    longest.len(),
                    longest
                        .iter()
                        .rev()
                        .take(5)
                        .rev()
                        .map(|&i| ops[i].0)
                        .collect::<Vec<_>>()
                );
                let relevant = ops.iter().enumerate().filter(|(i, (_, op))| {
                    longest.iter().rev().take(5).any(|l| l == i)
                        || (!linearized.contains(i) && op.call >= stuck_from)
                });
                for (_, (id, op)) in relevant.take(30) {
                    let ret = op.ret.map_or("unknown".to_string(), |(at, out)| {
                        format!("{}#{} -> {out:?}", at.time, at.seq)
                    });
                    text += &format!(
                        "    op {id} client {}: [{}#{} .. {ret}] {:?}\n",
                        history.get(*id).client,
                        op.call.time,
                        op.call.seq,
                        op.input
                    );
                }
                return Err(text);
            }
            Err(CheckError::GaveUp(states)) => {
                return Err(format!(
                    "linearizability check of key {key} ({} ops) gave up after {states} \
                     states: a search that does not finish is not a pass",
                    key_ops.len()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::history::{History, Outcome};
    use super::kv::{KvInput, KvOutput};
    use super::*;

    /// One client writes, then 30 clients each start a write and give up
    /// on it, then the first reads its own value: linearizable, and a
    /// search with room to finish says so.
    fn history_with_unknown_writes() -> History {
        let mut history = History::default();
        let put = history.invoke(0, KvInput::Put { key: 0, value: 1 }, 0);
        history.end(
            put,
            Outcome::Ok {
                at: 1,
                output: KvOutput::Put,
            },
        );
        for client in 1..=30 {
            let value = 100 + client as u64;
            let id = history.invoke(client, KvInput::Put { key: 0, value }, 2);
            history.end(id, Outcome::Unknown);
        }
        let get = history.invoke(0, KvInput::Get { key: 0 }, 3);
        history.end(
            get,
            Outcome::Ok {
                at: 4,
                output: KvOutput::Get(Some(1)),
            },
        );
        history.close();
        history
    }

    #[test]
    fn a_search_that_hits_its_cap_fails_the_history() {
        let history = history_with_unknown_writes();
        assert_eq!(check_history(&history), Ok(()));
        let error = check_history_with_cap(&history, 2).expect_err("gave up");
        assert!(error.contains("gave up after 2 states"), "{error}");
    }

    #[test]
    fn a_clients_consecutive_operations_at_one_time_are_ordered() {
        // Client 0's put returns at time 5, and its get is invoked at the
        // same time 5; the get must see the put.
        let mut history = History::default();
        let put = history.invoke(0, KvInput::Put { key: 0, value: 1 }, 0);
        history.end(
            put,
            Outcome::Ok {
                at: 5,
                output: KvOutput::Put,
            },
        );
        let get = history.invoke(0, KvInput::Get { key: 0 }, 5);
        history.end(
            get,
            Outcome::Ok {
                at: 6,
                output: KvOutput::Get(None),
            },
        );
        history.close();
        let error = check_history(&history).expect_err("a read from before its own write");
        assert!(error.contains("not linearizable"), "{error}");
    }
}
