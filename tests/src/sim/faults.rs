//! The fault schedule: drawn from the seed before the run starts, as a list
//! of (time, fault). Faults that name "the leader" or "a node that is
//! writing" pick their target when they fire (with the same seeded RNG), so
//! the run stays deterministic; the trace records the choice.

use std::collections::BTreeSet;
use std::fmt;

use rafter::NodeId;

use super::rng::SimRng;
use super::TICK;

/// A fault that waits for a moment in the protocol rather than a time:
/// the schedule arms it, and the simulator springs it when the moment comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Trap {
    /// Crash a node in the step it grants a vote, before its next write
    /// completes (the vote must not have left: Raft Figure 2).
    CrashOnVote,
    /// Cut off a node in the step it becomes leader: its blank entry stays
    /// on its own log only (the divergent tails of Raft Figure 8).
    CutNewLeader,
    /// Cut off a leader in the step its commit index moves: the followers
    /// may not learn it, and the next leader is chosen without it.
    CutLeaderOnCommit,
}

/// Which node a crash hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashTarget {
    Node(NodeId),
    /// The leader of the highest term, if any.
    Leader,
    /// A node whose storage write is in flight, if any: models a crash
    /// during fsync, right after a vote or an append was handled.
    Writing,
}

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Crash a node; it restarts from its disk after `down_for`.
    Crash { target: CrashTarget, down_for: u64 },
    /// Cut links from `a` to `b` (and back if `both_ways`) for `heal_after`.
    /// A new partition replaces the one in force.
    Partition {
        a: BTreeSet<NodeId>,
        b: BTreeSet<NodeId>,
        both_ways: bool,
        heal_after: u64,
    },
    /// Cut the leader off from everyone, both ways, for `heal_after`; with
    /// `slow_clock`, its clock also runs 4 to 10 times slower meanwhile (a
    /// stalled process: it is the last to notice it lost its quorum).
    IsolateLeader { heal_after: u64, slow_clock: bool },
    /// Arm a trap that springs `times` times (see [`Trap`]); each time the
    /// victim is crashed or cut off for `for_time`.
    Arm {
        trap: Trap,
        times: u64,
        for_time: u64,
    },
    /// Make `node` tick every `period` time units for `for_time`.
    Skew {
        node: NodeId,
        period: u64,
        for_time: u64,
    },
    /// Ask the leader to hand leadership to another voter.
    TransferLeader,
    /// Leader churn, the shape of Raft Figure 8: cut off the leader, then
    /// the next two new leaders as soon as they are elected (each leaves a
    /// blank entry of its term on its own log only), then the next leader
    /// whose commit index moves; each cut heals the previous one and lasts
    /// `for_time`. Old-term entries end up counted, and overwritten, here if
    /// anywhere.
    Churn { for_time: u64 },
    /// Ask the leader for a membership change, chosen when it fires from
    /// the configuration in force: add a non-member (a spare node joins
    /// empty) as a learner, promote a learner (alone or replacing a voter,
    /// possibly the leader), remove a voter (possibly the leader) or a
    /// learner. The engine's typed refusals (`ChangeInProgress`, …) are
    /// normal outcomes.
    ChangeMembership,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Crash { target, down_for } => {
                write!(f, "crash {target:?} for {} ticks", down_for / TICK)
            }
            Fault::Partition {
                a,
                b,
                both_ways,
                heal_after,
            } => write!(
                f,
                "partition {a:?} {} {b:?} for {} ticks",
                if *both_ways { "<-x->" } else { "-x->" },
                heal_after / TICK
            ),
            Fault::IsolateLeader {
                heal_after,
                slow_clock,
            } => write!(
                f,
                "isolate the leader for {} ticks{}",
                heal_after / TICK,
                if *slow_clock {
                    ", with a slow clock"
                } else {
                    ""
                }
            ),
            Fault::Arm {
                trap,
                times,
                for_time,
            } => write!(f, "arm {trap:?} x{times} for {} ticks", for_time / TICK),
            Fault::Skew {
                node,
                period,
                for_time,
            } => write!(
                f,
                "node {node} ticks every {period} units for {} ticks",
                for_time / TICK
            ),
            Fault::TransferLeader => write!(f, "transfer leadership"),
            Fault::Churn { for_time } => {
                write!(f, "leader churn, each cut for {} ticks", for_time / TICK)
            }
            Fault::ChangeMembership => write!(f, "change the membership"),
        }
    }
}

/// How often each kind of fault is drawn; chosen per seed so that some runs
/// are crash-heavy and others partition-heavy.
#[derive(Debug, Clone)]
pub struct FaultWeights {
    pub crash: u64,
    pub crash_leader: u64,
    pub crash_writing: u64,
    pub partition: u64,
    pub partition_one_way: u64,
    pub isolate_leader: u64,
    pub flap: u64,
    pub skew: u64,
    pub transfer: u64,
    pub trap: u64,
    pub churn: u64,
    pub membership: u64,
    /// Ticks between faults.
    pub gap_ticks_min: u64,
    pub gap_ticks_max: u64,
}

impl FaultWeights {
    /// Weights drawn from the seed.
    pub fn random(rng: &mut SimRng) -> Self {
        let mut w = || rng.below(10);
        Self {
            crash: w(),
            crash_leader: w(),
            crash_writing: w(),
            partition: w(),
            partition_one_way: w(),
            isolate_leader: w(),
            flap: w(),
            skew: w(),
            transfer: w(),
            trap: w(),
            // Figure 8 needs its shape often enough to be found.
            churn: 5 + w(),
            membership: 12 + w(),
            gap_ticks_min: 3,
            gap_ticks_max: 3 + rng.between(5, 60),
        }
    }
}

/// The schedule: (time, fault), in time order.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    pub faults: Vec<(u64, Fault)>,
}

impl Schedule {
    /// Draws faults for `nodes` from `start` to `end`.
    pub fn random(
        rng: &mut SimRng,
        weights: &FaultWeights,
        nodes: &[NodeId],
        start: u64,
        end: u64,
    ) -> Self {
        let kinds = [
            weights.crash,
            weights.crash_leader,
            weights.crash_writing,
            weights.partition,
            weights.partition_one_way,
            weights.isolate_leader,
            weights.flap,
            weights.skew,
            weights.transfer,
            weights.trap,
            weights.churn,
            weights.membership,
        ];
        let total: u64 = kinds.iter().sum::<u64>().max(1);
        let mut faults = Vec::new();
        let mut time = start;
        loop {
            time += TICK * rng.between(weights.gap_ticks_min, weights.gap_ticks_max);
            if time >= end {
                break;
            }
            let mut draw = rng.below(total);
            let kind = kinds
                .iter()
                .position(|&w| {
                    if draw < w {
                        true
                    } else {
                        draw -= w;
                        false
                    }
                })
                .unwrap_or(0);
            let short_or_long = |rng: &mut SimRng| {
                if rng.chance(500) {
                    TICK * rng.between(1, 8)
                } else {
                    TICK * rng.between(10, 120)
                }
            };
            match kind {
                0..=2 => {
                    let target = match kind {
                        0 => CrashTarget::Node(rng.pick(nodes)),
                        1 => CrashTarget::Leader,
                        _ => CrashTarget::Writing,
                    };
                    let down_for = short_or_long(rng);
                    faults.push((time, Fault::Crash { target, down_for }));
                }
                3 | 4 => {
                    let (a, b) = split(rng, nodes);
                    let heal_after = short_or_long(rng);
                    faults.push((
                        time,
                        Fault::Partition {
                            a,
                            b,
                            both_ways: kind == 3,
                            heal_after,
                        },
                    ));
                }
                5 => {
                    let slow_clock = rng.chance(500);
                    // A stalled leader stays cut off long enough for the
                    // others to elect, commit and serve clients meanwhile.
                    let heal_after = if slow_clock {
                        TICK * rng.between(30, 150)
                    } else {
                        short_or_long(rng)
                    };
                    faults.push((
                        time,
                        Fault::IsolateLeader {
                            heal_after,
                            slow_clock,
                        },
                    ));
                }
                6 => {
                    // Flapping: the same cut, on and off.
                    let (a, b) = split(rng, nodes);
                    let both_ways = rng.chance(500);
                    let period = TICK * rng.between(2, 15);
                    for i in 0..rng.between(3, 8) {
                        faults.push((
                            time + 2 * i * period,
                            Fault::Partition {
                                a: a.clone(),
                                b: b.clone(),
                                both_ways,
                                heal_after: period,
                            },
                        ));
                    }
                }
                7 => {
                    let node = rng.pick(nodes);
                    let period = if rng.chance(500) {
                        rng.between(TICK / 3, TICK * 9 / 10)
                    } else {
                        rng.between(TICK * 11 / 10, TICK * 3)
                    };
                    let for_time = TICK * rng.between(10, 200);
                    faults.push((
                        time,
                        Fault::Skew {
                            node,
                            period,
                            for_time,
                        },
                    ));
                }
                8 => faults.push((time, Fault::TransferLeader)),
                11 => faults.push((time, Fault::ChangeMembership)),
                10 => {
                    let for_time = TICK * rng.between(15, 60);
                    faults.push((time, Fault::Churn { for_time }));
                }
                _ => {
                    let trap = rng.pick(&[
                        Trap::CrashOnVote,
                        Trap::CutNewLeader,
                        Trap::CutLeaderOnCommit,
                    ]);
                    // A quick restart after a crash on vote comes back in
                    // the same election: its lost vote can be cast again.
                    let for_time = if trap == Trap::CrashOnVote && rng.chance(500) {
                        rng.between(1, 2 * TICK)
                    } else {
                        TICK * rng.between(1, 40)
                    };
                    faults.push((
                        time,
                        Fault::Arm {
                            trap,
                            times: rng.between(1, 6),
                            for_time,
                        },
                    ));
                }
            }
        }
        faults.sort_by_key(|(time, _)| *time);
        Self { faults }
    }
}

/// Two non-empty disjoint groups covering `nodes` (at random).
fn split(rng: &mut SimRng, nodes: &[NodeId]) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
    loop {
        let (mut a, mut b) = (BTreeSet::new(), BTreeSet::new());
        for &node in nodes {
            if rng.chance(500) {
                a.insert(node);
            } else {
                b.insert(node);
            }
        }
        if !a.is_empty() && !b.is_empty() {
            return (a, b);
        }
    }
}
