//! The store against a deliberately dumb model: a `Vec` holding the whole
//! key-value map at every revision, with etcd's rules written the plainest
//! way. Random sequences of puts, deletes, txns (nested one deep),
//! compactions and reads
//! at random revisions must give identical answers, and at the end every
//! revision not compacted must read the same in both. The same runs drive
//! the layered store (the service's), flushing at random points.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use rafter::LogId;
use rafter_redb::RedbStateMachineStore;

use super::request::*;
use super::tests::Kv;
use super::{KvError, LayeredStore};

type State = BTreeMap<Vec<u8>, KeyValue>;

/// Every state, `states[r - 1]` being the map at revision `r`.
struct Model {
    states: Vec<State>,
    compact: i64,
}

fn in_span(k: &[u8], key: &[u8], range_end: &[u8]) -> bool {
    if range_end.is_empty() {
        k == key
    } else if range_end == [0] {
        k >= key
    } else {
        k >= key && k < range_end
    }
}

impl Model {
    fn new() -> Self {
        Self {
            states: vec![State::new()],
            compact: 0,
        }
    }

    fn current(&self) -> i64 {
        self.states.len() as i64
    }

    fn state(&self) -> &State {
        self.states.last().unwrap()
    }

    /// Range over `state` (the state at `at`), the current revision being
    /// `header`.
    fn range_in(&self, state: &State, header: i64, r: &RangeRequest) -> RangeResponse {
        let mut kvs: Vec<KeyValue> = state
            .values()
            .filter(|kv| in_span(&kv.key, &r.key, &r.range_end))
            .cloned()
            .collect();
        let count = kvs.len() as i64;
        if r.count_only {
            return RangeResponse {
                revision: header,
                kvs: vec![],
                more: false,
                count,
            };
        }
        kvs.retain(|kv| {
            (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
                && (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
                && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
                && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
        });
        let mut order = r.sort_order;
        if order == SortOrder::None && r.sort_target != SortTarget::Key {
            order = SortOrder::Ascend;
        }
        let field = |kv: &KeyValue| -> (Vec<u8>, i64) {
            match r.sort_target {
                SortTarget::Key => (kv.key.clone(), 0),
                SortTarget::Value => (kv.value.clone(), 0),
                SortTarget::Version => (vec![], kv.version),
                SortTarget::Create => (vec![], kv.create_revision),
                SortTarget::Mod => (vec![], kv.mod_revision),
            }
        };
        match order {
            SortOrder::None => {}
            SortOrder::Ascend => kvs.sort_by_key(field),
            SortOrder::Descend => kvs.sort_by_key(|kv| std::cmp::Reverse(field(kv))),
        }
        let more = r.limit > 0 && kvs.len() as i64 > r.limit;
        if more {
            kvs.truncate(r.limit as usize);
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        RangeResponse {
            revision: header,
            kvs,
            more,
            count,
        }
    }

    fn range(&self, r: &RangeRequest) -> Result<RangeResponse, KvError> {
        if r.revision > self.current() {
            return Err(KvError::FutureRevision);
        }
        let at = if r.revision <= 0 {
            self.current()
        } else {
            r.revision
        };
        if at < self.compact {
            return Err(KvError::Compacted);
        }
        Ok(self.range_in(&self.states[at as usize - 1], self.current(), r))
    }

    fn put_into(state: &mut State, p: &PutRequest, rev: i64) -> PutResponse {
        let old = state.get(&p.key).cloned();
        let value = if p.ignore_value {
            old.as_ref().unwrap().value.clone()
        } else {
            p.value.clone()
        };
        let (create, version) = match &old {
            Some(o) => (o.create_revision, o.version + 1),
            None => (rev, 1),
        };
        state.insert(
            p.key.clone(),
            KeyValue {
                key: p.key.clone(),
                create_revision: create,
                mod_revision: rev,
                version,
                value,
            },
        );
        PutResponse {
            revision: rev,
            prev_kv: old.filter(|_| p.prev_kv),
        }
    }

    fn delete_from(state: &mut State, d: &DeleteRangeRequest) -> Vec<KeyValue> {
        let gone: Vec<KeyValue> = state
            .values()
            .filter(|kv| in_span(&kv.key, &d.key, &d.range_end))
            .cloned()
            .collect();
        for kv in &gone {
            state.remove(&kv.key);
        }
        gone
    }

    fn compare(&self, c: &Compare) -> bool {
        let kvs: Vec<&KeyValue> = self
            .state()
            .values()
            .filter(|kv| in_span(&kv.key, &c.key, &c.range_end))
            .collect();
        let zero = KeyValue::default();
        let kvs = if kvs.is_empty() {
            if matches!(c.target, CompareTarget::Value(_)) {
                return false;
            }
            vec![&zero]
        } else {
            kvs
        };
        kvs.iter().all(|kv| {
            let ord = match &c.target {
                CompareTarget::Version(v) => kv.version.cmp(v),
                CompareTarget::Create(v) => kv.create_revision.cmp(v),
                CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
                CompareTarget::Value(v) => kv.value.cmp(v),
            };
            match c.result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => ord.is_ne(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
            }
        })
    }

    fn commit(&mut self, state: State, changed: bool) {
        if changed {
            self.states.push(state);
        }
    }

    /// Whether any put, in any branch, has `ignore_value` and a value.
    fn value_provided(t: &TxnRequest) -> bool {
        t.success.iter().chain(&t.failure).any(|op| match op {
            RequestOp::Put(p) => p.ignore_value && !p.value.is_empty(),
            RequestOp::Txn(nested) => Self::value_provided(nested),
            _ => false,
        })
    }

    /// etcd's `checkIntervals`, with `Vec`s: the puts and delete ranges of
    /// a branch, or `DuplicateKey`.
    #[allow(clippy::type_complexity)]
    fn intervals(ops: &[RequestOp]) -> Result<(Vec<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>), KvError> {
        let mut deletes: Vec<(Vec<u8>, Vec<u8>)> = vec![];
        for op in ops {
            if let RequestOp::DeleteRange(d) = op {
                deletes.push((d.key.clone(), d.range_end.clone()));
            }
        }
        // A delete to the end (`\0`) spans nothing, as in etcd 3.4.
        let hit = |deletes: &[(Vec<u8>, Vec<u8>)], k: &[u8]| {
            deletes
                .iter()
                .any(|(key, end)| end.as_slice() != [0] && in_span(k, key, end))
        };
        let mut puts: Vec<Vec<u8>> = vec![];
        for op in ops {
            if let RequestOp::Txn(t) = op {
                let (puts_then, deletes_then) = Self::intervals(&t.success)?;
                let (puts_else, deletes_else) = Self::intervals(&t.failure)?;
                for k in &puts_then {
                    if puts.contains(k) || hit(&deletes, k) {
                        return Err(KvError::DuplicateKey);
                    }
                }
                puts.extend(puts_then.iter().cloned());
                for k in puts_else {
                    if puts.contains(&k) && !puts_then.contains(&k) || hit(&deletes, &k) {
                        return Err(KvError::DuplicateKey);
                    }
                    puts.push(k);
                }
                deletes.extend(deletes_then);
                deletes.extend(deletes_else);
            }
        }
        for op in ops {
            if let RequestOp::Put(p) = op {
                if puts.contains(&p.key) || hit(&deletes, &p.key) {
                    return Err(KvError::DuplicateKey);
                }
                puts.push(p.key.clone());
            }
        }
        Ok((puts, deletes))
    }

    /// The ops a txn runs, nested ones included; every compare against the
    /// state before the txn.
    fn path_ops<'r>(&self, t: &'r TxnRequest, out: &mut Vec<&'r RequestOp>) {
        let ops = if t.compare.iter().all(|c| self.compare(c)) {
            &t.success
        } else {
            &t.failure
        };
        for op in ops {
            out.push(op);
            if let RequestOp::Txn(nested) = op {
                self.path_ops(nested, out);
            }
        }
    }

    /// Runs a checked txn on `state`, the working copy.
    fn run(&self, t: &TxnRequest, state: &mut State, changed: &mut bool) -> TxnResponse {
        let cur = self.current();
        let succeeded = t.compare.iter().all(|c| self.compare(c));
        let ops = if succeeded { &t.success } else { &t.failure };
        let mut responses = vec![];
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => {
                    let header = if *changed { cur + 1 } else { cur };
                    let at = if r.revision <= 0 { header } else { r.revision };
                    let view = if at == header && *changed {
                        &*state
                    } else {
                        &self.states[at as usize - 1]
                    };
                    ResponseOp::Range(self.range_in(view, header, r))
                }
                RequestOp::Put(p) => {
                    *changed = true;
                    ResponseOp::Put(Self::put_into(state, p, cur + 1))
                }
                RequestOp::DeleteRange(d) => {
                    let gone = Self::delete_from(state, d);
                    *changed |= !gone.is_empty();
                    ResponseOp::DeleteRange(DeleteRangeResponse {
                        revision: if *changed { cur + 1 } else { cur },
                        deleted: gone.len() as i64,
                        prev_kvs: if d.prev_kv { gone } else { vec![] },
                    })
                }
                RequestOp::Txn(nested) => ResponseOp::Txn(self.run(nested, state, changed)),
            });
        }
        TxnResponse {
            succeeded,
            responses,
        }
    }

    fn apply(&mut self, request: &WriteRequest) -> Result<(i64, WriteResponse), KvError> {
        let cur = self.current();
        let mut state = self.state().clone();
        let response = match request {
            WriteRequest::Put(p) => {
                if p.ignore_value && !p.value.is_empty() {
                    return Err(KvError::ValueProvided);
                }
                if p.ignore_value && !state.contains_key(&p.key) {
                    return Err(KvError::KeyNotFound);
                }
                let r = Self::put_into(&mut state, p, cur + 1);
                self.commit(state, true);
                WriteResponse::Put(r)
            }
            WriteRequest::DeleteRange(d) => {
                let gone = Self::delete_from(&mut state, d);
                let changed = !gone.is_empty();
                self.commit(state, changed);
                WriteResponse::DeleteRange(DeleteRangeResponse {
                    revision: self.current(),
                    deleted: gone.len() as i64,
                    prev_kvs: if d.prev_kv { gone } else { vec![] },
                })
            }
            WriteRequest::Compaction(c) => {
                if c.revision > cur {
                    return Err(KvError::FutureRevision);
                }
                if c.revision <= self.compact {
                    return Err(KvError::Compacted);
                }
                self.compact = c.revision;
                WriteResponse::Compaction(CompactionResponse {})
            }
            WriteRequest::Txn(t) => {
                if Self::value_provided(t) {
                    return Err(KvError::ValueProvided);
                }
                Self::intervals(&t.success)?;
                Self::intervals(&t.failure)?;
                let mut path = vec![];
                self.path_ops(t, &mut path);
                let mut deleted: Vec<&DeleteRangeRequest> = vec![];
                for op in &path {
                    match op {
                        RequestOp::DeleteRange(d) => deleted.push(d),
                        RequestOp::Put(p) if p.ignore_value => {
                            let gone = deleted.iter().any(|d| {
                                let end = &d.range_end;
                                if end.is_empty() {
                                    p.key == d.key
                                } else if end.as_slice() == [0] {
                                    p.key >= d.key
                                } else {
                                    p.key >= d.key && p.key < *end
                                }
                            });
                            if gone || !state.contains_key(&p.key) {
                                return Err(KvError::KeyNotFound);
                            }
                        }
                        _ => {}
                    }
                }
                for op in &path {
                    if let RequestOp::Range(r) = op {
                        if r.revision > cur {
                            return Err(KvError::FutureRevision);
                        }
                        let first = if self.compact > 0 { self.compact } else { -1 };
                        if r.revision != 0 && r.revision < first {
                            return Err(KvError::Compacted);
                        }
                    }
                }
                let mut changed = false;
                let response = self.run(t, &mut state, &mut changed);
                self.commit(state, changed);
                WriteResponse::Txn(response)
            }
        };
        Ok((self.current(), response))
    }
}

/// A request before its revisions are known: `rev` picks map onto
/// `-1 ..= current + 1` when the step runs.
#[derive(Debug, Clone)]
enum Step {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn {
        compare: Vec<Compare>,
        success: Vec<AbstractOp>,
        failure: Vec<AbstractOp>,
    },
    Compact(u8),
    Range(RangeRequest, u8),
}

#[derive(Debug, Clone)]
enum AbstractOp {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Range(RangeRequest, u8),
    Txn {
        compare: Vec<Compare>,
        success: Vec<AbstractOp>,
        failure: Vec<AbstractOp>,
    },
}

fn pick_revision(pick: u8, current: i64) -> i64 {
    i64::from(pick) % (current + 3) - 1
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec!["a", "b", "c", "d", "e"]).prop_map(|k| k.as_bytes().to_vec()),
        prop::sample::select(vec!["ab", "ba", "c\0"]).prop_map(|k| k.as_bytes().to_vec()),
    ]
}

fn range_end() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(vec![]),
        1 => Just(vec![0]),
        2 => key(),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec!["", "x", "y", "zz"]).prop_map(|v| v.as_bytes().to_vec())
}

fn put_request() -> impl Strategy<Value = PutRequest> {
    (key(), value(), any::<bool>(), prop::bool::weighted(0.2)).prop_map(
        |(key, value, prev_kv, ignore_value)| PutRequest {
            key,
            value,
            prev_kv,
            ignore_value,
        },
    )
}

fn delete_request() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), range_end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn range_request() -> impl Strategy<Value = RangeRequest> {
    let sort_order =
        prop::sample::select(vec![SortOrder::None, SortOrder::Ascend, SortOrder::Descend]);
    let sort_target = prop::sample::select(vec![
        SortTarget::Key,
        SortTarget::Version,
        SortTarget::Create,
        SortTarget::Mod,
        SortTarget::Value,
    ]);
    let filter = prop_oneof![3 => Just(0i64), 1 => 1i64..10];
    (
        (key(), range_end(), 0i64..4, sort_order, sort_target),
        (
            any::<bool>(),
            prop::bool::weighted(0.2),
            filter.clone(),
            filter.clone(),
            filter.clone(),
            filter,
        ),
    )
        .prop_map(
            |(
                (key, range_end, limit, sort_order, sort_target),
                (keys_only, count_only, a, b, c, d),
            )| {
                RangeRequest {
                    key,
                    range_end,
                    limit,
                    revision: 0,
                    sort_order,
                    sort_target,
                    keys_only,
                    count_only,
                    min_mod_revision: a,
                    max_mod_revision: b,
                    min_create_revision: c,
                    max_create_revision: d,
                }
            },
        )
}

fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        (0i64..4).prop_map(CompareTarget::Version),
        (0i64..10).prop_map(CompareTarget::Create),
        (0i64..10).prop_map(CompareTarget::Mod),
        value().prop_map(CompareTarget::Value),
    ];
    let result = prop::sample::select(vec![
        CompareResult::Equal,
        CompareResult::Greater,
        CompareResult::Less,
        CompareResult::NotEqual,
    ]);
    (
        key(),
        prop_oneof![3 => Just(vec![]), 1 => range_end()],
        target,
        result,
    )
        .prop_map(|(key, range_end, target, result)| Compare {
            key,
            range_end,
            target,
            result,
        })
}

fn flat_op() -> impl Strategy<Value = AbstractOp> {
    prop_oneof![
        put_request().prop_map(AbstractOp::Put),
        delete_request().prop_map(AbstractOp::Delete),
        (range_request(), any::<u8>()).prop_map(|(r, pick)| AbstractOp::Range(r, pick)),
    ]
}

/// A flat op or, now and then, a nested txn of flat ops.
fn abstract_op() -> impl Strategy<Value = AbstractOp> {
    prop_oneof![
        6 => flat_op(),
        1 => (
            prop::collection::vec(compare(), 0..2),
            prop::collection::vec(flat_op(), 0..3),
            prop::collection::vec(flat_op(), 0..2),
        )
            .prop_map(|(compare, success, failure)| AbstractOp::Txn {
                compare,
                success,
                failure,
            }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => put_request().prop_map(Step::Put),
        2 => delete_request().prop_map(Step::Delete),
        3 => (
            prop::collection::vec(compare(), 0..3),
            prop::collection::vec(abstract_op(), 0..4),
            prop::collection::vec(abstract_op(), 0..3),
        )
            .prop_map(|(compare, success, failure)| Step::Txn {
                compare,
                success,
                failure,
            }),
        1 => any::<u8>().prop_map(Step::Compact),
        3 => (range_request(), any::<u8>()).prop_map(|(r, pick)| Step::Range(r, pick)),
    ]
}

fn concrete(op: &AbstractOp, current: i64) -> RequestOp {
    match op {
        AbstractOp::Put(p) => RequestOp::Put(p.clone()),
        AbstractOp::Delete(d) => RequestOp::DeleteRange(d.clone()),
        AbstractOp::Range(r, pick) => RequestOp::Range(RangeRequest {
            revision: pick_revision(*pick, current),
            ..r.clone()
        }),
        AbstractOp::Txn {
            compare,
            success,
            failure,
        } => RequestOp::Txn(TxnRequest {
            compare: compare.clone(),
            success: success.iter().map(|o| concrete(o, current)).collect(),
            failure: failure.iter().map(|o| concrete(o, current)).collect(),
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_store_answers_like_the_model(steps in prop::collection::vec(step(), 1..40)) {
        let store = Kv::new();
        let mut model = Model::new();
        for step in &steps {
            let current = model.current();
            match step {
                Step::Range(r, pick) => {
                    let r = RangeRequest { revision: pick_revision(*pick, current), ..r.clone() };
                    prop_assert_eq!(store.range(&r), model.range(&r), "{:?}", r);
                }
                other => {
                    let request = match other {
                        Step::Put(p) => WriteRequest::Put(p.clone()),
                        Step::Delete(d) => WriteRequest::DeleteRange(d.clone()),
                        Step::Compact(pick) => WriteRequest::Compaction(CompactionRequest {
                            revision: pick_revision(*pick, current),
                        }),
                        Step::Txn { compare, success, failure } => WriteRequest::Txn(TxnRequest {
                            compare: compare.clone(),
                            success: success.iter().map(|o| concrete(o, current)).collect(),
                            failure: failure.iter().map(|o| concrete(o, current)).collect(),
                        }),
                        Step::Range(..) => unreachable!(),
                    };
                    prop_assert_eq!(store.apply(request.clone()), model.apply(&request), "{:?}", request);
                }
            }
        }
        // Every revision not compacted reads the same, whole key space.
        for rev in model.compact.max(1)..=model.current() {
            let r = RangeRequest { revision: rev, ..super::tests::range("\0", "\0") };
            prop_assert_eq!(store.range(&r), model.range(&r), "revision {}", rev);
        }
        // And so does the same store written in the previous layout, once
        // upgraded (the upgrade checks the invariants).
        super::upgrade::tests::downgrade(&store);
        super::upgrade::tests::open_writer(&store).unwrap();
        for rev in model.compact.max(1)..=model.current() {
            let r = RangeRequest { revision: rev, ..super::tests::range("\0", "\0") };
            prop_assert_eq!(store.range(&r), model.range(&r), "upgraded, revision {}", rev);
        }
    }
}

/// The layered store, each request its own apply batch; after each, by
/// `flush % 4`: nothing, a background flush, a flush that waits, nothing.
struct Layered {
    dir: tempfile::TempDir,
    store: Option<LayeredStore>,
    index: u64,
}

impl Layered {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut layered = Self {
            dir,
            store: None,
            index: 0,
        };
        layered.reopen();
        layered
    }

    /// Drops the store, losing what was not flushed, and opens it again.
    fn reopen(&mut self) {
        self.store = None;
        let db = RedbStateMachineStore::open(self.dir.path()).unwrap();
        let store = LayeredStore::open(Arc::new(db)).unwrap();
        self.index = store.applied().index;
        self.store = Some(store);
    }

    fn store(&mut self) -> &mut LayeredStore {
        self.store.as_mut().unwrap()
    }

    fn apply(
        &mut self,
        request: &WriteRequest,
        flush: u8,
    ) -> Result<(i64, WriteResponse), KvError> {
        self.index += 1;
        let index = self.index;
        let mut batch = self.store().batch(index);
        let answer = batch.apply(request).unwrap();
        batch.finish(LogId { term: 1, index });
        match flush % 4 {
            1 => {
                self.store().flush_in_background().unwrap();
            }
            2 => self.store().flush().unwrap(),
            _ => {}
        }
        answer
    }

    fn range(&mut self, r: &RangeRequest) -> Result<RangeResponse, KvError> {
        self.store().view().range(r).unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_layered_store_answers_like_the_model(
        steps in prop::collection::vec((step(), any::<u8>()), 1..40)
    ) {
        let mut store = Layered::new();
        let mut model = Model::new();
        let whole = |rev| RangeRequest { revision: rev, ..super::tests::range("\0", "\0") };
        // Views readers hold across later batches (by bit 4 of the byte):
        // each must go on answering what it answered, and while held it
        // keeps later batches from moving into its layers in place.
        let mut held = Vec::new();
        for (step, flush) in &steps {
            let current = model.current();
            if flush & 0x10 != 0 {
                held.push((store.store().view(), model.range(&whole(current))));
            }
            match step {
                Step::Range(r, pick) => {
                    let r = RangeRequest { revision: pick_revision(*pick, current), ..r.clone() };
                    prop_assert_eq!(store.range(&r), model.range(&r), "{:?}", r);
                }
                other => {
                    let request = match other {
                        Step::Put(p) => WriteRequest::Put(p.clone()),
                        Step::Delete(d) => WriteRequest::DeleteRange(d.clone()),
                        Step::Compact(pick) => WriteRequest::Compaction(CompactionRequest {
                            revision: pick_revision(*pick, current),
                        }),
                        Step::Txn { compare, success, failure } => WriteRequest::Txn(TxnRequest {
                            compare: compare.clone(),
                            success: success.iter().map(|o| concrete(o, current)).collect(),
                            failure: failure.iter().map(|o| concrete(o, current)).collect(),
                        }),
                        Step::Range(..) => unreachable!(),
                    };
                    prop_assert_eq!(store.apply(&request, *flush), model.apply(&request), "{:?}", request);
                }
            }
        }
        for (view, answer) in &held {
            prop_assert_eq!(&view.range(&whole(0)).unwrap(), answer);
        }
        drop(held);
        // In memory and redb together, then all in redb, then after a
        // restart: every revision not compacted reads the same.
        for rev in model.compact.max(1)..=model.current() {
            prop_assert_eq!(store.range(&whole(rev)), model.range(&whole(rev)), "revision {}", rev);
        }
        let reader = store.store().view();
        prop_assert_eq!((reader.revision(), reader.compact_revision()), (model.current(), model.compact));
        store.store().check_invariants().unwrap();
        for rev in model.compact.max(1)..=model.current() {
            prop_assert_eq!(store.range(&whole(rev)), model.range(&whole(rev)), "revision {}", rev);
        }
        store.reopen();
        prop_assert_eq!(store.index as usize, steps.iter().filter(|(s, _)| !matches!(s, Step::Range(..))).count());
        let reader = store.store().view();
        prop_assert_eq!((reader.revision(), reader.compact_revision()), (model.current(), model.compact));
        for rev in model.compact.max(1)..=model.current() {
            prop_assert_eq!(store.range(&whole(rev)), model.range(&whole(rev)), "revision {}", rev);
        }
    }
}
