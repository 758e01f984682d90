//! The full walk that checks the layout's invariants (listed in
//! `store/mod.rs`). O(store size): run by tests and after loading a
//! snapshot, never on the apply path.

use redb::ReadableTable;

use super::error::{storage, StoreError};
use super::tables::{decode_history, decode_live, decode_session, live_value, HistoryRecord};

fn corrupt(table: &'static str, detail: String) -> StoreError {
    StoreError::Corrupt { table, detail }
}

/// Checks every table against the others and against `revision` and
/// `compact`.
pub(crate) fn check(
    history: &impl ReadableTable<(&'static [u8], u64), &'static [u8]>,
    live: &impl ReadableTable<&'static [u8], &'static [u8]>,
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
    // History: per key, records in revision order form a valid chain, at
    // most one at or below the compact revision (and then a put), and the
    // newest one agrees with the live index.
    let mut previous: Option<(Vec<u8>, i64, HistoryRecord)> = None;
    let finish_key = |key: &[u8], newest_rev: i64, newest: &HistoryRecord| {
        let entry = match live.get(key).map_err(storage)? {
            Some(g) => Some(decode_live(key, g.value())?),
            None => None,
        };
        match (newest, entry) {
            (HistoryRecord::Tombstone, None) => Ok(()),
            (HistoryRecord::Put { .. }, Some(e)) if e.mod_revision == newest_rev => Ok(()),
            (newest, entry) => Err(corrupt(
                "kv_live",
                format!("key {key:?}: newest history {newest:?} at {newest_rev}, live {entry:?}"),
            )),
        }
    };
    for item in history.range::<(&[u8], u64)>(..).map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        let (key, rev) = k.value();
        let rev = rev as i64;
        let record = decode_history(key, v.value())?;
        if rev < 1 || rev > revision {
            return Err(corrupt(
                "kv_history",
                format!("key {key:?}: revision {rev}"),
            ));
        }
        let same_key = previous
            .as_ref()
            .is_some_and(|(k, _, _)| k.as_slice() == key);
        if !same_key {
            if let Some((k, r, rec)) = &previous {
                finish_key(k, *r, rec)?;
            }
        }
        match (&record, previous.as_ref().filter(|_| same_key)) {
            (HistoryRecord::Tombstone, None) if rev <= compact => {
                return Err(corrupt(
                    "kv_history",
                    format!("key {key:?}: tombstone at {rev} kept by compaction {compact}"),
                ))
            }
            (_, Some((_, prev_rev, _))) if *prev_rev <= compact && rev <= compact => {
                return Err(corrupt(
                    "kv_history",
                    format!("key {key:?}: records at {prev_rev} and {rev} <= compact {compact}"),
                ))
            }
            (
                HistoryRecord::Put {
                    create_revision,
                    version,
                    ..
                },
                Some((
                    _,
                    _,
                    HistoryRecord::Put {
                        create_revision: prev_create,
                        version: prev_version,
                        ..
                    },
                )),
                // A put follows the previous put of its generation, or starts a
                // new one at its own revision: a txn may delete a key and put
                // it again in one revision (etcd 3.4 allows it), and the put's
                // record then replaces the tombstone at that revision.
            ) if (*create_revision, *version) != (*prev_create, prev_version + 1)
                && (*create_revision, *version) != (rev, 1) =>
            {
                return Err(corrupt(
                    "kv_history",
                    format!("key {key:?}: put at {rev} does not follow the previous one"),
                ))
            }
            (
                HistoryRecord::Put {
                    create_revision,
                    version,
                    ..
                },
                Some((_, _, HistoryRecord::Tombstone)),
            ) if (*create_revision, *version) != (rev, 1) => {
                return Err(corrupt(
                    "kv_history",
                    format!("key {key:?}: put at {rev} after a delete is not a creation"),
                ))
            }
            (
                HistoryRecord::Put {
                    create_revision,
                    version,
                    ..
                },
                None,
            ) if *create_revision > rev || (*version == 1) != (*create_revision == rev) => {
                return Err(corrupt(
                    "kv_history",
                    format!("key {key:?}: first put at {rev} is {record:?}"),
                ))
            }
            _ => {}
        }
        previous = Some((key.to_vec(), rev, record));
    }
    if let Some((k, r, rec)) = &previous {
        finish_key(k, *r, rec)?;
    }
    // Live: every entry valid and its value readable (which also means its
    // key has history; that it is the newest put was checked above).
    for item in live.range::<&[u8]>(..).map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        let entry = decode_live(k.value(), v.value())?;
        if entry.mod_revision > revision {
            return Err(corrupt(
                "kv_live",
                format!("key {:?}: {entry:?} above revision {revision}", k.value()),
            ));
        }
        live_value(history, k.value(), &entry)?;
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
