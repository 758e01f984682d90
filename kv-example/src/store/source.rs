//! [`Source`]: the reads the key-space rules need, over either the redb
//! tables alone ([`Tables`]) or redb plus the in-memory layers of writes not
//! yet flushed to it (`layers.rs`). `range.rs`, `txn.rs` and the writer are
//! written against this trait, so one implementation of etcd's rules serves
//! both.

use redb::ReadableTable;

use super::error::{storage, StoreError};
use super::range::KeySpan;
use super::tables::{
    decode_history, decode_key_entry, rev_key, HistoryRecord, KeyEntry, LiveEntry, StoredRecord,
};

/// Point and range reads of the live index and the history, at one state.
pub(crate) trait Source {
    /// The live entry of `key`, if the key is live.
    fn live_get(&self, key: &[u8]) -> Result<Option<LiveEntry>, StoreError>;

    /// The live keys in `span`, in key order.
    fn live_range(&self, span: KeySpan<'_>) -> Result<Vec<(Vec<u8>, LiveEntry)>, StoreError>;

    /// The history record of `key` at exactly `revision`.
    fn history_get(&self, key: &[u8], revision: i64) -> Result<Option<HistoryRecord>, StoreError>;

    /// The newest record of `key` at or below `revision`, with its revision.
    /// Over redb this walks the key's chain back from its newest record:
    /// one point read per record of the key above `revision`, plus one.
    fn record_at(
        &self,
        key: &[u8],
        revision: i64,
    ) -> Result<Option<(i64, HistoryRecord)>, StoreError>;

    /// The first key at or after `from` with any history.
    fn next_history_key(&self, from: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
}

/// The value of a live key: the put record at `(mod_revision, key)`, which
/// must agree with the live entry.
pub(crate) fn live_value(
    source: &impl Source,
    key: &[u8],
    entry: &LiveEntry,
) -> Result<Vec<u8>, StoreError> {
    match source.history_get(key, entry.mod_revision)? {
        Some(HistoryRecord::Put {
            create_revision,
            version,
            value,
        }) if create_revision == entry.create_revision && version == entry.version => Ok(value),
        other => Err(StoreError::Corrupt {
            table: "kv_keys",
            detail: format!("key {key:?}: live {entry:?} but history {other:?}"),
        }),
    }
}

/// The history and key tables of one redb transaction, read or write.
pub(crate) struct Tables<'a, H, K> {
    pub(crate) history: &'a H,
    pub(crate) keys: &'a K,
}

impl<H, K> Tables<'_, H, K>
where
    H: ReadableTable<(u64, &'static [u8]), &'static [u8]>,
    K: ReadableTable<&'static [u8], &'static [u8]>,
{
    /// The [`KeyEntry`] of `key`: the head of its chain, if it has history.
    pub(crate) fn key_entry(&self, key: &[u8]) -> Result<Option<KeyEntry>, StoreError> {
        match self.keys.get(key).map_err(storage)? {
            Some(g) => Ok(Some(decode_key_entry(key, g.value())?)),
            None => Ok(None),
        }
    }

    /// The stored record of `key` at exactly `revision`, if any.
    pub(crate) fn stored(
        &self,
        key: &[u8],
        revision: i64,
    ) -> Result<Option<StoredRecord>, StoreError> {
        let revision = rev_key(revision);
        match self.history.get((revision, key)).map_err(storage)? {
            Some(g) => Ok(Some(decode_history(key, revision, g.value())?)),
            None => Ok(None),
        }
    }

    /// The stored record of `key` at `revision`, which its chain names:
    /// missing means damage.
    pub(crate) fn chained(&self, key: &[u8], revision: i64) -> Result<StoredRecord, StoreError> {
        self.stored(key, revision)?
            .ok_or_else(|| StoreError::Corrupt {
                table: "kv_history_by_revision",
                detail: format!("key {key:?}: its chain names a record at {revision}, missing"),
            })
    }
}

impl<H, K> Source for Tables<'_, H, K>
where
    H: ReadableTable<(u64, &'static [u8]), &'static [u8]>,
    K: ReadableTable<&'static [u8], &'static [u8]>,
{
    fn live_get(&self, key: &[u8]) -> Result<Option<LiveEntry>, StoreError> {
        Ok(self.key_entry(key)?.and_then(|entry| entry.live()))
    }

    /// Walks `kv_keys` over the span, skipping deleted keys (those whose
    /// tombstone compaction has not reached yet).
    fn live_range(&self, span: KeySpan<'_>) -> Result<Vec<(Vec<u8>, LiveEntry)>, StoreError> {
        let mut out = Vec::new();
        let iter = match span {
            KeySpan::Empty => return Ok(out),
            KeySpan::Single(key) => {
                if let Some(entry) = self.live_get(key)? {
                    out.push((key.to_vec(), entry));
                }
                return Ok(out);
            }
            KeySpan::From(start) => self.keys.range::<&[u8]>(start..).map_err(storage)?,
            KeySpan::Between(start, end) => {
                self.keys.range::<&[u8]>(start..end).map_err(storage)?
            }
        };
        for item in iter {
            let (k, v) = item.map_err(storage)?;
            let key = k.value();
            if let Some(entry) = decode_key_entry(key, v.value())?.live() {
                out.push((key.to_vec(), entry));
            }
        }
        Ok(out)
    }

    fn history_get(&self, key: &[u8], revision: i64) -> Result<Option<HistoryRecord>, StoreError> {
        Ok(self.stored(key, revision)?.map(|stored| stored.record))
    }

    /// Walks the key's chain back from its newest record: one point read
    /// per record of the key above `revision`, plus one (so a read at or
    /// above the newest record costs one `kv_keys` and one history read).
    /// Every step goes to a strictly lower revision (checked on decode), so
    /// the walk ends even over damaged data.
    fn record_at(
        &self,
        key: &[u8],
        revision: i64,
    ) -> Result<Option<(i64, HistoryRecord)>, StoreError> {
        let Some(entry) = self.key_entry(key)? else {
            return Ok(None);
        };
        let mut at = entry.newest();
        while at > 0 {
            let stored = self.chained(key, at)?;
            if at <= revision {
                return Ok(Some((at, stored.record)));
            }
            debug_assert!((stored.prev as i64) < at, "decode checks prev < revision");
            at = stored.prev as i64;
        }
        Ok(None)
    }

    fn next_history_key(&self, from: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut iter = self.keys.range::<&[u8]>(from..).map_err(storage)?;
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (k, _) = item.map_err(storage)?;
                Ok(Some(k.value().to_vec()))
            }
        }
    }
}
