//! The checks at the end of a run, after everything healed and the
//! clients stopped:
//!
//! 1. the history is linearizable, key by key, by the simulator's
//!    checker ([`crate::sim::linearizability`]) over its Put/Get/Cas
//!    model, the history's `seq` standing for time;
//! 2. every acknowledged write (a put, or a swap that happened) is
//!    readable at the revision its answer gave, with its value, through
//!    every node in turn;
//! 3. every node has all current nodes as voters and reports the same
//!    state digest at the same applied index (checked by
//!    [`Nodes::wait_converged`]).
//!
//! Mapping the history onto the model: a `fail` and a get without an
//! answer took no effect and are left out; an `unknown` write has no
//! return and any output (it may have happened at any time after its
//! call, or never); an invocation without completion counts as unknown.
//! Before the full search, a first search leaves out the unknown writes
//! whose value nobody read or compared against: a pass of that smaller
//! history proves the full one linearizable (those writes "never
//! happened"); only when it fails is the full history searched, because
//! a failed swap may need such a write to explain it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::sim::kv::{KvInput, KvOutput};
use crate::sim::linearizability::{self, CheckError, KeyOp};

use super::history::{Event, EventType, OpKind};
use super::http::{b64, int, unb64, Http};
use super::nodes::Nodes;

/// Reads of acknowledged writes in flight at once.
const READS_IN_FLIGHT: usize = 16;
/// Attempts at reading one acknowledged write before calling it lost.
const READ_ATTEMPTS: usize = 5;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It holds.
    Pass,
    /// It does not, and why.
    Fail(String),
}

impl Verdict {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        matches!(self, Verdict::Pass)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass => write!(f, "pass"),
            Verdict::Fail(why) => write!(f, "FAIL: {why}"),
        }
    }
}

/// One operation: its invocation and completion (if any).
struct Operation<'a> {
    invoke: &'a Event,
    done: Option<&'a Event>,
}

/// Pairs each invocation with its client's next event.
fn operations(events: &[Event]) -> Vec<Operation<'_>> {
    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut ops: Vec<Operation<'_>> = Vec::new();
    for event in events {
        if event.event_type == EventType::Invoke {
            open.insert(event.client, ops.len());
            ops.push(Operation {
                invoke: event,
                done: None,
            });
        } else if let Some(index) = open.remove(&event.client) {
            ops[index].done = Some(event);
        }
    }
    ops
}

/// The model's operation for one history operation, or `None` if it took
/// no effect and observed nothing (left out of the check).
fn key_op(op: &Operation<'_>, key: u8) -> Option<KeyOp> {
    let invoke = op.invoke;
    let outcome = op.done.map_or(EventType::Unknown, |d| d.event_type);
    let input = match invoke.op {
        OpKind::Put => KvInput::Put {
            key,
            value: invoke.value?,
        },
        OpKind::Get => KvInput::Get { key },
        OpKind::Cas => KvInput::Cas {
            key,
            expected: invoke.expected,
            new: invoke.value?,
        },
    };
    let ret = match (outcome, op.done) {
        (EventType::Ok, Some(done)) => Some((
            done.seq,
            match invoke.op {
                OpKind::Put => KvOutput::Put,
                OpKind::Get => KvOutput::Get(done.value),
                OpKind::Cas => KvOutput::Cas(done.succeeded?),
            },
        )),
        (EventType::Fail, _) => return None,
        _ if invoke.op == OpKind::Get => return None,
        _ => None,
    };
    Some(KeyOp {
        input,
        call: invoke.seq,
        ret,
    })
}

/// Check 1: the history is linearizable. Also returns how many unknown
/// writes the first search could leave out.
pub fn linearizable(events: &[Event]) -> (Verdict, usize) {
    let mut keys: BTreeMap<&str, u8> = BTreeMap::new();
    let mut by_key: BTreeMap<u8, Vec<KeyOp>> = BTreeMap::new();
    for op in operations(events) {
        let next = keys.len();
        if next > u8::MAX as usize && !keys.contains_key(op.invoke.key.as_str()) {
            return (Verdict::Fail("more than 256 keys".into()), 0);
        }
        let key = *keys.entry(op.invoke.key.as_str()).or_insert(next as u8);
        if let Some(key_op) = key_op(&op, key) {
            by_key.entry(key).or_default().push(key_op);
        }
    }
    let names: BTreeMap<u8, &str> = keys.iter().map(|(name, k)| (*k, *name)).collect();
    let mut left_out = 0;
    for (key, ops) in &by_key {
        let observed: HashSet<u64> = ops
            .iter()
            .filter_map(|op| match (op.input, op.ret) {
                (_, Some((_, KvOutput::Get(Some(v))))) => Some(v),
                (KvInput::Cas { expected, .. }, _) => expected,
                _ => None,
            })
            .collect();
        let unseen_unknown = |op: &KeyOp| {
            op.ret.is_none()
                && match op.input {
                    KvInput::Put { value, .. } => !observed.contains(&value),
                    KvInput::Cas { new, .. } => !observed.contains(&new),
                    KvInput::Get { .. } => false,
                }
        };
        let reduced: Vec<KeyOp> = ops
            .iter()
            .filter(|op| !unseen_unknown(op))
            .copied()
            .collect();
        if linearizability::check(&reduced, None).is_ok() {
            left_out += ops.len() - reduced.len();
            continue;
        }
        let name = names[key];
        match linearizability::check(ops, None) {
            Ok(()) => {}
            Err(CheckError::NotLinearizable { longest }) => {
                return (Verdict::Fail(explain(name, ops, &longest)), left_out);
            }
            Err(CheckError::GaveUp(states)) => {
                return (
                    Verdict::Fail(format!(
                        "the search of key {name} ({} ops) gave up after {states} states: \
                         not shown linearizable",
                        ops.len()
                    )),
                    left_out,
                );
            }
        }
    }
    (Verdict::Pass, left_out)
}

/// Names the operations a failed search got stuck on.
fn explain(name: &str, ops: &[KeyOp], longest: &[usize]) -> String {
    let linearized: HashSet<usize> = longest.iter().copied().collect();
    // The call of the first operation the search could not place.
    let stuck_from = (0..ops.len())
        .filter(|i| !linearized.contains(i))
        .map(|i| ops[i].call)
        .min()
        .unwrap_or(0);
    let mut text = format!(
        "key {name} is not linearizable ({} ops, {} linearize); the last linearized and \
         the first left out, by history seq:",
        ops.len(),
        longest.len()
    );
    let tail = longest.iter().rev().take(3).rev().map(|&i| &ops[i]);
    let stuck = ops
        .iter()
        .enumerate()
        .filter(|(i, op)| !linearized.contains(i) && op.call >= stuck_from)
        .map(|(_, op)| op)
        .take(8);
    for op in tail.chain(stuck) {
        let ret = op.ret.map_or("unknown".to_string(), |(at, out)| {
            format!("{at} -> {out:?}")
        });
        text += &format!("\n    [{} .. {ret}] {:?}", op.call, op.input);
    }
    text
}

/// Check 2: every acknowledged write is readable at its revision with its
/// value, each read through the next host in turn (serializable reads:
/// the nodes converged first, so each answers from its own state).
pub async fn acknowledged_writes_readable(events: &[Event], nodes: &Nodes) -> (Verdict, usize) {
    let writes: Vec<&Event> = events
        .iter()
        .filter(|e| e.event_type == EventType::Ok)
        .filter(|e| e.op == OpKind::Put || (e.op == OpKind::Cas && e.succeeded == Some(true)))
        .collect();
    let http = Http::new();
    let urls: Vec<String> = (0..nodes.count()).map(|i| nodes.url(i)).collect();
    let checks = writes.iter().enumerate().map(|(n, done)| {
        let http = http.clone();
        // A completion repeats its invocation's value.
        let value = done.value;
        let urls = &urls;
        async move {
            let (Some(value), Some(revision)) = (value, done.revision) else {
                return Some(format!(
                    "write at seq {} has no value or revision",
                    done.seq
                ));
            };
            let body = json!({"key": b64(&done.key), "revision": revision, "serializable": true});
            let mut last = String::new();
            for attempt in 0..READ_ATTEMPTS {
                let url = format!("{}/v3/kv/range", urls[(n + attempt) % urls.len()]);
                match http.post(&url, &[], &body, Duration::from_secs(5)).await {
                    Ok(answer) => {
                        let kv = &answer["kvs"][0];
                        let read = kv["value"]
                            .as_str()
                            .and_then(unb64)
                            .and_then(|b| String::from_utf8(b).ok());
                        let mod_revision = int(&kv["mod_revision"]);
                        if read == Some(value.to_string()) && mod_revision == Some(revision) {
                            return None;
                        }
                        return Some(format!(
                            "{:?} of {} acknowledged at revision {revision} (seq {}) reads \
                             {read:?} at mod_revision {mod_revision:?} through {url}",
                            done.op, done.key, done.seq
                        ));
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            Some(format!(
                "{:?} of {} at revision {revision} (seq {}): no read succeeded: {last}",
                done.op, done.key, done.seq
            ))
        }
    });
    let problems: Vec<String> = futures::stream::iter(checks)
        .buffer_unordered(READS_IN_FLIGHT)
        .filter_map(|problem| async move { problem })
        .collect()
        .await;
    let verdict = match problems.len() {
        0 => Verdict::Pass,
        n => Verdict::Fail(format!(
            "{n} of {} acknowledged writes are not readable; first: {}",
            writes.len(),
            problems[..n.min(5)].join("; ")
        )),
    };
    (verdict, writes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A history builder: events get consecutive seqs.
    #[derive(Default)]
    struct H(Vec<Event>);

    impl H {
        fn push(
            &mut self,
            client: u64,
            t: EventType,
            op: OpKind,
            value: Option<u64>,
        ) -> &mut Event {
            let mut event = Event::new(t, client, op, "k");
            event.seq = self.0.len() as u64;
            event.value = value;
            self.0.push(event);
            self.0.last_mut().unwrap()
        }
        fn put(&mut self, client: u64, value: u64, outcome: EventType) {
            self.push(client, EventType::Invoke, OpKind::Put, Some(value));
            self.push(client, outcome, OpKind::Put, Some(value));
        }
        fn get(&mut self, client: u64, value: Option<u64>) {
            self.push(client, EventType::Invoke, OpKind::Get, None);
            self.push(client, EventType::Ok, OpKind::Get, value);
        }
        fn cas(&mut self, client: u64, expected: u64, new: u64, succeeded: bool) {
            self.push(client, EventType::Invoke, OpKind::Cas, Some(new))
                .expected = Some(expected);
            let done = self.push(client, EventType::Ok, OpKind::Cas, Some(new));
            done.expected = Some(expected);
            done.succeeded = Some(succeeded);
        }
    }

    fn verdict(h: &H) -> (Verdict, usize) {
        linearizable(&h.0)
    }

    #[test]
    fn a_sequential_history_passes_and_a_stale_read_fails() {
        let mut h = H::default();
        h.put(1, 10, EventType::Ok);
        h.get(2, Some(10));
        h.cas(1, 10, 11, true);
        h.cas(2, 10, 12, false);
        h.get(2, Some(11));
        assert_eq!(verdict(&h).0, Verdict::Pass);
        h.get(3, Some(10));
        let (v, _) = verdict(&h);
        assert!(
            matches!(&v, Verdict::Fail(why) if why.contains("not linearizable")),
            "{v}"
        );
    }

    #[test]
    fn failed_writes_never_happened_and_unknown_ones_may_have() {
        let mut h = H::default();
        h.put(1, 10, EventType::Ok);
        h.put(2, 20, EventType::Unknown);
        h.put(3, 30, EventType::Fail);
        h.get(1, Some(20));
        assert_eq!(verdict(&h), (Verdict::Pass, 0));
        // A failed write read back is a violation.
        h.get(1, Some(30));
        assert!(!verdict(&h).0.passed());
    }

    #[test]
    fn unknown_writes_nobody_saw_are_left_out_first() {
        let mut h = H::default();
        h.put(1, 10, EventType::Ok);
        for client in 2..6 {
            h.put(client, client * 100, EventType::Unknown);
        }
        h.get(1, Some(10));
        assert_eq!(verdict(&h), (Verdict::Pass, 4));
    }

    #[test]
    fn a_failed_swap_explained_only_by_an_unseen_unknown_write_passes() {
        // The swap from 10 fails: only the unknown put of 20 (never read)
        // can have moved the value. The first search (without it) fails,
        // the full one passes.
        let mut h = H::default();
        h.put(1, 10, EventType::Ok);
        h.put(2, 20, EventType::Unknown);
        h.cas(1, 10, 11, false);
        assert_eq!(verdict(&h), (Verdict::Pass, 0));
    }

    #[test]
    fn an_invocation_without_completion_counts_as_unknown() {
        let mut h = H::default();
        h.put(1, 10, EventType::Ok);
        h.push(2, EventType::Invoke, OpKind::Put, Some(20));
        h.get(1, Some(20));
        assert_eq!(verdict(&h).0, Verdict::Pass);
    }
}
