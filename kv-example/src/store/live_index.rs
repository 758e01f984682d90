//! Every live key's entry, in memory on the apply side: what the write
//! rules read (a put reads its key's version, a delete range or a txn
//! compare its span) without walking the layers and redb's key table.
//!
//! etcd keeps the same in memory (its `treeIndex` of every key's
//! revisions); here it is a hash map of the live keys' entries, for the
//! point reads every put makes, and the same keys in a sorted set, for the
//! spans of delete ranges and txns. A put to a live key touches only the
//! hash map: a search of a sorted map of shared keys follows a pointer out
//! of the node at each comparison, which under load cost more than the rest
//! of the put's rules (set N in benches/README.md). The index is built from
//! `kv_keys` when the store opens or is replaced, and updated with each
//! apply batch as it finishes. Readers do not use it: they read the
//! published views, which stay consistent without it.
//!
//! Invariants: after each finished batch, the index holds exactly the live
//! keys of the published state, each with its live entry
//! (`LayeredStore::check_invariants` compares it with redb); the sorted set
//! holds exactly the hash map's keys.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;

use super::error::StoreError;
use super::range::KeySpan;
use super::reader::ReadTables;
use super::source::{Source, Tables};
use super::tables::LiveEntry;

/// The live keys and their entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LiveIndex {
    /// SipHash (std's): the keys are the clients' to choose.
    entries: HashMap<Bytes, LiveEntry>,
    /// The same keys, sharing their bytes, sorted.
    order: BTreeSet<Bytes>,
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
        let live = base.live_range(KeySpan::From(b""))?;
        let mut index = Self {
            entries: HashMap::with_capacity(live.len()),
            order: BTreeSet::new(),
        };
        let mut keys = Vec::with_capacity(live.len());
        for (key, entry) in live {
            let key = Bytes::from(key);
            index.entries.insert(key.clone(), entry);
            keys.push(key);
        }
        // Sorted and unique already: built without searching.
        index.order = keys.into_iter().collect();
        Ok(index)
    }

    /// The live entry of `key`, if it is live.
    pub(crate) fn get(&self, key: &[u8]) -> Option<LiveEntry> {
        self.entries.get(key).copied()
    }

    /// The live keys in `span`, in key order.
    pub(crate) fn range<'a>(
        &'a self,
        span: KeySpan<'a>,
    ) -> impl Iterator<Item = (&'a Bytes, &'a LiveEntry)> + 'a {
        span.bounds()
            .into_iter()
            .flat_map(|bounds| self.order.range::<[u8], _>(bounds))
            .filter_map(|key| self.entries.get_key_value(key))
    }

    /// Records `key`'s new live entry (`None`: deleted). Shares the key's
    /// bytes, so a key written again allocates nothing.
    pub(crate) fn set(&mut self, key: &Bytes, entry: Option<LiveEntry>) {
        match entry {
            Some(entry) => match self.entries.get_mut(key.as_ref()) {
                Some(slot) => *slot = entry,
                None => {
                    self.entries.insert(key.clone(), entry);
                    self.order.insert(key.clone());
                }
            },
            None => {
                if self.entries.remove(key.as_ref()).is_some() {
                    self.order.remove(key.as_ref());
                }
            }
        }
        debug_assert_eq!(self.entries.len(), self.order.len());
    }

    /// Live keys.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
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
        // A key deleted and written again is back in the spans, once.
        index.set(&Bytes::from_static(b"c"), Some(entry(10)));
        index.set(&Bytes::from_static(b"c"), Some(entry(11)));
        assert_eq!(
            keys(&index, KeySpan::From(b"b")),
            vec![b"b".to_vec(), b"ba".to_vec(), b"c".to_vec()]
        );
        assert_eq!(index.get(b"c"), Some(entry(11)));
    }
}
