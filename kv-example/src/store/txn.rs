//! The rules a txn is checked against before anything runs, and its compare
//! evaluation. Mirrors etcd 3.4: `checkTxnRequest` and `checkIntervals`
//! (`etcdserver/api/v3rpc/key.go`), then `compareToPath`, `applyCompare`,
//! `checkRequestPut` and `checkRequestRange` (`etcdserver/apply.go`), all of
//! which look at the state before the txn. Because every rule that can fail
//! is checked here first, executing the chosen branch cannot fail on a
//! request's content, which is how a failed txn changes nothing.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use super::error::{KvError, StoreError};
use super::range::KeySpan;
use super::request::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, RequestOp, TxnRequest,
};
use super::source::{live_value, Source};

/// etcd's default `--max-txn-ops`: compares, and ops of each branch (nested
/// txns share what is left). Over it: [`KvError::TooManyOps`].
pub const TXN_OPS_MAX: usize = 128;

/// Checks a txn's shape (etcd's `checkTxnRequest` with `TXN_OPS_MAX`, then
/// `checkIntervals` on each branch).
pub(crate) fn check_txn(request: &TxnRequest) -> Result<(), KvError> {
    check_shape(request, TXN_OPS_MAX)?;
    check_intervals(&request.success)?;
    check_intervals(&request.failure)?;
    Ok(())
}

fn check_shape(request: &TxnRequest, ops_max: usize) -> Result<(), KvError> {
    let ops = request
        .compare
        .len()
        .max(request.success.len())
        .max(request.failure.len());
    if ops > ops_max {
        return Err(KvError::TooManyOps);
    }
    if request.compare.iter().any(|c| c.key.is_empty()) {
        return Err(KvError::EmptyKey);
    }
    for op in request.success.iter().chain(&request.failure) {
        match op {
            RequestOp::Range(r) if r.key.is_empty() => return Err(KvError::EmptyKey),
            RequestOp::Put(p) => check_put(&p.key, &p.value, p.ignore_value)?,
            RequestOp::DeleteRange(d) if d.key.is_empty() => return Err(KvError::EmptyKey),
            RequestOp::Txn(t) => check_shape(t, ops_max - ops)?,
            _ => {}
        }
    }
    Ok(())
}

/// etcd's `checkPutRequest` (lease aside).
pub(crate) fn check_put(key: &[u8], value: &[u8], ignore_value: bool) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if ignore_value && !value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if key.len() + value.len() > super::KEY_VALUE_BYTES_MAX {
        return Err(KvError::RequestTooLarge);
    }
    Ok(())
}

/// A delete's key span, owned. `end == None`: unbounded.
#[derive(Debug, Clone)]
struct DeleteSpan {
    start: Vec<u8>,
    /// Exclusive end; `None` for `range_end == [0]`; `Some(key ++ [0])` for
    /// a single key.
    end: Option<Vec<u8>>,
}

impl DeleteSpan {
    fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }
}

/// etcd's `checkIntervals`: in one branch (nested txns included), a key may
/// be put at most once and never inside a delete range. As in etcd, a put
/// in the `success` and the `failure` branch of one nested txn is fine (only
/// one runs), and a nested txn's deletes only conflict with puts checked
/// after it. As in etcd 3.4, whose interval tree compares a `[0]` range end
/// as a key rather than as "no end", a delete of every key from `key` spans
/// nothing here: such a branch is accepted and its operations run in order
/// (a put and a delete of one key at one revision leave what the later one
/// says), exactly as etcd stores them.
fn check_intervals(ops: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Vec<DeleteSpan>), KvError> {
    let mut deletes: Vec<DeleteSpan> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some(delete_span(&d.key, &d.range_end)),
            _ => None,
        })
        .flatten()
        .collect();
    let mut puts = BTreeSet::new();
    let deleted = |deletes: &[DeleteSpan], key: &[u8]| deletes.iter().any(|d| d.contains(key));
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, deletes_then) = check_intervals(&t.success)?;
        let (puts_else, deletes_else) = check_intervals(&t.failure)?;
        for key in &puts_then {
            if puts.contains(key) || deleted(&deletes, key) {
                return Err(KvError::DuplicateKey);
            }
        }
        puts.extend(puts_then.iter().cloned());
        for key in puts_else {
            if puts.contains(&key) && !puts_then.contains(&key) || deleted(&deletes, &key) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(key);
        }
        deletes.extend(deletes_then);
        deletes.extend(deletes_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || deleted(&deletes, &p.key) {
            return Err(KvError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, deletes))
}

fn delete_span(key: &[u8], range_end: &[u8]) -> Option<DeleteSpan> {
    match KeySpan::new(key, range_end) {
        KeySpan::Single(k) => Some(DeleteSpan {
            start: k.to_vec(),
            end: Some(super::tables::key_successor(k)),
        }),
        // etcd's interval is `[k, "\0")`, empty for every k (see above).
        KeySpan::From(_) => None,
        KeySpan::Between(s, e) => Some(DeleteSpan {
            start: s.to_vec(),
            end: Some(e.to_vec()),
        }),
        KeySpan::Empty => None,
    }
}

/// Which branch a txn takes, and the same for each nested txn of that
/// branch, in order: all decided against the state before the outer txn
/// (etcd's `compareToPath`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnPath {
    pub(crate) succeeded: bool,
    /// One per `RequestOp::Txn` of the chosen branch, in order.
    pub(crate) nested: Vec<TxnPath>,
}

impl TxnPath {
    pub(crate) fn branch<'r>(&self, request: &'r TxnRequest) -> &'r [RequestOp] {
        if self.succeeded {
            &request.success
        } else {
            &request.failure
        }
    }
}

/// Evaluates the compares of `request` and its nested txns.
pub(crate) fn txn_path(source: &impl Source, request: &TxnRequest) -> Result<TxnPath, StoreError> {
    let mut succeeded = true;
    for compare in &request.compare {
        if !compare_holds(source, compare)? {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded {
        &request.success
    } else {
        &request.failure
    };
    let mut nested = Vec::new();
    for op in ops {
        if let RequestOp::Txn(t) = op {
            nested.push(txn_path(source, t)?);
        }
    }
    Ok(TxnPath { succeeded, nested })
}

/// etcd's `applyCompare`: every key of the range must satisfy the compare;
/// an empty range compares a zero kv, except that a value compare fails.
fn compare_holds(source: &impl Source, compare: &Compare) -> Result<bool, StoreError> {
    let entries = source.live_range(KeySpan::new(&compare.key, &compare.range_end))?;
    if entries.is_empty() {
        return Ok(match &compare.target {
            CompareTarget::Value(_) => false,
            CompareTarget::Version(v) | CompareTarget::Create(v) | CompareTarget::Mod(v) => {
                relation_holds(0.cmp(v), compare.result)
            }
        });
    }
    for (key, entry) in &entries {
        let ordering = match &compare.target {
            CompareTarget::Version(v) => entry.version.cmp(v),
            CompareTarget::Create(v) => entry.create_revision.cmp(v),
            CompareTarget::Mod(v) => entry.mod_revision.cmp(v),
            CompareTarget::Value(v) => live_value(source, key, entry)?.as_slice().cmp(v),
        };
        if !relation_holds(ordering, compare.result) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn relation_holds(ordering: Ordering, result: CompareResult) -> bool {
    match result {
        CompareResult::Equal => ordering == Ordering::Equal,
        CompareResult::NotEqual => ordering != Ordering::Equal,
        CompareResult::Greater => ordering == Ordering::Greater,
        CompareResult::Less => ordering == Ordering::Less,
    }
}

/// etcd's `checkRequestPut`, then `checkRequestRange`, along the chosen
/// path and against the state before the txn (`current` and `compact` are
/// its revisions): an `ignore_value` put of a missing key, or a read at a
/// revision that is compacted or in the future, fails the whole txn. As in
/// etcd, every put is checked before any range, whatever the op order.
pub(crate) fn check_path(
    source: &impl Source,
    request: &TxnRequest,
    path: &TxnPath,
    current: i64,
    compact: i64,
) -> Result<Result<(), KvError>, StoreError> {
    let mut ops = Vec::new();
    path_ops(request, path, &mut ops);
    // An `ignore_value` put needs its key live when it runs: before the txn,
    // and not deleted by an earlier op of the path. (etcd 3.4 checks only
    // the first and panics on the second, when the put finds no value; a
    // delete to the end lets such a txn past its duplicate-key check.)
    let mut deleted: Vec<&DeleteRangeRequest> = Vec::new();
    for op in &ops {
        match op {
            RequestOp::DeleteRange(d) => deleted.push(d),
            RequestOp::Put(p) if p.ignore_value => {
                let gone = deleted
                    .iter()
                    .any(|d| KeySpan::new(&d.key, &d.range_end).contains(&p.key));
                if gone || source.live_get(&p.key)?.is_none() {
                    return Ok(Err(KvError::KeyNotFound));
                }
            }
            _ => {}
        }
    }
    // etcd 3.4 compares a txn read's revision with its store's first
    // revision, which is -1 until the first compaction: so a negative
    // revision (current, outside a txn) is "compacted" here once anything
    // was compacted, and below -1 always.
    let first = if compact > 0 { compact } else { -1 };
    for op in &ops {
        if let RequestOp::Range(r) = op {
            if r.revision != 0 && r.revision > current {
                return Ok(Err(KvError::FutureRevision));
            }
            if r.revision != 0 && r.revision < first {
                return Ok(Err(KvError::Compacted));
            }
        }
    }
    Ok(Ok(()))
}

/// The ops the path runs, nested txns' included, in execution order.
fn path_ops<'r>(request: &'r TxnRequest, path: &TxnPath, out: &mut Vec<&'r RequestOp>) {
    let mut nested = path.nested.iter();
    for op in path.branch(request) {
        out.push(op);
        if let RequestOp::Txn(t) = op {
            let Some(p) = nested.next() else {
                unreachable!("txn_path gives one path per nested txn of the branch")
            };
            path_ops(t, p, out);
        }
    }
}
