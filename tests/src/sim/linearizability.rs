//! A linearizability checker for the KV model, one key at a time (a key's
//! operations are independent of every other key's, so the history is
//! linearizable iff each key's sub-history is; Herlihy & Wing's locality).
//!
//! The search is Wing & Gong's, with Lowe's memoization as in porcupine
//! (anishathalye/porcupine `checker.go`): walk the invocation and return
//! events in time order; at an invocation, try to linearize that operation
//! now (its output must match the model) unless the pair (set of linearized
//! operations, model state) was explored before; at a return of an
//! operation not yet linearized, backtrack. The events sit in a doubly
//! linked list so that lifting a linearized operation out, and putting it
//! back, is O(1).
//!
//! An operation with an unknown outcome has its return at the end of time
//! and accepts any output: it may be linearized anywhere after its call,
//! and linearizing it last is the same as "it never happened", since
//! nothing after it observes the state.

//! Events are ordered by [`Stamp`]: simulated time, then a sequence number
//! the history hands out as it records them, so the order is total. One
//! client's next call, made at the very time its previous operation
//! returned, comes after that return and is never taken as concurrent
//! with it.
//!
//! # Finishing the search
//!
//! A search that visits more than its cap of configurations gives up with
//! [`CheckError::GaveUp`], which callers must count as a failure, never as
//! a pass. Two reductions, both exact (a history passes after them iff it
//! passed before), keep the search small:
//!
//! - **Unobserved values.** Call a value observed if the initial state
//!   holds it, a completed get returns it, a CAS with a known outcome
//!   expects it, or an unknown CAS that may write an observed value
//!   expects it (to a fixpoint). Every other value is only ever compared
//!   with observed ones, so all of them are replaced by one stand-in value:
//!   every output, and every effect an output depends on, stays the same.
//!   An unknown CAS from an unobserved value then swaps the stand-in for
//!   itself and is left out, and writes that differ only in unobserved
//!   values become identical.
//! - **Twins.** Identical operations with unknown outcomes (the same
//!   input after the first reduction) are interchangeable: in any
//!   linearization, a later-called twin placed before an earlier-called
//!   one that is still pending can swap places with it (the earlier one was
//!   called before the place, and neither has a return). So the search
//!   linearizes a twin only after every earlier-called twin, and the
//!   linearized twins of a kind are always a prefix of them by call: k+1
//!   choices where there were 2^k. This is what unknown writes (a client
//!   that gave up, a crashed node) used to blow up.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::kv::{self, KeyState, KvInput, KvOutput};

/// A point in the history's total order of events: simulated time, then
/// the sequence number of the event, unique within the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// Simulated time (or any clock that never goes back).
    pub time: u64,
    /// Tie-break among events at one time: the order they happened in.
    pub seq: u64,
}

impl Stamp {
    /// The stamp of the event numbered `seq`, at `time`.
    pub fn new(time: u64, seq: u64) -> Self {
        Self { time, seq }
    }
}

impl std::fmt::Display for Stamp {
    /// `time#seq`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.time, self.seq)
    }
}

/// One operation on one key, as the checker sees it.
///
/// Invariant: `call < ret`, and no two events of a checked history share
/// a stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOp {
    pub input: KvInput,
    pub call: Stamp,
    /// `None`: unknown outcome (no return, any output).
    pub ret: Option<(Stamp, KvOutput)>,
}

/// Why a key's history is not linearizable, or why the check gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// No order of the operations explains the outputs. `longest` is the
    /// longest prefix of operations (indexes into the input) the search
    /// could linearize, in order.
    NotLinearizable { longest: Vec<usize> },
    /// The search visited more than the given number of configurations
    /// without an answer. Not a pass: callers fail the history.
    GaveUp(usize),
}

/// Configurations the search may visit before giving up; a key's history
/// in a default simulation run needs a few thousand at most once unknown
/// twins are folded (see the module docs).
pub const SEARCH_STATES_MAX: usize = 500_000;

const HEAD: usize = 0;
const TAIL: usize = 1;

struct Node {
    prev: usize,
    next: usize,
    op: usize,
    /// For a call: the list index of its return.
    matching: usize,
    is_call: bool,
}

/// Checks one key's operations, all with `initial` state at the start,
/// visiting at most [`SEARCH_STATES_MAX`] configurations.
pub fn check(ops: &[KeyOp], initial: KeyState) -> Result<(), CheckError> {
    check_with_cap(ops, initial, SEARCH_STATES_MAX)
}

/// [`check`] with a cap of `states_max` configurations.
pub fn check_with_cap(
    ops: &[KeyOp],
    initial: KeyState,
    states_max: usize,
) -> Result<(), CheckError> {
    assert_stamps_unique(ops);
    let (reduced, origin) = reduce(ops, initial);
    search(&reduced, initial, states_max).map_err(|error| match error {
        CheckError::NotLinearizable { longest } => CheckError::NotLinearizable {
            longest: longest.into_iter().map(|op| origin[op]).collect(),
        },
        gave_up => gave_up,
    })
}

/// Asserts the invariant of [`KeyOp`]: calls before returns, and no two
/// events at one stamp.
fn assert_stamps_unique(ops: &[KeyOp]) {
    let mut stamps: Vec<(Stamp, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        stamps.push((op.call, i));
        if let Some((ret, _)) = op.ret {
            assert!(ret > op.call, "op {i} returns before its call: {op:?}");
            stamps.push((ret, i));
        }
    }
    stamps.sort_unstable();
    for pair in stamps.windows(2) {
        assert!(
            pair[0].0 != pair[1].0,
            "two events share the stamp {:?}: ops {} and {}",
            pair[0].0,
            pair[0].1,
            pair[1].1
        );
    }
}

/// Wing & Gong's search with memoization over `ops` (already reduced).
fn search(ops: &[KeyOp], initial: KeyState, states_max: usize) -> Result<(), CheckError> {
    let earlier_twin = earlier_twins(ops);
    // Events: calls and returns, in stamp order; an unknown outcome's
    // return sits at the end of time.
    let mut events: Vec<(Stamp, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    let end_of_time = Stamp::new(u64::MAX, u64::MAX);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, false, i));
        events.push((op.ret.map_or(end_of_time, |(at, _)| at), true, i));
    }
    events.sort_unstable();
    let mut list: Vec<Node> = Vec::with_capacity(events.len() + 2);
    for _ in 0..2 {
        list.push(Node {
            prev: HEAD,
            next: TAIL,
            op: usize::MAX,
            matching: usize::MAX,
            is_call: false,
        });
    }
    let mut call_at = vec![usize::MAX; ops.len()];
    for (position, &(_, is_return, op)) in events.iter().enumerate() {
        let index = position + 2;
        list.push(Node {
            prev: if position == 0 { HEAD } else { index - 1 },
            next: if position + 1 == events.len() {
                TAIL
            } else {
                index + 1
            },
            op,
            matching: usize::MAX,
            is_call: !is_return,
        });
        if is_return {
            list[call_at[op]].matching = index;
        } else {
            call_at[op] = index;
        }
    }
    if !events.is_empty() {
        list[HEAD].next = 2;
        list[TAIL].prev = events.len() + 1;
    }

    let words = ops.len().div_ceil(64).max(1);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, KeyState)> = HashSet::new();
    let mut stack: Vec<(usize, KeyState)> = Vec::new();
    let mut longest: Vec<usize> = Vec::new();
    let mut state = initial;
    let mut entry = list[HEAD].next;
    while list[HEAD].next != TAIL {
        let node = &list[entry];
        if node.is_call {
            let op = &ops[node.op];
            let (next_state, output) = kv::step(state, &op.input);
            let matches = op.ret.is_none_or(|(_, expected)| expected == output);
            // An unknown twin waits for every earlier-called twin.
            let twin_first = earlier_twin[node.op]
                .is_none_or(|twin| linearized[twin / 64] & (1 << (twin % 64)) != 0);
            let mut advanced = false;
            if matches && twin_first {
                let op_index = node.op;
                linearized[op_index / 64] |= 1 << (op_index % 64);
                if seen.insert((linearized.clone(), next_state)) {
                    if seen.len() > states_max {
                        return Err(CheckError::GaveUp(states_max));
                    }
                    stack.push((entry, state));
                    state = next_state;
                    lift(&mut list, entry);
                    if stack.len() > longest.len() {
                        longest = stack.iter().map(|&(e, _)| list[e].op).collect();
                    }
                    entry = list[HEAD].next;
                    advanced = true;
                } else {
                    linearized[op_index / 64] &= !(1 << (op_index % 64));
                }
            }
            if !advanced {
                entry = list[entry].next;
            }
        } else {
            // The return of an operation we did not linearize: undo the
            // last choice and try the next candidate after it.
            let Some((call, previous)) = stack.pop() else {
                return Err(CheckError::NotLinearizable { longest });
            };
            let op_index = list[call].op;
            linearized[op_index / 64] &= !(1 << (op_index % 64));
            state = previous;
            unlift(&mut list, call);
            entry = list[call].next;
        }
    }
    Ok(())
}

/// The history with unobserved values folded into one stand-in, and
/// unknown operations that then have no effect left out (see the module
/// docs); with, for each operation kept, its index in `ops`.
fn reduce(ops: &[KeyOp], initial: KeyState) -> (Vec<KeyOp>, Vec<usize>) {
    // Values an operation with an outcome compares the state with.
    let mut observed: BTreeSet<u64> = initial.into_iter().collect();
    for op in ops {
        match (op.input, op.ret) {
            (_, Some((_, KvOutput::Get(Some(value))))) => {
                observed.insert(value);
            }
            (
                KvInput::Cas {
                    expected: Some(value),
                    ..
                },
                Some(_),
            ) => {
                observed.insert(value);
            }
            _ => {}
        }
    }
    // An unknown CAS that may write an observed value compares with its
    // expected value for real: that one is observed too (to a fixpoint).
    loop {
        let before = observed.len();
        for op in ops.iter().filter(|op| op.ret.is_none()) {
            if let KvInput::Cas {
                expected: Some(expected),
                new,
                ..
            } = op.input
            {
                if observed.contains(&new) {
                    observed.insert(expected);
                }
            }
        }
        if observed.len() == before {
            break;
        }
    }
    // There are fewer observed values than u64s, so one is free.
    let stand_in = (0..=u64::MAX)
        .rev()
        .find(|value| !observed.contains(value))
        .expect("fewer observed values than u64s");
    let fold = |value: u64| {
        if observed.contains(&value) {
            value
        } else {
            stand_in
        }
    };
    let mut reduced = Vec::with_capacity(ops.len());
    let mut origin = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let input = match op.input {
            KvInput::Put { key, value } => KvInput::Put {
                key,
                value: fold(value),
            },
            KvInput::Cas {
                expected: Some(expected),
                ..
            } if op.ret.is_none() && !observed.contains(&expected) => {
                // Swaps one unobserved value for another (its new value is
                // unobserved, by the fixpoint): no effect once folded.
                continue;
            }
            KvInput::Cas { key, expected, new } => KvInput::Cas {
                key,
                expected,
                new: fold(new),
            },
            get @ KvInput::Get { .. } => get,
        };
        reduced.push(KeyOp { input, ..*op });
        origin.push(i);
    }
    (reduced, origin)
}

/// For each operation with an unknown outcome, the latest-called earlier
/// operation with an unknown outcome and the same input, if any.
fn earlier_twins(ops: &[KeyOp]) -> Vec<Option<usize>> {
    let mut unknown: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].ret.is_none()).collect();
    unknown.sort_unstable_by_key(|&i| ops[i].call);
    let mut last_of_kind: HashMap<KvInput, usize> = HashMap::new();
    let mut twins = vec![None; ops.len()];
    for i in unknown {
        twins[i] = last_of_kind.insert(ops[i].input, i);
    }
    twins
}

/// Removes a call and its return from the list (they keep their links).
fn lift(list: &mut [Node], call: usize) {
    let ret = list[call].matching;
    let (p, n) = (list[call].prev, list[call].next);
    list[p].next = n;
    list[n].prev = p;
    let (p, n) = (list[ret].prev, list[ret].next);
    list[p].next = n;
    list[n].prev = p;
}

/// Puts back what [`lift`] removed, in reverse order.
fn unlift(list: &mut [Node], call: usize) {
    let ret = list[call].matching;
    let (p, n) = (list[ret].prev, list[ret].next);
    list[p].next = ret;
    list[n].prev = ret;
    let (p, n) = (list[call].prev, list[call].next);
    list[p].next = call;
    list[n].prev = call;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stamp at `time`, first among the events at that time.
    fn at(time: u64) -> Stamp {
        Stamp::new(time, 0)
    }
    fn put(value: u64, call: u64, ret: u64) -> KeyOp {
        KeyOp {
            input: KvInput::Put { key: 0, value },
            call: at(call),
            ret: Some((at(ret), KvOutput::Put)),
        }
    }
    fn put_unknown(value: u64, call: u64) -> KeyOp {
        KeyOp {
            input: KvInput::Put { key: 0, value },
            call: at(call),
            ret: None,
        }
    }
    fn get(value: Option<u64>, call: u64, ret: u64) -> KeyOp {
        KeyOp {
            input: KvInput::Get { key: 0 },
            call: at(call),
            ret: Some((at(ret), KvOutput::Get(value))),
        }
    }
    fn cas(expected: Option<u64>, new: u64, ok: bool, call: u64, ret: u64) -> KeyOp {
        KeyOp {
            input: KvInput::Cas {
                key: 0,
                expected,
                new,
            },
            call: at(call),
            ret: Some((at(ret), KvOutput::Cas(ok))),
        }
    }

    fn linearizable(ops: &[KeyOp]) -> bool {
        match check(ops, None) {
            Ok(()) => true,
            Err(CheckError::NotLinearizable { .. }) => false,
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn empty_and_sequential_histories_pass() {
        assert!(linearizable(&[]));
        assert!(linearizable(&[
            get(None, 0, 1),
            put(1, 2, 3),
            get(Some(1), 4, 5),
            cas(Some(1), 2, true, 6, 7),
            cas(Some(1), 3, false, 8, 9),
            get(Some(2), 10, 11),
        ]));
    }

    #[test]
    fn a_read_of_a_value_not_yet_written_fails() {
        assert!(!linearizable(&[get(Some(1), 0, 1), put(1, 2, 3)]));
    }

    #[test]
    fn a_stale_read_after_a_completed_write_fails() {
        assert!(!linearizable(&[
            put(1, 0, 1),
            put(2, 2, 3),
            get(Some(1), 4, 5)
        ]));
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // The get overlaps both puts: it may see either value.
        assert!(linearizable(&[
            put(1, 0, 10),
            put(2, 1, 9),
            get(Some(1), 2, 11)
        ]));
        assert!(linearizable(&[
            put(1, 0, 10),
            put(2, 1, 9),
            get(Some(2), 2, 11)
        ]));
        // But two reads in sequence cannot see the values go back.
        assert!(!linearizable(&[
            put(1, 0, 10),
            put(2, 1, 9),
            get(Some(1), 11, 12),
            get(Some(2), 13, 14),
            get(Some(1), 15, 16),
        ]));
    }

    #[test]
    fn a_clients_next_call_at_the_time_of_its_last_return_follows_it() {
        // One client: its put returns at time 5 (event 1 of that time) and
        // its get is called at time 5 (event 2). The get follows the put,
        // so it cannot read the value from before it. (Ordering by time
        // alone took the two as concurrent and passed this history.)
        let put_then_get = [
            KeyOp {
                ret: Some((Stamp::new(5, 1), KvOutput::Put)),
                ..put(1, 0, 0)
            },
            KeyOp {
                call: Stamp::new(5, 2),
                ..get(None, 0, 6)
            },
        ];
        assert!(!linearizable(&put_then_get));
        // Another client's get called at time 5 before the return (event
        // 0) overlaps the put: it may read the old value.
        let overlapping = [
            put_then_get[0],
            KeyOp {
                call: Stamp::new(5, 0),
                ..put_then_get[1]
            },
        ];
        assert!(linearizable(&overlapping));
    }

    #[test]
    #[should_panic(expected = "share the stamp")]
    fn two_events_with_one_stamp_are_refused() {
        let _ = check(&[put(1, 0, 5), get(None, 5, 6)], None);
    }

    #[test]
    fn cas_outputs_must_match_the_state() {
        assert!(!linearizable(&[put(1, 0, 1), cas(Some(1), 2, false, 2, 3)]));
        assert!(!linearizable(&[cas(Some(1), 2, true, 0, 1)]));
        // Two successful CASes from the same value cannot both happen.
        assert!(!linearizable(&[
            put(1, 0, 1),
            cas(Some(1), 2, true, 2, 10),
            cas(Some(1), 3, true, 3, 11),
        ]));
        assert!(linearizable(&[
            put(1, 0, 1),
            cas(Some(1), 2, true, 2, 10),
            cas(Some(1), 3, false, 3, 11),
        ]));
    }

    #[test]
    fn an_unknown_write_may_take_effect_late_or_never() {
        // Seen long after the writer gave up.
        assert!(linearizable(&[
            put(1, 0, 1),
            put_unknown(2, 2),
            get(Some(1), 10, 11),
            get(Some(2), 20, 21),
        ]));
        // Never seen.
        assert!(linearizable(&[
            put(1, 0, 1),
            put_unknown(2, 2),
            get(Some(1), 20, 21)
        ]));
        // But not before it was invoked, and not undone once seen.
        assert!(!linearizable(&[get(Some(2), 0, 1), put_unknown(2, 2)]));
        assert!(!linearizable(&[
            put(1, 0, 1),
            put_unknown(2, 2),
            get(Some(2), 10, 11),
            get(Some(1), 20, 21),
        ]));
    }

    #[test]
    fn an_unobserved_unknown_write_still_explains_a_failed_cas() {
        // Nobody reads 5, yet the CAS failing needs some write between the
        // put of 1 and the CAS: folding 5 into the stand-in keeps that.
        assert!(linearizable(&[
            put(1, 0, 1),
            put_unknown(5, 2),
            cas(Some(1), 2, false, 3, 4),
        ]));
        assert!(!linearizable(&[put(1, 0, 1), cas(Some(1), 2, false, 3, 4)]));
        // And it cannot be read as a value it did not write.
        assert!(!linearizable(&[
            put(1, 0, 1),
            put_unknown(5, 2),
            get(Some(6), 3, 4),
        ]));
    }

    #[test]
    fn an_unknown_cas_that_wrote_an_observed_value_needs_its_expected_one() {
        let unknown_cas = |expected, new, call| KeyOp {
            input: KvInput::Cas {
                key: 0,
                expected: Some(expected),
                new,
            },
            call: at(call),
            ret: None,
        };
        // 7 is read: the CAS from 5 happened, after the unknown put of 5.
        assert!(linearizable(&[
            put(1, 0, 1),
            put_unknown(5, 2),
            unknown_cas(5, 7, 3),
            get(Some(7), 4, 5),
        ]));
        // Nobody reads 5 or 6, but the CAS needs 5 and only 6 was written:
        // folding 5 and 6 into one stand-in would pass this.
        assert!(!linearizable(&[
            put(1, 0, 1),
            put_unknown(6, 2),
            unknown_cas(5, 7, 3),
            get(Some(7), 4, 5),
        ]));
        // A chain of unknown CASes nobody observes changes nothing.
        let mut ops = vec![put(1, 0, 1)];
        for i in 0..40 {
            ops.push(unknown_cas(100 + i, 101 + i, 2 + i));
        }
        ops.push(get(Some(1), 100, 101));
        assert_eq!(check_with_cap(&ops, None, 100), Ok(()));
    }

    #[test]
    fn an_unknown_cas_may_have_swapped() {
        let unknown_cas = KeyOp {
            input: KvInput::Cas {
                key: 0,
                expected: Some(1),
                new: 7,
            },
            call: at(2),
            ret: None,
        };
        assert!(linearizable(&[
            put(1, 0, 1),
            unknown_cas,
            get(Some(7), 5, 6)
        ]));
        assert!(linearizable(&[
            put(1, 0, 1),
            unknown_cas,
            get(Some(1), 5, 6)
        ]));
        // It can only swap from 1: after a put of 3 it cannot produce 7.
        assert!(!linearizable(&[
            put(1, 0, 1),
            get(Some(1), 2, 3),
            put(3, 4, 5),
            KeyOp {
                call: at(6),
                ..unknown_cas
            },
            get(Some(7), 8, 9),
        ]));
    }

    #[test]
    fn a_large_concurrent_history_is_checked_quickly() {
        // 12 overlapping puts, then reads: memoization keeps the failing
        // search to (subset, last value) pairs, not 12! orders.
        let mut ops: Vec<KeyOp> = (0..12).map(|v| put(v, v, 100 + v)).collect();
        ops.push(get(Some(11), 200, 201));
        ops.push(get(Some(11), 202, 203));
        assert!(linearizable(&ops));
        ops.push(get(Some(3), 204, 205));
        assert!(!linearizable(&ops));
    }

    /// 40 writes whose clients gave up, none of them read, among reads
    /// that keep seeing the one completed write and a failed CAS that
    /// needs one of them to have happened.
    fn many_unknown_writes(last_read: Option<u64>) -> Vec<KeyOp> {
        let mut ops = vec![put(1, 0, 1)];
        for i in 0..40 {
            ops.push(put_unknown(100 + i, 10 + 4 * i));
            ops.push(get(Some(1), 11 + 4 * i, 12 + 4 * i));
        }
        ops.push(cas(Some(1), 9, false, 500, 501));
        ops.push(get(last_read, 502, 503));
        ops
    }

    #[test]
    fn many_unknown_writes_are_checked_within_a_small_cap() {
        // Without folding twins, every subset of the 40 is a configuration
        // to visit; with it, at most 41 of them.
        let cap = 10_000;
        assert_eq!(
            check_with_cap(&many_unknown_writes(Some(107)), None, cap),
            Ok(())
        );
        // The read after the failed CAS can see any of the 40, but not a
        // value nobody wrote.
        assert!(matches!(
            check_with_cap(&many_unknown_writes(Some(99)), None, cap),
            Err(CheckError::NotLinearizable { .. })
        ));
        // And not the value the CAS failed to replace, nor nothing.
        assert!(matches!(
            check_with_cap(&many_unknown_writes(None), None, cap),
            Err(CheckError::NotLinearizable { .. })
        ));
    }

    #[test]
    fn a_search_over_its_cap_gives_up() {
        assert_eq!(
            check_with_cap(&many_unknown_writes(Some(107)), None, 3),
            Err(CheckError::GaveUp(3))
        );
    }
}
