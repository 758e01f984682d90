//! The nemesis: a schedule of fault episodes drawn from the seed, and
//! its execution against the nodes and the hosts' links.
//!
//! An episode is a quiet gap, then one or two faults started together,
//! held for a while, then healed (killed nodes restarted, paused ones
//! continued, links restored). Faults that name "the leader" find it when
//! the episode starts, so the same seed gives the same schedule but not
//! necessarily the same victims: the leader of a run depends on timing.
//!
//! Invariant: at most one episode is in force at a time, and everything
//! it did is undone before the next gap (a replacement is not undone: the
//! new node stays and promotes itself).

use std::fmt;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::history::Recorder;
use super::hosts::Cut;
use super::nodes::Nodes;

/// Who a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// This host.
    Host(usize),
    /// The leader when the episode starts (a random host if none).
    Leader,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Host(i) => write!(f, "host {i}"),
            Target::Leader => write!(f, "the leader"),
        }
    }
}

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, restarted when the episode heals.
    Kill(Target),
    /// SIGSTOP, SIGCONT when the episode heals.
    Pause(Target),
    /// These hosts cannot talk to the others, both ways.
    Split { side: Vec<usize> },
    /// The leader cannot talk to anyone, both ways.
    IsolateLeader,
    /// Two groups that cannot talk to each other, both talking to a
    /// bridge host in the middle.
    Bridge {
        left: Vec<usize>,
        bridge: usize,
        right: Vec<usize>,
    },
    /// The leader hears nobody (`deaf`) or nobody hears it, one way.
    LeaderOneWay { deaf: bool },
    /// Remove the node from the cluster, wipe it, and start an empty node
    /// with a fresh id on the same host that joins and promotes itself.
    Replace(Target),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(t) => write!(f, "kill {t}"),
            Fault::Pause(t) => write!(f, "pause {t}"),
            Fault::Split { side } => write!(f, "partition {side:?} from the rest"),
            Fault::IsolateLeader => write!(f, "isolate the leader"),
            Fault::Bridge {
                left,
                bridge,
                right,
            } => write!(f, "bridge {left:?} <-> {bridge} <-> {right:?}"),
            Fault::LeaderOneWay { deaf: true } => write!(f, "the leader hears nobody"),
            Fault::LeaderOneWay { deaf: false } => write!(f, "nobody hears the leader"),
            Fault::Replace(t) => write!(f, "replace {t} by an empty node"),
        }
    }
}

impl Fault {
    /// Whether the fault is a SIGKILL of the leader (recovery is timed).
    pub fn is_leader_kill(&self) -> bool {
        matches!(self, Fault::Kill(Target::Leader))
    }
}

/// One fault episode.
#[derive(Debug, Clone)]
pub struct Episode {
    /// Quiet time before the faults start.
    pub gap: Duration,
    /// Faults started together.
    pub faults: Vec<Fault>,
    /// How long they are held before healing.
    pub hold: Duration,
}

/// The whole schedule of a run; the same seed gives the same schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The episodes, in order.
    pub episodes: Vec<Episode>,
}

/// Draws from the seed.
struct Draw(ChaCha8Rng);

impl Draw {
    fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.0.next_u64() % (high - low + 1))
    }
    fn shuffled(&mut self, n: usize) -> Vec<usize> {
        let mut hosts: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            hosts.swap(i, self.below(i + 1));
        }
        hosts
    }
    fn target(&mut self, hosts: usize) -> Target {
        if self.below(2) == 0 {
            Target::Leader
        } else {
            Target::Host(self.below(hosts))
        }
    }
}

impl Schedule {
    /// Episodes for a cluster of `hosts` (at least 3) drawn from `seed`,
    /// as many as fit in `duration` (at least one); `replacements` allows
    /// membership changes. Running them takes a little longer: finding
    /// the leader, setting cuts and replacing nodes take time too.
    pub fn generate(seed: u64, duration: Duration, hosts: usize, replacements: bool) -> Schedule {
        assert!(hosts >= 3, "a schedule needs 3 hosts or more, not {hosts}");
        let mut draw = Draw(ChaCha8Rng::seed_from_u64(seed));
        let mut episodes = Vec::new();
        let mut total = Duration::ZERO;
        loop {
            let gap = draw.millis(1_000, 3_000);
            let hold = draw.millis(2_000, 6_000);
            let faults = Self::faults(&mut draw, hosts, replacements);
            total += gap + hold;
            if total > duration && !episodes.is_empty() {
                break;
            }
            episodes.push(Episode { gap, faults, hold });
        }
        Schedule { episodes }
    }

    fn faults(draw: &mut Draw, hosts: usize, replacements: bool) -> Vec<Fault> {
        let minority = (hosts - 1) / 2;
        let one = |draw: &mut Draw, kind: usize| -> Fault {
            match kind {
                0 => Fault::Kill(Target::Host(draw.below(hosts))),
                1 => Fault::Kill(Target::Leader),
                2 => Fault::Pause(draw.target(hosts)),
                3 => {
                    let side_len = 1 + draw.below(minority);
                    let mut side = draw.shuffled(hosts);
                    side.truncate(side_len);
                    side.sort_unstable();
                    Fault::Split { side }
                }
                4 => Fault::IsolateLeader,
                5 => {
                    let order = draw.shuffled(hosts);
                    let half = (hosts - 1) / 2;
                    let mut left = order[..half].to_vec();
                    let mut right = order[half + 1..].to_vec();
                    left.sort_unstable();
                    right.sort_unstable();
                    Fault::Bridge {
                        left,
                        bridge: order[half],
                        right,
                    }
                }
                6 => Fault::LeaderOneWay {
                    deaf: draw.below(2) == 0,
                },
                _ => Fault::Replace(draw.target(hosts)),
            }
        };
        let kinds = if replacements { 8 } else { 7 };
        let roll = draw.below(10);
        if roll < 7 {
            let kind = draw.below(kinds);
            vec![one(draw, kind)]
        } else {
            // A combination: a partition or a pause with a kill.
            let first = [2, 3, 4, 5][draw.below(4)];
            let second = draw.below(2);
            vec![one(draw, first), one(draw, second)]
        }
    }
}

/// A fault as it happened.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    /// When it started (history clock).
    pub start_ns: u64,
    /// When it was healed.
    pub end_ns: u64,
    /// What was done, with the hosts it hit.
    pub description: String,
    /// A SIGKILL of the leader: recovery is measured from `start_ns`.
    pub leader_kill: bool,
    /// The nemesis could not do it (say, a removal that timed out).
    pub error: Option<String>,
}

/// What an episode did, to be undone.
#[derive(Default)]
struct Undo {
    restart: Vec<usize>,
    resume: Vec<usize>,
    cuts: Vec<Cut>,
}

/// Runs `schedule` against `nodes` to its end; returns what it did. Each
/// fault is also printed as it starts.
pub async fn run(
    schedule: &Schedule,
    nodes: &tokio::sync::Mutex<Nodes>,
    recorder: &Recorder,
) -> Vec<FaultRecord> {
    let mut records = Vec::new();
    for episode in &schedule.episodes {
        tokio::time::sleep(episode.gap).await;
        let mut guard = nodes.lock().await;
        let leader = guard.leader().await;
        let mut undo = Undo::default();
        let first = records.len();
        for fault in &episode.faults {
            let start_ns = recorder.now_ns();
            let (description, error) = apply(&mut guard, fault, leader, &mut undo).await;
            eprintln!(
                "chaos: {:>7.1}s {description}{}",
                start_ns as f64 / 1e9,
                error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" (failed: {e})"))
            );
            records.push(FaultRecord {
                start_ns,
                end_ns: 0,
                description,
                leader_kill: fault.is_leader_kill(),
                error,
            });
        }
        if let Err(e) = guard.hosts_mut().set_cuts(&undo.cuts) {
            records[first].error = Some(e.to_string());
        }
        drop(guard);
        tokio::time::sleep(episode.hold).await;
        let healed = heal(&mut *nodes.lock().await, &undo);
        let end_ns = recorder.now_ns();
        for record in &mut records[first..] {
            record.end_ns = end_ns;
            if let Err(e) = &healed {
                record.error.get_or_insert_with(|| e.clone());
            }
        }
    }
    records
}

/// Undoes an episode: restarts, continues, restores links.
fn heal(nodes: &mut Nodes, undo: &Undo) -> Result<(), String> {
    nodes.reap();
    let mut result = nodes.hosts_mut().set_cuts(&[]).map_err(|e| e.to_string());
    for &i in &undo.resume {
        if let Err(e) = nodes.set_paused(i, false) {
            result = Err(e.to_string());
        }
    }
    for &i in &undo.restart {
        if !nodes.is_up(i) {
            if let Err(e) = nodes.spawn(i) {
                result = Err(e.to_string());
            }
        }
    }
    result
}

/// Starts one fault; cuts are gathered in `undo` and set by the caller.
async fn apply(
    nodes: &mut Nodes,
    fault: &Fault,
    leader: Option<usize>,
    undo: &mut Undo,
) -> (String, Option<String>) {
    let count = nodes.count();
    let resolve = |target: &Target| match target {
        Target::Host(i) => *i,
        // No leader seen: the host after the last one (any host will do).
        Target::Leader => leader.unwrap_or(count - 1),
    };
    let all_but =
        |hosts: &[usize]| -> Vec<usize> { (0..count).filter(|i| !hosts.contains(i)).collect() };
    let both_ways = |left: &[usize], right: &[usize], cuts: &mut Vec<Cut>| {
        for &a in left {
            for &b in right {
                cuts.push(Cut { from: a, to: b });
                cuts.push(Cut { from: b, to: a });
            }
        }
    };
    let mut error = None;
    let description = match fault {
        Fault::Kill(target) => {
            let i = resolve(target);
            let id = nodes.id(i);
            nodes.kill(i);
            undo.restart.push(i);
            format!("{fault}: SIGKILL node {id} on host {i}")
        }
        Fault::Pause(target) => {
            let i = resolve(target);
            if let Err(e) = nodes.set_paused(i, true) {
                error = Some(e.to_string());
            }
            undo.resume.push(i);
            format!("{fault}: SIGSTOP node {} on host {i}", nodes.id(i))
        }
        Fault::Split { side } => {
            both_ways(side, &all_but(side), &mut undo.cuts);
            fault.to_string()
        }
        Fault::IsolateLeader => {
            let l = resolve(&Target::Leader);
            both_ways(&[l], &all_but(&[l]), &mut undo.cuts);
            format!("{fault}: host {l}")
        }
        Fault::Bridge { left, right, .. } => {
            both_ways(left, right, &mut undo.cuts);
            fault.to_string()
        }
        Fault::LeaderOneWay { deaf } => {
            let l = resolve(&Target::Leader);
            for other in all_but(&[l]) {
                undo.cuts.push(if *deaf {
                    Cut { from: other, to: l }
                } else {
                    Cut { from: l, to: other }
                });
            }
            format!("{fault}: host {l}")
        }
        Fault::Replace(target) => {
            let i = resolve(target);
            let old = nodes.id(i);
            match nodes.replace(i, Duration::from_secs(20)).await {
                Ok(new) => format!("{fault}: node {old} on host {i} removed, node {new} joins"),
                Err(e) => {
                    error = Some(e.to_string());
                    format!("{fault}: node {old} on host {i}")
                }
            }
        }
    };
    (description, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(schedule: &Schedule) -> String {
        format!("{:?}", schedule.episodes)
    }

    #[test]
    fn a_seed_fixes_the_schedule_and_it_fits_the_duration() {
        let duration = Duration::from_secs(300);
        let a = Schedule::generate(5, duration, 5, true);
        assert_eq!(text(&a), text(&Schedule::generate(5, duration, 5, true)));
        assert_ne!(text(&a), text(&Schedule::generate(6, duration, 5, true)));
        // Full: another episode (9 s at most) would not fit.
        let total: Duration = a.episodes.iter().map(|e| e.gap + e.hold).sum();
        assert!(total <= duration, "{total:?}");
        assert!(total + Duration::from_secs(9) > duration, "{total:?}");
    }

    #[test]
    fn partitions_keep_to_the_hosts_and_replacements_can_be_left_out() {
        for seed in 0..50 {
            let schedule = Schedule::generate(seed, Duration::from_secs(120), 5, false);
            for fault in schedule.episodes.iter().flat_map(|e| &e.faults) {
                assert!(!matches!(fault, Fault::Replace(_)), "{fault}");
                match fault {
                    Fault::Split { side } => {
                        assert!(!side.is_empty() && side.len() <= 2, "{fault}");
                        assert!(side.iter().all(|&i| i < 5), "{fault}");
                    }
                    Fault::Bridge {
                        left,
                        bridge,
                        right,
                    } => {
                        let mut all = [left.clone(), right.clone(), vec![*bridge]].concat();
                        all.sort_unstable();
                        assert_eq!(all, [0, 1, 2, 3, 4], "{fault}");
                    }
                    Fault::Kill(Target::Host(i)) | Fault::Pause(Target::Host(i)) => {
                        assert!(*i < 5)
                    }
                    _ => {}
                }
            }
        }
    }
}
