//! What a run prints at the end: operations by outcome, the faults
//! injected, the recovery after each leader kill, and each check's
//! verdict, with the seed that replays the schedule.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::checks::Verdict;
use super::history::{Event, EventType, OpKind};
use super::nemesis::FaultRecord;

/// The end of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The seed of the schedule (and of the clients' choices).
    pub seed: u64,
    /// Planted fault, if any (test only).
    pub planted: Option<String>,
    /// The schedule's duration, as asked (`--duration`: with the seed, it
    /// fixes the schedule).
    pub duration: Duration,
    /// Time the faults actually took (the last episode may run over).
    pub chaos: Duration,
    /// Wall-clock time of the whole run.
    pub elapsed: Duration,
    /// Operations by kind and outcome (`invoke` counts invocations).
    pub counts: BTreeMap<(String, String), usize>,
    /// The faults, in order.
    pub faults: Vec<FaultRecord>,
    /// After each leader kill: the fault and the time until the first
    /// write invoked after it succeeded (`None`: none did).
    pub recoveries: Vec<(String, Option<Duration>)>,
    /// Check 1: the history is linearizable.
    pub linearizable: Verdict,
    /// Unknown writes the first linearizability search could leave out.
    pub unobserved_unknown_writes: usize,
    /// Check 2: every acknowledged write reads back at its revision.
    pub acknowledged: Verdict,
    /// Acknowledged writes read back.
    pub acknowledged_writes: usize,
    /// Check 3: the nodes converged to one digest.
    pub converged: Verdict,
    /// Nodes that exited without being killed (each fails the run).
    pub unexpected_exits: Vec<String>,
    /// The run's directory (history, node logs) if it is kept.
    pub kept: Option<PathBuf>,
}

impl Summary {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.linearizable.passed()
            && self.acknowledged.passed()
            && self.converged.passed()
            && self.unexpected_exits.is_empty()
    }
}

/// Counts of operations by kind and outcome.
pub fn counts(events: &[Event]) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for event in events {
        let key = (
            format!("{:?}", event.op).to_lowercase(),
            format!("{:?}", event.event_type).to_lowercase(),
        );
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// For each leader kill, the time from the kill to the completion of the
/// first write invoked after it that succeeded.
pub fn recoveries(events: &[Event], faults: &[FaultRecord]) -> Vec<(String, Option<Duration>)> {
    // Invocation time of each client's open operation.
    let mut invoked_at: BTreeMap<u64, u64> = BTreeMap::new();
    // (invoked, completed) of every successful write, in completion order.
    let mut writes: Vec<(u64, u64)> = Vec::new();
    for event in events {
        match event.event_type {
            EventType::Invoke => {
                invoked_at.insert(event.client, event.time_ns);
            }
            EventType::Ok if event.op != OpKind::Get => {
                if let Some(&at) = invoked_at.get(&event.client) {
                    writes.push((at, event.time_ns));
                }
            }
            _ => {}
        }
    }
    faults
        .iter()
        .filter(|f| f.leader_kill)
        .map(|f| {
            let first = writes
                .iter()
                .find(|&&(invoked, _)| invoked >= f.start_ns)
                .map(|&(_, done)| Duration::from_nanos(done - f.start_ns));
            (f.description.clone(), first)
        })
        .collect()
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "==== chaos run, seed {} ====", self.seed)?;
        if let Some(planted) = &self.planted {
            writeln!(f, "planted fault: {planted}")?;
        }
        writeln!(
            f,
            "{:.0} s of faults, {:.0} s in all",
            self.chaos.as_secs_f64(),
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "operations (op: invoked / ok / fail / unknown):")?;
        for op in ["put", "get", "cas"] {
            let n = |t: &str| {
                self.counts
                    .get(&(op.to_string(), t.to_string()))
                    .copied()
                    .unwrap_or(0)
            };
            writeln!(
                f,
                "  {op:<4} {:>6} / {:>6} / {:>5} / {:>5}",
                n("invoke"),
                n("ok"),
                n("fail"),
                n("unknown")
            )?;
        }
        writeln!(f, "faults ({}):", self.faults.len())?;
        for fault in &self.faults {
            writeln!(
                f,
                "  {:>7.1}s ..{:>7.1}s  {}{}",
                fault.start_ns as f64 / 1e9,
                fault.end_ns as f64 / 1e9,
                fault.description,
                fault
                    .error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" [nemesis error: {e}]"))
            )?;
        }
        writeln!(
            f,
            "recovery after leader kills (first write that succeeded):"
        )?;
        if self.recoveries.is_empty() {
            writeln!(f, "  (no leader kill)")?;
        }
        for (what, took) in &self.recoveries {
            match took {
                Some(d) => writeln!(f, "  {:>6.2} s  {what}", d.as_secs_f64())?,
                None => writeln!(f, "  never    {what}")?,
            }
        }
        writeln!(
            f,
            "check 1, linearizable ({} unobserved unknown writes left out first): {}",
            self.unobserved_unknown_writes, self.linearizable
        )?;
        writeln!(
            f,
            "check 2, {} acknowledged writes readable: {}",
            self.acknowledged_writes, self.acknowledged
        )?;
        writeln!(
            f,
            "check 3, nodes converged, same digest: {}",
            self.converged
        )?;
        if self.unexpected_exits.is_empty() {
            writeln!(f, "no node exited on its own")?;
        } else {
            writeln!(
                f,
                "FAIL: nodes exited on their own (see their logs): {}",
                self.unexpected_exits.join("; ")
            )?;
        }
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        writeln!(f, "verdict: {verdict}")?;
        if let Some(dir) = &self.kept {
            writeln!(f, "kept: {} (history.jsonl, node-*.log)", dir.display())?;
        }
        if !self.passed() {
            write!(
                f,
                "replay the schedule: cargo run -p rafter-tests --bin chaos -- --seed {} \
                 --duration {}{}",
                self.seed,
                self.duration.as_secs(),
                if self.planted.is_some() {
                    " --planted stale-reads"
                } else {
                    ""
                }
            )?;
        }
        Ok(())
    }
}
