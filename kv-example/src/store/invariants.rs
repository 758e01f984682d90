//! The full walk that checks the layout's invariants (listed in
//! `store/mod.rs`). O(store size): run by tests and after loading a
//! snapshot, never on the apply path.

use redb::ReadableTable;

use super::error::{storage, StoreError};
use super::source::Tables;
use super::tables::{decode_history, decode_key_entry, decode_session, HistoryRecord, KeyEntry};

fn corrupt(table: &'static str, detail: String) -> StoreError {
    StoreError::Corrupt { table, detail }
}

/// One record of a chain, without its value.
#[derive(Debug, Clone, Copy)]
struct Link {
    revision: i64,
    /// `Some((create_revision, version))` for a put, `None` for a tombstone.
    put: Option<(i64, i64)>,
}

/// Checks every table against the others and against `revision` and
/// `compact`.
pub(crate) fn check(
    history: &impl ReadableTable<(u64, &'static [u8]), &'static [u8]>,
    keys: &impl ReadableTable<&'static [u8], &'static [u8]>,
    sessions: &impl ReadableTable<u64, &'static [u8]>,
    expiry: &impl ReadableTable<(u64, u64), ()>,
    revision: i64,
    compact: i64,
) -> Result<(), StoreError> {
    if !(1 <= revision && 0 <= compact && compact <= revision) {
        return Err(corrupt(
            "kv_meta",
            format!("revision {revision}, compact {compact}"),
        ));
    }
    let tables = Tables { history, keys };
    // Keys: each entry heads a chain of records whose revisions fall
    // (decode checks prev < revision, so the walk ends), whose newest agrees
    // with the entry, and which is a valid history in revision order.
    let mut chained: u64 = 0;
    let mut chain: Vec<Link> = Vec::new();
    for item in keys.range::<&[u8]>(..).map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        let key = k.value();
        let entry = decode_key_entry(key, v.value())?;
        if entry.newest() > revision {
            return Err(corrupt(
                "kv_keys",
                format!("key {key:?}: {entry:?} above revision {revision}"),
            ));
        }
        chain.clear();
        let mut at = entry.newest();
        while at > 0 {
            let stored = tables.chained(key, at)?;
            chain.push(Link {
                revision: at,
                put: match stored.record {
                    HistoryRecord::Put {
                        create_revision,
                        version,
                        ..
                    } => Some((create_revision, version)),
                    HistoryRecord::Tombstone => None,
                },
            });
            at = stored.prev as i64;
        }
        chained += chain.len() as u64;
        chain.reverse();
        let newest = chain.last().map(|l| l.put);
        let agrees = match (entry, newest) {
            (KeyEntry::Live(e), Some(Some((create, version)))) => {
                (create, version) == (e.create_revision, e.version)
            }
            (KeyEntry::Deleted { .. }, Some(None)) => true,
            _ => false,
        };
        if !agrees {
            return Err(corrupt(
                "kv_keys",
                format!("key {key:?}: {entry:?} but newest record {newest:?}"),
            ));
        }
        check_chain(key, &chain, compact)?;
    }
    // History: nothing outside the chains (so no record is unreachable) and
    // every record decodes.
    let mut records: u64 = 0;
    for item in history.range::<(u64, &[u8])>(..).map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        let (rev, key) = k.value();
        decode_history(key, rev, v.value())?;
        records += 1;
    }
    if records != chained {
        return Err(corrupt(
            "kv_history_by_revision",
            format!("{records} records, {chained} in the chains of kv_keys"),
        ));
    }
    // Sessions: the age index holds exactly one entry per session.
    let mut session_count: u64 = 0;
    for item in sessions.range::<u64>(..).map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        let session = decode_session(k.value(), v.value())?;
        if expiry
            .get((session.last_write_ms, k.value()))
            .map_err(storage)?
            .is_none()
        {
            return Err(corrupt(
                "kv_session_expiry",
                format!("client {} missing", k.value()),
            ));
        }
        session_count += 1;
    }
    let expiry_count = expiry.range::<(u64, u64)>(..).map_err(storage)?.count() as u64;
    if expiry_count != session_count {
        return Err(corrupt(
            "kv_session_expiry",
            format!("{expiry_count} entries for {session_count} sessions"),
        ));
    }
    Ok(())
}

/// One key's records, oldest first: at most one at or below `compact` (and
/// then a put), and each put follows the record before it.
fn check_chain(key: &[u8], chain: &[Link], compact: i64) -> Result<(), StoreError> {
    let bad = |detail: String| {
        Err(corrupt(
            "kv_history_by_revision",
            format!("key {key:?}: {detail}"),
        ))
    };
    let mut previous: Option<Link> = None;
    for &link in chain {
        let rev = link.revision;
        match (link.put, previous) {
            (None, None) if rev <= compact => {
                return bad(format!("tombstone at {rev} kept by compaction {compact}"));
            }
            (_, Some(p)) if p.revision <= compact && rev <= compact => {
                return bad(format!(
                    "records at {} and {rev} <= compact {compact}",
                    p.revision
                ));
            }
            // A put follows the previous put of its generation, or starts a
            // new one at its own revision: a txn may delete a key and put it
            // again in one revision (etcd 3.4 allows it), and the put's
            // record then replaces the tombstone at that revision.
            (
                Some((create, version)),
                Some(Link {
                    put: Some((p_create, p_version)),
                    ..
                }),
            ) if (create, version) != (p_create, p_version + 1)
                && (create, version) != (rev, 1) =>
            {
                return bad(format!("put at {rev} does not follow the previous one"));
            }
            (Some((create, version)), Some(Link { put: None, .. }))
                if (create, version) != (rev, 1) =>
            {
                return bad(format!("put at {rev} after a delete is not a creation"));
            }
            (Some((create, version)), None)
                if create > rev || (version == 1) != (create == rev) =>
            {
                return bad(format!(
                    "first put at {rev}: create {create}, version {version}"
                ));
            }
            _ => {}
        }
        previous = Some(link);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::ReadableDatabase;

    use super::super::request::*;
    use super::super::tables::{HistoryRecord, KeyEntry, LiveEntry, StoredRecord, HISTORY, KEYS};
    use super::super::tests::{put, range, Kv};
    use super::super::{StoreReader, StoreWriter};
    use super::*;

    /// "a" put at 2, 3, 4; "b" put at 5 and deleted at 6; "c" put at 7.
    fn store() -> Kv {
        let s = Kv::new();
        for request in [
            put("a", "1"),
            put("a", "2"),
            put("a", "3"),
            put("b", "1"),
            WriteRequest::DeleteRange(DeleteRangeRequest {
                key: b"b".to_vec(),
                range_end: Vec::new(),
                prev_kv: false,
            }),
            put("c", "1"),
        ] {
            s.apply(request).unwrap();
        }
        s
    }

    fn record(create_revision: i64, version: i64) -> HistoryRecord {
        HistoryRecord::Put {
            create_revision,
            version,
            value: b"v".to_vec(),
        }
    }

    /// Plants `damage` in a fresh [`store`] and checks that the invariant
    /// walk reports it as corruption (and that reads at every revision give
    /// an answer or `Corrupt`, never a panic).
    fn caught(why: &str, damage: impl FnOnce(&redb::WriteTransaction)) {
        let s = store();
        let txn = s.db.begin_write().unwrap();
        damage(&txn);
        txn.commit().unwrap();
        let reader = StoreReader::open(&s.db.begin_read().unwrap()).unwrap();
        match reader.check_invariants() {
            Err(StoreError::Corrupt { .. }) => {}
            other => panic!("{why}: not caught: {other:?}"),
        }
        for revision in 1..=reader.revision() {
            let read = reader.range(&RangeRequest {
                revision,
                ..range("\0", "\0")
            });
            assert!(
                matches!(read, Ok(_) | Err(StoreError::Corrupt { .. })),
                "{why}: {read:?}"
            );
        }
        // A writer over the damaged store errors or works, never panics.
        let txn = s.db.begin_write().unwrap();
        let writer = StoreWriter::open(&txn);
        if let Ok(mut w) = writer {
            let _ = w.apply(&put("a", "4"));
            let _ = w.apply(&WriteRequest::Compaction(CompactionRequest { revision: 5 }));
        }
    }

    fn insert_record(
        txn: &redb::WriteTransaction,
        revision: u64,
        key: &[u8],
        stored: StoredRecord,
    ) {
        let mut history = txn.open_table(HISTORY).unwrap();
        history
            .insert((revision, key), rafter::codec::encode(&stored).as_slice())
            .unwrap();
    }

    fn insert_key(txn: &redb::WriteTransaction, key: &[u8], entry: KeyEntry) {
        let mut keys = txn.open_table(KEYS).unwrap();
        keys.insert(key, rafter::codec::encode(&entry).as_slice())
            .unwrap();
    }

    #[test]
    fn the_untouched_store_is_valid() {
        let s = store();
        StoreReader::open(&s.db.begin_read().unwrap())
            .unwrap()
            .check_invariants()
            .unwrap();
    }

    #[test]
    fn planted_layout_damage_is_caught() {
        caught("a prev naming a missing record", |txn| {
            let stored = StoredRecord {
                prev: 1,
                record: record(2, 3),
            };
            insert_record(txn, 4, b"a", stored);
        });
        caught("a prev at or above its own revision (a cycle)", |txn| {
            let stored = StoredRecord {
                prev: 4,
                record: record(2, 3),
            };
            insert_record(txn, 4, b"a", stored);
        });
        caught("a record on no chain", |txn| {
            insert_record(
                txn,
                5,
                b"a",
                StoredRecord {
                    prev: 0,
                    record: record(5, 1),
                },
            );
        });
        caught("a live key entered as deleted", |txn| {
            insert_key(txn, b"c", KeyEntry::Deleted { revision: 7 });
        });
        caught("a deleted key entered as live", |txn| {
            let entry = LiveEntry {
                create_revision: 5,
                mod_revision: 6,
                version: 2,
            };
            insert_key(txn, b"b", KeyEntry::Live(entry));
        });
        caught("a key missing from kv_keys", |txn| {
            let mut keys = txn.open_table(KEYS).unwrap();
            keys.remove(&b"a"[..]).unwrap();
        });
        caught("a key entry above the store revision", |txn| {
            insert_key(txn, b"d", KeyEntry::Deleted { revision: 99 });
        });
        caught("a version chain broken", |txn| {
            let stored = StoredRecord {
                prev: 3,
                record: record(2, 7),
            };
            insert_record(txn, 4, b"a", stored);
            let entry = LiveEntry {
                create_revision: 2,
                mod_revision: 4,
                version: 7,
            };
            insert_key(txn, b"a", KeyEntry::Live(entry));
        });
        caught("an undecodable record", |txn| {
            let mut history = txn.open_table(HISTORY).unwrap();
            history.insert((3u64, &b"a"[..]), &b"\xff\xff"[..]).unwrap();
        });
        caught("an undecodable key entry", |txn| {
            let mut keys = txn.open_table(KEYS).unwrap();
            keys.insert(&b"a"[..], &b"\xff\xff"[..]).unwrap();
        });
    }

    #[test]
    fn compaction_without_relinking_would_be_caught() {
        // A compaction that removes the older records without relinking:
        // "a"@2 gone while "a"@3 still names it.
        caught("a kept record naming a compacted one", |txn| {
            let mut history = txn.open_table(HISTORY).unwrap();
            history.remove((2u64, &b"a"[..])).unwrap();
        });
        // And done without dropping the older record: two at or below.
        let s = store();
        s.apply(WriteRequest::Compaction(CompactionRequest { revision: 6 }))
            .unwrap();
        let txn = s.db.begin_write().unwrap();
        insert_record(
            &txn,
            2,
            b"a",
            StoredRecord {
                prev: 0,
                record: record(2, 1),
            },
        );
        insert_record(
            &txn,
            4,
            b"a",
            StoredRecord {
                prev: 2,
                record: record(2, 3),
            },
        );
        txn.commit().unwrap();
        let reader = StoreReader::open(&s.db.begin_read().unwrap()).unwrap();
        assert!(matches!(
            reader.check_invariants(),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
