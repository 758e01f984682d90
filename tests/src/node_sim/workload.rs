//! The clients: tasks that call the public API of whichever node they
//! believe leads — `propose` (puts and compare-and-swaps), `propose_many`
//! (a few puts at once), and `linearizable_read` (or `read_index` and a
//! wait for the metrics to show it applied) followed by a read of that
//! node's state machine — one call at a time, and record every call in the
//! history with its outcome: an answer, a certain failure (nothing was
//! appended, or another entry took its place), or unknown (timeout,
//! stopped, indeterminate, or a batch cut short).
//!
//! Every call must return by its own deadline (`Config::propose_timeout`,
//! plus a tick for the apply task's sweep); the client waits twice as long
//! and fails the run with `Check::Deadline` if it had to stop waiting.

use std::time::Duration;

use rafter::testing::{KvCommand, KvResponse};
use rafter::{NodeId, ProposeError, ReadError};

use super::world::{Acked, Shared};
use super::Check;
use crate::sim::history::Outcome;
use crate::sim::kv::{KvInput, KvOutput};

/// The most commands a client proposes in one call.
pub const BATCH_COMMANDS_MAX: usize = 3;

/// The key a `KvInput` key is stored under.
pub fn key_name(key: u8) -> String {
    format!("k{key}")
}

/// A value as the state machine stores it.
pub fn value_bytes(value: u64) -> Vec<u8> {
    value.to_le_bytes().to_vec()
}

/// A stored value back as a number.
pub fn value_of(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("values are 8 bytes"))
}

/// The command a write becomes.
pub fn command(input: &KvInput) -> KvCommand {
    match *input {
        KvInput::Put { key, value } => KvCommand::Set {
            key: key_name(key),
            value: value_bytes(value),
        },
        KvInput::Cas { key, expected, new } => KvCommand::CompareAndSwap {
            key: key_name(key),
            expected: expected.map(value_bytes),
            new: value_bytes(new),
        },
        KvInput::Get { .. } => panic!("a get is not a command"),
    }
}

fn output(input: &KvInput, response: &KvResponse) -> KvOutput {
    match input {
        KvInput::Put { .. } => KvOutput::Put,
        KvInput::Cas { .. } => KvOutput::Cas(response.succeeded),
        KvInput::Get { .. } => unreachable!("a get has no response"),
    }
}

/// How a failed proposal ended for the history, and where to go next.
fn propose_failure(error: &ProposeError) -> (Outcome, Option<NodeId>) {
    match error {
        ProposeError::NotLeader { leader_hint, .. } => (Outcome::Failed, *leader_hint),
        ProposeError::Timeout(_)
        | ProposeError::Stopped
        | ProposeError::Indeterminate { .. }
        | ProposeError::ForwardUnanswered { .. } => (Outcome::Unknown, None),
        // Nothing appended, or another entry provably took its index.
        _ => (Outcome::Failed, None),
    }
}

/// One client: runs until the world stops clients.
pub async fn client(world: Shared, c: usize) {
    let mut guess: Option<NodeId> = None;
    let mut answered = true;
    loop {
        let (think, target) = {
            let mut w = world.lock();
            if w.clients_stopped || w.failed.is_some() {
                return;
            }
            // After a call that failed at once (no leader, node stopping)
            // or with no node up, back off: simulated time only moves when
            // every task waits, so a client retrying without a pause would
            // hold the clock still (and the ticks that would elect a
            // leader) forever.
            let tick = w.config.raft.tick_interval.as_micros() as u64;
            let (low, high) = if answered {
                (0, w.config.think_micros_max)
            } else {
                (tick / 2, 2 * tick)
            };
            let think = w.rng.between(low, high);
            let target = match guess.filter(|id| w.node(*id).raft.is_some()) {
                Some(id) => Some(id),
                None => {
                    let up: Vec<NodeId> = w
                        .nodes
                        .values()
                        .filter(|slot| slot.raft.is_some())
                        .map(|slot| slot.id)
                        .collect();
                    (!up.is_empty()).then(|| w.rng.pick(&up))
                }
            };
            (think, target)
        };
        tokio::time::sleep(Duration::from_micros(think)).await;
        (guess, answered) = match target {
            Some(node) => one_call(&world, c, node).await,
            None => (None, false),
        };
    }
}

/// Makes one call at `node`; returns where to go next, and whether the
/// call was answered.
async fn one_call(world: &Shared, c: usize, node: NodeId) -> (Option<NodeId>, bool) {
    let (raft, kv, inputs, ops, deadline, by_read_index) = {
        let mut w = world.lock();
        let slot = w.node(node);
        let (Some(raft), kv) = (slot.raft.clone(), slot.kv.clone()) else {
            return (None, false);
        };
        let keys = w.config.keys;
        let read_per_mille = w.config.read_per_mille;
        let mut inputs = vec![{
            let WorldStateParts { generator, rng } = parts(&mut w);
            generator.next(rng, keys, read_per_mille)
        }];
        // Sometimes a few puts in one call.
        if matches!(inputs[0], KvInput::Put { .. }) && w.rng.chance(200) {
            for _ in 1..w.rng.between(2, BATCH_COMMANDS_MAX as u64) {
                let WorldStateParts { generator, rng } = parts(&mut w);
                let next = generator.next(rng, keys, 0);
                if matches!(next, KvInput::Put { .. }) {
                    inputs.push(next);
                }
            }
        }
        let now = w.now_micros();
        let ops: Vec<usize> = inputs
            .iter()
            .map(|input| w.history.invoke(c, *input, now))
            .collect();
        w.note(format!("client {c} at node {node}: ops {ops:?} {inputs:?}"));
        let deadline = 2 * w.config.raft.propose_timeout + 2 * w.config.raft.tick_interval;
        // Some reads take the read index and wait for it themselves.
        let by_read_index = w.rng.chance(300);
        (raft, kv, inputs, ops, deadline, by_read_index)
    };
    let mut next = Some(node);
    let outcomes: Vec<(Outcome, Option<Acked>)> = match &inputs[..] {
        [KvInput::Get { key }] => {
            let key = *key;
            let read = async {
                if !by_read_index {
                    return raft.linearizable_read().await;
                }
                let index = raft.read_index().await?;
                let propose_timeout = world.lock().config.raft.propose_timeout;
                match raft
                    .wait_for(propose_timeout, |m| m.applied_index >= index || m.stopped)
                    .await
                {
                    Some(m) if !m.stopped => Ok(index),
                    Some(_) => Err(ReadError::Stopped),
                    None => Err(ReadError::Timeout(propose_timeout)),
                }
            };
            match tokio::time::timeout(deadline, read).await {
                Err(_) => return deadline_missed(world, c, "linearizable_read", &ops),
                Ok(Ok(index)) => {
                    // Read right away: no other task runs in between. The
                    // contract: the state has applied up to the index.
                    let value = kv.get(&key_name(key)).map(|v| value_of(&v));
                    let applied = kv.applied_log_id().index;
                    let mut w = world.lock();
                    if applied < index {
                        w.violation(
                            Check::ReadIndex,
                            format!(
                                "client {c}: linearizable_read at node {node} returned read \
                                 index {index}, but its state machine applied only {applied}"
                            ),
                        );
                    }
                    let at = w.now_micros();
                    drop(w);
                    vec![(
                        Outcome::Ok {
                            at,
                            output: KvOutput::Get(value),
                        },
                        None,
                    )]
                }
                Ok(Err(error)) => {
                    if let ReadError::NotLeader { leader_hint, .. } = error {
                        next = leader_hint;
                    } else {
                        next = None;
                    }
                    vec![(Outcome::Failed, None)]
                }
            }
        }
        [single] => match tokio::time::timeout(deadline, raft.propose(command(single))).await {
            Err(_) => return deadline_missed(world, c, "propose", &ops),
            Ok(Ok(response)) => {
                let at = world.lock().now_micros();
                let acked = Acked {
                    op: ops[0],
                    index: response.index,
                    command: rafter::codec::encode(&command(single)),
                };
                vec![(
                    Outcome::Ok {
                        at,
                        output: output(single, &response),
                    },
                    Some(acked),
                )]
            }
            Ok(Err(error)) => {
                let (outcome, hint) = propose_failure(&error);
                next = hint;
                vec![(outcome, None)]
            }
        },
        many => {
            let commands = many.iter().map(command).collect();
            match tokio::time::timeout(deadline, raft.propose_many(commands)).await {
                Err(_) => return deadline_missed(world, c, "propose_many", &ops),
                Ok(Ok(responses)) => {
                    let at = world.lock().now_micros();
                    many.iter()
                        .zip(responses)
                        .zip(&ops)
                        .map(|((input, response), &op)| {
                            let acked = Acked {
                                op,
                                index: response.index,
                                command: rafter::codec::encode(&command(input)),
                            };
                            (
                                Outcome::Ok {
                                    at,
                                    output: output(input, &response),
                                },
                                Some(acked),
                            )
                        })
                        .collect()
                }
                Ok(Err(error)) => {
                    let (outcome, hint) = propose_failure(&error);
                    next = hint;
                    // Overwritten or indeterminate part-way: any prefix
                    // may have applied.
                    let outcome = match error {
                        ProposeError::Overwritten { .. } => Outcome::Unknown,
                        _ => outcome,
                    };
                    many.iter().map(|_| (outcome, None)).collect()
                }
            }
        }
    };
    let answered = outcomes
        .iter()
        .any(|(outcome, _)| matches!(outcome, Outcome::Ok { .. }));
    let mut w = world.lock();
    for (&op, (outcome, acked)) in ops.iter().zip(outcomes) {
        w.note(format!("client {c} op {op} ends {outcome:?}"));
        w.history.end(op, outcome);
        if let Some(acked) = acked {
            w.acked.push(acked);
        }
    }
    (next, answered)
}

/// The call did not return by its deadline: a failure of the run.
fn deadline_missed(world: &Shared, c: usize, call: &str, ops: &[usize]) -> (Option<NodeId>, bool) {
    let mut w = world.lock();
    for &op in ops {
        w.history.end(op, Outcome::Unknown);
    }
    w.violation(
        Check::Deadline,
        format!("client {c}: {call} (ops {ops:?}) did not return by its deadline"),
    );
    (None, false)
}

struct WorldStateParts<'a> {
    generator: &'a mut crate::sim::workload::OpGenerator,
    rng: &'a mut crate::sim::rng::SimRng,
}

fn parts<'a>(w: &'a mut super::world::WorldState) -> WorldStateParts<'a> {
    WorldStateParts {
        generator: &mut w.generator,
        rng: &mut w.rng,
    }
}
