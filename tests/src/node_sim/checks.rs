//! The checks at the end of a run, once the world has healed and the
//! cluster had time to converge (the checks made as the run goes are in
//! `world`: state machine safety, election safety, monotonic commit, queue
//! bounds, fail-stop, restarts, codec, deadlines).

use std::collections::BTreeSet;

use rafter::NodeId;

use super::workload::{key_name, value_of};
use super::world::WorldState;
use super::Check;
use crate::sim::history::Outcome;
use crate::sim::kv::{KvInput, KvOutput};

/// The members of the leader's configuration, if there is a leader.
pub fn final_members(w: &WorldState) -> Option<BTreeSet<NodeId>> {
    let (_, raft) = super::faults::leader(w)?;
    Some(raft.status().membership.members())
}

/// Whether the leader has committed its whole log and every member runs
/// and has applied exactly that.
pub fn converged(w: &WorldState, members: &BTreeSet<NodeId>) -> bool {
    let Some((_, leader)) = super::faults::leader(w) else {
        return false;
    };
    // Everything in the leader's log committed: a leader elected after a
    // restart may not know yet that its predecessor committed more (it
    // learns it when an entry of its own term commits; seed 9212).
    let status = leader.status();
    let commit = status.commit_index;
    if commit < status.last_log_index {
        return false;
    }
    // The state machine's own applied index, not the metrics' (which
    // the apply task publishes).
    members.iter().all(|&id| {
        let slot = w.node(id);
        slot.raft.is_some() && slot.kv.applied_log_id().index == commit
    })
}

/// Every member holds the same state, every acknowledged write is where
/// its answer said, the durable logs match, and every call returned.
pub fn check_end(w: &mut WorldState, members: &BTreeSet<NodeId>) -> Result<(), (Check, String)> {
    for (what, task) in &w.calls {
        if !task.is_finished() {
            return Err((Check::Unresolved, format!("{what} never returned")));
        }
    }
    // One state everywhere.
    let mut states = members.iter().map(|&id| (id, w.node(id).kv.state()));
    let (first_id, first) = states.next().expect("a configuration has members");
    for (id, state) in states {
        if (state.applied, state.fingerprint) != (first.applied, first.fingerprint) {
            return Err((
                Check::Convergence,
                format!(
                    "after the heal node {id} applied up to {:?} ({:#x}), node {first_id} up to \
                     {:?} ({:#x})",
                    state.applied, state.fingerprint, first.applied, first.fingerprint
                ),
            ));
        }
    }
    // Every acknowledged write is the entry at its index, on every member.
    for acked in &w.acked {
        if acked.index > first.applied.index {
            return Err((
                Check::AckedWriteLost,
                format!(
                    "op {} was acknowledged at index {}, but the members applied only up to {}",
                    acked.op, acked.index, first.applied.index
                ),
            ));
        }
        match w.applied_at(acked.index) {
            Some((_, payload, _)) if *payload == acked.command => {}
            other => {
                return Err((
                    Check::AckedWriteLost,
                    format!(
                        "op {} was acknowledged at index {}, where {:?} was applied",
                        acked.op,
                        acked.index,
                        other.map(|(log_id, _, node)| (log_id, node))
                    ),
                ))
            }
        }
    }
    check_logs_match(w, members)?;
    // The final value of each key, as one more read after everything.
    let now = w.now_micros();
    let reader = w.config.clients + 1;
    for key in 0..w.config.keys {
        let value = w
            .node(first_id)
            .kv
            .get(&key_name(key))
            .map(|v| value_of(&v));
        let op = w.history.invoke(reader, KvInput::Get { key }, now);
        w.history.end(
            op,
            Outcome::Ok {
                at: now,
                output: KvOutput::Get(value),
            },
        );
    }
    w.history.close();
    crate::sim::check_history(&w.history).map_err(|text| (Check::Linearizability, text))
}

/// Log matching (Raft §5.3) over the durable logs: entries at one index
/// with one term are the same entry, and the committed prefixes agree.
/// Entries at or below a node's latest snapshot are left out: after a
/// received snapshot is installed they may be a replaced history that the
/// purge, which comes last, has not removed yet (seed 2091).
fn check_logs_match(w: &WorldState, members: &BTreeSet<NodeId>) -> Result<(), (Check, String)> {
    let logs: Vec<_> = members
        .iter()
        .map(|&id| (id, w.node(id).disk.durable_log()))
        .collect();
    for (i, (a, (_, log_a, hard_a, snapshot_a))) in logs.iter().enumerate() {
        for (b, (purged_b, log_b, hard_b, snapshot_b)) in &logs[i + 1..] {
            let committed = hard_a.commit.min(hard_b.commit);
            let covered = (*snapshot_a).max(*snapshot_b);
            for entry in log_a.iter().filter(|entry| entry.index > covered) {
                // The log holds purged + 1 ..= last, consecutively.
                let Some(other) = entry
                    .index
                    .checked_sub(purged_b.index + 1)
                    .and_then(|at| log_b.get(at as usize))
                else {
                    continue;
                };
                let same_term_differs = other.term == entry.term && other != entry;
                let committed_differs = entry.index <= committed && other.term != entry.term;
                if same_term_differs || committed_differs {
                    return Err((
                        Check::LogMatching,
                        format!(
                            "nodes {a} and {b} hold different entries at index {} (terms {} and \
                             {}; committed up to {committed})",
                            entry.index, entry.term, other.term
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}
