//! Dumping the whole store to a byte stream and loading it back (for Raft
//! snapshots: the state machine wraps these bytes with its own metadata).
//!
//! Format (all integers little-endian):
//!
//! ```text
//! magic        8 bytes  "RKVSNAP\0"
//! version      u32      SNAPSHOT_FORMAT_VERSION
//! records      each: u32 length, then that many bytes of
//!                rafter::codec::encode(&SnapshotRecord)
//!              in this order: one Meta; History in (key, revision) order;
//!              Live in key order; Session in client order; one End
//!              carrying the number of records before it
//! trailer      u32      CRC-32 of every byte before it
//! ```
//!
//! The session age index is not dumped: it is rebuilt from the sessions.
//! Loading checks the magic, version, every length against
//! [`SNAPSHOT_RECORD_BYTES_MAX`] before allocating, every record's decoding
//! and order, the record count, the trailer, that nothing follows it, and
//! then the store's full invariants.

use std::io::{Read, Write};

use redb::{ReadTransaction, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::error::{storage, SnapshotError, StoreError};
use super::invariants;
use super::reader::StoreReader;
use super::sessions::Session;
use super::source::Tables;
use super::tables::{
    decode_key_entry, decode_session, HistoryRecord, KeyEntry, LiveEntry, StoredRecord, HISTORY,
    KEYS, META, META_COMPACT_REVISION, META_REVISION, REVISION_INITIAL, SESSIONS, SESSION_EXPIRY,
};
use super::upgrade::{write_layout_marker, OLD_HISTORY, OLD_LIVE};
use super::RECORD_BYTES_MAX;

const MAGIC: [u8; 8] = *b"RKVSNAP\0";
/// The snapshot format this build writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// The largest record a snapshot may hold: a stored record plus its key and
/// framing. A longer length prefix is refused before anything is allocated
/// (a corrupt prefix cannot make the loader allocate more than this).
pub const SNAPSHOT_RECORD_BYTES_MAX: usize = 2 * RECORD_BYTES_MAX + 1024;

/// One record of the stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum SnapshotRecord {
    Meta {
        revision: i64,
        compact_revision: i64,
    },
    History {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        revision: u64,
        record: HistoryRecord,
    },
    Live {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        entry: LiveEntry,
    },
    Session {
        client: u64,
        session: Session,
    },
    End {
        records: u64,
    },
}

/// A writer that counts and checksums what passes through.
struct Framed<'w, W: Write> {
    out: &'w mut W,
    crc: crc32fast::Hasher,
    bytes: u64,
    records: u64,
}

impl<W: Write> Framed<'_, W> {
    fn raw(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.out.write_all(bytes)?;
        self.crc.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    fn record(&mut self, record: &SnapshotRecord) -> Result<(), SnapshotError> {
        let body = rafter::codec::encode(record);
        // Every stored record decoded under RECORD_BYTES_MAX, so its record
        // here (plus key and framing) is under the larger snapshot limit.
        assert!(
            body.len() <= SNAPSHOT_RECORD_BYTES_MAX,
            "snapshot record of {} bytes",
            body.len()
        );
        self.raw(&(body.len() as u32).to_le_bytes())?;
        self.raw(&body)?;
        self.records += 1;
        Ok(())
    }
}

/// Writes every store table as seen by `txn` to `out`, returning the bytes
/// written. A store no writer opened dumps as a fresh one.
pub fn write_snapshot(txn: &ReadTransaction, out: &mut impl Write) -> Result<u64, StoreError> {
    let reader = StoreReader::open(txn)?;
    let mut framed = Framed {
        out,
        crc: crc32fast::Hasher::new(),
        bytes: 0,
        records: 0,
    };
    framed.raw(&MAGIC)?;
    framed.raw(&SNAPSHOT_FORMAT_VERSION.to_le_bytes())?;
    framed.record(&SnapshotRecord::Meta {
        revision: reader.revision(),
        compact_revision: reader.compact_revision(),
    })?;
    if let Some(t) = reader.tables() {
        // The stream keeps the format of the `(key, revision)` layout, so
        // builds of either layout exchange snapshots: per key (in key
        // order), its chain's revisions collected newest first, then its
        // records oldest first. Memory: 8 bytes per record of one key.
        let tables = Tables {
            history: &t.history,
            keys: &t.keys,
        };
        let mut revisions: Vec<i64> = Vec::new();
        for item in t.keys.range::<&[u8]>(..).map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            let key = k.value();
            let entry = decode_key_entry(key, v.value())?;
            revisions.clear();
            let mut at = entry.newest();
            while at > 0 {
                revisions.push(at);
                at = tables.chained(key, at)?.prev as i64;
            }
            for &revision in revisions.iter().rev() {
                framed.record(&SnapshotRecord::History {
                    key: key.to_vec(),
                    revision: revision as u64,
                    record: tables.chained(key, revision)?.record,
                })?;
            }
        }
        for item in t.keys.range::<&[u8]>(..).map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            if let Some(entry) = decode_key_entry(k.value(), v.value())?.live() {
                framed.record(&SnapshotRecord::Live {
                    key: k.value().to_vec(),
                    entry,
                })?;
            }
        }
        for item in t.sessions.range::<u64>(..).map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            framed.record(&SnapshotRecord::Session {
                client: k.value(),
                session: decode_session(k.value(), v.value())?,
            })?;
        }
    }
    let records = framed.records;
    framed.record(&SnapshotRecord::End { records })?;
    let crc = framed.crc.clone().finalize();
    framed
        .out
        .write_all(&crc.to_le_bytes())
        .map_err(SnapshotError::Io)?;
    framed.out.flush().map_err(SnapshotError::Io)?;
    Ok(framed.bytes + 4)
}

/// A reader that checksums what passes through; EOF is [`SnapshotError::Truncated`].
struct Unframed<'r, R: Read> {
    input: &'r mut R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Unframed<'_, R> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), SnapshotError> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => SnapshotError::Truncated,
            _ => SnapshotError::Io(e),
        })?;
        self.crc.update(buf);
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        let mut b = [0u8; 4];
        self.exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}

/// Which section of the stream the loader is in; sections only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Start,
    History,
    Live,
    Sessions,
}

/// Replaces every store table in `txn` with the snapshot read from `input`.
/// On any error the tables are left half-written: the caller must drop the
/// transaction without committing it (it commits only on `Ok`).
pub fn load_snapshot(txn: &WriteTransaction, input: &mut impl Read) -> Result<(), StoreError> {
    txn.delete_table(HISTORY).map_err(storage)?;
    txn.delete_table(KEYS).map_err(storage)?;
    // A store never opened by a writer of this build may still hold the old
    // layout, which a later open would otherwise "upgrade" over this load.
    txn.delete_table(OLD_HISTORY).map_err(storage)?;
    txn.delete_table(OLD_LIVE).map_err(storage)?; // Or the layout marker, by name.
    write_layout_marker(txn)?;
    txn.delete_table(SESSIONS).map_err(storage)?;
    txn.delete_table(META).map_err(storage)?;
    txn.delete_table(SESSION_EXPIRY).map_err(storage)?;
    let mut history = txn.open_table(HISTORY).map_err(storage)?;
    let mut keys = txn.open_table(KEYS).map_err(storage)?;
    let mut meta = txn.open_table(META).map_err(storage)?;
    let mut sessions = txn.open_table(SESSIONS).map_err(storage)?;
    let mut expiry = txn.open_table(SESSION_EXPIRY).map_err(storage)?;

    let mut input = Unframed {
        input,
        crc: crc32fast::Hasher::new(),
    };
    let mut magic = [0u8; 8];
    input.exact(&mut magic)?;
    if magic != MAGIC {
        return Err(SnapshotError::BadMagic.into());
    }
    let version = input.u32()?;
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedVersion {
            found: version,
            supported: SNAPSHOT_FORMAT_VERSION,
        }
        .into());
    }
    let mut index: u64 = 0;
    let mut section = Section::Start;
    let mut revisions: Option<(i64, i64)> = None;
    let mut last_history: Option<(Vec<u8>, u64)> = None;
    let mut last_live: Option<Vec<u8>> = None;
    let mut last_client: Option<u64> = None;
    loop {
        let invalid = |detail: String| SnapshotError::Invalid { index, detail };
        let len = input.u32()?;
        if len as usize > SNAPSHOT_RECORD_BYTES_MAX {
            return Err(SnapshotError::RecordTooLarge {
                len: len.into(),
                limit: SNAPSHOT_RECORD_BYTES_MAX,
            }
            .into());
        }
        let mut body = vec![0u8; len as usize];
        input.exact(&mut body)?;
        let record: SnapshotRecord = rafter::codec::decode(&body, SNAPSHOT_RECORD_BYTES_MAX)
            .map_err(|e| invalid(e.to_string()))?;
        let moved = |to: Section, section: &mut Section| -> Result<(), SnapshotError> {
            if *section > to || revisions.is_none() {
                return Err(SnapshotError::Invalid {
                    index,
                    detail: format!("{to:?} record out of order"),
                });
            }
            *section = to;
            Ok(())
        };
        match record {
            SnapshotRecord::Meta {
                revision,
                compact_revision,
            } => {
                if index != 0 {
                    return Err(invalid("meta record not first".into()).into());
                }
                if revision < REVISION_INITIAL
                    || compact_revision < 0
                    || compact_revision > revision
                {
                    return Err(invalid(format!(
                        "revision {revision}, compact revision {compact_revision}"
                    ))
                    .into());
                }
                revisions = Some((revision, compact_revision));
                meta.insert(META_REVISION, revision).map_err(storage)?;
                meta.insert(META_COMPACT_REVISION, compact_revision)
                    .map_err(storage)?;
            }
            SnapshotRecord::History {
                key,
                revision,
                record,
            } => {
                moved(Section::History, &mut section)?;
                let next = (key, revision);
                if last_history.as_ref().is_some_and(|last| *last >= next) {
                    return Err(invalid("history records out of order".into()).into());
                }
                if revision < 1 {
                    return Err(invalid("history record at revision 0".into()).into());
                }
                // The chain: the previous record of the same key (order
                // checked above), else none.
                let prev = match &last_history {
                    Some((last_key, last_revision)) if *last_key == next.0 => *last_revision,
                    _ => 0,
                };
                // A key whose newest record is a tombstone has no Live
                // record: its kv_keys entry comes from the history (a later
                // put of the key removes it; the Live record then adds it).
                let (key, revision) = (next.0.as_slice(), next.1);
                match &record {
                    HistoryRecord::Tombstone => {
                        let deleted = KeyEntry::Deleted {
                            revision: revision as i64,
                        };
                        keys.insert(key, rafter::codec::encode(&deleted).as_slice())
                            .map_err(storage)?;
                    }
                    HistoryRecord::Put { .. } => {
                        if prev != 0 {
                            keys.remove(key).map_err(storage)?;
                        }
                    }
                }
                let stored = StoredRecord { prev, record };
                history
                    .insert((revision, key), rafter::codec::encode(&stored).as_slice())
                    .map_err(storage)?;
                last_history = Some(next);
            }
            SnapshotRecord::Live { key, entry } => {
                moved(Section::Live, &mut section)?;
                if last_live.as_ref().is_some_and(|last| *last >= key) {
                    return Err(invalid("live records out of order".into()).into());
                }
                if !entry.valid() {
                    return Err(invalid(format!("live record {entry:?}")).into());
                }
                // Replaces a Deleted entry (if the history ends in a
                // tombstone): the invariant check below then refuses it.
                let entry = KeyEntry::Live(entry);
                keys.insert(key.as_slice(), rafter::codec::encode(&entry).as_slice())
                    .map_err(storage)?;
                last_live = Some(key);
            }
            SnapshotRecord::Session { client, session } => {
                moved(Section::Sessions, &mut section)?;
                if last_client.is_some_and(|last| last >= client) {
                    return Err(invalid("session records out of order".into()).into());
                }
                sessions
                    .insert(client, rafter::codec::encode(&session).as_slice())
                    .map_err(storage)?;
                expiry
                    .insert((session.last_write_ms, client), ())
                    .map_err(storage)?;
                last_client = Some(client);
            }
            SnapshotRecord::End { records } => {
                if records != index || revisions.is_none() {
                    return Err(invalid(format!("end record counts {records} records")).into());
                }
                break;
            }
        }
        index += 1;
    }
    let computed = input.crc.clone().finalize();
    let mut trailer = [0u8; 4];
    input
        .input
        .read_exact(&mut trailer)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => SnapshotError::Truncated,
            _ => SnapshotError::Io(e),
        })?;
    let expected = u32::from_le_bytes(trailer);
    if expected != computed {
        return Err(SnapshotError::Checksum { expected, computed }.into());
    }
    let mut extra = [0u8; 1];
    if input.input.read(&mut extra).map_err(SnapshotError::Io)? != 0 {
        return Err(SnapshotError::Trailing.into());
    }
    // Invariant: `revisions` is set, or the End record would have failed.
    let (revision, compact) = revisions.unwrap_or((REVISION_INITIAL, 0));
    invariants::check(&history, &keys, &sessions, &expiry, revision, compact).map_err(|e| {
        SnapshotError::Invalid {
            index,
            detail: e.to_string(),
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::request::*;
    use super::super::{StoreReader, StoreWriter};
    use super::*;
    use redb::{Database, ReadableDatabase};

    fn db() -> (tempfile::NamedTempFile, Database) {
        let file = tempfile::NamedTempFile::new().unwrap();
        let db = Database::create(file.path()).unwrap();
        (file, db)
    }

    fn put(key: &str, value: &str) -> WriteRequest {
        WriteRequest::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
    }

    /// A store with history, deletes, a compaction and sessions.
    fn populated() -> (tempfile::NamedTempFile, Database) {
        let (file, db) = db();
        let txn = db.begin_write().unwrap();
        {
            let mut w = StoreWriter::open(&txn).unwrap();
            for i in 0..20 {
                w.apply(&put(&format!("k{}", i % 7), &format!("v{i}")))
                    .unwrap()
                    .unwrap();
            }
            w.apply(&WriteRequest::DeleteRange(DeleteRangeRequest {
                key: b"k2".to_vec(),
                range_end: b"k4".to_vec(),
                prev_kv: false,
            }))
            .unwrap()
            .unwrap();
            w.apply(&WriteRequest::Compaction(CompactionRequest {
                revision: 10,
            }))
            .unwrap()
            .unwrap();
            w.apply(&put("k3", "again")).unwrap().unwrap();
            w.set_session(
                7,
                &Session {
                    last_seq: 3,
                    last_write_ms: 1000,
                    response: vec![1, 2, 3],
                },
            )
            .unwrap();
            w.set_session(9, &Session::default()).unwrap();
            w.finish().unwrap();
        }
        txn.commit().unwrap();
        (file, db)
    }

    fn dump(db: &Database) -> Vec<u8> {
        let mut out = Vec::new();
        let n = write_snapshot(&db.begin_read().unwrap(), &mut out).unwrap();
        assert_eq!(n, out.len() as u64);
        out
    }

    fn digest(db: &Database) -> String {
        StoreReader::open(&db.begin_read().unwrap())
            .unwrap()
            .digest()
            .unwrap()
    }

    /// Loads `bytes` into `db` and commits only on success.
    fn load(db: &Database, bytes: &[u8]) -> Result<(), StoreError> {
        let txn = db.begin_write().unwrap();
        load_snapshot(&txn, &mut &bytes[..])?;
        txn.commit().unwrap();
        Ok(())
    }

    #[test]
    fn snapshot_round_trip_gives_the_same_digest_history_and_sessions() {
        let (_f, source) = populated();
        let bytes = dump(&source);
        // Load over a store that already holds other data: it is replaced.
        let (_g, target) = populated();
        {
            let txn = target.begin_write().unwrap();
            let mut w = StoreWriter::open(&txn).unwrap();
            w.apply(&put("other", "x")).unwrap().unwrap();
            w.set_session(100, &Session::default()).unwrap();
            drop(w);
            txn.commit().unwrap();
        }
        assert_ne!(digest(&source), digest(&target));
        load(&target, &bytes).unwrap();
        assert_eq!(digest(&source), digest(&target));
        assert_eq!(
            dump(&target),
            bytes,
            "a reloaded store dumps the same bytes"
        );
        let r = StoreReader::open(&target.begin_read().unwrap()).unwrap();
        r.check_invariants().unwrap();
        assert_eq!(r.session(100).unwrap(), None);
        assert_eq!(r.session(7).unwrap().unwrap().response, vec![1, 2, 3]);
        // History survives: a read at the compact revision still answers.
        let old = r
            .range(&RangeRequest {
                key: b"k".to_vec(),
                range_end: vec![0],
                revision: 10,
                ..Default::default()
            })
            .unwrap()
            .unwrap();
        assert_eq!(old.count, 7);
        // And a fresh store round-trips too.
        let (_h, empty) = db();
        let empty_bytes = dump(&empty);
        load(&target, &empty_bytes).unwrap();
        assert_eq!(digest(&target), digest(&empty));
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused() {
        let (_f, source) = populated();
        let bytes = dump(&source);
        let (_g, target) = populated();
        let before = digest(&target);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x41;
            assert!(load(&target, &bad).is_err(), "flipped byte {i} accepted");
        }
        for len in 0..bytes.len() {
            assert!(
                load(&target, &bytes[..len]).is_err(),
                "truncation to {len} accepted"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            load(&target, &longer),
            Err(StoreError::Snapshot(SnapshotError::Trailing))
        ));
        assert_eq!(digest(&target), before, "a refused load changed the store");
    }

    #[test]
    fn wrong_magic_version_and_oversized_records_are_named() {
        let (_f, source) = populated();
        let bytes = dump(&source);
        let (_g, target) = db();
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(matches!(
            load(&target, &bad),
            Err(StoreError::Snapshot(SnapshotError::BadMagic))
        ));
        let mut bad = bytes.clone();
        bad[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(
            load(&target, &bad),
            Err(StoreError::Snapshot(SnapshotError::UnsupportedVersion {
                found: 2,
                ..
            }))
        ));
        let mut bad = bytes.clone();
        bad[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            load(&target, &bad),
            Err(StoreError::Snapshot(SnapshotError::RecordTooLarge { .. }))
        ));
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            load(&target, &bad),
            Err(StoreError::Snapshot(SnapshotError::Checksum { .. }))
        ));
        assert!(matches!(
            load(&target, &bytes[..bytes.len() - 2]),
            Err(StoreError::Snapshot(SnapshotError::Truncated))
        ));
    }

    /// A correctly framed and checksummed snapshot of `records` plus End
    /// (counting `end_count` records).
    fn framed_snapshot(records: &[SnapshotRecord], end_count: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut framed = Framed {
            out: &mut out,
            crc: crc32fast::Hasher::new(),
            bytes: 0,
            records: 0,
        };
        framed.raw(&MAGIC).unwrap();
        framed.raw(&SNAPSHOT_FORMAT_VERSION.to_le_bytes()).unwrap();
        for record in records {
            framed.record(record).unwrap();
        }
        framed
            .record(&SnapshotRecord::End { records: end_count })
            .unwrap();
        let crc = framed.crc.clone().finalize();
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn meta(revision: i64) -> SnapshotRecord {
        SnapshotRecord::Meta {
            revision,
            compact_revision: 0,
        }
    }

    fn history(key: &str, revision: u64, version: i64) -> SnapshotRecord {
        SnapshotRecord::History {
            key: key.into(),
            revision,
            record: HistoryRecord::Put {
                create_revision: 2,
                version,
                value: b"v".to_vec(),
            },
        }
    }

    fn live(key: &str, mod_revision: i64, version: i64) -> SnapshotRecord {
        SnapshotRecord::Live {
            key: key.into(),
            entry: LiveEntry {
                create_revision: 2,
                mod_revision,
                version,
            },
        }
    }

    #[test]
    fn a_well_framed_snapshot_with_bad_content_is_refused() {
        let (_g, target) = db();
        let refused = |records: Vec<SnapshotRecord>, end: u64, why: &str| {
            let bytes = framed_snapshot(&records, end);
            match load(&target, &bytes) {
                Err(StoreError::Snapshot(SnapshotError::Invalid { .. })) => {}
                other => panic!("{why}: {other:?}"),
            }
        };
        // The good one loads, so each refusal below is about its one flaw.
        let good = vec![
            meta(3),
            history("a", 2, 1),
            history("a", 3, 2),
            live("a", 3, 2),
        ];
        load(&target, &framed_snapshot(&good, 4)).unwrap();
        refused(
            vec![meta(3), live("ghost", 3, 2)],
            2,
            "live key without history",
        );
        refused(
            vec![
                meta(3),
                history("a", 2, 1),
                history("a", 2, 1),
                live("a", 2, 1),
            ],
            4,
            "duplicate history record",
        );
        refused(
            vec![
                meta(3),
                history("a", 3, 2),
                history("a", 2, 1),
                live("a", 3, 2),
            ],
            4,
            "history out of order",
        );
        refused(
            vec![
                meta(3),
                live("a", 3, 2),
                history("a", 2, 1),
                history("a", 3, 2),
            ],
            4,
            "live before history",
        );
        refused(
            vec![history("a", 2, 1), meta(3), live("a", 2, 1)],
            3,
            "meta not first",
        );
        refused(vec![], 0, "no meta");
        refused(good.clone(), 3, "wrong end count");
        refused(
            vec![
                meta(2),
                history("a", 2, 1),
                history("a", 3, 2),
                live("a", 3, 2),
            ],
            4,
            "history above the revision",
        );
        refused(
            vec![
                meta(3),
                history("a", 2, 1),
                history("a", 3, 3),
                live("a", 3, 3),
            ],
            4,
            "version chain broken",
        );
        refused(
            vec![meta(3), history("a", 2, 1), history("a", 3, 2)],
            3,
            "live index missing a key",
        );
    }
}
