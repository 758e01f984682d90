//! Scenario tests of the key space's rules, one per rule, through one
//! `Kv` helper so they describe behaviour rather than the tables.

use redb::{Database, ReadableDatabase};

use super::request::*;
use super::tables::{HistoryRecord, HistoryRecordRef, StoredRecord, StoredRecordRef};
use super::*;

/// A store in a temporary redb file; every request in its own committed
/// write transaction, and the invariants checked after each.
pub(crate) struct Kv {
    _file: tempfile::NamedTempFile,
    pub(crate) db: Database,
}

impl Kv {
    pub(crate) fn new() -> Self {
        let file = tempfile::NamedTempFile::new().unwrap();
        let db = Database::create(file.path()).unwrap();
        Self { _file: file, db }
    }

    pub(crate) fn apply(&self, request: WriteRequest) -> Result<(i64, WriteResponse), KvError> {
        let mut txn = self.db.begin_write().unwrap();
        // Tests need atomicity, not durability: skip the fsyncs.
        txn.set_durability(redb::Durability::None).unwrap();
        let answer = {
            let mut w = StoreWriter::open(&txn).unwrap();
            let answer = w.apply(&request).unwrap();
            w.check_invariants().unwrap();
            w.finish().unwrap();
            answer
        };
        txn.commit().unwrap();
        answer
    }

    fn reader(&self) -> StoreReader {
        StoreReader::open(&self.db.begin_read().unwrap()).unwrap()
    }

    pub(crate) fn range(&self, request: &RangeRequest) -> Result<RangeResponse, KvError> {
        self.reader().range(request).unwrap()
    }

    fn revision(&self) -> i64 {
        self.reader().revision()
    }

    fn digest(&self) -> String {
        self.reader().digest().unwrap()
    }

    /// Puts and returns the new revision.
    fn put(&self, key: &str, value: &str) -> i64 {
        self.apply(put(key, value)).unwrap().0
    }

    fn delete(&self, key: &str, range_end: &str) -> (i64, DeleteRangeResponse) {
        match self.apply(WriteRequest::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: true,
        })) {
            Ok((rev, WriteResponse::DeleteRange(d))) => (rev, d),
            other => panic!("{other:?}"),
        }
    }

    fn get(&self, key: &str) -> Option<KeyValue> {
        let mut r = self.range(&range(key, "")).unwrap();
        assert!(r.kvs.len() <= 1);
        r.kvs.pop()
    }

    fn txn(&self, txn: TxnRequest) -> Result<(i64, TxnResponse), KvError> {
        self.apply(WriteRequest::Txn(txn)).map(|(rev, r)| match r {
            WriteResponse::Txn(t) => (rev, t),
            other => panic!("{other:?}"),
        })
    }

    fn compact(&self, revision: i64) -> Result<i64, KvError> {
        self.apply(WriteRequest::Compaction(CompactionRequest { revision }))
            .map(|(rev, _)| rev)
    }

    /// Asserts that `request` fails with `error` and changes nothing.
    fn assert_refused(&self, request: WriteRequest, error: KvError) {
        let (revision, digest) = (self.revision(), self.digest());
        assert_eq!(self.apply(request.clone()), Err(error), "{request:?}");
        assert_eq!(self.revision(), revision);
        assert_eq!(self.digest(), digest);
    }
}

pub(crate) fn put(key: &str, value: &str) -> WriteRequest {
    WriteRequest::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
}

fn delete_op(key: &str, range_end: &str) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        prev_kv: false,
    })
}

pub(crate) fn range(key: &str, range_end: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        ..Default::default()
    }
}

fn keys(response: &RangeResponse) -> Vec<String> {
    response
        .kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

fn kv(key: &str, value: &str, create: i64, modr: i64, version: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: modr,
        version,
    }
}

fn compare(key: &str, target: CompareTarget, result: CompareResult) -> Compare {
    Compare {
        key: key.into(),
        range_end: Vec::new(),
        target,
        result,
    }
}

#[test]
fn a_fresh_store_is_at_revision_1_and_each_put_adds_one() {
    let kv_store = Kv::new();
    assert_eq!(kv_store.revision(), 1);
    assert_eq!(kv_store.put("a", "1"), 2);
    assert_eq!(kv_store.get("a"), Some(kv("a", "1", 2, 2, 1)));
    assert_eq!(kv_store.put("a", "2"), 3);
    assert_eq!(kv_store.get("a"), Some(kv("a", "2", 2, 3, 2)));
    assert_eq!(kv_store.put("b", "x"), 4);
    assert_eq!(kv_store.get("b"), Some(kv("b", "x", 4, 4, 1)));
    assert_eq!(kv_store.revision(), 4);
}

#[test]
fn a_delete_removes_the_key_and_a_recreated_key_starts_at_version_1() {
    let s = Kv::new();
    s.put("a", "1");
    s.put("a", "2");
    let (rev, d) = s.delete("a", "");
    assert_eq!(rev, 4);
    assert_eq!(d.deleted, 1);
    assert_eq!(d.revision, 4);
    assert_eq!(d.prev_kvs, vec![kv("a", "2", 2, 3, 2)]);
    assert_eq!(s.get("a"), None);
    assert_eq!(s.put("a", "3"), 5);
    assert_eq!(s.get("a"), Some(kv("a", "3", 5, 5, 1)));
    // Deleting nothing changes nothing, revision included.
    let (rev, d) = s.delete("zz", "");
    assert_eq!((rev, d.deleted, d.revision), (5, 0, 5));
    assert!(d.prev_kvs.is_empty());
    assert_eq!(s.revision(), 5);
}

#[test]
fn a_range_delete_deletes_every_key_of_the_range_at_one_revision() {
    let s = Kv::new();
    for k in ["a", "b", "c", "d"] {
        s.put(k, k);
    }
    let (rev, d) = s.delete("b", "d");
    assert_eq!((rev, d.deleted), (6, 2));
    assert_eq!(keys(&s.range(&range("a", "\0")).unwrap()), ["a", "d"]);
    let (rev, d) = s.delete("a", "\0");
    assert_eq!((rev, d.deleted), (7, 2));
    assert_eq!(s.range(&range("\0", "\0")).unwrap().count, 0);
}

#[test]
fn range_end_forms_follow_etcd() {
    let s = Kv::new();
    for k in ["a", "b", "ba", "c", "d"] {
        s.put(k, k);
    }
    let names = |k: &str, e: &str| keys(&s.range(&range(k, e)).unwrap());
    assert_eq!(names("b", ""), ["b"]);
    assert_eq!(names("bb", ""), Vec::<String>::new());
    assert_eq!(names("b", "d"), ["b", "ba", "c"]);
    assert_eq!(names("b", "\0"), ["b", "ba", "c", "d"]);
    assert_eq!(names("\0", "\0"), ["a", "b", "ba", "c", "d"]);
    // Prefix "b": range_end "c".
    assert_eq!(names("b", "c"), ["b", "ba"]);
    // key >= range_end: nothing.
    assert_eq!(names("c", "b"), Vec::<String>::new());
    assert_eq!(names("c", "c"), Vec::<String>::new());
    assert_eq!(s.range(&range("c", "b")).unwrap().count, 0);
    assert_eq!(s.range(&range("", "")), Err(KvError::EmptyKey));
}

#[test]
fn limit_cuts_kvs_while_count_counts_the_whole_range() {
    let s = Kv::new();
    for k in ["a", "b", "c", "d"] {
        s.put(k, k);
    }
    let with_limit = |limit| {
        s.range(&RangeRequest {
            limit,
            ..range("a", "\0")
        })
        .unwrap()
    };
    let r = with_limit(2);
    assert_eq!(
        (keys(&r), r.count, r.more),
        (vec!["a".into(), "b".into()], 4, true)
    );
    let r = with_limit(4);
    assert_eq!((r.kvs.len(), r.count, r.more), (4, 4, false));
    let r = with_limit(5);
    assert_eq!((r.kvs.len(), r.count, r.more), (4, 4, false));
    let r = with_limit(0);
    assert_eq!((r.kvs.len(), r.count, r.more), (4, 4, false));
    assert_eq!(r.revision, 5);
}

#[test]
fn sorting_follows_target_and_order_and_sorts_before_the_limit() {
    let s = Kv::new();
    // Versions: c 3, a 1, b 2; values: a "z", b "y", c "x".
    s.put("c", "0");
    s.put("c", "1");
    s.put("b", "0");
    s.put("a", "z");
    s.put("b", "y");
    s.put("c", "x");
    let sorted = |order, target, limit| {
        keys(
            &s.range(&RangeRequest {
                sort_order: order,
                sort_target: target,
                limit,
                ..range("a", "\0")
            })
            .unwrap(),
        )
    };
    use SortOrder::*;
    use SortTarget::*;
    assert_eq!(sorted(None, Key, 0), ["a", "b", "c"]);
    assert_eq!(sorted(Descend, Key, 0), ["c", "b", "a"]);
    assert_eq!(sorted(Ascend, Version, 0), ["a", "b", "c"]);
    // etcd: a target other than the key with no order sorts ascending.
    assert_eq!(sorted(None, Version, 0), ["a", "b", "c"]);
    assert_eq!(sorted(None, Value, 0), ["c", "b", "a"]);
    assert_eq!(sorted(Descend, Version, 0), ["c", "b", "a"]);
    assert_eq!(sorted(Ascend, Create, 0), ["c", "b", "a"]);
    assert_eq!(sorted(Descend, Mod, 0), ["c", "b", "a"]);
    assert_eq!(sorted(Ascend, Mod, 0), ["a", "b", "c"]);
    // Sort everything, then cut.
    assert_eq!(sorted(Descend, Key, 1), ["c"]);
    assert_eq!(sorted(Ascend, Value, 2), ["c", "b"]);
    // Ties keep key order, in both directions.
    let t = Kv::new();
    for k in ["b", "a", "c"] {
        t.put(k, "same");
    }
    let sorted_t = |order| {
        keys(
            &t.range(&RangeRequest {
                sort_order: order,
                sort_target: SortTarget::Value,
                ..range("a", "\0")
            })
            .unwrap(),
        )
    };
    assert_eq!(sorted_t(Ascend), ["a", "b", "c"]);
    assert_eq!(sorted_t(Descend), ["a", "b", "c"]);
    // Sorting by value works with keys_only (values dropped afterwards).
    let r = s
        .range(&RangeRequest {
            sort_target: SortTarget::Value,
            keys_only: true,
            ..range("a", "\0")
        })
        .unwrap();
    assert_eq!(keys(&r), ["c", "b", "a"]);
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
}

#[test]
fn keys_only_drops_values_and_count_only_drops_kvs() {
    let s = Kv::new();
    s.put("a", "1");
    s.put("b", "2");
    let r = s
        .range(&RangeRequest {
            keys_only: true,
            ..range("a", "\0")
        })
        .unwrap();
    assert_eq!(r.kvs, vec![kv("a", "", 2, 2, 1), kv("b", "", 3, 3, 1)]);
    let r = s
        .range(&RangeRequest {
            count_only: true,
            limit: 1,
            ..range("a", "\0")
        })
        .unwrap();
    assert_eq!((r.kvs.len(), r.count, r.more), (0, 2, false));
}

#[test]
fn revision_filters_prune_kvs_but_not_count() {
    let s = Kv::new();
    for k in ["a", "b", "c", "d"] {
        s.put(k, k); // a:2 b:3 c:4 d:5
    }
    s.put("a", "again"); // a: create 2, mod 6
    let filtered = |req: RangeRequest| s.range(&req).unwrap();
    let r = filtered(RangeRequest {
        min_mod_revision: 4,
        ..range("a", "\0")
    });
    assert_eq!(
        (keys(&r), r.count),
        (vec!["a".into(), "c".into(), "d".into()], 4)
    );
    let r = filtered(RangeRequest {
        max_mod_revision: 4,
        ..range("a", "\0")
    });
    assert_eq!(keys(&r), ["b", "c"]);
    let r = filtered(RangeRequest {
        min_create_revision: 3,
        max_create_revision: 4,
        ..range("a", "\0")
    });
    assert_eq!(keys(&r), ["b", "c"]);
    let r = filtered(RangeRequest {
        max_create_revision: 2,
        ..range("a", "\0")
    });
    assert_eq!(keys(&r), ["a"]);
    // more compares the filtered kvs with the limit.
    let r = filtered(RangeRequest {
        min_mod_revision: 4,
        limit: 2,
        ..range("a", "\0")
    });
    assert_eq!((r.kvs.len(), r.count, r.more), (2, 4, true));
    // etcd: `more` is about the filtered kvs, not `count`.
    let r = filtered(RangeRequest {
        max_mod_revision: 3,
        limit: 1,
        ..range("a", "\0")
    });
    assert_eq!((keys(&r), r.count, r.more), (vec!["b".into()], 4, false));
}

#[test]
fn historical_reads_see_the_state_at_their_revision() {
    let s = Kv::new();
    s.put("a", "1"); // 2
    s.put("a", "2"); // 3
    s.put("b", "1"); // 4
    s.delete("a", ""); // 5
    s.put("a", "3"); // 6
    let at = |rev| {
        s.range(&RangeRequest {
            revision: rev,
            ..range("a", "\0")
        })
    };
    assert_eq!(at(1).unwrap().kvs, vec![]);
    assert_eq!(at(2).unwrap().kvs, vec![kv("a", "1", 2, 2, 1)]);
    assert_eq!(at(3).unwrap().kvs, vec![kv("a", "2", 2, 3, 2)]);
    assert_eq!(
        at(4).unwrap().kvs,
        vec![kv("a", "2", 2, 3, 2), kv("b", "1", 4, 4, 1)]
    );
    assert_eq!(at(5).unwrap().kvs, vec![kv("b", "1", 4, 4, 1)]);
    assert_eq!(at(6).unwrap(), at(0).unwrap());
    assert_eq!(at(-3).unwrap(), at(0).unwrap());
    // The header revision is the current one, also for an old read.
    assert_eq!(at(2).unwrap().revision, 6);
    assert_eq!(at(7), Err(KvError::FutureRevision));
    // Single-key historical reads.
    let one = s
        .range(&RangeRequest {
            revision: 3,
            ..range("a", "")
        })
        .unwrap();
    assert_eq!(one.kvs, vec![kv("a", "2", 2, 3, 2)]);
}

#[test]
fn compaction_drops_only_history_below_its_revision() {
    let s = Kv::new();
    s.put("a", "1"); // 2
    s.put("a", "2"); // 3
    s.put("b", "1"); // 4
    s.delete("b", ""); // 5
    s.put("c", "1"); // 6
    s.delete("a", ""); // 7
    s.put("c", "2"); // 8
    let reads = |from: i64| -> Vec<RangeResponse> {
        (from..=8)
            .map(|rev| {
                s.range(&RangeRequest {
                    revision: rev,
                    ..range("\0", "\0")
                })
                .unwrap()
            })
            .collect()
    };
    let before = reads(5);
    let digest = s.digest();
    assert_eq!(s.compact(5), Ok(8), "compaction keeps the revision");
    assert_eq!(s.revision(), 8);
    assert_eq!(s.digest().len(), digest.len());
    assert_ne!(s.digest(), digest, "the compact revision is in the digest");
    assert_eq!(reads(5), before, "reads at and above 5 unchanged");
    for rev in 1..5 {
        let r = s.range(&RangeRequest {
            revision: rev,
            ..range("a", "\0")
        });
        assert_eq!(r, Err(KvError::Compacted), "rev {rev}");
    }
    assert_eq!(s.reader().compact_revision(), 5);
    // Not again, not lower, not in the future.
    s.assert_refused(
        WriteRequest::Compaction(CompactionRequest { revision: 5 }),
        KvError::Compacted,
    );
    s.assert_refused(
        WriteRequest::Compaction(CompactionRequest { revision: 4 }),
        KvError::Compacted,
    );
    s.assert_refused(
        WriteRequest::Compaction(CompactionRequest { revision: 9 }),
        KvError::FutureRevision,
    );
    // Compacting at the current revision keeps the live state.
    let before = reads(8);
    assert_eq!(s.compact(8), Ok(8));
    assert_eq!(reads(8), before);
    assert_eq!(keys(&before[0]), ["c"]);
}

#[test]
fn compaction_on_a_fresh_store() {
    let s = Kv::new();
    s.assert_refused(
        WriteRequest::Compaction(CompactionRequest { revision: 2 }),
        KvError::FutureRevision,
    );
    s.assert_refused(
        WriteRequest::Compaction(CompactionRequest { revision: 0 }),
        KvError::Compacted,
    );
    assert_eq!(s.compact(1), Ok(1));
    assert_eq!(s.range(&range("a", "")).unwrap().kvs, vec![]);
}

#[test]
fn put_options_prev_kv_and_ignore_value() {
    let s = Kv::new();
    let put_with = |key: &str, value: &str, prev_kv, ignore_value| {
        WriteRequest::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            prev_kv,
            ignore_value,
        })
    };
    let answer = s.apply(put_with("a", "1", true, false)).unwrap();
    assert_eq!(
        answer,
        (
            2,
            WriteResponse::Put(PutResponse {
                revision: 2,
                prev_kv: None
            })
        )
    );
    let answer = s.apply(put_with("a", "2", true, false)).unwrap();
    assert_eq!(
        answer.1,
        WriteResponse::Put(PutResponse {
            revision: 3,
            prev_kv: Some(kv("a", "1", 2, 2, 1))
        })
    );
    // ignore_value keeps the value and still counts as a put.
    let answer = s.apply(put_with("a", "", false, true)).unwrap();
    assert_eq!(answer.0, 4);
    assert_eq!(s.get("a"), Some(kv("a", "2", 2, 4, 3)));
    s.assert_refused(put_with("b", "", false, true), KvError::KeyNotFound);
    s.assert_refused(put_with("a", "x", false, true), KvError::ValueProvided);
    s.assert_refused(put_with("", "x", false, false), KvError::EmptyKey);
    let huge = "x".repeat(KEY_VALUE_BYTES_MAX);
    s.assert_refused(put_with("a", &huge, false, false), KvError::RequestTooLarge);
    s.assert_refused(
        WriteRequest::DeleteRange(DeleteRangeRequest::default()),
        KvError::EmptyKey,
    );
}

#[test]
fn every_compare_target_and_result() {
    let s = Kv::new();
    s.put("a", "m"); // create 2
    s.put("a", "m"); // mod 3, version 2
    let holds = |c: Compare| {
        s.txn(TxnRequest {
            compare: vec![c],
            ..Default::default()
        })
        .unwrap()
        .1
        .succeeded
    };
    use CompareResult::*;
    use CompareTarget::*;
    let cases: Vec<(CompareTarget, [bool; 4])> = vec![
        // [Equal, Greater, Less, NotEqual] against the key's field.
        (Version(2), [true, false, false, false]),
        (Version(1), [false, true, false, true]),
        (Version(3), [false, false, true, true]),
        (Create(2), [true, false, false, false]),
        (Create(1), [false, true, false, true]),
        (Mod(3), [true, false, false, false]),
        (Mod(4), [false, false, true, true]),
        (Value(b"m".to_vec()), [true, false, false, false]),
        (Value(b"a".to_vec()), [false, true, false, true]),
        (Value(b"z".to_vec()), [false, false, true, true]),
        (Value(b"mm".to_vec()), [false, false, true, true]),
    ];
    for (target, expected) in cases {
        for (result, want) in [Equal, Greater, Less, NotEqual].into_iter().zip(expected) {
            assert_eq!(
                holds(compare("a", target.clone(), result)),
                want,
                "{target:?} {result:?}"
            );
        }
    }
    // A missing key compares as version/create/mod 0...
    assert!(holds(compare("nope", Version(0), Equal)));
    assert!(holds(compare("nope", Create(0), Equal)));
    assert!(holds(compare("nope", Mod(1), Less)));
    assert!(!holds(compare("nope", Mod(0), Greater)));
    // ...but any value compare on it fails, even NotEqual.
    assert!(!holds(compare("nope", Value(vec![]), Equal)));
    assert!(!holds(compare("nope", Value(b"x".to_vec()), NotEqual)));
    assert!(!holds(compare("nope", Value(vec![]), Less)));
    // A read-only txn does not change the revision.
    assert_eq!(s.revision(), 3);
}

#[test]
fn a_range_compare_needs_every_key_of_the_range() {
    let s = Kv::new();
    s.put("k1", "1");
    s.put("k2", "2");
    s.put("k2", "2");
    let holds = |key: &str, end: &str, target, result| {
        s.txn(TxnRequest {
            compare: vec![Compare {
                key: key.into(),
                range_end: end.into(),
                target,
                result,
            }],
            ..Default::default()
        })
        .unwrap()
        .1
        .succeeded
    };
    use CompareResult::*;
    use CompareTarget::*;
    assert!(holds("k", "l", Version(0), Greater));
    assert!(!holds("k", "l", Version(1), Equal));
    assert!(holds("k", "\0", Value(b"3".to_vec()), Less));
    assert!(!holds("k", "l", Value(b"2".to_vec()), Equal));
    // An empty range is a zero kv, and value compares fail.
    assert!(holds("x", "y", Version(0), Equal));
    assert!(!holds("x", "y", Value(vec![]), Equal));
    assert!(holds("z", "a", Create(0), Equal));
}

#[test]
fn a_txn_runs_one_branch_at_one_revision_and_sees_its_own_writes() {
    let s = Kv::new();
    s.put("a", "1"); // 2
    s.put("c", "1"); // 3
    let txn = |value: &str| TxnRequest {
        compare: vec![compare(
            "a",
            CompareTarget::Value(value.into()),
            CompareResult::Equal,
        )],
        success: vec![
            RequestOp::Range(range("a", "")),
            put_op("a", "2"),
            put_op("b", "1"),
            RequestOp::Range(range("a", "\0")),
            RequestOp::Range(RangeRequest {
                revision: 3,
                ..range("a", "\0")
            }),
            delete_op("c", ""),
            RequestOp::Range(range("a", "\0")),
        ],
        failure: vec![RequestOp::Range(range("a", ""))],
    };
    let (rev, t) = s.txn(txn("1")).unwrap();
    assert_eq!(rev, 4);
    assert!(t.succeeded);
    let ResponseOp::Range(before) = &t.responses[0] else {
        panic!()
    };
    assert_eq!(
        (before.revision, before.kvs.clone()),
        (3, vec![kv("a", "1", 2, 2, 1)])
    );
    let ResponseOp::Put(p) = &t.responses[1] else {
        panic!()
    };
    assert_eq!(p.revision, 4);
    let ResponseOp::Range(after) = &t.responses[3] else {
        panic!()
    };
    assert_eq!(after.revision, 4);
    assert_eq!(
        after.kvs,
        vec![
            kv("a", "2", 2, 4, 2),
            kv("b", "1", 4, 4, 1),
            kv("c", "1", 3, 3, 1)
        ]
    );
    let ResponseOp::Range(old) = &t.responses[4] else {
        panic!()
    };
    assert_eq!(keys(old), ["a", "c"], "a read at 3 does not see the txn");
    let ResponseOp::DeleteRange(d) = &t.responses[5] else {
        panic!()
    };
    assert_eq!((d.deleted, d.revision), (1, 4));
    let ResponseOp::Range(last) = &t.responses[6] else {
        panic!()
    };
    assert_eq!(keys(last), ["a", "b"]);
    assert_eq!(s.revision(), 4);
    assert_eq!(s.get("b"), Some(kv("b", "1", 4, 4, 1)));
    // The compare now fails: the failure branch runs, reads only.
    let (rev, t) = s.txn(txn("1")).unwrap();
    assert_eq!(rev, 4);
    assert!(!t.succeeded);
    assert_eq!(t.responses.len(), 1);
    // A txn whose writes change nothing (a delete of nothing) keeps the
    // revision.
    let (rev, t) = s
        .txn(TxnRequest {
            success: vec![delete_op("nothing", "")],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rev, 4);
    let ResponseOp::DeleteRange(d) = &t.responses[0] else {
        panic!()
    };
    assert_eq!((d.deleted, d.revision), (0, 4));
}

#[test]
fn nested_txn_compares_see_the_state_before_the_outer_txn() {
    let s = Kv::new();
    s.put("a", "1");
    let nested = TxnRequest {
        compare: vec![compare(
            "a",
            CompareTarget::Value(b"1".to_vec()),
            CompareResult::Equal,
        )],
        success: vec![put_op("b", "then")],
        failure: vec![put_op("b", "else")],
    };
    let (rev, t) = s
        .txn(TxnRequest {
            success: vec![put_op("a", "2"), RequestOp::Txn(nested)],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rev, 3);
    let ResponseOp::Txn(inner) = &t.responses[1] else {
        panic!()
    };
    assert!(inner.succeeded);
    assert_eq!(s.get("b").unwrap().value, b"then");
    assert_eq!(s.get("b").unwrap().mod_revision, 3);
}

#[test]
fn a_branch_may_not_write_one_key_twice() {
    let s = Kv::new();
    s.put("a", "0");
    let refuse = |success: Vec<RequestOp>| {
        s.assert_refused(
            WriteRequest::Txn(TxnRequest {
                success,
                ..Default::default()
            }),
            KvError::DuplicateKey,
        )
    };
    refuse(vec![put_op("a", "1"), put_op("a", "2")]);
    refuse(vec![put_op("b", "1"), delete_op("a", "c")]);
    refuse(vec![delete_op("a", "c"), put_op("b", "1")]);
    refuse(vec![delete_op("a", ""), put_op("a", "1")]);
    // etcd 3.4 checks a delete to the end (`range_end` `\0`) as an empty
    // interval: the branch is accepted and runs in order.
    let accepted = s
        .txn(TxnRequest {
            success: vec![delete_op("a", "\0"), put_op("z", "1")],
            ..Default::default()
        })
        .unwrap();
    assert!(accepted.1.succeeded);
    s.put("a", "0");
    let nested = |success, failure| {
        RequestOp::Txn(TxnRequest {
            success,
            failure,
            ..Default::default()
        })
    };
    refuse(vec![
        nested(vec![put_op("a", "1")], vec![]),
        put_op("a", "2"),
    ]);
    refuse(vec![
        delete_op("a", "b"),
        nested(vec![put_op("a", "1")], vec![]),
    ]);
    refuse(vec![
        nested(vec![delete_op("a", "")], vec![]),
        put_op("a", "2"),
    ]);
    refuse(vec![
        nested(vec![put_op("a", "1")], vec![]),
        nested(vec![], vec![put_op("a", "1")]),
    ]);
    // Fine: both branches of one nested txn, the two top-level branches,
    // overlapping deletes, a delete range that misses the put.
    let ok = |txn: TxnRequest| s.txn(txn).unwrap();
    ok(TxnRequest {
        success: vec![nested(vec![put_op("a", "1")], vec![put_op("a", "1")])],
        ..Default::default()
    });
    ok(TxnRequest {
        success: vec![put_op("a", "1")],
        failure: vec![put_op("a", "2")],
        ..Default::default()
    });
    let (_, t) = ok(TxnRequest {
        success: vec![delete_op("a", "c"), delete_op("a", ""), put_op("c", "1")],
        ..Default::default()
    });
    let ResponseOp::DeleteRange(second) = &t.responses[1] else {
        panic!()
    };
    assert_eq!(second.deleted, 0, "the first delete took it");
}

#[test]
fn a_key_put_then_deleted_in_one_txn_is_gone_at_that_revision() {
    // etcd's checkIntervals lets a later nested txn delete what an earlier
    // one put: both changes carry one revision and the delete wins.
    let s = Kv::new();
    s.put("old", "1"); // 2
    let nested = |op: RequestOp| {
        RequestOp::Txn(TxnRequest {
            success: vec![op],
            ..Default::default()
        })
    };
    let (rev, t) = s
        .txn(TxnRequest {
            success: vec![
                nested(put_op("new", "1")),
                nested(put_op("old", "2")),
                nested(RequestOp::DeleteRange(DeleteRangeRequest {
                    key: b"new".to_vec(),
                    range_end: b"old\0".to_vec(),
                    prev_kv: true,
                })),
            ],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rev, 3);
    let ResponseOp::Txn(deleted) = &t.responses[2] else {
        panic!()
    };
    let ResponseOp::DeleteRange(d) = &deleted.responses[0] else {
        panic!()
    };
    assert_eq!(
        d.prev_kvs,
        vec![kv("new", "1", 3, 3, 1), kv("old", "2", 2, 3, 2)]
    );
    assert_eq!(s.range(&range("a", "\0")).unwrap().count, 0);
    let at_2 = s
        .range(&RangeRequest {
            revision: 2,
            ..range("a", "\0")
        })
        .unwrap();
    assert_eq!(at_2.kvs, vec![kv("old", "1", 2, 2, 1)]);
    // Re-created later, each starts over.
    s.put("new", "x");
    assert_eq!(s.get("new"), Some(kv("new", "x", 4, 4, 1)));
    assert_eq!(s.compact(4), Ok(4));
    assert_eq!(s.get("new"), Some(kv("new", "x", 4, 4, 1)));
}

#[test]
fn too_many_ops_are_refused() {
    let s = Kv::new();
    let ops =
        |n: usize| -> Vec<RequestOp> { (0..n).map(|i| put_op(&format!("k{i:03}"), "v")).collect() };
    s.assert_refused(
        WriteRequest::Txn(TxnRequest {
            success: ops(TXN_OPS_MAX + 1),
            ..Default::default()
        }),
        KvError::TooManyOps,
    );
    s.assert_refused(
        WriteRequest::Txn(TxnRequest {
            failure: ops(TXN_OPS_MAX + 1),
            ..Default::default()
        }),
        KvError::TooManyOps,
    );
    s.assert_refused(
        WriteRequest::Txn(TxnRequest {
            compare: vec![compare("a", CompareTarget::Version(0), CompareResult::Equal); 129],
            ..Default::default()
        }),
        KvError::TooManyOps,
    );
    // A nested txn shares what the outer one leaves.
    s.assert_refused(
        WriteRequest::Txn(TxnRequest {
            success: vec![
                put_op("x", "1"),
                RequestOp::Txn(TxnRequest {
                    success: ops(TXN_OPS_MAX),
                    ..Default::default()
                }),
            ],
            ..Default::default()
        }),
        KvError::TooManyOps,
    );
    let (rev, _) = s
        .txn(TxnRequest {
            success: ops(TXN_OPS_MAX),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rev, 2, "128 puts, one revision");
}

#[test]
fn a_failing_txn_changes_nothing() {
    let s = Kv::new();
    s.put("a", "1");
    s.put("a", "2");
    s.compact(3).unwrap();
    let refuse = |success: Vec<RequestOp>, error| {
        s.assert_refused(
            WriteRequest::Txn(TxnRequest {
                success,
                ..Default::default()
            }),
            error,
        )
    };
    let ignore = |key: &str| {
        RequestOp::Put(PutRequest {
            key: key.into(),
            ignore_value: true,
            ..Default::default()
        })
    };
    // A put that would have run before the failing op is not stored.
    refuse(
        vec![put_op("b", "1"), ignore("missing")],
        KvError::KeyNotFound,
    );
    refuse(
        vec![
            put_op("b", "1"),
            RequestOp::Range(RangeRequest {
                revision: 2,
                ..range("a", "")
            }),
        ],
        KvError::Compacted,
    );
    refuse(
        vec![
            put_op("b", "1"),
            RequestOp::Range(RangeRequest {
                revision: 4,
                ..range("a", "")
            }),
        ],
        KvError::FutureRevision,
    );
    // etcd checks every put of the path before any range.
    refuse(
        vec![
            RequestOp::Range(RangeRequest {
                revision: 2,
                ..range("a", "")
            }),
            ignore("missing"),
        ],
        KvError::KeyNotFound,
    );
    refuse(vec![put_op("b", "1"), put_op("", "1")], KvError::EmptyKey);
    refuse(
        vec![put_op("b", "1"), RequestOp::Range(range("", ""))],
        KvError::EmptyKey,
    );
    refuse(vec![put_op("b", "1"), delete_op("", "")], KvError::EmptyKey);
    refuse(
        vec![RequestOp::Put(PutRequest {
            key: b"a".to_vec(),
            value: b"x".to_vec(),
            ignore_value: true,
            prev_kv: false,
        })],
        KvError::ValueProvided,
    );
    // Checks in the branch not taken do not matter; the one taken does.
    let (_, t) = s
        .txn(TxnRequest {
            compare: vec![compare(
                "a",
                CompareTarget::Version(2),
                CompareResult::Equal,
            )],
            success: vec![put_op("b", "1")],
            failure: vec![ignore("missing")],
        })
        .unwrap();
    assert!(t.succeeded);
    // ignore_value in a txn keeps the value.
    let (_, t) = s
        .txn(TxnRequest {
            success: vec![ignore("a")],
            ..Default::default()
        })
        .unwrap();
    assert!(t.succeeded);
    assert_eq!(s.get("a").unwrap(), kv("a", "2", 2, 5, 3));
}

#[test]
fn requests_in_one_transaction_are_each_atomic() {
    let s = Kv::new();
    let txn = s.db.begin_write().unwrap();
    {
        let mut w = StoreWriter::open(&txn).unwrap();
        assert_eq!(w.apply(&put("a", "1")).unwrap().unwrap().0, 2);
        let bad = WriteRequest::Txn(TxnRequest {
            success: vec![put_op("b", "1"), put_op("b", "2")],
            ..Default::default()
        });
        assert_eq!(w.apply(&bad).unwrap(), Err(KvError::DuplicateKey));
        assert_eq!(w.revision(), 2);
        assert_eq!(w.apply(&put("c", "1")).unwrap().unwrap().0, 3);
        let r = w.range(&range("a", "\0")).unwrap().unwrap();
        assert_eq!(keys(&r), ["a", "c"]);
        w.check_invariants().unwrap();
        w.finish().unwrap();
    }
    txn.commit().unwrap();
    assert_eq!(s.revision(), 3);
    assert_eq!(s.get("c"), Some(kv("c", "1", 3, 3, 1)));
}

#[test]
fn a_dropped_transaction_stores_nothing() {
    let s = Kv::new();
    s.put("a", "1");
    let digest = s.digest();
    {
        let txn = s.db.begin_write().unwrap();
        let mut w = StoreWriter::open(&txn).unwrap();
        w.apply(&put("b", "1")).unwrap().unwrap();
    }
    assert_eq!(s.digest(), digest);
    assert_eq!(s.revision(), 2);
}

#[test]
fn a_store_no_writer_opened_reads_as_fresh() {
    let s = Kv::new();
    let r = s.reader();
    assert_eq!((r.revision(), r.compact_revision()), (1, 0));
    assert_eq!(s.range(&range("a", "\0")).unwrap().count, 0);
    assert_eq!(
        s.range(&RangeRequest {
            revision: 2,
            ..range("a", "")
        }),
        Err(KvError::FutureRevision)
    );
    // And digests like a store a writer opened and left empty.
    let d = s.digest();
    s.apply(WriteRequest::DeleteRange(DeleteRangeRequest {
        key: b"x".to_vec(),
        ..Default::default()
    }))
    .unwrap();
    assert_eq!(s.digest(), d);
}

#[test]
fn digests_depend_on_content_not_on_history_path() {
    let a = Kv::new();
    let b = Kv::new();
    a.put("k", "1");
    a.put("j", "1");
    b.put("k", "1");
    b.put("j", "1");
    assert_eq!(a.digest(), b.digest());
    a.put("k", "2");
    b.put("k", "3");
    assert_ne!(a.digest(), b.digest());
}

#[test]
fn errors_display_etcds_texts() {
    assert_eq!(
        KvError::Compacted.to_string(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(
        KvError::FutureRevision.to_string(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    assert_eq!(
        KvError::EmptyKey.to_string(),
        "etcdserver: key is not provided"
    );
    assert_eq!(
        KvError::KeyNotFound.to_string(),
        "etcdserver: key not found"
    );
    assert_eq!(
        KvError::ValueProvided.to_string(),
        "etcdserver: value is provided"
    );
    assert_eq!(
        KvError::DuplicateKey.to_string(),
        "etcdserver: duplicate key given in txn request"
    );
    assert_eq!(
        KvError::TooManyOps.to_string(),
        "etcdserver: too many operations in txn request"
    );
    assert_eq!(
        KvError::InvalidArgument("etcdserver: x".into()).to_string(),
        "etcdserver: x"
    );
}

#[test]
fn the_borrowed_history_record_encodes_like_the_owned_one() {
    let owned = HistoryRecord::Put {
        create_revision: 7,
        version: 300,
        value: b"value".to_vec(),
    };
    let borrowed = HistoryRecordRef::Put {
        create_revision: 7,
        version: 300,
        value: b"value",
    };
    assert_eq!(
        rafter::codec::encode(&owned),
        rafter::codec::encode(&borrowed)
    );
}

#[test]
fn the_borrowed_stored_record_encodes_like_the_owned_one() {
    let owned = StoredRecord {
        prev: 41,
        record: HistoryRecord::Put {
            create_revision: 7,
            version: 300,
            value: b"value".to_vec(),
        },
    };
    let borrowed = StoredRecordRef {
        prev: 41,
        record: HistoryRecordRef::Put {
            create_revision: 7,
            version: 300,
            value: b"value",
        },
    };
    assert_eq!(
        rafter::codec::encode(&owned),
        rafter::codec::encode(&borrowed)
    );
    let owned = StoredRecord {
        prev: 0,
        record: HistoryRecord::Tombstone,
    };
    let borrowed = StoredRecordRef {
        prev: 0,
        record: HistoryRecordRef::Tombstone,
    };
    assert_eq!(
        rafter::codec::encode(&owned),
        rafter::codec::encode(&borrowed)
    );
}

/// etcd 3.4 checks a txn read's revision against a first revision that is
/// -1 until the first compaction (found by the differential test against
/// etcd): a negative revision is "current" until then, "compacted" after.
#[test]
fn txn_reads_at_negative_revisions_follow_etcd() {
    let s = Kv::new();
    s.put("a", "1");
    let read_at = |revision: i64| TxnRequest {
        success: vec![RequestOp::Range(RangeRequest {
            key: b"a".to_vec(),
            revision,
            ..Default::default()
        })],
        ..Default::default()
    };
    assert!(s.txn(read_at(-1)).is_ok());
    assert_eq!(s.txn(read_at(-2)).unwrap_err(), KvError::Compacted);
    s.put("a", "2");
    s.compact(2).unwrap();
    assert_eq!(s.txn(read_at(-1)).unwrap_err(), KvError::Compacted);
    assert_eq!(s.txn(read_at(1)).unwrap_err(), KvError::Compacted);
    assert!(s.txn(read_at(0)).is_ok());
    assert!(s.txn(read_at(2)).is_ok());
    assert_eq!(s.txn(read_at(9)).unwrap_err(), KvError::FutureRevision);
}

/// etcd 3.4 accepts a txn that deletes to the end (`\0`) and puts a key
/// of that range in the same revision; the put's record replaces the
/// tombstone, and the store (and a snapshot of it) stays valid. Found by
/// the model test after the duplicate-key rule followed etcd.
#[test]
fn a_delete_and_a_put_of_one_key_in_one_revision_keep_the_store_valid() {
    let s = Kv::new();
    s.put("c\0", "1");
    let (revision, _) = s
        .txn(TxnRequest {
            success: vec![delete_op("c", "\0"), put_op("c\0", "2")],
            ..Default::default()
        })
        .unwrap();
    let kv = s.get("c\0").unwrap();
    assert_eq!(
        (kv.create_revision, kv.version, kv.value.as_slice()),
        (revision, 1, &b"2"[..])
    );
    s.reader().check_invariants().unwrap();
}

/// An `ignore_value` put of a key an earlier op of the same txn deleted
/// finds no value: the txn is refused with KeyNotFound and changes nothing
/// (etcd 3.4 panics there). Found by the model test in CI.
#[test]
fn an_ignore_value_put_after_a_delete_of_its_key_is_refused() {
    let s = Kv::new();
    s.put("d", "1");
    let ignore = RequestOp::Put(PutRequest {
        key: b"d".to_vec(),
        ignore_value: true,
        ..Default::default()
    });
    s.assert_refused(
        WriteRequest::Txn(TxnRequest {
            success: vec![delete_op("a", "\0"), ignore],
            ..Default::default()
        }),
        KvError::KeyNotFound,
    );
}
