//! [`Source`]: the reads the key-space rules need, over either the redb
//! tables alone ([`Tables`]) or redb plus the in-memory layers of writes not
//! yet flushed to it (`layers.rs`). `range.rs`, `txn.rs` and the writer are
//! written against this trait, so one implementation of etcd's rules serves
//! both.

use redb::ReadableTable;

use super::error::{storage, StoreError};
use super::range::KeySpan;
use super::tables::{decode_history, decode_live, rev_key, HistoryRecord, LiveEntry};

/// Point and range reads of the live index and the history, at one state.
pub(crate) trait Source {
    /// The live entry of `key`, if the key is live.
    fn live_get(&self, key: &[u8]) -> Result<Option<LiveEntry>, StoreError>;

    /// The live keys in `span`, in key order.
    fn live_range(&self, span: KeySpan<'_>) -> Result<Vec<(Vec<u8>, LiveEntry)>, StoreError>;

    /// The history record of `key` at exactly `revision`.
    fn history_get(&self, key: &[u8], revision: i64) -> Result<Option<HistoryRecord>, StoreError>;

    /// The newest record of `key` at or below `revision`, with its revision.
    fn record_at(
        &self,
        key: &[u8],
        revision: i64,
    ) -> Result<Option<(i64, HistoryRecord)>, StoreError>;

    /// The first key at or after `from` with any history.
    fn next_history_key(&self, from: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
}

/// The value of a live key: the put record at `(key, mod_revision)`, which
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
            table: "kv_live",
            detail: format!("key {key:?}: live {entry:?} but history {other:?}"),
        }),
    }
}

/// The history and live tables of one redb transaction, read or write.
pub(crate) struct Tables<'a, H, L> {
    pub(crate) history: &'a H,
    pub(crate) live: &'a L,
}

impl<H, L> Source for Tables<'_, H, L>
where
    H: ReadableTable<(&'static [u8], u64), &'static [u8]>,
    L: ReadableTable<&'static [u8], &'static [u8]>,
{
    fn live_get(&self, key: &[u8]) -> Result<Option<LiveEntry>, StoreError> {
        match self.live.get(key).map_err(storage)? {
            Some(g) => Ok(Some(decode_live(key, g.value())?)),
            None => Ok(None),
        }
    }

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
            KeySpan::From(start) => self.live.range::<&[u8]>(start..).map_err(storage)?,
            KeySpan::Between(start, end) => {
                self.live.range::<&[u8]>(start..end).map_err(storage)?
            }
        };
        for item in iter {
            let (k, v) = item.map_err(storage)?;
            let key = k.value();
            out.push((key.to_vec(), decode_live(key, v.value())?));
        }
        Ok(out)
    }

    fn history_get(&self, key: &[u8], revision: i64) -> Result<Option<HistoryRecord>, StoreError> {
        match self
            .history
            .get((key, rev_key(revision)))
            .map_err(storage)?
        {
            Some(g) => Ok(Some(decode_history(key, g.value())?)),
            None => Ok(None),
        }
    }

    fn record_at(
        &self,
        key: &[u8],
        revision: i64,
    ) -> Result<Option<(i64, HistoryRecord)>, StoreError> {
        let mut iter = self
            .history
            .range((key, 0u64)..=(key, rev_key(revision)))
            .map_err(storage)?;
        match iter.next_back() {
            None => Ok(None),
            Some(item) => {
                let (k, v) = item.map_err(storage)?;
                let record_revision = k.value().1 as i64;
                Ok(Some((record_revision, decode_history(key, v.value())?)))
            }
        }
    }

    fn next_history_key(&self, from: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut iter = self.history.range((from, 0u64)..).map_err(storage)?;
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (k, _) = item.map_err(storage)?;
                Ok(Some(k.value().0.to_vec()))
            }
        }
    }
}
