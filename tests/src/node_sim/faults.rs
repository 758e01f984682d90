//! Faults and operator actions, drawn from the seed: one task that, every
//! few ticks, picks one of
//!
//! - a crash of a node or of the leader (its disk keeps what was synced
//!   and any subset of the rest), now or in the middle of its next fsync,
//!   or as it installs a received snapshot (before or after saving the
//!   metadata, before or after the state machine's install);
//! - an I/O error in a node's next write, or a panic in its storage or
//!   apply task: the node must stop (fail-stop), and comes back later;
//! - slow fsyncs for a while;
//! - a partition: a node cut off both ways, one way, or flapping; the
//!   leader isolated;
//! - an operator call through the public API, in a task of its own whose
//!   outcome is traced: `transfer_leader`, `add_learner` (a spare node
//!   that joins empty, or a removed one), `change_membership` (promote a
//!   learner, or swap a voter for one), `remove_node`.
//!
//! Clock skew is not a fault of this task: every incarnation ticks at its
//! own pace (see `world::start_node`). Drops, duplicates and delays are
//! the network's (see `network`).

use std::collections::BTreeSet;
use std::time::Duration;

use rafter::{NodeId, Raft, Role};

use super::state_machine::SimStateMachine;
use super::world::{Shared, WorldState};

/// The kinds of fault, for the weights.
const KINDS: usize = 12;

/// Runs faults until the world heals.
pub async fn run(world: Shared) {
    loop {
        let gap = {
            let mut w = world.lock();
            if w.healed || w.failed.is_some() {
                return;
            }
            let (low, high) = w.config.fault_gap_micros;
            w.rng.between(low, high)
        };
        tokio::time::sleep(Duration::from_micros(gap)).await;
        let mut w = world.lock();
        if w.healed {
            return;
        }
        let kind = w.rng.below(KINDS as u64) as usize;
        inject(&world, &mut w, kind);
    }
}

/// The leader with the highest term among running nodes.
pub fn leader(w: &WorldState) -> Option<(NodeId, Raft<SimStateMachine>)> {
    w.nodes
        .values()
        .filter_map(|slot| {
            let raft = slot.raft.clone()?;
            let m = raft.status();
            (m.role == Role::Leader && !m.stopped).then_some((m.term, slot.id, raft))
        })
        .max_by_key(|(term, id, _)| (*term, *id))
        .map(|(_, id, raft)| (id, raft))
}

fn random_node(w: &mut WorldState) -> NodeId {
    let ids: Vec<NodeId> = w.nodes.keys().copied().collect();
    w.rng.pick(&ids)
}

fn random_up_node(w: &mut WorldState) -> Option<NodeId> {
    let ids: Vec<NodeId> = w
        .nodes
        .values()
        .filter(|slot| slot.raft.is_some())
        .map(|slot| slot.id)
        .collect();
    (!ids.is_empty()).then(|| w.rng.pick(&ids))
}

fn inject(world: &Shared, w: &mut WorldState, kind: usize) {
    let tick = w.config.raft.tick_interval.as_micros() as u64;
    match kind {
        0 => {
            if let Some(id) = random_up_node(w) {
                w.note(format!("fault: crash node {id}"));
                w.crash(id);
            }
        }
        1 => {
            if let Some((id, _)) = leader(w) {
                w.note(format!("fault: crash the leader {id}"));
                w.crash(id);
            }
        }
        2 => {
            let id = random_node(w);
            w.note(format!("fault: node {id} crashes in its next fsync"));
            w.node_mut(id).disk_faults.crash_in_next_fsync = true;
        }
        3 => {
            let id = random_node(w);
            let after = w.rng.chance(500);
            let in_storage = w.rng.chance(500);
            w.note(format!(
                "fault: node {id} crashes in its next snapshot {} ({})",
                if in_storage {
                    "metadata save"
                } else {
                    "install"
                },
                if after { "after" } else { "before" }
            ));
            if in_storage {
                w.node_mut(id).disk_faults.crash_at_snapshot_meta = Some(after);
            } else {
                w.node_mut(id).sm_faults.crash_at_install = Some(after);
            }
        }
        4 => {
            let id = random_node(w);
            match w.rng.below(3) {
                0 => {
                    w.note(format!("fault: node {id}'s next write fails"));
                    w.node_mut(id).disk_faults.fail_next_write = true;
                }
                1 => {
                    w.note(format!("fault: node {id}'s next write panics"));
                    w.node_mut(id).disk_faults.panic_next_write = true;
                }
                _ => {
                    w.note(format!("fault: node {id}'s next apply panics"));
                    w.node_mut(id).sm_faults.panic_next_apply = true;
                }
            }
        }
        5 => {
            let id = random_node(w);
            let until = w.now_micros() + w.rng.between(5, 60) * tick;
            w.note(format!("fault: node {id}'s fsyncs are slow until {until}"));
            w.node_mut(id).disk_faults.slow_until_micros = until;
        }
        6 | 7 => {
            let id = if kind == 6 {
                Some(random_node(w))
            } else {
                leader(w).map(|(id, _)| id)
            };
            if let Some(id) = id {
                let one_way = w.rng.below(3);
                let flaps = if w.rng.chance(300) {
                    w.rng.between(2, 6)
                } else {
                    1
                };
                let length = w.rng.between(3, 60) * tick;
                w.note(format!(
                    "fault: partition node {id} ({}) for {length} us, {flaps} time(s)",
                    ["both ways", "outgoing", "incoming"][one_way as usize]
                ));
                let world = world.clone();
                tokio::spawn(partition(world, id, one_way, flaps, length));
            }
        }
        8 => admin(world, w, Admin::Transfer),
        9 => admin(world, w, Admin::AddLearner),
        10 => admin(world, w, Admin::Promote),
        _ => admin(world, w, Admin::Remove),
    }
}

/// Cuts `id` off (0: both ways, 1: its sends, 2: what it receives) for
/// `length`, `flaps` times with as long in between.
async fn partition(world: Shared, id: NodeId, direction: u64, flaps: u64, length: u64) {
    let others: Vec<NodeId> = world.lock().nodes.keys().copied().collect();
    for flap in 0..flaps {
        set(&world, id, &others, direction, true);
        tokio::time::sleep(Duration::from_micros(length)).await;
        set(&world, id, &others, direction, false);
        if flap + 1 < flaps {
            tokio::time::sleep(Duration::from_micros(length)).await;
        }
    }
}

fn set(world: &Shared, id: NodeId, others: &[NodeId], direction: u64, cut: bool) {
    let mut w = world.lock();
    if w.healed {
        return;
    }
    for &other in others.iter().filter(|&&other| other != id) {
        if direction != 2 {
            w.set_cut(id, other, cut);
        }
        if direction != 1 {
            w.set_cut(other, id, cut);
        }
    }
}

/// An operator call.
#[derive(Debug, Clone, Copy)]
enum Admin {
    Transfer,
    AddLearner,
    Promote,
    Remove,
}

/// Starts an operator call at the leader, in a task whose end the final
/// checks wait for.
fn admin(world: &Shared, w: &mut WorldState, what: Admin) {
    let Some((leader_id, raft)) = leader(w) else {
        return;
    };
    let m = raft.status();
    let voters: Vec<NodeId> = m.membership.voters.iter().copied().collect();
    let learners: Vec<NodeId> = m.membership.learners.iter().copied().collect();
    let members = m.membership.members();
    let outsiders: Vec<NodeId> = w
        .nodes
        .keys()
        .copied()
        .filter(|id| !members.contains(id))
        .collect();
    let deadline = 4 * w.config.raft.propose_timeout
        + w.config.raft.tick_interval * (4 * w.config.raft.election_ticks_max) as u32;
    let description;
    let call: std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>> = match what {
        Admin::Transfer => {
            let to = w.rng.pick(&voters);
            description = format!("transfer_leader({to}) at {leader_id}");
            Box::pin(async move { format!("{:?}", raft.transfer_leader(to).await) })
        }
        Admin::AddLearner if !outsiders.is_empty() => {
            let id = w.rng.pick(&outsiders);
            description = format!("add_learner({id}) at {leader_id}");
            Box::pin(
                async move { format!("{:?}", raft.add_learner(id, format!("node-{id}")).await) },
            )
        }
        Admin::Promote if !learners.is_empty() => {
            let learner = w.rng.pick(&learners);
            let mut new: BTreeSet<NodeId> = voters.iter().copied().collect();
            new.insert(learner);
            // Sometimes a swap: a voter (perhaps the leader) goes.
            if voters.len() >= 3 && w.rng.chance(400) {
                let gone = w.rng.pick(&voters);
                new.remove(&gone);
            }
            description = format!("change_membership({new:?}) at {leader_id}");
            Box::pin(async move { format!("{:?}", raft.change_membership(new).await) })
        }
        Admin::Remove => {
            // Keep at least three voters.
            let candidates: Vec<NodeId> = if voters.len() > 3 {
                voters.iter().chain(&learners).copied().collect()
            } else {
                learners.clone()
            };
            if candidates.is_empty() {
                return;
            }
            let id = w.rng.pick(&candidates);
            description = format!("remove_node({id}) at {leader_id}");
            Box::pin(async move { format!("{:?}", raft.remove_node(id).await) })
        }
        _ => return,
    };
    w.note(format!("operator: {description}"));
    let world = world.clone();
    let text = description.clone();
    let task = tokio::spawn(async move {
        let outcome = tokio::time::timeout(deadline, call).await;
        let mut w = world.lock();
        match outcome {
            Ok(result) => {
                if result.starts_with("Ok") && !text.starts_with("transfer") {
                    w.membership_changes_done += 1;
                }
                w.note(format!("operator: {text} -> {result}"));
            }
            Err(_) => w.violation(
                super::Check::Deadline,
                format!("operator call {text} did not return by its deadline"),
            ),
        }
    });
    w.calls.push((format!("operator call {description}"), task));
}
