//! Every live key's entry, in memory on the apply side: what the write
//! rules read (a put reads its key's version, a delete range or a txn
//! compare its span) without walking the layers and redb's key table.
//!
//! etcd keeps the same in memory (its `treeIndex` of every key's
//! revisions); here it is one sorted map of the live keys, built from
//! `kv_keys` when the store opens or is replaced, and updated with each
//! apply batch as it finishes. Readers do not use it: they read the
//! published views, which stay consistent without it.
//!
//! Invariant: after each finished batch, the index holds exactly the live
//! keys of the published state, each with its live entry
//! (`LayeredStore::check_invariants` compares it with redb).

use std::collections::BTreeMap;

use bytes::Bytes;

use super::error::StoreError;
use super::range::KeySpan;
use super::reader::ReadTables;
use super::source::{Source, Tables};
use super::tables::LiveEntry;

/// The live keys and their entries, sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LiveIndex {
    keys: BTreeMap<Bytes, LiveEntry>,
}

impl LiveIndex {
    /// Reads every live key of a base (`None`: a fresh store).
    pub(crate) fn load(tables: Option<&ReadTables>) -> Result<Self, StoreError> {
        let Some(t) = tables else {
            return Ok(Self::default());
        };
        let base = Tables {
            history: &t.history,
            keys: &t.keys,
        };
        let keys = base
            .live_range(KeySpan::From(b""))?
            .into_iter()
            .map(|(key, entry)| (Bytes::from(key), entry))
            .collect();
        Ok(Self { keys })
    }

    /// The live entry of `key`, if it is live.
    pub(crate) fn get(&self, key: &[u8]) -> Option<LiveEntry> {
        self.keys.get(key).copied()
    }

    /// The live keys in `span`, in key order.
    pub(crate) fn range<'a>(
        &'a self,
        span: KeySpan<'a>,
    ) -> impl Iterator<Item = (&'a Bytes, &'a LiveEntry)> + 'a {
        span.bounds()
            .into_iter()
            .flat_map(|bounds| self.keys.range::<[u8], _>(bounds))
    }

    /// Records `key`'s new live entry (`None`: deleted). Shares the key's
    /// bytes, so a key written again allocates nothing.
    pub(crate) fn set(&mut self, key: &Bytes, entry: Option<LiveEntry>) {
        match entry {
            Some(entry) => match self.keys.get_mut(key.as_ref()) {
                Some(slot) => *slot = entry,
                None => {
                    self.keys.insert(key.clone(), entry);
                }
            },
            None => {
                self.keys.remove(key.as_ref());
            }
        }
    }

    /// Live keys.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(revision: i64) -> LiveEntry {
        LiveEntry {
            create_revision: revision,
            mod_revision: revision,
            version: 1,
        }
    }

    fn keys(index: &LiveIndex, span: KeySpan<'_>) -> Vec<Vec<u8>> {
        index.range(span).map(|(k, _)| k.to_vec()).collect()
    }

    #[test]
    fn set_replaces_and_removes_and_range_follows_etcds_spans() {
        let mut index = LiveIndex::default();
        for (i, key) in ["a", "b", "ba", "c"].iter().enumerate() {
            index.set(
                &Bytes::from_static(key.as_bytes()),
                Some(entry(i as i64 + 2)),
            );
        }
        index.set(&Bytes::from_static(b"b"), Some(entry(9)));
        index.set(&Bytes::from_static(b"c"), None);
        index.set(&Bytes::from_static(b"never"), None);
        assert_eq!(index.len(), 3);
        assert_eq!(index.get(b"b"), Some(entry(9)));
        assert_eq!(index.get(b"c"), None);
        assert_eq!(keys(&index, KeySpan::Single(b"b")), vec![b"b".to_vec()]);
        assert_eq!(
            keys(&index, KeySpan::Between(b"b", b"c")),
            vec![b"b".to_vec(), b"ba".to_vec()]
        );
        assert_eq!(
            keys(&index, KeySpan::From(b"b")),
            vec![b"b".to_vec(), b"ba".to_vec()]
        );
        assert!(keys(&index, KeySpan::Empty).is_empty());
    }
}
