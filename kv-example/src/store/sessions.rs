//! Client sessions for exactly-once writes (`shared/kv-api.md` section 4):
//! per client id, the last sequence number applied, the log time of that
//! write and the remembered response. The store keeps them in the same
//! transactions as the data they describe, so after a crash a session never
//! claims a write the key space does not hold, or the reverse.
//!
//! Tables: `kv_sessions` (client → [`Session`]) and `kv_session_expiry`
//! (`(last_write_ms, client)` → ()), the same sessions ordered by age, so
//! expiry reads only the sessions it removes.
//! Invariant: `kv_session_expiry` holds `(s.last_write_ms, c)` exactly for
//! each `(c, s)` in `kv_sessions`.

use redb::{ReadableTable, Table};
use serde::{Deserialize, Serialize};

use super::error::{storage, StoreError};
use super::tables::decode_session;
use super::RECORD_BYTES_MAX;

/// What the store remembers about one client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The sequence number of the client's last applied write.
    pub last_seq: u64,
    /// The log time (ms) of that write; the session expires by it.
    pub last_write_ms: u64,
    /// The response to that write, encoded by the caller (opaque here).
    #[serde(with = "serde_bytes")]
    pub response: Vec<u8>,
}

/// The session of `client`, if any.
pub(crate) fn get(
    sessions: &impl ReadableTable<u64, &'static [u8]>,
    client: u64,
) -> Result<Option<Session>, StoreError> {
    match sessions.get(client).map_err(storage)? {
        Some(g) => Ok(Some(decode_session(client, g.value())?)),
        None => Ok(None),
    }
}

/// Stores `session` for `client`, moving its expiry entry.
pub(crate) fn set(
    sessions: &mut Table<'_, u64, &'static [u8]>,
    expiry: &mut Table<'_, (u64, u64), ()>,
    client: u64,
    session: &Session,
) -> Result<(), StoreError> {
    let bytes = rafter::codec::encode(session);
    if bytes.len() > RECORD_BYTES_MAX {
        return Err(StoreError::SessionTooLarge {
            len: bytes.len(),
            limit: RECORD_BYTES_MAX,
        });
    }
    let old = sessions
        .insert(client, bytes.as_slice())
        .map_err(storage)?
        .map(|g| g.value().to_vec());
    if let Some(old) = old {
        let old = decode_session(client, &old)?;
        expiry
            .remove((old.last_write_ms, client))
            .map_err(storage)?;
    }
    expiry
        .insert((session.last_write_ms, client), ())
        .map_err(storage)?;
    Ok(())
}

/// Removes the session of `client` and its expiry entry, if any.
pub(crate) fn remove(
    sessions: &mut Table<'_, u64, &'static [u8]>,
    expiry: &mut Table<'_, (u64, u64), ()>,
    client: u64,
) -> Result<(), StoreError> {
    let old = sessions
        .remove(client)
        .map_err(storage)?
        .map(|g| g.value().to_vec());
    if let Some(old) = old {
        let old = decode_session(client, &old)?;
        expiry
            .remove((old.last_write_ms, client))
            .map_err(storage)?;
    }
    Ok(())
}

/// Removes every session whose last write is more than `ttl_ms` before
/// `now_ms` (`last_write_ms < now_ms - ttl_ms`) and returns how many. Reads
/// only the expired entries of the age index, plus one seek.
pub(crate) fn expire(
    sessions: &mut Table<'_, u64, &'static [u8]>,
    expiry: &mut Table<'_, (u64, u64), ()>,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<u64, StoreError> {
    let cutoff = now_ms.saturating_sub(ttl_ms);
    let mut clients = Vec::new();
    for item in expiry
        .extract_from_if(..(cutoff, 0u64), |_, _| true)
        .map_err(storage)?
    {
        let (k, _) = item.map_err(storage)?;
        clients.push(k.value().1);
    }
    for client in &clients {
        sessions.remove(*client).map_err(storage)?;
    }
    Ok(clients.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::super::StoreWriter;
    use super::*;

    fn session(seq: u64, ms: u64) -> Session {
        Session {
            last_seq: seq,
            last_write_ms: ms,
            response: vec![seq as u8; 3],
        }
    }

    #[test]
    fn sessions_expire_by_age_and_a_write_renews_them() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let db = redb::Database::create(file.path()).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut w = StoreWriter::open(&txn).unwrap();
            assert_eq!(w.session(1).unwrap(), None);
            w.set_session(1, &session(1, 100)).unwrap();
            w.set_session(2, &session(1, 200)).unwrap();
            w.set_session(3, &session(1, 300)).unwrap();
            // Client 1 writes again at 250: its old age entry must go.
            w.set_session(1, &session(2, 250)).unwrap();
            assert_eq!(w.session(1).unwrap(), Some(session(2, 250)));
            // ttl 100 at 340: cutoff 240, only client 2 (200) is older.
            assert_eq!(w.expire_sessions(340, 100).unwrap(), 1);
            assert_eq!(w.session(2).unwrap(), None);
            assert_eq!(w.session(1).unwrap(), Some(session(2, 250)));
            // Nothing left at or before the cutoff: nothing removed.
            assert_eq!(w.expire_sessions(340, 100).unwrap(), 0);
            // A cutoff equal to a write time keeps it (strictly older goes).
            assert_eq!(w.expire_sessions(350, 100).unwrap(), 0);
            assert_eq!(w.expire_sessions(351, 100).unwrap(), 1);
            assert_eq!(w.session(1).unwrap(), None);
            assert_eq!(w.session(3).unwrap(), Some(session(1, 300)));
            w.check_invariants().unwrap();
        }
        txn.commit().unwrap();
    }
}
