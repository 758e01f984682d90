//! Upgrading a store of the previous layout (history keyed by `(key,
//! revision)` in `kv_history`, live keys only in `kv_live`) to the current
//! one (`store/mod.rs`): the whole store is copied in the caller's write
//! transaction, so a crash leaves either layout whole, never a mix.
//!
//! The old table definitions live here and nowhere else. Besides the
//! upgrade and its tests, only a reader (which refuses an old store, since
//! it cannot upgrade) and a snapshot load (which deletes them) name them.

use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use super::error::{storage, StoreError};
use super::tables::{check_put, HistoryRecord, KeyEntry, LiveEntry, StoredRecord, HISTORY, KEYS};
use super::RECORD_BYTES_MAX;

/// The previous layout's history: `(key, revision)` → encoded
/// [`HistoryRecord`] (no `prev`: a key's records were neighbours).
pub(crate) const OLD_HISTORY: TableDefinition<(&[u8], u64), &[u8]> =
    TableDefinition::new("kv_history");
/// The previous layout's live index: live key → encoded [`LiveEntry`].
pub(crate) const OLD_LIVE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv_live");

/// The layout marker: [`LAYOUT_KEY`] → [`LAYOUT_VERSION`], in a table that
/// takes the old live index's name with other types. A build of the old
/// layout opening this store (a node rolled back) then fails to start
/// (redb's `TableTypeMismatch` on `kv_live`) instead of creating an empty
/// `kv_history` and `kv_live` and serving an empty key space at the stored
/// revision.
pub(crate) const LAYOUT_MARKER: TableDefinition<&str, u64> = TableDefinition::new("kv_live");
/// The marker's key.
pub(crate) const LAYOUT_KEY: &str = "layout";
/// The layout of `store/mod.rs` (1: the old one, which had no marker).
pub(crate) const LAYOUT_VERSION: u64 = 2;

/// Writes the layout marker (see [`LAYOUT_MARKER`]).
pub(crate) fn write_layout_marker(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut marker = txn.open_table(LAYOUT_MARKER).map_err(storage)?;
    marker.insert(LAYOUT_KEY, LAYOUT_VERSION).map_err(storage)?;
    Ok(())
}

fn corrupt(table: &'static str, detail: String) -> StoreError {
    StoreError::Corrupt { table, detail }
}

/// Decodes an old live entry.
fn decode_live(key: &[u8], bytes: &[u8]) -> Result<LiveEntry, StoreError> {
    let entry: LiveEntry = rafter::codec::decode(bytes, RECORD_BYTES_MAX)
        .map_err(|e| corrupt("kv_live", format!("key {key:?}: {e}")))?;
    if !entry.valid() {
        return Err(corrupt("kv_live", format!("key {key:?}: {entry:?}")));
    }
    Ok(entry)
}

/// If `txn` holds the old layout's tables, rewrites them into the current
/// layout and deletes them; otherwise only writes the layout marker if it
/// is missing (a fresh store). One listing of the table names when there
/// is nothing to do, so this runs on every [`super::StoreWriter::open`].
/// Returns whether it upgraded.
///
/// Cost: one pass over the old history and one point read of the old live
/// index per key, all in this transaction: the store's size in writes,
/// once. Errors with [`StoreError::Corrupt`] on an undecodable record, a
/// store holding both layouts, or an old live index that disagrees with
/// the old history.
pub(crate) fn upgrade_if_old(txn: &WriteTransaction) -> Result<bool, StoreError> {
    // One listing of the (few) table names.
    let names: Vec<String> = txn
        .list_tables()
        .map_err(storage)?
        .map(|table| table.name().to_string())
        .collect();
    let has_table = |name: &str| names.iter().any(|n| n == name);
    // The old layout is known by `kv_history`: `kv_live` alone is the
    // marker of this one.
    let old_history = has_table(OLD_HISTORY.name());
    let live_name = has_table(OLD_LIVE.name());
    if !old_history {
        if !live_name {
            write_layout_marker(txn)?;
        }
        return Ok(false);
    }
    if !live_name {
        return Err(corrupt(
            "kv_history",
            "the old layout is missing one of its tables".into(),
        ));
    }
    if has_table(HISTORY.name()) || has_table(KEYS.name()) {
        return Err(corrupt(
            "kv_history",
            "the store holds both the old and the new layout".into(),
        ));
    }
    {
        let old = txn.open_table(OLD_HISTORY).map_err(storage)?;
        let live = txn.open_table(OLD_LIVE).map_err(storage)?;
        let mut history = txn.open_table(HISTORY).map_err(storage)?;
        let mut keys = txn.open_table(KEYS).map_err(storage)?;
        // The previous record of the key being copied: (key, revision,
        // record without its value).
        let mut previous: Option<(Vec<u8>, u64, KeyEntry)> = None;
        let mut live_keys: u64 = 0;
        let mut finish = |key: &[u8],
                          head: KeyEntry,
                          keys: &mut redb::Table<'_, &'static [u8], &'static [u8]>|
         -> Result<(), StoreError> {
            let stored_live = match live.get(key).map_err(storage)? {
                Some(g) => Some(decode_live(key, g.value())?),
                None => None,
            };
            if stored_live != head.live() {
                return Err(corrupt(
                    "kv_live",
                    format!("key {key:?}: live {stored_live:?}, newest history {head:?}"),
                ));
            }
            live_keys += u64::from(stored_live.is_some());
            keys.insert(key, rafter::codec::encode(&head).as_slice())
                .map_err(storage)?;
            Ok(())
        };
        for item in old.range::<(&[u8], u64)>(..).map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            let (key, revision) = k.value();
            let record: HistoryRecord = rafter::codec::decode(v.value(), RECORD_BYTES_MAX)
                .map_err(|e| corrupt("kv_history", format!("key {key:?} at {revision}: {e}")))?;
            if revision < 1 {
                return Err(corrupt("kv_history", format!("key {key:?} at revision 0")));
            }
            check_put(&record, revision)
                .map_err(|e| corrupt("kv_history", format!("key {key:?} at {revision}: {e}")))?;
            let prev = match previous.take() {
                Some((k, r, _)) if k.as_slice() == key => r,
                Some((k, _, head)) => {
                    finish(&k, head, &mut keys)?;
                    0
                }
                None => 0,
            };
            let head = match &record {
                HistoryRecord::Put {
                    create_revision,
                    version,
                    ..
                } => KeyEntry::Live(LiveEntry {
                    create_revision: *create_revision,
                    mod_revision: revision as i64,
                    version: *version,
                }),
                HistoryRecord::Tombstone => KeyEntry::Deleted {
                    revision: revision as i64,
                },
            };
            let stored = StoredRecord { prev, record };
            history
                .insert((revision, key), rafter::codec::encode(&stored).as_slice())
                .map_err(storage)?;
            previous = Some((key.to_vec(), revision, head));
        }
        if let Some((k, _, head)) = previous.take() {
            finish(&k, head, &mut keys)?;
        }
        // Every old live key had history (each was checked against it
        // above), so the counts agree unless a live key had none.
        let old_live_keys = live.range::<&[u8]>(..).map_err(storage)?.count() as u64;
        if old_live_keys != live_keys {
            return Err(corrupt(
                "kv_live",
                format!("{old_live_keys} live keys, {live_keys} with history"),
            ));
        }
    }
    txn.delete_table(OLD_HISTORY).map_err(storage)?;
    txn.delete_table(OLD_LIVE).map_err(storage)?;
    write_layout_marker(txn)?;
    tracing::info!("key space upgraded to history keyed by revision");
    Ok(true)
}

#[cfg(test)]
pub(crate) mod tests {
    use redb::{ReadableDatabase, ReadableTable};

    use super::super::request::*;
    use super::super::tables::{decode_history, decode_key_entry, SESSIONS};
    use super::super::tests::{put, range, Kv};
    use super::super::{Session, StoreReader, StoreWriter};
    use super::*;

    /// A store with every kind of history: versions, a range delete, a key
    /// deleted and put again in one txn, a compaction that keeps a put and
    /// drops a tombstone, a key deleted after it (still in `kv_keys`), and
    /// sessions.
    fn populated() -> Kv {
        let s = Kv::new();
        for i in 0..12 {
            s.apply(put(&format!("k{}", i % 5), &format!("v{i}")))
                .unwrap();
        }
        s.apply(WriteRequest::DeleteRange(DeleteRangeRequest {
            key: b"k1".to_vec(),
            range_end: b"k3".to_vec(),
            prev_kv: false,
        }))
        .unwrap();
        s.apply(WriteRequest::Txn(TxnRequest {
            success: vec![
                RequestOp::DeleteRange(DeleteRangeRequest {
                    key: b"k4".to_vec(),
                    range_end: vec![0],
                    prev_kv: false,
                }),
                RequestOp::Put(PutRequest {
                    key: b"k4".to_vec(),
                    value: b"again".to_vec(),
                    ..Default::default()
                }),
            ],
            ..Default::default()
        }))
        .unwrap();
        s.apply(WriteRequest::Compaction(CompactionRequest { revision: 9 }))
            .unwrap();
        s.apply(put("k1", "back")).unwrap();
        s.apply(WriteRequest::DeleteRange(DeleteRangeRequest {
            key: b"k0".to_vec(),
            range_end: Vec::new(),
            prev_kv: false,
        }))
        .unwrap();
        let txn = s.db.begin_write().unwrap();
        {
            let mut w = StoreWriter::open(&txn).unwrap();
            w.set_session(
                7,
                &Session {
                    last_seq: 3,
                    last_write_ms: 1000,
                    response: vec![1, 2, 3],
                },
            )
            .unwrap();
            w.finish().unwrap();
        }
        txn.commit().unwrap();
        s
    }

    /// Every answer the store gives: each revision from the compact one
    /// on, the digest and the snapshot dump.
    fn answers(s: &Kv) -> (Vec<RangeResponse>, String, Vec<u8>) {
        let txn = s.db.begin_read().unwrap();
        let reader = StoreReader::open(&txn).unwrap();
        let reads = (reader.compact_revision()..=reader.revision())
            .map(|revision| {
                reader
                    .range(&RangeRequest {
                        revision,
                        ..range("\0", "\0")
                    })
                    .unwrap()
                    .unwrap()
            })
            .collect();
        let mut dump = Vec::new();
        super::super::write_snapshot(&txn, &mut dump).unwrap();
        (reads, reader.digest().unwrap(), dump)
    }

    /// Rewrites the store's key space into the previous layout, with its
    /// table definitions and record encodings: what a store written by the
    /// previous release holds.
    pub(crate) fn downgrade(s: &Kv) {
        let txn = s.db.begin_write().unwrap();
        txn.delete_table(LAYOUT_MARKER).unwrap();
        {
            let history = txn.open_table(HISTORY).unwrap();
            let keys = txn.open_table(KEYS).unwrap();
            let mut old = txn.open_table(OLD_HISTORY).unwrap();
            let mut old_live = txn.open_table(OLD_LIVE).unwrap();
            for item in history.range::<(u64, &[u8])>(..).unwrap() {
                let (k, v) = item.unwrap();
                let (revision, key) = k.value();
                let stored = decode_history(key, revision, v.value()).unwrap();
                old.insert(
                    (key, revision),
                    rafter::codec::encode(&stored.record).as_slice(),
                )
                .unwrap();
            }
            for item in keys.range::<&[u8]>(..).unwrap() {
                let (k, v) = item.unwrap();
                if let Some(entry) = decode_key_entry(k.value(), v.value()).unwrap().live() {
                    old_live
                        .insert(k.value(), rafter::codec::encode(&entry).as_slice())
                        .unwrap();
                }
            }
        }
        txn.delete_table(HISTORY).unwrap();
        txn.delete_table(KEYS).unwrap();
        txn.commit().unwrap();
    }

    /// Opens a writer (which upgrades) and commits; the writer's error, if
    /// any, with nothing committed.
    pub(crate) fn open_writer(s: &Kv) -> Result<(), StoreError> {
        let txn = s.db.begin_write().unwrap();
        {
            let w = StoreWriter::open(&txn)?;
            w.check_invariants()?;
            w.finish()?;
        }
        txn.commit().unwrap();
        Ok(())
    }

    fn tables(s: &Kv) -> Vec<String> {
        let txn = s.db.begin_read().unwrap();
        let mut names: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_store_of_the_old_layout_opens_upgraded_with_the_same_answers() {
        let s = populated();
        let before = answers(&s);
        downgrade(&s);
        assert!(tables(&s).contains(&"kv_history".to_string()));
        // A reader cannot upgrade: it refuses rather than read nothing.
        assert!(matches!(
            StoreReader::open(&s.db.begin_read().unwrap()),
            Err(StoreError::Corrupt { .. })
        ));
        open_writer(&s).unwrap();
        assert_eq!(
            tables(&s),
            [
                "kv_history_by_revision",
                "kv_keys",
                "kv_live",
                "kv_meta",
                "kv_session_expiry",
                SESSIONS.name()
            ]
        );
        assert_old_build_refused(&s);
        let after = answers(&s);
        assert_eq!(after.0, before.0, "reads at every revision");
        assert_eq!(after.1, before.1, "digest");
        assert_eq!(after.2, before.2, "the snapshot dump");
        StoreReader::open(&s.db.begin_read().unwrap())
            .unwrap()
            .check_invariants()
            .unwrap();
        // And the upgraded store takes writes and compactions.
        s.apply(put("k1", "later")).unwrap();
        s.apply(WriteRequest::Compaction(CompactionRequest {
            revision: s.apply(put("k9", "x")).unwrap().0,
        }))
        .unwrap();
        // Opening again does not upgrade again.
        open_writer(&s).unwrap();
    }

    /// What a build of the old layout does first on open (its
    /// `RedbSink::open`): open `kv_history` and `kv_live` with the old
    /// types. It must fail, not find an empty key space.
    fn assert_old_build_refused(s: &Kv) {
        let txn = s.db.begin_write().unwrap();
        let old_history = txn.open_table(OLD_HISTORY).map(drop);
        assert!(old_history.is_ok(), "{old_history:?}");
        let old_live = txn.open_table(OLD_LIVE).map(drop);
        assert!(
            matches!(old_live, Err(redb::TableError::TableTypeMismatch { .. })),
            "{old_live:?}"
        );
        let marker = txn.open_table(LAYOUT_MARKER).unwrap();
        assert_eq!(
            marker.get(LAYOUT_KEY).unwrap().unwrap().value(),
            LAYOUT_VERSION
        );
    }

    #[test]
    fn a_build_of_the_old_layout_cannot_open_a_store_of_this_one() {
        // A fresh store, one written to, and one a snapshot was loaded into.
        let s = Kv::new();
        open_writer(&s).unwrap();
        assert_old_build_refused(&s);
        s.apply(put("a", "1")).unwrap();
        assert_old_build_refused(&s);
        let source = populated();
        let snapshot = answers(&source).2;
        let txn = s.db.begin_write().unwrap();
        super::super::load_snapshot(&txn, &mut snapshot.as_slice()).unwrap();
        txn.commit().unwrap();
        assert_old_build_refused(&s);
        assert_eq!(answers(&s), answers(&source));
    }

    #[test]
    fn a_corrupt_old_store_is_refused_not_upgraded() {
        let corrupted = |damage: &dyn Fn(&redb::WriteTransaction)| {
            let s = populated();
            downgrade(&s);
            let txn = s.db.begin_write().unwrap();
            damage(&txn);
            txn.commit().unwrap();
            let before = tables(&s);
            let result = open_writer(&s);
            assert!(
                matches!(result, Err(StoreError::Corrupt { .. })),
                "{result:?}"
            );
            assert_eq!(tables(&s), before, "a refused upgrade changed nothing");
        };
        corrupted(&|txn| {
            let mut old = txn.open_table(OLD_HISTORY).unwrap();
            old.insert((&b"k3"[..], 3u64), &b"\xff\xff\xff"[..])
                .unwrap();
        });
        // A live entry for `key` put once at revision 2.
        let live_at_2 = |txn: &redb::WriteTransaction, key: &[u8]| {
            let mut live = txn.open_table(OLD_LIVE).unwrap();
            let entry = LiveEntry {
                create_revision: 2,
                mod_revision: 2,
                version: 1,
            };
            live.insert(key, rafter::codec::encode(&entry).as_slice())
                .unwrap();
        };
        // A live entry that is not the newest record.
        corrupted(&|txn| live_at_2(txn, b"k3"));
        // A live key without history.
        corrupted(&|txn| live_at_2(txn, b"zz"));
        corrupted(&|txn| {
            // Both layouts at once.
            txn.open_table(KEYS).unwrap();
        });
    }
}
